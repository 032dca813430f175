//! `harness gate`: the per-style CI gate, on counts per request instead of time.
//!
//! On a shared two-core machine, latency and CPU time move by tens of percent from one run to the
//! next; what a style *does* per request barely moves. Measured here at herd-mixed 300/s (3 rounds
//! of 3 s each, all nine styles): every style's server system calls per request stayed within
//! ±0.8 % over the rounds (23.0–23.1 for future-tokio, 102.6–102.9 for threadpool). An extra system
//! call or an extra thread hand-off per request shows there as a step of several percent, which is
//! what this gate looks for:
//!
//! - [`GateMetric::Syscalls`]: every system call of every server per request (perf, `--syscalls`);
//! - [`GateMetric::VoluntarySwitches`]: the servers' voluntary context switches per request (a
//!   thread that blocked: a hand-off, a wait). Involuntary switches are left out: they count how
//!   busy the machine was, not what the code did.
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
//! drawn from fifteen. The experiment itself is recorded, and a check against a baseline of a
//! different experiment is refused.
//!
//! And a band, however drawn, is crossed now and then by a run that was merely unlucky: CI on
//! another machine once saw future-smol's voluntary switches at +3.4 % against ±3.0 % (every other
//! count within 2 %) on a commit that changed nothing in smol. So a breach is not yet a verdict: the
//! breaching styles run again, twice, as separate invocations, and only a breach every one of them
//! repeats is a regression. A real regression (an extra system call or hand-off per request) moves
//! every run by the same step, so it repeats; an unlucky run does not, and the table says so
//! ("not reproduced") instead of hiding it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

use crate::collection::{self, Loaded, median};
use crate::result::RunResult;

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    #[command(subcommand)]
    pub command: GateCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GateCommand {
    /// Write a baseline from several gate runs (one folder per run, each with its rounds).
    Record {
        /// Where to write the baseline (e.g. results/baseline/gate/counts.json).
        #[arg(long)]
        output: PathBuf,
        /// A run's largest distance from the baseline, times this, is the band.
        #[arg(long, default_value_t = 2.0)]
        k: f64,
        /// The narrowest band, relative.
        #[arg(long, default_value_t = 0.03)]
        floor: f64,
        /// One folder per gate run (at least 3).
        #[arg(required = true, num_args = 3..)]
        runs: Vec<PathBuf>,
    },
    /// Check one gate run against a baseline; exits non-zero when a style got worse.
    Check {
        /// The baseline (results/baseline/gate/counts.json).
        #[arg(long)]
        baseline: PathBuf,
        /// The gate run's folder (or result files).
        #[arg(required = true)]
        current: Vec<PathBuf>,
        /// A later gate run of the styles that breached (a folder; repeat for more): a breach is a
        /// regression only if every confirming run that has the style breaches too.
        #[arg(long)]
        confirm: Vec<PathBuf>,
        /// Write the styles whose counts breached their band here, one per line (for a script to
        /// run them again), empty when none did.
        #[arg(long, value_name = "FILE")]
        breaches_to: Option<PathBuf>,
    },
}

/// What the gate counts, per request served in the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateMetric {
    /// Every system call of every server (perf tracepoints, `run --syscalls`).
    Syscalls,
    /// Voluntary context switches summed over the servers' threads.
    VoluntarySwitches,
}

impl GateMetric {
    pub const ALL: [GateMetric; 2] = [GateMetric::Syscalls, GateMetric::VoluntarySwitches];

    /// This metric of one result, or `None` if the result does not have it.
    pub fn of(self, r: &RunResult) -> Option<f64> {
        let requests = r.summary.requests as f64;
        let total = match self {
            GateMetric::Syscalls => *r.server_syscalls.as_ref()?.get("all")? as f64,
            GateMetric::VoluntarySwitches => {
                r.servers.iter().map(|s| s.window.map(|w| w.voluntary_switches as f64)).sum::<Option<f64>>()?
            }
        };
        Some(total / requests)
    }

    const fn key(self) -> &'static str {
        match self {
            GateMetric::Syscalls => "syscalls",
            GateMetric::VoluntarySwitches => "voluntary-switches",
        }
    }

    fn label(self) -> &'static str {
        match self {
            GateMetric::Syscalls => "syscalls/req",
            GateMetric::VoluntarySwitches => "voluntary switches/req",
        }
    }
}

/// The committed baseline: per style and metric, where it sits and how far it may move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// `herdbench-gate/1`.
    pub format: String,
    /// The experiment every run shares: `<workload> <load>`.
    pub experiment: String,
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

const FORMAT: &str = "herdbench-gate/1";

/// Per style, each metric's median over one gate run's rounds.
pub type Medians = BTreeMap<String, BTreeMap<GateMetric, f64>>;

/// The experiment a result belongs to, as the gate names it.
fn experiment(r: &RunResult) -> String {
    format!("{} {}", r.workload.name, r.parameters.load)
}

/// One gate run: per style and metric, the median over its rounds. All results must share one
/// experiment and every metric must be present.
fn run_medians(loaded: &[Loaded]) -> Result<(String, Medians)> {
    let Some(first) = loaded.first() else { bail!("no results") };
    let exp = experiment(&first.result);
    let mut values: BTreeMap<String, BTreeMap<GateMetric, Vec<f64>>> = BTreeMap::new();
    for l in loaded {
        if experiment(&l.result) != exp {
            bail!("{} is {}, not {exp}: a gate run holds one experiment", l.path.display(), experiment(&l.result));
        }
        if l.result.summary.requests == 0 {
            bail!("{} answered no request: nothing to count per request", l.path.display());
        }
        for metric in GateMetric::ALL {
            let value = metric.of(&l.result).with_context(|| {
                format!(
                    "{} has no {} (system calls need `run --syscalls` and perf; scripts/gate.sh installs it)",
                    l.path.display(),
                    metric.label()
                )
            })?;
            values.entry(l.result.implementation.name.clone()).or_default().entry(metric).or_default().push(value);
        }
    }
    let medians = values
        .into_iter()
        .map(|(style, metrics)| (style, metrics.into_iter().map(|(m, v)| (m, median(&v))).collect()))
        .collect();
    Ok((exp, medians))
}

/// Builds a baseline from several runs' medians.
pub fn record(runs: &[(String, Medians)], k: f64, floor: f64, git_commit: Option<String>) -> Result<Baseline> {
    let Some((exp, first)) = runs.first() else { bail!("no runs") };
    if let Some((_, other)) = runs.iter().find(|(_, r)| !r.keys().eq(first.keys())) {
        bail!(
            "the runs do not hold the same styles ({} and {}): every run of a baseline runs every style",
            first.keys().cloned().collect::<Vec<_>>().join(", "),
            other.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut styles: BTreeMap<String, BTreeMap<GateMetric, Band>> = BTreeMap::new();
    for (style, metrics) in first {
        for metric in metrics.keys() {
            let per_run: Vec<f64> = runs
                .iter()
                .map(|(e, r)| {
                    if e != exp {
                        bail!("runs of different experiments ({exp}, {e})");
                    }
                    r.get(style).and_then(|m| m.get(metric)).copied().with_context(|| format!("a run has no {style}"))
                })
                .collect::<Result<_>>()?;
            let mid = median(&per_run);
            if mid <= 0.0 || !mid.is_finite() {
                bail!("{style}'s {} is {mid} per request: no band can be drawn around it", metric.key());
            }
            let widest = per_run.iter().map(|v| (v / mid - 1.0).abs()).fold(0.0, f64::max);
            let band = Band { median: mid, band: (k * widest).max(floor), runs: per_run };
            styles.entry(style.clone()).or_default().insert(*metric, band);
        }
    }
    Ok(Baseline { format: FORMAT.into(), experiment: exp.clone(), git_commit, k, floor, styles })
}

/// A verdict on one style's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
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
    pub verdict: Verdict,
}

/// Checks a run's medians against the baseline. Every style of the baseline must be in the run.
pub fn check(
    baseline: &Baseline,
    exp: &str,
    current: &BTreeMap<String, BTreeMap<GateMetric, f64>>,
) -> Result<Vec<Row>> {
    if baseline.format != FORMAT {
        bail!("the baseline's format is {:?}, this harness reads {FORMAT:?}", baseline.format);
    }
    if baseline.experiment != exp {
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
                Verdict::Regressed
            } else if change < -band.band {
                Verdict::Improved
            } else {
                Verdict::Within
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
pub fn confirm(rows: &mut [Row], exp: &str, confirmations: &[(String, Medians)]) -> Result<()> {
    for (e, _) in confirmations {
        if e != exp {
            bail!("a confirming run is {e}, the gate run {exp}: confirm with the same experiment");
        }
    }
    for row in rows.iter_mut().filter(|r| r.verdict == Verdict::Regressed) {
        row.confirmations = confirmations
            .iter()
            .filter_map(|(_, m)| m.get(&row.style).and_then(|metrics| metrics.get(&row.metric)).copied())
            .collect();
        if row.confirmations.iter().any(|&v| v / row.baseline - 1.0 <= row.band) {
            row.verdict = Verdict::NotReproduced;
        }
    }
    Ok(())
}

pub fn run(args: &GateArgs) -> Result<()> {
    match &args.command {
        GateCommand::Record { output, k, floor, runs } => {
            let mut medians = Vec::new();
            let mut commit = None;
            for dir in runs {
                let loaded = collection::load(std::slice::from_ref(dir))?;
                commit = commit.or_else(|| loaded.first().and_then(|l| l.result.tool.git_commit.clone()));
                medians.push(run_medians(&loaded).with_context(|| format!("in {}", dir.display()))?);
            }
            let baseline = record(&medians, *k, *floor, commit)?;
            let text = serde_json::to_string_pretty(&baseline)? + "\n";
            std::fs::write(output, text).with_context(|| format!("writing {}", output.display()))?;
            for (style, metrics) in &baseline.styles {
                for (metric, band) in metrics {
                    println!("{style:20} {:24} {:9.3} ±{:.1}%", metric.label(), band.median, band.band * 100.0);
                }
            }
            println!("{}", output.display());
            Ok(())
        }
        GateCommand::Check { baseline, current, confirm: confirming, breaches_to } => {
            let text = std::fs::read_to_string(baseline).with_context(|| format!("reading {}", baseline.display()))?;
            let baseline: Baseline = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a gate baseline", baseline.display()))?;
            let (exp, medians) = run_medians(&collection::load(current)?)?;
            let mut rows = check(&baseline, &exp, &medians)?;
            if let Some(path) = breaches_to {
                let mut styles: Vec<&str> =
                    rows.iter().filter(|r| r.verdict == Verdict::Regressed).map(|r| r.style.as_str()).collect();
                styles.dedup();
                let text: String = styles.iter().map(|s| format!("{s}\n")).collect();
                std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            }
            let confirmations = confirming
                .iter()
                .map(|dir| {
                    run_medians(&collection::load(std::slice::from_ref(dir))?)
                        .with_context(|| format!("in {}", dir.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            confirm(&mut rows, &exp, &confirmations)?;
            print_rows(&rows);
            let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
            if count(Verdict::Improved) > 0 {
                println!("improved: if that was meant, refresh the baseline with scripts/gate.sh --record");
            }
            if count(Verdict::NotReproduced) > 0 {
                println!("gate: {} breach(es) not reproduced by the confirming runs", count(Verdict::NotReproduced));
            }
            match count(Verdict::Regressed) {
                0 => println!("gate: {} counts within their bands", rows.len() - count(Verdict::NotReproduced)),
                n if confirming.is_empty() => {
                    bail!(
                        "gate: {n} count(s) per request breached their band (a regression once confirming runs repeat it)"
                    )
                }
                n => bail!("gate: {n} count(s) per request regressed past their band, in every confirming run too"),
            }
            Ok(())
        }
    }
}

fn print_rows(rows: &[Row]) {
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
                Verdict::Within => "ok",
                Verdict::Regressed => "REGRESSED",
                Verdict::NotReproduced => "not reproduced",
                Verdict::Improved => "improved",
            }
            .to_owned(),
        ]);
    }
    println!("{table}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(exp: &str, styles: &[(&str, f64, f64)]) -> (String, Medians) {
        let medians = styles
            .iter()
            .map(|&(s, sys, vol)| {
                (s.to_owned(), BTreeMap::from([(GateMetric::Syscalls, sys), (GateMetric::VoluntarySwitches, vol)]))
            })
            .collect();
        (exp.to_owned(), medians)
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
            let (exp, now) = run_of("herd-mixed 300", &[("callback", sys, vol)]);
            check(&b, &exp, &now).expect("a check").into_iter().map(|r| r.verdict).collect::<Vec<_>>()
        };
        assert_eq!(verdict(30.4, 8.1), [Verdict::Within, Verdict::Within]);
        assert_eq!(verdict(31.5, 8.0), [Verdict::Regressed, Verdict::Within]);
        assert_eq!(verdict(30.0, 9.0), [Verdict::Within, Verdict::Regressed]);
        assert_eq!(verdict(27.0, 8.0), [Verdict::Improved, Verdict::Within]);
    }

    #[test]
    fn a_breach_is_a_regression_only_if_every_confirming_run_repeats_it() {
        let runs: Vec<_> = [32.0, 32.4, 31.8]
            .iter()
            .map(|&v| run_of("herd-mixed 300", &[("smol", 129.0, v), ("tokio", 23.0, 6.8)]))
            .collect();
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let (exp, now) = run_of("herd-mixed 300", &[("smol", 129.0, 33.5), ("tokio", 23.0, 6.8)]);
        let judged = |confirming: &[(&str, f64)]| {
            let mut rows = check(&b, &exp, &now).expect("a check");
            let confirmations: Vec<_> =
                confirming.iter().map(|&(s, v)| run_of("herd-mixed 300", &[(s, 129.0, v)])).collect();
            confirm(&mut rows, &exp, &confirmations).expect("confirmed");
            rows.iter().map(|r| (r.style.clone(), r.verdict, r.confirmations.clone())).collect::<Vec<_>>()
        };
        let smol_switches = |rows: &[(String, Verdict, Vec<f64>)]| rows[1].clone();
        // No confirming run yet: the breach stands.
        assert_eq!(smol_switches(&judged(&[])).1, Verdict::Regressed);
        // Both confirming runs breach: a regression, and the table shows both.
        assert_eq!(
            smol_switches(&judged(&[("smol", 33.4), ("smol", 33.6)])),
            ("smol".into(), Verdict::Regressed, vec![33.4, 33.6])
        );
        // One of them back within the band: an unlucky run, said as such.
        assert_eq!(smol_switches(&judged(&[("smol", 33.4), ("smol", 32.3)])).1, Verdict::NotReproduced);
        // A confirming run of another style does not clear smol, and counts within stay within.
        let rows = judged(&[("tokio", 6.8)]);
        assert_eq!(smol_switches(&rows).1, Verdict::Regressed);
        assert!(rows.iter().filter(|r| r.0 == "tokio").all(|r| r.1 == Verdict::Within && r.2.is_empty()));
        // A confirming run of another experiment is refused.
        let mut rows = check(&b, &exp, &now).expect("a check");
        let other = run_of("echo max", &[("smol", 129.0, 32.0)]);
        assert!(confirm(&mut rows, &exp, &[other]).is_err());
    }

    #[test]
    fn a_missing_style_or_another_experiment_is_an_error() {
        let runs: Vec<_> = (0..3).map(|_| run_of("herd-mixed 300", &[("a", 10.0, 1.0), ("b", 5.0, 1.0)])).collect();
        let b = record(&runs, 2.0, 0.03, None).expect("a baseline");
        let (exp, only_a) = run_of("herd-mixed 300", &[("a", 10.0, 1.0)]);
        assert!(check(&b, &exp, &only_a).expect_err("b is missing").to_string().contains("no b"));
        let (exp, more) = run_of("herd-mixed 300", &[("a", 10.0, 1.0), ("b", 5.0, 1.0), ("c", 1.0, 1.0)]);
        assert!(check(&b, &exp, &more).expect_err("c is new").to_string().contains("has c"));
        let mut uneven = runs.clone();
        uneven.push(run_of("herd-mixed 300", &[("a", 10.0, 1.0)]));
        assert!(record(&uneven, 2.0, 0.03, None).is_err(), "a run without b");
        let (exp, other) = run_of("echo max", &[("a", 10.0, 1.0), ("b", 5.0, 1.0)]);
        assert!(
            check(&b, &exp, &other)
                .expect_err("another experiment")
                .to_string()
                .contains("recorded for herd-mixed 300")
        );
    }

    #[test]
    fn the_committed_baseline_covers_every_style_with_both_counts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/baseline/gate/counts.json");
        let b: Baseline =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the committed baseline")).expect("a baseline");
        assert_eq!(b.format, FORMAT);
        let mut styles: Vec<String> = crate::impls::all().expect("the styles").into_iter().map(|m| m.name).collect();
        styles.sort();
        assert_eq!(b.styles.keys().cloned().collect::<Vec<_>>(), styles);
        for metrics in b.styles.values() {
            assert_eq!(metrics.keys().copied().collect::<Vec<_>>(), GateMetric::ALL);
            assert!(metrics.values().all(|m| m.runs.len() >= 3 && m.median > 0.0 && m.band >= b.floor));
        }
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
