//! Flood links: one handler per neighbour, living on one loop (neighbour `i` on loop `i % loops`),
//! with its own reconnect timer.
//!
//! ```text
//!  Down ──Timer (every 100 ms) or Flood──► Connecting ──Ready: connected──► Up ──Ready: peer closed / error──► Down
//!   ▲                                 │ Ready: refused                  Flood: append + write
//!   └─────────────────────────────────┘
//! ```
//!
//! A link sends `PEER <name>` first, then AT lines; peers never send on it, so anything readable
//! (end of stream, data, an error) means the link is gone. A line given to a link that is down starts
//! a connection attempt if the last one was at least [`RETRY`] ago, and waits behind it; otherwise it
//! is dropped and counted: old updates are not replayed, newer ones will follow.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_core::log::{Direction, Event as LogEvent};
use herd_core::{Flood, ServerStats, Service};
use mio::Interest;
use mio::net::TcpStream;

use crate::handoff::Remote;
use crate::reactor::{Context, Event, Handler, HandlerId, Next, Ready};

/// Shortest time between two connection attempts to one neighbour.
pub const RETRY: Duration = Duration::from_millis(100);
/// Bytes queued on one link before further lines are dropped (a stuck neighbour must not grow memory).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// A connection attempt still pending after this long is abandoned (and retried).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Where neighbour `i`'s link handler lives.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    Local(HandlerId),
    /// On loop `n`: reached through its mailbox.
    Remote(usize),
}

/// Every neighbour's route, indexed like [`Flood::to`], and every loop's mailbox.
#[derive(Debug)]
pub struct Routes {
    pub links: Vec<Route>,
    pub loops: Arc<[Arc<Remote>]>,
}

/// Gives `flood` to the links it names: an event for a local link, mail for a remote one.
pub fn send<S: Service>(cx: &mut Context<S>, flood: &Flood) {
    for &i in &flood.to {
        match cx.routes.links.get(i) {
            Some(&Route::Local(id)) => cx.post(id, Event::Flood(Arc::clone(&flood.line))),
            Some(&Route::Remote(home)) if !cx.routes.loops[home].flood(i, Arc::clone(&flood.line)) => {
                ServerStats::bump(&cx.service.stats().floods_dropped);
            }
            Some(&Route::Remote(_)) | None => {}
        }
    }
}

enum State {
    Down,
    Connecting(TcpStream),
    Up(TcpStream),
}

/// One outbound link to a neighbour.
pub struct FloodLink {
    name: String,
    addr: SocketAddr,
    hello: Vec<u8>,
    state: State,
    /// Bytes not yet taken by the socket (while connecting: the hello and the lines queued behind it).
    out: Vec<u8>,
    /// Lines queued while connecting: counted sent once connected, dropped if the attempt fails.
    queued_while_connecting: u64,
    last_attempt: Option<Instant>,
}

impl FloodLink {
    /// A link that is down. It first connects on its first flood line or when the caller's timer
    /// fires, whichever comes first: the herd's servers start together, and an attempt at time zero
    /// would mostly fail and then hold back the next one for [`RETRY`].
    pub fn new(me: &str, name: String, addr: SocketAddr) -> Self {
        Self {
            name,
            addr,
            hello: format!("PEER {me}\n").into_bytes(),
            state: State::Down,
            out: Vec::new(),
            queued_while_connecting: 0,
            last_attempt: None,
        }
    }

    fn connect<S: Service>(&mut self, cx: &mut Context<S>) {
        let now = Instant::now();
        if self.last_attempt.is_some_and(|t| now < t + RETRY) {
            return self.retry_later(cx);
        }
        self.last_attempt = Some(now);
        let attempt = TcpStream::connect(self.addr).and_then(|mut stream| {
            cx.registry().register(&mut stream, cx.me().token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match attempt {
            Ok(stream) => {
                self.out.clear();
                self.out.extend_from_slice(&self.hello);
                self.queued_while_connecting = 0;
                self.state = State::Connecting(stream);
                let me = cx.me();
                cx.timer(me, now + CONNECT_TIMEOUT);
            }
            Err(_) => self.retry_later(cx),
        }
    }

    fn retry_later<S: Service>(&mut self, cx: &mut Context<S>) {
        let at = self.last_attempt.map_or_else(Instant::now, |t| t + RETRY);
        let me = cx.me();
        cx.timer(me, at);
    }

    /// A connect in progress has finished one way or the other (or not yet: `Ok(false)`).
    fn check_connected(stream: &TcpStream) -> io::Result<bool> {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn on_ready<S: Service>(&mut self, ready: Ready, cx: &mut Context<S>) {
        match &mut self.state {
            State::Down => {}
            State::Connecting(stream) => match Self::check_connected(stream) {
                Ok(false) => {}
                Ok(true) => {
                    let State::Connecting(stream) = std::mem::replace(&mut self.state, State::Down) else { return };
                    self.state = State::Up(stream);
                    let stats = cx.service.stats();
                    stats.floods_out.fetch_add(self.queued_while_connecting, std::sync::atomic::Ordering::Relaxed);
                    let up = LogEvent::LinkUp { peer: self.name.clone(), direction: Direction::Outbound };
                    cx.service.log().event(up);
                    self.flush(cx);
                }
                Err(_) => self.attempt_failed(cx),
            },
            State::Up(stream) => {
                if ready.readable || ready.hangup {
                    let mut probe = [0_u8; 64];
                    let gone = match stream.read(&mut probe) {
                        Ok(0) => Some("closed by peer".to_owned()),
                        Ok(_) => Some("peer sent data on a flood link".to_owned()),
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => None,
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(reason) = gone {
                        return self.down(cx, reason);
                    }
                }
                if ready.writable {
                    self.flush(cx);
                }
            }
        }
    }

    /// A connection attempt was refused or took too long: drop what waited for it, retry later.
    fn attempt_failed<S: Service>(&mut self, cx: &mut Context<S>) {
        let stats = cx.service.stats();
        stats.floods_dropped.fetch_add(self.queued_while_connecting, std::sync::atomic::Ordering::Relaxed);
        self.state = State::Down;
        self.out.clear();
        self.retry_later(cx);
    }

    fn on_timer<S: Service>(&mut self, cx: &mut Context<S>) {
        match self.state {
            State::Down => self.connect(cx),
            State::Connecting(_) if self.last_attempt.is_some_and(|t| t.elapsed() >= CONNECT_TIMEOUT) => {
                self.attempt_failed(cx);
            }
            State::Connecting(_) | State::Up(_) => {}
        }
    }

    fn on_flood<S: Service>(&mut self, line: &[u8], cx: &mut Context<S>) {
        if matches!(self.state, State::Down) && self.last_attempt.is_none_or(|t| t.elapsed() >= RETRY) {
            // Connect on demand, as the retry interval allows; the line waits behind the hello.
            self.connect(cx);
        }
        let stats = cx.service.stats();
        if matches!(self.state, State::Down) || self.out.len() + line.len() > QUEUE_BYTES {
            ServerStats::bump(&stats.floods_dropped);
            return;
        }
        self.out.extend_from_slice(line);
        match self.state {
            State::Up(_) => {
                ServerStats::bump(&stats.floods_out);
                self.flush(cx);
            }
            _ => self.queued_while_connecting += 1,
        }
    }

    /// Writes what the socket takes now; the rest waits for the next writable event.
    fn flush<S: Service>(&mut self, cx: &mut Context<S>) {
        let State::Up(stream) = &mut self.state else { return };
        let mut written = 0;
        let mut failed = None;
        while written < self.out.len() {
            match stream.write(&self.out[written..]) {
                Ok(0) => {
                    failed = Some("wrote zero bytes".to_owned());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        self.out.drain(..written);
        if let Some(reason) = failed {
            self.down(cx, reason);
        }
    }

    fn down<S: Service>(&mut self, cx: &mut Context<S>, reason: String) {
        self.state = State::Down;
        self.out.clear();
        cx.service.log().event(LogEvent::LinkDown { peer: self.name.clone(), reason });
        self.retry_later(cx);
    }
}

impl<S: Service> Handler<S> for FloodLink {
    fn on_event(&mut self, event: Event, cx: &mut Context<S>) -> Next {
        match event {
            Event::Ready(ready) => self.on_ready(ready, cx),
            Event::Timer => self.on_timer(cx),
            Event::Flood(line) => self.on_flood(&line, cx),
            Event::Reply { .. } | Event::Fetch(_) => {}
        }
        Next::Keep
    }
}
