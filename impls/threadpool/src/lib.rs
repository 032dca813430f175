//! Thread-pool style: one reader thread frames requests, a fixed pool of workers executes them.
//!
//! ```text
//!   clients ──► reader thread (mio readiness, LineFramer) ──► connection's inbox ──► ReadyQueue
//!                     ▲                                                               (ready connections)
//!                     │ resume (waker)                                                      │
//!   worker 1..N ◄─────┴──────────────────────────────────────────────────────────────────────┘
//!     take the connection, run its queued requests in order: handle_line (Service::handle,
//!     the flood to FloodLinks) ─► blocking places fetch (WHATSAT) ─► OutputBuffer ─► blocking
//!     write (herd-core's machines; one link driver thread per neighbour)
//! ```
//!
//! The reader never executes a request: it reads whatever is ready, cuts it into lines and puts
//! them in the connection's inbox. A connection with work is queued on the [`queue`] once; a worker
//! takes it and runs its requests one after another, so a WHATSAT sees the IAMAT sent before it
//! and replies leave in request order. Workers block freely: on the places backend, and on a
//! client that is slow to read.
//!
//! The reader accepts as herd-core's `Acceptor` says (the cap, the count, the pause after an
//! error); a worker hands each line to herd-core's `handle_line`, which handles it, floods the
//! update and says whether to queue a reply or fetch places (a server without a places backend
//! gets its WHATSAT answered there).
//!
//! Back-pressure follows herd-core's policy: an inbox holds at most `Limits::max_in_flight`
//! requests; past that the reader stops reading that connection until a worker has drained half of
//! it and wakes the reader. Replies gather in the connection's `OutputBuffer` and are written when
//! it says so, or before the worker blocks on the upstream; a client that stops reading is closed
//! by the buffer's rules. The queue is bounded by the number of connections (each is queued at
//! most once). When every worker is blocked, ready connections wait in the queue: one slow
//! upstream slows everyone, which is what this style is here to show. Idle workers park at once,
//! except one that spins briefly (the Go scheduler's rule; see [`queue`]).
//!
//! # Layout
//! - [`serve`]: start links and workers, then run the reader loop on the calling thread.
//! - `Conn` / `Inbox`: what workers share with the reader about one connection.
//! - `Worker`: run a connection's queued requests and write their replies.
//! - [`queue`]: the ready connections, and how idle workers wait for them.

mod queue;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use herd_blocking::output::{self, WriteError};
use herd_blocking::{FloodLinks, Listener, PlacesClient};
use herd_core::policy::{Acceptor, Admitted, Fetch, Handled, OutputBuffer, handle_line};
use herd_core::{Frame, LineFramer, Link, ServeOptions, Service, Timestamp};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use queue::ReadyQueue;

/// Workers when `--threads` is not given. Workers block on the places backend, so the pool is sized
/// by Little's law rather than by cores: 2,000 WHATSAT/s at 20 ms upstream keeps 40 requests in
/// flight, and 64 workers cover that with room for slow clients, at ~64 small stacks of memory.
pub const DEFAULT_WORKERS: usize = 64;
/// Requests a worker runs for one connection before giving other connections a turn.
const BATCH: usize = 32;
const WAKER: Token = Token(usize::MAX - 1);

/// A client connection as workers see it.
struct Conn {
    token: Token,
    stream: TcpStream,
    inbox: Mutex<Inbox>,
    /// Only the worker currently holding the connection touches it.
    writer: Mutex<Writer>,
    /// Set once a write failed: later replies are dropped instead of written.
    broken: AtomicBool,
    /// Its place under the connection cap, given back when the last reference goes.
    _admitted: Admitted,
}

/// What the worker holding a connection owns of it.
struct Writer {
    link: Link,
    out: OutputBuffer,
}

#[derive(Default)]
struct Inbox {
    requests: VecDeque<Request>,
    /// The connection is in the ready queue or held by a worker.
    scheduled: bool,
    /// The reader stopped reading because the inbox was full; the worker that drains it resumes it.
    paused: bool,
}

enum Request {
    Line(Vec<u8>, Timestamp),
    /// The reply to an oversized line; the connection closes after it.
    Oversized(Vec<u8>),
}

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: std::net::TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let links = herd_blocking::links::spawn(options, &*service)?;
    let upstream = options.places.map(|addr| Arc::new(PlacesClient::new(addr, &options.limits, service.stats())));
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (resume_tx, resume_rx) = crossbeam_channel::unbounded::<Token>();
    let ready = Arc::new(ReadyQueue::default());
    for i in 0..options.threads.unwrap_or(DEFAULT_WORKERS).max(1) {
        let worker = Worker {
            service: Arc::clone(&service),
            ready: Arc::clone(&ready),
            resume: (resume_tx.clone(), Arc::clone(&waker)),
            links: Arc::clone(&links),
            upstream: upstream.clone(),
            resume_below: (options.limits.max_in_flight / 2).max(1),
        };
        thread::Builder::new().name(format!("worker-{i}")).stack_size(256 * 1024).spawn(move || worker.run())?;
    }
    let acceptor = Acceptor::new(&options.limits, service.stats(), service.log());
    let reader = Reader {
        listener: Listener::new(listener, poll.registry(), acceptor)?,
        poll,
        conns: HashMap::new(),
        ready,
        resume: resume_rx,
        service,
        limits: options.limits.clone(),
    };
    reader.run()
}

/// The reader thread: accept, read what is ready, frame, fill inboxes.
struct Reader<S> {
    poll: Poll,
    listener: Listener,
    conns: HashMap<Token, (Arc<Conn>, LineFramer)>,
    ready: Arc<ReadyQueue<Arc<Conn>>>,
    resume: Receiver<Token>,
    service: Arc<S>,
    limits: herd_core::Limits,
}

impl<S: Service> Reader<S> {
    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.listener.deadline().map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            if self.listener.deadline().is_some() {
                self.accept(); // a paused listener accepts again once its pause is over
            }
            for event in &events {
                match event.token() {
                    Listener::TOKEN => self.accept(),
                    WAKER => {}
                    token => self.read(token),
                }
            }
            while let Ok(token) = self.resume.try_recv() {
                self.read(token);
            }
        }
    }

    fn accept(&mut self) {
        let (conns, limits) = (&mut self.conns, &self.limits);
        self.listener.accept(self.poll.registry(), Interest::READABLE, |token, stream, admitted| {
            let conn = Arc::new(Conn {
                token,
                stream,
                inbox: Mutex::new(Inbox::default()),
                writer: Mutex::new(Writer { link: Link::default(), out: OutputBuffer::new(limits) }),
                broken: AtomicBool::new(false),
                _admitted: admitted,
            });
            conns.insert(token, (conn, LineFramer::new(limits.max_line)));
        });
    }

    /// Reads until the socket would block or the inbox is full, queueing every complete line.
    fn read(&mut self, token: Token) {
        let Some((conn, framer)) = self.conns.get_mut(&token) else { return };
        let open = loop {
            if lock(&conn.inbox).paused {
                break true;
            }
            let n = match (&conn.stream).read(framer.read_buf()) {
                Ok(0) => break false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break false,
            };
            framer.filled(n);
            let received = Timestamp::from_system_time(SystemTime::now());
            let mut requests = Vec::new();
            let mut oversized = false;
            while let Some(frame) = framer.next_frame() {
                match frame {
                    Frame::Line(line) => requests.push(Request::Line(line.to_vec(), received)),
                    Frame::Oversized(quote) => {
                        requests.push(Request::Oversized(self.service.oversized(quote)));
                        oversized = true;
                    }
                }
            }
            if !requests.is_empty() {
                let mut inbox = lock(&conn.inbox);
                inbox.requests.extend(requests);
                inbox.paused = inbox.requests.len() >= self.limits.max_in_flight;
                if !inbox.scheduled {
                    inbox.scheduled = true;
                    drop(inbox);
                    self.ready.push(Arc::clone(conn));
                }
            }
            if oversized {
                break false;
            }
        };
        if !open {
            // Stop reading. Requests already queued still run and their replies are written; the
            // socket closes when the last worker lets go of the connection.
            if let Some((conn, _)) = self.conns.remove(&token) {
                let _ = self.poll.registry().deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
            }
        }
    }
}

/// One worker thread and what it owns.
struct Worker<S> {
    service: Arc<S>,
    /// Ready connections: taken from here, and put back here when more is left after a batch.
    ready: Arc<ReadyQueue<Arc<Conn>>>,
    resume: (Sender<Token>, Arc<Waker>),
    links: Arc<FloodLinks>,
    /// The server's places client (its pool of kept-alive connections is shared by all workers).
    upstream: Option<Arc<PlacesClient>>,
    /// A paused reader is resumed once the inbox is below half its limit, so that one wake-up of
    /// the reader carries many requests.
    resume_below: usize,
}

impl<S: Service> Worker<S> {
    fn run(mut self) -> ! {
        loop {
            let conn = self.ready.pop();
            self.serve_connection(conn);
        }
    }

    /// Runs up to [`BATCH`] of the connection's requests in order, then lets it go: unscheduled if
    /// its inbox is empty, back in the ready queue otherwise.
    fn serve_connection(&mut self, conn: Arc<Conn>) {
        let mut writer = lock(&conn.writer);
        for _ in 0..BATCH {
            let (request, more) = {
                let mut inbox = lock(&conn.inbox);
                let next = inbox.requests.pop_front();
                if inbox.paused && inbox.requests.len() < self.resume_below {
                    inbox.paused = false;
                    let _ = self.resume.0.send(conn.token);
                    let _ = self.resume.1.wake();
                }
                match next {
                    Some(request) => (request, !inbox.requests.is_empty()),
                    None => {
                        inbox.scheduled = false;
                        return;
                    }
                }
            };
            match request {
                Request::Line(line, received) => self.execute(&conn, &mut writer, &line, received),
                Request::Oversized(reply) => {
                    writer.out.push(&reply);
                    self.flush(&conn, &mut writer.out);
                    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                    conn.broken.store(true, Ordering::Release);
                    continue;
                }
            }
            if !more || writer.out.should_flush() {
                self.flush(&conn, &mut writer.out);
            }
        }
        self.flush(&conn, &mut writer.out);
        drop(writer);
        self.ready.push(conn);
    }

    fn execute(&mut self, conn: &Conn, writer: &mut Writer, line: &[u8], received: Timestamp) {
        let places = self.upstream.as_deref();
        match handle_line(&*self.service, &self.links, places, line, &mut writer.link, received, Instant::now) {
            Handled::Reply(bytes) => writer.out.push(&bytes),
            Handled::Nothing => {}
            Handled::Fetch(Fetch { places, lookup }) => {
                // Replies already due leave before the worker blocks on the upstream.
                self.flush(conn, &mut writer.out);
                let result = places.fetch(&lookup.query, self.service.stats());
                writer.out.push(&self.service.complete(lookup, result));
            }
        }
    }

    /// Writes what is owed, blocking while the client is slow to read, as long as the output
    /// buffer's rules allow; a client they give up on is closed and its later replies dropped.
    fn flush(&self, conn: &Conn, out: &mut OutputBuffer) {
        if conn.broken.load(Ordering::Acquire) {
            out.consumed(out.owed(), Instant::now());
            return;
        }
        if let Err(e) = output::flush(&conn.stream, out) {
            if !conn.broken.swap(true, Ordering::AcqRel) && matches!(e, WriteError::Closed(_)) {
                self.service.log().error("write", e);
            }
            out.consumed(out.owed(), Instant::now());
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Locks, recovering from a worker that panicked while holding the lock (the state is still usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
