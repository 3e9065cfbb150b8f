//! Each body once: bodies of [`HASHED_FROM`] bytes or more go to a table
//! of their own (`<table>_bodies`), keyed by content hash, and the
//! exchange row carries the hash instead of the text. A platform fetches
//! the same catalog thousands of times; ClickHouse's CPU follows the
//! uncompressed bytes it parses, sorts, compresses and merges, and the
//! catalog body was most of them (4,570 bytes per catalog record on
//! 18.16, of which about 3,800 the body).
//!
//! - **Hash:** SHA-256 of the body, first 16 bytes. A body is looked up
//!   only through a record its reader may see, and a crafted collision
//!   would need a second preimage of SHA-256.
//! - **Written once per gateway, at most hourly:** the writer remembers the
//!   bodies it stored ([`crate::store::seen`], by CRC-32 and length and
//!   compared byte for byte, so a repeat costs a CRC and a `memcmp`, not a
//!   SHA-256), and writes a body again after [`REFRESH`]. Copies from
//!   several gateways or refreshes collapse: the table is a
//!   `ReplacingMergeTree(stored_at)` ordered by hash, and readers take one
//!   row per hash.
//! - **Never a record without its body:** a batch's new bodies are inserted
//!   before its rows; a failed batch is sent again whole.
//! - **Retention:** where the server has TTLs, a body lives a day longer than
//!   the records (`stored_at + days + 1`). Refreshed hourly, the newest
//!   copy of a body outlives every record that names it.
//! - **Older rows** (before 2026-12) keep their text in the row and a zero
//!   hash; the reader takes the text where the hash is zero.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::seen::{self, Seen, Side};
use crate::store::CaptureRecord;

/// Bodies shorter than this stay in the row: a hash and a row of their own
/// would cost more than the text.
pub const HASHED_FROM: usize = 64;
/// A stored body is written again after this long (see the module doc).
pub const REFRESH: Duration = Duration::from_secs(3600);
/// The hashes of a record's request and response bodies.
pub type Hashes = [[u8; 16]; 2];
/// The hash of "no body here" (the text is in the row, or there is none).
pub const NO_HASH: [u8; 16] = [0; 16];
/// Bodies remembered, at most: their count and their bytes.
const MAX_REMEMBERED: usize = 4096;
const MAX_REMEMBERED_BYTES: usize = 16 << 20;

/// One row of the bodies table.
#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
pub struct BodyRow<'a> {
    /// [`hash`] of `body`.
    pub hash: [u8; 16],
    /// When it was written (seconds since the epoch): the version the
    /// table keeps, and what the TTL counts from.
    pub stored_at: u32,
    /// The body.
    pub body: Cow<'a, str>,
}

/// The bodies table's name for the exchanges table `table`.
pub fn table_name(table: &str) -> String {
    format!("{table}_bodies")
}

/// `CREATE TABLE` of the bodies table (18.16-compatible).
pub fn create_table_sql(database: &str, table: &str) -> String {
    table_sql(
        &format!("{database}.{}", table_name(table)),
        "ReplacingMergeTree(stored_at)",
    )
}

/// `CREATE TABLE` of the bodies columns as `target` (`db.t`, maybe with
/// `ON CLUSTER c`) with `engine`.
pub(super) fn table_sql(target: &str, engine: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {target} (\n    hash FixedString(16),\n    stored_at DateTime,\n    body String\n) \
         ENGINE = {engine}\nPARTITION BY toYYYYMM(stored_at)\nORDER BY hash"
    )
}

/// The content hash of a body.
pub fn hash(body: &str) -> [u8; 16] {
    let d = Sha256::digest(body.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The hashes of one batch's rows and the bodies it must store first.
pub struct Plan<'a> {
    /// Per record: the request's and the response's hash ([`NO_HASH`]:
    /// the text stays in the row).
    pub hashes: Vec<[[u8; 16]; 2]>,
    /// Bodies not stored lately, each once.
    pub new: Vec<BodyRow<'a>>,
    remember: Vec<(seen::Key, [u8; 16], usize, Side)>,
}

/// What the writer remembers of the bodies it stored.
pub struct Stored {
    seen: Seen<([u8; 16], Instant)>,
}

impl Default for Stored {
    fn default() -> Self {
        Stored {
            seen: Seen::new(MAX_REMEMBERED, MAX_REMEMBERED_BYTES),
        }
    }
}

impl Stored {
    /// The hashes of `records`' bodies and the bodies to store first;
    /// nothing is remembered until [`Stored::stored`].
    pub fn plan<'a>(&self, records: &'a [Arc<CaptureRecord>], now_s: u32) -> Plan<'a> {
        let now = Instant::now();
        let mut plan = Plan {
            hashes: Vec::with_capacity(records.len()),
            new: Vec::new(),
            remember: Vec::new(),
        };
        let mut in_batch: HashMap<seen::Key, usize> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            let mut pair = [NO_HASH; 2];
            for (slot, side) in [Side::Request, Side::Response].into_iter().enumerate() {
                let text = side.of(r);
                if text.len() < HASHED_FROM {
                    continue;
                }
                let key = seen::key(text);
                pair[slot] = match self.seen.get(key, text) {
                    Some((h, at)) if now.duration_since(*at) < REFRESH => *h,
                    _ => match in_batch.get(&key).map(|&n| &plan.new[n]) {
                        // NB: twice in one batch: stored once.
                        Some(b) if b.body == text => b.hash,
                        _ => {
                            let h = hash(text);
                            in_batch.insert(key, plan.new.len());
                            plan.new.push(BodyRow {
                                hash: h,
                                stored_at: now_s,
                                body: Cow::Borrowed(text),
                            });
                            plan.remember.push((key, h, i, side));
                            h
                        }
                    },
                };
            }
            plan.hashes.push(pair);
        }
        plan
    }

    /// The batch `plan` was made for is stored: remember its new bodies.
    pub fn stored(&mut self, plan: Plan<'_>, records: &[Arc<CaptureRecord>]) {
        let now = Instant::now();
        for (key, h, i, side) in plan.remember {
            self.seen.remember(key, (h, now), &records[i], side);
        }
    }

    /// Forget every body (the table may have been dropped or re-created).
    pub fn forget(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(req: &str, resp: &str) -> Arc<CaptureRecord> {
        Arc::new(CaptureRecord {
            request_body: req.into(),
            response_body: resp.into(),
            ..CaptureRecord::default()
        })
    }

    #[test]
    fn a_body_is_planned_once_and_short_ones_stay_in_the_row() {
        let catalog = "c".repeat(500);
        let big = "b".repeat(HASHED_FROM);
        let records = vec![
            rec("{}", &catalog),
            rec(&big, &catalog),
            rec(&"s".repeat(HASHED_FROM - 1), &catalog),
        ];
        let mut stored = Stored::default();
        let plan = stored.plan(&records, 7);
        assert_eq!(plan.new.len(), 2, "the catalog once, the big request once");
        assert_eq!(plan.hashes[0], [NO_HASH, hash(&catalog)]);
        assert_eq!(plan.hashes[1], [hash(&big), hash(&catalog)]);
        assert_eq!(plan.hashes[2][0], NO_HASH, "63 bytes stay in the row");
        // Not yet acknowledged: the next plan stores them again.
        assert_eq!(stored.plan(&records, 7).new.len(), 2);
        stored.stored(plan, &records);
        let again = stored.plan(&records, 8);
        assert!(again.new.is_empty(), "stored: referred to, not sent");
        assert_eq!(again.hashes[1], [hash(&big), hash(&catalog)]);
        stored.forget();
        assert_eq!(stored.plan(&records, 9).new.len(), 2);
    }

    #[test]
    fn the_ddl_stays_within_18_16() {
        let ddl = create_table_sql("db", "exchanges");
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS db.exchanges_bodies ("));
        assert!(ddl.contains("ReplacingMergeTree(stored_at)"));
        assert_ne!(hash("a"), hash("b"));
        assert_ne!(hash(""), NO_HASH);
    }
}
