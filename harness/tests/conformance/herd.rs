//! The fixture: one places backend and five herd servers of a style, started by the harness's own
//! herd launcher ([`harness::herd::Herd`], the one `harness run` uses) from the real binary, each
//! on a free loopback port.
//!
//! ```text
//! harness places --listen 127.0.0.1:P0
//! harness serve --impl <style> --name Alford --mode herd --listen 127.0.0.1:P1 \
//!     --peer Hamilton=127.0.0.1:P3 --peer Welsh=127.0.0.1:P5 --places 127.0.0.1:P0 --log …
//! … one `serve` for each of Ball, Hamilton, Holiday, Welsh …
//! ```
//!
//! Every process is killed and reaped when the [`Herd`] is dropped, also when a test panics
//! half-way, so no test leaves a process behind. Each child's output, event log and counters go to
//! a directory of its own under `CARGO_TARGET_TMPDIR`, removed after a passing test and kept (and
//! named on stderr) after a failing one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use harness::herd::{self, ExitedAtStartUp, HerdSpec};

use crate::client::Client;

pub use harness::herd::Upstream;

/// The default topology's servers (DESIGN.md; `harness/topology.toml`), which the cases name.
pub const SERVERS: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

/// Attempts at starting a whole herd when a port picked free was taken before the child bound it.
const START_ATTEMPTS: usize = 3;

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
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let spec = HerdSpec {
                upstream: upstream.clone(),
                ..HerdSpec::new(env!("CARGO_BIN_EXE_harness"), style, logs(style))
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
}

/// A new directory for one herd's output and logs.
fn logs(style: &str) -> PathBuf {
    static HERDS: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance").join(format!(
        "{style}-{}-{}",
        std::process::id(),
        HERDS.fetch_add(1, Ordering::Relaxed)
    ))
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
