//! Platform authentication: basic auth against argon2 hashes, with a
//! verified-password cache so the hot path pays one SHA-256, not argon2.
//!
//! NB: the cache holds `SHA-256(table salt || user || 0 || password)` of the
//! last password that verified, per platform, in an `ArcSwapOption`: reading
//! it takes no lock. A miss runs argon2 on the blocking pool, at most
//! `max_concurrent` at a time, so wrong passwords cannot starve the reactor.
//! Unknown user names are verified against a dummy hash so that they take as
//! long as wrong passwords.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::error::ProxyError;
use crate::registry::{Platform, RouteTable};

/// Verifies platform credentials.
pub struct Authenticator {
    slow_path: Semaphore,
}

impl Authenticator {
    /// At most `max_concurrent` argon2 verifications run at once.
    pub fn new(max_concurrent: usize) -> Self {
        Authenticator {
            slow_path: Semaphore::new(max_concurrent.max(1)),
        }
    }

    /// The platform whose credentials `header` carries.
    ///
    /// # Errors
    /// [`ProxyError::Unauthenticated`] for a missing or malformed header,
    /// [`ProxyError::BadCredentials`] for an unknown user or wrong password.
    pub async fn authenticate(
        &self,
        table: &RouteTable,
        header: Option<&HeaderValue>,
    ) -> Result<Arc<Platform>, ProxyError> {
        let (user, password) = header
            .and_then(parse_basic)
            .ok_or(ProxyError::Unauthenticated)?;
        let platform = table.platform(&user).cloned();
        let digest = cache_digest(table.cache_salt(), &user, &password);
        let cached = |p: &Option<Arc<Platform>>| {
            p.as_ref().is_some_and(|p| {
                p.verified
                    .load()
                    .as_deref()
                    .is_some_and(|known| bool::from(known.ct_eq(&digest)))
            })
        };
        if cached(&platform) {
            return Ok(platform.expect("cached implies a platform"));
        }
        let hash = platform
            .as_ref()
            .map(|p| p.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let _permit = self
            .slow_path
            .acquire()
            .await
            .map_err(|_| ProxyError::Internal("authenticator closed".into()))?;
        // NB: requests that queued behind the first check of the same
        // credentials find them verified now and skip argon2.
        if cached(&platform) {
            return Ok(platform.expect("cached implies a platform"));
        }
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|e| ProxyError::Internal(format!("password check failed: {e}")))?;
        match platform {
            Some(p) if ok => {
                p.verified.store(Some(Arc::new(digest)));
                Ok(p)
            }
            _ => Err(ProxyError::BadCredentials),
        }
    }
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

/// Checks `password` against an argon2 PHC hash (constant time inside argon2).
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes a password with argon2id and the crate's default (OWASP) parameters.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

/// What unknown user names are checked against, so that they cost what a
/// wrong password costs: argon2id with the default parameters, of a random
/// password nobody kept. The check's result is thrown away.
///
/// NB: a constant, not hashed at the first unknown name: that cost one
/// more argon2 run (19 MiB, ~30 ms) on the blocking pool.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$idb4H1ThPPaCmDt8MLgZBQ$hWUamXm7cLw8IY2dmQ8ZUBG8YJoB3tA6a4GHWfy/zE8";

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

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3creT"));
    }

    #[test]
    fn the_dummy_hash_has_the_default_parameters() {
        let x = hash_password("x");
        let (dummy, reference) = (
            PasswordHash::new(DUMMY_HASH).unwrap(),
            PasswordHash::new(&x).unwrap(),
        );
        assert_eq!(dummy.algorithm, reference.algorithm);
        assert_eq!(dummy.version, reference.version);
        assert_eq!(dummy.params, reference.params);
        assert_eq!(dummy.hash.unwrap().len(), reference.hash.unwrap().len());
        assert!(!verify_password(DUMMY_HASH, ""));
    }
}
