//! Fault injection: what goes wrong with each request (a 503, a stall, JSON cut in half) and how
//! late its answer is, drawn per request from a generator seeded by the run's seed and the
//! request's number: the n-th request of a run always draws the same, so a run's mix of
//! misfortunes is repeatable, while the answers themselves never depend on the seed. Each request
//! suffers at most one fault.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::PlacesConfig;
use crate::base::rng::{SplitMix64, mix64};

/// The body of an injected 503, in the shape of Google's errors.
pub(super) const UNAVAILABLE_BODY: &str = "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"UNKNOWN_ERROR\",\n  \"error_message\": \"injected fault: service unavailable\"\n}";

/// What happens to one request, drawn before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    /// Answered 503 with [`UNAVAILABLE_BODY`].
    Fail,
    /// Never answered: held until the client gives up ([`super::STALL_LIMIT`] at most).
    Stall,
    /// Answered 200 with the first half of the JSON under a correct Content-Length.
    Malformed,
}

/// The service's error: the request was stalled, so hyper closes the connection without answering.
#[derive(Debug)]
pub(super) struct Stalled;

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request stalled on purpose")
    }
}

impl std::error::Error for Stalled {}

/// The draws of one server: its latency and fault mix, and what it has injected so far. Displays as
/// the tally printed at shutdown.
#[derive(Debug)]
pub(super) struct Faults {
    config: PlacesConfig,
    tally: Tally,
}

impl Faults {
    pub(super) fn new(config: PlacesConfig) -> Self {
        Self { config, tally: Tally::default() }
    }

    /// The fault and latency of the next request: the n-th request of a run always draws the same.
    pub(super) fn draw(&self) -> (Fault, Duration) {
        let n = self.tally.requests.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(mix64(self.config.seed ^ mix64(n)));
        let u = rng.next_f64();
        let c = &self.config;
        let fault = if u < c.fail_rate {
            Fault::Fail
        } else if u < c.fail_rate + c.stall_rate {
            Fault::Stall
        } else if u < c.fail_rate + c.stall_rate + c.malformed_rate {
            Fault::Malformed
        } else {
            Fault::None
        };
        match fault {
            Fault::None => {}
            Fault::Fail => _ = self.tally.failed.fetch_add(1, Ordering::Relaxed),
            Fault::Stall => _ = self.tally.stalled.fetch_add(1, Ordering::Relaxed),
            Fault::Malformed => _ = self.tally.malformed.fetch_add(1, Ordering::Relaxed),
        }
        (fault, c.latency.sample(rng.next_f64()))
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.tally.fmt(f)
    }
}

/// Requests seen and faults injected, printed when [`super::serve`] returns.
#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    stalled: AtomicU64,
    malformed: AtomicU64,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write!(
            f,
            "{} requests; injected {} failures, {} stalls, {} malformed bodies",
            get(&self.requests),
            get(&self.failed),
            get(&self.stalled),
            get(&self.malformed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_request_always_draws_the_same() {
        let config = PlacesConfig {
            latency: "exp:20ms".parse().expect("valid"),
            fail_rate: 0.2,
            stall_rate: 0.1,
            malformed_rate: 0.1,
            seed: 7,
        };
        let (a, b) = (Faults::new(config.clone()), Faults::new(config));
        let draws: Vec<(Fault, Duration)> = (0..1000).map(|_| a.draw()).collect();
        assert_eq!(draws, (0..1000).map(|_| b.draw()).collect::<Vec<_>>());
        let count = |fault| draws.iter().filter(|(f, _)| *f == fault).count();
        assert!((150..250).contains(&count(Fault::Fail)), "{}", count(Fault::Fail));
        assert!((60..140).contains(&count(Fault::Stall)), "{}", count(Fault::Stall));
        assert!((60..140).contains(&count(Fault::Malformed)), "{}", count(Fault::Malformed));
        let tally = a.to_string();
        assert!(
            tally.starts_with("1000 requests; injected ") && tally.contains(&format!("{} stalls", count(Fault::Stall)))
        );
    }

    #[test]
    fn the_unavailable_body_is_pretty_printed_json() {
        let v: serde_json::Value = serde_json::from_str(UNAVAILABLE_BODY).expect("JSON");
        assert_eq!(serde_json::to_string_pretty(&v).expect("prints"), UNAVAILABLE_BODY);
    }
}
