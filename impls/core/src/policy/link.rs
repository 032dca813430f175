//! Flood links: one [`FloodLink`] per neighbour decides when to connect, what to send and what to drop.
//!
//! ```text
//!         retry due (an update arrives, or the idle timer)            connected
//!  Down ─────────────────────────────────────────────► Connecting ─────────────► Up
//!   ▲   updates while down and no retry due: dropped       │ failed / timed out    │ closed by peer,
//!   │                                                      ▼                       │ write error, or no
//!   └──────────────────────────────────────────────────── Down ◄──────────────────┘ progress for
//!                                                                                    link_write_stall
//! ```
//!
//! On the wire a link opens with the hello, then carries AT lines; peers never send on it:
//!
//! ```text
//! PEER Alford\n
//! AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450\n
//! ```
//!
//! The queue toward a neighbour is bounded in bytes ([`Limits::link_queue_bytes`]), counting both
//! what waits here and what the driver has taken but the socket has not yet accepted; past it,
//! updates are dropped and counted, and the episode is logged once when it starts and once when it
//! ends. Old updates are never replayed after a reconnect: newer ones will follow. Updates queued
//! while connecting go out once the link is up and are dropped if the attempt fails.
//!
//! # Calling order (the driver: a thread, a task, or a reactor handler that owns the socket)
//! 1. [`FloodLink::poll_connect`]: if true, connect, then [`FloodLink::on_connected`] or
//!    [`FloodLink::on_connect_failed`].
//! 2. While [`LinkState::Up`]: [`FloodLink::poll_transmit`] appends bytes to the driver's buffer;
//!    after each write, [`FloodLink::consumed`] with the bytes the socket took.
//! 3. Wait until: woken (an update was queued, see [`FloodLinks::send`]), the socket is readable
//!    (read it and hand the result to [`FloodLink::on_read`]), writable (if bytes are left), or
//!    [`FloodLink::poll_timeout`] passes ([`FloodLink::on_timeout`]).
//! 4. After any call, if [`FloodLink::state`] is no longer what the driver's socket is for (it went
//!    `Down`), drop the socket and anything left in the buffer. Repeat from 1.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::log::{Direction, Event, EventLog};
use crate::options::ServeOptions;
use crate::policy::Limits;
use crate::service::Flood;
use crate::stats::ServerStats;

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Down,
    /// An attempt was started ([`FloodLink::poll_connect`] said so) and has not finished.
    Connecting,
    Up,
}

/// What became of one update given to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued. `wake`: the driver may be idle and must be woken to send it (or to connect).
    Yes { wake: bool },
    /// Dropped and counted: the link is down with no retry due, or its queue is full.
    Dropped,
}

/// A run of bytes in the queue: the hello (not an update) or one update line.
#[derive(Debug, Clone, Copy)]
struct Segment {
    len: usize,
    is_update: bool,
}

/// One neighbour's link. See the module docs for the calling order.
#[derive(Debug)]
pub struct FloodLink {
    peer: String,
    hello: Vec<u8>,
    retry: Duration,
    connect_timeout: Duration,
    queue_bytes: usize,
    write_stall: Duration,
    state: LinkState,
    /// An attempt was started and the driver has not been told yet.
    connect_requested: bool,
    /// The first idle retry is one interval after creation: the herd's members start together, and
    /// an attempt at time zero would mostly fail and then hold the next one back.
    created: Instant,
    last_attempt: Option<Instant>,
    /// Bytes not yet handed to the driver.
    pending: Vec<u8>,
    /// Bytes handed to the driver, not yet taken by the socket.
    in_flight: usize,
    /// Every queued byte (in flight, then pending), segment by segment, oldest first.
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already taken by the socket.
    front_done: usize,
    /// When the socket last took bytes, or when bytes became owed to an idle link.
    last_progress: Instant,
    /// Updates dropped in the current episode (`None`: not dropping).
    dropping: Option<u64>,
    out: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    log: EventLog,
}

impl FloodLink {
    /// A link from `me` to `peer`, down, created at `now`.
    pub fn new(me: &str, peer: &str, limits: &Limits, now: Instant, stats: &ServerStats, log: EventLog) -> Self {
        Self {
            peer: peer.to_owned(),
            hello: format!("PEER {me}\n").into_bytes(),
            retry: limits.link_retry,
            connect_timeout: limits.link_connect_timeout,
            queue_bytes: limits.link_queue_bytes,
            write_stall: limits.link_write_stall,
            state: LinkState::Down,
            connect_requested: false,
            created: now,
            last_attempt: None,
            pending: Vec::new(),
            in_flight: 0,
            segments: VecDeque::new(),
            front_done: 0,
            last_progress: now,
            dropping: None,
            out: Arc::clone(&stats.floods_out),
            dropped: Arc::clone(&stats.floods_dropped),
            log,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Bytes owed to the neighbour: queued here or taken by the driver and not yet by the socket.
    pub fn queued_bytes(&self) -> usize {
        self.pending.len() + self.in_flight
    }

    /// Gives the link one update line (newline included).
    pub fn on_flood(&mut self, line: &[u8], now: Instant) -> Queued {
        let mut started = false;
        if self.state == LinkState::Down {
            if self.last_attempt.is_some_and(|t| now < t + self.retry) {
                return self.drop_updates(1, "neighbour down");
            }
            // Connect on demand; the update waits behind the hello.
            self.start_attempt(now);
            started = true;
        }
        if self.queued_bytes() + line.len() > self.queue_bytes {
            return self.drop_updates(1, "queue full");
        }
        if let Some(dropped) = self.dropping.take() {
            self.log.event(Event::FloodsResumed { peer: self.peer.clone(), dropped });
        }
        if self.queued_bytes() == 0 {
            self.last_progress = now;
        }
        // Wake once per attempt and once per idle spell: later updates find the driver busy.
        let wake = started || (self.pending.is_empty() && self.state == LinkState::Up);
        self.pending.extend_from_slice(line);
        self.segments.push_back(Segment { len: line.len(), is_update: true });
        Queued::Yes { wake }
    }

    /// True once per attempt: the driver should connect now.
    pub fn poll_connect(&mut self) -> bool {
        std::mem::take(&mut self.connect_requested)
    }

    /// The attempt succeeded: the hello and the updates queued behind it may go.
    pub fn on_connected(&mut self, now: Instant) {
        if self.state != LinkState::Connecting {
            return;
        }
        self.state = LinkState::Up;
        self.last_progress = now;
        self.log.event(Event::LinkUp { peer: self.peer.clone(), direction: Direction::Outbound });
    }

    /// The attempt failed (refused, unreachable, or the driver's own wait ran out).
    pub fn on_connect_failed(&mut self, _now: Instant) {
        if self.state == LinkState::Connecting {
            self.go_down();
        }
    }

    /// The connection ended: the peer closed it, sent anything (peers never send on a flood link),
    /// or a write failed. What was queued is dropped; the driver drops its socket and buffer.
    pub fn on_closed(&mut self, _now: Instant, reason: &str) {
        match self.state {
            LinkState::Down => {}
            LinkState::Connecting => self.go_down(),
            LinkState::Up => {
                self.go_down();
                self.log.event(Event::LinkDown { peer: self.peer.clone(), reason: reason.to_owned() });
            }
        }
    }

    /// What a read of the link's socket returned. Peers never send on a flood link, so end of
    /// stream, any byte at all, or an error means the neighbour is gone: the link closes. A read
    /// that would block (a spurious readiness) or was interrupted changes nothing.
    pub fn on_read(&mut self, now: Instant, read: std::io::Result<usize>) {
        let reason = match read {
            Ok(0) => "closed by peer".to_owned(),
            Ok(_) => "peer sent data on a flood link".to_owned(),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => return,
            Err(e) => e.to_string(),
        };
        self.on_closed(now, &reason);
    }

    /// Appends the bytes ready to send to `buf` (nothing unless the link is up).
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) {
        if self.state != LinkState::Up || self.pending.is_empty() {
            return;
        }
        self.in_flight += self.pending.len();
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.pending);
        } else {
            buf.append(&mut self.pending);
        }
    }

    /// The socket took `n` bytes of what [`Self::poll_transmit`] handed out.
    pub fn consumed(&mut self, n: usize, now: Instant) {
        let n = n.min(self.in_flight);
        self.in_flight -= n;
        if n > 0 {
            self.last_progress = now;
        }
        let mut left = n;
        let mut sent = 0;
        while let Some(front) = self.segments.front() {
            let rest = front.len - self.front_done;
            if left < rest {
                self.front_done += left;
                break;
            }
            left -= rest;
            sent += u64::from(front.is_update);
            self.front_done = 0;
            self.segments.pop_front();
        }
        self.out.fetch_add(sent, Relaxed);
    }

    /// When [`Self::on_timeout`] must be called: the next retry while down, the attempt's deadline
    /// while connecting, the stall deadline while up with bytes owed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LinkState::Down => Some(self.last_attempt.unwrap_or(self.created) + self.retry),
            LinkState::Connecting => self.last_attempt.map(|t| t + self.connect_timeout),
            LinkState::Up if self.queued_bytes() > 0 => Some(self.last_progress + self.write_stall),
            LinkState::Up => None,
        }
    }

    /// Acts on whichever deadline of [`Self::poll_timeout`] has passed (calling early is harmless).
    pub fn on_timeout(&mut self, now: Instant) {
        let Some(due) = self.poll_timeout() else { return };
        if now < due {
            return;
        }
        match self.state {
            LinkState::Down => self.start_attempt(now),
            LinkState::Connecting => self.go_down(),
            LinkState::Up => {
                let reason = format!("neighbour took no bytes for {:?}", self.write_stall);
                self.on_closed(now, &reason);
            }
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        debug_assert!(self.segments.is_empty() && self.in_flight == 0);
        self.state = LinkState::Connecting;
        self.last_attempt = Some(now);
        self.connect_requested = true;
        self.pending.clear();
        self.pending.extend_from_slice(&self.hello);
        self.segments.push_back(Segment { len: self.hello.len(), is_update: false });
    }

    fn go_down(&mut self) {
        let lost = self.segments.iter().filter(|s| s.is_update).count() as u64;
        self.state = LinkState::Down;
        self.connect_requested = false;
        self.pending.clear();
        self.segments.clear();
        self.in_flight = 0;
        self.front_done = 0;
        if lost > 0 {
            self.drop_updates(lost, "link lost");
        }
    }

    fn drop_updates(&mut self, n: u64, reason: &str) -> Queued {
        self.dropped.fetch_add(n, Relaxed);
        match &mut self.dropping {
            Some(count) => *count += n,
            None => {
                self.dropping = Some(n);
                self.log.event(Event::FloodsDropping { peer: self.peer.clone(), reason: reason.to_owned() });
            }
        }
        Queued::Dropped
    }
}

/// How a style wakes the driver of one link (a condition, a channel, a task notification, a
/// reactor's waker). Must not block.
pub trait LinkWaker: Send + Sync {
    fn wake(&self);
}

/// One link as shared between the threads that flood through it and its driver.
#[derive(Debug)]
pub struct SharedLink<W> {
    machine: Mutex<FloodLink>,
    pub waker: W,
}

impl<W> SharedLink<W> {
    /// The machine; held only for a call or two, never across I/O.
    pub fn lock(&self) -> MutexGuard<'_, FloodLink> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every neighbour's link, indexed like [`Flood::to`].
#[derive(Debug)]
pub struct FloodLinks<W> {
    links: Vec<SharedLink<W>>,
}

impl<W: LinkWaker> FloodLinks<W> {
    /// One link per neighbour of the server `options` describes, in the same order (so
    /// [`Flood::to`] indices address them); `waker(i)` makes the waker of neighbour `i`'s driver.
    pub fn new(
        options: &ServeOptions,
        now: Instant,
        stats: &ServerStats,
        log: &EventLog,
        mut waker: impl FnMut(usize) -> W,
    ) -> Self {
        let links = options
            .neighbours
            .iter()
            .enumerate()
            .map(|(i, (peer, _))| SharedLink {
                machine: Mutex::new(FloodLink::new(&options.name, peer, &options.limits, now, stats, log.clone())),
                waker: waker(i),
            })
            .collect();
        Self { links }
    }

    /// Queues `flood` on the links it names, waking the drivers that need it. Never waits on I/O.
    pub fn send(&self, flood: &Flood, now: Instant) {
        for &i in &flood.to {
            let Some(link) = self.links.get(i) else { continue };
            let queued = link.lock().on_flood(&flood.line, now);
            if queued == (Queued::Yes { wake: true }) {
                link.waker.wake();
            }
        }
    }

    pub fn get(&self, i: usize) -> Option<&SharedLink<W>> {
        self.links.get(i)
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &[u8] = b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5\n";
    const MS: Duration = Duration::from_millis(1);

    struct Fixture {
        t0: Instant,
        stats: ServerStats,
    }

    impl Fixture {
        fn new() -> Self {
            Self { t0: Instant::now(), stats: ServerStats::default() }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + MS * u32::try_from(ms).expect("small")
        }

        fn link(&self, limits: &Limits) -> FloodLink {
            FloodLink::new("Alford", "Hamilton", limits, self.t0, &self.stats, EventLog::discard())
        }

        fn dropped(&self) -> u64 {
            self.stats.floods_dropped.load(Relaxed)
        }

        fn out(&self) -> u64 {
            self.stats.floods_out.load(Relaxed)
        }
    }

    fn transmit(link: &mut FloodLink) -> Vec<u8> {
        let mut buf = Vec::new();
        link.poll_transmit(&mut buf);
        buf
    }

    #[test]
    fn first_update_connects_and_waits_behind_the_hello() {
        let f = Fixture::new();
        let mut link = f.link(&Limits::default());
        assert_eq!(link.poll_timeout(), Some(f.at(100)), "idle retry one interval after start");
        assert_eq!(link.on_flood(AT, f.at(1)), Queued::Yes { wake: true });
        assert!(link.poll_connect());
        assert!(!link.poll_connect(), "once per attempt");
        assert!(transmit(&mut link).is_empty(), "nothing goes before the link is up");
        link.on_connected(f.at(2));
        let bytes = transmit(&mut link);
        assert_eq!(bytes, [&b"PEER Alford\n"[..], AT].concat());
        link.consumed(5, f.at(3));
        assert_eq!(f.out(), 0);
        link.consumed(bytes.len() - 5, f.at(3));
        assert_eq!((f.out(), f.dropped(), link.queued_bytes()), (1, 0, 0));
        assert_eq!(link.poll_timeout(), None, "up and idle: nothing to wait for");
    }

    #[test]
    fn any_read_but_would_block_closes_the_link_and_loses_what_it_held() {
        let f = Fixture::new();
        let mut link = f.link(&Limits::default());
        let up = |link: &mut FloodLink, ms| {
            link.on_timeout(f.at(ms));
            assert!(link.poll_connect());
            link.on_connected(f.at(ms));
            let _ = transmit(link);
        };
        up(&mut link, 100);
        link.on_flood(AT, f.at(101));
        link.on_read(f.at(102), Err(std::io::ErrorKind::WouldBlock.into()));
        link.on_read(f.at(102), Err(std::io::ErrorKind::Interrupted.into()));
        assert_eq!(link.state(), LinkState::Up, "spurious readiness");
        link.on_read(f.at(103), Ok(0));
        assert_eq!((link.state(), f.dropped()), (LinkState::Down, 1), "end of stream: the queued update is lost");
        for (ms, read) in [(300, Ok(3)), (500, Err(std::io::ErrorKind::ConnectionReset.into()))] {
            up(&mut link, ms);
            link.on_read(f.at(ms + 1), read);
            assert_eq!(link.state(), LinkState::Down, "a peer never sends on a flood link, nor resets it");
        }
    }

    #[test]
    fn down_link_drops_until_a_retry_is_due_and_retries_when_idle() {
        let f = Fixture::new();
        let mut link = f.link(&Limits::default());
        link.on_flood(AT, f.at(0));
        assert!(link.poll_connect());
        link.on_connect_failed(f.at(1));
        assert_eq!((link.state(), f.dropped()), (LinkState::Down, 1), "the queued update is lost");
        assert_eq!(link.on_flood(AT, f.at(50)), Queued::Dropped, "retry not due yet");
        assert_eq!(f.dropped(), 2);
        assert_eq!(link.poll_timeout(), Some(f.at(100)));
        link.on_timeout(f.at(99));
        assert!(!link.poll_connect(), "too early");
        link.on_timeout(f.at(100));
        assert!(link.poll_connect(), "idle retry");
        assert_eq!(link.poll_timeout(), Some(f.at(600)), "connect deadline");
        link.on_timeout(f.at(600));
        assert_eq!(link.state(), LinkState::Down, "attempt abandoned");
        link.on_connected(f.at(601));
        assert_eq!(link.state(), LinkState::Down, "a late connect of an abandoned attempt is ignored");
    }

    #[test]
    fn queue_is_bounded_in_bytes_counting_what_the_driver_holds() {
        let f = Fixture::new();
        let limits = Limits { link_queue_bytes: 12 + 3 * AT.len(), ..Limits::default() };
        let mut link = f.link(&limits);
        link.on_flood(AT, f.at(0));
        link.poll_connect();
        link.on_connected(f.at(1));
        let held = transmit(&mut link);
        assert_eq!(held.len(), 12 + AT.len());
        assert_eq!(link.on_flood(AT, f.at(2)), Queued::Yes { wake: true }, "driver holds bytes: wake it anyway");
        assert_eq!(link.on_flood(AT, f.at(2)), Queued::Yes { wake: false });
        assert_eq!(link.on_flood(AT, f.at(2)), Queued::Dropped, "held + pending at the bound");
        link.consumed(held.len(), f.at(3));
        assert_eq!(link.on_flood(AT, f.at(3)), Queued::Yes { wake: false });
        assert_eq!((f.out(), f.dropped()), (1, 1));
    }

    #[test]
    fn a_neighbour_that_takes_nothing_is_dropped_after_the_stall_and_reconnected() {
        let f = Fixture::new();
        let mut link = f.link(&Limits::default());
        link.on_flood(AT, f.at(0));
        link.poll_connect();
        link.on_connected(f.at(0));
        let held = transmit(&mut link);
        link.consumed(held.len() - 10, f.at(1000));
        assert_eq!(link.poll_timeout(), Some(f.at(6000)), "stall clock restarts on progress");
        link.on_timeout(f.at(6000));
        assert_eq!((link.state(), f.dropped(), f.out()), (LinkState::Down, 1, 0), "partly sent update is lost");
        link.on_timeout(f.at(6000));
        assert!(link.poll_connect(), "a retry is due at once: the last attempt was long ago");
    }

    #[test]
    fn closed_link_drops_its_queue_and_starts_over_with_the_hello() {
        let f = Fixture::new();
        let mut link = f.link(&Limits::default());
        link.on_flood(AT, f.at(0));
        link.poll_connect();
        link.on_connected(f.at(0));
        link.on_flood(AT, f.at(0));
        link.on_closed(f.at(200), "closed by peer");
        assert_eq!((f.dropped(), link.queued_bytes()), (2, 0));
        assert_eq!(link.on_flood(AT, f.at(200)), Queued::Yes { wake: true });
        assert!(link.poll_connect());
        link.on_connected(f.at(201));
        assert!(transmit(&mut link).starts_with(b"PEER Alford\n"));
    }

    #[derive(Debug, Default)]
    struct CountingWaker(AtomicU64);

    impl LinkWaker for CountingWaker {
        fn wake(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn links_send_to_the_named_neighbours_and_wake_their_drivers() {
        let f = Fixture::new();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let options = ServeOptions {
            name: "Alford".into(),
            neighbours: vec![("Hamilton".into(), addr), ("Welsh".into(), addr)],
            ..ServeOptions::default()
        };
        let links = FloodLinks::new(&options, f.t0, &f.stats, &EventLog::discard(), |_| CountingWaker::default());
        let flood = Flood { line: AT.into(), to: vec![1] };
        links.send(&flood, f.at(1));
        links.send(&flood, f.at(1));
        let woken = |i: usize| links.get(i).map(|l| l.waker.0.load(Relaxed));
        assert_eq!((woken(0), woken(1)), (Some(0), Some(1)), "once for the connect request");
        assert_eq!(links.get(1).map(|l| l.lock().queued_bytes()), Some(12 + 2 * AT.len()));
    }
}
