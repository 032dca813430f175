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
//!  async-std global executor: ASYNC_STD_THREAD_COUNT                ├─ reply bytes ──────────► OutputBuffer::push
//!  threads, each block_on(run the shared executor)                  ├─ WHATSAT: write, PlacesCall driven .await ──► push
//!  async-io reactor: driven by an idle block_on thread              └─ flood ──FloodLinks::send──► channel(1) ──► link task
//!                                                                 write what the socket takes; while bytes are owed,
//!                                                                 race { write, read if may_read, stall deadline }
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
//! WHATSAT sees the IAMAT before it) and replies leave in order: the task uses
//! [`OutputBuffer::push`], never the reordering half of the buffer.
//!
//! Every rule around the protocol is herd-core's policy layer, driven from here:
//! [`OutputBuffer`] decides when replies are written (`flush_at`, and after each read), when the
//! task stops reading a client that leaves its replies unread (`pause_output`), and when it gives
//! up on one (`max_output` owed while the socket is full, or `write_stall` without progress);
//! [`herd_core::policy::FloodLinks`] and [`herd_core::policy::PlacesCall`] /
//! [`herd_core::policy::PlacesPool`] own the links and the places client (see [`links`],
//! [`upstream`]); [`AcceptBackoff`] paces the accept loop after errors.
//!
//! async-std's sockets cannot wait for readiness without reading or writing, so the waiting is
//! done with the operations themselves. "Write what the socket takes now" is one poll of a write
//! (`futures_lite::future::poll_once`): `None` means the socket is full, which the buffer hears
//! as [`OutputBuffer::blocked`]. While bytes are owed, the task races a write of them, a read of
//! more input (while [`OutputBuffer::may_read`]) and `task::sleep` to the buffer's stall deadline
//! with futures-lite's `future::or` (async-std's own `race` is behind its `unstable` feature).
//! Both I/O futures are cancel-safe: one that lost the race has moved no bytes.
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
//! - [`links`]: one task per neighbour driving its [`herd_core::policy::FloodLink`].
//! - [`upstream`]: one WHATSAT's [`herd_core::policy::PlacesCall`] on a shared pool of connections.

pub mod links;
pub mod upstream;

use std::future::pending;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_std::io::{self, ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use futures_lite::future;
use herd_core::policy::{AcceptBackoff, Admission, Admitted, FloodLinks, OutputBuffer};
use herd_core::{Frame, Limits, LineFramer, Link, Reply, ServeOptions, ServerStats, Service, Timestamp, UpstreamError};

use crate::links::LinkBell;
use crate::upstream::Upstream;

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
            links: links::spawn(options, &*service),
            upstream: options.places.map(|addr| Upstream::new(addr, &options.limits, service.stats())),
            service,
            limits: options.limits.clone(),
        });
        accept_loop(listener, shared).await
    })
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared<S> {
    service: Arc<S>,
    links: Arc<FloodLinks<LinkBell>>,
    /// `None` in echo mode, or with no places backend configured.
    upstream: Option<Upstream>,
    limits: Limits,
}

async fn accept_loop<S: Service>(listener: TcpListener, shared: Arc<Shared<S>>) -> io::Result<()> {
    let mut backoff = AcceptBackoff::new(&shared.limits);
    let admission = Admission::new(&shared.limits, shared.service.stats(), shared.service.log());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.on_accepted();
                let Some(admitted) = admission.admit() else { continue }; // past the cap: closed here
                ServerStats::bump(&shared.service.stats().connections);
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    stream,
                    framer: LineFramer::new(shared.limits.max_line),
                    link: Link::default(),
                    out: OutputBuffer::new(&shared.limits),
                    shared: Arc::clone(&shared),
                    _admitted: admitted,
                };
                task::spawn(conn.run());
            }
            Err(e) => {
                shared.service.log().error("accept", e);
                until(Some(backoff.on_error(Instant::now()))).await;
            }
        }
    }
}

/// Sleeps until `deadline` (`task::sleep`, async-std has no sleep-until); never without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => task::sleep(deadline.saturating_duration_since(Instant::now())).await,
        None => pending().await,
    }
}

/// What ended one wait of a connection task.
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Stalled,
}

/// One client connection, owned by its task.
struct Connection<S> {
    stream: TcpStream,
    framer: LineFramer,
    link: Link,
    out: OutputBuffer,
    shared: Arc<Shared<S>>,
    /// Its place under the connection cap, given back when the task ends.
    _admitted: Admitted,
}

impl<S: Service> Connection<S> {
    /// Runs the connection to its end; write failures and policy closes are logged, read failures
    /// just end it.
    async fn run(mut self) {
        if let Err(e) = self.serve().await {
            self.shared.service.log().error("write", e);
        }
    }

    async fn serve(&mut self) -> io::Result<()> {
        loop {
            let n = match self.settle(true).await? {
                // End of stream: what is owed still goes out (a half-closed client reads it).
                Some(Ok(0)) => return self.settle(false).await.map(drop),
                Some(Ok(n)) => n,
                Some(Err(_)) | None => return Ok(()), // reset: nothing more to answer
            };
            self.framer.filled(n);
            while let Some(frame) = self.framer.next_frame() {
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        let reply = self.shared.service.oversized(quote);
                        self.out.push(&reply);
                        self.settle(false).await?;
                        return self.stream.shutdown(std::net::Shutdown::Write);
                    }
                };
                let now = Timestamp::from_system_time(SystemTime::now());
                let service = &*self.shared.service;
                let outcome = service.handle(line, &mut self.link, now);
                if let Some(flood) = &outcome.flood {
                    self.shared.links.send(flood, Instant::now());
                }
                match outcome.reply {
                    Reply::Bytes(bytes) => self.out.push(&bytes),
                    Reply::Nothing => {}
                    Reply::Places(lookup) => {
                        // What is already answered goes out before the task waits upstream.
                        write(&self.stream, &mut self.out).await?;
                        let result = match &self.shared.upstream {
                            Some(upstream) => upstream.fetch(&lookup.query, service.stats()).await,
                            None => Err(UpstreamError::NotConfigured),
                        };
                        let reply = self.shared.service.complete(lookup, result);
                        self.out.push(&reply);
                    }
                }
                if self.out.should_flush() {
                    write(&self.stream, &mut self.out).await?;
                }
            }
        }
    }

    /// Writes until nothing is owed (`None`) or, if `read` and the buffer allows reading, a read
    /// into the framer finished (its result). Waits for the socket to take more no longer than
    /// the buffer's stall deadline.
    async fn settle(&mut self, read: bool) -> io::Result<Option<io::Result<usize>>> {
        loop {
            write(&self.stream, &mut self.out).await?;
            let read = read && self.out.may_read();
            if self.out.owed() == 0 && !read {
                return Ok(None);
            }
            let (stream, out, framer) = (&self.stream, &self.out, &mut self.framer);
            let deadline = out.poll_timeout();
            let wrote = async {
                if out.owed() == 0 {
                    pending().await
                }
                Wake::Wrote((&*stream).write(out.poll_transmit()).await)
            };
            let input = async {
                if !read {
                    pending().await
                }
                Wake::Read((&*stream).read(framer.read_buf()).await)
            };
            let stalled = async {
                until(deadline).await;
                Wake::Stalled
            };
            let wake = future::or(input, future::or(wrote, stalled)).await;
            match wake {
                Wake::Read(result) => return Ok(Some(result)),
                Wake::Wrote(n) => self.out.consumed(n?, Instant::now()),
                Wake::Stalled => self.out.on_timeout(Instant::now()).map_err(io::Error::other)?,
            }
        }
    }
}

/// Writes what the socket takes now (one poll of a write at a time), each write reported to the
/// buffer; a full socket with bytes owed starts the stall clock (or closes a client owed too much).
async fn write(stream: &TcpStream, out: &mut OutputBuffer) -> io::Result<()> {
    while out.owed() > 0 {
        match future::poll_once((&*stream).write(out.poll_transmit())).await {
            Some(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Some(Ok(n)) => out.consumed(n, Instant::now()),
            Some(Err(e)) => return Err(e),
            None => return out.blocked(Instant::now()).map_err(io::Error::other),
        }
    }
    Ok(())
}
