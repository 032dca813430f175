//! The places client: herd-core's [`PlacesCall`] driven over monoio `TcpStream`s drawn from the
//! core's [`PlacesBackend`] (its address and its kept-alive connections).
//!
//! ```text
//!  connection task ── fetch: backend.call(query) ── timeout_at(call.poll_timeout(), exchange) ─┐
//!    exchange: pool.reuse(call) or connect op + pool.attach ── send op (the request) ── on_written
//!      recv op ── on_read: Step::Continue ─► receive again   Step::Reconnect / Done ─► pool.finish
//!  deadline passed: the exchange is dropped, its operation cancelled, its socket closed ◄────────┘
//! ```
//!
//! The machine owns every rule: one deadline for the whole exchange (`upstream_timeout`), the one
//! retry of a stale kept-alive connection, keep-or-close after the response, and the pool's bound
//! (`upstream_idle_max`). Each core has its own backend and pool: a task never leaves its core,
//! so a kept-alive connection is only ever reused where it was opened, with no lock contended
//! across cores. Dropping the exchange at the deadline cancels the operation in flight and
//! closes its socket, so a late response is never read as the answer to a later request.
//!
//! Buffers are the call's: the request is copied once into an owned buffer for the send (the
//! kernel reads it after `fetch` has gone on waiting), and one 16 KiB receive buffer is lent to
//! every receive of the exchange and reused.

use std::time::Instant;

use herd_core::policy::{PlacesBackend, PlacesCall, Step};
use herd_core::{HttpResponse, PlacesQuery, UpstreamError};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// The places backend, over monoio sockets (one per core).
pub type Upstream = PlacesBackend<TcpStream>;

/// Receive buffer of one exchange, lent to each receive and given back.
const RESPONSE_BUF: usize = 16 * 1024;

/// One WHATSAT's request and response, by the machine's deadline.
pub async fn fetch(upstream: &Upstream, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
    let mut call = upstream.call(query, Instant::now());
    let deadline = monoio::time::Instant::from_std(call.poll_timeout());
    let attempts = async {
        let mut buf = Vec::with_capacity(RESPONSE_BUF);
        loop {
            let mut conn = connection(upstream, &mut call).await?;
            let step;
            (step, buf) = converse(&mut conn, &mut call, buf).await;
            if let Some(result) = upstream.pool().finish(conn, step) {
                return result;
            }
        }
    };
    monoio::time::timeout_at(deadline, attempts).await.unwrap_or(Err(UpstreamError::Timeout))
}

/// The connection for the call's next attempt: a kept-alive one first, a fresh one (connect op)
/// when there is none or the call is retrying after a stale one.
async fn connection(upstream: &Upstream, call: &mut PlacesCall) -> Result<TcpStream, UpstreamError> {
    if let Some(conn) = upstream.pool().reuse(call) {
        return Ok(conn);
    }
    let opened = TcpStream::connect_addr(upstream.addr()).await;
    upstream.pool().attach(call, opened.and_then(|conn| conn.set_nodelay(true).map(|()| conn)))
}

/// One attempt on `conn`: the request sent, then receives into `buf` until the call says what
/// comes next. Gives the buffer back for the next attempt.
async fn converse(conn: &mut TcpStream, call: &mut PlacesCall, mut buf: Vec<u8>) -> (Step, Vec<u8>) {
    let (written, _) = conn.write_all(call.request().to_vec()).await;
    let mut step = call.on_written(written.map(drop));
    while step == Step::Continue {
        buf.clear();
        let read;
        (read, buf) = conn.read(buf).await;
        step = call.on_read(read, &buf);
    }
    (step, buf)
}
