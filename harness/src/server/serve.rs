//! `harness serve`: one herd (or echo) server of a chosen style, as a child process of `run`.
//!
//! On SIGTERM, SIGINT or SIGHUP (a terminal hanging up: the end of the `ssh -tt` session that a
//! hosts file's launcher started it in) it writes its counters to `--stats`, flushes its log and
//! exits: the style's own threads are not unwound, since the process ends anyway and no style
//! needs to know how to stop for the others to be measured fairly.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use herd_core::{Echo, Event, EventLog, EventSink, Herd, HerdConfig, HerdKey, ServeOptions, Service};

use crate::server::impls::{self, AnyService};
use crate::server::limits::LimitsArgs;
use crate::server::style::{Driver, StyleArgs};
use herd_record::result::ServerCounters;
use herd_record::units::Interval;
use herd_record::workload::Mode;

/// How often a server appends a sample (`--samples`) unless told otherwise: ten points a second
/// of a scenario's timeline.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Implementation (style) to run.
    #[arg(long = "impl")]
    pub implementation: String,
    /// This server's name in the herd.
    #[arg(long, default_value = "Alford")]
    pub name: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// A neighbour as NAME=ADDR; repeat for each link.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(String, SocketAddr)>,
    /// The places backend.
    #[arg(long)]
    pub places: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = Mode::Herd)]
    pub mode: Mode,
    /// The style's parallelism; see its README for the meaning and default.
    #[arg(long)]
    pub threads: Option<usize>,
    /// `--io-threads`, `--stack-kib`, `--driver`: the style's own knobs.
    #[command(flatten)]
    pub style: StyleArgs,
    /// Event log file (one JSON object a line).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Also log every input and output line.
    #[arg(long)]
    pub log_io: bool,
    /// Where to write counters at shutdown (JSON).
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Append a sample every `--sample-every` to this file: one JSON line with the monotonic
    /// clock, the resident memory and the dropped floods (what a scenario's timeline shows).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// How often `--samples` gets a line.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(SAMPLE_EVERY))]
    pub sample_every: Interval,
    /// Seconds a stored location lives.
    #[arg(long, default_value_t = herd_core::store::DEFAULT_TTL_SECS)]
    pub ttl: u64,
    /// The herd key file (hex, at least 32 digits; `harness keygen FILE` writes one). Every member
    /// of a herd is given the same file; only links that prove they hold it may deliver updates.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_herd")]
    pub herd_key: Option<PathBuf>,
    /// Run a herd server without a key: any connection may send `AT` lines, as in the CS131
    /// protocol (for protocol tests; anyone who reaches a port can then rewrite the herd).
    #[arg(long)]
    pub insecure_herd: bool,
    /// The policy layer's limits (`--max-line`, `--link-queue-bytes`, `--upstream-timeout`, …).
    #[command(flatten)]
    pub limits: LimitsArgs,
    /// A guest's folder (or a folder of guests) to look for the `--impl` name in, beside guests/.
    #[arg(long = "guest", value_name = "PATH")]
    pub guests: Vec<PathBuf>,
}

/// `harness keygen`: writes a fresh herd key.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key (created readable by its owner only; an existing file is kept).
    pub file: PathBuf,
}

/// Writes a fresh random key to `path`, readable by its owner only; refuses to overwrite.
pub fn write_key(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the herd key file {} (it must not exist yet)", path.display()))?;
    file.write_all(HerdKey::generate().to_hex().as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The key a herd server runs with: read from `--herd-key`, none with `--insecure-herd`, and an
/// error that says what to type when neither was given.
fn herd_key(args: &ServeArgs) -> Result<Option<Arc<HerdKey>>> {
    match (&args.herd_key, args.insecure_herd) {
        (Some(path), _) => {
            let key = HerdKey::from_file(path).with_context(|| format!("--herd-key {}", path.display()))?;
            Ok(Some(Arc::new(key)))
        }
        (None, true) => Ok(None),
        (None, false) => bail!(
            "a herd server needs the herd's key, so that only members can change what it stores: \
             run `harness keygen herd.key` once, then give every member `--herd-key herd.key` \
             (or pass --insecure-herd to accept updates from anyone, as the CS131 protocol does)"
        ),
    }
}

fn parse_peer(s: &str) -> Result<(String, SocketAddr), String> {
    let hint = "expected NAME=ADDR, e.g. --peer Hamilton=127.0.0.1:12001";
    let (name, addr) = s.split_once('=').ok_or_else(|| format!("`{s}`: {hint}"))?;
    let addr = addr.parse().map_err(|_| format!("`{s}`: bad address; {hint}"))?;
    Ok((name.to_owned(), addr))
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let meta = impls::find(&args.implementation)?;
    // Names are protocol fields (`AT <server> …`, `PEER <name>`): one word each.
    for name in std::iter::once(&args.name).chain(args.peers.iter().map(|(n, _)| n)) {
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!("server name {name:?} must be one word without spaces, e.g. --name Alford");
        }
    }
    let mode_name = args.mode.name();
    if !meta.modes.iter().any(|m| m == mode_name) {
        bail!("{} does not support --mode {mode_name}", meta.name);
    }
    if args.style.driver.is_some() && !herd_record::catalogue::CHOOSE_DRIVER.contains(&meta.name.as_str()) {
        bail!(
            "{} has one way of waiting; --driver is for {}",
            meta.name,
            herd_record::catalogue::CHOOSE_DRIVER.join(", ")
        );
    }
    if meta.guest.is_some() {
        return become_guest(args);
    }
    // The stop signals are caught before the port is open: a client (or the herd) that sees it
    // listening may stop it at once, and must get the counters and a clean exit, not the default
    // action's death (seen in the hang-up test: SIGHUP sent between `listen` and this line).
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let listener = listen(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let (log, flusher) = match &args.log {
        Some(path) => {
            let (sink, flusher) = FileSink::start(path, &args.name)?;
            (EventLog::new(Arc::new(sink), args.log_io), Some(flusher))
        }
        None => (EventLog::discard(), None),
    };
    let key = if args.mode == Mode::Herd { herd_key(args)? } else { None };
    log.event(Event::Listening { addr: listener.local_addr()?.to_string() });
    let options = ServeOptions {
        name: args.name.clone(),
        neighbours: args.peers.clone(),
        places: args.places,
        threads: args.threads,
        io_threads: args.style.io_threads,
        stack_kib: args.style.stack_kib,
        driver: args.style.driver.map(Driver::io_driver),
        limits: args.limits.limits(),
        herd_key: key.clone(),
    };
    let (service, stats_of) = service(args, &log, key);
    if let Some(path) = &args.samples {
        start_sampling(path, args.sample_every.0, Arc::clone(&stats_of))?;
    }
    let name = meta.name.clone();
    let server = std::thread::Builder::new().name("serve".into()).spawn(move || {
        let result = impls::serve(&name, listener, service, &options);
        if let Err(e) = &result {
            eprintln!("serve: {name} stopped: {e}");
            std::process::exit(1);
        }
    })?;
    let _ = signals.forever().next();
    log.event(Event::Stopping);
    if let Some(path) = &args.stats {
        let counters = stats_of();
        std::fs::write(path, serde_json::to_vec_pretty(&counters)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(flusher) = flusher {
        flusher.flush_and_stop();
    }
    drop(server);
    std::process::exit(0);
}

/// Reads a server's counters (the herd's or the echo's statistics) at shutdown and for samples.
type StatsOf = Arc<dyn Fn() -> ServerCounters + Send + Sync>;

/// The service `args.mode` asks for, logging to `log`, and how to read its counters.
fn service(args: &ServeArgs, log: &EventLog, key: Option<Arc<HerdKey>>) -> (AnyService, StatsOf) {
    match args.mode {
        Mode::Herd => {
            let config = HerdConfig {
                name: args.name.clone(),
                neighbours: args.peers.iter().map(|(n, _)| n.clone()).collect(),
                ttl_secs: args.ttl,
                key,
                max_clients: args.limits.limits().max_clients,
            };
            let herd = Arc::new(Herd::new(config, log.clone()));
            let h = Arc::clone(&herd);
            (AnyService::Herd(herd), Arc::new(move || ServerCounters::from_snapshot(&h.stats().snapshot())))
        }
        Mode::Echo => {
            let echo = Arc::new(Echo::new(log.clone()));
            let e = Arc::clone(&echo);
            (AnyService::Echo(echo), Arc::new(move || ServerCounters::from_snapshot(&e.stats().snapshot())))
        }
    }
}

/// Replaces this process with guest `args.implementation`, given the settings (see
/// [`crate::server::guest`]): the pid the herd watches, measures and signals is the guest's own.
fn become_guest(args: &ServeArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let guest = crate::server::guest::find(&args.implementation)?.context("the guest vanished while starting")?;
    // Cached: set up once before the herd starts (`run` and `verify` do), so this only checks.
    guest.prepare()?;
    if args.mode == Mode::Herd && args.herd_key.is_none() && !args.insecure_herd {
        herd_key(args)?;
    }
    let err = guest.command(&args.guest_args()).exec();
    Err(err).with_context(|| format!("starting guest {} ({})", guest.meta.name, guest.spec.serve.join(" ")))
}

impl ServeArgs {
    /// The settings `harness serve --impl IMPLEMENTATION` runs with: every other flag's default.
    pub fn defaults(implementation: &str) -> Self {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        <Cli as clap::Parser>::try_parse_from(["serve", "--impl", implementation]).expect("the defaults parse").serve
    }

    /// This server's `harness serve` command line after `serve` (what the herd starts each member
    /// with): every setting, limits in the units a user types.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["--impl".into(), self.implementation.clone().into()];
        out.extend(self.settings(Units::Serve));
        out
    }

    /// The settings as the guest contract gives them (guests/CONTRACT.md, "Settings"): every flag
    /// of `harness serve` but `--impl` and `--driver`, each limit explicit in plain units.
    pub fn guest_args(&self) -> Vec<OsString> {
        self.settings(Units::Guest)
    }

    fn settings(&self, units: Units) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            out.push(name.into());
            out.push(value);
        };
        flag("--name", self.name.clone().into());
        flag("--listen", self.listen.to_string().into());
        for (peer, addr) in &self.peers {
            flag("--peer", format!("{peer}={addr}").into());
        }
        if let Some(places) = self.places {
            flag("--places", places.to_string().into());
        }
        flag("--mode", self.mode.name().into());
        if let Some(threads) = self.threads {
            flag("--threads", threads.to_string().into());
        }
        for (name, path) in [("--log", &self.log), ("--stats", &self.stats), ("--samples", &self.samples)] {
            if let Some(p) = path {
                flag(name, p.clone().into());
            }
        }
        if self.samples.is_some() {
            flag("--sample-every", format!("{}ms", self.sample_every.0.as_millis().max(1)).into());
        }
        flag("--ttl", self.ttl.to_string().into());
        if let Some(key) = &self.herd_key {
            flag("--herd-key", key.clone().into());
        }
        if self.insecure_herd {
            out.push("--insecure-herd".into());
        }
        if self.log_io {
            out.push("--log-io".into());
        }
        match units {
            Units::Serve => {
                out.extend(self.style.to_args());
                out.extend(self.limits.to_serve_args().into_iter().map(Into::into));
            }
            Units::Guest => {
                out.extend(self.style.to_guest_args());
                out.extend(self.limits.to_guest_args().into_iter().map(Into::into));
            }
        }
        out
    }
}

/// How [`ServeArgs`] writes its settings: for `harness serve`, or for a guest (the contract's
/// plain units, no `--driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Units {
    Serve,
    Guest,
}

/// Appends a [`herd_record::scenario::Sample`] to `path` every `every`, from a thread of its own; each
/// line is flushed, so a killed server's samples are all there.
fn start_sampling(path: &std::path::Path, every: Duration, stats_of: StatsOf) -> Result<()> {
    if every.is_zero() {
        bail!("--sample-every must be above 0, e.g. 100ms");
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: sysconf has no preconditions.
    let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024).max(1);
    std::thread::Builder::new().name("samples".into()).spawn(move || {
        loop {
            let rss_kib = std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map_or(0, |pages| pages * page_kib);
            let sample = herd_record::scenario::Sample {
                t_ns: crate::base::clock::now(),
                rss_kib,
                floods_dropped: stats_of().counters.get("floods_dropped").copied().unwrap_or(0),
            };
            let Ok(mut line) = serde_json::to_vec(&sample) else { return };
            line.push(b'\n');
            if out.write_all(&line).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })?;
    Ok(())
}

/// A log that never blocks the request path: events go into a bounded queue (dropped, and counted,
/// when it is full) and a writer thread stamps, buffers and flushes them every 200 ms.
#[derive(Debug)]
struct FileSink {
    tx: Sender<LogMsg>,
    dropped: std::sync::atomic::AtomicU64,
}

enum LogMsg {
    Event(Event, chrono::DateTime<chrono::Utc>),
    Flush(Sender<()>),
}

struct Flusher(Sender<LogMsg>);

/// How many connections may wait to be accepted. std's `TcpListener::bind` listens with 128:
/// 10,000 clients connecting at once overflowed it, and a dropped SYN waits a 1 s retransmission
/// (connect p99 1.02 s in a 10,000-connection echo run). tokio and mio listen with 1024; this is
/// Linux's default `net.core.somaxconn`, which caps it anyway. Every style gets the listener from
/// here, so they all wait behind the same queue.
const LISTEN_BACKLOG: libc::c_int = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind(addr)?;
    // Listening again on a listening socket sets its backlog (Linux).
    // SAFETY: `listen` on a socket this process owns; no memory is passed.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}

impl FileSink {
    /// Appends to `path`: a restarted server goes on in the log it wrote before (the herd removes
    /// an earlier run's log before the first start, as it does the samples).
    fn start(path: &std::path::Path, server: &str) -> Result<(Self, Flusher)> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        let (tx, rx) = crossbeam_channel::bounded(64 * 1024);
        let server = server.to_owned();
        std::thread::Builder::new().name("log".into()).spawn(move || write_log(BufWriter::new(file), &rx, &server))?;
        Ok((Self { tx: tx.clone(), dropped: 0.into() }, Flusher(tx)))
    }
}

impl EventSink for FileSink {
    fn record(&self, event: Event) {
        if self.tx.try_send(LogMsg::Event(event, chrono::Utc::now())).is_err() {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Flusher {
    /// Waits (at most a second) for everything queued so far to reach the file.
    fn flush_and_stop(self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.0.send_timeout(LogMsg::Flush(done), Duration::from_secs(1)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
    }
}

fn write_log(mut out: BufWriter<File>, rx: &Receiver<LogMsg>, server: &str) {
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(LogMsg::Event(event, at)) => {
                let mut line = serde_json::json!({ "ts": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), "server": server });
                if let (Some(obj), Ok(serde_json::Value::Object(fields))) =
                    (line.as_object_mut(), serde_json::to_value(&event))
                {
                    obj.extend(fields);
                }
                let _ = writeln!(out, "{line}");
            }
            Ok(LogMsg::Flush(done)) => {
                let _ = out.flush();
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: impl IntoIterator<Item = OsString>) -> ServeArgs {
        Cli::try_parse_from(std::iter::once(OsString::from("serve")).chain(args)).expect("parses").serve
    }

    #[test]
    fn the_command_line_written_reads_back_as_the_same_server() {
        let given = "--impl completion-monoio --name Ball --listen 127.0.0.1:7001 --peer Alford=127.0.0.1:7000 \
                     --peer Welsh=127.0.0.1:7002 --places 127.0.0.1:7100 --threads 3 --io-threads 2 --stack-kib 64 \
                     --driver legacy --log b.log --log-io --stats b.json --samples b.jsonl --sample-every 250ms \
                     --ttl 60 --herd-key herd.key --max-line 1KiB --link-retry 250ms --max-clients 7";
        let serve = parse(given.split_whitespace().map(OsString::from));
        let again = parse(serve.to_args());
        assert_eq!(format!("{again:?}"), format!("{serve:?}"), "every setting survives to_args");
        let words = serve.guest_args();
        for absent in ["--impl", "--driver"] {
            assert!(!words.iter().any(|w| w == absent), "{absent} is not in the guest contract");
        }
        let plain = words.iter().position(|w| w == "--max-line").map(|i| words[i + 1].clone());
        assert_eq!(plain, Some("1024".into()), "the guest contract's sizes are plain bytes");
        let defaults = parse(["--impl", "threadpool", "--insecure-herd"].map(OsString::from));
        assert_eq!(format!("{:?}", parse(defaults.to_args())), format!("{defaults:?}"));
    }

    #[test]
    fn a_thousand_clients_connecting_at_once_wait_in_the_accept_queue_not_for_a_retransmission() {
        // Nothing accepts: each connection must still be established at once (with std's backlog
        // of 128 the 130th SYN was dropped and its connect waited a second).
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listens");
        let addr = listener.local_addr().expect("address");
        // The kernel caps the backlog at net.core.somaxconn (4096 by default since Linux 5.4).
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let n = cap.min(1000);
        let clients: Vec<std::net::TcpStream> = (0..n)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
                    .unwrap_or_else(|e| panic!("client {i} not established within 300 ms: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), n);
    }

    #[test]
    fn a_restarted_server_appends_to_its_log() {
        let dir = std::env::temp_dir().join(format!("herdbench-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder");
        let path = dir.join("Alford.log");
        let _ = std::fs::remove_file(&path);
        for addr in ["127.0.0.1:1", "127.0.0.1:2"] {
            let (sink, flusher) = FileSink::start(&path, "Alford").expect("a log");
            sink.record(Event::Listening { addr: addr.into() });
            flusher.flush_and_stop();
        }
        let text = std::fs::read_to_string(&path).expect("the log");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(text.lines().count(), 2, "both starts' lines are kept:\n{text}");
        assert!(text.contains("127.0.0.1:1") && text.contains("127.0.0.1:2"), "{text}");
    }
}
