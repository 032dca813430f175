//! `harness export`: result files in the formats the CI trackers people already run read.
//!
//! - `bmf`: [Bencher Metric Format](https://bencher.dev/docs/reference/bencher-metric-format/):
//!   `{ benchmark: { measure: { value, lower_value, upper_value } } }`, the median over repeats with
//!   the lowest and highest repeat as bounds.
//! - `github-smaller` / `github-bigger`: github-action-benchmark's `customSmallerIsBetter` and
//!   `customBiggerIsBetter` tools, `[{ name, unit, value, range, extra }]` — latency, CPU and
//!   counts per request in the first (lower is better), throughput in the second.
//!
//! - `hlog`: an HdrHistogram interval log of every run's latency histograms, for
//!   HistogramLogProcessor and the like (see [`crate::hlog`]).
//!
//! A benchmark is one experiment, `workload/style/load/cN` (`N` connections; `/tN` after it with
//! `--threads`): every key results are grouped by, so two experiments never share a name, and the
//! same name in every format so that a tracker's history follows it. A measure is named after its
//! metric ([`MetricName::name`]) with its unit where the name does not say it (`p99-us`,
//! `cpu-per-request-us`, `throughput-rps`): BMF has no unit field, and Bencher's built-in
//! `latency` is in nanoseconds where ours are microseconds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::collection::{self, Key, Metrics, median};
use crate::compare::MetricName;

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Result files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Which tracker's format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Write here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Bencher Metric Format.
    Bmf,
    /// github-action-benchmark, tool `customSmallerIsBetter`.
    GithubSmaller,
    /// github-action-benchmark, tool `customBiggerIsBetter`.
    GithubBigger,
    /// HdrHistogram interval log (`.hlog`): each run's command histograms, tagged style/command.
    Hlog,
}

/// Whether a metric is exported: every one but errors, which is not a measure a tracker plots (a
/// run with errors fails CI).
fn exported(metric: &MetricName) -> bool {
    *metric != MetricName::Errors
}

/// A metric's measure name: its name, and its unit unless the name says it.
pub fn measure_name(metric: MetricName) -> String {
    match metric.unit() {
        "µs" => format!("{}-us", metric.name()),
        "requests/s" => format!("{}-rps", metric.name()),
        _ => metric.name().to_owned(),
    }
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let loaded = collection::load(&args.inputs)?;
    if args.format == Format::Hlog {
        let log = crate::hlog::write(&loaded)?;
        return match &args.output {
            Some(path) => std::fs::write(path, log).with_context(|| format!("writing {}", path.display())),
            None => to_stdout(&log),
        };
    }
    let mut groups: BTreeMap<Key, Vec<Metrics>> = BTreeMap::new();
    for l in &loaded {
        groups.entry(Key::of(&l.result)).or_default().push(Metrics::of(&l.result));
    }
    let text = serde_json::to_string_pretty(&export(&groups, args.format))?;
    match &args.output {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display())),
        None => to_stdout((text + "\n").as_bytes()),
    }
}

/// Writes `bytes` to standard output; a reader that stopped reading (`harness export … | head -1`)
/// ends the program quietly, as it does `cat`, instead of as an error.
pub fn to_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to standard output"),
        _ => Ok(()),
    }
}

/// The document for `format` from each experiment's repeats. Measures a run did not record (no
/// `--syscalls`, no window counters) are left out rather than written as null.
pub fn export(groups: &BTreeMap<Key, Vec<Metrics>>, format: Format) -> Value {
    let mut bmf = serde_json::Map::new();
    let mut list = Vec::new();
    for (key, runs) in groups {
        let name = benchmark_name(key);
        let mut measures = serde_json::Map::new();
        for metric in MetricName::ALL.into_iter().filter(exported) {
            let (measure, unit) = (measure_name(metric), metric.unit());
            let values: Vec<f64> = runs.iter().map(|m| metric.value(m)).filter(|v| v.is_finite()).collect();
            if values.is_empty() {
                continue;
            }
            let (value, low, high) = (median(&values), min(&values), max(&values));
            measures.insert(measure.clone(), json!({ "value": value, "lower_value": low, "upper_value": high }));
            if (format == Format::GithubBigger) == metric.higher_is_better() {
                list.push(json!({
                    "name": format!("{name} {measure}"),
                    "unit": unit,
                    "value": value,
                    "range": format!("{low:.3}–{high:.3}"),
                    "extra": format!("median of {} runs", values.len()),
                }));
            }
        }
        bmf.insert(name, Value::Object(measures));
    }
    match format {
        Format::Bmf => Value::Object(bmf),
        Format::GithubSmaller | Format::GithubBigger => Value::Array(list),
        // Histograms, not metrics: `run` writes it through `crate::hlog`.
        Format::Hlog => Value::Null,
    }
}

fn benchmark_name(key: &Key) -> String {
    let threads = key.threads.map(|t| format!("/t{t}")).unwrap_or_default();
    let pinned = if key.pinned { "/pinned" } else { "" };
    format!("{}/{}/{}/c{}{threads}{pinned}", key.workload, key.implementation, key.load, key.connections)
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(p50: f64, cpu: f64, rps: f64) -> Metrics {
        Metrics {
            offered_rps: Some(2000.0),
            achieved_rps: rps,
            p50_us: p50,
            p99_us: p50 * 4.0,
            p999_us: p50 * 8.0,
            max_us: p50 * 10.0,
            errors: 0.0,
            floods_dropped: 0.0,
            cpu_us_per_request: cpu,
            syscalls_per_request: f64::NAN,
            switches_per_request: 11.0,
            rss_mib: 60.0,
            threads: 5.0,
        }
    }

    fn groups() -> BTreeMap<Key, Vec<Metrics>> {
        let key = Key {
            workload: "herd-mixed".into(),
            implementation: "event-handler".into(),
            load: "2k".into(),
            threads: None,
            connections: 64,
            pinned: false,
        };
        BTreeMap::from([(
            key,
            vec![metrics(130.0, 280.0, 2000.0), metrics(120.0, 270.0, 1999.0), metrics(140.0, 290.0, 2001.0)],
        )])
    }

    #[test]
    fn bencher_metric_format_has_median_and_bounds_and_skips_what_was_not_measured() {
        let doc = export(&groups(), Format::Bmf);
        let bench = &doc["herd-mixed/event-handler/2k/c64"];
        assert_eq!(bench["p50-us"], json!({ "value": 130.0, "lower_value": 120.0, "upper_value": 140.0 }));
        assert_eq!(bench["cpu-per-request-us"]["value"], 280.0);
        assert_eq!(bench["throughput-rps"]["value"], 2000.0);
        assert!(bench.get("syscalls-per-request").is_none(), "no --syscalls: left out, not null");
        let units: Vec<&String> = bench.as_object().expect("measures").keys().collect();
        assert_eq!(
            units,
            ["p50-us", "p99-us", "p999-us", "cpu-per-request-us", "switches-per-request", "throughput-rps"],
            "every measure says its unit"
        );
    }

    #[test]
    fn github_formats_split_by_direction() {
        let smaller = export(&groups(), Format::GithubSmaller);
        let names: Vec<&str> = smaller.as_array().expect("a list").iter().filter_map(|e| e["name"].as_str()).collect();
        assert!(names.contains(&"herd-mixed/event-handler/2k/c64 p50-us"), "{names:?}");
        assert!(names.contains(&"herd-mixed/event-handler/2k/c64 switches-per-request"), "{names:?}");
        assert!(!names.iter().any(|n| n.ends_with("throughput-rps")), "{names:?}");
        let bigger = export(&groups(), Format::GithubBigger);
        assert_eq!(bigger.as_array().expect("a list").len(), 1);
        assert_eq!(bigger[0]["name"], "herd-mixed/event-handler/2k/c64 throughput-rps");
        assert_eq!(bigger[0]["unit"], "requests/s");
    }

    #[test]
    fn experiments_that_differ_only_in_connections_keep_their_own_names() {
        let mut groups = groups();
        let (key, runs) = groups.first_key_value().map(|(k, v)| (k.clone(), v.clone())).expect("a group");
        groups.insert(Key { connections: 1000, ..key }, runs.iter().map(|m| Metrics { p50_us: 900.0, ..*m }).collect());
        let doc = export(&groups, Format::Bmf);
        assert_eq!(doc["herd-mixed/event-handler/2k/c64"]["p50-us"]["value"], 130.0);
        assert_eq!(doc["herd-mixed/event-handler/2k/c1000"]["p50-us"]["value"], 900.0);
        let list = export(&groups, Format::GithubSmaller);
        let mut names: Vec<&str> = list.as_array().expect("a list").iter().filter_map(|e| e["name"].as_str()).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "no two entries share a name");
    }
}
