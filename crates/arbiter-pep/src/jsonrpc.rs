//! Strict JSON-RPC 2.0 framing for the gateways that speak it (MCP, A2A).
//!
//! Every message crossing a gateway, in either direction, is parsed once by [`parse`] into a
//! [`Message`] and what goes on is the gateway's own serialization of it ([`Message::to_bytes`]),
//! never the bytes that came in. The parse is strict so that the gateway and the peer cannot
//! read one message two ways:
//!
//! - the bytes must be UTF-8 JSON of at most [`FrameLimits::max_bytes`], nested at most
//!   [`FrameLimits::max_depth`] deep, with no duplicate member names at any level (so
//!   `{"method":"ping","method":"tools/call"}` is refused, and escapes are decoded before the
//!   comparison, so `"tools\u002fcall"` *is* `tools/call`);
//! - a JSON-RPC batch (a top-level array) is refused with `-32600`: MCP has had no batches
//!   since revision 2025-06-18, and A2A has none;
//! - `"jsonrpc": "2.0"` is required; members other than `jsonrpc`, `id`, `method`, `params`,
//!   `result` and `error` are refused;
//! - an `id` is a string of at most [`MAX_ID_BYTES`] bytes or an integer that fits in 64 bits
//!   (no fractions, no exponents, no `null` on requests);
//! - a method name is 1 to [`MAX_METHOD_BYTES`] bytes with no control characters;
//! - `params` and `result` are objects, `error` is `{code, message, data?}`.

use arbiter_types::strict::StrictJsonError;
use serde_json::{Map, Value, json};

/// Longest accepted string id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest accepted method name, in bytes.
pub const MAX_METHOD_BYTES: usize = 128;

/// JSON-RPC error codes the gateway answers with.
pub mod code {
    /// The bytes are not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not an acceptable JSON-RPC message (batches included).
    pub const INVALID_REQUEST: i64 = -32600;
    /// A method the gateway does not pass.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters the gateway cannot interpret for its decision.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway or the server failed.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Denied by policy (a server-defined code in JSON-RPC's reserved range for
    /// implementations).
    pub const DENIED: i64 = -32001;
}

/// Size and depth limits for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest accepted message, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting (the message object is level 1).
    pub max_depth: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// A JSON-RPC request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    Number(i64),
    String(String),
}

impl Id {
    fn to_value(&self) -> Value {
        match self {
            Id::Number(n) => Value::from(*n),
            Id::String(s) => Value::String(s.clone()),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Id,
        method: String,
        params: Option<Map<String, Value>>,
    },
    Notification {
        method: String,
        params: Option<Map<String, Value>>,
    },
    Result {
        id: Id,
        result: Map<String, Value>,
    },
    /// An error answer; `id` is `None` when the request's id could not be read.
    Error {
        id: Option<Id>,
        error: ErrorObject,
    },
}

/// Why a message was refused, with the id to answer when it could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    pub code: i64,
    pub message: String,
    pub id: Option<Id>,
    /// Whether the refused message was a request (which deserves an answer); `false` for
    /// notifications and answers, and when that cannot be told.
    pub is_request: bool,
}

impl FrameError {
    fn invalid(message: impl Into<String>, id: Option<Id>, is_request: bool) -> Self {
        Self {
            code: code::INVALID_REQUEST,
            message: message.into(),
            id,
            is_request,
        }
    }

    /// The error answer for this refusal.
    pub fn to_message(&self) -> Message {
        Message::error(self.id.clone(), self.code, self.message.clone(), None)
    }
}

impl Message {
    /// An error answer.
    pub fn error(
        id: Option<Id>,
        code: i64,
        message: impl Into<String>,
        data: Option<Value>,
    ) -> Self {
        Message::Error {
            id,
            error: ErrorObject {
                code,
                message: message.into(),
                data,
            },
        }
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Result { .. } | Message::Error { .. } => None,
        }
    }

    /// The id of a request or an answer.
    pub fn id(&self) -> Option<&Id> {
        match self {
            Message::Request { id, .. } | Message::Result { id, .. } => Some(id),
            Message::Error { id, .. } => id.as_ref(),
            Message::Notification { .. } => None,
        }
    }

    /// The message as a JSON value, members in a fixed order.
    pub fn to_value(&self) -> Value {
        let mut out = Map::new();
        out.insert("jsonrpc".into(), Value::from("2.0"));
        match self {
            Message::Request { id, method, params } => {
                out.insert("id".into(), id.to_value());
                out.insert("method".into(), Value::from(method.as_str()));
                if let Some(p) = params {
                    out.insert("params".into(), Value::Object(p.clone()));
                }
            }
            Message::Notification { method, params } => {
                out.insert("method".into(), Value::from(method.as_str()));
                if let Some(p) = params {
                    out.insert("params".into(), Value::Object(p.clone()));
                }
            }
            Message::Result { id, result } => {
                out.insert("id".into(), id.to_value());
                out.insert("result".into(), Value::Object(result.clone()));
            }
            Message::Error { id, error } => {
                out.insert("id".into(), id.as_ref().map_or(Value::Null, Id::to_value));
                let mut e = Map::new();
                e.insert("code".into(), Value::from(error.code));
                e.insert("message".into(), Value::from(error.message.as_str()));
                if let Some(d) = &error.data {
                    e.insert("data".into(), d.clone());
                }
                out.insert("error".into(), Value::Object(e));
            }
        }
        Value::Object(out)
    }

    /// The gateway's serialization of the message: compact JSON with no newline, so that it
    /// is also a valid stdio frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a `Value` cannot fail: every map key is a string.
        serde_json::to_vec(&self.to_value()).unwrap_or_else(|_| {
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": code::INTERNAL_ERROR,
            "message": "the gateway could not serialize a message"}})
            .to_string()
            .into_bytes()
        })
    }
}

/// Parses one message under `limits`.
pub fn parse(bytes: &[u8], limits: FrameLimits) -> Result<Message, FrameError> {
    if bytes.len() > limits.max_bytes {
        return Err(FrameError::invalid(
            format!(
                "the message is {} bytes, more than the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
            None,
            false,
        ));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(FrameError {
            code: code::PARSE_ERROR,
            message: "the message is not UTF-8".into(),
            id: None,
            is_request: false,
        });
    }
    if arbiter_types::json::nesting_depth(bytes, limits.max_depth) > limits.max_depth {
        return Err(FrameError::invalid(
            format!(
                "the message nests arrays and objects deeper than {} levels",
                limits.max_depth
            ),
            None,
            false,
        ));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Err(FrameError::invalid(
            "JSON-RPC batches are not supported: send one message at a time",
            None,
            false,
        ));
    }
    // `max_depth` counts the message object as level 1; the strict parser counts its members
    // as level 1.
    let value = arbiter_types::strict::parse_strict(bytes, limits.max_depth.saturating_sub(1))
        .map_err(|e| {
            let (code, message) = match e {
                StrictJsonError::DuplicateMember(_) => (
                    code::INVALID_REQUEST,
                    format!("{e}: a member name appears twice"),
                ),
                e => (code::PARSE_ERROR, e.to_string()),
            };
            FrameError {
                code,
                message,
                id: None,
                is_request: false,
            }
        })?;
    let Value::Object(map) = value else {
        return Err(FrameError::invalid(
            format!(
                "a message must be a JSON object, not {}",
                arbiter_types::json::kind_of(&value)
            ),
            None,
            false,
        ));
    };
    from_object(map)
}

fn from_object(mut map: Map<String, Value>) -> Result<Message, FrameError> {
    let has_method = map.contains_key("method");
    let has_id = map.contains_key("id");
    let is_request = has_method && has_id;
    // The id is read first so that every later refusal can be answered to it.
    let id = match map.remove("id") {
        None => None,
        Some(v) => Some(read_id(v).map_err(|m| FrameError::invalid(m, None, is_request))?),
    };
    let id = id.flatten();
    let answer_to = id.clone();
    let invalid = |m: String| FrameError::invalid(m, answer_to.clone(), is_request);
    match map.remove("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return Err(invalid("`jsonrpc` must be \"2.0\"".into())),
        None => return Err(invalid("`jsonrpc` is missing (it must be \"2.0\")".into())),
    }
    if let Some(extra) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "method" | "params" | "result" | "error"))
    {
        return Err(invalid(format!(
            "unknown member `{}` in a JSON-RPC message",
            truncate(extra, 64)
        )));
    }
    let method = map.remove("method");
    let params = map.remove("params");
    let result = map.remove("result");
    let error = map.remove("error");
    match (method, result, error) {
        (Some(method), None, None) => {
            let method = read_method(method).map_err(&invalid)?;
            let params = match params {
                None => None,
                Some(Value::Object(p)) => Some(p),
                Some(other) => {
                    return Err(invalid(format!(
                        "`params` must be an object, not {}",
                        arbiter_types::json::kind_of(&other)
                    )));
                }
            };
            match (has_id, id) {
                (true, Some(id)) => Ok(Message::Request { id, method, params }),
                (true, None) => Err(invalid("a request's `id` must not be null".into())),
                (false, _) => Ok(Message::Notification { method, params }),
            }
        }
        (None, Some(result), None) => {
            if params.is_some() {
                return Err(invalid("an answer has no `params`".into()));
            }
            let Some(id) = id else {
                return Err(invalid("an answer needs the `id` of its request".into()));
            };
            match result {
                Value::Object(result) => Ok(Message::Result { id, result }),
                other => Err(invalid(format!(
                    "`result` must be an object, not {}",
                    arbiter_types::json::kind_of(&other)
                ))),
            }
        }
        (None, None, Some(error)) => {
            if params.is_some() {
                return Err(invalid("an answer has no `params`".into()));
            }
            let error = read_error(error).map_err(&invalid)?;
            Ok(Message::Error { id, error })
        }
        (None, None, None) => Err(invalid(
            "a message needs a `method`, a `result` or an `error`".into(),
        )),
        _ => Err(invalid(
            "a message has exactly one of `method`, `result` and `error`".into(),
        )),
    }
}

/// `Ok(None)` for a JSON `null` id.
fn read_id(v: Value) -> Result<Option<Id>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.len() <= MAX_ID_BYTES => Ok(Some(Id::String(s))),
        Value::String(s) => Err(format!(
            "the `id` is {} bytes long, more than the limit of {MAX_ID_BYTES}",
            s.len()
        )),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Some(Id::Number(i))),
            None => Err("the `id` must be an integer that fits in 64 bits, or a string".into()),
        },
        other => Err(format!(
            "the `id` must be a string or an integer, not {}",
            arbiter_types::json::kind_of(&other)
        )),
    }
}

fn read_method(v: Value) -> Result<String, String> {
    let Value::String(m) = v else {
        return Err(format!(
            "`method` must be a string, not {}",
            arbiter_types::json::kind_of(&v)
        ));
    };
    if m.is_empty() {
        return Err("`method` is empty".into());
    }
    if m.len() > MAX_METHOD_BYTES {
        return Err(format!(
            "`method` is {} bytes long, more than the limit of {MAX_METHOD_BYTES}",
            m.len()
        ));
    }
    if m.chars().any(char::is_control) {
        return Err("`method` contains control characters".into());
    }
    Ok(m)
}

fn read_error(v: Value) -> Result<ErrorObject, String> {
    let Value::Object(mut e) = v else {
        return Err("`error` must be an object".into());
    };
    let code = e
        .remove("code")
        .and_then(|c| c.as_i64())
        .ok_or("`error.code` must be an integer")?;
    let message = match e.remove("message") {
        Some(Value::String(m)) => m,
        _ => return Err("`error.message` must be a string".into()),
    };
    let data = e.remove("data");
    if let Some(extra) = e.keys().next() {
        return Err(format!(
            "unknown member `{}` in `error`",
            truncate(extra, 64)
        ));
    }
    Ok(ErrorObject {
        code,
        message,
        data,
    })
}

fn truncate(s: &str, max: usize) -> String {
    let cut: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn p(s: &str) -> Result<Message, FrameError> {
        parse(s.as_bytes(), FrameLimits::default())
    }

    #[test]
    fn reads_the_four_kinds() {
        assert!(matches!(
            p(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap(),
            Message::Request {
                id: Id::Number(1),
                ..
            }
        ));
        assert!(matches!(
            p(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Message::Notification { .. }
        ));
        assert!(matches!(
            p(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap(),
            Message::Result { .. }
        ));
        assert!(matches!(
            p(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#).unwrap(),
            Message::Error { id: None, .. }
        ));
    }

    #[test]
    fn escaped_method_names_are_normalized() {
        let m = p(r#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{}}"#).unwrap();
        assert_eq!(m.method(), Some("tools/call"));
        assert!(
            String::from_utf8(m.to_bytes())
                .unwrap()
                .contains(r#""method":"tools/call""#)
        );
    }

    #[test]
    fn refuses_ambiguity() {
        for bad in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":99999999999999999999,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":""}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"a\u0000b"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#,
            "\"ping\"",
        ] {
            let e = p(bad).expect_err(bad);
            assert!(
                e.code == code::INVALID_REQUEST || e.code == code::PARSE_ERROR,
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn batches_are_invalid_requests() {
        let e = p(r#" [{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        assert!(e.message.contains("batches"));
    }

    #[test]
    fn refusals_keep_a_readable_id() {
        let e = p(r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":3}"#).unwrap_err();
        assert_eq!(e.id, Some(Id::Number(7)));
        assert!(e.is_request);
    }

    #[test]
    fn limits() {
        let huge_id = format!(
            r#"{{"jsonrpc":"2.0","id":"{}","method":"ping"}}"#,
            "x".repeat(MAX_ID_BYTES + 1)
        );
        assert!(p(&huge_id).is_err());
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}1{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(p(&deep).unwrap_err().code, code::INVALID_REQUEST);
        let big = FrameLimits {
            max_bytes: 10,
            max_depth: 8,
        };
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, big).is_err());
        assert_eq!(
            parse(
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
                FrameLimits::default()
            )
            .unwrap_err()
            .code,
            code::PARSE_ERROR
        );
    }

    #[test]
    fn round_trip_is_the_gateways_own_encoding() {
        let m = p("{ \"method\" : \"ping\", \"id\" : \"x\", \"jsonrpc\" : \"2.0\" }").unwrap();
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            r#"{"jsonrpc":"2.0","id":"x","method":"ping"}"#
        );
        assert_eq!(p(std::str::from_utf8(&m.to_bytes()).unwrap()).unwrap(), m);
    }
}
