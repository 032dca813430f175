//! `harness run`: a whole measurement. Start the places backend and the herd as child processes,
//! wait until each accepts, drive the load, stop everything, write the result file, print a summary.
//!
//! ```text
//! places ◄── HTTP ── Alford ── Hamilton        harness (this process)
//!                      │          │              ├─ load generator threads ──► every server
//!                    Welsh ── Ball ── Holiday    └─ children: reaped with wait4 for CPU and RSS
//! ```

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::impls;
use crate::load::{self, GeneratorArgs, Progress, Target};
use crate::machine;
use crate::procs::{self, Children};
use crate::result::{Latency, Parameters, Pinning, RunResult, SCHEMA_VERSION, ServerCounters, ServerResult};
use crate::serve::Mode;
use crate::summary;
use crate::topology::Topology;
use crate::units::parse_duration;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Implementation (style) to measure; see README for the list.
    #[arg(long = "impl", default_value = "threadpool")]
    pub implementation: String,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// The style's parallelism (its README says what it means); default: the style's own default.
    #[arg(long)]
    pub threads: Option<usize>,
    /// I/O threads, for styles that separate them from workers.
    #[arg(long)]
    pub io_threads: Option<usize>,
    /// Stack size in KiB for request threads or coroutines, in styles that choose it.
    #[arg(long)]
    pub stack_kib: Option<usize>,
    /// Put the generator and the servers on disjoint CPU sets.
    #[arg(long)]
    pub pin: bool,
    /// Result file (default: results/<UTC timestamp>-<impl>-<workload>.json).
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
    /// After SIGTERM, how long servers get to exit before SIGKILL.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
}

/// The workspace's results folder.
pub fn results_dir() -> PathBuf {
    crate::workload::workspace_root().join("results")
}

pub fn run(args: &RunArgs) -> Result<PathBuf> {
    let meta = impls::find(&args.implementation)?;
    let workload = args.generator.workload()?;
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
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let label = format!("{stamp}-{}-{}", meta.name, workload.name);
    let output = args.output.clone().unwrap_or_else(|| results_dir().join(format!("{label}.json")));
    let logs = results_dir().join("logs").join(&label);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let pinning = args.pin.then(split_cpus).transpose()?;
    if let Some(p) = &pinning {
        procs::pin_current_thread(&p.generator_cpus)?;
    }
    let server_cpus = pinning.as_ref().map(|p| p.server_cpus.clone());
    let exe = std::env::current_exe()?;
    let mut children = Children::default();

    // The places backend (herd mode only).
    let places = if mode == Mode::Herd {
        let addr = free_port()?;
        let latency = args.places_latency.clone().unwrap_or_else(|| workload.places_latency.clone());
        let mut cmd = Command::new(&exe);
        cmd.args(["places", "--listen", &addr.to_string(), "--latency", &latency]);
        children.spawn("places", with_output_to(cmd, &logs, "places")?, server_cpus.clone())?;
        wait_accepting(&children, "places", addr, &stop, &logs)?;
        Some(addr)
    } else {
        None
    };

    // The servers: the herd, or one echo server.
    let names: Vec<String> = if mode == Mode::Herd { topology.servers.clone() } else { vec!["Echo".into()] };
    let addrs: Vec<SocketAddr> = names.iter().map(|_| free_port()).collect::<Result<_>>()?;
    for (name, addr) in names.iter().zip(&addrs) {
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "--impl", &meta.name, "--name", name, "--listen", &addr.to_string(), "--mode", mode_name]);
        if mode == Mode::Herd {
            for peer in topology.neighbours(name) {
                let i = names.iter().position(|n| *n == peer).context("topology names a server it does not list")?;
                cmd.args(["--peer", &format!("{peer}={}", addrs[i])]);
            }
        }
        if let Some(p) = places {
            cmd.args(["--places", &p.to_string()]);
        }
        if let Some(t) = args.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        if let Some(t) = args.io_threads {
            cmd.args(["--io-threads", &t.to_string()]);
        }
        if let Some(k) = args.stack_kib {
            cmd.args(["--stack-kib", &k.to_string()]);
        }
        if args.log_io {
            cmd.arg("--log-io");
        }
        cmd.arg("--log").arg(logs.join(format!("{name}.log")));
        cmd.arg("--stats").arg(logs.join(format!("{name}.stats.json")));
        children.spawn(name, with_output_to(cmd, &logs, name)?, server_cpus.clone())?;
    }
    for (name, addr) in names.iter().zip(&addrs) {
        wait_accepting(&children, name, *addr, &stop, &logs)?;
    }
    children.start_sampling();

    let targets: Vec<Target> = names
        .iter()
        .zip(&addrs)
        .map(|(n, a)| Target { addr: *a, name: (mode == Mode::Herd).then(|| n.clone()) })
        .collect();
    let spec = args.generator.spec(targets, workload.clone())?;
    eprintln!(
        "herdbench: {} ({}), workload {}, load {}, {} connections, warm-up {:?}, window {:?}",
        meta.name, meta.style, workload.name, spec.load, spec.connections, spec.warmup, spec.duration
    );
    load::announce_clients(&spec)?;
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| load::show_progress(&spec, &progress, &done));
        let outcome = load::generate(&spec, &progress, &stop);
        done.store(true, Relaxed);
        outcome
    })?;

    let stopped = children.stop(args.grace);
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
            threads: args.threads,
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

/// A loopback port nobody is listening on right now.
fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// Sends a child's stdout and stderr to `<logs>/<name>.out`, keeping the run's own output readable.
fn with_output_to(mut cmd: Command, logs: &Path, name: &str) -> Result<Command> {
    let path = logs.join(format!("{name}.out"));
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    cmd.stdout(file.try_clone()?).stderr(file);
    Ok(cmd)
}

/// Waits until `addr` accepts a connection (10 s at most), failing early if the child died.
fn wait_accepting(children: &Children, name: &str, addr: SocketAddr, stop: &AtomicBool, logs: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if stop.load(Relaxed) {
            bail!("interrupted while starting {name}");
        }
        if !children.is_running(name) {
            let said = std::fs::read_to_string(logs.join(format!("{name}.out"))).unwrap_or_default();
            bail!("{name} exited during start-up: {}", said.trim());
        }
        if Instant::now() >= deadline {
            bail!("{name} did not accept connections on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
