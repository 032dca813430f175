//! `harness run`: a whole measurement. Start the places backend and the herd as child processes,
//! wait until each accepts, drive the load, stop everything, write the result file, print a summary.
//!
//! ```text
//! places ◄── HTTP ── Alford ── Hamilton        harness (this process)
//!                      │          │              ├─ load generator threads ──► every server
//!                    Welsh ── Ball ── Holiday    └─ children: reaped with wait4 for CPU and RSS
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::herd::{Herd, HerdSpec, Upstream};
use crate::impls;
use crate::load::{self, GeneratorArgs, Progress, Target};
use crate::machine;
use crate::procs;
use crate::result::{Latency, Parameters, Pinning, RunResult, SCHEMA_VERSION, ServerCounters, ServerResult};
use crate::serve::Mode;
use crate::summary;
use crate::sweep::{self, LoadList, ThreadList};
use crate::topology::Topology;
use crate::units::Load;
use crate::units::parse_duration;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Implementation (style) to measure: a name, a comma list, or `all`.
    #[arg(long = "impl", default_value = "threadpool")]
    pub implementation: String,
    /// Workload: a name in workloads/ (or a path), or a comma list.
    #[arg(long, default_value = "herd-mixed")]
    pub workload: String,
    /// Offered load: 10k, 1.5M, `max` (closed loop); a list `2k,5k,max`; or a sweep `1k..20k/1k`.
    #[arg(long, default_value = "10k")]
    pub load: LoadList,
    /// Override the workload's mode (`echo` switches to the echo workload).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// The style's parallelism (its README says what it means), or a list/sweep such as 1,2 or
    /// 1..4/1; default: the style's own default.
    #[arg(long)]
    pub threads: Option<ThreadList>,
    /// Run every combination this many times (for medians and spread).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Folder for the result files of a matrix (default: results/runs/<UTC timestamp>/).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// I/O threads, for styles that separate them from workers.
    #[arg(long)]
    pub io_threads: Option<usize>,
    /// Stack size in KiB for request threads or coroutines, in styles that choose it.
    #[arg(long)]
    pub stack_kib: Option<usize>,
    /// Put the generator and the servers on disjoint CPU sets.
    #[arg(long)]
    pub pin: bool,
    /// Result file of a single run (default: results/<UTC timestamp>-<impl>-<workload>.json).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Herd topology file (default: harness/topology.toml).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Servers also log every input and output line (costs time: it is part of the measurement).
    #[arg(long)]
    pub log_io: bool,
    /// Places backend latency, overriding the workload's (e.g. 20ms, exp:20ms).
    #[arg(long)]
    pub places_latency: Option<String>,
    /// Exit non-zero if any run had a failed request (wrong reply, timeout, …): for CI smoke runs.
    #[arg(long)]
    pub fail_on_errors: bool,
    /// After SIGTERM, how long servers get to exit before SIGKILL.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
}

/// The workspace's results folder.
pub fn results_dir() -> PathBuf {
    crate::workload::workspace_root().join("results")
}

/// One point of a matrix.
#[derive(Debug, Clone)]
struct Point {
    implementation: String,
    workload: String,
    load: Load,
    threads: Option<usize>,
}

/// Runs every combination of the requested styles, workloads, loads and thread counts, `--repeat`
/// times. Returns the result file of a single run, or the folder holding a matrix's files.
pub fn run(args: &RunArgs) -> Result<PathBuf> {
    let implementations = if args.implementation == "all" {
        impls::all()?.into_iter().map(|m| m.name).collect()
    } else {
        sweep::names(&args.implementation)
    };
    for name in &implementations {
        impls::find(name)?;
    }
    let workloads = sweep::names(&args.workload);
    for w in &workloads {
        load::workload_for(w, args.mode)?;
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let threads: Vec<Option<usize>> = match &args.threads {
        Some(list) => list.0.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let mut points = Vec::new();
    for workload in &workloads {
        for implementation in &implementations {
            for &threads in &threads {
                for &load in &args.load.0 {
                    for _ in 0..args.repeat {
                        points.push(Point {
                            implementation: implementation.clone(),
                            workload: workload.clone(),
                            load,
                            threads,
                        });
                    }
                }
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    // Resolved once: a rebuild during a long matrix replaces the file, not this path.
    let exe = std::env::current_exe()?;
    if let [point] = points.as_slice() {
        return run_one(args, point, args.output.clone(), &stop, &exe);
    }
    if args.output.is_some() {
        bail!("--output names one result file; this is a matrix of {} runs: use --output-dir", points.len());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let dir = args.output_dir.clone().unwrap_or_else(|| results_dir().join("runs").join(stamp));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut failures = 0;
    for (i, point) in points.iter().enumerate() {
        if stop.load(Relaxed) {
            break;
        }
        let threads = point.threads.map_or("default".into(), |t| t.to_string());
        let name = format!(
            "{}-{}-{}-t{threads}-{:02}.json",
            point.implementation,
            point.workload.replace(['/', '.'], "_"),
            point.load,
            i + 1
        );
        eprintln!("== run {}/{}: {name}", i + 1, points.len());
        // One failed point (a style that crashed) must not lose the rest of the matrix.
        if let Err(e) = run_one(args, point, Some(dir.join(&name)), &stop, &exe) {
            eprintln!("run {name} failed: {e:#}");
            failures += 1;
        }
    }
    if failures > 0 {
        bail!("{failures} of {} runs failed; the others are in {}", points.len(), dir.display());
    }
    Ok(dir)
}

fn run_one(
    args: &RunArgs,
    point: &Point,
    output: Option<PathBuf>,
    stop: &Arc<AtomicBool>,
    exe: &Path,
) -> Result<PathBuf> {
    let meta = impls::find(&point.implementation)?;
    let workload = load::workload_for(&point.workload, args.mode)?;
    let mode = workload.mode;
    let mode_name = if mode == Mode::Herd { "herd" } else { "echo" };
    if !meta.modes.iter().any(|m| m == mode_name) {
        bail!("{} does not support {mode_name} mode", meta.name);
    }
    let topology = match &args.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::default_herd(),
    };
    if let Err(e) = procs::raise_open_files_limit() {
        eprintln!("warning: could not raise the open-files limit: {e}");
    }

    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let label = format!("{stamp}-{}-{}", meta.name, workload.name);
    let output = output.unwrap_or_else(|| results_dir().join(format!("{label}.json")));
    let logs = results_dir().join("logs").join(&label);
    let pinning = args.pin.then(split_cpus).transpose()?;
    if let Some(p) = &pinning {
        procs::pin_current_thread(&p.generator_cpus)?;
    }
    let upstream =
        vec!["--latency".to_owned(), args.places_latency.clone().unwrap_or_else(|| workload.places_latency.clone())];
    let herd_spec = HerdSpec {
        exe: exe.to_owned(),
        implementation: meta.name.clone(),
        mode,
        topology: topology.clone(),
        upstream: Upstream::Backend(upstream),
        threads: point.threads,
        io_threads: args.io_threads,
        stack_kib: args.stack_kib,
        log_io: args.log_io,
        logs: logs.clone(),
        cpus: pinning.as_ref().map(|p| p.server_cpus.clone()),
    };
    let mut herd = Herd::start(herd_spec, stop)?;
    herd.start_sampling();
    let names = herd.names();

    let targets: Vec<Target> = herd
        .servers()
        .iter()
        .map(|s| Target { addr: s.addr, name: (mode == Mode::Herd).then(|| s.name.clone()) })
        .collect();
    let spec = args.generator.spec(targets, workload.clone(), point.load)?;
    eprintln!(
        "herdbench: {} ({}), workload {}, load {}, {} connections, warm-up {:?}, window {:?}",
        meta.name, meta.style, workload.name, spec.load, spec.connections, spec.warmup, spec.duration
    );
    herd.wait_linked(spec.timeout)?;
    load::announce_clients(&spec)?;
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| load::show_progress(&spec, &progress, &done));
        let outcome = load::generate(&spec, &progress, stop);
        done.store(true, Relaxed);
        outcome
    })?;

    let stopped = herd.stop(args.grace);
    let mut servers = Vec::new();
    let mut places_resources = None;
    for (name, resources) in stopped {
        if name == "places" {
            places_resources = Some(resources);
            continue;
        }
        let stats_path = logs.join(format!("{name}.stats.json"));
        let counters: Option<ServerCounters> =
            std::fs::read(&stats_path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
        servers.push(ServerResult { name, resources, counters });
    }
    let propagation_us = merged_propagation(&servers)?;
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        tool: machine::tool(),
        started_at: outcome.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        machine: machine::machine(),
        implementation: meta,
        parameters: Parameters {
            mode,
            load: spec.load.to_string(),
            arrival: match spec.load {
                crate::units::Load::Max => "closed".into(),
                _ => format!("{:?}", spec.arrival).to_lowercase(),
            },
            connections: spec.connections,
            duration_s: spec.duration.as_secs_f64(),
            warmup_s: spec.warmup.as_secs_f64(),
            timeout_s: spec.timeout.as_secs_f64(),
            seed: spec.seed,
            threads: point.threads,
            generator_threads: spec.threads,
            pipeline: spec.pipeline,
            pinning,
            servers: names,
            topology_links: if mode == Mode::Herd { topology.links.clone() } else { Vec::new() },
        },
        workload,
        summary: outcome.summary,
        commands: outcome.commands,
        errors: outcome.errors,
        timeline: outcome.timeline,
        servers,
        places: places_resources,
        propagation_us,
        interrupted: stop.load(Relaxed),
    };
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&output, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", output.display()))?;
    summary::print(&result);
    if stop.load(Relaxed) {
        eprintln!("interrupted: the result covers only the part of the run that happened");
    }
    if args.fail_on_errors && result.summary.errors > 0 {
        bail!("{} failed requests (--fail-on-errors); the result is in {}", result.summary.errors, output.display());
    }
    Ok(output)
}

/// Generator on the first half of the CPUs (at least one), servers on the rest.
fn split_cpus() -> Result<Pinning> {
    let cores = herd_core::available_cores();
    if cores < 2 {
        bail!("--pin needs at least 2 CPUs, this machine has {cores}");
    }
    let generator = (cores / 2).max(1);
    Ok(Pinning { generator_cpus: (0..generator).collect(), server_cpus: (generator..cores).collect() })
}

fn merged_propagation(servers: &[ServerResult]) -> Result<Option<Latency>> {
    let mut all = herd_core::stats::new_histogram();
    for s in servers {
        if let Some(p) = s.counters.as_ref().and_then(|c| c.propagation_us.as_ref()) {
            let _ = all.add(p.histogram()?);
        }
    }
    Ok((!all.is_empty()).then(|| Latency::from_histogram(&all)))
}
