//! What the integration tests share: the binary under test, scratch folders, reading results, and
//! the loud SKIPPED banner of a test that needs what this machine lacks.
//!
//! Each test file takes it with `mod common;`; a file uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use herd_record::result::RunResult;

/// `harness` with `args`, as cargo built it for these tests.
pub fn harness(args: &[&str]) -> Output {
    harness_command().args(args).output().expect("harness runs")
}

/// A `harness` command to add arguments to, run from the checkout's root as the README runs it
/// (results and logs without `--output` land in its `results/`, which git ignores).
pub fn harness_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

/// A scratch folder of this test process, named after `name` (created; the caller removes it).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdbench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The result file at `path`.
pub fn read_result(path: &Path) -> RunResult {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not a result file: {e}", path.display()))
}

/// Says loudly that `test` did not run here and why (`needs`), so that nobody mistakes a skip for
/// a pass; CI installs what it needs so that it runs there.
pub fn skipped(test: &str, needs: &str) {
    eprintln!("\n*** SKIPPED {test}: {needs} ***\n");
}
