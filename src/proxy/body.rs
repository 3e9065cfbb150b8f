//! The proxy's body types: the platform's request body on its way to the
//! broker and the broker's body on its way back, each idle-timed and
//! captured. They live here, next to their one user, so that neither
//! `upstream` nor `capture` names the other.

use hyper::body::Incoming;

use crate::body::TimedBody;
use crate::capture::body::CaptureBody;
use crate::upstream::PooledBody;

/// The platform's request body on its way to the broker: streamed,
/// idle-timed, captured; boxed into the pool's `upstream::RequestBody`.
pub type ForwardBody = CaptureBody<TimedBody<Incoming>>;

/// The broker's response body on its way back: the same, over a body that
/// returns its connection to the pool when it ends.
pub type BackwardBody = CaptureBody<TimedBody<PooledBody>>;

/// What the proxy answers platforms with.
pub type ResponseBody = crate::body::ResponseBody<BackwardBody>;
