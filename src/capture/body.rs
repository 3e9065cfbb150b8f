//! [`CaptureBody`]: passes every frame through unchanged and keeps a prefix
//! of the data up to a cap, for the exchange's record.
//!
//! NB: kept data is copied as it passes, into one buffer that grows at
//! most to the cap. Keeping `Bytes` slices instead (a reference count, and
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
use super::record::BodyData;
use crate::body::{BoxError, IdleTimeout};

/// The capturing half of a body.
pub struct Tap {
    bytes: Vec<u8>,
    /// Bytes kept, all of them reserved from the in-flight budget.
    kept: usize,
    seen: u64,
    cap: usize,
    exchange: Arc<Exchange>,
    side: Side,
}

impl Tap {
    /// A tap keeping up to `cap` bytes of `exchange`'s `side` body
    /// ([`Exchange::tap`] takes the cap from the capture settings).
    pub fn new(exchange: Arc<Exchange>, side: Side, cap: usize) -> Self {
        Tap {
            bytes: Vec::new(),
            kept: 0,
            seen: 0,
            cap,
            exchange,
            side,
        }
    }

    fn observe(&mut self, data: &Bytes) {
        // NB: only while all seen so far is kept: a body the budget cut
        // keeps a prefix, never a prefix with holes.
        let whole_so_far = self.kept as u64 == self.seen;
        self.seen += data.len() as u64;
        if whole_so_far && self.kept < self.cap && !data.is_empty() {
            let want = data.len().min(self.cap - self.kept);
            let take = self.exchange.capture_tx().reserve_body(want);
            if take > 0 {
                // NB: doubling, but never past the cap (a 1 MiB cap must
                // not make a 2 MiB buffer); a body in one frame (the usual
                // small answer) gets exactly its size.
                let need = self.bytes.len() + take;
                if need > self.bytes.capacity() {
                    let grown = need.max((self.bytes.capacity() * 2).min(self.cap));
                    self.bytes.reserve_exact(grown - self.bytes.len());
                }
                self.bytes.extend_from_slice(&data[..take]);
                self.kept += take;
            }
        }
    }

    fn finish(mut self, end: BodyEnd) {
        let bytes = std::mem::take(&mut self.bytes);
        let data = BodyData {
            truncated: self.seen > self.kept as u64,
            size: self.seen,
            bytes,
        };
        // NB: the reservation moves to the exchange with the bytes.
        let reserved = std::mem::take(&mut self.kept);
        self.exchange.set_body(self.side, data, end, reserved);
    }
}

impl Drop for Tap {
    /// Gives back a reservation not handed to the exchange (a tap dropped
    /// unfinished; `finish` hands it over and leaves 0).
    fn drop(&mut self) {
        self.exchange.capture_tx().release_body(self.kept);
    }
}

/// A body wrapper that records what passes through it into an [`Exchange`].
pub struct CaptureBody<B: Body> {
    inner: B,
    tap: Option<Tap>,
}

impl<B: Body> CaptureBody<B> {
    /// Wraps `inner`; `tap` receives the data and the way the body ended.
    pub fn new(inner: B, tap: Tap) -> Self {
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
