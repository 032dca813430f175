//! A user-space WAN link: a TCP relay that delays what it forwards.
//!
//! One [`Relay`] stands for one directed herd link (or one member's client path). It listens on an
//! address of its own; every connection it accepts is joined to a fresh connection to its target,
//! and each direction is pumped by a thread of its own:
//!
//! ```text
//!  opener ──► relay listener ─┬─ pump (delay, jitter, loss) ──► target
//!                             └─ pump (delay, jitter, loss) ◄──
//! ```
//!
//! A pump reads what arrived as a chunk, stamps it with a release time (arrival + delay + jitter,
//! never earlier than the chunk before it, so bytes keep their order as TCP's would), queues it
//! (bounded in bytes: a full queue stops reading, which is TCP's back-pressure), and writes it when
//! its time comes. Loss on a TCP stream is not lost bytes but late ones: a chunk is "lost" with the
//! probability that any of its segments would be, and then delivered when TCP would have
//! retransmitted it — everything behind it in that direction waits too (head-of-line blocking):
//!
//! - if more data follows it, the receiver's SACKs reveal the loss: the chunk is retransmitted
//!   1.25 round trips after the next chunk was sent (a round trip for the SACK, a quarter for
//!   RACK's reordering window) and arrives a one-way delay later ([`RECOVERY_RTTS`]);
//! - if nothing follows (a tail loss), it waits for a retransmission timeout: Linux's minimum, 200
//!   ms, plus a round trip ([`tail_hold`]).
//!
//! The round trip is taken as twice this direction's delay (links are symmetric here).
//! Connections are never dropped by the relay.
//!
//! Waiting uses `ppoll` with a nanosecond timeout (socket receive timeouts would round to the
//! kernel's tick, up to 4 ms here). What the relay itself adds is measured by [`measure_overhead`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::base::rng::SplitMix64;
use herd_record::wan::Overhead;

/// The most a pump reads at once.
const CHUNK: usize = 64 * 1024;
/// The most a pump holds before it stops reading (per direction of a connection).
pub const QUEUE_BYTES: usize = 1 << 20;
/// A TCP segment's payload on these links (1500-byte MTU less IPv4 and TCP headers with
/// timestamps), for the chance that a chunk lost a segment.
const SEGMENT: usize = 1448;
/// Linux's minimum retransmission timeout (`TCP_RTO_MIN`).
const RTO_MIN: Duration = Duration::from_millis(200);
/// How often an idle pump looks at the stop flag.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// How long the relay waits for its target to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What one direction of a link does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// One-way delay.
    pub delay: Duration,
    /// Each chunk's delay is `delay` plus a uniform draw from `[-jitter, +jitter]` (at least zero),
    /// and never releases before the chunk ahead of it.
    pub jitter: Duration,
    /// Probability that a segment is lost (0 to 1).
    pub loss: f64,
}

impl Shape {
    pub const NONE: Shape = Shape { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0 };
}

/// How long a lost chunk with nothing behind it is held back: a retransmission timeout, which Linux
/// keeps at least 200 ms above the smoothed round trip (≈ `RTO_MIN` + 2 × the one-way delay).
pub fn tail_hold(delay: Duration) -> Duration {
    RTO_MIN + 2 * delay
}

/// Round trips from the sending of the chunk after a lost one to the retransmission of the lost
/// one: the SACK's way back, and RACK's reordering window of a quarter round trip.
pub const RECOVERY_RTTS: f64 = 1.25;

/// What a relay did, summed over its connections.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub connections: AtomicU64,
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    /// Chunks held back as lost.
    pub held: AtomicU64,
    /// CPU time (user + system) of the relay's finished threads, in nanoseconds.
    pub cpu_ns: AtomicU64,
    /// Connections the relay accepted but could not join to its target.
    pub target_refused: AtomicU64,
}

/// One relay: a listener and the pumps of the connections it accepted. Dropping it stops them.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen` and forwards each accepted connection to `target`: `shape` on the way
    /// there, `back` on the way back. `seed` fixes the jitter and loss draws; `stats` is shared by
    /// the relays of one herd.
    pub fn start(
        name: &str,
        listen: SocketAddr,
        target: SocketAddr,
        (shape, back): (Shape, Shape),
        seed: u64,
        stats: Arc<RelayStats>,
    ) -> io::Result<Self> {
        let listener = Arc::new(TcpListener::bind(listen)?);
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (listener, stop, threads) = (Arc::clone(&listener), Arc::clone(&stop), Arc::clone(&threads));
            let name = name.to_owned();
            std::thread::Builder::new().name(format!("relay-{name}")).spawn(move || {
                let mut n = 0u64;
                for incoming in listener.incoming() {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let Ok(opener) = incoming else { continue };
                    n += 1;
                    stats.connections.fetch_add(1, Relaxed);
                    let Ok(far) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
                        // As if the target were down: the opener sees its connection close.
                        stats.target_refused.fetch_add(1, Relaxed);
                        continue;
                    };
                    let pumps = join(&opener, &far, (shape, back), seed ^ n.wrapping_mul(0x9E37_79B9), &stop, &stats);
                    match pumps {
                        Ok(handles) => threads.lock().unwrap_or_else(|e| e.into_inner()).extend(handles),
                        Err(e) => eprintln!("relay {name}: {e}"),
                    }
                }
            })?
        };
        Ok(Self { addr, listener, stop, threads, acceptor: Some(acceptor) })
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends every pump (what they still hold is dropped) and joins their threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wakes the blocked accept (Linux: accept on a shut-down listener fails at once).
        // SAFETY: shutdown on a descriptor the listener owns and keeps open.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the two pumps of one relayed connection.
fn join(
    opener: &TcpStream,
    far: &TcpStream,
    (shape, back): (Shape, Shape),
    seed: u64,
    stop: &Arc<AtomicBool>,
    stats: &Arc<RelayStats>,
) -> io::Result<Vec<JoinHandle<()>>> {
    for s in [opener, far] {
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(IDLE_WAKE))?;
    }
    let mut handles = Vec::new();
    for (from, to, shape, stream) in [(opener, far, shape, 0), (far, opener, back, 1)] {
        let mut pump = Pump {
            from: from.try_clone()?,
            to: to.try_clone()?,
            shape,
            rng: SplitMix64::derive(seed, stream),
            stop: Arc::clone(stop),
            stats: Arc::clone(stats),
        };
        handles.push(std::thread::Builder::new().name("relay-pump".into()).spawn(move || {
            if pump.run().is_err() {
                // One side failed: end both directions, as a broken path would.
                let _ = pump.from.shutdown(Shutdown::Both);
                let _ = pump.to.shutdown(Shutdown::Both);
            }
            pump.stats.cpu_ns.fetch_add(thread_cpu_ns(), Relaxed);
        })?);
    }
    Ok(handles)
}

/// One direction of one relayed connection.
struct Pump {
    from: TcpStream,
    to: TcpStream,
    shape: Shape,
    rng: SplitMix64,
    stop: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
}

/// Bytes waiting for their release time.
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
    /// Lost, and no chunk has followed it yet (so its due time is a tail loss's).
    lost_tail: bool,
}

impl Pump {
    fn run(&mut self) -> io::Result<()> {
        let mut queue: VecDeque<Chunk> = VecDeque::new();
        let mut queued = 0usize;
        let mut eof = false;
        let mut buf = vec![0u8; CHUNK];
        while !self.stop.load(Relaxed) {
            let now = Instant::now();
            while queue.front().is_some_and(|c| c.due <= now) {
                let chunk = queue.pop_front().expect("a front chunk");
                self.write_all(&chunk.bytes)?;
                queued -= chunk.bytes.len();
            }
            if eof && queue.is_empty() {
                let _ = self.to.shutdown(Shutdown::Write);
                return Ok(());
            }
            let now = Instant::now();
            let wait = queue.front().map_or(IDLE_WAKE, |c| c.due.saturating_duration_since(now)).min(IDLE_WAKE);
            let can_read = !eof && queued < QUEUE_BYTES;
            if !wait_readable(can_read.then_some(&self.from), wait)? {
                continue;
            }
            let n = match self.from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                eof = true;
                continue;
            }
            let arrived = Instant::now();
            // Data behind a lost chunk reveals the loss: it is retransmitted sooner than a tail.
            let rtt = 2 * self.shape.delay;
            for lost in queue.iter_mut().filter(|c| c.lost_tail) {
                let recovered = arrived + rtt.mul_f64(RECOVERY_RTTS) + self.shape.delay;
                lost.due = lost.due.min(recovered);
                lost.lost_tail = false;
            }
            let (due, lost_tail) = self.release_time(arrived, n);
            // Released first in, first out: a chunk never overtakes the one ahead of it.
            queue.push_back(Chunk { due, bytes: buf[..n].to_vec(), lost_tail });
            queued += n;
            self.stats.chunks.fetch_add(1, Relaxed);
            self.stats.bytes.fetch_add(n as u64, Relaxed);
        }
        Ok(())
    }

    /// When a chunk of `len` bytes that arrived at `arrived` is due (before keeping order), and
    /// whether it was lost.
    fn release_time(&mut self, arrived: Instant, len: usize) -> (Instant, bool) {
        let Shape { delay, jitter, loss } = self.shape;
        let mut due = arrived + delay;
        if !jitter.is_zero() {
            let offset = (self.rng.next_f64() * 2.0 - 1.0) * jitter.as_secs_f64();
            due = if offset >= 0.0 {
                due + Duration::from_secs_f64(offset)
            } else {
                due.checked_sub(Duration::from_secs_f64(-offset)).unwrap_or(arrived).max(arrived)
            };
        }
        if loss > 0.0 {
            let segments = len.div_ceil(SEGMENT) as i32;
            let lost = 1.0 - (1.0 - loss).powi(segments);
            if self.rng.next_f64() < lost {
                self.stats.held.fetch_add(1, Relaxed);
                return (due + tail_hold(delay), true);
            }
        }
        (due, false)
    }

    /// Writes all of `bytes`, looking at the stop flag while the receiver does not read.
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.to.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    if self.stop.load(Relaxed) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Waits up to `wait` (nanosecond precision) for `stream` to be readable; with no stream, just
/// sleeps. True if it is readable (or closed, or failed: the read says which).
fn wait_readable(stream: Option<&TcpStream>, wait: Duration) -> io::Result<bool> {
    let ts = libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as libc::c_long };
    let mut fd = libc::pollfd { fd: stream.map_or(-1, AsRawFd::as_raw_fd), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own; a negative fd is ignored by ppoll, which then only sleeps.
    let r = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(r > 0 && stream.is_some())
}

/// The calling thread's CPU time so far (user + system), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Measures [`Overhead`] with `round_trips` round trips on each path (loopback only), after a
/// tenth as many unmeasured ones.
pub fn measure_overhead(round_trips: u64) -> io::Result<Overhead> {
    let echo = TcpListener::bind("127.0.0.1:0")?;
    let echo_addr = echo.local_addr()?;
    let echo_thread = std::thread::Builder::new().name("relay-echo".into()).spawn(move || {
        let serve = |mut s: TcpStream| {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let Ok((s, _)) = echo.accept() else { return };
                scope.spawn(move || serve(s));
            }
        });
    })?;
    let stats = Arc::new(RelayStats::default());
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let mut relay = Relay::start("overhead", listen, echo_addr, (Shape::NONE, Shape::NONE), 1, Arc::clone(&stats))?;
    let connect = |addr: SocketAddr| -> io::Result<TcpStream> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(s)
    };
    let (mut direct_path, mut relayed_path) = (connect(echo_addr)?, connect(relay.addr())?);
    let round_trip = |s: &mut TcpStream| -> io::Result<f64> {
        let (msg, mut back) = ([7u8; 64], [0u8; 64]);
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    let (mut direct, mut relayed) = (Vec::new(), Vec::new());
    let warm = round_trips / 10;
    for i in 0..warm + round_trips {
        let (d, r) = (round_trip(&mut direct_path)?, round_trip(&mut relayed_path)?);
        if i >= warm {
            direct.push(d);
            relayed.push(r);
        }
    }
    drop((direct_path, relayed_path));
    relay.stop();
    let _ = echo_thread.join();
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    Ok(Overhead {
        round_trips,
        direct_p50_us: pct(&mut direct, 0.5),
        direct_p99_us: pct(&mut direct, 0.99),
        relayed_p50_us: pct(&mut relayed, 0.5),
        relayed_p99_us: pct(&mut relayed, 0.99),
        relay_cpu_us_per_round_trip: stats.cpu_ns.load(Relaxed) as f64 / 1e3 / (warm + round_trips) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let _ = io::copy(&mut &stream, &mut &stream);
                });
            }
        });
        addr
    }

    fn relay_to(target: SocketAddr, shape: Shape) -> (Relay, Arc<RelayStats>) {
        let stats = Arc::new(RelayStats::default());
        let listen = "127.0.0.1:0".parse().expect("literal");
        (Relay::start("test", listen, target, (shape, shape), 7, Arc::clone(&stats)).expect("relay"), stats)
    }

    #[test]
    fn delays_each_direction_and_keeps_every_byte_in_order() {
        let delay = Duration::from_millis(15);
        let (mut relay, stats) = relay_to(echo_server(), Shape { delay, jitter: Duration::from_millis(10), loss: 0.0 });
        let mut s = TcpStream::connect(relay.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let t = Instant::now();
        let writer = {
            let (mut w, sent) = (s.try_clone().expect("clone"), sent.clone());
            std::thread::spawn(move || {
                for part in sent.chunks(977) {
                    w.write_all(part).expect("write");
                }
            })
        };
        let mut back = vec![0u8; sent.len()];
        s.read_exact(&mut back[..1]).expect("first byte");
        let first = t.elapsed();
        s.read_exact(&mut back[1..]).expect("the rest");
        writer.join().expect("writer");
        assert!(first >= 2 * (delay - Duration::from_millis(10)), "there and back: {first:?}");
        assert!(back == sent, "every byte, in order, through jitter");
        drop(s);
        relay.stop();
        assert!(stats.chunks.load(Relaxed) >= 2 && stats.held.load(Relaxed) == 0);
    }

    #[test]
    fn a_round_trip_takes_at_least_twice_the_delay() {
        let delay = Duration::from_millis(10);
        let (_relay, _) = relay_to(echo_server(), Shape { delay, jitter: Duration::ZERO, loss: 0.0 });
        let mut s = TcpStream::connect(_relay.addr()).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        for _ in 0..5 {
            let t = Instant::now();
            s.write_all(b"ping\n").expect("write");
            let mut back = [0u8; 5];
            s.read_exact(&mut back).expect("read");
            let rtt = t.elapsed();
            assert!(rtt >= 2 * delay && rtt < 2 * delay + Duration::from_millis(50), "{rtt:?}");
        }
    }

    #[test]
    fn a_loss_followed_by_data_is_recovered_in_about_a_round_trip() {
        let delay = Duration::from_millis(10);
        let sink = TcpListener::bind("127.0.0.1:0").expect("bind");
        let sink_addr = sink.local_addr().expect("addr");
        let arrivals = std::thread::spawn(move || {
            let (mut s, _) = sink.accept().expect("accept");
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while seen.len() < 2 && s.read_exact(&mut byte).is_ok() {
                seen.push((byte[0], Instant::now()));
            }
            seen
        });
        let stats = Arc::new(RelayStats::default());
        let lossy = Shape { delay, jitter: Duration::ZERO, loss: 1.0 };
        let listen = "127.0.0.1:0".parse().expect("literal");
        let _relay = Relay::start("t", listen, sink_addr, (lossy, Shape::NONE), 3, stats).expect("relay");
        let mut s = TcpStream::connect(_relay.addr()).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let t = Instant::now();
        s.write_all(b"a").expect("write");
        std::thread::sleep(Duration::from_millis(5));
        s.write_all(b"b").expect("write");
        let seen = arrivals.join().expect("sink");
        let (a, b) = (seen[0].1 - t, seen[1].1 - t);
        assert_eq!((seen[0].0, seen[1].0), (b'a', b'b'), "in order");
        // a: revealed by b (sent at 5 ms): 5 + 1.25 × 20 + 10 = 40 ms. b: a tail, 10 + 200 + 20 ms.
        assert!(a >= Duration::from_millis(40) && a < Duration::from_millis(150), "a after {a:?}");
        assert!(b >= Duration::from_millis(235), "b after {b:?}");
    }

    #[test]
    fn a_lost_tail_waits_for_a_retransmission_timeout() {
        let delay = Duration::from_millis(1);
        let (_relay, stats) = relay_to(echo_server(), Shape { delay, jitter: Duration::ZERO, loss: 1.0 });
        let mut s = TcpStream::connect(_relay.addr()).expect("connect");
        let t = Instant::now();
        s.write_all(b"x").expect("write");
        let mut back = [0u8; 1];
        s.read_exact(&mut back).expect("read");
        // Lost both ways, nothing behind it: two holds of RTO_MIN + 2 × delay, plus the delays.
        assert!(t.elapsed() >= 2 * (tail_hold(delay) + delay), "{:?}", t.elapsed());
        assert_eq!(stats.held.load(Relaxed), 2);
    }

    #[test]
    fn overhead_is_measured() {
        let o = measure_overhead(200).expect("measured");
        assert_eq!(o.round_trips, 200);
        assert!(o.direct_p50_us > 0.0 && o.relayed_p50_us > 0.0, "{o:?}");
    }
}
