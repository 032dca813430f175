//! A process's counters over a run's measured window, as the result file records them (the probe
//! that reads them from /proc and perf is the harness's `probe::counters`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A process's counters over the measured window (or, from [`Reading::take`], since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// read(2)-family calls (read, readv, pread…; `/proc/<pid>/io` syscr). Socket calls such as
    /// recvfrom are not among them: every call is counted only by `run --syscalls`.
    pub syscr: u64,
    /// write(2)-family calls (write, writev, pwrite…; syscw). sendto and sendmsg are not among them.
    pub syscw: u64,
    /// The thread gave up the CPU to wait (a blocking read, a futex, epoll_wait with nothing ready).
    pub voluntary_switches: u64,
    /// The thread was preempted.
    pub involuntary_switches: u64,
    pub minor_faults: u64,
    /// CPU time (user + system) over the window at nanosecond precision, counted by perf's
    /// `task-clock` (`run --syscalls`); absent without perf. [`Counters::cpu_s`] prefers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_clock_s: Option<f64>,
}

impl Counters {
    /// Adds another process's counters (a herd's servers summed).
    pub fn plus(&self, other: &Self) -> Self {
        Self {
            cpu_user_s: self.cpu_user_s + other.cpu_user_s,
            cpu_sys_s: self.cpu_sys_s + other.cpu_sys_s,
            syscr: self.syscr + other.syscr,
            syscw: self.syscw + other.syscw,
            voluntary_switches: self.voluntary_switches + other.voluntary_switches,
            involuntary_switches: self.involuntary_switches + other.involuntary_switches,
            minor_faults: self.minor_faults + other.minor_faults,
            task_clock_s: self.task_clock_s.zip(other.task_clock_s).map(|(a, b)| a + b),
        }
    }

    pub fn switches(&self) -> u64 {
        self.voluntary_switches + self.involuntary_switches
    }

    /// CPU time over the window: perf's `task-clock` where it was counted, else user + system time
    /// in clock ticks.
    pub fn cpu_s(&self) -> f64 {
        self.task_clock_s.unwrap_or(self.cpu_user_s + self.cpu_sys_s)
    }
}
