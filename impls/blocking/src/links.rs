//! Flood links for the thread styles: one thread per neighbour drives its [`FloodLink`] machine.
//!
//! The machine (herd-core) decides when to connect, what to send and what to drop; this thread
//! only connects, writes and waits. Idle, it sleeps on a [`Bell`] that [`FloodLinks::send`] rings
//! when an update is queued for it, bounded by the machine's next deadline. Busy, it writes on a
//! blocking socket whose send timeout is the machine's stall limit, so a neighbour that stops
//! reading returns the write to the machine, which decides whether the link has stalled. While
//! the machine awaits the neighbour's handshake answer, the thread blocks in a read bounded by
//! the machine's deadline.
//!
//! [`FloodLink`]: herd_core::policy::FloodLink

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use herd_core::policy::{LinkState, SharedLink};
use herd_core::{ServeOptions, Service};

use crate::wait;

/// Every neighbour's link, indexed like [`herd_core::Flood::to`].
pub type FloodLinks = herd_core::policy::FloodLinks<Bell>;

/// How a sender wakes an idle link thread: a one-slot channel, so rings coalesce and never block.
/// Its receiver waits the way a crossbeam channel does (a short spin, then a futex), so a burst
/// of updates queued while the thread is waking leaves in one write.
#[derive(Debug)]
pub struct Bell(Sender<()>);

impl herd_core::policy::LinkWaker for Bell {
    fn wake(&self) {
        let _ = self.0.try_send(());
    }
}

/// Makes the links and starts one driver thread per neighbour.
pub fn spawn<S: Service>(options: &ServeOptions, service: &S) -> io::Result<Arc<FloodLinks>> {
    let (mut bells, mut waits) = (Vec::new(), Vec::new());
    for _ in &options.neighbours {
        let (tx, rx) = crossbeam_channel::bounded(1);
        bells.push(Some(Bell(tx)));
        waits.push(rx);
    }
    let links = Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |i| {
        bells[i].take().expect("one bell per neighbour")
    }));
    let stall = options.limits.link_write_stall;
    for ((i, (name, addr)), wait) in options.neighbours.iter().enumerate().zip(waits) {
        let (links, addr) = (Arc::clone(&links), *addr);
        thread::Builder::new().name(format!("link-{name}")).spawn(move || {
            if let Some(link) = links.get(i) {
                drive(link, addr, stall, &wait);
            }
        })?;
    }
    Ok(links)
}

/// One link's thread: connect when told, write what the machine hands out, wait.
fn drive(link: &SharedLink<Bell>, addr: SocketAddr, stall: Duration, bell: &Receiver<()>) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    loop {
        let (connect, deadline, state) = {
            let mut m = link.lock();
            m.on_timeout(Instant::now());
            if m.state() == LinkState::Down {
                conn = None;
                buf.clear();
            }
            m.poll_transmit(&mut buf);
            (m.poll_connect(), m.poll_timeout(), m.state())
        };
        if connect {
            let attempt = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .filter(|budget| !budget.is_zero())
                .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
                .and_then(|budget| TcpStream::connect_timeout(&addr, budget))
                .and_then(|s| s.set_nodelay(true).and(s.set_write_timeout(Some(stall))).map(|()| s));
            let mut m = link.lock();
            match attempt {
                Ok(stream) => {
                    conn = Some(stream);
                    m.on_connected(Instant::now());
                }
                Err(_) => m.on_connect_failed(Instant::now()),
            }
            continue;
        }
        if let Some(stream) = &mut conn
            && !buf.is_empty()
        {
            // Peers never send on a flood link: readable means it closed (or is not a herd member).
            let sent =
                if wait::peer_closed(stream) { Err("closed by peer".to_owned()) } else { send(stream, &mut buf, link) };
            if let Err(reason) = sent {
                link.lock().on_closed(Instant::now(), &reason);
            }
            continue;
        }
        if let Some(stream) = &mut conn
            && state == LinkState::Handshaking
        {
            let mut answer = [0_u8; 256];
            let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
            // A read that times out returns WouldBlock: the machine ignores it and its own
            // deadline, checked at the top of the loop, decides.
            let read = stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .and_then(|()| stream.read(&mut answer));
            link.lock().on_read(Instant::now(), read.map(|n| &answer[..n]));
            continue;
        }
        let _ = match deadline {
            Some(deadline) => bell.recv_deadline(deadline).ok(),
            None => bell.recv().ok(),
        };
    }
}

/// Writes `buf`, reporting each write to the machine. A write that times out hands the decision
/// to the machine: it closes the link if the neighbour has taken nothing for its stall limit.
/// The machine is locked only around its calls, never across a write.
fn send(stream: &mut TcpStream, buf: &mut Vec<u8>, link: &SharedLink<Bell>) -> Result<(), String> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err("neighbour took no bytes".to_owned()),
            Ok(n) => {
                buf.drain(..n);
                link.lock().consumed(n, Instant::now());
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                let mut m = link.lock();
                m.on_timeout(Instant::now());
                if m.state() != LinkState::Up {
                    return Ok(()); // closed by the machine; the loop drops the socket
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
