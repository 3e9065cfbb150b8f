//! [`Headers`]: a request's or response's headers as captured, copied into
//! one allocation of their own.
//!
//! NB: a clone of hyper's `HeaderMap` shares every value with the
//! connection's read buffer (`Bytes` slices of it). A record that holds
//! such a clone until the capture thread has stored it pins that buffer,
//! and hyper, finding its buffer shared, allocates a new one for the next
//! read on the connection: two buffers (8-64 KiB each) per captured
//! exchange, freed later from another thread, while the record's weight
//! against `capture.queue_max_bytes` counted a few hundred bytes of
//! headers. Copied here, a record holds exactly what it weighs
//! (`benches/load.py`, catalog to the local store, side by side: see
//! `README.md`, change 27).

use std::fmt;

use http::HeaderMap;

/// Headers in order, each name and value copied: `name len: u16 LE | value
/// len: u32 LE | name | value`, back to back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    buf: Vec<u8>,
}

const PREFIX: usize = 6;

impl Headers {
    /// Copies `h` (names lower-case as hyper keeps them; values as bytes).
    pub fn capture(h: &HeaderMap) -> Self {
        if h.is_empty() {
            return Headers::default();
        }
        let size = h
            .iter()
            .map(|(k, v)| PREFIX + k.as_str().len() + v.len())
            .sum();
        let mut buf = Vec::with_capacity(size);
        for (k, v) in h {
            // NB: `http` bounds a name at 64 KiB - 1 and hyper a whole head
            // at its buffer size (64 KiB), so neither length is cut.
            buf.extend_from_slice(&(k.as_str().len() as u16).to_le_bytes());
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(k.as_str().as_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
        Headers { buf }
    }

    /// Each header in order, its name and its value's bytes.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.buf }
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as text, as `HeaderValue::to_str` reads
    /// it: visible ASCII and tabs only, `None` otherwise.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        let v = self.get(name)?;
        if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            std::str::from_utf8(v).ok()
        } else {
            None
        }
    }

    /// No headers.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes held (what the record's weight counts).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }
}

/// Names and value sizes only: these are the headers before redaction
/// (the broker's `Authorization` among them), so no value is printed.
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(k, v)| format!("{k}: {} bytes", v.len())))
            .finish()
    }
}

/// The headers of a [`Headers`], in order.
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.rest;
        if r.len() < PREFIX {
            return None;
        }
        let name_len = u16::from_le_bytes([r[0], r[1]]) as usize;
        let value_len = u32::from_le_bytes([r[2], r[3], r[4], r[5]]) as usize;
        let name_end = PREFIX + name_len;
        let end = name_end + value_len;
        // NB: written by `capture` from valid `HeaderName`s (ASCII), so
        // neither check fails; they keep a bad buffer from panicking.
        let name = std::str::from_utf8(r.get(PREFIX..name_end)?).ok()?;
        let value = r.get(name_end..end)?;
        self.rest = &r[end..];
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::header::{HeaderName, HeaderValue};

    #[test]
    fn headers_come_back_in_order_with_repeats_and_odd_bytes() {
        let mut h = HeaderMap::new();
        h.append("x-broker-api-version", HeaderValue::from_static("2.17"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("x-empty", HeaderValue::from_static(""));
        h.append("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let c = Headers::capture(&h);
        let got: Vec<(&str, &[u8])> = c.iter().collect();
        assert_eq!(
            got,
            vec![
                ("x-broker-api-version", &b"2.17"[..]),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2"),
                ("x-empty", b""),
                ("x-latin", b"caf\xe9"),
            ]
        );
        assert_eq!(c.get("Set-Cookie"), Some(&b"a=1"[..]));
        assert_eq!(c.get_str("X-Broker-API-Version"), Some("2.17"));
        assert_eq!(c.get_str("x-empty"), Some(""));
        // NB: as `HeaderValue::to_str`: not visible ASCII, no text.
        assert_eq!(c.get_str("x-latin"), None);
        assert_eq!(c.get("x-missing"), None);
        let printed = format!("{c:?}");
        assert!(printed.contains("set-cookie: 3 bytes"), "{printed}");
        assert!(
            !printed.contains("a=1") && !printed.contains("2.17"),
            "{printed}"
        );
        assert!(!c.is_empty());
        assert!(Headers::capture(&HeaderMap::new()).is_empty());
        assert_eq!(Headers::default().iter().count(), 0);
    }

    #[test]
    fn a_capture_shares_no_memory_with_the_connection_buffer() {
        // NB: hyper's values are slices of its read buffer; a capture that
        // kept one would keep the whole buffer.
        let read_buffer = Bytes::from(b"Basic c2VjcmV0 2.17 and the rest of a read".to_vec());
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("x-broker-api-version"),
            HeaderValue::from_maybe_shared(read_buffer.slice(15..19)).unwrap(),
        );
        let shared = h.clone();
        assert!(!read_buffer.is_unique(), "a clone of the map shares it");
        drop(shared);
        let c = Headers::capture(&h);
        drop(h);
        assert!(read_buffer.is_unique(), "the capture holds the buffer");
        assert_eq!(c.get_str("x-broker-api-version"), Some("2.17"));
        assert_eq!(c.held(), 6 + "x-broker-api-version".len() + 4);
    }

    #[test]
    fn a_damaged_buffer_ends_the_headers_instead_of_panicking() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("value"));
        let mut c = Headers::capture(&h);
        c.buf.truncate(c.buf.len() - 1);
        assert_eq!(c.iter().count(), 0);
        c.buf.truncate(3);
        assert_eq!(c.iter().count(), 0);
    }
}
