//! Flood links in callbacks: one per neighbour, living on loop `i % loops`, reconnecting by timer.
//!
//! ```text
//!  cx.at(retry) ─► connect(|cx, conn| write PEER + queued lines; read_bytes(|cx, _| down)) ─► Up
//!       ▲                       └─ failed: drop queued lines ──┐
//!       └──────────────────────────────────────────────────────┘◄── down: peer closed, sent data or failed
//! ```
//!
//! Peers never send on a link, so any input (end of stream, data, an error) means it is gone. A line
//! for a link that is down starts a connection attempt if the last one was at least [`RETRY`] ago and
//! waits behind it; otherwise it is dropped and counted: old updates are not replayed.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use herd_core::log::{Direction, Event};
use herd_core::{Flood, ServerStats, Service};

use crate::Mail;
use crate::reactor::{Conn, Cx, Flow, Input, Mailbox};

/// Shortest time between two connection attempts to one neighbour.
pub const RETRY: Duration = Duration::from_millis(100);
/// Bytes queued on one link before further lines are dropped (a stuck neighbour must not grow memory).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Where neighbour `i`'s link lives.
enum Route<S> {
    Local(Rc<FloodLink<S>>),
    Remote(Mailbox<Mail>),
}

/// Every neighbour's route, indexed like [`Flood::to`].
pub struct Links<S> {
    routes: Vec<Route<S>>,
    service: Arc<S>,
}

impl<S: Service> Links<S> {
    /// Starts the links that live on loop `index` of `mailboxes.len()`; the others are reached by mail.
    pub fn start(
        cx: &mut Cx,
        me: &str,
        neighbours: &[(String, SocketAddr)],
        index: usize,
        mailboxes: &[Mailbox<Mail>],
        service: &Arc<S>,
    ) -> Self {
        let routes = neighbours
            .iter()
            .enumerate()
            .map(|(i, (name, addr))| {
                let home = i % mailboxes.len();
                if home != index {
                    return Route::Remote(mailboxes[home].clone());
                }
                let link = Rc::new(FloodLink {
                    service: Arc::clone(service),
                    name: name.clone(),
                    addr: *addr,
                    hello: format!("PEER {me}\n").into_bytes(),
                    state: RefCell::new(State::Down),
                    last_attempt: Cell::new(None),
                    tick_pending: Cell::new(false),
                });
                // The first attempt waits for the first line or one retry interval: the herd's
                // servers start together, and an attempt at time zero would mostly fail.
                link.tick_at(cx, Instant::now() + RETRY);
                Route::Local(link)
            })
            .collect();
        Self { routes, service: Arc::clone(service) }
    }

    /// Gives `flood` to the links it names: directly if local, by mail otherwise.
    pub fn send(&self, cx: &mut Cx, flood: &Flood) {
        for &i in &flood.to {
            match self.routes.get(i) {
                Some(Route::Local(link)) => link.send(cx, &flood.line),
                Some(Route::Remote(mailbox)) if mailbox.send(Mail::Flood(i, Arc::clone(&flood.line))).is_err() => {
                    ServerStats::bump(&self.service.stats().floods_dropped);
                }
                Some(Route::Remote(_)) | None => {}
            }
        }
    }

    /// A flood line another loop posted for a link of this loop.
    pub fn deliver(&self, cx: &mut Cx, link: usize, line: &[u8]) {
        if let Some(Route::Local(link)) = self.routes.get(link) {
            link.send(cx, line);
        }
    }
}

enum State {
    Down,
    /// The hello and the lines queued behind it, and how many lines.
    Connecting(Vec<u8>, u64),
    Up(Conn),
}

/// One outbound link to a neighbour.
struct FloodLink<S> {
    service: Arc<S>,
    name: String,
    addr: SocketAddr,
    hello: Vec<u8>,
    state: RefCell<State>,
    last_attempt: Cell<Option<Instant>>,
    /// A retry timer is set; at most one is.
    tick_pending: Cell<bool>,
}

impl<S: Service> FloodLink<S> {
    fn tick_at(self: &Rc<Self>, cx: &mut Cx, at: Instant) {
        if self.tick_pending.replace(true) {
            return;
        }
        let this = Rc::clone(self);
        cx.at(at, move |cx| {
            this.tick_pending.set(false);
            if matches!(*this.state.borrow(), State::Down) {
                this.connect(cx);
            }
        });
    }

    fn retry_later(self: &Rc<Self>, cx: &mut Cx) {
        let at = self.last_attempt.get().map_or_else(Instant::now, |t| t + RETRY);
        self.tick_at(cx, at);
    }

    fn may_attempt(&self) -> bool {
        self.last_attempt.get().is_none_or(|t| t.elapsed() >= RETRY)
    }

    fn connect(self: &Rc<Self>, cx: &mut Cx) {
        if !self.may_attempt() {
            return self.retry_later(cx);
        }
        self.last_attempt.set(Some(Instant::now()));
        *self.state.borrow_mut() = State::Connecting(self.hello.clone(), 0);
        let this = Rc::clone(self);
        cx.connect(self.addr, CONNECT_TIMEOUT, move |cx, connected| {
            let State::Connecting(queued, lines) = this.state.replace(State::Down) else { return };
            let stats = this.service.stats();
            let Ok(conn) = connected else {
                stats.floods_dropped.fetch_add(lines, Relaxed);
                return this.retry_later(cx);
            };
            conn.write(cx, &queued);
            stats.floods_out.fetch_add(lines, Relaxed);
            *this.state.borrow_mut() = State::Up(conn);
            let up = Event::LinkUp { peer: this.name.clone(), direction: Direction::Outbound };
            this.service.log().event(up);
            let watcher = Rc::clone(&this);
            conn.read_bytes(cx, move |cx, input| {
                let reason = match input {
                    Input::End => "closed by peer".to_owned(),
                    Input::Failed(e) => e.to_string(),
                    Input::Data(_) | Input::Line(_) | Input::Oversized(_) => {
                        "peer sent data on a flood link".to_owned()
                    }
                };
                watcher.down(cx, conn, reason);
                Flow::Pause
            });
        });
    }

    fn send(self: &Rc<Self>, cx: &mut Cx, line: &[u8]) {
        if matches!(*self.state.borrow(), State::Down) && self.may_attempt() {
            self.connect(cx);
        }
        let stats = self.service.stats();
        let mut state = self.state.borrow_mut();
        match &mut *state {
            State::Up(conn) if conn.pending(cx).is_some_and(|owed| owed + line.len() <= QUEUE_BYTES) => {
                conn.write(cx, line);
                ServerStats::bump(&stats.floods_out);
            }
            State::Connecting(queued, lines) if queued.len() + line.len() <= QUEUE_BYTES => {
                queued.extend_from_slice(line);
                *lines += 1;
            }
            _ => ServerStats::bump(&stats.floods_dropped),
        }
    }

    fn down(self: &Rc<Self>, cx: &mut Cx, conn: Conn, reason: String) {
        conn.close(cx);
        let was_up = matches!(*self.state.borrow(), State::Up(c) if c == conn);
        if was_up {
            *self.state.borrow_mut() = State::Down;
            self.service.log().event(Event::LinkDown { peer: self.name.clone(), reason });
            self.retry_later(cx);
        }
    }
}
