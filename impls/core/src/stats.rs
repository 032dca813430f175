//! Server-side counters, shared by every thread of a server and read once at shutdown.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::command::RequestKind;

/// Counters a server keeps about itself. Atomics, so any thread may bump them without a lock.
#[derive(Debug)]
pub struct ServerStats {
    pub iamat: AtomicU64,
    pub whatsat: AtomicU64,
    pub at: AtomicU64,
    pub peer: AtomicU64,
    pub invalid: AtomicU64,
    pub echo: AtomicU64,
    pub oversized: AtomicU64,
    /// AT updates that were newer and stored (the rest were duplicates of the flood).
    pub floods_stored: AtomicU64,
    /// AT lines taken whole by a neighbour link's socket. Shared with the link machines.
    pub floods_out: Arc<AtomicU64>,
    /// AT lines not sent: the neighbour was down, its queue full, or the link was lost with them queued.
    pub floods_dropped: Arc<AtomicU64>,
    pub upstream_ok: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Upstream connections opened: stays near the WHATSAT concurrency when keep-alive works.
    pub upstream_connects: Arc<AtomicU64>,
    /// Kept-alive upstream connections found closed and retried once on a fresh one.
    pub upstream_stale_retries: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    /// Connections closed at accept because the server held `max_connections` already.
    pub connections_refused: Arc<AtomicU64>,
    /// Clients evicted from the location store to make room (it held `max_clients`).
    pub store_evictions: AtomicU64,
    /// `AT` lines refused because they did not come over an authenticated flood link.
    pub unauthenticated_at: AtomicU64,
    /// Link handshakes refused, either side: a wrong proof, a replay, a malformed or late answer.
    pub links_refused: Arc<AtomicU64>,
    /// Style-specific gauges (queue depths, time queued), by name, read live at snapshot time.
    extra: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    /// Flood propagation delay in µs: receive time − (client time + delta) of each stored AT.
    propagation_us: Mutex<Histogram<u64>>,
}

/// A plain copy of [`ServerStats`].
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    pub counters: Vec<(&'static str, u64)>,
    pub extra: Vec<(String, u64)>,
    pub propagation_us: Histogram<u64>,
}

impl Default for ServerStats {
    fn default() -> Self {
        Self {
            iamat: AtomicU64::new(0),
            whatsat: AtomicU64::new(0),
            at: AtomicU64::new(0),
            peer: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            echo: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            floods_stored: AtomicU64::new(0),
            floods_out: Arc::new(AtomicU64::new(0)),
            floods_dropped: Arc::new(AtomicU64::new(0)),
            upstream_ok: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            upstream_connects: Arc::new(AtomicU64::new(0)),
            upstream_stale_retries: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
            connections_refused: Arc::new(AtomicU64::new(0)),
            store_evictions: AtomicU64::new(0),
            unauthenticated_at: AtomicU64::new(0),
            links_refused: Arc::new(AtomicU64::new(0)),
            extra: Mutex::new(Vec::new()),
            propagation_us: Mutex::new(new_histogram()),
        }
    }
}

/// 1 µs to 60 s at 3 significant digits: the range used for every latency in herdbench.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

impl ServerStats {
    pub fn count(&self, kind: RequestKind) {
        let counter = match kind {
            RequestKind::Iamat => &self.iamat,
            RequestKind::Whatsat => &self.whatsat,
            RequestKind::At => &self.at,
            RequestKind::Peer => &self.peer,
            RequestKind::Invalid => &self.invalid,
            RequestKind::Echo => &self.echo,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn record_propagation(&self, micros: u64) {
        if let Ok(mut h) = self.propagation_us.lock() {
            h.saturating_record(micros.max(1));
        }
    }

    /// A style-specific gauge, created on first use; the style updates it, the snapshot reads it.
    pub fn gauge(&self, name: &str) -> Arc<AtomicU64> {
        let mut extra = self.extra.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, g)) = extra.iter().find(|(n, _)| n == name) {
            return Arc::clone(g);
        }
        let g = Arc::new(AtomicU64::new(0));
        extra.push((name.to_owned(), Arc::clone(&g)));
        g
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let c = |a: &AtomicU64| a.load(Relaxed);
        StatsSnapshot {
            counters: vec![
                ("iamat", c(&self.iamat)),
                ("whatsat", c(&self.whatsat)),
                ("at", c(&self.at)),
                ("peer", c(&self.peer)),
                ("invalid", c(&self.invalid)),
                ("echo", c(&self.echo)),
                ("oversized", c(&self.oversized)),
                ("floods_stored", c(&self.floods_stored)),
                ("floods_out", c(&self.floods_out)),
                ("floods_dropped", c(&self.floods_dropped)),
                ("upstream_ok", c(&self.upstream_ok)),
                ("upstream_errors", c(&self.upstream_errors)),
                ("upstream_connects", c(&self.upstream_connects)),
                ("upstream_stale_retries", c(&self.upstream_stale_retries)),
                ("connections", c(&self.connections)),
                ("connections_refused", c(&self.connections_refused)),
                ("store_evictions", c(&self.store_evictions)),
                ("unauthenticated_at", c(&self.unauthenticated_at)),
                ("links_refused", c(&self.links_refused)),
            ],
            extra: self
                .extra
                .lock()
                .map(|e| e.iter().map(|(n, g)| (n.clone(), g.load(Relaxed))).collect())
                .unwrap_or_default(),
            propagation_us: self.propagation_us.lock().map(|h| h.clone()).unwrap_or_else(|_| new_histogram()),
        }
    }
}
