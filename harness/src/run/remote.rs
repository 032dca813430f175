//! Remote generators (`generators = [...]` in a hosts file): each runs `harness load` on its host
//! with a slice of one schedule, through its launcher; their results come back and are merged.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herd_record::hosts::HostRecord;

use crate::env::hosts::Remote;
use crate::probe::procs::Children;

/// How long after the generators are started their load begins: time for each launcher to start
/// `harness load` on its host, and for the generators to open their connections
/// ([`CONNECTS_PER_SECOND`]).
const GENERATOR_LEAD: Duration = Duration::from_secs(2);
/// Connections the generators are given time to open per second, all together, before the load
/// starts (they may share a machine, and the servers accept them all): six generators on one
/// 2-core machine opened 99,000 connections to five servers in 22–27 s, about 4,000 a second.
const CONNECTS_PER_SECOND: u64 = 3000;

/// Drives `spec` from the generators `remotes`: each runs `harness load` on its host with slice
/// `k/n` of the schedule and `1/n` of the connections, all from one start time; their result files
/// come back into `logs` and are added into one ([`herd_record::merge::merge`]).
pub fn run_generators(
    remotes: &[Remote],
    spec: &crate::load::LoadSpec,
    label: &str,
    logs: &Path,
    exe: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(herd_record::result::RunResult, Vec<HostRecord>)> {
    let n = remotes.len();
    if spec.scenario.is_some() {
        bail!("a scenario's load runs in this process; leave `generators` out of the hosts file to run one");
    }
    if n > 1 && spec.load.offered_rps().is_none() {
        bail!("several generators share an open-loop schedule: give --load a rate (e.g. 10k), not max");
    }
    let lead = GENERATOR_LEAD + Duration::from_secs(spec.connections as u64 / CONNECTS_PER_SECOND);
    let start_at = chrono::Utc::now() + lead;
    let workload = toml::to_string(&spec.workload).context("writing the workload for the generators")?;
    // The herd's guard: no generator's launcher outlives the harness, every one is reaped.
    let mut children = Children::default();
    let mut records = Vec::new();
    for (k, remote) in remotes.iter().enumerate() {
        let dir = remote.run_dir(label);
        // A file per generator: hosts may share a folder (several on one machine), and one
        // generator's write must not truncate the file another is reading.
        let workload_file = dir.join(format!("generator-{k}")).join(format!("{}.toml", spec.workload.name));
        remote.put(&workload_file, workload.as_bytes())?;
        let exe_there = remote.harness.clone().unwrap_or_else(|| exe.to_owned());
        let share = crate::load::LoadSpec {
            connections: (spec.connections / n + usize::from(k < spec.connections % n)).max(1),
            slice: herd_record::units::Slice { k: k as u32, n: n as u32 },
            start_at: Some(start_at.into()),
            ..spec.clone()
        };
        let mut words: Vec<OsString> = vec![exe_there.into(), "load".into()];
        words.extend(share.to_load_args(&workload_file)?);
        words.extend(["--output".into(), dir.join(format!("generator-{k}.json")).into()]);
        let mut cmd = remote.command(words);
        let out = std::fs::File::create(logs.join(format!("generator-{k}.out")))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        children
            .spawn(&generator(k), cmd, None)
            .with_context(|| format!("starting generator {k} on host {}", remote.host))?;
    }
    // Looked at once the launchers had time to exec (`ip netns exec` becomes `harness` only then).
    std::thread::sleep(GENERATOR_LEAD / 2);
    for (k, remote) in remotes.iter().enumerate() {
        records.push(remote.record(&generator(k), children.pid(&generator(k)), exe));
    }
    eprintln!(
        "herdbench: {n} generator(s) on {}, starting at {}; their output in {}",
        remotes.iter().map(|r| r.host.as_str()).collect::<Vec<_>>().join(", "),
        start_at.to_rfc3339(),
        logs.display()
    );
    let deadline = Instant::now() + lead + spec.warmup + spec.duration + spec.timeout + Duration::from_secs(30);
    let mut failed = Vec::new();
    for (k, remote) in remotes.iter().enumerate() {
        let exit = children.wait(&generator(k), deadline, stop).map_or_else(|| "stopped".to_owned(), |r| r.exit);
        if exit != "exited 0" {
            failed.push(format!("generator {k} on host {} ({exit})", remote.host));
        }
    }
    if !failed.is_empty() {
        bail!("{} failed or overran; see generator-<k>.out in {}", failed.join(", "), logs.display());
    }
    let mut runs = Vec::new();
    for (k, remote) in remotes.iter().enumerate() {
        let name = format!("generator-{k}.json");
        remote.fetch_into(label, &name, logs)?;
        let text = std::fs::read_to_string(logs.join(&name))?;
        let result: herd_record::result::RunResult =
            serde_json::from_str(&text).with_context(|| format!("generator {k}'s result ({name})"))?;
        runs.push((name, result));
    }
    Ok((herd_record::merge::merge(runs)?, records))
}

/// Generator `k`'s name among the children and in the result's host records.
fn generator(k: usize) -> String {
    format!("generator-{k}")
}
