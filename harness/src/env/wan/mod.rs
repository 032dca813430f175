//! A WAN herd on one machine: every member in a network namespace of its own, every flood link
//! (and, if asked, every client path) through a relay that delays, jitters and loses like a long
//! link would. `harness run --link-delay 20ms --link-jitter 2ms --link-loss 1% --client-delay 5ms`.
//!
//! ```text
//!                       root namespace (the harness: relays, places, generator)
//!   ns Alford                                                             ns Hamilton
//!   10.201.a.2:12000 ─► 10.201.a.1:R1  relay Alford→Hamilton  ─────────► 10.201.h.2:12000
//!   10.201.a.2:12000 ◄───────────────  relay Hamilton→Alford ◄─ 10.201.h.1:R2 ◄─ (Hamilton opens)
//!   generator ─► 10.201.a.2:12000 (or 127.0.0.1:C1, a client relay, with --client-delay)
//! ```
//!
//! Each member opens one flood link to each neighbour, so each directed link has a relay of its own
//! listening on the opener's root-side address; the member's `--peer` points at it. Both directions
//! of a relayed connection get the link's shape (the handshake's replies too). The places backend
//! listens on the first member's root-side address, undelayed (what its latency is, `--places-latency`
//! says).
//!
//! # Why a relay, not netem
//! `tc qdisc … netem` would shape the veth pairs in the kernel, but this project's machines lack it
//! (`CONFIG_NET_SCH_NETEM` not set: "Specified qdisc kind is unknown"). The relay does the same on
//! every kernel, so its figures compare across machines; whether netem was there is recorded
//! ([`netem_available`]) and the relay's own cost is measured on every run ([`relay::measure_overhead`]).
//!
//! # Layout
//! - [`netns`]: namespaces and veth pairs, removed on drop.
//! - [`relay`]: the delaying TCP relay and its overhead measurement.

pub mod netns;
pub mod relay;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};

use herd_record::units::{parse_duration, parse_percent};
use herd_record::wan::{Overhead, RelayRecord, WanSettings};
use netns::Namespaces;
use relay::{Relay, RelayStats, Shape};

/// Where every member listens, inside its own namespace.
pub const MEMBER_PORT: u16 = 12000;
/// Round trips of the overhead measurement at the start of each WAN herd (about 0.1 s).
const OVERHEAD_ROUND_TRIPS: u64 = 1000;

/// The WAN flags of `harness run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WanArgs {
    /// One-way delay of every flood link, in each direction (e.g. 20ms). Any WAN flag puts each
    /// member in a network namespace of its own behind delaying relays (needs root).
    #[arg(long, value_parser = parse_duration)]
    pub link_delay: Option<Duration>,
    /// Jitter of the link delay: each chunk's delay is uniform in delay ± jitter (order is kept).
    #[arg(long, value_parser = parse_duration)]
    pub link_jitter: Option<Duration>,
    /// Segment loss of every flood link, e.g. 1%: a lost segment is delivered when TCP would
    /// retransmit it (about a round trip later when data follows it, 200 ms + a round trip when
    /// none does), and holds back what follows it.
    #[arg(long, value_parser = parse_percent)]
    pub link_loss: Option<f64>,
    /// One-way delay of each client connection, generator to member, in each direction.
    #[arg(long, value_parser = parse_duration)]
    pub client_delay: Option<Duration>,
}

impl WanArgs {
    /// The WAN to build, or `None` when no WAN flag was given.
    pub fn spec(&self, seed: u64) -> Option<WanSpec> {
        if self.link_delay.is_none()
            && self.link_jitter.is_none()
            && self.link_loss.is_none()
            && self.client_delay.is_none()
        {
            return None;
        }
        Some(WanSpec {
            link: Shape {
                delay: self.link_delay.unwrap_or_default(),
                jitter: self.link_jitter.unwrap_or_default(),
                loss: self.link_loss.unwrap_or_default(),
            },
            client: self.client_delay.map(|delay| Shape { delay, ..Shape::NONE }),
            seed,
        })
    }
}

/// What a WAN herd's links do.
#[derive(Debug, Clone, PartialEq)]
pub struct WanSpec {
    /// Every flood link, each direction.
    pub link: Shape,
    /// Client connections, each direction; `None`: the generator connects to members directly.
    pub client: Option<Shape>,
    /// Seeds the relays' jitter and loss draws.
    pub seed: u64,
}

impl WanSpec {
    /// Flood links of `delay`, nothing else.
    pub fn links(delay: Duration) -> Self {
        Self { link: Shape { delay, ..Shape::NONE }, client: None, seed: 1 }
    }

    /// The longest an update should take to cross `hops` links: each at its delay plus jitter,
    /// and, when links lose, one retransmission hold on the way.
    pub fn crossing(&self, hops: usize) -> Duration {
        let hop = self.link.delay + self.link.jitter;
        let held = if self.link.loss > 0.0 { relay::tail_hold(self.link.delay) } else { Duration::ZERO };
        hop * hops as u32 + held
    }
}

/// How a member's process is started.
#[derive(Debug, Clone)]
pub enum Launch {
    /// A child of this harness, on this machine.
    Here,
    /// On this machine behind words that exec the command line after them (`ip netns exec <ns>`).
    Prefixed(Vec<OsString>),
    /// On a host of a hosts file (`run --hosts`), through its launcher, with its files kept there.
    Host(crate::env::hosts::Remote),
}

impl Launch {
    /// The host a hosts file put the member on.
    pub fn host(&self) -> Option<&crate::env::hosts::Remote> {
        match self {
            Self::Host(remote) => Some(remote),
            Self::Here | Self::Prefixed(_) => None,
        }
    }

    /// `[prefix…] harness args…`: `local_exe` unless a host names its own.
    pub fn command(&self, local_exe: &std::path::Path, args: &[OsString]) -> std::process::Command {
        let words = |exe: &std::path::Path| std::iter::once(exe.into()).chain(args.iter().cloned());
        match self {
            Self::Here => crate::env::hosts::command(&[], words(local_exe)),
            Self::Prefixed(prefix) => crate::env::hosts::command(prefix, words(local_exe)),
            Self::Host(remote) => remote.command(words(remote.harness.as_deref().unwrap_or(local_exe))),
        }
    }
}

/// How one member is placed: how it is launched, where it listens, how the others reach it.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    pub launch: Launch,
    /// Where the member listens (inside its namespace; reachable from the root namespace too).
    pub listen: SocketAddr,
    /// Where clients connect: `listen`, or the member's client relay.
    pub client_addr: SocketAddr,
    /// Its neighbours as it reaches them: each through the relay of that directed link.
    pub peers: Vec<(String, SocketAddr)>,
    /// The places backend as it reaches it.
    pub places: SocketAddr,
}

/// A WAN herd's network: namespaces, veth pairs and relays. Dropping it stops the relays and
/// removes the namespaces (after the herd's processes are gone: [`crate::env::herd::Herd`] drops its
/// children first).
#[derive(Debug)]
pub struct WanNet {
    spec: WanSpec,
    relays: Vec<Relay>,
    stats: Arc<RelayStats>,
    namespaces: Namespaces,
    netem: String,
    overhead: Option<Overhead>,
}

impl WanNet {
    /// Makes a namespace per member of `names`, a relay per directed link of `neighbours` (and per
    /// member's client path), and returns the members' plans in `names` order and where the places
    /// backend should listen.
    pub fn create(
        spec: &WanSpec,
        names: &[String],
        neighbours: impl Fn(&str) -> Vec<String>,
    ) -> Result<(Self, IpAddr, Vec<MemberPlan>)> {
        netns::require_root()?;
        let overhead = match relay::measure_overhead(OVERHEAD_ROUND_TRIPS) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("warning: could not measure the relay's overhead: {e}");
                None
            }
        };
        let namespaces = Namespaces::create(names)?;
        let mut net = Self {
            spec: spec.clone(),
            relays: Vec::new(),
            stats: Arc::default(),
            netem: netem_available(&namespaces.members()[0].root_if),
            namespaces,
            overhead,
        };
        let ip = netns::ip_path()?;
        let members = net.namespaces.members().to_vec();
        let listen = |i: usize| SocketAddr::new(IpAddr::V4(members[i].member_ip), MEMBER_PORT);
        let index = |name: &str| names.iter().position(|n| n == name).context("a neighbour that is not a member");
        let mut plans = Vec::new();
        let mut relay_count = 0u64;
        for (i, name) in names.iter().enumerate() {
            let mut peers = Vec::new();
            for peer in neighbours(name) {
                let j = index(&peer)?;
                relay_count += 1;
                let relay = Relay::start(
                    &format!("{name}>{peer}"),
                    SocketAddr::new(IpAddr::V4(members[i].root_ip), 0),
                    listen(j),
                    (spec.link, spec.link),
                    spec.seed ^ relay_count.wrapping_mul(0x2545_F491_4F6C_DD1D),
                    Arc::clone(&net.stats),
                )
                .with_context(|| format!("starting the relay of link {name} → {peer}"))?;
                peers.push((peer, relay.addr()));
                net.relays.push(relay);
            }
            let client_addr = match spec.client {
                None => listen(i),
                Some(shape) => {
                    relay_count += 1;
                    let relay = Relay::start(
                        &format!("client>{name}"),
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                        listen(i),
                        (shape, shape),
                        spec.seed ^ relay_count.wrapping_mul(0x2545_F491_4F6C_DD1D),
                        Arc::clone(&net.stats),
                    )
                    .with_context(|| format!("starting the client relay of {name}"))?;
                    let addr = relay.addr();
                    net.relays.push(relay);
                    addr
                }
            };
            plans.push(MemberPlan {
                launch: Launch::Prefixed(vec![
                    ip.clone().into(),
                    "netns".into(),
                    "exec".into(),
                    members[i].ns.clone().into(),
                ]),
                listen: listen(i),
                client_addr,
                peers,
                // The port is filled in by the herd, which starts the backend.
                places: SocketAddr::new(IpAddr::V4(members[0].root_ip), 0),
            });
        }
        let places_ip = IpAddr::V4(members[0].root_ip);
        Ok((net, places_ip, plans))
    }

    /// Stops the relays (their threads' CPU time is then final). The namespaces stay until drop.
    pub fn stop_relays(&mut self) {
        for r in &mut self.relays {
            r.stop();
        }
    }

    /// What the result file says of this WAN: its settings, and what the relays did and cost.
    pub fn record(&self) -> (WanSettings, RelayRecord) {
        let s = &self.spec;
        let settings = WanSettings {
            link_delay_s: s.link.delay.as_secs_f64(),
            link_jitter_s: s.link.jitter.as_secs_f64(),
            link_loss: s.link.loss,
            client_delay_s: s.client.map(|c| c.delay.as_secs_f64()),
            emulation: "relay".into(),
            netem: self.netem.clone(),
            loss_model: "a chunk (one read) is lost with the chance that any of its 1448-byte segments is, and \
                         delivered when TCP would retransmit it, holding back what follows: 1.25 round trips \
                         after the next chunk was sent plus a one-way delay (SACK and RACK), or, with nothing \
                         behind it, 200 ms + a round trip late (a retransmission timeout); connections are \
                         never dropped"
                .into(),
            namespaces: self.namespaces.members().iter().map(|m| m.ns.clone()).collect(),
        };
        let st = &self.stats;
        let relay = RelayRecord {
            relays: self.relays.len(),
            connections: st.connections.load(Relaxed),
            chunks: st.chunks.load(Relaxed),
            bytes: st.bytes.load(Relaxed),
            held_as_lost: st.held.load(Relaxed),
            target_refused: st.target_refused.load(Relaxed),
            cpu_s: st.cpu_ns.load(Relaxed) as f64 / 1e9,
            overhead: self.overhead,
            note: "relay threads run in the harness process: generator_window includes their CPU; cpu_s covers \
                   the herd's whole life (start-up, warm-up and window)"
                .into(),
        };
        (settings, relay)
    }
}

/// Whether the kernel has netem, tried on one of the herd's own veth ends (added and removed).
pub fn netem_available(dev: &str) -> String {
    let tc = ["/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc"].into_iter().find(|p| std::path::Path::new(p).is_file());
    let Some(tc) = tc else { return "unknown: tc (iproute2) not found; links use the relay".into() };
    match Command::new(tc).args(["qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new(tc).args(["qdisc", "del", "dev", dev, "root"]).output();
            "available, not used: links use the relay on every kernel, so figures compare across machines".into()
        }
        Ok(out) => format!("unavailable ({}); links use the relay", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("unknown ({e}); links use the relay"),
    }
}
