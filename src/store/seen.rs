//! Bodies a store wrote recently, so that a body it sees again (the same
//! catalog, thousands of times) is referred to instead of written again:
//! the local store numbers bodies per segment (`local::format`), ClickHouse
//! keys them by content hash (`clickhouse::bodies`).
//!
//! Remembered by CRC-32 and length, and compared byte for byte before a
//! match is believed, so a collision (or a crafted body) costs a second
//! copy, never somebody else's body. The body is not copied: the entry
//! holds the record it came from. Bounded by count and by the bytes of the
//! bodies held; past either, everything is forgotten at once (the next
//! copy of a forgotten body is simply written again).

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::CaptureRecord;

/// Which body of a record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    /// The platform's request body.
    Request,
    /// The broker's response body.
    Response,
}

impl Side {
    /// That body of `r`.
    pub(crate) fn of(self, r: &CaptureRecord) -> &str {
        match self {
            Side::Request => &r.request_body,
            Side::Response => &r.response_body,
        }
    }
}

/// (CRC-32, length) of a body.
pub(crate) type Key = (u32, usize);

/// The key `text` is remembered under.
pub(crate) fn key(text: &str) -> Key {
    (crc32fast::hash(text.as_bytes()), text.len())
}

/// Bodies remembered with a `V` each (a body number, a content hash).
pub(crate) struct Seen<V> {
    map: HashMap<Key, (V, Arc<CaptureRecord>, Side)>,
    held: usize,
    max_count: usize,
    max_bytes: usize,
}

impl<V> Seen<V> {
    /// Remembers at most `max_count` bodies and `max_bytes` of them.
    pub(crate) fn new(max_count: usize, max_bytes: usize) -> Self {
        Seen {
            map: HashMap::new(),
            held: 0,
            max_count,
            max_bytes,
        }
    }

    /// What `text` (whose key is `key`) was remembered with, if it was:
    /// same key and same bytes.
    pub(crate) fn get(&self, key: Key, text: &str) -> Option<&V> {
        let (v, holder, side) = self.map.get(&key)?;
        (side.of(holder) == text).then_some(v)
    }

    /// Remembers `side` of `r` (whose key is `key`) with `v`.
    pub(crate) fn remember(&mut self, key: Key, v: V, r: &Arc<CaptureRecord>, side: Side) {
        let len = side.of(r).len();
        if self.map.len() >= self.max_count || self.held + len > self.max_bytes {
            self.clear();
        }
        self.held += len;
        if let Some((_, old, s)) = self.map.insert(key, (v, r.clone(), side)) {
            self.held -= s.of(&old).len();
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.held = 0;
    }

    /// Test hook: the entry of `from` now claims key `to` (a forced
    /// collision).
    #[cfg(test)]
    pub(crate) fn rekey(&mut self, from: Key, to: Key) {
        let entry = self.map.remove(&from).expect("remembered");
        self.map.insert(to, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(resp: &str) -> Arc<CaptureRecord> {
        Arc::new(CaptureRecord {
            response_body: resp.into(),
            ..CaptureRecord::default()
        })
    }

    #[test]
    fn a_match_needs_the_same_bytes_and_memory_stays_bounded() {
        let mut seen = Seen::new(3, 10);
        let a = rec("aaaa");
        seen.remember(key("aaaa"), 1, &a, Side::Response);
        assert_eq!(seen.get(key("aaaa"), "aaaa"), Some(&1));
        assert_eq!(seen.get(key("aaaa"), "aaab"), None, "same key, other bytes");
        seen.rekey(key("aaaa"), key("bbbb"));
        assert_eq!(
            seen.get(key("bbbb"), "bbbb"),
            None,
            "a collision is no match"
        );
        // 4 + 4 + 4 bytes is past 10: the third forgets the first two.
        seen.remember(key("cccc"), 2, &rec("cccc"), Side::Response);
        seen.remember(key("dddd"), 3, &rec("dddd"), Side::Response);
        assert_eq!(seen.get(key("cccc"), "cccc"), None);
        assert_eq!(seen.get(key("dddd"), "dddd"), Some(&3));
        assert!(seen.held <= 10);
    }
}
