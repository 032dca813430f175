//! What happens at the listener: the pause after an accept error, and the cap on connections.
//!
//! An accept that fails (most often: out of file descriptors) leaves the listener readable, so a
//! loop that accepts again at once spins a core and starves the connections it already has. Every
//! style pauses by the same rule: [`Limits::accept_backoff`] after the first error, doubling on each
//! further one up to [`Limits::accept_backoff_max`], back to the start after an accept succeeds.
//!
//! A server holds at most [`Limits::max_connections`] client connections. A connection accepted
//! past it is closed at once — its descriptor freed, so a flood of connections cannot exhaust
//! the process's descriptors and starve the links and the upstream of theirs — counted
//! (`connections_refused`) and logged once per episode. mini-redis bounds its connections the same
//! way (a semaphore permit per connection, returned when it closes); it waits for a permit before
//! accepting, which leaves the excess in the kernel's backlog, while here the excess is told at once.
//!
//! # Calling order
//! Every style hands each accept's result to [`Acceptor::on_accept`] and does what it says: serve
//! the connection, keeping the [`Admitted`] with it until it ends; nothing (refused: it was closed);
//! or accept nothing before the given time (the caller sleeps, or arms a timer and stops watching
//! the listener). What is not an accept's result stays with the style: a non-blocking listener's
//! `WouldBlock` (nothing to accept) and `Interrupted` (try again). A server that accepts in several
//! places (one loop per thread) gives each a clone of one [`Acceptor`]: one cap and one count, a
//! back-off each. [`AcceptBackoff`] and [`Admission`] are its parts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::log::{Event, EventLog};
use crate::policy::Limits;
use crate::stats::ServerStats;

#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl AcceptBackoff {
    pub fn new(limits: &Limits) -> Self {
        Self { first: limits.accept_backoff, max: limits.accept_backoff_max, next: limits.accept_backoff }
    }

    pub fn on_accepted(&mut self) {
        self.next = self.first;
    }

    /// Accepting failed at `now`: returns when to try again.
    pub fn on_error(&mut self, now: Instant) -> Instant {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        now + pause
    }
}

/// The listener's whole policy: the back-off after errors, the cap on connections, and the count
/// of connections served. A clone shares the cap and the count with the original (another accept
/// loop of the same server) and keeps its own back-off.
#[derive(Debug, Clone)]
pub struct Acceptor {
    backoff: AcceptBackoff,
    admission: Admission,
    served: Arc<AtomicU64>,
    log: EventLog,
}

/// What to do with what one accept returned.
#[derive(Debug)]
pub enum Accepted<C> {
    /// Serve this connection; keep the [`Admitted`] with it until it ends.
    Serve(C, Admitted),
    /// Past the cap: the connection was dropped (closed), counted and logged.
    Refused,
    /// Accepting failed (logged): accept nothing before this time.
    Pause(Instant),
}

impl Acceptor {
    pub fn new(limits: &Limits, stats: &ServerStats, log: &EventLog) -> Self {
        Self {
            backoff: AcceptBackoff::new(limits),
            admission: Admission::new(limits, stats, log),
            served: Arc::clone(&stats.connections),
            log: log.clone(),
        }
    }

    /// Judges what one accept returned; `now` (`Instant::now`, or a time the caller already has) is
    /// read only after an error, so an accepted connection costs no clock read.
    pub fn on_accept<C>(&mut self, accepted: std::io::Result<C>, now: impl FnOnce() -> Instant) -> Accepted<C> {
        match accepted {
            Ok(conn) => {
                self.backoff.on_accepted();
                let Some(admitted) = self.admission.admit() else { return Accepted::Refused };
                ServerStats::bump(&self.served);
                Accepted::Serve(conn, admitted)
            }
            Err(e) => {
                self.log.error("accept", e);
                Accepted::Pause(self.backoff.on_error(now()))
            }
        }
    }
}

/// The count of open client connections, shared by every thread that accepts or closes one.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Gate>,
}

#[derive(Debug)]
struct Gate {
    open: AtomicUsize,
    max: usize,
    /// Refusing since the last admitted connection (the episode being logged).
    refusing: AtomicBool,
    refused: Arc<AtomicU64>,
    log: EventLog,
}

/// One admitted connection's place; the place is given back when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<Gate>,
}

impl Admission {
    pub fn new(limits: &Limits, stats: &ServerStats, log: &EventLog) -> Self {
        let inner = Gate {
            open: AtomicUsize::new(0),
            max: limits.max_connections,
            refusing: AtomicBool::new(false),
            refused: Arc::clone(&stats.connections_refused),
            log: log.clone(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// A place for one more connection, or `None` (counted, and logged once per episode): close it.
    pub fn admit(&self) -> Option<Admitted> {
        let gate = &self.inner;
        if gate.open.fetch_add(1, Relaxed) >= gate.max {
            gate.open.fetch_sub(1, Relaxed);
            gate.refused.fetch_add(1, Relaxed);
            if !gate.refusing.swap(true, Relaxed) {
                gate.log.event(Event::ConnectionsRefused { max_connections: gate.max });
            }
            return None;
        }
        gate.refusing.store(false, Relaxed);
        Some(Admitted { gate: Arc::clone(gate) })
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_past_the_cap_are_refused_until_one_closes() {
        let stats = ServerStats::default();
        let gate = Admission::new(&Limits { max_connections: 2, ..Limits::default() }, &stats, &EventLog::discard());
        let (a, b) = (gate.admit(), gate.admit());
        assert!(a.is_some() && b.is_some());
        assert!(gate.admit().is_none());
        assert!(gate.admit().is_none());
        assert_eq!((gate.open(), stats.connections_refused.load(Relaxed)), (2, 2));
        drop(a);
        let c = gate.admit();
        assert!(c.is_some(), "a closed connection's place is free again");
        assert_eq!(gate.open(), 2);
        drop((b, c));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let limits = Limits { accept_backoff: ms(10), accept_backoff_max: ms(35), ..Limits::default() };
        let mut b = AcceptBackoff::new(&limits);
        let pauses: Vec<_> = (0..4).map(|_| b.on_error(t0) - t0).collect();
        assert_eq!(pauses, [ms(10), ms(20), ms(35), ms(35)]);
        b.on_accepted();
        assert_eq!(b.on_error(t0) - t0, ms(10));
    }

    #[test]
    fn the_acceptor_counts_serves_refuses_past_the_cap_and_backs_off_after_errors() {
        let stats = ServerStats::default();
        let limits = Limits {
            max_connections: 1,
            accept_backoff: Duration::from_millis(10),
            accept_backoff_max: Duration::from_millis(25),
            ..Limits::default()
        };
        let mut acceptor = Acceptor::new(&limits, &stats, &EventLog::discard());
        let t0 = Instant::now();
        let first = acceptor.on_accept(Ok("first"), || t0);
        assert!(matches!(first, Accepted::Serve("first", _)));
        assert!(matches!(acceptor.on_accept(Ok("second"), || t0), Accepted::Refused));
        assert_eq!((stats.connections.load(Relaxed), stats.connections_refused.load(Relaxed)), (1, 1));
        let pauses: Vec<_> = (0..3)
            .map(|_| match acceptor.on_accept::<&str>(Err(std::io::ErrorKind::Other.into()), || t0) {
                Accepted::Pause(until) => until - t0,
                other => panic!("an error pauses: {other:?}"),
            })
            .collect();
        assert_eq!(pauses, [10, 20, 25].map(Duration::from_millis), "doubling up to the cap");
        drop(first);
        assert!(
            matches!(acceptor.on_accept(Ok("third"), || t0), Accepted::Serve("third", _)),
            "a place was given back"
        );
        assert!(
            matches!(acceptor.on_accept::<&str>(Err(std::io::ErrorKind::Other.into()), || t0), Accepted::Pause(t) if t == t0 + Duration::from_millis(10)),
            "an accept resets the back-off"
        );
    }

    #[test]
    fn clones_share_the_cap_and_the_count_and_back_off_apart() {
        let stats = ServerStats::default();
        let limits = Limits { max_connections: 2, accept_backoff: Duration::from_millis(10), ..Limits::default() };
        let mut one = Acceptor::new(&limits, &stats, &EventLog::discard());
        let mut two = one.clone();
        let t0 = Instant::now();
        // An accepted connection reads no clock: only an error does.
        let a = one.on_accept(Ok("a"), || panic!("no clock read for an accepted connection"));
        let b = two.on_accept(Ok("b"), || panic!("no clock read for an accepted connection"));
        assert!(matches!((&a, &b), (Accepted::Serve(..), Accepted::Serve(..))));
        assert!(matches!(one.on_accept(Ok("c"), || t0), Accepted::Refused), "the cap is the server's");
        assert_eq!((stats.connections.load(Relaxed), stats.connections_refused.load(Relaxed)), (2, 1));
        let error = || Err::<&str, _>(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(matches!(one.on_accept(error(), || t0), Accepted::Pause(t) if t == t0 + Duration::from_millis(10)));
        assert!(matches!(one.on_accept(error(), || t0), Accepted::Pause(t) if t == t0 + Duration::from_millis(20)));
        assert!(
            matches!(two.on_accept(error(), || t0), Accepted::Pause(t) if t == t0 + Duration::from_millis(10)),
            "each clone backs off on its own errors"
        );
    }
}
