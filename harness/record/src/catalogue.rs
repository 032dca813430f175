//! The implementation catalogue: each style's metadata (`impls/<style>/impl.toml`, built in) and a
//! guest's (`guests/<name>/impl.toml`, read by the harness), as results record them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::workload::Mode;

/// An implementation's metadata file (`impls/<style>/impl.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImplMeta {
    /// The `--impl` name.
    pub name: String,
    /// The concurrency style, in the mission's words.
    pub style: String,
    /// Runtime and libraries the style is built on.
    pub runtime: String,
    /// How it moves bytes and dispatches work.
    pub mechanism: String,
    /// How a WHATSAT upstream call waits.
    pub upstream_wait: String,
    /// What `--threads` means for it, and its default.
    pub threads: String,
    /// Modes it supports (`herd`, `echo`).
    pub modes: Vec<String>,
    /// A guest's setup, versions and serve command (`guests/<name>/impl.toml`); none for a style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestSpec>,
    /// What a run recorded of the guest it measured: folder, content hash, commit, versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_record: Option<GuestRecord>,
}

impl ImplMeta {
    /// What `harness load` records of a server it did not start: nothing but that it is external.
    pub fn external(mode: Mode) -> Self {
        let unknown = || "not known: a server `harness load` did not start".to_owned();
        Self {
            name: "external".into(),
            style: "external server".into(),
            runtime: unknown(),
            mechanism: unknown(),
            upstream_wait: unknown(),
            threads: unknown(),
            modes: vec![format!("{mode:?}").to_lowercase()],
            guest: None,
            guest_record: None,
        }
    }
}

/// The styles that can wait through more than one kernel interface (`serve --driver`).
pub const CHOOSE_DRIVER: &[&str] = &["completion-monoio"];

const METADATA: &[&str] = &[
    include_str!("../../../impls/threadpool/impl.toml"),
    include_str!("../../../impls/thread-per-request/impl.toml"),
    include_str!("../../../impls/two-stage/impl.toml"),
    include_str!("../../../impls/event-handler/impl.toml"),
    include_str!("../../../impls/callback/impl.toml"),
    include_str!("../../../impls/future-tokio/impl.toml"),
    include_str!("../../../impls/future-async-std/impl.toml"),
    include_str!("../../../impls/future-smol/impl.toml"),
    include_str!("../../../impls/coroutine/impl.toml"),
    include_str!("../../../impls/completion-monoio/impl.toml"),
];

/// Every implementation's metadata, in the order reports list them.
pub fn styles() -> Result<Vec<ImplMeta>> {
    METADATA.iter().map(|text| toml::from_str(text).context("an impl.toml is malformed")).collect()
}

/// The `[guest]` table of a guest's `impl.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// The language it is written in, e.g. "Python 3".
    pub language: String,
    /// A shell command run once in the folder (`sh -c`), again whenever its content changes:
    /// installs the toolchain and dependencies under `.guest/`.
    pub setup: String,
    /// A shell command run in the folder after setup, printing `name=version` lines.
    pub versions: String,
    /// The server's command, `{dir}` standing for the folder; the settings are appended.
    pub serve: Vec<String>,
    /// A shell command run in the folder after setup that checks the sources with the ecosystem's
    /// own formatter and linter (ruff, `node --check`, gofmt and go vet), failing on a finding.
    #[serde(default)]
    pub lint: Option<String>,
    /// Settings (flag names without `--`) the guest accepts but does not act on.
    #[serde(default)]
    pub ignores: Vec<String>,
    /// Recorded variants (`--impl NAME+VARIANT`), e.g. asyncio on uvloop.
    #[serde(default)]
    pub variants: BTreeMap<String, GuestVariant>,
}

/// A variant of a guest: the same folder with extra arguments, e.g. another event loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestVariant {
    /// Put after the serve words, before the settings.
    pub args: Vec<String>,
    /// The runtime, if the variant changes it (replaces the guest's `runtime` in the record).
    #[serde(default)]
    pub runtime: Option<String>,
}

/// What a result records of the guest it measured, beside its metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GuestRecord {
    /// The guest's folder.
    pub folder: PathBuf,
    /// The variant run (`--impl NAME+VARIANT`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The hash of the folder's content (what verify and setup are stamped with).
    pub content_hash: String,
    /// The last commit that touched the folder, `-dirty` if it has changes since; none outside git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The runtime's and libraries' versions, as its `versions` command printed them.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Whether `harness verify` had passed every case for this content when the run started
    /// (false only for a run made with `--unverified`).
    pub verified: bool,
}
