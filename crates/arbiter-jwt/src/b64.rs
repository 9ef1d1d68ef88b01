//! Strict base64url (RFC 4648 §5) without padding, as JWS (RFC 7515 §2) requires.
//!
//! Exactly one encoding is accepted for each byte string: no `=` padding, no whitespace,
//! no characters outside the URL-safe alphabet, and the unused low bits of the last
//! character must be zero. Two different strings therefore never decode to the same
//! bytes, so a token cannot be altered without changing what its signature covers.

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Whether `b` belongs to the base64url alphabet (without `=`).
pub(crate) fn is_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Decodes `s` strictly; the error says why without echoing the input.
pub fn decode(s: &str) -> Result<Vec<u8>, &'static str> {
    if !s.bytes().all(is_alphabet) {
        return Err("not base64url without padding");
    }
    // A length of 1 modulo 4 cannot come from any byte string.
    if s.len() % 4 == 1 {
        return Err("base64url of impossible length");
    }
    STRICT
        .decode(s)
        .map_err(|_| "non-canonical base64url (trailing bits)")
}

/// Encodes `bytes` the one way [`decode`] accepts.
#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn rejects_padding_whitespace_and_other_alphabets() {
        assert!(decode("YQ==").is_err());
        assert!(decode("YQ=").is_err());
        assert!(decode("YW J j").is_err());
        assert!(decode("YWJj\n").is_err());
        assert!(decode("+/8").is_err());
        assert!(decode("Y").is_err());
        assert_eq!(decode("YWJj").unwrap(), b"abc");
        assert_eq!(decode("-_8").unwrap(), [0xfb, 0xff]);
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "YQ" is the canonical encoding of "a"; "YR" has a non-zero unused bit.
        assert_eq!(decode("YQ").unwrap(), b"a");
        assert!(decode("YR").is_err());
        assert_eq!(decode("YWI").unwrap(), b"ab");
        assert!(decode("YWJ").is_err());
        assert!(decode("YWK").is_err());
    }
}
