//! A small callback reactor on mio: every operation takes a closure that runs when it completes.
//!
//! ```text
//!   cx.listen(listener, |cx, accepted| …)        once per accepted connection
//!   cx.connect(addr, timeout, |cx, conn| …)      once, connected or failed
//!   conn.read_lines(cx, max, |cx, input| …)      once per line, then End or Failed; may return Pause
//!   conn.read_bytes(cx, |cx, input| …)           once per chunk read, then End or Failed
//!   conn.write(cx, bytes)                        buffered; written when the callback returns
//!   cx.after(delay, |cx| …), cx.defer(|cx| …)    later in this loop
//!   Mailbox::send(message)                       from any thread, to the loop's mail callback
//! ```
//!
//! Rules the callbacks can rely on: a callback never runs inside the call that registered it (an
//! immediate failure is deferred), so callers may hold a `RefCell` borrow across the call; output
//! is flushed once the current callbacks have returned, so one read's replies leave in one write;
//! reading pauses by itself while a connection owes more than [`PAUSE_OUTPUT`] and resumes when it
//! drains. A connection that owes more than [`MAX_PENDING_OUTPUT`], or whose output has not moved
//! for the write timeout, is closed and its reader is told `Failed` (`OutOfMemory` / `TimedOut`).
//!
//! Each socket is registered once for READABLE | WRITABLE, edge-triggered. A short read means the
//! socket is drained (the next bytes raise a new edge), so a request costs one read and one write.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use herd_core::{Frame, LineFramer};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// Output owed past which a connection stops reading (TCP then slows the peer down).
pub const PAUSE_OUTPUT: usize = 256 * 1024;
/// Output owed past which a connection is closed: a peer that sends but never reads.
pub const MAX_PENDING_OUTPUT: usize = 4 * 1024 * 1024;
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 16 * 1024;
const WAKER: Token = Token(0);

/// What a reader callback is given.
#[derive(Debug)]
pub enum Input<'a> {
    /// A complete line, without its newline (`read_lines`).
    Line(&'a [u8]),
    /// A line over the limit: its first bytes. Nothing more is read (`read_lines`).
    Oversized(&'a [u8]),
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
type AcceptFn = Box<dyn FnMut(&mut Cx, io::Result<TcpStream>)>;
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
    /// Set while a `connect` is in progress.
    connecting: Option<ConnectFn>,
    /// `None` while its callback runs (or before one is set).
    reader: Option<Reader>,
    /// Bumped when a new reader replaces the old one, even while the old one runs.
    reader_version: u64,
    out: Vec<u8>,
    paused: bool,
    /// Stopped reading because too much output is owed.
    output_paused: bool,
    input_done: bool,
    /// Close once the output has left.
    ending: bool,
    queued_flush: bool,
    queued_pump: bool,
    stalled_since: Option<Instant>,
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
    to_flush: Vec<Conn>,
    to_pump: Vec<Conn>,
    /// Drains the mailbox into the loop's mail callback (when the waker fires).
    mail: Option<MailFn>,
    scratch: Vec<u8>,
    write_timeout: Duration,
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
    /// Queues `message`; gives it back when the loop's inbox is full (or the loop is gone).
    pub fn send(&self, message: T) -> Result<(), T> {
        match self.tx.try_send(message) {
            Ok(()) => {
                if !self.doorbell.rung.swap(true, Ordering::AcqRel) {
                    let _ = self.doorbell.waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Err(m),
        }
    }
}

/// A loop not started yet: made on one thread, run on another.
#[derive(Debug)]
pub struct Loop<T> {
    poll: Poll,
    inbox: Receiver<T>,
    doorbell: Arc<Doorbell>,
}

impl<T: Send + 'static> Loop<T> {
    /// A loop and the mailbox that reaches it (holding at most `capacity` messages).
    pub fn new(capacity: usize) -> io::Result<(Self, Mailbox<T>)> {
        let poll = Poll::new()?;
        let doorbell = Arc::new(Doorbell { waker: Waker::new(poll.registry(), WAKER)?, rung: AtomicBool::new(false) });
        let (tx, inbox) = crossbeam_channel::bounded(capacity);
        Ok((Self { poll, inbox, doorbell: Arc::clone(&doorbell) }, Mailbox { tx, doorbell }))
    }

    /// Runs the loop: `init` starts the work and returns the callback for each message of the mailbox.
    pub fn run<F>(self, write_timeout: Duration, init: impl FnOnce(&mut Cx) -> F) -> io::Result<()>
    where
        F: FnMut(&mut Cx, T) + 'static,
    {
        let mut cx = Cx {
            poll: self.poll,
            slots: vec![Slot { generation: 0, kind: Kind::Waker }],
            free: Vec::new(),
            retired: Vec::new(),
            next_generation: 0,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            deferred: VecDeque::new(),
            to_flush: Vec::new(),
            to_pump: Vec::new(),
            mail: None,
            scratch: vec![0; READ_CHUNK],
            write_timeout,
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

impl Cx {
    /// Runs `task` after `delay`.
    pub fn after(&mut self, delay: Duration, task: impl FnOnce(&mut Cx) + 'static) {
        self.at(Instant::now() + delay, task);
    }

    /// Runs `task` once `at` has passed.
    pub fn at(&mut self, at: Instant, task: impl FnOnce(&mut Cx) + 'static) {
        self.timer_seq += 1;
        self.timers.push(Timer { at, seq: self.timer_seq, task: Box::new(task) });
    }

    /// Runs `task` once the current callbacks have returned, in this turn.
    pub fn defer(&mut self, task: impl FnOnce(&mut Cx) + 'static) {
        self.deferred.push_back(Box::new(task));
    }

    /// Calls `on_accept` for every connection `listener` accepts (and for accept errors, after
    /// which accepting is retried shortly: edge-triggered epoll would not say so again).
    pub fn listen(
        &mut self,
        mut listener: TcpListener,
        on_accept: impl FnMut(&mut Cx, io::Result<TcpStream>) + 'static,
    ) -> io::Result<()> {
        let index = self.reserve();
        self.poll.registry().register(&mut listener, Token(index), Interest::READABLE)?;
        self.slots[index].kind = Kind::Listener { listener, on_accept: Some(Box::new(on_accept)) };
        Ok(())
    }

    /// Makes an accepted stream a connection of this loop.
    pub fn adopt(&mut self, stream: TcpStream) -> io::Result<Conn> {
        self.add_conn(stream)
    }

    /// Connects to `addr`; `then` runs once with the connection or the error (`TimedOut` after `timeout`).
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        then: impl FnOnce(&mut Cx, io::Result<Conn>) + 'static,
    ) {
        let then: ConnectFn = Box::new(then);
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => return self.defer(move |cx| then(cx, Err(e))),
        };
        match self.add_conn(stream) {
            Ok(conn) => {
                if let Some(c) = self.conn_mut(conn) {
                    c.connecting = Some(then);
                }
                self.after(timeout, move |cx| {
                    if let Some(then) = cx.conn_mut(conn).and_then(|c| c.connecting.take()) {
                        cx.close(conn);
                        then(cx, Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")));
                    }
                });
            }
            Err(e) => self.defer(move |cx| then(cx, Err(e))),
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream) -> io::Result<Conn> {
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
            connecting: None,
            reader: None,
            reader_version: 0,
            out: Vec::new(),
            paused: false,
            output_paused: false,
            input_done: false,
            ending: false,
            queued_flush: false,
            queued_pump: false,
            stalled_since: None,
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

    fn close(&mut self, conn: Conn) {
        if self.conn_mut(conn).is_some() {
            // Dropping the stream closes it, which also takes it out of epoll.
            self.slots[conn.index].kind = Kind::Retired;
            self.retired.push(conn.index);
        }
    }

    /// Closes `conn` and tells its reader why (unless the reader is the one running now).
    fn fail(&mut self, conn: Conn, error: io::Error) {
        let reader = self.conn_mut(conn).and_then(|c| c.reader.take());
        self.close(conn);
        if let Some(Reader::Lines { mut callback, .. } | Reader::Bytes { mut callback }) = reader {
            callback(self, Input::Failed(error));
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
        if c.out.len() >= PAUSE_OUTPUT {
            c.output_paused = true;
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
        if c.out.len() >= PAUSE_OUTPUT {
            c.output_paused = true;
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
            if drained && !hangup {
                return;
            }
            let Some(c) = self.conn_mut(conn) else { return };
            let buf = framer.read_buf();
            let room = buf.len();
            match c.stream.read(buf) {
                Ok(0) => {
                    c.input_done = true;
                    callback(self, Input::End);
                    return;
                }
                Ok(n) => {
                    framer.filled(n);
                    drained = n < room;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
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

    /// Writes what `conn` owes; keeps only what the socket did not take.
    fn flush(&mut self, conn: Conn) {
        let write_timeout = self.write_timeout;
        let Some(c) = self.conn_mut(conn) else { return };
        c.queued_flush = false;
        if c.connecting.is_some() {
            return;
        }
        let mut written = 0;
        let mut error = None;
        while written < c.out.len() {
            match c.stream.write(&c.out[written..]) {
                Ok(0) => {
                    error = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            return self.fail(conn, e);
        }
        if written == c.out.len() {
            c.out.clear();
            c.stalled_since = None;
        } else {
            c.out.drain(..written);
            if c.out.len() > MAX_PENDING_OUTPUT {
                let message = format!("peer is not reading ({} bytes owed)", c.out.len());
                return self.fail(conn, io::Error::new(io::ErrorKind::OutOfMemory, message));
            }
            if c.stalled_since.is_none() || written > 0 {
                let now = Instant::now();
                if c.stalled_since.replace(now).is_none() {
                    self.after(write_timeout, move |cx| cx.check_stall(conn));
                }
            }
            return;
        }
        if c.ending {
            return self.close(conn);
        }
        if c.output_paused {
            c.output_paused = false;
            self.queue_pump(conn);
        }
    }

    fn check_stall(&mut self, conn: Conn) {
        let write_timeout = self.write_timeout;
        let Some(since) = self.conn_mut(conn).and_then(|c| c.stalled_since) else { return };
        if since.elapsed() >= write_timeout {
            let message = format!("peer did not read for {write_timeout:?}");
            self.fail(conn, io::Error::new(io::ErrorKind::TimedOut, message));
        } else {
            self.at(since + write_timeout, move |cx| cx.check_stall(conn));
        }
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
                        self.queue_flush(conn);
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
                if writable && !c.out.is_empty() {
                    self.flush(conn);
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
            match listener.accept() {
                Ok((stream, _)) => callback(self, Ok(stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    callback(self, Err(e));
                    self.after(ACCEPT_RETRY, move |cx| cx.accept(index));
                    break;
                }
            }
        }
        if let Some(Slot { kind: Kind::Listener { on_accept, .. }, .. }) = self.slots.get_mut(index) {
            *on_accept = Some(callback);
        }
    }

    fn queue_flush(&mut self, conn: Conn) {
        if let Some(c) = self.conn_mut(conn)
            && !c.queued_flush
        {
            c.queued_flush = true;
            self.to_flush.push(conn);
        }
    }

    /// Deferred tasks, input to deliver, output to write, until none is left.
    fn settle(&mut self) {
        loop {
            if let Some(task) = self.deferred.pop_front() {
                task(self);
            } else if let Some(conn) = self.to_pump.pop() {
                self.pump(conn, false);
            } else if let Some(conn) = self.to_flush.pop() {
                self.flush(conn);
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
    /// Delivers every line to `on_line` (then `End`, or `Failed`), replacing any earlier reader.
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

    /// Queues `bytes`; they are written once the running callbacks return.
    pub fn write(self, cx: &mut Cx, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(c) = cx.conn_mut(self) {
            c.out.extend_from_slice(bytes);
            cx.queue_flush(self);
        }
    }

    /// Bytes queued and not yet taken by the socket (`None` once closed).
    pub fn pending(self, cx: &mut Cx) -> Option<usize> {
        cx.conn_mut(self).map(|c| c.out.len())
    }

    /// Closes once everything queued has been written.
    pub fn end(self, cx: &mut Cx) {
        if let Some(c) = cx.conn_mut(self) {
            c.ending = true;
            cx.queue_flush(self);
        }
    }

    /// Closes now; queued output is dropped and the reader is not called again.
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
