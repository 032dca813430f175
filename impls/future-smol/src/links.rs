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

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use herd_core::policy::link::SharedLink;
use herd_core::policy::{FloodLinks, LinkState, LinkWaker};
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
    let mut conn: Option<Async<TcpStream>> = None;
    // Bytes taken from the machine and not yet by the socket.
    let mut buf = Vec::new();
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
            let attempt = async { Async::<TcpStream>::connect(addr).await.ok() };
            let expired = async {
                timer(deadline).await;
                None
            };
            let stream = future::or(attempt, expired).await;
            let mut machine = link.lock();
            match stream {
                Some(stream) if stream.get_ref().set_nodelay(true).is_ok() => {
                    machine.on_connected(Instant::now());
                    conn = Some(stream);
                }
                _ => machine.on_connect_failed(Instant::now()),
            }
        }
        if let Some(stream) = &conn {
            link.lock().poll_transmit(&mut buf);
            if let Err(e) = write(stream, &mut buf, link) {
                link.lock().on_closed(Instant::now(), &e.to_string());
                continue;
            }
        }
        let deadline = link.lock().poll_timeout();
        // Each wait says whether the socket became readable (the peer may have closed or sent).
        let rung = async {
            let _ = link.waker.heard.recv().await;
            Ok(false)
        };
        let expired = async {
            timer(deadline).await;
            Ok(false)
        };
        let socket = async {
            let Some(stream) = &conn else { return std::future::pending().await };
            let readable = async { stream.readable().await.map(|()| true) };
            let writable = async {
                if buf.is_empty() {
                    std::future::pending::<()>().await;
                }
                stream.writable().await.map(|()| false)
            };
            future::or(readable, writable).await
        };
        match (future::or(rung, future::or(socket, expired)).await, &conn) {
            (Err(e), _) => link.lock().on_read(Instant::now(), Err(e)),
            (Ok(true), Some(stream)) => {
                let mut bytes = [0_u8; 256];
                let read = stream.get_ref().read(&mut bytes);
                link.lock().on_read(Instant::now(), read.map(|n| &bytes[..n]));
            }
            _ => {}
        }
    }
}

/// Writes what the socket takes now (`write(2)` on the non-blocking socket), telling the machine
/// after each write.
fn write(stream: &Async<TcpStream>, buf: &mut Vec<u8>, link: &SharedLink<LinkBell>) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.get_ref().write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.drain(..n);
                link.lock().consumed(n, Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
