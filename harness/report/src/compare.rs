//! `harness compare`: is the current build slower than the baseline?
//!
//! Shared machines are noisy, so a verdict needs more than two numbers:
//! - each side may hold several runs of one experiment (`harness run --repeat N`); a metric's value
//!   is their **median**, and its noise is their **relative spread** (median absolute deviation
//!   over the median);
//! - a change counts only past a band: the larger of `--threshold` and `--noise-k` × the larger
//!   spread of the two sides (or `--single-run-noise` when a side has one run, since one run says
//!   nothing about its own noise);
//! - with `--normalize-by STYLE`, every metric is first divided by the same metric of STYLE taken
//!   in the same folder, i.e. measured on the same machine at the same time: a ratio within one
//!   run, which survives a slower or busier machine. STYLE itself then reads 1.0: choose one
//!   you are not testing.
//!
//! Verdicts, as criterion words them: `no change` (|Δ| ≤ threshold), `within noise` (inside the
//! band), `improved`, `regressed`. Any new error is a regression. Exit status 1 on a regression.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::collection::{self, Key, Loaded, Metrics, median, noise_band};

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Baseline result files or folders.
    #[arg(long, required = true, num_args = 1..)]
    pub baseline: Vec<PathBuf>,
    /// Current result files or folders.
    #[arg(long, required = true, num_args = 1..)]
    pub current: Vec<PathBuf>,
    /// Relative changes up to this are "no change".
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// A change must exceed this many times the measured relative spread to count.
    #[arg(long, default_value_t = 3.0)]
    pub noise_k: f64,
    /// The noise band assumed when a side has a single run.
    #[arg(long, default_value_t = 0.25)]
    pub single_run_noise: f64,
    /// Divide each metric by this style's value from the same folder (a within-run ratio).
    #[arg(long)]
    pub normalize_by: Option<String>,
    /// Also judge runs whose generator fell behind its schedule (left out by default).
    #[arg(long)]
    pub include_behind: bool,
    /// Metrics to compare: p50, p99, p999, cpu (server CPU per request), syscalls and switches (per
    /// request, over the window), throughput; the long names (`cpu-per-request`) work too.
    #[arg(long, value_delimiter = ',', default_value = "p50,p99,cpu,syscalls,switches,throughput")]
    pub metrics: Vec<MetricName>,
}

/// A metric of one result, as `compare`, `--threshold`, findings and `export` name it: each has
/// one name ([`MetricName::name`]: what `export` writes and `--threshold` reads) and one unit;
/// `compare --metrics` and REPORT.md's check lines also take the short names they always have
/// (`cpu`, `syscalls`, `switches`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricName {
    P50,
    P99,
    P999,
    #[value(alias = "cpu-per-request")]
    Cpu,
    #[value(alias = "syscalls-per-request")]
    Syscalls,
    #[value(alias = "switches-per-request")]
    Switches,
    Throughput,
    Errors,
}

impl MetricName {
    pub const ALL: [MetricName; 8] = [
        MetricName::P50,
        MetricName::P99,
        MetricName::P999,
        MetricName::Cpu,
        MetricName::Syscalls,
        MetricName::Switches,
        MetricName::Throughput,
        MetricName::Errors,
    ];

    pub fn value(self, m: &Metrics) -> f64 {
        match self {
            MetricName::P50 => m.p50_us,
            MetricName::P99 => m.p99_us,
            MetricName::P999 => m.p999_us,
            MetricName::Cpu => m.cpu_us_per_request,
            MetricName::Syscalls => m.syscalls_per_request,
            MetricName::Switches => m.switches_per_request,
            MetricName::Throughput => m.achieved_rps,
            MetricName::Errors => m.errors,
        }
    }

    pub fn higher_is_better(self) -> bool {
        self == MetricName::Throughput
    }

    /// Its one name: `p99`, `cpu-per-request`, …
    pub fn name(self) -> &'static str {
        match self {
            MetricName::P50 => "p50",
            MetricName::P99 => "p99",
            MetricName::P999 => "p999",
            MetricName::Cpu => "cpu-per-request",
            MetricName::Syscalls => "syscalls-per-request",
            MetricName::Switches => "switches-per-request",
            MetricName::Throughput => "throughput",
            MetricName::Errors => "errors",
        }
    }

    /// The metric called `name` (or its alias), or an error that lists the names.
    pub fn named(name: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(name, false).map_err(|_| {
            let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            format!("no metric `{name}`; the metrics are {}", names.join(", "))
        })
    }

    /// Its unit, as trackers show it.
    pub fn unit(self) -> &'static str {
        match self {
            MetricName::P50 | MetricName::P99 | MetricName::P999 | MetricName::Cpu => "µs",
            MetricName::Syscalls => "calls",
            MetricName::Switches => "switches",
            MetricName::Throughput => "requests/s",
            MetricName::Errors => "requests",
        }
    }

    /// Whether it is a time (given with a unit: `800us`, `10ms`).
    pub fn is_time(self) -> bool {
        self.unit() == "µs"
    }

    /// Whether only the servers' counters give it (a `harness run`, not a `harness load`).
    pub fn of_servers(self) -> bool {
        matches!(self, MetricName::Cpu | MetricName::Syscalls | MetricName::Switches)
    }

    fn label(self) -> &'static str {
        match self {
            MetricName::P50 => "p50 µs",
            MetricName::P99 => "p99 µs",
            MetricName::P999 => "p99.9 µs",
            MetricName::Cpu => "CPU µs/req",
            MetricName::Syscalls => "syscalls/req",
            MetricName::Switches => "switches/req",
            MetricName::Throughput => "achieved/s",
            MetricName::Errors => "errors",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    NoChange,
    WithinNoise,
    Improved,
    Regressed,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::NoChange => "no change",
            Verdict::WithinNoise => "within noise",
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
        }
    }
}

/// The verdict for one metric: `worse` is the relative change in the bad direction (positive =
/// worse), `band` the noise band.
pub fn verdict(worse: f64, threshold: f64, band: f64) -> Verdict {
    if worse.abs() <= threshold {
        Verdict::NoChange
    } else if worse.abs() <= band {
        Verdict::WithinNoise
    } else if worse > 0.0 {
        Verdict::Regressed
    } else {
        Verdict::Improved
    }
}

/// Per experiment, each metric's values over the repeats (normalised if asked).
type Samples = BTreeMap<Key, Vec<Metrics>>;

fn samples(loaded: &[Loaded], normalize_by: Option<&str>) -> Result<Samples> {
    // Group per folder first: normalisation divides by the reference measured in the same folder.
    let mut by_folder: BTreeMap<PathBuf, Vec<&Loaded>> = BTreeMap::new();
    for l in loaded {
        by_folder.entry(l.path.parent().map(PathBuf::from).unwrap_or_default()).or_default().push(l);
    }
    let mut out: Samples = BTreeMap::new();
    for (folder, runs) in by_folder {
        for l in &runs {
            let key = Key::of(&l.result);
            let mut m = Metrics::of(&l.result);
            if let Some(reference) = normalize_by {
                let refs: Vec<Metrics> = runs
                    .iter()
                    .filter(|r| {
                        let k = Key::of(&r.result);
                        k.implementation == reference && k.workload == key.workload && k.load == key.load
                    })
                    .map(|r| Metrics::of(&r.result))
                    .collect();
                if refs.is_empty() {
                    bail!(
                        "--normalize-by {reference}: {} has no {reference} run for {}/{}",
                        folder.display(),
                        key.workload,
                        key.load
                    );
                }
                let med = |f: fn(&Metrics) -> f64| median(&refs.iter().map(f).collect::<Vec<_>>());
                m.p50_us /= med(|m| m.p50_us);
                m.p99_us /= med(|m| m.p99_us);
                m.cpu_us_per_request /= med(|m| m.cpu_us_per_request);
                m.syscalls_per_request /= med(|m| m.syscalls_per_request);
                m.switches_per_request /= med(|m| m.switches_per_request);
                m.achieved_rps /= med(|m| m.achieved_rps);
            }
            out.entry(key).or_default().push(m);
        }
    }
    Ok(out)
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let load = |paths: &[PathBuf]| -> Result<Vec<Loaded>> {
        Ok(collection::on_schedule(&collection::load(paths)?, args.include_behind))
    };
    let baseline = samples(&load(&args.baseline)?, args.normalize_by.as_deref())?;
    let current = samples(&load(&args.current)?, args.normalize_by.as_deref())?;
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let unit = if args.normalize_by.is_some() { " (ratio)" } else { "" };
    let metric_header = format!("metric{unit}");
    table.set_header([
        "workload",
        "style",
        "load",
        "threads",
        &metric_header,
        "baseline",
        "current",
        "change",
        "noise band",
        "verdict",
    ]);
    let (mut regressions, mut compared) = (0, 0);
    for (key, cur) in &current {
        let Some(base) = baseline.get(key) else {
            eprintln!(
                "no baseline for {} {} {} threads={}",
                key.workload,
                key.implementation,
                key.load,
                key.threads_label()
            );
            continue;
        };
        let failures = new_failures(base, cur);
        let metrics: Vec<Line> = args.metrics.iter().filter_map(|&m| compare_metric(args, m, base, cur)).collect();
        compared += metrics.len();
        for line in failures.into_iter().chain(metrics) {
            regressions += usize::from(line.verdict == Verdict::Regressed);
            table.add_row([
                key.workload.clone(),
                key.implementation.clone(),
                key.load.clone(),
                key.threads_label(),
                line.metric,
                line.baseline,
                line.current,
                line.change,
                line.band,
                line.verdict.word().to_owned(),
            ]);
        }
    }
    println!("{table}");
    if compared == 0 {
        bail!("nothing to compare: no experiment appears in both the baseline and the current results");
    }
    if regressions > 0 {
        bail!("{regressions} regression(s)");
    }
    println!("no regressions ({compared} comparisons)");
    Ok(())
}

/// One line of the comparison table, after the experiment's columns.
#[derive(Debug)]
struct Line {
    metric: String,
    baseline: String,
    current: String,
    change: String,
    band: String,
    verdict: Verdict,
}

/// Failures that were not there before regress whatever the latency says: failed requests, and
/// flood lines dropped (the herd no longer agrees).
fn new_failures(base: &[Metrics], cur: &[Metrics]) -> Vec<Line> {
    type Count = fn(&Metrics) -> f64;
    let kinds: [(&str, Count); 2] = [("errors", |m| m.errors), ("floods dropped", |m| m.floods_dropped)];
    kinds
        .into_iter()
        .filter_map(|(name, count)| {
            let now: f64 = cur.iter().map(count).sum();
            (now > 0.0 && base.iter().map(count).sum::<f64>() == 0.0).then(|| Line {
                metric: name.into(),
                baseline: "0".into(),
                current: format!("{now}"),
                change: format!("new {name}"),
                band: "–".into(),
                verdict: Verdict::Regressed,
            })
        })
        .collect()
}

/// `metric`'s medians over the baseline's and the current runs, and the verdict on their change
/// (none when either median is not a number, or the baseline's is 0).
fn compare_metric(args: &CompareArgs, metric: MetricName, base: &[Metrics], cur: &[Metrics]) -> Option<Line> {
    let b: Vec<f64> = base.iter().map(|m| metric.value(m)).collect();
    let c: Vec<f64> = cur.iter().map(|m| metric.value(m)).collect();
    let (bm, cm) = (median(&b), median(&c));
    if !(bm.is_finite() && cm.is_finite()) || bm == 0.0 {
        return None;
    }
    let change = cm / bm - 1.0;
    let worse = if metric.higher_is_better() { -change } else { change };
    let band = if b.len() < 2 || c.len() < 2 {
        args.single_run_noise.max(args.threshold)
    } else {
        noise_band(args.noise_k, &[b.as_slice(), c.as_slice()]).max(args.threshold)
    };
    Some(Line {
        metric: metric.label().to_owned(),
        baseline: format!("{bm:.3} (n={})", b.len()),
        current: format!("{cm:.3} (n={})", c.len()),
        change: format!("{:+.1}%", change * 100.0),
        band: format!("±{:.1}%", band * 100.0),
        verdict: verdict(worse, args.threshold, band),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_respect_threshold_and_band() {
        assert_eq!(verdict(0.03, 0.05, 0.2), Verdict::NoChange);
        assert_eq!(verdict(-0.03, 0.05, 0.2), Verdict::NoChange);
        assert_eq!(verdict(0.15, 0.05, 0.2), Verdict::WithinNoise);
        assert_eq!(verdict(0.35, 0.05, 0.2), Verdict::Regressed);
        assert_eq!(verdict(-0.35, 0.05, 0.2), Verdict::Improved);
    }
}
