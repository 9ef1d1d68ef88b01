//! Path-like tool arguments, in the one form policies can match safely.
//!
//! A policy such as `context.arguments.path like "/srv/docs/*"` reads like a directory rule,
//! but a pattern on text also matches `/srv/docs/../../etc/passwd`, `/srv/docs/./x` and
//! `/srv/docs//x`. So before a `tools/call` is decided, every argument whose *name* says it is
//! a path (see [`is_path_key`]) is put in its lexically normal form — `.` segments and repeated
//! `/` dropped, `..` applied to the segment before it, a trailing `/` dropped — and the
//! **normal form is both what the policy sees and what the server gets** (the call's arguments
//! are rewritten). The server therefore acts on exactly the path that was decided: a `..`
//! after a symbolic link (`/srv/docs/link/../x`), which the file system would resolve
//! differently from the text, never reaches it.
//!
//! A value that has no safe normal form is refused before anything is decided: control
//! characters (a NUL truncates the path in C-based servers), a backslash (a separator on
//! Windows servers, a plain character on others: the gateway cannot know which), and, in a
//! `file:` URI, percent-encoded `.`, `/`, `\`, `%` or control characters.
//!
//! Which argument names are paths is fixed and documented (docs/mcp.md): a name that is not
//! in the list passes unchanged, so a policy on such an argument must still be written with
//! care.

use serde_json::{Map, Value};

/// Why an argument cannot be put in a normal form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("argument `{0}` holds a control character, which no path may hold")]
    Control(String),
    #[error(
        "argument `{0}` holds a backslash: whether it separates directories depends on the \
         server's platform, so the path cannot be decided safely"
    )]
    Backslash(String),
    #[error(
        "argument `{0}` is a `file:` URI with a percent-encoded `.`, `/`, `\\`, `%` or control \
         character, which cannot be decided safely"
    )]
    EncodedUri(String),
}

/// Largest nesting of objects and arrays searched for path arguments (the framing already
/// bounds depth; this keeps the walk bounded on its own).
const MAX_DEPTH: usize = 32;

/// Whether an argument named `key` holds a path: `path`, `paths`, `file`, `files`,
/// `filename`, `dir`, `directory`, `root`, `cwd`, `source`, `destination`, `src`, `dst`,
/// `dest`, and any name ending in `path`, `paths`, `dir`, `directory` or `filename`
/// (`filePath`, `output_dir`, `working_directory`), except query languages named `…path`
/// (`xpath`, `jsonpath`), whose `//` and `..` mean something else. Case, `_` and `-` are
/// ignored.
pub fn is_path_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    if k.ends_with("xpath") || k.ends_with("jsonpath") {
        return false;
    }
    matches!(
        k.as_str(),
        "file"
            | "files"
            | "dir"
            | "root"
            | "cwd"
            | "source"
            | "destination"
            | "src"
            | "dst"
            | "dest"
    ) || ["path", "paths", "dir", "directory", "filename"]
        .iter()
        .any(|suffix| k.ends_with(suffix))
}

/// The arguments with every path-like value in normal form; `Ok(None)` when nothing changed.
pub fn normalize_arguments(
    args: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, PathProblem> {
    let mut out = args.clone();
    let changed = walk_object(&mut out, 0)?;
    Ok(changed.then_some(out))
}

fn walk_object(map: &mut Map<String, Value>, depth: usize) -> Result<bool, PathProblem> {
    let mut changed = false;
    for (key, value) in map.iter_mut() {
        if is_path_key(key) {
            changed |= normalize_value(key, value)?;
        } else {
            changed |= walk_value(value, depth + 1)?;
        }
    }
    Ok(changed)
}

fn walk_value(value: &mut Value, depth: usize) -> Result<bool, PathProblem> {
    if depth > MAX_DEPTH {
        return Ok(false);
    }
    match value {
        Value::Object(m) => walk_object(m, depth),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= walk_value(item, depth + 1)?;
            }
            Ok(changed)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(false),
    }
}

/// A path-like argument: a string, or an array of strings (`paths`); anything else is left
/// to the policy (and searched for nested path arguments).
fn normalize_value(key: &str, value: &mut Value) -> Result<bool, PathProblem> {
    match value {
        Value::String(s) => {
            let normal = normal_form(key, s)?;
            let changed = normal != *s;
            *s = normal;
            Ok(changed)
        }
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= match item {
                    Value::String(_) => normalize_value(key, item)?,
                    other => walk_value(other, 1)?,
                };
            }
            Ok(changed)
        }
        Value::Object(m) => walk_object(m, 1),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(false),
    }
}

/// The normal form of one path value (a plain path or a `file:` URI).
pub fn normal_form(key: &str, value: &str) -> Result<String, PathProblem> {
    if value.chars().any(char::is_control) {
        return Err(PathProblem::Control(key.to_owned()));
    }
    if value.contains('\\') {
        return Err(PathProblem::Backslash(key.to_owned()));
    }
    if let Some(rest) = strip_prefix_ignore_case(value, "file://") {
        check_uri_escapes(key, rest)?;
        // `file://host/path` or `file:///path`: normalize the path part only.
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let path = if path.is_empty() {
            String::new()
        } else {
            normal_path(path)
        };
        return Ok(format!("file://{authority}{path}"));
    }
    if let Some(rest) = strip_prefix_ignore_case(value, "file:") {
        check_uri_escapes(key, rest)?;
        return Ok(format!("file:{}", normal_path(rest)));
    }
    Ok(normal_path(value))
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// Refuses `%2e` `%2f` `%5c` `%25` and encoded control characters in a URI's path: each
/// would decode into something the lexical form did not show.
fn check_uri_escapes(key: &str, rest: &str) -> Result<(), PathProblem> {
    let bytes = rest.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'%' {
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b'.' | b'/' | b'\\' | b'%') => {
                return Err(PathProblem::EncodedUri(key.to_owned()));
            }
            Some(c) if c < 0x20 || c == 0x7f => {
                return Err(PathProblem::EncodedUri(key.to_owned()));
            }
            Some(_) => {}
            // A `%` not followed by two hex digits is not an escape the server can decode
            // into anything else; it is refused all the same, as ambiguous.
            None => return Err(PathProblem::EncodedUri(key.to_owned())),
        }
    }
    Ok(())
}

/// The lexical normal form of a `/`-separated path: no empty or `.` segments, `..` applied
/// to the segment before it (at the root it stays at the root; at the start of a relative
/// path it is kept), no trailing `/`. `""` stays `""`; `"."` becomes `"."`.
pub fn normal_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&"..") | None if !absolute => parts.push(".."),
                Some(&"..") | None => {}
                Some(_) => {
                    parts.pop();
                }
            },
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) if path.is_empty() => String::new(),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    #[test]
    fn normal_paths() {
        for (raw, normal) in [
            ("/srv/docs/a.txt", "/srv/docs/a.txt"),
            ("/srv/docs/../../etc/passwd", "/etc/passwd"),
            ("/srv/docs/./x", "/srv/docs/x"),
            ("/srv/docs//x", "/srv/docs/x"),
            ("/srv/docs/", "/srv/docs"),
            ("/srv/docs/link/../x", "/srv/docs/x"),
            ("/../../etc", "/etc"),
            ("/", "/"),
            ("//", "/"),
            ("docs/../../x", "../x"),
            ("../x", "../x"),
            ("./a/./b/", "a/b"),
            ("a/..", "."),
            ("", ""),
            ("~/notes", "~/notes"),
        ] {
            assert_eq!(normal_path(raw), normal, "{raw}");
        }
    }

    #[test]
    fn unsafe_values_are_refused() {
        assert_eq!(
            normal_form("path", "/srv/docs/a\0/etc"),
            Err(PathProblem::Control("path".into()))
        );
        assert_eq!(
            normal_form("path", "C:\\srv\\docs\\..\\x"),
            Err(PathProblem::Backslash("path".into()))
        );
        for uri in [
            "file:///srv/docs/%2e%2e/etc",
            "file:///srv/docs/%2E%2E/etc",
            "file:///srv/docs%2f..%2fetc",
            "file:///srv/docs/%5c",
            "file:///srv/docs/%252e",
            "file:///srv/docs/%00",
            "file:///srv/docs/%zz",
        ] {
            assert_eq!(
                normal_form("uri", uri),
                Err(PathProblem::EncodedUri("uri".into())),
                "{uri}"
            );
        }
        assert_eq!(
            normal_form("uri", "FILE:///srv/docs/../etc/%41").unwrap(),
            "file:///srv/etc/%41"
        );
    }

    #[test]
    fn path_keys() {
        for key in [
            "path",
            "paths",
            "filePath",
            "file_path",
            "source",
            "destination",
            "outputDir",
            "working-directory",
            "cwd",
            "root",
            "fileName",
            "file",
        ] {
            assert!(is_path_key(key), "{key}");
        }
        for key in [
            "content", "query", "profile", "pattern", "name", "url", "text",
        ] {
            assert!(!is_path_key(key), "{key}");
        }
    }

    #[test]
    fn arguments_are_rewritten_where_nested_and_in_lists() {
        let args = json!({
            "path": "/srv/docs/../secrets",
            "paths": ["/srv/docs/a", "/srv/docs//b"],
            "content": "see ../other for more",
            "edits": [{"filePath": "/srv/./docs/x", "text": "a/../b"}],
        });
        let out = normalize_arguments(args.as_object().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "path": "/srv/secrets",
                "paths": ["/srv/docs/a", "/srv/docs/b"],
                "content": "see ../other for more",
                "edits": [{"filePath": "/srv/docs/x", "text": "a/../b"}],
            })
        );
        let clean = json!({"path": "/srv/docs/a", "content": "x/../y"});
        assert_eq!(
            normalize_arguments(clean.as_object().unwrap()).unwrap(),
            None
        );
        let bad = json!({"nested": {"path": "/a\u{7}"}});
        assert_eq!(
            normalize_arguments(bad.as_object().unwrap()),
            Err(PathProblem::Control("path".into()))
        );
    }
}
