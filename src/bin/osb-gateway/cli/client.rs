//! A small client for the admin API, used by the `osb-gateway brokers ...`
//! and `reload` commands: bearer token, JSON in and out, `https://` with
//! the system roots plus an optional CA file, plain `http://` for a
//! loopback development gateway.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin listener could not be reached.
    #[error("cannot reach the admin API at {url}: {cause}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// What failed.
        cause: String,
    },
    /// The API answered with an error.
    #[error("{status}: {description}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The `error` code.
        code: String,
        /// The `description`.
        description: String,
    },
    /// Bad client settings (URL, CA file).
    #[error("{0}")]
    Setup(String),
    /// Part of the work failed: the answer is printed, then `failed`.
    #[error("{failed}")]
    Partial {
        /// The API's answer.
        value: Value,
        /// The answer as text.
        text: String,
        /// What failed.
        failed: String,
    },
}

/// An admin API client.
pub struct AdminClient {
    base: String,
    token: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    /// A client for `base` (`http(s)://host:port`) with a bearer `token`,
    /// trusting the system roots and `ca_file` if given.
    ///
    /// # Errors
    /// An unreadable CA file or a malformed URL.
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Setup(format!(
                "--admin-url = {base:?}: expected http://host:port or https://host:port"
            )));
        }
        let extra = match ca_file {
            Some(p) => osb_gateway::upstream::ca::read_file(p)
                .map_err(|e| ClientError::Setup(format!("CA file {}: {e}", p.display())))?,
            None => Vec::new(),
        };
        let tls = osb_gateway::upstream::tls::verified(&extra).map_err(ClientError::Setup)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `GET path` as a stream: calls `on_line` with each line of the
    /// answer as it arrives, until it returns `false` or the stream ends.
    ///
    /// # Errors
    /// Unreachable, or an error answer.
    pub async fn lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let url = format!("{}{path}", self.base);
        let req = Request::get(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Setup(format!("--admin-url = {:?}: {e}", self.base)))?;
        let unreachable = |cause: String| ClientError::Unreachable {
            url: self.base.clone(),
            cause,
        };
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ClientError::Api {
                status,
                code: v["error"].as_str().unwrap_or("").to_string(),
                description: v["description"].as_str().unwrap_or("").to_string(),
            });
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(format!("the stream broke: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if !on_line(String::from_utf8_lossy(&line[..nl]).as_ref()) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// `method path` with an optional JSON body; the answer's JSON.
    ///
    /// # Errors
    /// Unreachable, or an error answer (its `description`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Setup(format!("--admin-url = {:?}: {e}", self.base)))?;
        let unreachable = |cause: String| ClientError::Unreachable {
            url: self.base.clone(),
            cause,
        };
        let resp = tokio::time::timeout(Duration::from_secs(120), self.client.request(req))
            .await
            .map_err(|_| unreachable("no answer within 120s".into()))?
            .map_err(|e| unreachable(describe(&e)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            return Ok(v);
        }
        Err(ClientError::Api {
            status,
            code: v["error"].as_str().unwrap_or("").to_string(),
            description: v["description"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
        })
    }
}

/// A client error in one line: each cause once, outermost first.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = Some(err);
    while let Some(e) = src {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        src = e.source();
    }
    parts.join(": ")
}
