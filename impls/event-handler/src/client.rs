//! A client connection's handler: read, frame, handle every line, write, never wait.
//!
//! ```text
//!  Ready ──► write what is owed ──► read ─► next_frame ─► handle_line ─┬─ Reply ──► out.complete
//!              (while out.may_read())  ▲                               └─ Fetch ──► upstream::start
//!  Reply{seq} ─► out.complete ─────────┘ (resume reading if it was paused)    (Reply comes back later)
//!  Timer ─► out.on_timeout: no progress for write_stall? close
//! ```
//!
//! Lines take effect in the order they arrive: each is handled at once, so a WHATSAT's lookup sees
//! every IAMAT before it. Only the WHATSAT's reply waits (for the upstream); later lines go on being
//! handled, and the connection's [`OutputBuffer`] (herd-core) holds their replies back until the
//! WHATSAT's has left. The buffer also decides when to write, when to stop reading and when to give
//! up on the client; this handler only moves the bytes and turns its deadline into a timer.

use std::time::{Instant, SystemTime};

use herd_core::policy::{Admitted, Close, Fetch, Handled, Limits, OutputBuffer, handle_line};
use herd_core::{Frame, LineFramer, Link, Service, Timestamp};
use mio::net::TcpStream;

use crate::reactor::{Event, Handler, Next, read_now, write_now};
use crate::{Cx, Msg, World, upstream};

/// Why a connection ends early: `Some` when the output policy gave up on the client (logged),
/// `None` when the peer reset or vanished (nothing worth logging).
type End = Option<Close>;

/// One client connection.
pub struct ClientConn {
    stream: TcpStream,
    /// Its place under the connection cap, given back when the connection goes.
    _admitted: Admitted,
    framer: LineFramer,
    link: Link,
    out: OutputBuffer,
    /// No more input will be read: the client closed its side or sent an oversized line.
    input_done: bool,
}

impl ClientConn {
    pub fn new(stream: TcpStream, limits: &Limits, admitted: Admitted) -> Self {
        let (framer, out) = (LineFramer::new(limits.max_line), OutputBuffer::new(limits));
        Self { stream, framer, link: Link::default(), out, input_done: false, _admitted: admitted }
    }

    /// Handles every buffered line, reading more until the socket is drained, input ends, or the
    /// output buffer says to pause. A short read means the socket is drained: epoll reports the next
    /// bytes.
    fn serve<S: Service>(&mut self, cx: &mut Cx<S>, hangup: bool, now: Instant) -> Result<(), End> {
        let mut received = None; // when the last read's bytes came, once a line needs it
        let mut drained = false;
        loop {
            while !self.input_done && self.out.may_read() {
                let Some(frame) = self.framer.next_frame() else { break };
                let seq = self.out.admit();
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        self.out.complete(seq, cx.world.service.oversized(quote));
                        self.input_done = true;
                        break;
                    }
                };
                let at = *received.get_or_insert_with(|| Timestamp::from_system_time(SystemTime::now()));
                let (w, link) = (&cx.world, &mut self.link);
                match handle_line(&*w.service, &w.links, w.options.places.as_ref(), line, link, at, || now) {
                    Handled::Reply(bytes) => self.out.complete(seq, bytes),
                    Handled::Nothing => self.out.complete(seq, Vec::new()),
                    Handled::Fetch(Fetch { places: &addr, lookup }) => upstream::start(cx, seq, lookup, addr, now),
                }
                if self.out.should_flush() {
                    self.flush(now)?;
                }
            }
            let held_back = !self.out.may_read();
            self.flush(now)?;
            if self.input_done || !self.out.may_read() || (drained && !hangup && !held_back) {
                return Ok(());
            }
            if held_back {
                continue; // the flush made room: lines already read come first
            }
            let buf = self.framer.read_buf();
            let room = buf.len();
            match read_now(&mut self.stream, buf) {
                Ok(None) => return Ok(()),
                Ok(Some(0)) => self.input_done = true,
                Ok(Some(n)) => {
                    self.framer.filled(n);
                    received = None;
                    drained = n < room;
                }
                Err(_) => return Err(None),
            }
        }
    }

    /// Writes what is owed until the socket is full; the output buffer judges a full socket.
    fn flush(&mut self, now: Instant) -> Result<(), End> {
        while self.out.owed() > 0 {
            match write_now(&mut self.stream, self.out.poll_transmit()) {
                Ok(Some(n)) => self.out.consumed(n, now),
                Ok(None) => return self.out.blocked(now).map_err(Some),
                Err(_) => return Err(None),
            }
        }
        Ok(())
    }
}

impl<S: Service> Handler<World<S>, Msg> for ClientConn {
    fn on_event(&mut self, event: Event<Msg>, cx: &mut Cx<S>) -> Next {
        let now = Instant::now();
        // Input left unread because the output buffer said so: read again once that clears.
        let paused = !self.input_done && !self.out.may_read();
        let result = match event {
            Event::Ready(r) if r.readable || r.hangup || paused => self.serve(cx, r.hangup, now),
            Event::Ready(_) => self.flush(now),
            Event::Message(Msg::Reply { seq, bytes }) => {
                self.out.complete(seq, bytes);
                if paused { self.serve(cx, false, now) } else { self.flush(now) }
            }
            Event::Timer => self.out.on_timeout(now).map_err(Some),
            Event::Message(_) => Ok(()),
        };
        if let Err(Some(close)) = &result {
            cx.world.service.log().error("write", close);
        }
        if result.is_err() || (self.input_done && self.out.is_idle()) {
            return Next::Done; // dropping the stream closes it
        }
        cx.wake_at(self.out.poll_timeout());
        Next::Keep
    }
}
