//! JSON Web Key Sets (RFC 7517) and signature verification with their keys.
//!
//! A key set is parsed once into typed public keys, so verification never re-reads JSON.
//! Keys of kinds we do not verify with (symmetric `oct`, other curves, `"use": "enc"`,
//! an `alg` we do not accept) are skipped. A key of a kind we do use but that is
//! malformed, too weak (RSA under 2048 bits, a small-order Ed25519 point), carries
//! private material, or repeats a `kid` makes the whole set an error: that is a
//! configuration fault an operator must see, not something to work around silently.

use p256::ecdsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use crate::alg::{Algorithm, KeyKind};
use crate::b64;
use crate::json;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;
/// Most entries a key set may list.
pub const MAX_KEYS: usize = 256;
/// Longest `kid` accepted, in bytes.
pub const MAX_KID_LEN: usize = 256;

/// Members that only a private JWK has (RFC 7518 §6.2.2, §6.3.2, RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// The parsed, usable keys of one issuer.
#[derive(Debug, Clone)]
pub(crate) struct KeySet {
    // INVARIANT: non-empty; no two keys share a `kid`.
    keys: Vec<Jwk>,
}

/// One usable public key.
#[derive(Debug, Clone)]
pub(crate) struct Jwk {
    kid: Option<String>,
    /// The JWK's own `alg`, which then is the only algorithm it verifies.
    alg: Option<Algorithm>,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    fn kind(&self) -> KeyKind {
        match self {
            Self::Rsa(_) => KeyKind::Rsa,
            Self::P256(_) => KeyKind::P256,
            Self::Ed25519(_) => KeyKind::Ed25519,
        }
    }
}

/// The outcome of looking a key up for a token.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    Found(&'a Jwk),
    /// No key has the token's `kid` (or, without `kid`, no key suits the algorithm).
    NotFound,
    /// A key has the token's `kid` but cannot verify the token's algorithm.
    Incompatible,
    /// The token has no `kid` and several keys suit the algorithm.
    Ambiguous,
}

impl KeySet {
    /// Parses a JWKS document.
    pub(crate) fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let doc = json::parse_object(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
        let Some(entries) = doc.get("keys") else {
            return Err("not a JWKS: missing `keys`".to_owned());
        };
        let Value::Array(entries) = entries else {
            return Err("not a JWKS: `keys` is not an array".to_owned());
        };
        if entries.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        let mut keys: Vec<Jwk> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(format!("key {index} is not an object"));
            };
            let parsed = parse_jwk(entry).map_err(|e| match entry_kid(entry) {
                Some(kid) => format!("key {index} (kid `{kid}`): {e}"),
                None => format!("key {index}: {e}"),
            })?;
            if let Some(jwk) = parsed {
                if let Some(kid) = &jwk.kid
                    && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
                {
                    return Err(format!("key {index}: duplicate kid `{kid}`"));
                }
                keys.push(jwk);
            }
        }
        if keys.is_empty() {
            return Err("no usable signing key (RSA, EC P-256 or OKP Ed25519)".to_owned());
        }
        Ok(KeySet { keys })
    }

    /// Number of usable keys in the set.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Selects the key for a token with header `alg` and `kid`.
    pub(crate) fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> Lookup<'_> {
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                None => Lookup::NotFound,
                Some(k) if k.usable_for(alg) => Lookup::Found(k),
                Some(_) => Lookup::Incompatible,
            },
            None => {
                let mut usable = self.keys.iter().filter(|k| k.usable_for(alg));
                match (usable.next(), usable.next()) {
                    (None, _) => Lookup::NotFound,
                    (Some(k), None) => Lookup::Found(k),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }
}

/// One public key on its own, for signatures that are not tokens (an A2A agent card's JWS,
/// for example): parsed from one JWK with exactly the checks of a key set entry (no private
/// members, RSA of 2048 to 8192 bits, a P-256 point on the curve, no small-order Ed25519
/// point, the JWK's own `alg` fitting its type).
#[derive(Debug, Clone)]
pub struct PublicJwk(Jwk);

/// Why a JWK is not a usable public key. The message names members, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwkError(String);

impl PublicJwk {
    /// Parses one JWK (a JSON object, strictly: no duplicate members). A key of a kind that
    /// cannot verify signatures here (symmetric `oct`, other curves, `"use": "enc"`, an `alg`
    /// that is not accepted) is an error too: the caller asked for this key.
    pub fn parse(bytes: &[u8]) -> Result<PublicJwk, JwkError> {
        let entry = json::parse_object(bytes).map_err(|e| JwkError(format!("not a JWK: {e}")))?;
        if entry.contains_key("keys") {
            return Err(JwkError(
                "a key set (JWKS), not one key; give one JWK".to_owned(),
            ));
        }
        match parse_jwk(&entry).map_err(JwkError)? {
            Some(jwk) => Ok(PublicJwk(jwk)),
            None => Err(JwkError(
                "not a key that verifies signatures (RSA, EC P-256 or OKP Ed25519, `use` \
                 `sig`, an accepted `alg`)"
                    .to_owned(),
            )),
        }
    }

    /// The JWK's `kid`, if any.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.0.kid.as_deref()
    }

    /// Whether this key may verify `alg`: the key type fits and the JWK's own `alg`, if
    /// any, is `alg`.
    #[must_use]
    pub fn usable_for(&self, alg: Algorithm) -> bool {
        self.0.usable_for(alg)
    }

    /// Whether `signature` (raw JWS signature bytes, e.g. the 64-byte `r || s` of ES256) is
    /// a signature of `signing_input` by this key with `alg`; `false` also when the key is not
    /// usable for `alg`.
    #[must_use]
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &[u8]) -> bool {
        self.0.verify(alg, signing_input, signature).is_ok()
    }
}

impl Jwk {
    /// Whether this key may verify `alg`: the key type fits and the JWK's own `alg`, if
    /// any, is `alg`.
    fn usable_for(&self, alg: Algorithm) -> bool {
        self.key.kind() == alg.key_kind() && self.alg.is_none_or(|a| a == alg)
    }

    /// Verifies `signature` over `signing_input` with algorithm `alg`. `alg` must be one
    /// the key is usable for (checked again here).
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let jwk = self;
        if !jwk.usable_for(alg) {
            return Err(VerifyError::Incompatible);
        }
        match alg {
            Algorithm::RS256 => rsa_verify(jwk, signature, |k, s| {
                k.verify(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(signing_input),
                    s,
                )
            }),
            Algorithm::RS384 => rsa_verify(jwk, signature, |k, s| {
                k.verify(
                    Pkcs1v15Sign::new::<Sha384>(),
                    &Sha384::digest(signing_input),
                    s,
                )
            }),
            Algorithm::RS512 => rsa_verify(jwk, signature, |k, s| {
                k.verify(
                    Pkcs1v15Sign::new::<Sha512>(),
                    &Sha512::digest(signing_input),
                    s,
                )
            }),
            Algorithm::PS256 => rsa_verify(jwk, signature, |k, s| {
                k.verify(
                    Pss::new_with_salt::<Sha256>(32),
                    &Sha256::digest(signing_input),
                    s,
                )
            }),
            Algorithm::PS384 => rsa_verify(jwk, signature, |k, s| {
                k.verify(
                    Pss::new_with_salt::<Sha384>(48),
                    &Sha384::digest(signing_input),
                    s,
                )
            }),
            Algorithm::PS512 => rsa_verify(jwk, signature, |k, s| {
                k.verify(
                    Pss::new_with_salt::<Sha512>(64),
                    &Sha512::digest(signing_input),
                    s,
                )
            }),
            Algorithm::ES256 => {
                let PublicKey::P256(key) = &jwk.key else {
                    return Err(VerifyError::Incompatible);
                };
                // JWS uses the fixed-size `r || s` form (RFC 7518 §3.4), never DER.
                if signature.len() != 64 {
                    return Err(VerifyError::BadSignature);
                }
                let sig = p256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| VerifyError::BadSignature)?;
                key.verify(signing_input, &sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
            Algorithm::EdDSA => {
                let PublicKey::Ed25519(key) = &jwk.key else {
                    return Err(VerifyError::Incompatible);
                };
                let bytes: &[u8; 64] = signature
                    .try_into()
                    .map_err(|_| VerifyError::BadSignature)?;
                let sig = ed25519_dalek::Signature::from_bytes(bytes);
                // Strict: refuses non-canonical `S` and small-order `R`.
                key.verify_strict(signing_input, &sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
        }
    }
}

/// Why [`Jwk::verify`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifyError {
    Incompatible,
    BadSignature,
}

fn rsa_verify(
    jwk: &Jwk,
    signature: &[u8],
    check: impl FnOnce(&RsaPublicKey, &[u8]) -> rsa::Result<()>,
) -> Result<(), VerifyError> {
    let PublicKey::Rsa(key) = &jwk.key else {
        return Err(VerifyError::Incompatible);
    };
    // The signature is exactly the modulus length and, as a number, below the modulus
    // (RFC 8017 §5.2.2); otherwise `s + n` would verify as well as `s`.
    if signature.len() != key.size() || BigUint::from_bytes_be(signature) >= *key.n() {
        return Err(VerifyError::BadSignature);
    }
    check(key, signature).map_err(|_| VerifyError::BadSignature)
}

fn entry_kid(entry: &Map<String, Value>) -> Option<&str> {
    match entry.get("kid") {
        Some(Value::String(kid))
            if kid.len() <= MAX_KID_LEN && !kid.chars().any(char::is_control) =>
        {
            Some(kid)
        }
        _ => None,
    }
}

/// Parses one JWK: `Ok(None)` for a key we do not use, `Err` for a broken or weak key.
fn parse_jwk(entry: &Map<String, Value>) -> Result<Option<Jwk>, String> {
    let kty = required_str(entry, "kty")?;
    let kid = match entry.get("kid") {
        None => None,
        Some(Value::String(kid)) => {
            if kid.is_empty() || kid.len() > MAX_KID_LEN {
                return Err(format!("`kid` must be 1 to {MAX_KID_LEN} bytes"));
            }
            Some(kid.clone())
        }
        Some(_) => return Err("`kid` is not a string".to_owned()),
    };
    match entry.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(_)) => return Ok(None),
        Some(_) => return Err("`use` is not a string".to_owned()),
    }
    match entry.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) => {
            let mut verify = false;
            for op in ops {
                match op {
                    Value::String(op) => verify |= op == "verify",
                    _ => return Err("`key_ops` holds a non-string".to_owned()),
                }
            }
            if !verify {
                return Ok(None);
            }
        }
        Some(_) => return Err("`key_ops` is not an array".to_owned()),
    }
    let alg = match entry.get("alg") {
        None => None,
        Some(Value::String(name)) => match Algorithm::from_name(name) {
            Some(alg) => Some(alg),
            // Pinned to an algorithm we never accept (RSA-OAEP, ES384, HS256, ...).
            None => return Ok(None),
        },
        Some(_) => return Err("`alg` is not a string".to_owned()),
    };
    let key = match kty {
        "RSA" => PublicKey::Rsa(parse_rsa(entry)?),
        "EC" => {
            if required_str(entry, "crv")? != "P-256" {
                return Ok(None);
            }
            PublicKey::P256(parse_p256(entry)?)
        }
        "OKP" => {
            if required_str(entry, "crv")? != "Ed25519" {
                return Ok(None);
            }
            PublicKey::Ed25519(parse_ed25519(entry)?)
        }
        _ => return Ok(None),
    };
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| entry.contains_key(**m)) {
        return Err(format!(
            "holds private key material (`{member}`); publish only public keys"
        ));
    }
    if let Some(alg) = alg
        && alg.key_kind() != key.kind()
    {
        return Err(format!("`alg` {alg} does not fit a key of type `{kty}`"));
    }
    Ok(Some(Jwk { kid, alg, key }))
}

fn required_str<'a>(entry: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, String> {
    match entry.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{name}` is not a string")),
        None => Err(format!("missing `{name}`")),
    }
}

fn required_b64(entry: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, String> {
    b64::decode(required_str(entry, name)?).map_err(|e| format!("`{name}`: {e}"))
}

fn parse_rsa(entry: &Map<String, Value>) -> Result<RsaPublicKey, String> {
    let n = BigUint::from_bytes_be(&required_b64(entry, "n")?);
    let e = BigUint::from_bytes_be(&required_b64(entry, "e")?);
    let bits = n.bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits; at least {MIN_RSA_BITS} required"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits; at most {MAX_RSA_BITS} accepted"
        ));
    }
    let three = BigUint::from(3u8);
    if e < three || (&e % 2u8) != BigUint::from(1u8) {
        return Err("RSA exponent must be odd and at least 3".to_owned());
    }
    if (&n % 2u8) != BigUint::from(1u8) {
        return Err("RSA modulus must be odd".to_owned());
    }
    RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).map_err(|e| format!("RSA key: {e}"))
}

fn fixed_32(entry: &Map<String, Value>, name: &'static str) -> Result<[u8; 32], String> {
    let bytes = required_b64(entry, name)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("`{name}` must be 32 bytes"))
}

fn parse_p256(entry: &Map<String, Value>) -> Result<p256::ecdsa::VerifyingKey, String> {
    let x = fixed_32(entry, "x")?;
    let y = fixed_32(entry, "y")?;
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    p256::ecdsa::VerifyingKey::from_encoded_point(&point)
        .map_err(|_| "EC point is not on P-256".to_owned())
}

fn parse_ed25519(entry: &Map<String, Value>) -> Result<ed25519_dalek::VerifyingKey, String> {
    let x = fixed_32(entry, "x")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map_err(|_| "`x` is not an Ed25519 point".to_owned())?;
    if key.is_weak() {
        return Err("Ed25519 key of small order".to_owned());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1","x":"fMyxvA7tHom_s7eIGv8KTVM4brmZbscW9i-GcE5M0lM","y":"17Rge2GKT_fVdLB4KQWYSNWBuavSi6rw7mkA8VQJHdk"}"#;

    #[test]
    fn one_public_jwk_parses_with_key_set_checks() {
        let key = PublicJwk::parse(P256.as_bytes()).unwrap();
        assert_eq!(key.kid(), Some("k1"));
        assert!(key.usable_for(Algorithm::ES256));
        assert!(!key.usable_for(Algorithm::EdDSA));
        assert!(!key.verify(Algorithm::ES256, b"input", &[0; 64]));
        assert!(!key.verify(Algorithm::RS256, b"input", &[0; 64]));
    }

    #[test]
    fn one_public_jwk_refuses_sets_secrets_and_other_kinds() {
        let set = format!(r#"{{"keys":[{P256}]}}"#);
        assert!(PublicJwk::parse(set.as_bytes()).is_err());
        let private = P256.replace(r#""kid""#, r#""d":"AAAA","kid""#);
        assert!(PublicJwk::parse(private.as_bytes()).is_err());
        assert!(PublicJwk::parse(br#"{"kty":"oct","k":"c2VjcmV0"}"#).is_err());
        let enc = P256.replace(r#""kid""#, r#""use":"enc","kid""#);
        assert!(PublicJwk::parse(enc.as_bytes()).is_err());
        let dup = P256.replace(r#""kid":"k1""#, r#""kid":"k1","kid":"k2""#);
        assert!(PublicJwk::parse(dup.as_bytes()).is_err());
    }
}
