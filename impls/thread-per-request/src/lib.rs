//! Thread-per-request style: every accepted connection gets a new OS thread that does everything
//! for it with blocking calls, and ends when the connection ends.
//!
//! ```text
//! accept loop (Acceptor) ──spawn──► thread: read ─► frame ─► handle_line ─► (places fetch) ─► write ─┐
//!                                            ▲                                                      │
//!                                            └──────────────────────────────────────────────────────┘
//! ```
//!
//! There is no pool to hide behind: under churn (one request per connection) every request pays
//! for a thread's creation and teardown, which is the cost this style is here to show. Threads get
//! a small stack (`--stack-kib`, default [`DEFAULT_STACK_KIB`]) so 10,000 connections fit in memory:
//! only the pages a thread touches become resident.
//!
//! Within a connection, requests run one after another, so replies leave in request order by
//! construction. The replies to the lines of one read are written together, but never held back
//! behind a blocking upstream call.
//!
//! What is decided besides the moving of bytes is herd-core's: the accept loop does what
//! [`Acceptor`] says (serve, refuse past the cap, pause after an error), each line goes through
//! [`handle_line`] (the service, the flood, and a WHATSAT's fetch or its answer without a places
//! backend), and replies are written under the [`OutputBuffer`]'s rules.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Instant, SystemTime};

use herd_blocking::output::{self, WriteError};
use herd_blocking::{FloodLinks, PlacesClient};
use herd_core::policy::{Accepted, Acceptor, Admitted, Fetch, Handled, OutputBuffer, handle_line};
use herd_core::{Frame, LineFramer, Link, ServeOptions, Service, Timestamp};

/// Default stack per connection thread. A request path needs well under 64 KiB (framing buffers and
/// the places client's buffer are on the heap); 128 KiB leaves room for serde_json's formatting.
pub const DEFAULT_STACK_KIB: usize = 128;

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let links = herd_blocking::links::spawn(options, &*service)?;
    let upstream = options.places.map(|addr| Arc::new(PlacesClient::new(addr, &options.limits, service.stats())));
    let stack = options.stack_kib.unwrap_or(DEFAULT_STACK_KIB) * 1024;
    let mut acceptor = Acceptor::new(&options.limits, service.stats(), service.log());
    for stream in listener.incoming() {
        let (stream, admitted) = match acceptor.on_accept(stream, Instant::now) {
            Accepted::Serve(stream, admitted) => (stream, admitted),
            Accepted::Refused => continue, // past the cap: closed
            Accepted::Pause(until) => {
                // Out of descriptors or memory (logged): pause as the policy says, keep accepting.
                thread::sleep(until.saturating_duration_since(Instant::now()));
                continue;
            }
        };
        let connection = Connection {
            _admitted: admitted,
            service: Arc::clone(&service),
            links: Arc::clone(&links),
            upstream: upstream.clone(),
            framer: LineFramer::new(options.limits.max_line),
            link: Link::default(),
            out: OutputBuffer::new(&options.limits),
            write_stall: options.limits.write_stall,
        };
        let spawned = thread::Builder::new().name("conn".into()).stack_size(stack).spawn(move || {
            connection.run(stream);
        });
        if let Err(e) = spawned {
            // The connection is dropped (closed) with the failed spawn: the client sees a reset.
            service.log().error("spawn", &e);
        }
    }
    Ok(())
}

/// Everything one connection's thread owns.
struct Connection<S> {
    /// Its place under the connection cap, given back when the thread ends.
    _admitted: Admitted,
    service: Arc<S>,
    links: Arc<FloodLinks>,
    upstream: Option<Arc<PlacesClient>>,
    framer: LineFramer,
    link: Link,
    out: OutputBuffer,
    write_stall: std::time::Duration,
}

impl<S: Service> Connection<S> {
    /// Runs the connection to its end. Resets end a connection quietly (the client's business);
    /// a client the output rules give up on is logged.
    fn run(mut self, stream: TcpStream) {
        if let Err(WriteError::Closed(close)) = self.serve(&stream) {
            self.service.log().error("write", close);
        }
    }

    fn serve(&mut self, stream: &TcpStream) -> Result<(), WriteError> {
        stream.set_nodelay(true)?;
        // Plain blocking reads and writes; a write that takes nothing for the stall limit returns,
        // and the output rules decide what that means.
        stream.set_write_timeout(Some(self.write_stall))?;
        loop {
            let n = match (&*stream).read(self.framer.read_buf()) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.framer.filled(n);
            let now = Timestamp::from_system_time(SystemTime::now());
            while let Some(frame) = self.framer.next_frame() {
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        self.out.push(&self.service.oversized(quote));
                        return output::flush_blocking(stream, &mut self.out);
                    }
                };
                let places = self.upstream.as_deref();
                match handle_line(&*self.service, &self.links, places, line, &mut self.link, now, Instant::now) {
                    Handled::Reply(bytes) => self.out.push(&bytes),
                    Handled::Nothing => {}
                    Handled::Fetch(Fetch { places, lookup }) => {
                        // Replies already due leave before we block on the upstream.
                        output::flush_blocking(stream, &mut self.out)?;
                        let result = places.fetch(&lookup.query, self.service.stats());
                        self.out.push(&self.service.complete(lookup, result));
                    }
                }
                if self.out.should_flush() {
                    output::flush_blocking(stream, &mut self.out)?;
                }
            }
            output::flush_blocking(stream, &mut self.out)?;
        }
    }
}
