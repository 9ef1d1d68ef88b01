//! Bounded JSON intake.
//!
//! Every byte an agent or a PEP sends passes through [`parse_bounded`] before anything else
//! looks at it: the size and nesting depth are checked on the raw bytes first (a linear scan
//! that cannot recurse), so a hostile body can neither exhaust the stack nor the heap.

use serde_json::Value;

/// Limits applied to untrusted JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (the top-level object counts as 1).
    pub max_depth: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_depth: 32,
        }
    }
}

/// Why a body was refused before it was interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the body is empty; send a JSON object")]
    Empty,
    #[error("the body is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the body nests arrays and objects deeper than the limit of {limit} levels")]
    TooDeep { limit: usize },
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    #[error("the body must be a JSON object, not {0}")]
    NotAnObject(&'static str),
}

/// Returns the deepest nesting of `[`/`{` in `bytes`, ignoring brackets inside strings.
///
/// Stops early (returning `limit + 1`) as soon as the limit is exceeded. The scan does not
/// validate JSON; it only bounds the work the real parser will do.
pub fn nesting_depth(bytes: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses an untrusted JSON object under `limits`.
pub fn parse_bounded(
    bytes: &[u8],
    limits: JsonLimits,
) -> Result<serde_json::Map<String, Value>, LimitError> {
    if bytes.len() > limits.max_bytes {
        return Err(LimitError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(LimitError::Empty);
    }
    if nesting_depth(bytes, limits.max_depth) > limits.max_depth {
        return Err(LimitError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| LimitError::Syntax(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(LimitError::NotAnObject(kind_of(&other))),
    }
}

/// A short English name for the kind of a JSON value, for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":"[[[[{{{{"}"#, 10), 1);
        assert_eq!(nesting_depth(br#"{"a":"\"[["}"#, 10), 1);
        assert_eq!(nesting_depth(br#"{"a":[[{}]]}"#, 10), 4);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let body = "[".repeat(1_000_000);
        let err = parse_bounded(
            body.as_bytes(),
            JsonLimits {
                max_bytes: 2_000_000,
                max_depth: 32,
            },
        )
        .unwrap_err();
        assert_eq!(err, LimitError::TooDeep { limit: 32 });
    }

    #[test]
    fn non_objects_and_empty_bodies_are_named() {
        let l = JsonLimits::default();
        assert_eq!(parse_bounded(b"  ", l).unwrap_err(), LimitError::Empty);
        assert_eq!(
            parse_bounded(b"[1]", l).unwrap_err(),
            LimitError::NotAnObject("an array")
        );
        assert!(matches!(
            parse_bounded(b"{", l).unwrap_err(),
            LimitError::Syntax(_)
        ));
    }
}
