//! Flood links in callbacks: neighbour `i`'s link is driven on loop `i % loops` by one function,
//! [`LinkDriver::drive`], which every callback of the link calls again.
//!
//! ```text
//!  mail Wake(i) (a flood queued, any loop) ─┐
//!  cx.at(machine.poll_timeout()) ───────────┤
//!  connecting(|cx, conn| on_connected) ─────┼─► drive: on_timeout; Down? drop the socket; poll_connect?
//!  read_bytes(|cx, bytes| on_read) ─────────┤            connect; poll_transmit ─► conn.write ─► consumed(n)
//!  when_writable(|cx| …) ───────────────────┘            full? when_writable; timer at poll_timeout
//! ```
//!
//! Every decision is the shared [`FloodLink`](herd_core::policy::FloodLink) machine's (herd-core):
//! when to connect and give up connecting, what to send, what to drop, when a neighbour that takes
//! nothing is cut off. The driver holds the machine's lock only for a call or two, never across a
//! syscall. What the link reads goes to the machine's `on_read`: the neighbour's handshake answer,
//! and after it (peers never send again) only the end of the link.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use herd_core::policy::{FloodLink, FloodLinks, LinkState, LinkWaker};
use mio::net::TcpStream;

use crate::Mail;
use crate::reactor::{Alarm, Conn, Cx, Flow, Input, Mailbox};

/// The waker of neighbour `link`'s driver: mail to the loop it lives on.
#[derive(Debug)]
pub struct LinkWake {
    pub home: Mailbox<Mail>,
    pub link: usize,
}

impl LinkWaker for LinkWake {
    fn wake(&self) {
        let _ = self.home.send(Mail::Wake(self.link));
    }
}

/// The driver of one neighbour's link, on the loop it lives on.
pub struct LinkDriver {
    links: Arc<FloodLinks<LinkWake>>,
    link: usize,
    addr: SocketAddr,
    /// The socket; connected once the machine is `Handshaking` or `Up`.
    conn: Cell<Option<Conn>>,
    /// Bytes taken from the machine and not yet by the socket.
    buf: RefCell<Vec<u8>>,
    /// The machine's deadline.
    alarm: Alarm,
}

impl LinkDriver {
    /// The driver of neighbour `link`, at `addr`; its first turn sets the link's first timer.
    pub fn start(cx: &mut Cx, links: &Arc<FloodLinks<LinkWake>>, link: usize, addr: SocketAddr) -> Rc<Self> {
        let (conn, buf, alarm) = (Cell::default(), RefCell::default(), Alarm::default());
        let driver = Rc::new(Self { links: Arc::clone(links), link, addr, conn, buf, alarm });
        let first = Rc::clone(&driver);
        cx.defer(move |cx| first.drive(cx));
        driver
    }

    /// Does what the machine asks: act on its deadline, drop a dead socket, connect, write what it
    /// hands out, and wait for the next thing that can change it.
    pub fn drive(self: &Rc<Self>, cx: &mut Cx) {
        self.drive_after(cx, &|_, _| {});
    }

    /// Tells the machine `event` (what the socket said), then drives.
    fn drive_after(self: &Rc<Self>, cx: &mut Cx, event: &dyn Fn(&mut FloodLink, Instant)) {
        let Some(shared) = self.links.get(self.link) else { return };
        let now = Instant::now();
        let mut link = shared.lock();
        event(&mut link, now);
        link.on_timeout(now);
        let (state, connect) = (link.state(), link.poll_connect());
        drop(link);
        let mut buf = self.buf.borrow_mut();
        if state == LinkState::Down || connect {
            if let Some(conn) = self.conn.take() {
                conn.close(cx);
            }
            buf.clear();
        }
        if connect {
            let this = Rc::clone(self);
            let stream = TcpStream::connect(self.addr).and_then(|stream| stream.set_nodelay(true).map(|()| stream));
            match stream.and_then(|stream| cx.connecting(stream, move |cx, done| this.connected(cx, done))) {
                Ok(conn) => self.conn.set(Some(conn)),
                Err(_) => shared.lock().on_connect_failed(now),
            }
        }
        if let Some(conn) = self.conn.get().filter(|_| matches!(state, LinkState::Handshaking | LinkState::Up)) {
            shared.lock().poll_transmit(&mut buf);
            while !buf.is_empty() {
                match conn.write(cx, &buf) {
                    Ok(0) => {
                        let this = Rc::clone(self);
                        conn.when_writable(cx, move |cx| this.drive(cx));
                        break;
                    }
                    Ok(n) => {
                        buf.drain(..n);
                        shared.lock().consumed(n, now);
                    }
                    Err(e) => {
                        drop(buf);
                        return self.drive_after(cx, &|link, now| link.on_closed(now, &e.to_string()));
                    }
                }
            }
        }
        let this = Rc::clone(self);
        self.alarm.set(cx, shared.lock().poll_timeout(), move |cx| this.drive(cx));
    }

    /// The connect finished: tell the machine, hand it what the link reads, and drive.
    fn connected(self: &Rc<Self>, cx: &mut Cx, done: io::Result<Conn>) {
        let Ok(conn) = done else { return self.drive_after(cx, &|link, now| link.on_connect_failed(now)) };
        let this = Rc::clone(self);
        conn.read_bytes(cx, move |cx, input| {
            match input {
                Input::Data(bytes) => this.drive_after(cx, &|link, now| link.on_read(now, Ok(bytes))),
                Input::Failed(e) => this.drive_after(cx, &|link, now| link.on_closed(now, &e.to_string())),
                _ => this.drive_after(cx, &|link, now| link.on_read(now, Ok(&[]))),
            }
            // Read on while this connection is still the link's.
            if this.conn.get() == Some(conn) { Flow::Continue } else { Flow::Pause }
        });
        self.drive_after(cx, &|link, now| link.on_connected(now));
    }
}
