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

use std::future::{pending, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use async_std::channel::{Receiver, Sender, bounded};
use async_std::io::{self, ReadExt};
use async_std::net::TcpStream;
use async_std::task;
use futures_lite::future;
use herd_core::policy::{FloodLinks, LinkSocket, LinkWaker};
use herd_core::{ServeOptions, Service};

use crate::{poll_write, until};

/// The link task's wake-up: [`FloodLinks::send`] rings it when the task may be idle. A channel of
/// one: a ring while the task is busy stays until it listens (the task holds the receiving end).
#[derive(Debug)]
pub struct LinkBell(Sender<()>);

impl LinkWaker for LinkBell {
    fn wake(&self) {
        // Full: a ring is already waiting to be heard.
        let _ = self.0.try_send(());
    }
}

/// Builds the server's links and spawns one task per neighbour on the global executor.
pub fn spawn<S: Service>(options: &ServeOptions, service: &S) -> Arc<FloodLinks<LinkBell>> {
    let (bells, heard): (Vec<_>, Vec<_>) = options.neighbours.iter().map(|_| bounded(1)).unzip();
    let links = Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |i| {
        LinkBell(bells[i].clone())
    }));
    for ((i, (_, addr)), heard) in options.neighbours.iter().enumerate().zip(heard) {
        task::spawn(drive(Arc::clone(&links), i, *addr, heard));
    }
    links
}

/// What ended one wait of a link task.
enum Wake {
    Rung,
    Timer,
    /// A write failed: the link closed.
    Failed,
    /// A read of the link finished: the machine decides what it means (`FloodLink::on_read`).
    Read(io::Result<usize>),
}

/// One neighbour's link task: owns the socket, follows the machine.
async fn drive(links: Arc<FloodLinks<LinkBell>>, i: usize, addr: SocketAddr, heard: Receiver<()>) {
    let Some(link) = links.get(i) else { return };
    let mut socket = LinkSocket::<TcpStream>::default();
    // What the peer sends: its handshake answer, then nothing (anything more closes the link).
    let mut received = [0u8; 256];
    loop {
        if let Some(deadline) = socket.poll(link, Instant::now()) {
            let attempt = async { TcpStream::connect(addr).await.and_then(|s| s.set_nodelay(true).map(|()| s)).ok() };
            let expired = async {
                until(Some(deadline)).await;
                None
            };
            socket.connected(link, Instant::now(), future::or(attempt, expired).await);
        }
        // What the machine has goes out before the deadline is read: a link whose bytes all left
        // has none (no timer to arm).
        poll_fn(|cx| {
            socket.transmit(link, Instant::now(), |s, b| poll_write(s, cx, b));
            Poll::Ready(())
        })
        .await;
        let deadline = link.lock().poll_timeout();
        let rung = async {
            let _ = heard.recv().await;
            Wake::Rung
        };
        let timer = async {
            until(deadline).await;
            Wake::Timer
        };
        // A clone of the socket (async-std's are shared handles) reads while the link writes.
        let reader = socket.socket().cloned();
        let connected = async {
            let Some(stream) = &reader else { return pending().await };
            let gone = async { Wake::Read((&*stream).read(&mut received).await) };
            // Every later poll (a full socket registered the task for writability) writes what the
            // machine has, as far as the socket takes it; ends only when a write failed.
            let transmit = poll_fn(|cx| {
                socket.transmit(link, Instant::now(), |s, b| poll_write(s, cx, b));
                if socket.socket().is_some() { Poll::Pending } else { Poll::Ready(Wake::Failed) }
            });
            future::or(gone, transmit).await
        };
        match future::or(rung, future::or(connected, timer)).await {
            Wake::Rung | Wake::Timer | Wake::Failed => {}
            Wake::Read(read) => link.lock().on_read(Instant::now(), read.map(|n| &received[..n])),
        }
    }
}
