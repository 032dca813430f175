//! The places client: HTTP/1.1 over smol `Async<TcpStream>`s, with a shared pool of kept-alive
//! connections.
//!
//! ```text
//! connection task ──fetch──► take an idle connection (or connect) ──► write GET ──► read until
//!                            decode_response says Complete ──► keep-alive? put it back in the pool
//! ```
//!
//! The pool is one per server, shared by every connection task, rather than one connection per
//! client connection or per executor thread: tasks move between the threads that run the shared
//! executor, so "per thread" means nothing stable here, and "per client connection" would open an
//! upstream connection for every short-lived client. A shared stack of idle connections holds as
//! many as were ever in use at once (up to [`IDLE_MAX`]), which is what the WHATSAT concurrency
//! needs.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herd_core::places::{Decoded, decode_response};
use herd_core::{HttpResponse, PlacesQuery, ServerStats, UpstreamError};
use smol::io::AsyncWriteExt;
use smol::{Async, Timer, future};

use crate::Reads;

/// Idle connections kept for reuse; more are closed when they come back.
pub const IDLE_MAX: usize = 256;
const READ_CHUNK: usize = 16 * 1024;

/// The places backend as the server sees it: an address, a timeout and idle connections.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    /// Last in, first out: the most recently used connection is the least likely to have been
    /// closed by the backend. A std mutex, held only to push or pop, never across an `.await`.
    idle: Mutex<Vec<Async<TcpStream>>>,
    /// Connections opened (gauge `upstream_connects`): stays near the WHATSAT concurrency when
    /// keep-alive works.
    connects: Arc<AtomicU64>,
    /// Reused connections found closed and retried on a fresh one (gauge `upstream_stale_retries`).
    stale_retries: Arc<AtomicU64>,
}

impl Upstream {
    pub fn new(addr: SocketAddr, timeout: Duration, stats: &ServerStats) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            timeout,
            idle: Mutex::new(Vec::new()),
            connects: stats.gauge("upstream_connects"),
            stale_retries: stats.gauge("upstream_stale_retries"),
        }
    }

    /// One request and its response within the timeout: the exchange (connecting and the one retry
    /// included) races a `Timer`, smol's way to time out. Losing the race drops the exchange and
    /// its connection, so a late response can never be read as the answer to a later request.
    pub async fn fetch(&self, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
        let request = query.encode_request(&self.host);
        let expired = async {
            Timer::after(self.timeout).await;
            Err(UpstreamError::Timeout)
        };
        future::or(self.exchange(&request), expired).await
    }

    /// On an idle connection if there is one; a reused connection the backend has closed since is
    /// retried once on a fresh one. Nothing else is retried.
    async fn exchange(&self, request: &[u8]) -> Result<HttpResponse, UpstreamError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(conn) = idle {
            match self.round_trip(conn, request).await {
                Err(Failure::Stale) => ServerStats::bump(&self.stale_retries),
                result => return result.map_err(Failure::into_error),
            }
        }
        let conn =
            Async::<TcpStream>::connect(self.addr).await.map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        ServerStats::bump(&self.connects);
        conn.get_ref().set_nodelay(true).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        self.round_trip(conn, request).await.map_err(Failure::into_error)
    }

    async fn round_trip(&self, mut conn: Async<TcpStream>, request: &[u8]) -> Result<HttpResponse, Failure> {
        conn.write_all(request).await.map_err(|_| Failure::Stale)?;
        let mut buf = Vec::with_capacity(READ_CHUNK);
        // The response cannot be there yet: wait for it rather than read for nothing.
        let mut reads = Reads::drained();
        loop {
            let filled = buf.len();
            buf.resize(filled + READ_CHUNK, 0);
            let read = reads.read(&mut conn, &mut buf[filled..]).await;
            buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) if buf.is_empty() => return Err(Failure::Stale),
                Ok(0) => return Err(Failure::Fatal(UpstreamError::Http("connection closed mid-response".into()))),
                Ok(_) => {}
                Err(_) if buf.is_empty() => return Err(Failure::Stale),
                Err(e) => return Err(Failure::Fatal(UpstreamError::Unreachable(e.to_string()))),
            }
            if let Decoded::Complete(response) = decode_response(&buf).map_err(Failure::Fatal)? {
                // Bytes past the response would be a second, unasked-for answer: do not reuse.
                if response.keep_alive && response.consumed == buf.len() {
                    let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                    if idle.len() < IDLE_MAX {
                        idle.push(conn);
                    }
                }
                return Ok(response);
            }
        }
    }
}

/// `Stale`: the connection was dead before any byte of the response came back (the backend
/// closed a kept-alive connection while it sat idle), so the request never reached it.
enum Failure {
    Stale,
    Fatal(UpstreamError),
}

impl Failure {
    fn into_error(self) -> UpstreamError {
        match self {
            Failure::Stale => UpstreamError::Unreachable("connection closed by upstream".into()),
            Failure::Fatal(e) => e,
        }
    }
}
