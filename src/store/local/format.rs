//! The local store's frames: records, with each distinct body kept once
//! per segment.
//!
//! A segment (framing: [`crate::store::segments`]) holds three kinds of
//! payload, told apart by their first byte:
//!
//! - `{…}`: a record as JSON, bodies inline: what gateways before 2026-12
//!   wrote here and in the spool, and what the dead-letter directory holds;
//! - `0x01 | n: u32 LE | bytes`: body number `n` of this segment, as is
//!   (no JSON escaping);
//! - `0x02 | request: u32 LE | response: u32 LE | {…}`: a record as JSON
//!   without its bodies, which are the bodies numbered `request` and
//!   `response` earlier in the same segment ([`NONE`]: empty).
//!
//! Numbers start again in every segment, and segments are deleted whole, so
//! a record never outlives its bodies. The writer remembers the bodies of
//! the open segment as [`crate::store::seen`] does (a collision costs a
//! second copy, never somebody else's body).
//!
//! Why: a platform fetches the same catalog thousands of times. Written
//! inline and escaped as a JSON string, each 4 KB catalog record took
//! 5.3 KB on disk and its escaping was the store thread's largest cost
//! (`benches/load.py`, catalog, 64 connections: the local store cost
//! +23 µs per request over capture off).
//!
//! The spool writes the same frames (`capture::overflow`), with a
//! [`Bodies`] of its own, and replays them with a [`Decoder`].

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::store::record::body;
use crate::store::seen::{self, Seen, Side};
use crate::store::segments::{FrameWriter, Segments};
use crate::store::CaptureRecord;

/// First byte of a body frame.
const BODY: u8 = 0x01;
/// First byte of a record frame whose bodies are body frames.
const RECORD: u8 = 0x02;
/// "No body" (an empty one).
pub const NONE: u32 = u32::MAX;
/// Bodies remembered per segment, at most: their count and the bytes of
/// the records that hold them (forgotten all at once past either; the next
/// copy of a forgotten body is simply written again).
const MAX_REMEMBERED: usize = 4096;
const MAX_REMEMBERED_BYTES: usize = 8 << 20;

/// The bodies written into the open segment.
pub(crate) struct Bodies {
    /// The segment they are in (`None`: none yet).
    segment: Option<u64>,
    next: u32,
    /// Each body's number.
    seen: Seen<u32>,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies {
            segment: None,
            next: 0,
            seen: Seen::new(MAX_REMEMBERED, MAX_REMEMBERED_BYTES),
        }
    }
}

impl Bodies {
    /// Appends `records` to `segs` as one batch (see
    /// [`Segments::append_frames`]): their bodies not yet in the open
    /// segment, then the records.
    ///
    /// # Errors
    /// Those of the append; nothing of the batch was kept, and the bodies
    /// remembered are forgotten.
    pub(crate) fn append(
        &mut self,
        segs: &mut Segments,
        records: &[Arc<CaptureRecord>],
    ) -> io::Result<u64> {
        let open = segs.open_segment().map(|s| s.0);
        if open.is_none() || open != self.segment {
            *self = Bodies::default();
        }
        let appended = segs.append_frames(|w| {
            for r in records {
                self.write(w, r)?;
            }
            Ok(())
        });
        // NB: a batch into no open segment opened one and numbered its
        // bodies there: remember that segment (forgetting here wrote the
        // catalog again at the start of every batch of a new segment).
        match (&appended, segs.open_segment()) {
            (Ok(_), Some((seq, ..))) => self.segment = Some(seq),
            _ => *self = Bodies::default(),
        }
        appended
    }

    /// Writes `r`: its bodies not yet in the segment, then the record.
    fn write(&mut self, w: &mut FrameWriter<'_>, r: &Arc<CaptureRecord>) -> io::Result<()> {
        let request = self.body(w, r, Side::Request)?;
        let response = self.body(w, r, Side::Response)?;
        w.frame_with(|buf| {
            buf.push(RECORD);
            buf.extend_from_slice(&request.to_le_bytes());
            buf.extend_from_slice(&response.to_le_bytes());
            body::omitted(|| serde_json::to_writer(&mut *buf, &**r)).expect("records serialize");
        })
    }

    fn body(
        &mut self,
        w: &mut FrameWriter<'_>,
        r: &Arc<CaptureRecord>,
        side: Side,
    ) -> io::Result<u32> {
        let text = side.of(r);
        if text.is_empty() {
            return Ok(NONE);
        }
        let key = seen::key(text);
        if let Some(n) = self.seen.get(key, text) {
            return Ok(*n);
        }
        let n = self.next;
        self.next += 1;
        w.frame(&[&[BODY], &n.to_le_bytes(), text.as_bytes()])?;
        self.seen.remember(key, n, r, side);
        Ok(n)
    }
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("4 bytes"))
}

/// The records of one segment's payloads, in order, bodies filled in. A
/// record whose body frame was lost (a corrupt region) keeps an empty body
/// marked truncated; payloads that are not records are skipped.
///
/// NB: every record gets its own copy of its bodies, and a segment may
/// name one body from thousands of records: readers that do not need the
/// bodies of every record use a [`Decoder`] instead.
pub fn decode(payloads: &[Vec<u8>]) -> Vec<CaptureRecord> {
    let mut d = Decoder::default();
    payloads
        .iter()
        .filter_map(|p| d.frame(p).and_then(Result::ok))
        .collect()
}

/// Reads one segment's payloads one at a time (the spool's replay, the
/// store's searches): body frames are kept, as slices of the payloads,
/// until the records that name them.
#[derive(Default)]
pub struct Decoder<'a> {
    bodies: HashMap<u32, &'a [u8]>,
    /// Records leave their body frames' bodies empty (searches, usage).
    skip_bodies: bool,
}

impl<'a> Decoder<'a> {
    /// A decoder that knows every body frame of `payloads` already, so
    /// their records can be read in any order; with `bodies` false, their
    /// bodies are left empty (a record of an older segment, whose bodies
    /// are inline, keeps them).
    pub fn indexed(payloads: &'a [Vec<u8>], bodies: bool) -> Self {
        let mut d = Decoder {
            bodies: HashMap::new(),
            skip_bodies: !bodies,
        };
        // NB: without bodies nothing looks them up (a search read every
        // body frame of every segment into this map for nothing).
        if !bodies {
            return d;
        }
        for p in payloads {
            if p.first() == Some(&BODY) && p.len() >= 5 {
                d.bodies.insert(u32_at(p, 1), &p[5..]);
            }
        }
        d
    }

    /// The record of payload `p`, `None` for a body frame, or the reason
    /// it is no record this version can read.
    pub fn frame(&mut self, p: &'a [u8]) -> Option<Result<CaptureRecord, serde_json::Error>> {
        match p.first() {
            Some(&BODY) if p.len() >= 5 => {
                if !self.skip_bodies {
                    self.bodies.insert(u32_at(p, 1), &p[5..]);
                }
                None
            }
            Some(&RECORD) if p.len() >= 9 => {
                let mut r = match serde_json::from_slice::<CaptureRecord>(&p[9..]) {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                if self.skip_bodies {
                    return Some(Ok(r));
                }
                let fill = |n: u32, text: &mut String, truncated: &mut bool| {
                    if n == NONE {
                        return;
                    }
                    match self.bodies.get(&n) {
                        Some(b) => *text = String::from_utf8_lossy(b).into_owned(),
                        None => *truncated = true,
                    }
                };
                fill(
                    u32_at(p, 1),
                    &mut r.request_body,
                    &mut r.request_body_truncated,
                );
                fill(
                    u32_at(p, 5),
                    &mut r.response_body,
                    &mut r.response_body_truncated,
                );
                Some(Ok(r))
            }
            // NB: a record as JSON (and whatever else: its parse error
            // says why it is not one).
            _ => Some(serde_json::from_slice(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segments;

    fn rec(req: &str, resp: &str) -> Arc<CaptureRecord> {
        Arc::new(CaptureRecord {
            id: uuid::Uuid::new_v4(),
            request_body: req.into(),
            response_body: resp.into(),
            request_body_size: req.len() as u64,
            response_body_size: resp.len() as u64,
            ..CaptureRecord::default()
        })
    }

    fn write_all(segs: &mut Segments, bodies: &mut Bodies, records: &[Arc<CaptureRecord>]) {
        bodies.append(segs, records).unwrap();
    }

    #[test]
    fn batches_into_one_segment_share_its_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let mut segs = Segments::open(dir.path()).unwrap();
        let mut bodies = Bodies::default();
        // The first batch opens the segment; later ones go on in it.
        for _ in 0..3 {
            write_all(&mut segs, &mut bodies, &[rec("", "catalog")]);
        }
        let read = segments::read(&segs.all().unwrap()[0].path).unwrap();
        assert_eq!(read.records.len(), 4, "one body frame, three records");
        assert_eq!(decode(&read.records).len(), 3);
    }

    #[test]
    fn a_repeated_body_is_written_once_and_every_record_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut segs = Segments::open(dir.path()).unwrap();
        let mut bodies = Bodies::default();
        let catalog = format!("{{\"services\":[\"{}\"]}}", "x\"y\\".repeat(1000));
        let records: Vec<_> = (0..50)
            .map(|i| rec(if i % 2 == 0 { "" } else { "{\"a\":1}" }, &catalog))
            .collect();
        write_all(&mut segs, &mut bodies, &records);
        let on_disk = segs.all().unwrap()[0].bytes;
        // One copy of the catalog, and well under 1 KB per record besides.
        assert!(
            on_disk < catalog.len() as u64 + 50 * 1000,
            "{on_disk} bytes for 50 copies of {}",
            catalog.len()
        );
        let read = segments::read(&segs.all().unwrap()[0].path).unwrap();
        let back = decode(&read.records);
        let want: Vec<CaptureRecord> = records.iter().map(|r| (**r).clone()).collect();
        assert_eq!(back, want);
        // Read backwards, the bodies indexed first: without them, then with.
        let mut bare = Decoder::indexed(&read.records, false);
        let mut full = Decoder::indexed(&read.records, true);
        let (mut n, mut backwards) = (0, Vec::new());
        for p in read.records.iter().rev() {
            if let Some(Ok(r)) = bare.frame(p) {
                assert!(r.response_body.is_empty() && !r.response_body_truncated);
                assert_eq!(r.response_body_size, want[49 - n].response_body_size);
                n += 1;
            }
            backwards.extend(full.frame(p).and_then(Result::ok));
        }
        backwards.reverse();
        assert_eq!((n, backwards), (50, want));
    }

    #[test]
    fn bodies_do_not_cross_segments_or_collide() {
        let dir = tempfile::tempdir().unwrap();
        let mut segs = Segments::open(dir.path()).unwrap();
        let mut bodies = Bodies::default();
        let a = rec("same", "first");
        write_all(&mut segs, &mut bodies, std::slice::from_ref(&a));
        segs.seal().unwrap();
        // A new segment: its records must carry their own copies.
        let b = rec("same", "second");
        write_all(&mut segs, &mut bodies, std::slice::from_ref(&b));
        let all = segs.all().unwrap();
        assert_eq!(all.len(), 2);
        let second = decode(&segments::read(&all[1].path).unwrap().records);
        assert_eq!(second, vec![(*b).clone()]);
        // A collision, forced: d's (CRC, length) made to name c's body. The
        // bytes differ, so d gets a body frame of its own.
        let c = rec("", "second");
        write_all(&mut segs, &mut bodies, std::slice::from_ref(&c));
        let d = rec("", "secont");
        bodies.seen.rekey(seen::key("second"), seen::key("secont"));
        write_all(&mut segs, &mut bodies, std::slice::from_ref(&d));
        let back = decode(
            &segments::read(&segs.all().unwrap()[1].path)
                .unwrap()
                .records,
        );
        assert_eq!(back[1..], [(*c).clone(), (*d).clone()]);
    }

    #[test]
    fn a_lost_body_frame_leaves_the_record_marked_truncated() {
        let frames = vec![
            [
                &[RECORD][..],
                &7u32.to_le_bytes(),
                &NONE.to_le_bytes(),
                br#"{"broker":"pg","request_body_size":3}"#,
            ]
            .concat(),
            br#"{"broker":"old","response_body":"inline"}"#.to_vec(),
        ];
        let back = decode(&frames);
        assert_eq!(back.len(), 2);
        assert!(back[0].request_body.is_empty() && back[0].request_body_truncated);
        assert_eq!(
            (back[1].broker.as_str(), back[1].response_body.as_str()),
            ("old", "inline")
        );
    }
}
