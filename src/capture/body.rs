//! [`CaptureBody`]: passes every frame through unchanged and keeps a prefix
//! of the data up to a cap, for the exchange's record.
//!
//! NB: keeping a frame is a `Bytes::slice` (a reference count, no copy); the
//! kept slices are joined into one buffer once, when the body ends, so the
//! record does not pin hyper's read buffers while it waits in the queue.
//! Nothing here locks, awaits or does I/O. Past the cap the body keeps
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
    parts: Vec<Bytes>,
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
            parts: Vec::new(),
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
                self.parts.push(data.slice(..take));
                self.kept += take;
            }
        }
    }

    fn finish(mut self, end: BodyEnd) {
        let mut bytes = Vec::with_capacity(self.kept);
        for p in std::mem::take(&mut self.parts) {
            bytes.extend_from_slice(&p);
        }
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
