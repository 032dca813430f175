//! [`Limits`]: every constant of the policy layer ([`crate::policy`]), in one value that
//! [`crate::ServeOptions`] carries to a style.

use std::time::Duration;

use serde::Serialize;

/// Every constant of the policy layer, in one value. The harness fills it from `harness serve` /
/// `harness run` flags (each field has one) and records it in the result file, so a result says
/// under which limits it ran. The defaults are the same for every style: that is the point.
///
/// Every buffer a server keeps is bounded by one of these: a client's input by `max_line`, its
/// output by `max_output`, its requests in flight by `max_in_flight`, the connections by
/// `max_connections` (so the upstream connections in use are at most `max_connections ×
/// max_in_flight`, and at most `upstream_idle_max` idle), each neighbour's flood queue by
/// `link_queue_bytes`, and the location store by `max_clients`. The event log's queue (in the
/// harness, not here) holds 65,536 events and drops, and counts, what does not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Longest accepted input line, newline excluded. 64 KiB: far above any valid command (a few
    /// hundred bytes), small enough that a client without newlines costs little.
    pub max_line: usize,

    /// Shortest time between two connection attempts to one neighbour. 100 ms: a restarted
    /// neighbour is linked again within a tenth of a second, and a dead one costs ten SYNs a second.
    pub link_retry: Duration,
    /// A connection attempt still pending after this long is abandoned and retried. 500 ms: five
    /// retry intervals, far above a loopback or LAN handshake.
    pub link_connect_timeout: Duration,
    /// Bytes queued toward one neighbour (not yet taken by its socket) before further updates are
    /// dropped and counted. 1 MiB: about 12,000 AT lines, more than a second of one link's traffic at
    /// 10,000 updates/s, while a hung neighbour costs each member at most 1 MiB per link.
    pub link_queue_bytes: usize,
    /// A link whose neighbour takes none of its bytes for this long is closed and reconnected (the
    /// queued updates are dropped). 5 s, as for clients: a neighbour that hangs longer is treated as
    /// gone.
    pub link_write_stall: Duration,

    /// Give up on one places request after this long (connecting and the one retry included). 3 s.
    pub upstream_timeout: Duration,
    /// Kept-alive upstream connections held idle for reuse; more are closed as they come back.
    /// 256: at least the WHATSAT concurrency of the standard workloads, so keep-alive always works.
    pub upstream_idle_max: usize,

    /// Replies gathered while handling one burst of input are written once they reach this size.
    /// 64 KiB: one write carries many small replies, and no reply waits behind a large batch.
    pub flush_at: usize,
    /// Output owed to one client past which its input is no longer read (TCP then slows it down).
    /// 256 KiB: a few socket buffers' worth.
    pub pause_output: usize,
    /// Output owed to one client past which it is disconnected. 4 MiB: the worst case of one read's
    /// worth of WHATSATs beyond the pause point.
    pub max_output: usize,
    /// A client that leaves its replies unread (no progress at all) for this long is disconnected. 5 s.
    pub write_stall: Duration,
    /// Requests of one connection read but not yet answered (WHATSATs waiting upstream, lines queued
    /// for a worker) past which reading pauses. 64: pipelining is allowed, hoarding is not.
    pub max_in_flight: usize,

    /// Clients a server's location store holds. Past it, a new client evicts the one stored
    /// longest ago (counted as `store_evictions`, logged once per episode). 4,000,000: at the
    /// measured ~180 bytes a client that is about 0.7 GiB a member, 3.5 GiB for a herd of five on
    /// one 24 GiB machine, while no workload here comes near it; without a cap, a stream of
    /// distinct ids grows every member by about 660 MiB per million until the TTL (an hour) or
    /// the kernel ends it.
    pub max_clients: usize,

    /// Client connections a server holds at once; one accepted past it is closed at once, counted
    /// (`connections_refused`) and logged once per episode. 16,000: above the 10,000-connection
    /// workload even if it all went to one server, and below the 20,000 descriptors a process may
    /// open on the machines here (the harness raises the soft limit to that hard one), so the
    /// links, the upstream connections and the log always get theirs.
    pub max_connections: usize,

    /// The first pause after an accept error (out of descriptors, most likely); it doubles on each
    /// further error up to [`Limits::accept_backoff_max`] and resets after an accept succeeds.
    pub accept_backoff: Duration,
    /// The longest pause after repeated accept errors.
    pub accept_backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: crate::DEFAULT_MAX_LINE,
            link_retry: Duration::from_millis(100),
            link_connect_timeout: Duration::from_millis(500),
            link_queue_bytes: 1024 * 1024,
            link_write_stall: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(3),
            upstream_idle_max: 256,
            flush_at: 64 * 1024,
            pause_output: 256 * 1024,
            max_output: 4 * 1024 * 1024,
            write_stall: Duration::from_secs(5),
            max_in_flight: 64,
            max_clients: 4_000_000,
            max_connections: 16_000,
            accept_backoff: Duration::from_millis(10),
            accept_backoff_max: Duration::from_secs(1),
        }
    }
}
