//! [`Endpoint`]: a broker endpoint URL as validated, and the upstream
//! URLs built from it.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// A broker's absolute base URL, split for joining request paths onto it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    /// Base path without trailing slash (`""` for the root).
    base_path: String,
    url: String,
}

impl Endpoint {
    /// Parses an absolute `http(s)://host[:port][/base]` URL without
    /// credentials, query or fragment.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("not an absolute URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err("not an absolute URL (expected https://host[:port][/path])".into());
        };
        if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
            return Err(format!("unsupported scheme {scheme:?}: expected https://"));
        }
        if authority.as_str().contains('@') {
            return Err("must not carry credentials; set username and password instead".into());
        }
        if authority.host().is_empty() {
            return Err("has no host".into());
        }
        if uri.query().is_some() || text.contains('#') {
            return Err("must not have a query or fragment".into());
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint {
            scheme: scheme.clone(),
            authority: authority.clone(),
            url: format!("{scheme}://{authority}{base_path}"),
            base_path,
        })
    }

    /// `host:port` as written.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// `scheme://host[:port]`: the URL without its base path.
    pub fn origin(&self) -> &str {
        &self.url[..self.url.len() - self.base_path.len()]
    }

    /// `true` for `https://`.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The URL as normalised (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The absolute upstream URL for `rest`, the request's path from `/v2`
    /// on plus its query (`/v2/catalog?x=1`), appended to the base path
    /// unchanged: what records and logs show.
    pub fn url_for(&self, rest: &str) -> String {
        let mut url = String::with_capacity(self.url.len() + rest.len());
        url.push_str(&self.url);
        url.push_str(rest);
        url
    }

    /// The origin-form request target (`/base/v2/...?query`) for `rest`:
    /// what the pool sends, [`Endpoint::url_for`] without scheme and host.
    ///
    /// # Errors
    /// When the result is not a valid request target.
    pub fn target(&self, rest: &str) -> Result<Uri, http::Error> {
        Ok(Uri::from(self.path_and_query(rest)?))
    }

    fn path_and_query(&self, rest: &str) -> Result<PathAndQuery, http::Error> {
        let mut pq = String::with_capacity(self.base_path.len() + rest.len());
        pq.push_str(&self.base_path);
        pq.push_str(rest);
        Ok(PathAndQuery::try_from(pq)?)
    }
}
