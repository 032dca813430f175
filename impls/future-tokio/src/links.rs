//! Flood links: one task per neighbour, fed by a bounded `tokio::sync::mpsc` channel.
//!
//! ```text
//! (connect) PEER Alford\n
//!           AT Alford +0.000213 kiwi +34.068930-118.445127 1479413884.392014450\n
//!           ...
//! ```
//!
//! A link task is a small state machine with two states, each one `select!`:
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
use std::time::Duration;

use herd_core::log::{Direction, Event};
use herd_core::{Flood, ServerStats, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

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
    senders: Vec<mpsc::Sender<Arc<[u8]>>>,
}

impl FloodLinks {
    /// Spawns one link task per neighbour on the current runtime. `me` is sent as the link hello.
    pub fn spawn<S: Service>(
        me: &str,
        neighbours: &[(String, SocketAddr)],
        service: &Arc<S>,
        write_timeout: Duration,
    ) -> Self {
        let senders = neighbours
            .iter()
            .map(|(name, addr)| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let link = LinkTask {
                    hello: format!("PEER {me}\n"),
                    name: name.clone(),
                    addr: *addr,
                    service: Arc::clone(service),
                    write_timeout,
                };
                tokio::spawn(link.run(rx));
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

impl<S: Service> LinkTask<S> {
    async fn run(self, mut rx: mpsc::Receiver<Arc<[u8]>>) {
        let stats = self.service.stats();
        let mut conn: Option<TcpStream> = None;
        let mut attempts = Attempts::new();
        let mut lines = Vec::with_capacity(BATCH);
        let mut batch = Vec::new();
        let mut probe = [0u8; 1];
        loop {
            let n = match &mut conn {
                None => tokio::select! {
                    () = sleep_until(attempts.next()) => {
                        conn = self.connect(&mut attempts).await;
                        continue;
                    }
                    n = rx.recv_many(&mut lines, BATCH) => n,
                },
                Some(stream) => tokio::select! {
                    biased;
                    _ = stream.read(&mut probe) => {
                        self.down(&mut conn, "closed by peer");
                        continue;
                    }
                    n = rx.recv_many(&mut lines, BATCH) => n,
                },
            };
            if n == 0 {
                return; // every sender is gone: the server is stopping
            }
            batch.clear();
            lines.drain(..).for_each(|line| batch.extend_from_slice(&line));
            // Traffic for a link that is down is a reason to try now, if the interval allows.
            if conn.is_none() && attempts.allowed() {
                conn = self.connect(&mut attempts).await;
            }
            let Some(stream) = &mut conn else {
                stats.floods_dropped.fetch_add(n as u64, Relaxed);
                continue;
            };
            match timeout(self.write_timeout, stream.write_all(&batch)).await {
                Ok(Ok(())) => {
                    stats.floods_out.fetch_add(n as u64, Relaxed);
                }
                Ok(Err(e)) => {
                    stats.floods_dropped.fetch_add(n as u64, Relaxed);
                    self.down(&mut conn, &e.to_string());
                }
                Err(_) => {
                    stats.floods_dropped.fetch_add(n as u64, Relaxed);
                    self.down(&mut conn, "neighbour stopped reading");
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
            std::io::Result::Ok(stream)
        };
        let stream = timeout(CONNECT_TIMEOUT, attempt).await.ok()?.ok()?;
        self.service.log().event(Event::LinkUp { peer: self.name.clone(), direction: Direction::Outbound });
        Some(stream)
    }

    fn down(&self, conn: &mut Option<TcpStream>, reason: &str) {
        *conn = None;
        self.service.log().event(Event::LinkDown { peer: self.name.clone(), reason: reason.to_owned() });
    }
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
