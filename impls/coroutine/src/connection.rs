//! One client connection: a reader coroutine, a writer coroutine, and a coroutine per WHATSAT.
//!
//! ```text
//! reader:  read ─► LineFramer ─► Service::handle ─┬─ bytes ──────────────► Ready(batch) ─┐
//!                                                 └─ places ─► go!(fetch; complete) ─► Pending(rx) ─┤
//!                                                                       in request order ▼
//! writer:  for each queued reply: Ready → write; Pending → wait for its coroutine, then write
//! ```
//! The reader runs every request in arrival order, so a WHATSAT sees the IAMAT sent before it.
//! A WHATSAT does not hold the connection up: its upstream call runs in a coroutine of its own
//! and the reader goes on with the next line. Order is kept by the queue itself — the writer
//! takes replies in request order and waits on a pending one — so no reorder buffer is needed.
//!
//! The queue is a may channel (unbounded) plus a semaphore of [`REPLY_WINDOW`] slots: the reader
//! takes a slot per queued reply and the writer gives it back once written, so a client that does
//! not read its replies stops being read (TCP back-pressure) instead of growing memory. Replies
//! to one read are batched up to [`BATCH_BYTES`], which bounds what one connection can have
//! queued at about `REPLY_WINDOW × BATCH_BYTES` = 4 MiB. A write that stalls longer than
//! `write_timeout` (may's socket write timeout) closes the connection.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::SystemTime;

use herd_core::{Frame, LineFramer, Link, PlacesLookup, Reply, ServerStats, Service, Timestamp, UpstreamError};
use may::io::{SplitIo, SplitReader, SplitWriter};
use may::net::TcpStream;
use may::sync::{Semphore, spsc};

use crate::Shared;
use crate::links::FloodLinks;

/// Replies (batches or WHATSATs) queued for the writer before the reader waits.
pub const REPLY_WINDOW: usize = 64;
/// A batch of ready replies is handed to the writer once it reaches this size.
pub const BATCH_BYTES: usize = 64 * 1024;

/// One reply slot, in request order.
enum Queued {
    /// Replies ready to write: the answers to consecutive lines, batched.
    Ready(Vec<u8>),
    /// A WHATSAT's reply, still being fetched by its own coroutine.
    Pending(spsc::Receiver<Vec<u8>>),
}

/// Serves one accepted connection until the client goes away; runs in the connection's coroutine.
pub(crate) fn serve<S: Service>(stream: TcpStream, links: FloodLinks, shared: Arc<Shared<S>>) {
    let service = &*shared.service;
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(shared.write_timeout)))
        .and_then(|()| stream.split());
    let (reader, writer) = match setup {
        Ok(halves) => halves,
        Err(e) => return service.log().error("connection", e),
    };
    let (queue, replies) = spsc::channel();
    let window = Arc::new(Semphore::new(REPLY_WINDOW));
    let writer_window = Arc::clone(&window);
    let writer_shared = Arc::clone(&shared);
    may::go!(move || write_replies(writer, &replies, &writer_window, &*writer_shared.service));
    let mut reader = Reader { stream: reader, queue, window, links, shared, batch: Vec::new() };
    reader.run();
}

/// The reading half and what it needs to hand replies on.
struct Reader<S> {
    stream: SplitReader<TcpStream>,
    queue: spsc::Sender<Queued>,
    window: Arc<Semphore>,
    links: FloodLinks,
    shared: Arc<Shared<S>>,
    /// Replies ready but not yet handed to the writer.
    batch: Vec<u8>,
}

impl<S: Service> Reader<S> {
    /// Reads until the client closes, the connection breaks, or a line is oversized. Returning
    /// drops the queue's sender: the writer writes what is left, then the socket closes.
    fn run(&mut self) {
        let shared = Arc::clone(&self.shared);
        let service = &*shared.service;
        let mut framer = LineFramer::new(shared.max_line);
        let mut link = Link::default();
        loop {
            // may's read tries the socket first and parks the coroutine only on WouldBlock.
            match self.stream.read(framer.read_buf()) {
                Ok(0) => break,
                Ok(n) => framer.filled(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            while let Some(frame) = framer.next_frame() {
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        let reply = service.oversized(quote);
                        self.add(reply);
                        self.flush();
                        return;
                    }
                };
                let outcome = service.handle(line, &mut link, Timestamp::from_system_time(SystemTime::now()));
                if let Some(flood) = &outcome.flood {
                    self.links.send(flood, service.stats());
                }
                match outcome.reply {
                    Reply::Bytes(bytes) => self.add(bytes),
                    Reply::Nothing => {}
                    Reply::Places(lookup) => {
                        self.flush();
                        let pending = fetch(lookup, &shared);
                        self.enqueue(Queued::Pending(pending));
                    }
                }
            }
            self.flush();
        }
        self.flush();
    }

    fn add(&mut self, reply: Vec<u8>) {
        if self.batch.is_empty() {
            self.batch = reply;
        } else {
            self.batch.extend_from_slice(&reply);
        }
        if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.enqueue(Queued::Ready(batch));
        }
    }

    /// Takes a slot in the window (parking while the writer is behind), then queues the reply.
    fn enqueue(&self, reply: Queued) {
        if !self.window.try_wait() {
            ServerStats::bump(&self.shared.window_waits);
            self.window.wait();
        }
        // The writer outlives the sender (it drains the queue even after a failed write), so a
        // send cannot fail; if it ever did, the reply is dropped with the connection.
        let _ = self.queue.send(reply);
    }
}

/// Starts the WHATSAT's upstream call in its own coroutine; the receiver yields its reply.
fn fetch<S: Service>(lookup: PlacesLookup, shared: &Arc<Shared<S>>) -> spsc::Receiver<Vec<u8>> {
    let (done, reply) = spsc::channel();
    let shared = Arc::clone(shared);
    may::go!(move || {
        let result = match &shared.places {
            Some(places) => places.fetch(&lookup.query),
            None => Err(UpstreamError::NotConfigured),
        };
        let _ = done.send(shared.service.complete(lookup, result));
    });
    reply
}

/// The writer coroutine: replies in request order until the reader is done and the queue is empty.
/// After a failed write it shuts the socket (which ends the reader's read) and keeps draining the
/// queue without writing, so the reader is never left waiting for a slot.
fn write_replies<S: Service>(
    mut stream: SplitWriter<TcpStream>,
    replies: &spsc::Receiver<Queued>,
    window: &Semphore,
    service: &S,
) {
    let mut healthy = true;
    for reply in replies.iter() {
        if healthy {
            let bytes = match reply {
                Queued::Ready(bytes) => bytes,
                // The fetch coroutine always sends; an error would mean it died, and it has no reply.
                Queued::Pending(pending) => pending.recv().unwrap_or_default(),
            };
            if let Err(e) = stream.write_all(&bytes) {
                if e.kind() == io::ErrorKind::TimedOut {
                    service.log().error("write", "client is not reading its replies; closing");
                }
                let _ = stream.inner().shutdown(Shutdown::Both);
                healthy = false;
            }
        }
        window.post();
    }
}
