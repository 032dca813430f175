//! The implementations the harness can run, each described by the `impl.toml` in its folder.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use anyhow::{Result, bail};
use herd_core::{Echo, Herd, ServeOptions};

use crate::server::guest;
use herd_record::catalogue::{ImplMeta, styles};

/// The metadata of `name` — a built-in style or a guest (`guests/`, `--guest PATH`) — or an error
/// listing the names that exist.
pub fn find(name: &str) -> Result<ImplMeta> {
    let all = styles()?;
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
    for name in crate::base::sweep::names(list) {
        match name.as_str() {
            "all" => names.extend(styles()?.into_iter().map(|m| m.name)),
            "guests" => names.extend(guest::names()),
            _ => names.push(name),
        }
    }
    Ok(names)
}

/// Whether `name` is one of the built-in Rust styles (not a guest).
pub fn is_builtin(name: &str) -> bool {
    styles().is_ok_and(|all| all.iter().any(|m| m.name == name))
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
        let all = herd_record::catalogue::styles().expect("metadata parses");
        let mut names: Vec<_> = all.iter().map(|m| m.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        let err = super::find("nope").expect_err("unknown").to_string();
        assert!(err.contains("threadpool"), "{err}");
    }
}
