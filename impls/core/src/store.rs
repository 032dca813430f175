//! The location store: the newest AT line per client, one compact entry each, bounded by a TTL
//! and by a cap on the number of clients.
//!
//! ```text
//!  table (hashbrown HashTable<u32>)        slab (Vec<Entry>, 64 bytes a slot)
//!  hash(client id) ──► slot index ──►  ┌ line: Box<str> ─► "AT Alford +0.26 kiwi +34.06-118.44 1479413884.39"
//!                                      │ client: where the id sits in the line (hashed, compared)
//!                                      │ time, stored_at: parsed, compared
//!                                      └ prev, next: the store-order list (oldest first)
//! ```
//!
//! An entry is one heap allocation, the AT line itself (the WHATSAT reply's first line, byte for
//! byte what it was: the client's own time and coordinate text), plus its slot. The table holds slot
//! indices and finds a client by hashing the id *inside* the stored line, so the id is stored once.
//!
//! Entries are linked in store order, oldest first. That makes both bounds cheap: the TTL counts
//! from store time, so expired entries are always at the front and leave as updates arrive, with
//! no sweep over the whole map; and when the store holds its `max_clients` clients, a
//! new client evicts the front entry, the one stored longest ago. An evicted client is unknown
//! again: its WHATSAT gets `? <line>` at this server until it sends a new IAMAT. Members evict
//! independently (each sees every update, so under the same load they evict much the same
//! clients, but not necessarily the same), which weakens the herd's agreement only for clients it
//! could not hold anyway.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::command::AtRecord;
use crate::time::{Delta, Timestamp};

/// Default time an entry is kept after it was last stored.
pub const DEFAULT_TTL_SECS: u64 = 3600;

/// The end of the store-order list, and a free slot's link.
const NIL: u32 = u32::MAX;

/// One client's newest update. 64 bytes.
#[derive(Debug)]
struct Entry {
    /// The AT line, without its newline; empty in a free slot.
    line: Box<str>,
    /// Where the client id sits in `line`: start and length.
    client: (u32, u32),
    /// The client's time (the newest wins).
    time: Timestamp,
    /// When this server stored it (the TTL counts from here).
    stored_at: Timestamp,
    /// The store-order neighbours; `next` also links free slots.
    prev: u32,
    next: u32,
}

impl Entry {
    fn client(&self) -> &str {
        let (start, len) = (self.client.0 as usize, self.client.1 as usize);
        &self.line[start..start + len]
    }

    fn expired(&self, now: Timestamp, ttl: Delta) -> bool {
        now.since(self.stored_at) > ttl
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Not newer than what is held: nothing changed (and nothing is flooded).
    Ignored,
    /// Stored (a new client, or a newer update of a known one).
    Stored,
    /// Stored a new client, and the store was full: the client stored longest ago was evicted.
    StoredEvicting,
}

/// Newest-wins map from client id to its last AT line; see the module docs.
#[derive(Debug)]
pub struct LocationStore {
    table: HashTable<u32>,
    slab: Vec<Entry>,
    /// Free slots, linked through `next`.
    free: u32,
    /// The store-order list: the entry stored longest ago, and the newest.
    head: u32,
    tail: u32,
    len: usize,
    hasher: RandomState,
    ttl: Delta,
    max_clients: usize,
}

impl LocationStore {
    /// A store that forgets an entry `ttl_secs` after storing it and holds at most `max_clients`.
    pub fn new(ttl_secs: u64, max_clients: usize) -> Self {
        Self {
            table: HashTable::new(),
            slab: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            hasher: RandomState::new(),
            ttl: Delta::from_nanos(i128::from(ttl_secs) * 1_000_000_000),
            max_clients: max_clients.clamp(1, NIL as usize - 1),
        }
    }

    /// Stores `record` if its client time is newer than what is held (or what is held expired).
    /// Only stored updates are flooded.
    pub fn update(&mut self, record: &AtRecord, now: Timestamp) -> Update {
        self.expire(now);
        let hash = self.hasher.hash_one(record.client.as_str());
        let found = self.table.find(hash, |&i| self.slab[i as usize].client() == record.client).copied();
        if let Some(i) = found {
            let e = &mut self.slab[i as usize];
            if !e.expired(now, self.ttl) && e.time >= record.time {
                return Update::Ignored;
            }
            (e.line, e.client, e.time, e.stored_at) =
                (record.line.as_str().into(), client_span(record), record.time, now);
            self.unlink(i);
            self.push_back(i);
            return Update::Stored;
        }
        let evicting = self.len >= self.max_clients;
        if evicting {
            self.remove(self.head);
        }
        let entry = Entry {
            line: record.line.as_str().into(),
            client: client_span(record),
            time: record.time,
            stored_at: now,
            prev: NIL,
            next: NIL,
        };
        let i = self.allocate(entry);
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.table.insert_unique(hash, i, |&j| hasher.hash_one(slab[j as usize].client()));
        self.push_back(i);
        self.len += 1;
        if evicting { Update::StoredEvicting } else { Update::Stored }
    }

    /// The live AT line for `client`, if any.
    pub fn get(&self, client: &str, now: Timestamp) -> Option<&str> {
        let hash = self.hasher.hash_one(client);
        let &i = self.table.find(hash, |&i| self.slab[i as usize].client() == client)?;
        let e = &self.slab[i as usize];
        (!e.expired(now, self.ttl)).then_some(&*e.line)
    }

    /// Drops the expired entries (all at the front of the store order).
    pub fn expire(&mut self, now: Timestamp) {
        while self.head != NIL && self.slab[self.head as usize].expired(now, self.ttl) {
            self.remove(self.head);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes entry `i` out of the table and the list and frees its slot (and its line).
    fn remove(&mut self, i: u32) {
        let hash = self.hasher.hash_one(self.slab[i as usize].client());
        if let Ok(found) = self.table.find_entry(hash, |&j| j == i) {
            found.remove();
        }
        self.unlink(i);
        let e = &mut self.slab[i as usize];
        e.line = Box::default();
        e.next = self.free;
        self.free = i;
        self.len -= 1;
    }

    fn allocate(&mut self, entry: Entry) -> u32 {
        if self.free == NIL {
            self.slab.push(entry);
            return (self.slab.len() - 1) as u32;
        }
        let i = self.free;
        self.free = self.slab[i as usize].next;
        self.slab[i as usize] = entry;
        i
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slab[i as usize].prev, self.slab[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.slab[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slab[n as usize].prev = prev,
        }
    }

    fn push_back(&mut self, i: u32) {
        let tail = self.tail;
        (self.slab[i as usize].prev, self.slab[i as usize].next) = (tail, NIL);
        match tail {
            NIL => self.head = i,
            t => self.slab[t as usize].next = i,
        }
        self.tail = i;
    }
}

/// Where the client id sits in an AT line (`AT <server> <delta> <client> …`, single-spaced).
fn client_span(record: &AtRecord) -> (u32, u32) {
    let start = record.line.match_indices(' ').nth(2).map_or(0, |(i, _)| i + 1);
    debug_assert_eq!(record.line.get(start..start + record.client.len()), Some(record.client.as_str()));
    (start as u32, record.client.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Request;

    fn at(client: &str, time: &str) -> AtRecord {
        let line = format!("AT Alford +0.1 {client} +1.0-2.0 {time}");
        match Request::parse(line.as_bytes()) {
            Request::At(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn t(secs: i128) -> Timestamp {
        Timestamp::from_nanos(secs * 1_000_000_000)
    }

    #[test]
    fn newer_wins_older_and_equal_are_ignored() {
        let mut s = LocationStore::new(3600, 100);
        assert_eq!(s.update(&at("kiwi", "100.5"), t(0)), Update::Stored);
        assert_eq!(s.update(&at("kiwi", "100.4"), t(1)), Update::Ignored);
        assert_eq!(s.update(&at("kiwi", "100.5"), t(1)), Update::Ignored);
        assert_eq!(s.update(&at("kiwi", "100.6"), t(2)), Update::Stored);
        assert_eq!(s.get("kiwi", t(2)), Some("AT Alford +0.1 kiwi +1.0-2.0 100.6"));
        assert_eq!(s.get("other", t(2)), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn ids_are_found_inside_the_line_whatever_the_server_and_delta() {
        let mut s = LocationStore::new(3600, 100);
        for line in ["AT kiwi -0.000000001 kiwi +1.0-2.0 5", "AT Alford +12.5 ki +1.0-2.0 5", "AT x +0 k +1.0-2.0 5"] {
            let Request::At(r) = Request::parse(line.as_bytes()) else { panic!("{line}") };
            assert_eq!(s.update(&r, t(0)), Update::Stored);
        }
        assert_eq!(s.get("kiwi", t(0)), Some("AT kiwi -0.000000001 kiwi +1.0-2.0 5"));
        assert_eq!(s.get("ki", t(0)), Some("AT Alford +12.5 ki +1.0-2.0 5"));
        assert_eq!(s.get("k", t(0)), Some("AT x +0 k +1.0-2.0 5"));
        assert_eq!(s.get("Alford", t(0)), None);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut s = LocationStore::new(10, 100);
        s.update(&at("kiwi", "5"), t(0));
        assert!(s.get("kiwi", t(10)).is_some());
        assert!(s.get("kiwi", t(11)).is_none());
        // An expired entry no longer blocks an older time from being stored again.
        assert_eq!(s.update(&at("kiwi", "4"), t(11)), Update::Stored);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn memory_is_bounded_by_the_clients_of_one_ttl() {
        let mut s = LocationStore::new(10, usize::MAX);
        for i in 0..100_000 {
            s.update(&at(&format!("c{i}"), "1"), t(i / 100));
        }
        // 100 clients a second, a 10 s TTL: the last 11 seconds' clients are held, no more.
        assert!(s.len() <= 1100, "{} entries", s.len());
        assert!(s.slab.len() <= 1100, "freed slots are reused: {} slots", s.slab.len());
    }

    #[test]
    fn at_the_cap_the_client_stored_longest_ago_is_evicted() {
        let mut s = LocationStore::new(3600, 3);
        for (i, c) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(s.update(&at(c, "1"), t(i as i128)), Update::Stored);
        }
        // Updating `a` makes it the newest: `b` is now the one stored longest ago.
        assert_eq!(s.update(&at("a", "2"), t(3)), Update::Stored);
        assert_eq!(s.update(&at("d", "1"), t(4)), Update::StoredEvicting);
        assert_eq!((s.get("b", t(4)), s.len()), (None, 3), "b was evicted");
        assert_eq!(s.update(&at("e", "1"), t(5)), Update::StoredEvicting);
        assert_eq!(s.get("c", t(5)), None, "then c");
        for c in ["a", "d", "e"] {
            assert!(s.get(c, t(5)).is_some(), "{c} kept");
        }
        // An evicted client is unknown, so its next update is stored again (evicting another).
        assert_eq!(s.update(&at("b", "1"), t(6)), Update::StoredEvicting);
        assert_eq!(s.slab.len(), 3, "slots are reused, never more than the cap");
    }

    /// Store order, table and slots agree after any mix of updates, expiries and evictions.
    #[test]
    fn list_table_and_slots_stay_consistent() {
        let mut s = LocationStore::new(50, 40);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..20_000_i128 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let client = format!("c{}", rng % 97);
            s.update(&at(&client, &format!("{}", rng % 1000)), t(step / 10));
        }
        let mut walked = 0;
        let (mut i, mut prev) = (s.head, NIL);
        while i != NIL {
            let e = &s.slab[i as usize];
            assert_eq!(e.prev, prev);
            assert_eq!(s.get(e.client(), e.stored_at), Some(&*e.line), "the table finds every listed entry");
            (prev, i, walked) = (i, e.next, walked + 1);
        }
        assert_eq!((prev, walked, s.table.len()), (s.tail, s.len(), s.len()));
        assert!(s.len() <= 40);
    }
}
