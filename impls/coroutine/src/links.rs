//! Flood links: a driver coroutine per neighbour, steering herd-core's [`herd_core::policy::FloodLink`].
//!
//! ```text
//! driver:  lock ─► on_timeout ─► poll_connect? ─► (unlock) connect_timeout ─► on_connected ─► go!(watcher)
//!   ▲        poll_transmit(buf) ─► (unlock) write ─► consumed(n), after each write
//!   │        or, nothing to write: Signal::wait_until(poll_timeout)
//!   └── woken by FloodLinks::send, or by the watcher: it sent what it read (the handshake's
//!       answer, or an empty read: the end) down a channel, and the driver hands it to on_read
//! ```
//! The machine decides everything (when to connect, what to queue or drop, when a stalled
//! neighbour is given up); the driver does the I/O and the waiting, never holding the machine's
//! lock across either. A coroutine waits on one thing at a time, so a second coroutine, the
//! watcher, reads the socket: the neighbour's one handshake answer, then only its end (peers never
//! send on a flood link after the answer). It hands what it read to the driver and wakes it; only
//! the driver talks to the machine, so a watcher of an old connection can never close a new one.
//! A write parks until the socket takes bytes or the machine's stall deadline passes (may's socket
//! write timeout).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use herd_core::Service;
use herd_core::policy::LinkWaker;
use herd_core::policy::link::{LinkState, SharedLink};
use may::io::{SplitIo, SplitReader, SplitWriter};
use may::net::TcpStream;

use crate::{Shared, Signal, until};

/// An open link: the writing half, and what its watcher read (an empty read: the end).
struct Conn {
    writer: SplitWriter<TcpStream>,
    inbox: Receiver<Vec<u8>>,
}

impl Drop for Conn {
    /// Shutting the socket ends the watcher's wait (it holds the reading half).
    fn drop(&mut self) {
        let _ = self.writer.inner().shutdown(Shutdown::Both);
    }
}

/// Runs neighbour `i`'s link forever.
pub(crate) fn drive<S: Service>(shared: &Arc<Shared<S>>, i: usize, addr: SocketAddr) {
    let Some(link) = shared.links.get(i) else { return };
    let (mut conn, mut buf) = (None::<Conn>, Vec::new());
    loop {
        let now = Instant::now();
        let mut machine = link.lock();
        while let Some(read) = conn.as_ref().and_then(|c| c.inbox.try_recv().ok()) {
            machine.on_read(now, Ok(&read));
        }
        machine.on_timeout(now);
        if machine.state() == LinkState::Down {
            conn = None;
            buf.clear();
        }
        let connect = machine.poll_connect();
        machine.poll_transmit(&mut buf);
        let deadline = machine.poll_timeout();
        drop(machine);
        if connect {
            match open(addr, deadline.map_or(Duration::ZERO, until)) {
                Ok((reader, writer)) => {
                    link.lock().on_connected(Instant::now());
                    let ((tx, inbox), shared) = (mpsc::channel(), Arc::clone(shared));
                    may::go!(move || watch(reader, &tx, &shared, i));
                    conn = Some(Conn { writer, inbox });
                }
                Err(_) => link.lock().on_connect_failed(Instant::now()),
            }
        } else if let Some(c) = conn.as_mut().filter(|_| !buf.is_empty()) {
            transmit(c, &mut buf, deadline, link);
        } else {
            link.waker.wait_until(deadline);
        }
    }
}

/// The watcher: parks in a read until the neighbour sends (its handshake answer; anything later
/// ends the link in the machine) or the socket ends (the neighbour closed it, or the driver shut it),
/// and hands neighbour `i`'s driver what it read.
fn watch<S: Service>(mut reader: SplitReader<TcpStream>, tx: &Sender<Vec<u8>>, shared: &Shared<S>, i: usize) {
    let (mut bytes, mut n) = ([0_u8; 256], 1);
    while n > 0 {
        n = reader.read(&mut bytes).unwrap_or(0); // an error ends the link like the end of stream
        let _ = tx.send(bytes[..n].to_vec());
        shared.links.get(i).inspect(|link| link.waker.wake());
    }
}

/// Connects within the machine's attempt deadline, the halves registered apart.
fn open(addr: SocketAddr, left: Duration) -> io::Result<(SplitReader<TcpStream>, SplitWriter<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, left)?;
    stream.set_nodelay(true)?;
    stream.split()
}

/// Writes what the socket takes, parking until it is writable or the stall deadline passes.
fn transmit(conn: &mut Conn, buf: &mut Vec<u8>, deadline: Option<Instant>, link: &SharedLink<Signal>) {
    let written = conn.writer.inner().set_write_timeout(deadline.map(until)).and_then(|()| conn.writer.write(buf));
    let now = Instant::now();
    let mut machine = link.lock();
    match written {
        Ok(n) => {
            buf.drain(..n);
            machine.consumed(n, now);
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
        Err(e) => machine.on_closed(now, &e.to_string()),
    }
}
