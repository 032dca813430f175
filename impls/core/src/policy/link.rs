//! Flood links: one [`FloodLink`] per neighbour decides when to connect, what to send and what to drop.
//!
//! ```text
//!         retry due (an update arrives, or the idle timer)        connected          answer proves
//!  Down ─────────────────────────────────────────────► Connecting ─────────► Handshaking ─────► Up
//!   ▲   updates while down and no retry due: dropped       │ failed /            │ wrong, late    │ closed by peer,
//!   │                                                      │ timed out           │ or malformed   │ write error, or
//!   └──────────────────────────────────────────── Down ◄───┴─────────────────────┘◄───────────────┘ no progress for
//!                                                                                                    link_write_stall
//! ```
//!
//! On the wire a link opens with the herd handshake (see [`crate::auth`]), then carries AT lines;
//! after its one answer line the peer never sends on it:
//!
//! ```text
//! → PEER Alford 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
//! ← HERD Hamilton 6d1e08a4c3b5f7e29d0c1b3a5f7e9d2c 9c4f…(64 hex digits)
//! → AUTH 51a0…(64 hex digits)
//! → AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450
//! ```
//!
//! Without a herd key (`--insecure-herd`) the link is up once connected and sends `PEER Alford`
//! and the AT lines, as the CS131 protocol does.
//!
//! The queue toward a neighbour is bounded in bytes ([`Limits::link_queue_bytes`]), counting both
//! what waits here and what the driver has taken but the socket has not yet accepted; past it,
//! updates are dropped and counted, and the episode is logged once when it starts and once when it
//! ends. Old updates are never replayed after a reconnect: newer ones will follow. Updates queued
//! while connecting or handshaking go out once the link is up and are dropped if it fails; the
//! connect and the handshake together must finish within [`Limits::link_connect_timeout`].
//!
//! # Calling order (the driver: a thread, a task, or a reactor handler that owns the socket)
//! 1. [`FloodLink::poll_connect`]: if true, connect, then [`FloodLink::on_connected`] or
//!    [`FloodLink::on_connect_failed`].
//! 2. While connected ([`LinkState::Handshaking`] or [`LinkState::Up`]): [`FloodLink::poll_transmit`]
//!    appends bytes to the driver's buffer; after each write, [`FloodLink::consumed`] with the bytes
//!    the socket took.
//! 3. Wait until: woken (an update was queued, see [`FloodLinks::send`]), the socket is readable
//!    (read it and hand what the read returned to [`FloodLink::on_read`]: the handshake's answer
//!    arrives this way), writable (if bytes are left), or [`FloodLink::poll_timeout`] passes
//!    ([`FloodLink::on_timeout`]).
//! 4. After any call, if [`FloodLink::state`] is `Down`, drop the socket and anything left in the
//!    buffer. Repeat from 1.
//!
//! [`LinkSocket`] is steps 1, 2 and 4 for a driver that holds its link in one place (a task): it
//! keeps the socket and the buffer, and the driver keeps only how it connects and waits.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::{self, HerdKey, NONCE_BYTES, Names, Nonces, Role};
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
    /// Connected; the hello is sent and the neighbour's answer awaited (keyed herds only).
    Handshaking,
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
    me: String,
    peer: String,
    /// The herd key; `None` in an insecure herd (no handshake).
    key: Option<Arc<HerdKey>>,
    /// This attempt's nonce (keyed herds).
    nonce: [u8; NONCE_BYTES],
    /// Bytes of the hello, at the front of `pending`, not yet handed to the driver.
    hello_left: usize,
    /// The neighbour's answer so far, while handshaking.
    answer: Vec<u8>,
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
    refused: Arc<AtomicU64>,
    log: EventLog,
}

/// The longest handshake answer a link reads (a real one is 136 bytes).
const MAX_ANSWER: usize = 256;

impl FloodLink {
    /// A link from `me` to `peer`, down, created at `now`; with `key`, it proves membership of
    /// the herd before it sends any update.
    pub fn new(
        me: &str,
        peer: &str,
        key: Option<Arc<HerdKey>>,
        limits: &Limits,
        now: Instant,
        stats: &ServerStats,
        log: EventLog,
    ) -> Self {
        Self {
            me: me.to_owned(),
            peer: peer.to_owned(),
            key,
            nonce: [0; NONCE_BYTES],
            hello_left: 0,
            answer: Vec::new(),
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
            refused: Arc::clone(&stats.links_refused),
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
        if self.queued_bytes() + self.auth_owed() + line.len() > self.queue_bytes {
            return self.drop_updates(1, "queue full");
        }
        if let Some(dropped) = self.dropping.take() {
            self.log.event(Event::FloodsResumed { peer: self.peer.clone(), dropped });
        }
        if self.queued_bytes() == 0 {
            self.last_progress = now;
        }
        // Wake once per attempt and once per idle spell: later updates find the driver busy.
        // (While handshaking the driver is already awake, reading the answer.)
        let wake = started || (self.pending.is_empty() && self.state == LinkState::Up);
        self.pending.extend_from_slice(line);
        self.segments.push_back(Segment { len: line.len(), is_update: true });
        Queued::Yes { wake }
    }

    /// Bytes the handshake will still put ahead of the queued updates: the `AUTH` line, until the
    /// answer is in. Counted against the queue's bound from the start of an attempt, so that the
    /// bound holds once it is sent (the simulation found the queue 70 bytes over without this).
    fn auth_owed(&self) -> usize {
        match self.state {
            LinkState::Connecting | LinkState::Handshaking if self.key.is_some() => auth::AUTH_LINE_BYTES,
            _ => 0,
        }
    }

    /// True once per attempt: the driver should connect now.
    pub fn poll_connect(&mut self) -> bool {
        std::mem::take(&mut self.connect_requested)
    }

    /// The attempt connected: the hello may go. In an insecure herd the link is up, and the
    /// updates queued behind the hello go too; otherwise they wait for the neighbour's answer.
    pub fn on_connected(&mut self, now: Instant) {
        if self.state != LinkState::Connecting {
            return;
        }
        self.last_progress = now;
        if self.key.is_some() {
            self.state = LinkState::Handshaking;
        } else {
            self.go_up();
        }
    }

    fn go_up(&mut self) {
        self.state = LinkState::Up;
        self.hello_left = 0; // an insecure link hands its hello out with the updates
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
            LinkState::Connecting | LinkState::Handshaking => self.go_down(),
            LinkState::Up => {
                self.go_down();
                self.log.event(Event::LinkDown { peer: self.peer.clone(), reason: reason.to_owned() });
            }
        }
    }

    /// What a read of the link's socket returned (the bytes read, or the error). While handshaking
    /// the bytes are the neighbour's answer, checked once its line is complete. After it, peers
    /// never send on a flood link, so end of stream, any byte at all, or an error means the
    /// neighbour is gone: the link closes. A read that would block (a spurious readiness) or was
    /// interrupted changes nothing.
    pub fn on_read(&mut self, now: Instant, read: std::io::Result<&[u8]>) {
        let reason = match read {
            Ok([]) => "closed by peer".to_owned(),
            Ok(bytes) if self.state == LinkState::Handshaking => return self.on_answer(bytes),
            Ok(_) => "peer sent data on a flood link".to_owned(),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => return,
            Err(e) => e.to_string(),
        };
        self.on_closed(now, &reason);
    }

    /// Appends the bytes ready to send to `buf`: while handshaking, the hello; once up, everything.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) {
        if self.state == LinkState::Handshaking && self.hello_left > 0 {
            buf.extend(self.pending.drain(..self.hello_left));
            self.in_flight += std::mem::take(&mut self.hello_left);
            return;
        }
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
            LinkState::Connecting | LinkState::Handshaking => self.last_attempt.map(|t| t + self.connect_timeout),
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
            // Not a refusal: a hung or slow neighbour, treated like a connect that timed out.
            LinkState::Handshaking => self.go_down(),
            LinkState::Up => {
                let reason = format!("neighbour took no bytes for {:?}", self.write_stall);
                self.on_closed(now, &reason);
            }
        }
    }

    /// Checks the neighbour's answer once its line is complete; a proof that holds sends ours
    /// ahead of the queued updates and brings the link up.
    fn on_answer(&mut self, bytes: &[u8]) {
        let (line, rest) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &[][..]),
        };
        self.answer.extend_from_slice(line);
        if self.answer.len() > MAX_ANSWER {
            return self.refuse("handshake answer too long");
        }
        if line.len() == bytes.len() {
            return; // the line is not complete yet
        }
        if !rest.is_empty() {
            return self.refuse("peer sent data after its handshake answer");
        }
        let Some(key) = self.key.clone() else { return };
        let answer = std::mem::take(&mut self.answer);
        let Some(accept) = auth::Accept::parse(&answer) else {
            return self.refuse("malformed handshake answer");
        };
        if accept.name != self.peer {
            return self.refuse("the answer names another server");
        }
        let names = Names { opener: &self.me, acceptor: &self.peer };
        let nonces = Nonces { opener: self.nonce, acceptor: accept.nonce };
        if !key.verify(Role::Acceptor, names, &nonces, &accept.proof) {
            return self.refuse("the answer's proof does not match the herd key");
        }
        let auth = auth::auth_line(&key.proof(Role::Opener, names, &nonces));
        let at = self.segments.iter().take_while(|s| !s.is_update).count();
        self.segments.insert(at, Segment { len: auth.len(), is_update: false });
        self.pending.splice(0..0, auth);
        self.go_up();
    }

    /// The handshake failed: logged, counted, and the link goes down to retry later.
    fn refuse(&mut self, reason: &str) {
        self.refused.fetch_add(1, Relaxed);
        self.log.event(Event::LinkRefused {
            peer: self.peer.clone(),
            direction: Direction::Outbound,
            reason: reason.to_owned(),
        });
        self.go_down();
    }

    fn start_attempt(&mut self, now: Instant) {
        debug_assert!(self.segments.is_empty() && self.in_flight == 0);
        self.state = LinkState::Connecting;
        self.last_attempt = Some(now);
        self.connect_requested = true;
        self.nonce = if self.key.is_some() { auth::nonce() } else { [0; NONCE_BYTES] };
        let hello = auth::hello_line(&self.me, self.key.as_ref().map(|_| &self.nonce));
        self.hello_left = hello.len();
        self.segments.push_back(Segment { len: hello.len(), is_update: false });
        self.pending = hello;
        self.answer.clear();
    }

    fn go_down(&mut self) {
        let lost = self.segments.iter().filter(|s| s.is_update).count() as u64;
        self.state = LinkState::Down;
        self.connect_requested = false;
        self.pending.clear();
        self.segments.clear();
        self.in_flight = 0;
        self.front_done = 0;
        self.hello_left = 0;
        self.answer.clear();
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

/// The driver's half of a link: its socket, of the style's type `C`, and the bytes taken from the
/// machine that the socket has not yet accepted (so no lock is held across a write). Steps 1, 2
/// and 4 of the calling order, for a driver that holds the link in one place (a task, a thread);
/// the driver keeps how it connects and waits.
#[derive(Debug)]
pub struct LinkSocket<C> {
    socket: Option<C>,
    buf: Vec<u8>,
}

impl<C> Default for LinkSocket<C> {
    fn default() -> Self {
        Self { socket: None, buf: Vec::new() }
    }
}

impl<C> LinkSocket<C> {
    /// Acts on the machine's passed deadlines, lets go of the socket and its bytes once the link
    /// is down, and says whether to connect now: `Some(deadline)`, the attempt's last moment.
    pub fn poll<W>(&mut self, link: &SharedLink<W>, now: Instant) -> Option<Instant> {
        let mut machine = link.lock();
        machine.on_timeout(now);
        if machine.state() == LinkState::Down {
            self.socket = None;
            self.buf.clear();
        }
        if !machine.poll_connect() {
            return None;
        }
        machine.poll_timeout()
    }

    /// The attempt [`Self::poll`] asked for ended: with a connected socket, or `None` (failed or
    /// past its deadline).
    pub fn connected<W>(&mut self, link: &SharedLink<W>, now: Instant, socket: Option<C>) {
        let mut machine = link.lock();
        match socket {
            Some(socket) => {
                machine.on_connected(now);
                self.socket = Some(socket);
            }
            None => machine.on_connect_failed(now),
        }
    }

    /// Writes what the machine has to send through `write` (one non-blocking write: what the
    /// socket took, or `WouldBlock`) until the socket is full, telling the machine after each
    /// write. A failed write closes the link.
    pub fn transmit<W>(
        &mut self,
        link: &SharedLink<W>,
        now: Instant,
        mut write: impl FnMut(&C, &[u8]) -> io::Result<usize>,
    ) {
        let Some(socket) = &self.socket else { return };
        link.lock().poll_transmit(&mut self.buf);
        let failed = loop {
            if self.buf.is_empty() {
                return;
            }
            match write(socket, &self.buf) {
                Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => {
                    self.buf.drain(..n);
                    link.lock().consumed(n, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => break e,
            }
        };
        link.lock().on_closed(now, &failed.to_string());
        self.socket = None;
        self.buf.clear();
    }

    /// The socket has become readable: `read` (one non-blocking read into the buffer it is
    /// given) is tried and what it returned handed to the machine (an answer while handshaking;
    /// otherwise the neighbour is gone).
    pub fn on_readable<W>(
        &self,
        link: &SharedLink<W>,
        now: Instant,
        read: impl FnOnce(&C, &mut [u8]) -> io::Result<usize>,
    ) {
        let Some(socket) = &self.socket else { return };
        let mut bytes = [0_u8; 256];
        let result = read(socket, &mut bytes);
        link.lock().on_read(now, result.map(|n| &bytes[..n]));
    }

    /// The connected socket, to wait on.
    pub fn socket(&self) -> Option<&C> {
        self.socket.as_ref()
    }

    /// Bytes wait for the socket to take them: wait for it to become writable too.
    pub fn has_unsent(&self) -> bool {
        !self.buf.is_empty()
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
                machine: Mutex::new(FloodLink::new(
                    &options.name,
                    peer,
                    options.herd_key.clone(),
                    &options.limits,
                    now,
                    stats,
                    log.clone(),
                )),
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
            FloodLink::new("Alford", "Hamilton", None, limits, self.t0, &self.stats, EventLog::discard())
        }

        fn keyed_link(&self, key: &Arc<HerdKey>) -> FloodLink {
            let limits = Limits::default();
            FloodLink::new(
                "Alford",
                "Hamilton",
                Some(Arc::clone(key)),
                &limits,
                self.t0,
                &self.stats,
                EventLog::discard(),
            )
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
        link.on_read(f.at(103), Ok(&[]));
        assert_eq!((link.state(), f.dropped()), (LinkState::Down, 1), "end of stream: the queued update is lost");
        for (ms, read) in [(300, Ok(&b"abc"[..])), (500, Err(std::io::ErrorKind::ConnectionReset.into()))] {
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

    /// Hamilton's answer to the hello `Alford` just sent, made with `key`.
    fn answer_to(hello: &[u8], key: &HerdKey) -> Vec<u8> {
        let text = std::str::from_utf8(hello).expect("ascii");
        let nonce = text.trim_end().rsplit(' ').next().and_then(auth::decode_fixed).expect("a nonce");
        let nonces = Nonces { opener: nonce, acceptor: [7; NONCE_BYTES] };
        let names = Names { opener: "Alford", acceptor: "Hamilton" };
        auth::accept_line("Hamilton", &nonces.acceptor, &key.proof(Role::Acceptor, names, &nonces))
    }

    fn herd_key(hex: &str) -> Arc<HerdKey> {
        Arc::new(HerdKey::from_hex(hex).expect("valid"))
    }

    #[test]
    fn keyed_link_sends_only_the_hello_until_the_answer_proves_the_key() {
        let f = Fixture::new();
        let key = herd_key("00112233445566778899aabbccddeeff");
        let mut link = f.keyed_link(&key);
        link.on_flood(AT, f.at(0));
        assert!(link.poll_connect());
        link.on_connected(f.at(1));
        assert_eq!(link.state(), LinkState::Handshaking);
        let hello = transmit(&mut link);
        assert!(hello.starts_with(b"PEER Alford ") && hello.len() == 12 + 32 + 1, "{hello:?}");
        assert!(transmit(&mut link).is_empty(), "updates wait for the answer");
        link.consumed(hello.len(), f.at(2));
        let answer = answer_to(&hello, &key);
        // The answer may arrive in pieces.
        link.on_read(f.at(3), Ok(&answer[..40]));
        assert_eq!(link.state(), LinkState::Handshaking);
        link.on_read(f.at(4), Ok(&answer[40..]));
        assert_eq!(link.state(), LinkState::Up);
        let rest = transmit(&mut link);
        assert!(rest.starts_with(b"AUTH ") && rest.ends_with(AT), "the proof, then the update");
        assert_eq!(rest.len(), 5 + 64 + 1 + AT.len());
        link.consumed(rest.len(), f.at(5));
        assert_eq!((f.out(), f.dropped(), link.queued_bytes()), (1, 0, 0));
        // Each attempt has its own nonce.
        link.on_read(f.at(6), Ok(&[]));
        link.on_timeout(f.at(200));
        assert!(link.poll_connect());
        link.on_connected(f.at(201));
        assert_ne!(transmit(&mut link), hello);
    }

    #[test]
    fn keyed_link_refuses_a_wrong_late_or_chatty_answer() {
        let f = Fixture::new();
        let key = herd_key("00112233445566778899aabbccddeeff");
        let connect = |link: &mut FloodLink, ms: u64| {
            link.on_timeout(f.at(ms));
            assert!(link.poll_connect());
            link.on_connected(f.at(ms));
            transmit(link)
        };
        let mut link = f.keyed_link(&key);
        type Answer<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
        let cases: [(&str, Answer<'_>); 4] = [
            ("another herd's key", &|hello| answer_to(hello, &herd_key("ffeeddccbbaa99887766554433221100"))),
            ("data after the answer", &|hello| [answer_to(hello, &key), AT.to_vec()].concat()),
            ("another server's name", &|hello| {
                String::from_utf8_lossy(&answer_to(hello, &key)).replace("Hamilton", "Hamiltoo").into_bytes()
            }),
            ("a line without end", &|_| vec![b'x'; 300]),
        ];
        let mut ms = 100;
        for (i, (case, answer)) in cases.iter().enumerate() {
            let hello = connect(&mut link, ms);
            link.on_flood(AT, f.at(ms));
            link.on_read(f.at(ms + 1), Ok(&answer(&hello)));
            assert_eq!(link.state(), LinkState::Down, "{case}");
            assert_eq!(f.stats.links_refused.load(Relaxed), i as u64 + 1, "{case}: counted");
            ms += 100;
        }
        assert_eq!(f.dropped(), 4, "each attempt's queued update is lost");
        // No answer at all (a hung neighbour): given up at the connect deadline, like a connect.
        connect(&mut link, ms);
        assert_eq!(link.poll_timeout(), Some(f.at(ms + 500)));
        link.on_timeout(f.at(ms + 500));
        assert_eq!((link.state(), f.stats.links_refused.load(Relaxed)), (LinkState::Down, 4));
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

    /// A fake socket: takes at most `room` bytes per write, or fails with `fail`.
    struct FakeSocket {
        room: usize,
        fail: Option<std::io::ErrorKind>,
    }

    fn write_to(taken: &mut Vec<u8>) -> impl FnMut(&FakeSocket, &[u8]) -> std::io::Result<usize> + '_ {
        |socket, bytes| {
            if let Some(kind) = socket.fail {
                return Err(kind.into());
            }
            let n = bytes.len().min(socket.room);
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
    }

    /// Alford's links, with one neighbour: Hamilton.
    fn one_neighbour(f: &Fixture) -> FloodLinks<CountingWaker> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let neighbours = vec![("Hamilton".into(), addr)];
        let options = ServeOptions { name: "Alford".into(), neighbours, ..ServeOptions::default() };
        FloodLinks::new(&options, f.t0, &f.stats, &EventLog::discard(), |_| CountingWaker::default())
    }

    #[test]
    fn link_socket_connects_when_asked_writes_what_fits_and_lets_go_when_down() {
        let f = Fixture::new();
        let links = one_neighbour(&f);
        let link = links.get(0).expect("one neighbour");
        let mut socket = LinkSocket::default();
        assert_eq!(socket.poll(link, f.at(1)), None, "nothing to send, no retry due: no connect");
        links.send(&Flood { line: AT.into(), to: vec![0] }, f.at(2));
        assert_eq!(socket.poll(link, f.at(2)), Some(f.at(502)), "connect now, by the connect timeout");
        socket.connected(link, f.at(3), Some(FakeSocket { room: 20, fail: None }));
        let mut taken = Vec::new();
        socket.transmit(link, f.at(4), write_to(&mut taken));
        // The fake takes 20 bytes a write and never fills: everything goes, in order.
        assert_eq!(taken, [&b"PEER Alford\n"[..], AT].concat());
        assert!(!socket.has_unsent());
        assert_eq!(f.out(), 1);

        // A full socket keeps the rest for later; a failed write closes the link and drops it all.
        links.send(&Flood { line: AT.into(), to: vec![0] }, f.at(5));
        socket.connected(link, f.at(5), Some(FakeSocket { room: 0, fail: None }));
        socket.transmit(link, f.at(5), write_to(&mut taken));
        assert!(socket.has_unsent() && socket.socket().is_some(), "would block: bytes wait, the link stays up");
        socket.connected(link, f.at(6), Some(FakeSocket { room: 0, fail: Some(std::io::ErrorKind::BrokenPipe) }));
        socket.transmit(link, f.at(6), write_to(&mut taken));
        assert!(socket.socket().is_none() && !socket.has_unsent());
        assert_eq!((link.lock().state(), f.dropped()), (LinkState::Down, 1));
        assert_eq!(socket.poll(link, f.at(7)), None, "down: the retry waits for its interval");
    }

    #[test]
    fn link_socket_hands_what_a_read_returned_to_the_machine() {
        let f = Fixture::new();
        let links = one_neighbour(&f);
        let link = links.get(0).expect("one neighbour");
        let mut socket = LinkSocket::default();
        links.send(&Flood { line: AT.into(), to: vec![0] }, f.at(1));
        assert!(socket.poll(link, f.at(1)).is_some());
        socket.connected(link, f.at(2), Some(FakeSocket { room: 100, fail: None }));
        socket.on_readable(link, f.at(3), |_, _| Err(std::io::ErrorKind::WouldBlock.into()));
        assert_eq!(link.lock().state(), LinkState::Up, "spurious readiness changes nothing");
        socket.on_readable(link, f.at(4), |_, _| Ok(0));
        assert_eq!(link.lock().state(), LinkState::Down, "end of stream: the neighbour is gone");
        assert_eq!(socket.poll(link, f.at(5)), None);
        assert!(socket.socket().is_none(), "the next poll lets go of the socket");
    }
}
