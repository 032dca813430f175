//! The places backend: a local HTTP/1.1 server that imitates the Google Places Nearby Search
//! endpoint, so herds can be measured without a key, a quota or the public network.
//!
//! Answers are a pure function of the query (`location` and `radius`): twenty places inside the
//! radius, generated from a hash of the query, in Google's JSON shape and field order. Latency and
//! faults (503, stall, truncated JSON) are drawn per request from a seeded generator, so a run's
//! mix of misfortunes is repeatable while the answers never depend on the seed. It must never be
//! the bottleneck: generation is a few microseconds, waiting is a timer, never a blocked thread.
//!
//! ```text
//! GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=10000&key=herdbench HTTP/1.1
//! Host: 127.0.0.1:18080
//!
//! HTTP/1.1 200 OK
//! content-type: application/json; charset=UTF-8
//! content-length: 7810
//! date: Mon, 23 Nov 2026 06:56:53 GMT
//!
//! {
//!   "html_attributions": [],
//!   "results": [
//!     {
//!       "geometry": {
//!         "location": {
//!           "lat": 34.1220361,
//!           "lng": -118.5052784
//!         }
//!       },
//!       "name": "Place 808a Book Store",
//!       "place_id": "ChIJndcMKO-PRL1DjmCLwSKmsh0",
//!       "rating": 5.0,
//!       "types": [
//!         "book_store",
//!         "store",
//!         "point_of_interest",
//!         "establishment"
//!       ],
//!       "vicinity": "5201 Cedar Way"
//!     },
//!     … 19 more …
//!   ],
//!   "status": "OK"
//! }
//! ```
//!
//! A query with |latitude| > 85 (the "polar" rule) gets `"status": "ZERO_RESULTS"` and no results;
//! a missing or invalid `location` or `radius` gets 400 and `"status": "INVALID_REQUEST"`, a method
//! other than GET 405; any other path gets 404. Faults replace the answer: a 503 with
//! `"status": "UNKNOWN_ERROR"`, the answer's first half under a correct Content-Length, or nothing
//! at all until the connection is closed after 60 s.
//!
//! # Outages
//! Besides the per-request draws, a running backend can be put into an outage by a signal, as
//! `harness run --scenario` does: [`OUTAGE_STALL`] (SIGUSR1) holds every request, those already
//! waiting and those arriving, until the outage ends, then answers them; [`OUTAGE_FAIL`] (SIGUSR2)
//! answers every request 503; [`OUTAGE_END`] (SIGHUP) ends either. The shutdown line counts them.
//!
//! # Layout
//! - `mod.rs` (here): [`PlacesArgs`], the `harness places` flags; [`PlacesConfig`], what [`serve`]
//!   needs, checked once before the first accept; [`LatencySpec`], the latency grammar.
//! - `answers.rs`: [`nearby_json`] and the response body, the deterministic answers (pure), as a
//!   JSON value for checks and as the exact response text for the server.
//! - `server.rs`: [`run`], [`serve`]: the accept loop, one hyper HTTP/1.1 connection per task, and
//!   per request: draw the fault and latency, route, wait, answer.
//! - `faults.rs`: what goes wrong with each request (503, stall, truncated JSON) and how late it
//!   is, drawn per request from the seed, and the tally printed at shutdown.

mod answers;
mod faults;
mod server;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::ensure;
use herd_record::units::parse_duration_with_unit;

pub use answers::{POLAR_LATITUDE, RESULTS_PER_QUERY, nearby_json};
pub use server::{MAX_RADIUS_M, run, serve};

/// Starts a stall outage: every request is held until [`OUTAGE_END`].
pub const OUTAGE_STALL: libc::c_int = libc::SIGUSR1;
/// Starts a failure outage: every request is answered 503 until [`OUTAGE_END`].
pub const OUTAGE_FAIL: libc::c_int = libc::SIGUSR2;
/// Ends an outage.
pub const OUTAGE_END: libc::c_int = libc::SIGHUP;

/// Longest a stalled request is held, and the longest latency accepted; past it the connection is
/// closed without an answer.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// CLI flags of `harness places`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlacesArgs {
    /// Address to listen on (loopback only is expected)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Latency added to every response: `0`, `20ms`, `uniform:10ms..30ms`, `exp:20ms` (exponential with that mean)
    #[arg(long, default_value = "0")]
    pub latency: LatencySpec,
    /// Fraction of requests answered 503 with a small JSON error body
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Fraction of requests that stall (never answered until the client gives up; held 60 s at most)
    #[arg(long, default_value_t = 0.0)]
    pub stall_rate: f64,
    /// Fraction of requests answered 200 with a malformed (truncated) JSON body
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Seed for the fault/latency draws (results themselves depend only on the query)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tokio worker threads (default 1: it must stay light next to the servers under test)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What [`serve`] needs: the latency and fault mix of a run. Rates are fractions of requests;
/// each request suffers at most one fault, so they must sum to at most 1 (see [`PlacesConfig::check`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacesConfig {
    pub latency: LatencySpec,
    pub fail_rate: f64,
    pub stall_rate: f64,
    pub malformed_rate: f64,
    pub seed: u64,
}

impl Default for PlacesConfig {
    /// A well-behaved backend: no latency, no faults.
    fn default() -> Self {
        Self { latency: LatencySpec::default(), fail_rate: 0.0, stall_rate: 0.0, malformed_rate: 0.0, seed: 1 }
    }
}

impl From<&PlacesArgs> for PlacesConfig {
    fn from(args: &PlacesArgs) -> Self {
        Self {
            latency: args.latency,
            fail_rate: args.fail_rate,
            stall_rate: args.stall_rate,
            malformed_rate: args.malformed_rate,
            seed: args.seed,
        }
    }
}

impl PlacesConfig {
    /// Refuses rates outside 0..=1 (or NaN) and rates that add up to more than 1.
    pub fn check(&self) -> anyhow::Result<()> {
        for (flag, rate) in [
            ("--fail-rate", self.fail_rate),
            ("--stall-rate", self.stall_rate),
            ("--malformed-rate", self.malformed_rate),
        ] {
            ensure!((0.0..=1.0).contains(&rate), "{flag} must be a fraction between 0 and 1, got {rate}");
        }
        let sum = self.fail_rate + self.stall_rate + self.malformed_rate;
        ensure!(
            sum <= 1.0 + 1e-9,
            "--fail-rate + --stall-rate + --malformed-rate is {sum}, but must not exceed 1: each request suffers at most one fault"
        );
        Ok(())
    }
}

/// Latency added before every answer: fixed, uniform between two bounds, or exponential with a
/// mean (a long tail, like a real upstream). Written `0`, `20ms`, `uniform:10ms..30ms`, `exp:20ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencySpec {
    Fixed(Duration),
    Uniform { low: Duration, high: Duration },
    Exponential { mean: Duration },
}

impl Default for LatencySpec {
    fn default() -> Self {
        Self::Fixed(Duration::ZERO)
    }
}

impl LatencySpec {
    /// The latency for one request, given a uniform draw `u` in `[0, 1)`; never above [`STALL_LIMIT`].
    pub fn sample(&self, u: f64) -> Duration {
        let u = u.clamp(0.0, 1.0);
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { low, high } => low + (high - low).mul_f64(u),
            Self::Exponential { mean } => {
                let secs = -mean.as_secs_f64() * (1.0 - u).max(f64::MIN_POSITIVE).ln();
                Duration::try_from_secs_f64(secs).map_or(STALL_LIMIT, |d| d.min(STALL_LIMIT))
            }
        }
    }
}

/// Why a `--latency` value was refused; its message says what to type instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySpecError {
    input: String,
    reason: String,
}

impl fmt::Display for LatencySpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid latency `{}`: {}; type `0`, `20ms`, `uniform:10ms..30ms` or `exp:20ms` (units ns, us, ms, s; at most 60s)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for LatencySpecError {}

impl FromStr for LatencySpec {
    type Err = LatencySpecError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| LatencySpecError { input: input.to_owned(), reason };
        let text = input.trim();
        if let Some(range) = text.strip_prefix("uniform:") {
            let (low, high) =
                range.split_once("..").ok_or_else(|| error("a uniform range is written `low..high`".into()))?;
            let (low, high) = (parse_duration(low).map_err(error)?, parse_duration(high).map_err(error)?);
            if low > high {
                return Err(error("the low end of the range is above the high end".into()));
            }
            Ok(Self::Uniform { low, high })
        } else if let Some(mean) = text.strip_prefix("exp:") {
            Ok(Self::Exponential { mean: parse_duration(mean).map_err(error)? })
        } else if text.contains(':') {
            Err(error("the only distributions are `uniform:` and `exp:`".into()))
        } else {
            Ok(Self::Fixed(parse_duration(text).map_err(error)?))
        }
    }
}

impl fmt::Display for LatencySpec {
    /// The canonical spelling, accepted back by `from_str`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fixed(d) => write_duration(f, d),
            Self::Uniform { low, high } => {
                f.write_str("uniform:")?;
                write_duration(f, low)?;
                f.write_str("..")?;
                write_duration(f, high)
            }
            Self::Exponential { mean } => {
                f.write_str("exp:")?;
                write_duration(f, mean)
            }
        }
    }
}

/// `20ms`, `1.5ms`, `250us`, `2s`, `0`: a non-negative number and a unit (only zero may omit it),
/// as every duration of the harness reads ([`parse_duration_with_unit`]), at most [`STALL_LIMIT`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration_with_unit(text)?;
    if d > STALL_LIMIT {
        return Err("latency above 60s is a stall; use --stall-rate for that".into());
    }
    Ok(d)
}

fn write_duration(f: &mut fmt::Formatter<'_>, d: Duration) -> fmt::Result {
    let nanos = d.as_nanos();
    match nanos {
        0 => f.write_str("0"),
        n if n % 1_000_000_000 == 0 => write!(f, "{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => write!(f, "{}us", n / 1_000),
        n => write!(f, "{n}ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::rng::SplitMix64;

    #[test]
    fn latency_specs_parse_and_print() {
        let ms = Duration::from_millis;
        for (text, spec) in [
            ("0", LatencySpec::Fixed(Duration::ZERO)),
            ("0ms", LatencySpec::Fixed(Duration::ZERO)),
            ("20ms", LatencySpec::Fixed(ms(20))),
            ("1.5ms", LatencySpec::Fixed(Duration::from_micros(1500))),
            ("250us", LatencySpec::Fixed(Duration::from_micros(250))),
            ("2s", LatencySpec::Fixed(ms(2000))),
            ("uniform:10ms..30ms", LatencySpec::Uniform { low: ms(10), high: ms(30) }),
            ("exp:20ms", LatencySpec::Exponential { mean: ms(20) }),
        ] {
            let parsed: LatencySpec = text.parse().expect(text);
            assert_eq!(parsed, spec, "{text}");
            assert_eq!(parsed.to_string().parse::<LatencySpec>().expect("round trip"), spec);
        }
        assert_eq!(LatencySpec::Uniform { low: ms(10), high: ms(30) }.to_string(), "uniform:10ms..30ms");
        for bad in
            ["", "20", "20 minutes", "-5ms", "fast", "uniform:30ms..10ms", "uniform:10ms", "normal:5ms", "exp:", "61s"]
        {
            let error = bad.parse::<LatencySpec>().expect_err(bad).to_string();
            assert!(error.contains(&format!("`{bad}`")) && error.contains("type `0`, `20ms`"), "{error}");
        }
    }

    #[test]
    fn latency_samples_stay_in_their_distribution() {
        let ms = Duration::from_millis;
        let uniform = LatencySpec::Uniform { low: ms(10), high: ms(30) };
        let exp = LatencySpec::Exponential { mean: ms(20) };
        let mut rng = SplitMix64::new(7);
        let mut total = Duration::ZERO;
        for _ in 0..10_000 {
            let d = uniform.sample(rng.next_f64());
            assert!(d >= ms(10) && d <= ms(30));
            total += exp.sample(rng.next_f64());
        }
        let mean = total / 10_000;
        assert!(mean > ms(18) && mean < ms(22), "{mean:?}");
        assert_eq!(LatencySpec::Exponential { mean: Duration::from_secs(10) }.sample(0.999_999), STALL_LIMIT);
    }

    #[test]
    fn rates_are_checked() {
        let with = |fail_rate, stall_rate| PlacesConfig { fail_rate, stall_rate, ..PlacesConfig::default() };
        assert!(with(0.5, 0.5).check().is_ok());
        assert!(with(1.5, 0.0).check().is_err());
        assert!(with(f64::NAN, 0.0).check().is_err());
        assert!(with(0.7, 0.7).check().is_err());
    }
}
