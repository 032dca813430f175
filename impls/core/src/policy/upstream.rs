//! The places client's policy: one WHATSAT's exchange ([`PlacesCall`]) and the kept-alive
//! connections every exchange draws from ([`PlacesPool`]).
//!
//! ```text
//!  PlacesPool::checkout ─┬─ Some(idle conn) ─► call.on_attached(reused: true)  ─┐
//!                        └─ None ─► connect ─► call.on_attached(reused: false) ─┤
//!                                                                               ▼
//!      write call.request() ─► read ─► call.on_bytes ─► Step::Continue ─► read again
//!                                         │            Step::Done { result, keep } ─► pool.checkin(conn, keep)
//!      read/write failed or EOF ─► call.on_closed ─► Step::Reconnect (a stale kept-alive connection:
//!                                                    once, on a fresh one) or Step::Done
//!      call.poll_timeout() passed ─► call.on_timeout ─► Step::Done(Err(Timeout))
//! ```
//!
//! The rules: the most recently returned idle connection is used first (the least likely to have
//! been closed by the backend); a reused connection that fails before any byte of the answer came
//! back is retried once on a fresh connection (the request never reached the backend); nothing
//! else is retried; the whole exchange, connecting and retry included, has one deadline
//! ([`Limits::upstream_timeout`]); a connection goes back to the pool only if the response allowed
//! keep-alive and nothing followed it; at most [`Limits::upstream_idle_max`] idle connections are
//! kept. Every exchange of a server draws from one pool (per event loop, in reactor styles, whose
//! sockets belong to one loop), so the number of upstream connections follows the WHATSAT
//! concurrency, not the number of threads or clients.
//!
//! # Calling order
//! [`PlacesCall::new`]; then for each connection: [`PlacesPool::checkout`] or a fresh connect
//! (failure: [`PlacesCall::on_connect_failed`]), [`PlacesCall::on_attached`], write
//! [`PlacesCall::request`], feed what is read to [`PlacesCall::on_bytes`], report a failure or end
//! of stream with [`PlacesCall::on_closed`], and [`PlacesCall::on_timeout`] at
//! [`PlacesCall::poll_timeout`], until a [`Step::Done`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::places::{Decoded, HttpResponse, PlacesQuery, UpstreamError, decode_response};
use crate::policy::Limits;
use crate::stats::ServerStats;

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read more from the same connection.
    Continue,
    /// Drop this connection, open a fresh one and send [`PlacesCall::request`] again.
    Reconnect,
    /// The exchange is over. `keep`: the connection may go back to the pool (else close it).
    Done { result: Result<HttpResponse, UpstreamError>, keep: bool },
}

/// One WHATSAT's exchange with the places backend.
#[derive(Debug)]
pub struct PlacesCall {
    request: Vec<u8>,
    deadline: Instant,
    /// The current connection came from the pool.
    reused: bool,
    retried: bool,
    /// The response so far.
    received: Vec<u8>,
    stale_retries: Arc<AtomicU64>,
}

impl PlacesCall {
    /// An exchange for `query` to the backend at `host` (its `Host:` header), starting at `now`.
    pub fn new(query: &PlacesQuery, host: &str, now: Instant, limits: &Limits, stats: &ServerStats) -> Self {
        Self {
            request: query.encode_request(host),
            deadline: now + limits.upstream_timeout,
            reused: false,
            retried: false,
            received: Vec::new(),
            stale_retries: Arc::clone(&stats.upstream_stale_retries),
        }
    }

    /// The complete request, to write on each connection the call is attached to.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The exchange's one deadline.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// A connection was attached: `reused` if it came from the pool.
    pub fn on_attached(&mut self, reused: bool) {
        self.reused = reused;
        self.received.clear();
    }

    /// Opening a connection failed.
    pub fn on_connect_failed(&mut self, error: &str) -> Step {
        Step::Done { result: Err(unreachable(error)), keep: false }
    }

    /// Bytes of the response arrived (any amount, including a whole response at once).
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Step {
        self.received.extend_from_slice(bytes);
        match decode_response(&self.received) {
            Ok(Decoded::Partial) => Step::Continue,
            // Bytes past the response would be a second, unasked-for answer: do not reuse.
            Ok(Decoded::Complete(response)) => {
                let keep = response.keep_alive && response.consumed == self.received.len();
                Step::Done { result: Ok(response), keep }
            }
            Err(e) => Step::Done { result: Err(e), keep: false },
        }
    }

    /// Writing or reading failed, or the backend closed the connection (`error` says how).
    pub fn on_closed(&mut self, error: &str) -> Step {
        if self.received.is_empty() && self.reused && !self.retried {
            // The backend closed a kept-alive connection while it sat idle: the request never
            // reached it, so sending it again cannot do it twice.
            self.retried = true;
            ServerStats::bump(&self.stale_retries);
            return Step::Reconnect;
        }
        let error = if self.received.is_empty() {
            UpstreamError::Unreachable(format!("connection closed by upstream ({error})"))
        } else {
            UpstreamError::Http(format!("connection closed mid-response ({error})"))
        };
        Step::Done { result: Err(error), keep: false }
    }

    /// What one read of the attached connection returned, its bytes in `buf`: end of stream and
    /// errors go to [`Self::on_closed`], bytes to [`Self::on_bytes`].
    pub fn on_read(&mut self, read: io::Result<usize>, buf: &[u8]) -> Step {
        match read {
            Ok(0) => self.on_closed("end of stream"),
            Ok(n) => self.on_bytes(&buf[..n]),
            Err(e) => self.on_closed(&e.to_string()),
        }
    }

    /// What writing [`Self::request`] returned: `Continue` (read the answer) or the failure's step.
    pub fn on_written(&mut self, written: io::Result<()>) -> Step {
        match written {
            Ok(()) => Step::Continue,
            Err(e) => self.on_closed(&e.to_string()),
        }
    }

    /// The deadline passed (calling early is a no-op: `None`).
    pub fn on_timeout(&mut self, now: Instant) -> Option<Step> {
        (now >= self.deadline).then_some(Step::Done { result: Err(UpstreamError::Timeout), keep: false })
    }
}

/// The places backend as a server sees it: where it is, and the kept-alive connections to it
/// (of the style's socket type `C`).
#[derive(Debug)]
pub struct PlacesBackend<C> {
    addr: SocketAddr,
    /// The `Host:` header of every request.
    host: String,
    limits: Limits,
    stale_retries: Arc<AtomicU64>,
    pool: PlacesPool<C>,
}

impl<C> PlacesBackend<C> {
    pub fn new(addr: SocketAddr, limits: &Limits, stats: &ServerStats) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            limits: limits.clone(),
            stale_retries: Arc::clone(&stats.upstream_stale_retries),
            pool: PlacesPool::new(limits, stats),
        }
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new exchange for `query`, starting at `now`.
    pub fn call(&self, query: &PlacesQuery, now: Instant) -> PlacesCall {
        PlacesCall {
            request: query.encode_request(&self.host),
            deadline: now + self.limits.upstream_timeout,
            reused: false,
            retried: false,
            received: Vec::new(),
            stale_retries: Arc::clone(&self.stale_retries),
        }
    }

    /// The kept-alive connections.
    pub fn pool(&self) -> &PlacesPool<C> {
        &self.pool
    }
}

fn unreachable(error: &str) -> UpstreamError {
    UpstreamError::Unreachable(error.to_owned())
}

/// Idle kept-alive connections of type `C` (the style's socket), last in first out, bounded.
#[derive(Debug)]
pub struct PlacesPool<C> {
    idle: Mutex<Vec<C>>,
    idle_max: usize,
    /// Connections opened (counter `upstream_connects`).
    connects: Arc<AtomicU64>,
}

impl<C> PlacesPool<C> {
    pub fn new(limits: &Limits, stats: &ServerStats) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            idle_max: limits.upstream_idle_max,
            connects: Arc::clone(&stats.upstream_connects),
        }
    }

    /// The connection to use: the most recently returned idle one, or `None` (open a fresh one and
    /// call [`Self::opened`]).
    pub fn checkout(&self) -> Option<C> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    /// Counts a fresh connection.
    pub fn opened(&self) {
        ServerStats::bump(&self.connects);
    }

    /// The kept-alive connection for `call`'s first attempt, attached as reused; `None` (no idle
    /// one, or the call is retrying a stale one): open a fresh one and hand it to [`Self::attach`].
    pub fn reuse(&self, call: &mut PlacesCall) -> Option<C> {
        let conn = if call.retried { None } else { self.checkout() };
        if conn.is_some() {
            call.on_attached(true);
        }
        conn
    }

    /// A fresh connection was opened for `call` (counted and attached), or opening it failed
    /// (the call's error, as [`PlacesCall::on_connect_failed`] says).
    pub fn attach(&self, call: &mut PlacesCall, opened: io::Result<C>) -> Result<C, UpstreamError> {
        let conn = opened.map_err(|e| unreachable(&e.to_string()))?;
        self.opened();
        call.on_attached(false);
        Ok(conn)
    }

    /// The exchange on `conn` ended with `step` (anything but [`Step::Continue`]): the call's
    /// result, with the connection back in the pool if it may be kept; `None` after a
    /// [`Step::Reconnect`] (the connection is dropped: attach a fresh one).
    pub fn finish(&self, conn: C, step: Step) -> Option<Result<HttpResponse, UpstreamError>> {
        match step {
            Step::Done { result, keep } => {
                self.checkin(conn, keep);
                Some(result)
            }
            Step::Continue | Step::Reconnect => None,
        }
    }

    /// Returns a connection after [`Step::Done`]: kept if `keep` and there is room, else dropped
    /// (closing it).
    pub fn checkin(&self, conn: C, keep: bool) {
        if !keep {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.idle_max {
            idle.push(conn);
        }
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::location::Location;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

    fn call(now: Instant) -> PlacesCall {
        let query =
            PlacesQuery { location: Location::parse("+34.068930-118.445127").expect("valid"), radius_m: 10, bound: 1 };
        PlacesCall::new(&query, "127.0.0.1:8000", now, &Limits::default(), &ServerStats::default())
    }

    fn done(step: Step) -> (Result<HttpResponse, UpstreamError>, bool) {
        match step {
            Step::Done { result, keep } => (result, keep),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[test]
    fn response_fed_piecewise_completes_and_keeps_the_connection() {
        let mut c = call(Instant::now());
        c.on_attached(false);
        assert!(c.request().starts_with(b"GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127"));
        for byte in &OK[..OK.len() - 1] {
            assert_eq!(c.on_bytes(std::slice::from_ref(byte)), Step::Continue);
        }
        let (result, keep) = done(c.on_bytes(&OK[OK.len() - 1..]));
        assert_eq!((result.map(|r| r.body), keep), (Ok(b"{}".to_vec()), true));
    }

    #[test]
    fn close_or_trailing_bytes_mean_the_connection_is_not_reused() {
        let mut c = call(Instant::now());
        c.on_attached(false);
        let (_, keep) = done(c.on_bytes(&[OK, b"HTTP/1.1"].concat()));
        assert!(!keep, "bytes after the response");
        let mut c = call(Instant::now());
        c.on_attached(false);
        let (_, keep) = done(c.on_bytes(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep, "Connection: close");
    }

    #[test]
    fn a_stale_kept_alive_connection_is_retried_once_and_only_before_any_answer() {
        let mut c = call(Instant::now());
        c.on_attached(true);
        assert_eq!(c.on_closed("reset"), Step::Reconnect);
        c.on_attached(true);
        assert!(matches!(done(c.on_closed("reset")).0, Err(UpstreamError::Unreachable(_))), "only once");

        let mut fresh = call(Instant::now());
        fresh.on_attached(false);
        assert!(done(fresh.on_closed("eof")).0.is_err(), "a fresh connection is not retried");

        let mut midway = call(Instant::now());
        midway.on_attached(true);
        assert_eq!(midway.on_bytes(b"HTTP/1.1 200"), Step::Continue);
        assert!(matches!(done(midway.on_closed("eof")).0, Err(UpstreamError::Http(_))), "answer had begun");
    }

    #[test]
    fn one_deadline_for_the_whole_exchange() {
        let t0 = Instant::now();
        let mut c = call(t0);
        assert_eq!(c.poll_timeout(), t0 + Duration::from_secs(3));
        assert_eq!(c.on_timeout(t0 + Duration::from_secs(2)), None);
        assert!(matches!(
            c.on_timeout(t0 + Duration::from_secs(3)),
            Some(Step::Done { result: Err(UpstreamError::Timeout), keep: false })
        ));
    }

    #[test]
    fn pool_is_last_in_first_out_and_bounded() {
        let limits = Limits { upstream_idle_max: 2, ..Limits::default() };
        let pool = PlacesPool::new(&limits, &ServerStats::default());
        assert_eq!(pool.checkout(), None);
        pool.checkin(1, true);
        pool.checkin(2, true);
        pool.checkin(3, true);
        pool.checkin(4, false);
        assert_eq!(pool.idle(), 2);
        assert_eq!((pool.checkout(), pool.checkout(), pool.checkout()), (Some(2), Some(1), None));
    }

    #[test]
    fn the_backend_reuses_an_idle_connection_once_then_opens_and_keeps_only_what_it_may() {
        let stats = ServerStats::default();
        let limits = Limits { upstream_idle_max: 1, ..Limits::default() };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let backend = PlacesBackend::<&str>::new(addr, &limits, &stats);
        let query =
            PlacesQuery { location: Location::parse("+34.068930-118.445127").expect("valid"), radius_m: 10, bound: 1 };
        let t0 = Instant::now();
        let mut call = backend.call(&query, t0);
        assert_eq!(call.poll_timeout(), t0 + limits.upstream_timeout);
        assert!(String::from_utf8_lossy(call.request()).contains("\r\nHost: 127.0.0.1:9\r\n"), "the backend's Host");
        assert_eq!(backend.pool().reuse(&mut call), None, "nothing idle yet");
        let conn = backend.pool().attach(&mut call, Ok("fresh")).expect("opened");
        assert_eq!(stats.upstream_connects.load(std::sync::atomic::Ordering::Relaxed), 1);
        let done = call.on_read(Ok(OK.len()), OK);
        assert!(matches!(backend.pool().finish(conn, done), Some(Ok(_))));
        assert_eq!(backend.pool().idle(), 1, "kept alive");

        // The idle one is used first; it turns out stale: one retry, on a fresh connection.
        let mut call = backend.call(&query, t0);
        let conn = backend.pool().reuse(&mut call).expect("the idle one");
        let step = call.on_written(Err(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(step, Step::Reconnect);
        assert_eq!(backend.pool().finish(conn, step), None, "reconnect: the stale one is dropped");
        assert_eq!(backend.pool().reuse(&mut call), None, "the retry never reuses");
        let refused = backend.pool().attach(&mut call, Err::<&str, _>(std::io::ErrorKind::ConnectionRefused.into()));
        assert!(matches!(refused, Err(UpstreamError::Unreachable(_))));
        assert_eq!(backend.pool().idle(), 0);
    }
}
