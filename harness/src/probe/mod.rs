//! What the harness measures of the processes it starts, and of the machine.
//!
//! - [`counters`]: the kernel's counters of a process over the measured window (/proc, perf).
//! - [`procs`]: child processes: one guard that starts, watches, signals and reaps them.
//! - [`machine`]: the machine and the tool a result records.

pub mod counters;
pub mod machine;
pub mod procs;
