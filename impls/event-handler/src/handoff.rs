//! What crosses between loops: accepted connections (from the acceptor, on loop 0) and flood lines
//! (for a neighbour link that lives on another loop). Both arrive through a loop's [`Remote`] and are
//! turned into ordinary events by its [`Mailbox`] handler.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use herd_core::{ServerStats, Service};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Waker};

use crate::client::ClientConn;
use crate::link::Route;
use crate::reactor::{Context, Event, Handler, Next};

/// How long the acceptor waits before accepting again after an error (e.g. out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How other threads reach one loop: two channels and the waker of its epoll.
#[derive(Debug)]
pub struct Remote {
    conns: Sender<TcpStream>,
    floods: Sender<(usize, Arc<[u8]>)>,
    waker: Waker,
    /// Set by the first sender after the mailbox was emptied, so a burst costs one wake-up.
    notified: AtomicBool,
}

/// The receiving ends, owned by the loop's [`Mailbox`].
#[derive(Debug)]
pub struct Inbox {
    conns: Receiver<TcpStream>,
    floods: Receiver<(usize, Arc<[u8]>)>,
}

/// A loop's mailbox: its [`Remote`] for others, its [`Inbox`] for itself. `flood_queue` bounds the
/// flood lines waiting for this loop's links (past it they are dropped and counted).
pub fn mailbox(waker: Waker, flood_queue: usize) -> (Remote, Inbox) {
    let (conns_tx, conns) = crossbeam_channel::unbounded();
    let (floods_tx, floods) = crossbeam_channel::bounded(flood_queue);
    (Remote { conns: conns_tx, floods: floods_tx, waker, notified: AtomicBool::new(false) }, Inbox { conns, floods })
}

impl Remote {
    /// Hands an accepted connection to this loop.
    pub fn adopt(&self, stream: TcpStream) -> io::Result<()> {
        self.conns.send(stream).map_err(|_| io::Error::other("event loop has stopped"))?;
        self.wake()
    }

    /// Hands a flood line for neighbour `link` to this loop; false when its queue is full.
    pub fn flood(&self, link: usize, line: Arc<[u8]>) -> bool {
        match self.floods.try_send((link, line)) {
            Ok(()) => self.wake().is_ok(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    fn wake(&self) -> io::Result<()> {
        if self.notified.swap(true, Ordering::AcqRel) { Ok(()) } else { self.waker.wake() }
    }
}

/// The handler behind a loop's waker: turns mail into local work.
pub struct Mailbox {
    inbox: Inbox,
    remote: Arc<Remote>,
}

impl Mailbox {
    pub fn new(inbox: Inbox, remote: Arc<Remote>) -> Self {
        Self { inbox, remote }
    }
}

impl<S: Service> Handler<S> for Mailbox {
    fn on_event(&mut self, _event: Event, cx: &mut Context<S>) -> Next {
        // Clear first: a send racing with the drain below then wakes us again.
        self.remote.notified.store(false, Ordering::Release);
        while let Ok(stream) = self.inbox.conns.try_recv() {
            adopt(cx, stream);
        }
        while let Ok((link, line)) = self.inbox.floods.try_recv() {
            if let Some(&Route::Local(id)) = cx.routes.links.get(link) {
                cx.post(id, Event::Flood(line));
            }
        }
        Next::Keep
    }
}

/// Makes `stream` one of this loop's client connections: registered once, READABLE | WRITABLE.
pub fn adopt<S: Service>(cx: &mut Context<S>, stream: TcpStream) {
    let max_line = cx.config.max_line;
    if let Err(e) = cx.register(stream, Interest::READABLE | Interest::WRITABLE, |stream, _| {
        Box::new(ClientConn::new(stream, max_line))
    }) {
        cx.service.log().error("register", e);
    }
}

/// The listening socket's handler (loop 0 only): accepts and deals connections round-robin.
pub struct Acceptor {
    listener: TcpListener,
    loops: Arc<[Arc<Remote>]>,
    next: usize,
}

impl Acceptor {
    pub fn new(listener: TcpListener, loops: Arc<[Arc<Remote>]>) -> Self {
        Self { listener, loops, next: 0 }
    }
}

impl<S: Service> Handler<S> for Acceptor {
    fn on_event(&mut self, _event: Event, cx: &mut Context<S>) -> Next {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    ServerStats::bump(&cx.service.stats().connections);
                    let target = self.next;
                    self.next = (self.next + 1) % self.loops.len();
                    if target == cx.config.index {
                        adopt(cx, stream);
                    } else if let Err(e) = self.loops[target].adopt(stream) {
                        cx.service.log().error("hand-off", e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // Out of descriptors, most likely. Edge-triggered epoll will not tell us again
                    // about connections already waiting, so look again after a pause.
                    cx.service.log().error("accept", e);
                    let me = cx.me();
                    cx.timer(me, Instant::now() + ACCEPT_RETRY);
                    return Next::Keep;
                }
            }
        }
    }
}
