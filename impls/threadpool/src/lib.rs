//! Thread-pool style: one reader thread frames requests, a fixed pool of workers executes them.
//!
//! ```text
//!   clients ──► reader thread (mio readiness, LineFramer) ──► crossbeam channel of Jobs
//!                                                                   │
//!               ┌───────────────────────────────────────────────────┘
//!               ▼
//!   worker 1..N: Service::handle ─► blocking places fetch (WHATSAT) ─► ReplyOrder ─► write
//!                                └► FloodLinks (one thread per neighbour)
//! ```
//!
//! The reader never executes a request: it reads whatever is ready, cuts it into lines and queues
//! one job per line. Workers block freely: on the places backend, and on a client that is slow to
//! read. Because several workers may finish one connection's requests out of order, each
//! connection has a [`ReplyOrder`] and replies leave in request order.
//!
//! The job channel is bounded: when every worker is blocked and the queue is full, the reader
//! blocks too and stops reading from all clients. That is the pool's back-pressure, and its
//! weakness: one slow upstream slows everyone, which is what this style is here to show.
//!
//! # Layout
//! - [`serve`]: start links and workers, then run the reader loop on the calling thread.
//! - `Conn`: what workers share with the reader about one connection.
//! - `worker`: execute one job and write what is ready.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use herd_blocking::{FloodLinks, PlacesClient, wait};
use herd_core::{Frame, LineFramer, Link, Reply, ReplyOrder, ServeOptions, ServerStats, Service, Timestamp};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// Workers when `--threads` is not given. Workers block on the places backend, so the pool is sized
/// by Little's law rather than by cores: 2,000 WHATSAT/s at 20 ms upstream keeps 40 requests in
/// flight, and 64 workers cover that with room for slow clients, at ~64 small stacks of memory.
pub const DEFAULT_WORKERS: usize = 64;
/// Jobs queued between the reader and the workers before the reader blocks.
pub const QUEUE: usize = 16 * 1024;
const LISTENER: Token = Token(usize::MAX);

/// One framed request for a worker.
struct Job {
    conn: Arc<Conn>,
    seq: u64,
    line: Vec<u8>,
    received: Timestamp,
}

/// A client connection as workers see it: the socket to write to, the reply order, the link state.
struct Conn {
    stream: TcpStream,
    out: Mutex<ReplyOrder>,
    link: Mutex<Link>,
    /// Set once a write failed: later replies are dropped instead of written.
    closed: AtomicBool,
}

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: std::net::TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let links = FloodLinks::spawn(&options.name, &options.neighbours, Arc::clone(&service));
    let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE);
    for i in 0..options.threads.unwrap_or(DEFAULT_WORKERS).max(1) {
        let (service, queue, links) = (Arc::clone(&service), queue.clone(), links.clone());
        let upstream = options.places.map(|addr| PlacesClient::new(addr, options.upstream_timeout));
        let write_timeout = options.write_timeout;
        thread::Builder::new()
            .name(format!("worker-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || worker(&*service, &queue, &links, upstream, write_timeout))?;
    }
    read_loop(TcpListener::from_std(listener), &*service, &jobs, options.max_line)
}

/// The reader: accept, read what is ready, frame, queue one job per line.
fn read_loop<S: Service>(
    mut listener: TcpListener,
    service: &S,
    jobs: &Sender<Job>,
    max_line: usize,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<Token, (Arc<Conn>, LineFramer)> = HashMap::new();
    let mut next_token = 0usize;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns, &mut next_token, service, max_line);
                continue;
            }
            let token = event.token();
            let Some((conn, framer)) = conns.get_mut(&token) else { continue };
            if !read_ready(conn, framer, service, jobs) {
                // Stop reading. Jobs still queued keep the socket open until their replies are
                // written; it closes when the last one lets go of the connection.
                if let Some((conn, _)) = conns.remove(&token) {
                    let _ = poll.registry().deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
                }
            }
        }
    }
}

fn accept_all<S: Service>(
    listener: &TcpListener,
    poll: &Poll,
    conns: &mut HashMap<Token, (Arc<Conn>, LineFramer)>,
    next_token: &mut usize,
    service: &S,
    max_line: usize,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let token = Token(*next_token);
                if poll.registry().register(&mut stream, token, Interest::READABLE).is_err() {
                    continue;
                }
                *next_token = (*next_token + 1) % (usize::MAX - 1);
                let conn = Arc::new(Conn {
                    stream,
                    out: Mutex::new(ReplyOrder::new()),
                    link: Mutex::new(Link::default()),
                    closed: AtomicBool::new(false),
                });
                ServerStats::bump(&service.stats().connections);
                conns.insert(token, (conn, LineFramer::new(max_line)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, most likely: log and wait for the next readiness event.
                service.log().error("accept", e);
                return;
            }
        }
    }
}

/// Reads until the socket would block, queueing every complete line. False: close the connection.
fn read_ready<S: Service>(conn: &Arc<Conn>, framer: &mut LineFramer, service: &S, jobs: &Sender<Job>) -> bool {
    loop {
        let n = match (&conn.stream).read(framer.read_buf()) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        framer.filled(n);
        let received = Timestamp::from_system_time(SystemTime::now());
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Line(line) => {
                    let seq = lock(&conn.out).admit();
                    let job = Job { conn: Arc::clone(conn), seq, line: line.to_vec(), received };
                    if jobs.send(job).is_err() {
                        return false; // workers gone: the server is stopping
                    }
                }
                Frame::Oversized(quote) => {
                    let seq = lock(&conn.out).admit();
                    let reply = service.oversized(quote);
                    deliver(conn, seq, reply, Duration::from_secs(1), service);
                    return false;
                }
            }
        }
    }
}

/// A worker: run jobs until the channel closes.
fn worker<S: Service>(
    service: &S,
    queue: &Receiver<Job>,
    links: &FloodLinks,
    mut upstream: Option<PlacesClient>,
    write_timeout: Duration,
) {
    for job in queue {
        let outcome = {
            let mut link = lock(&job.conn.link);
            service.handle(&job.line, &mut link, job.received)
        };
        if let Some(flood) = &outcome.flood {
            links.send(flood, service.stats());
        }
        let reply = match outcome.reply {
            Reply::Bytes(bytes) => bytes,
            Reply::Nothing => Vec::new(),
            Reply::Places(lookup) => {
                let result = match &mut upstream {
                    Some(client) => client.fetch(&lookup.query),
                    None => Err(herd_core::UpstreamError::Unreachable("no places backend configured".into())),
                };
                service.complete(lookup, result)
            }
        };
        deliver(&job.conn, job.seq, reply, write_timeout, service);
    }
}

/// Hands reply `seq` to the connection's order and writes whatever became ready, blocking (up to
/// `timeout` per stall) while the client is slow to read. A client that stalls past it is closed.
fn deliver<S: Service>(conn: &Conn, seq: u64, reply: Vec<u8>, timeout: Duration, service: &S) {
    let mut out = lock(&conn.out);
    let ready = out.complete(seq, reply);
    if ready.is_empty() || conn.closed.load(Ordering::Acquire) {
        return;
    }
    if let Err(e) = write_all(&conn.stream, &ready, timeout) {
        if !conn.closed.swap(true, Ordering::AcqRel) {
            service.log().error("write", e);
        }
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// `write_all` on a non-blocking socket, waiting in `poll(2)` when the client's buffer is full.
fn write_all(stream: &TcpStream, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        match (&*stream).write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait::writable(stream, timeout)? {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read its replies"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Locks, recovering from a worker that panicked while holding the lock (the state is still usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
