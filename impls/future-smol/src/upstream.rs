//! The places client: herd-core's [`PlacesCall`] driven over smol `Async<TcpStream>`s
//! drawn from the server's [`PlacesBackend`] (its address and its kept-alive connections).
//!
//! ```text
//!  connection task ── fetch: backend.call(query) ── or(exchange, Timer::at(call.poll_timeout())) ─┐
//!    exchange: pool.reuse(call) or connect + pool.attach ── write request() ── on_written
//!      read ── on_read: Step::Continue ─► read again   Step::Reconnect / Done ─► pool.finish
//!  the Timer won: the exchange and its socket are dropped: Timeout ◄─────────────────┘
//! ```
//!
//! The machine owns every rule: one deadline for the whole exchange (`upstream_timeout`), the one
//! retry of a stale kept-alive connection, keep-or-close after the response, and the pool's bound
//! (`upstream_idle_max`). The pool is one per server, shared by every connection task, because
//! tasks move between the threads that run the shared executor ("per thread" means nothing stable
//! here) and "per client connection" would open an upstream connection for every short-lived
//! client. Losing the race to the `Timer` drops the exchange and its socket, so a late response is
//! never read as the answer to a later request. After sending a request the first read waits for
//! readiness ([`Reads`]): the response cannot be there yet.

use std::net::TcpStream;
use std::time::Instant;

use herd_core::policy::{PlacesBackend, PlacesCall, Step};
use herd_core::{HttpResponse, PlacesQuery, UpstreamError};
use smol::io::AsyncWriteExt;
use smol::{Async, Timer, future};

use crate::Reads;

/// The places backend, over smol's `Async` sockets.
pub type Upstream = PlacesBackend<Async<TcpStream>>;

/// One WHATSAT's request and response, by the machine's deadline (dropping the exchange there drops
/// its socket).
pub async fn fetch(upstream: &Upstream, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
    let mut call = upstream.call(query, Instant::now());
    let expired = Timer::at(call.poll_timeout());
    let expired = async {
        expired.await;
        Err(UpstreamError::Timeout)
    };
    future::or(exchange(upstream, &mut call), expired).await
}

/// Attaches connections to the call until it is done: an idle one first, a fresh one after a
/// [`Step::Reconnect`]; on each, the request, then reads until the answer is complete.
async fn exchange(upstream: &Upstream, call: &mut PlacesCall) -> Result<HttpResponse, UpstreamError> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let mut conn = if let Some(idle) = upstream.pool().reuse(call) {
            idle
        } else {
            let fresh = Async::<TcpStream>::connect(upstream.addr()).await;
            upstream.pool().attach(call, fresh.and_then(|c| c.get_ref().set_nodelay(true).map(|()| c)))?
        };
        let mut step = call.on_written(conn.write_all(call.request()).await);
        let mut reads = Reads { drained: true };
        while step == Step::Continue {
            step = call.on_read(reads.read(&mut conn, &mut buf).await, &buf);
        }
        if let Some(result) = upstream.pool().finish(conn, step) {
            return result;
        }
    }
}
