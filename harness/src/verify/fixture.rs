//! The fixture: one places backend and five herd servers of a style (or one echo server), started
//! by the harness's own herd launcher ([`harness::env::herd::Herd`], the one `harness run` uses) from
//! the real binary, each on a free loopback port.
//!
//! ```text
//! harness places --listen 127.0.0.1:P0
//! harness serve --impl <style> --name Alford --mode herd --listen 127.0.0.1:P1 \
//!     --peer Hamilton=127.0.0.1:P3 --peer Welsh=127.0.0.1:P5 --places 127.0.0.1:P0 --log …
//! … one `serve` for each of Ball, Hamilton, Holiday, Welsh …
//! ```
//!
//! Every process is killed and reaped when the [`Herd`] is dropped, also when a test panics
//! half-way, so no test leaves a process behind; a server [`Herd::suspend`]ed (SIGSTOP) is
//! continued when its guard is dropped, which the borrow makes happen first. Each child's output, event log and counters go to
//! a directory of its own under [`super::Settings::logs`], removed after a passing test and kept (and
//! named on stderr) after a failing one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use herd_core::Limits;

use super::client::Client;
use crate::env::herd::{self, ExitedAtStartUp, HerdSpec};
use herd_record::result::ServerCounters;
use herd_record::workload::Mode;

pub use crate::env::herd::Upstream;

/// The default topology's servers (DESIGN.md; `harness/topology.toml`), which the cases name.
pub const SERVERS: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

/// The one server of an echo herd ([`Herd::start_echo`]).
pub const ECHO: &str = "Echo";

/// Attempts at starting a whole herd when a port picked free was taken before the child bound it.
const START_ATTEMPTS: usize = 3;
/// After SIGTERM, how long servers get to write their counters and logs before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running herd of one style; dropping it kills every process.
#[derive(Debug)]
pub struct Herd {
    style: String,
    herd: herd::Herd,
}

impl Herd {
    /// Five servers of `style` and a well-behaved places backend.
    pub fn start(style: &str) -> Self {
        Self::start_with(style, &Upstream::Backend(Vec::new()))
    }

    pub fn start_with(style: &str, upstream: &Upstream) -> Self {
        Self::start_with_upstream_and_limits(style, upstream, &Limits::default())
    }

    /// Five servers of `style` under `limits`, and a well-behaved places backend.
    pub fn start_with_limits(style: &str, limits: &Limits) -> Self {
        Self::start_with_upstream_and_limits(style, &Upstream::Backend(Vec::new()), limits)
    }

    /// Five servers of `style` under `limits`, and `upstream` as their places backend.
    pub fn start_with_upstream_and_limits(style: &str, upstream: &Upstream, limits: &Limits) -> Self {
        Self::launch(style, Mode::Herd, upstream, limits)
    }

    /// One echo server of `style` under `limits` (`serve --mode echo`), named [`ECHO`]; no places
    /// backend, no peers, no key.
    pub fn start_echo(style: &str, limits: &Limits) -> Self {
        Self::launch(style, Mode::Echo, &Upstream::Backend(Vec::new()), limits)
    }

    fn launch(style: &str, mode: Mode, upstream: &Upstream, limits: &Limits) -> Self {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let spec = HerdSpec {
                mode,
                upstream: upstream.clone(),
                limits: limits.clone(),
                ..HerdSpec::new(&super::settings().exe, style, logs(style))
            };
            assert_eq!(spec.topology.servers, SERVERS, "the cases name the servers of the default topology");
            let logs = spec.logs.clone();
            match herd::Herd::start(spec, &AtomicBool::new(false)) {
                Ok(herd) => return Self { style: style.to_owned(), herd },
                // Another process took a port between our pick and the child's bind: pick again.
                Err(e) if e.downcast_ref::<ExitedAtStartUp>().is_some_and(ExitedAtStartUp::port_taken) => {
                    errors.push(format!("{e:#}"));
                    let _ = std::fs::remove_dir_all(&logs);
                }
                Err(e) => panic!("starting a {style} herd: {e:#}; output and logs kept in {}", logs.display()),
            }
        }
        panic!("starting a {style} herd: ports kept being taken:\n{}", errors.join("\n"));
    }

    pub fn style(&self) -> &str {
        &self.style
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.herd.addr(name).unwrap_or_else(|| panic!("no server named {name}"))
    }

    /// The herd key file every server was started with.
    pub fn key_file(&self) -> std::path::PathBuf {
        self.herd.spec().key_file()
    }

    /// A new client connection to server `name`.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.addr(name))
    }

    /// Kills server `name` (SIGKILL) and waits until its port refuses connections.
    pub fn kill(&mut self, name: &str) {
        if let Err(e) = self.herd.kill(name) {
            panic!("killing {name}: {e:#}");
        }
    }

    /// Starts server `name` again with the same arguments (so on the same port).
    pub fn restart(&mut self, name: &str) {
        if let Err(e) = self.herd.restart(name) {
            panic!("restarting {name}: {e:#}");
        }
    }

    /// Hangs server `name` (SIGSTOP): its sockets stay open and the kernel goes on accepting and
    /// buffering for it, but it reads nothing. It continues (SIGCONT) when the guard is dropped.
    pub fn suspend(&self, name: &str) -> Suspended<'_> {
        let pid = self.herd.pid(name).unwrap_or_else(|| panic!("{name} is not running"));
        // SAFETY: signalling our own child, which is not reaped while `self` is borrowed.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP to {name} ({pid}): {}", std::io::Error::last_os_error());
        Suspended { name: name.to_owned(), pid, _herd: self }
    }

    /// Stops every process, giving each server time to write its counters and flush its log.
    pub fn stop(&mut self) {
        self.herd.stop(STOP_GRACE);
    }

    /// What server `name` counted, from the stats file it wrote when [`Self::stop`]ped.
    pub fn counters(&self, name: &str) -> ServerCounters {
        let path = self.herd.logs().join(format!("{name}.stats.json"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not a stats file: {e}", path.display()))
    }

    /// Server `name`'s event log, one JSON object per event: what it has written so far (it flushes
    /// every 200 ms), complete once [`Self::stop`]ped.
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        let path = self.herd.logs().join(format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        // A line still being written is left for the next read.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l:?}", path.display())))
            .collect()
    }
}

/// A server hung with SIGSTOP; dropping this continues it (also when a case fails half-way).
#[derive(Debug)]
pub struct Suspended<'a> {
    name: String,
    pid: i32,
    _herd: &'a Herd,
}

impl Suspended<'_> {
    /// Continues the server now.
    pub fn resume(self) {}
}

impl Drop for Suspended<'_> {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, still unreaped: the herd is borrowed until now.
        if unsafe { libc::kill(self.pid, libc::SIGCONT) } != 0 {
            eprintln!("SIGCONT to {} ({}): {}", self.name, self.pid, std::io::Error::last_os_error());
        }
    }
}

/// A new directory for one herd's output and logs.
fn logs(style: &str) -> PathBuf {
    static HERDS: AtomicUsize = AtomicUsize::new(0);
    super::settings().logs.join(format!("{style}-{}-{}", std::process::id(), HERDS.fetch_add(1, Ordering::Relaxed)))
}

impl Drop for Herd {
    fn drop(&mut self) {
        // No grace: SIGTERM and at once SIGKILL, as a test has nothing to collect.
        self.herd.stop(Duration::ZERO);
        let dir = self.herd.logs();
        if thread::panicking() {
            eprintln!("conformance: {} herd's output and logs kept in {}", self.style, dir.display());
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
