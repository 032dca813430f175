//! Flood links: one task per neighbour, on core `i % cores`, drives herd-core's
//! [`FloodLink`](herd_core::policy::FloodLink) machine with completions.
//!
//! ```text
//!  connection task (any core) ── FloodLinks::send ──► FloodLink (queue, drops, retry timer) ── wake? ─┐
//!                                                                    channel of one ─► eventfd ─► ring │
//!  link task: loop { LinkSocket::poll: on_timeout, down? drop socket, connect? ── connect op          │
//!                    (until the machine's deadline) ── LinkSocket::connected                         │
//!                    no send in flight: poll_transmit into the send buffer ── send op                 │
//!                    wait for the first of: the wake ◄───────────────────────────────────────────────┘
//!                      send done ─► consumed(n), the rest sent again  (failure ─► on_closed)
//!                      recv done ─► on_read (the handshake answer; later, anything means gone)
//!                      the machine's next deadline }
//! ```
//!
//! Every decision is the machine's: when to connect and how long an attempt may take, the
//! handshake, how much to queue and what to drop, when a neighbour that takes nothing is cut off.
//! The task owns the socket and its two operations. A receive stays submitted for as long as the
//! link is connected: it completes with the neighbour's handshake answer, and after that only when
//! the neighbour goes away (peers never send on a flood link). A send carries what
//! `poll_transmit` handed out, in a buffer owned by the operation and swapped with the machine's
//! queue, so no bytes are copied on the way out.
//!
//! A connection task on another core queues an update in the shared machine and, when the machine
//! says the link's task may be idle, rings its waker: a one-slot channel whose stored message means
//! a wake while the task is busy is not lost. monoio delivers the wake to the link's core through
//! that ring's eventfd. The machine's lock is taken for a call or two, never across an `.await`.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use herd_core::policy::{FloodLinks, LinkSocket, LinkWaker, SharedLink};
use herd_core::{ServeOptions, Service};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::lent::Lent;
use crate::until;

/// The link task's waker: [`FloodLinks::send`] rings it when the task may be idle.
#[derive(Debug)]
pub struct LinkNotify(Sender<()>);

impl LinkWaker for LinkNotify {
    fn wake(&self) {
        let _ = self.0.try_send(()); // full: a wake is already pending
    }
}

/// The receiving end of one link's waker, for its task.
#[derive(Debug)]
pub struct Wakes(Receiver<()>);

/// Builds the server's links (shared by every core) and the wake-ups of their tasks, by neighbour.
pub fn build<S: Service>(options: &ServeOptions, service: &S) -> (Arc<FloodLinks<LinkNotify>>, Vec<Wakes>) {
    let mut wakes = Vec::new();
    let links = FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |_| {
        let (sender, receiver) = async_channel::bounded(1);
        wakes.push(Wakes(receiver));
        LinkNotify(sender)
    });
    (Arc::new(links), wakes)
}

/// A connected link's socket: its halves, each lent to at most one operation at a time.
struct LinkConn {
    reader: Lent<OwnedReadHalf<TcpStream>>,
    writer: Lent<OwnedWriteHalf<TcpStream>>,
}

/// What the link task waited for.
enum Woken {
    Sent(std::io::Result<usize>),
    Received(std::io::Result<usize>),
    Other,
}

/// One neighbour's link task: owns the socket, follows the machine.
pub async fn drive(links: Arc<FloodLinks<LinkNotify>>, i: usize, addr: SocketAddr, wakes: Wakes) {
    let Some(link) = links.get(i) else { return };
    let mut socket = LinkSocket::<RefCell<LinkConn>>::default();
    loop {
        if let Some(deadline) = socket.poll(link, Instant::now()) {
            let deadline = monoio::time::Instant::from_std(deadline);
            let stream = monoio::time::timeout_at(deadline, TcpStream::connect_addr(addr)).await;
            let stream = stream.ok().and_then(Result::ok).filter(|s| s.set_nodelay(true).is_ok());
            let conn = stream.map(|stream| {
                let (reader, writer) = stream.into_split();
                let reader = Lent::new(reader, Vec::with_capacity(256));
                RefCell::new(LinkConn { reader, writer: Lent::new(writer, Vec::new()) })
            });
            socket.connected(link, Instant::now(), conn);
        }
        let deadline = link.lock().poll_timeout();
        let Some(conn) = socket.socket() else {
            let notified = pin!(wakes.0.recv());
            let timer = pin!(until(deadline));
            first_of(notified, timer).await;
            continue;
        };
        submit(&mut conn.borrow_mut(), link);
        let woken = {
            let mut notified = pin!(wakes.0.recv());
            let mut timer = pin!(until(deadline));
            poll_fn(|cx| {
                let mut conn = conn.borrow_mut();
                if let Poll::Ready(sent) = conn.writer.poll_back(cx) {
                    return Poll::Ready(Woken::Sent(sent));
                }
                if let Poll::Ready(received) = conn.reader.poll_back(cx) {
                    return Poll::Ready(Woken::Received(received));
                }
                if notified.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woken::Other);
                }
                Poll::Pending
            })
            .await
        };
        let (now, conn) = (Instant::now(), &mut *conn.borrow_mut());
        match woken {
            Woken::Sent(Ok(n)) if n > 0 => {
                link.lock().consumed(n, now);
                if let Some(buf) = conn.writer.buf() {
                    buf.drain(..n.min(buf.len()));
                }
            }
            Woken::Sent(Ok(_)) => link.lock().on_closed(now, "the neighbour took nothing"),
            Woken::Sent(Err(e)) => link.lock().on_closed(now, &e.to_string()),
            Woken::Received(read) => {
                let bytes = conn.reader.buf().map_or(&[][..], |buf| &buf[..]);
                link.lock().on_read(now, read.map(|n| &bytes[..n.min(bytes.len())]));
            }
            Woken::Other => {}
        }
    }
}

/// Submits a receive if none is in flight, and a send of what the machine hands out (or what the
/// last send left) if none is.
fn submit<W>(conn: &mut LinkConn, link: &SharedLink<W>) {
    if let Some(buf) = conn.writer.buf() {
        if buf.is_empty() {
            link.lock().poll_transmit(buf);
        }
        if !buf.is_empty() {
            conn.writer.lend(|mut half, buf| async move {
                let (result, buf) = half.write(buf).await;
                (result, half, buf)
            });
        }
    }
    conn.reader.lend(|mut half, mut buf| async move {
        buf.clear();
        let (result, buf) = half.read(buf).await;
        (result, half, buf)
    });
}

/// Waits for whichever of two futures is ready first.
async fn first_of<A: Future, B: Future>(mut a: std::pin::Pin<&mut A>, mut b: std::pin::Pin<&mut B>) {
    poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
}
