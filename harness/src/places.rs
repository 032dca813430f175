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
//! # Layout
//! - [`PlacesArgs`], [`LatencySpec`]: the `harness places` flags and the latency grammar.
//! - [`PlacesConfig`]: what [`serve`] needs, checked once before the first accept.
//! - [`nearby_json`], `nearby_body`, `places`: the deterministic answers (pure), as a JSON value
//!   for checks and as the exact response text for the server.
//! - [`run`], [`serve`], `serve_connection`, `respond`: the accept loop, one hyper HTTP/1.1
//!   connection per task, and per request: draw the fault and latency, route, wait, answer.
//! - `SplitMix64`: the tiny generator behind both the answers and the draws.

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use herd_core::places::NEARBY_PATH;

/// Google's cap on `radius`, in metres; larger values are refused as the real API refuses them.
pub const MAX_RADIUS_M: u32 = 50_000;
/// Places in every OK answer: Google's page size, and the largest WHATSAT bound, so trimming to the
/// bound is exercised by every query.
pub const RESULTS_PER_QUERY: usize = 20;
/// Beyond this |latitude| the answer is `ZERO_RESULTS` (the "polar" rule), so clients can reach the
/// empty case deterministically.
pub const POLAR_LATITUDE: f64 = 85.0;
/// Longest a stalled request is held, and the longest latency accepted; past it the connection is
/// closed without an answer.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How long shutdown waits for answers already being prepared before dropping the connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Mean Earth radius (IUGG), for placing results on the sphere.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

const JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json; charset=UTF-8");
const INVALID_REQUEST_BODY: &str =
    "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"INVALID_REQUEST\"\n}";
const UNAVAILABLE_BODY: &str = "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"UNKNOWN_ERROR\",\n  \"error_message\": \"injected fault: service unavailable\"\n}";
const NOT_FOUND_BODY: &str = "{\n  \"error_message\": \"not found; the only endpoint is GET /maps/api/place/nearbysearch/json\",\n  \"status\": \"NOT_FOUND\"\n}";
const INTERNAL_ERROR_BODY: &str =
    "{\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"UNKNOWN_ERROR\"\n}";

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
    reason: &'static str,
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
        let error = |reason| LatencySpecError { input: input.to_owned(), reason };
        let text = input.trim();
        if let Some(range) = text.strip_prefix("uniform:") {
            let (low, high) = range.split_once("..").ok_or_else(|| error("a uniform range is written `low..high`"))?;
            let (low, high) = (parse_duration(low).map_err(error)?, parse_duration(high).map_err(error)?);
            if low > high {
                return Err(error("the low end of the range is above the high end"));
            }
            Ok(Self::Uniform { low, high })
        } else if let Some(mean) = text.strip_prefix("exp:") {
            Ok(Self::Exponential { mean: parse_duration(mean).map_err(error)? })
        } else if text.contains(':') {
            Err(error("the only distributions are `uniform:` and `exp:`"))
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

/// `20ms`, `1.5ms`, `250us`, `2s`, `0`: a non-negative decimal number and a unit (only zero may omit it).
fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic() || c == 'µ').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("a duration is a number followed by a unit, like `20ms`");
    }
    let value: f64 = number.parse().map_err(|_| "a duration is a number followed by a unit, like `20ms`")?;
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "" if value == 0.0 => 0.0,
        "" => return Err("the duration has no unit"),
        _ => return Err("unknown unit"),
    };
    let nanos = (value * nanos_per_unit).round();
    if nanos > STALL_LIMIT.as_nanos() as f64 {
        return Err("latency above 60s is a stall; use --stall-rate for that");
    }
    Ok(Duration::from_nanos(nanos as u64))
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

// ---------------------------------------------------------------------------------------------
// The answers: a pure function of the query.

/// Deterministic Nearby Search JSON for a query (pure function, unit-testable). The server's body
/// is exactly `serde_json::to_string_pretty` of this value, written directly without building it,
/// so a load generator can compute the places part of a WHATSAT reply without asking the backend.
#[allow(dead_code, reason = "public API for reply checks and tests; the server writes the same text directly")]
pub fn nearby_json(lat: f64, lon: f64, radius_m: u32) -> serde_json::Value {
    let results: Vec<serde_json::Value> = places(lat, lon, radius_m).map(|place| place.to_json()).collect();
    serde_json::json!({ "html_attributions": [], "results": results, "status": status(lat) })
}

/// The response body for a query: the text of [`nearby_json`], pretty-printed as serde_json does,
/// appended piece by piece to one buffer (no intermediate strings or maps on the hot path).
fn nearby_body(lat: f64, lon: f64, radius_m: u32) -> Result<Bytes, serde_json::Error> {
    // Twenty places take about 7.8 kB; one allocation, no regrowth.
    let mut out = Vec::with_capacity(10 * 1024);
    out.extend_from_slice(b"{\n  \"html_attributions\": [],\n  \"results\": [");
    let mut empty = true;
    for place in places(lat, lon, radius_m) {
        out.extend_from_slice(if empty { b"\n" } else { b",\n" });
        place.write_pretty(&mut out)?;
        empty = false;
    }
    out.extend_from_slice(if empty { b"],\n  \"status\": \"" } else { b"\n  ],\n  \"status\": \"" });
    out.extend_from_slice(status(lat).as_bytes());
    out.extend_from_slice(b"\"\n}");
    Ok(Bytes::from(out))
}

/// `ZERO_RESULTS` beyond [`POLAR_LATITUDE`], `OK` elsewhere.
fn status(lat: f64) -> &'static str {
    if lat.abs() > POLAR_LATITUDE { "ZERO_RESULTS" } else { "OK" }
}

/// One kind of place: the word in its name and the Google `types` it carries.
#[derive(Debug)]
struct Kind {
    word: &'static str,
    types: &'static [&'static str],
}

const KINDS: &[Kind] = &[
    Kind { word: "Cafe", types: &["cafe", "food", "point_of_interest", "establishment"] },
    Kind { word: "Restaurant", types: &["restaurant", "food", "point_of_interest", "establishment"] },
    Kind { word: "Bakery", types: &["bakery", "food", "store", "point_of_interest", "establishment"] },
    Kind { word: "Bar", types: &["bar", "point_of_interest", "establishment"] },
    Kind { word: "Park", types: &["park", "point_of_interest", "establishment"] },
    Kind { word: "Library", types: &["library", "point_of_interest", "establishment"] },
    Kind { word: "Museum", types: &["museum", "tourist_attraction", "point_of_interest", "establishment"] },
    Kind { word: "Pharmacy", types: &["pharmacy", "health", "store", "point_of_interest", "establishment"] },
    Kind { word: "Book Store", types: &["book_store", "store", "point_of_interest", "establishment"] },
    Kind { word: "Gym", types: &["gym", "health", "point_of_interest", "establishment"] },
];

const STREETS: &[&str] =
    &["Main Street", "Oak Avenue", "Cedar Way", "Hill Road", "Lake Drive", "Park Lane", "Mill Street", "Elm Court"];

/// Length of a place id: `ChIJ` and 23 URL-safe base64 characters, like Google's.
const PLACE_ID_LEN: usize = 27;

/// One generated place, as plain data: written out by [`Place::write_pretty`] (the server) or
/// turned into a JSON value by [`Place::to_json`] (everyone else), both from the same fields.
#[derive(Debug)]
struct Place {
    /// Degrees, rounded to the 7 decimals Google prints.
    lat: f64,
    lng: f64,
    /// The 4 hex digits of the name: "Place 808a Book Store".
    tag: u16,
    kind: &'static Kind,
    place_id: [u8; PLACE_ID_LEN],
    /// 10..=50: the rating 1.0..=5.0 in tenths.
    rating_tenths: u8,
    /// The vicinity: "5201 Cedar Way".
    number: u16,
    street: &'static str,
}

/// The places of a query, in order: twenty spread uniformly over the disc of `radius_m` around the
/// point, drawn from a generator seeded by the query; none beyond [`POLAR_LATITUDE`].
fn places(lat: f64, lon: f64, radius_m: u32) -> impl Iterator<Item = Place> {
    let count = if lat.abs() > POLAR_LATITUDE { 0 } else { RESULTS_PER_QUERY };
    let mut rng = SplitMix64::new(mix64(mix64(mix64(lat.to_bits()) ^ lon.to_bits()) ^ u64::from(radius_m)));
    let (phi1, lambda1) = (lat.to_radians(), lon.to_radians());
    (0..count).map(move |_| {
        // sqrt makes the spread uniform over the disc's area; 0.999 leaves room for the rounding
        // to 7 decimals, so every place stays inside the radius.
        let distance = 0.999 * f64::from(radius_m) * rng.next_f64().sqrt();
        let bearing = std::f64::consts::TAU * rng.next_f64();
        let delta = distance / EARTH_RADIUS_M;
        // Great-circle destination from (phi1, lambda1).
        let phi2 = (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * bearing.cos()).clamp(-1.0, 1.0).asin();
        let lambda2 = lambda1 + (bearing.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * phi2.sin());
        let lng = (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
        // The draws below happen in this order; changing it changes every answer.
        let kind = &KINDS[rng.below(KINDS.len() as u64) as usize];
        let tag = (rng.next_u64() >> 48) as u16;
        let place_id = place_id(&mut rng);
        let rating_tenths = 10 + rng.below(41) as u8;
        let number = 1 + rng.below(9999) as u16;
        let street = STREETS[rng.below(STREETS.len() as u64) as usize];
        Place { lat: round7(phi2.to_degrees()), lng: round7(lng), tag, kind, place_id, rating_tenths, number, street }
    })
}

impl Place {
    /// Appends the place as serde_json's pretty printer writes it inside `results`. Every string
    /// is plain ASCII from the tables above, so nothing needs escaping; the coordinates go through
    /// serde_json itself so they are spelled exactly as in [`nearby_json`].
    fn write_pretty(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"    {\n      \"geometry\": {\n        \"location\": {\n          \"lat\": ");
        serde_json::to_writer(&mut *out, &self.lat)?;
        out.extend_from_slice(b",\n          \"lng\": ");
        serde_json::to_writer(&mut *out, &self.lng)?;
        out.extend_from_slice(b"\n        }\n      },\n      \"name\": \"");
        self.write_name(out);
        out.extend_from_slice(b"\",\n      \"place_id\": \"");
        out.extend_from_slice(&self.place_id);
        out.extend_from_slice(b"\",\n      \"rating\": ");
        out.extend_from_slice(&[b'0' + self.rating_tenths / 10, b'.', b'0' + self.rating_tenths % 10]);
        out.extend_from_slice(b",\n      \"types\": [");
        for (i, kind_type) in self.kind.types.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n        \"" } else { b",\n        \"" });
            out.extend_from_slice(kind_type.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"\n      ],\n      \"vicinity\": \"");
        self.write_vicinity(out);
        out.extend_from_slice(b"\"\n    }");
        Ok(())
    }

    /// The same place as a JSON value, keys in Google's order.
    fn to_json(&self) -> serde_json::Value {
        let text = |write: fn(&Self, &mut Vec<u8>)| {
            let mut bytes = Vec::new();
            write(self, &mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        };
        serde_json::json!({
            "geometry": { "location": { "lat": self.lat, "lng": self.lng } },
            "name": text(Self::write_name),
            "place_id": String::from_utf8_lossy(&self.place_id),
            "rating": f64::from(self.rating_tenths) / 10.0,
            "types": self.kind.types,
            "vicinity": text(Self::write_vicinity),
        })
    }

    /// `Place 808a Book Store`.
    fn write_name(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(b"Place ");
        out.extend([12, 8, 4, 0].map(|shift| HEX[usize::from((self.tag >> shift) & 15)]));
        out.push(b' ');
        out.extend_from_slice(self.kind.word.as_bytes());
    }

    /// `5201 Cedar Way`.
    fn write_vicinity(&self, out: &mut Vec<u8>) {
        let mut digits = [0u8; 5];
        let mut start = digits.len();
        let mut n = self.number;
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[start..]);
        out.push(b' ');
        out.extend_from_slice(self.street.as_bytes());
    }
}

/// Google prints coordinates with 7 decimals.
fn round7(degrees: f64) -> f64 {
    (degrees * 1e7).round() / 1e7
}

/// A Google-looking place id: `ChIJ` and 23 URL-safe base64 characters.
fn place_id(rng: &mut SplitMix64) -> [u8; PLACE_ID_LEN] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = [0u8; PLACE_ID_LEN];
    id[..4].copy_from_slice(b"ChIJ");
    let (mut bits, mut left) = (0, 0);
    for slot in &mut id[4..] {
        if left < 6 {
            bits = rng.next_u64();
            left = 64;
        }
        *slot = ALPHABET[(bits & 63) as usize];
        bits >>= 6;
        left -= 6;
    }
    id
}

/// A Nearby Search query as read from the request target.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NearbyQuery {
    lat: f64,
    lon: f64,
    radius_m: u32,
}

impl NearbyQuery {
    /// `location=LAT,LON&radius=R` in any order among other parameters (`key` is not checked).
    /// `None` for a missing or invalid location (out of range, not finite) or radius (not an
    /// integer in 0..=50000).
    fn parse(query: &str) -> Option<Self> {
        let (mut location, mut radius) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("location", value)) => location = Some(value),
                Some(("radius", value)) => radius = Some(value),
                _ => {}
            }
        }
        let location = location?;
        let (lat, lon) =
            location.split_once(',').or_else(|| location.split_once("%2C")).or_else(|| location.split_once("%2c"))?;
        let degrees = |text: &str, limit: f64| text.parse::<f64>().ok().filter(|v| v.is_finite() && v.abs() <= limit);
        let radius_m = radius?.parse::<u32>().ok().filter(|r| *r <= MAX_RADIUS_M)?;
        Some(Self { lat: degrees(lat, 90.0)?, lon: degrees(lon, 180.0)?, radius_m })
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

/// Blocking entry point of `harness places`: builds a tokio runtime, binds, prints exactly one line
/// `places listening on <addr>` to stdout (flushed), serves until SIGTERM or SIGINT, then returns Ok.
pub fn run(args: &PlacesArgs) -> anyhow::Result<()> {
    let config = PlacesConfig::from(args);
    config.check()?;
    ensure!(args.threads >= 1, "--threads must be at least 1");
    if !args.listen.ip().is_loopback() {
        eprintln!("places: warning: listening on {}, not loopback; the backend is meant for local runs", args.listen);
    }
    // One worker: the current-thread runtime, no hand-offs between threads.
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .context("building the places runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding the places backend to {}", args.listen))?;
        let addr = listener.local_addr().context("reading the places listener's address")?;
        let shutdown = shutdown_signal()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "places listening on {addr}").and_then(|()| out.flush()).context("writing to stdout")?;
        }
        serve(listener, config, shutdown).await
    })
}

/// Resolves on the first SIGTERM or SIGINT; registered before the address is printed, so a signal
/// sent right after reading that line is never lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Serves on an already bound listener until `shutdown` resolves (for in-process tests).
///
/// On shutdown it stops accepting, closes idle connections, lets answers under way finish for up
/// to two seconds (stalled requests are released at once), drops what is left, and prints one
/// line to stderr: the requests seen and the faults injected.
pub async fn serve(
    listener: TcpListener,
    config: PlacesConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.check()?;
    let mut http = http1::Builder::new();
    // No timer is installed, so no header timeout; a kept-alive connection may idle indefinitely,
    // as a herd server's pooled upstream connection does between WHATSATs.
    http.keep_alive(true).header_read_timeout(None);
    let shared = Arc::new(Shared { config, http, stop: watch::Sender::new(false), tally: Tally::default() });
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Per-connection failures (reset before accept) and running out of descriptors:
                    // neither ends the server; back off a little so the latter does not spin.
                    eprintln!("places: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    shared.stop.send_replace(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.shutdown().await;
    }
    eprintln!("places: {}", shared.tally);
    Ok(())
}

/// What every connection task shares: the configuration, the HTTP settings, the shutdown flag and
/// the per-request draw counter.
struct Shared {
    config: PlacesConfig,
    http: http1::Builder,
    /// Turns true once when the server shuts down.
    stop: watch::Sender<bool>,
    tally: Tally,
}

/// One kept-alive HTTP/1.1 connection, until the peer closes it or the server shuts down.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Answers are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let mut stop = shared.stop.subscribe();
    let for_requests = Arc::clone(&shared);
    let service = service_fn(move |request| respond(request, Arc::clone(&for_requests)));
    let mut connection = std::pin::pin!(shared.http.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        // Peer errors (resets, garbage, a stall's deliberate close) end only this connection.
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// What happens to one request, drawn before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Fail,
    Stall,
    Malformed,
}

/// The service's error: the request was stalled, so hyper closes the connection without answering.
#[derive(Debug)]
struct Stalled;

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request stalled on purpose")
    }
}

impl std::error::Error for Stalled {}

/// One request: draw its fault and latency, prepare the answer, wait, answer.
async fn respond(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Stalled> {
    let (fault, latency) = shared.draw();
    if fault == Fault::Stall {
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            () = tokio::time::sleep(STALL_LIMIT) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
        return Err(Stalled);
    }
    let mut answer = match fault {
        Fault::Fail => {
            Answer { status: StatusCode::SERVICE_UNAVAILABLE, body: Bytes::from_static(UNAVAILABLE_BODY.as_bytes()) }
        }
        _ => route(&request),
    };
    drop(request);
    if fault == Fault::Malformed {
        // Valid HTTP framing around JSON cut in half: only the JSON parser can notice.
        answer = Answer { status: StatusCode::OK, body: answer.body.slice(..answer.body.len() / 2) };
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let allow_get = answer.status == StatusCode::METHOD_NOT_ALLOWED;
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
    if allow_get {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
    }
    Ok(response)
}

/// A status and a complete body; hyper adds Content-Length from the body's exact size.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// The answer a well-behaved backend gives.
fn route(request: &Request<Incoming>) -> Answer {
    let uri = request.uri();
    if uri.path() != NEARBY_PATH {
        return Answer { status: StatusCode::NOT_FOUND, body: Bytes::from_static(NOT_FOUND_BODY.as_bytes()) };
    }
    let invalid = |status| Answer { status, body: Bytes::from_static(INVALID_REQUEST_BODY.as_bytes()) };
    if request.method() != Method::GET {
        return invalid(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(query) = NearbyQuery::parse(uri.query().unwrap_or("")) else {
        return invalid(StatusCode::BAD_REQUEST);
    };
    match nearby_body(query.lat, query.lon, query.radius_m) {
        Ok(body) => Answer { status: StatusCode::OK, body },
        Err(_) => Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::from_static(INTERNAL_ERROR_BODY.as_bytes()),
        },
    }
}

impl Shared {
    /// The fault and latency of the next request: the n-th request of a run always draws the same.
    fn draw(&self) -> (Fault, Duration) {
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

/// Requests seen and faults injected, printed when [`serve`] returns.
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

// ---------------------------------------------------------------------------------------------
// The generator.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to scatter places and draw faults.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (multiply-high, no division).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// SplitMix64's finaliser: a bijective scramble of all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::Location;
    use herd_core::places::{Decoded, HttpResponse, PlacesQuery, decode_response, trim_places};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::{Instant, timeout};

    const UCLA: (f64, f64) = (34.068930, -118.445127);

    fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }

    #[test]
    fn nearby_json_is_deterministic_and_google_shaped() {
        let a = nearby_json(UCLA.0, UCLA.1, 10_000);
        assert_eq!(a, nearby_json(UCLA.0, UCLA.1, 10_000));
        assert_ne!(a, nearby_json(UCLA.0, UCLA.1, 10_001));
        assert_ne!(a, nearby_json(UCLA.0 + 1e-6, UCLA.1, 10_000));
        let top: Vec<&str> = a.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(top, ["html_attributions", "results", "status"]);
        assert_eq!(a["status"], "OK");
        assert_eq!(a["html_attributions"], serde_json::json!([]));
        let results = a["results"].as_array().expect("results");
        assert_eq!(results.len(), RESULTS_PER_QUERY);
        for place in results {
            let keys: Vec<&str> = place.as_object().expect("object").keys().map(String::as_str).collect();
            assert_eq!(keys, ["geometry", "name", "place_id", "rating", "types", "vicinity"]);
            let name = place["name"].as_str().expect("name");
            assert!(name.starts_with("Place ") && KINDS.iter().any(|k| name.ends_with(k.word)), "{name}");
            let id = place["place_id"].as_str().expect("id");
            assert!(id.starts_with("ChIJ") && id.len() == 27, "{id}");
            let rating = place["rating"].as_f64().expect("rating");
            assert!((1.0..=5.0).contains(&rating) && ((rating * 10.0).round() - rating * 10.0).abs() < 1e-9);
            assert!(KINDS.iter().any(|k| serde_json::json!(k.types) == place["types"]));
            assert!(!place["vicinity"].as_str().expect("vicinity").is_empty());
        }
        let names: std::collections::HashSet<&str> = results.iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.len() > 15, "names should mostly differ: {names:?}");
    }

    #[test]
    fn every_place_lies_within_the_radius() {
        for (lat, lon, radius) in [
            (UCLA.0, UCLA.1, 10_000),
            (UCLA.0, UCLA.1, 50_000),
            (0.0, 179.99, 50_000),
            (-84.9, -179.9, 50_000),
            (51.5, -0.12, 100),
            (12.0, 34.0, 0),
        ] {
            let json = nearby_json(lat, lon, radius);
            for place in json["results"].as_array().expect("results") {
                let at = &place["geometry"]["location"];
                let (plat, plng) = (at["lat"].as_f64().expect("lat"), at["lng"].as_f64().expect("lng"));
                assert!((-180.0..=180.0).contains(&plng));
                let d = haversine_m(lat, lon, plat, plng);
                assert!(d <= f64::from(radius) + 0.01, "{d} m from ({lat},{lon}) with radius {radius}");
            }
        }
    }

    #[test]
    fn polar_queries_have_zero_results() {
        for lat in [85.000001, -85.5, 90.0, -90.0] {
            let json = nearby_json(lat, 10.0, 10_000);
            assert_eq!(json["status"], "ZERO_RESULTS");
            assert_eq!(json["results"], serde_json::json!([]));
        }
        assert_eq!(nearby_json(85.0, 10.0, 10_000)["status"], "OK");
    }

    #[test]
    fn the_served_body_is_the_pretty_printed_json() {
        // Tiny coordinates (printed in exponent form), the antimeridian, radius 0, the polar rule.
        for (lat, lon, radius) in
            [(UCLA.0, UCLA.1, 10_000), (0.0, 0.0, 5), (0.0, 0.0, 0), (-0.5, 179.9999, 50_000), (89.0, 1.0, 10)]
        {
            let body = nearby_body(lat, lon, radius).expect("serializes");
            let expected = serde_json::to_string_pretty(&nearby_json(lat, lon, radius)).expect("prints");
            assert_eq!(std::str::from_utf8(&body).expect("utf8"), expected, "({lat},{lon}) r={radius}");
        }
        for constant in [INVALID_REQUEST_BODY, UNAVAILABLE_BODY, NOT_FOUND_BODY, INTERNAL_ERROR_BODY] {
            let v: serde_json::Value = serde_json::from_str(constant).expect("constant bodies are JSON");
            assert_eq!(serde_json::to_string_pretty(&v).expect("prints"), constant);
        }
    }

    #[test]
    fn queries_parse_like_the_api() {
        let q = NearbyQuery::parse("location=34.068930,-118.445127&radius=10000&key=x").expect("valid");
        assert_eq!(q, NearbyQuery { lat: UCLA.0, lon: UCLA.1, radius_m: 10_000 });
        assert_eq!(
            NearbyQuery::parse("key=x&radius=5&location=-1.5%2C2"),
            Some(NearbyQuery { lat: -1.5, lon: 2.0, radius_m: 5 })
        );
        for bad in [
            "",
            "radius=10",
            "location=1,2",
            "location=1;2&radius=10",
            "location=91,2&radius=10",
            "location=1,181&radius=10",
            "location=inf,2&radius=10",
            "location=NaN,2&radius=10",
            "location=1,2&radius=50001",
            "location=1,2&radius=-1",
            "location=1,2&radius=1.5",
        ] {
            assert_eq!(NearbyQuery::parse(bad), None, "{bad}");
        }
    }

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

    /// An in-process backend on 127.0.0.1 with an ephemeral port.
    struct TestServer {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<()>>,
    }

    impl TestServer {
        async fn start(config: PlacesConfig) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
            let addr = listener.local_addr().expect("local addr");
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, config, async move {
                let _ = stopped.await;
            }));
            Self { addr, stop, task }
        }

        async fn connect(&self) -> Client {
            Client { stream: TcpStream::connect(self.addr).await.expect("connect"), buf: Vec::new() }
        }

        async fn shut_down(self) {
            let _ = self.stop.send(());
            timeout(Duration::from_secs(1), self.task)
                .await
                .expect("shuts down within a second")
                .expect("serve did not panic")
                .expect("serve returned Ok");
        }
    }

    /// A raw HTTP/1.1 client over one connection, decoding with herd-core like the herd servers do.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn send(&mut self, request: &[u8]) {
            let mut rest = request;
            while !rest.is_empty() {
                self.stream.writable().await.expect("writable");
                match self.stream.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write failed: {e}"),
                }
            }
        }

        async fn get(&mut self, target: &str) -> HttpResponse {
            self.send(format!("GET {target} HTTP/1.1\r\nHost: places\r\n\r\n").as_bytes()).await;
            self.response().await
        }

        /// Reads more bytes; `None` at end of stream.
        async fn read_some(&mut self) -> Option<usize> {
            loop {
                self.stream.readable().await.expect("readable");
                let mut chunk = [0u8; 16 * 1024];
                match self.stream.try_read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        return Some(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }

        async fn response(&mut self) -> HttpResponse {
            timeout(Duration::from_secs(1), async {
                loop {
                    if let Decoded::Complete(response) = decode_response(&self.buf).expect("valid HTTP") {
                        return response;
                    }
                    self.read_some().await.expect("connection open until the response is complete");
                }
            })
            .await
            .expect("response within a second")
        }

        /// The head of the response at the start of the buffer, lowercased, then drops that response.
        fn take_head(&mut self, response: &HttpResponse) -> String {
            let head = String::from_utf8_lossy(&self.buf[..response.consumed - response.body.len()]).to_lowercase();
            self.buf.drain(..response.consumed);
            head
        }
    }

    #[tokio::test]
    async fn two_requests_on_one_kept_alive_connection() {
        let server = TestServer::start(PlacesConfig::default()).await;
        let mut client = server.connect().await;
        let location = Location::parse("+34.068930-118.445127").expect("valid location");
        for bound in [3u8, 20] {
            let query = PlacesQuery { location: location.clone(), radius_m: 10_000, bound };
            client.send(&query.encode_request(&server.addr.to_string())).await;
            let response = client.response().await;
            assert_eq!(response.status, 200);
            assert!(response.keep_alive);
            let head = client.take_head(&response);
            assert!(head.contains("content-type: application/json; charset=utf-8"), "{head}");
            assert!(head.contains(&format!("content-length: {}", response.body.len())), "{head}");
            let expected = serde_json::to_string_pretty(&nearby_json(UCLA.0, UCLA.1, 10_000)).expect("prints");
            assert_eq!(response.body, expected.as_bytes());
            let trimmed: serde_json::Value =
                serde_json::from_str(&trim_places(&response.body, bound).expect("valid places JSON")).expect("json");
            assert_eq!(trimmed["status"], "OK");
            assert_eq!(trimmed["results"].as_array().map(Vec::len), Some(usize::from(bound)));
        }
        server.shut_down().await;
    }

    #[tokio::test]
    async fn bad_queries_get_400_and_other_paths_404() {
        let server = TestServer::start(PlacesConfig::default()).await;
        let mut client = server.connect().await;
        for target in [
            format!("{NEARBY_PATH}?radius=10&key=x"),
            format!("{NEARBY_PATH}?location=34.1,-118.4&key=x"),
            format!("{NEARBY_PATH}?location=abc&radius=10"),
            NEARBY_PATH.to_owned(),
        ] {
            let response = client.get(&target).await;
            assert_eq!(response.status, 400, "{target}");
            let json: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
            assert_eq!(json, serde_json::json!({"html_attributions": [], "results": [], "status": "INVALID_REQUEST"}));
            client.take_head(&response);
        }
        let response = client.get("/maps/api/place/textsearch/json?query=x").await;
        assert_eq!(response.status, 404);
        client.take_head(&response);
        let polar = client.get(&format!("{NEARBY_PATH}?location=89.9,0&radius=10")).await;
        assert_eq!(polar.status, 200);
        let json: serde_json::Value = serde_json::from_slice(&polar.body).expect("json");
        assert_eq!(json["status"], "ZERO_RESULTS");
        server.shut_down().await;
    }

    #[tokio::test]
    async fn fail_rate_one_answers_503() {
        let server = TestServer::start(PlacesConfig { fail_rate: 1.0, ..PlacesConfig::default() }).await;
        let mut client = server.connect().await;
        for _ in 0..2 {
            let response = client.get(&format!("{NEARBY_PATH}?location=1,2&radius=10")).await;
            assert_eq!(response.status, 503);
            let json: serde_json::Value = serde_json::from_slice(&response.body).expect("a JSON error body");
            assert_eq!(json["status"], "UNKNOWN_ERROR");
            client.take_head(&response);
        }
        server.shut_down().await;
    }

    #[tokio::test]
    async fn malformed_rate_one_answers_truncated_json() {
        let server = TestServer::start(PlacesConfig { malformed_rate: 1.0, ..PlacesConfig::default() }).await;
        let mut client = server.connect().await;
        let response = client.get(&format!("{NEARBY_PATH}?location=34.068930,-118.445127&radius=10000")).await;
        assert_eq!(response.status, 200);
        assert!(!response.body.is_empty());
        assert!(trim_places(&response.body, 5).is_err(), "a truncated body must be rejected");
        server.shut_down().await;
    }

    #[tokio::test]
    async fn stalls_hold_the_request_and_shutdown_releases_them() {
        let server = TestServer::start(PlacesConfig { stall_rate: 1.0, ..PlacesConfig::default() }).await;
        let mut client = server.connect().await;
        client
            .send(format!("GET {NEARBY_PATH}?location=1,2&radius=10 HTTP/1.1\r\nHost: places\r\n\r\n").as_bytes())
            .await;
        assert!(timeout(Duration::from_millis(200), client.read_some()).await.is_err(), "no answer while stalled");
        let started = Instant::now();
        server.shut_down().await;
        assert!(started.elapsed() < Duration::from_millis(500));
        // The stalled request was never answered: the connection just closes.
        assert_eq!(timeout(Duration::from_secs(1), client.read_some()).await.expect("closed promptly"), None);
        assert!(client.buf.is_empty());
    }

    #[tokio::test]
    async fn fixed_latency_delays_the_answer() {
        let server =
            TestServer::start(PlacesConfig { latency: "50ms".parse().expect("valid"), ..PlacesConfig::default() })
                .await;
        let mut client = server.connect().await;
        let started = Instant::now();
        let response = client.get(&format!("{NEARBY_PATH}?location=1,2&radius=10")).await;
        assert_eq!(response.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(50));
        server.shut_down().await;
    }
}
