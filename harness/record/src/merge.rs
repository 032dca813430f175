//! `harness merge`: several generators' results of one load as one result.
//!
//! When one generator cannot out-produce the servers, several (on other cores or machines) each
//! drive a slice of the load over the same window and write their own result (`harness load
//! --output`, `harness run`). Merging adds what adds up exactly — every latency histogram
//! (HdrHistogram `add`: the merged percentiles are those of all requests together, not an average
//! of percentiles), requests, errors, rates, send lag, connect times — and says what it could not:
//! a second's p99 in the timeline is the highest of the runs' (an upper bound), and the runs'
//! wall clocks are assumed to agree (`merged.clocks`; NTP-synchronised hosts, or one machine).
//!
//! The runs must be of one experiment: the same workload, mode, server style, window and warm-up,
//! with windows that overlap (their starts less than a window apart).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::result::{Latency, Merged, Parameters, RunResult, SendLag, Summary, TimelinePoint};
use crate::units::Load;

#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Result files of one load, one per generator.
    #[arg(required = true, num_args = 2..)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the merged result.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: &MergeArgs) -> Result<()> {
    let mut runs = Vec::new();
    for path in &args.inputs {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let run: RunResult =
            serde_json::from_str(&text).with_context(|| format!("{} is not a result file", path.display()))?;
        runs.push((path.display().to_string(), run));
    }
    let merged = merge(runs)?;
    merged.write(&args.output)?;
    println!("{}: {}", args.output.display(), merged.summary.line());
    Ok(())
}

/// Adds up `runs` (file name, result), checking first that they are slices of one load.
pub fn merge(runs: Vec<(String, RunResult)>) -> Result<RunResult> {
    let Some((_, first)) = runs.first() else { bail!("nothing to merge") };
    let starts: Vec<chrono::DateTime<chrono::Utc>> =
        runs.iter().map(|(f, r)| r.start_time().with_context(|| f.clone())).collect::<Result<_>>()?;
    same_experiment(&runs)?;
    let earliest = *starts.iter().min().expect("at least one run");
    let spread = (*starts.iter().max().expect("at least one run") - earliest).as_seconds_f64();
    if spread >= first.parameters.duration_s {
        bail!(
            "the runs' windows opened {spread:.3} s apart, more than a window ({} s): they did not measure the same \
             time; start the generators together (or give them a longer --duration)",
            first.parameters.duration_s
        );
    }

    let mut merged = first.clone();
    merged.started_at = RunResult::started_at_text(earliest);
    merged.commands = add_by_name(runs.iter().map(|(_, r)| &r.commands))?;
    merged.errors = BTreeMap::new();
    for (_, r) in &runs {
        for (kind, n) in &r.errors {
            *merged.errors.entry(kind.clone()).or_default() += n;
        }
    }
    let offered: Option<f64> = runs.iter().map(|(_, r)| r.summary.offered_rps).sum();
    merged.summary = Summary {
        offered_rps: offered,
        achieved_rps: runs.iter().map(|(_, r)| r.summary.achieved_rps).sum(),
        requests: runs.iter().map(|(_, r)| r.summary.requests).sum(),
        errors: runs.iter().map(|(_, r)| r.summary.errors).sum(),
        warmup_errors: runs.iter().map(|(_, r)| r.summary.warmup_errors).sum(),
        latency_us: Latency::sum(merged.commands.values())?.percentiles_us,
    };
    merged.parameters = merged_parameters(&runs, offered);
    merged.timeline = merge_timelines(runs.iter().map(|(_, r)| r.timeline.as_slice()));
    merged.servers = runs.iter().flat_map(|(_, r)| r.servers.iter().cloned()).collect();
    merged.places = runs.iter().find_map(|(_, r)| r.places.clone());
    merged.propagation_us = runs.iter().find_map(|(_, r)| r.propagation_us.clone());
    // Per-process counts of several processes do not add up to one process's.
    merged.generator_window = None;
    merged.server_syscalls = None;
    merged.send_lag = match runs.iter().map(|(_, r)| r.send_lag.as_ref()).collect::<Option<Vec<&SendLag>>>() {
        Some(lags) => Some(SendLag {
            own_us: Latency::sum(lags.iter().map(|l| &l.own_us))?,
            socket_wait_us: Latency::sum(lags.iter().map(|l| &l.socket_wait_us))?,
            fell_behind: lags.iter().any(|l| l.fell_behind),
        }),
        None => None,
    };
    let connects: Vec<&Latency> = runs.iter().filter_map(|(_, r)| r.connect_us.as_ref()).collect();
    merged.connect_us = (!connects.is_empty()).then(|| Latency::sum(connects)).transpose()?;
    merged.interrupted = runs.iter().any(|(_, r)| r.interrupted);
    merged.merged = Some(Merged {
        files: runs.iter().map(|(f, _)| f.clone()).collect(),
        start_spread_s: spread,
        clocks: "the runs' wall clocks were assumed to agree (one machine, or NTP-synchronised hosts); \
                 start_spread_s is measured with them"
            .into(),
    });
    Ok(merged)
}

/// The parameters of the first run, with what the runs add up to: load, connections, generator
/// threads, the servers any of them drove, and the slices (none when they make up the whole).
fn merged_parameters(runs: &[(String, RunResult)], offered: Option<f64>) -> Parameters {
    let mut p = runs[0].1.parameters.clone();
    p.load = offered.map_or_else(|| Load::Max.to_string(), |o| Load::Rate(o).to_string());
    p.connections = runs.iter().map(|(_, r)| r.parameters.connections).sum();
    p.generator_threads = runs.iter().map(|(_, r)| r.parameters.generator_threads).sum();
    // Slices that make up the whole schedule merge into the whole; anything else says which.
    let slices: Vec<Option<&str>> = runs.iter().map(|(_, r)| r.parameters.slice.as_deref()).collect();
    let n = runs.len();
    let whole = (0..n).all(|k| slices.contains(&Some(format!("{k}/{n}").as_str())));
    p.slice = if whole || slices.iter().all(Option::is_none) {
        None
    } else {
        Some(slices.iter().flatten().copied().collect::<Vec<_>>().join("+"))
    };
    for (_, r) in &runs[1..] {
        for server in &r.parameters.servers {
            if !p.servers.contains(server) {
                p.servers.push(server.clone());
            }
        }
    }
    p
}

/// Whether `runs` (file name, result) are slices of one load: one workload, mode, server style
/// and window; an error naming the first difference otherwise.
fn same_experiment(runs: &[(String, RunResult)]) -> Result<()> {
    let Some((first_file, first)) = runs.first() else { bail!("nothing to merge") };
    for (file, r) in &runs[1..] {
        let differs = |what: &str, a: String, b: String| {
            format!(
                "{file} and {first_file} are not slices of one load: {what} {b} against {a}; merge runs of one experiment"
            )
        };
        let (p, q) = (&first.parameters, &r.parameters);
        if r.workload.name != first.workload.name {
            bail!(differs("workload", first.workload.name.clone(), r.workload.name.clone()));
        }
        if q.mode != p.mode {
            bail!(differs("mode", format!("{:?}", p.mode), format!("{:?}", q.mode)));
        }
        if r.implementation.name != first.implementation.name {
            bail!(differs("server style", first.implementation.name.clone(), r.implementation.name.clone()));
        }
        if (q.duration_s, q.warmup_s) != (p.duration_s, p.warmup_s) {
            bail!(differs(
                "window (warm-up + measured)",
                format!("{} s + {} s", p.warmup_s, p.duration_s),
                format!("{} s + {} s", q.warmup_s, q.duration_s)
            ));
        }
    }
    Ok(())
}

/// Per command name, the sum over the runs that have it.
fn add_by_name<'a>(runs: impl Iterator<Item = &'a BTreeMap<String, Latency>>) -> Result<BTreeMap<String, Latency>> {
    let mut by_name: BTreeMap<&str, Vec<&Latency>> = BTreeMap::new();
    for commands in runs {
        for (name, latency) in commands {
            by_name.entry(name).or_default().push(latency);
        }
    }
    by_name.into_iter().map(|(name, parts)| Ok((name.to_owned(), Latency::sum(parts)?))).collect()
}

/// Second by second: completions and errors add up; p99 is the highest (an upper bound).
fn merge_timelines<'a>(timelines: impl Iterator<Item = &'a [TimelinePoint]>) -> Vec<TimelinePoint> {
    let mut merged: Vec<TimelinePoint> = Vec::new();
    for timeline in timelines {
        for point in timeline {
            match merged.iter_mut().find(|m| m.second == point.second) {
                Some(m) => {
                    m.completed += point.completed;
                    m.errors += point.errors;
                    m.p99_us = m.p99_us.max(point.p99_us);
                }
                None => merged.push(point.clone()),
            }
        }
    }
    merged.sort_by_key(|p| p.second);
    merged
}
