//! Body pieces every listener and client shares, knowing nothing of the
//! gateway's own types: the error type, the connection buffer bound,
//! [`TimedBody`] (fails with [`IdleTimeout`] when the source produces
//! nothing for `idle` while the consumer is waiting for data) and
//! [`ResponseBody`], the answer either listener sends.
//!
//! Arrows: a leaf; `upstream`, `capture`, `server`, `proxy` and `admin` use it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Bound on hyper's read and write buffers per connection, on the platform
/// side and toward brokers.
///
/// NB: hyper's default (~400 KB each) made a 1 MB-body load at 256
/// connections peak at 190 MB; 64 KB still reads a 1 MB body in a handful
/// of syscalls.
pub const MAX_CONNECTION_BUF: usize = 64 * 1024;

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body stalled longer than its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?} (idle timeout)")]
pub struct IdleTimeout(pub Duration);

/// Wraps a body with an idle timeout.
///
/// NB: the timer is re-armed only when the inner body returns `Pending`
/// after having produced a frame, so a fast stream pays one clock read per
/// stall, not one per frame.
pub struct TimedBody<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> TimedBody<B> {
    /// Wraps `inner`; it fails with [`IdleTimeout`] after `idle` without a frame.
    pub fn new(inner: B, idle: Duration) -> Self {
        TimedBody {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    timer.as_mut().reset(deadline);
                    this.armed = true;
                }
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a listener answers with: a streamed body `B` (the proxy's
/// broker body), a body the gateway wrote, or a body fed by a channel (live
/// tails). Generic rather than boxed, so the proxy's common path stays one
/// concrete type without an allocation (rpxy's body enums).
pub struct ResponseBody<B = Empty> {
    kind: Kind<B>,
}

enum Kind<B> {
    Stream(B),
    Full(Option<Bytes>),
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

/// A body that is never there: the stream type of listeners that only
/// write their answers themselves (the admin API).
pub enum Empty {}

impl Body for Empty {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match *self {}
    }
}

impl<B> ResponseBody<B> {
    /// A body streamed from `body`.
    pub fn stream(body: B) -> Self {
        ResponseBody {
            kind: Kind::Stream(body),
        }
    }

    /// A body the gateway wrote.
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// A body streamed from a channel until its senders are gone (live
    /// tails). Dropping the body closes the channel, which tells the sender.
    pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        ResponseBody {
            kind: Kind::Channel(rx),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(body) => Pin::new(body).poll_frame(cx),
            Kind::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Stream(body) => body.is_end_stream(),
            Kind::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(body) => body.size_hint(),
            Kind::Channel(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn stalled_body_fails_after_idle_timeout_but_frames_pass_unchanged() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream_from(rx);
        let mut body = TimedBody::new(StreamBody::new(stream), Duration::from_secs(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .await
            .unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "abc");
        // Nothing more arrives: paused time auto-advances to the deadline.
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_core::Stream<Item = T> + Unpin {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
