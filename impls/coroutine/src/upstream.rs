//! The places client: one WHATSAT's exchange, as herd-core's [`PlacesCall`] directs it, over may
//! sockets drawn from the server's [`PlacesPool`].
//!
//! ```text
//! fetch coroutine: pool.checkout() or connect_timeout ─► on_attached ─► write_all(request)
//!     ─► read ─► on_bytes: Continue ─► read again   (every wait: may socket timeout = time left)
//!                          Done { result, keep } ─► pool.checkin(conn, keep)
//!        EOF / error ─► on_closed: Reconnect (a stale kept-alive connection) or Done
//!        TimedOut ─► on_timeout: Done(Timeout)
//! ```
//! Each WHATSAT runs in its own coroutine, so many calls are in flight at once, each written as a
//! blocking call. The call's one deadline becomes may's socket timeouts: the coroutine parks, the
//! worker thread runs others.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herd_core::policy::{PlacesCall, PlacesPool, Step};
use herd_core::{HttpResponse, PlacesQuery, Service, UpstreamError};
use may::net::TcpStream;

use crate::{Shared, until};

/// The places backend and its kept-alive connections, shared by every coroutine of one server.
pub(crate) type Places = (SocketAddr, PlacesPool<TcpStream>);

/// One response from `places`, or why there is none, within the call's deadline.
pub(crate) fn fetch<S: Service>(
    shared: &Shared<S>,
    (addr, pool): &Places,
    query: &PlacesQuery,
) -> Result<HttpResponse, UpstreamError> {
    let mut call = PlacesCall::new(query, &addr.to_string(), Instant::now(), &shared.limits, shared.service.stats());
    let mut idle = pool.checkout();
    loop {
        let reused = idle.is_some();
        let step = match idle.take().map_or_else(|| connect(addr, pool, &call), Ok) {
            Ok(mut stream) => {
                call.on_attached(reused);
                let step = exchange(&mut call, &mut stream);
                if let Step::Done { keep, .. } = step {
                    pool.checkin(stream, keep);
                }
                step
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => call.on_timeout(Instant::now()).unwrap_or(Step::Continue),
            Err(e) => call.on_connect_failed(&e.to_string()),
        };
        if let Step::Done { result, .. } = step {
            return result;
        }
    }
}

fn connect(addr: &SocketAddr, pool: &PlacesPool<TcpStream>, call: &PlacesCall) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(addr, time_left(call)?)?;
    pool.opened();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes the request and reads until the call is done or wants a fresh connection.
fn exchange(call: &mut PlacesCall, stream: &mut TcpStream) -> Step {
    let written = time_left(call).and_then(|left| stream.set_write_timeout(Some(left)));
    if let Err(e) = written.and_then(|()| stream.write_all(call.request())) {
        // A deadline reached early in may's timer wheel leaves the read below to find it.
        if let Some(step) = failed(call, &e) {
            return step;
        }
    }
    let mut chunk = vec![0; 16 * 1024]; // on the heap, not on the coroutine's stack
    loop {
        let read = time_left(call).and_then(|left| stream.set_read_timeout(Some(left)));
        let step = match read.and_then(|()| stream.read(&mut chunk)) {
            Ok(0) => Some(call.on_closed("end of stream")),
            Ok(n) => Some(call.on_bytes(&chunk[..n])),
            Err(e) => failed(call, &e),
        };
        match step {
            None | Some(Step::Continue) => {}
            Some(step) => return step,
        }
    }
}

/// What an I/O error means to the call: a timed-out wait is its deadline (`None` if may woke a
/// moment early), an interrupted one nothing, anything else the end of the connection.
fn failed(call: &mut PlacesCall, e: &io::Error) -> Option<Step> {
    match e.kind() {
        io::ErrorKind::TimedOut => call.on_timeout(Instant::now()),
        io::ErrorKind::Interrupted => None,
        _ => Some(call.on_closed(&e.to_string())),
    }
}

/// Time until the call's deadline (see [`until`]); `TimedOut` once it has passed.
fn time_left(call: &PlacesCall) -> io::Result<Duration> {
    let due = call.poll_timeout();
    if Instant::now() < due { Ok(until(due)) } else { Err(io::ErrorKind::TimedOut.into()) }
}
