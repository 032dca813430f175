//! A flood link's driver: the handler that owns neighbour `i`'s socket, on loop `i % loops`.
//!
//! ```text
//!  Wake (an update queued, from any loop) ─┐
//!  Timer (the machine's poll_timeout) ─────┼─► on_timeout / on_connected / on_connect_failed / on_read
//!  Ready (connected, writable, readable) ──┘        │
//!                                                   ▼
//!  Down? drop the socket and what it held ─► poll_connect? connect ─► poll_transmit ─► write,
//!  consumed(n) after each write ─► cx.wake_at(poll_timeout)
//! ```
//!
//! Every decision is the shared [`FloodLink`](herd_core::policy::FloodLink) machine's (herd-core):
//! when to connect and give up connecting, what to send, what to drop, when a neighbour that takes
//! nothing is cut off. The driver holds the machine's lock only for a call or two, never across a
//! syscall. A readable link is read once and what the read returned goes to the machine's
//! `on_read`: the neighbour's handshake answer (one short line, so one read takes it whole), and
//! after that, since peers never send again, anything but would-block means the neighbour is gone.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use herd_core::Service;
use herd_core::policy::LinkState;
use herd_core::policy::link::SharedLink;
use mio::net::TcpStream;

use crate::reactor::{Event, Handler, Next, Ready, poll_connected, read_now, write_now};
use crate::{Cx, LinkWake, Msg, World};

/// The driver of one neighbour's link.
pub struct LinkDriver {
    link: usize,
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// The stream's connect has not completed yet.
    connecting: bool,
    /// Bytes taken from the machine and not yet by the socket.
    buf: Vec<u8>,
}

impl LinkDriver {
    pub fn new(link: usize, addr: SocketAddr) -> Self {
        Self { link, addr, stream: None, connecting: false, buf: Vec::new() }
    }

    /// Tells the machine what the socket says: connected, failed, or closed by the peer.
    fn on_ready(&mut self, ready: Ready, shared: &SharedLink<LinkWake>, now: Instant) {
        let Some(stream) = &mut self.stream else { return };
        match poll_connected(stream, &mut self.connecting) {
            Some(Ok(())) => shared.lock().on_connected(now),
            Some(Err(_)) => shared.lock().on_connect_failed(now),
            None => {}
        }
        if !self.connecting && (ready.readable || ready.hangup) {
            let mut bytes = [0_u8; 256];
            let read = read_now(stream, &mut bytes).and_then(|n| n.ok_or(io::ErrorKind::WouldBlock.into()));
            shared.lock().on_read(now, read.map(|n| &bytes[..n]));
        }
    }

    /// Does what the machine asks: drop a dead socket, connect, write what it hands out.
    fn drive<S: Service>(&mut self, shared: &SharedLink<LinkWake>, cx: &mut Cx<S>, now: Instant) {
        let mut link = shared.lock();
        let (state, connect) = (link.state(), link.poll_connect());
        drop(link);
        if state == LinkState::Down || connect {
            self.stream = None;
            self.buf.clear();
        }
        if connect {
            match cx.connect(self.addr).and_then(|stream| stream.set_nodelay(true).map(|()| stream)) {
                Ok(stream) => (self.stream, self.connecting) = (Some(stream), true),
                Err(_) => shared.lock().on_connect_failed(now),
            }
        }
        let connected = matches!(state, LinkState::Handshaking | LinkState::Up);
        let Some(stream) = self.stream.as_mut().filter(|_| connected) else { return };
        shared.lock().poll_transmit(&mut self.buf);
        while !self.buf.is_empty() {
            match write_now(stream, &self.buf) {
                Ok(Some(n)) => {
                    self.buf.drain(..n);
                    shared.lock().consumed(n, now);
                }
                Ok(None) => return,
                Err(e) => {
                    shared.lock().on_closed(now, &e.to_string());
                    return self.drive(shared, cx, now); // the link is down: drop the socket
                }
            }
        }
    }
}

impl<S: Service> Handler<World<S>, Msg> for LinkDriver {
    fn on_event(&mut self, event: Event<Msg>, cx: &mut Cx<S>) -> Next {
        let now = Instant::now();
        let links = Arc::clone(&cx.world.links);
        let Some(shared) = links.get(self.link) else { return Next::Done };
        match event {
            Event::Ready(ready) => self.on_ready(ready, shared, now),
            Event::Timer => shared.lock().on_timeout(now),
            Event::Message(_) => {}
        }
        self.drive(shared, cx, now);
        cx.wake_at(shared.lock().poll_timeout());
        Next::Keep
    }
}
