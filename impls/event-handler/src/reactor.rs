//! The event queue: a table of handlers indexed by [`Token`], and one loop that turns readiness,
//! expired deadlines and messages into [`Event`]s and dispatches each to the handler it is for.
//!
//! ```text
//!   epoll ──Ready──┐
//!   timers ─Timer──┼──► dispatch(id, event) ──► slots[id.token].on_event(event, cx) ──► Keep | Done
//!   queue ─Message─┘                                      │
//!                    ◄────────── cx.post / cx.timer ◄─────┘  (handlers talk to each other only by events)
//! ```
//!
//! A handler is taken out of its slot while it runs, so it may freely use the [`Context`]: spawn
//! handlers, post events, set timers. An event for a handler that is running (a handler posting to
//! itself) waits in the queue; an event for a handler that has gone is handed back to the poster's
//! fallback ([`Context::dispatch`] returns it) or dropped.
//!
//! The reactor knows no protocol and no policy: the message set `M` and the shared state `W` are the
//! application's, and every deadline a handler waits for is one the handler computed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

/// The token of a loop's waker; handler tokens are slab indices and never reach it.
const WAKER: Token = Token(usize::MAX);

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
    /// The peer closed its side or the socket has an error: read to the end before trusting more.
    pub hangup: bool,
}

/// Everything a handler can be told. `M` is the application's own message set.
#[derive(Debug)]
pub enum Event<M> {
    /// The handler's socket is ready (registered once, READABLE | WRITABLE, edge-triggered).
    Ready(Ready),
    /// A deadline the handler set has passed. Timers are never cancelled, only outlived: a handler
    /// may get one for a deadline it has since moved, and looks at its own state to tell.
    Timer,
    /// A message another handler posted.
    Message(M),
}

/// What a handler wants after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    /// Drop the handler (and with it its socket, which leaves epoll when closed).
    Done,
}

/// An object that reacts to events without ever blocking. `W` is the loop's shared state.
pub trait Handler<W, M> {
    fn on_event(&mut self, event: Event<M>, cx: &mut Context<W, M>) -> Next;
}

/// Reads what is there now: `Ok(None)` when nothing is (`WouldBlock`); `Ok(Some(0))` is end of stream.
pub fn read_now(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Accepts a connection waiting now: `Ok(None)` when none is (`WouldBlock`).
pub fn accept_now(listener: &TcpListener) -> io::Result<Option<TcpStream>> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(Some(stream)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes what the socket takes now: `Ok(None)` when it takes nothing (`WouldBlock`), else how much.
pub fn write_now(stream: &mut impl Write, buf: &[u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.write(buf) {
            Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// For a socket whose non-blocking connect is pending while `*connecting`: `Some` once it has
/// completed or failed (and `*connecting` is then false), `None` while pending or after.
pub fn poll_connected(stream: &TcpStream, connecting: &mut bool) -> Option<io::Result<()>> {
    if !*connecting {
        return None;
    }
    let done = match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => Err(e),
        },
    };
    *connecting = false;
    Some(done)
}

/// Posts messages to one loop from any thread: a channel and the loop's waker.
#[derive(Debug)]
pub struct Remote<M> {
    tx: Sender<(Option<HandlerId>, M)>,
    waker: Waker,
    /// Set by the first sender after the loop emptied its inbox, so a burst costs one wake-up.
    rung: AtomicBool,
}

impl<M> Remote<M> {
    /// Queues `message` for the loop's mail handler; gives it back if the loop has stopped.
    pub fn send(&self, message: M) -> Result<(), M> {
        self.deliver(None, message)
    }

    /// Queues `message` for handler `to` of the loop; gives it back if the loop has stopped.
    pub fn post(&self, to: HandlerId, message: M) -> Result<(), M> {
        self.deliver(Some(to), message)
    }

    fn deliver(&self, to: Option<HandlerId>, message: M) -> Result<(), M> {
        self.tx.send((to, message)).map_err(|e| e.0.1)?;
        if !self.rung.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
        Ok(())
    }
}

/// A loop not started yet: made on one thread, run on another.
#[derive(Debug)]
pub struct Loop<M> {
    poll: Poll,
    inbox: Receiver<(Option<HandlerId>, M)>,
    remote: Arc<Remote<M>>,
}

impl<M> Loop<M> {
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let (tx, inbox) = crossbeam_channel::unbounded();
        let remote = Remote { tx, waker: Waker::new(poll.registry(), WAKER)?, rung: AtomicBool::new(false) };
        Ok(Self { poll, inbox, remote: Arc::new(remote) })
    }

    /// How other threads reach this loop.
    pub fn remote(&self) -> Arc<Remote<M>> {
        Arc::clone(&self.remote)
    }

    /// Runs the loop with `world`; `start` makes the first handlers and returns the one that gets
    /// the messages other threads [`Remote::send`].
    pub fn run<W>(self, world: W, start: impl FnOnce(&mut Context<W, M>) -> io::Result<HandlerId>) -> io::Result<()> {
        let mut cx = Context::new(world, self.poll.registry().try_clone()?);
        let mail = start(&mut cx)?;
        cx.run(self.poll, &self.inbox, &self.remote, mail)
    }
}

/// Runs each loop with its world on a thread of its own until one of them stops (which a loop does
/// only on an error); `start` makes a loop's first handlers and returns its mail handler.
pub fn run_all<W: Send + 'static, M: Send + 'static>(
    loops: Vec<(Loop<M>, W)>,
    start: fn(&mut Context<W, M>) -> io::Result<HandlerId>,
) -> io::Result<()> {
    let (stopped, first_stop) = crossbeam_channel::bounded(loops.len());
    for (index, (event_loop, world)) in loops.into_iter().enumerate() {
        let stopped = stopped.clone();
        thread::Builder::new().name(format!("loop-{index}")).spawn(move || {
            let ran = panic::catch_unwind(AssertUnwindSafe(move || event_loop.run(world, start)));
            let _ = stopped.send(ran.unwrap_or_else(|_| Err(io::Error::other(format!("event loop {index} panicked")))));
        })?;
    }
    drop(stopped);
    first_stop.recv().unwrap_or_else(|_| Err(io::Error::other("every event loop is gone")))
}

struct Slot<W, M> {
    generation: u64,
    /// `None` while the handler runs (or between reserving the slot and installing it).
    handler: Option<Box<dyn Handler<W, M>>>,
    live: bool,
    /// The deadline [`Context::wake_at`] set a timer for, until it fires.
    alarm: Option<Instant>,
}

/// The loop's state as handlers see it: the handler table, the event queue, the timers, and `world`,
/// whatever the application shares between its handlers on this loop.
pub struct Context<W, M> {
    pub world: W,
    registry: Registry,
    slots: Vec<Slot<W, M>>,
    free: Vec<usize>,
    /// Slots emptied during this turn; reused only from the next turn on, so a readiness event
    /// already fetched for a closed socket cannot reach a handler that took over its token.
    retired: Vec<usize>,
    queue: VecDeque<(HandlerId, Event<M>)>,
    timers: BinaryHeap<Reverse<(Instant, HandlerId)>>,
    next_generation: u64,
    current: HandlerId,
}

impl<W, M> Context<W, M> {
    fn new(world: W, registry: Registry) -> Self {
        Self {
            world,
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

    /// Starts a non-blocking connect to `addr`, registered (READABLE | WRITABLE) under the running
    /// handler's token; readiness then tells the handler it completed (see [`poll_connected`]).
    pub fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.attach(TcpStream::connect(addr)?)
    }

    /// Registers `stream` (READABLE | WRITABLE) under the running handler's token. Whoever takes it
    /// from the handler later deregisters it first: the token will not stay that handler's.
    pub fn attach(&self, mut stream: TcpStream) -> io::Result<TcpStream> {
        self.registry.register(&mut stream, self.current.token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    /// Adds a handler that owns no socket (yet).
    pub fn spawn<H: Handler<W, M> + 'static>(&mut self, make: impl FnOnce(HandlerId) -> H) -> HandlerId {
        let id = self.reserve();
        self.slots[id.token.0].handler = Some(Box::new(make(id)));
        id
    }

    /// Registers `io` with epoll (once, for good) and adds the handler that owns it.
    pub fn register<T: Source, H: Handler<W, M> + 'static>(
        &mut self,
        mut io: T,
        interest: Interest,
        make: impl FnOnce(T, HandlerId) -> H,
    ) -> io::Result<HandlerId> {
        let id = self.reserve();
        if let Err(e) = self.registry.register(&mut io, id.token, interest) {
            self.slots[id.token.0].live = false;
            self.retired.push(id.token.0);
            return Err(e);
        }
        self.slots[id.token.0].handler = Some(Box::new(make(io, id)));
        Ok(id)
    }

    fn reserve(&mut self) -> HandlerId {
        self.next_generation += 1;
        let generation = self.next_generation;
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Slot { generation, handler: None, live: true, alarm: None };
                index
            }
            None => {
                self.slots.push(Slot { generation, handler: None, live: true, alarm: None });
                self.slots.len() - 1
            }
        };
        HandlerId { token: Token(index), generation }
    }

    /// Queues `event` for `to`, delivered after the events already queued.
    pub fn post(&mut self, to: HandlerId, message: M) {
        self.queue.push_back((to, Event::Message(message)));
    }

    /// Sends `to` an [`Event::Timer`] once `at` has passed.
    pub fn timer(&mut self, to: HandlerId, at: Instant) {
        self.timers.push(Reverse((at, to)));
    }

    /// Makes sure the running handler gets an [`Event::Timer`] at `at` (nothing for `None`), for a
    /// handler whose one deadline is recomputed after every event: a timer is set only when the
    /// deadline moves earlier than the one already set, so the heap does not fill up.
    pub fn wake_at(&mut self, at: Option<Instant>) {
        let (Some(at), me) = (at, self.current) else { return };
        let Some(slot) = self.slots.get_mut(me.token.0) else { return };
        if slot.alarm.is_none_or(|armed| at < armed) {
            slot.alarm = Some(at);
            self.timer(me, at);
        }
    }

    /// Runs `to`'s handler on `event` now. Gives the event back if `to` has gone.
    pub fn dispatch(&mut self, to: HandlerId, event: Event<M>) -> Option<Event<M>> {
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
            if let Some(slot) = self.slots.get_mut(id.token.0)
                && slot.generation == id.generation
                && slot.alarm == Some(at)
            {
                slot.alarm = None;
            }
            self.dispatch(id, Event::Timer);
        }
    }

    /// Delivers queued events until none are left (handlers may queue more as they run).
    fn drain_queue(&mut self) {
        while let Some((to, event)) = self.queue.pop_front() {
            // A message for a handler that has gone is dropped.
            let _ = self.dispatch(to, event);
        }
    }

    fn reap(&mut self) {
        for index in self.retired.drain(..) {
            self.slots[index].handler = None;
            self.free.push(index);
        }
    }

    /// The loop: wait for readiness, dispatch it, then expired timers, then queued events.
    fn run(
        mut self,
        mut poll: Poll,
        inbox: &Receiver<(Option<HandlerId>, M)>,
        remote: &Remote<M>,
        mail: HandlerId,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = poll.poll(&mut events, self.poll_timeout())
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in &events {
                if event.token() == WAKER {
                    // Clear first: a send racing with the drain below then wakes us again.
                    remote.rung.store(false, Ordering::Release);
                    self.queue
                        .extend(inbox.try_iter().map(|(to, message)| (to.unwrap_or(mail), Event::Message(message))));
                    continue;
                }
                let ready = Ready {
                    readable: event.is_readable(),
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
