//! Deferred/future style on smol: one async task per connection, `.await` wherever it waits.
//!
//! ```text
//!  serve thread: block_on(ex.run(accept loop)) ──ex.spawn──► connection task (one per client)
//!                                                      loop {
//!                                                        read.await ──► Session::poll: each line ──► Service::handle
//!  one shared Executor, run by the serve thread            ├─ reply ──► OutputBuffer, write(2) at flush_at
//!  + (--threads − 1) threads: block_on(ex.run(pending()))  ├─ WHATSAT: upstream::fetch(..).await ──► Session::complete
//!  async-io reactor: driven by an idle block_on thread     └─ flood ──FloodLinks::send──► channel(1) ──► link task
//!                                                        write what the socket takes; while bytes are owed,
//!                                                        or { writable, readable if may_read, Timer::at(stall) }
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
//! registered with the reactor, so a plain `write(2)` on `get_ref()` is the non-blocking "write
//! what the socket takes now"), a deadline is a `Timer::at` raced with `future::or`, and the
//! executor is a value the program creates and runs on threads of its own.
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
//! - `Connection`: one client's task: read into its [`Session`], fetch, write, wait.
//! - [`links`]: one task per neighbour driving its [`herd_core::policy::FloodLink`].
//! - [`upstream`]: one WHATSAT's [`herd_core::policy::PlacesCall`] on a shared pool of connections.

pub mod links;
pub mod upstream;

use std::future::pending;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::catch_unwind;
use std::sync::Arc;
use std::thread;
use std::time::{Instant, SystemTime};

use herd_core::policy::{Accepted, Fetch, Session};
use herd_core::{ServeOptions, Service, Timestamp};
use smol::io::AsyncReadExt;
use smol::{Async, Executor, Timer, future};

use crate::links::LinkBell;

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
    let links = links::spawn(&ex, options, &*service);
    let shared = Arc::new(Shared::new(service, links, options));
    smol::block_on(ex.run(accept_loop(&ex, listener, shared)))
}

/// What every connection task shares.
type Shared<S> = herd_core::policy::Shared<S, LinkBell, Async<TcpStream>>;

async fn accept_loop<S: Service>(
    ex: &Executor<'static>,
    listener: Async<TcpListener>,
    shared: Arc<Shared<S>>,
) -> io::Result<()> {
    let mut acceptor = shared.acceptor();
    loop {
        match acceptor.on_accept(listener.accept().await, Instant::now) {
            Accepted::Serve((stream, _), admitted) => {
                let _ = stream.get_ref().set_nodelay(true);
                let session = Session::new(&shared.limits, admitted);
                let (mut conn, shared) = (Connection { stream, reads: Reads::default(), session }, Arc::clone(&shared));
                ex.spawn(async move { shared.ended(conn.serve(&shared).await) }).detach();
            }
            Accepted::Refused => {}
            Accepted::Pause(resume) => drop(Timer::at(resume).await),
        }
    }
}

/// A timer for the machines' `poll_timeout`: `None` never fires.
pub(crate) fn timer(deadline: Option<Instant>) -> Timer {
    deadline.map_or_else(Timer::never, Timer::at)
}

/// What ended one wait of a connection task with bytes owed.
enum Wake {
    Writable,
    Readable,
    Stalled,
}

/// One client connection, owned by its task.
struct Connection {
    stream: Async<TcpStream>,
    reads: Reads,
    session: Session,
}

impl Connection {
    async fn serve<S: Service>(&mut self, shared: &Shared<S>) -> io::Result<()> {
        let service = &*shared.service;
        while !self.session.is_closing() {
            self.settle(true).await?;
            let n = match self.reads.read(&mut self.stream, self.session.read_buf()).await {
                Ok(0) => break, // end of stream: what is owed still goes out (a half-closed client reads it)
                Ok(n) => n,
                Err(_) => return Ok(()), // reset: nothing more to answer
            };
            self.session.filled(n, Timestamp::from_system_time(SystemTime::now()));
            let stream = self.stream.get_ref();
            while let Some(Fetch { places, lookup }) =
                self.session.poll(shared, Instant::now(), |b| (&*stream).write(b))?
            {
                let answer = upstream::fetch(places, &lookup.query).await;
                self.session.complete(service, lookup, answer);
            }
        }
        self.settle(false).await?;
        if self.session.is_closing() {
            self.stream.get_ref().shutdown(std::net::Shutdown::Write)?;
        }
        Ok(())
    }

    /// Writes until nothing is owed or, if `read` and the buffer allows reading, input is there.
    /// Waits for the socket to take more no longer than the buffer's stall deadline.
    async fn settle(&mut self, read: bool) -> io::Result<()> {
        loop {
            let stream = &self.stream;
            let out = self.session.output();
            // `write(2)` on the non-blocking socket: what it takes now.
            out.write_with(Instant::now(), |b| stream.get_ref().write(b))?;
            if out.owed() == 0 {
                return Ok(());
            }
            let read = read && out.may_read();
            let stalled = timer(out.poll_timeout());
            let writable = async { stream.writable().await.map(|()| Wake::Writable) };
            let readable = async {
                if !read {
                    pending::<()>().await;
                }
                stream.readable().await.map(|()| Wake::Readable)
            };
            let stalled = async {
                stalled.await;
                Ok(Wake::Stalled)
            };
            match future::or(writable, future::or(readable, stalled)).await? {
                Wake::Writable => {}
                Wake::Readable => {
                    self.reads = Reads::default();
                    return Ok(());
                }
                Wake::Stalled => out.on_timeout(Instant::now()).map_err(io::Error::other)?,
            }
        }
    }
}

/// Reads from one socket, waiting for readiness first once a read has found it drained.
#[derive(Debug, Default)]
struct Reads {
    /// The last read came back short: the socket had nothing more at that moment.
    drained: bool,
}

impl Reads {
    async fn read(&mut self, stream: &mut Async<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            stream.readable().await?;
        }
        let n = stream.read(buf).await?;
        self.drained = n < buf.len();
        Ok(n)
    }
}
