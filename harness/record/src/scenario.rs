//! What a scenario run records: its phases, events, finer timeline and recovery from each
//! disturbance, and the servers' samples it was measured from.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A p99 back within this factor of its level before a disturbance counts as recovered …
pub const RECOVERED_WITHIN: f64 = 1.5;
/// … once it has stayed there this long.
pub const RECOVERY_HOLD: Duration = Duration::from_millis(500);
/// The level before a disturbance: the p99 of this long before it.
pub const BASELINE: Duration = Duration::from_secs(2);
/// A restarted member has converged when its connections have seen no failure for this long.
pub const CONVERGED_HOLD: Duration = Duration::from_secs(1);

/// An event as the result file records it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// `hang`, `crash`, `upstream-stall`, `upstream-fail`.
    pub action: String,
    pub member: Option<String>,
    /// When its start and end were planned, ms after the window's start.
    pub planned_ms: [u64; 2],
    /// When the harness did them (`None`: not done, the run ended first).
    pub done_ms: [Option<u64>; 2],
    /// What went wrong doing it, if anything.
    pub error: Option<String>,
}

/// A scenario run's record in the result file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRecord {
    pub name: String,
    pub description: String,
    /// The run's `--load`, which phases given as multiples scale.
    pub base_rps: Option<f64>,
    pub step_ms: u64,
    pub objective_us: u64,
    pub phases: Vec<PhaseRecord>,
    pub events: Vec<EventRecord>,
    /// The finer timeline, one point per step of the window.
    pub steps: Vec<StepRecord>,
    /// Replies and failures on connections to each server, over the window.
    pub by_server: BTreeMap<String, ServerTally>,
    /// One per disturbance: each event, and each phase offering more than the one before it.
    pub recovery: Vec<Recovery>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseRecord {
    pub name: String,
    /// ms after the window's start.
    pub start_ms: u64,
    pub end_ms: u64,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    /// Replies per second that met the objective.
    pub goodput_rps: f64,
    /// Jain's fairness index over the connections' replies in the phase: 1 when every connection
    /// got the same, 1/n when one got everything.
    pub fairness: Option<f64>,
    /// Each connection's replies in the phase (the generator's connections, thread by thread).
    pub per_connection: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    /// ms after the window's start.
    pub at_ms: u64,
    pub completed: u64,
    /// Replies (and timeouts, at no less than the timeout) that arrived in the step.
    pub p50_us: u64,
    pub p99_us: u64,
    /// Replies within the objective.
    pub within_objective: u64,
    /// Failed requests by kind (only kinds that happened).
    pub errors: BTreeMap<String, u64>,
    /// Failed requests on connections to each server (only servers that had some).
    pub errors_by_server: BTreeMap<String, u64>,
    /// Floods the servers dropped in the step (all servers).
    pub floods_dropped: u64,
    /// Each server's resident memory, its last sample in or before the step (KiB).
    pub rss_kib: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTally {
    pub completed: u64,
    pub errors: u64,
}

/// How the run went through one disturbance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// `overload (phase surge)`, `hang Welsh`, …
    pub disturbance: String,
    /// ms after the window's start.
    pub start_ms: u64,
    pub end_ms: u64,
    /// p99 of the replies in the 2 s before it.
    pub baseline_p99_us: Option<u64>,
    /// From its end until p99 was back within 1.5× the baseline and stayed there 500 ms (`None`:
    /// not by the window's end).
    pub recovered_after_ms: Option<u64>,
    /// Failed requests from its start until recovered (or the window's end).
    pub failed: u64,
    /// Replies over the objective in that time.
    pub late: u64,
    /// Replies per second within the objective while it lasted.
    pub goodput_rps: f64,
    /// Jain's fairness over connections while it lasted (phases only).
    pub fairness: Option<f64>,
    /// The servers' RSS summed, at its start and at its peak until recovered (KiB).
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    /// Crash: from the restart until the member's connections had no failure for 1 s.
    pub converged_after_ms: Option<u64>,
    /// Failures on connections to servers other than the event's member, from its start to the
    /// window's end.
    pub errors_on_others: Option<u64>,
    /// Replies on connections to the event's member after the event's end (a restarted member
    /// answering WHATSATs about clients updated elsewhere has caught up).
    pub member_completed_after: Option<u64>,
}

/// One server's sample (`serve --samples`): one JSON object a line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// CLOCK_MONOTONIC, ns (the generator's clock).
    pub t_ns: u64,
    pub rss_kib: u64,
    pub floods_dropped: u64,
}

/// Reads a server's samples file; a missing file is no samples.
pub fn read_samples(path: &Path) -> Vec<Sample> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// Jain's fairness index of the values: (Σx)² / (n·Σx²); `None` without values or when all are 0.
pub fn jain(values: impl Iterator<Item = u64>) -> Option<f64> {
    let (mut n, mut sum, mut squares) = (0.0, 0.0, 0.0);
    for v in values {
        let v = v as f64;
        n += 1.0;
        sum += v;
        squares += v * v;
    }
    (squares > 0.0).then(|| sum * sum / (n * squares))
}
