//! Deferred/future style on tokio: one async task per connection, `.await` wherever it waits.
//!
//! ```text
//!  serve thread: block_on(accept loop) ──spawn──► connection task (one per client, on any worker)
//!                                                   loop {
//!                                                     read.await ──► LineFramer ──► Service::handle
//!  tokio multi-thread runtime                           ├─ reply bytes ─────────────► out buffer
//!  (--threads workers, work-stealing,                   ├─ WHATSAT: flush, Upstream::fetch.await ──► out
//!   one I/O driver + timer wheel)                       └─ flood ──try_send──► link task per neighbour
//!                                                     write_all(out).await
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
//! WHATSAT sees the IAMAT before it) and replies leave in order, with no reordering buffer.
//! Replies to the lines of one read are gathered and written with one `write_all`; before a
//! WHATSAT waits on the upstream, what is already answered is written first.
//!
//! Back-pressure is the awaited write: while a task waits for a slow client to take its replies it
//! does not read, so the client's further requests wait in the kernel, and pending output per
//! connection stays below [`FLUSH_AT`] plus one reply. A client that leaves a write blocked for
//! `write_timeout` is closed.
//!
//! Reads are tokio's: a `read().await` tries the socket when tokio's cached readiness says it may
//! have data and waits for the I/O driver otherwise; tokio clears the readiness on a short read or
//! on `WouldBlock`, so the reactor is consulted only when the socket is really drained.
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
//! - [`links`]: flood links, one task per neighbour fed by a bounded mpsc channel.
//! - [`upstream`]: the places client over a shared pool of kept-alive connections.

pub mod links;
pub mod upstream;

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herd_core::{Frame, LineFramer, Link, Reply, ServeOptions, ServerStats, Service, Timestamp, UpstreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::links::FloodLinks;
use crate::upstream::Upstream;

/// Pending replies on one connection are written once they reach this size, even mid-read.
pub const FLUSH_AT: usize = 64 * 1024;
/// Pause after an accept error (out of descriptors, most likely) before accepting again, so a
/// listener that stays readable does not spin a thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

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
                tokio::spawn(conn.run());
            }
            Err(e) => {
                shared.service.log().error("accept", e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
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
                        return self.stream.shutdown().await;
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
        let written = tokio::time::timeout(self.shared.write_timeout, self.stream.write_all(&self.out)).await;
        self.out.clear();
        written.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read its replies")))
    }
}
