//! A blocking places client: one kept-alive connection, owned by one thread.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herd_core::places::{Decoded, decode_response};
use herd_core::{HttpResponse, PlacesQuery, UpstreamError};

const READ_CHUNK: usize = 16 * 1024;

/// One thread's connection to the places backend. Not shared: each worker thread owns one, so a
/// request never waits for another thread's request on the same socket.
#[derive(Debug)]
pub struct PlacesClient {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

impl PlacesClient {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self { addr, host: addr.to_string(), timeout, conn: None, buf: Vec::with_capacity(16 * 1024) }
    }

    /// Fetches one response within the timeout. A kept-alive connection the server has since
    /// closed is retried once on a fresh connection; nothing else is retried.
    pub fn fetch(&mut self, query: &PlacesQuery) -> Result<HttpResponse, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        let request = query.encode_request(&self.host);
        let reused = self.conn.is_some();
        match self.exchange(&request, deadline) {
            Err(Failure::Stale) if reused => self.exchange(&request, deadline).map_err(Failure::into_error),
            result => result.map_err(Failure::into_error),
        }
    }

    fn exchange(&mut self, request: &[u8], deadline: Instant) -> Result<HttpResponse, Failure> {
        let outcome = self.try_exchange(request, deadline);
        match &outcome {
            Ok(resp) if resp.keep_alive => {}
            _ => self.conn = None,
        }
        outcome
    }

    fn try_exchange(&mut self, request: &[u8], deadline: Instant) -> Result<HttpResponse, Failure> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = TcpStream::connect_timeout(&self.addr, remaining(deadline)?)
                    .map_err(|e| Failure::Fatal(UpstreamError::Unreachable(e.to_string())))?;
                conn.set_nodelay(true).map_err(Failure::io)?;
                self.conn.insert(conn)
            }
        };
        conn.write_all(request).map_err(Failure::stale)?;
        self.buf.clear();
        loop {
            conn.set_read_timeout(Some(remaining(deadline)?)).map_err(Failure::io)?;
            // Read straight into the buffer's tail: no large array on the stack, since the
            // thread-per-request style runs this on deliberately small stacks.
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK, 0);
            let read = conn.read(&mut self.buf[filled..]);
            self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) if self.buf.is_empty() => return Err(Failure::Stale),
                Ok(0) => return Err(Failure::Fatal(UpstreamError::Http("connection closed mid-response".into()))),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(Failure::Fatal(UpstreamError::Timeout));
                }
                Err(e) if self.buf.is_empty() => return Err(Failure::stale(e)),
                Err(e) => return Err(Failure::io(e)),
            }
            if let Decoded::Complete(resp) = decode_response(&self.buf).map_err(Failure::Fatal)? {
                return Ok(resp);
            }
        }
    }
}

/// `Stale`: the kept-alive connection was dead before any byte of the response came back.
enum Failure {
    Stale,
    Fatal(UpstreamError),
}

impl Failure {
    fn stale(_: io::Error) -> Self {
        Failure::Stale
    }

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
