//! The response body the platform receives: the broker's body, streamed
//! through the capture tap, or a body the gateway wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BackwardBody, BoxError};

enum Kind {
    Upstream(BackwardBody),
    Synthetic(Option<Bytes>),
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

/// Either the broker's body, streamed, or a body the gateway wrote.
pub struct ResponseBody {
    kind: Kind,
}

impl ResponseBody {
    pub(crate) fn upstream(body: BackwardBody) -> Self {
        ResponseBody {
            kind: Kind::Upstream(body),
        }
    }

    /// A body the gateway wrote.
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Synthetic(Some(bytes)),
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

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Synthetic(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Synthetic(b) => b.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Synthetic(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Synthetic(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Channel(_) => SizeHint::default(),
        }
    }
}
