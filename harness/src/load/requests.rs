//! What the generator sends, and how it checks what comes back.
//!
//! Every reply is validated against the request it answers:
//! - echo: the same line;
//! - IAMAT: `AT <server> <signed delta> <client> <location> <time>` echoing the request's fields,
//!   from the server we sent to;
//! - WHATSAT: an AT line for the same client, then JSON with `status: OK` and at most `bound`
//!   results, then a blank line. `? …` is an `invalid_reply`; JSON with another status is an
//!   `upstream_error`.

use std::io::Write;

use herd_core::{Delta, Timestamp};

use crate::base::rng::SplitMix64;
use herd_record::workload::Mode;
use herd_record::workload::Workload;

/// Request types, the key of the per-command histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Iamat,
    Whatsat,
}

pub const KINDS: [Kind; 3] = [Kind::Echo, Kind::Iamat, Kind::Whatsat];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Iamat => "iamat",
            Kind::Whatsat => "whatsat",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a reply must look like.
#[derive(Debug)]
pub enum Expect {
    Echo,
    /// The last three AT fields, `<client> <location> <time>`.
    Iamat(Box<[u8]>),
    Whatsat {
        client: u32,
        bound: u8,
    },
}

/// Why a reply was rejected: the error kinds of the result file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    WrongReply,
    InvalidReply,
    UpstreamError,
    Timeout,
    Disconnect,
    NotSent,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::WrongReply,
        Failure::InvalidReply,
        Failure::UpstreamError,
        Failure::Timeout,
        Failure::Disconnect,
        Failure::NotSent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::WrongReply => "wrong_reply",
            Failure::InvalidReply => "invalid_reply",
            Failure::UpstreamError => "upstream_error",
            Failure::Timeout => "timeout",
            Failure::Disconnect => "disconnect",
            Failure::NotSent => "not_sent",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Draws requests from a workload. One per connection, seeded, so request streams are reproducible.
#[derive(Debug)]
pub struct RequestSource {
    rng: SplitMix64,
    workload: Workload,
    message: Vec<u8>,
    /// With `fresh_ids`: this source's id (random) and the next fresh client number.
    fresh: (u64, u64),
}

impl RequestSource {
    pub fn new(workload: &Workload, rng: SplitMix64) -> Self {
        let mut message = vec![b'x'; workload.message_bytes - 1];
        message.push(b'\n');
        let mut rng = rng;
        let fresh = (rng.next_u64(), 0);
        Self { rng, workload: workload.clone(), message, fresh }
    }

    /// Appends the next request to `out` and says how to check its reply. `now` reads the wall
    /// clock at sending, the IAMAT client time (an echo never asks).
    pub fn write_next(&mut self, out: &mut Vec<u8>, now: impl FnOnce() -> Timestamp) -> (Kind, Expect) {
        if self.workload.mode == Mode::Echo {
            out.extend_from_slice(&self.message);
            return (Kind::Echo, Expect::Echo);
        }
        let now = now();
        let w = &self.workload;
        let client = self.rng.range(0, u64::from(w.clients) - 1) as u32;
        let pick = self.rng.range(1, u64::from(w.iamat + w.whatsat));
        if pick <= u64::from(w.iamat) && w.fresh_ids {
            let (source, n) = self.fresh;
            self.fresh.1 += 1;
            let expect = self.write_iamat_as(out, &format!("fresh-{source:x}-{n}"), now);
            (Kind::Iamat, Expect::Iamat(expect))
        } else if pick <= u64::from(w.iamat) {
            let expect = self.write_iamat(out, client, now);
            (Kind::Iamat, Expect::Iamat(expect))
        } else {
            let radius = self.rng.range(u64::from(w.radius_km[0]), u64::from(w.radius_km[1]));
            let bound = self.rng.range(u64::from(w.bound[0]), u64::from(w.bound[1])) as u8;
            let _ = writeln!(out, "WHATSAT client-{client} {radius} {bound}");
            (Kind::Whatsat, Expect::Whatsat { client, bound })
        }
    }

    /// Appends an IAMAT for `client` at a random location; returns the expected AT tail.
    pub fn write_iamat(&mut self, out: &mut Vec<u8>, client: u32, now: Timestamp) -> Box<[u8]> {
        self.write_iamat_as(out, &format!("client-{client}"), now)
    }

    fn write_iamat_as(&mut self, out: &mut Vec<u8>, client: &str, now: Timestamp) -> Box<[u8]> {
        let [la0, la1, lo0, lo1] = self.workload.area;
        let lat = la0 + (la1 - la0) * self.rng.next_f64();
        let lon = lo0 + (lo1 - lo0) * self.rng.next_f64();
        let tail = format!("{client} {lat:+.6}{lon:+.6} {now}");
        out.extend_from_slice(b"IAMAT ");
        out.extend_from_slice(tail.as_bytes());
        out.push(b'\n');
        tail.into_bytes().into_boxed_slice()
    }

    pub fn message(&self) -> &[u8] {
        &self.message
    }
}

/// The length of the first complete reply in `buf` for a request of `kind`, or `None` if more
/// bytes are needed. WHATSAT replies end with a blank line, unless they are a one-line `? …`.
pub fn reply_len(kind: Kind, buf: &[u8]) -> Option<usize> {
    if kind == Kind::Whatsat && *buf.first()? != b'?' {
        return memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    }
    memchr::memchr(b'\n', buf).map(|i| i + 1)
}

/// Checks one complete reply (as delimited by [`reply_len`]).
pub fn check(reply: &[u8], expect: &Expect, server: Option<&str>, message: &[u8]) -> Result<(), Failure> {
    if reply.starts_with(b"? ") {
        return Err(Failure::InvalidReply);
    }
    match expect {
        Expect::Echo => (reply == message).then_some(()).ok_or(Failure::WrongReply),
        Expect::Iamat(tail) => check_at_line(trim_newline(reply), server, tail).ok_or(Failure::WrongReply),
        Expect::Whatsat { client, bound } => check_whatsat(reply, *client, *bound, server),
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}

/// `AT <server> <delta> <tail…>`: the server (if known), a well-formed delta, and the tail exactly.
fn check_at_line(line: &[u8], server: Option<&str>, tail: &[u8]) -> Option<()> {
    let rest = line.strip_prefix(b"AT ")?;
    let sp = memchr::memchr(b' ', rest)?;
    let (name, rest) = (&rest[..sp], &rest[sp + 1..]);
    if server.is_some_and(|s| s.as_bytes() != name) {
        return None;
    }
    let sp = memchr::memchr(b' ', rest)?;
    Delta::parse(std::str::from_utf8(&rest[..sp]).ok()?)?;
    (&rest[sp + 1..] == tail).then_some(())
}

fn check_whatsat(reply: &[u8], client: u32, bound: u8, _server: Option<&str>) -> Result<(), Failure> {
    let body = reply.strip_suffix(b"\n\n").ok_or(Failure::WrongReply)?;
    let nl = memchr::memchr(b'\n', body).ok_or(Failure::WrongReply)?;
    let (at, json) = (&body[..nl], &body[nl + 1..]);
    // The AT line may come from any server and carry any location this client has had.
    let fields: Vec<&[u8]> = at.split(|&b| b == b' ').collect();
    let client_id = format!("client-{client}");
    let at_ok = fields.len() == 6
        && fields[0] == b"AT"
        && fields[3] == client_id.as_bytes()
        && std::str::from_utf8(fields[5]).ok().and_then(Timestamp::parse).is_some();
    if !at_ok {
        return Err(Failure::WrongReply);
    }
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|_| Failure::WrongReply)?;
    let results = value.get("results").and_then(|r| r.as_array()).ok_or(Failure::WrongReply)?;
    match value.get("status").and_then(|s| s.as_str()) {
        Some("OK" | "ZERO_RESULTS") if results.len() <= usize::from(bound) => Ok(()),
        Some("OK" | "ZERO_RESULTS") => Err(Failure::WrongReply),
        Some(_) => Err(Failure::UpstreamError),
        None => Err(Failure::WrongReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &[u8] = b"AT Alford +0.000123456 client-7 +34.000000-118.000000 1479413884.392014450\n";

    #[test]
    fn iamat_reply_must_echo_the_request() {
        let tail = b"client-7 +34.000000-118.000000 1479413884.392014450";
        let expect = Expect::Iamat(tail.to_vec().into());
        assert_eq!(check(AT, &expect, Some("Alford"), b""), Ok(()));
        assert_eq!(check(AT, &expect, Some("Ball"), b""), Err(Failure::WrongReply));
        let other = Expect::Iamat(b"client-8 +34.000000-118.000000 1479413884.392014450".to_vec().into());
        assert_eq!(check(AT, &other, None, b""), Err(Failure::WrongReply));
        let bad_delta = b"AT Alford 0.1 client-7 +34.000000-118.000000 1479413884.392014450\n";
        assert_eq!(check(bad_delta, &expect, None, b""), Err(Failure::WrongReply));
        assert_eq!(check(b"? IAMAT x\n", &expect, None, b""), Err(Failure::InvalidReply));
    }

    #[test]
    fn whatsat_reply_framing_and_bound() {
        let ok = b"AT Ball +0.1 client-7 +34.0-118.0 1.5\n{\n \"results\": [1, 2],\n \"status\": \"OK\"\n}\n\n";
        let expect = |bound| Expect::Whatsat { client: 7, bound };
        assert_eq!(reply_len(Kind::Whatsat, &ok[..ok.len() - 1]), None);
        assert_eq!(reply_len(Kind::Whatsat, ok), Some(ok.len()));
        assert_eq!(check(ok, &expect(2), None, b""), Ok(()));
        assert_eq!(check(ok, &expect(1), None, b""), Err(Failure::WrongReply));
        let err = b"AT Ball +0.1 client-7 +34.0-118.0 1.5\n{\"results\": [], \"status\": \"UNKNOWN_ERROR\"}\n\n";
        assert_eq!(check(err, &expect(2), None, b""), Err(Failure::UpstreamError));
        let wrong_client = b"AT Ball +0.1 client-8 +34.0-118.0 1.5\n{\"results\": [], \"status\": \"OK\"}\n\n";
        assert_eq!(check(wrong_client, &expect(2), None, b""), Err(Failure::WrongReply));
        assert_eq!(reply_len(Kind::Whatsat, b"? WHATSAT client-7 10 2\nAT"), Some(24));
        assert_eq!(reply_len(Kind::Whatsat, b"?"), None);
    }

    #[test]
    fn the_same_seed_draws_the_same_requests() {
        let w = herd_record::workload::Workload::load("herd-mixed").expect("workload");
        let draw = |seed| {
            let mut src = RequestSource::new(&w, SplitMix64::new(seed));
            let mut out = Vec::new();
            for _ in 0..100 {
                src.write_next(&mut out, || Timestamp::from_nanos(1));
            }
            out
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let text = String::from_utf8(draw(3)).expect("ascii");
        assert!(text.lines().all(|l| l.starts_with("IAMAT client-") || l.starts_with("WHATSAT client-")));
        assert!(text.lines().any(|l| l.starts_with("WHATSAT")));
    }
}
