//! Platform authentication: basic auth against argon2 hashes, with a
//! verified-password cache so the hot path pays one SHA-256, not argon2.
//!
//! NB: the cache holds `SHA-256(table salt || user || 0 || password)` of the
//! last password that verified, per platform, in an `ArcSwapOption`: reading
//! it takes no lock. A miss runs argon2 on the blocking pool, at most
//! `max_concurrent` at a time, so wrong passwords cannot starve the reactor.
//! Unknown user names are verified against a dummy hash so that they take as
//! long as wrong passwords. Before argon2, failures are throttled per client
//! address and per user name (`throttle`), and at most [`MAX_WAITING`]
//! verifications wait for a turn: past that the answer is 503 with
//! `Retry-After`, at once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::error::ProxyError;
use super::throttle::Throttle;
use crate::config::credentials::{verify_password, DUMMY_HASH};
use crate::registry::{Platform, RouteTable};

/// Verifications that may wait for an argon2 turn (about a second of
/// work on two cores at 28 ms each); more are answered 503 at once.
pub const MAX_WAITING: usize = 64;

/// Verifies platform credentials.
pub struct Authenticator {
    slow_path: Semaphore,
    waiting: AtomicUsize,
    throttle: Throttle,
}

/// Gives a place in the verification queue back.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Authenticator {
    /// At most `max_concurrent` argon2 verifications run at once.
    pub fn new(max_concurrent: usize) -> Self {
        Authenticator {
            slow_path: Semaphore::new(max_concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            throttle: Throttle::default(),
        }
    }

    /// The platform whose credentials `header` carries, sent from `client`.
    ///
    /// # Errors
    /// [`ProxyError::Unauthenticated`] for a missing or malformed header,
    /// [`ProxyError::BadCredentials`] for an unknown user or wrong password,
    /// [`ProxyError::Throttled`] when the client or user name failed too
    /// often, [`ProxyError::Busy`] when the verification queue is full.
    pub async fn authenticate(
        &self,
        table: &RouteTable,
        header: Option<&HeaderValue>,
        client: IpAddr,
    ) -> Result<Arc<Platform>, ProxyError> {
        let (user, password) = header
            .and_then(parse_basic)
            .ok_or(ProxyError::Unauthenticated)?;
        let platform = table.platform(&user).cloned();
        let digest = cache_digest(table.cache_salt(), &user, &password);
        if verified(&platform, &digest) {
            return Ok(platform.expect("cached implies a platform"));
        }
        // NB: boxed: the slow path's state (the semaphore's wait, the
        // blocking task) would otherwise make every request's future
        // bigger, and hyper moves that future by value.
        Box::pin(self.verify(platform, user, password, digest, client)).await
    }

    /// The slow path: throttle, wait for an argon2 turn, verify.
    async fn verify(
        &self,
        platform: Option<Arc<Platform>>,
        user: String,
        password: String,
        digest: [u8; 32],
        client: IpAddr,
    ) -> Result<Arc<Platform>, ProxyError> {
        let throttled = |retry_after| ProxyError::Throttled { retry_after };
        self.throttle.check(client, &user).map_err(throttled)?;
        if self.waiting.fetch_add(1, Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(ProxyError::Busy);
        }
        let waiting = Waiting(&self.waiting);
        let hash = platform
            .as_ref()
            .map(|p| p.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let _permit = self
            .slow_path
            .acquire()
            .await
            .map_err(|_| ProxyError::Internal("authenticator closed".into()))?;
        drop(waiting);
        // NB: requests that queued behind the first check of the same
        // credentials find them verified now and skip argon2.
        if verified(&platform, &digest) {
            return Ok(platform.expect("cached implies a platform"));
        }
        // NB: the try is taken only now, right before argon2: a platform's
        // own requests that queued behind its first check found it
        // verified above and take none, while guesses sent all at once
        // each take one here and stop at the limit without hashing.
        self.throttle.begin(client, &user).map_err(throttled)?;
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|e| ProxyError::Internal(format!("password check failed: {e}")))?;
        match platform {
            Some(p) if ok => {
                p.verified.store(Some(Arc::new(digest)));
                self.throttle.succeeded(client, &user);
                Ok(p)
            }
            _ => Err(ProxyError::BadCredentials),
        }
    }
}

/// Whether `digest` is that of the password `platform` last verified
/// with (constant time).
fn verified(platform: &Option<Arc<Platform>>, digest: &[u8; 32]) -> bool {
    platform.as_ref().is_some_and(|p| {
        p.verified
            .load()
            .as_deref()
            .is_some_and(|known| bool::from(known.ct_eq(digest)))
    })
}

fn cache_digest(salt: &[u8], user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(user.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// `Basic base64(user:password)` → (user, password).
pub fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    let s = v.to_str().ok()?;
    let (scheme, token) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_auth() {
        let v = HeaderValue::from_static("Basic dXNlcjpwYTpzcw==");
        assert_eq!(parse_basic(&v), Some(("user".into(), "pa:ss".into())));
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
    }
}
