//! The places client in callbacks: `places.get(cx, &query, |cx, result| …)`.
//!
//! ```text
//!  get ─┬─ idle connection ─────────────► send: write GET, read_bytes(|cx, input| decode … answer)
//!       ├─ else connect (≤ 256 per loop) ─► send                         │ complete + keep-alive
//!       └─ else wait in line                                             ▼
//!  cx.at(deadline, |cx| answer Timeout)             release: next in line, or idle (watched for close)
//! ```
//!
//! Three callbacks race to answer one request: the response reader, a failure, and the deadline
//! timer. [`Exchange::answer`] lets the first one through and the others find nothing left to do.
//! A kept-alive connection found dead before any byte of the answer (the backend closed it while
//! idle) is retried once on a fresh connection. `done` never runs inside `get` itself.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herd_core::places::{Decoded, decode_response};
use herd_core::{HttpResponse, PlacesQuery, ServerStats, UpstreamError};

use crate::reactor::{Conn, Cx, Flow, Input};

/// Upstream connections one loop may have open; requests beyond wait in line (their deadline runs).
pub const MAX_CONNECTIONS: usize = 256;

type Done = Box<dyn FnOnce(&mut Cx, Result<HttpResponse, UpstreamError>)>;

/// One request's trip upstream.
struct Exchange {
    request: Vec<u8>,
    deadline: Instant,
    done: RefCell<Option<Done>>,
    /// The connection carrying it, so the deadline can close it.
    conn: Cell<Option<Conn>>,
    retried: Cell<bool>,
}

impl Exchange {
    fn is_open(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// The first answer wins; later ones are dropped.
    fn answer(&self, cx: &mut Cx, result: Result<HttpResponse, UpstreamError>) {
        let done = self.done.borrow_mut().take();
        if let Some(done) = done {
            done(cx, result);
        }
    }
}

/// A loop's connections to the places backend.
pub struct Places {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    idle: RefCell<Vec<Conn>>,
    open: Cell<usize>,
    waiting: RefCell<VecDeque<Rc<Exchange>>>,
    /// Connections opened: few, if keep-alive works.
    connects: Arc<AtomicU64>,
    /// Requests retried after a kept-alive connection turned out closed.
    stale_retries: Arc<AtomicU64>,
    /// Requests that waited for a free connection (the loop had [`MAX_CONNECTIONS`] open).
    queued: Arc<AtomicU64>,
}

impl Places {
    pub fn new(addr: SocketAddr, timeout: Duration, stats: &ServerStats) -> Rc<Self> {
        Rc::new(Self {
            addr,
            host: addr.to_string(),
            timeout,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            waiting: RefCell::new(VecDeque::new()),
            connects: stats.gauge("upstream_connects"),
            stale_retries: stats.gauge("upstream_stale_retries"),
            queued: stats.gauge("upstream_queued"),
        })
    }

    /// Fetches `query`; `done` runs once, with the response or why there is none.
    pub fn get(
        self: &Rc<Self>,
        cx: &mut Cx,
        query: &PlacesQuery,
        done: impl FnOnce(&mut Cx, Result<HttpResponse, UpstreamError>) + 'static,
    ) {
        let exchange = Rc::new(Exchange {
            request: query.encode_request(&self.host),
            deadline: Instant::now() + self.timeout,
            done: RefCell::new(Some(Box::new(done))),
            conn: Cell::new(None),
            retried: Cell::new(false),
        });
        let (this, timed) = (Rc::clone(self), Rc::clone(&exchange));
        cx.at(exchange.deadline, move |cx| {
            if timed.is_open() {
                timed.answer(cx, Err(UpstreamError::Timeout));
                if let Some(conn) = timed.conn.take() {
                    conn.close(cx);
                    this.closed(cx);
                }
            }
        });
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(conn) => self.send(cx, conn, exchange, true),
            None if self.open.get() < MAX_CONNECTIONS => self.connect(cx, exchange),
            None => {
                self.queued.fetch_add(1, Relaxed);
                self.waiting.borrow_mut().push_back(exchange);
            }
        }
    }

    fn connect(self: &Rc<Self>, cx: &mut Cx, exchange: Rc<Exchange>) {
        self.open.set(self.open.get() + 1);
        self.connects.fetch_add(1, Relaxed);
        let this = Rc::clone(self);
        let timeout = exchange.deadline.saturating_duration_since(Instant::now());
        cx.connect(self.addr, timeout, move |cx, connected| match connected {
            Ok(conn) if exchange.is_open() => this.send(cx, conn, exchange, false),
            Ok(conn) => this.release(cx, conn),
            Err(e) => {
                exchange.answer(cx, Err(UpstreamError::Unreachable(e.to_string())));
                this.closed(cx);
            }
        });
    }

    /// Writes the request on `conn` and reads until the response is complete.
    fn send(self: &Rc<Self>, cx: &mut Cx, conn: Conn, exchange: Rc<Exchange>, reused: bool) {
        exchange.conn.set(Some(conn));
        conn.write(cx, &exchange.request);
        let this = Rc::clone(self);
        let mut response = Vec::new();
        conn.read_bytes(cx, move |cx, input| {
            let error = match input {
                Input::Data(bytes) => {
                    response.extend_from_slice(bytes);
                    match decode_response(&response) {
                        Ok(Decoded::Partial) => return Flow::Continue,
                        Ok(Decoded::Complete(answer)) => {
                            let keep = answer.keep_alive && answer.consumed == response.len();
                            exchange.conn.set(None);
                            exchange.answer(cx, Ok(answer));
                            if keep {
                                this.release(cx, conn);
                            } else {
                                conn.close(cx);
                                this.closed(cx);
                            }
                            return Flow::Pause;
                        }
                        Err(e) => e,
                    }
                }
                Input::End | Input::Failed(_) if response.is_empty() && reused && !exchange.retried.get() => {
                    // Closed by the backend while idle, most likely: once more, on a fresh connection.
                    exchange.retried.set(true);
                    this.stale_retries.fetch_add(1, Relaxed);
                    exchange.conn.set(None);
                    conn.close(cx);
                    this.open.set(this.open.get() - 1);
                    this.connect(cx, Rc::clone(&exchange));
                    return Flow::Pause;
                }
                Input::End if response.is_empty() => UpstreamError::Unreachable("connection closed by upstream".into()),
                Input::End => UpstreamError::Http("connection closed mid-response".into()),
                Input::Failed(e) => UpstreamError::Unreachable(e.to_string()),
                Input::Line(_) | Input::Oversized(_) => return Flow::Continue,
            };
            exchange.conn.set(None);
            exchange.answer(cx, Err(error));
            conn.close(cx);
            this.closed(cx);
            Flow::Pause
        });
    }

    /// A connection that finished cleanly: to the next request in line, or idle.
    fn release(self: &Rc<Self>, cx: &mut Cx, conn: Conn) {
        while let Some(exchange) = self.next_waiting() {
            if exchange.is_open() {
                return self.send(cx, conn, exchange, true);
            }
        }
        self.idle.borrow_mut().push(conn);
        let this = Rc::clone(self);
        conn.read_bytes(cx, move |cx, _| {
            // Nothing is expected on an idle connection: end of stream, stray bytes or an error end it.
            this.idle.borrow_mut().retain(|&c| c != conn);
            conn.close(cx);
            this.closed(cx);
            Flow::Pause
        });
    }

    /// A connection is gone: one request waiting for a free slot gets a new one.
    fn closed(self: &Rc<Self>, cx: &mut Cx) {
        self.open.set(self.open.get() - 1);
        while let Some(exchange) = self.next_waiting() {
            if exchange.is_open() {
                return self.connect(cx, exchange);
            }
        }
    }

    fn next_waiting(&self) -> Option<Rc<Exchange>> {
        self.waiting.borrow_mut().pop_front()
    }
}
