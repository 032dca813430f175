//! Keeping replies in request order when requests finish out of order.

use std::collections::BTreeMap;

/// Releases replies in the order their requests arrived on one connection.
///
/// The reader numbers each request with [`ReplyOrder::admit`]; whoever finishes a request hands its
/// reply (possibly empty, for lines that have none) to [`ReplyOrder::complete`] and writes whatever
/// comes back, which is the longest run of consecutive finished replies.
#[derive(Debug, Default)]
pub struct ReplyOrder {
    next_admit: u64,
    next_release: u64,
    finished: BTreeMap<u64, Vec<u8>>,
}

impl ReplyOrder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence number for the next request read.
    pub fn admit(&mut self) -> u64 {
        self.next_admit += 1;
        self.next_admit - 1
    }

    /// Records reply `seq`; returns the bytes now ready to write, in order (empty if none).
    pub fn complete(&mut self, seq: u64, reply: Vec<u8>) -> Vec<u8> {
        debug_assert!(seq >= self.next_release && seq < self.next_admit, "unknown sequence {seq}");
        if seq != self.next_release {
            self.finished.insert(seq, reply);
            return Vec::new();
        }
        let mut ready = reply;
        self.next_release += 1;
        while let Some(next) = self.finished.remove(&self.next_release) {
            ready.extend_from_slice(&next);
            self.next_release += 1;
        }
        ready
    }

    /// Requests admitted whose replies have not been released yet.
    pub fn in_flight(&self) -> u64 {
        self.next_admit - self.next_release
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_completions_are_released_in_order() {
        let mut o = ReplyOrder::new();
        let (a, b, c) = (o.admit(), o.admit(), o.admit());
        assert_eq!(o.complete(c, b"c".to_vec()), b"");
        assert_eq!(o.complete(b, Vec::new()), b"");
        assert_eq!(o.in_flight(), 3);
        assert_eq!(o.complete(a, b"a".to_vec()), b"ac");
        assert_eq!(o.in_flight(), 0);
        let d = o.admit();
        assert_eq!(o.complete(d, b"d".to_vec()), b"d");
    }
}
