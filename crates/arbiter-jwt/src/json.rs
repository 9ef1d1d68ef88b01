//! Strict JSON for token headers, payloads and key sets: no duplicate member names (so
//! `{"alg":"RS256","alg":"none"}` is refused), nesting at most [`MAX_DEPTH`]. The parser is
//! `arbiter_types::strict`, shared with every other intake that must not be ambiguous.

use arbiter_types::strict::StrictJsonError;
use serde_json::{Map, Value};

/// The deepest nesting accepted: a scalar at the top level is depth 0, the members of
/// the top-level object are at depth 1.
pub const MAX_DEPTH: usize = 16;

/// Parses `bytes` as a JSON object with no duplicate member names, nested at most
/// [`MAX_DEPTH`]. The error does not quote the input.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
    arbiter_types::strict::parse_strict_object(bytes, MAX_DEPTH)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_json_is_strict() {
        assert!(parse_object(br#"{"alg":"RS256","alg":"none"}"#).is_err());
        let deep = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(parse_object(deep.as_bytes()).is_err());
        assert!(parse_object(br#"{"alg":"RS256"}"#).is_ok());
    }
}
