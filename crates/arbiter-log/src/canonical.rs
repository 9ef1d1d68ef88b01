//! Canonical JSON (RFC 8785, "JCS") so that the same value always encodes to
//! the same bytes and therefore always hashes the same.
//!
//! Every hash in the log (leaf hashes, the request-context digest, redaction
//! HMACs) is taken over these bytes, so the encoding is part of the on-disk
//! format and must never change for schema 1.
//!
//! Rules (RFC 8785):
//! - no insignificant whitespace;
//! - object members sorted by their keys compared as sequences of UTF-16 code
//!   units (duplicates cannot occur in a `serde_json::Value`);
//! - strings: `"` and `\` escaped, U+0000..U+001F escaped as `\b \t \n \f \r`
//!   or `\u00xx` (lowercase hex), every other character written literally as
//!   UTF-8 (no `\u` escapes for non-ASCII, `/` not escaped);
//! - integers that fit `i64`/`u64` written in plain decimal;
//! - other numbers (floats) written with the ECMAScript `Number.toString`
//!   algorithm (shortest round-trip digits), as RFC 8785 §3.2.2.3 requires;
//!   `-0` is written `0`. NaN and infinities cannot occur in a
//!   `serde_json::Value`.
//!
//! Nesting deeper than [`MAX_DEPTH`] is rejected instead of risking stack
//! exhaustion.

use std::cmp::Ordering;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Deepest nesting of arrays/objects accepted by [`canonical_json`].
pub const MAX_DEPTH: usize = 128;

/// Why a value cannot be canonically encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// The value nests arrays/objects deeper than [`MAX_DEPTH`].
    #[error("value nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A number could not be represented (should not happen with serde_json).
    #[error("number `{0}` cannot be encoded canonically")]
    BadNumber(String),
}

/// Encodes `value` as RFC 8785 canonical JSON.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// Appends the canonical encoding of `value` to `out`.
pub fn write_canonical(out: &mut Vec<u8>, value: &Value) -> Result<(), CanonicalError> {
    write_value(out, value, 0)
}

/// `"sha256:<hex>"` of the canonical encoding of `value` (used for
/// `DecisionRecord::context_digest`).
pub fn sha256_digest(value: &Value) -> Result<String, CanonicalError> {
    let bytes = canonical_json(value)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
}

/// Compares two keys as sequences of UTF-16 code units (RFC 8785 §3.2.3).
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    // For ASCII, byte order is UTF-16 order. Otherwise they differ: a
    // supplementary character (surrogate pair) sorts before U+E000..U+FFFF.
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value, depth: usize) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(CanonicalError::TooDeep);
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(CanonicalError::TooDeep);
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| cmp_utf16(a.0, b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_value(out, v, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        write_u64(out, u);
        Ok(())
    } else if let Some(i) = n.as_i64() {
        write_i64(out, i);
        Ok(())
    } else if let Some(f) = n.as_f64() {
        write_f64(out, f).ok_or_else(|| CanonicalError::BadNumber(n.to_string()))
    } else {
        Err(CanonicalError::BadNumber(n.to_string()))
    }
}

/// Appends an unsigned integer in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a signed integer in decimal.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

/// ECMAScript `Number.prototype.toString` for finite doubles.
fn write_f64(out: &mut Vec<u8>, f: f64) -> Option<()> {
    if !f.is_finite() {
        return None;
    }
    if f == 0.0 {
        out.push(b'0');
        return Some(());
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, e.g.
    // "1.2345e-7" or "5e0"; ES uses the same digit selection.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = i32::try_from(digits.len()).ok()?;
    let n = exp + 1; // position of the decimal point relative to the digits
    if f < 0.0 {
        out.push(b'-');
    }
    if k <= n && n <= 21 {
        out.extend_from_slice(digits.as_bytes());
        for _ in 0..(n - k) {
            out.push(b'0');
        }
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(n).ok()?);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        for _ in 0..(-n) {
            out.push(b'0');
        }
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (first, rest) = digits.split_at(1);
        out.extend_from_slice(first.as_bytes());
        if !rest.is_empty() {
            out.push(b'.');
            out.extend_from_slice(rest.as_bytes());
        }
        out.push(b'e');
        out.push(if n - 1 < 0 { b'-' } else { b'+' });
        write_u64(out, u64::from((n - 1).unsigned_abs()));
    }
    Some(())
}

/// Appends `s` as a canonical JSON string literal.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x09 => Some(b"\\t"),
            0x0a => Some(b"\\n"),
            0x0c => Some(b"\\f"),
            0x0d => Some(b"\\r"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn enc(v: &Value) -> String {
        String::from_utf8(canonical_json(v).unwrap()).unwrap()
    }

    #[test]
    fn key_order_is_independent_of_insertion() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[3,{"d":4,"c":5}]}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":[3,{"c":5,"d":4}],"y":2},"b":1}"#).unwrap();
        assert_eq!(enc(&a), enc(&b));
        assert_eq!(enc(&a), r#"{"a":{"x":[3,{"c":5,"d":4}],"y":2},"b":1}"#);
    }

    #[test]
    fn utf16_key_order() {
        // RFC 8785 §3.2.3 example: sorted by UTF-16 code units.
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let keys: Vec<String> = {
            let s = enc(&v);
            let back: Value = serde_json::from_str(&s).unwrap();
            back.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(
            keys,
            vec![
                "\r",
                "1",
                "\u{80}",
                "\u{f6}",
                "\u{20ac}",
                "\u{1f600}",
                "\u{fb33}"
            ]
        );
    }

    #[test]
    fn string_escapes() {
        let v = json!("a\"b\\c\u{8}\u{9}\n\u{c}\r\u{1}\u{1f}/é😀\u{7f}");
        assert_eq!(
            enc(&v),
            "\"a\\\"b\\\\c\\b\\t\\n\\f\\r\\u0001\\u001f/é😀\u{7f}\""
        );
    }

    #[test]
    fn numbers() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("-1", "-1"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123.456", "123.456"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("1.5e-7", "1.5e-7"),
            ("4.5", "4.5"),
            ("333333333.33333329", "333333333.3333333"),
            ("333333333.33333325", "333333333.33333325"),
            ("1e23", "1e+23"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ];
        for (input, want) in cases {
            let v: Value = serde_json::from_str(input).unwrap();
            assert_eq!(enc(&v), *want, "input {input}");
            // idempotent: re-parse and re-encode gives the same bytes
            let again: Value = serde_json::from_str(want).unwrap();
            assert_eq!(enc(&again), *want);
        }
    }

    proptest::proptest! {
        #[test]
        fn float_encoding_round_trips(bits in proptest::prelude::any::<u64>()) {
            let f = f64::from_bits(bits);
            if let Some(n) = serde_json::Number::from_f64(f) {
                let v = Value::Number(n);
                let s = enc(&v);
                let back: Value = serde_json::from_str(&s).unwrap();
                proptest::prop_assert_eq!(enc(&back), s.clone());
                if let Some(b) = back.as_f64() {
                    proptest::prop_assert!(b == f || (f == 0.0 && b == 0.0), "{} -> {}", f, s);
                }
            }
        }
    }

    #[test]
    fn too_deep_is_rejected() {
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!([v]);
        }
        assert_eq!(canonical_json(&v), Err(CanonicalError::TooDeep));
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // case 6: key longer than the block size
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
