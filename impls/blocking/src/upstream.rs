//! The places client for the thread styles: blocking reads and writes around herd-core's
//! [`PlacesCall`] (the exchange's rules) and [`PlacesPool`] (which kept-alive connection to use).
//!
//! One client per server, shared by every thread that fetches: the pool hands each exchange an idle
//! connection or none (connect), so the number of upstream connections follows how many WHATSATs
//! wait at once, as in every other style.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herd_core::policy::{PlacesCall, PlacesPool, Step};
use herd_core::{HttpResponse, Limits, PlacesQuery, ServerStats, UpstreamError};

const READ_CHUNK: usize = 16 * 1024;

/// The places backend as the thread styles reach it.
#[derive(Debug)]
pub struct PlacesClient {
    addr: SocketAddr,
    host: String,
    limits: Limits,
    pool: PlacesPool<TcpStream>,
}

impl PlacesClient {
    pub fn new(addr: SocketAddr, limits: &Limits, stats: &ServerStats) -> Self {
        Self { addr, host: addr.to_string(), limits: limits.clone(), pool: PlacesPool::new(limits, stats) }
    }

    /// One WHATSAT's exchange, blocking the calling thread until it is done.
    pub fn fetch(&self, query: &PlacesQuery, stats: &ServerStats) -> Result<HttpResponse, UpstreamError> {
        let mut call = PlacesCall::new(query, &self.host, Instant::now(), &self.limits, stats);
        let mut idle = self.pool.checkout();
        loop {
            let (mut conn, reused) = match idle.take() {
                Some(conn) => (conn, true),
                None => match self.connect(call.poll_timeout()) {
                    Ok(conn) => (conn, false),
                    Err(e) => return finish(call.on_connect_failed(&e.to_string())).0,
                },
            };
            call.on_attached(reused);
            match exchange(&mut conn, &mut call) {
                Step::Reconnect | Step::Continue => {}
                done => {
                    let (result, keep) = finish(done);
                    self.pool.checkin(conn, keep);
                    return result;
                }
            }
        }
    }

    fn connect(&self, deadline: Instant) -> io::Result<TcpStream> {
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let conn = TcpStream::connect_timeout(&self.addr, budget)?;
        conn.set_nodelay(true)?;
        self.pool.opened();
        Ok(conn)
    }
}

/// Writes the request and reads until the call says what next. The socket's timeouts are set to
/// what is left of the call's deadline before each blocking operation.
fn exchange(conn: &mut TcpStream, call: &mut PlacesCall) -> Step {
    let until = |call: &PlacesCall| {
        Some(call.poll_timeout().saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))
    };
    if let Err(e) = conn.set_write_timeout(until(call)).and_then(|()| conn.write_all(call.request())) {
        return timed_out(call).unwrap_or_else(|| call.on_closed(&e.to_string()));
    }
    let mut buf = vec![0_u8; READ_CHUNK];
    loop {
        if let Some(step) = timed_out(call) {
            return step;
        }
        let read = conn.set_read_timeout(until(call)).and_then(|()| conn.read(&mut buf));
        let step = match read {
            Ok(0) => call.on_closed("end of stream"),
            Ok(n) => call.on_bytes(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => call.on_closed(&e.to_string()),
        };
        if step != Step::Continue {
            return step;
        }
    }
}

fn timed_out(call: &mut PlacesCall) -> Option<Step> {
    call.on_timeout(Instant::now())
}

fn finish(step: Step) -> (Result<HttpResponse, UpstreamError>, bool) {
    match step {
        Step::Done { result, keep } => (result, keep),
        Step::Continue | Step::Reconnect => (Err(UpstreamError::Http("exchange ended early".into())), false),
    }
}
