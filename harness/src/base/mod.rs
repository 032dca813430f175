//! The bottom of the harness: what every layer above uses and nothing here imports from them.
//!
//! - [`rng`]: the seeded generator behind schedules, answers, faults and relays.
//! - [`clock`]: CLOCK_MONOTONIC in nanoseconds, the one clock of generators and servers' samples.
//! - [`topology`]: the herd's shape (members and their links).
//! - [`sweep`]: lists and ranges on the command line (`--load 1k,2k`, `--impl all`).

pub mod clock;
pub mod rng;
pub mod sweep;
pub mod topology;
