//! The protocol's lines: parsing what arrives and formatting what leaves.
//!
//! ```text
//! IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//! AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
//! WHATSAT kiwi.cs.ucla.edu 10 5
//! PEER Hamilton 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
//! AUTH 51a0…(64 hex digits)
//! ? <the line as received>
//! ```
//!
//! `PEER <name> <nonce>` is the first line a server sends on a flood link it opened and `AUTH
//! <proof>` its third, after the receiver's `HERD` answer: the handshake of [`crate::auth`], which
//! proves the opener holds the herd key and tells the receiver which neighbour later `AT` lines
//! came from (so they are never flooded back). In an insecure herd the hello is `PEER <name>`
//! alone. These are the only lines the herd adds to the client protocol; clients never need them.

use crate::location::Location;
use crate::time::{Delta, Timestamp};

/// Largest WHATSAT radius, in kilometres.
pub const MAX_RADIUS_KM: f64 = 50.0;
/// Largest WHATSAT result bound.
pub const MAX_BOUND: u8 = 20;

/// One parsed input line. Parsing is pure: it needs neither the store nor a clock.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Iamat(Iamat),
    Whatsat(Whatsat),
    At(AtRecord),
    /// A link's hello: the opener's name and, in a keyed herd, its nonce (hex, checked later).
    Peer {
        name: String,
        nonce: Option<String>,
    },
    /// A link's proof (hex, checked against the handshake it ends).
    Auth(String),
    /// Anything else; carries the line as received so the reply can quote it.
    Invalid(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Iamat {
    pub client: String,
    pub location: Location,
    /// The client's time, as sent (echoed verbatim) and as parsed (compared).
    pub time_text: String,
    pub time: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Whatsat {
    pub client: String,
    pub radius_km: f64,
    pub bound: u8,
    /// Kept so an unknown client can be answered with `? <line>`.
    pub line: Vec<u8>,
}

/// A location update as flooded and stored: the AT line and its parsed fields.
#[derive(Clone, Debug, PartialEq)]
pub struct AtRecord {
    pub server: String,
    pub delta: Delta,
    pub client: String,
    pub location: Location,
    pub time: Timestamp,
    /// The full line, without its newline: what WHATSAT replies and what floods carry.
    pub line: String,
}

impl AtRecord {
    /// The reply to an IAMAT received by `server` at `now`.
    pub fn answer(server: &str, iamat: &Iamat, now: Timestamp) -> Self {
        let delta = now.since(iamat.time);
        let line = format!("AT {server} {delta} {} {} {}", iamat.client, iamat.location.as_str(), iamat.time_text);
        Self {
            server: server.to_owned(),
            delta,
            client: iamat.client.clone(),
            location: iamat.location.clone(),
            time: iamat.time,
            line,
        }
    }

    /// When the origin server received the IAMAT: client time + delta.
    pub fn received_at(&self) -> Timestamp {
        self.time.plus(self.delta)
    }
}

/// Splits on runs of spaces and tabs, ignoring leading and trailing white space.
fn fields(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t']).filter(|f| !f.is_empty())
}

impl Request {
    /// Parses one line (without its `\n`; a trailing `\r` is treated as white space).
    pub fn parse(line: &[u8]) -> Request {
        let invalid = || Request::Invalid(line.to_vec());
        let Ok(text) = std::str::from_utf8(line) else {
            return invalid();
        };
        let text = text.trim_end_matches('\r');
        // At most six fields (an AT line); counted into an array, so parsing allocates nothing
        // for the fields themselves.
        let mut f = [""; 7];
        let mut n = 0;
        for (slot, field) in f.iter_mut().zip(fields(text)) {
            *slot = field;
            n += 1;
        }
        let parsed = match &f[..n] {
            ["IAMAT", client, location, time] => parse_iamat(client, location, time).map(Request::Iamat),
            ["WHATSAT", client, radius, bound] => parse_whatsat(client, radius, bound, line).map(Request::Whatsat),
            ["AT", server, delta, client, location, time] => {
                parse_at(server, delta, client, location, time).map(Request::At)
            }
            ["PEER", name] => Some(Request::Peer { name: (*name).to_owned(), nonce: None }),
            ["PEER", name, nonce] => Some(Request::Peer { name: (*name).to_owned(), nonce: Some((*nonce).to_owned()) }),
            ["AUTH", proof] => Some(Request::Auth((*proof).to_owned())),
            _ => None,
        };
        parsed.unwrap_or_else(invalid)
    }

    /// The metric bucket this request is counted under.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Iamat(_) => RequestKind::Iamat,
            Request::Whatsat(_) => RequestKind::Whatsat,
            Request::At(_) => RequestKind::At,
            Request::Peer { .. } | Request::Auth(_) => RequestKind::Peer,
            Request::Invalid(_) => RequestKind::Invalid,
        }
    }
}

/// Request categories, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Iamat,
    Whatsat,
    At,
    Peer,
    Invalid,
    Echo,
}

fn parse_iamat(client: &str, location: &str, time: &str) -> Option<Iamat> {
    Some(Iamat {
        client: client.to_owned(),
        location: Location::parse(location)?,
        time_text: time.to_owned(),
        time: Timestamp::parse(time)?,
    })
}

fn parse_whatsat(client: &str, radius: &str, bound: &str, line: &[u8]) -> Option<Whatsat> {
    // Radius: a positive decimal number of km (digits and at most one point), at most 50.
    if radius.is_empty() || !radius.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let radius_km: f64 = radius.parse().ok()?;
    if !(radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
        return None;
    }
    if bound.is_empty() || bound.len() > 3 || !bound.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bound: u8 = bound.parse().ok()?;
    if !(1..=MAX_BOUND).contains(&bound) {
        return None;
    }
    Some(Whatsat { client: client.to_owned(), radius_km, bound, line: line.to_vec() })
}

fn parse_at(server: &str, delta: &str, client: &str, location: &str, time: &str) -> Option<AtRecord> {
    Some(AtRecord {
        server: server.to_owned(),
        delta: Delta::parse(delta)?,
        client: client.to_owned(),
        location: Location::parse(location)?,
        time: Timestamp::parse(time)?,
        // The fields as received, single-spaced: a flood carries the origin's spelling unchanged.
        line: format!("AT {server} {delta} {client} {location} {time}"),
    })
}

/// `? <line>\n`: the answer to anything the protocol does not accept.
pub fn invalid_reply(line: &[u8]) -> Vec<u8> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut out = Vec::with_capacity(line.len() + 3);
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
    const SAMPLE_AT: &str = "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";

    fn iamat(line: &[u8]) -> Iamat {
        match Request::parse(line) {
            Request::Iamat(i) => i,
            other => panic!("expected IAMAT, got {other:?}"),
        }
    }

    #[test]
    fn sample_iamat_gets_the_sample_at_reply() {
        let req = iamat(SAMPLE_IAMAT);
        let now = Timestamp::parse("1479413884.655887836").expect("valid");
        let at = AtRecord::answer("Alford", &req, now);
        assert_eq!(at.line, SAMPLE_AT);
        assert_eq!(at.received_at(), now);
    }

    #[test]
    fn white_space_runs_tabs_and_crlf_are_accepted() {
        let req = iamat(b"  IAMAT\tkiwi.cs.ucla.edu   +34.068930-118.445127 \t1479413884.392014450 \r");
        assert_eq!(req.client, "kiwi.cs.ucla.edu");
        assert_eq!(req.time_text, "1479413884.392014450");
    }

    #[test]
    fn sample_at_round_trips() {
        match Request::parse(SAMPLE_AT.as_bytes()) {
            Request::At(at) => {
                assert_eq!(at.line, SAMPLE_AT);
                assert_eq!(at.server, "Alford");
                assert_eq!(at.client, "kiwi.cs.ucla.edu");
            }
            other => panic!("expected AT, got {other:?}"),
        }
    }

    #[test]
    fn whatsat_accepts_its_range() {
        for (line, radius, bound) in
            [("WHATSAT a 10 5", 10.0, 5), ("WHATSAT a 50 20", 50.0, 20), ("WHATSAT a 0.5 1", 0.5, 1)]
        {
            match Request::parse(line.as_bytes()) {
                Request::Whatsat(w) => assert_eq!((w.radius_km, w.bound), (radius, bound), "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_forms_are_quoted_back() {
        let bad: &[&[u8]] = &[
            b"IAMTA kiwi +34.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127",
            b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450 extra",
            b"IAMAT kiwi 34.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +94.068930-118.445127 1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127 -1479413884.392014450",
            b"IAMAT kiwi +34.068930-118.445127 abc",
            b"WHATSAT kiwi 0 5",
            b"WHATSAT kiwi 51 5",
            b"WHATSAT kiwi 1000 5",
            b"WHATSAT kiwi -1 5",
            b"WHATSAT kiwi abc 5",
            b"WHATSAT kiwi 10 0",
            b"WHATSAT kiwi 10 21",
            b"WHATSAT kiwi 10 1000",
            b"WHATSAT kiwi 10",
            b"PEER",
            b"",
            b"\xff\xfe IAMAT",
        ];
        for line in bad {
            assert_eq!(Request::parse(line), Request::Invalid(line.to_vec()), "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(invalid_reply(b"IAMTA x\r"), b"? IAMTA x\n");
    }
}
