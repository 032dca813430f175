//! Flood links: one task per neighbour, fed by a bounded `async_std::channel` (async-channel).
//!
//! ```text
//! (connect) PEER Alford\n
//!           AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450\n
//!           ...
//! ```
//!
//! A link task is a small state machine with two states, each waiting on two futures at once.
//! async-std's own `race` is behind its `unstable` feature, so the wait is futures-lite's
//! `future::or` (the crate async-std itself is built on): the first future ready wins, the other
//! is dropped.
//!
//! ```text
//!          retry due (the idle timer, or an update arriving RETRY or more after the last
//!          attempt): connect, send the hello
//! down ──────────────────────────────────────────────────────► up: updates are written in batches
//!  ▲  updates arriving before a retry is due                       │
//!  │  are dropped and counted                                      │
//!  └──────────── the peer sent EOF or anything, or a write failed ─┘
//! ```
//!
//! While up, the task also waits on a read of the link: peers never send on a flood link, so the
//! read completing (EOF, reset, or stray bytes) means the neighbour is gone, and the task learns
//! it at once instead of on the next write. While down it tries again every [`RETRY`] whether or
//! not updates arrive, so a restarted neighbour is linked again without waiting for traffic; an
//! update that arrives when a retry is due makes the attempt itself and is sent if it succeeds.
//! The first attempt waits for the first update or one interval, rather than racing neighbours
//! that are starting alongside this server. Old updates are not replayed: newer ones will follow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_std::channel::{Receiver, Sender};
use async_std::io::{self, ReadExt, WriteExt};
use async_std::net::TcpStream;
use async_std::task;
use futures_lite::future;
use herd_core::log::{Direction, Event};
use herd_core::{Flood, ServerStats, Service};

/// Shortest time between two connection attempts to one neighbour.
pub const RETRY: Duration = Duration::from_millis(100);
/// Flood lines queued per neighbour before new ones are dropped (a stuck neighbour must not grow
/// memory). Bursts are absorbed here while the link writes the previous batch.
pub const QUEUE: usize = 4096;
/// Lines taken from the queue for one write.
const BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The sending ends of every neighbour's link, indexed like [`Flood::to`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FloodLinks {
    senders: Vec<Sender<Arc<[u8]>>>,
}

impl FloodLinks {
    /// Spawns one link task per neighbour on the global executor. `me` is sent as the link hello.
    pub fn spawn<S: Service>(
        me: &str,
        neighbours: &[(String, SocketAddr)],
        service: &Arc<S>,
        write_timeout: Duration,
    ) -> Self {
        let senders = neighbours
            .iter()
            .map(|(name, addr)| {
                let (tx, rx) = async_std::channel::bounded(QUEUE);
                let link = LinkTask {
                    hello: format!("PEER {me}\n"),
                    name: name.clone(),
                    addr: *addr,
                    service: Arc::clone(service),
                    write_timeout,
                };
                task::spawn(link.run(rx));
                tx
            })
            .collect();
        Self { senders }
    }

    /// Queues `flood` for its neighbours without waiting; a full queue counts as dropped.
    pub fn send(&self, flood: &Flood, stats: &ServerStats) {
        for &i in &flood.to {
            if self.senders[i].try_send(Arc::clone(&flood.line)).is_err() {
                ServerStats::bump(&stats.floods_dropped);
            }
        }
    }
}

/// One neighbour's link.
struct LinkTask<S> {
    hello: String,
    name: String,
    addr: SocketAddr,
    service: Arc<S>,
    write_timeout: Duration,
}

/// What ended a wait of the link task.
enum Wake {
    /// Time for a connection attempt.
    Retry,
    /// This many lines were taken from the queue into the batch (0: the queue is closed).
    Lines(usize),
    /// The neighbour closed the link, or sent on it.
    PeerGone,
}

impl<S: Service> LinkTask<S> {
    async fn run(self, rx: Receiver<Arc<[u8]>>) {
        let stats = self.service.stats();
        let mut conn: Option<TcpStream> = None;
        let mut attempts = Attempts::new();
        let mut batch = Vec::new();
        let mut probe = [0u8; 1];
        loop {
            batch.clear();
            let queued = take_batch(&rx, &mut batch);
            let wake = match &conn {
                None => {
                    let retry = async {
                        task::sleep(attempts.next().saturating_duration_since(Instant::now())).await;
                        Wake::Retry
                    };
                    future::or(retry, queued).await
                }
                Some(stream) => {
                    let gone = async {
                        let _ = (&*stream).read(&mut probe).await;
                        Wake::PeerGone
                    };
                    future::or(gone, queued).await
                }
            };
            let n = match wake {
                Wake::Lines(0) => return, // every sender is gone: the server is stopping
                Wake::Lines(n) => n as u64,
                Wake::Retry => {
                    conn = self.connect(&mut attempts).await;
                    continue;
                }
                Wake::PeerGone => {
                    self.down(&mut conn, "closed by peer");
                    continue;
                }
            };
            // Traffic for a link that is down is a reason to try now, if the interval allows.
            if conn.is_none() && attempts.allowed() {
                conn = self.connect(&mut attempts).await;
            }
            let Some(stream) = &conn else {
                stats.floods_dropped.fetch_add(n, Relaxed);
                continue;
            };
            match io::timeout(self.write_timeout, (&*stream).write_all(&batch)).await {
                Ok(()) => {
                    stats.floods_out.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    stats.floods_dropped.fetch_add(n, Relaxed);
                    self.down(&mut conn, &e.to_string());
                }
            }
        }
    }

    /// One connection attempt, hello included; `None` if the neighbour is not there.
    async fn connect(&self, attempts: &mut Attempts) -> Option<TcpStream> {
        attempts.record();
        let attempt = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(self.hello.as_bytes()).await?;
            Ok(stream)
        };
        let stream = io::timeout(CONNECT_TIMEOUT, attempt).await.ok()?;
        self.service.log().event(Event::LinkUp { peer: self.name.clone(), direction: Direction::Outbound });
        Some(stream)
    }

    fn down(&self, conn: &mut Option<TcpStream>, reason: &str) {
        *conn = None;
        self.service.log().event(Event::LinkDown { peer: self.name.clone(), reason: reason.to_owned() });
    }
}

/// Waits for one queued line, then takes what else is queued (up to [`BATCH`]) without waiting,
/// so one write carries a burst. Cancel-safe: a line leaves the channel only in the poll that
/// completes this future.
async fn take_batch(rx: &Receiver<Arc<[u8]>>, batch: &mut Vec<u8>) -> Wake {
    let Ok(first) = rx.recv().await else { return Wake::Lines(0) };
    batch.extend_from_slice(&first);
    let mut n = 1;
    while n < BATCH {
        let Ok(line) = rx.try_recv() else { break };
        batch.extend_from_slice(&line);
        n += 1;
    }
    Wake::Lines(n)
}

/// When a link that is down may try to connect: at most every [`RETRY`]. The first attempt waits
/// for the first update or one interval, whichever comes first, rather than racing the neighbours
/// that are still starting alongside this server.
#[derive(Debug)]
struct Attempts {
    last: Instant,
    tried: bool,
}

impl Attempts {
    fn new() -> Self {
        Self { last: Instant::now(), tried: false }
    }

    fn allowed(&self) -> bool {
        !self.tried || self.last.elapsed() >= RETRY
    }

    /// When the idle retry is due.
    fn next(&self) -> Instant {
        self.last + RETRY
    }

    fn record(&mut self) {
        self.last = Instant::now();
        self.tried = true;
    }
}
