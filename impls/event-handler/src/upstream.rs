//! The places upstream: one [`Exchange`] handler per WHATSAT, on a connection from the loop's pool.
//!
//! ```text
//!  client ──start──► PlacesCall::new, spawn Exchange, timer at call.poll_timeout()
//!  Exchange: Wake ─► pool.checkout() (reused) or connect (pool.opened) ─► register under its token
//!            Ready ─► write call.request() ─► read ─► call.on_bytes / on_closed ─► Step
//!            Timer ─► call.on_timeout ─► Step
//!            Step::Reconnect ─► a fresh connection  │  Step::Done ─► Reply{seq, bytes} ─► client
//!                                                   └─► deregister, pool.checkin(conn, keep)
//! ```
//!
//! The rules (one deadline, which connection to use, the one retry of a stale kept-alive
//! connection, whether a connection may be kept, how many idle ones) are herd-core's `PlacesCall`
//! and `PlacesPool`. The pool is per loop, since a socket is registered with one loop's epoll; an
//! idle connection is deregistered while it waits there, and registered again under the token of
//! the exchange that takes it.

use std::net::SocketAddr;
use std::time::Instant;

use herd_core::policy::{PlacesCall, Step};
use herd_core::{PlacesLookup, Service};
use mio::net::TcpStream;

use crate::reactor::{Event, Handler, HandlerId, Next, poll_connected, read_now, write_now};
use crate::{Cx, Msg, World};

/// Starts WHATSAT `seq`'s exchange with the places backend at `addr` for the running client
/// handler, which gets its reply as [`Msg::Reply`].
pub fn start<S: Service>(cx: &mut Cx<S>, seq: u64, lookup: PlacesLookup, addr: SocketAddr, now: Instant) {
    let w = &cx.world;
    let call = PlacesCall::new(&lookup.query, &addr.to_string(), now, &w.options.limits, w.service.stats());
    let (lookup, reply_to) = (Some(lookup), cx.me());
    let id = cx.spawn(|_| Exchange { conn: None, connecting: false, written: 0, call, lookup, reply_to, seq });
    cx.post(id, Msg::Wake);
}

/// One WHATSAT's exchange with the places backend.
struct Exchange {
    conn: Option<TcpStream>,
    /// The connection's connect has not completed yet.
    connecting: bool,
    /// Bytes of the request already written on this connection.
    written: usize,
    call: PlacesCall,
    /// Taken when the exchange ends.
    lookup: Option<PlacesLookup>,
    reply_to: HandlerId,
    seq: u64,
}

impl Exchange {
    /// Takes a connection: an idle one from the pool unless `fresh`, else a new one.
    fn attach<S: Service>(&mut self, cx: &mut Cx<S>, fresh: bool) -> Option<Step> {
        cx.wake_at(Some(self.call.poll_timeout())); // the exchange's one deadline (set once)
        let (Some(addr), Some(pool)) = (cx.world.options.places, &cx.world.pool) else { return None };
        let pooled = if fresh { None } else { pool.checkout() };
        self.call.on_attached(pooled.is_some());
        (self.connecting, self.written) = (pooled.is_none(), 0);
        if pooled.is_none() {
            pool.opened();
        }
        let conn = pooled.map_or_else(|| cx.connect(addr), |conn| cx.attach(conn));
        let failed = conn.map(|conn| self.conn = Some(conn)).err();
        failed.map(|e| self.call.on_connect_failed(&e.to_string()))
    }

    /// Writes what is left of the request and reads what has come; `None`: wait for readiness.
    fn pump(&mut self) -> Option<Step> {
        let conn = self.conn.as_mut()?;
        if let Some(Err(e)) = poll_connected(conn, &mut self.connecting) {
            return Some(self.call.on_connect_failed(&e.to_string()));
        } else if self.connecting {
            return None;
        }
        while self.written < self.call.request().len() {
            match write_now(conn, &self.call.request()[self.written..]) {
                Ok(Some(n)) => self.written += n,
                Ok(None) => return None,
                Err(e) => return Some(self.call.on_closed(&e.to_string())),
            }
        }
        let mut buf = [0_u8; 16 * 1024];
        loop {
            let step = match read_now(conn, &mut buf) {
                Ok(None) => return None,
                Ok(Some(0)) => self.call.on_closed("end of stream"),
                Ok(Some(n)) => self.call.on_bytes(&buf[..n]),
                Err(e) => self.call.on_closed(&e.to_string()),
            };
            if !matches!(step, Step::Continue) {
                return Some(step);
            }
        }
    }
}

impl<S: Service> Handler<World<S>, Msg> for Exchange {
    fn on_event(&mut self, event: Event<Msg>, cx: &mut Cx<S>) -> Next {
        let mut step = match event {
            Event::Message(_) => self.attach(cx, false),
            Event::Ready(_) => self.pump(),
            Event::Timer => self.call.on_timeout(Instant::now()),
        };
        while let Some(Step::Reconnect) = step {
            self.conn = None;
            step = self.attach(cx, true);
        }
        let Some(Step::Done { result, keep }) = step else { return Next::Keep };
        if let Some(lookup) = self.lookup.take() {
            let bytes = cx.world.service.complete(lookup, result);
            cx.post(self.reply_to, Msg::Reply { seq: self.seq, bytes });
        }
        if let (Some(mut conn), Some(pool)) = (self.conn.take(), &cx.world.pool) {
            let keep = keep && cx.registry().deregister(&mut conn).is_ok();
            pool.checkin(conn, keep);
        }
        Next::Done
    }
}
