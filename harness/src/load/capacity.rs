//! Before a load starts: enough descriptors and ephemeral ports for its connections, or an error
//! that names the limit and what to change — never a failure after the run has begun.
//!
//! - **Descriptors.** The generator holds one per connection (and the servers it starts inherit
//!   its limit): the soft limit is raised to fit, then the hard limit too where the process may
//!   (CAP_SYS_RESOURCE: root, unless a container dropped it), up to the kernel's per-process
//!   ceiling (`fs.nr_open`).
//! - **Ports.** Each connection takes an ephemeral port of its source address toward one
//!   destination; the kernel's range (`net.ipv4.ip_local_port_range`, 28,232 ports by default)
//!   bounds the connections from one source to one server. Past it, connections spread over several
//!   source addresses: those given (`--source-addrs`), or, toward loopback servers, 127.0.0.1,
//!   127.0.0.2 … (all of 127.0.0.0/8 is this machine), as tcpkali and wrk2 users do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Result;

/// Descriptors beyond one per connection: listeners, flood links, logs, the places backend.
const SPARE_FILES: u64 = 1024;
/// Descriptors of a server beyond one per client connection: its listener, flood links, the places
/// backend's connections, its log and stats files.
const SERVER_SPARE_FILES: u64 = 64;
/// Ephemeral ports of the range left to other connections of the machine.
const SPARE_PORTS: u64 = 1000;

/// What a load may use, as prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// The open-files limit (soft) the generator runs under.
    pub open_files: u64,
    /// Source addresses to spread connections over (empty: the kernel chooses).
    pub sources: Vec<IpAddr>,
}

/// Raises the descriptor limit to fit `connections` of this process's generator and `per_server`
/// connections in each server it starts (they inherit the limit), and picks source addresses so
/// that no (source, target) pair needs more ports than the kernel's range gives; or says what to
/// change.
pub fn prepare(connections: usize, per_server: usize, targets: &[SocketAddr], given: &[IpAddr]) -> Result<Capacity> {
    let need = (connections as u64 + SPARE_FILES).max(per_server as u64 + SERVER_SPARE_FILES);
    let open_files = raise_open_files(need).map_err(|why| anyhow::anyhow!("--connections {connections}: {why}"))?;
    let (lo, hi) = port_range();
    let sources = sources(connections.max(1), targets, given, hi.saturating_sub(lo) + 1)
        .map_err(|why| anyhow::anyhow!("--connections {connections}: {why}"))?;
    Ok(Capacity { open_files, sources })
}

/// What to do with the open-files limit.
#[derive(Debug, PartialEq, Eq)]
enum Raise {
    /// It already fits.
    Keep(u64),
    /// Raise the soft limit to the hard one.
    Soft(u64),
    /// Raise both (root).
    Both(u64),
}

/// The open-files limits needed for `need` descriptors, given the current ones and the kernel's
/// ceiling; an error says which limit is short and how to raise it.
fn plan_files(need: u64, soft: u64, hard: u64, nr_open: u64, privileged: bool) -> std::result::Result<Raise, String> {
    if soft >= need {
        return Ok(Raise::Keep(soft));
    }
    if hard >= need {
        return Ok(Raise::Soft(hard));
    }
    if need > nr_open {
        return Err(format!(
            "needs {need} open files (one per connection and {SPARE_FILES} more); the kernel allows a process \
             {nr_open} (fs.nr_open): as root, `sysctl -w fs.nr_open={need}`, or ask for fewer --connections"
        ));
    }
    if privileged {
        return Ok(Raise::Both(need));
    }
    Err(format!(
        "needs {need} open files (one per connection and {SPARE_FILES} more); this process may open {hard} \
         (its hard limit) and may not raise it (that takes CAP_SYS_RESOURCE, which root has outside a \
         container that drops it): raise it where harness is started (`ulimit -Hn {need}; ulimit -n {need}` \
         as a root that holds it, LimitNOFILE= for a service, --ulimit nofile= for a container), or ask for \
         at most {} --connections",
        hard.saturating_sub(SPARE_FILES)
    ))
}

/// Raises this process's open-files limit to fit `need` descriptors; returns the soft limit.
fn raise_open_files(need: u64) -> std::result::Result<u64, String> {
    // SAFETY: getrlimit/setrlimit on a struct we own; geteuid has no preconditions.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("reading the open-files limit: {}", std::io::Error::last_os_error()));
        }
        let nr_open =
            std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 20);
        let (set, value) = match plan_files(need, lim.rlim_cur, lim.rlim_max, nr_open, may_raise_hard_limit())? {
            Raise::Keep(v) => return Ok(v),
            Raise::Soft(v) => (libc::rlimit { rlim_cur: v, rlim_max: lim.rlim_max }, v),
            Raise::Both(v) => (libc::rlimit { rlim_cur: v, rlim_max: v }, v),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &set) != 0 {
            return Err(format!("raising the open-files limit to {value}: {}", std::io::Error::last_os_error()));
        }
        Ok(value)
    }
}

/// Whether this process holds CAP_SYS_RESOURCE, which raising a hard limit takes (root outside a
/// container that drops it).
fn may_raise_hard_limit() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default if unread.
fn port_range() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text.split_whitespace().filter_map(|p| p.parse().ok());
    match (parts.next(), parts.next()) {
        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
        _ => (32768, 60999),
    }
}

/// Source addresses for `connections` spread round-robin over `targets`, `ports` ephemeral ports
/// per (source, target): the given ones if they suffice, loopback ones for loopback targets, or an
/// error saying what to give.
fn sources(
    connections: usize,
    targets: &[SocketAddr],
    given: &[IpAddr],
    ports: u64,
) -> std::result::Result<Vec<IpAddr>, String> {
    let budget = ports.saturating_sub(SPARE_PORTS).max(1);
    let per_target = (connections as u64).div_ceil(targets.len().max(1) as u64);
    let per_source = |n: u64| per_target.div_ceil(n.max(1));
    if per_source(given.len() as u64) <= budget {
        return Ok(given.to_vec());
    }
    let needed = per_target.div_ceil(budget);
    if given.is_empty() && targets.iter().all(|t| matches!(t.ip(), IpAddr::V4(ip) if ip.is_loopback())) {
        if needed > 250 {
            return Err(format!("needs {needed} loopback source addresses; 250 is as far as this goes"));
        }
        return Ok((1..=needed).map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8))).collect());
    }
    Err(format!(
        "needs {} connections to each server from each of {} source address(es); the kernel's ephemeral ports \
         give {budget} (net.ipv4.ip_local_port_range, {ports} ports, {SPARE_PORTS} left to others): give {needed} \
         or more source addresses of this machine with --source-addrs A,B,…, or widen the range \
         (`sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"` as root)",
        per_source(given.len() as u64),
        given.len().max(1)
    ))
}

/// A non-blocking connect to `addr` from `source`: a new socket bound to the source address with
/// its port left to `connect` (Linux's `IP_BIND_ADDRESS_NO_PORT`), so that one source address
/// serves a whole port range toward each destination.
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) returns a new descriptor or -1; a new one is owned here alone.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a valid descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    bind_source(owned.as_raw_fd(), source)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: connect(2) on our socket with an address of the length given.
    let rc = unsafe { libc::connect(owned.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(std::net::TcpStream::from(owned))
}

fn bind_source(fd: std::os::fd::RawFd, source: IpAddr) -> std::io::Result<()> {
    let addr = SocketAddr::new(source, 0);
    let one: libc::c_int = 1;
    // SAFETY: setsockopt and bind on a socket the caller owns, with a value and an address that
    // live across the calls and sizes that match them.
    unsafe {
        if source.is_ipv4() {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let (storage, len) = sockaddr(addr);
        if libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, valid zeroed, and large enough for either family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_fits_or_the_error_says_which_limit_and_how() {
        assert_eq!(plan_files(2_000, 20_000, 20_000, 1 << 20, false), Ok(Raise::Keep(20_000)));
        assert_eq!(plan_files(2_000, 1_024, 20_000, 1 << 20, false), Ok(Raise::Soft(20_000)));
        assert_eq!(plan_files(101_024, 20_000, 20_000, 1 << 20, true), Ok(Raise::Both(101_024)));
        let user = plan_files(101_024, 20_000, 20_000, 1 << 20, false).expect_err("short");
        assert!(user.contains("may open 20000") && user.contains("ulimit -Hn 101024"), "{user}");
        assert!(user.contains("at most 18976 --connections"), "{user}");
        let kernel = plan_files(2_001_024, 20_000, 20_000, 1 << 20, true).expect_err("past nr_open");
        assert!(kernel.contains("fs.nr_open") && kernel.contains("sysctl -w fs.nr_open=2001024"), "{kernel}");
    }

    #[test]
    fn connections_spread_over_sources_when_one_has_too_few_ports() {
        let loopback: Vec<SocketAddr> = (0..5).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect();
        // 100,000 over five servers: 20,000 each, within one source's 27,232 ports.
        assert_eq!(sources(100_000, &loopback, &[], 28_232), Ok(vec![]));
        // 100,000 to one server: four loopback sources.
        let one = &loopback[..1];
        let picked = sources(100_000, one, &[], 28_232).expect("loopback sources");
        assert_eq!(picked.len(), 4);
        assert_eq!(picked[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        // Not loopback, no sources given: the error says what to give.
        let remote = [SocketAddr::from(([192, 0, 2, 1], 9000))];
        let why = sources(100_000, &remote, &[], 28_232).expect_err("too few ports");
        assert!(why.contains("--source-addrs") && why.contains("give 4 or more"), "{why}");
        // Given sources that suffice are used as given.
        let given: Vec<IpAddr> = (7..=10).map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k))).collect();
        assert_eq!(sources(100_000, one, &given, 28_232), Ok(given));
    }
}
