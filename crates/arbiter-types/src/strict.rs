//! Strict JSON: one parse, no duplicate member names, bounded nesting.
//!
//! `serde_json::Value` keeps the last of two members with the same name, so
//! `{"method":"ping","method":"tools/call"}` or `{"alg":"RS256","alg":"none"}` would mean one
//! thing to Arbiter and possibly another to the system on the other side. [`parse_strict`]
//! refuses duplicate member names at every level (after unescaping, so `"\u0061lg"` is `alg`)
//! and bounds nesting far below serde_json's own recursion limit. Its errors never quote the
//! input.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Why bytes are not strict JSON. The message never quotes the input: serde_json's
/// messages carry only positions and this module's fixed texts.
#[derive(Debug, Error)]
pub enum StrictJsonError {
    /// Not JSON, or trailing data after the value.
    #[error("invalid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// An object names a member twice (after unescaping).
    #[error("invalid JSON: {0}")]
    DuplicateMember(#[source] serde_json::Error),
    /// Nesting deeper than allowed.
    #[error("invalid JSON: {0}")]
    TooDeep(#[source] serde_json::Error),
    /// Valid JSON, but not the object it must be.
    #[error("not a JSON object")]
    NotObject,
}

/// Which of the strict rules a parse broke, recorded where it broke (serde's error type
/// carries only a message).
#[derive(Clone, Copy)]
enum Broken {
    Duplicate,
    Depth,
}

/// Parses `bytes` as one JSON value with no duplicate member names and nesting at most
/// `max_depth` (a scalar at the top level is depth 0, the members of the top-level object are
/// at depth 1); trailing non-whitespace is refused.
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let broken = Cell::new(None);
    let value = Strict {
        depth: 0,
        max: max_depth,
        broken: &broken,
    }
    .deserialize(&mut de)
    .map_err(|e| match broken.get() {
        Some(Broken::Duplicate) => StrictJsonError::DuplicateMember(e),
        Some(Broken::Depth) => StrictJsonError::TooDeep(e),
        None => StrictJsonError::Syntax(e),
    })?;
    de.end().map_err(StrictJsonError::Syntax)?;
    Ok(value)
}

/// Parses `bytes` as a JSON object (see [`parse_strict`]).
pub fn parse_strict_object(
    bytes: &[u8],
    max_depth: usize,
) -> Result<Map<String, Value>, StrictJsonError> {
    match parse_strict(bytes, max_depth)? {
        Value::Object(map) => Ok(map),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            Err(StrictJsonError::NotObject)
        }
    }
}

struct Strict<'b> {
    depth: usize,
    max: usize,
    broken: &'b Cell<Option<Broken>>,
}

impl<'b> Strict<'b> {
    fn nested<E: serde::de::Error>(&self) -> Result<Strict<'b>, E> {
        let depth = self.depth + 1;
        if depth > self.max {
            self.broken.set(Some(Broken::Depth));
            return Err(E::custom(format_args!(
                "nesting deeper than {} levels",
                self.max
            )));
        }
        Ok(Strict {
            depth,
            max: self.max,
            broken: self.broken,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = self.nested()?;
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                self.broken.set(Some(Broken::Duplicate));
                return Err(A::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(self.nested()?)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const MAX_DEPTH: usize = 16;

    fn parse(b: &[u8]) -> Result<Value, StrictJsonError> {
        parse_strict(b, MAX_DEPTH)
    }

    fn parse_object(b: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
        parse_strict_object(b, MAX_DEPTH)
    }

    #[test]
    fn says_which_rule_was_broken() {
        assert!(matches!(
            parse(br#"{"a":1,"a":2}"#),
            Err(StrictJsonError::DuplicateMember(_))
        ));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(StrictJsonError::TooDeep(_))
        ));
        assert!(matches!(parse(b"{"), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(parse(b"{} x"), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(
            parse_object(b"[]"),
            Err(StrictJsonError::NotObject)
        ));
    }

    #[test]
    fn accepts_plain_objects() {
        let v = parse_object(br#"{"a":1,"b":[true,null,"x",1.5,-3],"c":{"d":{}}}"#).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v["b"][3], 1.5);
    }

    #[test]
    fn refuses_duplicates_at_any_level() {
        assert!(parse(br#"{"alg":"RS256","alg":"none"}"#).is_err());
        assert!(parse(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse(br#"[{"b":1,"b":2}]"#).is_err());
        // The same name in sibling objects is fine.
        assert!(parse(br#"[{"b":1},{"b":2}]"#).is_ok());
    }

    #[test]
    fn duplicate_detection_sees_through_escapes() {
        assert!(parse(br#"{"alg":1,"\u0061lg":2}"#).is_err());
    }

    #[test]
    fn bounds_depth() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(deep.as_bytes()).is_err());
        let deep_obj = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(deep_obj.as_bytes()).is_err());
    }

    #[test]
    fn refuses_non_objects_and_trailing_data() {
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"\"x\"").is_err());
        assert!(parse_object(b"{} {}").is_err());
        assert!(parse_object(b"{}x").is_err());
        assert!(parse_object(b"").is_err());
        assert!(parse_object(br#"{"a":"\ud800"}"#).is_err());
        assert!(parse_object(b"{\"a\":\"\xff\"}").is_err());
    }
}
