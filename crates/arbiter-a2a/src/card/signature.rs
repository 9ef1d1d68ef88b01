//! Agent card signatures: detached-payload JWS (RFC 7515 Appendix F), checked the way the
//! A2A Python SDK's `create_signature_verifier` checks them, never more leniently.
//!
//! Each entry of `signatures` holds `protected` (base64url of the JWS protected header) and
//! `signature`; the payload is not stored: it is the canonical card of
//! [`super::normalize::signed_payload`], and the signing input is
//! `protected + "." + base64url(payload)`. The card is accepted when at least one signature
//! verifies with one configured key.
//!
//! Where the SDK (through PyJWT) is lenient this is not: the header must be strict JSON (no
//! member twice: `{"alg":"none",…,"alg":"ES256"}` is one header to PyJWT and two to a reader
//! of the first), `alg` must be an asymmetric algorithm that fits the key (`none` and `HS*`
//! never are, see [`arbiter_jwt::Algorithm`]), a header `kid` must be the key's `kid`, no JWS
//! extension is accepted (`crit`, `b64`), base64url has no padding, and `jku` is ignored: keys
//! come only from the gateway's configuration.

use arbiter_jwt::{Algorithm, decode_base64url};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::CardKey;

/// Most signatures looked at on one card (each costs a verification per key).
pub(crate) const MAX_SIGNATURES: usize = 16;

/// Deepest nesting of a protected header.
const MAX_HEADER_DEPTH: usize = 8;

/// Why a card's signatures do not make it trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No `signatures`, or an empty list.
    Unsigned,
    /// Too many signatures to look at.
    TooMany,
    /// None verifies; why each did not (at most a few, in order).
    NoneVerifies(Vec<String>),
}

/// One signature of a card, as read from its `signatures` member.
struct Entry<'a> {
    protected: &'a str,
    signature: &'a str,
}

/// The signature entries of `card`, whose shape [`super::normalize::sdk_view`] has checked
/// (an array of objects with string `protected` and `signature`, or `null`s).
fn entries(card: &serde_json::Map<String, Value>) -> Vec<Entry<'_>> {
    let Some(Value::Array(list)) = card.get("signatures") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|entry| Entry {
            protected: entry.get("protected").and_then(Value::as_str).unwrap_or(""),
            signature: entry.get("signature").and_then(Value::as_str).unwrap_or(""),
        })
        .collect()
}

/// Checks the signatures of `card` (as fetched) over `payload` (its signed payload) against
/// `keys`.
pub(crate) fn verify(
    card: &serde_json::Map<String, Value>,
    payload: &[u8],
    keys: &[CardKey],
) -> Result<(), Failure> {
    let entries = entries(card);
    if entries.is_empty() {
        return Err(Failure::Unsigned);
    }
    if entries.len() > MAX_SIGNATURES {
        return Err(Failure::TooMany);
    }
    let encoded_payload = URL_SAFE_NO_PAD.encode(payload);
    let mut reasons = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match verify_one(entry, &encoded_payload, keys) {
            Ok(()) => return Ok(()),
            Err(reason) => {
                if reasons.len() < 3 {
                    reasons.push(format!("signature {i}: {reason}"));
                }
            }
        }
    }
    Err(Failure::NoneVerifies(reasons))
}

fn verify_one(entry: &Entry<'_>, encoded_payload: &str, keys: &[CardKey]) -> Result<(), String> {
    let header_bytes =
        decode_base64url(entry.protected).map_err(|e| format!("protected header: {e}"))?;
    let header = arbiter_types::strict::parse_strict_object(&header_bytes, MAX_HEADER_DEPTH)
        .map_err(|e| format!("protected header: {e}"))?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| format!("algorithm `{}` is not accepted", printable(name)))?,
        Some(_) => return Err("protected header: `alg` is not a string".to_owned()),
        None => return Err("protected header: no `alg`".to_owned()),
    };
    for extension in ["crit", "b64"] {
        if header.contains_key(extension) {
            return Err(format!(
                "protected header: `{extension}` (JWS extensions are not accepted)"
            ));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err("protected header: `kid` is not a string".to_owned()),
    };
    let signature = decode_base64url(entry.signature).map_err(|e| format!("signature: {e}"))?;
    let signing_input = format!("{}.{encoded_payload}", entry.protected);
    let mut fitting = 0usize;
    for key in keys {
        let same_kid = match (kid, key.kid()) {
            (Some(named), Some(own)) => named == own,
            _ => true,
        };
        if !same_kid || !key.jwk.usable_for(alg) {
            continue;
        }
        fitting += 1;
        if key.jwk.verify(alg, signing_input.as_bytes(), &signature) {
            return Ok(());
        }
    }
    Err(if fitting == 0 {
        match kid {
            Some(kid) => format!(
                "no configured card key with kid `{}` verifies {alg}",
                printable(kid)
            ),
            None => format!("no configured card key verifies {alg}"),
        }
    } else {
        format!("does not verify ({alg})")
    })
}

/// `name` if it is short and plain enough to repeat to a caller, else a placeholder: header
/// values are chosen by whoever wrote the card.
fn printable(name: &str) -> &str {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.' | b':'));
    if plain { name } else { "(unprintable)" }
}
