//! The client's headers: its credential, the session id, the protocol version, and the
//! headers of revision 2026-07-28, which mirror the body (`Mcp-Method`, `Mcp-Name`,
//! `Mcp-Param-*`) and carry non-ASCII values as `=?base64?…?=`.

use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::jsonrpc::{self, Message};

use super::STATELESS_REVISION;

pub(super) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub(super) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub(super) const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub(super) const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
pub(super) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
pub(super) const MCP_PARAM_PREFIX: &str = "mcp-param-";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` members a 2026-07-28 request carries, copied onto the gateway's own requests.
const META_COPIED: &[&str] = &[
    META_VERSION,
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
];

const BASE64_SENTINEL_START: &str = "=?base64?";
const BASE64_SENTINEL_END: &str = "?=";

/// Longest accepted `Mcp-Session-Id`, in bytes.
const MAX_SESSION_ID_BYTES: usize = 256;
/// Longest accepted `MCP-Protocol-Version`, in bytes.
pub(super) const MAX_VERSION_BYTES: usize = 64;
/// Longest accepted `Last-Event-ID` and SSE event id, in bytes.
pub(super) use arbiter_pep::sse::MAX_EVENT_ID_BYTES;
/// Most `Mcp-Param-*` headers passed on one request, and the longest value.
const MAX_PARAM_HEADERS: usize = 64;
const MAX_PARAM_BYTES: usize = 8 * 1024;

pub(super) use arbiter_pep::bearer;

/// The text of a header value of visible ASCII (spaces inside allowed) of at most `max`
/// bytes.
pub(super) fn visible(value: &HeaderValue, max: usize) -> Option<&str> {
    let bytes = value.as_bytes();
    let ok =
        !bytes.is_empty() && bytes.len() <= max && bytes.iter().all(|b| (0x20..0x7f).contains(b));
    if ok { value.to_str().ok() } else { None }
}

/// A session id: visible ASCII, no spaces.
pub(super) fn session_id_text(value: &HeaderValue) -> Option<String> {
    visible(value, MAX_SESSION_ID_BYTES)
        .filter(|v| !v.contains(' '))
        .map(str::to_owned)
}

/// The client's `Mcp-Session-Id`, if any.
pub(super) fn session_id_header(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut all = headers.get_all(MCP_SESSION_ID).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err("more than one `Mcp-Session-Id` header".to_owned());
    }
    session_id_text(value)
        .map(Some)
        .ok_or_else(|| "`Mcp-Session-Id` is not a session id".to_owned())
}

/// Whether `version` (`YYYY-MM-DD`) is the stateless revision or a later one.
pub(super) fn is_stateless_version(version: &str) -> bool {
    let b = version.as_bytes();
    let dated = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    dated && version >= STATELESS_REVISION
}

fn params_of(message: &Message) -> Option<&Map<String, Value>> {
    match message {
        Message::Request { params, .. } | Message::Notification { params, .. } => params.as_ref(),
        Message::Result { .. } | Message::Error { .. } => None,
    }
}

/// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
pub(super) fn meta_version(message: &Message) -> Option<&str> {
    params_of(message)?
        .get("_meta")?
        .get(META_VERSION)?
        .as_str()
}

/// The `_meta` members the gateway's own requests copy from the client's request.
pub(super) fn copied_meta(message: &Message) -> Map<String, Value> {
    let meta = params_of(message)
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    META_COPIED
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), meta?.get(*k)?.clone())))
        .collect()
}

/// What `Mcp-Name` mirrors: the tool or prompt name, or the resource URI.
pub(super) fn mirrored_name(message: &Message) -> Option<&str> {
    let Message::Request { method, params, .. } = message else {
        return None;
    };
    let field = match method.as_str() {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params.as_ref()?.get(field)?.as_str()
}

fn needs_name(message: &Message) -> bool {
    matches!(
        message,
        Message::Request { method, .. }
            if matches!(method.as_str(), "tools/call" | "prompts/get" | "resources/read")
    )
}

/// A header value of revision 2026-07-28 in the form sent: plain visible ASCII, or
/// `=?base64?…?=` for anything else (and for plain values that look like that).
pub(super) fn encode_header_value(value: &str) -> String {
    let sentinel = value.starts_with(BASE64_SENTINEL_START) && value.ends_with(BASE64_SENTINEL_END);
    let plain = !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if plain && !sentinel {
        value.to_owned()
    } else {
        format!(
            "{BASE64_SENTINEL_START}{}{BASE64_SENTINEL_END}",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Reads a header value of revision 2026-07-28, decoding `=?base64?…?=`.
fn decode_header_value(value: &HeaderValue) -> Result<String, String> {
    let text = std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or("the value has characters that are not visible ASCII")?;
    let encoded = text
        .strip_prefix(BASE64_SENTINEL_START)
        .and_then(|t| t.strip_suffix(BASE64_SENTINEL_END));
    match encoded {
        None => Ok(text.to_owned()),
        Some(b64) => {
            let bytes = BASE64_ANY_PADDING
                .decode(b64)
                .map_err(|_| "the value is not valid base64")?;
            String::from_utf8(bytes).map_err(|_| "the decoded value is not UTF-8".to_owned())
        }
    }
}

/// One header of revision 2026-07-28 (exactly one occurrence).
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, String> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(format!("more than one `{name}` header"));
    }
    Ok(first)
}

/// Checks the headers of a revision 2026-07-28 request against its body.
pub(super) fn check_stateless(headers: &HeaderMap, message: &Message) -> Result<(), String> {
    let version = single(headers, &MCP_PROTOCOL_VERSION)?
        .ok_or("the `MCP-Protocol-Version` header is missing")?;
    let version = visible(version, MAX_VERSION_BYTES)
        .ok_or("`MCP-Protocol-Version` has invalid characters")?;
    let is_request = matches!(message, Message::Request { .. });
    match meta_version(message) {
        Some(v) if v != version => {
            return Err(format!(
                "`MCP-Protocol-Version` is `{version}` but `params._meta` says `{v}`"
            ));
        }
        None if is_request => {
            return Err(format!(
                "the request's `params._meta` has no `{META_VERSION}` to match \
                 `MCP-Protocol-Version`"
            ));
        }
        _ => {}
    }
    let Some(method) = message.method() else {
        return Ok(());
    };
    match single(headers, &MCP_METHOD)? {
        None if is_request => return Err("the `Mcp-Method` header is missing".into()),
        None => {}
        Some(h) => {
            let h = visible(h, jsonrpc::MAX_METHOD_BYTES)
                .ok_or("`Mcp-Method` has invalid characters")?;
            if h != method {
                return Err(format!(
                    "`Mcp-Method` is `{h}` but the body's method is `{method}`"
                ));
            }
        }
    }
    if needs_name(message) {
        let Some(h) = single(headers, &MCP_NAME)? else {
            return Err(format!(
                "the `Mcp-Name` header is missing (required on `{method}`)"
            ));
        };
        let h = decode_header_value(h).map_err(|e| format!("`Mcp-Name`: {e}"))?;
        match mirrored_name(message) {
            Some(body) if body == h => {}
            Some(_) => return Err("`Mcp-Name` does not match the body".into()),
            None => return Err(format!("the body of `{method}` has no name for `Mcp-Name`")),
        }
    }
    Ok(())
}

/// The client's `Mcp-Param-*` headers of a 2026-07-28 `tools/call` (the server checks them
/// against the body).
pub(super) fn param_headers(headers: &HeaderMap) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !name.as_str().starts_with(MCP_PARAM_PREFIX) {
            continue;
        }
        if visible(value, MAX_PARAM_BYTES).is_none() {
            return Err(format!("`{name}` has invalid characters"));
        }
        out.append(name.clone(), value.clone());
        if out.len() > MAX_PARAM_HEADERS {
            return Err(format!(
                "more than {MAX_PARAM_HEADERS} `Mcp-Param-*` headers"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::http::test_support::{headers, hv, msg};

    #[test]
    fn header_values_round_trip() {
        for (plain, sent) in [
            ("get_weather", "get_weather"),
            ("file:///a b.txt", "file:///a b.txt"),
            ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
            (" padded ", "=?base64?IHBhZGRlZCA=?="),
            ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
            ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        ] {
            assert_eq!(encode_header_value(plain), sent);
            assert_eq!(decode_header_value(&hv(sent)).unwrap(), plain);
        }
        // Padding may be left out; case of the markers matters.
        assert_eq!(
            decode_header_value(&hv("=?base64?IHBhZGRlZCA?=")).unwrap(),
            " padded "
        );
        assert_eq!(
            decode_header_value(&hv("=?BASE64?IHBhZGRlZCA=?=")).unwrap(),
            "=?BASE64?IHBhZGRlZCA=?="
        );
        assert!(decode_header_value(&hv("=?base64?!!!?=")).is_err());
        assert!(
            decode_header_value(&hv("=?base64?/w==?=")).is_err(),
            "not UTF-8"
        );
        assert!(decode_header_value(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
        assert!(decode_header_value(&hv("a\tb")).is_err());
    }

    #[test]
    fn stateless_versions() {
        assert!(is_stateless_version("2026-07-28"));
        assert!(is_stateless_version("2027-01-01"));
        assert!(!is_stateless_version("2025-11-25"));
        assert!(!is_stateless_version("2025-06-18"));
        assert!(!is_stateless_version("DRAFT-2026"));
        assert!(!is_stateless_version("2026-7-28"));
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get weather","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    #[test]
    fn stateless_headers_match_the_body() {
        let m = msg(CALL);
        let ok = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "get weather"),
        ]);
        check_stateless(&ok, &m).unwrap();
        let b64 = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0IHdlYXRoZXI=?="),
        ]);
        check_stateless(&b64, &m).unwrap();
        for (bad, why) in [
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-name", "get weather"),
                ],
                "missing",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/list"),
                    ("mcp-name", "get weather"),
                ],
                "Mcp-Method",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                ],
                "Mcp-Name",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?b3RoZXI=?="),
                ],
                "does not match",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2027-01-01"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get weather"),
                ],
                "MCP-Protocol-Version",
            ),
            (
                vec![("mcp-method", "tools/call"), ("mcp-name", "get weather")],
                "MCP-Protocol-Version",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get weather"),
                ],
                "more than one",
            ),
        ] {
            let e = check_stateless(&headers(&bad), &m).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Lists carry no Mcp-Name; a request must carry its version in `_meta`.
        let list = msg(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        check_stateless(&h, &list).unwrap();
        let bare = msg(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert!(check_stateless(&h, &bare).unwrap_err().contains("_meta"));
    }

    #[test]
    fn mirrored_names() {
        assert_eq!(mirrored_name(&msg(CALL)), Some("get weather"));
        let read = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(mirrored_name(&read), Some("file:///x"));
        let list = msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}"#);
        assert_eq!(mirrored_name(&list), None);
        let copied = copied_meta(&msg(CALL));
        assert_eq!(copied.len(), 1);
        assert_eq!(copied[META_VERSION], "2026-07-28");
    }
}
