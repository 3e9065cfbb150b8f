//! [`CaptureBody`]: passes every frame through unchanged and keeps a prefix
//! of the data up to a cap, for the exchange's record.
//!
//! NB: kept data is copied as it passes, into one buffer sized from the
//! body's length when its head gives one (else grown by doubling), at most
//! to the cap. Keeping `Bytes` slices instead (a reference count, and
//! one copy when the body ended) pinned hyper's read buffer for the whole
//! exchange, so hyper allocated a new one for every request: the copy is
//! the cheaper of the two (`benches/load.py`, catalog, 64 connections,
//! local store). Nothing here locks, awaits or does I/O. Past the cap the body keeps
//! flowing; only the keeping stops (linkerd's `ReplayBody`).
//!
//! The cap is per body; what all bodies in flight keep together is bounded
//! too (`capture.inflight_max_bytes`): each kept slice is reserved from a
//! shared budget first, and given back when the body ends and its bytes
//! move to the record (whose queue has a byte bound of its own). Without
//! it, memory grew with the connections: 256 uploads of 1 MiB kept 256 MiB.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::exchange::{BodyEnd, Exchange, Side};
use super::record::scan::{Scan, LONG_STRING};
use super::record::BodyData;
use crate::body::{BoxError, IdleTimeout};

/// Bytes copied at a time by a tap that scans: the scan then reads them
/// from L1 (48 KiB of data cache per core here).
const SCAN_PIECE: usize = 16 * 1024;

/// Quotes and backslashes a tap's scan stops at, at most, before it
/// leaves the body to record building ([`Scan::bounded`]): about 25 µs of
/// steps. A provision with one long parameter needs a few dozen.
const SCAN_STEPS: usize = 4096;

/// The capturing half of a body.
pub struct Tap {
    bytes: Vec<u8>,
    /// Bytes reserved from the in-flight budget: at least `bytes.len()`
    /// (the whole length at once for a body whose head gives it).
    reserved: usize,
    seen: u64,
    cap: usize,
    /// The budget ran out: keeping stopped for good.
    cut: bool,
    /// The body's length from its head, up to the cap (0: not known).
    expected: usize,
    exchange: Arc<Exchange>,
    side: Side,
    /// The long-string scan of the kept bytes, for a body whose fields
    /// record building reads (see [`super::record::scan`]).
    scan: Option<Scan>,
}

impl Tap {
    /// A tap keeping up to `cap` bytes of `exchange`'s `side` body
    /// ([`Exchange::tap`] takes the cap from the capture settings), and
    /// scanning them for long strings when `scan`.
    pub fn new(exchange: Arc<Exchange>, side: Side, cap: usize, scan: bool) -> Self {
        Tap {
            bytes: Vec::new(),
            reserved: 0,
            seen: 0,
            cap,
            cut: false,
            expected: 0,
            exchange,
            side,
            scan: scan.then(|| Scan::bounded(SCAN_STEPS)),
        }
    }

    /// Notes the body's exact length, when its head says: at the first
    /// byte, the budget and the buffer are then taken for that length (up
    /// to the cap) in one piece.
    ///
    /// NB: growing by doubling copied a 1 MiB body about 1 MiB over (64 KiB
    /// frames: 64 K + 128 K + 256 K + 512 K) and left the smaller buffers
    /// to the allocator; allocating the length a head claims but taking
    /// the budget per frame left every cut body holding a buffer of that
    /// length: 1 MB bodies at 256 connections peaked at 259 and 360 MB
    /// RSS, 201 MB this way. Headers alone hold nothing: the length is
    /// taken when the first bytes come, not before.
    fn expect(&mut self, size: u64) {
        self.expected = size.min(self.cap as u64) as usize;
    }

    /// Takes up to `more` bytes from the budget, and room for them.
    fn reserve(&mut self, more: usize) {
        let granted = self.exchange.reserve_body(more, self.reserved);
        self.reserved += granted;
        if self.reserved > self.bytes.capacity() {
            // NB: a body of unknown length grows by doubling, never past
            // the cap (a 1 MiB cap must not make a 2 MiB buffer).
            let doubled = (self.bytes.capacity() * 2).min(self.cap);
            let room = self.reserved.max(doubled);
            self.bytes.reserve_exact(room - self.bytes.len());
        }
    }

    fn observe(&mut self, data: &Bytes) {
        self.seen += data.len() as u64;
        if self.cut || data.is_empty() {
            return;
        }
        if self.reserved > self.bytes.len() && self.exchange.over_share() {
            // NB: another platform was refused while this one holds more
            // than its share: what this body reserved and has not filled
            // goes back now, and it keeps what it has (`budget`).
            self.exchange.release_body(self.reserved - self.bytes.len());
            self.reserved = self.bytes.len();
            self.cut = true;
            self.exchange.capture_tx().count_cut_body();
            return;
        }
        let want = data.len().min(self.cap - self.bytes.len());
        if self.bytes.len() + want > self.reserved {
            let short = self.bytes.len() + want - self.reserved;
            self.reserve(match self.reserved {
                0 => short.max(self.expected),
                _ => short,
            });
        }
        // NB: a body the budget cut keeps a prefix, never one with holes.
        let take = want.min(self.reserved - self.bytes.len());
        self.keep(&data[..take]);
        if take < want {
            self.cut = true;
            self.exchange.capture_tx().count_cut_body();
        }
    }

    /// Copies `data` into the kept bytes, and scans it while it is still
    /// in L1 (pieces of [`SCAN_PIECE`]) once the body is long enough to
    /// have long strings.
    fn keep(&mut self, data: &[u8]) {
        let Some(scan) = self.scan.as_mut() else {
            self.bytes.extend_from_slice(data);
            return;
        };
        let mut at = 0;
        while at < data.len() {
            let end = (at + SCAN_PIECE).min(data.len());
            self.bytes.extend_from_slice(&data[at..end]);
            at = end;
            if self.bytes.len() >= LONG_STRING {
                scan.feed(&self.bytes);
                if scan.gave_up() {
                    self.scan = None;
                    self.bytes.extend_from_slice(&data[at..]);
                    return;
                }
            }
        }
    }

    fn finish(mut self, end: BodyEnd) {
        let bytes = std::mem::take(&mut self.bytes);
        let kept = bytes.len();
        // NB: a scan that saw every kept byte (a body shorter than
        // LONG_STRING was never scanned: record building reads it whole).
        let scanned = self
            .scan
            .take()
            .filter(|s| s.scanned() == kept && kept >= LONG_STRING)
            .map(Scan::finish);
        // NB: what was reserved but not filled (a body shorter than its
        // head said, or cut off) goes back now.
        self.exchange.release_body(self.reserved - kept);
        self.reserved = 0;
        let data = BodyData {
            truncated: self.seen > kept as u64,
            size: self.seen,
            bytes,
            scanned,
        };
        // NB: the reservation moves to the exchange with the bytes.
        self.exchange.set_body(self.side, data, end, kept);
    }
}

impl Drop for Tap {
    /// Gives back a reservation not handed to the exchange (a tap dropped
    /// unfinished; `finish` hands it over and leaves 0).
    fn drop(&mut self) {
        self.exchange.release_body(self.reserved);
    }
}

/// A body wrapper that records what passes through it into an [`Exchange`].
pub struct CaptureBody<B: Body> {
    inner: B,
    tap: Option<Tap>,
}

impl<B: Body> CaptureBody<B> {
    /// Wraps `inner`; `tap` receives the data and the way the body ended.
    pub fn new(inner: B, mut tap: Tap) -> Self {
        if let Some(size) = inner.size_hint().exact() {
            tap.expect(size);
        }
        CaptureBody {
            inner,
            tap: Some(tap),
        }
    }
}

impl<B> Body for CaptureBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(tap), Some(data)) = (this.tap.as_mut(), frame.data_ref()) {
                    tap.observe(data);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(tap) = this.tap.take() {
                    tap.finish(BodyEnd::Error {
                        cause: e.to_string(),
                        timeout: e.is::<IdleTimeout>(),
                    });
                }
            }
            Poll::Ready(None) => {
                if let Some(tap) = this.tap.take() {
                    tap.finish(BodyEnd::Complete);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for CaptureBody<B> {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.take() {
            // NB: hyper does not poll a body whose `is_end_stream()` is
            // already true (empty, or fully read); that body is complete,
            // not cancelled.
            let end = if self.inner.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::Cancelled
            };
            tap.finish(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{load, with_budget};

    /// A body whose head claims `claimed` bytes and that sends `frames`,
    /// then nothing.
    struct Claims {
        claimed: u64,
        frames: Vec<Bytes>,
    }

    impl Body for Claims {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.frames.pop() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.claimed)
        }
    }

    fn poll_all(body: &mut CaptureBody<Claims>) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(_)) = Pin::new(&mut *body).poll_frame(&mut cx) {}
    }

    #[test]
    fn a_claimed_length_holds_no_budget_until_bytes_come() {
        let tx = with_budget(2 << 20, 1 << 20);
        let ex = Arc::new(Exchange::new(&tx, http::Method::PUT, "/", "", "r".into()));
        let claims = |frames: Vec<Bytes>| Claims {
            claimed: 1 << 20,
            frames,
        };
        // Headers saying 1 MiB, then silence: nothing of the budget held.
        let mut idle = CaptureBody::new(claims(vec![]), ex.tap(Side::Request));
        poll_all(&mut idle);
        assert_eq!(load(&tx.0.metrics.inflight_bytes), 0);
        // From the first byte on, the length the head gave is held at once.
        let mut sending = CaptureBody::new(
            claims(vec![
                Bytes::from(vec![b'x'; 1000]),
                Bytes::from(vec![b'y'; 10]),
            ]),
            ex.tap(Side::Response),
        );
        poll_all(&mut sending);
        assert_eq!(load(&tx.0.metrics.inflight_bytes), 1 << 20);
        drop((idle, sending));
        drop(ex);
        assert_eq!(load(&tx.0.metrics.inflight_bytes), 0, "all given back");
    }

    /// The body `frames` makes (sent in that order) once tapped on `side`
    /// of a `method` `path` exchange answered with `status`.
    fn tapped(
        method: http::Method,
        path: &str,
        status: u16,
        side: Side,
        frames: Vec<Bytes>,
    ) -> BodyData {
        let tx = with_budget(64 << 20, 4 << 20);
        let mut ex = Exchange::new(&tx, method.clone(), path, "", "r".into());
        ex.operation = crate::osb::classify(&method, path).0;
        ex.osb_path = path.into();
        let ex = Arc::new(ex);
        if side == Side::Response {
            let status = http::StatusCode::from_u16(status).unwrap();
            ex.set_response(status, &http::HeaderMap::new(), true);
        }
        let claimed = frames.iter().map(|f| f.len() as u64).sum();
        let mut frames = frames;
        frames.reverse();
        let mut body = CaptureBody::new(Claims { claimed, frames }, ex.tap(side));
        poll_all(&mut body);
        // NB: `Claims` never ends; its end is the tap's drop.
        drop(body);
        ex.body(side).expect("stored").clone()
    }

    #[test]
    fn bodies_whose_fields_are_read_are_scanned_as_they_pass() {
        use crate::capture::record::scan::{scan, Scanned, LONG_STRING};
        let json = format!(
            r#"{{"service_id":"s","note":"{}","plan_id":"p"}}"#,
            "x".repeat(LONG_STRING)
        );
        // In odd pieces, so strings and pieces end anywhere.
        let pieces = |s: &str| -> Vec<Bytes> {
            s.as_bytes()
                .chunks(1000 + 7)
                .map(Bytes::copy_from_slice)
                .collect()
        };
        let put = http::Method::PUT;
        let provision = tapped(
            put.clone(),
            "/v2/service_instances/i",
            0,
            Side::Request,
            pieces(&json),
        );
        assert_eq!(provision.bytes, json.as_bytes());
        assert_eq!(provision.scanned, Some(scan(json.as_bytes())));
        assert!(matches!(&provision.scanned, Some(Scanned::Strings(l)) if l.len() == 1));
        // A provision's 202 (its `operation` is read) is scanned too.
        let accepted = tapped(
            put.clone(),
            "/v2/service_instances/i",
            202,
            Side::Response,
            pieces(&json),
        );
        assert_eq!(accepted.scanned, Some(scan(json.as_bytes())));
        // Not scanned: a catalog (nothing read from it), a short body
        // (serde_json reads it whole).
        let catalog = tapped(
            http::Method::GET,
            "/v2/catalog",
            200,
            Side::Response,
            pieces(&json),
        );
        assert_eq!(catalog.bytes, json.as_bytes());
        assert_eq!(catalog.scanned, None);
        // A body of quotes only: the tap gives up at its bound, in the
        // middle of a frame of several pieces, and keeps every byte;
        // record building scans it instead.
        let quotes = "\"".repeat(2 * LONG_STRING);
        let big = quotes.as_bytes().chunks(40_000).map(Bytes::copy_from_slice);
        let hostile = tapped(
            put.clone(),
            "/v2/service_instances/i",
            0,
            Side::Request,
            big.collect(),
        );
        assert_eq!(hostile.bytes, quotes.as_bytes());
        assert_eq!(hostile.scanned, None);
        let short = r#"{"service_id":"s","plan_id":"p"}"#;
        let small = tapped(
            put,
            "/v2/service_instances/i",
            0,
            Side::Request,
            pieces(short),
        );
        assert_eq!(small.scanned, None);
    }

    #[test]
    fn a_body_past_the_budget_holds_what_is_left_and_is_counted_once() {
        let tx = with_budget(100, 1 << 20);
        let ex = Arc::new(Exchange::new(&tx, http::Method::PUT, "/", "", "r".into()));
        let mut body = CaptureBody::new(
            Claims {
                claimed: 1000,
                frames: vec![Bytes::from(vec![b'b'; 500]), Bytes::from(vec![b'a'; 500])],
            },
            ex.tap(Side::Request),
        );
        poll_all(&mut body);
        assert_eq!(load(&tx.0.metrics.inflight_bytes), 100, "the whole budget");
        assert_eq!(
            load(&tx.0.metrics.bodies_cut),
            1,
            "one cut body, counted once"
        );
    }
}
