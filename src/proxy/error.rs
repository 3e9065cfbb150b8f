//! [`ProxyError`]: everything that ends an exchange with a response the
//! gateway writes itself, with its status and OSB error body.

use std::time::Duration;

use http::StatusCode;

use crate::capture::Outcome;
use crate::registry::LookupError;
use crate::upstream::Failure;

/// Whose fault a failure was (decides 4xx vs 5xx and the capture outcome;
/// pingora's `ErrorSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The platform's request was refused.
    Downstream,
    /// The broker could not be reached or did not answer in time.
    Upstream,
}

/// An exchange the gateway answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No or malformed `Authorization`.
    #[error("missing or malformed basic-auth credentials")]
    Unauthenticated,
    /// Unknown user or wrong password.
    #[error("invalid platform credentials")]
    BadCredentials,
    /// Too many failed logins from this client or for this user name.
    #[error("too many failed logins from this address or for this user name; retry after {}s", retry_after.as_secs())]
    Throttled {
        /// When a login will be tried again.
        retry_after: Duration,
    },
    /// The password-verification queue is full.
    #[error("too many logins are being verified; retry in a second")]
    Busy,
    /// The path is not `/{location}/{broker_id}/v2/...`.
    #[error("not an OSB path; platforms call /{{location}}/{{broker_id}}/v2/...")]
    NotOsbPath,
    /// The path from `/v2` on is not canonical (see `osb::path`): never
    /// forwarded, as the broker could read another operation than the
    /// gateway classified (and redacted) or another path than it routed.
    #[error(
        "path refused: {0}; send the OSB path as the spec spells it, with ids percent-encoded"
    )]
    BadPath(#[from] crate::osb::path::PathError),
    /// Routing refused the request.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The broker could not be reached or did not answer in time.
    #[error("{}", upstream_text(broker, *failure, after, cause))]
    Upstream {
        /// Broker id.
        broker: String,
        /// What failed.
        failure: Failure,
        /// The timeout that fired (for the timeout kinds).
        after: Duration,
        /// What failed, in words (no secrets).
        cause: String,
    },
    /// The broker was deactivated: no new instances.
    #[error("broker {broker:?} has been deactivated: new service instances cannot be created; existing instances and bindings can still be updated, bound, unbound and deleted")]
    Deactivated {
        /// Broker id.
        broker: String,
    },
    /// A bug or resource problem in the gateway itself.
    #[error("internal gateway error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The HTTP status the platform receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unauthenticated | ProxyError::BadCredentials => StatusCode::UNAUTHORIZED,
            ProxyError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NotOsbPath => StatusCode::NOT_FOUND,
            ProxyError::BadPath(_) => StatusCode::BAD_REQUEST,
            ProxyError::Lookup(l) => match l {
                LookupError::UnknownLocation { .. }
                | LookupError::UnknownBroker { .. }
                | LookupError::NoPrivateRegistration { .. }
                | LookupError::NotPublished { .. } => StatusCode::NOT_FOUND,
                LookupError::LocationNotAllowed { .. }
                | LookupError::NotOwner { .. }
                | LookupError::NotApproved { .. } => StatusCode::FORBIDDEN,
            },
            ProxyError::Upstream { failure, .. } if failure.is_timeout() => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Deactivated { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OSB `error` code (one CamelCase word).
    pub fn code(&self) -> &'static str {
        if let ProxyError::Deactivated { .. } = self {
            return "BrokerDeactivated";
        }
        match self.status() {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
            StatusCode::BAD_GATEWAY => "BadGateway",
            _ => "InternalError",
        }
    }

    /// Whose fault it was.
    pub fn error_source(&self) -> ErrorSource {
        match self {
            ProxyError::Upstream { .. } => ErrorSource::Upstream,
            _ => ErrorSource::Downstream,
        }
    }

    /// How long the platform should wait before trying again, if it should.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::Throttled { retry_after } => Some(*retry_after),
            ProxyError::Busy => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The kind of upstream failure, for the metrics.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            ProxyError::Upstream { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    /// How the exchange is recorded.
    pub fn outcome(&self) -> Outcome {
        match self {
            ProxyError::Upstream { failure, .. } if failure.is_timeout() => Outcome::Timeout,
            ProxyError::Upstream { .. } | ProxyError::Internal(_) => Outcome::UpstreamError,
            _ => Outcome::Rejected,
        }
    }
}

fn upstream_text(broker: &str, failure: Failure, after: &Duration, cause: &str) -> String {
    if failure.is_timeout() {
        format!("broker {broker:?} did not answer within {after:?}: {cause}")
    } else {
        format!("broker {broker:?} is unavailable: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_issue() {
        let nf = ProxyError::Lookup(LookupError::UnknownBroker { broker: "x".into() });
        assert_eq!(nf.status(), 404);
        let fb = ProxyError::Lookup(LookupError::NotOwner { broker: "x".into() });
        assert_eq!((fb.status().as_u16(), fb.code()), (403, "Forbidden"));
        let to = ProxyError::Upstream {
            broker: "b".into(),
            failure: Failure::ResponseTimeout,
            after: Duration::from_secs(1),
            cause: "x".into(),
        };
        assert_eq!(
            (to.status().as_u16(), to.error_source(), to.outcome()),
            (504, ErrorSource::Upstream, Outcome::Timeout)
        );
        assert_eq!(to.to_string(), "broker \"b\" did not answer within 1s: x");
        let tls = ProxyError::Upstream {
            broker: "b".into(),
            failure: Failure::Tls,
            after: Duration::from_secs(1),
            cause: "bad certificate".into(),
        };
        assert_eq!(
            (tls.status().as_u16(), tls.outcome(), tls.failure()),
            (502, Outcome::UpstreamError, Some(Failure::Tls))
        );
        assert_eq!(
            tls.to_string(),
            "broker \"b\" is unavailable: bad certificate"
        );
        assert_eq!(ProxyError::BadCredentials.status(), 401);
    }
}
