//! The herd under simulation: five members, each herd-core's real machines — the [`Herd`] service
//! (store, flood decision, the acceptor's half of the handshake), its [`FloodLinks`] (the opener's
//! half, queues, retries, stalls), a [`LineFramer`] per connection and [`handle_line`], exactly as
//! every style drives them — joined by simulated byte streams, in one thread, in simulated time.
//! One seeded scheduler picks every step: which stream delivers how many bytes (partial reads and
//! writes, a socket buffer of random size), when time moves and by how much, and every fault:
//! links cut, partitions, a member hung (it reads and writes nothing) or crashed and restarted
//! empty, clients that send garbage, oversized lines, forged `AT` lines, and `PEER`/`AUTH` lines that
//! try to pass as a member. A failing schedule replays exactly from its seed (`HERD_SIM_SEED=N`).
//!
//! The checker, over every schedule:
//! - **bounds**: at every step, no link holds more than [`Limits::link_queue_bytes`];
//! - **authentication**: no member ever stores a location no client sent through a member (every
//!   forged line carries a location no client sends);
//! - **recovery**: once the faults stop (partitions healed, members restarted and woken), every
//!   link comes back up within [`RECOVER_WITHIN`] of simulated time, and an update sent then
//!   reaches every member within [`CONVERGE_WITHIN`], each holding exactly that newest location;
//! - **answers**: every IAMAT from a client gets its `AT` reply, every forged or garbage line a `?`.
//!
//! What the herd does not promise today is measured, not asserted: how many (member, client) pairs
//! hold the client's newest location after the faults and before that last round. A member that
//! restarts comes back empty and learns a client only from its next update, and updates dropped
//! while a link was down are never replayed (issue 34, part 3).
//!
//! Why not a library: `turmoil` simulates a network under tokio's API and `stateright` checks
//! actor models; herd-core is sans-IO — the caller already moves the bytes and passes the time — so
//! the machines run unchanged under a forty-line scheduler, with nothing between them and the
//! schedule. Runs: `cargo test` explores [`DEFAULT_SEEDS`] schedules; `scripts/sim.sh N` explores N
//! (release build); `HERD_SIM_SEED=N` replays one and prints its steps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use herd_core::policy::{FloodLinks, Handled, LinkState, LinkWaker, handle_line};
use herd_core::service::{Reply, Service};
use herd_core::{EventLog, Frame, Herd, HerdConfig, HerdKey, Limits, LineFramer, Link, ServeOptions, Timestamp};

/// The standard herd: a ring.
const MEMBERS: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];
const RING: [(usize, usize); 5] = [(0, 2), (0, 4), (1, 3), (1, 4), (2, 3)];
const CLIENTS: usize = 12;
/// Schedules `cargo test` explores.
const DEFAULT_SEEDS: u64 = 2_000;
/// Steps of faults and traffic in one schedule.
const STEPS: usize = 400;
/// After the faults stop, every link is up again within this much simulated time: the retry
/// interval and the connect deadline, many times over.
const RECOVER_WITHIN: Duration = Duration::from_secs(10);
/// An update sent once every link is up reaches every member within this much simulated time.
const CONVERGE_WITHIN: Duration = Duration::from_secs(2);
/// Lines no client sends carry this location, so that a stored one is a forgery that got in.
const FORGED_LOCATION: &str = "+00.000000+000.000000";
/// The line bound of the simulated members, small so that oversized lines are cheap to send.
const MAX_LINE: usize = 512;
/// The bound of a link's queue, small so that a hung neighbour fills it within a schedule.
const QUEUE_BYTES: usize = 600;

struct NoWake;
impl LinkWaker for NoWake {
    fn wake(&self) {}
}

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One member: the machines a style drives, and what the simulation knows of its process.
struct Member {
    herd: Herd,
    links: FloodLinks<NoWake>,
    /// Neighbours, as member indices, in the order of the herd's neighbour list.
    neighbours: Vec<usize>,
    /// Not crashed.
    running: bool,
    /// Reads and writes nothing until then.
    hung_until: Option<Duration>,
    /// The connection each outgoing link drives.
    conn: Vec<Option<usize>>,
}

/// One flood-link connection, opener `from` (its link `link`) to acceptor `to`.
struct Conn {
    from: usize,
    link: usize,
    to: usize,
    open: bool,
    /// Written by the opener, not yet read by the acceptor; at most `capacity` bytes.
    forward: VecDeque<u8>,
    capacity: usize,
    /// Taken from the opener's link machine, not yet written (the driver's buffer).
    unsent: Vec<u8>,
    /// Written by the acceptor (its handshake answer), not yet read by the opener.
    back: VecDeque<u8>,
    /// The acceptor's framer and protocol state for this connection.
    framer: LineFramer,
    state: Link,
}

/// What the clients sent: every location a client gave, and its newest.
#[derive(Default)]
struct Sent {
    every: BTreeSet<(usize, String, String)>,
    newest: BTreeMap<usize, (String, String)>,
}

struct World {
    rng: Rng,
    key: Arc<HerdKey>,
    limits: Limits,
    base: Instant,
    epoch: SystemTime,
    now: Duration,
    members: Vec<Member>,
    conns: Vec<Conn>,
    /// Member pairs that cannot reach each other.
    partitioned: BTreeSet<(usize, usize)>,
    sent: Sent,
    /// Client time of the next update, per client: increasing, so the newest is the last sent.
    clock: u64,
    trace: Option<Vec<String>>,
}

/// A broken promise, with the step it broke at.
type Violation = String;

impl World {
    fn new(seed: u64, trace: bool) -> Self {
        let limits = Limits { max_line: MAX_LINE, link_queue_bytes: QUEUE_BYTES, ..Limits::default() };
        let mut world = Self {
            rng: Rng(seed),
            key: Arc::new(HerdKey::generate()),
            limits,
            base: Instant::now(),
            epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            now: Duration::ZERO,
            members: Vec::new(),
            conns: Vec::new(),
            partitioned: BTreeSet::new(),
            sent: Sent::default(),
            clock: 1_700_000_000,
            trace: trace.then(Vec::new),
        };
        world.members = (0..MEMBERS.len()).map(|m| world.fresh_member(m)).collect();
        world
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn timestamp(&self) -> Timestamp {
        Timestamp::from_system_time(self.epoch + self.now)
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>9.3}s {}", self.now.as_secs_f64(), what()));
        }
    }

    /// Member `m` as it starts: an empty store, every link down.
    fn fresh_member(&self, m: usize) -> Member {
        let neighbours: Vec<usize> =
            RING.iter().filter_map(|&(a, b)| (a == m).then_some(b).or((b == m).then_some(a))).collect();
        let names: Vec<&str> = neighbours.iter().map(|&n| MEMBERS[n]).collect();
        let herd = Herd::new(HerdConfig::new(MEMBERS[m], &names, Some(Arc::clone(&self.key))), EventLog::discard());
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let options = ServeOptions {
            name: MEMBERS[m].to_owned(),
            neighbours: names.iter().map(|n| ((*n).to_owned(), addr)).collect(),
            limits: self.limits.clone(),
            herd_key: Some(Arc::clone(&self.key)),
            ..ServeOptions::default()
        };
        let links = FloodLinks::new(&options, self.instant(), herd.stats(), herd.log(), |_| NoWake);
        let conn = vec![None; neighbours.len()];
        Member { herd, links, neighbours, running: true, hung_until: None, conn }
    }

    fn responsive(&self, m: usize) -> bool {
        self.members[m].running && self.members[m].hung_until.is_none_or(|t| self.now >= t)
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.members[b].running && !self.partitioned.contains(&(a.min(b), a.max(b)))
    }

    /// Closes connection `c`; its opener's link hears the end of stream unless `quiet` (the opener
    /// itself is gone).
    fn close(&mut self, c: usize, quiet: bool) {
        let now = self.instant();
        let conn = &mut self.conns[c];
        if !conn.open {
            return;
        }
        conn.open = false;
        let (from, link) = (conn.from, conn.link);
        if self.members[from].conn[link] == Some(c) {
            self.members[from].conn[link] = None;
            if !quiet {
                self.members[from].links.get(link).expect("a link").lock().on_read(now, Ok(&[]));
            }
        }
    }

    /// Drives member `m`'s link `i` as a style's driver does: connect when asked, hand its bytes to
    /// the socket as far as the socket takes them, and drop the socket once the link is down.
    fn drive(&mut self, m: usize, i: usize) {
        let now = self.instant();
        let to = self.members[m].neighbours[i];
        let connect = self.members[m].links.get(i).expect("a link").lock().poll_connect();
        if connect {
            if let Some(old) = self.members[m].conn[i] {
                self.close(old, true);
            }
            if self.reachable(m, to) {
                let capacity = 64 + self.rng.below(1024);
                self.conns.push(Conn {
                    from: m,
                    link: i,
                    to,
                    open: true,
                    forward: VecDeque::new(),
                    capacity,
                    unsent: Vec::new(),
                    back: VecDeque::new(),
                    framer: LineFramer::new(MAX_LINE),
                    state: Link::default(),
                });
                self.members[m].conn[i] = Some(self.conns.len() - 1);
                self.members[m].links.get(i).expect("a link").lock().on_connected(now);
                self.note(|| format!("{} connects to {}", MEMBERS[m], MEMBERS[to]));
            } else {
                self.members[m].links.get(i).expect("a link").lock().on_connect_failed(now);
            }
        }
        let Some(c) = self.members[m].conn[i] else { return };
        let mut link = self.members[m].links.get(i).expect("a link").lock();
        if link.state() == LinkState::Down {
            drop(link);
            self.close(c, true);
            return;
        }
        let conn = &mut self.conns[c];
        link.poll_transmit(&mut conn.unsent);
        let room = conn.capacity.saturating_sub(conn.forward.len());
        let n = conn.unsent.len().min(room);
        conn.forward.extend(conn.unsent.drain(..n));
        link.consumed(n, now);
    }

    /// Delivers up to `max` bytes of connection `c` to its acceptor, which handles every complete
    /// line as a style does.
    fn deliver(&mut self, c: usize, max: usize) -> Result<(), Violation> {
        let to = self.conns[c].to;
        if !self.conns[c].open || !self.responsive(to) {
            return Ok(());
        }
        let n = self.conns[c].forward.len().min(max);
        let bytes: Vec<u8> = self.conns[c].forward.drain(..n).collect();
        self.conns[c].framer.push(&bytes);
        let mut lines = Vec::new();
        let mut oversized = false;
        while let Some(frame) = self.conns[c].framer.next_frame() {
            match frame {
                Frame::Line(l) => lines.push(l.to_vec()),
                Frame::Oversized(_) => oversized = true,
            }
        }
        let (received, now) = (self.timestamp(), self.instant());
        for line in lines {
            let member = &self.members[to];
            let mut state = std::mem::take(&mut self.conns[c].state);
            let handled = handle_line(&member.herd, &member.links, None::<&()>, &line, &mut state, received, || now);
            self.conns[c].state = state;
            if let Handled::Reply(reply) = handled {
                self.conns[c].back.extend(reply);
            }
        }
        if oversized {
            return Err(format!("a member sent a line longer than {MAX_LINE} bytes on a flood link"));
        }
        Ok(())
    }

    /// Delivers what the acceptor wrote (the handshake answer) to the opener's link.
    fn deliver_back(&mut self, c: usize, max: usize) {
        let (from, link) = (self.conns[c].from, self.conns[c].link);
        if !self.conns[c].open || !self.responsive(from) || self.members[from].conn[link] != Some(c) {
            return;
        }
        let n = self.conns[c].back.len().min(max);
        if n == 0 {
            return;
        }
        let bytes: Vec<u8> = self.conns[c].back.drain(..n).collect();
        let now = self.instant();
        self.members[from].links.get(link).expect("a link").lock().on_read(now, Ok(&bytes));
    }

    /// One client line at member `m`, on a connection of its own; returns the reply.
    fn client_line(&mut self, m: usize, line: &[u8]) -> Vec<u8> {
        let (received, now) = (self.timestamp(), self.instant());
        let member = &self.members[m];
        let mut state = Link::default();
        match handle_line(&member.herd, &member.links, None::<&()>, line, &mut state, received, || now) {
            Handled::Reply(reply) => reply,
            Handled::Nothing => Vec::new(),
            Handled::Fetch(_) => unreachable!("no places backend"),
        }
    }

    /// A client's update through member `m`; its reply must be the `AT` line.
    fn update(&mut self, client: usize, m: usize) -> Result<(), Violation> {
        self.clock += 1 + self.rng.below(3) as u64;
        let location = format!("+{:09.6}-{:010.6}", 10.0 + client as f64, 100.0 + (self.clock % 1000) as f64 / 10.0);
        let time = format!("{}.{:09}", self.clock, self.rng.below(1_000_000_000));
        let line = format!("IAMAT client{client} {location} {time}");
        let reply = self.client_line(m, line.as_bytes());
        if !reply.starts_with(format!("AT {} ", MEMBERS[m]).as_bytes()) {
            return Err(format!("{line} at {}: replied {}", MEMBERS[m], String::from_utf8_lossy(&reply)));
        }
        self.sent.every.insert((client, location.clone(), time.clone()));
        self.sent.newest.insert(client, (location, time));
        Ok(())
    }

    /// A line no member may act on, from a client connection: a forged `AT`, a `PEER`/`AUTH`
    /// impersonation followed by an `AT`, garbage, or an oversized line. Each gets a `?` (or, for
    /// the hello, the handshake answer) and stores nothing.
    fn hostile(&mut self, m: usize) -> Result<(), Violation> {
        let client = self.rng.below(CLIENTS);
        let forged = format!("AT {} +0.1 client{client} {FORGED_LOCATION} 1999999999.0", MEMBERS[self.rng.below(5)]);
        let kind = self.rng.below(4);
        let lines: Vec<Vec<u8>> = match kind {
            0 => vec![forged.into_bytes()],
            1 => vec![
                format!("PEER {} {}", MEMBERS[self.members[m].neighbours[0]], "00".repeat(16)).into_bytes(),
                format!("AUTH {}", "ab".repeat(32)).into_bytes(),
                forged.into_bytes(),
            ],
            2 => vec![b"IAMAT x \x00\xff garbage".to_vec(), b"WHATSAT".to_vec(), Vec::new()],
            _ => vec![vec![b'A'; MAX_LINE * 2]],
        };
        let (received, now) = (self.timestamp(), self.instant());
        let member = &self.members[m];
        let mut state = Link::default();
        for line in &lines {
            let handled = handle_line(&member.herd, &member.links, None::<&()>, line, &mut state, received, || now);
            // Refused: a `?`, the handshake's answer, or nothing; never an `AT` (stored) or a fetch.
            let accepted = match &handled {
                Handled::Reply(r) => r.starts_with(b"AT "),
                Handled::Nothing => false,
                Handled::Fetch(_) => true,
            };
            if accepted {
                return Err(format!("a hostile line at {} was not refused: {handled:?}", MEMBERS[m]));
            }
        }
        self.note(|| format!("hostile lines ({kind}) at {}", MEMBERS[m]));
        Ok(())
    }

    /// What member `m` holds for `client`: its location and time, read through the protocol.
    fn held(&self, m: usize, client: usize) -> Option<(String, String)> {
        let line = format!("WHATSAT client{client} 10 5");
        let outcome = self.members[m].herd.handle(line.as_bytes(), &mut Link::default(), self.timestamp());
        let Reply::Places(lookup) = outcome.reply else { return None };
        let words: Vec<&str> = lookup.at_line.split_whitespace().collect();
        (words.len() == 6).then(|| (words[4].to_owned(), words[5].to_owned()))
    }

    /// Time moves by `dt`; every link's deadlines are served and every running member's links
    /// driven.
    fn advance(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.instant();
        for (m, name) in MEMBERS.iter().enumerate() {
            if self.members[m].hung_until.is_some_and(|t| self.now >= t) {
                self.members[m].hung_until = None;
                self.note(|| format!("{name} wakes"));
            }
            if !self.responsive(m) {
                continue;
            }
            for i in 0..self.members[m].neighbours.len() {
                self.members[m].links.get(i).expect("a link").lock().on_timeout(now);
                self.drive(m, i);
            }
        }
    }

    /// Every link's queue within its bound.
    fn check_bounds(&self) -> Result<(), Violation> {
        for (m, member) in self.members.iter().enumerate() {
            for i in 0..member.neighbours.len() {
                let queued = member.links.get(i).expect("a link").lock().queued_bytes();
                if queued > self.limits.link_queue_bytes {
                    return Err(format!("{}'s link {i} holds {queued} bytes", MEMBERS[m]));
                }
            }
        }
        Ok(())
    }

    /// Every byte in flight delivered and every link driven until nothing moves, `rounds` times
    /// with `dt` between them.
    fn settle(&mut self, rounds: usize, dt: Duration) -> Result<(), Violation> {
        for _ in 0..rounds {
            for c in 0..self.conns.len() {
                self.deliver(c, usize::MAX)?;
                self.deliver_back(c, usize::MAX);
            }
            self.advance(dt);
        }
        Ok(())
    }

    fn all_links_up(&self) -> bool {
        self.members
            .iter()
            .all(|m| (0..m.neighbours.len()).all(|i| m.links.get(i).expect("a link").lock().state() == LinkState::Up))
    }

    /// One step of faults and traffic, picked by the seed.
    fn step(&mut self) -> Result<(), Violation> {
        let roll = self.rng.below(100);
        match roll {
            0..=29 => {
                let (client, m) = (self.rng.below(CLIENTS), self.rng.below(MEMBERS.len()));
                if self.responsive(m) {
                    self.update(client, m)?;
                }
            }
            30..=54 if !self.conns.is_empty() => {
                let c = self.rng.below(self.conns.len());
                let max = 1 + self.rng.below(600);
                self.deliver(c, max)?;
                self.deliver_back(c, max);
            }
            55..=74 => {
                let dt = Duration::from_millis(1 + self.rng.below(250) as u64);
                self.advance(dt);
            }
            75..=79 => {
                let m = self.rng.below(MEMBERS.len());
                if self.responsive(m) {
                    self.hostile(m)?;
                }
            }
            80..=83 if !self.conns.is_empty() => {
                let c = self.rng.below(self.conns.len());
                if self.conns[c].open {
                    let (from, to) = (self.conns[c].from, self.conns[c].to);
                    self.note(|| format!("cut {} → {}", MEMBERS[from], MEMBERS[to]));
                    self.close(c, false);
                }
            }
            84..=86 => {
                let (a, b) = RING[self.rng.below(RING.len())];
                if self.partitioned.insert((a, b)) {
                    self.note(|| format!("partition {} | {}", MEMBERS[a], MEMBERS[b]));
                    let cut: Vec<usize> = (0..self.conns.len())
                        .filter(|&c| {
                            let k = &self.conns[c];
                            k.open && (k.from.min(k.to), k.from.max(k.to)) == (a, b)
                        })
                        .collect();
                    for c in cut {
                        self.close(c, false);
                    }
                } else {
                    self.partitioned.remove(&(a, b));
                    self.note(|| format!("heal {} | {}", MEMBERS[a], MEMBERS[b]));
                }
            }
            87..=89 => {
                let m = self.rng.below(MEMBERS.len());
                let until = self.now + Duration::from_millis(100 + self.rng.below(3000) as u64);
                self.members[m].hung_until = Some(until);
                self.note(|| format!("{} hangs", MEMBERS[m]));
            }
            90..=92 => {
                let m = self.rng.below(MEMBERS.len());
                self.crash_or_restart(m);
            }
            _ => {
                let m = self.rng.below(MEMBERS.len());
                if self.responsive(m) {
                    for i in 0..self.members[m].neighbours.len() {
                        self.drive(m, i);
                    }
                }
            }
        }
        self.check_bounds()
    }

    /// A running member crashes (every connection it held ends); a crashed one restarts empty.
    fn crash_or_restart(&mut self, m: usize) {
        if self.members[m].running {
            self.members[m].running = false;
            self.note(|| format!("{} crashes", MEMBERS[m]));
            for c in 0..self.conns.len() {
                if self.conns[c].open && (self.conns[c].from == m || self.conns[c].to == m) {
                    let opener_gone = self.conns[c].from == m;
                    self.close(c, opener_gone);
                }
            }
        } else {
            self.members[m] = self.fresh_member(m);
            self.note(|| format!("{} restarts empty", MEMBERS[m]));
        }
    }

    /// Ends the faults: partitions healed, crashed members restarted, hung ones woken.
    fn heal(&mut self) {
        self.partitioned.clear();
        for m in 0..self.members.len() {
            if !self.members[m].running {
                self.crash_or_restart(m);
            }
            self.members[m].hung_until = None;
        }
        self.note(|| "faults end".to_owned());
    }

    /// (member, client) pairs where the member holds the client's newest location, and all pairs.
    fn agreement(&self) -> (usize, usize) {
        let mut agree = 0;
        for m in 0..self.members.len() {
            for (client, newest) in &self.sent.newest {
                agree += usize::from(self.held(m, *client).as_ref() == Some(newest));
            }
        }
        (agree, self.members.len() * self.sent.newest.len())
    }

    /// Nothing stored that no client sent.
    fn check_authentic(&self) -> Result<(), Violation> {
        for (m, name) in MEMBERS.iter().enumerate() {
            for client in 0..CLIENTS {
                let Some((location, time)) = self.held(m, client) else { continue };
                if !self.sent.every.contains(&(client, location.clone(), time.clone())) {
                    return Err(format!("{name} holds client{client} at {location} {time}, which no client sent"));
                }
            }
        }
        Ok(())
    }
}

/// What one schedule showed.
struct Run {
    /// (member, client) pairs holding the newest location after the faults, and all pairs.
    agreement: (usize, usize),
    simulated: Duration,
}

/// Runs the schedule of `seed`: faults and traffic, then recovery and a last round of updates.
fn run(seed: u64, trace: bool) -> (Result<Run, Violation>, Vec<String>) {
    let mut world = World::new(seed, trace);
    let result = (|| {
        for step in 0..STEPS {
            world.step().map_err(|v| format!("step {step}: {v}"))?;
            if step % 50 == 49 {
                world.check_authentic().map_err(|v| format!("step {step}: {v}"))?;
            }
        }
        world.heal();
        let healed_at = world.now;
        while !world.all_links_up() {
            if world.now - healed_at > RECOVER_WITHIN {
                return Err(format!("links still down {RECOVER_WITHIN:?} after the faults ended"));
            }
            world.settle(1, Duration::from_millis(20))?;
        }
        world.settle(5, Duration::from_millis(20))?;
        world.check_authentic()?;
        let agreement = world.agreement();
        // The last round: every client updates once, through a random member, 20 ms apart (a burst
        // past a link's queue is dropped by rule, which is not what this checks).
        for client in 0..CLIENTS {
            let m = world.rng.below(MEMBERS.len());
            world.update(client, m)?;
            world.settle(1, Duration::from_millis(20))?;
        }
        let sent_at = world.now;
        world.settle((CONVERGE_WITHIN.as_millis() / 20) as usize, Duration::from_millis(20))?;
        for (m, name) in MEMBERS.iter().enumerate() {
            for client in 0..CLIENTS {
                let newest = world.sent.newest.get(&client).cloned();
                let held = world.held(m, client);
                if held != newest {
                    return Err(format!(
                        "{} holds {held:?} for client{client}, not the newest {newest:?}, {:?} after it was sent",
                        name,
                        world.now - sent_at
                    ));
                }
            }
        }
        world.check_authentic()?;
        Ok(Run { agreement, simulated: world.now })
    })();
    (result, world.trace.unwrap_or_default())
}

fn seeds() -> u64 {
    std::env::var("HERD_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEEDS)
}

#[test]
fn every_seeded_schedule_keeps_the_herds_promises() {
    if let Some(seed) = std::env::var("HERD_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let (result, trace) = run(seed, true);
        for line in trace {
            eprintln!("{line}");
        }
        if let Err(v) = result {
            panic!("seed {seed}: {v}");
        }
        return;
    }
    let started = std::time::Instant::now();
    let (mut agree, mut pairs, mut simulated) = (0, 0, Duration::ZERO);
    let n = seeds();
    for seed in 0..n {
        match run(seed, false).0 {
            Ok(r) => {
                agree += r.agreement.0;
                pairs += r.agreement.1;
                simulated += r.simulated;
            }
            Err(v) => panic!(
                "seed {seed}: {v}\nreplay it: HERD_SIM_SEED={seed} cargo test -p herd-core --test simulation -- --nocapture"
            ),
        }
    }
    eprintln!(
        "{n} schedules, {:.0} s simulated in {:.1} s; after the faults, before the last round, {agree} of {pairs} \
         (member, client) pairs ({:.1} %) held the client's newest location",
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        100.0 * agree as f64 / pairs.max(1) as f64
    );
}

/// The checker fails on what it exists for: a member that stored a forged location, or one that
/// never heard an update, is caught (the checks' own defects planted in a world).
#[test]
fn the_checker_catches_a_forgery_and_a_lost_update() {
    let mut world = World::new(7, false);
    world.update(3, 0).expect("an update");
    // A forged AT stored as if from an authenticated link: the authentication check must see it.
    let mut link = Link::default();
    let hello = format!("PEER {} {}", MEMBERS[2], "00".repeat(16));
    let _ = world.members[0].herd.handle(hello.as_bytes(), &mut link, world.timestamp());
    assert!(world.check_authentic().is_ok(), "nothing forged yet");
    let mut insecure = World::new(7, false);
    let names: Vec<&str> = insecure.members[0].neighbours.iter().map(|&n| MEMBERS[n]).collect();
    insecure.members[0].herd = Herd::new(HerdConfig::new(MEMBERS[0], &names, None), EventLog::discard());
    let forged = format!("AT Welsh +0.1 client3 {FORGED_LOCATION} 1999999999.0");
    let _ = insecure.members[0].herd.handle(forged.as_bytes(), &mut Link::default(), insecure.timestamp());
    let caught = insecure.check_authentic().expect_err("a forged location stored");
    assert!(caught.contains(FORGED_LOCATION), "{caught}");
    // Without any delivery the update is at one member only: the agreement counts it.
    let (agree, pairs) = world.agreement();
    assert_eq!((agree, pairs), (1, MEMBERS.len()), "one member of five holds it");
}

/// Seeds the simulator failed on, replayed: each names the bug it found and the fix.
///
/// - 305: a link's queue held 605 bytes against a bound of 600 — the `AUTH` line, spliced in ahead
///   of the updates when the handshake's answer arrived, was never counted against the bound.
///   Fixed in `FloodLink::on_flood`, which counts it from the start of an attempt.
#[test]
fn seeds_that_found_bugs_replay_clean() {
    for seed in [305] {
        if let Err(v) = run(seed, false).0 {
            panic!("seed {seed}: {v}");
        }
    }
}
