//! Network namespaces for the members of a WAN herd, one each, joined to the root namespace by a
//! veth pair, made and removed with iproute2's `ip` (root only).
//!
//! ```text
//! root namespace                          namespace hb-<pid>-<k>-Alford
//!   hbw<x>r  10.201.<x>.1/24  ◄── veth ──►  hbw<x>m  10.201.<x>.2/24, default via 10.201.<x>.1
//! ```
//!
//! `<x>` is a subnet number free on this machine, chosen under a lock file so that two harness
//! processes never pick the same one; `<k>` numbers the herds of one process. A member reaches only
//! addresses of the root namespace (relays, the places backend): packets are never forwarded
//! between namespaces, so the machine's forwarding setting is left alone. Namespaces left behind by
//! a harness that was killed (its pid gone) are removed by the next one that makes namespaces.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use anyhow::{Context, Result, bail};

/// The most members a WAN herd may have (each takes a /24 of 10.201.0.0/16).
pub const MAX_MEMBERS: usize = 64;
/// Herds made by this process so far: part of every namespace name.
static HERDS: AtomicU32 = AtomicU32::new(0);

/// One member's namespace and the two ends of its veth pair.
#[derive(Debug, Clone)]
pub struct MemberNet {
    /// The namespace (`ip netns exec <ns> …`).
    pub ns: String,
    /// The veth end in the root namespace, and its address.
    pub root_if: String,
    pub root_ip: Ipv4Addr,
    /// The member's own address, inside its namespace.
    pub member_ip: Ipv4Addr,
}

/// The namespaces of one herd. Dropping it removes them and their veth pairs.
#[derive(Debug, Default)]
pub struct Namespaces {
    members: Vec<MemberNet>,
}

impl Namespaces {
    /// A namespace for each of `names` (one word each, letters, digits, `_` and `-`), with its
    /// veth pair up and addressed. Anything made before a failure is removed again.
    pub fn create(names: &[String]) -> Result<Self> {
        require_root()?;
        if names.len() > MAX_MEMBERS {
            bail!("a WAN herd has at most {MAX_MEMBERS} members, this one {}", names.len());
        }
        for name in names {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                bail!("member name {name:?} cannot name a network namespace (letters, digits, _ and - only)");
            }
        }
        let _lock = SubnetLock::take()?;
        remove_stale();
        let mut free = free_subnets()?.into_iter();
        let herd = HERDS.fetch_add(1, Relaxed);
        let mut made = Self::default();
        for name in names {
            let x = free.next().context("no free subnet left in 10.201.0.0/16 for a member's veth pair")?;
            let net = MemberNet {
                ns: format!("hb-{}-{herd}-{name}", std::process::id()),
                root_if: format!("hbw{x}r"),
                root_ip: Ipv4Addr::new(10, 201, x, 1),
                member_ip: Ipv4Addr::new(10, 201, x, 2),
            };
            ip(&["netns", "add", &net.ns])?;
            made.members.push(net.clone());
            let member_if = format!("hbw{x}m");
            ip(&["link", "add", &net.root_if, "type", "veth", "peer", "name", &member_if, "netns", &net.ns])?;
            ip(&["addr", "add", &format!("{}/24", net.root_ip), "dev", &net.root_if])?;
            ip(&["link", "set", &net.root_if, "up"])?;
            let inside = |args: &[&str]| ip(&[&["-n", net.ns.as_str()], args].concat());
            inside(&["link", "set", "lo", "up"])?;
            inside(&["addr", "add", &format!("{}/24", net.member_ip), "dev", &member_if])?;
            inside(&["link", "set", &member_if, "up"])?;
            inside(&["route", "add", "default", "via", &net.root_ip.to_string()])?;
        }
        Ok(made)
    }

    /// The members' networks, in the order of the names given to [`Self::create`].
    pub fn members(&self) -> &[MemberNet] {
        &self.members
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for net in self.members.drain(..) {
            // Deleting the root end deletes its peer; the namespace then goes once its processes
            // have (the herd stops them before this runs).
            let _ = ip(&["link", "delete", &net.root_if]);
            if let Err(e) = ip(&["netns", "delete", &net.ns]) {
                eprintln!("warning: could not remove network namespace {}: {e:#}", net.ns);
            }
        }
    }
}

/// Namespaces and veth pairs need root (CAP_NET_ADMIN and CAP_SYS_ADMIN); says so plainly otherwise.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "a WAN herd (--link-delay, --link-jitter, --link-loss, --client-delay) puts each member in a network \
             namespace of its own, which needs root: run as root (e.g. sudo), or drop the WAN flags"
        );
    }
    Ok(())
}

/// Whether this process may make namespaces (root), for tests that skip otherwise.
pub fn can_create() -> bool {
    require_root().is_ok() && ip_binary().is_some()
}

/// iproute2's `ip`: on PATH, or where Debian puts it.
fn ip_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("ip"));
    on_path.chain(["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].map(PathBuf::from)).find(|p| p.is_file())
}

/// The `ip` binary, for `ip netns exec` launchers.
pub fn ip_path() -> Result<PathBuf> {
    ip_binary().context("iproute2's `ip` was not found (PATH, /usr/sbin, /sbin): install iproute2")
}

/// Runs `ip <args>`, failing with its error output.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(ip_path()?).args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Subnet numbers `x` of 10.201.x.0/24 that no interface of the root namespace uses.
fn free_subnets() -> Result<Vec<u8>> {
    let out = Command::new(ip_path()?).args(["-o", "-4", "addr", "show"]).output().context("running ip addr")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let used: Vec<u8> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("10.201."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    let links = Command::new(ip_path()?).args(["-o", "link", "show"]).output().context("running ip link")?;
    let links = String::from_utf8_lossy(&links.stdout);
    Ok((0..=255u8).filter(|x| !used.contains(x) && !links.contains(&format!(" hbw{x}r"))).collect())
}

/// Removes namespaces `hb-<pid>-…` whose harness process is gone (killed before it could).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("hb-").and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing network namespace {name}, left behind by harness process {pid}, which is gone");
            let _ = ip(&["netns", "delete", &name]);
        }
    }
}

/// An exclusive lock on `/run/herdbench-wan.lock` while subnets are chosen and taken.
struct SubnetLock {
    _file: File,
}

impl SubnetLock {
    fn take() -> Result<Self> {
        let path = "/run/herdbench-wan.lock";
        let file = File::create(path).with_context(|| format!("creating {path}"))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking /run/herdbench-wan.lock");
        }
        Ok(Self { _file: file })
    }
}
