//! Hex text of bytes and short SHA-256 digests: token hashes, route
//! fingerprints, registry versions and body hashes all print the same way.

use sha2::{Digest, Sha256};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Lower-case hex of a 16-byte hash, without an allocation (a row's body
/// hashes, written for every record).
pub fn hex16(bytes: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

/// The bytes of `N * 2` hex digits (either case), or `None` for any other
/// text (a sign, a space, a wrong length).
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
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
        let h: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        let text = hex16(&h);
        assert_eq!(std::str::from_utf8(&text).unwrap(), hex(&h));
        assert_eq!(unhex::<16>(std::str::from_utf8(&text).unwrap()), Some(h));
        assert_eq!(unhex::<2>("0FaB"), Some([0x0f, 0xab]));
        for bad in ["", "0", "0fa", "+f+f", " f0f", "0g00", "0f0f0"] {
            assert_eq!(unhex::<2>(bad), None, "{bad:?}");
        }
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(short_sha256(b"abc"), "ba7816bf8f01cfea");
    }
}
