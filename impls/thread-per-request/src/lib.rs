//! Thread-per-request style: every accepted connection gets a new OS thread that does everything
//! for it with blocking calls, and ends when the connection ends.
//!
//! ```text
//! accept loop ──spawn──► thread: read ─► frame ─► Service::handle ─► (places fetch) ─► write ─┐
//!                                 ▲                                                          │
//!                                 └──────────────────────────────────────────────────────────┘
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

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use herd_blocking::{FloodLinks, PlacesClient};
use herd_core::{Frame, LineFramer, Link, Reply, ServeOptions, ServerStats, Service, Timestamp, UpstreamError};

/// Default stack per connection thread. A request path needs well under 64 KiB (framing buffers and
/// the places client's buffer are on the heap); 128 KiB leaves room for serde_json's formatting.
pub const DEFAULT_STACK_KIB: usize = 128;

/// Serves `service` on `listener` until the process exits.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>, options: &ServeOptions) -> io::Result<()> {
    let links = FloodLinks::spawn(&options.name, &options.neighbours, Arc::clone(&service));
    let stack = options.stack_kib.unwrap_or(DEFAULT_STACK_KIB) * 1024;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors or memory: say so, give the system a moment, keep accepting.
                service.log().error("accept", &e);
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        ServerStats::bump(&service.stats().connections);
        let connection = Connection {
            service: Arc::clone(&service),
            links: links.clone(),
            upstream: options.places.map(|addr| PlacesClient::new(addr, options.upstream_timeout)),
            framer: LineFramer::new(options.max_line),
            link: Link::default(),
        };
        let write_timeout = options.write_timeout;
        let spawned = thread::Builder::new().name("conn".into()).stack_size(stack).spawn(move || {
            // Resets and timeouts end a connection: the client's business, not a server error.
            let _ = connection.run(stream, write_timeout);
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
    service: Arc<S>,
    links: FloodLinks,
    /// Opened on the first WHATSAT and kept alive for the connection's lifetime.
    upstream: Option<PlacesClient>,
    framer: LineFramer,
    link: Link,
}

impl<S: Service> Connection<S> {
    fn run(mut self, mut stream: TcpStream, write_timeout: Duration) -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(write_timeout))?;
        let mut out = Vec::new();
        loop {
            let n = stream.read(self.framer.read_buf())?;
            if n == 0 {
                return Ok(());
            }
            self.framer.filled(n);
            let now = Timestamp::from_system_time(SystemTime::now());
            while let Some(frame) = self.framer.next_frame() {
                let line = match frame {
                    Frame::Line(line) => line,
                    Frame::Oversized(quote) => {
                        out.extend_from_slice(&self.service.oversized(quote));
                        return stream.write_all(&out);
                    }
                };
                let outcome = self.service.handle(line, &mut self.link, now);
                if let Some(flood) = &outcome.flood {
                    self.links.send(flood, self.service.stats());
                }
                match outcome.reply {
                    Reply::Bytes(bytes) => out.extend_from_slice(&bytes),
                    Reply::Nothing => {}
                    Reply::Places(lookup) => {
                        // Replies already due leave before we block on the upstream.
                        stream.write_all(&out)?;
                        out.clear();
                        let result = match &mut self.upstream {
                            Some(client) => client.fetch(&lookup.query),
                            None => Err(UpstreamError::NotConfigured),
                        };
                        out.extend_from_slice(&self.service.complete(lookup, result));
                    }
                }
            }
            stream.write_all(&out)?;
            out.clear();
        }
    }
}
