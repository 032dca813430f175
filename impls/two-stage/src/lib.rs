//! Two-stage (SEDA) style: an I/O stage that answers what it can at once, and a worker stage for
//! what has to block, joined by bounded queues.
//!
//! ```text
//!            stage 1: I/O (--io-threads event loops)                stage 2: workers (--threads)
//! clients ─► read ─► frame ─► handle_line ─┬─ IAMAT, AT, ? ─► reply now
//!                                          └─ WHATSAT ──► [bounded queue] ──► places fetch (blocks)
//!    ◄──────────────── ReplyOrder ◄── write ◄── [completion queue + waker] ◄──────── Service::complete
//! ```
//!
//! Stage 1 owns every socket: only it reads and writes, never blocking. It accepts as herd-core's
//! `Acceptor` says (every loop a clone of one: one cap, one count), and hands each line to
//! herd-core's `handle_line`, which handles it, floods the update, and says whether to reply now or
//! fetch places (a server without a places backend has its WHATSATs answered there, in stage 1).
//! Stage 2 owns only the upstream calls (through the server's one `PlacesClient`, whose pool of
//! kept-alive connections every worker shares; each job carries a handle to it). What is owed to a client, when to stop reading it and when to give up on
//! it are herd-core's `OutputBuffer` rules; flood links are herd-core's `FloodLink` machines,
//! driven by one thread per neighbour. When the stage-2 queue is full, stage 1 parks the WHATSAT on its connection and
//! stops reading *that* connection (back-pressure) until a slot frees; other connections keep being
//! served, so cheap commands are not stuck behind slow ones — the point of splitting the stages.
//! Memory stays bounded: one parked request per connection, a bounded queue, and the output
//! buffer's caps.
//!
//! The counters (`extra` in the result file) show where requests waited: stage-2 queue depth
//! (max and at the end), time queued before a worker took a request, time a finished reply waited
//! for stage 1 to write it, and how often back-pressure parked a connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use herd_blocking::{FloodLinks, Listener, PlacesClient};
use herd_core::policy::{Acceptor, Admitted, Fetch, Handled, OutputBuffer, handle_line};
use herd_core::{Frame, Limits, LineFramer, Link, PlacesLookup, ServeOptions, ServerStats, Service, Timestamp};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

/// Stage-2 workers when `--threads` is not given: sized for blocking upstream calls, as in the
/// threadpool style (see its README), so the two compare on structure, not pool size.
pub const DEFAULT_WORKERS: usize = 64;
/// Stage-1 event loops when `--io-threads` is not given. One loop parses far faster than the
/// upstream answers; more loops only pay off at echo-like rates.
pub const DEFAULT_IO_THREADS: usize = 1;
/// Capacity of the queue into stage 2: the SEDA stage boundary, part of this style's structure.
pub const STAGE2_QUEUE: usize = 1024;

const WAKER: Token = Token(usize::MAX - 1);

/// A WHATSAT on its way to stage 2.
struct Job {
    io: usize,
    conn: Token,
    seq: u64,
    lookup: PlacesLookup,
    /// The server's places backend, to ask.
    places: Arc<PlacesClient>,
    queued: Instant,
}

/// A finished stage-2 reply on its way back to stage 1.
struct Done {
    conn: Token,
    seq: u64,
    reply: Vec<u8>,
    finished: Instant,
}

/// Where requests waited, as gauges in the server's counters.
struct Gauges {
    depth_max: Arc<AtomicU64>,
    depth_end: Arc<AtomicU64>,
    queued_us_total: Arc<AtomicU64>,
    queued_us_max: Arc<AtomicU64>,
    return_us_total: Arc<AtomicU64>,
    return_us_max: Arc<AtomicU64>,
    jobs: Arc<AtomicU64>,
    parked: Arc<AtomicU64>,
    overflow_closes: Arc<AtomicU64>,
}

impl Gauges {
    fn new(stats: &ServerStats) -> Self {
        Self {
            depth_max: stats.gauge("stage2_queue_depth_max"),
            depth_end: stats.gauge("stage2_queue_depth_end"),
            queued_us_total: stats.gauge("stage2_queued_us_total"),
            queued_us_max: stats.gauge("stage2_queued_us_max"),
            return_us_total: stats.gauge("stage1_return_queued_us_total"),
            return_us_max: stats.gauge("stage1_return_queued_us_max"),
            jobs: stats.gauge("stage2_jobs"),
            parked: stats.gauge("stage1_backpressure_parks"),
            overflow_closes: stats.gauge("stage1_output_overflow_closes"),
        }
    }
}

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: StdListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let links = herd_blocking::links::spawn(options, &*service)?;
    let upstream = options.places.map(|addr| Arc::new(PlacesClient::new(addr, &options.limits, service.stats())));
    let gauges = Arc::new(Gauges::new(service.stats()));
    let (to_stage2, stage2) = crossbeam_channel::bounded::<Job>(STAGE2_QUEUE);
    let io_threads = options.io_threads.unwrap_or(DEFAULT_IO_THREADS).max(1);

    // Stage 1's loops, each with its completion channel and waker, so stage 2 can hand replies back.
    let mut loops = Vec::new();
    let mut returns = Vec::new();
    for _ in 0..io_threads {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded::<Done>();
        returns.push((tx, waker));
        loops.push((poll, rx));
    }
    let returns = Arc::new(returns);

    for i in 0..options.threads.unwrap_or(DEFAULT_WORKERS).max(1) {
        let (service, stage2, returns, gauges) =
            (Arc::clone(&service), stage2.clone(), Arc::clone(&returns), Arc::clone(&gauges));
        thread::Builder::new()
            .name(format!("stage2-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || stage2_worker(&*service, &stage2, &returns, &gauges))?;
    }

    let mut handles = Vec::new();
    let acceptor = Acceptor::new(&options.limits, service.stats(), service.log());
    for (i, (poll, done)) in loops.into_iter().enumerate() {
        let stage1 = Stage1 {
            index: i,
            listener: Listener::new(listener.try_clone()?, poll.registry(), acceptor.clone())?,
            poll,
            conns: HashMap::new(),
            parked: VecDeque::new(),
            done,
            to_stage2: to_stage2.clone(),
            stage2_len: stage2.clone(),
            service: Arc::clone(&service),
            links: Arc::clone(&links),
            upstream: upstream.clone(),
            gauges: Arc::clone(&gauges),
            limits: options.limits.clone(),
            stalls: BinaryHeap::new(),
        };
        handles.push(thread::Builder::new().name(format!("stage1-{i}")).spawn(move || stage1.run())?);
    }
    for h in handles {
        h.join().map_err(|_| io::Error::other("a stage-1 loop panicked"))??;
    }
    Ok(())
}

/// Stage 2: take a WHATSAT, block on the upstream, hand the reply back to its loop.
fn stage2_worker<S: Service>(
    service: &S,
    jobs: &Receiver<Job>,
    returns: &[(Sender<Done>, Arc<Waker>)],
    gauges: &Gauges,
) {
    for job in jobs {
        let waited = job.queued.elapsed().as_micros() as u64;
        gauges.queued_us_total.fetch_add(waited, Relaxed);
        gauges.queued_us_max.fetch_max(waited, Relaxed);
        gauges.depth_end.store(jobs.len() as u64, Relaxed);
        let result = job.places.fetch(&job.lookup.query, service.stats());
        let reply = service.complete(job.lookup, result);
        let (tx, waker) = &returns[job.io];
        if tx.send(Done { conn: job.conn, seq: job.seq, reply, finished: Instant::now() }).is_ok() {
            let _ = waker.wake();
        }
    }
}

/// One connection as stage 1 holds it.
struct Conn {
    stream: TcpStream,
    framer: LineFramer,
    link: Link,
    out: OutputBuffer,
    /// A WHATSAT stage 2 had no room for; while set, this connection is not read.
    parked: Option<Job>,
    /// The client closed its side; the connection ends once nothing is owed.
    read_closed: bool,
    /// Reading stopped because the output buffer said so; read again once it allows.
    input_paused: bool,
    /// Its place under the connection cap, given back when the connection goes.
    _admitted: Admitted,
}

/// One stage-1 event loop.
struct Stage1<S> {
    index: usize,
    poll: Poll,
    listener: Listener,
    conns: HashMap<Token, Conn>,
    parked: VecDeque<Token>,
    done: Receiver<Done>,
    to_stage2: Sender<Job>,
    stage2_len: Receiver<Job>,
    service: Arc<S>,
    links: Arc<FloodLinks>,
    /// The places backend (`None`: WHATSATs are answered by `handle_line`, never queued).
    upstream: Option<Arc<PlacesClient>>,
    gauges: Arc<Gauges>,
    limits: Limits,
    /// Write-stall deadlines of connections whose socket was full, earliest first.
    stalls: BinaryHeap<Reverse<(Instant, Token)>>,
}

impl<S: Service> Stage1<S> {
    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            // While connections are parked, look again soon even if nothing else happens.
            let parked = (!self.parked.is_empty()).then(|| Instant::now() + Duration::from_millis(1));
            let stall = self.stalls.peek().map(|Reverse((at, _))| *at);
            let wake_at = [parked, stall, self.listener.deadline()].into_iter().flatten().min();
            let timeout = wake_at.map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            if self.listener.deadline().is_some() {
                self.accept(); // a paused listener accepts again once its pause is over
            }
            self.check_stalls();
            for event in &events {
                match event.token() {
                    Listener::TOKEN => self.accept(),
                    WAKER => {}
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        // A connection that stopped reading because of what it owed reads again once
                        // the client has taken some.
                        let resume = event.is_writable() && self.conns.get(&token).is_some_and(|c| c.input_paused);
                        if resume || event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.serve_input(token);
                        }
                    }
                }
            }
            self.take_completions();
            self.unpark();
        }
    }

    fn accept(&mut self) {
        let (conns, limits) = (&mut self.conns, &self.limits);
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.listener.accept(self.poll.registry(), interest, |token, stream, admitted| {
            let framer = LineFramer::new(limits.max_line);
            let out = OutputBuffer::new(limits);
            let conn = Conn {
                stream,
                framer,
                link: Link::default(),
                out,
                parked: None,
                read_closed: false,
                input_paused: false,
                _admitted: admitted,
            };
            conns.insert(token, conn);
        });
    }

    /// Handles every buffered line, then reads more, until the socket is drained or the connection
    /// is parked. Fast commands are answered here; WHATSAT goes to stage 2.
    fn serve_input(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let mut keep = true;
        'input: loop {
            if conn.parked.is_some() {
                break;
            }
            let now = Timestamp::from_system_time(SystemTime::now());
            conn.input_paused = false;
            loop {
                if !conn.out.may_read() {
                    // Back-pressure: a client that does not take its replies is not read either.
                    conn.input_paused = true;
                    break 'input;
                }
                let Some(frame) = conn.framer.next_frame() else { break };
                let seq = conn.out.admit();
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        let reply = self.service.oversized(quote);
                        conn.out.complete(seq, reply);
                        conn.read_closed = true;
                        break 'input;
                    }
                };
                let places = self.upstream.as_ref();
                match handle_line(&*self.service, &self.links, places, line, &mut conn.link, now, Instant::now) {
                    Handled::Reply(bytes) => conn.out.complete(seq, bytes),
                    Handled::Nothing => conn.out.complete(seq, Vec::new()),
                    Handled::Fetch(Fetch { places, lookup }) => {
                        let places = Arc::clone(places);
                        let job = Job { io: self.index, conn: token, seq, lookup, places, queued: Instant::now() };
                        if let Some(parked) = offer(&self.to_stage2, &self.gauges, &self.stage2_len, job) {
                            conn.parked = Some(parked);
                            self.parked.push_back(token);
                            self.gauges.parked.fetch_add(1, Relaxed);
                            break 'input;
                        }
                    }
                }
                if conn.out.should_flush()
                    && write_owed(conn, token, &mut self.stalls, &*self.service, &self.gauges).is_err()
                {
                    keep = false;
                    break 'input;
                }
            }
            if conn.read_closed {
                break;
            }
            match conn.stream.read(conn.framer.read_buf()) {
                Ok(0) => {
                    conn.read_closed = true;
                    break;
                }
                Ok(n) => conn.framer.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    keep = false;
                    break;
                }
            }
        }
        if keep {
            self.flush(token);
        } else {
            self.close(token);
        }
    }

    /// Writes what the connection owes; closes it when it is done, broken, or given up on.
    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let failed = write_owed(conn, token, &mut self.stalls, &*self.service, &self.gauges).is_err();
        let finished = conn.read_closed && conn.out.is_idle() && conn.parked.is_none();
        if failed || finished {
            self.close(token);
        }
    }

    /// Closes connections whose clients took nothing for the write-stall limit; looks again later
    /// at those that made progress since.
    fn check_stalls(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((due, token))) = self.stalls.peek() {
            if due > now {
                break;
            }
            self.stalls.pop();
            let Some(conn) = self.conns.get_mut(&token) else { continue };
            if let Err(close) = conn.out.on_timeout(now) {
                self.service.log().error("write", close);
                self.close(token);
            } else if let Some(later) = conn.out.poll_timeout() {
                self.stalls.push(Reverse((later, token)));
            }
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Replies from stage 2, released in request order.
    fn take_completions(&mut self) {
        let mut touched = Vec::new();
        while let Ok(done) = self.done.try_recv() {
            let waited = done.finished.elapsed().as_micros() as u64;
            self.gauges.return_us_total.fetch_add(waited, Relaxed);
            self.gauges.return_us_max.fetch_max(waited, Relaxed);
            if let Some(conn) = self.conns.get_mut(&done.conn) {
                conn.out.complete(done.seq, done.reply);
                touched.push(done.conn);
            }
        }
        for token in touched {
            self.flush(token);
            if self.conns.get(&token).is_some_and(|c| c.input_paused && c.out.may_read()) {
                self.serve_input(token);
            }
        }
    }

    /// Offers parked WHATSATs to stage 2 again; a connection whose request got in is read again.
    fn unpark(&mut self) {
        for _ in 0..self.parked.len() {
            let Some(token) = self.parked.pop_front() else { break };
            let Some(conn) = self.conns.get_mut(&token) else { continue };
            let Some(mut job) = conn.parked.take() else { continue };
            job.queued = Instant::now(); // queued from this offer on
            match offer(&self.to_stage2, &self.gauges, &self.stage2_len, job) {
                Some(still) => {
                    conn.parked = Some(still);
                    self.parked.push_back(token);
                }
                None => self.serve_input(token),
            }
        }
    }
}

/// Writes what the socket takes of what `conn` owes. A full socket starts the output buffer's stall
/// clock (its deadline goes on `stalls`); `Err` means close: the connection broke, or the buffer's
/// rules gave up on the client (logged).
fn write_owed<S: Service>(
    conn: &mut Conn,
    token: Token,
    stalls: &mut BinaryHeap<Reverse<(Instant, Token)>>,
    service: &S,
    gauges: &Gauges,
) -> Result<(), ()> {
    while conn.out.owed() > 0 {
        match conn.stream.write(conn.out.poll_transmit()) {
            Ok(0) => return Err(()),
            Ok(n) => conn.out.consumed(n, Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let was_stalled = conn.out.poll_timeout().is_some();
                if let Err(close) = conn.out.blocked(Instant::now()) {
                    gauges.overflow_closes.fetch_add(1, Relaxed);
                    service.log().error("write", close);
                    return Err(());
                }
                if let (false, Some(due)) = (was_stalled, conn.out.poll_timeout()) {
                    stalls.push(Reverse((due, token)));
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// Queues a WHATSAT for stage 2, or gives it back when the queue is full.
fn offer(to_stage2: &Sender<Job>, gauges: &Gauges, queue: &Receiver<Job>, job: Job) -> Option<Job> {
    match to_stage2.try_send(job) {
        Ok(()) => {
            gauges.jobs.fetch_add(1, Relaxed);
            let depth = queue.len() as u64;
            gauges.depth_max.fetch_max(depth, Relaxed);
            gauges.depth_end.store(depth, Relaxed);
            None
        }
        Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
    }
}
