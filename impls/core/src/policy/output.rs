//! A client connection's replies and the back-pressure around them.
//!
//! ```text
//!  request read ─► admit() ─► seq ... reply ready ─► complete(seq, bytes) ─► released in request order
//!                                                                              │
//!  may_read()? ◄── owed < pause_output and in_flight < max_in_flight           ▼
//!  should_flush()? ◄── owed ≥ flush_at                    poll_transmit() ─► write ─► consumed(n, now)
//!                                                              socket full ─► blocked(now): owed > max_output? close
//!                                          poll_timeout() ─► on_timeout(now): no progress for write_stall? close
//! ```
//!
//! One value per client connection decides, for every style alike: the order replies leave in
//! (request order, whatever order they finish in), when gathered replies are written
//! ([`Limits::flush_at`], and whenever the caller has handled all it read), when to stop reading
//! ([`Limits::pause_output`] bytes owed or [`Limits::max_in_flight`] requests unanswered), and when
//! to give up on a client ([`Limits::max_output`] owed while its socket is full, or no progress for
//! [`Limits::write_stall`]).
//!
//! # Calling order
//! For each request read: [`OutputBuffer::admit`] (or, for styles that answer strictly in order,
//! [`OutputBuffer::push`] once the reply is ready); for each reply: [`OutputBuffer::complete`].
//! Read more only while [`OutputBuffer::may_read`]. Write [`OutputBuffer::poll_transmit`] when
//! [`OutputBuffer::should_flush`] or after the last line of a read; report every write with
//! [`OutputBuffer::consumed`] and a full socket with [`OutputBuffer::blocked`] (or lend
//! [`OutputBuffer::write_with`] a one-write function and it does both); wait for
//! writability no longer than [`OutputBuffer::poll_timeout`], then call [`OutputBuffer::on_timeout`].
//! A [`Close`] from any of them means: log it, close the connection.

use std::io;
use std::time::{Duration, Instant};

use crate::order::ReplyOrder;
use crate::policy::Limits;

/// Why a client is disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Close {
    #[error("client is not reading its replies ({owed} bytes owed); closing")]
    Overflow { owed: usize },
    #[error("client took none of its replies for {0:?}; closing")]
    Stalled(Duration),
}

/// Replies owed to one client. See the module docs for the calling order.
#[derive(Debug)]
pub struct OutputBuffer {
    order: ReplyOrder,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    start: usize,
    /// When the socket was first found full with bytes still owed, or last took some since.
    stalled_since: Option<Instant>,
    flush_at: usize,
    pause_output: usize,
    max_output: usize,
    write_stall: Duration,
    max_in_flight: u64,
}

impl OutputBuffer {
    pub fn new(limits: &Limits) -> Self {
        Self {
            order: ReplyOrder::new(),
            buf: Vec::new(),
            start: 0,
            stalled_since: None,
            flush_at: limits.flush_at,
            pause_output: limits.pause_output,
            max_output: limits.max_output,
            write_stall: limits.write_stall,
            max_in_flight: limits.max_in_flight as u64,
        }
    }

    /// Numbers a request just read; its reply goes to [`Self::complete`] with this number.
    pub fn admit(&mut self) -> u64 {
        self.order.admit()
    }

    /// The reply to request `seq` (empty for lines that have none). Queued for writing once every
    /// earlier request's reply has been.
    pub fn complete(&mut self, seq: u64, reply: Vec<u8>) {
        let ready = self.order.complete(seq, reply);
        self.buf.extend_from_slice(&ready);
    }

    /// Admits and completes in one step, for styles that answer each request before reading the next.
    pub fn push(&mut self, reply: &[u8]) {
        debug_assert_eq!(self.order.in_flight(), 0, "push with replies pending: use admit/complete");
        let seq = self.order.admit();
        self.order.complete(seq, Vec::new());
        self.buf.extend_from_slice(reply);
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn owed(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Requests admitted whose replies have not been queued yet.
    pub fn in_flight(&self) -> u64 {
        self.order.in_flight()
    }

    /// Whether to read (and handle) more input now.
    pub fn may_read(&self) -> bool {
        self.owed() < self.pause_output && self.in_flight() < self.max_in_flight
    }

    /// Whether to write before handling further lines of the current read.
    pub fn should_flush(&self) -> bool {
        self.owed() >= self.flush_at
    }

    /// The bytes to write next.
    pub fn poll_transmit(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The socket took `n` bytes of [`Self::poll_transmit`].
    pub fn consumed(&mut self, n: usize, now: Instant) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.stalled_since = None;
        } else if n > 0 && self.stalled_since.is_some() {
            self.stalled_since = Some(now);
        }
        if self.start > self.flush_at && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The socket would take no more with bytes still owed: starts the stall clock, and closes a
    /// client owed more than [`Limits::max_output`].
    pub fn blocked(&mut self, now: Instant) -> Result<(), Close> {
        if self.owed() == 0 {
            return Ok(());
        }
        self.stalled_since.get_or_insert(now);
        if self.owed() > self.max_output {
            return Err(Close::Overflow { owed: self.owed() });
        }
        Ok(())
    }

    /// Writes what is owed through `write` (one non-blocking write of the given bytes, returning
    /// how many the socket took) until nothing is owed or the socket is full, reporting each write
    /// with [`Self::consumed`] and a full socket with [`Self::blocked`]. A [`Close`] comes back as
    /// an error of kind `Other` wrapping it; a socket that took nothing, as `WriteZero`.
    pub fn write_with(&mut self, now: Instant, mut write: impl FnMut(&[u8]) -> io::Result<usize>) -> io::Result<()> {
        while self.owed() > 0 {
            match write(self.poll_transmit()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consumed(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.blocked(now).map_err(io::Error::other),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// How long to wait for the socket to take more before [`Self::on_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.stalled_since.map(|t| t + self.write_stall)
    }

    /// Closes a client that took nothing for [`Limits::write_stall`].
    pub fn on_timeout(&mut self, now: Instant) -> Result<(), Close> {
        match self.poll_timeout() {
            Some(due) if now >= due => Err(Close::Stalled(self.write_stall)),
            _ => Ok(()),
        }
    }

    /// Nothing owed and nothing unanswered.
    pub fn is_idle(&self) -> bool {
        self.owed() == 0 && self.in_flight() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            flush_at: 8,
            pause_output: 16,
            max_output: 32,
            max_in_flight: 2,
            write_stall: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut out = OutputBuffer::new(&limits());
        let (a, b) = (out.admit(), out.admit());
        assert!(!out.may_read(), "two unanswered: the limit");
        out.complete(b, b"b\n".to_vec());
        assert_eq!(out.poll_transmit(), b"");
        out.complete(a, b"a\n".to_vec());
        assert_eq!(out.poll_transmit(), b"a\nb\n");
        assert!(out.may_read());
    }

    #[test]
    fn flush_and_pause_thresholds() {
        let mut out = OutputBuffer::new(&limits());
        out.push(b"1234567");
        assert!(!out.should_flush());
        out.push(b"8");
        assert!(out.should_flush() && out.may_read());
        out.push(b"12345678");
        assert!(!out.may_read(), "16 bytes owed: stop reading");
        out.consumed(10, Instant::now());
        assert_eq!(out.poll_transmit(), b"345678");
        assert!(out.may_read());
    }

    #[test]
    fn a_client_that_reads_nothing_is_closed_after_the_stall_not_before() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut out = OutputBuffer::new(&limits());
        out.push(b"0123456789");
        out.consumed(4, t0);
        assert_eq!(out.poll_timeout(), None, "the socket took bytes and was not full");
        out.blocked(t0).expect("small");
        assert_eq!(out.poll_timeout(), Some(t0 + 5 * s));
        out.consumed(1, t0 + 3 * s);
        assert_eq!(out.on_timeout(t0 + 5 * s), Ok(()), "progress restarts the clock");
        assert_eq!(out.on_timeout(t0 + 8 * s), Err(Close::Stalled(5 * s)));
        out.consumed(5, t0 + 8 * s);
        assert_eq!((out.poll_timeout(), out.owed()), (None, 0), "all taken: no stall");
    }

    #[test]
    fn overflow_closes_only_when_the_socket_is_full() {
        let mut out = OutputBuffer::new(&limits());
        out.push(&[b'x'; 40]);
        out.consumed(0, Instant::now());
        assert_eq!(out.blocked(Instant::now()), Err(Close::Overflow { owed: 40 }));
    }
}
