//! `harness gate`: runs what the per-style CI gate judges — a style's instructions and allocations
//! per request under callgrind (`gate instructions`), the floor's CPU per echo (`gate floor`) — and
//! hands gate runs to herd-report's judge (`gate record`, `gate check`), which holds the metrics,
//! the bands and the verdicts (see `herd_report::gate`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use herd_record::result::{Pinning, RunResult, SCHEMA_VERSION, ServerResult};
use herd_record::units::Load;
use herd_report::collection;
use herd_report::gate::{
    Baseline, FLOOR, INSTRUCTIONS_FORMAT, InstructionCount, Outcome, callgrind_counts, check, confirm,
    floor_s_per_echo, load_run, print_rows, record,
};

use crate::load::{GeneratorArgs, Progress, Target};
use crate::probe::counters::{SyscallCount, WindowProbe};
use crate::probe::procs::Children;
use crate::server::serve::ServeArgs;

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
        /// The narrowest band of the counts perf takes, relative (callgrind's have their own:
        /// 2 % for instructions, 1 % for allocations).
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
        /// Check only these styles (comma-separated), for a gate run of some styles only (the
        /// mutation suite's); by default every style of the baseline must be in the run.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Print the styles a gate run measures (`run --impl all`'s), comma-separated.
    Styles,
    /// Count one server's instructions per request under callgrind: the style's Alford, linked to
    /// a Ball, at two light rates; the difference over the difference in requests (what both runs
    /// share, start-up, the clients' announcement, timers over the same duration, cancels out).
    Instructions(InstructionArgs),
    /// Measure the calibration a gate run divides its CPU by: the floor echo server (a program
    /// taking its port as its one argument: scripts/floor/echo_epoll.c) at a fixed echo rate, its
    /// CPU counted by perf over the window, written as a result file.
    Floor(FloorArgs),
}

/// `harness gate instructions`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstructionArgs {
    /// The style.
    #[arg(long = "impl")]
    pub style: String,
    /// The two offered loads (requests/s, open loop).
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [20, 100])]
    pub rates: Vec<u32>,
    /// Each load's duration.
    #[arg(long, default_value = "3s", value_parser = herd_record::units::parse_duration)]
    pub duration: std::time::Duration,
    /// The servers on the CPUs `run --pin` gives them, the generator on the others.
    #[arg(long)]
    pub pin: bool,
    /// The file to write (`<style>.instructions` in a gate run's folder).
    #[arg(long)]
    pub output: PathBuf,
}

/// `harness gate floor`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// The floor server's program (scripts/gate.sh builds target/floor/echo_epoll).
    #[arg(long)]
    pub exe: PathBuf,
    /// Offered echoes per second (open loop), or `max`: a closed loop (what scripts/gate.sh runs,
    /// on one connection: a wake, a read, a write and a wait per echo).
    #[arg(long, default_value = "max")]
    pub load: Load,
    /// The floor on the CPUs `run --pin` gives the servers, the generator on the others.
    #[arg(long)]
    pub pin: bool,
    /// The result file to write.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub generator: GeneratorArgs,
}

pub fn run(args: &GateArgs) -> Result<()> {
    match &args.command {
        GateCommand::Record { output, k, floor, runs } => {
            let mut medians = Vec::new();
            let mut commit = None;
            for dir in runs {
                let loaded = collection::load(std::slice::from_ref(dir))?;
                commit = commit.or_else(|| loaded.first().and_then(|l| l.result.tool.git_commit.clone()));
                medians.push(load_run(std::slice::from_ref(dir)).with_context(|| format!("in {}", dir.display()))?);
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
        GateCommand::Check { baseline, current, confirm: confirming, breaches_to, only } => {
            let text = std::fs::read_to_string(baseline).with_context(|| format!("reading {}", baseline.display()))?;
            let mut baseline: Baseline = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a gate baseline", baseline.display()))?;
            if let Some(unknown) = only.iter().find(|s| !baseline.styles.contains_key(*s)) {
                bail!("--only {unknown}: the baseline has no such style");
            }
            if !only.is_empty() {
                baseline.styles.retain(|style, _| only.contains(style));
            }
            let run = load_run(current)?;
            let mut rows = check(&baseline, &run)?;
            if let Some(path) = breaches_to {
                let mut styles: Vec<&str> =
                    rows.iter().filter(|r| r.verdict == Outcome::Regressed).map(|r| r.style.as_str()).collect();
                styles.dedup();
                let text: String = styles.iter().map(|s| format!("{s}\n")).collect();
                std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            }
            let confirmations = confirming
                .iter()
                .map(|dir| load_run(std::slice::from_ref(dir)).with_context(|| format!("in {}", dir.display())))
                .collect::<Result<Vec<_>>>()?;
            confirm(&mut rows, &run, &confirmations)?;
            print_rows(&rows);
            let count = |v: Outcome| rows.iter().filter(|r| r.verdict == v).count();
            if count(Outcome::Improved) > 0 {
                println!("improved: if that was meant, refresh the baseline with scripts/gate.sh --record");
            }
            if count(Outcome::NotReproduced) > 0 {
                println!("gate: {} breach(es) not reproduced by the confirming runs", count(Outcome::NotReproduced));
            }
            match count(Outcome::Regressed) {
                0 => println!("gate: {} counts within their bands", rows.len() - count(Outcome::NotReproduced)),
                n if confirming.is_empty() => {
                    bail!(
                        "gate: {n} count(s) per request breached their band (a regression once confirming runs repeat it)"
                    )
                }
                n => bail!("gate: {n} count(s) per request regressed past their band, in every confirming run too"),
            }
            Ok(())
        }
        GateCommand::Styles => {
            let names: Vec<String> = herd_record::catalogue::styles()?.into_iter().map(|m| m.name).collect();
            println!("{}", names.join(","));
            Ok(())
        }
        GateCommand::Floor(args) => floor(args),
        GateCommand::Instructions(args) => instructions(args),
    }
}

/// `harness gate floor`: the floor server at a fixed echo rate, its CPU and system calls counted
/// by perf over the window exactly as `run --syscalls` counts a style's, written as a result file
/// whose one server is the floor.
fn floor(args: &FloorArgs) -> Result<()> {
    let pinning = args.pin.then(crate::run::split_cpus).transpose()?;
    // A free port, as the kernel picks it; the floor binds it a moment later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut children = Children::default();
    let mut cmd = std::process::Command::new(&args.exe);
    cmd.arg(port.to_string());
    let pid = children.spawn(FLOOR, cmd, pinning.as_ref().map(|p| p.server_cpus.clone()))?;
    if let Some(p) = &pinning {
        crate::probe::procs::pin_current_thread(&p.generator_cpus)?;
    }
    // Up when it echoes a line; what answers on the port must be the floor (another process could
    // have taken the port between our bind and its own).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !echoes(addr) || !children.is_running(FLOOR) {
        if std::time::Instant::now() > deadline || !children.is_running(FLOOR) {
            bail!("{} did not echo on {addr}", args.exe.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let workload = herd_record::workload::Workload::load("echo")?;
    let spec = args.generator.spec(vec![Target { addr, name: None }], workload, args.load)?;
    let perf_dir = args.output.with_extension("perf");
    let count = SyscallCount::start(&[pid], &perf_dir).context("the floor's CPU is counted by perf")?;
    let probe = WindowProbe::new(vec![pid, i32::try_from(std::process::id())?]).with_syscalls(count);
    let outcome =
        crate::load::generate(&spec, &Progress::default(), &std::sync::atomic::AtomicBool::new(false), Some(&probe))?;
    let mut deltas = probe.deltas();
    let generator_window = deltas.pop().flatten();
    let window = deltas.pop().flatten();
    let server_syscalls = probe.syscalls();
    let _ = std::fs::remove_dir_all(&perf_dir);
    let resources = children
        .stop(std::time::Duration::from_secs(1))
        .into_iter()
        .find_map(|(name, r)| (name == FLOOR).then_some(r))
        .context("the floor was not reaped")?;
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        tool: crate::probe::machine::tool(),
        started_at: RunResult::started_at_text(outcome.started_at),
        machine: crate::probe::machine::machine(),
        implementation: herd_record::catalogue::ImplMeta {
            name: FLOOR.into(),
            style: "the C floor: one thread, epoll, read and write (scripts/floor/echo_epoll.c)".into(),
            ..herd_record::catalogue::ImplMeta::external(herd_record::workload::Mode::Echo)
        },
        parameters: herd_record::result::Parameters {
            servers: vec![addr.to_string()],
            pinning,
            ..crate::load::parameters(&spec)
        },
        workload: spec.workload.clone(),
        summary: outcome.summary,
        commands: outcome.commands,
        errors: outcome.errors,
        timeline: outcome.timeline,
        servers: vec![ServerResult { name: FLOOR.into(), resources, counters: None, window }],
        places: None,
        generator_window,
        server_syscalls,
        propagation_us: None,
        send_lag: outcome.send_lag,
        connect_us: outcome.connect_us,
        interrupted: false,
        merged: None,
        scenario: None,
        wan_relay: None,
    };
    result.write(&args.output)?;
    if result.summary.requests == 0 {
        bail!("the floor answered no echo in the window ({})", args.output.display());
    }
    let per_echo = floor_s_per_echo(&result).context("perf counted no CPU time for the floor")?;
    println!(
        "floor: {} echoes/s, {:.3} µs CPU per echo, {} errors ({})",
        result.summary.achieved_rps.round(),
        per_echo * 1e6,
        result.summary.errors,
        args.output.display()
    );
    if result.summary.errors > 0 {
        bail!("the floor failed {} echoes", result.summary.errors);
    }
    Ok(())
}

/// `harness gate instructions`: the style's instructions per request, from two runs at different
/// rates of the same duration.
fn instructions(args: &InstructionArgs) -> Result<()> {
    let [low, high] = args.rates[..] else { bail!("--rates takes two loads, e.g. 20,100") };
    let pinning = args.pin.then(crate::run::split_cpus).transpose()?;
    if let Some(p) = &pinning {
        crate::probe::procs::pin_current_thread(&p.generator_cpus)?;
    }
    let dir = args.output.with_extension("d");
    let mut measured = Vec::new();
    for rate in [low, high] {
        let measure = || count_instructions(args, rate, &dir, pinning.as_ref());
        // A server that valgrind cannot stop (it ignores SIGTERM while blocked in a call valgrind
        // cannot interrupt) leaves no count; measured once more before giving up.
        measured.push(measure().or_else(|e| {
            eprintln!("gate instructions: {} at {rate}/s: {e:#}; measuring again", args.style);
            measure()
        })?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let [(r1, i1, a1), (r2, i2, a2)] = measured[..] else { unreachable!("two rates measured") };
    if r2 <= r1 {
        bail!("{} answered {r2} requests at {high}/s and {r1} at {low}/s: no difference to divide by", args.style);
    }
    let count = InstructionCount {
        format: INSTRUCTIONS_FORMAT.into(),
        style: args.style.clone(),
        experiment: format!("herd-mixed {low},{high} {:?}", args.duration),
        requests: [r1, r2],
        instructions: [i1, i2],
        per_request: (i2 as f64 - i1 as f64) / (r2 - r1) as f64,
        allocations: Some([a1, a2]),
        allocations_per_request: Some((a2 as f64 - a1 as f64) / (r2 - r1) as f64),
    };
    std::fs::write(&args.output, serde_json::to_string_pretty(&count)? + "\n")
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{}: {:.0} instructions and {:.2} allocations per request ({i1} and {a1} for {r1} requests, {i2} and {a2} for {r2}; {})",
        args.style,
        count.per_request,
        (a2 as f64 - a1 as f64) / (r2 - r1) as f64,
        args.output.display()
    );
    Ok(())
}

/// One run: places, Ball, and Alford under callgrind, linked; the clients announced, then `rate`
/// requests/s to Alford for the duration; every process stopped. Returns the requests answered
/// and Alford's instructions and allocations from start to exit.
fn count_instructions(
    args: &InstructionArgs,
    rate: u32,
    dir: &std::path::Path,
    pinning: Option<&Pinning>,
) -> Result<(u64, u64, u64)> {
    use std::time::{Duration, Instant};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let port = || -> Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (places, alford, ball) = (port()?, port()?, port()?);
    let key = dir.join("herd.key");
    crate::server::serve::write_key(&key)?;
    let exe = std::env::current_exe()?;
    let cpus = pinning.map(|p| p.server_cpus.clone());
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let serve = |name: &str, listen: u16, peer: (&str, u16)| {
        let args = ServeArgs {
            name: name.to_owned(),
            listen: loopback(listen),
            peers: vec![(peer.0.to_owned(), loopback(peer.1))],
            places: Some(loopback(places)),
            herd_key: Some(key.clone()),
            log: Some(dir.join(format!("{name}.log"))),
            ..ServeArgs::defaults(&args.style)
        };
        std::iter::once("serve".into()).chain(args.to_args()).collect::<Vec<std::ffi::OsString>>()
    };
    let mut children = Children::default();
    let quiet = |mut cmd: std::process::Command, name: &str| -> Result<std::process::Command> {
        let out = std::fs::File::create(dir.join(format!("{name}.out")))?;
        cmd.stdout(out.try_clone()?).stderr(out);
        Ok(cmd)
    };
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["places", "--listen", &format!("127.0.0.1:{places}"), "--latency", "0"]);
    children.spawn("places", quiet(cmd, "places")?, cpus.clone())?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(serve("Ball", ball, ("Alford", alford)));
    children.spawn("Ball", quiet(cmd, "Ball")?, cpus.clone())?;
    let callgrind = dir.join("alford.callgrind");
    let mut cmd = std::process::Command::new("valgrind");
    cmd.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}", callgrind.display())).arg(&exe);
    cmd.args(serve("Alford", alford, ("Ball", ball)));
    children.spawn("Alford", quiet(cmd, "Alford")?, cpus)?;
    // Linked both ways: Alford's log says so (valgrind starts it in a second or two).
    let log = dir.join("Alford.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let up = |direction: &str| {
            text.lines()
                .any(|l| l.contains("\"event\":\"link_up\"") && l.contains(&format!("\"direction\":\"{direction}\"")))
        };
        if up("inbound") && up("outbound") {
            break;
        }
        if Instant::now() > deadline || !children.is_running("Alford") {
            bail!("Alford under callgrind did not link with Ball within 60 s (see {})", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    #[derive(clap::Parser)]
    struct Generator {
        #[command(flatten)]
        args: GeneratorArgs,
    }
    let secs = format!("{}ms", args.duration.as_millis());
    let generator = <Generator as clap::Parser>::try_parse_from([
        "generator",
        "--connections",
        "8",
        "--duration",
        &secs,
        "--warmup",
        "0s",
    ])?;
    let workload = herd_record::workload::Workload::load("herd-mixed")?;
    let target = Target { addr: std::net::SocketAddr::from(([127, 0, 0, 1], alford)), name: Some("Alford".into()) };
    let load: Load = rate.to_string().parse().map_err(anyhow::Error::msg)?;
    let spec = generator.args.spec(vec![target], workload, load)?;
    crate::load::announce_clients(&spec)?;
    let outcome = crate::load::generate(&spec, &Progress::default(), &std::sync::atomic::AtomicBool::new(false), None)?;
    let stopped = children.stop(Duration::from_secs(20));
    if outcome.summary.errors > 0 {
        bail!("{} of the requests failed (see {})", outcome.summary.errors, dir.display());
    }
    let exit = stopped.iter().find(|(name, _)| name == "Alford").map(|(_, r)| r.exit.clone()).unwrap_or_default();
    let text = std::fs::read_to_string(&callgrind)
        .with_context(|| format!("callgrind wrote no counts (Alford: {exit}; see {})", dir.display()))?;
    let (total, allocations) =
        callgrind_counts(&text).with_context(|| format!("{} holds no totals", callgrind.display()))?;
    Ok((outcome.summary.requests, total, allocations))
}

/// Whether a line sent to `addr` comes back within a second.
fn echoes(addr: std::net::SocketAddr) -> bool {
    use std::io::{BufRead, Write};
    let timeout = std::time::Duration::from_secs(1);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else { return false };
    let mut line = String::new();
    stream.set_read_timeout(Some(timeout)).is_ok()
        && stream.write_all(b"floor?\n").is_ok()
        && std::io::BufReader::new(&stream).read_line(&mut line).is_ok()
        && line == "floor?\n"
}
