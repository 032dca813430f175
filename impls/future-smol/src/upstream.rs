//! The places client: herd-core's [`PlacesCall`] driven over smol `Async<TcpStream>`s drawn from
//! one [`PlacesPool`] per server.
//!
//! ```text
//!  connection task ── fetch: PlacesCall::new ── or(exchange, Timer::at(call.poll_timeout())) ─┐
//!    exchange: pool.checkout() or connect ── on_attached ── write request() ── read ── on_bytes
//!      Step::Continue ─► read again   Step::Reconnect ─► fresh connection   Step::Done ─► checkin
//!  the Timer won: the exchange and its socket are dropped ── call.on_timeout ◄─────────────────┘
//! ```
//!
//! The machine owns every rule: one deadline for the whole exchange (`upstream_timeout`), the one
//! retry of a stale kept-alive connection, keep-or-close after the response, and the pool's bound
//! (`upstream_idle_max`). The pool is one per server, shared by every connection task, because
//! tasks move between the threads that run the shared executor ("per thread" means nothing stable
//! here) and "per client connection" would open an upstream connection for every short-lived
//! client. Losing the race to the `Timer` drops the exchange and its socket, so a late response is
//! never read as the answer to a later request. After sending a request the first read waits for
//! readiness ([`Reads`]): the response cannot be there yet.

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use herd_core::policy::{PlacesCall, PlacesPool, Step};
use herd_core::{HttpResponse, Limits, PlacesQuery, ServerStats, UpstreamError};
use smol::io::AsyncWriteExt;
use smol::{Async, Timer, future};

use crate::Reads;

/// The places backend as the server sees it: an address and its kept-alive connections.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    host: String,
    pool: PlacesPool<Async<TcpStream>>,
    limits: Limits,
}

impl Upstream {
    pub fn new(addr: SocketAddr, limits: &Limits, stats: &ServerStats) -> Self {
        Self { addr, host: addr.to_string(), pool: PlacesPool::new(limits, stats), limits: limits.clone() }
    }

    /// One WHATSAT's request and response, by the machine's deadline.
    pub async fn fetch(&self, query: &PlacesQuery, stats: &ServerStats) -> Result<HttpResponse, UpstreamError> {
        let mut call = PlacesCall::new(query, &self.host, Instant::now(), &self.limits, stats);
        let expired = Timer::at(call.poll_timeout());
        let expired = async {
            expired.await;
            None
        };
        let step = future::or(async { Some(self.exchange(&mut call).await) }, expired).await;
        match step.or_else(|| call.on_timeout(Instant::now())) {
            Some(Step::Done { result, .. }) => result,
            _ => Err(UpstreamError::Timeout),
        }
    }

    /// Attaches connections to the call until it is done: an idle one first, a fresh one after a
    /// [`Step::Reconnect`].
    async fn exchange(&self, call: &mut PlacesCall) -> Step {
        let mut idle = self.pool.checkout();
        loop {
            let reused = idle.is_some();
            let mut conn = match idle.take() {
                Some(conn) => conn,
                None => match Async::<TcpStream>::connect(self.addr).await {
                    Ok(conn) => {
                        self.pool.opened();
                        let _ = conn.get_ref().set_nodelay(true);
                        conn
                    }
                    Err(e) => return call.on_connect_failed(&e.to_string()),
                },
            };
            call.on_attached(reused);
            let step = round_trip(&mut conn, call).await;
            if let Step::Done { keep, .. } = step {
                self.pool.checkin(conn, keep);
                return step;
            }
        }
    }
}

/// Sends the request and feeds the answer to the call until it says more than `Continue`.
async fn round_trip(conn: &mut Async<TcpStream>, call: &mut PlacesCall) -> Step {
    if let Err(e) = conn.write_all(call.request()).await {
        return call.on_closed(&e.to_string());
    }
    let mut buf = vec![0; 16 * 1024];
    let mut reads = Reads { drained: true };
    loop {
        let step = match reads.read(conn, &mut buf).await {
            Ok(0) => call.on_closed("end of stream"),
            Ok(n) => call.on_bytes(&buf[..n]),
            Err(e) => call.on_closed(&e.to_string()),
        };
        if step != Step::Continue {
            return step;
        }
    }
}
