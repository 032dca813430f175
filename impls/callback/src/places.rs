//! The places client in callbacks: `places.get(cx, &query, |cx, result| …)`.
//!
//! ```text
//!  get ─► PlacesCall::new; cx.at(call.poll_timeout(), |cx| on_timeout) ; later: attach
//!  attach ─┬─ pool.checkout() ─► cx.adopt ──────────────────────┐
//!          └─ connect (pool.opened) ─► connecting(|cx, conn| …) ─┴─► send: write call.request()
//!  read_bytes(|cx, input| on_bytes / on_closed) ─► Step ─┬─ Reconnect ─► attach a fresh connection
//!                                                        └─ Done ─► detach, pool.checkin(conn, keep); done(result)
//! ```
//!
//! The rules (one deadline, which connection to use, the one retry of a stale kept-alive
//! connection, whether a connection may be kept, how many idle ones) are herd-core's `PlacesCall`
//! and `PlacesPool`; the pool is per loop (a socket belongs to one epoll) and holds its idle
//! connections out of epoll. Three callbacks race to end one exchange (the reader, a failure, the
//! deadline timer); [`Exchange::step`] lets the first `Done` through. `done` never runs inside
//! `get` itself.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Instant;

use herd_core::policy::{PlacesCall, PlacesPool, Step};
use herd_core::{HttpResponse, Limits, PlacesQuery, ServerStats, UpstreamError};
use mio::net::TcpStream;

use crate::reactor::{Conn, Cx, Flow, Input};

/// What runs once an exchange has ended, with the response or why there is none.
pub type Done = Box<dyn FnOnce(&mut Cx, Result<HttpResponse, UpstreamError>)>;

/// A loop's way to the places backend.
pub struct Places {
    addr: SocketAddr,
    host: String,
    limits: Limits,
    pool: PlacesPool<TcpStream>,
}

/// One WHATSAT's exchange.
struct Exchange {
    places: Rc<Places>,
    call: RefCell<PlacesCall>,
    /// Taken by the first `Done`.
    done: RefCell<Option<Done>>,
    /// The connection carrying it.
    conn: Cell<Option<Conn>>,
}

impl Places {
    pub fn new(addr: SocketAddr, limits: &Limits, stats: &ServerStats) -> Rc<Self> {
        Rc::new(Self { addr, host: addr.to_string(), limits: limits.clone(), pool: PlacesPool::new(limits, stats) })
    }

    /// Fetches `query`; `done` runs once, with the response or why there is none.
    pub fn get(self: &Rc<Self>, cx: &mut Cx, query: &PlacesQuery, stats: &ServerStats, done: Done) {
        let call = PlacesCall::new(query, &self.host, Instant::now(), &self.limits, stats);
        let deadline = call.poll_timeout();
        let (places, call, done, conn) =
            (Rc::clone(self), RefCell::new(call), RefCell::new(Some(done)), Cell::new(None));
        let exchange = Rc::new(Exchange { places, call, done, conn });
        // The timer does not keep a finished exchange alive.
        let timed: Weak<Exchange> = Rc::downgrade(&exchange);
        cx.at(deadline, move |cx| {
            if let Some(ex) = timed.upgrade() {
                ex.step(cx, |call| call.on_timeout(Instant::now()).unwrap_or(Step::Continue));
            }
        });
        cx.defer(move |cx| exchange.attach(cx, false));
    }
}

impl Exchange {
    /// Takes a connection: an idle one from the pool unless `fresh`, else a new one.
    fn attach(self: &Rc<Self>, cx: &mut Cx, fresh: bool) {
        let pooled = if fresh { None } else { self.places.pool.checkout() };
        self.call.borrow_mut().on_attached(pooled.is_some());
        let this = Rc::clone(self);
        let attached = match pooled {
            Some(stream) => cx.adopt(stream).map(|conn| {
                self.conn.set(Some(conn));
                self.send(cx, conn, 0);
            }),
            None => {
                self.places.pool.opened();
                let connecting = TcpStream::connect(self.places.addr).and_then(|stream| {
                    cx.connecting(stream, move |cx, connected| match connected {
                        Ok(conn) => this.send(cx, conn, 0),
                        Err(e) => _ = this.step(cx, |call| call.on_connect_failed(&e.to_string())),
                    })
                });
                connecting.map(|conn| self.conn.set(Some(conn)))
            }
        };
        if let Err(e) = attached {
            self.step(cx, |call| call.on_connect_failed(&e.to_string()));
        }
    }

    /// Writes the request on `conn` from byte `from` on, then reads until the response is complete.
    fn send(self: &Rc<Self>, cx: &mut Cx, conn: Conn, from: usize) {
        let len = self.call.borrow().request().len();
        let written = conn.write(cx, &self.call.borrow().request()[from..]);
        match written {
            Ok(n) if from + n < len => {
                let this = Rc::clone(self);
                return conn.when_writable(cx, move |cx| this.send(cx, conn, from + n));
            }
            Ok(_) => {}
            Err(e) => {
                self.step(cx, |call| call.on_closed(&e.to_string()));
                return;
            }
        }
        let this = Rc::clone(self);
        conn.read_bytes(cx, move |cx, input| {
            let finished = match input {
                Input::Data(bytes) => this.step(cx, |call| call.on_bytes(bytes)),
                Input::End => this.step(cx, |call| call.on_closed("end of stream")),
                Input::Failed(e) => this.step(cx, |call| call.on_closed(&e.to_string())),
                Input::Line(_) | Input::Oversized(_) | Input::Idle => false,
            };
            if finished { Flow::Pause } else { Flow::Continue }
        });
    }

    /// Feeds the call one event and does what it says: read on (`false`), a fresh connection, or
    /// the end (the first end wins); `true` when this connection is done with.
    fn step(self: &Rc<Self>, cx: &mut Cx, event: impl FnOnce(&mut PlacesCall) -> Step) -> bool {
        let step = event(&mut self.call.borrow_mut());
        match step {
            Step::Continue => return false,
            Step::Reconnect => {
                if let Some(conn) = self.conn.take() {
                    conn.close(cx);
                }
                self.attach(cx, true);
            }
            Step::Done { result, keep } => {
                let Some(done) = self.done.borrow_mut().take() else { return true };
                if let Some(stream) = self.conn.take().and_then(|conn| conn.detach(cx)) {
                    self.places.pool.checkin(stream, keep);
                }
                done(cx, result);
            }
        }
        true
    }
}
