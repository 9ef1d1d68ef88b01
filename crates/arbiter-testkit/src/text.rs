//! Reading what the binary prints.

use serde_json::Value;

/// Bytes a process printed, as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One JSON value per non-empty line (the `--json` and `log query` output); panics naming the
/// line that is not JSON.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

const MARK: &str = "(decision ";

/// Every decision id a denial names, in order: the `ID` of each `(decision ID)` in `text`.
pub fn decision_ids(text: &str) -> Vec<String> {
    text.match_indices(MARK)
        .filter_map(|(at, _)| {
            let rest = &text[at + MARK.len()..];
            rest.find(')').map(|end| rest[..end].to_owned())
        })
        .collect()
}

/// The decision id a denial names (the first `(decision ID)` in `text`); panics showing the
/// text when there is none.
pub fn decision_id(text: &str) -> String {
    decision_ids(text)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no `(decision …)` in: {text}"))
}

/// The approval id a denial names (the first `apr_…` word in `text`); panics showing the text
/// when there is none.
pub fn approval_id(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("apr_") && w.len() > 4)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no `apr_…` approval id in: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_are_read_from_denials() {
        let text = "denied: no (decision 0190-a)\nERROR: also no (decision 0190-b)\n";
        assert_eq!(decision_ids(text), ["0190-a", "0190-b"]);
        assert_eq!(decision_id(text), "0190-a");
        assert!(decision_ids("(decision unterminated").is_empty());
    }

    #[test]
    #[should_panic(expected = "no `(decision …)` in: allowed")]
    fn a_text_without_a_decision_fails_showing_it() {
        decision_id("allowed");
    }

    #[test]
    fn json_lines_skip_blank_lines() {
        assert_eq!(json_lines("{\"a\":1}\n\n[2]\n").len(), 2);
    }
}
