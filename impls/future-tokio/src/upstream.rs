//! The places client: herd-core's [`PlacesCall`] driven over tokio `TcpStream`s
//! drawn from the server's [`PlacesBackend`] (its address and its kept-alive connections).
//!
//! ```text
//!  connection task ── fetch: backend.call(query) ── timeout_at(call.poll_timeout(), exchange) ─┐
//!    exchange: pool.reuse(call) or connect + pool.attach ── write request() ── on_written
//!      read_buf ── on_read: Step::Continue ─► read again   Step::Reconnect / Done ─► pool.finish
//!  deadline passed: the exchange and its socket are dropped: UpstreamError::Timeout ◄─────────┘
//! ```
//!
//! The machine owns every rule: one deadline for the whole exchange (`upstream_timeout`), the one
//! retry of a stale kept-alive connection, keep-or-close after the response, and the pool's bound
//! (`upstream_idle_max`). The pool is one per server, shared by every connection task, because
//! tasks migrate between tokio's workers ("per worker" means nothing stable here) and "per client
//! connection" would open an upstream connection for every short-lived client. Dropping the
//! exchange at the deadline drops its socket, so a late response is never read as the answer to
//! a later request.

use std::time::Instant;

use herd_core::policy::{PlacesBackend, PlacesCall, Step};
use herd_core::{HttpResponse, PlacesQuery, UpstreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The places backend, over tokio sockets.
pub type Upstream = PlacesBackend<TcpStream>;

/// One WHATSAT's request and response, by the machine's deadline (dropping the exchange there drops
/// its socket).
pub async fn fetch(upstream: &Upstream, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
    let mut call = upstream.call(query, Instant::now());
    let deadline = tokio::time::Instant::from_std(call.poll_timeout());
    tokio::time::timeout_at(deadline, exchange(upstream, &mut call)).await.unwrap_or(Err(UpstreamError::Timeout))
}

/// Attaches connections to the call until it is done: an idle one first, a fresh one after a
/// [`Step::Reconnect`]; on each, the request, then reads until the answer is complete.
async fn exchange(upstream: &Upstream, call: &mut PlacesCall) -> Result<HttpResponse, UpstreamError> {
    let pool = upstream.pool();
    loop {
        let mut conn = match pool.reuse(call) {
            Some(conn) => conn,
            None => pool.attach(
                call,
                TcpStream::connect(upstream.addr()).await.and_then(|c| c.set_nodelay(true).map(|()| c)),
            )?,
        };
        let mut step = call.on_written(conn.write_all(call.request()).await);
        let mut buf = Vec::with_capacity(16 * 1024);
        while step == Step::Continue {
            buf.clear();
            step = call.on_read(conn.read_buf(&mut buf).await, &buf);
        }
        if let Some(result) = pool.finish(conn, step) {
            return result;
        }
    }
}
