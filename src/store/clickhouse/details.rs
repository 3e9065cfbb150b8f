//! The `details` column: every field of a record that no search, summary
//! or aggregate reads (headers, small bodies, body sizes and hashes, the
//! upstream URL, …) in one JSON array, by position.
//!
//! NB: ClickHouse's CPU per record follows its columns as much as its
//! bytes: an insert sorts, compresses and writes each column, a merge of
//! the `ReplacingMergeTree` copies each column row by row. The same
//! 600,000 catalog rows on 18.16 (`INSERT … SELECT` of 10,000-row batches,
//! merges included, three runs each side by side) cost 6.9 µs a row in the
//! 44 columns before, 4.2 µs in these 25. A JSON object with the names of
//! the fields cost more than the 44 columns (its bytes doubled the row):
//! hence an array.
//!
//! Layout, version 1 (the fixed-width fields first, so SQL on a server
//! without JSON functions can still pick them with a regular expression;
//! see the README):
//!
//! ```text
//! [1, request_body_size, request_body_truncated, response_body_size,
//!  response_body_truncated, ttfb_us, accepts_incomplete,
//!  "request_body_hash", "response_body_hash",   (hex, "" when in the row)
//!  "upstream_url", "query", "broker_operation", "api_version",
//!  "originating_platform", "originating_user",
//!  "request_body", "response_body",             (only when not hashed)
//!  [["name", "value"], …], [["name", "value"], …]]  (request, response headers)
//! ```

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserializer, Serialize};

use super::bodies::{Hashes, NO_HASH};
use crate::store::CaptureRecord;

/// The layout's version, its first element.
pub const VERSION: u8 = 1;
/// Elements in a version-1 array.
const LEN: usize = 19;

/// Writes the details of `r`, whose bodies with a hash in `hashes`
/// (request, response; [`NO_HASH`]: in the row) are in the bodies table,
/// into `out` (cleared first).
pub fn encode(r: &CaptureRecord, hashes: Hashes, out: &mut Vec<u8>) {
    out.clear();
    // NB: serializing strings and numbers into a Vec cannot fail.
    serde_json::to_writer(&mut *out, &Encode { r, hashes }).expect("details encode");
}

/// Fills the fields [`encode`] wrote from `text` into `r`, and returns the
/// body hashes.
///
/// # Errors
/// When `text` is not a version-1 details array.
pub fn decode(text: &str, r: &mut CaptureRecord) -> Result<Hashes, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let hashes = de
        .deserialize_seq(Decode(r))
        .and_then(|h| de.end().map(|()| h))
        .map_err(|e| format!("the details column is not understood: {e}"))?;
    Ok(hashes)
}

struct Encode<'a> {
    r: &'a CaptureRecord,
    hashes: Hashes,
}

/// A hash as hex, empty for [`NO_HASH`].
struct Hash<'a>(&'a [u8; 16]);

impl Serialize for Hash<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self.0 == NO_HASH {
            return s.serialize_str("");
        }
        let hex = crate::digest::hex16(self.0);
        s.serialize_str(std::str::from_utf8(&hex).expect("hex is ASCII"))
    }
}

/// A body's text, empty when it is in the bodies table.
fn inline<'a>(text: &'a str, hash: &[u8; 16]) -> &'a str {
    if *hash == NO_HASH {
        text
    } else {
        ""
    }
}

impl Serialize for Encode<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (r, [qh, sh]) = (self.r, &self.hashes);
        let mut t = s.serialize_tuple(LEN)?;
        t.serialize_element(&VERSION)?;
        t.serialize_element(&r.request_body_size)?;
        t.serialize_element(&r.request_body_truncated)?;
        t.serialize_element(&r.response_body_size)?;
        t.serialize_element(&r.response_body_truncated)?;
        t.serialize_element(&r.ttfb_us)?;
        t.serialize_element(&r.accepts_incomplete)?;
        t.serialize_element(&Hash(qh))?;
        t.serialize_element(&Hash(sh))?;
        for text in [
            &r.upstream_url,
            &r.query,
            &r.broker_operation,
            &r.api_version,
            &r.originating_platform,
            &r.originating_user,
        ] {
            t.serialize_element(text)?;
        }
        t.serialize_element(inline(&r.request_body, qh))?;
        t.serialize_element(inline(&r.response_body, sh))?;
        t.serialize_element(&r.request_headers)?;
        t.serialize_element(&r.response_headers)?;
        t.end()
    }
}

struct Decode<'a>(&'a mut CaptureRecord);

fn parse_hash<E: de::Error>(hex: &str) -> Result<[u8; 16], E> {
    if hex.is_empty() {
        return Ok(NO_HASH);
    }
    crate::digest::unhex(hex)
        .ok_or_else(|| E::custom(format!("body hash {hex:?} is not 32 hex digits")))
}

impl<'de> Visitor<'de> for Decode<'_> {
    type Value = Hashes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a details array of version {VERSION}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let r = self.0;
        let mut i = 0usize;
        macro_rules! field {
            ($t:ty) => {{
                i += 1;
                seq.next_element::<$t>()?
                    .ok_or_else(|| de::Error::invalid_length(i - 1, &"19 elements"))?
            }};
        }
        let version: u8 = field!(u8);
        if version != VERSION {
            return Err(de::Error::custom(format!(
                "version {version} (this gateway reads {VERSION})"
            )));
        }
        r.request_body_size = field!(u64);
        r.request_body_truncated = field!(bool);
        r.response_body_size = field!(u64);
        r.response_body_truncated = field!(bool);
        r.ttfb_us = field!(u64);
        r.accepts_incomplete = field!(bool);
        let qh = parse_hash(&field!(String))?;
        let sh = parse_hash(&field!(String))?;
        r.upstream_url = field!(String);
        r.query = field!(String);
        r.broker_operation = field!(String);
        r.api_version = field!(String);
        r.originating_platform = field!(String);
        r.originating_user = field!(String);
        r.request_body = field!(String);
        r.response_body = field!(String);
        r.request_headers = field!(Vec<(String, String)>);
        r.response_headers = field!(Vec<(String, String)>);
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(LEN + 1, &"19 elements"));
        }
        Ok([qh, sh])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CaptureRecord {
        let mut r = crate::store::query::tests::rec(1_700_000_000_123_456, "BIND", 201, "i");
        r.request_headers = vec![
            ("x-a".into(), "1".into()),
            ("x-quote".into(), "\"],[\"\\".into()),
        ];
        r.response_headers = vec![("content-type".into(), "application/json".into())];
        r.accepts_incomplete = true;
        r.response_body_truncated = true;
        r.request_body_size = 12;
        r.response_body_size = 4096;
        r.ttfb_us = 77;
        r.upstream_url = "https://b.example/v2/x".into();
        r.originating_user = "{\"user_id\":\"ü\"}".into();
        r.request_body = "{\"a\":1}\n".into();
        r.response_body = "x".repeat(100);
        r
    }

    fn round_trip(r: &CaptureRecord, hashes: Hashes) -> (CaptureRecord, Hashes) {
        let mut buf = Vec::new();
        encode(r, hashes, &mut buf);
        let mut back = CaptureRecord::default();
        let h = decode(std::str::from_utf8(&buf).unwrap(), &mut back).unwrap();
        (back, h)
    }

    #[test]
    fn every_field_survives_both_ways() {
        let r = record();
        let (back, h) = round_trip(&r, [NO_HASH; 2]);
        assert_eq!(h, [NO_HASH; 2]);
        let want = CaptureRecord {
            request_body_size: r.request_body_size,
            request_body_truncated: r.request_body_truncated,
            response_body_size: r.response_body_size,
            response_body_truncated: r.response_body_truncated,
            ttfb_us: r.ttfb_us,
            accepts_incomplete: r.accepts_incomplete,
            upstream_url: r.upstream_url.clone(),
            query: r.query.clone(),
            broker_operation: r.broker_operation.clone(),
            api_version: r.api_version.clone(),
            originating_platform: r.originating_platform.clone(),
            originating_user: r.originating_user.clone(),
            request_body: r.request_body.clone(),
            response_body: r.response_body.clone(),
            request_headers: r.request_headers.clone(),
            response_headers: r.response_headers.clone(),
            ..CaptureRecord::default()
        };
        assert_eq!(back, want);
    }

    #[test]
    fn a_hashed_body_is_named_not_copied() {
        let r = record();
        let hash = [0xab; 16];
        let mut buf = Vec::new();
        encode(&r, [NO_HASH, hash], &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.contains("xxxx"), "{text}");
        assert!(text.contains(&"ab".repeat(16)), "{text}");
        let (back, h) = round_trip(&r, [NO_HASH, hash]);
        assert_eq!(h, [NO_HASH, hash]);
        assert_eq!(back.response_body, "");
        assert_eq!(back.request_body, r.request_body);
    }

    #[test]
    fn the_fixed_fields_open_the_array_for_sql_without_json_functions() {
        let mut buf = Vec::new();
        encode(&record(), [NO_HASH; 2], &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("[1,12,false,4096,true,77,true,\"\",\"\",\"https://b.example/v2/x\","),
            "{text}"
        );
    }

    #[test]
    fn what_is_not_a_details_array_is_refused_with_a_reason() {
        let mut r = CaptureRecord::default();
        for (text, why) in [
            ("", "EOF"),
            ("{}", "a details array"),
            ("[2]", "version 2"),
            ("[1,0,false]", "invalid length"),
            ("[1,0,false,0,false,0,false,\"zz\"", "not 32 hex digits"),
            // NB: `u8::from_str_radix` took a sign: "+f" read as 0x0f.
            (
                &format!("[1,0,false,0,false,0,false,\"{}\"", "+f".repeat(16)),
                "not 32 hex digits",
            ),
        ] {
            let e = decode(text, &mut r).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        let mut buf = Vec::new();
        encode(&record(), [NO_HASH; 2], &mut buf);
        let mut long = String::from_utf8(buf).unwrap();
        long.insert_str(long.len() - 1, ",0");
        assert!(decode(&long, &mut r)
            .unwrap_err()
            .contains("invalid length"));
    }
}
