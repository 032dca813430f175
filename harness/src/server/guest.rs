//! Guests: servers from other ecosystems that join the comparison through the contract in
//! `guests/CONTRACT.md`.
//!
//! A guest is a folder with an `impl.toml` — the metadata every style has, plus a `[guest]` table
//! saying how to set it up, how to ask its runtime's versions and how to start it:
//!
//! ```text
//! guests/twisted/impl.toml     name = "twisted" … [guest] language, setup, versions, serve, ignores
//!                .guest/       what setup made (a venv, a binary), the stamps below; never committed
//!                    setup.stamp   the folder's content hash setup last succeeded for
//!                    versions.txt  `name=version` lines, asked once after each setup
//!                    verified      the content hash `harness verify` last passed every case for
//! ```
//!
//! `harness serve --impl twisted …` checks its settings as for any style and then *becomes* the
//! guest (`exec` of the guest's serve words with the settings appended in their one canonical form,
//! [`crate::server::serve::ServeArgs::guest_args`]): same pid, same signals, so every tool that starts a
//! server through `harness serve` — the herd, the conformance suite, scenarios, WAN herds — starts a
//! guest unchanged, and everything measured from /proc and perf needs nothing from it.
//!
//! Guests are found in the project's `guests/` — the `guests/` folder of the current folder or of
//! its nearest ancestor that has one, as git finds `.git`, so the checkout's guests are found from
//! anywhere inside it and an installed binary run elsewhere finds none of them — and in every
//! folder named by `--guest PATH`, which the harness passes on to the processes it starts through
//! `HERDBENCH_GUESTS` (a `:`-separated list of folders, each a guest or a folder of guests). Nothing
//! is read from the checkout the binary was built in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use herd_record::catalogue::ImplMeta;
use herd_record::catalogue::{GuestRecord, GuestSpec, GuestVariant};

/// The environment variable that carries `--guest` folders to child processes.
pub const GUESTS_ENV: &str = "HERDBENCH_GUESTS";
/// Where setup's products and the stamps live, inside a guest's folder.
const WORK_DIR: &str = ".guest";
/// Names skipped when hashing a guest's folder: what running or setting it up writes there.
const NOT_CONTENT: &[&str] = &[WORK_DIR, "__pycache__", "node_modules", ".git", ".ruff_cache", ".mypy_cache"];

/// One guest found on disk.
#[derive(Debug, Clone)]
pub struct Guest {
    pub meta: ImplMeta,
    pub spec: GuestSpec,
    pub folder: PathBuf,
    /// The variant asked for, with its name.
    pub variant: Option<(String, GuestVariant)>,
}

/// The project's `guests/`: that of the current folder or of its nearest ancestor with one that
/// holds a guest.
fn project_guests() -> Option<PathBuf> {
    let here = std::env::current_dir().ok()?;
    here.ancestors().map(|dir| dir.join("guests")).find(|dir| has_guest_children(dir))
}

/// The folders guests are looked for in: the project's `guests/`, then `HERDBENCH_GUESTS`'s.
fn search_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = project_guests().into_iter().collect();
    if let Some(list) = std::env::var_os(GUESTS_ENV) {
        roots.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
    }
    roots
}

/// Adds `folders` to the guest search path of this process and of every process it starts.
pub fn add_search_folders(folders: &[PathBuf]) -> Result<()> {
    if folders.is_empty() {
        return Ok(());
    }
    let mut all: Vec<PathBuf> =
        std::env::var_os(GUESTS_ENV).map(|l| std::env::split_paths(&l).collect()).unwrap_or_default();
    for folder in folders {
        let folder = folder.canonicalize().with_context(|| {
            format!("--guest {}: no such folder (give a guest's folder, one with impl.toml)", folder.display())
        })?;
        if !folder.join("impl.toml").is_file() && !has_guest_children(&folder) {
            bail!("--guest {}: neither a guest (no impl.toml) nor a folder of guests", folder.display());
        }
        all.push(folder);
    }
    let joined = std::env::join_paths(all).context("--guest: a folder name holds ':'")?;
    // SAFETY: called while the process has one thread (the CLI sets it up before any work starts).
    unsafe { std::env::set_var(GUESTS_ENV, joined) };
    Ok(())
}

fn has_guest_children(folder: &Path) -> bool {
    std::fs::read_dir(folder)
        .map(|entries| entries.flatten().any(|e| e.path().join("impl.toml").is_file()))
        .unwrap_or(false)
}

/// Every guest folder: a root that is a guest itself, or the guests directly inside a root.
fn folders() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in search_roots() {
        if root.join("impl.toml").is_file() {
            found.push(root);
        } else if let Ok(entries) = std::fs::read_dir(&root) {
            let mut inside: Vec<PathBuf> =
                entries.flatten().map(|e| e.path()).filter(|p| p.join("impl.toml").is_file()).collect();
            inside.sort();
            found.extend(inside);
        }
    }
    found
}

/// Reads the guest in `folder`.
pub fn read(folder: &Path) -> Result<Guest> {
    let path = folder.join("impl.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let meta: ImplMeta = toml::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
    let spec = meta
        .guest
        .clone()
        .with_context(|| format!("{} has no [guest] table (language, setup, versions, serve)", path.display()))?;
    if spec.serve.is_empty() {
        bail!("{}: [guest] serve is empty; it names the server's command, e.g. [\"{{dir}}/server\"]", path.display());
    }
    Ok(Guest { meta, spec, folder: folder.to_path_buf(), variant: None })
}

/// Every guest found, each once (the first folder of a name wins), without variants.
pub fn all() -> Vec<Result<Guest>> {
    let mut seen = std::collections::BTreeSet::new();
    folders()
        .into_iter()
        .map(|f| read(&f))
        .filter(|g| g.as_ref().map_or(true, |g| seen.insert(g.meta.name.clone())))
        .collect()
}

/// The guest `name` (or `name+variant`), if there is one.
pub fn find(name: &str) -> Result<Option<Guest>> {
    let (base, variant) = match name.split_once('+') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    for guest in all() {
        let Ok(mut guest) = guest else { continue };
        if guest.meta.name != base {
            continue;
        }
        if let Some(v) = variant {
            let known: Vec<&str> = guest.spec.variants.keys().map(String::as_str).collect();
            let Some(spec) = guest.spec.variants.get(v).cloned() else {
                bail!(
                    "guest {base} has no variant `{v}`; its variants: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                );
            };
            if let Some(runtime) = &spec.runtime {
                guest.meta.runtime.clone_from(runtime);
            }
            guest.meta.name = name.to_owned();
            guest.variant = Some((v.to_owned(), spec));
        }
        return Ok(Some(guest));
    }
    Ok(None)
}

/// The names every guest can be run by: each guest, then each of its variants.
pub fn names() -> Vec<String> {
    all()
        .into_iter()
        .flatten()
        .flat_map(|g| {
            let base = g.meta.name.clone();
            let variants: Vec<String> = g.spec.variants.keys().map(|v| format!("{base}+{v}")).collect();
            std::iter::once(base).chain(variants)
        })
        .collect()
}

impl Guest {
    fn work_dir(&self) -> PathBuf {
        self.folder.join(WORK_DIR)
    }

    /// The hash of the folder's content: every file's path and bytes, in path order, leaving out
    /// what running or setting it up writes there.
    pub fn content_hash(&self) -> Result<String> {
        let mut files = Vec::new();
        collect_files(&self.folder, &self.folder, &mut files)?;
        files.sort();
        let mut hash = Sha256::new();
        for rel in files {
            let bytes = std::fs::read(self.folder.join(&rel)).with_context(|| format!("reading {}", rel.display()))?;
            hash.update(rel.as_os_str().as_encoded_bytes());
            hash.update([0]);
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
        }
        Ok(hash.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect())
    }

    /// Runs setup if the folder changed since it last succeeded (once: concurrent callers wait for
    /// the first), then asks the versions; returns what a result records.
    pub fn prepare(&self) -> Result<GuestRecord> {
        let work = self.work_dir();
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let _lock = Lock::take(&work.join("setup.lock"))?;
        let hash = self.content_hash()?;
        let stamp = work.join("setup.stamp");
        let versions_file = work.join("versions.txt");
        if read_trimmed(&stamp).as_deref() != Some(hash.as_str()) {
            eprintln!(
                "== setting up guest {} ({}): `{}` in {} (once; again only when the folder changes)",
                self.meta.name,
                self.spec.language,
                self.spec.setup,
                self.folder.display()
            );
            let status = Command::new("sh")
                .args(["-c", &self.spec.setup])
                .current_dir(&self.folder)
                .stdout(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::inherit())
                .status()
                .with_context(|| format!("running setup of guest {}", self.meta.name))?;
            if !status.success() {
                bail!(
                    "setting up guest {} failed ({status}): `{}` in {}; its output above names what is missing",
                    self.meta.name,
                    self.spec.setup,
                    self.folder.display()
                );
            }
            let out = Command::new("sh")
                .args(["-c", &self.spec.versions])
                .current_dir(&self.folder)
                .output()
                .with_context(|| format!("asking guest {}'s versions", self.meta.name))?;
            if !out.status.success() {
                bail!(
                    "guest {}: its versions command `{}` failed: {}",
                    self.meta.name,
                    self.spec.versions,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            std::fs::write(&versions_file, &out.stdout)?;
            std::fs::write(&stamp, &hash)?;
        }
        let versions = parse_versions(&std::fs::read_to_string(&versions_file).unwrap_or_default());
        Ok(GuestRecord {
            folder: self.folder.clone(),
            variant: self.variant.as_ref().map(|(n, _)| n.clone()),
            verified: self.verified_for(&hash),
            content_hash: hash,
            git_commit: git_commit(&self.folder),
            versions,
        })
    }

    /// Whether `harness verify` passed every case for the folder as it is now.
    fn verified_for(&self, hash: &str) -> bool {
        read_trimmed(&self.work_dir().join("verified")).as_deref() == Some(hash)
    }

    /// Records that every conformance case passed for the folder's content `hash`.
    pub fn mark_verified(&self, hash: &str) -> Result<()> {
        std::fs::write(self.work_dir().join("verified"), hash).context("writing the verify stamp")
    }

    /// The command that starts this guest with `settings` (the serve words, `{dir}` replaced, then
    /// the variant's arguments, then the settings).
    pub fn command(&self, settings: &[OsString]) -> Command {
        let dir = self.folder.display().to_string();
        let mut words = self.spec.serve.iter().map(|w| w.replace("{dir}", &dir));
        let mut cmd = Command::new(words.next().unwrap_or_default());
        cmd.args(words);
        if let Some((_, variant)) = &self.variant {
            cmd.args(&variant.args);
        }
        cmd.args(settings);
        cmd
    }
}

/// `harness setup`: sets up guests (once per folder content) and prints their versions; with
/// `--lint`, also runs each one's formatter and linter (what CI does before the tests).
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// A guest's name, a comma list, or `guests` (every guest found).
    #[arg(long = "impl", default_value = "guests")]
    pub implementation: String,
    /// Also run each guest's lint command; fails on any finding.
    #[arg(long)]
    pub lint: bool,
    /// A guest's folder (or a folder of guests) to look for names in, beside guests/.
    #[arg(long = "guest", value_name = "PATH")]
    pub guests: Vec<PathBuf>,
}

pub fn setup(args: &SetupArgs) -> Result<()> {
    let wanted = match args.implementation.as_str() {
        "guests" => all().into_iter().map(|g| g.map(|g| g.meta.name)).collect::<Result<Vec<_>>>()?,
        list => crate::base::sweep::names(list),
    };
    for name in wanted {
        let guest =
            find(&name)?.with_context(|| format!("`{name}` is not a guest; the guests: {}", names().join(", ")))?;
        let record = guest.prepare()?;
        let versions: Vec<String> = record.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{name}: ready ({}), {}",
            versions.join(", "),
            if record.verified { "verified" } else { "not verified yet" }
        );
        if let (true, Some(lint)) = (args.lint, &guest.spec.lint) {
            eprintln!("== lint {name}: `{lint}`");
            let status = Command::new("sh").args(["-c", lint]).current_dir(&guest.folder).status()?;
            if !status.success() {
                bail!("guest {name}: its lint command `{lint}` found something ({status})");
            }
        }
    }
    Ok(())
}

/// `name=version` lines; other lines are left out.
fn parse_versions(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if NOT_CONTENT.iter().any(|n| name == *n) || name.to_string_lossy().ends_with(".pyc") {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// The last commit that touched `folder`, with `-dirty` if it changed since; `None` outside git.
fn git_commit(folder: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git").arg("-C").arg(folder).args(args).output().ok().filter(|o| o.status.success())
    };
    let commit = String::from_utf8(git(&["log", "-1", "--format=%h", "--", "."])?.stdout).ok()?.trim().to_owned();
    if commit.is_empty() {
        return None;
    }
    let dirty = git(&["status", "--porcelain", "--", "."]).is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

/// An exclusive `flock` on a file, released when dropped (or when the process ends).
struct Lock {
    _file: File,
}

impl Lock {
    fn take(path: &Path) -> Result<Self> {
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking a guest's setup");
        }
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_in(dir: &Path, toml: &str) -> Guest {
        std::fs::create_dir_all(dir).expect("a folder");
        std::fs::write(dir.join("impl.toml"), toml).expect("impl.toml");
        read(dir).expect("reads")
    }

    const TOML: &str = r#"
name = "demo"
style = "demo"
runtime = "sh"
mechanism = "none"
upstream_wait = "none"
threads = "ignored"
modes = ["echo"]

[guest]
language = "sh"
setup = "echo setting-up >> .guest/setups"
versions = "echo sh=1.0; echo not a version"
serve = ["{dir}/serve.sh", "--fixed"]
ignores = ["threads"]

[guest.variants.fast]
args = ["--fast"]
runtime = "sh, fast"
"#;

    #[test]
    fn setup_runs_once_per_content_and_versions_are_recorded() {
        let dir = std::env::temp_dir().join(format!("herdbench-guest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let guest = guest_in(&dir, TOML);
        let first = guest.prepare().expect("setup runs");
        assert_eq!(first.versions.get("sh").map(String::as_str), Some("1.0"));
        assert!(!first.verified, "nothing verified yet");
        guest.prepare().expect("cached");
        let setups = || std::fs::read_to_string(dir.join(".guest/setups")).expect("setup wrote").lines().count();
        assert_eq!(setups(), 1, "an unchanged folder is set up once");
        // What running writes (bytecode, the work folder) does not change the content.
        std::fs::create_dir_all(dir.join("__pycache__")).expect("a cache");
        std::fs::write(dir.join("__pycache__/x.pyc"), b"x").expect("bytecode");
        assert_eq!(guest.content_hash().expect("hash"), first.content_hash);
        guest.mark_verified(&first.content_hash).expect("stamp");
        assert!(guest.prepare().expect("cached").verified);
        // A changed source is a new guest: set up again, and no longer verified.
        std::fs::write(dir.join("serve.sh"), b"#!/bin/sh\n").expect("a source");
        let changed = guest.prepare().expect("setup runs again");
        assert_ne!(changed.content_hash, first.content_hash);
        assert!(!changed.verified, "a change undoes verify");
        assert_eq!(setups(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_command_is_the_serve_words_then_the_variant_then_the_settings() {
        let dir = std::env::temp_dir().join(format!("herdbench-guest-cmd-{}", std::process::id()));
        let mut guest = guest_in(&dir, TOML);
        guest.variant = guest.spec.variants.get("fast").cloned().map(|v| ("fast".to_owned(), v));
        let cmd = guest.command(&["--name".into(), "Alford".into()]);
        assert_eq!(cmd.get_program(), dir.join("serve.sh").as_os_str());
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["--fixed", "--fast", "--name", "Alford"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_setup_that_fails_says_so_and_is_not_stamped() {
        let dir = std::env::temp_dir().join(format!("herdbench-guest-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let guest =
            guest_in(&dir, &TOML.replace("echo setting-up >> .guest/setups", "echo no-such-runtime >&2; exit 3"));
        let err = format!("{:#}", guest.prepare().expect_err("setup fails"));
        assert!(err.contains("setting up guest demo failed"), "{err}");
        assert!(!dir.join(".guest/setup.stamp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
