//! The load generator (`harness load`, and the driver inside `harness run`).
//!
//! It must out-produce the servers it measures (checked against ../shared/reference/echo_client in
//! the closing notes), so the hot path is a plain mio loop per thread with no per-request locking,
//! and its threads keep their own histograms, merged once at the end.
//!
//! # Layout
//! - [`clock`]: the monotonic clock as plain nanoseconds, the unit of the hot path.
//! - [`schedule`]: seeded randomness and the open-loop schedule of intended send times.
//! - [`requests`]: what to send and how each reply is checked.
//! - [`worker`]: one thread's event loop.
//! - [`timer`]: a timerfd for sub-millisecond wake-ups.
//! - [`capacity`]: descriptors and source addresses for the connections, checked before a load starts.

pub mod capacity;
mod requests;
pub mod schedule;
pub mod timer;
pub mod worker;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use herd_core::Timestamp;

use crate::base::clock;
use crate::base::rng::SplitMix64;
use crate::probe::counters::WindowProbe;
use herd_record::result::{Latency, Percentiles, SendLag, Summary, TimelinePoint};
use herd_record::units::{Load, Slice};
use herd_record::workload::Mode;
use herd_record::workload::Workload;
pub use requests::{Failure, KINDS};
pub use schedule::{Arrival, RateProfile};
pub use worker::{Progress, Step, StepPlan, StepReport, Target};

/// Everything that defines a load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub targets: Vec<Target>,
    pub connections: usize,
    pub load: Load,
    pub arrival: Arrival,
    /// Requests in flight per connection in a closed loop.
    pub pipeline: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub threads: usize,
    /// Nice value of the generator threads (`None`: inherited).
    pub nice: Option<i32>,
    pub seed: u64,
    pub workload: Workload,
    pub show_errors: usize,
    /// This generator's share of the load (`--slice`).
    pub slice: Slice,
    /// When the load starts, by the wall clock (`--start-at`), to start several generators together.
    pub start_at: Option<std::time::SystemTime>,
    /// A scenario's changing rate and finer timeline (`run --scenario`); `load` is then its base.
    pub scenario: Option<ScenarioLoad>,
    /// Source addresses the connections spread over (`--source-addrs`, or picked by
    /// [`capacity::prepare`]); empty: the kernel chooses.
    pub sources: Vec<std::net::IpAddr>,
    /// The open-files limit the generator ran under, once [`capacity::prepare`] set it.
    pub open_files: Option<u64>,
}

/// What a scenario changes in a load: the offered rate over time, from the start of the warm-up,
/// and the finer timeline of the window.
#[derive(Debug, Clone)]
pub struct ScenarioLoad {
    pub profile: RateProfile,
    pub steps: StepPlan,
    /// Mean offered rate over the window, for the summary.
    pub mean_rps: f64,
}

impl LoadSpec {
    /// Raises the descriptor limit and picks source addresses for this load's connections, before
    /// anything starts; an error names the limit that is short and what to change.
    pub fn prepare(&mut self) -> Result<()> {
        let addrs: Vec<SocketAddr> = self.targets.iter().map(|t| t.addr).collect();
        let capacity = capacity::prepare(self.connections, 0, &addrs, &self.sources)?;
        (self.sources, self.open_files) = (capacity.sources, Some(capacity.open_files));
        Ok(())
    }

    /// What this generator offers: its slice of the load's rate (`None`: a closed loop).
    pub fn offered_rps(&self) -> Option<f64> {
        let whole = match &self.scenario {
            Some(s) => Some(s.mean_rps),
            None => self.load.offered_rps(),
        };
        whole.map(|r| r / f64::from(self.slice.n))
    }

    /// The `harness load` command line (after `load`) that drives this spec with the workload read
    /// from `workload_file`: how a generator on another host is started (`run --hosts`).
    /// `--show-errors` stays with the caller; a scenario's profile has no flags and is refused.
    pub fn to_load_args(&self, workload_file: &std::path::Path) -> Result<Vec<std::ffi::OsString>> {
        use clap::ValueEnum;
        if self.scenario.is_some() {
            bail!("a scenario's load runs in this process; it has no `harness load` command line");
        }
        let nanos = |d: Duration| format!("{}ns", d.as_nanos());
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        for t in &self.targets {
            args.extend(["--addr".into(), t.addr.to_string().into()]);
        }
        args.extend(["--workload".into(), workload_file.as_os_str().to_owned()]);
        let arrival = self.arrival.to_possible_value().expect("every arrival has a name");
        let mut flags = vec![
            ("--load", self.load.to_string()),
            ("--connections", self.connections.to_string()),
            ("--duration", nanos(self.duration)),
            ("--warmup", nanos(self.warmup)),
            ("--timeout", nanos(self.timeout)),
            ("--arrival", arrival.get_name().to_owned()),
            ("--pipeline", self.pipeline.to_string()),
            ("--gen-threads", self.threads.to_string()),
            ("--seed", self.seed.to_string()),
            ("--slice", self.slice.to_string()),
        ];
        if let Some(nice) = self.nice {
            flags.push(("--gen-nice", nice.to_string()));
        }
        if let Some(t) = self.start_at {
            let t = chrono::DateTime::<chrono::Utc>::from(t);
            flags.push(("--start-at", t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)));
        }
        args.extend(flags.into_iter().flat_map(|(flag, value)| [flag.into(), value.into()]));
        Ok(args)
    }
}

/// What a load measured, ready for the result file.
#[derive(Debug)]
pub struct LoadOutcome {
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub summary: Summary,
    pub commands: BTreeMap<String, Latency>,
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
    /// Open loop only.
    pub send_lag: Option<SendLag>,
    pub connect_us: Option<Latency>,
    /// A scenario run's finer timeline, every thread's added.
    pub fine: Option<StepReport>,
}

/// Announces every client of a herd workload (one IAMAT each, spread over the servers) and waits for
/// the floods to settle, so WHATSAT can ask any server about any client from the first second.
pub fn announce_clients(spec: &LoadSpec) -> Result<()> {
    let w = &spec.workload;
    if w.mode != Mode::Herd || w.whatsat == 0 {
        return Ok(());
    }
    let mut source = requests::RequestSource::new(w, SplitMix64::derive(spec.seed, u64::MAX));
    for (t, target) in spec.targets.iter().enumerate() {
        let mut batch = Vec::new();
        let mut count = 0;
        for client in (t as u32..w.clients).step_by(spec.targets.len()) {
            source.write_iamat(&mut batch, client, Timestamp::from_system_time(std::time::SystemTime::now()));
            count += 1;
        }
        let mut stream = TcpStream::connect_timeout(&target.addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to {} to announce clients", target.addr))?;
        stream.set_read_timeout(Some(spec.timeout))?;
        let reader_stream = stream.try_clone()?;
        let writer = std::thread::spawn(move || stream.write_all(&batch));
        let mut reader = BufReader::new(reader_stream);
        let mut line = String::new();
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line).with_context(|| format!("announcing clients to {}", target.addr))?;
            if !line.starts_with("AT ") {
                bail!("announcing clients to {}: unexpected reply {line:?}", target.addr);
            }
        }
        writer.join().map_err(|_| anyhow::anyhow!("announce writer panicked"))??;
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Runs the load: warm-up, measured window, drain. `stop` ends it early (Ctrl-C).
/// `probe`, if given, is read when the measured window opens and when it closes.
pub fn generate(
    spec: &LoadSpec,
    progress: &Progress,
    stop: &AtomicBool,
    probe: Option<&WindowProbe>,
) -> Result<LoadOutcome> {
    let threads = spec.threads.clamp(1, spec.connections);
    let start_line = worker::StartLine::new(threads, spec.warmup, spec.duration, spec.start_at);
    let (k, n, t) = (u64::from(spec.slice.k), u64::from(spec.slice.n), threads as u64);
    let plans: Vec<worker::ThreadPlan> = (0..threads)
        .map(|index| worker::ThreadPlan {
            index,
            // Connection c of generator k draws its requests from stream k·2³² + c: generators that
            // share a schedule do not send each other's clients.
            conns: (index..spec.connections)
                .step_by(threads)
                .map(|c| (c % spec.targets.len(), u64::from(spec.slice.k) << 32 | c as u64))
                .collect(),
            targets: spec.targets.clone(),
            workload: spec.workload.clone(),
            rate: match &spec.scenario {
                Some(s) => Some(s.profile.clone()),
                None => spec.load.offered_rps().map(RateProfile::fixed),
            },
            // Slot j of the whole schedule goes to generator j mod n, then to thread (j / n) mod t.
            part: k + n * index as u64,
            parts: n * t,
            arrival: spec.arrival,
            pipeline: spec.pipeline.max(1),
            timeout: spec.timeout,
            seed: spec.seed,
            nice: spec.nice,
            show_errors: spec.show_errors,
            steps: spec.scenario.as_ref().map(|s| s.steps.clone()),
            sources: spec.sources.clone(),
        })
        .collect();
    if let ([plan], None) = (plans.as_slice(), probe) {
        // One generator thread and nothing to watch: the calling thread is the generator. In a
        // process that never started a second thread, glibc skips its cancellation bookkeeping
        // around every system call: ~120 of the generator's ~800 instructions per echo round trip
        // (callgrind), in a loop whose other work is those system calls.
        let report = worker::run(plan, &start_line, progress, stop)?;
        let started_at = start_line.window().map_or_else(chrono::Utc::now, |w| w.started_at);
        return Ok(merge(spec, vec![report], started_at));
    }
    let finished = AtomicBool::new(false);
    let reports = std::thread::scope(|scope| {
        if let Some(probe) = probe {
            scope.spawn(|| watch_window(&start_line, probe, &[stop, &finished]));
        }
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| {
                std::thread::Builder::new()
                    .name(format!("load-{}", plan.index))
                    .spawn_scoped(scope, || worker::run(plan, &start_line, progress, stop))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let reports = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a generator thread panicked"))?.map_err(anyhow::Error::from))
            .collect::<Result<Vec<_>>>();
        finished.store(true, Relaxed);
        reports
    })?;
    let started_at = start_line.window().map_or_else(chrono::Utc::now, |w| w.started_at);
    Ok(merge(spec, reports, started_at))
}

/// Reads `probe` when the window opens and when it closes, from a thread of its own so that no
/// generator thread is held up. Gives up as soon as any of `over` is set (the load ended early).
fn watch_window(start_line: &worker::StartLine, probe: &WindowProbe, over: &[&AtomicBool]) {
    let is_over = || over.iter().any(|f| f.load(Relaxed));
    let window = loop {
        if let Some(w) = start_line.window() {
            break w;
        }
        if is_over() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    type Read = fn(&WindowProbe);
    let edges: [(clock::Nanos, Read); 2] = [(window.measure_start, WindowProbe::start), (window.end, WindowProbe::end)];
    for (at, read) in edges {
        loop {
            let left = Duration::from_nanos(at.saturating_sub(clock::now()));
            if left.is_zero() {
                break;
            }
            if is_over() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
        read(probe);
    }
}

fn merge(
    spec: &LoadSpec,
    reports: Vec<worker::ThreadReport>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> LoadOutcome {
    let mut latency: Vec<Histogram<u64>> = KINDS.iter().map(|_| herd_core::stats::new_histogram()).collect();
    let mut errors = [0u64; Failure::ALL.len()];
    let mut warmup_errors = 0;
    let mut completed = 0;
    let mut timeline: Vec<worker::Second> = Vec::new();
    let [mut own, mut socket_wait, mut connect] = std::array::from_fn(|_| herd_core::stats::new_histogram());
    let mut fine: Option<worker::StepReport> = None;
    for mut r in reports {
        match (&mut fine, r.fine.take()) {
            (None, f) => fine = f,
            (Some(into), Some(from)) => {
                for (a, b) in into.steps.iter_mut().zip(&from.steps) {
                    a.add(b);
                }
                into.conns.extend(from.conns);
                for (a, b) in into.completed_by_target.iter_mut().zip(from.completed_by_target) {
                    *a += b;
                }
            }
            (Some(_), None) => {}
        }
        let _ = own.add(&r.own_lag);
        let _ = socket_wait.add(&r.socket_wait);
        let _ = connect.add(&r.connect);
        for (into, from) in latency.iter_mut().zip(&r.latency) {
            let _ = into.add(from);
        }
        for (into, from) in errors.iter_mut().zip(r.errors) {
            *into += from;
        }
        completed += r.completed_in_window;
        warmup_errors += r.warmup_errors;
        if timeline.is_empty() {
            timeline = r.timeline;
        } else {
            for (into, from) in timeline.iter_mut().zip(r.timeline) {
                into.completed += from.completed;
                into.errors += from.errors;
                let _ = into.latency.add(&from.latency);
            }
        }
    }
    let mut all = herd_core::stats::new_histogram();
    let mut commands = BTreeMap::new();
    for (kind, h) in KINDS.iter().zip(&latency) {
        if !h.is_empty() {
            let _ = all.add(h);
            commands.insert(kind.name().to_owned(), Latency::from_histogram(h));
        }
    }
    let error_total = errors.iter().sum();
    let summary = Summary {
        offered_rps: spec.offered_rps(),
        achieved_rps: completed as f64 / spec.duration.as_secs_f64(),
        // The histograms also hold the timeouts (at no less than the timeout); they are errors.
        requests: all.len().saturating_sub(errors[Failure::Timeout.index()]),
        errors: error_total,
        warmup_errors,
        latency_us: Percentiles::of(&all),
    };
    let send_lag = spec.offered_rps().map(|_| SendLag {
        fell_behind: own.value_at_quantile(0.99) > herd_record::result::FELL_BEHIND_P99_US,
        own_us: Latency::from_histogram(&own),
        socket_wait_us: Latency::from_histogram(&socket_wait),
    });
    LoadOutcome {
        started_at,
        summary,
        send_lag,
        connect_us: (!connect.is_empty()).then(|| Latency::from_histogram(&connect)),
        fine,
        commands,
        errors: Failure::ALL.iter().map(|f| (f.name().to_owned(), errors[f.index()])).collect(),
        timeline: timeline
            .into_iter()
            .enumerate()
            .map(|(i, s)| TimelinePoint {
                second: i as u32,
                completed: s.completed,
                errors: s.errors,
                p99_us: s.latency.value_at_quantile(0.99),
            })
            .collect(),
    }
}

/// `harness load`: drive any address (a herd server, or the reference echo server).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server address (IP:PORT or HOST:PORT, any address); repeat to spread connections over several.
    #[arg(long = "addr", required = true, value_parser = herd_record::units::parse_addr)]
    pub addrs: Vec<SocketAddr>,
    /// Offered load: requests/s such as 10k or 1.5M (open loop), or `max` (closed loop).
    #[arg(long, default_value = "10k")]
    pub load: Load,
    /// Workload name (a file in workloads/) or path.
    #[arg(long, default_value = "herd-mixed")]
    pub workload: String,
    /// Override the workload's mode (`echo` switches to the echo workload).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Also measure this process (the server under load, e.g. the C reference) over the measured
    /// window only: its CPU and context switches per reply, printed as a `probe` line. Repeatable.
    #[arg(long = "probe-pid")]
    pub probe_pids: Vec<i32>,
    /// Also write a result file (histograms included), e.g. for `harness merge` of several
    /// generators' runs.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// A pass/fail criterion, as k6 writes them (repeatable): `p99<10ms`, `errors==0`,
    /// `throughput>=9.5k` (p50, p99, p999, throughput, errors: what a generator measures). A breach
    /// exits with status 99.
    #[arg(long = "threshold", value_name = "METRIC<VALUE")]
    pub thresholds: Vec<herd_report::thresholds::Threshold>,
    #[command(flatten)]
    pub common: GeneratorArgs,
}

/// `harness load`: drives `--addr`, then prints the summary line and the errors by kind.
pub fn run(args: &LoadArgs) -> Result<()> {
    herd_report::thresholds::only_of_the_generator(&args.thresholds).map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.output {
        herd_record::result::RunResult::check_writable(path, "--output")?;
    }
    let workload = workload_for(&args.workload, args.mode)?;
    let targets = args.addrs.iter().map(|a| Target { addr: *a, name: None }).collect();
    let mut spec = args.common.spec(targets, workload, args.load)?;
    spec.prepare()?;
    announce_clients(&spec)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, std::sync::Arc::clone(&stop))?;
    let progress = Progress::default();
    let probe = (!args.probe_pids.is_empty()).then(|| WindowProbe::new(args.probe_pids.clone()));
    let outcome = generate(&spec, &progress, &stop, probe.as_ref())?;
    let result = load_result(args, &spec, &outcome, stop.load(Relaxed));
    if let Some(path) = &args.output {
        result.write(path)?;
    }
    let s = &outcome.summary;
    println!("{} ({} connections)", s.line(), spec.connections);
    for (k, n) in outcome.errors.iter().filter(|(_, n)| **n > 0) {
        println!("  {k}: {n}");
    }
    if let Some(lag) = &outcome.send_lag {
        println!("{}", herd_report::summary::send_lag_line(lag));
    }
    for (pid, window) in args.probe_pids.iter().zip(probe.map(|p| p.deltas()).unwrap_or_default()) {
        let Some(w) = window else { bail!("could not read process {pid} at both edges of the window") };
        let per = |v: f64| v / s.requests.max(1) as f64;
        println!(
            "probe pid={pid} cpu_us_per_reply={:.3} user_s={:.2} sys_s={:.2} voluntary_switches_per_reply={:.3} involuntary_switches_per_reply={:.3}",
            per(w.cpu_s() * 1e6),
            w.cpu_user_s,
            w.cpu_sys_s,
            per(w.voluntary_switches as f64),
            per(w.involuntary_switches as f64)
        );
    }
    herd_report::thresholds::report(&herd_report::thresholds::judge(&args.thresholds, &result))
}

/// A result's parameters as the load defines them; what the servers ran with (threads, pinning,
/// servers, topology, limits, round, herd keys) is left empty for the caller to fill in.
pub fn parameters(spec: &LoadSpec) -> herd_record::result::Parameters {
    herd_record::result::Parameters {
        mode: spec.workload.mode,
        load: spec.load.to_string(),
        arrival: match spec.load {
            Load::Max => "closed".into(),
            _ => format!("{:?}", spec.arrival).to_lowercase(),
        },
        connections: spec.connections,
        duration_s: spec.duration.as_secs_f64(),
        warmup_s: spec.warmup.as_secs_f64(),
        timeout_s: spec.timeout.as_secs_f64(),
        seed: spec.seed,
        threads: None,
        generator_threads: spec.threads,
        generator_nice: spec.nice,
        pipeline: spec.pipeline,
        pinning: None,
        servers: Vec::new(),
        topology_links: Vec::new(),
        limits: None,
        round: None,
        driver: None,
        herd_auth: None,
        slice: (spec.slice != Slice::WHOLE).then(|| spec.slice.to_string()),
        start_at: spec.start_at.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
        wan: None,
        hosts: None,
        open_files_limit: spec.open_files,
        source_addrs: (!spec.sources.is_empty()).then(|| spec.sources.iter().map(ToString::to_string).collect()),
    }
}

/// The result file of a `harness load`: what the generator measured; of the server, only its
/// addresses (`implementation` is `external`, `servers` empty).
fn load_result(
    args: &LoadArgs,
    spec: &LoadSpec,
    outcome: &LoadOutcome,
    interrupted: bool,
) -> herd_record::result::RunResult {
    use herd_record::result::{Parameters, RunResult, SCHEMA_VERSION};
    RunResult {
        schema_version: SCHEMA_VERSION,
        tool: crate::probe::machine::tool(),
        started_at: RunResult::started_at_text(outcome.started_at),
        machine: crate::probe::machine::machine(),
        implementation: herd_record::catalogue::ImplMeta::external(spec.workload.mode),
        parameters: Parameters { servers: args.addrs.iter().map(SocketAddr::to_string).collect(), ..parameters(spec) },
        workload: spec.workload.clone(),
        summary: outcome.summary.clone(),
        commands: outcome.commands.clone(),
        errors: outcome.errors.clone(),
        timeline: outcome.timeline.clone(),
        servers: Vec::new(),
        places: None,
        generator_window: None,
        server_syscalls: None,
        propagation_us: None,
        send_lag: outcome.send_lag.clone(),
        connect_us: outcome.connect_us.clone(),
        interrupted,
        merged: None,
        scenario: None,
        wan_relay: None,
    }
}

/// Generator flags shared by `run` and `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct GeneratorArgs {
    /// Connections (default: the workload's).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured window.
    #[arg(long, default_value = "10s", value_parser = herd_record::units::parse_duration)]
    pub duration: Duration,
    /// Warm-up before the window, excluded from the results.
    #[arg(long, default_value = "2s", value_parser = herd_record::units::parse_duration)]
    pub warmup: Duration,
    /// A request unanswered this long counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = herd_record::units::parse_duration)]
    pub timeout: Duration,
    /// Spacing of intended send times in an open loop.
    #[arg(long, value_enum, default_value_t = Arrival::Uniform)]
    pub arrival: Arrival,
    /// Requests in flight per connection with --load max.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    pub gen_threads: usize,
    /// Nice value for the generator threads, -20 to 19 (below 0 needs root). On a machine the
    /// servers saturate, a generator that waits for a CPU when its timer fires sends late and
    /// reports its own lateness as the servers' latency (`send_lag` says how much); a negative
    /// value lets it preempt them when it wakes.
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub gen_nice: Option<i32>,
    /// Seed for request contents and Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the first N rejected replies (with what was expected) to stderr, for debugging.
    #[arg(long, default_value_t = 0)]
    pub show_errors: usize,
    /// This generator's share when N generators drive one open-loop --load together: K/N sends
    /// the schedule's requests K, K+N, K+2N … (uniform arrivals interleave exactly; Poisson ones
    /// are independent processes at rate/N). Merge their results with `harness merge`.
    #[arg(long, default_value = "0/1")]
    pub slice: Slice,
    /// Start the load (warm-up first) at this wall-clock time, RFC 3339 (2026-12-02T14:00:00Z) or
    /// Unix seconds, so that generators on several machines share one window; clocks are assumed
    /// synchronised (NTP).
    #[arg(long, value_parser = parse_wall_time)]
    pub start_at: Option<std::time::SystemTime>,
    /// Connect from these addresses of this machine, in turn (comma list). Each (source, server)
    /// pair has the kernel's ephemeral ports (net.ipv4.ip_local_port_range); past them a load needs
    /// several sources. Toward loopback servers they are picked when needed (127.0.0.1, 127.0.0.2 …).
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    pub source_addrs: Vec<std::net::IpAddr>,
}

/// `--start-at`: RFC 3339, or seconds since the Unix epoch.
fn parse_wall_time(s: &str) -> std::result::Result<std::time::SystemTime, String> {
    let hint = "expected a wall-clock time such as 2026-12-02T14:00:00Z or Unix seconds such as 1796220000.5";
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.into());
    }
    let secs: f64 = s.trim().parse().map_err(|_| format!("`{s}`: {hint}"))?;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("`{s}`: {hint}"));
    }
    Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// Loads workload `name`, with `mode = echo` switching to the echo workload.
pub fn workload_for(name: &str, mode: Option<Mode>) -> Result<Workload> {
    let w = Workload::load(name)?;
    match mode {
        Some(mode) if mode != w.mode => match mode {
            Mode::Echo => Workload::load("echo"),
            Mode::Herd => bail!("workload `{}` is an echo workload; pick a herd workload with --workload", w.name),
        },
        _ => Ok(w),
    }
}

impl GeneratorArgs {
    pub fn spec(&self, targets: Vec<Target>, workload: Workload, load: Load) -> Result<LoadSpec> {
        if self.duration.is_zero() {
            bail!("--duration must be above 0, e.g. --duration 10s");
        }
        if let Some(0) = self.connections {
            bail!("--connections must be at least 1");
        }
        if self.gen_threads == 0 {
            bail!("--gen-threads must be at least 1");
        }
        if self.slice != Slice::WHOLE && load == Load::Max {
            bail!("--slice shares an open-loop schedule; give a rate, e.g. --load 10k --slice {}", self.slice);
        }
        Ok(LoadSpec {
            targets,
            connections: self.connections.unwrap_or(workload.connections),
            load,
            arrival: self.arrival,
            pipeline: self.pipeline,
            warmup: self.warmup,
            duration: self.duration,
            timeout: self.timeout,
            threads: self.gen_threads,
            nice: self.gen_nice,
            seed: self.seed,
            workload,
            show_errors: self.show_errors,
            slice: self.slice,
            start_at: self.start_at,
            scenario: None,
            sources: self.source_addrs.clone(),
            open_files: None,
        })
    }
}

/// A live progress line: indicatif on a terminal, a plain line a second otherwise.
pub fn show_progress(spec: &LoadSpec, progress: &Progress, done: &AtomicBool) {
    use std::io::IsTerminal;
    let total = spec.warmup + spec.duration;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last = (0u64, Instant::now());
    let mut next_line = Instant::now() + Duration::from_secs(1);
    while !done.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let completed = progress.completed.load(Relaxed);
        let errors = progress.errors.load(Relaxed);
        let elapsed = now - started;
        let phase = if elapsed < spec.warmup {
            "warm-up"
        } else if elapsed < total {
            "measuring"
        } else {
            "draining"
        };
        let msg = |rate: f64| format!("{phase}: {completed} replies, {rate:.0}/s, {errors} errors");
        if let Some(bar) = &bar {
            let rate = (completed - last.0) as f64 / (now - last.1).as_secs_f64().max(1e-3);
            bar.set_position(elapsed.as_millis().min(total.as_millis()) as u64);
            bar.set_message(msg(rate));
            if now >= next_line {
                last = (completed, now);
                next_line = now + Duration::from_secs(1);
            }
        } else if now >= next_line {
            let rate = (completed - last.0) as f64 / (now - last.1).as_secs_f64();
            eprintln!("[{:>5.1}s] {}", elapsed.as_secs_f64(), msg(rate));
            last = (completed, now);
            next_line = now + Duration::from_secs(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts and reads but never answers: every request times out.
    fn silent_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || std::io::copy(&mut &stream, &mut std::io::sink()));
            }
        });
        addr
    }

    /// An echo server that answers one `size`-byte message every `every`, through a small receive
    /// buffer: far below what the generator offers, so the generator's sockets fill.
    fn slow_echo_server(size: usize, every: Duration) -> SocketAddr {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let small: libc::c_int = 4096;
        // SAFETY: a valid socket, an int option of the right size.
        let set = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const small).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_RCVBUF");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut message = vec![0; size];
                    while std::io::Read::read_exact(&mut &stream, &mut message).is_ok() {
                        std::thread::sleep(every);
                        if (&stream).write_all(&message).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn echo_spec(addr: SocketAddr, rate: f64, duration: Duration, timeout: Duration) -> LoadSpec {
        LoadSpec {
            targets: vec![Target { addr, name: None }],
            connections: 1,
            load: Load::Rate(rate),
            arrival: Arrival::Uniform,
            pipeline: 1,
            warmup: Duration::ZERO,
            duration,
            timeout,
            threads: 1,
            nice: None,
            seed: 1,
            workload: Workload::load("echo").expect("the echo workload"),
            show_errors: 0,
            slice: Slice::WHOLE,
            start_at: None,
            scenario: None,
            sources: Vec::new(),
            open_files: None,
        }
    }

    #[test]
    fn a_spec_survives_its_own_command_line() {
        // What `run --hosts` hands a generator on another host must be the load it means.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut spec =
            echo_spec(addr(7001), 12_345.5, Duration::from_nanos(1_500_000_001), Duration::from_micros(2_500));
        spec.targets.push(Target { addr: addr(7002), name: None });
        spec.connections = 7;
        spec.arrival = Arrival::Poisson;
        spec.pipeline = 2;
        spec.warmup = Duration::from_nanos(1_234_567);
        spec.threads = 3;
        spec.nice = Some(-5);
        spec.seed = 99;
        spec.slice = Slice { k: 1, n: 3 };
        spec.start_at = Some(std::time::UNIX_EPOCH + Duration::from_nanos(1_796_220_000_123_456_789));
        let args = spec.to_load_args(std::path::Path::new("/tmp/echo.toml")).expect("a command line");
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("load".into()).chain(args)).expect("parses");
        assert_eq!(cli.load.workload, "/tmp/echo.toml");
        assert_eq!(cli.load.addrs, [addr(7001), addr(7002)]);
        let targets = cli.load.addrs.iter().map(|&addr| Target { addr, name: None }).collect();
        let back = cli.load.common.spec(targets, spec.workload.clone(), cli.load.load).expect("a spec");
        assert_eq!(
            format!("{back:?}"),
            format!("{spec:?}"),
            "every field of the spec comes back from its command line"
        );

        spec.scenario = Some(ScenarioLoad {
            profile: RateProfile::fixed(1.0),
            steps: StepPlan { step: 1, phase_ends: Vec::new() },
            mean_rps: 1.0,
        });
        assert!(spec.to_load_args(std::path::Path::new("/tmp/echo.toml")).is_err(), "a scenario has no flags");
    }

    #[test]
    fn a_server_that_cannot_keep_up_shows_as_socket_wait_not_as_generator_lateness() {
        // 32 KiB messages: 400 of them are more than the kernel's socket buffers hold (4 MiB at most).
        let server = slow_echo_server(32 * 1024, Duration::from_millis(4));
        let mut spec = echo_spec(server, 1000.0, Duration::from_millis(400), Duration::from_secs(10));
        spec.workload.message_bytes = 32 * 1024;
        let outcome = generate(&spec, &Progress::default(), &AtomicBool::new(false), None).expect("runs");
        assert_eq!(outcome.summary.errors, 0, "{:?}", outcome.errors);
        let lag = outcome.send_lag.expect("an open loop records its send lag");
        let (own, wait) = (lag.own_us.percentiles_us, lag.socket_wait_us.percentiles_us);
        assert_eq!(lag.own_us.count, 400, "every request intended in the window");
        assert_eq!(lag.socket_wait_us.count, 400, "every request's bytes left, late or not");
        // The server takes 250 messages/s of the 1,000/s offered: by the window's end, requests
        // wait hundreds of milliseconds for the socket. The generator itself was on time.
        assert!(wait.p99 >= 100_000, "socket wait p99 {} µs: the back-pressure was not seen", wait.p99);
        assert!(own.p99 * 10 < wait.p99, "own lateness p99 {} µs against socket wait {} µs", own.p99, wait.p99);
        assert_eq!(lag.fell_behind, own.p99 > herd_record::result::FELL_BEHIND_P99_US);
        let connects = outcome.connect_us.expect("the connect is timed");
        assert_eq!(connects.count, 1);
        // The timeline's second carries the latency of the replies that came in it (taken from
        // the command histograms once a second): by the window's end, ~300 ms.
        let [second] = outcome.timeline.as_slice() else { panic!("one second: {:?}", outcome.timeline) };
        assert_eq!(second.completed as f64, (outcome.summary.achieved_rps * 0.4).round());
        let latency = outcome.summary.latency_us;
        assert!(second.p99_us >= 100_000 && second.p99_us <= latency.max, "{} µs against {latency:?}", second.p99_us);
    }

    #[test]
    fn timed_out_requests_are_in_the_latency_at_no_less_than_the_timeout() {
        let timeout = Duration::from_millis(200);
        let mut spec = echo_spec(silent_server(), 40.0, Duration::from_secs(1), timeout);
        spec.connections = 2;
        let outcome = generate(&spec, &Progress::default(), &AtomicBool::new(false), None).expect("runs");
        let timeouts = outcome.errors.get("timeout").copied().unwrap_or(0);
        assert!(timeouts > 0, "nothing timed out: {:?}", outcome.errors);
        assert_eq!(outcome.summary.requests, 0, "the silent server answered nothing");
        let echo = &outcome.commands["echo"];
        assert_eq!(echo.count, timeouts, "every timeout, and only they, in the histogram");
        assert_eq!(outcome.summary.errors, outcome.errors.values().sum::<u64>());
        assert!(echo.percentiles_us.p50 >= 200_000, "p50 {} µs is below the 200 ms timeout", echo.percentiles_us.p50);
        assert!(outcome.summary.latency_us.p50 >= 200_000);
        assert!(
            outcome.timeline.iter().any(|s| s.p99_us >= 200_000),
            "no second shows a timeout: {:?}",
            outcome.timeline
        );
    }
}
