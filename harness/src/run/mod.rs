//! `harness run`: a whole measurement. Start the places backend and the herd as child processes
//! ([`crate::env::herd`]), wait until each accepts, drive the load, stop everything, write the result
//! file, print a summary. [`run`] walks a matrix of points; `run_one` measures one, in named steps.
//!
//! ```text
//! places ◄── HTTP ── Alford ── Hamilton        harness (this process)
//!                      │          │              ├─ load generator threads ──► every server
//!                    Welsh ── Ball ── Holiday    └─ children: reaped with wait4 for CPU and RSS
//! ```

pub mod gate;
pub mod remote;
pub mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::base::sweep::{self, LoadList, ThreadList};
use crate::base::topology::Topology;
use crate::env::herd::{Herd, HerdSpec, Upstream};
use crate::env::hosts::{Placement, Remote};
use crate::env::wan::WanArgs;
use crate::load::worker::Window;
use crate::load::{self, GeneratorArgs, LoadOutcome, LoadSpec, Progress, Target};
use crate::probe::counters::{SyscallCount, WindowProbe};
use crate::probe::machine;
use crate::probe::procs;
use crate::server::impls;
use crate::server::limits::LimitsArgs;
use crate::server::style::StyleArgs;
use herd_record::catalogue::ImplMeta;
use herd_record::counters::Counters;
use herd_record::hosts::HostRecord;
use herd_record::result::{
    HerdAuth, Latency, LimitsRecord, Parameters, Pinning, ProcessResources, RunResult, SCHEMA_VERSION, ServerCounters,
    ServerResult,
};
use herd_record::scenario::{EventRecord, ScenarioRecord};
use herd_record::units::{Load, parse_duration};
use herd_record::workload::Mode;
use herd_record::workload::Workload;
use herd_report::compare::MetricName;
use herd_report::summary;
use scenario::Scenario;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Implementation (style or guest) to measure: a name, a comma list, `all` (the built-in
    /// styles) or `guests` (every guest, guests/ and --guest folders).
    #[arg(long = "impl", default_value = "threadpool")]
    pub implementation: String,
    /// Workload: a name in workloads/ (or a path), or a comma list [default: herd-mixed, or the
    /// scenario's].
    #[arg(long)]
    pub workload: Option<String>,
    /// Scenario: phases of load and timed faults in one run (a name in workloads/scenarios/, or a
    /// path). Its phases set the window (not --duration); phases given as multiples (`0.5x`)
    /// scale --load; its workload is the run's.
    #[arg(long)]
    pub scenario: Option<String>,
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
    /// Run every combination this many times (for medians and spread), in interleaved rounds: each
    /// round runs every style of a comparison back to back (order rotated per round), so slow drift
    /// of the machine hits all of them alike and per-round ratios cancel it.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Folder for the result files of a matrix (default: results/runs/<UTC timestamp>/).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// `--io-threads`, `--stack-kib`, `--driver` (recorded in the result): passed to every server.
    #[command(flatten)]
    pub style: StyleArgs,
    /// Put the generator and the servers on disjoint CPU sets.
    #[arg(long)]
    pub pin: bool,
    /// A guest's folder (or a folder of guests) to look for `--impl` names in, beside guests/.
    #[arg(long = "guest", value_name = "PATH")]
    pub guests: Vec<PathBuf>,
    /// Measure a guest that has not passed `harness verify` since its folder last changed (the
    /// result records that it was unverified).
    #[arg(long)]
    pub unverified: bool,
    /// Count every system call of the servers over the window, by name, with `perf stat`
    /// tracepoints (root or perf_event_paranoid ≤ 1; without perf the run says so and goes on).
    #[arg(long)]
    pub syscalls: bool,
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
    /// A pass/fail criterion on each run, as k6 writes them (repeatable): `p99<10ms`, `errors==0`,
    /// `cpu-per-request<300us`, `throughput>=9.5k`; metrics p50, p99, p999, cpu-per-request,
    /// syscalls-per-request (with --syscalls), switches-per-request, throughput, errors. Printed as
    /// a table after the run; a breach exits with status 99 (the result file is kept).
    #[arg(long = "threshold", value_name = "METRIC<VALUE")]
    pub thresholds: Vec<herd_report::thresholds::Threshold>,
    /// After SIGTERM, how long servers get to exit before SIGKILL.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Start the herd without a key: any connection may send `AT` lines (`serve --insecure-herd`).
    /// By default each run writes a fresh herd key and its servers' links prove they hold it.
    /// Recorded in the result file.
    #[arg(long)]
    pub insecure_herd: bool,
    /// The policy layer's limits, passed to every server and recorded in the result file.
    #[command(flatten)]
    pub limits: LimitsArgs,
    /// A WAN herd: link delay, jitter and loss (members in network namespaces; root only).
    #[command(flatten)]
    pub wan: WanArgs,
    /// Place the herd's members, the places backend and the generators on named hosts, each
    /// reached through a launcher (`ssh -tt {host}`, `ip netns exec {name}`) running this same
    /// harness there: a TOML file, documented in harness/src/env/hosts.rs.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
}

/// The workspace's results folder.
/// Where results go without `--output`/`--output-dir`: `results/` of the current folder (of the
/// checkout, when run from its root as the README does; of any folder an installed binary runs in).
pub fn results_dir() -> PathBuf {
    PathBuf::from("results")
}

/// One point of a matrix.
#[derive(Debug, Clone)]
struct Point {
    implementation: String,
    workload: String,
    load: Load,
    threads: Option<usize>,
    /// Which round of `--repeat` (from 1), when there is more than one.
    round: Option<usize>,
}

/// Runs every combination of the requested styles, workloads, loads and thread counts, `--repeat`
/// times. Returns the result file of a single run, or the folder holding a matrix's files.
pub fn run(args: &RunArgs) -> Result<PathBuf> {
    let (implementations, workloads) = check(args)?;
    let threads: Vec<Option<usize>> = match &args.threads {
        Some(list) => list.0.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let points = interleaved_rounds(&implementations, &workloads, &threads, &args.load.0, args.repeat);
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
    run_matrix(args, &points, &stop, &exe)
}

/// Everything about `args` that can be wrong, said before anything is measured: the styles (and
/// guests verified), the workloads, the combinations of flags, and that the results can be
/// written. Returns the styles and the workloads to run.
fn check(args: &RunArgs) -> Result<(Vec<String>, Vec<String>)> {
    let implementations = impls::expand(&args.implementation)?;
    for name in &implementations {
        impls::find(name)?;
        check_guest(name, args.unverified)?;
    }
    let scenario = args.scenario.as_deref().map(Scenario::load).transpose()?;
    let workloads = match (&scenario, &args.workload) {
        (Some(s), Some(w)) if *w != s.workload => bail!(
            "scenario {} drives workload {}; leave out --workload {w} (or write a scenario for it)",
            s.name,
            s.workload
        ),
        (Some(s), _) => vec![s.workload.clone()],
        (None, w) => sweep::names(w.as_deref().unwrap_or("herd-mixed")),
    };
    for w in &workloads {
        load::workload_for(w, args.mode)?;
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if let Some(t) = args.thresholds.iter().find(|t| t.metric == MetricName::Syscalls && !args.syscalls) {
        bail!("--threshold '{t}' judges system calls, which only --syscalls counts: add --syscalls");
    }
    // Where the results go is checked before anything is measured, not after.
    if let Some(path) = &args.output {
        RunResult::check_writable(path, "--output")?;
    }
    // The logs go to results/logs/ whatever the output.
    let results = args.output_dir.clone().unwrap_or_else(results_dir);
    for dir in [&results, &results_dir().join("logs")] {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("cannot make the folder {}: run from a folder you can write, or give --output-dir", dir.display())
        })?;
    }
    if args.wan.spec(args.generator.seed).is_some() {
        if args.hosts.is_some() {
            bail!("--hosts places the herd on hosts of its own; a WAN herd on this machine (--link-*) cannot join it");
        }
        // Said before anything starts, not after the places backend and a herd key.
        crate::env::wan::netns::require_root()?;
    }
    if args.hosts.is_some() && args.scenario.is_some() {
        bail!("a scenario signals its herd's processes here; with --hosts they run elsewhere: drop one of the two");
    }
    if args.hosts.is_some() && args.pin {
        bail!("--pin splits this machine's CPUs; with --hosts place processes on hosts instead (drop --pin)");
    }
    Ok((implementations, workloads))
}

/// Runs the matrix `points` into a folder of result files (one per point), going on past a point
/// that fails; returns the folder.
fn run_matrix(args: &RunArgs, points: &[Point], stop: &Arc<AtomicBool>, exe: &Path) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let dir = args.output_dir.clone().unwrap_or_else(|| results_dir().join("runs").join(stamp));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (mut failures, mut breached) = (0, Vec::new());
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
        match run_one(args, point, Some(dir.join(&name)), stop, exe) {
            Ok(_) => {}
            Err(e) => match e.downcast::<herd_report::thresholds::Breached>() {
                Ok(b) => breached.extend(b.0.into_iter().map(|t| format!("{t} in {name}"))),
                Err(e) => {
                    eprintln!("run {name} failed: {e:#}");
                    failures += 1;
                }
            },
        }
    }
    if failures > 0 {
        bail!("{failures} of {} runs failed; the others are in {}", points.len(), dir.display());
    }
    if !breached.is_empty() {
        eprintln!("results in {}", dir.display());
        return Err(herd_report::thresholds::Breached(breached).into());
    }
    Ok(dir)
}

/// The points of a matrix in rounds: round `r` runs, for each workload, thread count and load, every
/// style once, starting from style `r` (A B C, B C A, C A B …), so that the styles of one comparison
/// run minutes — not a whole matrix — apart, and no style always runs first after a pause.
fn interleaved_rounds(
    implementations: &[String],
    workloads: &[String],
    threads: &[Option<usize>],
    loads: &[Load],
    repeat: usize,
) -> Vec<Point> {
    let mut points = Vec::new();
    for round in 0..repeat {
        for workload in workloads {
            for &threads in threads {
                for &load in loads {
                    for k in 0..implementations.len() {
                        let implementation = implementations[(round + k) % implementations.len()].clone();
                        let round = (repeat > 1).then_some(round + 1);
                        points.push(Point { implementation, workload: workload.clone(), load, threads, round });
                    }
                }
            }
        }
    }
    points
}

/// One measurement, step by step: resolve the point, start the herd (the places backend first),
/// drive the load, stop the herd and collect what its processes used, then write and report.
fn run_one(
    args: &RunArgs,
    point: &Point,
    output: Option<PathBuf>,
    stop: &Arc<AtomicBool>,
    exe: &Path,
) -> Result<PathBuf> {
    let plan = Plan::new(args, point)?;
    if let Some(s) = &plan.scenario {
        s.check_members(&plan.topology.servers)?;
    }
    let capacity = capacity(args, &plan)?;
    let files = RunFiles::new(&plan, output);
    let pinning = pin_generator(args)?;
    let mut herd = start_herd(args, point, &plan, &files, pinning.as_ref(), exe, stop)?;
    let mut spec = load_spec(args, point, &plan, &herd)?;
    (spec.sources, spec.open_files) = (capacity.sources, Some(capacity.open_files));
    let generators = plan.hosts.as_ref().map(Placement::generators).unwrap_or_default();
    let (outcome, windows, events, merged) = if generators.is_empty() {
        let (outcome, windows, events) = drive_load(&plan, &mut herd, &spec, stop, args.syscalls)?;
        (outcome, windows, events, None)
    } else {
        let (outcome, merged) = drive_remote_load(&plan, &generators, &herd, &spec, stop, exe)?;
        (outcome, Windows::default(), None, Some(merged))
    };
    let host_records = herd.host_records();
    let collected = stop_and_collect(&mut herd, args.grace, &files.logs, windows);
    let mut parameters = parameters(point, &plan, &herd, &spec, pinning);
    let scenario = scenario_record(&plan, &herd, &spec, &outcome, events);
    parameters.hosts = host_records;
    let mut merged_record = None;
    if let Some((merged, generator_hosts)) = merged {
        parameters.start_at = merged.parameters.start_at;
        parameters.hosts.get_or_insert_with(Vec::new).extend(generator_hosts);
        merged_record = merged.merged;
    }
    let mut result = build_result(plan, parameters, outcome, collected, stop.load(Relaxed))?;
    result.merged = merged_record;
    result.scenario = scenario;
    result.wan_relay = herd.wan_record().map(|(_, relay)| relay);
    result.write(&files.output)?;
    report(args, &result, &files.output, stop.load(Relaxed))?;
    Ok(files.output)
}

/// A guest is set up (once, cached) and must have passed `harness verify` for its folder as it is
/// now before anything is measured: one that has not is verified first (every case, as `harness
/// verify` runs them), and refused if a case fails; `--unverified` skips this, and its result says so.
fn check_guest(name: &str, unverified: bool) -> Result<()> {
    let Some(guest) = crate::server::guest::find(name)? else { return Ok(()) };
    if guest.prepare()?.verified || unverified {
        return Ok(());
    }
    eprintln!("== guest {name} has not passed verify since its folder last changed: verifying it first");
    let cases = crate::verify::CASES;
    if !crate::verify::verify(name, cases, 4, std::time::Duration::from_secs(120))? {
        bail!(
            "guest {name} failed verify (the table above names each failed case), so it is not measured: \
             fix it and run `harness verify --impl {name}`, or pass --unverified to measure it anyway (recorded)"
        );
    }
    Ok(())
}

/// What a point of the matrix resolves to before anything starts.
#[derive(Debug)]
struct Plan {
    meta: ImplMeta,
    workload: Workload,
    topology: Topology,
    scenario: Option<Scenario>,
    /// `--hosts`: where each process runs.
    hosts: Option<Placement>,
}

impl Plan {
    /// Finds the style and the workload, checks that the style supports the workload's mode, and
    /// reads the topology.
    fn new(args: &RunArgs, point: &Point) -> Result<Self> {
        let mut meta = impls::find(&point.implementation)?;
        if let Some(guest) = crate::server::guest::find(&point.implementation)? {
            meta.guest_record = Some(guest.prepare()?);
        }
        let workload = load::workload_for(&point.workload, args.mode)?;
        let mode_name = if workload.mode == Mode::Herd { "herd" } else { "echo" };
        if !meta.modes.iter().any(|m| m == mode_name) {
            bail!("{} does not support {mode_name} mode", meta.name);
        }
        let topology = match &args.topology {
            Some(path) => Topology::load(path)?,
            None => Topology::default_herd(),
        };
        let scenario = args.scenario.as_deref().map(Scenario::load).transpose()?;
        let servers = match workload.mode {
            Mode::Herd => topology.servers.clone(),
            Mode::Echo => vec!["Echo".to_owned()],
        };
        let hosts = args.hosts.as_deref().map(|path| Placement::load(path, &servers)).transpose()?;
        Ok(Self { meta, workload, topology, scenario, hosts })
    }

    fn mode(&self) -> Mode {
        self.workload.mode
    }
}

/// Where a run writes: its result file, and a folder for the children's output, logs and counters.
#[derive(Debug)]
struct RunFiles {
    output: PathBuf,
    logs: PathBuf,
}

impl RunFiles {
    /// `output` if given, else `results/<UTC timestamp>-<impl>-<workload>.json`; the logs in
    /// `results/logs/<the same label>/`.
    fn new(plan: &Plan, output: Option<PathBuf>) -> Self {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let label = format!("{stamp}-{}-{}", plan.meta.name, plan.workload.name);
        let output = output.unwrap_or_else(|| results_dir().join(format!("{label}.json")));
        Self { output, logs: results_dir().join("logs").join(&label) }
    }
}

/// The connections this point opens, and the servers they spread over (the herd's members, or the
/// one echo server).
fn connections_and_servers(args: &RunArgs, plan: &Plan) -> (usize, usize) {
    let connections = args.generator.connections.unwrap_or(plan.workload.connections);
    let servers = match plan.mode() {
        Mode::Herd => plan.topology.servers.len(),
        Mode::Echo => 1,
    };
    (connections, servers)
}

/// The servers' limits with room for this point's connections: `--max-connections` left at its
/// default is raised to each server's share and a margin (recorded with the limits); one given is
/// kept, so that a run can test the cap itself.
fn fit_connections(mut limits: herd_core::Limits, args: &RunArgs, plan: &Plan) -> herd_core::Limits {
    let (connections, servers) = connections_and_servers(args, plan);
    let share = connections.div_ceil(servers) + 32;
    if limits.max_connections == herd_core::Limits::default().max_connections && share > limits.max_connections {
        eprintln!("herdbench: --max-connections raised to {share} per server for {connections} connections");
        limits.max_connections = share;
    }
    limits
}

/// Descriptors and source addresses for this point's connections, before any process starts: the
/// generator's limit raised (the servers inherit it), sources picked toward loopback servers when
/// one address has too few ports; or an error naming the limit and the fix.
fn capacity(args: &RunArgs, plan: &Plan) -> Result<crate::load::capacity::Capacity> {
    let (connections, servers) = connections_and_servers(args, plan);
    // Generators on hosts (each a `harness load` that prepares its own share) hold none here.
    let here = if plan.hosts.as_ref().is_some_and(|h| !h.generators().is_empty()) { 0 } else { connections };
    // Toward loopback unless the servers live in network namespaces or on other hosts.
    let remote = plan.hosts.is_some() || args.wan.spec(args.generator.seed).is_some();
    let ip: std::net::IpAddr = if remote { [192, 0, 2, 1].into() } else { [127, 0, 0, 1].into() };
    let targets: Vec<std::net::SocketAddr> = (0..servers).map(|i| (ip, 9000 + i as u16).into()).collect();
    crate::load::capacity::prepare(here, connections.div_ceil(servers), &targets, &args.generator.source_addrs)
}

/// With `--pin`, splits the CPUs and moves this thread (and the generator threads it will start)
/// onto the generator's half.
fn pin_generator(args: &RunArgs) -> Result<Option<Pinning>> {
    // Split once per process: after the first point this thread may run on the generator's CPUs
    // only, and splitting those again would leave the servers of the next point none.
    static SPLIT: std::sync::OnceLock<Pinning> = std::sync::OnceLock::new();
    if !args.pin {
        return Ok(None);
    }
    let pinning = match SPLIT.get() {
        Some(p) => p.clone(),
        None => {
            let p = split_cpus()?;
            SPLIT.get_or_init(|| p).clone()
        }
    };
    procs::pin_current_thread(&pinning.generator_cpus)?;
    Ok(Some(pinning))
}

/// Starts the places backend (herd mode) and the servers, each waited for until it accepts, and
/// starts sampling their threads and memory.
fn start_herd(
    args: &RunArgs,
    point: &Point,
    plan: &Plan,
    files: &RunFiles,
    pinning: Option<&Pinning>,
    exe: &Path,
    stop: &AtomicBool,
) -> Result<Herd> {
    let latency = args.places_latency.clone().unwrap_or_else(|| plan.workload.places_latency.clone());
    let spec = HerdSpec {
        exe: exe.to_owned(),
        implementation: plan.meta.name.clone(),
        mode: plan.mode(),
        topology: plan.topology.clone(),
        upstream: Upstream::Backend(vec!["--latency".to_owned(), latency]),
        threads: point.threads,
        style: args.style.clone(),
        limits: fit_connections(args.limits.limits(), args, plan),
        log_io: args.log_io,
        insecure_herd: args.insecure_herd,
        logs: files.logs.clone(),
        cpus: pinning.map(|p| p.server_cpus.clone()),
        samples: plan.scenario.is_some(),
        wan: args.wan.spec(args.generator.seed),
        hosts: plan.hosts.clone(),
    };
    let mut herd = Herd::start(spec, stop)?;
    herd.start_sampling();
    Ok(herd)
}

/// The load of this point, aimed at every server of the herd.
fn load_spec(args: &RunArgs, point: &Point, plan: &Plan, herd: &Herd) -> Result<LoadSpec> {
    let targets: Vec<Target> = herd
        .servers()
        .iter()
        .map(|s| Target { addr: s.addr, name: (plan.mode() == Mode::Herd).then(|| s.name.clone()) })
        .collect();
    let mut spec = args.generator.spec(targets, plan.workload.clone(), point.load)?;
    if let Some(scenario) = &plan.scenario {
        spec.duration = scenario.window();
        spec.scenario = Some(scenario.offered(point.load.offered_rps(), spec.warmup)?);
    }
    Ok(spec)
}

/// Says what runs, waits for the flood links, announces the workload's clients, then drives the
/// load with a live progress line until it is done or `stop` is set, and a scenario's events on the
/// herd meanwhile. Reads every server's and the generator's counters at the measured window's
/// start and end.
fn drive_load(
    plan: &Plan,
    herd: &mut Herd,
    spec: &LoadSpec,
    stop: &AtomicBool,
    count_syscalls: bool,
) -> Result<(LoadOutcome, Windows, Option<Performed>)> {
    prepare_load(plan, herd, spec)?;
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let names = herd.names();
    let servers: Vec<i32> = names.iter().map(|n| herd.pid(n).unwrap_or(-1)).collect();
    let mut probe = WindowProbe::new([servers.as_slice(), &[i32::try_from(std::process::id()).unwrap_or(-1)]].concat());
    if count_syscalls {
        match SyscallCount::start(&servers, herd.logs()) {
            Ok(count) => probe = probe.with_syscalls(count),
            Err(e) => {
                eprintln!("herdbench: --syscalls: perf cannot count here ({e}); going on without per-call counts")
            }
        }
    }
    let (outcome, events) = std::thread::scope(|scope| {
        scope.spawn(|| load::show_progress(spec, &progress, &done));
        let generator = scope.spawn(|| {
            let outcome = load::generate(spec, &progress, stop, Some(&probe));
            done.store(true, Relaxed);
            outcome
        });
        // A scenario's events run on this thread, the one that started the herd: a member it
        // restarts is its child, and a child dies with the thread that started it (procs.rs).
        let over = || stop.load(Relaxed) || done.load(Relaxed);
        let events = plan.scenario.as_ref().map(|s| s.perform(herd, &progress, &over));
        let outcome = generator.join().map_err(|_| anyhow::anyhow!("the load generator panicked"));
        (outcome, events)
    });
    let outcome = outcome??;
    let performed = events.map(|events| Performed { events, window: progress.window.get().copied() });
    let mut deltas = probe.deltas();
    let generator = deltas.pop().flatten();
    let syscalls = probe.syscalls();
    Ok((outcome, Windows { servers: names.into_iter().zip(deltas).collect(), generator, syscalls }, performed))
}

/// Says what runs, waits for the flood links and announces the workload's clients.
fn prepare_load(plan: &Plan, herd: &Herd, spec: &LoadSpec) -> Result<()> {
    eprintln!(
        "herdbench: {} ({}), workload {}, load {}, {} connections, warm-up {:?}, window {:?}",
        plan.meta.name, plan.meta.style, plan.workload.name, spec.load, spec.connections, spec.warmup, spec.duration
    );
    herd.wait_linked(spec.timeout)?;
    load::announce_clients(spec)?;
    // Over WAN links the announcements take a crossing of the herd to reach every member.
    std::thread::sleep(herd.settle_time());
    Ok(())
}

/// With generators on hosts (`--hosts`): they drive the load there (see
/// [`remote::run_generators`]) and their merged result is this run's outcome. No window
/// counters: the generators, not this process, know when the window opened.
fn drive_remote_load(
    plan: &Plan,
    remotes: &[Remote],
    herd: &Herd,
    spec: &LoadSpec,
    stop: &AtomicBool,
    exe: &Path,
) -> Result<(LoadOutcome, (RunResult, Vec<HostRecord>))> {
    prepare_load(plan, herd, spec)?;
    let (merged, records) = remote::run_generators(remotes, spec, &herd.spec().label(), herd.logs(), exe, stop)?;
    let outcome = LoadOutcome {
        started_at: merged.start_time()?,
        summary: merged.summary.clone(),
        commands: merged.commands.clone(),
        errors: merged.errors.clone(),
        timeline: merged.timeline.clone(),
        send_lag: merged.send_lag.clone(),
        connect_us: merged.connect_us.clone(),
        fine: None,
    };
    Ok((outcome, (merged, records)))
}

/// What a scenario's events did, and the window they were timed from.
#[derive(Debug)]
struct Performed {
    events: Vec<EventRecord>,
    window: Option<Window>,
}

/// A scenario run's record: its timeline, phases, events and recoveries, from the generator's finer
/// timeline and the servers' samples.
fn scenario_record(
    plan: &Plan,
    herd: &Herd,
    spec: &LoadSpec,
    outcome: &LoadOutcome,
    performed: Option<Performed>,
) -> Option<ScenarioRecord> {
    let scenario = plan.scenario.as_ref()?;
    let performed = performed?;
    let fine = outcome.fine.as_ref()?;
    let window = performed.window?;
    let names = herd.names();
    let samples =
        names.iter().map(|n| (n.clone(), herd_record::scenario::read_samples(&herd.spec().samples_file(n)))).collect();
    Some(scenario.record(scenario::Measured {
        base_rps: spec.load.offered_rps(),
        fine,
        events: performed.events,
        measure_start: window.measure_start,
        servers: &names,
        samples,
    }))
}

/// Counters over the measured window: each server's by name, and the generator's.
#[derive(Debug, Default)]
struct Windows {
    servers: BTreeMap<String, Option<Counters>>,
    generator: Option<Counters>,
    /// Every server's system calls summed, by name (`--syscalls`).
    syscalls: Option<BTreeMap<String, u64>>,
}

/// What the herd's processes used, and what each server counted.
#[derive(Debug)]
struct Collected {
    servers: Vec<ServerResult>,
    places: Option<ProcessResources>,
    generator_window: Option<Counters>,
    server_syscalls: Option<BTreeMap<String, u64>>,
}

/// Stops every child (SIGTERM, then SIGKILL after `grace`) and collects each one's resources and
/// each server's counters, which it wrote to `<logs>/<name>.stats.json` on its way out.
fn stop_and_collect(herd: &mut Herd, grace: Duration, logs: &Path, mut windows: Windows) -> Collected {
    let mut collected = Collected {
        servers: Vec::new(),
        places: None,
        generator_window: windows.generator,
        server_syscalls: windows.syscalls,
    };
    for (name, resources) in herd.stop(grace) {
        if name == "places" {
            collected.places = Some(resources);
            continue;
        }
        let stats_path = logs.join(format!("{name}.stats.json"));
        let counters: Option<ServerCounters> =
            std::fs::read(&stats_path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let window = windows.servers.remove(&name).flatten();
        collected.servers.push(ServerResult { name, resources, counters, window });
    }
    collected
}

/// The run's parameters as the result file records them.
fn parameters(point: &Point, plan: &Plan, herd: &Herd, spec: &LoadSpec, pinning: Option<Pinning>) -> Parameters {
    let herd_mode = plan.mode() == Mode::Herd;
    Parameters {
        mode: plan.mode(),
        threads: point.threads,
        pinning,
        servers: herd.names(),
        topology_links: if herd_mode { plan.topology.links.clone() } else { Vec::new() },
        limits: Some(LimitsRecord::from(herd.limits())),
        round: point.round,
        driver: herd.spec().style.driver.map(|d| d.io_driver().name().to_owned()),
        herd_auth: herd_mode.then_some(if herd.spec().insecure_herd { HerdAuth::Insecure } else { HerdAuth::Key }),
        wan: herd.wan_record().map(|(settings, _)| settings),
        ..crate::load::parameters(spec)
    }
}

/// The result file's contents.
fn build_result(
    plan: Plan,
    parameters: Parameters,
    outcome: LoadOutcome,
    collected: Collected,
    interrupted: bool,
) -> Result<RunResult> {
    let propagation_us = merged_propagation(&collected.servers)?;
    Ok(RunResult {
        schema_version: SCHEMA_VERSION,
        tool: machine::tool(),
        started_at: RunResult::started_at_text(outcome.started_at),
        machine: machine::machine(),
        implementation: plan.meta,
        parameters,
        workload: plan.workload,
        summary: outcome.summary,
        commands: outcome.commands,
        errors: outcome.errors,
        timeline: outcome.timeline,
        servers: collected.servers,
        places: collected.places,
        generator_window: collected.generator_window,
        server_syscalls: collected.server_syscalls,
        propagation_us,
        send_lag: outcome.send_lag,
        connect_us: outcome.connect_us,
        interrupted,
        merged: None,
        scenario: None,
        wan_relay: None,
    })
}

/// Prints the summary table; with `--fail-on-errors`, a run with a failed request is an error.
fn report(args: &RunArgs, result: &RunResult, output: &Path, interrupted: bool) -> Result<()> {
    summary::print(result);
    if interrupted {
        eprintln!("interrupted: the result covers only the part of the run that happened");
    }
    if args.fail_on_errors && result.summary.errors > 0 {
        bail!("{} failed requests (--fail-on-errors); the result is in {}", result.summary.errors, output.display());
    }
    let judged = herd_report::thresholds::judge(&args.thresholds, result);
    if judged.iter().any(|j| !j.met) {
        eprintln!("the result is in {}", output.display());
    }
    herd_report::thresholds::report(&judged)
}

/// Generator on the first half of the CPUs (at least one), servers on the rest (also how `harness
/// gate` places the floor and callgrind's servers, so that they run where a gate run's servers ran).
pub(crate) fn split_cpus() -> Result<Pinning> {
    let cores = herd_core::available_cores();
    if cores < 2 {
        bail!("--pin needs at least 2 CPUs, this machine has {cores}");
    }
    let generator = (cores / 2).max(1);
    Ok(Pinning { generator_cpus: (0..generator).collect(), server_cpus: (generator..cores).collect() })
}

fn merged_propagation(servers: &[ServerResult]) -> Result<Option<Latency>> {
    let all = Latency::sum(servers.iter().filter_map(|s| s.counters.as_ref()?.propagation_us.as_ref()))?;
    Ok((all.count > 0).then_some(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_run_in_rounds_with_the_order_rotated() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let load: Load = "1k".parse().expect("valid load");
        let points = interleaved_rounds(&names(&["a", "b", "c"]), &names(&["w"]), &[None], &[load], 3);
        let order: Vec<&str> = points.iter().map(|p| p.implementation.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "b", "c", "a", "c", "a", "b"]);
        let rounds: Vec<Option<usize>> = points.iter().map(|p| p.round).collect();
        assert_eq!(rounds, [1, 1, 1, 2, 2, 2, 3, 3, 3].map(Some), "each run knows its round, to be paired by it");
        let once = interleaved_rounds(&names(&["a"]), &names(&["w"]), &[None], &[load], 1);
        assert_eq!(once[0].round, None);
    }
}
