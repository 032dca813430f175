//! The places upstream: a per-loop pool of kept-alive HTTP/1.1 connections, each one a handler that
//! carries one request at a time, and returns to the pool's idle list between requests.
//!
//! ```text
//!  client ──submit(Call)──► idle connection? ──Fetch──► UpstreamConn: write GET, read, decode
//!                           else open one (≤ 256)          │ Ready … Complete / Timer: deadline
//!                           else wait in line              └──Reply{seq, bytes}──► client
//! ```
//!
//! Idle connections stay registered with epoll, so one the backend closes is noticed and dropped at
//! once. A kept-alive connection found dead before any byte of the answer (the race with the
//! backend's idle close) is retried once on a fresh connection; nothing else is retried.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use herd_core::places::{Decoded, decode_response};
use herd_core::{HttpResponse, PlacesLookup, ServerStats, Service, UpstreamError};
use mio::Interest;
use mio::net::TcpStream;

use crate::reactor::{Context, Event, Handler, HandlerId, Next, Ready};

/// Upstream connections one loop may have open; WHATSATs beyond wait in line (their deadline runs).
pub const MAX_CONNECTIONS: usize = 256;
const READ_CHUNK: usize = 16 * 1024;

/// One WHATSAT's trip upstream: where its reply goes and by when it must be answered.
#[derive(Debug)]
pub struct Call {
    pub reply_to: HandlerId,
    pub seq: u64,
    pub lookup: PlacesLookup,
    pub deadline: Instant,
    /// Already retried once after a stale kept-alive connection.
    pub retried: bool,
}

/// A loop's connections to the places backend.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    host: String,
    idle: Vec<HandlerId>,
    open: usize,
    waiting: VecDeque<Call>,
    gauges: Gauges,
}

/// How the pool is used, in the server's counters (shared by every loop's pool).
#[derive(Debug)]
struct Gauges {
    /// Connections opened: few, if keep-alive works.
    connects: Arc<AtomicU64>,
    /// Calls retried after a kept-alive connection turned out closed.
    stale_retries: Arc<AtomicU64>,
    /// Calls that waited for a free connection (the loop had [`MAX_CONNECTIONS`] open).
    queued: Arc<AtomicU64>,
}

impl Pool {
    pub fn new(addr: SocketAddr, stats: &ServerStats) -> Self {
        let gauges = Gauges {
            connects: stats.gauge("upstream_connects"),
            stale_retries: stats.gauge("upstream_stale_retries"),
            queued: stats.gauge("upstream_queued"),
        };
        Self { addr, host: addr.to_string(), idle: Vec::new(), open: 0, waiting: VecDeque::new(), gauges }
    }
}

/// Sends `call` upstream: on an idle connection, a new one, or after the calls already waiting.
pub fn submit<S: Service>(cx: &mut Context<S>, mut call: Call) {
    if cx.upstream.is_none() {
        let error = UpstreamError::NotConfigured;
        return answer(cx, call, Err(error));
    }
    while let Some(id) = cx.upstream.as_mut().and_then(|pool| pool.idle.pop()) {
        match cx.dispatch(id, Event::Fetch(call)) {
            Some(Event::Fetch(back)) => call = back,
            _ => return,
        }
    }
    match cx.upstream.as_mut() {
        Some(pool) if pool.open >= MAX_CONNECTIONS => {
            pool.gauges.queued.fetch_add(1, Relaxed);
            pool.waiting.push_back(call);
        }
        _ => open(cx, call),
    }
}

/// Opens a new connection for `call`.
fn open<S: Service>(cx: &mut Context<S>, call: Call) {
    let Some(pool) = cx.upstream.as_mut() else { return };
    let deadline = call.deadline;
    let request = call.lookup.query.encode_request(&pool.host);
    pool.gauges.connects.fetch_add(1, Relaxed);
    let stream = match TcpStream::connect(pool.addr) {
        Ok(stream) => stream,
        Err(e) => return answer(cx, call, Err(UpstreamError::Unreachable(e.to_string()))),
    };
    let mut call = Some(call);
    let registered = cx.register(stream, Interest::READABLE | Interest::WRITABLE, |stream, _| {
        let call = call.take().expect("register calls make at most once");
        Box::new(UpstreamConn::connecting(stream, call, request))
    });
    match registered {
        Ok(id) => {
            if let Some(pool) = cx.upstream.as_mut() {
                pool.open += 1;
            }
            cx.timer(id, deadline);
        }
        Err(e) => {
            if let Some(call) = call {
                answer(cx, call, Err(UpstreamError::Unreachable(e.to_string())));
            }
        }
    }
}

/// Turns the upstream's result into the client's reply and posts it to the client connection.
fn answer<S: Service>(cx: &mut Context<S>, call: Call, result: Result<HttpResponse, UpstreamError>) {
    let bytes = cx.service.complete(call.lookup, result);
    cx.post(call.reply_to, Event::Reply { seq: call.seq, bytes });
}

/// The next waiting call still worth sending; calls whose deadline passed in line are answered now.
fn next_waiting<S: Service>(cx: &mut Context<S>) -> Option<Call> {
    let now = Instant::now();
    while let Some(call) = cx.upstream.as_mut().and_then(|pool| pool.waiting.pop_front()) {
        if call.deadline > now {
            return Some(call);
        }
        answer(cx, call, Err(UpstreamError::Timeout));
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Connecting,
    Busy,
    Idle,
}

/// Why an exchange stopped before a complete response.
enum Broken {
    /// The connection was dead before the response began: worth one retry if it had been reused.
    BeforeResponse(String),
    Failed(UpstreamError),
}

/// One kept-alive connection to the places backend.
pub struct UpstreamConn {
    stream: TcpStream,
    state: State,
    call: Option<Call>,
    request: Vec<u8>,
    written: usize,
    buf: Vec<u8>,
    /// It has answered before, so a dead connection is likely the backend's idle close.
    reused: bool,
}

impl UpstreamConn {
    fn connecting(stream: TcpStream, call: Call, request: Vec<u8>) -> Self {
        Self { stream, state: State::Connecting, call: Some(call), request, written: 0, buf: Vec::new(), reused: false }
    }

    /// Starts `call` on this (connected) connection.
    fn start<S: Service>(&mut self, call: Call, cx: &mut Context<S>) -> Next {
        let host = cx.upstream.as_ref().map_or("", |pool| pool.host.as_str());
        self.request = call.lookup.query.encode_request(host);
        self.written = 0;
        self.buf.clear();
        self.state = State::Busy;
        let me = cx.me();
        cx.timer(me, call.deadline);
        self.call = Some(call);
        self.exchange(cx)
    }

    /// Writes what is left of the request, reads what has arrived, and finishes when it decodes.
    fn exchange<S: Service>(&mut self, cx: &mut Context<S>) -> Next {
        match self.pump() {
            Ok(None) => Next::Keep,
            Ok(Some(response)) => self.finished(cx, response),
            Err(Broken::BeforeResponse(reason)) => self.broken_before_response(cx, reason),
            Err(Broken::Failed(e)) => self.fail(cx, e),
        }
    }

    fn pump(&mut self) -> Result<Option<HttpResponse>, Broken> {
        while self.written < self.request.len() {
            match self.stream.write(&self.request[self.written..]) {
                Ok(0) => return Err(Broken::BeforeResponse("wrote zero bytes".into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::BeforeResponse(e.to_string())),
            }
        }
        loop {
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK, 0);
            let read = self.stream.read(&mut self.buf[filled..]);
            self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) if self.buf.is_empty() => return Err(Broken::BeforeResponse("closed by upstream".into())),
                Ok(0) => return Err(Broken::Failed(UpstreamError::Http("connection closed mid-response".into()))),
                Ok(_) => {
                    if let Decoded::Complete(response) = decode_response(&self.buf).map_err(Broken::Failed)? {
                        return Ok(Some(response));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.buf.is_empty() => return Err(Broken::BeforeResponse(e.to_string())),
                Err(e) => return Err(Broken::Failed(UpstreamError::Unreachable(e.to_string()))),
            }
        }
    }

    /// Answers the call; keeps the connection for the next one if the backend allows.
    fn finished<S: Service>(&mut self, cx: &mut Context<S>, response: HttpResponse) -> Next {
        let keep = response.keep_alive && response.consumed == self.buf.len();
        if let Some(call) = self.call.take() {
            answer(cx, call, Ok(response));
        }
        if !keep {
            return self.close(cx);
        }
        self.reused = true;
        self.state = State::Idle;
        self.buf.clear();
        match next_waiting(cx) {
            Some(call) => self.start(call, cx),
            None => {
                let me = cx.me();
                if let Some(pool) = cx.upstream.as_mut() {
                    pool.idle.push(me);
                }
                Next::Keep
            }
        }
    }

    fn broken_before_response<S: Service>(&mut self, cx: &mut Context<S>, reason: String) -> Next {
        match self.call.take() {
            Some(mut call) if self.reused && !call.retried => {
                // First in line for the connection that replaces this one.
                call.retried = true;
                if let Some(pool) = cx.upstream.as_mut() {
                    pool.gauges.stale_retries.fetch_add(1, Relaxed);
                    pool.waiting.push_front(call);
                }
                self.close(cx)
            }
            call => {
                self.call = call;
                self.fail(cx, UpstreamError::Unreachable(reason))
            }
        }
    }

    fn fail<S: Service>(&mut self, cx: &mut Context<S>, error: UpstreamError) -> Next {
        if let Some(call) = self.call.take() {
            answer(cx, call, Err(error));
        }
        self.close(cx)
    }

    /// Leaves the pool; a call waiting for a free slot gets a new connection.
    fn close<S: Service>(&mut self, cx: &mut Context<S>) -> Next {
        let me = cx.me();
        if let Some(pool) = cx.upstream.as_mut() {
            pool.open -= 1;
            pool.idle.retain(|&id| id != me);
        }
        if let Some(call) = next_waiting(cx) {
            open(cx, call);
        }
        Next::Done
    }

    fn on_ready<S: Service>(&mut self, ready: Ready, cx: &mut Context<S>) -> Next {
        match self.state {
            State::Connecting => match connected(&self.stream) {
                Ok(false) => Next::Keep,
                Ok(true) => {
                    self.state = State::Busy;
                    self.exchange(cx)
                }
                Err(e) => self.fail(cx, UpstreamError::Unreachable(e.to_string())),
            },
            State::Busy => self.exchange(cx),
            State::Idle if ready.readable || ready.hangup => {
                // Nothing is expected on an idle connection: end of stream or stray bytes end it.
                let mut probe = [0_u8; 64];
                match self.stream.read(&mut probe) {
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Next::Keep,
                    _ => self.close(cx),
                }
            }
            State::Idle => Next::Keep,
        }
    }
}

/// Whether a non-blocking connect has completed (`Ok(false)`: not yet).
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

impl<S: Service> Handler<S> for UpstreamConn {
    fn on_event(&mut self, event: Event, cx: &mut Context<S>) -> Next {
        match event {
            Event::Ready(ready) => self.on_ready(ready, cx),
            Event::Fetch(call) if self.state == State::Idle => self.start(call, cx),
            Event::Fetch(call) => {
                submit(cx, call);
                Next::Keep
            }
            Event::Timer => match &self.call {
                Some(call) if Instant::now() >= call.deadline => self.fail(cx, UpstreamError::Timeout),
                _ => Next::Keep,
            },
            Event::Reply { .. } | Event::Flood(_) => Next::Keep,
        }
    }
}
