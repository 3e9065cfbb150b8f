//! Secrets: where a password comes from, and a type that never prints it.
//!
//! A secret value in a registry file is one of
//! * `env:NAME`: the value of environment variable `NAME`;
//! * `file:PATH`: the contents of a file (one trailing newline removed; relative
//!   paths are relative to the registry file);
//! * `enc:v1:BASE64`: AES-256-GCM ciphertext made by `osb-gateway secret encrypt`,
//!   decrypted with the gateway's secret key;
//! * anything else: the plain-text password itself, accepted only in development mode.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::RngCore;

/// Prefix of an encrypted secret.
pub const ENC_V1: &str = "enc:v1:";
const AAD: &[u8] = b"osb-gateway secret v1";
const NONCE_LEN: usize = 12;

/// A string that must never be logged, captured or returned. `Debug` and
/// `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where it is used (auth headers, hashing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The 256-bit key that decrypts `enc:v1:` values.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        SecretKey(k)
    }

    /// Parses the base64 form written by [`SecretKey::to_base64`]
    /// (surrounding white space ignored).
    ///
    /// # Errors
    /// When the text is not base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let key: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("must decode to 32 bytes, got {}", v.len()))?;
        Ok(SecretKey(key))
    }

    /// The key as standard base64 (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Encrypts `plain` into an `enc:v1:` value.
    pub fn encrypt(&self, plain: &str) -> String {
        let cipher = Aes256Gcm::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: AAD,
                },
            )
            .expect("AES-GCM encryption of a short value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{ENC_V1}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts an `enc:v1:` value.
    ///
    /// # Errors
    /// When the value is malformed or was encrypted with another key.
    pub fn decrypt(&self, value: &str) -> Result<Secret, String> {
        let body = value
            .strip_prefix(ENC_V1)
            .ok_or_else(|| format!("does not start with {ENC_V1}"))?;
        let raw = URL_SAFE_NO_PAD
            .decode(body.trim())
            .map_err(|_| "the enc:v1: payload is not base64url".to_string())?;
        if raw.len() < NONCE_LEN + 16 {
            return Err("the enc:v1: payload is too short".into());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new((&self.0).into());
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: AAD })
            .map_err(|_| "cannot decrypt: wrong secret key or corrupted value".to_string())?;
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| "decrypted value is not UTF-8".to_string())
    }
}

/// Where a secret comes from, parsed from its text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// `env:NAME`
    Env(&'a str),
    /// `file:PATH`
    File(&'a str),
    /// `enc:v1:...` (the whole value)
    Encrypted(&'a str),
    /// A plain-text value (development mode only).
    Plain(&'a str),
}

impl<'a> SecretSource<'a> {
    /// Parses the text form.
    pub fn parse(text: &'a str) -> Self {
        if let Some(name) = text.strip_prefix("env:") {
            SecretSource::Env(name)
        } else if let Some(path) = text.strip_prefix("file:") {
            SecretSource::File(path)
        } else if text.starts_with(ENC_V1) {
            SecretSource::Encrypted(text)
        } else {
            SecretSource::Plain(text)
        }
    }

    /// How the value is shown in `config check` and admin output: never the secret.
    pub fn masked(&self) -> String {
        match self {
            SecretSource::Env(n) => format!("env:{n}"),
            SecretSource::File(p) => format!("file:{p}"),
            SecretSource::Encrypted(_) => "enc:v1:***".into(),
            SecretSource::Plain(_) => "*** (plain text)".into(),
        }
    }
}

/// What resolving a secret needs.
pub struct SecretContext<'a> {
    /// Key for `enc:v1:` values, when configured.
    pub key: Option<&'a SecretKey>,
    /// Plain-text values are accepted only in development mode.
    pub development_mode: bool,
    /// Directory that relative `file:` paths are resolved against.
    pub base_dir: &'a Path,
    /// Reads environment variables (the real environment outside tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl SecretContext<'_> {
    /// Resolves a secret's text form into its value.
    ///
    /// # Errors
    /// A message (without the secret) saying why the value cannot be had.
    pub fn resolve(&self, text: &str) -> Result<Secret, String> {
        let value = match SecretSource::parse(text) {
            SecretSource::Env(name) => {
                (self.env)(name).ok_or_else(|| format!("environment variable {name} is not set"))?
            }
            SecretSource::File(path) => {
                let p = self.base_dir.join(path);
                let mut s = std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?;
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                s
            }
            SecretSource::Encrypted(v) => {
                let key = self.key.ok_or_else(|| {
                    "an enc:v1: value needs the secret key (set OSB_GATEWAY_SECRET_KEY or secrets.key_file)"
                        .to_string()
                })?;
                return key.decrypt(v).and_then(non_empty);
            }
            SecretSource::Plain(v) => {
                if !self.development_mode {
                    return Err("plain-text passwords are accepted only in development mode; use env:NAME, file:PATH or an enc:v1: value".into());
                }
                v.to_string()
            }
        };
        non_empty(Secret(value))
    }
}

fn non_empty(s: Secret) -> Result<Secret, String> {
    if s.0.is_empty() {
        Err("the secret is empty".into())
    } else {
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(key: Option<&'a SecretKey>, dev: bool) -> SecretContext<'a> {
        SecretContext {
            key,
            development_mode: dev,
            base_dir: Path::new("/"),
            env: &|n| (n == "PW").then(|| "from-env".to_string()),
        }
    }

    #[test]
    fn encrypt_then_decrypt_round_trips() {
        let k = SecretKey::generate();
        let enc = k.encrypt("s3cret");
        assert!(enc.starts_with("enc:v1:"));
        assert!(!enc.contains("s3cret"));
        assert_eq!(
            ctx(Some(&k), false).resolve(&enc).unwrap().expose(),
            "s3cret"
        );
    }

    #[test]
    fn another_key_cannot_decrypt() {
        let enc = SecretKey::generate().encrypt("x");
        let err = ctx(Some(&SecretKey::generate()), false)
            .resolve(&enc)
            .unwrap_err();
        assert!(err.contains("wrong secret key"), "{err}");
    }

    #[test]
    fn plain_text_only_in_development_mode() {
        assert!(ctx(None, false)
            .resolve("hunter2")
            .unwrap_err()
            .contains("development mode"));
        assert_eq!(
            ctx(None, true).resolve("hunter2").unwrap().expose(),
            "hunter2"
        );
    }

    #[test]
    fn env_and_file_sources() {
        assert_eq!(
            ctx(None, false).resolve("env:PW").unwrap().expose(),
            "from-env"
        );
        assert!(ctx(None, false)
            .resolve("env:NOPE")
            .unwrap_err()
            .contains("NOPE"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "filepw\n").unwrap();
        let c = SecretContext {
            base_dir: dir.path(),
            ..ctx(None, false)
        };
        assert_eq!(c.resolve("file:pw").unwrap().expose(), "filepw");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("p@ss");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(SecretSource::parse("p@ss").masked(), "*** (plain text)");
    }

    #[test]
    fn key_parsing_names_the_problem() {
        assert!(SecretKey::from_base64("YWJj")
            .unwrap_err()
            .contains("32 bytes, got 3"));
        let k = SecretKey::generate();
        assert!(SecretKey::from_base64(&k.to_base64()).is_ok());
        assert!(SecretKey::from_base64("!!")
            .unwrap_err()
            .contains("not base64"));
    }
}
