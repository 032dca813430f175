//! Event-handler style: an event queue and objects that react to it, as in a WinProc.
//!
//! Each thread runs one loop. The loop owns a table of handler objects indexed by mio [`Token`]
//! (a slab with generations), an epoll instance, a binary heap of deadlines and a queue of messages.
//! Everything that happens becomes an [`Event`] addressed to one handler: readiness from epoll, a
//! deadline that passed, a WHATSAT reply, a flood line, a request for an idle upstream connection.
//! The loop dispatches events one at a time to `Handler::on_event`; a handler updates its own state,
//! makes non-blocking syscalls, posts events to other handlers, sets timers, and returns at once.
//! Nothing ever blocks, so one thread serves thousands of connections, and all control flow is
//! visible as "which event, which handler, which state".
//!
//! ```text
//!            loop 0                                      loop 1 … N-1 (same, without the acceptor)
//!  ┌──────────────────────────────────────────────┐
//!  │ epoll ─► Ready ─┐                            │
//!  │ heap  ─► Timer ─┼─► dispatch ─► handlers:    │      Acceptor (loop 0): accept, deal
//!  │ queue ─► Reply ─┘      ▲       Acceptor      │      connections round-robin ─────────────► Mailbox
//!  │          Flood         │       Mailbox ◄─────┼───── accepted connections, flood lines ◄── other loops
//!  │          Fetch ────────┘       ClientConn …  │      ClientConn: frame, Service::handle, write
//!  │                 (post, timer)  FloodLink …   │      FloodLink: one per neighbour, on loop i % N
//!  │                                UpstreamConn …│      UpstreamConn: pooled keep-alive GETs
//!  └──────────────────────────────────────────────┘
//! ```
//!
//! One turn of a loop: wait in epoll (no longer than the earliest deadline), dispatch readiness,
//! then expired deadlines, then queued messages until none are left. Handlers talk only through
//! events, so a client connection never touches an upstream connection's state: it submits a
//! `Call`, and a `Reply` event comes back with the bytes and the request's place in line.
//!
//! # Threads
//! `--threads N` loops (default: available cores), each on its own thread with its own epoll. Loop 0
//! also owns the listening socket and deals accepted connections round-robin, handing the others
//! theirs through a channel and a waker. Sharing the listener between N epolls instead (a
//! `try_clone` in each) wakes every loop for every connection and lets one loop take a whole burst;
//! SO_REUSEPORT would need the address re-bound with the option set, and the harness hands us a
//! socket already bound. Dealing costs one channel send and at most one wake-up per connection, and
//! gives every loop the same share. Flood links are spread over the loops (neighbour `i` on loop
//! `i % N`); other loops post their flood lines to it the same way.
//!
//! # Layout
//! - `reactor`: `Event`, the `Handler` trait, `Context` (handler table, queue, timers) and the loop.
//! - `client`: `ClientConn`, a client connection.
//! - `link`: `FloodLink`, an outbound link to one neighbour, and flood routing.
//! - `upstream`: `UpstreamConn` and the per-loop pool of the places client.
//! - `handoff`: the `Acceptor`, each loop's `Mailbox`, and the `Remote` other loops post to.

mod client;
mod handoff;
mod link;
mod reactor;
mod upstream;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use herd_core::{ServeOptions, Service, available_cores};
use mio::{Interest, Poll, Token, Waker};

use crate::handoff::{Acceptor, Inbox, Mailbox, Remote};
use crate::link::{FloodLink, Route, Routes};
use crate::reactor::{Config, Context};
use crate::upstream::Pool;

/// Flood lines waiting for one loop's links before further ones are dropped and counted.
pub const FLOOD_QUEUE: usize = 64 * 1024;
/// Every loop's mailbox is the first handler it creates.
const MAILBOX: Token = Token(0);

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let loops = options.threads.unwrap_or_else(available_cores).max(1);
    let mut setups = Vec::new();
    let mut remotes = Vec::new();
    for _ in 0..loops {
        let poll = Poll::new()?;
        let (remote, inbox) = handoff::mailbox(Waker::new(poll.registry(), MAILBOX)?, FLOOD_QUEUE);
        remotes.push(Arc::new(remote));
        setups.push((poll, inbox));
    }
    let remotes: Arc<[Arc<Remote>]> = remotes.into();
    let mut listener = Some(mio::net::TcpListener::from_std(listener));
    let mut first = None;
    for (index, (poll, inbox)) in setups.into_iter().enumerate() {
        let setup = LoopSetup {
            config: Config {
                index,
                loops,
                max_line: options.max_line,
                write_timeout: options.write_timeout,
                upstream_timeout: options.upstream_timeout,
            },
            poll,
            inbox,
            remotes: Arc::clone(&remotes),
            listener: if index == 0 { listener.take() } else { None },
            options: options.clone(),
            service: Arc::clone(&service),
        };
        if index == 0 {
            first = Some(setup);
        } else {
            let service = Arc::clone(&service);
            thread::Builder::new().name(format!("loop-{index}")).spawn(move || {
                if let Err(e) = setup.run() {
                    service.log().error("event loop", e);
                }
            })?;
        }
    }
    first.expect("there is always a loop 0").run()
}

/// What one loop starts from; built on the calling thread, run on the loop's own.
struct LoopSetup<S> {
    config: Config,
    poll: Poll,
    inbox: Inbox,
    remotes: Arc<[Arc<Remote>]>,
    listener: Option<mio::net::TcpListener>,
    options: ServeOptions,
    service: Arc<S>,
}

impl<S: Service> LoopSetup<S> {
    fn run(self) -> io::Result<()> {
        let index = self.config.index;
        let loops = self.config.loops;
        let routes = Routes {
            links: (0..self.options.neighbours.len()).map(|i| Route::Remote(i % loops)).collect(),
            loops: Arc::clone(&self.remotes),
        };
        let upstream = self.options.places.map(|addr| Pool::new(addr, self.service.stats()));
        let registry = self.poll.registry().try_clone()?;
        let mut cx = Context::new(self.service, self.config, routes, upstream, registry);

        let mailbox = cx.spawn(|_| Box::new(Mailbox::new(self.inbox, Arc::clone(&self.remotes[index]))));
        debug_assert_eq!(mailbox.token, MAILBOX, "the waker was registered for the first token");
        for (i, (name, addr)) in self.options.neighbours.iter().enumerate().filter(|(i, _)| i % loops == index) {
            let link = cx.spawn(|_| Box::new(FloodLink::new(&self.options.name, name.clone(), *addr)));
            cx.routes.links[i] = Route::Local(link);
            cx.timer(link, Instant::now() + link::RETRY);
        }
        if let Some(listener) = self.listener {
            let remotes = Arc::clone(&self.remotes);
            cx.register(listener, Interest::READABLE, |listener, _| Box::new(Acceptor::new(listener, remotes)))?;
        }
        cx.run(self.poll)
    }
}
