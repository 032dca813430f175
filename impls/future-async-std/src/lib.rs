//! Deferred/future style on async-std: one async task per connection, `.await` wherever it waits.
//!
//! **A historical row.** async-std is discontinued upstream (RUSTSEC-2025-0052, unmaintained; its
//! README recommends smol). It stays in the comparison because much async Rust was written
//! against it; new code should use the `future-smol` style, which runs on the same executor and
//! reactor crates.
//!
//! ```text
//!  serve thread: task::block_on(accept loop) ──task::spawn──► connection task (one per client)
//!                                                               loop {
//!                                                                 read.await ──► LineFramer ──► Service::handle
//!  async-std global executor: ASYNC_STD_THREAD_COUNT                ├─ reply bytes ───────────► out buffer
//!  threads, each block_on(run the shared executor)                  ├─ WHATSAT: flush, Upstream::fetch.await ──► out
//!  async-io reactor: driven by an idle block_on thread              └─ flood ──try_send──► link task per neighbour
//!                                                                 write_all(out).await
//!                                                               }
//! ```
//!
//! The seed article's "deferred object" is a value standing for a result that is not there yet,
//! with the continuation attached to it. async/await is its modern form: the compiler turns each
//! connection's straight-line loop into a state machine (the future), and every `.await` is a point
//! where the task gives its thread back to the executor until the reactor says the socket is ready
//! or a timer fired. async-std's promise was std's API, async: `async_std::net::TcpStream`,
//! `async_std::io::{ReadExt, WriteExt}`, `task::spawn`, `task::sleep`, `future::timeout`, so the
//! code reads like the thread-per-request style with `.await` added.
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
//! Reads are optimistic: async-std's sockets are async-io's `Async`, whose read calls `read(2)`
//! first and registers interest with the reactor only when it returns `WouldBlock`. async-std
//! offers no way to wait for readiness without reading, so a client that waits for each reply
//! costs two `read(2)` → `EAGAIN` before every wait: the first, and one more because the event
//! that woke the task last time still marks the socket ready (the README has the syscall count).
//!
//! # Runtime
//! async-std has one global runtime, started lazily by its first use, with no builder. Its
//! executor (async-global-executor, itself one shared async-executor run by N threads) reads its
//! thread count from the `ASYNC_STD_THREAD_COUNT` environment variable at that moment, so
//! [`serve`] sets the variable to `--threads` (default [`herd_core::available_cores`]) before
//! its first async-std call. Consequences: the value is fixed for the life of the process (a
//! second `serve` in the same process keeps the first one's count), and `--stack-kib` has no
//! effect (the executor spawns its threads with std's default stack). The calling thread runs the
//! accept loop in `task::block_on`; whichever `block_on` thread is idle drives the async-io
//! reactor (epoll), and async-io's own thread drives it when none is.
//!
//! # Layout
//! - [`serve`]: configure the runtime, start the links, accept.
//! - `Connection`: one client's task: read, frame, handle, write.
//! - [`links`]: flood links, one task per neighbour fed by a bounded channel.
//! - [`upstream`]: the places client over a shared pool of kept-alive connections.

pub mod links;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_std::io::{self, ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use herd_core::{Frame, LineFramer, Link, Reply, ServeOptions, ServerStats, Service, Timestamp, UpstreamError};

use crate::links::FloodLinks;
use crate::upstream::Upstream;

/// Pending replies on one connection are written once they reach this size, even mid-read.
pub const FLUSH_AT: usize = 64 * 1024;
/// Pause after an accept error (out of descriptors, most likely) before accepting again, so a
/// listener that stays readable does not spin a thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Read once, by async-std's runtime when it starts: the executor's thread count.
pub const THREAD_COUNT_VAR: &str = "ASYNC_STD_THREAD_COUNT";

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(
    listener: std::net::TcpListener,
    service: Arc<S>,
    options: &ServeOptions,
) -> std::io::Result<()> {
    let threads = options.threads.unwrap_or_else(herd_core::available_cores).max(1);
    // SAFETY: `set_var` is unsafe because a thread reading the environment through libc at the
    // same moment (getenv, which std's lock does not cover) could see it half-written. This runs
    // before async-std starts any thread, and the caller's other threads (the harness's signal
    // wait and log writer) do not read the environment.
    unsafe { std::env::set_var(THREAD_COUNT_VAR, threads.to_string()) };
    listener.set_nonblocking(true)?;
    task::block_on(async {
        let listener = TcpListener::from(listener);
        let shared = Arc::new(Shared {
            links: FloodLinks::spawn(&options.name, &options.neighbours, &service, options.write_timeout),
            upstream: options.places.map(|addr| Upstream::new(addr, options.upstream_timeout, service.stats())),
            service,
            max_line: options.max_line,
            write_timeout: options.write_timeout,
        });
        accept_loop(listener, shared).await
    })
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

async fn accept_loop<S: Service>(listener: TcpListener, shared: Arc<Shared<S>>) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                ServerStats::bump(&shared.service.stats().connections);
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    stream,
                    framer: LineFramer::new(shared.max_line),
                    link: Link::default(),
                    out: Vec::new(),
                    shared: Arc::clone(&shared),
                };
                task::spawn(conn.run());
            }
            Err(e) => {
                shared.service.log().error("accept", e);
                task::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client connection, owned by its task.
struct Connection<S> {
    stream: TcpStream,
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
        loop {
            let n = match self.stream.read(self.framer.read_buf()).await {
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
                        return self.stream.shutdown(std::net::Shutdown::Write);
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

    /// Writes the pending replies, giving up (`io::timeout`) on a client that leaves them unread
    /// too long.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = io::timeout(self.shared.write_timeout, self.stream.write_all(&self.out)).await;
        self.out.clear();
        written
    }
}
