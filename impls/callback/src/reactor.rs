//! A small callback reactor on mio: every operation that would wait takes a closure that runs when
//! it completes.
//!
//! ```text
//!   cx.listen(listener, |cx, accepted| -> Option<Instant>)   once per accepted connection (or error)
//!   cx.connecting(stream, |cx, conn| …)                      once, connected or failed
//!   conn.read_lines(cx, max, |cx, input| -> Flow)            once per line, Idle when drained, then End or Failed
//!   conn.read_bytes(cx, |cx, input| -> Flow)                 once per chunk read, then End or Failed
//!   conn.write(cx, bytes) -> taken                           now, what the socket takes (0: full)
//!   conn.when_writable(cx, |cx| …)                           once, when a full socket can take more
//!   cx.at(instant, |cx| …), cx.defer(|cx| …)                 later in this loop
//!   alarm.set(cx, deadline, |cx| …)                          at a deadline that keeps moving
//!   Mailbox::send(message)                                   from any thread, to the loop's mail callback
//! ```
//!
//! Rules the callbacks can rely on: a callback never runs inside the call that registered it, so
//! callers may hold a `RefCell` borrow across the call; a connection closed (or detached) is
//! forgotten at once, with every callback it had: none of them runs afterwards.
//!
//! The reactor knows no protocol and no policy: it buffers no output, bounds nothing and times
//! nothing out on its own. When to write, stop reading, give up or retry is its caller's to decide.
//!
//! Each socket is registered once for READABLE | WRITABLE, edge-triggered. A short read means the
//! socket is drained (the next bytes raise a new edge), so a request costs one read and one write.

use std::cell::Cell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use herd_core::{Frame, LineFramer};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

const READ_CHUNK: usize = 16 * 1024;
const WAKER: Token = Token(0);

/// What a reader callback is given.
#[derive(Debug)]
pub enum Input<'a> {
    /// A complete line, without its newline (`read_lines`).
    Line(&'a [u8]),
    /// A line over the limit: its first bytes. Nothing more is read (`read_lines`).
    Oversized(&'a [u8]),
    /// Every line read so far has been delivered; more wait for the socket (`read_lines`).
    Idle,
    /// Bytes as they arrived (`read_bytes`).
    Data(&'a [u8]),
    /// The peer closed its side. Writing is still possible.
    End,
    /// The connection failed and is closed.
    Failed(io::Error),
}

/// What a reader callback wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop reading until [`Conn::resume`].
    Pause,
}

type ReadFn = Box<dyn FnMut(&mut Cx, Input<'_>) -> Flow>;
type ConnectFn = Box<dyn FnOnce(&mut Cx, io::Result<Conn>)>;
type AcceptFn = Box<dyn FnMut(&mut Cx, io::Result<TcpStream>) -> Option<Instant>>;
type Task = Box<dyn FnOnce(&mut Cx)>;
type MailFn = Box<dyn FnMut(&mut Cx)>;

/// A connection of this loop. A plain handle: using it after the connection closed does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    index: usize,
    generation: u64,
}

enum Reader {
    Lines { framer: LineFramer, callback: ReadFn },
    Bytes { callback: ReadFn },
}

struct ConnSlot {
    stream: TcpStream,
    /// Set while a connect is in progress.
    connecting: Option<ConnectFn>,
    /// `None` while its callback runs (or before one is set).
    reader: Option<Reader>,
    /// Bumped when a new reader replaces the old one, even while the old one runs.
    reader_version: u64,
    paused: bool,
    input_done: bool,
    queued_pump: bool,
    on_writable: Option<Task>,
}

enum Kind {
    Free,
    /// Closed this turn; reused from the next one, so a stale readiness event finds nothing.
    Retired,
    Waker,
    Listener {
        listener: TcpListener,
        on_accept: Option<AcceptFn>,
    },
    Conn(ConnSlot),
}

struct Slot {
    generation: u64,
    kind: Kind,
}

struct Timer {
    at: Instant,
    seq: u64,
    task: Task,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The loop as callbacks see it.
pub struct Cx {
    poll: Poll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    retired: Vec<usize>,
    next_generation: u64,
    timers: BinaryHeap<Timer>,
    timer_seq: u64,
    deferred: VecDeque<Task>,
    to_pump: Vec<Conn>,
    /// Drains the mailbox into the loop's mail callback (when the waker fires).
    mail: Option<MailFn>,
    scratch: Vec<u8>,
}

/// One pending deadline of its owner, for a deadline recomputed after every event: [`Alarm::set`]
/// arms a timer only when the deadline moves earlier than the one armed, so the heap does not fill.
#[derive(Debug, Default)]
pub struct Alarm(Rc<Cell<Option<Instant>>>);

impl Alarm {
    /// Runs `task` at `at` (nothing for `None`), unless a timer at or before `at` is armed already.
    pub fn set(&self, cx: &mut Cx, at: Option<Instant>, task: impl FnOnce(&mut Cx) + 'static) {
        let Some(at) = at.filter(|&at| self.0.get().is_none_or(|armed| at < armed)) else { return };
        self.0.set(Some(at));
        let armed = Rc::clone(&self.0);
        cx.at(at, move |cx| {
            if armed.get() == Some(at) {
                armed.set(None);
            }
            task(cx);
        });
    }
}

/// Shared by a loop and every [`Mailbox`] that reaches it.
#[derive(Debug)]
struct Doorbell {
    waker: Waker,
    /// Set by the first sender after the loop emptied its inbox: a burst costs one wake-up.
    rung: AtomicBool,
}

/// Sends messages of type `T` to one loop from any thread.
#[derive(Debug)]
pub struct Mailbox<T> {
    tx: Sender<T>,
    doorbell: Arc<Doorbell>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), doorbell: Arc::clone(&self.doorbell) }
    }
}

impl<T> Mailbox<T> {
    /// Queues `message`; gives it back when the loop is gone.
    pub fn send(&self, message: T) -> Result<(), T> {
        self.tx.send(message).map_err(|e| e.0)?;
        if !self.doorbell.rung.swap(true, Ordering::AcqRel) {
            let _ = self.doorbell.waker.wake();
        }
        Ok(())
    }
}

/// A loop not started yet: made on one thread, run on another.
#[derive(Debug)]
pub struct Loop<T> {
    poll: Poll,
    inbox: Receiver<T>,
    doorbell: Arc<Doorbell>,
}

/// The callback for each message of a loop's mailbox.
pub type OnMail<T> = Box<dyn FnMut(&mut Cx, T)>;
/// What starts a loop: begins the work and returns its [`OnMail`].
pub type Init<T> = Box<dyn FnOnce(&mut Cx) -> OnMail<T> + Send>;

impl<T: Send + 'static> Loop<T> {
    /// A loop and the mailbox that reaches it.
    pub fn new() -> io::Result<(Self, Mailbox<T>)> {
        let poll = Poll::new()?;
        let doorbell = Arc::new(Doorbell { waker: Waker::new(poll.registry(), WAKER)?, rung: AtomicBool::new(false) });
        let (tx, inbox) = crossbeam_channel::unbounded();
        Ok((Self { poll, inbox, doorbell: Arc::clone(&doorbell) }, Mailbox { tx, doorbell }))
    }

    /// Runs the loop (until its poll fails).
    pub fn run(self, init: Init<T>) -> io::Result<()> {
        let mut cx = Cx {
            poll: self.poll,
            slots: vec![Slot { generation: 0, kind: Kind::Waker }],
            free: Vec::new(),
            retired: Vec::new(),
            next_generation: 0,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            deferred: VecDeque::new(),
            to_pump: Vec::new(),
            mail: None,
            scratch: vec![0; READ_CHUNK],
        };
        let mut on_message = init(&mut cx);
        let (inbox, doorbell) = (self.inbox, self.doorbell);
        cx.mail = Some(Box::new(move |cx: &mut Cx| {
            doorbell.rung.store(false, Ordering::Release);
            while let Ok(message) = inbox.try_recv() {
                on_message(cx, message);
            }
        }));
        cx.run()
    }
}

/// Runs each loop on a thread of its own until one of them stops (which a loop does only on an
/// error, or a panic).
pub fn run_all<T: Send + 'static>(loops: Vec<(Loop<T>, Init<T>)>) -> io::Result<()> {
    let (stopped, first_stop) = crossbeam_channel::bounded(loops.len());
    for (index, (event_loop, init)) in loops.into_iter().enumerate() {
        let stopped = stopped.clone();
        thread::Builder::new().name(format!("loop-{index}")).spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || event_loop.run(init)));
            let _ = stopped.send(ran.unwrap_or_else(|_| Err(io::Error::other(format!("event loop {index} panicked")))));
        })?;
    }
    drop(stopped);
    first_stop.recv().unwrap_or_else(|_| Err(io::Error::other("every event loop is gone")))
}

impl Cx {
    /// Runs `task` once `at` has passed.
    pub fn at(&mut self, at: Instant, task: impl FnOnce(&mut Cx) + 'static) {
        self.timer_seq += 1;
        self.timers.push(Timer { at, seq: self.timer_seq, task: Box::new(task) });
    }

    /// Runs `task` once the current callbacks have returned, in this turn.
    pub fn defer(&mut self, task: impl FnOnce(&mut Cx) + 'static) {
        self.deferred.push_back(Box::new(task));
    }

    /// Calls `on_accept` for every connection `listener` accepts, and for accept errors. When it
    /// returns `Some(instant)`, nothing more is accepted before that instant (edge-triggered epoll
    /// would not report the connections already waiting again, so the reactor looks itself).
    pub fn listen(
        &mut self,
        mut listener: TcpListener,
        on_accept: impl FnMut(&mut Cx, io::Result<TcpStream>) -> Option<Instant> + 'static,
    ) -> io::Result<()> {
        let index = self.reserve();
        self.poll.registry().register(&mut listener, Token(index), Interest::READABLE)?;
        self.slots[index].kind = Kind::Listener { listener, on_accept: Some(Box::new(on_accept)) };
        Ok(())
    }

    /// Makes a connected stream a connection of this loop.
    pub fn adopt(&mut self, stream: TcpStream) -> io::Result<Conn> {
        self.add_conn(stream, None)
    }

    /// Makes a stream whose non-blocking connect is under way a connection of this loop; `then`
    /// runs once, with it when the connect completes or with the error when it fails.
    pub fn connecting(
        &mut self,
        stream: TcpStream,
        then: impl FnOnce(&mut Cx, io::Result<Conn>) + 'static,
    ) -> io::Result<Conn> {
        self.add_conn(stream, Some(Box::new(then)))
    }

    fn add_conn(&mut self, mut stream: TcpStream, connecting: Option<ConnectFn>) -> io::Result<Conn> {
        let index = self.reserve();
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)
        {
            self.slots[index].kind = Kind::Retired;
            self.retired.push(index);
            return Err(e);
        }
        self.slots[index].kind = Kind::Conn(ConnSlot {
            stream,
            connecting,
            reader: None,
            reader_version: 0,
            paused: false,
            input_done: false,
            queued_pump: false,
            on_writable: None,
        });
        Ok(Conn { index, generation: self.slots[index].generation })
    }

    fn reserve(&mut self) -> usize {
        self.next_generation += 1;
        let slot = Slot { generation: self.next_generation, kind: Kind::Free };
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    fn conn_mut(&mut self, conn: Conn) -> Option<&mut ConnSlot> {
        match self.slots.get_mut(conn.index) {
            Some(Slot { generation, kind: Kind::Conn(c) }) if *generation == conn.generation => Some(c),
            _ => None,
        }
    }

    /// Forgets `conn` and hands back its stream (still open, but no longer in epoll).
    fn detach(&mut self, conn: Conn) -> Option<TcpStream> {
        self.conn_mut(conn)?;
        let Kind::Conn(c) = std::mem::replace(&mut self.slots[conn.index].kind, Kind::Retired) else { return None };
        self.retired.push(conn.index);
        let mut stream = c.stream;
        self.poll.registry().deregister(&mut stream).ok()?;
        Some(stream)
    }

    fn close(&mut self, conn: Conn) {
        if self.conn_mut(conn).is_some() {
            // Dropping the stream closes it, which also takes it out of epoll.
            self.slots[conn.index].kind = Kind::Retired;
            self.retired.push(conn.index);
        }
    }

    fn queue_pump(&mut self, conn: Conn) {
        if let Some(c) = self.conn_mut(conn)
            && !c.queued_pump
        {
            c.queued_pump = true;
            self.to_pump.push(conn);
        }
    }

    /// Reads and delivers input until the socket is drained, input ends, or the reader pauses.
    fn pump(&mut self, conn: Conn, hangup: bool) {
        let Some(c) = self.conn_mut(conn) else { return };
        c.queued_pump = false;
        if c.connecting.is_some() || c.input_done || c.paused {
            return;
        }
        let version = c.reader_version;
        let Some(mut reader) = c.reader.take() else { return };
        match &mut reader {
            Reader::Lines { framer, callback } => self.pump_lines(conn, version, framer, callback, hangup),
            Reader::Bytes { callback } => self.pump_bytes(conn, version, callback, hangup),
        }
        if let Some(c) = self.conn_mut(conn)
            && c.reader_version == version
        {
            c.reader = Some(reader);
        }
    }

    /// After a callback: whether to go on delivering to it.
    fn may_continue(&mut self, conn: Conn, version: u64, flow: Flow) -> bool {
        let Some(c) = self.conn_mut(conn) else { return false };
        if c.reader_version != version || c.input_done {
            return false;
        }
        if flow == Flow::Pause {
            c.paused = true;
            return false;
        }
        true
    }

    fn pump_lines(&mut self, conn: Conn, version: u64, framer: &mut LineFramer, callback: &mut ReadFn, hangup: bool) {
        let mut drained = false;
        loop {
            while let Some(frame) = framer.next_frame() {
                let flow = match frame {
                    Frame::Line(line) => callback(self, Input::Line(line)),
                    Frame::Oversized(quote) => {
                        if let Some(c) = self.conn_mut(conn) {
                            c.input_done = true;
                        }
                        callback(self, Input::Oversized(quote));
                        return;
                    }
                };
                if !self.may_continue(conn, version, flow) {
                    return;
                }
            }
            let Some(c) = self.conn_mut(conn) else { return };
            let buf = framer.read_buf();
            let room = buf.len();
            let read = if drained && !hangup { Err(io::ErrorKind::WouldBlock.into()) } else { c.stream.read(buf) };
            match read {
                Ok(0) => {
                    c.input_done = true;
                    callback(self, Input::End);
                    return;
                }
                Ok(n) => {
                    framer.filled(n);
                    drained = n < room;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let flow = callback(self, Input::Idle);
                    self.may_continue(conn, version, flow);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(conn);
                    callback(self, Input::Failed(e));
                    return;
                }
            }
        }
    }

    fn pump_bytes(&mut self, conn: Conn, version: u64, callback: &mut ReadFn, hangup: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(c) = self.conn_mut(conn) {
            match c.stream.read(&mut scratch) {
                Ok(0) => {
                    c.input_done = true;
                    callback(self, Input::End);
                    break;
                }
                Ok(n) => {
                    let flow = callback(self, Input::Data(&scratch[..n]));
                    if !self.may_continue(conn, version, flow) || (n < scratch.len() && !hangup) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(conn);
                    callback(self, Input::Failed(e));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_ready(&mut self, token: Token, readable: bool, writable: bool, hangup: bool) {
        let Some(slot) = self.slots.get_mut(token.0) else { return };
        let conn = Conn { index: token.0, generation: slot.generation };
        match &mut slot.kind {
            Kind::Waker => {
                if let Some(mut mail) = self.mail.take() {
                    mail(self);
                    self.mail = Some(mail);
                }
            }
            Kind::Listener { .. } => self.accept(token.0),
            Kind::Conn(c) if c.connecting.is_some() => match connected(&c.stream) {
                Ok(false) => {}
                Ok(true) => {
                    if let Some(then) = c.connecting.take() {
                        self.queue_pump(conn);
                        then(self, Ok(conn));
                    }
                }
                Err(e) => {
                    let then = c.connecting.take();
                    self.close(conn);
                    if let Some(then) = then {
                        then(self, Err(e));
                    }
                }
            },
            Kind::Conn(c) => {
                if let Some(task) = c.on_writable.take_if(|_| writable || hangup) {
                    task(self);
                }
                if readable || hangup {
                    self.pump(conn, hangup);
                }
            }
            Kind::Free | Kind::Retired => {}
        }
    }

    fn accept(&mut self, index: usize) {
        let Some(Slot { kind: Kind::Listener { on_accept, .. }, .. }) = self.slots.get_mut(index) else { return };
        let Some(mut callback) = on_accept.take() else { return };
        while let Some(Slot { kind: Kind::Listener { listener, .. }, .. }) = self.slots.get_mut(index) {
            let accepted = match listener.accept() {
                Ok((stream, _)) => Ok(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(e) => Err(e),
            };
            if let Some(resume) = callback(self, accepted) {
                self.at(resume, move |cx| cx.accept(index));
                break;
            }
        }
        if let Some(Slot { kind: Kind::Listener { on_accept, .. }, .. }) = self.slots.get_mut(index) {
            *on_accept = Some(callback);
        }
    }

    /// Deferred tasks and input to deliver, until none is left.
    fn settle(&mut self) {
        loop {
            if let Some(task) = self.deferred.pop_front() {
                task(self);
            } else if let Some(conn) = self.to_pump.pop() {
                self.pump(conn, false);
            } else {
                return;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.timers.peek().map(|t| t.at.saturating_duration_since(Instant::now()))
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.settle();
            for index in self.retired.drain(..) {
                self.slots[index].kind = Kind::Free;
                self.free.push(index);
            }
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout())
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in &events {
                let hangup = event.is_read_closed() || event.is_write_closed() || event.is_error();
                self.on_ready(event.token(), event.is_readable(), event.is_writable(), hangup);
            }
            if !self.timers.is_empty() {
                let now = Instant::now();
                while self.timers.peek().is_some_and(|t| t.at <= now) {
                    if let Some(timer) = self.timers.pop() {
                        (timer.task)(&mut self);
                    }
                }
            }
        }
    }
}

impl Conn {
    /// Delivers every line to `on_line` (`Idle` whenever the socket is drained, then `End`, or
    /// `Failed`), replacing any earlier reader.
    pub fn read_lines(self, cx: &mut Cx, max_line: usize, on_line: impl FnMut(&mut Cx, Input<'_>) -> Flow + 'static) {
        self.set_reader(cx, Reader::Lines { framer: LineFramer::new(max_line), callback: Box::new(on_line) });
    }

    /// Delivers bytes as they arrive to `on_data` (then `End`, or `Failed`), replacing any earlier reader.
    pub fn read_bytes(self, cx: &mut Cx, on_data: impl FnMut(&mut Cx, Input<'_>) -> Flow + 'static) {
        self.set_reader(cx, Reader::Bytes { callback: Box::new(on_data) });
    }

    fn set_reader(self, cx: &mut Cx, reader: Reader) {
        let Some(c) = cx.conn_mut(self) else { return };
        c.reader = Some(reader);
        c.reader_version += 1;
        c.paused = false;
        // Bytes may be waiting already, and edge-triggered epoll will not announce them again.
        cx.queue_pump(self);
    }

    /// Reads again after the reader returned [`Flow::Pause`].
    pub fn resume(self, cx: &mut Cx) {
        if let Some(c) = cx.conn_mut(self)
            && c.paused
        {
            c.paused = false;
            cx.queue_pump(self);
        }
    }

    /// Writes what the socket takes of `bytes` now: how much (`0`: it is full; see
    /// [`Conn::when_writable`]), or the error (the connection is then useless: close it).
    pub fn write(self, cx: &mut Cx, bytes: &[u8]) -> io::Result<usize> {
        let Some(c) = cx.conn_mut(self) else { return Err(io::ErrorKind::NotConnected.into()) };
        loop {
            return match c.stream.write(bytes) {
                Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Runs `task` once the socket can take more after a [`Conn::write`] found it full (or has
    /// failed: the next write says so). Replaces an earlier such task.
    pub fn when_writable(self, cx: &mut Cx, task: impl FnOnce(&mut Cx) + 'static) {
        if let Some(c) = cx.conn_mut(self) {
            c.on_writable = Some(Box::new(task));
        }
    }

    /// Takes the stream back out of the loop (open, out of epoll), forgetting the connection.
    pub fn detach(self, cx: &mut Cx) -> Option<TcpStream> {
        cx.detach(self)
    }

    /// Closes now; no callback of the connection runs again.
    pub fn close(self, cx: &mut Cx) {
        cx.close(self);
    }
}

/// Whether a non-blocking connect has completed (`Ok(false)`: not yet).
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}
