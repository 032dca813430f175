//! Deferred/future style on tokio: one async task per connection, `.await` wherever it waits.
//!
//! ```text
//!  serve thread: block_on(accept loop) ──spawn──► connection task (one per client, on any worker)
//!                                                   loop {
//!                                                     read.await ──► LineFramer ──► Service::handle
//!  tokio multi-thread runtime                           ├─ reply bytes ──────────────► OutputBuffer::push
//!  (--threads workers, work-stealing,                   ├─ WHATSAT: write, PlacesCall driven .await ──► push
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
//! [`upstream`]); [`AcceptBackoff`] paces the accept loop after errors. This crate keeps only the
//! tokio parts: sockets, `tokio::spawn`, `Notify`, `select!` and `sleep_until`.
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
//! - `Connection`: one client's task: read, frame, handle, write.
//! - [`links`]: one task per neighbour driving its [`herd_core::policy::FloodLink`].
//! - [`upstream`]: one WHATSAT's [`herd_core::policy::PlacesCall`] on a shared pool of connections.

pub mod links;
pub mod upstream;

use std::future::pending;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use herd_core::policy::{AcceptBackoff, Admission, Admitted, FloodLinks, OutputBuffer};
use herd_core::{Frame, Limits, LineFramer, Link, Reply, ServeOptions, ServerStats, Service, Timestamp, UpstreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::links::LinkNotify;
use crate::upstream::Upstream;

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
    links: Arc<FloodLinks<LinkNotify>>,
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
                tokio::spawn(conn.run());
            }
            Err(e) => {
                shared.service.log().error("accept", e);
                until(Some(backoff.on_error(Instant::now()))).await;
            }
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
            self.settle(true).await?;
            let n = match self.stream.read(self.framer.read_buf()).await {
                // End of stream: what is owed still goes out (a half-closed client reads it).
                Ok(0) => return self.settle(false).await,
                Ok(n) => n,
                Err(_) => return Ok(()), // reset: nothing more to answer
            };
            self.framer.filled(n);
            while let Some(frame) = self.framer.next_frame() {
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        let reply = self.shared.service.oversized(quote);
                        self.out.push(&reply);
                        self.settle(false).await?;
                        return self.stream.shutdown().await;
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
                        write(&self.stream, &mut self.out)?;
                        let result = match &self.shared.upstream {
                            Some(upstream) => upstream.fetch(&lookup.query, service.stats()).await,
                            None => Err(UpstreamError::NotConfigured),
                        };
                        let reply = self.shared.service.complete(lookup, result);
                        self.out.push(&reply);
                    }
                }
                if self.out.should_flush() {
                    write(&self.stream, &mut self.out)?;
                }
            }
        }
    }

    /// Writes until nothing is owed or, if `read` and the buffer allows reading, input is there.
    /// Waits for the socket to take more no longer than the buffer's stall deadline.
    async fn settle(&mut self, read: bool) -> io::Result<()> {
        loop {
            write(&self.stream, &mut self.out)?;
            if self.out.owed() == 0 {
                return Ok(());
            }
            let read = read && self.out.may_read();
            tokio::select! {
                ready = self.stream.writable() => ready?,
                ready = self.stream.readable(), if read => return ready,
                () = until(self.out.poll_timeout()) => self.out.on_timeout(Instant::now()).map_err(io::Error::other)?,
            }
        }
    }
}

/// Writes what the socket takes now, each write reported to the buffer; a full socket with bytes
/// owed starts the stall clock (or closes a client owed too much).
fn write(stream: &TcpStream, out: &mut OutputBuffer) -> io::Result<()> {
    while out.owed() > 0 {
        match stream.try_write(out.poll_transmit()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.consumed(n, Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return out.blocked(Instant::now()).map_err(io::Error::other);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
