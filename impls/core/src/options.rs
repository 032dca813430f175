//! What a style needs to know to serve, besides the [`Service`](crate::Service) itself.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::HerdKey;
use crate::limits::Limits;

/// Wiring and knobs common to every style. Plain data: the harness fills it from the command line.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// This server's herd name (sent as the hello on the flood links it opens).
    pub name: String,
    /// Neighbours as (name, address), in the same order as [`HerdConfig::neighbours`](crate::HerdConfig),
    /// so [`Flood::to`](crate::Flood) indices address them.
    pub neighbours: Vec<(String, SocketAddr)>,
    /// The places backend; `None` in echo mode.
    pub places: Option<SocketAddr>,
    /// The style's own parallelism (`--threads`); `None` picks the style's documented default.
    pub threads: Option<usize>,
    /// I/O threads for styles that separate them from workers (`--io-threads`).
    pub io_threads: Option<usize>,
    /// Stack size in KiB for the threads or coroutines that run requests (`--stack-kib`), in styles
    /// that choose it; `None` picks the style's documented default.
    pub stack_kib: Option<usize>,
    /// The kernel interface to wait through (`--driver`), for styles that have a choice;
    /// `None` picks the style's documented default. Others refuse it (the harness checks).
    pub driver: Option<IoDriver>,
    /// Every constant of the policy layer (queues, timeouts, back-pressure, retries).
    pub limits: Limits,
    /// The herd key the flood links this server opens prove; `None`: an insecure herd.
    pub herd_key: Option<Arc<HerdKey>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            name: String::from("herd"),
            neighbours: Vec::new(),
            places: None,
            threads: None,
            io_threads: None,
            stack_kib: None,
            driver: None,
            limits: Limits::default(),
            herd_key: None,
        }
    }
}

/// How a style with a choice of kernel interfaces waits for I/O: submitting operations to an
/// io_uring and reaping their completions, or the readiness interface (epoll) it falls back to
/// only when asked. A result records which one ran, since they are different rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// Completions: operations submitted to an io_uring (Linux 5.6 or later, not disabled).
    Uring,
    /// Readiness: epoll, as the event-loop styles use it.
    Legacy,
}

impl IoDriver {
    /// The name `--driver` takes and results record.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Legacy => "legacy",
        }
    }
}

/// The machine's available parallelism, the default for most styles.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
