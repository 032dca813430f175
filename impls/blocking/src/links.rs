//! Flood links: one thread per neighbour, fed by a bounded channel, reconnecting on its own.
//!
//! ```text
//! (connect) PEER Alford\n
//!           AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450\n
//!           ...
//! ```
//! A link whose neighbour is down drops what it is given (old updates are not replayed: newer ones
//! will follow) and retries the connection at most every [`RETRY`], also when idle, so a neighbour
//! that comes back is linked again without waiting for traffic.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use herd_core::log::{Direction, Event};
use herd_core::{Flood, ServerStats, Service};

use crate::wait;

/// Shortest time between two connection attempts to one neighbour.
pub const RETRY: Duration = Duration::from_millis(100);
/// Flood lines queued per neighbour before new ones are dropped (a stuck neighbour must not grow memory).
pub const QUEUE: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The sending ends of every neighbour's link, indexed like [`Flood::to`].
#[derive(Debug, Clone)]
pub struct FloodLinks {
    senders: Vec<Sender<Arc<[u8]>>>,
}

impl FloodLinks {
    /// Starts one link thread per neighbour. `me` is this server's name, sent as the link hello.
    pub fn spawn<S: Service>(me: &str, neighbours: &[(String, SocketAddr)], service: Arc<S>) -> Self {
        let senders = neighbours
            .iter()
            .map(|(name, addr)| {
                let (tx, rx) = crossbeam_channel::bounded(QUEUE);
                let link = Link {
                    hello: format!("PEER {me}\n"),
                    name: name.clone(),
                    addr: *addr,
                    conn: None,
                    last_attempt: None,
                };
                let service = Arc::clone(&service);
                thread::Builder::new()
                    .name(format!("link-{name}"))
                    .spawn(move || link.run(&rx, &*service))
                    .expect("spawning a link thread at start-up");
                tx
            })
            .collect();
        Self { senders }
    }

    /// Queues `flood` for its neighbours without waiting; a full queue counts as dropped.
    pub fn send(&self, flood: &Flood, stats: &ServerStats) {
        for &i in &flood.to {
            match self.senders[i].try_send(Arc::clone(&flood.line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => ServerStats::bump(&stats.floods_dropped),
            }
        }
    }
}

struct Link {
    hello: String,
    name: String,
    addr: SocketAddr,
    conn: Option<TcpStream>,
    last_attempt: Option<Instant>,
}

impl Link {
    fn run(mut self, rx: &Receiver<Arc<[u8]>>, service: &dyn ServiceHandle) {
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
            let stats = service.stats();
            if !self.ensure_connected(service) {
                stats.floods_dropped.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let Some(conn) = &mut self.conn else { continue };
            match conn.write_all(&batch) {
                Ok(()) => stats.floods_out.fetch_add(lines, std::sync::atomic::Ordering::Relaxed),
                Err(e) => {
                    self.down(service, &e.to_string());
                    stats.floods_dropped.fetch_add(lines, std::sync::atomic::Ordering::Relaxed)
                }
            };
        }
    }

    /// True when a usable connection exists, making one if the retry interval allows.
    fn ensure_connected(&mut self, service: &dyn ServiceHandle) -> bool {
        if let Some(conn) = &self.conn {
            if !wait::peer_closed(conn) {
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

    fn down(&mut self, service: &dyn ServiceHandle, reason: &str) {
        self.conn = None;
        service.log().event(Event::LinkDown { peer: self.name.clone(), reason: reason.to_owned() });
    }
}

/// The two things a link needs from the service, as a trait object so `Link` is not generic.
trait ServiceHandle {
    fn stats(&self) -> &ServerStats;
    fn log(&self) -> &herd_core::EventLog;
}

impl<S: Service> ServiceHandle for S {
    fn stats(&self) -> &ServerStats {
        Service::stats(self)
    }

    fn log(&self) -> &herd_core::EventLog {
        Service::log(self)
    }
}
