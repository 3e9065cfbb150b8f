//! Credentials the gateway stores or hands out: argon2id hashes of
//! platform passwords and admin tokens with their SHA-256. Used by the
//! registry (hashes in the file), the proxy (verification), the admin API
//! and the binary (`secret hash`, `secret token`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

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
pub(crate) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$idb4H1ThPPaCmDt8MLgZBQ$hWUamXm7cLw8IY2dmQ8ZUBG8YJoB3tA6a4GHWfy/zE8";

/// A new random admin token (256 bits, base64url).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!(
        "osbgw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// Hex SHA-256 of a token, as `[[admin.tokens]]` stores it.
pub fn token_sha256_hex(token: &str) -> String {
    crate::digest::hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
