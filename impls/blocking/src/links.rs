//! Flood links for the thread styles: one thread per neighbour drives its [`FloodLink`] machine.
//!
//! The machine (herd-core) decides when to connect, what to send and what to drop; this thread
//! only connects, writes and waits. Idle, it sleeps on a [`Bell`] that [`FloodLinks::send`] rings
//! when an update is queued for it, bounded by the machine's next deadline. Busy, it writes on a
//! blocking socket whose send timeout is the machine's stall limit, so a neighbour that stops
//! reading returns the write to the machine, which decides whether the link has stalled. While
//! the machine awaits the neighbour's handshake answer, the thread blocks in a read bounded by
//! the machine's deadline.
//!
//! [`FloodLink`]: herd_core::policy::FloodLink

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use herd_core::policy::{LinkState, SharedLink};
use herd_core::{ServeOptions, Service};

use crate::wait;

/// Every neighbour's link, indexed like [`herd_core::Flood::to`].
pub type FloodLinks = herd_core::policy::FloodLinks<Bell>;

/// How a sender wakes an idle link thread: a flag and a condition variable. Rings coalesce and
/// never block, and a ring while the thread is busy is kept for its next wait. The thread parks at
/// once, without spinning: a crossbeam channel's receive spins and yields before it sleeps, and
/// with one link thread per neighbour in every server those yields were most of the thread
/// styles' `sched_yield` calls (threadpool's README has the count). Updates queued while the
/// thread wakes still leave in one write. Measured against the channel (2 interleaved rounds, per
/// request): thread-per-request at herd-mixed 2k/s 21.4 → 0.1 `sched_yield`, 32.7 → 13.5 context
/// switches, 530 → 381 µs server CPU, p99 unchanged; at herd-update 5k/s, where every request
/// wakes four link threads, p50 rose 125 → 219 µs and p99 1.0 → 2.8 ms (two-stage alike): the
/// wake-up of a parked link thread is now on the request's path more often.
#[derive(Debug, Default)]
pub struct Bell {
    state: Mutex<Rung>,
    rung: Condvar,
}

#[derive(Debug, Default)]
struct Rung {
    rung: bool,
    /// The link thread is parked (only then does a ring cost a wake-up).
    parked: bool,
}

impl herd_core::policy::LinkWaker for Bell {
    fn wake(&self) {
        let mut state = self.lock();
        state.rung = true;
        let parked = state.parked;
        drop(state);
        if parked {
            self.rung.notify_one();
        }
    }
}

impl Bell {
    /// Waits until rung (returning at once if it was rung since the last wait) or `deadline`.
    fn wait(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        while !state.rung {
            state.parked = true;
            state = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                Some(left) if left.is_zero() => break,
                Some(left) => self.rung.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0,
                None => self.rung.wait(state).unwrap_or_else(PoisonError::into_inner),
            };
        }
        *state = Rung::default();
    }

    fn lock(&self) -> MutexGuard<'_, Rung> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes the links and starts one driver thread per neighbour.
pub fn spawn<S: Service>(options: &ServeOptions, service: &S) -> io::Result<Arc<FloodLinks>> {
    let links = Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |_| Bell::default()));
    let stall = options.limits.link_write_stall;
    for (i, (name, addr)) in options.neighbours.iter().enumerate() {
        let (links, addr) = (Arc::clone(&links), *addr);
        thread::Builder::new().name(format!("link-{name}")).spawn(move || {
            if let Some(link) = links.get(i) {
                drive(link, addr, stall);
            }
        })?;
    }
    Ok(links)
}

/// One link's thread: connect when told, write what the machine hands out, wait.
fn drive(link: &SharedLink<Bell>, addr: SocketAddr, stall: Duration) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    loop {
        let (connect, deadline, state) = {
            let mut m = link.lock();
            m.on_timeout(Instant::now());
            if m.state() == LinkState::Down {
                conn = None;
                buf.clear();
            }
            m.poll_transmit(&mut buf);
            (m.poll_connect(), m.poll_timeout(), m.state())
        };
        if connect {
            let attempt = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .filter(|budget| !budget.is_zero())
                .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
                .and_then(|budget| TcpStream::connect_timeout(&addr, budget))
                .and_then(|s| s.set_nodelay(true).and(s.set_write_timeout(Some(stall))).map(|()| s));
            let mut m = link.lock();
            match attempt {
                Ok(stream) => {
                    conn = Some(stream);
                    m.on_connected(Instant::now());
                }
                Err(_) => m.on_connect_failed(Instant::now()),
            }
            continue;
        }
        if let Some(stream) = &mut conn
            && !buf.is_empty()
        {
            // Peers never send on a flood link: readable means it closed (or is not a herd member).
            let sent =
                if wait::peer_closed(stream) { Err("closed by peer".to_owned()) } else { send(stream, &mut buf, link) };
            if let Err(reason) = sent {
                link.lock().on_closed(Instant::now(), &reason);
            }
            continue;
        }
        if let Some(stream) = &mut conn
            && state == LinkState::Handshaking
        {
            let mut answer = [0_u8; 256];
            let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
            // A read that times out returns WouldBlock: the machine ignores it and its own
            // deadline, checked at the top of the loop, decides.
            let read = stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .and_then(|()| stream.read(&mut answer));
            link.lock().on_read(Instant::now(), read.map(|n| &answer[..n]));
            continue;
        }
        link.waker.wait(deadline);
    }
}

/// Writes `buf`, reporting each write to the machine. A write that times out hands the decision
/// to the machine: it closes the link if the neighbour has taken nothing for its stall limit.
/// The machine is locked only around its calls, never across a write.
fn send(stream: &mut TcpStream, buf: &mut Vec<u8>, link: &SharedLink<Bell>) -> Result<(), String> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err("neighbour took no bytes".to_owned()),
            Ok(n) => {
                buf.drain(..n);
                link.lock().consumed(n, Instant::now());
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                let mut m = link.lock();
                m.on_timeout(Instant::now());
                if m.state() != LinkState::Up {
                    return Ok(()); // closed by the machine; the loop drops the socket
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
