//! One generator thread: a mio event loop over its share of the connections.
//!
//! Open loop: a [`Timer`] wakes the loop at each intended send time; every request that is due is
//! written (round-robin over this thread's connections) with its intended time, and its latency is
//! measured from that time when the reply arrives. Closed loop: each connection keeps `pipeline`
//! requests in flight and sends the next as soon as a reply arrives.
//!
//! Replies come back in order on each connection, so each connection keeps a FIFO of what it is
//! waiting for; every reply is checked against the head of that FIFO.
//!
//! # Did the generator keep up?
//! In an open loop every request sent inside the window leaves two numbers (`send_lag` in the
//! result): its **own lateness**, how long after its intended time the loop got to it (a timer
//! that woke late, a loop busy with replies, a starved CPU: the generator's fault), and its
//! **socket wait**, how long its bytes then waited for a socket that would not take them (the
//! server not reading: back-pressure, the server's doing, and part of its latency). A run whose own
//! lateness has a p99 above [`FELL_BEHIND_P99_US`](herd_record::result::FELL_BEHIND_P99_US) is marked: its latency is partly the generator's.
//!
//! # Connecting
//! Every connect is non-blocking (a dropped SYN must not stall the loop) and timed from
//! `connect(2)` to established; the initial connections are opened [`CONNECT_IN_FLIGHT`] at a time
//! (a server's accept backlog is finite), before the clock starts.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use herd_core::Timestamp;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::requests::{Expect, Failure, KINDS, Kind, RequestSource, check, reply_len};
use super::schedule::{Arrival, OpenLoopSchedule, RateProfile};
use super::timer::{self, Timer};
use crate::base::clock::{self, MICROSECOND, MILLISECOND, Nanos, SECOND, micros_between};
use crate::base::rng::SplitMix64;
use herd_record::workload::Workload;

const TIMER: Token = Token(usize::MAX);
/// Timeouts, reconnects, progress and the timeline's seconds are looked at this often.
const HOUSEKEEPING: Nanos = 20 * MILLISECOND;
const RECONNECT_AFTER: Nanos = 100 * MILLISECOND;
const MAX_REPLY: usize = 8 * 1024 * 1024;
/// The least room a read is given. An echo reply or a herd line fits; a longer WHATSAT answer
/// doubles the buffer until it fits. Small, so that 10,000 connections do not hold 16 KiB each
/// (what they once started with): at 256 echo connections the smaller buffers measured neither
/// faster nor slower.
const READ_ROOM: usize = 512;
/// A connect not established after this is abandoned (retried later, or an error at start-up).
const CONNECT_TIMEOUT: Nanos = 2 * SECOND;
/// Initial connects in flight at once.
pub const CONNECT_IN_FLIGHT: usize = 32;

/// A server the generator talks to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The herd name replies must carry, when known.
    pub name: Option<String>,
}

/// Everything one thread needs; built by [`super::generate`].
#[derive(Debug)]
pub struct ThreadPlan {
    pub index: usize,
    /// (target index, connection number) for each connection of this thread.
    pub conns: Vec<(usize, u64)>,
    pub targets: Vec<Target>,
    pub workload: Workload,
    /// Rate of the whole open-loop schedule (every generator, every thread) from the load's start,
    /// or `None` for a closed loop.
    pub rate: Option<RateProfile>,
    /// This thread's share of that schedule: its sends `part`, `part + parts` … (see
    /// [`OpenLoopSchedule::slice`]).
    pub part: u64,
    pub parts: u64,
    pub arrival: Arrival,
    pub pipeline: usize,
    pub timeout: Duration,
    pub seed: u64,
    /// Nice value for this thread (`None`: inherited).
    pub nice: Option<i32>,
    /// Rejected replies to print to stderr.
    pub show_errors: usize,
    /// A scenario's finer timeline, if any.
    pub steps: Option<StepPlan>,
    /// Source addresses to spread connections over (empty: the kernel chooses).
    pub sources: Vec<std::net::IpAddr>,
}

impl ThreadPlan {
    /// The source address of connection `c` (numbered over every thread): the sources in turn
    /// within each target's share, so every (source, target) pair holds as few as may be.
    fn source_for(&self, c: usize) -> Option<std::net::IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[(c / self.targets.len().max(1)) % self.sources.len()])
    }
}

/// A scenario run's finer timeline: steps of `step` ns from the window's start, and the ends of
/// its phases (ns after the window's start), for each connection's completed replies per phase.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub step: Nanos,
    pub phase_ends: Vec<Nanos>,
}

/// One step of a scenario's timeline, by the time replies and failures happened.
#[derive(Debug, Clone)]
pub struct Step {
    /// By [`Failure::index`].
    pub errors: [u64; Failure::ALL.len()],
    /// Failures and replies on connections to each target (by target index).
    pub errors_by_target: Vec<u64>,
    pub completed_by_target: Vec<u64>,
    /// Every reply (and timeout) of the step, recorded as it happens.
    pub latency: Histogram<u64>,
}

impl Step {
    pub fn new(targets: usize) -> Self {
        Self {
            errors: [0; Failure::ALL.len()],
            errors_by_target: vec![0; targets],
            completed_by_target: vec![0; targets],
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds"),
        }
    }

    /// Replies completed in the step, on connections to any target.
    pub fn completed(&self) -> u64 {
        self.completed_by_target.iter().sum()
    }

    pub fn add(&mut self, other: &Step) {
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        for (a, b) in self.errors_by_target.iter_mut().zip(&other.errors_by_target) {
            *a += b;
        }
        for (a, b) in self.completed_by_target.iter_mut().zip(&other.completed_by_target) {
            *a += b;
        }
        let _ = self.latency.add(&other.latency);
    }
}

/// What a scenario run's thread measured beyond the usual.
#[derive(Debug, Default)]
pub struct StepReport {
    pub steps: Vec<Step>,
    /// For each connection, its target and its replies completed in each phase.
    pub conns: Vec<(usize, Vec<u64>)>,
    /// Replies completed on connections to each target, over the window.
    pub completed_by_target: Vec<u64>,
}

/// When the load starts, the window opens and closes ([`clock`] times). Fixed only once every
/// thread has connected, so connecting (10,000 connections take a while) never eats into the
/// schedule.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Nanos,
    pub measure_start: Nanos,
    pub end: Nanos,
    /// Wall-clock time of `measure_start`, for the result file.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// Where the generator threads wait for each other before the window is fixed.
#[derive(Debug)]
pub struct StartLine {
    barrier: Barrier,
    window: OnceLock<Window>,
    warmup: Duration,
    duration: Duration,
    /// The wall-clock time the load starts at (`--start-at`), shared with other generators.
    start_at: Option<SystemTime>,
}

impl StartLine {
    pub fn new(threads: usize, warmup: Duration, duration: Duration, start_at: Option<SystemTime>) -> Self {
        Self { barrier: Barrier::new(threads), window: OnceLock::new(), warmup, duration, start_at }
    }

    /// Waits for every thread, then returns the window all of them use.
    pub fn wait(&self) -> Window {
        if self.barrier.wait().is_leader() {
            let soonest = Duration::from_millis(20);
            // Another generator's clock says when: the wall-clock time is turned into this
            // machine's monotonic clock once, here.
            let lead = match self.start_at.map(|at| at.duration_since(SystemTime::now())) {
                Some(Ok(wait)) => wait.max(soonest),
                Some(Err(late)) => {
                    eprintln!(
                        "warning: --start-at was {:.3} s ago when the generator was ready; starting now \
                         (the result's started_at says when)",
                        late.duration().as_secs_f64()
                    );
                    soonest
                }
                None => soonest,
            };
            let start = clock::now() + clock::nanos(lead);
            let started_at = chrono::Utc::now() + chrono::Duration::from_std(lead + self.warmup).unwrap_or_default();
            let measure_start = start + clock::nanos(self.warmup);
            let _ = self.window.set(Window {
                start,
                measure_start,
                end: measure_start + clock::nanos(self.duration),
                started_at,
            });
        }
        self.barrier.wait();
        *self.window.get().expect("the leader sets the window before the second barrier")
    }

    pub fn window(&self) -> Option<Window> {
        self.window.get().copied()
    }
}

/// Live state others read while the load runs: counters for the progress display, and the
/// window once the threads have fixed it (a scenario times its events from it).
#[derive(Debug, Default)]
pub struct Progress {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub window: OnceLock<Window>,
}

/// One second of the measured window.
#[derive(Debug, Clone)]
pub struct Second {
    pub completed: u64,
    pub errors: u64,
    /// The latency recorded during this second (to within [`HOUSEKEEPING`] at its edges): filled
    /// from the command histograms once a second, so a reply is recorded once, not twice.
    pub latency: Histogram<u64>,
}

/// What a thread measured.
#[derive(Debug)]
pub struct ThreadReport {
    /// Per [`Kind`], requests intended inside the measured window.
    pub latency: Vec<Histogram<u64>>,
    pub timeline: Vec<Second>,
    pub errors: [u64; Failure::ALL.len()],
    /// Failures of requests intended during the warm-up.
    pub warmup_errors: u64,
    /// Replies received inside the measured window.
    pub completed_in_window: u64,
    /// Open loop, requests intended in the window: how late the loop got to each (µs).
    pub own_lag: Histogram<u64>,
    /// Open loop, requests intended in the window: how long each then waited for its socket (µs).
    pub socket_wait: Histogram<u64>,
    /// Every established connect, from `connect(2)` to established (µs).
    pub connect: Histogram<u64>,
    /// A scenario run's finer timeline ([`ThreadPlan::steps`]).
    pub fine: Option<StepReport>,
}

struct Pending {
    kind: Kind,
    expect: Expect,
    intended: Nanos,
}

/// A request whose bytes have not all left. `attempt`: when the generator first tried to send it
/// (when it flushed, or when it queued it behind a socket that was refusing bytes or still
/// connecting): lateness before it is the generator's own, waiting after it is the socket's.
struct Unwritten {
    end: usize,
    intended: Nanos,
    attempt: Option<Nanos>,
    /// Intended inside the window of an open loop: its send lag is recorded.
    measured: bool,
}

struct Conn {
    stream: Option<TcpStream>,
    /// Since when `stream` is connecting (non-blocking connect, not yet established).
    connecting: Option<Nanos>,
    /// Requests whose bytes are still (partly) in `out`, oldest first.
    unwritten: VecDeque<Unwritten>,
    /// The socket refused bytes (`WouldBlock`) and has not taken them all since.
    blocked: bool,
    target: usize,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    pending: VecDeque<Pending>,
    source: RequestSource,
    retry_at: Nanos,
    /// Requests sent on the current connection (for connection churn).
    sent_here: u32,
    /// Replies completed in each phase of a scenario (empty otherwise).
    by_phase: Vec<u64>,
    /// The source address to connect from (`None`: the kernel's choice).
    bind: Option<std::net::IpAddr>,
}

impl Conn {
    fn new(target: usize, source: RequestSource, retry_at: Nanos) -> Self {
        Self {
            stream: None,
            connecting: None,
            unwritten: VecDeque::new(),
            blocked: false,
            target,
            out: Vec::with_capacity(READ_ROOM),
            out_pos: 0,
            inbuf: vec![0; 2 * READ_ROOM],
            in_start: 0,
            in_end: 0,
            pending: VecDeque::new(),
            source,
            retry_at,
            bind: None,
            sent_here: 0,
            by_phase: Vec::new(),
        }
    }
}

struct Generator<'a> {
    plan: &'a ThreadPlan,
    window: Window,
    poll: Poll,
    conns: Vec<Conn>,
    report: ThreadReport,
    cursor: usize,
    unreported: (u64, u64),
    progress: &'a Progress,
    message: Vec<u8>,
    shown_errors: usize,
    /// `plan.timeout` in nanoseconds.
    timeout: Nanos,
    /// The timeline's open second, and what the command histograms held when it opened.
    second: Option<(usize, Histogram<u64>)>,
}

/// Runs one generator thread: connect, wait at the start line, run to the end of the window (or
/// until `stop`), then drain.
pub fn run(
    plan: &ThreadPlan,
    start_line: &StartLine,
    progress: &Progress,
    stop: &AtomicBool,
) -> io::Result<ThreadReport> {
    timer::tighten_timer_slack();
    let niced = plan.nice.map(timer::set_nice).transpose();
    let connected = connect_all(plan);
    // Every thread reaches the start line, even one that failed, so none waits forever.
    let window = start_line.wait();
    let _ = progress.window.set(window);
    niced?;
    let (poll, conns, connects) = connected?;
    let mut generator = Generator::new(plan, progress, window, poll, conns);
    generator.report.connect = connects;
    generator.event_loop(stop)?;
    let Generator { mut report, conns, .. } = generator;
    if let Some(fine) = &mut report.fine {
        fine.conns = conns.into_iter().map(|c| (c.target, c.by_phase)).collect();
    }
    Ok(report)
}

/// The generator tries to send `u` at `at`: its own lateness is over.
fn record_attempt(u: &mut Unwritten, at: Nanos, own_lag: &mut Histogram<u64>) {
    u.attempt = Some(at);
    if u.measured {
        own_lag.saturating_record(micros_between(u.intended, at).max(1));
    }
}

/// Opens this thread's connections before the clock starts, [`CONNECT_IN_FLIGHT`] at a time.
/// Returns them established, with the time each connect took.
fn connect_all(plan: &ThreadPlan) -> io::Result<(Poll, Vec<Conn>, Histogram<u64>)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut connects = herd_core::stats::new_histogram();
    let mut conns: Vec<Conn> = Vec::with_capacity(plan.conns.len());
    let failed = |addr: SocketAddr, e: io::Error| io::Error::new(e.kind(), format!("connecting to {addr}: {e}"));
    let mut established = 0;
    while established < plan.conns.len() {
        while conns.len() < plan.conns.len() && conns.len() - established < CONNECT_IN_FLIGHT {
            let (target, number) = plan.conns[conns.len()];
            let source = RequestSource::new(&plan.workload, SplitMix64::derive(plan.seed, number));
            let mut conn = Conn::new(target, source, clock::now());
            conn.bind = plan.source_for((number & 0xffff_ffff) as usize);
            let addr = plan.targets[target].addr;
            conn.start_connect(&poll, Token(conns.len()), addr).map_err(|e| failed(addr, e))?;
            conns.push(conn);
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_nanos(HOUSEKEEPING)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for event in &events {
            let conn = &mut conns[event.token().0];
            let addr = plan.targets[conn.target].addr;
            if let Some(took) = conn.finish_connect().map_err(|e| failed(addr, e))? {
                connects.saturating_record((took / MICROSECOND).max(1));
                established += 1;
            }
        }
        let now = clock::now();
        if let Some(late) = conns.iter().find(|c| c.connecting.is_some_and(|t| now - t > CONNECT_TIMEOUT)) {
            return Err(failed(plan.targets[late.target].addr, io::ErrorKind::TimedOut.into()));
        }
    }
    Ok((poll, conns, connects))
}

impl Conn {
    /// Starts a non-blocking connect; the stream is writable once it is established or failed.
    fn start_connect(&mut self, poll: &Poll, token: Token, addr: SocketAddr) -> io::Result<()> {
        let mut stream = match self.bind {
            None => TcpStream::connect(addr)?,
            Some(source) => TcpStream::from_std(super::capacity::connect_from(source, addr)?),
        };
        poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.stream = Some(stream);
        self.connecting = Some(clock::now());
        self.sent_here = 0;
        Ok(())
    }

    /// After an event on a connecting stream: `Some(ns it took)` once established, `None` while
    /// still connecting (or not connecting at all), an error if the connect failed.
    fn finish_connect(&mut self) -> io::Result<Option<Nanos>> {
        let (Some(stream), Some(since)) = (&self.stream, self.connecting) else { return Ok(None) };
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                stream.set_nodelay(true)?;
                self.connecting = None;
                Ok(Some(clock::now().saturating_sub(since)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Connected, not connecting, and under its request allowance when connections churn.
    fn ready(&self, cap: u32) -> bool {
        self.stream.is_some() && self.connecting.is_none() && (cap == 0 || self.sent_here < cap)
    }
}

impl<'a> Generator<'a> {
    fn new(plan: &'a ThreadPlan, progress: &'a Progress, window: Window, poll: Poll, conns: Vec<Conn>) -> Self {
        let seconds = (window.end - window.measure_start).div_ceil(SECOND) as usize;
        let second_histogram = Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds");
        let report = ThreadReport {
            latency: KINDS.iter().map(|_| herd_core::stats::new_histogram()).collect(),
            timeline: vec![Second { completed: 0, errors: 0, latency: second_histogram }; seconds],
            errors: [0; Failure::ALL.len()],
            warmup_errors: 0,
            completed_in_window: 0,
            own_lag: herd_core::stats::new_histogram(),
            socket_wait: herd_core::stats::new_histogram(),
            connect: herd_core::stats::new_histogram(),
            fine: plan.steps.as_ref().map(|p| StepReport {
                steps: vec![
                    Step::new(plan.targets.len());
                    (window.end - window.measure_start).div_ceil(p.step) as usize
                ],
                conns: Vec::new(),
                completed_by_target: vec![0; plan.targets.len()],
            }),
        };
        let mut conns = conns;
        if let Some(p) = &plan.steps {
            for conn in &mut conns {
                conn.by_phase = vec![0; p.phase_ends.len()];
            }
        }
        let message = RequestSource::new(&plan.workload, SplitMix64::new(0)).message().to_vec();
        Self {
            plan,
            window,
            poll,
            conns,
            report,
            cursor: 0,
            unreported: (0, 0),
            progress,
            message,
            shown_errors: 0,
            timeout: clock::nanos(plan.timeout),
            second: Some((0, herd_core::stats::new_histogram())),
        }
    }

    fn event_loop(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let plan = self.plan;
        let timer = Timer::new()?;
        let mut schedule = plan.rate.clone().map(|rate| {
            let rng = SplitMix64::derive(plan.seed, 1 << 40 | plan.part);
            OpenLoopSchedule::slice(self.window.start, rate, plan.arrival, rng, plan.part, plan.parts)
        });
        if schedule.is_some() {
            self.poll.registry().register(
                &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&timer)),
                TIMER,
                Interest::READABLE,
            )?;
        } else {
            for c in 0..self.conns.len() {
                for _ in 0..plan.pipeline {
                    self.send(c, clock::now());
                }
                self.flush(c);
            }
        }
        let mut end = self.window.end;
        let mut events = Events::with_capacity(1024);
        // Connections given requests by this round of the schedule, flushed together after it.
        let mut to_flush = Vec::new();
        let mut next_housekeeping = clock::now();
        loop {
            let now = clock::now();
            if stop.load(Relaxed) && end > now {
                end = now;
            }
            if let Some(schedule) = &mut schedule {
                while schedule.peek() <= now && schedule.peek() < end {
                    let intended = schedule.advance();
                    if let Some(c) = self.next_conn().or_else(|| self.add_churn_conn(now)) {
                        let idle = self.conns[c].out_pos == self.conns[c].out.len();
                        self.send(c, intended);
                        if idle {
                            to_flush.push(c);
                        }
                    } else {
                        self.fail(Failure::NotSent, intended, now, None);
                    }
                }
                for c in to_flush.drain(..) {
                    self.flush(c);
                }
                if schedule.peek() < end {
                    timer.arm(schedule.peek())?;
                }
            }
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING;
                self.housekeeping(now);
                if now >= end && self.conns.iter().all(|c| c.pending.is_empty()) {
                    return Ok(());
                }
                if now >= end + self.timeout + HOUSEKEEPING {
                    return Ok(()); // housekeeping has failed everything older than the timeout
                }
            }
            let wait = Duration::from_nanos(next_housekeeping.saturating_sub(clock::now()));
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in &events {
                match event.token() {
                    TIMER => timer.clear(),
                    Token(c) if self.conns[c].connecting.is_some() => {
                        let closed = event.is_readable() || event.is_read_closed() || event.is_error();
                        self.connect_event(c, end, closed);
                    }
                    Token(c) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(c, end);
                        }
                        // Edge-triggered: a reply's event says writable too; only output left
                        // behind by a full socket needs it.
                        if event.is_writable() && self.conns[c].out_pos < self.conns[c].out.len() {
                            self.flush(c);
                        }
                    }
                }
            }
        }
    }

    /// The next connection that can take a request, round-robin: connected, and under its
    /// request allowance when connections churn.
    fn next_conn(&mut self) -> Option<usize> {
        let n = self.conns.len();
        let cap = self.plan.workload.requests_per_connection;
        for _ in 0..n {
            let c = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if self.conns[c].ready(cap) {
                return Some(c);
            }
        }
        None
    }

    /// An event on a connecting stream: established (a closed loop before `end` fills its
    /// pipeline; anything queued goes out; `readable`: the server already sent or closed, which is
    /// read now, since that edge will not come again), still connecting, or failed (what was
    /// queued on it was never sent).
    fn connect_event(&mut self, c: usize, end: Nanos, readable: bool) {
        match self.conns[c].finish_connect() {
            Ok(Some(took)) => {
                self.report.connect.saturating_record((took / MICROSECOND).max(1));
                let now = clock::now();
                if self.plan.rate.is_none() && now < end {
                    for _ in 0..self.plan.pipeline {
                        self.send(c, now);
                    }
                }
                self.flush(c);
                if readable {
                    self.read(c, end);
                }
            }
            Ok(None) => {}
            Err(_) => self.disconnect(c, Failure::NotSent, clock::now()),
        }
    }

    /// Connection churn in an open loop: when every connection is busy, arrivals do not wait for
    /// one (that would be coordinated omission); a new connection is opened, up to 16× the plan,
    /// and the request waits on it until it is established (a new client connects, then asks).
    fn add_churn_conn(&mut self, now: Nanos) -> Option<usize> {
        let plan = self.plan;
        if plan.workload.requests_per_connection == 0 || self.conns.len() >= plan.conns.len() * 16 {
            return None;
        }
        let c = self.conns.len();
        let target = c % plan.targets.len();
        let stream_number = (plan.index as u64) << 32 | c as u64;
        let source = RequestSource::new(&plan.workload, SplitMix64::derive(plan.seed ^ 0xC0FFEE, stream_number));
        self.conns.push(Conn::new(target, source, now));
        self.conns[c].bind = plan.source_for(c);
        self.reconnect(c, now);
        self.conns[c].stream.is_some().then_some(c)
    }

    /// Connection churn: a connection that has had all its requests answered is closed and
    /// replaced by a new one (a graceful close, not an error). True if it was.
    fn recycle_if_spent(&mut self, c: usize, now: Nanos) -> bool {
        let cap = self.plan.workload.requests_per_connection;
        let conn = &mut self.conns[c];
        if cap == 0 || conn.sent_here < cap || !conn.pending.is_empty() {
            return false;
        }
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.in_start = 0;
        conn.in_end = 0;
        conn.out.clear();
        conn.out_pos = 0;
        conn.unwritten.clear();
        conn.blocked = false;
        if now < self.window.end {
            self.reconnect(c, now);
        }
        true
    }

    fn send(&mut self, c: usize, intended: Nanos) {
        let conn = &mut self.conns[c];
        conn.sent_here += 1;
        let wall = || Timestamp::from_system_time(SystemTime::now());
        let (kind, expect) = conn.source.write_next(&mut conn.out, wall);
        conn.pending.push_back(Pending { kind, expect, intended });
        if self.plan.rate.is_none() {
            return; // a closed loop has no schedule to keep
        }
        let measured = intended >= self.window.measure_start && intended < self.window.end;
        let mut u = Unwritten { end: conn.out.len(), intended, attempt: None, measured };
        if conn.blocked || conn.connecting.is_some() {
            // The generator is ready; the socket is not.
            record_attempt(&mut u, clock::now(), &mut self.report.own_lag);
        }
        conn.unwritten.push_back(u);
    }

    /// Writes what the socket takes. Send lag: requests not tried before are tried now (their own
    /// lateness ends here); each request whose last byte leaves has its socket wait recorded.
    fn flush(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let Some(stream) = &mut conn.stream else { return };
        if conn.connecting.is_some() {
            return; // written once established
        }
        if conn.unwritten.back().is_some_and(|u| u.attempt.is_none()) {
            let start = clock::now();
            for u in conn.unwritten.iter_mut().rev().take_while(|u| u.attempt.is_none()) {
                record_attempt(u, start, &mut self.report.own_lag);
            }
        }
        while conn.out_pos < conn.out.len() {
            match stream.write(&conn.out[conn.out_pos..]) {
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.disconnect(c, Failure::Disconnect, clock::now()),
            }
            let now = if conn.unwritten.is_empty() { continue } else { clock::now() };
            while let Some(u) = conn.unwritten.front().filter(|u| u.end <= conn.out_pos) {
                if let (true, Some(attempt)) = (u.measured, u.attempt) {
                    self.report.socket_wait.saturating_record(micros_between(attempt, now).max(1));
                }
                conn.unwritten.pop_front();
            }
        }
        conn.blocked = false;
        conn.out.clear();
        conn.out_pos = 0;
    }

    /// Reads what is there and checks every complete reply.
    fn read(&mut self, c: usize, end: Nanos) {
        loop {
            let conn = &mut self.conns[c];
            let Some(stream) = &mut conn.stream else { return };
            if conn.in_start == conn.in_end {
                (conn.in_start, conn.in_end) = (0, 0); // every reply taken: the usual case, no copy
            } else if conn.in_start > 0 && conn.inbuf.len() - conn.in_end < READ_ROOM {
                conn.inbuf.copy_within(conn.in_start..conn.in_end, 0);
                conn.in_end -= conn.in_start;
                conn.in_start = 0;
            }
            if conn.inbuf.len() - conn.in_end < READ_ROOM {
                if conn.inbuf.len() >= MAX_REPLY {
                    return self.disconnect(c, Failure::WrongReply, clock::now());
                }
                let grown = conn.inbuf.len() * 2;
                conn.inbuf.resize(grown, 0);
            }
            let space = conn.inbuf.len() - conn.in_end;
            let n = match stream.read(&mut conn.inbuf[conn.in_end..]) {
                Ok(0) => return self.disconnect(c, Failure::Disconnect, clock::now()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.disconnect(c, Failure::Disconnect, clock::now()),
            };
            conn.in_end += n;
            let now = clock::now();
            if !self.take_replies(c, now, end) {
                return self.disconnect(c, Failure::WrongReply, now);
            }
            if n < space {
                return; // a short read drained the socket
            }
        }
    }

    /// Checks and records every complete reply in the buffer. False: the stream is out of step.
    fn take_replies(&mut self, c: usize, now: Nanos, end: Nanos) -> bool {
        let server = self.plan.targets[self.conns[c].target].name.as_deref();
        let closed_loop = self.plan.rate.is_none();
        loop {
            let conn = &mut self.conns[c];
            let buf = &conn.inbuf[conn.in_start..conn.in_end];
            if buf.is_empty() {
                return true;
            }
            let Some(head) = conn.pending.front() else {
                // Bytes nobody asked for: a reply too many. Counted, and the stream is out of step.
                self.fail(Failure::WrongReply, now, now, Some(c));
                return false;
            };
            let (len, verdict) = if matches!(head.expect, Expect::Echo) && buf.starts_with(&self.message) {
                // The reply expected, whole (the message is one line, its only newline last): what
                // framing and `check` would conclude, without scanning for the newline.
                (self.message.len(), Ok(()))
            } else {
                let Some(len) = reply_len(head.kind, buf) else { return true };
                (len, check(&buf[..len], &head.expect, server, &self.message))
            };
            if verdict.is_err() && self.shown_errors < self.plan.show_errors {
                self.shown_errors += 1;
                eprintln!(
                    "rejected reply ({:?}) from {}: {:?}\n  expected: {:?}",
                    verdict,
                    self.plan.targets[conn.target].addr,
                    String::from_utf8_lossy(&buf[..len]),
                    head.expect
                );
            }
            conn.in_start += len;
            let p = conn.pending.pop_front().expect("head exists");
            match verdict {
                Ok(()) => self.record(c, p.kind, p.intended, now),
                Err(Failure::WrongReply) => {
                    // A reply that does not answer its request means the stream is out of step:
                    // every later reply would be judged against the wrong request. Count this one
                    // and start the connection afresh.
                    self.fail(Failure::WrongReply, p.intended, now, Some(c));
                    self.disconnect(c, Failure::Disconnect, now);
                    return true;
                }
                Err(f) => self.fail(f, p.intended, now, Some(c)),
            }
            // A recycled connection was refilled by `reconnect` in a closed loop.
            let recycled = self.recycle_if_spent(c, now);
            if closed_loop && !recycled && now < end && self.conns[c].stream.is_some() {
                self.send(c, now);
                self.flush(c);
            }
        }
    }

    fn record(&mut self, c: usize, kind: Kind, intended: Nanos, now: Nanos) {
        let window = self.window;
        self.record_latency(kind, intended, now);
        if now >= window.measure_start && now < window.end {
            self.report.completed_in_window += 1;
            let s = ((now - window.measure_start) / SECOND) as usize;
            if let Some(second) = self.report.timeline.get_mut(s) {
                second.completed += 1;
            }
            if let (Some(fine), Some(plan)) = (&mut self.report.fine, &self.plan.steps) {
                let since = now - window.measure_start;
                let conn = &mut self.conns[c];
                if let Some(step) = fine.steps.get_mut((since / plan.step) as usize) {
                    step.completed_by_target[conn.target] += 1;
                }
                fine.completed_by_target[conn.target] += 1;
                if let Some(n) = plan.phase_ends.iter().position(|&e| since < e).and_then(|p| conn.by_phase.get_mut(p))
                {
                    *n += 1;
                }
            }
        }
        self.unreported.0 += 1;
    }

    /// Records `now − intended` in `kind`'s histogram if the request was intended in the window
    /// (answered, or timed out: a timeout goes in at no less than the timeout, and is counted as an
    /// error as well).
    fn record_latency(&mut self, kind: Kind, intended: Nanos, now: Nanos) {
        if intended >= self.window.measure_start {
            let micros = micros_between(intended, now).max(1);
            self.report.latency[kind.index()].saturating_record(micros);
            if let (Some(fine), Some(plan)) = (&mut self.report.fine, &self.plan.steps)
                && let Some(step) = now
                    .checked_sub(self.window.measure_start)
                    .and_then(|t| fine.steps.get_mut((t / plan.step) as usize))
            {
                step.latency.saturating_record(micros);
            }
        }
    }

    /// Counts a failed request (on connection `c`, if it had one). Like latency, errors belong to
    /// the window their request was intended in: warm-up failures are counted apart, never dropped.
    fn fail(&mut self, failure: Failure, intended: Nanos, now: Nanos, c: Option<usize>) {
        self.unreported.1 += 1;
        if intended < self.window.measure_start {
            self.report.warmup_errors += 1;
            return;
        }
        self.report.errors[failure.index()] += 1;
        if now >= self.window.measure_start {
            let s = ((now - self.window.measure_start) / SECOND) as usize;
            if let Some(second) = self.report.timeline.get_mut(s) {
                second.errors += 1;
            }
            if let (Some(fine), Some(plan)) = (&mut self.report.fine, &self.plan.steps)
                && let Some(step) = fine.steps.get_mut(((now - self.window.measure_start) / plan.step) as usize)
            {
                step.errors[failure.index()] += 1;
                if let Some(c) = c {
                    step.errors_by_target[self.conns[c].target] += 1;
                }
            }
        }
    }

    /// Fails everything in flight on `c` with `failure`, closes it, and schedules a reconnect.
    fn disconnect(&mut self, c: usize, failure: Failure, now: Nanos) {
        let conn = &mut self.conns[c];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        let lost: Vec<Pending> = conn.pending.drain(..).collect();
        // Nothing queued on a connection that never connected was sent.
        let never_sent = conn.connecting.take().is_some();
        conn.unwritten.clear();
        conn.blocked = false;
        conn.out.clear();
        conn.out_pos = 0;
        conn.in_start = 0;
        conn.in_end = 0;
        conn.retry_at = now + RECONNECT_AFTER;
        let timeout = self.timeout;
        for (i, p) in lost.into_iter().enumerate() {
            // The first request failed as `failure`; the others lost their connection, except
            // those that had also waited past the timeout themselves.
            let timed_out = failure == Failure::Timeout && now.saturating_sub(p.intended) > timeout;
            let f = if i == 0 || timed_out {
                failure
            } else if never_sent {
                Failure::NotSent
            } else {
                Failure::Disconnect
            };
            if f == Failure::Timeout {
                // A client waited at least this long: the percentiles must say so, not skip it.
                self.record_latency(p.kind, p.intended, now.max(p.intended + timeout));
            }
            self.fail(f, p.intended, now, Some(c));
        }
    }

    /// One attempt to bring connection `c` back: a non-blocking connect, finished by
    /// [`Self::connect_event`] (a closed loop refills its pipeline there).
    fn reconnect(&mut self, c: usize, now: Nanos) {
        let conn = &mut self.conns[c];
        conn.retry_at = now + RECONNECT_AFTER;
        let addr = self.plan.targets[conn.target].addr;
        if conn.start_connect(&self.poll, Token(c), addr).is_err() {
            if let Some(mut stream) = conn.stream.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            conn.connecting = None;
        }
    }

    /// Timeouts, reconnects, progress and the timeline's seconds, every few milliseconds.
    fn housekeeping(&mut self, now: Nanos) {
        let timeout = self.timeout;
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            if conn.pending.front().is_some_and(|p| now.saturating_sub(p.intended) > timeout) {
                self.disconnect(c, Failure::Timeout, now);
            } else if conn.connecting.is_some_and(|since| now.saturating_sub(since) > CONNECT_TIMEOUT) {
                self.disconnect(c, Failure::NotSent, now); // a connect that never completed
            }
            if self.conns[c].stream.is_none() && now >= self.conns[c].retry_at && now < self.window.end {
                self.reconnect(c, now);
            }
        }
        self.turn_seconds(now);
        let (done, errors) = std::mem::take(&mut self.unreported);
        self.progress.completed.fetch_add(done, Relaxed);
        self.progress.errors.fetch_add(errors, Relaxed);
    }

    /// When the window's current second has changed since the last look, the second that was
    /// open gets the latency the command histograms gained meanwhile (once a second, a few
    /// hundred microseconds of work, instead of a second histogram record per reply). The last
    /// second is closed at the first look after the window.
    fn turn_seconds(&mut self, now: Nanos) {
        // Before the window, or after its last second was closed: nothing to do.
        let Some((open, _)) = &self.second else { return };
        if now < self.window.measure_start {
            return;
        }
        let current = ((now - self.window.measure_start) / SECOND) as usize;
        if *open == current {
            return;
        }
        let mut total = herd_core::stats::new_histogram();
        for h in &self.report.latency {
            let _ = total.add(h);
        }
        if let Some((open, before)) = self.second.take()
            && let Some(second) = self.report.timeline.get_mut(open)
        {
            let mut gained = total.clone();
            let _ = gained.subtract(&before);
            for v in gained.iter_recorded() {
                second.latency.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        if current < self.report.timeline.len() {
            self.second = Some((current, total));
        }
    }
}
