//! Flood links: one tokio task per neighbour drives herd-core's [`FloodLink`](herd_core::policy::FloodLink)
//! machine.
//!
//! ```text
//!  connection task ── FloodLinks::send ──► FloodLink (queue, drops, retry timer) ── wake? ──► Notify
//!                                                                                                │
//!  link task: loop { lock: on_timeout, poll_connect ── connect (until the machine's deadline)    │
//!                    lock: poll_transmit ── try_write, consumed(n) after each write              │
//!                    select! { notified ◄────────────────────────────────────────────────────────┘
//!                              readable (read: on_read), writable (bytes left),
//!                              sleep_until(poll_timeout) } }
//! ```
//!
//! Everything a link decides lives in the machine: when to connect and how long an attempt may
//! take (`link_retry`, `link_connect_timeout`), how much to queue and what to drop and count
//! (`link_queue_bytes`), when a neighbour that takes nothing is given up (`link_write_stall`),
//! and the hello. The task only owns the socket and waits, tokio's way: a `tokio::sync::Notify`
//! is the [`LinkWaker`] (its stored permit means a wake while the task is busy is not lost), and
//! one `select!` waits for it, the socket and the machine's next deadline at once. The machine's
//! lock is taken for a call or two and never held across an `.await`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use herd_core::policy::{FloodLinks, LinkSocket, LinkWaker};
use herd_core::{ServeOptions, Service};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::until;

/// The link task's wake-up: [`FloodLinks::send`] rings it when the task may be idle.
#[derive(Debug, Default)]
pub struct LinkNotify(Notify);

impl LinkWaker for LinkNotify {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Builds the server's links and spawns one task per neighbour on the current runtime.
pub fn spawn<S: Service>(options: &ServeOptions, service: &S) -> Arc<FloodLinks<LinkNotify>> {
    let links =
        Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |_| LinkNotify::default()));
    for (i, (_, addr)) in options.neighbours.iter().enumerate() {
        tokio::spawn(drive(Arc::clone(&links), i, *addr));
    }
    links
}

/// One neighbour's link task: owns the socket, follows the machine.
async fn drive(links: Arc<FloodLinks<LinkNotify>>, i: usize, addr: SocketAddr) {
    let Some(link) = links.get(i) else { return };
    let mut socket = LinkSocket::default();
    loop {
        if let Some(deadline) = socket.poll(link, Instant::now()) {
            let stream = tokio::select! {
                stream = TcpStream::connect(addr) => stream.and_then(|s| s.set_nodelay(true).map(|()| s)).ok(),
                () = until(Some(deadline)) => None,
            };
            socket.connected(link, Instant::now(), stream);
        }
        socket.transmit(link, Instant::now(), |stream, bytes| stream.try_write(bytes));
        let (notified, deadline) = (link.waker.0.notified(), link.lock().poll_timeout());
        let Some(stream) = socket.socket() else {
            tokio::select! { () = notified => {}, () = until(deadline) => {} }
            continue;
        };
        tokio::select! {
            () = notified => {}
            ready = stream.readable() => socket.on_readable(link, Instant::now(), |s, buf| ready.and_then(|()| s.try_read(buf))),
            _ = stream.writable(), if socket.has_unsent() => {}
            () = until(deadline) => {}
        }
    }
}
