//! The service interface every style drives, and its two implementations: the herd and echo.
//!
//! A style's whole job is: read bytes into a [`LineFramer`](crate::LineFramer), call
//! [`Service::handle`] for each line with the current time, write [`Reply::Bytes`], send a
//! [`Flood`] to the neighbour links it names, and for [`Reply::Places`] fetch from upstream and call
//! [`Service::complete`]. Methods take `&self`: the store is sharded behind short locks inside, so
//! every style shares the same synchronisation and differs only in how it moves bytes and waits.

use std::sync::{Arc, Mutex};

use crate::command::{AtRecord, Request, RequestKind, invalid_reply};
use crate::log::{Direction, Event, EventLog};
use crate::places::{self, HttpResponse, PlacesQuery, UpstreamError};
use crate::stats::ServerStats;
use crate::store::LocationStore;
use crate::time::Timestamp;

/// Per-connection protocol state, owned by whoever owns the connection.
#[derive(Debug, Default, Clone)]
pub struct Link {
    /// The neighbour (index into the herd's neighbour list) this connection is a flood link from.
    pub peer: Option<usize>,
}

/// What to do after one line.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub flood: Option<Flood>,
}

#[derive(Debug)]
pub enum Reply {
    /// Write these bytes (a whole reply, newline included).
    Bytes(Vec<u8>),
    /// Fetch places upstream, then write what [`Service::complete`] returns.
    Places(PlacesLookup),
    /// Nothing to write (flood lines, link hellos).
    Nothing,
}

/// An AT line (newline included) to send to the listed neighbours.
#[derive(Debug, Clone)]
pub struct Flood {
    pub line: Arc<[u8]>,
    pub to: Vec<usize>,
}

/// A WHATSAT waiting for its upstream answer.
#[derive(Debug)]
pub struct PlacesLookup {
    pub at_line: String,
    pub query: PlacesQuery,
}

/// The interface all styles drive.
pub trait Service: Send + Sync + 'static {
    /// Handles one complete input line received at `now`.
    fn handle(&self, line: &[u8], link: &mut Link, now: Timestamp) -> Outcome;

    fn stats(&self) -> &ServerStats;

    fn log(&self) -> &EventLog;

    /// The reply to a WHATSAT once upstream answered or failed. Failures still get the AT line and
    /// a JSON body in the API's error shape (`status: UNKNOWN_ERROR`), so the client's framing holds.
    fn complete(&self, lookup: PlacesLookup, upstream: Result<HttpResponse, UpstreamError>) -> Vec<u8> {
        let json = upstream
            .and_then(|r| if r.status == 200 { Ok(r) } else { Err(UpstreamError::Status(r.status)) })
            .and_then(|r| places::trim_places(&r.body, lookup.query.bound));
        let json = match json {
            Ok(json) => {
                ServerStats::bump(&self.stats().upstream_ok);
                json
            }
            Err(e) => {
                ServerStats::bump(&self.stats().upstream_errors);
                self.log().error("places", &e);
                places::error_places(&e)
            }
        };
        let reply = places::whatsat_reply(&lookup.at_line, &json);
        self.log().output(&reply);
        reply
    }

    /// The reply to a line over the limit (the caller then closes the connection).
    fn oversized(&self, quote: &[u8]) -> Vec<u8> {
        ServerStats::bump(&self.stats().oversized);
        self.log().error("framing", "line over the limit; closing the connection");
        invalid_reply(quote)
    }
}

/// The herd's configuration, as the core needs it.
#[derive(Debug, Clone)]
pub struct HerdConfig {
    pub name: String,
    /// Neighbour names; flood targets are indices into this list.
    pub neighbours: Vec<String>,
    pub ttl_secs: u64,
}

const SHARDS: usize = 16;

/// One proxy-herd server's protocol state.
#[derive(Debug)]
pub struct Herd {
    config: HerdConfig,
    shards: Box<[Mutex<LocationStore>]>,
    stats: ServerStats,
    log: EventLog,
}

impl Herd {
    pub fn new(config: HerdConfig, log: EventLog) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(LocationStore::new(config.ttl_secs))).collect();
        Self { config, shards, stats: ServerStats::default(), log }
    }

    pub fn config(&self) -> &HerdConfig {
        &self.config
    }

    fn shard(&self, client: &str) -> &Mutex<LocationStore> {
        // FNV-1a: cheap and good enough to spread client ids.
        let hash =
            client.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Stores `record` if newer; on success returns the flood to every neighbour but `from` and the origin.
    fn store_and_flood(&self, record: &AtRecord, from: Option<usize>, now: Timestamp) -> Option<Flood> {
        let stored = match self.shard(&record.client).lock() {
            Ok(mut store) => store.update(record, now),
            Err(_) => false,
        };
        if !stored {
            return None;
        }
        let to = flood_targets(&self.config.neighbours, from, &record.server);
        let mut line = Vec::with_capacity(record.line.len() + 1);
        line.extend_from_slice(record.line.as_bytes());
        line.push(b'\n');
        Some(Flood { line: line.into(), to })
    }

    /// `? <line>`, counted and logged like any other reply.
    fn invalid(&self, line: &[u8]) -> Outcome {
        self.stats.count(RequestKind::Invalid);
        let reply = invalid_reply(line);
        self.log.output(&reply);
        Outcome { reply: Reply::Bytes(reply), flood: None }
    }
}

/// The flood decision: every neighbour except the link it came from and the server that originated it.
pub fn flood_targets(neighbours: &[String], from: Option<usize>, origin: &str) -> Vec<usize> {
    (0..neighbours.len()).filter(|&i| Some(i) != from && neighbours[i] != origin).collect()
}

impl Service for Herd {
    fn handle(&self, line: &[u8], link: &mut Link, now: Timestamp) -> Outcome {
        self.log.input(line);
        let request = Request::parse(line);
        let kind = request.kind();
        let outcome = match request {
            Request::Iamat(iamat) => {
                let record = AtRecord::answer(&self.config.name, &iamat, now);
                let flood = self.store_and_flood(&record, None, now);
                let mut reply = record.line.into_bytes();
                reply.push(b'\n');
                self.log.output(&reply);
                Outcome { reply: Reply::Bytes(reply), flood }
            }
            Request::At(record) => {
                let flood = self.store_and_flood(&record, link.peer, now);
                if flood.is_some() {
                    ServerStats::bump(&self.stats.floods_stored);
                    let delay_ns = now.since(record.received_at()).as_nanos().max(0);
                    self.stats.record_propagation(u64::try_from(delay_ns / 1000).unwrap_or(u64::MAX));
                }
                Outcome { reply: Reply::Nothing, flood }
            }
            Request::Whatsat(w) => {
                let record = self.shard(&w.client).lock().ok().and_then(|s| s.get(&w.client, now).cloned());
                let Some(record) = record else { return self.invalid(&w.line) };
                let radius_m = (w.radius_km * 1000.0).round() as u32;
                let query = PlacesQuery { location: record.location, radius_m, bound: w.bound };
                Outcome { reply: Reply::Places(PlacesLookup { at_line: record.line, query }), flood: None }
            }
            Request::Peer(name) => {
                let Some(i) = self.config.neighbours.iter().position(|n| *n == name) else {
                    return self.invalid(line);
                };
                link.peer = Some(i);
                self.log.event(Event::LinkUp { peer: name, direction: Direction::Inbound });
                Outcome { reply: Reply::Nothing, flood: None }
            }
            Request::Invalid(line) => return self.invalid(&line),
        };
        self.stats.count(kind);
        outcome
    }

    fn stats(&self) -> &ServerStats {
        &self.stats
    }

    fn log(&self) -> &EventLog {
        &self.log
    }
}

/// Echo mode: every line comes back unchanged. Framed like the herd so both modes pay the same
/// per-line cost in every style.
#[derive(Debug, Default)]
pub struct Echo {
    stats: ServerStats,
    log: EventLog,
}

impl Echo {
    pub fn new(log: EventLog) -> Self {
        Self { stats: ServerStats::default(), log }
    }
}

impl Service for Echo {
    fn handle(&self, line: &[u8], _link: &mut Link, _now: Timestamp) -> Outcome {
        self.stats.count(RequestKind::Echo);
        let mut reply = Vec::with_capacity(line.len() + 1);
        reply.extend_from_slice(line);
        reply.push(b'\n');
        Outcome { reply: Reply::Bytes(reply), flood: None }
    }

    fn stats(&self) -> &ServerStats {
        &self.stats
    }

    fn log(&self) -> &EventLog {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "1479413884.655887836";

    fn herd(name: &str, neighbours: &[&str]) -> Herd {
        let config = HerdConfig {
            name: name.into(),
            neighbours: neighbours.iter().map(|s| s.to_string()).collect(),
            ttl_secs: 3600,
        };
        Herd::new(config, EventLog::discard())
    }

    fn now() -> Timestamp {
        Timestamp::parse(NOW).expect("valid")
    }

    fn bytes(outcome: &Outcome) -> &[u8] {
        match &outcome.reply {
            Reply::Bytes(b) => b,
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    #[test]
    fn iamat_replies_and_floods_to_every_neighbour() {
        let h = herd("Alford", &["Hamilton", "Welsh"]);
        let out =
            h.handle(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450", &mut Link::default(), now());
        assert_eq!(
            bytes(&out),
            b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n"
        );
        let flood = out.flood.as_ref().expect("stored, so flooded");
        assert_eq!(flood.to, vec![0, 1]);
        assert_eq!(&flood.line[..], bytes(&out));
    }

    #[test]
    fn flood_is_not_sent_back_to_its_link_nor_its_origin_and_ends_when_nothing_is_new() {
        let h = herd("Hamilton", &["Alford", "Holiday", "Welsh"]);
        let mut from_holiday = Link::default();
        assert!(matches!(h.handle(b"PEER Holiday", &mut from_holiday, now()).reply, Reply::Nothing));
        assert_eq!(from_holiday.peer, Some(1));
        let at = b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.5";
        let out = h.handle(at, &mut from_holiday, now());
        assert!(matches!(out.reply, Reply::Nothing));
        assert_eq!(out.flood.expect("new").to, vec![2], "not back to Holiday, not to origin Alford");
        // The same update again (the flood coming round the other way) is neither stored nor sent.
        assert!(h.handle(at, &mut Link::default(), now()).flood.is_none());
        // An older one is ignored too.
        assert!(h.handle(b"AT Alford +0.1 kiwi +1.0-2.0 1479413884.4", &mut Link::default(), now()).flood.is_none());
        assert_eq!(h.stats().floods_stored.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn whatsat_for_a_known_client_asks_upstream_and_completes() {
        let h = herd("Alford", &[]);
        h.handle(b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450", &mut Link::default(), now());
        let out = h.handle(b"WHATSAT kiwi 10 2", &mut Link::default(), now());
        let Reply::Places(lookup) = out.reply else { panic!("expected a lookup") };
        assert_eq!(lookup.query.radius_m, 10_000);
        assert_eq!(lookup.query.bound, 2);
        let body = br#"{"results":[{"n":1},{"n":2},{"n":3}],"status":"OK"}"#.to_vec();
        let resp = HttpResponse { status: 200, body, consumed: 0, keep_alive: true };
        let reply = String::from_utf8(h.complete(lookup, Ok(resp))).expect("utf8");
        let (at, json) = reply.split_once('\n').expect("two parts");
        assert!(at.starts_with("AT Alford +0.263873386 kiwi "));
        assert!(json.ends_with("}\n\n"));
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).expect("json");
        assert_eq!(v["results"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn upstream_failure_still_gets_a_framed_reply() {
        let h = herd("Alford", &[]);
        h.handle(b"IAMAT kiwi +34.068930-118.445127 1479413884.392014450", &mut Link::default(), now());
        let Reply::Places(lookup) = h.handle(b"WHATSAT kiwi 10 2", &mut Link::default(), now()).reply else {
            panic!("expected a lookup")
        };
        let reply = String::from_utf8(h.complete(lookup, Err(UpstreamError::Timeout))).expect("utf8");
        assert!(reply.contains("UNKNOWN_ERROR") && reply.ends_with("}\n\n"));
        assert_eq!(h.stats().upstream_errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn unknown_client_and_unknown_peer_are_invalid() {
        let h = herd("Alford", &["Hamilton"]);
        assert_eq!(bytes(&h.handle(b"WHATSAT nobody 10 2", &mut Link::default(), now())), b"? WHATSAT nobody 10 2\n");
        assert_eq!(bytes(&h.handle(b"PEER Mallory", &mut Link::default(), now())), b"? PEER Mallory\n");
    }

    #[test]
    fn echo_returns_the_line() {
        let e = Echo::default();
        assert_eq!(bytes(&e.handle(b"hello", &mut Link::default(), now())), b"hello\n");
    }
}
