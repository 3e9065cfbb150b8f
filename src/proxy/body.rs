//! The response body the platform receives: the broker's body, streamed
//! through the capture tap, or a body the gateway wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ForwardBody};

enum Kind {
    Upstream(ForwardBody),
    Synthetic(Option<Bytes>),
}

/// Either the broker's body, streamed, or a body the gateway wrote.
pub struct ResponseBody {
    kind: Kind,
}

impl ResponseBody {
    pub(crate) fn upstream(body: ForwardBody) -> Self {
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Synthetic(b) => b.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Synthetic(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Synthetic(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}
