//! A style's own knobs as flags — `--io-threads`, `--stack-kib`, `--driver` — flattened into
//! `harness serve` and `harness run`, written back out by [`StyleArgs::to_args`] (the one place
//! that spells them), as [`crate::server::limits::LimitsArgs`] does for the policy's limits.
//! `--threads` is apart: `run` sweeps it (`--threads 1,2,4`), `serve` takes one.

use std::ffi::OsString;

/// The knobs a style may have besides its parallelism; each is passed on only when given.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct StyleArgs {
    /// I/O threads, for styles that separate them from workers.
    #[arg(long)]
    pub io_threads: Option<usize>,
    /// Stack size in KiB for request threads or coroutines, in styles that choose it.
    #[arg(long)]
    pub stack_kib: Option<usize>,
    /// The kernel interface to wait through, for a style that has a choice (completion-monoio:
    /// `uring`, its default, or `legacy`, monoio's epoll driver). Other styles refuse it.
    #[arg(long, value_enum)]
    pub driver: Option<Driver>,
}

impl StyleArgs {
    /// The flags given, for `harness serve`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = self.to_guest_args();
        if let Some(driver) = self.driver {
            out.extend(["--driver".into(), driver.io_driver().name().into()]);
        }
        out
    }

    /// The flags given that the guest contract has (all but `--driver`, which only a built-in
    /// style with a choice of kernel interface takes).
    pub fn to_guest_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        for (flag, value) in [("--io-threads", self.io_threads), ("--stack-kib", self.stack_kib)] {
            if let Some(v) = value {
                out.extend([flag.into(), v.to_string().into()]);
            }
        }
        out
    }
}

/// `--driver`: how a style with a choice of kernel interfaces waits for I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// io_uring: operations submitted, completions reaped.
    Uring,
    /// epoll readiness (monoio's legacy driver).
    Legacy,
}

impl Driver {
    pub fn io_driver(self) -> herd_core::IoDriver {
        match self {
            Self::Uring => herd_core::IoDriver::Uring,
            Self::Legacy => herd_core::IoDriver::Legacy,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        style: StyleArgs,
    }

    #[test]
    fn the_flags_written_parse_back_to_the_same_knobs() {
        for given in [vec![], vec!["--io-threads", "3"], vec!["--stack-kib", "64", "--driver", "legacy"]] {
            let style = Cli::try_parse_from(std::iter::once("t").chain(given.iter().copied())).expect("parses").style;
            let again =
                Cli::try_parse_from(std::iter::once("t".into()).chain(style.to_args())).expect("reparses").style;
            assert_eq!(again, style, "{given:?}");
            assert!(!style.to_guest_args().iter().any(|a| a == "--driver"), "no --driver for a guest");
        }
    }
}
