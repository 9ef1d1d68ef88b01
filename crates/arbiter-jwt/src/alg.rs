//! The signature algorithms a token may use (RFC 7518 §3, RFC 8037 §3.1).
//!
//! Only asymmetric algorithms exist here: a verifier that holds public keys must never
//! accept a MAC, whose "key" an attacker may know (the RS256/HS256 key-confusion attack).
//! `none` and every `HS*` name are simply not [`Algorithm`]s.

use std::fmt;
use std::str::FromStr;

/// An accepted JWS signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256, 32-byte salt.
    PS256,
    /// RSASSA-PSS with SHA-384, MGF1 with SHA-384, 48-byte salt.
    PS384,
    /// RSASSA-PSS with SHA-512, MGF1 with SHA-512, 64-byte salt.
    PS512,
    /// ECDSA on P-256 with SHA-256; the signature is the 64-byte `r || s`.
    ES256,
    /// Ed25519 (`EdDSA` with a key of `crv` `Ed25519`).
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

impl Algorithm {
    /// Every accepted algorithm.
    pub const ALL: [Algorithm; 8] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::EdDSA,
    ];

    /// The algorithms an issuer accepts when its configuration names none.
    pub const DEFAULT_ALLOWED: [Algorithm; 3] = [Self::RS256, Self::ES256, Self::EdDSA];

    /// The JWS name (`alg` header value), e.g. `"RS256"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with JWS name `name` (case-sensitive, as RFC 7515 requires), or
    /// `None` for `none`, MACs and anything unknown.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub(crate) fn key_kind(self) -> KeyKind {
        match self {
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                KeyKind::Rsa
            }
            Self::ES256 => KeyKind::P256,
            Self::EdDSA => KeyKind::Ed25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an accepted [`Algorithm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported algorithm `{0}` (accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA)"
)]
pub struct ParseAlgorithmError(String);

impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| ParseAlgorithmError(s.to_owned()))
    }
}

impl TryFrom<String> for Algorithm {
    type Error = ParseAlgorithmError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// `name` if it is short and plain enough to repeat in an error message, else a fixed
/// placeholder: header values are attacker-chosen.
pub(crate) fn printable_name(name: &str) -> &str {
    let plain = !name.is_empty()
        && name.len() <= 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.'));
    if plain { name } else { "(unrecognised)" }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
    }

    #[test]
    fn symmetric_and_none_are_not_algorithms() {
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "rs256", "ES384", "ES256K", "",
        ] {
            assert!(Algorithm::from_name(name).is_none(), "{name}");
        }
    }

    #[test]
    fn printable_name_hides_odd_input() {
        assert_eq!(printable_name("HS256"), "HS256");
        assert_eq!(printable_name("a b"), "(unrecognised)");
        assert_eq!(printable_name(&"A".repeat(17)), "(unrecognised)");
    }
}
