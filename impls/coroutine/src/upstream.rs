//! The places client: kept-alive HTTP/1.1 connections shared by every coroutine of a server.
//!
//! ```text
//! WHATSAT coroutine ── permit (≤ MAX_CONNECTIONS) ── idle connection, or connect ── write GET
//!     ── read until decode_response says Complete (read timeout = time left) ── back to idle
//! ```
//! Each WHATSAT runs in its own coroutine, so many calls are in flight at once. A call takes an
//! idle kept-alive connection if there is one and opens another if not; the permits cap how many
//! exist, so a stalled backend costs at most [`MAX_CONNECTIONS`] sockets, not one per request.
//! Every wait (permit, connect, write, read) is bounded by the one deadline `upstream_timeout`
//! sets, using may's socket timeouts: the coroutine parks, the worker thread runs others.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use herd_core::places::{Decoded, decode_response};
use herd_core::{HttpResponse, PlacesQuery, ServerStats, UpstreamError};
use may::net::TcpStream;
use may::sync::{Mutex, Semphore};

/// Upstream connections open at once, busy or idle.
pub const MAX_CONNECTIONS: usize = 256;
/// Bytes offered to each read; the buffer lives on the heap, with its connection.
const READ_CHUNK: usize = 16 * 1024;

/// The places backend as every coroutine of one server sees it.
#[derive(Debug)]
pub(crate) struct PlacesPool {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    /// Kept-alive connections nobody is using. A may mutex: the section is a push or a pop, but
    /// a contended lock should park the coroutine, not the worker thread.
    idle: Mutex<Vec<PlacesConn>>,
    permits: Semphore,
    /// Connections opened, a gauge: few means keep-alive reuse works.
    connects: Arc<AtomicU64>,
}

/// One kept-alive connection and its read buffer.
#[derive(Debug)]
struct PlacesConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl PlacesPool {
    pub(crate) fn new(addr: SocketAddr, timeout: Duration, stats: &ServerStats) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semphore::new(MAX_CONNECTIONS),
            connects: stats.gauge("upstream_connects"),
        }
    }

    /// Fetches one response within the timeout. A kept-alive connection the server has since
    /// closed is retried once on a fresh connection; nothing else is retried.
    pub(crate) fn fetch(&self, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        if !self.permits.wait_timeout(self.timeout) {
            return Err(UpstreamError::Timeout);
        }
        let _permit = Permit(&self.permits);
        let request = query.encode_request(&self.host);
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let reused = idle.is_some();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect(deadline)?,
        };
        match self.exchange(conn, &request, deadline) {
            Err(Failure::Stale) if reused => {
                let conn = self.connect(deadline)?;
                self.exchange(conn, &request, deadline).map_err(Failure::into_error)
            }
            result => result.map_err(Failure::into_error),
        }
    }

    fn connect(&self, deadline: Instant) -> Result<PlacesConn, UpstreamError> {
        let left = remaining(deadline).map_err(Failure::into_error)?;
        let stream = TcpStream::connect_timeout(&self.addr, left).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => UpstreamError::Timeout,
            _ => UpstreamError::Unreachable(e.to_string()),
        })?;
        ServerStats::bump(&self.connects);
        stream.set_nodelay(true).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok(PlacesConn { stream, buf: Vec::with_capacity(READ_CHUNK) })
    }

    /// One request and its response; the connection goes back to the idle list if both sides
    /// want to keep it and nothing unexpected followed the response.
    fn exchange(&self, mut conn: PlacesConn, request: &[u8], deadline: Instant) -> Result<HttpResponse, Failure> {
        let response = conn.round_trip(request, deadline)?;
        if response.keep_alive
            && response.consumed == conn.buf.len()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
        Ok(response)
    }
}

impl PlacesConn {
    fn round_trip(&mut self, request: &[u8], deadline: Instant) -> Result<HttpResponse, Failure> {
        self.stream.set_write_timeout(Some(remaining(deadline)?)).map_err(Failure::io)?;
        self.stream.write_all(request).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Fatal(UpstreamError::Timeout),
            _ => Failure::Stale,
        })?;
        self.buf.clear();
        loop {
            self.stream.set_read_timeout(Some(remaining(deadline)?)).map_err(Failure::io)?;
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK, 0);
            let read = self.stream.read(&mut self.buf[filled..]);
            self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) if self.buf.is_empty() => return Err(Failure::Stale),
                Ok(0) => return Err(Failure::Fatal(UpstreamError::Http("connection closed mid-response".into()))),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(Failure::Fatal(UpstreamError::Timeout));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.buf.is_empty() => return Err(Failure::Stale),
                Err(e) => return Err(Failure::io(e)),
            }
            if let Decoded::Complete(response) = decode_response(&self.buf).map_err(Failure::Fatal)? {
                return Ok(response);
            }
        }
    }
}

/// Gives the permit back however the call ends.
struct Permit<'a>(&'a Semphore);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.post();
    }
}

/// `Stale`: a kept-alive connection was dead before any byte of the response came back.
enum Failure {
    Stale,
    Fatal(UpstreamError),
}

impl Failure {
    fn io(e: io::Error) -> Self {
        Failure::Fatal(UpstreamError::Unreachable(e.to_string()))
    }

    fn into_error(self) -> UpstreamError {
        match self {
            Failure::Stale => UpstreamError::Unreachable("connection closed by upstream".into()),
            Failure::Fatal(e) => e,
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(Failure::Fatal(UpstreamError::Timeout)) } else { Ok(left) }
}
