//! Records, for result files, the compiler version (`tool.rustc`) and the commit the binary is
//! built from (`tool.git_commit`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HERDBENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    git_describe();
}

/// `git describe --dirty` of the workspace as it is built: a result then names the code that ran,
/// not the state of the checkout when it ran (unbuilt edits once made results say `-dirty`). Rerun
/// when HEAD, its branch, the index or any compiled source changes. Empty outside a git checkout.
fn git_describe() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let mut watched: Vec<PathBuf> = ["harness/src", "harness/Cargo.toml", "impls", "Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "index", "packed-refs"].into_iter().map(str::to_owned).chain(branch) {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            watched.push(root.join(path));
        }
    }
    // A path that does not exist would make cargo rerun this on every build.
    for path in watched.iter().filter(|p| Path::exists(p)) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let describe = git(&["describe", "--always", "--dirty", "--abbrev=12"]).unwrap_or_default();
    println!("cargo:rustc-env=HERDBENCH_GIT_COMMIT={describe}");
}
