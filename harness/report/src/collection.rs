//! Sets of result files, grouped for reports and comparisons.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use herd_record::counters::Counters;
use herd_record::result::{RunResult, SCHEMA_VERSION};

/// One result file and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub result: RunResult,
}

/// What makes two runs the same experiment (repeats share a key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub workload: String,
    pub implementation: String,
    pub load: String,
    pub threads: Option<usize>,
    pub connections: usize,
    /// The servers ran on CPUs of their own, apart from the generator (`run --pin`): another
    /// experiment than the same load unpinned, where a saturated server starves the generator.
    pub pinned: bool,
}

impl Key {
    pub fn of(r: &RunResult) -> Self {
        Self {
            workload: r.workload.name.clone(),
            implementation: r.implementation.name.clone(),
            load: r.parameters.load.clone(),
            threads: r.parameters.threads,
            connections: r.parameters.connections,
            pinned: r.parameters.pinning.is_some(),
        }
    }

    /// The threads column: `default` or the count, and `, pinned` for a pinned run.
    pub fn threads_label(&self) -> String {
        threads_label(self.threads, self.pinned)
    }

    /// The same experiment for every style: the key of a load point shared by several styles.
    pub fn point(&self) -> Key {
        Key { implementation: String::new(), ..self.clone() }
    }

    /// The same experiment at every load: the key of one style's series of loads.
    pub fn series(&self) -> Key {
        Key { load: String::new(), ..self.clone() }
    }

    /// What a group of experiments shares: everything but the style and the load.
    pub fn group(&self) -> Key {
        Key { implementation: String::new(), load: String::new(), ..self.clone() }
    }

    /// The style as a line of a figure names it: `twisted`, or `twisted (pinned)`.
    pub fn style_label(&self) -> String {
        if self.pinned { format!("{} (pinned)", self.implementation) } else { self.implementation.clone() }
    }
}

/// `default` or the thread count, and `, pinned` when the servers were pinned apart from the
/// generator.
pub fn threads_label(threads: Option<usize>, pinned: bool) -> String {
    let threads = threads.map_or_else(|| "default".into(), |t| t.to_string());
    if pinned { format!("{threads}, pinned") } else { threads }
}

/// The numbers a report or comparison looks at, derived from one result.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    pub offered_rps: Option<f64>,
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: f64,
    /// Flood lines the servers dropped (a neighbour down or too slow), summed over the servers: the
    /// herd then disagrees, so a run that drops any did not fully serve its load.
    pub floods_dropped: f64,
    /// Server CPU (user + sys, all servers) per request, in µs: over the measured window where the
    /// result has window counters, else over the servers' lives per request they counted.
    pub cpu_us_per_request: f64,
    /// System calls of all servers per request over the window (NaN unless run with `--syscalls`).
    pub syscalls_per_request: f64,
    /// Context switches (voluntary + involuntary) of all servers per request, over the window.
    pub switches_per_request: f64,
    /// Peak RSS summed over the servers, MiB.
    pub rss_mib: f64,
    /// Most threads seen in one server process.
    pub threads: f64,
}

impl Metrics {
    pub fn of(r: &RunResult) -> Self {
        let cpu: f64 = r.servers.iter().map(|s| s.resources.cpu_user_s + s.resources.cpu_sys_s).sum();
        let count = |keys: &[&str]| -> u64 {
            r.servers
                .iter()
                .filter_map(|s| s.counters.as_ref())
                .map(|c| keys.iter().filter_map(|k| c.counters.get(*k)).sum::<u64>())
                .sum()
        };
        let served = count(&["iamat", "whatsat", "invalid", "echo"]);
        let per = |total: f64, n: f64| if n > 0.0 { total / n } else { f64::NAN };
        let window: Option<Counters> =
            r.servers.iter().map(|s| s.window).try_fold(Counters::default(), |sum, w| w.map(|w| sum.plus(&w)));
        let window = window.filter(|_| !r.servers.is_empty());
        let requests = r.summary.requests as f64;
        let l = &r.summary.latency_us;
        Self {
            offered_rps: r.summary.offered_rps,
            achieved_rps: r.summary.achieved_rps,
            p50_us: l.p50 as f64,
            p99_us: l.p99 as f64,
            p999_us: l.p999 as f64,
            max_us: l.max as f64,
            errors: r.summary.errors as f64,
            floods_dropped: count(&["floods_dropped"]) as f64,
            cpu_us_per_request: match &window {
                Some(w) => per(w.cpu_s() * 1e6, requests),
                None => per(cpu * 1e6, served as f64),
            },
            syscalls_per_request: r
                .server_syscalls
                .as_ref()
                .and_then(|c| c.get("all"))
                .map_or(f64::NAN, |&all| per(all as f64, requests)),
            switches_per_request: window.map_or(f64::NAN, |w| per(w.switches() as f64, requests)),
            rss_mib: r.servers.iter().map(|s| s.resources.peak_rss_kib as f64 / 1024.0).sum(),
            threads: r.servers.iter().map(|s| s.resources.max_threads as f64).fold(0.0, f64::max),
        }
    }
}

impl Metrics {
    /// Each metric's median over `runs` (repeats of one experiment); errors and dropped floods are
    /// summed, since any at all matters.
    pub fn median_of(runs: &[Metrics]) -> Metrics {
        Metrics {
            offered_rps: runs.first().and_then(|m| m.offered_rps),
            errors: runs.iter().map(|m| m.errors).sum(),
            floods_dropped: runs.iter().map(|m| m.floods_dropped).sum(),
            ..Self::each(runs, median)
        }
    }

    /// Each metric's relative spread over `runs` (see [`relative_spread`]).
    pub fn relative_spread_of(runs: &[Metrics]) -> Metrics {
        Metrics { offered_rps: None, errors: 0.0, floods_dropped: 0.0, ..Self::each(runs, relative_spread) }
    }

    /// `stat` of each measured metric's values over `runs`.
    fn each(runs: &[Metrics], stat: fn(&[f64]) -> f64) -> Metrics {
        let of = |f: fn(&Metrics) -> f64| stat(&runs.iter().map(f).collect::<Vec<_>>());
        Metrics {
            offered_rps: None,
            achieved_rps: of(|m| m.achieved_rps),
            p50_us: of(|m| m.p50_us),
            p99_us: of(|m| m.p99_us),
            p999_us: of(|m| m.p999_us),
            max_us: of(|m| m.max_us),
            errors: of(|m| m.errors),
            floods_dropped: of(|m| m.floods_dropped),
            cpu_us_per_request: of(|m| m.cpu_us_per_request),
            syscalls_per_request: of(|m| m.syscalls_per_request),
            switches_per_request: of(|m| m.switches_per_request),
            rss_mib: of(|m| m.rss_mib),
            threads: of(|m| m.threads),
        }
    }
}

/// Reads result files: each argument is a file or a folder searched recursively for `*.json`
/// (skipping `schema/`, `logs/` and `baseline/` unless named directly).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Loaded>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            collect(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let version = serde_json::from_slice::<serde_json::Value>(&bytes)
            .with_context(|| format!("{} is not JSON", path.display()))?
            .get("schema_version")
            .and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(SCHEMA_VERSION)) {
            bail!("{}: schema_version {version:?}, this harness reads {SCHEMA_VERSION}", path.display());
        }
        let result: RunResult =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a result file", path.display()))?;
        if result.interrupted {
            eprintln!("skipping {}: the run was interrupted", path.display());
            continue;
        }
        out.push(Loaded { path, result });
    }
    if out.is_empty() {
        bail!(
            "no result files found in {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(out)
}

/// The runs whose generator kept its schedule (see [`herd_record::result::SendLag`]), or all of them with
/// `include_behind`; the runs left out are counted on stderr, the first few named. Knees and
/// compare verdicts use this: a run whose generator fell behind measured partly the generator.
pub fn on_schedule(loaded: &[Loaded], include_behind: bool) -> Vec<Loaded> {
    const NAMED: usize = 5;
    let behind = |l: &Loaded| l.result.send_lag.as_ref().is_some_and(|s| s.fell_behind);
    let late: Vec<String> = loaded.iter().filter(|l| behind(l)).map(|l| l.path.display().to_string()).collect();
    if !late.is_empty() {
        let verb =
            if include_behind { "keeping (--include-behind)" } else { "leaving out (--include-behind keeps them)" };
        let more = late.len().saturating_sub(NAMED);
        let and_more = if more > 0 { format!(" and {more} more") } else { String::new() };
        eprintln!(
            "{verb} {} of {} runs whose generator fell behind its schedule: {}{and_more}",
            late.len(),
            loaded.len(),
            late[..late.len().min(NAMED)].join(", ")
        );
    }
    loaded.iter().filter(|l| include_behind || !behind(l)).cloned().collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "schema" | "logs" | "baseline" | "plots") {
                collect(&path, files)?;
            }
        } else if name.ends_with(".json") && !name.ends_with(".stats.json") {
            files.push(path);
        }
    }
    Ok(())
}

/// Runs grouped by key; repeats of one experiment end up together.
pub fn group(loaded: &[Loaded]) -> BTreeMap<Key, Vec<&RunResult>> {
    let mut groups: BTreeMap<Key, Vec<&RunResult>> = BTreeMap::new();
    for l in loaded {
        groups.entry(Key::of(&l.result)).or_default().push(&l.result);
    }
    groups
}

/// Median of a sample (NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Relative spread of a sample: median absolute deviation over the median (0 for one value).
pub fn relative_spread(values: &[f64]) -> f64 {
    let m = median(values);
    if values.len() < 2 || m == 0.0 || m.is_nan() {
        return 0.0;
    }
    let deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    median(&deviations) / m.abs()
}

/// The noise band of one or more samples of a metric, relative to their medians: `k` times the
/// largest relative spread. `harness compare` calls a change within it "within noise"; reports
/// draw a ratio's interval with it, so both read the same noise the same way.
pub fn noise_band(k: f64, samples: &[&[f64]]) -> f64 {
    k * samples.iter().map(|s| relative_spread(s)).fold(0.0, f64::max)
}

/// One table row: an experiment's medians over its repeats, and how much they spread.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: Key,
    pub repeats: usize,
    pub m: Metrics,
    /// Each metric's relative spread over the repeats (median absolute deviation over the median).
    pub spread: Metrics,
}

#[cfg(test)]
impl Row {
    /// A row for tests: `implementation` on workload `w` at an open-loop `offered` rate over 64
    /// connections, every request served at once (achieved = offered, latencies and counts 1, no
    /// error); a test sets the fields it is about.
    pub(crate) fn example(implementation: &str, offered: f64) -> Self {
        let key = Key {
            workload: "w".into(),
            implementation: implementation.into(),
            load: format!("{offered}"),
            threads: None,
            connections: 64,
            pinned: false,
        };
        let m = Metrics {
            offered_rps: Some(offered),
            achieved_rps: offered,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            max_us: 1.0,
            errors: 0.0,
            floods_dropped: 0.0,
            cpu_us_per_request: 1.0,
            syscalls_per_request: 1.0,
            switches_per_request: 1.0,
            rss_mib: 1.0,
            threads: 1.0,
        };
        Row { key, repeats: 1, m, spread: m }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(relative_spread(&[10.0]), 0.0);
        assert!((relative_spread(&[9.0, 10.0, 11.0]) - 0.1).abs() < 1e-12);
    }
}
