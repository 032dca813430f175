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
//!                                                                 read.await ──► Session::poll: each line ──► Service::handle
//!  async-std global executor: ASYNC_STD_THREAD_COUNT                ├─ reply ──► OutputBuffer, one poll_write at flush_at
//!  threads, each block_on(run the shared executor)                  ├─ WHATSAT: upstream::fetch(..).await ──► Session::complete
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
//! Order comes for free. A connection task hands what it reads to herd-core's [`Session`], which
//! handles the lines one after another and stops at a WHATSAT until the task has awaited the
//! upstream answer inline, so the requests of one connection take effect in order (a WHATSAT sees
//! the IAMAT before it) and replies leave in order.
//!
//! Every rule around the protocol is herd-core's policy layer, driven from here: the [`Session`]
//! and its [`herd_core::policy::OutputBuffer`] decide when replies are written (`flush_at`, and
//! after each read), when the task stops reading a client that leaves its replies unread
//! (`pause_output`), and when it gives up on one (`max_output` owed while the socket is full, or
//! `write_stall` without progress); [`herd_core::policy::FloodLinks`] with
//! [`herd_core::policy::LinkSocket`], and [`herd_core::policy::PlacesBackend`], own the links and
//! the places client (see [`links`], [`upstream`]); [`herd_core::policy::Acceptor`] caps the
//! connections and paces the accept loop after errors.
//!
//! async-std's sockets cannot wait for readiness without reading or writing, so the waiting is
//! done with the operations themselves. "Write what the socket takes now" is one poll of
//! async-std's write with the task's own context (`poll_write` inside `std::future::poll_fn`):
//! `Pending` means the socket is full — the buffer hears it as `WouldBlock`, then `blocked` — and
//! has registered the task for writability. While bytes are owed, the task races a write of them,
//! a read of more input (while the buffer allows reading) and `task::sleep` to the buffer's stall
//! deadline with futures-lite's `future::or` (async-std's own `race` is behind its `unstable`
//! feature).
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
//! - `Connection`: one client's task: read into its [`Session`], fetch, write, wait.
//! - [`links`]: one task per neighbour driving its [`herd_core::policy::FloodLink`].
//! - [`upstream`]: one WHATSAT's [`herd_core::policy::PlacesCall`] on a shared pool of connections.

pub mod links;
pub mod upstream;

use std::future::{pending, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use async_std::io::{self, ReadExt, Write, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use async_std::stream::StreamExt;
use async_std::task;
use futures_lite::future;
use herd_core::policy::{Accepted, Fetch, Session};
use herd_core::{ServeOptions, Service, Timestamp};

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
        let links = links::spawn(options, &*service);
        let shared = Arc::new(Shared::new(service, links, options));
        accept_loop(listener, shared).await
    })
}

/// What every connection task shares.
type Shared<S> = herd_core::policy::Shared<S, LinkBell, TcpStream>;

async fn accept_loop<S: Service>(listener: TcpListener, shared: Arc<Shared<S>>) -> io::Result<()> {
    let mut acceptor = shared.acceptor();
    let mut incoming = listener.incoming();
    while let Some(accepted) = incoming.next().await {
        match acceptor.on_accept(accepted, Instant::now) {
            Accepted::Serve(stream, admitted) => {
                let _ = stream.set_nodelay(true);
                let mut conn = Connection { stream, session: Session::new(&shared.limits, admitted) };
                let shared = Arc::clone(&shared);
                task::spawn(async move { shared.ended(conn.serve(&shared).await) });
            }
            Accepted::Refused => {}
            Accepted::Pause(resume) => until(Some(resume)).await,
        }
    }
    Ok(())
}

/// Sleeps until `deadline` (`task::sleep`, async-std has no sleep-until); never without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => task::sleep(deadline.saturating_duration_since(Instant::now())).await,
        None => pending().await,
    }
}

/// One write as this style makes it: a poll of async-std's write with the task's context, so a
/// full socket registers the task for writability; a write that would wait reads as `WouldBlock`.
pub(crate) fn poll_write(stream: &TcpStream, cx: &mut Context<'_>, bytes: &[u8]) -> io::Result<usize> {
    match Pin::new(&mut &*stream).poll_write(cx, bytes) {
        Poll::Ready(written) => written,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// What ended one wait of a connection task.
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Stalled,
}

/// One client connection, owned by its task.
struct Connection {
    stream: TcpStream,
    session: Session,
}

impl Connection {
    async fn serve<S: Service>(&mut self, shared: &Shared<S>) -> io::Result<()> {
        let service = &*shared.service;
        while !self.session.is_closing() {
            match self.settle(true).await? {
                Some(Ok(0)) => break, // end of stream: what is owed still goes out (a half-closed client reads it)
                Some(Ok(n)) => self.session.filled(n, Timestamp::from_system_time(SystemTime::now())),
                Some(Err(_)) | None => return Ok(()), // reset: nothing more to answer
            }
            while let Some(Fetch { places, lookup }) = self.handle(shared).await? {
                let answer = upstream::fetch(places, &lookup.query).await;
                self.session.complete(service, lookup, answer);
            }
        }
        self.settle(false).await?;
        if self.session.is_closing() {
            self.stream.shutdown(std::net::Shutdown::Write)?;
        }
        Ok(())
    }

    /// The session's handling of what was read, each of its writes one poll of async-std's write.
    async fn handle<'s, S: Service>(&mut self, shared: &'s Shared<S>) -> io::Result<Option<Fetch<'s, Upstream>>> {
        let (stream, session) = (&self.stream, &mut self.session);
        poll_fn(|cx| Poll::Ready(session.poll(shared, Instant::now(), |b| poll_write(stream, cx, b)))).await
    }

    /// Writes until nothing is owed (`None`) or, if `read` and the buffer allows reading, a read
    /// into the session finished (its result). Waits for the socket to take more no longer than
    /// the buffer's stall deadline.
    async fn settle(&mut self, read: bool) -> io::Result<Option<io::Result<usize>>> {
        let stream = &self.stream;
        loop {
            poll_fn(|cx| Poll::Ready(self.session.output().write_with(Instant::now(), |b| poll_write(stream, cx, b))))
                .await?;
            let read = read && self.session.may_read();
            let deadline = self.session.output().poll_timeout();
            let (read_buf, owed) = self.session.read_buf_and_owed();
            if owed.is_empty() && !read {
                return Ok(None);
            }
            let wrote = async {
                if owed.is_empty() {
                    pending().await
                }
                Wake::Wrote((&*stream).write(owed).await)
            };
            let input = async {
                if !read {
                    pending().await
                }
                Wake::Read((&*stream).read(read_buf).await)
            };
            let stalled = async {
                until(deadline).await;
                Wake::Stalled
            };
            match future::or(input, future::or(wrote, stalled)).await {
                Wake::Read(result) => return Ok(Some(result)),
                Wake::Wrote(n) => self.session.output().consumed(n?, Instant::now()),
                Wake::Stalled => self.session.output().on_timeout(Instant::now()).map_err(io::Error::other)?,
            }
        }
    }
}
