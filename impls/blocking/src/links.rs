//! Flood links for the thread styles: one thread per neighbour drives its [`FloodLink`] machine.
//!
//! The machine (herd-core) decides when to connect, what to send and what to drop; this thread
//! only connects, writes and waits. It waits in `poll(2)` on two things at once: the link's socket
//! (readable means the neighbour closed it or sent something, which peers never do; writable
//! means the socket takes more) and a [`Wakeup`] that [`FloodLinks::send`] rings when an update is
//! queued for an idle link — bounded by the machine's next deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use herd_core::policy::{LinkState, SharedLink};
use herd_core::{ServeOptions, Service};

use crate::wait::{self, Wakeup};

/// Every neighbour's link, indexed like [`herd_core::Flood::to`].
pub type FloodLinks = herd_core::policy::FloodLinks<Wakeup>;

/// Makes the links and starts one driver thread per neighbour.
pub fn spawn<S: Service>(options: &ServeOptions, service: &S) -> io::Result<Arc<FloodLinks>> {
    let mut wakeups = Vec::new();
    for _ in &options.neighbours {
        wakeups.push(Some(Wakeup::new()?));
    }
    let links = Arc::new(FloodLinks::new(options, Instant::now(), service.stats(), service.log(), |i| {
        wakeups[i].take().expect("one wakeup per neighbour")
    }));
    for (i, (name, addr)) in options.neighbours.iter().enumerate() {
        let (links, addr) = (Arc::clone(&links), *addr);
        thread::Builder::new().name(format!("link-{name}")).spawn(move || {
            if let Some(link) = links.get(i) {
                drive(link, addr);
            }
        })?;
    }
    Ok(links)
}

/// One link's thread: connect when told, write what the machine hands out, wait.
fn drive(link: &SharedLink<Wakeup>, addr: SocketAddr) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    loop {
        let (connect, deadline) = {
            let mut m = link.lock();
            m.on_timeout(Instant::now());
            if m.state() == LinkState::Down {
                conn = None;
                buf.clear();
            }
            (m.poll_connect(), m.poll_timeout())
        };
        if connect {
            let budget = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or_default();
            let attempt = if budget.is_zero() {
                Err(io::ErrorKind::TimedOut.into())
            } else {
                TcpStream::connect_timeout(&addr, budget)
            };
            let attempt = attempt.and_then(|s| s.set_nodelay(true).and(s.set_nonblocking(true)).map(|()| s));
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
            && let Err(e) = write_some(stream, &mut buf, link)
        {
            link.lock().on_closed(Instant::now(), &e.to_string());
            continue;
        }
        let seen = match wait::socket_or_wakeup(conn.as_ref(), !buf.is_empty(), &link.waker, deadline) {
            Ok(seen) => seen,
            Err(_) => continue,
        };
        if let (true, Some(stream)) = (seen.readable, &mut conn) {
            let mut probe = [0_u8; 64];
            let gone = match stream.read(&mut probe) {
                Ok(0) => Some("closed by peer".to_owned()),
                Ok(_) => Some("peer sent data on a flood link".to_owned()),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(reason) = gone {
                link.lock().on_closed(Instant::now(), &reason);
            }
        }
    }
}

/// Takes what the machine has to send and writes what the socket takes now, reporting each write.
/// The machine is locked only around its calls, never across a write.
fn write_some(stream: &mut TcpStream, buf: &mut Vec<u8>, link: &SharedLink<Wakeup>) -> io::Result<()> {
    link.lock().poll_transmit(buf);
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.drain(..n);
                link.lock().consumed(n, Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
