//! What a WAN herd records: its links' settings and what its relays did and cost.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A WAN herd's settings, as `parameters.wan` records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WanSettings {
    /// One-way delay of each flood link, each direction.
    pub link_delay_s: f64,
    /// ± jitter of that delay (uniform; byte order kept).
    pub link_jitter_s: f64,
    /// Segment loss of each flood link, 0 to 1.
    pub link_loss: f64,
    /// One-way delay of each client connection; null: clients connected directly.
    pub client_delay_s: Option<f64>,
    /// What made the delay: `relay` (a user-space TCP relay per directed link, in the harness).
    pub emulation: String,
    /// Whether the kernel had netem.
    pub netem: String,
    /// How loss is modelled.
    pub loss_model: String,
    /// The members' network namespaces, in server order.
    pub namespaces: Vec<String>,
}

/// What the relays of a WAN herd did and cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayRecord {
    pub relays: usize,
    pub connections: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// Chunks held back as lost.
    pub held_as_lost: u64,
    /// Connections a relay accepted but could not join to its member (member not up yet).
    pub target_refused: u64,
    /// CPU time of the relays' threads (user + system).
    pub cpu_s: f64,
    /// A 0 ms relay against a direct path, measured on loopback when the herd started.
    pub overhead: Option<Overhead>,
    pub note: String,
}

/// What a relay adds at zero delay, measured by ping-pong on loopback: 64-byte round trips to an
/// echo thread, alternately direct and through a 0 ms relay (both directions relayed), so that
/// both paths see the same machine (a wake-up on this VM takes 4 µs or 60 µs depending on what
/// else runs).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overhead {
    /// Round trips on each path.
    pub round_trips: u64,
    pub direct_p50_us: f64,
    pub direct_p99_us: f64,
    pub relayed_p50_us: f64,
    pub relayed_p99_us: f64,
    /// Relay CPU time (user + system) per relayed round trip (two chunks), in microseconds.
    pub relay_cpu_us_per_round_trip: f64,
}
