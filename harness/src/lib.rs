//! herdbench's harness as a library: everything the `harness` binary does, so that its tests (and
//! anything else) can start a herd, drive load or read result files with the same code. The binary
//! (`src/main.rs`) only parses the command line and calls one entry point per subcommand.
//!
//! # Layout
//! Below the harness are two crates of its own: `herd-record` (the result file and everything in it)
//! and `herd-report` (tables, figures, findings, compare, the gate's judge, thresholds, exports).
//! Inside, folders in dependency order, lowest first; a module imports only from folders before
//! its own (or its own parent and children), which scripts/modgraph.py checks in CI:
//!
//! 1. [`base`]: the seeded rng, the monotonic clock, the herd's topology, command-line sweeps.
//! 2. [`probe`]: what is measured of processes and the machine — kernel counters, the
//!    child-process guard, the machine record.
//! 3. [`load`] (the open-loop generator), [`places`] (the places backend), [`server`] (`harness
//!    serve`: the style dispatch, guests, a style's knobs and the policy's limits as flags).
//! 4. [`env`]: where processes go and how they start — launchers and hosts files, WAN herds in
//!    network namespaces, the herd launcher.
//! 5. [`verify`]: the conformance cases, run by `harness verify` against any implementation and by
//!    the conformance test suite.
//! 6. [`run`]: `harness run` — a matrix and one run, scenarios, remote generators, the gate's
//!    measurements (`gate instructions`, `gate floor`).
//!
//! `src/main.rs` parses the command line and calls one entry point per subcommand.

pub mod base;
pub mod env;
pub mod load;
pub mod places;
pub mod probe;
pub mod run;
pub mod server;
pub mod verify;
