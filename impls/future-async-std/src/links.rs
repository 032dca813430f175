//! Flood links: one async-std task per neighbour drives herd-core's
//! [`FloodLink`](herd_core::policy::FloodLink) machine.
//!
//! ```text
//!  connection task ── FloodLinks::send ──► FloodLink (queue, drops, retry timer) ── wake? ──► channel(1)
//!                                                                                                │
//!  link task: loop { lock: on_timeout, poll_connect ── connect (until the machine's deadline)    │
//!                    lock: poll_transmit ── one poll of a write at a time, consumed(n) each      │
//!                    race { recv ◄───────────────────────────────────────────────────────────────┘
//!                           read (on_read: peers never send), write (bytes left),
//!                           task::sleep(poll_timeout) } }
//! ```
//!
//! Everything a link decides lives in the machine: when to connect and how long an attempt may
//! take (`link_retry`, `link_connect_timeout`), how much to queue and what to drop and count
//! (`link_queue_bytes`), when a neighbour that takes nothing is given up (`link_write_stall`),
//! and the hello. The task only owns the socket and waits, async-std's way: a bounded(1)
//! `async_std::channel` (async-channel) is the [`LinkWaker`] (a ring while the task is busy stays
//! in the channel), and futures-lite's `future::or` races it against the socket and the machine's
//! next deadline. async-std cannot wait for readiness without reading or writing, so the waits
//! are a read (peers never send on a flood link: it completing means the neighbour is gone) and a
//! write of the bytes left (it completing is progress, reported with `consumed`). The machine's
//! lock is taken for a call or two and never held across an `.await`.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_std::channel::{Receiver, Sender, bounded};
use async_std::io::{self, ReadExt, WriteExt};
use async_std::net::TcpStream;
use async_std::task;
use futures_lite::future;
use herd_core::policy::link::SharedLink;
use herd_core::policy::{FloodLinks, LinkState, LinkWaker};
use herd_core::{ServeOptions, Service};

use crate::until;

/// The link task's wake-up: [`FloodLinks::send`] rings it when the task may be idle.
#[derive(Debug)]
pub struct LinkBell {
    ring: Sender<()>,
    heard: Receiver<()>,
}

impl LinkWaker for LinkBell {
    fn wake(&self) {
        // Full: a ring is already waiting to be heard.
        let _ = self.ring.try_send(());
    }
}

/// Builds the server's links and spawns one task per neighbour on the global executor.
pub fn spawn<S: Service>(options: &ServeOptions, service: &S) -> Arc<FloodLinks<LinkBell>> {
    let links = Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |_| {
        let (ring, heard) = bounded(1);
        LinkBell { ring, heard }
    }));
    for (i, (_, addr)) in options.neighbours.iter().enumerate() {
        task::spawn(drive(Arc::clone(&links), i, *addr));
    }
    links
}

/// What ended one wait of a link task.
enum Wake {
    Rung,
    Timer,
    Wrote(io::Result<usize>),
    /// A read of the link finished: the machine decides what it means (`FloodLink::on_read`).
    Read(io::Result<usize>),
}

/// One neighbour's link task: owns the socket, follows the machine.
async fn drive(links: Arc<FloodLinks<LinkBell>>, i: usize, addr: SocketAddr) {
    let Some(link) = links.get(i) else { return };
    let mut conn: Option<TcpStream> = None;
    // Bytes taken from the machine and not yet by the socket.
    let mut buf = Vec::new();
    // What the peer sends: its handshake answer, then nothing (anything more closes the link).
    let mut received = [0u8; 256];
    loop {
        let (connect, deadline) = {
            let mut machine = link.lock();
            machine.on_timeout(Instant::now());
            if machine.state() == LinkState::Down {
                conn = None;
                buf.clear();
            }
            (machine.poll_connect(), machine.poll_timeout())
        };
        if connect {
            let attempt = async { TcpStream::connect(addr).await.and_then(|s| s.set_nodelay(true).map(|()| s)).ok() };
            let expired = async {
                until(deadline).await;
                None
            };
            let stream = future::or(attempt, expired).await;
            let mut machine = link.lock();
            match stream {
                Some(stream) => {
                    machine.on_connected(Instant::now());
                    conn = Some(stream);
                }
                None => machine.on_connect_failed(Instant::now()),
            }
        }
        if let Some(stream) = &conn {
            link.lock().poll_transmit(&mut buf);
            if let Err(e) = write(stream, &mut buf, link).await {
                link.lock().on_closed(Instant::now(), &e.to_string());
                continue;
            }
        }
        let deadline = link.lock().poll_timeout();
        let rung = async {
            let _ = link.waker.heard.recv().await;
            Wake::Rung
        };
        let timer = async {
            until(deadline).await;
            Wake::Timer
        };
        let socket = async {
            let Some(stream) = &conn else { return pending().await };
            let gone = async { Wake::Read((&*stream).read(&mut received).await) };
            let wrote = async {
                if buf.is_empty() {
                    pending().await
                }
                Wake::Wrote((&*stream).write(&buf).await)
            };
            future::or(gone, wrote).await
        };
        let wake = future::or(rung, future::or(socket, timer)).await;
        match wake {
            Wake::Rung | Wake::Timer => {}
            Wake::Wrote(Ok(n)) => {
                buf.drain(..n);
                link.lock().consumed(n, Instant::now());
            }
            Wake::Wrote(Err(e)) => link.lock().on_closed(Instant::now(), &e.to_string()),
            Wake::Read(read) => link.lock().on_read(Instant::now(), read.map(|n| &received[..n])),
        }
    }
}

/// Writes what the socket takes now (one poll of a write at a time), telling the machine after
/// each write.
async fn write(stream: &TcpStream, buf: &mut Vec<u8>, link: &SharedLink<LinkBell>) -> io::Result<()> {
    while !buf.is_empty() {
        match future::poll_once((&*stream).write(buf)).await {
            Some(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Some(Ok(n)) => {
                buf.drain(..n);
                link.lock().consumed(n, Instant::now());
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(())
}
