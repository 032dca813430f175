//! The event queue: a table of handlers indexed by [`Token`], and one loop that turns readiness,
//! expired deadlines and messages into [`Event`]s and dispatches each to the handler it is for.
//!
//! ```text
//!   epoll ──Ready──┐
//!   timers ─Timer──┼──► dispatch(id, event) ──► slots[id.token].on_event(event, cx) ──► Keep | Done
//!   queue ──Reply, ┘                                      │
//!          Flood, Fetch ◄─────── cx.post / cx.timer ◄─────┘  (handlers talk to each other only by events)
//! ```
//!
//! A handler is taken out of its slot while it runs, so it may freely use the [`Context`]: spawn
//! handlers, post events, set timers. An event for a handler that is running (a handler posting to
//! itself) waits in the queue; an event for a handler that has gone is handed back to the poster's
//! fallback ([`Context::dispatch`] returns it) or dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_core::Service;
use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::link::Routes;
use crate::upstream::{self, Call, Pool};

/// Who an event is for: a slot in the table and the generation of the handler in it, so an event
/// meant for a handler that has gone never reaches the one that took over its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HandlerId {
    pub token: Token,
    generation: u64,
}

/// Readiness as epoll reported it. Only a hint: handlers confirm it with the syscall they then make
/// (a token can change hands within one batch of events, and epoll may report more than happened).
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The peer closed its side or the socket has an error: read to the end before trusting more.
    pub hangup: bool,
}

/// Everything a handler can be told. The WinProc message set of this server.
#[derive(Debug)]
pub enum Event {
    /// The handler's socket is ready (registered once, READABLE | WRITABLE, edge-triggered).
    Ready(Ready),
    /// A deadline the handler set has passed. Handlers keep their own deadlines and ignore a timer
    /// that belongs to a state they have since left: timers are never cancelled, only outlived.
    Timer,
    /// A WHATSAT's finished reply, for the client connection that asked, with its place in line.
    Reply { seq: u64, bytes: Vec<u8> },
    /// An AT line for a neighbour link to send.
    Flood(Arc<[u8]>),
    /// A places request, for an idle upstream connection to carry.
    Fetch(Call),
}

/// What a handler wants after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    /// Drop the handler (and with it its socket, which leaves epoll when closed).
    Done,
}

/// An object that reacts to events without ever blocking.
pub trait Handler<S: Service> {
    fn on_event(&mut self, event: Event, cx: &mut Context<S>) -> Next;
}

/// Per-loop settings, from [`herd_core::ServeOptions`].
#[derive(Debug, Clone)]
pub struct Config {
    /// This loop's number, `0..loops`.
    pub index: usize,
    pub loops: usize,
    pub max_line: usize,
    pub write_timeout: Duration,
    pub upstream_timeout: Duration,
}

struct Slot<S> {
    generation: u64,
    /// `None` while the handler runs (or between reserving the slot and installing it).
    handler: Option<Box<dyn Handler<S>>>,
    live: bool,
}

/// The loop's state as handlers see it: the handler table, the event queue, the timers, and the
/// herd's wiring (service, flood routes, upstream pool).
pub struct Context<S> {
    pub service: Arc<S>,
    pub config: Config,
    pub routes: Routes,
    /// Kept-alive connections to the places backend; `None` in echo mode.
    pub upstream: Option<Pool>,
    registry: Registry,
    slots: Vec<Slot<S>>,
    free: Vec<usize>,
    /// Slots emptied during this turn; reused only from the next turn on, so a readiness event
    /// already fetched for a closed socket cannot reach a handler that took over its token.
    retired: Vec<usize>,
    queue: VecDeque<(HandlerId, Event)>,
    timers: BinaryHeap<Reverse<(Instant, HandlerId)>>,
    next_generation: u64,
    current: HandlerId,
}

impl<S: Service> Context<S> {
    pub fn new(service: Arc<S>, config: Config, routes: Routes, upstream: Option<Pool>, registry: Registry) -> Self {
        Self {
            service,
            config,
            routes,
            upstream,
            registry,
            slots: Vec::new(),
            free: Vec::new(),
            retired: Vec::new(),
            queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_generation: 0,
            current: HandlerId { token: Token(usize::MAX), generation: 0 },
        }
    }

    /// The handler now running.
    pub fn me(&self) -> HandlerId {
        self.current
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds a handler that owns no socket (yet).
    pub fn spawn(&mut self, make: impl FnOnce(HandlerId) -> Box<dyn Handler<S>>) -> HandlerId {
        let id = self.reserve();
        self.slots[id.token.0].handler = Some(make(id));
        id
    }

    /// Registers `io` with epoll (once, for good) and adds the handler that owns it.
    pub fn register<T: Source>(
        &mut self,
        mut io: T,
        interest: Interest,
        make: impl FnOnce(T, HandlerId) -> Box<dyn Handler<S>>,
    ) -> io::Result<HandlerId> {
        let id = self.reserve();
        if let Err(e) = self.registry.register(&mut io, id.token, interest) {
            self.slots[id.token.0].live = false;
            self.retired.push(id.token.0);
            return Err(e);
        }
        self.slots[id.token.0].handler = Some(make(io, id));
        Ok(id)
    }

    fn reserve(&mut self) -> HandlerId {
        self.next_generation += 1;
        let generation = self.next_generation;
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Slot { generation, handler: None, live: true };
                index
            }
            None => {
                self.slots.push(Slot { generation, handler: None, live: true });
                self.slots.len() - 1
            }
        };
        HandlerId { token: Token(index), generation }
    }

    /// Queues `event` for `to`, delivered after the events already queued.
    pub fn post(&mut self, to: HandlerId, event: Event) {
        self.queue.push_back((to, event));
    }

    /// Sends `to` an [`Event::Timer`] once `at` has passed.
    pub fn timer(&mut self, to: HandlerId, at: Instant) {
        self.timers.push(Reverse((at, to)));
    }

    /// Runs `to`'s handler on `event` now. Gives the event back if `to` has gone.
    pub fn dispatch(&mut self, to: HandlerId, event: Event) -> Option<Event> {
        let slot = match self.slots.get_mut(to.token.0) {
            Some(slot) if slot.live && slot.generation == to.generation => slot,
            _ => return Some(event),
        };
        let Some(mut handler) = slot.handler.take() else {
            // It is running (an event to itself, or to its caller): deliver after it returns.
            self.queue.push_back((to, event));
            return None;
        };
        let caller = std::mem::replace(&mut self.current, to);
        let next = handler.on_event(event, self);
        self.current = caller;
        let slot = &mut self.slots[to.token.0];
        match next {
            Next::Keep => slot.handler = Some(handler),
            Next::Done => {
                slot.live = false;
                self.retired.push(to.token.0);
            }
        }
        None
    }

    /// Delivers epoll readiness to whichever handler holds `token` now.
    fn ready(&mut self, token: Token, ready: Ready) {
        let Some(slot) = self.slots.get(token.0).filter(|s| s.live) else { return };
        let id = HandlerId { token, generation: slot.generation };
        self.dispatch(id, Event::Ready(ready));
    }

    /// How long the next poll may sleep: not at all with events queued, else until the first deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.queue.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers.peek().map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
    }

    fn expire_timers(&mut self) {
        if self.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.dispatch(id, Event::Timer);
        }
    }

    /// Delivers queued events until none are left (handlers may queue more as they run).
    fn drain_queue(&mut self) {
        while let Some((to, event)) = self.queue.pop_front() {
            if let Some(Event::Fetch(call)) = self.dispatch(to, event) {
                // The idle connection it was meant for closed meanwhile: ask the pool again.
                upstream::submit(self, call);
            }
            // A reply for a client that has gone, a timer for a handler that has gone: dropped.
        }
    }

    fn reap(&mut self) {
        for index in self.retired.drain(..) {
            self.slots[index].handler = None;
            self.free.push(index);
        }
    }

    /// The loop: wait for readiness, dispatch it, then expired timers, then queued events.
    pub fn run(mut self, mut poll: Poll) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = poll.poll(&mut events, self.poll_timeout())
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in &events {
                let ready = Ready {
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    hangup: event.is_read_closed() || event.is_write_closed() || event.is_error(),
                };
                self.ready(event.token(), ready);
            }
            self.expire_timers();
            self.drain_queue();
            self.reap();
        }
    }
}
