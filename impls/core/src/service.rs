//! The service interface every style drives, and its two implementations: the herd and echo.
//!
//! A style's whole job is: read bytes into a [`LineFramer`](crate::LineFramer), hand each line to
//! [`crate::policy::handle_line`] (which calls [`Service::handle`] with the time it arrived and
//! sends the [`Flood`] to the neighbour links it names), write the reply, and for a
//! [`Reply::Places`] fetch from upstream and call [`Service::complete`]. Methods take `&self`: the
//! store is sharded behind short locks inside, so every style shares the same synchronisation and
//! differs only in how it moves bytes and waits.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::auth::{self, HerdKey, NONCE_BYTES, Names, Nonces, PROOF_BYTES, Role};
use crate::command::{AtRecord, Request, RequestKind, invalid_reply};
use crate::location::Location;
use crate::log::{Direction, Event, EventLog};
use crate::places::{self, HttpResponse, PlacesQuery, UpstreamError};
use crate::stats::ServerStats;
use crate::store::{LocationStore, Update};
use crate::time::Timestamp;

/// Per-connection protocol state, owned by whoever owns the connection.
#[derive(Debug, Default, Clone)]
pub struct Link {
    /// The neighbour (index into the herd's neighbour list) this connection is a flood link from,
    /// once it proved membership (or said its name, in an insecure herd).
    peer: Option<usize>,
    /// A handshake this server answered, whose `AUTH` is awaited.
    challenge: Option<Challenge>,
    /// An unauthenticated `AT` on this connection was logged already (each one is counted).
    warned: bool,
}

impl Link {
    /// The neighbour this connection is a flood link from, if it is one.
    pub fn peer(&self) -> Option<usize> {
        self.peer
    }
}

/// The acceptor's half of a handshake in progress.
#[derive(Debug, Clone)]
struct Challenge {
    peer: usize,
    nonces: Nonces,
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
    /// The herd key links must prove (see [`crate::auth`]); `None`: an insecure herd, where `AT`
    /// lines are accepted from any connection.
    pub key: Option<Arc<HerdKey>>,
    /// Clients the store holds before it evicts ([`crate::Limits::max_clients`]).
    pub max_clients: usize,
}

impl HerdConfig {
    /// Server `name` with these neighbours, the default TTL and client cap, and `key` (`None`:
    /// an insecure herd). The fields are public for anything else.
    pub fn new(name: &str, neighbours: &[&str], key: Option<Arc<HerdKey>>) -> Self {
        Self {
            name: name.to_owned(),
            neighbours: neighbours.iter().map(|n| (*n).to_owned()).collect(),
            ttl_secs: crate::store::DEFAULT_TTL_SECS,
            key,
            max_clients: crate::Limits::default().max_clients,
        }
    }
}

/// An eviction episode ends after this long without an eviction; the next one is logged again.
const EVICTION_EPISODE_GAP_NS: i64 = 1_000_000_000;

const SHARDS: usize = 16;

/// One proxy-herd server's protocol state.
#[derive(Debug)]
pub struct Herd {
    config: HerdConfig,
    shards: Box<[Mutex<LocationStore>]>,
    stats: ServerStats,
    log: EventLog,
    /// When the store last evicted (ns since the epoch, 0: never), to log once per episode.
    last_eviction_ns: AtomicI64,
}

impl Herd {
    /// A herd server's state. The client cap is split evenly over the store's shards, so a
    /// shard can start evicting while the total is a little below `max_clients`.
    pub fn new(config: HerdConfig, log: EventLog) -> Self {
        let per_shard = config.max_clients.div_ceil(SHARDS);
        let shards = (0..SHARDS).map(|_| Mutex::new(LocationStore::new(config.ttl_secs, per_shard))).collect();
        Self { config, shards, stats: ServerStats::default(), log, last_eviction_ns: AtomicI64::new(0) }
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
        let update = match self.shard(&record.client).lock() {
            Ok(mut store) => store.update(record, now),
            Err(_) => Update::Ignored,
        };
        match update {
            Update::Ignored => return None,
            Update::Stored => {}
            Update::StoredEvicting => self.evicted(now),
        }
        let to = flood_targets(&self.config.neighbours, from, &record.server);
        let mut line = Vec::with_capacity(record.line.len() + 1);
        line.extend_from_slice(record.line.as_bytes());
        line.push(b'\n');
        Some(Flood { line: line.into(), to })
    }

    /// Answers a keyed `PEER` with this server's nonce and proof; the opener's `AUTH` must answer
    /// both nonces. A connection gets one handshake: a second `PEER` replaces the first.
    fn challenge(&self, key: &HerdKey, peer: usize, opener_nonce: [u8; NONCE_BYTES], link: &mut Link) -> Outcome {
        let nonces = Nonces { opener: opener_nonce, acceptor: auth::nonce() };
        let names = Names { opener: &self.config.neighbours[peer], acceptor: &self.config.name };
        let reply = auth::accept_line(&self.config.name, &nonces.acceptor, &key.proof(Role::Acceptor, names, &nonces));
        link.peer = None;
        link.challenge = Some(Challenge { peer, nonces });
        self.log.output(&reply);
        Outcome { reply: Reply::Bytes(reply), flood: None }
    }

    /// An `AT` from a connection that is not an authenticated link: refused like an invalid line,
    /// counted, and logged once per connection. Nothing is stored or flooded.
    fn unauthenticated_at(&self, line: &[u8], link: &mut Link) -> Outcome {
        ServerStats::bump(&self.stats.unauthenticated_at);
        if !std::mem::replace(&mut link.warned, true) {
            let shown = &line[..line.len().min(200)];
            self.log.event(Event::UnauthenticatedAt { line: String::from_utf8_lossy(shown).into_owned() });
        }
        self.invalid(line)
    }

    /// Counts an eviction, and logs it if it starts an episode (the first in a second or more).
    fn evicted(&self, now: Timestamp) {
        ServerStats::bump(&self.stats.store_evictions);
        let now_ns = i64::try_from(now.as_nanos()).unwrap_or(i64::MAX);
        let last = self.last_eviction_ns.swap(now_ns, Relaxed);
        if now_ns.saturating_sub(last) > EVICTION_EPISODE_GAP_NS {
            self.log.event(Event::StoreEvicting { max_clients: self.config.max_clients });
        }
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
                if self.config.key.is_some() && link.peer.is_none() {
                    return self.unauthenticated_at(line, link);
                }
                let flood = self.store_and_flood(&record, link.peer, now);
                if flood.is_some() {
                    ServerStats::bump(&self.stats.floods_stored);
                    let delay_ns = now.since(record.received_at()).as_nanos().max(0);
                    self.stats.record_propagation(u64::try_from(delay_ns / 1000).unwrap_or(u64::MAX));
                }
                Outcome { reply: Reply::Nothing, flood }
            }
            Request::Whatsat(w) => {
                let at_line = self.shard(&w.client).lock().ok().and_then(|s| s.get(&w.client, now).map(str::to_owned));
                // The stored line was validated when it was stored; its fifth field is the location.
                let location = at_line.as_deref().and_then(|l| l.split(' ').nth(4)).and_then(Location::parse);
                let (Some(at_line), Some(location)) = (at_line, location) else { return self.invalid(&w.line) };
                let radius_m = (w.radius_km * 1000.0).round() as u32;
                let query = PlacesQuery { location, radius_m, bound: w.bound };
                Outcome { reply: Reply::Places(PlacesLookup { at_line, query }), flood: None }
            }
            Request::Peer { name, nonce } => {
                let Some(i) = self.config.neighbours.iter().position(|n| *n == name) else {
                    return self.invalid(line);
                };
                match (&self.config.key, nonce) {
                    (None, None) => {
                        link.peer = Some(i);
                        self.log.event(Event::LinkUp { peer: name, direction: Direction::Inbound });
                        Outcome { reply: Reply::Nothing, flood: None }
                    }
                    (Some(key), Some(nonce)) => match auth::decode_fixed::<NONCE_BYTES>(&nonce) {
                        Some(nonce) => self.challenge(key, i, nonce, link),
                        None => return self.invalid(line),
                    },
                    // A keyed herd needs the nonce; an insecure one does not know what to check.
                    _ => return self.invalid(line),
                }
            }
            Request::Auth(proof) => {
                let Some(challenge) = link.challenge.take() else { return self.invalid(line) };
                let peer = &self.config.neighbours[challenge.peer];
                let names = Names { opener: peer, acceptor: &self.config.name };
                let proven = self.config.key.as_ref().is_some_and(|key| {
                    auth::decode_fixed::<PROOF_BYTES>(&proof)
                        .is_some_and(|proof| key.verify(Role::Opener, names, &challenge.nonces, &proof))
                });
                if !proven {
                    ServerStats::bump(&self.stats.links_refused);
                    self.log.event(Event::LinkRefused {
                        peer: peer.clone(),
                        direction: Direction::Inbound,
                        reason: "the proof does not match the herd key (or answers another handshake)".into(),
                    });
                    return self.invalid(line);
                }
                link.peer = Some(challenge.peer);
                self.log.event(Event::LinkUp { peer: peer.clone(), direction: Direction::Inbound });
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
        Herd::new(HerdConfig::new(name, neighbours, None), EventLog::discard())
    }

    fn keyed_herd(name: &str, neighbours: &[&str], key: &Arc<HerdKey>) -> Herd {
        Herd::new(HerdConfig::new(name, neighbours, Some(Arc::clone(key))), EventLog::discard())
    }

    fn key() -> Arc<HerdKey> {
        Arc::new(HerdKey::from_hex("00112233445566778899aabbccddeeff").expect("valid"))
    }

    /// Hands `bytes` (whole lines) to `herd` on `link`, returning what it wrote back.
    fn feed(herd: &Herd, link: &mut Link, bytes: &[u8]) -> Vec<u8> {
        let mut replies = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Reply::Bytes(b) = herd.handle(line, link, now()).reply {
                replies.extend(b);
            }
        }
        replies
    }

    fn whatsat_known(herd: &Herd, client: &str) -> bool {
        matches!(
            herd.handle(format!("WHATSAT {client} 10 1").as_bytes(), &mut Link::default(), now()).reply,
            Reply::Places(_)
        )
    }

    /// A keyed link from `opener` (holding `opener_key`) to `herd`, handshaken over byte buffers.
    fn handshake(herd: &Herd, opener_key: &Arc<HerdKey>, link: &mut Link) -> (crate::policy::FloodLink, Vec<u8>) {
        use crate::policy::{FloodLink, Limits};
        let t0 = std::time::Instant::now();
        let stats = ServerStats::default();
        let mut opener = FloodLink::new(
            "Hamilton",
            "Alford",
            Some(Arc::clone(opener_key)),
            &Limits::default(),
            t0,
            &stats,
            EventLog::discard(),
        );
        opener.on_flood(b"AT Hamilton +0.1 kiwi +1.0-2.0 1479413884.5\n", t0);
        assert!(opener.poll_connect());
        opener.on_connected(t0);
        let mut hello = Vec::new();
        opener.poll_transmit(&mut hello);
        let answer = feed(herd, link, &hello);
        opener.on_read(t0, Ok(&answer));
        (opener, hello)
    }

    #[test]
    fn keyed_herd_stores_at_lines_only_from_a_link_that_proved_the_key() {
        let key = key();
        let alford = keyed_herd("Alford", &["Hamilton", "Welsh"], &key);
        let at = b"AT Hamilton +0.1 kiwi +1.0-2.0 1479413884.5";
        // A client: plain AT, forged PEER + AT, both refused and counted; nothing stored or flooded.
        let mut client = Link::default();
        let out = alford.handle(at, &mut client, now());
        assert_eq!((bytes(&out), out.flood.is_none()), (&[b"? ", &at[..], b"\n"].concat()[..], true));
        assert_eq!(feed(&alford, &mut client, b"PEER Hamilton\n"), b"? PEER Hamilton\n");
        assert!(alford.handle(at, &mut client, now()).flood.is_none());
        assert_eq!(alford.stats().unauthenticated_at.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(!whatsat_known(&alford, "kiwi"));

        // A member: the handshake brings the link up and the AT behind it is stored and flooded on.
        let mut link = Link::default();
        let (mut opener, _) = handshake(&alford, &key, &mut link);
        assert_eq!(opener.state(), crate::policy::LinkState::Up);
        let mut rest = Vec::new();
        opener.poll_transmit(&mut rest);
        assert!(rest.starts_with(b"AUTH "), "the proof goes ahead of the queued update");
        assert!(feed(&alford, &mut link, &rest).is_empty(), "AUTH and AT get no reply");
        assert_eq!(link.peer(), Some(0));
        assert!(whatsat_known(&alford, "kiwi"));
    }

    #[test]
    fn wrong_key_and_replayed_handshakes_are_refused() {
        let key = key();
        let alford = keyed_herd("Alford", &["Hamilton"], &key);
        // The opener holds another key: it refuses Alford's answer and never sends AUTH or updates.
        let wrong = Arc::new(HerdKey::from_hex("ffeeddccbbaa99887766554433221100").expect("valid"));
        let mut link = Link::default();
        let (opener, _) = handshake(&alford, &wrong, &mut link);
        assert_eq!(opener.state(), crate::policy::LinkState::Down);
        // A forger who does not check the answer and sends a made-up proof is refused too.
        assert_eq!(
            feed(&alford, &mut link, format!("AUTH {}\n", "00".repeat(32)).as_bytes()),
            format!("? AUTH {}\n", "00".repeat(32)).into_bytes()
        );
        assert_eq!(link.peer(), None);

        // Record a real handshake's opener lines, then replay them on a new connection.
        let mut recorded = Link::default();
        let (mut opener, hello) = handshake(&alford, &key, &mut recorded);
        let mut tail = Vec::new();
        opener.poll_transmit(&mut tail);
        let hello_and_auth = [hello, tail].concat();
        let mut replay = Link::default();
        let replies = feed(&alford, &mut replay, &hello_and_auth);
        assert!(String::from_utf8_lossy(&replies).contains("? AUTH "), "the old proof answers an old nonce");
        assert_eq!(replay.peer(), None);
        assert!(!whatsat_known(&alford, "kiwi"), "the replayed AT was not stored");
        assert_eq!(alford.stats().links_refused.load(std::sync::atomic::Ordering::Relaxed), 2);
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
        // An insecure herd accepts the CS131 hello; a keyed hello means nothing to it.
        assert!(matches!(h.handle(b"PEER Holiday 00", &mut Link::default(), now()).reply, Reply::Bytes(_)));
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
    fn a_full_store_evicts_counts_and_forgets_the_oldest_client() {
        let config = HerdConfig { max_clients: 16, ..herd("Alford", &[]).config.clone() };
        let h = Herd::new(config, EventLog::discard());
        // 16 shards of one client each: the second client of a shard evicts its first.
        for i in 0..200 {
            let line = format!("IAMAT c{i} +34.068930-118.445127 1479413884.{i}");
            h.handle(line.as_bytes(), &mut Link::default(), now());
        }
        let evictions = h.stats().store_evictions.load(std::sync::atomic::Ordering::Relaxed);
        assert!((184..200).contains(&evictions), "{evictions} evictions");
        let known = (0..200).filter(|i| whatsat_known(&h, &format!("c{i}"))).count();
        assert_eq!(known as u64, 200 - evictions, "each evicted client is unknown again");
        assert!(whatsat_known(&h, "c199"), "the newest is kept");
        assert_eq!(bytes(&h.handle(b"WHATSAT c0 10 1", &mut Link::default(), now())), b"? WHATSAT c0 10 1\n");
    }

    #[test]
    fn echo_returns_the_line() {
        let e = Echo::default();
        assert_eq!(bytes(&e.handle(b"hello", &mut Link::default(), now())), b"hello\n");
    }
}
