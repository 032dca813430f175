//! Callback style: every operation takes a closure that runs when it completes, so the logic of one
//! request reads top to bottom as nested closures, in the order things happen.
//!
//! ```text
//!  cx.listen(listener, |cx, stream| ──────────── one closure per accept, judged by the Acceptor
//!    conn.read_lines(cx, max, |cx, input| ────── one call per line, Idle when the socket is drained
//!      handle_line(line) ─┬─ Reply ──► out.complete(seq, bytes)
//!                         └─ Fetch ──► places.get(cx, &query, |cx, result| ── when upstream answers
//!                                         out.complete(seq, Service::complete(…)); send
//!      Idle / should_flush ─► send: conn.write(out.poll_transmit()) ─► consumed / blocked
//!                                   └─ full: conn.when_writable(|cx| send), alarm at out.poll_timeout()
//! ```
//!
//! A client's replies, its back-pressure and when to give up on it are herd-core's
//! [`OutputBuffer`]; each line is herd-core's [`handle_line`] (the service, the flood, and a reply
//! or a fetch); the places exchange is a `PlacesCall` on the loop's `PlacesPool` (`places`); the
//! flood links are one `FloodLinks` set shared by every loop, each driven by closures on one loop
//! (`links`); the cap on connections and the pause after an accept error are herd-core's
//! [`Acceptor`]. The closures only move bytes, feed the machines, and turn their `poll_timeout`
//! into timers (`reactor::Alarm`).
//!
//! The state a request's closures share lives in `Rc<RefCell<…>>`: the connection's [`Link`] and
//! [`OutputBuffer`] are touched by the line callback and, later, by each WHATSAT's upstream callback
//! and each writable callback. That is this style's price: whatever outlives one callback is shared,
//! reference-counted state, and an answer that must arrive once (response, failure or timeout) needs
//! a "first one wins" cell (see `places`). In return there is no state machine to read: the code is
//! the sequence.
//!
//! The reactor (`reactor`) knows nothing of the herd and decides nothing: it turns epoll readiness,
//! timers and mail into closure calls. It never calls a closure from inside the call that
//! registered it, so a `RefCell` borrow held across such a call cannot be re-entered.
//!
//! # Threads
//! `--threads N` loops (default: available cores), one per thread, each with its own epoll. Loop 0
//! owns the listener and deals accepted connections round-robin, posting every loop (itself too)
//! its share through its mailbox (a channel and a waker); sharing the listener between N epolls
//! would wake every loop for every connection, and SO_REUSEPORT would need the harness's
//! already-bound socket bound again. Neighbour `i`'s link is driven on loop `i % N`; a flood from
//! any loop wakes it by mail.
//!
//! # Layout
//! - `reactor`: the closure-taking primitives (`listen`, `connecting`, `read_lines`, `read_bytes`,
//!   `write`, `when_writable`, `at`, `Alarm`, mailboxes, `run_all`) over mio. No protocol, no policy.
//! - `lib.rs` (here): the server, as closures: accept, serve a client, route mail.
//! - `places`: the places client (`places.get(cx, &query, |cx, result| …)`) on the loop's pool.
//! - `links`: the drivers of the flood links living on this loop.

mod links;
mod places;
mod reactor;

use std::cell::RefCell;
use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use herd_core::policy::{Accepted, Acceptor, Admitted, Close, Fetch, FloodLinks, Handled, OutputBuffer, handle_line};
use herd_core::{Limits, Link, ServeOptions, Service, Timestamp, available_cores};
use mio::net::TcpStream;

use crate::links::{LinkDriver, LinkWake};
use crate::places::Places;
use crate::reactor::{Alarm, Conn, Cx, Flow, Init, Input, Loop, Mailbox};

/// What loops send each other.
#[derive(Debug)]
enum Mail {
    /// A connection loop 0 accepted for this loop.
    Client(TcpStream, Admitted),
    /// Neighbour `.0`'s link, driven on this loop, has something to do.
    Wake(usize),
}

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, o: &ServeOptions) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let count = o.threads.unwrap_or_else(available_cores).max(1);
    let (loops, mailboxes): (Vec<_>, Vec<_>) =
        (0..count).map(|_| Loop::new()).collect::<io::Result<Vec<_>>>()?.into_iter().unzip();
    let mailboxes: Arc<[Mailbox<Mail>]> = mailboxes.into();
    let wake = |link: usize| LinkWake { home: mailboxes[link % count].clone(), link };
    let (stats, log) = (service.stats(), service.log());
    let links = Arc::new(FloodLinks::new(o, Instant::now(), stats, log, wake));
    let mut listener = Some(mio::net::TcpListener::from_std(listener));
    let loops = loops.into_iter().enumerate().map(|(index, event_loop)| {
        let (service, links, mailboxes, o, listener) =
            (Arc::clone(&service), Arc::clone(&links), Arc::clone(&mailboxes), o.clone(), listener.take());
        // On the loop's thread: its link drivers, its places pool, (loop 0) the listener, and what
        // to do with its mail.
        let init: Init<Mail> = Box::new(move |cx| {
            let drivers: Vec<_> = (o.neighbours.iter().enumerate())
                .map(|(i, (_, addr))| (i % count == index).then(|| LinkDriver::start(cx, &links, i, *addr)))
                .collect();
            let places = o.places.map(|addr| Places::new(addr, &o.limits, service.stats()));
            let herd = Rc::new(Herd { service, limits: o.limits.clone(), links, places });
            if let Some(listener) = listener {
                listen(cx, listener, &herd, mailboxes);
            }
            Box::new(move |cx, mail| match mail {
                Mail::Client(stream, admitted) => Client::serve(cx, &herd, stream, admitted),
                Mail::Wake(i) => drivers.get(i).into_iter().flatten().for_each(|driver| driver.drive(cx)),
            })
        });
        (event_loop, init)
    });
    reactor::run_all(loops.collect())
}

/// One loop's view of the server, shared by its closures.
struct Herd<S> {
    service: Arc<S>,
    limits: Limits,
    links: Arc<FloodLinks<LinkWake>>,
    places: Option<Rc<Places>>,
}

/// Accepts connections and deals them round-robin to every loop's mailbox (this one's too), as
/// the [`Acceptor`] says: past the cap a connection is closed and accepting goes on; after an
/// accept error, accepting pauses.
fn listen<S: Service>(cx: &mut Cx, listener: mio::net::TcpListener, herd: &Herd<S>, mailboxes: Arc<[Mailbox<Mail>]>) {
    let (service, mut dealt) = (Arc::clone(&herd.service), 0_usize);
    let mut acceptor = Acceptor::new(&herd.limits, service.stats(), service.log());
    let listening = cx.listen(listener, move |_, accepted| match acceptor.on_accept(accepted, Instant::now) {
        Accepted::Serve(stream, admitted) => {
            let _ = stream.set_nodelay(true);
            dealt = dealt.wrapping_add(1);
            if mailboxes[dealt % mailboxes.len()].send(Mail::Client(stream, admitted)).is_err() {
                service.log().error("hand-off", "event loop has stopped; connection dropped");
            }
            None
        }
        Accepted::Refused => None,
        Accepted::Pause(until) => Some(until),
    });
    if let Err(e) = listening {
        herd.service.log().error("listen", e);
    }
}

/// One client connection: what its callbacks share.
struct Client<S> {
    conn: Conn,
    /// Its place under the connection cap, given back when the connection's last callback goes.
    _admitted: Admitted,
    herd: Rc<Herd<S>>,
    state: RefCell<ClientState>,
}

struct ClientState {
    link: Link,
    out: OutputBuffer,
    /// No more lines will come: end of stream or an oversized line.
    ended: bool,
    /// The output buffer's stall deadline.
    alarm: Alarm,
}

impl<S: Service> Client<S> {
    /// Serves one client: every line is handled as it arrives; replies leave in request order.
    fn serve(cx: &mut Cx, herd: &Rc<Herd<S>>, stream: TcpStream, admitted: Admitted) {
        let Ok(conn) = cx.adopt(stream).inspect_err(|e| herd.service.log().error("register", e)) else { return };
        let out = OutputBuffer::new(&herd.limits);
        let state = RefCell::new(ClientState { link: Link::default(), out, ended: false, alarm: Alarm::default() });
        let client = Rc::new(Self { conn, _admitted: admitted, herd: Rc::clone(herd), state });
        conn.read_lines(cx, herd.limits.max_line, move |cx, input| client.on_input(cx, input));
    }

    fn on_input(self: &Rc<Self>, cx: &mut Cx, input: Input<'_>) -> Flow {
        let mut s = self.state.borrow_mut();
        match input {
            Input::Line(line) => {
                let seq = s.out.admit();
                let (herd, received) = (&*self.herd, Timestamp::from_system_time(SystemTime::now()));
                let places = herd.places.as_ref();
                match handle_line(&*herd.service, &herd.links, places, line, &mut s.link, received, Instant::now) {
                    Handled::Reply(bytes) => s.out.complete(seq, bytes),
                    Handled::Nothing => s.out.complete(seq, Vec::new()),
                    Handled::Fetch(Fetch { places, lookup }) => {
                        let (this, query) = (Rc::clone(self), lookup.query.clone());
                        let answered: places::Done = Box::new(move |cx, result| {
                            let reply = this.herd.service.complete(lookup, result);
                            let mut s = this.state.borrow_mut();
                            s.out.complete(seq, reply);
                            this.send(cx, &mut s);
                        });
                        places.get(cx, &query, herd.service.stats(), answered);
                    }
                }
                if s.out.should_flush() || !s.out.may_read() {
                    self.send(cx, &mut s);
                }
                if s.out.may_read() { Flow::Continue } else { Flow::Pause }
            }
            Input::Idle => {
                self.send(cx, &mut s);
                Flow::Continue
            }
            Input::Oversized(_) | Input::End => {
                if let Input::Oversized(quote) = input {
                    let seq = s.out.admit();
                    s.out.complete(seq, self.herd.service.oversized(quote));
                }
                s.ended = true;
                self.send(cx, &mut s);
                Flow::Pause
            }
            Input::Failed(_) | Input::Data(_) => Flow::Pause,
        }
    }

    /// Writes what the client is owed, as far as the socket takes it; the output buffer judges a
    /// full socket, a stall, and when reading may go on. Closes once input ended and all is sent.
    fn send(self: &Rc<Self>, cx: &mut Cx, s: &mut ClientState) {
        let now = Instant::now();
        while s.out.owed() > 0 {
            match self.conn.write(cx, s.out.poll_transmit()) {
                Ok(0) => {
                    if let Err(close) = s.out.blocked(now) {
                        return self.close(cx, Some(close));
                    }
                    let this = Rc::clone(self);
                    self.conn.when_writable(cx, move |cx| this.send(cx, &mut this.state.borrow_mut()));
                    break;
                }
                Ok(n) => s.out.consumed(n, now),
                Err(_) => return self.close(cx, None),
            }
        }
        if s.ended && s.out.is_idle() {
            return self.conn.close(cx);
        }
        if s.out.may_read() {
            self.conn.resume(cx); // if reading was paused
        }
        self.arm(cx, s);
    }

    /// Sets a timer at the output buffer's stall deadline (if it has one and moved earlier).
    fn arm(self: &Rc<Self>, cx: &mut Cx, s: &ClientState) {
        let this = Rc::clone(self);
        s.alarm.set(cx, s.out.poll_timeout(), move |cx| {
            let mut s = this.state.borrow_mut();
            match s.out.on_timeout(Instant::now()) {
                Ok(()) => this.arm(cx, &s),
                Err(close) => this.close(cx, Some(close)),
            }
        });
    }

    fn close(&self, cx: &mut Cx, why: Option<Close>) {
        if let Some(close) = why {
            self.herd.service.log().error("write", close);
        }
        self.conn.close(cx);
    }
}
