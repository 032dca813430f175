//! Event-handler style: an event queue and objects that react to it, as in a WinProc.
//!
//! Each thread runs one loop. The loop owns a table of handler objects indexed by mio
//! [`Token`](mio::Token) (a slab with generations), an epoll instance, a binary heap of deadlines
//! and a queue of messages. Everything that happens becomes an event addressed to one handler:
//! readiness from epoll, a deadline that passed, a message (a WHATSAT's reply, a flood link's
//! wake-up, a connection dealt by loop 0). The loop dispatches events one at a time to
//! `Handler::on_event`; a handler makes non-blocking syscalls, tells herd-core's policy machines
//! what happened and does what they say, posts messages, sets timers, and returns at once. Nothing
//! ever blocks, so one thread serves thousands of connections, and all control flow is "which
//! event, which handler, which state".
//!
//! ```text
//!            loop 0                                      loop 1 … N-1 (same; their Door only adopts)
//!  ┌──────────────────────────────────────────────┐
//!  │ epoll ─► Ready ─┐                            │      Door (loop 0): accept, deal round-robin,
//!  │ heap  ─► Timer ─┼─► dispatch ─► handlers:    │        as the Acceptor says ──────────Adopt──► Door
//!  │ queue ─► Msg ───┘      ▲       Door          │      ClientConn: frame, handle_line, OutputBuffer
//!  │                        │       ClientConn …  │      LinkDriver: drives FloodLinks[i], on loop i % N;
//!  │                 (post, timer)  LinkDriver …  │        any thread's flood wakes it (Remote::post)
//!  │                                Exchange …    │      Exchange: one WHATSAT's PlacesCall, on a socket
//!  └──────────────────────────────────────────────┘        from this loop's PlacesPool
//! ```
//!
//! Every rule is herd-core's (`herd_core::policy`): each line goes through `handle_line` (the
//! service, the flood, and a reply or a fetch), a client's replies and back-pressure are an
//! `OutputBuffer`, each places exchange a `PlacesCall` on a connection of the loop's `PlacesPool`,
//! the flood links one `FloodLinks` set shared by every loop, the cap on connections and the pause
//! after an accept error an `Acceptor`.
//! Handlers move bytes, feed the machines what the sockets say, and turn each machine's
//! `poll_timeout` into a timer of their loop (`Context::wake_at`).
//!
//! # Threads
//! `--threads N` loops (default: available cores), each on its own thread with its own epoll. Loop 0
//! also owns the listening socket and deals accepted connections round-robin, handing every loop
//! (itself included) its share through the loop's `Remote` (a channel and a waker). Sharing the listener
//! between N epolls instead (a `try_clone` in each) wakes every loop for every connection and lets
//! one loop take a whole burst; SO_REUSEPORT would need the address re-bound with the option set,
//! and the harness hands us a socket already bound. Dealing costs one channel send and at most one
//! wake-up per connection, and gives every loop the same share. Neighbour `i`'s link driver lives
//! on loop `i % N`; a client on any loop queues its updates in the shared machine, whose waker
//! (`LinkWake`) posts a wake-up to the driver through its loop's `Remote`.
//!
//! # Layout
//! - `reactor`: `Event`, the `Handler` trait, `Context` (handler table, queue, timers), the loops
//!   and their cross-thread `Remote`, non-blocking I/O helpers. Generic: no protocol, no policy.
//! - here: `serve`, what a loop's handlers share (`World`), `LinkWake`, and the `Door`.
//! - `client`: `ClientConn`, a client connection.
//! - `link`: `LinkDriver`, the handler that drives one neighbour's flood link.
//! - `upstream`: `Exchange`, one WHATSAT's places exchange on a pooled connection.

mod client;
mod link;
mod reactor;
mod upstream;

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use herd_core::policy::{Accepted, Acceptor, Admitted, FloodLinks, LinkWaker, PlacesPool};
use herd_core::{ServeOptions, Service, available_cores};
use mio::Interest;
use mio::net::TcpStream;

use crate::client::ClientConn;
use crate::link::LinkDriver;
use crate::reactor::{Context, Event, Handler, HandlerId, Loop, Next, Remote, accept_now};

/// What handlers post each other, and other threads post a loop.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A WHATSAT's finished reply, for the client connection that asked, with its place in line.
    Reply { seq: u64, bytes: Vec<u8> },
    /// Something to do: a flood link has updates queued or a connection due; an exchange may start.
    Wake,
    /// For the mailbox: a connection loop 0 accepted for this loop.
    Adopt(TcpStream, Admitted),
}

/// What one loop's handlers share.
pub(crate) struct World<S> {
    service: Arc<S>,
    options: ServeOptions,
    /// Every neighbour's link, shared by all loops.
    links: Arc<FloodLinks<LinkWake>>,
    /// This loop's kept-alive places connections; `None` in echo mode.
    pool: Option<PlacesPool<TcpStream>>,
    index: usize,
    remotes: Arc<[Arc<Remote<Msg>>]>,
    /// The listening socket, on loop 0 until it starts.
    listener: Option<mio::net::TcpListener>,
}

/// A loop's context, as its handlers see it.
pub(crate) type Cx<S> = Context<World<S>, Msg>;

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, o: &ServeOptions) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let count = o.threads.unwrap_or_else(available_cores).max(1);
    let loops = (0..count).map(|_| Loop::new()).collect::<io::Result<Vec<Loop<Msg>>>>()?;
    let remotes: Arc<[_]> = loops.iter().map(Loop::remote).collect();
    let (stats, log) = (service.stats(), service.log());
    let wake = |i| LinkWake { home: Arc::clone(&remotes[i % count]), driver: OnceLock::new() };
    let links = Arc::new(FloodLinks::new(o, Instant::now(), stats, log, wake));
    let mut listener = Some(mio::net::TcpListener::from_std(listener));
    let worlds = loops.into_iter().enumerate().map(|(index, event_loop)| {
        let (service, links, remotes) = (Arc::clone(&service), Arc::clone(&links), Arc::clone(&remotes));
        let (options, pool, listener) =
            (o.clone(), o.places.map(|_| PlacesPool::new(&o.limits, stats)), listener.take());
        (event_loop, World { service, options, links, pool, index, remotes, listener })
    });
    reactor::run_all(worlds.collect(), start)
}

/// A loop's first handlers: its link drivers, (loop 0) the acceptor, and its mailbox.
fn start<S: Service>(cx: &mut Cx<S>) -> io::Result<HandlerId> {
    let (loops, index, neighbours) = (cx.world.remotes.len(), cx.world.index, cx.world.options.neighbours.clone());
    for (i, (_, addr)) in neighbours.into_iter().enumerate().filter(|(i, _)| i % loops == index) {
        let driver = cx.spawn(|_| LinkDriver::new(i, addr));
        let _ = cx.world.links.get(i).map(|link| link.waker.driver.set(driver));
        cx.post(driver, Msg::Wake); // its first turn arms the link's first retry timer
    }
    let door = Door { listener: None, dealt: 0, paused: None };
    match cx.world.listener.take() {
        Some(listener) => {
            let (limits, service) = (&cx.world.options.limits, &cx.world.service);
            let acceptor = Acceptor::new(limits, service.stats(), service.log());
            cx.register(listener, Interest::READABLE, |listener, _| Door {
                listener: Some((listener, acceptor)),
                ..door
            })
        }
        None => Ok(cx.spawn(|_| door)),
    }
}

/// The waker of a link's driver: a [`Msg::Wake`] posted to it on the loop it lives on (set once
/// the driver exists; its first turn looks at the machine anyway).
#[derive(Debug)]
pub(crate) struct LinkWake {
    home: Arc<Remote<Msg>>,
    driver: OnceLock<HandlerId>,
}

impl LinkWaker for LinkWake {
    fn wake(&self) {
        if let Some(&driver) = self.driver.get() {
            let _ = self.home.post(driver, Msg::Wake);
        }
    }
}

/// How connections come into a loop: its mail handler, which adopts those loop 0 deals it; on loop
/// 0 also the listening socket's handler, which accepts and deals connections round-robin.
struct Door {
    /// Loop 0's listening socket, and the server's policy for what it accepts.
    listener: Option<(mio::net::TcpListener, Acceptor)>,
    dealt: usize,
    /// After an accept error: no accepting before this (a timer is set for it).
    paused: Option<Instant>,
}

impl<S: Service> Handler<World<S>, Msg> for Door {
    fn on_event(&mut self, event: Event<Msg>, cx: &mut Cx<S>) -> Next {
        if let Event::Message(Msg::Adopt(stream, admitted)) = event {
            // One of this loop's client connections from now on: registered once, READABLE | WRITABLE.
            let (limits, interest) = (cx.world.options.limits.clone(), Interest::READABLE | Interest::WRITABLE);
            let conn = cx.register(stream, interest, |s, _| ClientConn::new(s, &limits, admitted));
            if let Err(e) = conn {
                cx.world.service.log().error("register", e);
            }
            return Next::Keep;
        }
        let now = Instant::now();
        let paused = self.paused.is_some_and(|until| now < until);
        let Some((listener, acceptor)) = self.listener.as_mut().filter(|_| !paused) else { return Next::Keep };
        // Until the listener is drained (`None`).
        while let Some(accepted) = accept_now(listener).transpose() {
            match acceptor.on_accept(accepted, || now) {
                Accepted::Serve(stream, admitted) => {
                    let _ = stream.set_nodelay(true);
                    self.dealt = self.dealt.wrapping_add(1);
                    let home = &cx.world.remotes[self.dealt % cx.world.remotes.len()];
                    if home.send(Msg::Adopt(stream, admitted)).is_err() {
                        cx.world.service.log().error("hand-off", "event loop has stopped");
                    }
                }
                Accepted::Refused => {} // past the cap: closed
                Accepted::Pause(until) => {
                    // Out of descriptors, most likely (logged). Edge-triggered epoll will not tell us
                    // again about connections already waiting: look again when the back-off says.
                    self.paused = Some(until);
                    cx.wake_at(self.paused);
                    return Next::Keep;
                }
            }
        }
        Next::Keep
    }
}
