//! The policy layer's limits ([`herd_core::Limits`]) as command-line flags, shared by `harness serve`
//! (which hands them to its style) and `harness run` (which passes them on to every server it starts
//! and records them in the result file). Each field of `Limits` has one flag, named after it, in the
//! units a user types; the defaults are `Limits::default()`'s, so a flag left out changes nothing.
//!
//! ```text
//! harness run --impl threadpool --link-queue-bytes 256KiB --link-write-stall 2s
//! harness serve --impl threadpool … --max-line 64KiB --link-retry 100ms --upstream-timeout 3s …
//! ```

use herd_core::Limits;

use herd_record::units::{ByteSize, Interval};

/// One flag per [`Limits`] field. Sizes take `1MiB`, `64KiB` or plain bytes; durations `500ms`, `5s`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LimitsArgs {
    /// Longest accepted input line, newline excluded.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(Limits::default().max_line))]
    pub max_line: ByteSize,
    /// Shortest time between two connection attempts to one neighbour.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().link_retry))]
    pub link_retry: Interval,
    /// A connection attempt to a neighbour still pending after this long is abandoned and retried.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().link_connect_timeout))]
    pub link_connect_timeout: Interval,
    /// Bytes queued toward one neighbour before further updates to it are dropped (and counted).
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(Limits::default().link_queue_bytes))]
    pub link_queue_bytes: ByteSize,
    /// A link whose neighbour takes no bytes for this long is closed and reconnected.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().link_write_stall))]
    pub link_write_stall: Interval,
    /// Give up on a places request after this long (connecting and the one retry included).
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().upstream_timeout))]
    pub upstream_timeout: Interval,
    /// Kept-alive places connections held idle for reuse.
    #[arg(long, value_name = "COUNT", default_value_t = Limits::default().upstream_idle_max)]
    pub upstream_idle_max: usize,
    /// Replies gathered while handling one burst of input are written once they reach this size.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(Limits::default().flush_at))]
    pub flush_at: ByteSize,
    /// Output owed to one client past which its input is no longer read.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(Limits::default().pause_output))]
    pub pause_output: ByteSize,
    /// Output owed to one client past which it is disconnected.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(Limits::default().max_output))]
    pub max_output: ByteSize,
    /// A client that reads none of its replies for this long is disconnected.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().write_stall))]
    pub write_stall: Interval,
    /// Requests of one connection read but not yet answered past which reading it pauses.
    #[arg(long, value_name = "COUNT", default_value_t = Limits::default().max_in_flight)]
    pub max_in_flight: usize,
    /// Clients a server's location store holds; past it, a new client evicts the one stored longest ago.
    #[arg(long, value_name = "COUNT", default_value_t = Limits::default().max_clients)]
    pub max_clients: usize,
    /// Client connections a server holds at once; one accepted past it is closed at once.
    #[arg(long, value_name = "COUNT", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// The first pause after an accept error; it doubles on each further error.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().accept_backoff))]
    pub accept_backoff: Interval,
    /// The longest pause after repeated accept errors.
    #[arg(long, value_name = "DURATION", default_value_t = Interval(Limits::default().accept_backoff_max))]
    pub accept_backoff_max: Interval,
}

impl LimitsArgs {
    /// The limits these flags say.
    pub fn limits(&self) -> Limits {
        Limits {
            max_line: self.max_line.0,
            link_retry: self.link_retry.0,
            link_connect_timeout: self.link_connect_timeout.0,
            link_queue_bytes: self.link_queue_bytes.0,
            link_write_stall: self.link_write_stall.0,
            upstream_timeout: self.upstream_timeout.0,
            upstream_idle_max: self.upstream_idle_max,
            flush_at: self.flush_at.0,
            pause_output: self.pause_output.0,
            max_output: self.max_output.0,
            write_stall: self.write_stall.0,
            max_in_flight: self.max_in_flight,
            max_clients: self.max_clients,
            max_connections: self.max_connections,
            accept_backoff: self.accept_backoff.0,
            accept_backoff_max: self.accept_backoff_max.0,
        }
    }

    /// Every flag with its value, for a `harness serve` command line: `--max-line 64KiB …`.
    pub fn to_serve_args(&self) -> Vec<String> {
        self.to_args(ByteSize::to_string, Interval::to_string)
    }

    /// Every flag with its value in the plain units of the guest contract (guests/CONTRACT.md):
    /// sizes in bytes (`--max-line 65536`), durations in whole milliseconds (`--link-retry 100ms`;
    /// `250us` for one that is not), counts as numbers.
    pub fn to_guest_args(&self) -> Vec<String> {
        let plain_duration = |i: &Interval| {
            let us = i.0.as_micros();
            if us.is_multiple_of(1000) { format!("{}ms", us / 1000) } else { format!("{us}us") }
        };
        self.to_args(|b| b.0.to_string(), plain_duration)
    }

    fn to_args(&self, size: impl Fn(&ByteSize) -> String, duration: impl Fn(&Interval) -> String) -> Vec<String> {
        let flags: [(&str, String); 16] = [
            ("--max-line", size(&self.max_line)),
            ("--link-retry", duration(&self.link_retry)),
            ("--link-connect-timeout", duration(&self.link_connect_timeout)),
            ("--link-queue-bytes", size(&self.link_queue_bytes)),
            ("--link-write-stall", duration(&self.link_write_stall)),
            ("--upstream-timeout", duration(&self.upstream_timeout)),
            ("--upstream-idle-max", self.upstream_idle_max.to_string()),
            ("--flush-at", size(&self.flush_at)),
            ("--pause-output", size(&self.pause_output)),
            ("--max-output", size(&self.max_output)),
            ("--write-stall", duration(&self.write_stall)),
            ("--max-in-flight", self.max_in_flight.to_string()),
            ("--max-clients", self.max_clients.to_string()),
            ("--max-connections", self.max_connections.to_string()),
            ("--accept-backoff", duration(&self.accept_backoff)),
            ("--accept-backoff-max", duration(&self.accept_backoff_max)),
        ];
        flags.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect()
    }
}

impl From<&Limits> for LimitsArgs {
    fn from(l: &Limits) -> Self {
        Self {
            max_line: ByteSize(l.max_line),
            link_retry: Interval(l.link_retry),
            link_connect_timeout: Interval(l.link_connect_timeout),
            link_queue_bytes: ByteSize(l.link_queue_bytes),
            link_write_stall: Interval(l.link_write_stall),
            upstream_timeout: Interval(l.upstream_timeout),
            upstream_idle_max: l.upstream_idle_max,
            flush_at: ByteSize(l.flush_at),
            pause_output: ByteSize(l.pause_output),
            max_output: ByteSize(l.max_output),
            write_stall: Interval(l.write_stall),
            max_in_flight: l.max_in_flight,
            max_clients: l.max_clients,
            max_connections: l.max_connections,
            accept_backoff: Interval(l.accept_backoff),
            accept_backoff_max: Interval(l.accept_backoff_max),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitsArgs,
    }

    fn parse(args: &[&str]) -> Result<LimitsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("harness").chain(args.iter().copied())).map(|c| c.limits)
    }

    #[test]
    fn no_flags_are_the_core_defaults() {
        assert_eq!(parse(&[]).expect("parses").limits(), Limits::default());
    }

    #[test]
    fn flags_in_user_units() {
        let args = parse(&[
            "--max-line",
            "100",
            "--link-queue-bytes",
            "256KiB",
            "--link-write-stall",
            "2s",
            "--link-retry",
            "50ms",
            "--upstream-timeout",
            "1.5s",
            "--max-in-flight",
            "8",
        ])
        .expect("parses");
        let limits = args.limits();
        assert_eq!(limits.max_line, 100);
        assert_eq!(limits.link_queue_bytes, 256 * 1024);
        assert_eq!(limits.link_write_stall, Duration::from_secs(2));
        assert_eq!(limits.link_retry, Duration::from_millis(50));
        assert_eq!(limits.upstream_timeout, Duration::from_millis(1500));
        assert_eq!(limits.max_in_flight, 8);
        assert_eq!(limits.flush_at, Limits::default().flush_at, "flags left out keep their defaults");
    }

    #[test]
    fn serve_args_say_the_same_limits() {
        let limits = Limits {
            max_line: 1000,
            link_queue_bytes: 3 << 19,
            link_write_stall: Duration::from_millis(1500),
            accept_backoff: Duration::from_micros(250),
            ..Limits::default()
        };
        let args = LimitsArgs::from(&limits).to_serve_args();
        assert_eq!(args.len(), 32, "every field has its flag: {args:?}");
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(parse(&refs).expect("serve parses what run passes").limits(), limits);
        assert!(args.windows(2).any(|w| w == ["--link-queue-bytes", "1536KiB"]), "{args:?}");
        let plain = LimitsArgs::from(&limits).to_guest_args();
        let refs: Vec<&str> = plain.iter().map(String::as_str).collect();
        assert_eq!(parse(&refs).expect("serve parses what a guest is given").limits(), limits);
        for pair in [["--link-queue-bytes", "1572864"], ["--link-write-stall", "1500ms"], ["--accept-backoff", "250us"]]
        {
            assert!(plain.windows(2).any(|w| w == pair), "{pair:?} in {plain:?}");
        }
    }

    #[test]
    fn bad_values_say_what_to_type() {
        for (flag, value, hint) in [
            ("--link-queue-bytes", "1MB", "1MiB"),
            ("--max-line", "lots", "64KiB"),
            ("--link-retry", "soon", "500ms"),
            ("--max-in-flight", "-1", "-1"),
        ] {
            let err = parse(&[flag, value]).expect_err(value).to_string();
            assert!(err.contains(hint), "{flag} {value}: {err}");
        }
    }
}
