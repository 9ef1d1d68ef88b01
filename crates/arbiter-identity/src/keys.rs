//! Arbiter's own secrets: agent API keys, admin tokens and PEP tokens.
//!
//! Every secret Arbiter issues has the same shape:
//!
//! ```text
//! <prefix><lookup:10><secret:32><checksum:6>
//! ```
//!
//! all in base62 (`0-9A-Za-z`). The prefix names the kind (`arb_`, `arbadm_`,
//! `arbpep_`) so a leaked secret is recognisable by secret scanners; the
//! lookup is a public identifier used to find the stored record; the secret
//! part carries 32 × log2(62) ≈ 190 bits from the operating system's random
//! number generator; the checksum (CRC-32 of everything before it) lets a
//! scanner or a server reject a mistyped or truncated secret offline, without
//! a database round trip.
//!
//! Storage keeps only [`hash`]: SHA-256 over a domain tag and the full text.
//! A password hash (Argon2, scrypt, bcrypt) exists to slow down guessing of
//! *low-entropy* human passwords; these secrets are 190-bit random strings,
//! so guessing is already infeasible and a fast hash loses nothing, while a
//! slow hash would cost CPU on every authenticated request and hand an
//! attacker a cheap denial of service.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The base62 alphabet, in ascending digit value.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the public lookup part.
pub const LOOKUP_LEN: usize = 10;
/// Length of the random secret part.
pub const SECRET_LEN: usize = 32;
/// Length of the checksum part.
pub const CHECKSUM_LEN: usize = 6;
/// Length of everything after the prefix.
pub const BODY_LEN: usize = LOOKUP_LEN + SECRET_LEN + CHECKSUM_LEN;

/// Domain separation tag hashed before the secret text.
const HASH_DOMAIN: &[u8] = b"arbiter-secret-v1\0";
/// Prefix of a stored hash.
const HASH_PREFIX: &str = "sha256:";

/// The kinds of secret Arbiter issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretKind {
    /// An agent's API key, `arb_…`.
    AgentKey,
    /// An administrator's token, `arbadm_…`.
    AdminToken,
    /// A policy enforcement point's token, `arbpep_…`.
    PepToken,
}

impl SecretKind {
    /// Every kind.
    pub const ALL: [SecretKind; 3] = [
        SecretKind::AgentKey,
        SecretKind::AdminToken,
        SecretKind::PepToken,
    ];

    /// The literal text every secret of this kind starts with.
    pub const fn prefix(self) -> &'static str {
        match self {
            SecretKind::AgentKey => "arb_",
            SecretKind::AdminToken => "arbadm_",
            SecretKind::PepToken => "arbpep_",
        }
    }

    /// The prefix of the credential id (`<prefix><lookup>`) of this kind.
    pub const fn credential_id_prefix(self) -> &'static str {
        match self {
            SecretKind::AgentKey => "key_",
            SecretKind::AdminToken => "adm_",
            SecretKind::PepToken => "pep_",
        }
    }

    /// The [`crate::classify`] name of a well-formed secret of this kind.
    pub const fn shape_name(self) -> &'static str {
        match self {
            SecretKind::AgentKey => "arbiter-agent-key",
            SecretKind::AdminToken => "arbiter-admin-token",
            SecretKind::PepToken => "arbiter-pep-token",
        }
    }

    /// Total length in characters of a secret of this kind.
    pub const fn text_len(self) -> usize {
        self.prefix().len() + BODY_LEN
    }

    /// The kind whose prefix `text` starts with.
    ///
    /// The prefixes are prefix-free: `arb_` has `_` at index 3 where the
    /// others have `a`/`p`, so at most one kind matches.
    pub fn from_prefix_of(text: &str) -> Option<SecretKind> {
        SecretKind::ALL
            .into_iter()
            .find(|kind| text.as_bytes().starts_with(kind.prefix().as_bytes()))
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::AgentKey => "agent key",
            SecretKind::AdminToken => "admin token",
            SecretKind::PepToken => "PEP token",
        })
    }
}

/// The operating system's random number generator failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `getrandom` returned an error; nothing was issued.
    #[error("the operating system random number generator failed: {0}")]
    Random(String),
}

/// Why presented text is not a well-formed Arbiter secret.
///
/// No variant carries the presented text: errors may reach logs and clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// It does not start with `arb_`, `arbadm_` or `arbpep_`.
    #[error("not an Arbiter credential: unknown prefix")]
    UnknownPrefix,
    /// Right prefix, wrong number of characters.
    #[error("malformed {kind}: expected {expected} characters, got {found} bytes")]
    Length {
        /// The kind named by the prefix.
        kind: SecretKind,
        /// The length of every secret of that kind.
        expected: usize,
        /// The presented length, in bytes.
        found: usize,
    },
    /// A character after the prefix is outside `0-9A-Za-z`.
    #[error("malformed {kind}: contains a character outside 0-9A-Za-z")]
    Charset {
        /// The kind named by the prefix.
        kind: SecretKind,
    },
    /// The checksum does not match: mistyped, truncated or forged.
    #[error("malformed {kind}: checksum mismatch")]
    Checksum {
        /// The kind named by the prefix.
        kind: SecretKind,
    },
}

/// A string holding secret text, overwritten with zeros when dropped.
///
/// Best effort, without `unsafe`: the buffer is allocated at its final size
/// so it never reallocates, and the zeroing write is passed through
/// `black_box` so it is not optimised away.
struct SecretText(String);

impl SecretText {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Clone for SecretText {
    fn clone(&self) -> Self {
        SecretText(self.0.as_str().to_owned())
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// A freshly issued secret: show [`IssuedSecret::expose`] to its owner once,
/// store [`IssuedSecret::hash`] and [`IssuedSecret::credential_id`].
pub struct IssuedSecret {
    /// What kind of secret this is.
    pub kind: SecretKind,
    /// The public lookup part (10 base62 characters).
    pub lookup: String,
    /// `key_`/`adm_`/`pep_` followed by the lookup.
    pub credential_id: String,
    /// The storage hash, as returned by [`hash`].
    pub hash: String,
    secret: SecretText,
}

impl IssuedSecret {
    /// The full secret text. Show it once; never log it.
    pub fn expose(&self) -> &str {
        self.secret.as_str()
    }
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("kind", &self.kind)
            .field("lookup", &self.lookup)
            .field("credential_id", &self.credential_id)
            .field("hash", &self.hash)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A presented secret that has the right prefix, length, alphabet and
/// checksum. Whether it is *valid* is for [`verify`] against a stored hash.
#[derive(Clone)]
pub struct PresentedSecret {
    /// What kind of secret this claims to be.
    pub kind: SecretKind,
    /// The public lookup part.
    pub lookup: String,
    /// `key_`/`adm_`/`pep_` followed by the lookup.
    pub credential_id: String,
    text: SecretText,
}

impl fmt::Debug for PresentedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedSecret")
            .field("kind", &self.kind)
            .field("lookup", &self.lookup)
            .field("credential_id", &self.credential_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Issues a new secret of `kind` from the operating system's random number
/// generator.
pub fn issue(kind: SecretKind) -> Result<IssuedSecret, KeyError> {
    let mut random = [0u8; LOOKUP_LEN + SECRET_LEN];
    let filled = fill_base62(&mut random, |buf| {
        getrandom::fill(buf).map_err(|e| KeyError::Random(e.to_string()))
    });
    let result = filled.map(|()| {
        let (lookup, secret) = random.split_at(LOOKUP_LEN);
        assemble(kind, lookup, secret)
    });
    random.fill(0);
    std::hint::black_box(&random);
    let presented = result?;
    Ok(IssuedSecret {
        kind,
        lookup: presented.lookup.clone(),
        credential_id: presented.credential_id.clone(),
        hash: hash(&presented),
        secret: presented.text.clone(),
    })
}

/// Parses presented text as an Arbiter secret.
///
/// Checks, in order and failing at the first problem: the prefix, the exact
/// length, the alphabet, the checksum. The text is never echoed in errors.
pub fn parse(presented: &str) -> Result<PresentedSecret, KeyFormatError> {
    let kind = check(presented)?;
    let body = presented.get(kind.prefix().len()..).unwrap_or_default();
    let lookup = body.get(..LOOKUP_LEN).unwrap_or_default().to_owned();
    Ok(PresentedSecret {
        kind,
        credential_id: format!("{}{lookup}", kind.credential_id_prefix()),
        lookup,
        text: SecretText(presented.to_owned()),
    })
}

/// The checks of [`parse`], without copying the secret: the kind of a
/// well-formed secret.
pub(crate) fn check(presented: &str) -> Result<SecretKind, KeyFormatError> {
    let kind = SecretKind::from_prefix_of(presented).ok_or(KeyFormatError::UnknownPrefix)?;
    if presented.len() != kind.text_len() {
        return Err(KeyFormatError::Length {
            kind,
            expected: kind.text_len(),
            found: presented.len(),
        });
    }
    let bytes = presented.as_bytes();
    let (signed, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let body = signed.get(kind.prefix().len()..).unwrap_or_default();
    if !body.iter().chain(checksum).all(u8::is_ascii_alphanumeric) {
        return Err(KeyFormatError::Charset { kind });
    }
    if checksum != encode_checksum(crc32fast::hash(signed)) {
        return Err(KeyFormatError::Checksum { kind });
    }
    Ok(kind)
}

/// The storage hash of a secret:
/// `"sha256:" + hex(SHA-256("arbiter-secret-v1\0" || full text))`.
///
/// A fast hash is right here because the secret part has ≈ 190 bits of
/// entropy (see the module docs).
pub fn hash(presented: &PresentedSecret) -> String {
    format!("{HASH_PREFIX}{}", hex::encode(digest(presented)))
}

/// Whether `presented` matches `stored_hash` (as produced by [`hash`]).
///
/// The 32-byte digests are compared in constant time. A stored hash that is
/// not `sha256:` followed by 64 hex digits never matches.
pub fn verify(presented: &PresentedSecret, stored_hash: &str) -> bool {
    let Some(stored_hex) = stored_hash.strip_prefix(HASH_PREFIX) else {
        return false;
    };
    let mut stored = [0u8; 32];
    if hex::decode_to_slice(stored_hex, &mut stored).is_err() {
        return false;
    }
    digest(presented).ct_eq(&stored).into()
}

fn digest(presented: &PresentedSecret) -> [u8; 32] {
    Sha256::new()
        .chain_update(HASH_DOMAIN)
        .chain_update(presented.text.as_str().as_bytes())
        .finalize()
        .into()
}

/// Builds the secret text from base62 `lookup` and `secret` parts.
fn assemble(kind: SecretKind, lookup: &[u8], secret: &[u8]) -> PresentedSecret {
    // INVARIANT: the buffer is allocated at its final length, so pushing
    // never reallocates and leaves no stray copy of the secret behind.
    let mut text = String::with_capacity(kind.text_len());
    text.push_str(kind.prefix());
    text.extend(lookup.iter().chain(secret).map(|&b| char::from(b)));
    let checksum = encode_checksum(crc32fast::hash(text.as_bytes()));
    text.extend(checksum.iter().map(|&b| char::from(b)));
    let lookup = String::from_utf8_lossy(lookup).into_owned();
    PresentedSecret {
        kind,
        credential_id: format!("{}{lookup}", kind.credential_id_prefix()),
        lookup,
        text: SecretText(text),
    }
}

/// Encodes a CRC-32 as exactly six base62 digits, most significant first,
/// left-padded with `0` (62^6 > 2^32, so six digits always suffice).
fn encode_checksum(crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [ALPHABET[0]; CHECKSUM_LEN];
    let mut value = crc;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Fills `out` with uniformly distributed base62 characters drawn from
/// `random`.
///
/// Rejection sampling: a random byte below 248 (= 4 × 62) maps to
/// `ALPHABET[b % 62]`, so each character has exactly four preimages; bytes
/// 248..=255 are discarded. Modulo alone would favour the first eight
/// characters.
fn fill_base62<E>(
    out: &mut [u8],
    mut random: impl FnMut(&mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    const LIMIT: u8 = 248;
    let mut pool = [0u8; 64];
    let mut filled = 0;
    let result = loop {
        if filled == out.len() {
            break Ok(());
        }
        if let Err(e) = random(&mut pool) {
            break Err(e);
        }
        for &b in &pool {
            if filled == out.len() {
                break;
            }
            if b < LIMIT {
                out[filled] = ALPHABET[usize::from(b % 62)];
                filled += 1;
            }
        }
    };
    pool.fill(0);
    std::hint::black_box(&pool);
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn base62_string(len: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(ALPHABET.as_slice()), len)
    }

    fn kind() -> impl Strategy<Value = SecretKind> {
        proptest::sample::select(SecretKind::ALL.as_slice())
    }

    #[test]
    fn alphabet_is_sorted_base62() {
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
        assert!(ALPHABET.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn every_accepted_byte_maps_to_exactly_four_per_character() {
        // Feed every byte value once; the accepted ones must cover the
        // alphabet evenly.
        let all: Vec<u8> = (0..=255u8).collect();
        let mut out = [0u8; 248];
        let mut offset = 0;
        fill_base62(&mut out, |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                *b = all[offset % all.len()];
                offset += 1;
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        for c in ALPHABET {
            assert_eq!(
                out.iter().filter(|&&o| o == *c).count(),
                4,
                "{}",
                *c as char
            );
        }
    }

    #[test]
    fn rejected_bytes_are_skipped() {
        let mut out = [0u8; 3];
        let mut calls = 0;
        fill_base62(&mut out, |buf: &mut [u8]| {
            calls += 1;
            // First pool: all rejected. Second: 0, 61, 62, then rejects.
            buf.fill(255);
            if calls == 2 {
                buf[0] = 0;
                buf[1] = 248;
                buf[2] = 61;
                buf[3] = 62;
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(&out, b"0z0");
        assert_eq!(calls, 2);
    }

    #[test]
    fn random_failure_is_an_error() {
        let mut out = [0u8; 4];
        let err = fill_base62(&mut out, |_: &mut [u8]| Err("no entropy"));
        assert_eq!(err, Err("no entropy"));
    }

    #[test]
    fn checksum_encoding_is_six_padded_digits() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        // 2^32 - 1 = 4 294 967 295 = 4 × 62^5 + 42 × 62^4 + … in base62.
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn lengths() {
        assert_eq!(SecretKind::AgentKey.text_len(), 52);
        assert_eq!(SecretKind::AdminToken.text_len(), 55);
        assert_eq!(SecretKind::PepToken.text_len(), 55);
    }

    #[test]
    fn every_single_substitution_and_transposition_is_rejected() {
        for kind in SecretKind::ALL {
            let key = assemble(kind, b"AbCdEfGh01", b"0123456789abcdefghijABCDEFGHIJzz");
            let text = key.text.as_str().as_bytes().to_vec();
            assert!(parse(key.text.as_str()).is_ok());
            for i in 0..text.len() {
                for &c in ALPHABET.iter().chain(b"_-. ") {
                    if c == text[i] {
                        continue;
                    }
                    let mut typo = text.clone();
                    typo[i] = c;
                    let typo = String::from_utf8(typo).unwrap();
                    assert!(
                        parse(&typo).is_err(),
                        "{kind}: position {i} -> {}",
                        c as char
                    );
                }
                if i + 1 < text.len() && text[i] != text[i + 1] {
                    let mut swapped = text.clone();
                    swapped.swap(i, i + 1);
                    let swapped = String::from_utf8(swapped).unwrap();
                    assert!(parse(&swapped).is_err(), "{kind}: swap at {i}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(kind in kind(), lookup in base62_string(LOOKUP_LEN), secret in base62_string(SECRET_LEN)) {
            let built = assemble(kind, &lookup, &secret);
            let parsed = parse(built.text.as_str()).unwrap();
            prop_assert_eq!(parsed.kind, kind);
            prop_assert_eq!(parsed.lookup.as_bytes(), lookup.as_slice());
            prop_assert_eq!(&parsed.credential_id, &format!("{}{}", kind.credential_id_prefix(), parsed.lookup));
            prop_assert!(verify(&parsed, &hash(&built)));
        }

        #[test]
        fn any_single_character_typo_fails(
            kind in kind(),
            lookup in base62_string(LOOKUP_LEN),
            secret in base62_string(SECRET_LEN),
            position in any::<proptest::sample::Index>(),
            replacement in any::<char>(),
        ) {
            let built = assemble(kind, &lookup, &secret);
            let mut chars: Vec<char> = built.text.as_str().chars().collect();
            let i = position.index(chars.len());
            prop_assume!(chars[i] != replacement);
            chars[i] = replacement;
            let typo: String = chars.into_iter().collect();
            prop_assert!(parse(&typo).is_err());
        }

        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = parse(&text);
        }
    }
}
