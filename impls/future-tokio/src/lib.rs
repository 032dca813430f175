//! Deferred/future style on tokio: one async task per connection, `.await` wherever it waits.
//!
//! ```text
//!  serve thread: block_on(accept loop) ──spawn──► connection task (one per client, on any worker)
//!                                                   loop {
//!                                                     read.await ──► Session::poll: each line ──► Service::handle
//!  tokio multi-thread runtime                           ├─ reply ──► OutputBuffer, try_write at flush_at
//!  (--threads workers, work-stealing,                   ├─ WHATSAT: upstream::fetch(..).await ──► Session::complete
//!   one I/O driver + timer wheel)                       └─ flood ──FloodLinks::send──► Notify ──► link task
//!                                                     write what the socket takes; while bytes are owed,
//!                                                     select! { writable, readable if may_read, stall }
//!                                                   }
//! ```
//!
//! The seed article's "deferred object" is a value standing for a result that is not there yet,
//! with the continuation attached to it. async/await is its modern form: the compiler turns each
//! connection's straight-line loop into a state machine (the future), and every `.await` is a point
//! where the task hands its worker back to the runtime until the reactor says the socket is ready
//! or the timer fired. The code reads like the thread-per-request style; the waiting costs a few
//! hundred bytes of task state instead of a thread.
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
//! connections and paces the accept loop after errors. This crate keeps only the tokio parts: sockets, `tokio::spawn`, `Notify`, `select!` and `sleep_until`.
//!
//! Reads are tokio's: a `read().await` tries the socket when tokio's cached readiness says it may
//! have data and waits for the I/O driver otherwise; tokio clears the readiness on a short read or
//! on `WouldBlock`, so the reactor is consulted only when the socket is really drained. Writes are
//! `try_write` (what the socket takes now, each write reported with `consumed`), then `writable()`.
//!
//! # Runtime
//! `Builder::new_multi_thread().worker_threads(n).enable_all()`: `n` = `--threads`, default
//! [`herd_core::available_cores`]. Connection and link tasks run on the workers
//! (work-stealing between them); the calling thread runs the accept loop in `block_on`, as
//! `#[tokio::main]` would. `--stack-kib` sets the workers' stack size (tokio's default: 2 MiB).
//!
//! # Layout
//! - [`serve`]: build the runtime, start the links, accept.
//! - `Connection`: one client's task: read into its [`Session`], fetch, write, wait.
//! - [`links`]: one task per neighbour driving its [`herd_core::policy::FloodLink`].
//! - [`upstream`]: one WHATSAT's [`herd_core::policy::PlacesCall`] on a shared pool of connections.

pub mod links;
pub mod upstream;

use std::future::pending;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use herd_core::policy::{Accepted, Fetch, Session};
use herd_core::{ServeOptions, Service, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::links::LinkNotify;

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: std::net::TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(options.threads.unwrap_or_else(herd_core::available_cores).max(1)).enable_all();
    if let Some(kib) = options.stack_kib {
        builder.thread_stack_size(kib * 1024);
    }
    let runtime = builder.thread_name("tokio-worker").build()?;
    listener.set_nonblocking(true)?;
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        let links = links::spawn(options, &*service);
        let shared = Arc::new(Shared::new(service, links, options));
        accept_loop(listener, shared).await
    })
}

/// What every connection task shares.
type Shared<S> = herd_core::policy::Shared<S, LinkNotify, TcpStream>;

async fn accept_loop<S: Service>(listener: TcpListener, shared: Arc<Shared<S>>) -> io::Result<()> {
    let mut acceptor = shared.acceptor();
    loop {
        match acceptor.on_accept(listener.accept().await, Instant::now) {
            Accepted::Serve((stream, _), admitted) => {
                let _ = stream.set_nodelay(true);
                let mut conn = Connection { stream, session: Session::new(&shared.limits, admitted) };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { shared.ended(conn.serve(&shared).await) });
            }
            Accepted::Refused => {}
            Accepted::Pause(resume) => tokio::time::sleep_until(resume.into()).await,
        }
    }
}

/// Sleeps until `deadline` on tokio's timer; never returns without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => pending().await,
    }
}

/// One client connection, owned by its task.
struct Connection {
    stream: TcpStream,
    session: Session,
}

impl Connection {
    async fn serve<S: Service>(&mut self, shared: &Shared<S>) -> io::Result<()> {
        while !self.session.is_closing() {
            self.settle(true).await?;
            match self.stream.read(self.session.read_buf()).await {
                Ok(0) => break, // end of stream: what is owed still goes out (a half-closed client reads it)
                Ok(n) => self.session.filled(n, Timestamp::from_system_time(SystemTime::now())),
                Err(_) => return Ok(()), // reset: nothing more to answer
            }
            let stream = &self.stream;
            while let Some(Fetch { places, lookup }) =
                self.session.poll(shared, Instant::now(), |b| stream.try_write(b))?
            {
                let answer = upstream::fetch(places, &lookup.query).await;
                self.session.complete(&*shared.service, lookup, answer);
            }
        }
        self.settle(false).await?;
        if self.session.is_closing() {
            self.stream.shutdown().await?;
        }
        Ok(())
    }

    /// Writes until nothing is owed or, if `read` and the buffer allows reading, input is there.
    /// Waits for the socket to take more no longer than the buffer's stall deadline.
    async fn settle(&mut self, read: bool) -> io::Result<()> {
        let stream = &self.stream;
        loop {
            let out = self.session.output();
            out.write_with(Instant::now(), |b| stream.try_write(b))?;
            if out.owed() == 0 {
                return Ok(());
            }
            let read = read && out.may_read();
            tokio::select! {
                ready = stream.writable() => ready?,
                ready = stream.readable(), if read => return ready,
                () = until(out.poll_timeout()) => out.on_timeout(Instant::now()).map_err(io::Error::other)?,
            }
        }
    }
}
