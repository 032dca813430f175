//! The location store: the newest AT record per client, forgotten after a TTL.

use std::collections::HashMap;

use crate::command::AtRecord;
use crate::time::{Delta, Timestamp};

/// Default time an entry is kept after it was last stored.
pub const DEFAULT_TTL_SECS: u64 = 3600;

#[derive(Debug)]
struct Entry {
    record: AtRecord,
    stored_at: Timestamp,
}

/// Newest-wins map from client id to its last AT record.
///
/// Memory stays bounded by the number of clients seen within one TTL: expired entries are removed
/// by an amortised sweep that runs once the map has doubled since the last sweep.
#[derive(Debug)]
pub struct LocationStore {
    entries: HashMap<String, Entry>,
    ttl: Delta,
    sweep_at_len: usize,
}

impl LocationStore {
    pub fn new(ttl_secs: u64) -> Self {
        Self {
            entries: HashMap::new(),
            ttl: Delta::from_nanos(i128::from(ttl_secs) * 1_000_000_000),
            sweep_at_len: 1024,
        }
    }

    /// Stores `record` if its client time is newer than what is held (or what is held expired).
    /// Returns whether it was stored: only stored updates are flooded.
    pub fn update(&mut self, record: &AtRecord, now: Timestamp) -> bool {
        if self.entries.len() >= self.sweep_at_len {
            self.sweep(now);
            self.sweep_at_len = (self.entries.len() * 2).max(1024);
        }
        let ttl = self.ttl;
        match self.entries.get_mut(&record.client) {
            Some(e) if !e.expired(now, ttl) && e.record.time >= record.time => false,
            Some(e) => {
                *e = Entry { record: record.clone(), stored_at: now };
                true
            }
            None => {
                self.entries.insert(record.client.clone(), Entry { record: record.clone(), stored_at: now });
                true
            }
        }
    }

    /// The live record for `client`, if any.
    pub fn get(&self, client: &str, now: Timestamp) -> Option<&AtRecord> {
        self.entries.get(client).filter(|e| !e.expired(now, self.ttl)).map(|e| &e.record)
    }

    /// Drops every expired entry.
    pub fn sweep(&mut self, now: Timestamp) {
        let ttl = self.ttl;
        self.entries.retain(|_, e| !e.expired(now, ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    fn expired(&self, now: Timestamp, ttl: Delta) -> bool {
        now.since(self.stored_at) > ttl
    }
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
        let mut s = LocationStore::new(3600);
        assert!(s.update(&at("kiwi", "100.5"), t(0)));
        assert!(!s.update(&at("kiwi", "100.4"), t(1)));
        assert!(!s.update(&at("kiwi", "100.5"), t(1)));
        assert!(s.update(&at("kiwi", "100.6"), t(2)));
        assert_eq!(s.get("kiwi", t(2)).map(|r| r.line.as_str()), Some("AT Alford +0.1 kiwi +1.0-2.0 100.6"));
        assert!(s.get("other", t(2)).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut s = LocationStore::new(10);
        s.update(&at("kiwi", "5"), t(0));
        assert!(s.get("kiwi", t(10)).is_some());
        assert!(s.get("kiwi", t(11)).is_none());
        // An expired entry no longer blocks an older time from being stored again.
        assert!(s.update(&at("kiwi", "4"), t(11)));
    }

    #[test]
    fn memory_is_bounded_by_the_clients_of_one_ttl() {
        let mut s = LocationStore::new(10);
        for i in 0..100_000 {
            s.update(&at(&format!("c{i}"), "1"), t(i / 100));
        }
        // 100 clients a second, a 10 s TTL: at most a few sweeps' worth are held, not 100,000.
        assert!(s.len() <= 4096, "{} entries", s.len());
    }
}
