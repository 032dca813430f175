//! Callback style: every operation takes a closure that runs when it completes, so the logic of one
//! request reads top to bottom as nested closures, in the order things happen.
//!
//! ```text
//!  cx.listen(listener, |cx, stream| ─────────── one closure per accepted connection
//!    conn.read_lines(cx, max, |cx, input| ───── one call per line
//!      Service::handle(line) ─┬─ Bytes ──► conn.write(ReplyOrder::complete(seq, bytes))
//!                             └─ Places ─► places.get(cx, &query, |cx, result| ── when upstream answers
//!                                             conn.write(ReplyOrder::complete(seq, Service::complete(…)))
//! ```
//!
//! The state a request's closures share lives in `Rc<RefCell<…>>`: the connection's [`Link`] and
//! [`ReplyOrder`] are touched by the line callback and, later, by each WHATSAT's upstream callback.
//! That is this style's price: whatever outlives one callback is shared, reference-counted state,
//! and an answer that must arrive once (response, failure or timeout) needs a "first one wins" cell
//! (see `places`). In return there is no state machine to read: the code is the sequence.
//!
//! The reactor (`reactor`) knows nothing of the herd: it turns epoll readiness, timers and mail
//! into closure calls. It never calls a closure from inside the call that registered it, so a
//! `RefCell` borrow held across such a call cannot be re-entered.
//!
//! # Threads
//! `--threads N` loops (default: available cores), one per thread, each with its own epoll. Loop 0
//! owns the listener and deals accepted connections round-robin, posting the others theirs through
//! their mailbox (a channel and a waker); sharing the listener between N epolls would wake every
//! loop for every connection, and SO_REUSEPORT would need the harness's already-bound socket bound
//! again. Neighbour `i`'s flood link lives on loop `i % N`; other loops post their lines to it.
//!
//! # Layout
//! - `reactor`: the closure-taking primitives (`listen`, `connect`, `read_lines`, `read_bytes`,
//!   `write`, `after`, mailboxes) over mio. No protocol knowledge.
//! - `lib.rs` (here): the server, as closures: accept, serve a client, route mail.
//! - `places`: the places client (`places.get(cx, &query, |cx, result| …)`) with its keep-alive pool.
//! - `links`: flood links to the neighbours.

mod links;
mod places;
mod reactor;

use std::cell::RefCell;
use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::SystemTime;

use herd_core::{Link, Reply, ReplyOrder, ServeOptions, ServerStats, Service, Timestamp, available_cores};
use mio::net::TcpStream;

use crate::links::Links;
use crate::places::Places;
use crate::reactor::{Conn, Cx, Flow, Input, Loop, Mailbox};

/// WHATSATs of one connection waiting for upstream at once; past it, the connection stops reading.
pub const MAX_WAITING: usize = 64;
/// Messages waiting in one loop's mailbox (connections handed over, flood lines for its links).
pub const MAIL_QUEUE: usize = 64 * 1024;

/// What loops send each other.
enum Mail {
    /// A connection loop 0 accepted for this loop.
    Client(TcpStream),
    /// A line for neighbour link `.0`, which lives on this loop.
    Flood(usize, Arc<[u8]>),
}

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let count = options.threads.unwrap_or_else(available_cores).max(1);
    let mut loops = Vec::new();
    let mut mailboxes = Vec::new();
    for _ in 0..count {
        let (event_loop, mailbox) = Loop::<Mail>::new(MAIL_QUEUE)?;
        loops.push(event_loop);
        mailboxes.push(mailbox);
    }
    let mailboxes: Arc<[Mailbox<Mail>]> = mailboxes.into();
    let mut listener = Some(mio::net::TcpListener::from_std(listener));
    let mut first = None;
    for (index, event_loop) in loops.into_iter().enumerate() {
        let start = Start {
            index,
            service: Arc::clone(&service),
            options: options.clone(),
            mailboxes: Arc::clone(&mailboxes),
            listener: if index == 0 { listener.take() } else { None },
        };
        if index == 0 {
            first = Some((event_loop, start));
            continue;
        }
        thread::Builder::new().name(format!("loop-{index}")).spawn(move || {
            let service = Arc::clone(&start.service);
            if let Err(e) = event_loop.run(start.options.write_timeout, |cx| start.run(cx)) {
                service.log().error("event loop", e);
            }
        })?;
    }
    let (event_loop, start) = first.expect("there is always a loop 0");
    event_loop.run(options.write_timeout, |cx| start.run(cx))
}

/// What one loop starts from.
struct Start<S> {
    index: usize,
    service: Arc<S>,
    options: ServeOptions,
    mailboxes: Arc<[Mailbox<Mail>]>,
    listener: Option<mio::net::TcpListener>,
}

/// One loop's view of the server, shared by its closures.
struct Herd<S> {
    service: Arc<S>,
    places: Option<Rc<Places>>,
    links: Links<S>,
    max_line: usize,
}

impl<S: Service> Start<S> {
    /// Starts the loop's links and (on loop 0) the listener; returns what to do with its mail.
    fn run(self, cx: &mut Cx) -> impl FnMut(&mut Cx, Mail) + use<S> {
        let o = &self.options;
        let herd = Rc::new(Herd {
            places: o.places.map(|addr| Places::new(addr, o.upstream_timeout, self.service.stats())),
            links: Links::start(cx, &o.name, &o.neighbours, self.index, &self.mailboxes, &self.service),
            service: self.service,
            max_line: o.max_line,
        });
        if let Some(listener) = self.listener {
            let (acceptor, mailboxes, me) = (Rc::clone(&herd), self.mailboxes, self.index);
            let mut next = 0;
            let listening = cx.listen(listener, move |cx, accepted| match accepted {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    ServerStats::bump(&acceptor.service.stats().connections);
                    let target = next;
                    next = (next + 1) % mailboxes.len();
                    if target == me {
                        serve_client(cx, &acceptor, stream);
                    } else if mailboxes[target].send(Mail::Client(stream)).is_err() {
                        acceptor.service.log().error("hand-off", "the loop's mailbox is full; connection dropped");
                    }
                }
                Err(e) => acceptor.service.log().error("accept", e),
            });
            if let Err(e) = listening {
                herd.service.log().error("listen", e);
            }
        }
        move |cx, mail| match mail {
            Mail::Client(stream) => serve_client(cx, &herd, stream),
            Mail::Flood(link, line) => herd.links.deliver(cx, link, &line),
        }
    }
}

/// What a client connection's callbacks share.
#[derive(Default)]
struct Client {
    link: Link,
    order: ReplyOrder,
    /// WHATSATs waiting for upstream.
    waiting: usize,
    /// No more lines will come: end of stream or an oversized line.
    ended: bool,
}

/// Serves one client: every line is handled as it arrives; replies leave in request order.
fn serve_client<S: Service>(cx: &mut Cx, herd: &Rc<Herd<S>>, stream: TcpStream) {
    let conn = match cx.adopt(stream) {
        Ok(conn) => conn,
        Err(e) => return herd.service.log().error("register", e),
    };
    let client = Rc::new(RefCell::new(Client::default()));
    let herd = Rc::clone(herd);
    conn.read_lines(cx, herd.max_line, move |cx, input| {
        let mut c = client.borrow_mut();
        match input {
            Input::Line(line) => {
                let seq = c.order.admit();
                let now = Timestamp::from_system_time(SystemTime::now());
                let outcome = herd.service.handle(line, &mut c.link, now);
                if let Some(flood) = &outcome.flood {
                    herd.links.send(cx, flood);
                }
                match outcome.reply {
                    Reply::Bytes(bytes) => conn.write(cx, &c.order.complete(seq, bytes)),
                    Reply::Nothing => conn.write(cx, &c.order.complete(seq, Vec::new())),
                    Reply::Places(lookup) => {
                        c.waiting += 1;
                        let (client, replier) = (Rc::clone(&client), Rc::clone(&herd));
                        let query = lookup.query.clone();
                        herd.fetch(cx, &query, move |cx, result| {
                            let reply = replier.service.complete(lookup, result);
                            let mut c = client.borrow_mut();
                            c.waiting -= 1;
                            conn.write(cx, &c.order.complete(seq, reply));
                            if c.ended && c.waiting == 0 {
                                conn.end(cx);
                            } else if !c.ended {
                                conn.resume(cx);
                            }
                        });
                        if c.waiting >= MAX_WAITING {
                            return Flow::Pause;
                        }
                    }
                }
                Flow::Continue
            }
            Input::Oversized(quote) => {
                let seq = c.order.admit();
                conn.write(cx, &c.order.complete(seq, herd.service.oversized(quote)));
                end_of_input(cx, conn, &mut c)
            }
            Input::End => end_of_input(cx, conn, &mut c),
            Input::Failed(e) => {
                if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::OutOfMemory) {
                    herd.service.log().error("write", format!("{e}; connection closed"));
                }
                Flow::Pause
            }
            Input::Data(_) => Flow::Continue,
        }
    });
}

/// No more lines: close once the replies still owed have left.
fn end_of_input(cx: &mut Cx, conn: Conn, c: &mut Client) -> Flow {
    c.ended = true;
    if c.waiting == 0 {
        conn.end(cx);
    }
    Flow::Pause
}

impl<S: Service> Herd<S> {
    /// Fetches places, or fails (later, never inside this call) when no backend is configured.
    fn fetch(
        &self,
        cx: &mut Cx,
        query: &herd_core::PlacesQuery,
        done: impl FnOnce(&mut Cx, Result<herd_core::HttpResponse, herd_core::UpstreamError>) + 'static,
    ) {
        match &self.places {
            Some(places) => places.get(cx, query, done),
            None => cx.defer(move |cx| {
                done(cx, Err(herd_core::UpstreamError::NotConfigured));
            }),
        }
    }
}
