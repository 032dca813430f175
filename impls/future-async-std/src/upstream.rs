//! The places client: herd-core's [`PlacesCall`] driven over async-std `TcpStream`s
//! drawn from the server's [`PlacesBackend`] (its address and its kept-alive connections).
//!
//! ```text
//!  connection task ── fetch: backend.call(query) ── future::timeout(to call.poll_timeout(), exchange) ─┐
//!    exchange: pool.reuse(call) or connect + pool.attach ── write request() ── on_written
//!      read ── on_read: Step::Continue ─► read again   Step::Reconnect / Done ─► pool.finish
//!  deadline passed: the exchange and its socket are dropped: Timeout ◄─────────────────────┘
//! ```
//!
//! The machine owns every rule: one deadline for the whole exchange (`upstream_timeout`), the one
//! retry of a stale kept-alive connection, keep-or-close after the response, and the pool's bound
//! (`upstream_idle_max`). The pool is one per server, shared by every connection task, because
//! tasks move between the global executor's threads ("per thread" means nothing stable here) and
//! "per client connection" would open an upstream connection for every short-lived client.
//! Dropping the exchange at the deadline drops its socket, so a late response is never read as
//! the answer to a later request.

use std::net::SocketAddr;
use std::time::Instant;

use async_std::future;
use async_std::io::{self, ReadExt, WriteExt};
use async_std::net::TcpStream;
use herd_core::policy::{PlacesBackend, PlacesCall, Step};
use herd_core::{HttpResponse, PlacesQuery, UpstreamError};

/// The places backend, over async-std sockets.
pub type Upstream = PlacesBackend<TcpStream>;

/// One WHATSAT's request and response, by the machine's deadline (dropping the exchange there drops
/// its socket).
pub async fn fetch(upstream: &Upstream, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
    let mut call = upstream.call(query, Instant::now());
    let left = call.poll_timeout().saturating_duration_since(Instant::now());
    future::timeout(left, exchange(upstream, &mut call)).await.unwrap_or(Err(UpstreamError::Timeout))
}

/// Attaches connections to the call until it is done: an idle one first, a fresh one after a
/// [`Step::Reconnect`]; on each, the request, then reads until the answer is complete.
async fn exchange(upstream: &Upstream, call: &mut PlacesCall) -> Result<HttpResponse, UpstreamError> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let idle = upstream.pool().reuse(call);
        let mut conn = match idle {
            Some(conn) => conn,
            None => upstream.pool().attach(call, connect(upstream.addr()).await)?,
        };
        let mut step = call.on_written(conn.write_all(call.request()).await);
        while step == Step::Continue {
            step = call.on_read(conn.read(&mut buf).await, &buf);
        }
        if let Some(result) = upstream.pool().finish(conn, step) {
            return result;
        }
    }
}

/// A fresh connection to the backend, with Nagle off.
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let conn = TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    Ok(conn)
}
