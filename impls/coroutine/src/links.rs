//! Flood links: one coroutine per neighbour, fed by a may channel, reconnecting on its own.
//!
//! ```text
//! (connect) PEER Alford\n
//!           AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450\n
//!           ...
//! ```
//! The code reads like the blocking version (`herd_blocking::links`): wait for an update or for
//! [`RETRY`] to pass, make sure the link is up, write. Only the waiting differs: `recv_timeout`,
//! `connect_timeout` and `write_all` park the coroutine, not the worker thread.
//!
//! may's channels are unbounded, so the bound is a counter: a sender that finds [`QUEUE`] lines
//! already waiting drops its line and counts it, as a full bounded channel would.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herd_core::log::{Direction, Event};
use herd_core::{Flood, ServerStats, Service};
use may::net::TcpStream;
use may::sync::mpsc;
use std::sync::mpsc::RecvTimeoutError;

/// Shortest time between two connection attempts to one neighbour; also how often an idle link
/// checks that its neighbour is still there.
pub const RETRY: Duration = Duration::from_millis(100);
/// Flood lines queued per neighbour before new ones are dropped (a stuck neighbour must not grow memory).
pub const QUEUE: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The sending ends of every neighbour's link, indexed like [`Flood::to`].
///
/// may's `Sender` is `Send` but not `Sync`, so this is cloned into each connection's coroutine
/// rather than shared behind an `Arc`.
#[derive(Debug, Clone)]
pub(crate) struct FloodLinks {
    queues: Vec<LinkQueue>,
}

/// One neighbour's queue: the channel and how many lines wait in it.
#[derive(Debug, Clone)]
struct LinkQueue {
    tx: mpsc::Sender<Arc<[u8]>>,
    queued: Arc<AtomicUsize>,
}

impl FloodLinks {
    /// Spawns one link coroutine per neighbour. `me` is this server's name, sent as the link hello.
    pub(crate) fn spawn<S: Service>(
        me: &str,
        neighbours: &[(String, SocketAddr)],
        service: &Arc<S>,
        write_timeout: Duration,
    ) -> Self {
        let queues = neighbours
            .iter()
            .map(|(name, addr)| {
                let (tx, rx) = mpsc::channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let link = Link {
                    hello: format!("PEER {me}\n"),
                    name: name.clone(),
                    addr: *addr,
                    write_timeout,
                    conn: None,
                    last_attempt: None,
                };
                let (service, count) = (Arc::clone(service), Arc::clone(&queued));
                may::go!(move || link.run(&rx, &count, &*service));
                LinkQueue { tx, queued }
            })
            .collect();
        Self { queues }
    }

    /// Queues `flood` for its neighbours without waiting; a full queue counts as dropped.
    pub(crate) fn send(&self, flood: &Flood, stats: &ServerStats) {
        for &i in &flood.to {
            let Some(queue) = self.queues.get(i) else { continue };
            let full = queue.queued.fetch_add(1, Relaxed) >= QUEUE;
            if full || queue.tx.send(Arc::clone(&flood.line)).is_err() {
                queue.queued.fetch_sub(1, Relaxed);
                ServerStats::bump(&stats.floods_dropped);
            }
        }
    }
}

/// One outbound link, owned by its coroutine.
struct Link {
    hello: String,
    name: String,
    addr: SocketAddr,
    write_timeout: Duration,
    conn: Option<TcpStream>,
    last_attempt: Option<Instant>,
}

impl Link {
    fn run<S: Service>(mut self, rx: &mpsc::Receiver<Arc<[u8]>>, queued: &AtomicUsize, service: &S) {
        let mut batch = Vec::new();
        loop {
            let first = match rx.recv_timeout(RETRY) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    self.ensure_connected(service);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Take everything queued so one write carries a burst.
            batch.clear();
            batch.extend_from_slice(&first);
            let mut lines = 1;
            while let Ok(line) = rx.try_recv() {
                batch.extend_from_slice(&line);
                lines += 1;
            }
            queued.fetch_sub(lines, Relaxed);
            let stats = service.stats();
            let lines = lines as u64;
            if !self.ensure_connected(service) {
                stats.floods_dropped.fetch_add(lines, Relaxed);
                continue;
            }
            let Some(conn) = &mut self.conn else { continue };
            match conn.write_all(&batch) {
                Ok(()) => stats.floods_out.fetch_add(lines, Relaxed),
                Err(e) => {
                    self.down(service, &e.to_string());
                    stats.floods_dropped.fetch_add(lines, Relaxed)
                }
            };
        }
    }

    /// True when a usable connection exists, making one if the retry interval allows.
    fn ensure_connected<S: Service>(&mut self, service: &S) -> bool {
        if let Some(conn) = &self.conn {
            if !peer_closed(conn) {
                return true;
            }
            self.down(service, "closed by peer");
        }
        if self.last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return false;
        }
        self.last_attempt = Some(Instant::now());
        let attempt = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).and_then(|mut conn| {
            conn.set_nodelay(true)?;
            conn.set_write_timeout(Some(self.write_timeout))?;
            conn.write_all(self.hello.as_bytes())?;
            Ok(conn)
        });
        match attempt {
            Ok(conn) => {
                self.conn = Some(conn);
                service.log().event(Event::LinkUp { peer: self.name.clone(), direction: Direction::Outbound });
                true
            }
            Err(_) => false,
        }
    }

    fn down<S: Service>(&mut self, service: &S, reason: &str) {
        self.conn = None;
        service.log().event(Event::LinkDown { peer: self.name.clone(), reason: reason.to_owned() });
    }
}

/// True when the neighbour has closed the link, or sent on it (peers never do, so it is not the
/// link we think it is). may's sockets are non-blocking underneath, so peeking at the std socket
/// answers at once without parking anything.
fn peer_closed(conn: &TcpStream) -> bool {
    match conn.inner().peek(&mut [0; 1]) {
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
        Ok(_) => true,
    }
}
