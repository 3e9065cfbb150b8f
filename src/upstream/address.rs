//! Where the gateway connects for brokers: the configured
//! [`AddressPolicy`] (its rules are documented in `config::addresses`),
//! applied on the resolved address at connect time, so neither an IP
//! literal, a name that resolves somewhere else, nor a DNS answer that
//! changes after the registry was checked gets past it.
//!
//! [`Guarded`] sits in front of hyper-util's `HttpConnector`: it resolves
//! the host itself, keeps the addresses the policy allows, and connects to
//! those (the TLS layer above still uses the host name).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::BoxError;
use crate::config::AddressPolicy;

/// `HttpConnector` behind the policy: resolves, filters, connects.
#[derive(Clone)]
pub struct Guarded {
    inner: HttpConnector,
    policy: AddressPolicy,
    private: bool,
}

impl Guarded {
    /// `inner` for a route (a private registration when `private`).
    pub fn new(inner: HttpConnector, policy: AddressPolicy, private: bool) -> Self {
        Guarded {
            inner,
            policy,
            private,
        }
    }
}

/// Why a connection was not made: the policy refused every address.
#[derive(Debug, thiserror::Error)]
#[error("upstream address refused: {0}")]
pub struct Refused(pub String);

impl Service<http::Uri> for Guarded {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let (mut inner, policy, private) = (self.inner.clone(), self.policy.clone(), self.private);
        Box::pin(async move {
            let host = dst
                .host()
                .ok_or_else(|| Refused("no host in the upstream URL".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect(),
            };
            let mut refusals = Vec::new();
            let mut last_err: Option<BoxError> = None;
            for addr in addrs {
                if let Some(why) = policy.refusal(addr, private) {
                    refusals.push(why);
                    continue;
                }
                // NB: the connector gets the checked address, not the name,
                // so it cannot resolve to another one.
                let uri = http::Uri::builder()
                    .scheme(dst.scheme_str().unwrap_or("http"))
                    .authority(addr.to_string())
                    .path_and_query("/")
                    .build()?;
                match inner.call(uri).await {
                    Ok(io) => return Ok(io),
                    Err(e) => last_err = Some(e.into()),
                }
            }
            Err(match (last_err, refusals.first()) {
                (Some(e), _) => e,
                (None, Some(why)) => Refused(why.clone()).into(),
                (None, None) => Refused(format!("{host} resolves to no address")).into(),
            })
        })
    }
}
