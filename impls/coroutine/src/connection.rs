//! One client connection: a reader coroutine, a writer coroutine and a coroutine per WHATSAT,
//! around herd-core's [`OutputBuffer`].
//!
//! ```text
//! reader:  may_read? ─► read ─► LineFramer ─► handle_line ─┬─ bytes ─► admit + complete ──────┐
//!   ▲ parked while not                                     └─ fetch ─► admit, go!(fetch)      │
//!   │ may_read (woken by                  fetch: PlacesCall ─► Service::complete ─► complete ─┤
//!   │ writer or fetch)                                     wake (should_flush, end of a read) ▼
//! writer:  poll_transmit ─► write (now; if full: blocked, then park until writable or
//!          poll_timeout ─► on_timeout) ─► consumed(n) ─► wake the reader if it may read again
//! ```
//! The reader runs every request in arrival order, so a WHATSAT sees the IAMAT sent before it.
//! A WHATSAT does not hold the connection up: its upstream call runs in a coroutine of its own
//! and the reader goes on with the next line. The output machine numbers each request
//! (`admit`) and releases replies in request order whatever order they finish in (`complete`);
//! it also says when to stop reading and when to give up on a client that does not read. The
//! machine sits behind a std mutex taken for a call or two, never across I/O or a yield.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use herd_core::policy::{Admitted, Fetch, Handled, LinkWaker, OutputBuffer, handle_line};
use herd_core::{Frame, LineFramer, Link, PlacesLookup, ServerStats, Service, Timestamp};
use may::io::{SplitIo, SplitReader, SplitWriter};
use may::net::TcpStream;

use crate::upstream::Places;
use crate::{Shared, Signal, until};

/// What a connection's coroutines share.
struct Conn<S> {
    shared: Arc<Shared<S>>,
    state: Mutex<State>,
    /// Wakes the writer: replies to write, or the reader is done.
    writer: Signal,
    /// Wakes the reader parked for back-pressure (a stale wake costs it one look at the machine).
    reader: Signal,
    /// Its place under the connection cap, given back when reader and writer are both done.
    _admitted: Admitted,
}

struct State {
    out: OutputBuffer,
    /// The reader may still admit requests.
    reading: bool,
    /// The writer gave up on the client.
    closed: bool,
}

impl<S: Service> Conn<S> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the reply to request `seq` (`None`: the request just read, answered at once); wakes the
    /// writer if `flush` or there is enough to write.
    fn complete(&self, seq: Option<u64>, reply: Vec<u8>, flush: bool) {
        let mut state = self.lock();
        let seq = seq.unwrap_or_else(|| state.out.admit());
        state.out.complete(seq, reply);
        let flush = flush || state.out.should_flush();
        drop(state);
        if flush {
            self.writer.wake();
        }
    }

    /// Parks the reader while the output machine says not to read; false once the writer gave up.
    fn may_read(&self) -> bool {
        let mut paused = false;
        loop {
            let state = self.lock();
            if state.closed || state.out.may_read() {
                return !state.closed;
            }
            drop(state);
            if !std::mem::replace(&mut paused, true) {
                ServerStats::bump(&self.shared.read_pauses);
            }
            self.reader.wait_until(None);
        }
    }
}

/// Serves one accepted connection until the client goes away; runs in the connection's coroutine.
pub(crate) fn serve<S: Service>(stream: TcpStream, shared: Arc<Shared<S>>, admitted: Admitted) {
    let (reader, writer) = match stream.set_nodelay(true).and_then(|()| stream.split()) {
        Ok(halves) => halves,
        Err(e) => return shared.service.log().error("connection", e),
    };
    let state = Mutex::new(State { out: OutputBuffer::new(&shared.limits), reading: true, closed: false });
    let conn = Arc::new(Conn { shared, state, writer: Signal::new(), reader: Signal::new(), _admitted: admitted });
    let for_writer = Arc::clone(&conn);
    may::go!(move || write_replies(&for_writer, writer));
    read_requests(&conn, reader);
}

/// Reads until the client closes, the connection breaks, a line is oversized or the writer gave up.
fn read_requests<S: Service>(conn: &Arc<Conn<S>>, mut stream: SplitReader<TcpStream>) {
    let shared = &conn.shared;
    let service = &*shared.service;
    let mut framer = LineFramer::new(shared.limits.max_line);
    let mut link = Link::default();
    'read: while conn.may_read() {
        // may's read tries the socket first and parks the coroutine only on WouldBlock.
        match stream.read(framer.read_buf()) {
            Ok(0) => break,
            Ok(n) => framer.filled(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        while let Some(frame) = framer.next_frame() {
            let line = match frame {
                Frame::Line(line) => line,
                Frame::Oversized(quote) => {
                    conn.complete(None, service.oversized(quote), false);
                    break 'read;
                }
            };
            let received = Timestamp::from_system_time(SystemTime::now());
            let places = shared.places.as_ref();
            match handle_line(service, &shared.links, places, line, &mut link, received, Instant::now) {
                Handled::Nothing => {}
                Handled::Reply(bytes) => conn.complete(None, bytes, false),
                Handled::Fetch(Fetch { places, lookup }) => {
                    let seq = conn.lock().out.admit();
                    let (conn, places) = (Arc::clone(conn), Arc::clone(places));
                    may::go!(move || fetch(&conn, &places, seq, lookup));
                }
            }
        }
        // The whole read is handled: write what it produced.
        if conn.lock().out.owed() > 0 {
            conn.writer.wake();
        }
    }
    conn.lock().reading = false;
    conn.writer.wake();
}

/// A WHATSAT's coroutine: the upstream exchange, then the reply into its place in the order.
fn fetch<S: Service>(conn: &Conn<S>, places: &Places, seq: u64, lookup: PlacesLookup) {
    let result = crate::upstream::fetch(&conn.shared, places, &lookup.query);
    conn.complete(Some(seq), conn.shared.service.complete(lookup, result), true);
    conn.reader.wake(); // one request fewer in flight
}

/// The writer coroutine: writes what the output machine releases until the reader is done and
/// every reply is out, or closes the connection when the machine gives up on the client (or the
/// client is gone). Each write is tried at once; a full socket is reported to the machine (which
/// may close on overflow), then the write parks until the socket takes bytes or the machine's
/// stall deadline passes. Shutting the socket ends the reader's read.
fn write_replies<S: Service>(conn: &Conn<S>, mut stream: SplitWriter<TcpStream>) {
    let mut chunk = Vec::new();
    let close = loop {
        let mut state = conn.lock();
        if state.out.owed() == 0 {
            if !state.reading && state.out.in_flight() == 0 {
                return; // every reply is out
            }
            drop(state);
            conn.writer.wait_until(None);
            continue;
        }
        chunk.clear();
        chunk.extend_from_slice(state.out.poll_transmit());
        drop(state);
        // may's sockets are non-blocking underneath: the std socket answers at once.
        let mut written = (&mut stream.inner().inner()).write(&chunk);
        if written.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock) {
            state = conn.lock();
            if let Err(close) = state.out.blocked(Instant::now()) {
                break Some(close);
            }
            let stall = state.out.poll_timeout();
            drop(state);
            written = stream.inner().set_write_timeout(stall.map(until)).and_then(|()| stream.write(&chunk));
        }
        let now = Instant::now();
        match written {
            Ok(n) => {
                conn.lock().out.consumed(n, now);
                conn.reader.wake(); // it may read again
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                if let Err(close) = conn.lock().out.on_timeout(now) {
                    break Some(close);
                }
            }
            Err(_) => break None,
        }
    };
    if let Some(close) = close {
        conn.shared.service.log().error("write", close);
    }
    let _ = stream.inner().shutdown(Shutdown::Both);
    conn.lock().closed = true;
    conn.reader.wake();
}
