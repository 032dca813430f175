//! The herd launcher: the places backend and the servers of one style as child processes of the
//! `harness` binary, each on a loopback port of its own, started in order and watched until they
//! accept. `harness run` measures the herd it starts; the conformance suite starts one per case,
//! and kills and restarts its servers.
//!
//! ```text
//! harness places --listen 127.0.0.1:P0 --latency 0
//! harness serve --impl <style> --name Alford --listen 127.0.0.1:P1 --mode herd \
//!     --peer Hamilton=127.0.0.1:P3 --peer Welsh=127.0.0.1:P5 --places 127.0.0.1:P0 \
//!     --log <logs>/Alford.log --stats <logs>/Alford.stats.json \
//!     --max-line 64KiB --link-retry 100ms … (every limit, see `crate::server::limits`)
//! … one `serve` for each other server of the topology …
//! ```
//!
//! With [`HerdSpec::wan`], each server runs in a network namespace of its own (`ip netns exec
//! <ns> harness serve …`, listening on its namespace's address) and reaches each neighbour through
//! that link's delaying relay (see [`crate::env::wan`]); the places backend and the generator stay in the
//! root namespace. With [`HerdSpec::hosts`], each server and the places backend run on the host a
//! hosts file names, through its launcher, with their files in a folder there that the herd reads
//! back when it stops (see [`crate::env::hosts`]). Either way, a [`MemberPlan`] per server says how it
//! is launched, where it listens and how it reaches the others.
//!
//! Every child writes its stdout and stderr to `<logs>/<name>.out`. Children are killed by the
//! kernel if the thread that started them ends, and stopped and reaped when the [`Herd`] is dropped,
//! so none outlives its herd.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use herd_core::{Limits, Timestamp};

use crate::base::topology::Topology;
use crate::env::hosts::{Placement, Remote};
use crate::env::wan::{Launch, MemberPlan, WanNet, WanSpec};
use crate::probe::procs::Children;
use crate::server::limits::LimitsArgs;
use crate::server::serve::ServeArgs;
use crate::server::style::StyleArgs;
use herd_record::result::ProcessResources;
use herd_record::wan::{RelayRecord, WanSettings};
use herd_record::workload::Mode;

/// How long a freshly started child may take to accept its first connection.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Interval between connection attempts while waiting for a child to listen.
const START_POLL: Duration = Duration::from_millis(20);
/// How long a killed server's port may go on accepting (it should not at all).
const KILL_DEADLINE: Duration = Duration::from_secs(2);
/// How long the flood links may take to come up.
const LINK_DEADLINE: Duration = Duration::from_secs(5);

/// Where the servers' WHATSAT upstream lives (herd mode; an echo server has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `harness places` with these flags after `--listen` (e.g. `--latency 20ms`).
    Backend(Vec<String>),
    /// A loopback port nobody listens on: every places request fails to connect.
    Dead,
}

/// What to start: a style, its mode and shape, its upstream, and its options.
#[derive(Debug, Clone)]
pub struct HerdSpec {
    /// The `harness` binary that children run (`run` resolves it once, so a rebuild during a long
    /// matrix does not change it; tests name `CARGO_BIN_EXE_harness`).
    pub exe: PathBuf,
    /// The style's `--impl` name.
    pub implementation: String,
    /// Herd: the servers of [`Self::topology`] and a places backend. Echo: one server, `Echo`.
    pub mode: Mode,
    pub topology: Topology,
    pub upstream: Upstream,
    /// The style's parallelism, passed on when given.
    pub threads: Option<usize>,
    /// The style's other knobs (`--io-threads`, `--stack-kib`, `--driver`), passed on when given.
    pub style: StyleArgs,
    /// The policy layer's limits, passed to every server as flags (all of them, defaults too, so a
    /// server's command line says what it ran under).
    pub limits: Limits,
    /// Servers also log every input and output line.
    pub log_io: bool,
    /// Start the herd without a key (`serve --insecure-herd`): any connection may send `AT`
    /// lines. Otherwise [`Herd::start`] writes a fresh key to `<logs>/herd.key` for its servers.
    pub insecure_herd: bool,
    /// The folder for every child's output, event log and counters (created if missing).
    pub logs: PathBuf,
    /// CPUs every child is pinned to.
    pub cpus: Option<Vec<usize>>,
    /// Every server appends a sample of its memory and dropped floods to
    /// `<logs>/<name>.samples.jsonl` every 100 ms (`serve --samples`), for a scenario's timeline.
    pub samples: bool,
    /// A WAN herd: each server in a network namespace of its own, links through delaying relays
    /// (root only). `None`: every child on a loopback port.
    pub wan: Option<WanSpec>,
    /// Every server and the places backend on the host a hosts file names (`run --hosts`).
    pub hosts: Option<Placement>,
}

impl HerdSpec {
    /// The default topology's herd of `implementation`, a well-behaved places backend, the style's
    /// defaults and the default limits, logs in `logs`.
    pub fn new(exe: impl Into<PathBuf>, implementation: &str, logs: impl Into<PathBuf>) -> Self {
        Self {
            exe: exe.into(),
            implementation: implementation.to_owned(),
            mode: Mode::Herd,
            topology: Topology::default_herd(),
            upstream: Upstream::Backend(Vec::new()),
            threads: None,
            style: StyleArgs::default(),
            limits: Limits::default(),
            log_io: false,
            insecure_herd: false,
            logs: logs.into(),
            cpus: None,
            samples: false,
            wan: None,
            hosts: None,
        }
    }

    /// The servers to start, in start order.
    fn server_names(&self) -> Vec<String> {
        match self.mode {
            Mode::Herd => self.topology.servers.clone(),
            Mode::Echo => vec!["Echo".to_owned()],
        }
    }

    /// Server `name`'s neighbours (none in echo mode).
    fn neighbours(&self, name: &str) -> Vec<String> {
        match self.mode {
            Mode::Herd => self.topology.neighbours(name),
            Mode::Echo => Vec::new(),
        }
    }

    /// Every server on a loopback port of `addrs` (in [`Self::server_names`] order), reaching its
    /// neighbours and places (`places`) directly.
    fn loopback_plans(&self, addrs: &[SocketAddr], places: SocketAddr) -> Result<Vec<MemberPlan>> {
        let names = self.server_names();
        let addr_of = |server: &str| {
            names.iter().position(|n| n == server).map(|i| addrs[i]).context("topology names a server it does not list")
        };
        names
            .iter()
            .map(|name| {
                let peers =
                    self.neighbours(name).into_iter().map(|p| Ok((p.clone(), addr_of(&p)?))).collect::<Result<_>>()?;
                let listen = addr_of(name)?;
                Ok(MemberPlan { launch: Launch::Here, listen, client_addr: listen, peers, places })
            })
            .collect()
    }

    /// Every server where `hosts` places it, reaching the others at their hosts' addresses.
    fn hosted_plans(&self, hosts: &Placement) -> Result<Vec<MemberPlan>> {
        let names = self.server_names();
        let placed: Vec<(Remote, SocketAddr)> =
            names.iter().enumerate().map(|(i, name)| hosts.member(name, i)).collect::<Result<_>>()?;
        let addr_of = |server: &str| {
            names
                .iter()
                .position(|n| n == server)
                .map(|i| placed[i].1)
                .context("topology names a server it does not list")
        };
        let places = hosts.places().1;
        names
            .iter()
            .zip(placed.iter().cloned())
            .map(|(name, (remote, listen))| {
                let peers =
                    self.neighbours(name).into_iter().map(|p| Ok((p.clone(), addr_of(&p)?))).collect::<Result<_>>()?;
                Ok(MemberPlan { launch: Launch::Host(remote), listen, client_addr: listen, peers, places })
            })
            .collect()
    }

    /// This run's name for folders on other hosts: the logs folder's own name.
    pub fn label(&self) -> String {
        self.logs.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
    }

    /// Where a server placed on `host` keeps its files: a folder of this run there, or the logs.
    fn files_dir(&self, host: Option<&Remote>) -> PathBuf {
        host.map_or_else(|| self.logs.clone(), |h| h.run_dir(&self.label()))
    }

    /// `harness serve` for server `name` placed by `plan`, with places at `places`: the member's
    /// [`ServeArgs`], written out by their one writer.
    fn serve_args(&self, name: &str, plan: &MemberPlan, places: Option<SocketAddr>) -> Result<Vec<OsString>> {
        let dir = self.files_dir(plan.launch.host());
        let herd = self.mode == Mode::Herd;
        let serve = ServeArgs {
            name: name.to_owned(),
            listen: plan.listen,
            peers: plan.peers.clone(),
            places,
            mode: self.mode,
            threads: self.threads,
            style: self.style.clone(),
            log: Some(dir.join(format!("{name}.log"))),
            log_io: self.log_io,
            stats: Some(dir.join(format!("{name}.stats.json"))),
            samples: self.samples.then(|| dir.join(samples_name(name))),
            herd_key: (herd && !self.insecure_herd).then(|| dir.join(KEY_FILE)),
            insecure_herd: herd && self.insecure_herd,
            limits: LimitsArgs::from(&self.limits),
            ..ServeArgs::defaults(&self.implementation)
        };
        Ok(std::iter::once(OsString::from("serve")).chain(serve.to_args()).collect())
    }
}

impl HerdSpec {
    /// The herd's key file, written by [`Herd::start`] (a fresh key for each start).
    pub fn key_file(&self) -> PathBuf {
        self.logs.join(KEY_FILE)
    }

    /// Server `name`'s samples file (see [`Self::samples`]).
    pub fn samples_file(&self, name: &str) -> PathBuf {
        self.logs.join(samples_name(name))
    }
}

const KEY_FILE: &str = "herd.key";

fn samples_name(name: &str) -> String {
    format!("{name}.samples.jsonl")
}

/// Appends `flag value` to a command line.
/// One server of a running herd.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    /// Where clients connect (with `--client-delay`, its client relay).
    pub addr: SocketAddr,
    /// Where it listens itself.
    pub listen: SocketAddr,
    /// How it was started and its `harness` arguments: kept for a restart on the same port.
    pub launch: Launch,
    args: Vec<OsString>,
}

/// A child that exited while starting, with what it wrote on its way out.
#[derive(Debug, Clone)]
pub struct ExitedAtStartUp {
    pub name: String,
    pub output: String,
}

impl ExitedAtStartUp {
    fn read(logs: &Path, name: &str) -> Self {
        let output = std::fs::read(output_path(logs, name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Self { name: name.to_owned(), output }
    }

    /// Another process took the child's port between its reservation and the child's bind: a new
    /// start, on new ports, can succeed.
    pub fn port_taken(&self) -> bool {
        // Rust and Python print "Address already in use", Node.js and Go "address already in use".
        self.output.to_ascii_lowercase().contains("address already in use")
    }
}

impl fmt::Display for ExitedAtStartUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} exited during start-up: {}", self.name, self.output.trim())
    }
}

impl std::error::Error for ExitedAtStartUp {}

/// A running herd (or echo server), and its places backend. Dropping it stops every child.
#[derive(Debug)]
pub struct Herd {
    spec: HerdSpec,
    places: Option<SocketAddr>,
    servers: Vec<Server>,
    /// Declared before `wan`: fields drop in order, so the children are stopped before their
    /// namespaces are removed.
    children: Children,
    wan: Option<WanNet>,
}

impl Herd {
    /// Starts the places backend (herd mode, [`Upstream::Backend`]) and waits until it accepts,
    /// then starts every server and waits until each accepts. Fails with [`ExitedAtStartUp`] if a
    /// child dies meanwhile, or as soon as `interrupted` is set.
    pub fn start(spec: HerdSpec, interrupted: &AtomicBool) -> Result<Self> {
        std::fs::create_dir_all(&spec.logs).with_context(|| format!("creating {}", spec.logs.display()))?;
        let names = spec.server_names();
        let (wan, plans, places_addr) = match (&spec.wan, &spec.hosts) {
            (Some(_), Some(_)) => bail!("a WAN herd on one machine and a herd on named hosts do not mix"),
            (None, Some(hosts)) => (None, spec.hosted_plans(hosts)?, hosts.places().1),
            (None, None) => {
                // Every port is reserved at once, so no two are the same, and released just before
                // the children bind them. (Picked one at a time, a port can come back twice: a
                // server then fails to bind while its sibling answers in its place — seen as
                // thousands of wrong replies.)
                let reserved = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), names.len() + 1)?;
                let addrs: Vec<SocketAddr> =
                    reserved.iter().map(TcpListener::local_addr).collect::<std::io::Result<_>>()?;
                drop(reserved);
                (None, spec.loopback_plans(&addrs[1..], addrs[0])?, addrs[0])
            }
            (Some(wan), None) => {
                let (net, places_ip, mut plans) = WanNet::create(wan, &names, |name| spec.neighbours(name))?;
                let places_addr = free_ports(places_ip, 1)?[0].local_addr()?;
                for plan in &mut plans {
                    plan.places = places_addr;
                }
                (Some(net), plans, places_addr)
            }
        };
        // Built before any child exists, so a failure part-way stops what was started (and
        // removes the namespaces).
        let mut herd = Self { spec, places: None, servers: Vec::new(), children: Children::default(), wan };
        if herd.spec.mode == Mode::Herd && !herd.spec.insecure_herd {
            let key = herd.spec.key_file();
            // A fresh key for every herd: a key left by an earlier run in the same folder goes.
            let _ = std::fs::remove_file(&key);
            crate::server::serve::write_key(&key)?;
            // Each host with members gets the same key, in this run's folder there.
            if let Some(hosts) = &herd.spec.hosts {
                let bytes = std::fs::read(&key)?;
                let mut done: Vec<Remote> = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let remote = hosts.member(name, i)?.0;
                    if !done.contains(&remote) {
                        remote.put(&herd.spec.files_dir(Some(&remote)).join(KEY_FILE), &bytes)?;
                        done.push(remote);
                    }
                }
            }
        }
        if herd.spec.mode == Mode::Herd {
            // With `Upstream::Dead` the port was reserved and released: nobody listens there.
            herd.places = Some(places_addr);
            if let Upstream::Backend(flags) = &herd.spec.upstream {
                let mut args: Vec<OsString> = vec!["places".into(), "--listen".into(), places_addr.to_string().into()];
                args.extend(flags.iter().map(OsString::from));
                let launch = herd.spec.hosts.as_ref().map_or(Launch::Here, |h| Launch::Host(h.places().0));
                herd.launch("places", &launch, &args, false)?;
                herd.wait_accepting("places", places_addr, &launch, interrupted)?;
            }
        }
        for (name, plan) in names.iter().zip(plans) {
            // Samples and logs are appended (a restart goes on in the same files): none from an
            // earlier herd.
            let _ = std::fs::remove_file(herd.spec.samples_file(name));
            let _ = std::fs::remove_file(herd.spec.logs.join(format!("{name}.log")));
            let args = herd.spec.serve_args(name, &plan, herd.places)?;
            herd.launch(name, &plan.launch, &args, false)?;
            herd.servers.push(Server {
                name: name.clone(),
                addr: plan.client_addr,
                listen: plan.listen,
                launch: plan.launch,
                args,
            });
        }
        for server in &herd.servers {
            herd.wait_accepting(&server.name, server.listen, &server.launch, interrupted)?;
        }
        // A server that failed to bind while something else answered on its port is caught here.
        if let Some(server) = herd.servers.iter().find(|s| !herd.children.is_running(&s.name)) {
            return Err(ExitedAtStartUp::read(&herd.spec.logs, &server.name).into());
        }
        Ok(herd)
    }

    /// The servers, in start order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The server names, in start order.
    pub fn names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// Server `name`'s address.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.server(name).ok().map(|s| s.addr)
    }

    /// Where the servers send places requests (herd mode): the backend, or a dead port.
    pub fn places_addr(&self) -> Option<SocketAddr> {
        self.places
    }

    /// Child `name`'s process id (`places` for the backend), while it runs.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.children.pid(name)
    }

    /// What this herd was started from.
    pub fn spec(&self) -> &HerdSpec {
        &self.spec
    }

    /// The limits every server was started with.
    pub fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// The folder of every child's output, event log and counters.
    pub fn logs(&self) -> &Path {
        &self.spec.logs
    }

    /// Waits until the herd's flood links are up: each server gets a probe update, and every other
    /// server must answer a WHATSAT about it. Re-sent with newer times until it holds (5 s at most);
    /// every reply is awaited at most `reply_timeout`. Without this, updates announced while a link
    /// is still connecting are dropped (old updates are never replayed) and a run would count
    /// WHATSATs for unknown clients as errors. Nothing to wait for in echo mode or with one server.
    pub fn wait_linked(&self, reply_timeout: Duration) -> Result<()> {
        if self.spec.mode != Mode::Herd || self.servers.len() < 2 {
            return Ok(());
        }
        let mut conns = Vec::new();
        for s in &self.servers {
            let stream = TcpStream::connect_timeout(&s.addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {} to check the flood links", s.addr))?;
            stream.set_read_timeout(Some(reply_timeout))?;
            conns.push(BufReader::new(stream));
        }
        // A WAN herd's handshakes and probes cross delaying links: ten crossings more.
        let deadline = Instant::now() + LINK_DEADLINE + 10 * self.settle_time();
        let mut line = String::new();
        loop {
            for (i, conn) in conns.iter_mut().enumerate() {
                let now = Timestamp::from_system_time(std::time::SystemTime::now());
                writeln!(conn.get_mut(), "IAMAT herdbench-probe-{i} +0.000000+0.000000 {now}")?;
                line.clear();
                conn.read_line(&mut line)?;
            }
            std::thread::sleep(Duration::from_millis(100) + self.settle_time());
            let mut linked = true;
            for (j, conn) in conns.iter_mut().enumerate() {
                for i in (0..self.servers.len()).filter(|&i| i != j) {
                    writeln!(conn.get_mut(), "WHATSAT herdbench-probe-{i} 1 1")?;
                    line.clear();
                    conn.read_line(&mut line)?;
                    if line.starts_with('?') {
                        linked = false;
                        continue;
                    }
                    // The rest of the reply: JSON, then a blank line.
                    loop {
                        line.clear();
                        if conn.read_line(&mut line)? == 0 || line == "\n" {
                            break;
                        }
                    }
                }
            }
            if linked {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the herd's flood links did not all come up within {:?} (see the server logs)",
                    LINK_DEADLINE + 10 * self.settle_time()
                );
            }
        }
    }

    /// Samples every child's thread count and peak RSS from now until [`Self::stop`].
    pub fn start_sampling(&mut self) {
        self.children.start_sampling();
    }

    /// Kills server `name` with SIGKILL (a crash), reaps it, and waits until its port refuses
    /// connections.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let addr = self.server(name)?.listen;
        self.children.kill(name);
        let deadline = Instant::now() + KILL_DEADLINE;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            if Instant::now() >= deadline {
                bail!("{name} still accepts on {addr} after being killed");
            }
            std::thread::sleep(START_POLL);
        }
        Ok(())
    }

    /// Starts killed server `name` again with the same arguments (so on the same port), and waits
    /// until it accepts. Its output is appended to what it wrote before. Call it from a thread that
    /// lives as long as the herd: the kernel kills a child when the thread that started it ends.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let server = self.server(name)?;
        let (addr, launch, args) = (server.listen, server.launch.clone(), server.args.clone());
        self.launch(name, &launch, &args, true)?;
        self.wait_accepting(name, addr, &launch, &AtomicBool::new(false))
    }

    /// SIGTERM to every child, up to `grace` for them to exit, then SIGKILL; reaps them all and
    /// returns their resources by name (`places` for the backend), in start order.
    /// A WAN herd's relays are stopped after the children, so their CPU time is final.
    /// Servers on other hosts' folders have their log, counters and samples copied into the logs
    /// folder (a file that cannot be read is said on stderr, and the run goes on without it).
    pub fn stop(&mut self, grace: Duration) -> Vec<(String, ProcessResources)> {
        let stopped = self.children.stop(grace);
        if let Some(wan) = &mut self.wan {
            wan.stop_relays();
        }
        let label = self.spec.label();
        for server in &self.servers {
            let Some(host) = server.launch.host() else { continue };
            let mut files = vec![format!("{}.stats.json", server.name), format!("{}.log", server.name)];
            if self.spec.samples {
                files.push(samples_name(&server.name));
            }
            for file in files {
                if let Err(e) = host.fetch_into(&label, &file, &self.spec.logs) {
                    eprintln!("warning: {}'s {file}: {e:#}", server.name);
                }
            }
        }
        stopped
    }

    /// Where each process of a herd on named hosts went (`None` without a hosts file).
    pub fn host_records(&self) -> Option<Vec<herd_record::hosts::HostRecord>> {
        let hosts = self.spec.hosts.as_ref()?;
        let mut records = Vec::new();
        if self.places.is_some() && matches!(self.spec.upstream, Upstream::Backend(_)) {
            records.push(hosts.places().0.record("places", self.pid("places"), &self.spec.exe));
        }
        for s in &self.servers {
            if let Some(host) = s.launch.host() {
                records.push(host.record(&s.name, self.pid(&s.name), &self.spec.exe));
            }
        }
        Some(records)
    }

    /// How long an update may take to reach every member: nothing to wait for on loopback; in a
    /// WAN herd, a crossing of the herd (at most servers − 1 links) with one loss on the way.
    pub fn settle_time(&self) -> Duration {
        self.spec.wan.as_ref().map_or(Duration::ZERO, |w| w.crossing(self.servers.len().saturating_sub(1)))
    }

    /// A WAN herd's settings and what its relays did (final after [`Self::stop`]).
    pub fn wan_record(&self) -> Option<(WanSettings, RelayRecord)> {
        self.wan.as_ref().map(WanNet::record)
    }

    fn server(&self, name: &str) -> Result<&Server> {
        self.servers.iter().find(|s| s.name == name).ok_or_else(|| anyhow!("the herd has no server named {name}"))
    }

    /// Starts child `name` as `[launcher…] harness <args>` as `launch` says, its output to
    /// `<logs>/<name>.out`. A launcher that execs the command in its own process (`ip netns exec`
    /// does) makes the pid the harness measures and signals the server's.
    fn launch(&mut self, name: &str, launch: &Launch, args: &[OsString], append: bool) -> Result<()> {
        let output = open_output(&self.spec.logs, name, append)?;
        let mut cmd = launch.command(&self.spec.exe, args);
        cmd.stdin(Stdio::null()).stdout(output.try_clone()?).stderr(output);
        self.children.spawn(name, cmd, self.spec.cpus.clone())?;
        Ok(())
    }

    /// Waits until `addr` accepts a connection (10 s at most) on a listener of the child's own,
    /// failing early if the child died. Whose listener it is matters: a port picked free can be
    /// taken by another herd's child before ours binds it, and a child slow to start (a guest's
    /// interpreter loading) then finds it taken only after the other one has answered for it.
    fn wait_accepting(&self, name: &str, addr: SocketAddr, launch: &Launch, interrupted: &AtomicBool) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // A launcher that runs the command elsewhere (ssh) has no listener of its own here.
                let theirs = launch.host().is_none()
                    && self.children.pid(name).and_then(|pid| owns_listener(pid, addr)) == Some(false);
                if !theirs {
                    return Ok(());
                }
            }
            if interrupted.load(Relaxed) {
                bail!("interrupted while starting {name}");
            }
            if !self.children.is_running(name) {
                return Err(ExitedAtStartUp::read(&self.spec.logs, name).into());
            }
            if Instant::now() >= deadline {
                bail!("{name} did not accept connections on {addr} within 10 s");
            }
            std::thread::sleep(START_POLL);
        }
    }
}

/// Whether process `pid` holds the socket listening on `addr`, read from /proc (the listening
/// sockets of its network namespace, `/proc/<pid>/net/tcp[6]`, and its descriptors); `None` when
/// it cannot be told (no such listener seen there, /proc unreadable).
fn owns_listener(pid: i32, addr: SocketAddr) -> Option<bool> {
    const LISTEN: &str = "0A";
    let table = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
    let port = format!(":{:04X}", addr.port());
    // The address as the table writes it (IPv4: the 32-bit word in the host's byte order), or
    // the unspecified address, which serves it too; IPv6 by its port alone.
    let serves = |local: &str| match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            local == format!("{:08X}{port}", u32::from_ne_bytes(ip.octets())) || local == format!("00000000{port}")
        }
        std::net::IpAddr::V6(_) => local.ends_with(&port),
    };
    // Fields: sl local_address rem_address st … uid timeout inode.
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && serves(f[1]) && f[3] == LISTEN)
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    }))
}

/// `n` distinct ports of `ip`, reserved by listening on them until the caller lets go.
fn free_ports(ip: IpAddr, n: usize) -> Result<Vec<TcpListener>> {
    (0..n).map(|_| TcpListener::bind(SocketAddr::new(ip, 0)).context("finding a free port")).collect()
}

fn output_path(logs: &Path, name: &str) -> PathBuf {
    logs.join(format!("{name}.out"))
}

/// `<logs>/<name>.out`, new or (for a restart) appended to: a child's stdout and stderr, which
/// keeps the harness's own output readable.
fn open_output(logs: &Path, name: &str, append: bool) -> Result<File> {
    let path = output_path(logs, name);
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(&path).with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_ours_is_told_apart_from_another_process_s() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let addr = listener.local_addr().expect("its address");
        assert_eq!(owns_listener(std::process::id() as i32, addr), Some(true), "ours");
        let mut other = std::process::Command::new("sleep").arg("5").spawn().expect("sleep runs");
        let theirs = owns_listener(other.id() as i32, addr);
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(theirs, Some(false), "a process that does not hold it");
        drop(listener);
        // Not ours any more. (Whether anyone listens there now is not this test's to say: another
        // test of this process may be handed the freed port at once.)
        assert_ne!(owns_listener(std::process::id() as i32, addr), Some(true), "a listener let go of");
    }
}
