//! `harness gate`: the per-style CI gate, on counts and cost per request instead of time.
//!
//! On a shared two-core machine, latency and CPU time move by tens of percent from one run to the
//! next; what a style *does* per request barely moves. A gate run (scripts/gate.sh) measures every
//! style at herd-mixed 300/s, 3 rounds of 3 s, and judges per style, per request:
//!
//! - [`GateMetric::Syscalls`]: every system call of every server (perf tracepoints, `--syscalls`);
//! - [`GateMetric::VoluntarySwitches`]: the servers' voluntary context switches (a thread that
//!   blocked: a hand-off, a wait). Involuntary switches are left out: they count how busy the
//!   machine was, not what the code did;
//! - [`GateMetric::Instructions`]: one server's instructions per request under callgrind
//!   (`harness gate instructions`: Alford linked to a Ball, at two light rates, the difference
//!   over the difference in requests). Counts catch a change of mechanism and miss a change of
//!   cost — a slow parser makes the same system calls —, which this catches, deterministically
//!   (two runs agree within 0.7 %) and whatever the machine;
//! - [`GateMetric::CpuPerRequest`]: the servers' CPU time (perf `task-clock`, every thread)
//!   divided by the floor's CPU per echo in the same gate run ([`FLOOR`]: scripts/floor's C echo
//!   server, one connection in a closed loop, `harness gate floor`), a ratio so that the baseline
//!   holds on another machine. It is the cost the kernel's side included, but on a machine others
//!   use it moves with their load (runs recorded here spread by tens of percent), so its band is
//!   wide: a tripwire for gross regressions, where instructions are the cost gate.
//!
//! The servers run on one CPU of their own (the generator on another: `run --pin` inside the first
//! two CPUs), so every style runs the same threads on any machine and no count depends on which
//! event loop a neighbour's link was dealt to (what spread event-handler's, callback's and
//! completion-monoio's counts by ±16-21 % when they ran a loop per core); and that CPU never idles
//! (a spinner of the idle class), since a server woken on an idle CPU pays tens of microseconds
//! more per wake than on a busy one. Hardware counters (instructions, cycles) would make CPU time
//! steady; this machine's perf has none.
//!
//! ```text
//!  scripts/gate.sh --record N ── N gate runs ── harness gate record ──► results/baseline/gate/counts.json
//!      per style and metric: the median of the runs' medians, and a band: the larger of `floor`
//!      and `k` × the largest relative distance of one run's median from it
//!  scripts/gate.sh (CI) ── one gate run ── harness gate check ── median of its rounds per style
//!      worse than baseline × (1 + band) ─► a breach; better by more ─► improved (a note to
//!      refresh the baseline on purpose); a style missing, or a run without counts ─► error
//!        └─ a breach ── the breaching styles run twice more ── harness gate check --confirm
//!             regressed (exit 1) only if every confirming run breaches too
//! ```
//!
//! Each run of the baseline is a separate invocation of the same light experiment, so the band
//! covers what changes between invocations (ports, thread placement, a busier machine), not just
//! between rounds of one; and it takes many: a band drawn from five runs was crossed by one of the
//! next ten (async-std's voluntary switches, +3.2 % against ±3.0 %), so the committed baseline is
//! drawn from fifteen (results/baseline/gate/README.md gives each band and why). The experiment and
//! the floor's are recorded, and a check against a baseline of a different one is refused.
//!
//! And a band, however drawn, is crossed now and then by a run that was merely unlucky: CI on
//! another machine once saw future-smol's voluntary switches at +3.4 % against ±3.0 % (every other
//! count within 2 %) on a commit that changed nothing in smol. So a breach is not yet a verdict: the
//! breaching styles run again, twice, as separate invocations, and only a breach every one of them
//! repeats is a regression. A real regression (an extra system call or hand-off per request) moves
//! every run by the same step, so it repeats; an unlucky run does not, and the table says so
//! ("not reproduced") instead of hiding it. scripts/mutants.sh proves the gate: it plants
//! regressions (scripts/mutants/*.patch) in a scratch copy and reports which the gate catches.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

use crate::collection::{self, Loaded, median};
use herd_record::result::RunResult;

/// What `harness gate instructions` writes: a style's instructions per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructionCount {
    /// `herdbench-gate-instructions/1`.
    pub format: String,
    pub style: String,
    /// `<workload> <rate>,<rate> <duration>`: what two runs measured.
    pub experiment: String,
    /// Requests answered in each run.
    pub requests: [u64; 2],
    /// Alford's instructions (callgrind's `totals`) in each run, from start to exit.
    pub instructions: [u64; 2],
    /// The difference of the instructions over the difference of the requests.
    pub per_request: f64,
    /// Alford's calls to the C allocator (callgrind's call counts: [`ALLOCATORS`]) in each run.
    #[serde(default)]
    pub allocations: Option<[u64; 2]>,
    /// The difference of the allocations over the difference of the requests.
    #[serde(default)]
    pub allocations_per_request: Option<f64>,
}

/// The C allocator's entry points whose calls callgrind counts as allocations: Rust's `System`
/// allocator (every style's) allocates through `malloc`, `calloc` or `posix_memalign` (alignment
/// above 16) and grows through `realloc`.
pub const ALLOCATORS: [&str; 6] = ["malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"];

/// A callgrind output file's total instructions (`totals:` or `summary:`) and its calls to
/// [`ALLOCATORS`] (summed over every call site: a `cfn=` line naming the callee, or its number once
/// named, then `calls=COUNT ...`; callgrind's format, valgrind's docs `cl-format`).
pub fn callgrind_counts(text: &str) -> Option<(u64, u64)> {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut callee_allocates = false;
    let mut allocations = 0;
    let mut total = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("totals: ").or_else(|| line.strip_prefix("summary: ")) {
            total = v.trim().parse::<u64>().ok();
        } else if let Some(f) = line.strip_prefix("fn=").or_else(|| line.strip_prefix("cfn=")) {
            // `(id) name` the first time a function appears, `(id)` after.
            let (id, name) = f.split_once(' ').map_or((f, None), |(id, name)| (id, Some(name)));
            let name = match name {
                Some(name) => *names.entry(id).or_insert(name),
                None => names.get(id).copied().unwrap_or(id),
            };
            // A recursion cycle's frames are named `malloc'2` and so on.
            let base = name.split('\'').next().unwrap_or(name);
            callee_allocates = line.starts_with("cfn=") && ALLOCATORS.contains(&base);
        } else if let Some(calls) = line.strip_prefix("calls=") {
            if callee_allocates {
                allocations += calls.split_whitespace().next()?.parse::<u64>().ok()?;
            }
            callee_allocates = false;
        }
    }
    Some((total?, allocations))
}

pub const INSTRUCTIONS_FORMAT: &str = "herdbench-gate-instructions/1";

/// What the gate counts, per request served in the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateMetric {
    /// Every system call of every server (perf tracepoints, `run --syscalls`).
    Syscalls,
    /// Voluntary context switches summed over the servers' threads.
    VoluntarySwitches,
    /// The servers' CPU time per request (perf `task-clock`) divided by the floor's CPU time per
    /// echo measured in the same gate run: dimensionless, so a baseline recorded on one machine
    /// holds on another.
    CpuPerRequest,
    /// One server's instructions per request, counted by callgrind (`harness gate instructions`):
    /// deterministic, so its band is narrow, and blind to the machine.
    Instructions,
    /// The same server's calls to the C allocator per request, counted in the same callgrind run.
    Allocations,
}

impl GateMetric {
    /// The metrics read from a style's run results (instructions come from their own files).
    pub const OF_RUNS: [GateMetric; 3] =
        [GateMetric::Syscalls, GateMetric::VoluntarySwitches, GateMetric::CpuPerRequest];

    /// This metric of one result, given the floor's CPU seconds per echo in the same gate run, or
    /// `None` if the result (or the run) does not have it.
    pub fn of(self, r: &RunResult, floor_s_per_echo: Option<f64>) -> Option<f64> {
        let requests = r.summary.requests as f64;
        let total = match self {
            GateMetric::Instructions | GateMetric::Allocations => return None,
            GateMetric::Syscalls => *r.server_syscalls.as_ref()?.get("all")? as f64,
            GateMetric::VoluntarySwitches => {
                r.servers.iter().map(|s| s.window.map(|w| w.voluntary_switches as f64)).sum::<Option<f64>>()?
            }
            GateMetric::CpuPerRequest => {
                r.servers.iter().map(|s| s.window?.task_clock_s).sum::<Option<f64>>()? / floor_s_per_echo?
            }
        };
        Some(total / requests)
    }

    /// The narrowest band this metric gets, given the floor of the counts perf takes. Callgrind's
    /// counts do not move with the machine's load: allocations per request repeat within 0.03 %,
    /// instructions within 0.3 % (how much work a wake finds still depends on timing), so their
    /// bands may be narrower, and must be to see an allocation per line among ~66 per request.
    const fn narrowest(self, floor: f64) -> f64 {
        match self {
            GateMetric::Allocations => 0.01,
            GateMetric::Instructions => 0.02,
            GateMetric::Syscalls | GateMetric::VoluntarySwitches | GateMetric::CpuPerRequest => floor,
        }
    }

    const fn key(self) -> &'static str {
        match self {
            GateMetric::Syscalls => "syscalls",
            GateMetric::VoluntarySwitches => "voluntary-switches",
            GateMetric::CpuPerRequest => "cpu-per-request",
            GateMetric::Instructions => "instructions-per-request",
            GateMetric::Allocations => "allocations-per-request",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            GateMetric::Syscalls => "syscalls/req",
            GateMetric::VoluntarySwitches => "voluntary switches/req",
            GateMetric::CpuPerRequest => "CPU/req ÷ floor's/echo",
            GateMetric::Instructions => "instructions/req (callgrind)",
            GateMetric::Allocations => "allocations/req (callgrind)",
        }
    }
}

/// The floor's name in its result files (`implementation.name`).
pub const FLOOR: &str = "echo_epoll";

/// How far behind its schedule the generator may fall (p99 of its own lateness) before a result
/// is a failed measurement rather than a measurement: 50 ms, under 2 % of the gate's 3 s window.
/// A generator held back for longer (seen on a machine loaded 5× its cores: seconds) sends the
/// window's requests after the window, and the servers' counts over the window then cover a
/// fraction of the requests they are divided by.
pub const MAX_LATENESS_US: u64 = 50_000;

/// An error if the generator of `l` fell behind its schedule by more than [`MAX_LATENESS_US`].
fn on_schedule(l: &Loaded) -> Result<()> {
    match &l.result.send_lag {
        Some(lag) if lag.own_us.percentiles_us.p99 > MAX_LATENESS_US => bail!(
            "{}: the generator fell {} ms behind its schedule (p99): a failed measurement, not a verdict; measure again",
            l.path.display(),
            lag.own_us.percentiles_us.p99 / 1000
        ),
        _ => Ok(()),
    }
}

/// The floor's CPU seconds per echo in one result, if perf counted its CPU.
pub fn floor_s_per_echo(r: &RunResult) -> Option<f64> {
    let cpu = r.servers.first()?.window?.task_clock_s?;
    (r.summary.requests > 0).then(|| cpu / r.summary.requests as f64)
}

/// The committed baseline: per style and metric, where it sits and how far it may move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// `herdbench-gate/2`.
    pub format: String,
    /// The experiment every run shares: `<workload> <load>`.
    pub experiment: String,
    /// The floor's experiment every run divides its CPU by (`echo_epoll echo max`).
    pub calibration: String,
    /// The experiment of the instruction counts (`herd-mixed 20,100 3s`), if the baseline has them.
    #[serde(default)]
    pub instructions: Option<String>,
    /// The commit the baseline was recorded on.
    pub git_commit: Option<String>,
    pub k: f64,
    pub floor: f64,
    pub styles: BTreeMap<String, BTreeMap<GateMetric, Band>>,
}

/// One style's metric in the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// The median of the runs' medians.
    pub median: f64,
    /// How far above (or below) the median a run may land without a verdict, relative.
    pub band: f64,
    /// Each recorded run's median over its rounds.
    pub runs: Vec<f64>,
}

const FORMAT: &str = "herdbench-gate/2";

/// Per style, each metric's median over one gate run's rounds.
pub type Medians = BTreeMap<String, BTreeMap<GateMetric, f64>>;

/// One gate run, reduced: its experiment, the floor's, and per style each metric's median.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRun {
    /// `<workload> <load>` of the styles' runs.
    pub experiment: String,
    /// `echo_epoll <workload> <load>` of the floor's runs.
    pub calibration: String,
    /// The experiment of its instruction counts, if it has any.
    pub instructions: Option<String>,
    pub medians: Medians,
}

/// The experiment a result belongs to, as the gate names it.
fn experiment(r: &RunResult) -> String {
    format!("{} {}", r.workload.name, r.parameters.load)
}

/// One gate run: the floor's CPU per echo (the median over its runs), then per style and metric
/// the median over its rounds. All the styles' results must share one experiment, the floor's
/// another, and every metric must be present.
fn run_medians(loaded: &[Loaded], counts: &[InstructionCount]) -> Result<GateRun> {
    let (floors, styles): (Vec<&Loaded>, Vec<&Loaded>) =
        loaded.iter().partition(|l| l.result.implementation.name == FLOOR);
    let Some(first) = styles.first() else { bail!("no results of a style") };
    let Some(first_floor) = floors.first() else {
        bail!("no result of the floor ({FLOOR}): CPU per request is divided by it (scripts/gate.sh measures it)")
    };
    let exp = experiment(&first.result);
    let calibration = format!("{FLOOR} {}", experiment(&first_floor.result));
    for l in loaded {
        on_schedule(l)?;
    }
    let per_echo = floors
        .iter()
        .map(|l| {
            if format!("{FLOOR} {}", experiment(&l.result)) != calibration {
                bail!("{} is another floor experiment than {calibration}", l.path.display());
            }
            floor_s_per_echo(&l.result)
                .with_context(|| format!("{} has no CPU time counted by perf (`task-clock`)", l.path.display()))
        })
        .collect::<Result<Vec<f64>>>()?;
    let floor = median(&per_echo);
    let mut values: BTreeMap<String, BTreeMap<GateMetric, Vec<f64>>> = BTreeMap::new();
    for l in styles {
        if experiment(&l.result) != exp {
            bail!("{} is {}, not {exp}: a gate run holds one experiment", l.path.display(), experiment(&l.result));
        }
        if l.result.summary.requests == 0 {
            bail!("{} answered no request: nothing to count per request", l.path.display());
        }
        for metric in GateMetric::OF_RUNS {
            let value = metric.of(&l.result, Some(floor)).with_context(|| {
                format!(
                    "{} has no {} (system calls and CPU time need `run --syscalls` and perf; scripts/gate.sh installs it)",
                    l.path.display(),
                    metric.label()
                )
            })?;
            values.entry(l.result.implementation.name.clone()).or_default().entry(metric).or_default().push(value);
        }
    }
    let mut medians: Medians = values
        .into_iter()
        .map(|(style, metrics)| (style, metrics.into_iter().map(|(m, v)| (m, median(&v))).collect()))
        .collect();
    let instructions = counts.first().map(|c| c.experiment.clone());
    for c in counts {
        if Some(&c.experiment) != instructions.as_ref() || c.format != INSTRUCTIONS_FORMAT {
            bail!("{}'s instruction count is {} ({}), not {instructions:?}", c.style, c.experiment, c.format);
        }
        let style = medians
            .get_mut(&c.style)
            .with_context(|| format!("an instruction count of {}, which the run has no result of", c.style))?;
        style.insert(GateMetric::Instructions, c.per_request);
        if let Some(a) = c.allocations_per_request {
            style.insert(GateMetric::Allocations, a);
        }
    }
    Ok(GateRun { experiment: exp, calibration, instructions, medians })
}

/// One gate run's folder (or result files): its results, and the instruction counts
/// (`*.instructions`) in its folder.
pub fn load_run(paths: &[PathBuf]) -> Result<GateRun> {
    let mut counts = Vec::new();
    for dir in paths.iter().filter(|p| p.is_dir()) {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "instructions") {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                counts.push(
                    serde_json::from_str::<InstructionCount>(&text)
                        .with_context(|| format!("{} is not an instruction count", path.display()))?,
                );
            }
        }
    }
    counts.sort_by(|a, b| a.style.cmp(&b.style));
    run_medians(&collection::load(paths)?, &counts)
}

/// Builds a baseline from several runs' medians.
pub fn record(runs: &[GateRun], k: f64, floor: f64, git_commit: Option<String>) -> Result<Baseline> {
    let Some(GateRun { experiment: exp, calibration, medians: first, .. }) = runs.first() else { bail!("no runs") };
    if let Some(other) = runs.iter().find(|r| &r.calibration != calibration) {
        bail!("runs calibrated by different floors ({calibration}, {})", other.calibration);
    }
    // Instruction counts are deterministic, so fewer runs may carry them; those that do agree.
    let instructions = runs.iter().find_map(|r| r.instructions.clone());
    if let Some(other) = runs.iter().filter_map(|r| r.instructions.as_ref()).find(|i| Some(*i) != instructions.as_ref())
    {
        bail!("runs with instruction counts of different experiments ({instructions:?}, {other})");
    }
    if let Some(GateRun { medians: other, .. }) = runs.iter().find(|r| !r.medians.keys().eq(first.keys())) {
        bail!(
            "the runs do not hold the same styles ({} and {}): every run of a baseline runs every style",
            first.keys().cloned().collect::<Vec<_>>().join(", "),
            other.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(GateRun { experiment: e, .. }) = runs.iter().find(|r| &r.experiment != exp) {
        bail!("runs of different experiments ({exp}, {e})");
    }
    let mut styles: BTreeMap<String, BTreeMap<GateMetric, Band>> = BTreeMap::new();
    for style in first.keys() {
        let metrics: std::collections::BTreeSet<GateMetric> =
            runs.iter().filter_map(|r| r.medians.get(style)).flat_map(|m| m.keys().copied()).collect();
        for metric in &metrics {
            let per_run: Vec<f64> =
                runs.iter().filter_map(|r| r.medians.get(style).and_then(|m| m.get(metric)).copied()).collect();
            if per_run.len() < 3 {
                bail!("{style}'s {} is in {} run(s): a band needs at least 3", metric.key(), per_run.len());
            }
            let mid = median(&per_run);
            if mid <= 0.0 || !mid.is_finite() {
                bail!("{style}'s {} is {mid} per request: no band can be drawn around it", metric.key());
            }
            let widest = per_run.iter().map(|v| (v / mid - 1.0).abs()).fold(0.0, f64::max);
            let band = Band { median: mid, band: (k * widest).max(metric.narrowest(floor)), runs: per_run };
            styles.entry(style.clone()).or_default().insert(*metric, band);
        }
    }
    Ok(Baseline {
        format: FORMAT.into(),
        experiment: exp.clone(),
        calibration: calibration.clone(),
        instructions,
        git_commit,
        k,
        floor,
        styles,
    })
}

/// An outcome of the gate for one style's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Within,
    /// Past the band, in the gate run and in every confirming run (or there were none yet).
    Regressed,
    /// Past the band in the gate run, within it in a confirming run.
    NotReproduced,
    Improved,
}

/// One row of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub style: String,
    pub metric: GateMetric,
    pub baseline: f64,
    pub band: f64,
    pub current: f64,
    /// The same metric in each confirming run that has this style.
    pub confirmations: Vec<f64>,
    pub verdict: Outcome,
}

/// Checks a run's medians against the baseline. Every style of the baseline must be in the run.
pub fn check(baseline: &Baseline, run: &GateRun) -> Result<Vec<Row>> {
    let (exp, current) = (&run.experiment, &run.medians);
    if baseline.format != FORMAT {
        bail!("the baseline's format is {:?}, this harness reads {FORMAT:?}", baseline.format);
    }
    if baseline.calibration != run.calibration {
        bail!(
            "the baseline's CPU is calibrated by {}, this run's by {}: measure the floor as scripts/gate.sh does",
            baseline.calibration,
            run.calibration
        );
    }
    if let (Some(b), Some(r)) = (&baseline.instructions, &run.instructions)
        && b != r
    {
        bail!("the baseline's instructions were counted at {b}, this run's at {r}: count them as scripts/gate.sh does");
    }
    if &baseline.experiment != exp {
        bail!(
            "the baseline was recorded for {}, this run is {exp}: run scripts/gate.sh (or record a baseline for it)",
            baseline.experiment
        );
    }
    if let Some(new) = current.keys().find(|s| !baseline.styles.contains_key(*s)) {
        bail!(
            "the gate run has {new}, which the baseline does not: record a baseline with it (scripts/gate.sh --record)"
        );
    }
    let mut rows = Vec::new();
    for (style, metrics) in &baseline.styles {
        let now = current.get(style).with_context(|| format!("the gate run has no {style}"))?;
        for (&metric, band) in metrics {
            let current = *now.get(&metric).with_context(|| format!("{style} has no {}", metric.label()))?;
            let change = current / band.median - 1.0;
            let verdict = if change > band.band {
                Outcome::Regressed
            } else if change < -band.band {
                Outcome::Improved
            } else {
                Outcome::Within
            };
            rows.push(Row {
                style: style.clone(),
                metric,
                baseline: band.median,
                band: band.band,
                current,
                confirmations: Vec::new(),
                verdict,
            });
        }
    }
    Ok(rows)
}

/// Judges each breach of `rows` again on later runs of the breaching styles: a breach stays a
/// regression only if it repeats in every confirming run that has the style.
pub fn confirm(rows: &mut [Row], run: &GateRun, confirmations: &[GateRun]) -> Result<()> {
    for c in confirmations {
        if (&c.experiment, &c.calibration) != (&run.experiment, &run.calibration) {
            bail!(
                "a confirming run is {} (floor {}), the gate run {} (floor {}): confirm with the same experiment",
                c.experiment,
                c.calibration,
                run.experiment,
                run.calibration
            );
        }
    }
    for row in rows.iter_mut().filter(|r| r.verdict == Outcome::Regressed) {
        row.confirmations = confirmations
            .iter()
            .filter_map(|c| c.medians.get(&row.style).and_then(|metrics| metrics.get(&row.metric)).copied())
            .collect();
        if row.confirmations.iter().any(|&v| v / row.baseline - 1.0 <= row.band) {
            row.verdict = Outcome::NotReproduced;
        }
    }
    Ok(())
}

pub fn print_rows(rows: &[Row]) {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["style", "per request", "baseline", "band", "now", "change", "confirming runs", "verdict"]);
    for r in rows {
        table.add_row([
            r.style.clone(),
            r.metric.label().to_owned(),
            format!("{:.2}", r.baseline),
            format!("±{:.1}%", r.band * 100.0),
            format!("{:.2}", r.current),
            format!("{:+.1}%", (r.current / r.baseline - 1.0) * 100.0),
            r.confirmations
                .iter()
                .map(|v| format!("{:+.1}%", (v / r.baseline - 1.0) * 100.0))
                .collect::<Vec<_>>()
                .join(" "),
            match r.verdict {
                Outcome::Within => "ok",
                Outcome::Regressed => "REGRESSED",
                Outcome::NotReproduced => "not reproduced",
                Outcome::Improved => "improved",
            }
            .to_owned(),
        ]);
    }
    println!("{table}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALIBRATION: &str = "echo_epoll echo max";

    fn run_of(exp: &str, styles: &[(&str, f64, f64)]) -> GateRun {
        let medians = styles
            .iter()
            .map(|&(s, sys, vol)| {
                (s.to_owned(), BTreeMap::from([(GateMetric::Syscalls, sys), (GateMetric::VoluntarySwitches, vol)]))
            })
            .collect();
        GateRun { experiment: exp.to_owned(), calibration: CALIBRATION.to_owned(), instructions: None, medians }
    }

    #[test]
    fn callgrind_counts_every_call_to_the_allocator_by_name_or_number() {
        let text = "events: Ir\nsummary: 1000\nfn=(1) main\ncfn=(2) malloc\ncalls=3 10\n5 7\n\
                    cfn=(3) free\ncalls=3 11\n5 7\nfn=(4) grow\ncfn=(2)\ncalls=4 10\n1 1\n\
                    cfn=(5) realloc'2\ncalls=2 12\n1 1\ncfn=(6) malloc_usable_size\ncalls=9 13\n1 1\n\
                    fn=(2)\n10 40\ntotals: 1000\n";
        assert_eq!(callgrind_counts(text), Some((1000, 9)));
        assert_eq!(callgrind_counts("fn=(1) main\n"), None, "no totals");
    }

    #[test]
    fn band_is_k_times_the_widest_run_or_the_floor() {
        let runs = [
            run_of("herd-mixed 300", &[("tokio", 20.0, 7.0)]),
            run_of("herd-mixed 300", &[("tokio", 21.0, 7.0)]),
            run_of("herd-mixed 300", &[("tokio", 20.5, 7.0)]),
        ];
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let sys = &b.styles["tokio"][&GateMetric::Syscalls];
        assert_eq!(sys.median, 20.5);
        assert!((sys.band - 2.0 * (0.5 / 20.5)).abs() < 1e-12);
        assert_eq!(b.styles["tokio"][&GateMetric::VoluntarySwitches].band, 0.03);
    }

    #[test]
    fn an_extra_call_per_request_fails_and_noise_does_not() {
        let runs: Vec<_> =
            [30.0, 30.3, 29.8].iter().map(|&s| run_of("herd-mixed 300", &[("callback", s, 8.0)])).collect();
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let verdict = |sys: f64, vol: f64| {
            let now = run_of("herd-mixed 300", &[("callback", sys, vol)]);
            check(&b, &now).expect("a check").into_iter().map(|r| r.verdict).collect::<Vec<_>>()
        };
        assert_eq!(verdict(30.4, 8.1), [Outcome::Within, Outcome::Within]);
        assert_eq!(verdict(31.5, 8.0), [Outcome::Regressed, Outcome::Within]);
        assert_eq!(verdict(30.0, 9.0), [Outcome::Within, Outcome::Regressed]);
        assert_eq!(verdict(27.0, 8.0), [Outcome::Improved, Outcome::Within]);
    }

    #[test]
    fn a_breach_is_a_regression_only_if_every_confirming_run_repeats_it() {
        let runs: Vec<_> = [32.0, 32.4, 31.8]
            .iter()
            .map(|&v| run_of("herd-mixed 300", &[("smol", 129.0, v), ("tokio", 23.0, 6.8)]))
            .collect();
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let now = run_of("herd-mixed 300", &[("smol", 129.0, 33.5), ("tokio", 23.0, 6.8)]);
        let judged = |confirming: &[(&str, f64)]| {
            let mut rows = check(&b, &now).expect("a check");
            let confirmations: Vec<_> =
                confirming.iter().map(|&(s, v)| run_of("herd-mixed 300", &[(s, 129.0, v)])).collect();
            confirm(&mut rows, &now, &confirmations).expect("confirmed");
            rows.iter().map(|r| (r.style.clone(), r.verdict, r.confirmations.clone())).collect::<Vec<_>>()
        };
        let smol_switches = |rows: &[(String, Outcome, Vec<f64>)]| rows[1].clone();
        // No confirming run yet: the breach stands.
        assert_eq!(smol_switches(&judged(&[])).1, Outcome::Regressed);
        // Both confirming runs breach: a regression, and the table shows both.
        assert_eq!(
            smol_switches(&judged(&[("smol", 33.4), ("smol", 33.6)])),
            ("smol".into(), Outcome::Regressed, vec![33.4, 33.6])
        );
        // One of them back within the band: an unlucky run, said as such.
        assert_eq!(smol_switches(&judged(&[("smol", 33.4), ("smol", 32.3)])).1, Outcome::NotReproduced);
        // A confirming run of another style does not clear smol, and counts within stay within.
        let rows = judged(&[("tokio", 6.8)]);
        assert_eq!(smol_switches(&rows).1, Outcome::Regressed);
        assert!(rows.iter().filter(|r| r.0 == "tokio").all(|r| r.1 == Outcome::Within && r.2.is_empty()));
        // A confirming run of another experiment is refused.
        let mut rows = check(&b, &now).expect("a check");
        let other = run_of("echo max", &[("smol", 129.0, 32.0)]);
        assert!(confirm(&mut rows, &now, &[other]).is_err());
        let recalibrated = GateRun { calibration: "echo_epoll echo 20k".into(), ..run_of("herd-mixed 300", &[]) };
        assert!(confirm(&mut rows, &now, &[recalibrated]).is_err(), "a confirming run of another floor");
    }

    #[test]
    fn a_missing_style_or_another_experiment_is_an_error() {
        let runs: Vec<_> = (0..3).map(|_| run_of("herd-mixed 300", &[("a", 10.0, 1.0), ("b", 5.0, 1.0)])).collect();
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let only_a = run_of("herd-mixed 300", &[("a", 10.0, 1.0)]);
        assert!(check(&b, &only_a).expect_err("b is missing").to_string().contains("no b"));
        let more = run_of("herd-mixed 300", &[("a", 10.0, 1.0), ("b", 5.0, 1.0), ("c", 1.0, 1.0)]);
        assert!(check(&b, &more).expect_err("c is new").to_string().contains("has c"));
        let mut uneven = runs.clone();
        uneven.push(run_of("herd-mixed 300", &[("a", 10.0, 1.0)]));
        assert!(record(&uneven, 2.0, 0.03, None).is_err(), "a run without b");
        let other = run_of("echo max", &[("a", 10.0, 1.0), ("b", 5.0, 1.0)]);
        assert!(check(&b, &other).expect_err("another experiment").to_string().contains("recorded for herd-mixed 300"));
        let recalibrated = GateRun { calibration: "echo_epoll echo 20k".into(), ..runs[0].clone() };
        assert!(check(&b, &recalibrated).expect_err("another floor").to_string().contains("calibrated by"));
    }

    #[test]
    fn the_committed_baseline_covers_every_style_with_every_metric() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../results/baseline/gate/counts.json");
        let b: Baseline =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the committed baseline")).expect("a baseline");
        assert_eq!(b.format, FORMAT);
        let mut styles: Vec<String> =
            herd_record::catalogue::styles().expect("the styles").into_iter().map(|m| m.name).collect();
        styles.sort();
        assert_eq!(b.styles.keys().cloned().collect::<Vec<_>>(), styles);
        assert!(b.instructions.is_some(), "the baseline has no instruction counts");
        for (style, metrics) in &b.styles {
            assert!(GateMetric::OF_RUNS.iter().all(|m| metrics.contains_key(m)), "{metrics:?}");
            // Callgrind cannot run completion-monoio (scripts/gate.sh says why); every other style
            // is counted by it.
            let counted = [GateMetric::Instructions, GateMetric::Allocations].iter().all(|m| metrics.contains_key(m));
            assert_eq!(counted, style != "completion-monoio", "{style}'s callgrind counts");
            for (metric, m) in metrics {
                assert!(m.runs.len() >= 3 && m.median > 0.0 && m.band >= metric.narrowest(b.floor), "{style} {m:?}");
            }
        }
    }

    /// A result of `style` (or of the floor) serving `requests`, its servers' CPU summing to
    /// `cpu_s`, with every count the gate reads.
    fn result(style: &str, requests: u64, cpu_s: Option<f64>) -> Loaded {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../results/baseline/smoke/threadpool-herd-mixed-500-tdefault-01.json"
        ))
        .expect("a committed result file");
        let mut r: RunResult = serde_json::from_str(&text).expect("a valid result");
        r.implementation.name = style.into();
        if style == FLOOR {
            r.workload.name = "echo".into();
            r.parameters.load = "max".into();
            r.servers.truncate(1);
        } else {
            r.parameters.load = "300".into();
        }
        r.summary.requests = requests;
        r.server_syscalls = Some(BTreeMap::from([("all".to_owned(), 20 * requests)]));
        let share = cpu_s.map(|c| c / r.servers.len() as f64);
        for s in &mut r.servers {
            s.window = Some(herd_record::counters::Counters {
                voluntary_switches: requests,
                task_clock_s: share,
                ..Default::default()
            });
        }
        Loaded { path: PathBuf::from(format!("x/{style}.json")), result: r }
    }

    #[test]
    fn cpu_per_request_is_divided_by_the_floors_cpu_per_echo() {
        // The floor: 20 µs per echo in its median run; the style: 180 µs per request over 5 servers.
        let floors = [(1000, 0.018), (1000, 0.020), (2000, 0.050)].map(|(n, s)| result(FLOOR, n, Some(s)));
        let mut loaded = floors.to_vec();
        loaded.push(result("threadpool", 900, Some(0.162)));
        let run = run_medians(&loaded, &[]).expect("a gate run");
        assert_eq!(run.experiment, "herd-mixed 300");
        assert_eq!(run.calibration, "echo_epoll echo max");
        let metrics = &run.medians["threadpool"];
        assert!((metrics[&GateMetric::CpuPerRequest] - 9.0).abs() < 1e-9, "{metrics:?}");
        assert_eq!((metrics[&GateMetric::Syscalls], metrics[&GateMetric::VoluntarySwitches]), (20.0, 5.0));
        // No floor, or CPU time that perf did not count (ticks only): no verdict on cost.
        let err = run_medians(&[result("threadpool", 900, Some(0.162))], &[]).expect_err("no floor").to_string();
        assert!(err.contains("no result of the floor"), "{err}");
        let ticks_only = [result(FLOOR, 1000, Some(0.02)), result("threadpool", 900, None)];
        assert!(run_medians(&ticks_only, &[]).expect_err("no task-clock").to_string().contains("CPU/req"));
        let uncounted_floor = [result(FLOOR, 1000, None), result("threadpool", 900, Some(0.162))];
        assert!(run_medians(&uncounted_floor, &[]).expect_err("no floor CPU").to_string().contains("task-clock"));
    }

    #[test]
    fn instruction_counts_join_their_styles_and_may_come_from_fewer_runs() {
        let count = |style: &str, per_request: f64| InstructionCount {
            format: INSTRUCTIONS_FORMAT.into(),
            style: style.into(),
            experiment: "herd-mixed 20,100 3s".into(),
            requests: [60, 300],
            instructions: [10_000_000, 10_000_000 + (240.0 * per_request) as u64],
            per_request,
            allocations: Some([1000, 1000 + 240 * 12]),
            allocations_per_request: Some(12.0),
        };
        let loaded = [result(FLOOR, 1000, Some(0.02)), result("threadpool", 900, Some(0.162))];
        let run = run_medians(&loaded, &[count("threadpool", 80_000.0)]).expect("a gate run");
        assert_eq!(run.medians["threadpool"][&GateMetric::Instructions], 80_000.0);
        assert_eq!(run.medians["threadpool"][&GateMetric::Allocations], 12.0);
        assert_eq!(run.instructions.as_deref(), Some("herd-mixed 20,100 3s"));
        assert!(run_medians(&loaded, &[count("tokio", 1.0)]).is_err(), "a count of a style the run lacks");
        // Five runs, three with instruction counts: the counts' band is drawn from those three.
        let runs: Vec<GateRun> = (0..5)
            .map(|i| {
                let counts = if i < 3 { vec![count("threadpool", 80_000.0 + f64::from(i) * 100.0)] } else { vec![] };
                run_medians(&loaded, &counts).expect("a gate run")
            })
            .collect();
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let band = &b.styles["threadpool"][&GateMetric::Instructions];
        assert_eq!((band.runs.len(), band.median), (3, 80_100.0));
        assert_eq!(b.styles["threadpool"][&GateMetric::Syscalls].runs.len(), 5);
        assert_eq!(b.instructions.as_deref(), Some("herd-mixed 20,100 3s"));
        let two = [runs[0].clone(), runs[1].clone(), runs[3].clone()];
        assert!(record(&two, 2.0, 0.03, None).is_err(), "a band from two runs");
        // A run without the counts the baseline has is an error, not a pass.
        let err = check(&b, &runs[4]).expect_err("no instruction count").to_string();
        assert!(err.contains("instructions/req"), "{err}");
    }

    #[test]
    fn baseline_round_trips_through_json() {
        let runs: Vec<_> = (0..3).map(|i| run_of("herd-mixed 300", &[("a", 10.0 + f64::from(i), 1.0)])).collect();
        let b = record(&runs, 2.0, 0.03, Some("abc".into())).expect("a baseline");
        let text = serde_json::to_string(&b).expect("serialises");
        assert!(text.contains("\"voluntary-switches\""));
        assert_eq!(serde_json::from_str::<Baseline>(&text).expect("parses"), b);
    }
}
