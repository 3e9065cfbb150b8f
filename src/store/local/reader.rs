//! Reading the embedded store: segments scanned newest (or oldest) first
//! on the blocking pool, for searches, one record, and the latest
//! operation of each instance.

use std::collections::HashMap;
use std::path::Path;

use super::format::Decoder;
use crate::store::query::usage::{Fold, Usage, UsageQuery};
use crate::store::query::{
    counts_for_instance, Collector, Order, Page, Search, Summary, INSTANCE_OPERATIONS,
    INSTANCE_POLL,
};
use crate::store::{segments, CaptureRecord, Latest, ReadError};

/// Calls `f` with every record of the store, its body frames' bodies
/// left empty, segment by segment (newest first when `newest_first`), and
/// with the payload it came from, until it returns `false`.
///
/// NB: one record at a time, without the bodies a segment holds once for
/// many records: decoding a segment whole gave each record its own copy,
/// so a search over a segment of 1 MB uploads held gigabytes.
pub(crate) fn scan(
    dir: &Path,
    newest_first: bool,
    mut f: impl FnMut(CaptureRecord, &[u8], &[Vec<u8>]) -> bool,
) -> Result<(), ReadError> {
    let mut segs =
        segments::list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    if newest_first {
        segs.reverse();
    }
    for seg in segs {
        let Ok(read) = segments::read(&seg.path) else {
            continue; // NB: trimmed away meanwhile.
        };
        let all = &read.records;
        let mut d = Decoder::indexed(all, false);
        let order: Box<dyn Iterator<Item = &Vec<u8>>> = match newest_first {
            true => Box::new(all.iter().rev()),
            false => Box::new(all.iter()),
        };
        for p in order {
            if let Some(Ok(r)) = d.frame(p) {
                if !f(r, p, all) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// The record `id`, if the store has it, with its bodies.
pub(crate) fn get(dir: &Path, id: uuid::Uuid) -> Result<Option<CaptureRecord>, ReadError> {
    let mut hit = None;
    scan(dir, true, |r, p, all| {
        if r.id == id {
            hit = Decoder::indexed(all, true).frame(p).and_then(Result::ok);
            return false;
        }
        true
    })?;
    Ok(hit)
}

/// Scans segments in the search's order and stops once a whole segment
/// lies beyond the last record the page can hold. Records are appended when
/// their exchange ends, so a segment's times overlap its neighbours' by at
/// most one exchange's duration; one segment of look-ahead covers that.
pub(crate) fn search(dir: &Path, s: &Search) -> Result<Page, ReadError> {
    let newest_first = s.order == Order::NewestFirst;
    let mut segs =
        segments::list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    if newest_first {
        segs.reverse();
    }
    let mut c = Collector::new(s);
    for seg in segs {
        let Ok(read) = segments::read(&seg.path) else {
            continue;
        };
        let mut d = Decoder::indexed(&read.records, false);
        let recs: Vec<CaptureRecord> = read
            .records
            .iter()
            .filter_map(|p| d.frame(p).and_then(Result::ok))
            .collect();
        let Some(edge) = (if newest_first {
            recs.iter().map(|r| r.received_at_us).max()
        } else {
            recs.iter().map(|r| r.received_at_us).min()
        }) else {
            continue;
        };
        if c.complete_before(edge) {
            break;
        }
        for r in recs {
            c.offer(r);
        }
    }
    Ok(c.page())
}

pub(crate) fn latest(
    dir: &Path,
    broker: Option<&str>,
    customer: Option<&str>,
) -> Result<Latest, ReadError> {
    let mut ops: HashMap<(String, String), Summary> = HashMap::new();
    let mut polls: HashMap<(String, String), Summary> = HashMap::new();
    scan(dir, false, |r, _, _| {
        // NB: an exchange the gateway refused never reached the broker: it
        // says nothing about the instance (see `REFUSED`).
        if r.instance_id.is_empty()
            || !counts_for_instance(&r.outcome, r.status)
            || broker.is_some_and(|b| b != r.broker)
            || customer.is_some_and(|c| c.is_empty() || c != r.customer)
        {
            return true;
        }
        let map = if INSTANCE_OPERATIONS.contains(&r.operation.as_str()) {
            &mut ops
        } else if r.operation == INSTANCE_POLL {
            &mut polls
        } else {
            return true;
        };
        let k = (r.broker.clone(), r.instance_id.clone());
        if map
            .get(&k)
            .is_none_or(|old| old.received_at_us <= r.received_at_us)
        {
            map.insert(k, Summary::from(&r));
        }
        true
    })?;
    Ok((ops.into_values().collect(), polls.into_values().collect()))
}

/// Usage over `q`'s range: every segment is read (a usage range is not
/// paged), records folded as they are decoded.
pub(crate) fn usage(dir: &Path, q: &UsageQuery) -> Result<Usage, ReadError> {
    let mut fold = Fold::new(q);
    scan(dir, false, |r, _, _| {
        fold.offer(&r);
        true
    })?;
    Ok(fold.finish())
}
