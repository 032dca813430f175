//! What the run happened on: machine, kernel, toolchain and checkout, for the result file.

use herd_record::result::{Machine, Tool};

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

/// What made a result: `git_commit` is the commit this binary was built from (`-dirty` when the
/// build held uncommitted edits), recorded by `build.rs`.
pub fn tool() -> Tool {
    let git_commit = Some(env!("HERDBENCH_GIT_COMMIT")).filter(|c| !c.is_empty()).map(str::to_owned);
    Tool {
        name: "herdbench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit,
        rustc: env!("HERDBENCH_RUSTC").into(),
        profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
    }
}
