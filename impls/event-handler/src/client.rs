//! A client connection's handler: read, frame, handle every line, write, never wait.
//!
//! ```text
//!  Ready ──► flush what is owed ──► read ─► next_frame ─► Service::handle ─┬─ Bytes ──► out (in order)
//!                                     ▲                                    └─ Places ─► upstream::submit
//!  Reply{seq} ─► ReplyOrder ─► out ───┘ (resume reading if it was paused)       (Reply comes back later)
//!  Timer ─► replies blocked past the write timeout? close
//! ```
//!
//! Lines take effect in the order they arrive: each is handled at once, so a WHATSAT's lookup sees
//! every IAMAT before it. Only the WHATSAT's reply waits (for the upstream); later lines go on being
//! handled, and [`ReplyOrder`] holds their replies back until the WHATSAT's has left.

use std::io::{self, Read, Write};
use std::time::{Instant, SystemTime};

use herd_core::{Frame, LineFramer, Link, Reply, ReplyOrder, Service, Timestamp};
use mio::net::TcpStream;

use crate::link;
use crate::reactor::{Context, Event, Handler, Next, Ready};
use crate::upstream::{self, Call};

/// Replies owed to a client that does not read before it is disconnected.
pub const MAX_PENDING_OUTPUT: usize = 4 * 1024 * 1024;
/// Output owed past which the connection stops reading (TCP then slows the client down).
pub const PAUSE_OUTPUT: usize = 256 * 1024;
/// WHATSATs of one connection waiting for upstream at once; past it, reading pauses.
pub const MAX_WAITING: usize = 64;
/// Output gathered while draining one burst of input before it is written out.
const FLUSH_AT: usize = 64 * 1024;

/// Why a connection ends early.
enum Close {
    /// The peer reset or vanished: nothing worth logging.
    Quietly,
    Logged(String),
}

/// One client connection.
pub struct ClientConn {
    stream: TcpStream,
    framer: LineFramer,
    link: Link,
    order: ReplyOrder,
    /// Replies the socket has not taken yet, in order.
    out: Vec<u8>,
    /// WHATSATs waiting for upstream.
    waiting: usize,
    /// No more input will be read: the client closed its side or sent an oversized line.
    input_done: bool,
    /// Input was left unread (too much owed); read again once that clears.
    input_paused: bool,
    /// When a write last made progress while output stayed owed.
    stalled_since: Option<Instant>,
}

impl ClientConn {
    pub fn new(stream: TcpStream, max_line: usize) -> Self {
        Self {
            stream,
            framer: LineFramer::new(max_line),
            link: Link::default(),
            order: ReplyOrder::new(),
            out: Vec::new(),
            waiting: 0,
            input_done: false,
            input_paused: false,
            stalled_since: None,
        }
    }

    fn on_ready<S: Service>(&mut self, ready: Ready, cx: &mut Context<S>) -> Result<(), Close> {
        if ready.writable {
            self.flush(cx)?;
        }
        if ready.readable || ready.hangup || self.input_paused {
            self.serve_input(cx, ready.hangup)?;
            self.flush(cx)?;
        }
        Ok(())
    }

    /// Handles every buffered line, reading more until the socket is drained, input ends, or
    /// too much is owed. A short read means the socket is drained: epoll reports the next bytes.
    fn serve_input<S: Service>(&mut self, cx: &mut Context<S>, hangup: bool) -> Result<(), Close> {
        let mut received = None;
        let mut drained = false;
        loop {
            while !self.input_done {
                if self.waiting >= MAX_WAITING || self.out.len() >= PAUSE_OUTPUT {
                    self.input_paused = true;
                    return Ok(());
                }
                let Some(frame) = self.framer.next_frame() else { break };
                let seq = self.order.admit();
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        let reply = cx.service.oversized(quote);
                        self.out.extend_from_slice(&self.order.complete(seq, reply));
                        self.input_done = true;
                        break;
                    }
                };
                let now = *received.get_or_insert_with(|| Timestamp::from_system_time(SystemTime::now()));
                let outcome = cx.service.handle(line, &mut self.link, now);
                if let Some(flood) = &outcome.flood {
                    link::send(cx, flood);
                }
                match outcome.reply {
                    Reply::Bytes(bytes) => self.out.extend_from_slice(&self.order.complete(seq, bytes)),
                    Reply::Nothing => self.out.extend_from_slice(&self.order.complete(seq, Vec::new())),
                    Reply::Places(lookup) => {
                        self.waiting += 1;
                        let deadline = Instant::now() + cx.config.upstream_timeout;
                        let call = Call { reply_to: cx.me(), seq, lookup, deadline, retried: false };
                        upstream::submit(cx, call);
                    }
                }
            }
            self.input_paused = false;
            if self.input_done || (drained && !hangup) {
                return Ok(());
            }
            if self.out.len() >= FLUSH_AT {
                self.flush(cx)?;
            }
            let buf = self.framer.read_buf();
            let room = buf.len();
            match self.stream.read(buf) {
                Ok(0) => self.input_done = true,
                Ok(n) => {
                    self.framer.filled(n);
                    received = None;
                    drained = n < room;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::Quietly),
            }
        }
    }

    /// Writes what is owed; keeps only what the socket did not take.
    fn flush<S: Service>(&mut self, cx: &mut Context<S>) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(Close::Quietly),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::Quietly),
            }
        }
        if written == self.out.len() {
            self.out.clear();
            self.stalled_since = None;
            return Ok(());
        }
        self.out.drain(..written);
        if self.out.len() > MAX_PENDING_OUTPUT {
            return Err(Close::Logged(format!(
                "client is not reading its replies ({} bytes owed); closing",
                self.out.len()
            )));
        }
        if self.stalled_since.is_none() || written > 0 {
            let now = Instant::now();
            if self.stalled_since.is_none() {
                let me = cx.me();
                cx.timer(me, now + cx.config.write_timeout);
            }
            self.stalled_since = Some(now);
        }
        Ok(())
    }

    /// A write-timeout timer: close if the client has taken nothing for that long, else look again later.
    fn check_stall<S: Service>(&mut self, cx: &mut Context<S>) -> Result<(), Close> {
        let Some(since) = self.stalled_since else { return Ok(()) };
        let due = since + cx.config.write_timeout;
        if Instant::now() >= due {
            return Err(Close::Logged(format!(
                "client did not read its replies for {:?}; closing",
                cx.config.write_timeout
            )));
        }
        let me = cx.me();
        cx.timer(me, due);
        Ok(())
    }

    fn on_reply<S: Service>(&mut self, seq: u64, bytes: Vec<u8>, cx: &mut Context<S>) -> Result<(), Close> {
        self.waiting -= 1;
        self.out.extend_from_slice(&self.order.complete(seq, bytes));
        self.flush(cx)?;
        if self.input_paused {
            self.serve_input(cx, false)?;
            self.flush(cx)?;
        }
        Ok(())
    }

    /// Input has ended and every reply has left.
    fn finished(&self) -> bool {
        self.input_done && self.waiting == 0 && self.out.is_empty()
    }
}

impl<S: Service> Handler<S> for ClientConn {
    fn on_event(&mut self, event: Event, cx: &mut Context<S>) -> Next {
        let result = match event {
            Event::Ready(ready) => self.on_ready(ready, cx),
            Event::Reply { seq, bytes } => self.on_reply(seq, bytes, cx),
            Event::Timer => self.check_stall(cx),
            Event::Flood(_) | Event::Fetch(_) => Ok(()),
        };
        match result {
            Ok(()) if self.finished() => Next::Done,
            Ok(()) => Next::Keep,
            Err(Close::Quietly) => Next::Done,
            Err(Close::Logged(message)) => {
                cx.service.log().error("write", message);
                Next::Done
            }
        }
    }
}
