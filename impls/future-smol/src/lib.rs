//! Deferred/future style on smol: one async task per connection, `.await` wherever it waits.
//!
//! ```text
//!  serve thread: block_on(ex.run(accept loop)) ──ex.spawn──► connection task (one per client)
//!                                                      loop {
//!                                                        read.await ──► LineFramer ──► Service::handle
//!  one shared Executor, run by the serve thread            ├─ reply bytes ────────────► out buffer
//!  + (--threads − 1) threads: block_on(ex.run(pending()))  ├─ WHATSAT: flush, Upstream::fetch.await ──► out
//!  async-io reactor: driven by an idle block_on thread     └─ flood ──try_send──► link task per neighbour
//!                                                        write_all(out).await
//!                                                      }
//! ```
//!
//! The seed article's "deferred object" is a value standing for a result that is not there yet,
//! with the continuation attached to it. async/await is its modern form: the compiler turns each
//! connection's straight-line loop into a state machine (the future), and every `.await` is a point
//! where the task gives its thread back to the executor until the reactor says the socket is ready
//! or a timer fired. The code reads like the thread-per-request style; the waiting costs a few
//! hundred bytes of task state instead of a thread.
//!
//! smol is a collection of small crates (async-executor, async-io, async-channel, futures-lite)
//! re-exported under one name, and its idioms follow: sockets are `Async<TcpStream>` (a std socket
//! registered with the reactor), a timeout is a race between the operation and a `Timer`
//! (`future::or`), and the executor is a value the program creates and runs on threads of its own.
//!
//! Order comes for free. A connection task handles its lines one after another and awaits a
//! WHATSAT's upstream call inline, so the requests of one connection take effect in order (a
//! WHATSAT sees the IAMAT before it) and replies leave in order, with no reordering buffer.
//! Replies to the lines of one read are gathered and written with one `write_all`; before a
//! WHATSAT waits on the upstream, what is already answered is written first.
//!
//! Back-pressure is the awaited write: while a task waits for a slow client to take its replies it
//! does not read, so the client's further requests wait in the kernel, and pending output per
//! connection stays below [`FLUSH_AT`] plus one reply. A client that leaves a write blocked for
//! `write_timeout` is closed.
//!
//! Reads are optimistic: `Async`'s read calls `read(2)` first and registers interest with the
//! reactor only when it returns `WouldBlock`. After a short read the socket is known to be
//! drained, so the next read waits for readiness first (`Async::readable`) instead of paying for
//! a `read(2)` that can only say `WouldBlock`: a client that waits for its reply (the common case
//! here) has sent nothing more by the time the reply is written. tokio applies the same rule
//! inside its `TcpStream`; async-io leaves it to the caller. It saves two syscalls, not one: after
//! the `EAGAIN`, `Async`'s read would find the event that woke the task last time still recorded
//! on the socket and try once more before registering. Counted in echo at `--threads 1`: 5
//! syscalls per round trip before (3 `recvfrom`, `sendto`, the `epoll_ctl` that re-arms
//! async-io's one-shot registration), 3 after; the C epoll server makes about 2.1.
//! The upstream client uses the same [`Reads`] and starts drained: right after a request is sent,
//! its response cannot be there yet.
//!
//! # Executor threads
//! One `smol::Executor` shared by `--threads` threads (default [`herd_core::available_cores`]):
//! the calling thread, which runs the accept loop as `block_on(ex.run(accept_loop))`, and
//! `--threads − 1` more running `block_on(ex.run(pending()))`; rather than one executor per thread. A shared
//! executor keeps a global queue plus a local queue per thread and lets idle threads steal, so a
//! busy connection does not stall the others that happen to live on its thread, and the work of
//! long-lived connections spreads over the cores the way tokio's and async-std's schedulers spread
//! it. One executor per thread would avoid cross-thread wake-ups, but pins each connection for life
//! to the thread that accepted it, which is the event-handler style's trade, not this one's.
//! Whichever `block_on` thread is idle drives the async-io reactor (epoll); smol's "async-io"
//! thread drives it when none is. Counting the accept thread as an executor thread matters at
//! `--threads 1`: one thread then runs every task and drives the reactor itself, so no wake-up
//! crosses threads (a first version ran the accept loop outside the executor, and single-thread
//! echo reached only 0.76× of the C epoll server). A task
//! that panics unwinds out of `run`; the thread catches it and runs the executor again, as smol's
//! own global executor does. `--stack-kib` sets the executor threads' stack size (default: std's
//! 2 MiB).
//!
//! # Layout
//! - [`serve`]: start the executor threads and the links, accept.
//! - `Connection`: one client's task: read, frame, handle, write.
//! - [`links`]: flood links, one task per neighbour fed by a bounded channel.
//! - [`upstream`]: the places client over a shared pool of kept-alive connections.

pub mod links;
pub mod upstream;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::panic::catch_unwind;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use herd_core::{Frame, LineFramer, Link, Reply, ServeOptions, ServerStats, Service, Timestamp, UpstreamError};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Timer, future};

use crate::links::FloodLinks;
use crate::upstream::Upstream;

/// Pending replies on one connection are written once they reach this size, even mid-read.
pub const FLUSH_AT: usize = 64 * 1024;
/// Pause after an accept error (out of descriptors, most likely) before accepting again, so a
/// listener that stays readable does not spin a thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let ex = Arc::new(Executor::new());
    // The calling thread is one of the executor's threads (it also runs the accept loop), so
    // `--threads 1` is exactly one thread that runs tasks and, when idle, drives the reactor itself:
    // no wake-up crosses threads. The others join the same executor.
    let threads = options.threads.unwrap_or_else(herd_core::available_cores).max(1);
    for i in 1..threads {
        let ex = Arc::clone(&ex);
        let mut thread = thread::Builder::new().name(format!("smol-{i}"));
        if let Some(kib) = options.stack_kib {
            thread = thread.stack_size(kib * 1024);
        }
        thread.spawn(move || {
            loop {
                let _ = catch_unwind(|| smol::block_on(ex.run(future::pending::<()>())));
            }
        })?;
    }
    let listener = Async::new(listener)?;
    let shared = Arc::new(Shared {
        links: FloodLinks::spawn(&ex, &options.name, &options.neighbours, &service, options.write_timeout),
        upstream: options.places.map(|addr| Upstream::new(addr, options.upstream_timeout, service.stats())),
        service,
        max_line: options.max_line,
        write_timeout: options.write_timeout,
    });
    smol::block_on(ex.run(accept_loop(&ex, listener, shared)))
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared<S> {
    service: Arc<S>,
    links: FloodLinks,
    /// `None` in echo mode, or with no places backend configured.
    upstream: Option<Upstream>,
    max_line: usize,
    write_timeout: Duration,
}

async fn accept_loop<S: Service>(
    ex: &Executor<'static>,
    listener: Async<TcpListener>,
    shared: Arc<Shared<S>>,
) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                ServerStats::bump(&shared.service.stats().connections);
                let _ = stream.get_ref().set_nodelay(true);
                let conn = Connection {
                    stream,
                    framer: LineFramer::new(shared.max_line),
                    link: Link::default(),
                    out: Vec::new(),
                    shared: Arc::clone(&shared),
                };
                ex.spawn(conn.run()).detach();
            }
            Err(e) => {
                shared.service.log().error("accept", e);
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client connection, owned by its task.
struct Connection<S> {
    stream: Async<TcpStream>,
    framer: LineFramer,
    link: Link,
    /// Replies not yet written.
    out: Vec<u8>,
    shared: Arc<Shared<S>>,
}

impl<S: Service> Connection<S> {
    /// Runs the connection to its end; write failures are logged, read failures just end it.
    async fn run(mut self) {
        if let Err(e) = self.serve().await {
            self.shared.service.log().error("write", e);
        }
    }

    async fn serve(&mut self) -> io::Result<()> {
        let mut reads = Reads::default();
        loop {
            let n = match reads.read(&mut self.stream, self.framer.read_buf()).await {
                Ok(0) | Err(_) => return Ok(()), // end of stream or reset: nothing more to answer
                Ok(n) => n,
            };
            self.framer.filled(n);
            while let Some(frame) = self.framer.next_frame() {
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        let reply = self.shared.service.oversized(quote);
                        self.out.extend_from_slice(&reply);
                        self.flush().await?;
                        return self.stream.get_ref().shutdown(std::net::Shutdown::Write);
                    }
                };
                let now = Timestamp::from_system_time(SystemTime::now());
                let service = &*self.shared.service;
                let outcome = service.handle(line, &mut self.link, now);
                if let Some(flood) = &outcome.flood {
                    self.shared.links.send(flood, service.stats());
                }
                match outcome.reply {
                    Reply::Bytes(bytes) => self.out.extend_from_slice(&bytes),
                    Reply::Nothing => {}
                    Reply::Places(lookup) => {
                        self.flush().await?;
                        let result = match &self.shared.upstream {
                            Some(upstream) => upstream.fetch(&lookup.query).await,
                            None => Err(UpstreamError::NotConfigured),
                        };
                        let reply = self.shared.service.complete(lookup, result);
                        self.out.extend_from_slice(&reply);
                    }
                }
                if self.out.len() >= FLUSH_AT {
                    self.flush().await?;
                }
            }
            self.flush().await?;
        }
    }

    /// Writes the pending replies, giving up on a client that leaves them unread too long.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stalled = async {
            Timer::after(self.shared.write_timeout).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read its replies"))
        };
        let written = future::or(self.stream.write_all(&self.out), stalled).await;
        self.out.clear();
        written
    }
}

/// Reads from one socket, waiting for readiness first once a read has found it drained.
#[derive(Debug, Default)]
struct Reads {
    /// The last read came back short: the socket had nothing more at that moment.
    drained: bool,
}

impl Reads {
    /// Waits for readiness before reading (`Async::readable`).
    fn drained() -> Self {
        Self { drained: true }
    }

    async fn read(&mut self, stream: &mut Async<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            stream.readable().await?;
        }
        let n = stream.read(buf).await?;
        self.drained = n < buf.len();
        Ok(n)
    }
}
