//! [`ProxyError`]: everything that ends an exchange with a response the
//! gateway writes itself, with its status and OSB error body.

use std::time::Duration;

use http::StatusCode;

use crate::capture::Outcome;
use crate::registry::LookupError;

/// Whose fault a failure was (decides 4xx vs 5xx and the capture outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
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
    /// The path is not `/{location}/{broker_id}/v2/...`.
    #[error("not an OSB path; platforms call /{{location}}/{{broker_id}}/v2/...")]
    NotOsbPath,
    /// Routing refused the request.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The broker did not answer within the response timeout, or connecting timed out.
    #[error("broker {broker:?} did not answer within {after:?}: {cause}")]
    UpstreamTimeout {
        /// Broker id.
        broker: String,
        /// The timeout that fired.
        after: Duration,
        /// What timed out.
        cause: String,
    },
    /// Connect, TLS or protocol failure toward the broker.
    #[error("broker {broker:?} is unavailable: {cause}")]
    UpstreamUnavailable {
        /// Broker id.
        broker: String,
        /// What failed (no secrets).
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
            ProxyError::NotOsbPath => StatusCode::NOT_FOUND,
            ProxyError::Lookup(l) => match l {
                LookupError::UnknownLocation { .. }
                | LookupError::UnknownBroker { .. }
                | LookupError::NoPrivateRegistration { .. }
                | LookupError::NotPublished { .. } => StatusCode::NOT_FOUND,
                LookupError::LocationNotAllowed { .. }
                | LookupError::NotOwner { .. }
                | LookupError::NotApproved { .. } => StatusCode::FORBIDDEN,
            },
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
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
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
            StatusCode::BAD_GATEWAY => "BadGateway",
            _ => "InternalError",
        }
    }

    /// Whose fault it was.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamUnavailable { .. } => {
                Side::Upstream
            }
            _ => Side::Downstream,
        }
    }

    /// How the exchange is recorded.
    pub fn outcome(&self) -> Outcome {
        match self {
            ProxyError::UpstreamTimeout { .. } => Outcome::Timeout,
            ProxyError::UpstreamUnavailable { .. } | ProxyError::Internal(_) => {
                Outcome::UpstreamError
            }
            _ => Outcome::Rejected,
        }
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
        let to = ProxyError::UpstreamTimeout {
            broker: "b".into(),
            after: Duration::from_secs(1),
            cause: "x".into(),
        };
        assert_eq!(
            (to.status().as_u16(), to.side(), to.outcome()),
            (504, Side::Upstream, Outcome::Timeout)
        );
        assert_eq!(ProxyError::BadCredentials.status(), 401);
    }
}
