//! herdbench's harness as a library: everything the `harness` binary does, so that its tests (and
//! anything else) can start a herd, drive load or read result files with the same code. The binary
//! (`src/main.rs`) only parses the command line and calls one entry point per subcommand.
//!
//! # Layout
//! - [`run`]: orchestration of a measurement; [`herd`]: the herd launcher (the places backend and
//!   the servers as child processes); `procs`: child processes; `machine`: the environment.
//! - [`serve`]: one server process; [`impls`]: the registry of styles and guests; [`guest`]:
//!   servers from other ecosystems (setup, stamps, `exec`); [`limits`]: the policy layer's limits
//!   as flags of `serve` and `run`.
//! - [`verify`]: the conformance cases, run by `harness verify` against any implementation and by
//!   the conformance test suite.
//! - [`places`]: the places backend.
//! - [`load`]: the load generator; [`workload`]: workload files; [`topology`]: the herd's shape.
//! - [`result`]: the result file format; `summary`: the printed table; [`units`]: CLI units.
//! - [`report`]: tables and plots from result files; [`compare`]: a run against a baseline;
//!   [`thresholds`]: `--threshold` pass/fail criteria (k6's, exit status 99);
//!   [`findings`]: REPORT.md's checked claims; [`export`]: formats for CI trackers.
//! - [`rng`]: the seeded generator behind schedules, answers, faults and relays.
//! - [`counters`]: what the kernel counts for a process over the measured window.
//! - [`scenario`]: phases of load and timed faults inside one run, and how the run recovered.
//! - [`wan`]: a WAN herd on one machine (members in network namespaces, links through delaying
//!   relays).

pub mod base;
pub mod env;
pub mod load;
pub mod places;
pub mod probe;
pub mod run;
pub mod server;
pub mod verify;
