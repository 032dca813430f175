//! What the run happened on: machine, kernel, toolchain and checkout, for the result file.

use std::path::Path;
use std::process::Command;

use crate::result::{Machine, Tool};

pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        cpu_model,
        cores: herd_core::available_cores(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        memory_bytes: memory_kib * 1024,
        hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
    }
}

pub fn tool() -> Tool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git_commit = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned());
    Tool {
        name: "herdbench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit,
        rustc: env!("HERDBENCH_RUSTC").into(),
        profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
    }
}
