//! Hex text of bytes and short SHA-256 digests: token hashes, route
//! fingerprints, registry versions and body hashes all print the same way.

use sha2::{Digest, Sha256};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The first 16 hex digits of the SHA-256 of `bytes`: a short name for a
/// content (a route's settings, a registry text).
pub fn short_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_short_digests() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(short_sha256(b"abc"), "ba7816bf8f01cfea");
    }
}
