//! The implementations the harness can run, each described by the `impl.toml` in its folder.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use herd_core::{Echo, Herd, ServeOptions};
use serde::{Deserialize, Serialize};

use crate::guest::{self, GuestRecord, GuestSpec};

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
    pub fn external(mode: crate::serve::Mode) -> Self {
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
    include_str!("../../impls/threadpool/impl.toml"),
    include_str!("../../impls/thread-per-request/impl.toml"),
    include_str!("../../impls/two-stage/impl.toml"),
    include_str!("../../impls/event-handler/impl.toml"),
    include_str!("../../impls/callback/impl.toml"),
    include_str!("../../impls/future-tokio/impl.toml"),
    include_str!("../../impls/future-async-std/impl.toml"),
    include_str!("../../impls/future-smol/impl.toml"),
    include_str!("../../impls/coroutine/impl.toml"),
    include_str!("../../impls/completion-monoio/impl.toml"),
];

/// Every implementation's metadata, in the order reports list them.
pub fn all() -> Result<Vec<ImplMeta>> {
    METADATA.iter().map(|text| toml::from_str(text).context("an impl.toml is malformed")).collect()
}

/// The metadata of `name` — a built-in style or a guest (`guests/`, `--guest PATH`) — or an error
/// listing the names that exist.
pub fn find(name: &str) -> Result<ImplMeta> {
    let all = all()?;
    if let Some(meta) = all.iter().find(|m| m.name == name) {
        return Ok(meta.clone());
    }
    if let Some(guest) = guest::find(name)? {
        return Ok(guest.meta);
    }
    let mut names: Vec<String> = all.into_iter().map(|m| m.name).collect();
    names.extend(guest::names());
    bail!(
        "unknown implementation `{name}`; use --impl with one of: {} (or a guest's folder with --guest PATH)",
        names.join(", ")
    )
}

/// The names an `--impl` list stands for: `all` is every built-in style, `guests` every guest (and
/// each of its variants); other names stand for themselves.
pub fn expand(list: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for name in crate::sweep::names(list) {
        match name.as_str() {
            "all" => names.extend(all()?.into_iter().map(|m| m.name)),
            "guests" => names.extend(guest::names()),
            _ => names.push(name),
        }
    }
    Ok(names)
}

/// Whether `name` is one of the built-in Rust styles (not a guest).
pub fn is_builtin(name: &str) -> bool {
    all().is_ok_and(|all| all.iter().any(|m| m.name == name))
}

/// The protocol a server speaks.
#[derive(Debug)]
pub enum AnyService {
    Herd(Arc<Herd>),
    Echo(Arc<Echo>),
}

/// Matches a style name to its crate's `serve`, for both services.
macro_rules! dispatch {
    ($name:expr, $listener:expr, $service:expr, $options:expr; $($style:literal => $krate:ident,)*) => {
        match ($name, $service) {
            $(
                ($style, AnyService::Herd(s)) => $krate::serve($listener, s, $options),
                ($style, AnyService::Echo(s)) => $krate::serve($listener, s, $options),
            )*
            (other, _) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no implementation named `{other}`"))),
        }
    };
}

/// Runs implementation `name` on `listener` until the process exits.
pub fn serve(name: &str, listener: TcpListener, service: AnyService, options: &ServeOptions) -> io::Result<()> {
    dispatch!(name, listener, service, options;
        "threadpool" => herd_threadpool,
        "thread-per-request" => herd_thread_per_request,
        "two-stage" => herd_two_stage,
        "event-handler" => herd_event_handler,
        "callback" => herd_callback,
        "future-tokio" => herd_future_tokio,
        "future-async-std" => herd_future_async_std,
        "future-smol" => herd_future_smol,
        "coroutine" => herd_coroutine,
        "completion-monoio" => herd_completion_monoio,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metadata_file_parses_and_names_are_unique() {
        let all = super::all().expect("metadata parses");
        let mut names: Vec<_> = all.iter().map(|m| m.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        let err = super::find("nope").expect_err("unknown").to_string();
        assert!(err.contains("threadpool"), "{err}");
    }
}
