//! Flood links: one smol task per neighbour drives herd-core's
//! [`FloodLink`](herd_core::policy::FloodLink) machine.
//!
//! ```text
//!  connection task ── FloodLinks::send ──► FloodLink (queue, drops, retry timer) ── wake? ──► channel(1)
//!                                                                                                │
//!  link task: loop { lock: on_timeout, poll_connect ── connect (raced with Timer::at(deadline))  │
//!                    lock: poll_transmit ── write(2) what the socket takes, consumed(n) each     │
//!                    or { recv ◄─────────────────────────────────────────────────────────────────┘
//!                         readable (read: on_read), writable (bytes left),
//!                         Timer::at(poll_timeout) } }
//! ```
//!
//! Everything a link decides lives in the machine: when to connect and how long an attempt may
//! take (`link_retry`, `link_connect_timeout`), how much to queue and what to drop and count
//! (`link_queue_bytes`), when a neighbour that takes nothing is given up (`link_write_stall`),
//! and the hello. The task only owns the socket and waits, smol's way: a bounded(1)
//! `smol::channel` (async-channel) is the [`LinkWaker`] (a ring while the task is busy stays in
//! the channel), and `future::or` races it against `Async::readable` / `Async::writable` and a
//! `Timer` at the machine's next deadline. The machine's lock is taken for a call or two and
//! never held across an `.await`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use herd_core::policy::{FloodLinks, LinkSocket, LinkWaker};
use herd_core::{ServeOptions, Service};
use smol::channel::{Receiver, Sender, bounded};
use smol::{Async, Executor, future};

use crate::timer;

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

/// Builds the server's links and spawns one task per neighbour on `ex`.
pub fn spawn<S: Service>(ex: &Executor<'static>, options: &ServeOptions, service: &S) -> Arc<FloodLinks<LinkBell>> {
    let links = Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |_| {
        let (ring, heard) = bounded(1);
        LinkBell { ring, heard }
    }));
    for (i, (_, addr)) in options.neighbours.iter().enumerate() {
        ex.spawn(drive(Arc::clone(&links), i, *addr)).detach();
    }
    links
}

/// One neighbour's link task: owns the socket, follows the machine.
async fn drive(links: Arc<FloodLinks<LinkBell>>, i: usize, addr: SocketAddr) {
    let Some(link) = links.get(i) else { return };
    let mut socket = LinkSocket::<Async<TcpStream>>::default();
    loop {
        if let Some(deadline) = socket.poll(link, Instant::now()) {
            let attempt = async { Async::<TcpStream>::connect(addr).await.ok() };
            let expired = async {
                timer(Some(deadline)).await;
                None
            };
            let stream = future::or(attempt, expired).await.filter(|s| s.get_ref().set_nodelay(true).is_ok());
            socket.connected(link, Instant::now(), stream);
        }
        // `write(2)` on the non-blocking socket: what it takes now.
        socket.transmit(link, Instant::now(), |stream, bytes| stream.get_ref().write(bytes));
        let deadline = link.lock().poll_timeout();
        // Each wait says whether the socket became readable (the peer may have closed or sent).
        let rung = async {
            let _ = link.waker.heard.recv().await;
            false
        };
        let expired = async {
            timer(deadline).await;
            false
        };
        let socket_ready = async {
            let Some(stream) = socket.socket() else { return std::future::pending().await };
            // An error here is the read's to report.
            let readable = async {
                let _ = stream.readable().await;
                true
            };
            let writable = async {
                if !socket.has_unsent() {
                    std::future::pending::<()>().await;
                }
                let _ = stream.writable().await;
                false
            };
            future::or(readable, writable).await
        };
        if future::or(rung, future::or(socket_ready, expired)).await {
            socket.on_readable(link, Instant::now(), |stream, buf| stream.get_ref().read(buf));
        }
    }
}
