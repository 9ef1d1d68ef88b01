//! What each A2A 1.0 method asks, and the strict checks of its parameters.
//!
//! The gateway decides on what it read and forwards what it decided on (the message
//! re-serialized by [`arbiter_pep::jsonrpc`]), so nothing the upstream reads may be read two
//! ways:
//!
//! - **One spelling.** An A2A server parses parameters as protobuf JSON, which accepts both
//!   `taskId` and `task_id` and lets the last one win. A member name with `_` is refused
//!   outside the free-form values (`metadata`, a part's `data`), so `{"taskId": "mine",
//!   "task_id": "yours"}` cannot name one task to the gateway and another to the agent.
//! - **Known values.** Enumerations must be one of their names (an unknown status would
//!   silently filter nothing); numbers must be JSON integers (a server also reads `"5"`); a part
//!   has exactly one of `text`, `raw`, `url`, `data`.
//! - **Bounded.** Sizes and depth are bounded by the framing; ids are at most
//!   [`MAX_ID_BYTES`].

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Longest task, context, message or push-configuration id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The metadata member that names the skill a message asks for.
pub const SKILL_KEY: &str = "skill";
/// The metadata member that carries the delegation assertion from hop to hop.
pub const DELEGATION_KEY: &str = "arbiter.delegation";

/// The A2A 1.0 methods the gateway passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SendMessage,
    SendStreamingMessage,
    GetTask,
    ListTasks,
    CancelTask,
    SubscribeToTask,
    CreatePushConfig,
    GetPushConfig,
    ListPushConfigs,
    DeletePushConfig,
    GetExtendedCard,
}

/// Method names of A2A 0.3, refused with a pointer to 1.0.
const V03_METHODS: [&str; 10] = [
    "message/send",
    "message/stream",
    "tasks/get",
    "tasks/cancel",
    "tasks/resubscribe",
    "tasks/pushNotificationConfig/set",
    "tasks/pushNotificationConfig/get",
    "tasks/pushNotificationConfig/list",
    "tasks/pushNotificationConfig/delete",
    "agent/getAuthenticatedExtendedCard",
];

impl Method {
    /// The method named `name`, or why it is refused.
    pub fn parse(name: &str) -> Result<Method, String> {
        Ok(match name {
            "SendMessage" => Method::SendMessage,
            "SendStreamingMessage" => Method::SendStreamingMessage,
            "GetTask" => Method::GetTask,
            "ListTasks" => Method::ListTasks,
            "CancelTask" => Method::CancelTask,
            "SubscribeToTask" => Method::SubscribeToTask,
            "CreateTaskPushNotificationConfig" => Method::CreatePushConfig,
            "GetTaskPushNotificationConfig" => Method::GetPushConfig,
            "ListTaskPushNotificationConfigs" => Method::ListPushConfigs,
            "DeleteTaskPushNotificationConfig" => Method::DeletePushConfig,
            "GetExtendedAgentCard" => Method::GetExtendedCard,
            v03 if V03_METHODS.contains(&v03) => {
                return Err(format!(
                    "`{v03}` is an A2A 0.3 method; the gateway speaks A2A 1.0 (send `A2A-Version: 1.0`)"
                ));
            }
            other => {
                return Err(format!(
                    "`{}` is not an A2A 1.0 method the gateway passes",
                    other.escape_debug()
                ));
            }
        })
    }

    /// The action policies see.
    pub fn action(self) -> &'static str {
        match self {
            Method::SendMessage | Method::SendStreamingMessage => "send_message",
            Method::GetTask => "get_task",
            Method::ListTasks => "list_tasks",
            Method::CancelTask => "cancel_task",
            Method::SubscribeToTask => "subscribe_to_task",
            Method::CreatePushConfig => "create_push_config",
            Method::GetPushConfig => "get_push_config",
            Method::ListPushConfigs => "list_push_configs",
            Method::DeletePushConfig => "delete_push_config",
            Method::GetExtendedCard => "get_extended_card",
        }
    }

    /// Whether the answer is an event stream.
    pub fn streams(self) -> bool {
        matches!(self, Method::SendStreamingMessage | Method::SubscribeToTask)
    }

    /// Whether it sends a message (and may create a task).
    pub fn sends(self) -> bool {
        matches!(self, Method::SendMessage | Method::SendStreamingMessage)
    }
}

/// What a request asks, read from its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    /// The task it is about: the one named (`id`, `taskId`) or the one a message continues.
    pub task_id: Option<String>,
    /// The skill a message names (`message.metadata.skill`).
    pub skill: Option<String>,
    /// The delegation assertion a message carries (`message.metadata["arbiter.delegation"]`).
    pub delegation: Option<String>,
    /// The decision's context (without the chain, which the gateway adds).
    pub context: Map<String, Value>,
}

const TASK_STATES: [&str; 8] = [
    "TASK_STATE_SUBMITTED",
    "TASK_STATE_WORKING",
    "TASK_STATE_COMPLETED",
    "TASK_STATE_FAILED",
    "TASK_STATE_CANCELED",
    "TASK_STATE_INPUT_REQUIRED",
    "TASK_STATE_REJECTED",
    "TASK_STATE_AUTH_REQUIRED",
];

/// Reads and checks the parameters of `method`.
pub fn read(method: Method, params: Option<&Map<String, Value>>) -> Result<Request, String> {
    let empty = Map::new();
    let params = params.unwrap_or(&empty);
    one_spelling(params, "params")?;
    let mut context = Map::new();
    context.insert("method".into(), json!(method_name(method)));
    let mut req = Request {
        method,
        task_id: None,
        skill: None,
        delegation: None,
        context: Map::new(),
    };
    for k in ["historyLength", "pageSize"] {
        if let Some(v) = params.get(k)
            && !(v.is_u64() && v.as_u64().is_some_and(|n| n <= 10_000))
        {
            return Err(format!("`params.{k}` must be an integer from 0 to 10000"));
        }
    }
    match method {
        Method::SendMessage | Method::SendStreamingMessage => {
            let message =
                object(params, "message", "params")?.ok_or("`params.message` is required")?;
            read_message(message, &mut req, &mut context)?;
            context.insert(
                "streaming".into(),
                json!(method == Method::SendStreamingMessage),
            );
            // A push configuration given with the message: its URL is decided like one created
            // on its own (the agent will send requests there).
            let at = "params.configuration.taskPushNotificationConfig";
            if let Some(push) = object(params, "configuration", "params")?
                .map(|c| object(c, "taskPushNotificationConfig", "params.configuration"))
                .transpose()?
                .flatten()
            {
                let url =
                    string(push, "url", at)?.ok_or_else(|| format!("`{at}.url` is required"))?;
                context.insert(
                    "push_url".into(),
                    json!(push_url(url, &format!("{at}.url"))?),
                );
            }
        }
        Method::GetTask | Method::CancelTask | Method::SubscribeToTask => {
            req.task_id = Some(id(params, "id", "params")?.ok_or("`params.id` is required")?);
        }
        Method::CreatePushConfig
        | Method::GetPushConfig
        | Method::ListPushConfigs
        | Method::DeletePushConfig => {
            req.task_id =
                Some(id(params, "taskId", "params")?.ok_or("`params.taskId` is required")?);
            if let Some(cfg) = id(params, "id", "params")? {
                context.insert("push_config_id".into(), json!(cfg));
            }
            if method == Method::CreatePushConfig {
                let url = string(params, "url", "params")?.ok_or("`params.url` is required")?;
                context.insert("push_url".into(), json!(push_url(url, "params.url")?));
            }
        }
        Method::ListTasks => {
            if let Some(c) = id(params, "contextId", "params")? {
                context.insert("context_id".into(), json!(c));
            }
            if let Some(s) = string(params, "status", "params")? {
                if !TASK_STATES.contains(&s.as_str()) {
                    return Err(format!("`params.status` is not a task state: {s:?}"));
                }
                context.insert("status".into(), json!(s));
            }
        }
        Method::GetExtendedCard => {}
    }
    if let Some(t) = &req.task_id {
        context.insert("task_id".into(), json!(t));
    }
    if let Some(t) = id(params, "tenant", "params")? {
        context.insert("tenant".into(), json!(t));
    }
    req.context = context;
    Ok(req)
}

fn read_message(
    message: &Map<String, Value>,
    req: &mut Request,
    context: &mut Map<String, Value>,
) -> Result<(), String> {
    const AT: &str = "params.message";
    match message.get("role").and_then(Value::as_str) {
        Some("ROLE_USER") => {}
        _ => return Err(format!("`{AT}.role` must be \"ROLE_USER\"")),
    }
    id(message, "messageId", AT)?.ok_or_else(|| format!("`{AT}.messageId` is required"))?;
    req.task_id = id(message, "taskId", AT)?;
    if let Some(c) = id(message, "contextId", AT)? {
        context.insert("context_id".into(), json!(c));
    }
    let parts = message
        .get("parts")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`{AT}.parts` must be a list"))?;
    let mut described = Vec::with_capacity(parts.len());
    let mut total: u64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let part = p
            .as_object()
            .ok_or_else(|| format!("`{AT}.parts[{i}]` is not an object"))?;
        let (kind, bytes) = part_content(part).map_err(|e| format!("`{AT}.parts[{i}]`: {e}"))?;
        total = total.saturating_add(bytes);
        let mut d = Map::new();
        d.insert("kind".into(), json!(kind));
        d.insert("bytes".into(), json!(bytes));
        if let Some(m) = string(part, "mediaType", AT)? {
            d.insert("media_type".into(), json!(m));
        }
        described.push(Value::Object(d));
    }
    context.insert("part_count".into(), json!(described.len()));
    context.insert("bytes".into(), json!(total));
    context.insert("parts".into(), Value::Array(described));
    let mut metadata = match message.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(format!("`{AT}.metadata` must be an object")),
    };
    if let Some(d) = metadata.remove(DELEGATION_KEY) {
        let token = d.as_str().filter(|t| t.len() <= 8 * 1024).ok_or_else(|| {
            format!("`{AT}.metadata[\"{DELEGATION_KEY}\"]` must be a string of at most 8192 bytes")
        })?;
        req.delegation = Some(token.to_owned());
    }
    if let Some(s) = metadata.get(SKILL_KEY) {
        let skill = s
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= MAX_ID_BYTES)
            .ok_or_else(|| format!("`{AT}.metadata.{SKILL_KEY}` must be a skill id (a string)"))?;
        req.skill = Some(skill.to_owned());
        context.insert("skill".into(), json!(skill));
    }
    context.insert("metadata".into(), Value::Object(metadata));
    Ok(())
}

/// A push-notification URL: http(s), at most 2048 visible ASCII bytes.
fn push_url(url: String, at: &str) -> Result<String, String> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.len() > 2048 || url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "`{at}` must be an http(s) URL of at most 2048 visible ASCII bytes"
        ));
    }
    Ok(url)
}

/// A part's kind and size: exactly one of `text`, `raw` (base64), `url`, `data`.
fn part_content(part: &Map<String, Value>) -> Result<(&'static str, u64), String> {
    let present: Vec<&str> = ["text", "raw", "url", "data"]
        .into_iter()
        .filter(|k| part.contains_key(*k))
        .collect();
    let [kind] = present.as_slice() else {
        return Err(format!(
            "a part has exactly one of `text`, `raw`, `url`, `data` (found {})",
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            }
        ));
    };
    let value = &part[*kind];
    let bytes = match *kind {
        "text" | "url" => value
            .as_str()
            .ok_or_else(|| format!("`{kind}` must be a string"))?
            .len(),
        "raw" => {
            let text = value.as_str().ok_or("`raw` must be base64 text")?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "`raw` must be standard base64 with padding".to_owned())?
                .len()
        }
        _ => serde_json::to_vec(value).map_or(0, |v| v.len()),
    };
    let kind = match *kind {
        "text" => "text",
        "raw" => "raw",
        "url" => "url",
        _ => "data",
    };
    Ok((kind, bytes as u64))
}

/// Refuses member names with `_` outside the free-form values.
fn one_spelling(object: &Map<String, Value>, at: &str) -> Result<(), String> {
    for (k, v) in object {
        if k.contains('_') {
            return Err(format!(
                "`{at}.{k}`: member names are camelCase (an agent reads `{k}` and its camelCase \
                 spelling as one field; the gateway accepts one spelling)"
            ));
        }
        if k == "metadata" || k == "data" {
            continue;
        }
        let here = format!("{at}.{k}");
        match v {
            Value::Object(o) => one_spelling(o, &here)?,
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Object(o) = item {
                        one_spelling(o, &format!("{here}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn object<'a>(
    m: &'a Map<String, Value>,
    k: &str,
    at: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("`{at}.{k}` must be an object")),
    }
}

fn string(m: &Map<String, Value>, k: &str, at: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{at}.{k}` must be a string")),
    }
}

/// An id: 1 to [`MAX_ID_BYTES`] bytes of visible ASCII.
fn id(m: &Map<String, Value>, k: &str, at: &str) -> Result<Option<String>, String> {
    match string(m, k, at)? {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.len() <= MAX_ID_BYTES && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(s))
        }
        Some(_) => Err(format!(
            "`{at}.{k}` must be at most {MAX_ID_BYTES} bytes of visible ASCII"
        )),
        None => Ok(None),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::SendMessage => "SendMessage",
        Method::SendStreamingMessage => "SendStreamingMessage",
        Method::GetTask => "GetTask",
        Method::ListTasks => "ListTasks",
        Method::CancelTask => "CancelTask",
        Method::SubscribeToTask => "SubscribeToTask",
        Method::CreatePushConfig => "CreateTaskPushNotificationConfig",
        Method::GetPushConfig => "GetTaskPushNotificationConfig",
        Method::ListPushConfigs => "ListTaskPushNotificationConfigs",
        Method::DeletePushConfig => "DeleteTaskPushNotificationConfig",
        Method::GetExtendedCard => "GetExtendedAgentCard",
    }
}

/// The task a result or stream event is about: a `Task` (`id`), a `task` member, a
/// `statusUpdate`/`artifactUpdate` (`taskId`), a `message` (`taskId`, optional).
pub fn task_of(result: &Value) -> Option<&str> {
    task_in(result.as_object()?)
}

/// [`task_of`] for a result object.
pub fn task_in(result: &Map<String, Value>) -> Option<&str> {
    if let Some(t) = result.get("task") {
        return t.get("id").and_then(Value::as_str);
    }
    for k in ["statusUpdate", "artifactUpdate", "message"] {
        if let Some(e) = result.get(k) {
            return e.get("taskId").and_then(Value::as_str);
        }
    }
    result.get("id").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn send(message: Value) -> Result<Request, String> {
        read(
            Method::SendMessage,
            Some(&params(json!({ "message": message }))),
        )
    }

    #[test]
    fn a_message_is_described_for_policies() {
        let r = send(json!({
            "messageId": "m1", "role": "ROLE_USER", "contextId": "c1",
            "parts": [{"text": "hello"}, {"raw": "AAEC", "mediaType": "application/octet-stream"},
                      {"url": "https://x/y"}, {"data": {"a": 1}}],
            "metadata": {"skill": "summarize", "arbiter.delegation": "tok", "x_y": 1},
        }))
        .unwrap();
        assert_eq!(r.skill.as_deref(), Some("summarize"));
        assert_eq!(r.delegation.as_deref(), Some("tok"));
        assert_eq!(r.context["part_count"], 4);
        assert_eq!(r.context["bytes"], json!(5 + 3 + 11 + 7));
        assert_eq!(r.context["parts"][1]["kind"], "raw");
        assert_eq!(
            r.context["parts"][1]["media_type"],
            "application/octet-stream"
        );
        assert_eq!(r.context["context_id"], "c1");
        assert_eq!(r.context["streaming"], false);
        // Free-form metadata keeps its names; the assertion is not shown to policies.
        assert_eq!(
            r.context["metadata"],
            json!({"skill": "summarize", "x_y": 1})
        );
    }

    #[test]
    fn two_spellings_and_unknown_values_are_refused() {
        let ok = json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]});
        assert!(send(ok.clone()).is_ok());
        for (bad, says) in [
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [], "task_id": "t"}),
                "task_id",
            ),
            (
                json!({"messageId": "m", "role": "ROLE_AGENT", "parts": []}),
                "role",
            ),
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "a", "url": "b"}]}),
                "exactly one",
            ),
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [{}]}),
                "none",
            ),
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"raw": "***"}]}),
                "base64",
            ),
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"text": 5}]}),
                "string",
            ),
            (json!({"role": "ROLE_USER", "parts": []}), "messageId"),
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [], "metadata": {"skill": 3}}),
                "skill",
            ),
            (
                json!({"messageId": "m", "role": "ROLE_USER", "parts": [], "taskId": "a b"}),
                "visible ASCII",
            ),
        ] {
            let e = send(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = read(
            Method::SendMessage,
            Some(&params(
                json!({"message": ok, "configuration": {"return_immediately": true}}),
            )),
        )
        .unwrap_err();
        assert!(e.contains("return_immediately"), "{e}");
        let e = read(Method::ListTasks, Some(&params(json!({"status": "DONE"})))).unwrap_err();
        assert!(e.contains("task state"), "{e}");
        let e = read(
            Method::GetTask,
            Some(&params(json!({"id": "t", "historyLength": "5"}))),
        )
        .unwrap_err();
        assert!(e.contains("historyLength"), "{e}");
        assert!(read(Method::GetTask, None).is_err());
    }

    fn arb_params() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("message"),
            Just("parts"),
            Just("text"),
            Just("raw"),
            Just("url"),
            Just("data"),
            Just("metadata"),
            Just("skill"),
            Just("role"),
            Just("messageId"),
            Just("taskId"),
            Just("contextId"),
            Just("id"),
            Just("status"),
            Just("url"),
            Just("historyLength"),
            Just("arbiter.delegation"),
            Just("task_id"),
        ]
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            prop_oneof![
                Just("ROLE_USER".to_owned()),
                Just("TASK_STATE_WORKING".to_owned()),
                Just("AAEC".to_owned()),
                "[ -~]{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever the parameters, reading them answers (never panics), and what it accepts
        /// has no member spelled with `_` outside the free-form values.
        #[test]
        fn any_params_are_read_or_refused(params in arb_params(), m in 0usize..11) {
            let methods = [
                Method::SendMessage, Method::SendStreamingMessage, Method::GetTask,
                Method::ListTasks, Method::CancelTask, Method::SubscribeToTask,
                Method::CreatePushConfig, Method::GetPushConfig, Method::ListPushConfigs,
                Method::DeletePushConfig, Method::GetExtendedCard,
            ];
            let method = methods[m];
            let map = match params {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("message".into(), other);
                    m
                }
            };
            if read(method, Some(&map)).is_ok() {
                proptest::prop_assert!(one_spelling(&map, "params").is_ok());
            }
        }
    }

    #[test]
    fn methods_and_their_tasks() {
        assert_eq!(
            Method::parse("SendMessage").unwrap().action(),
            "send_message"
        );
        assert!(Method::parse("message/send").unwrap_err().contains("0.3"));
        assert!(
            Method::parse("tasks/list")
                .unwrap_err()
                .contains("not an A2A 1.0")
        );
        let r = read(Method::CancelTask, Some(&params(json!({"id": "t1"})))).unwrap();
        assert_eq!(r.task_id.as_deref(), Some("t1"));
        let r = read(
            Method::CreatePushConfig,
            Some(&params(json!({"taskId": "t1", "url": "https://hook"}))),
        )
        .unwrap();
        assert_eq!(r.context["push_url"], "https://hook");
        // Given with a message, decided the same way.
        let inline = read(
            Method::SendMessage,
            Some(&params(json!({
                "message": {"messageId": "m", "role": "ROLE_USER", "parts": []},
                "configuration": {"taskPushNotificationConfig": {"url": "http://10.0.0.1/x"}},
            }))),
        )
        .unwrap();
        assert_eq!(inline.context["push_url"], "http://10.0.0.1/x");
        let e = read(
            Method::SendMessage,
            Some(&params(json!({
                "message": {"messageId": "m", "role": "ROLE_USER", "parts": []},
                "configuration": {"taskPushNotificationConfig": {"url": "file:///etc/passwd"}},
            }))),
        )
        .unwrap_err();
        assert!(e.contains("http(s) URL"), "{e}");
        assert_eq!(task_of(&json!({"task": {"id": "a"}})), Some("a"));
        assert_eq!(
            task_of(&json!({"statusUpdate": {"taskId": "b"}})),
            Some("b")
        );
        assert_eq!(task_of(&json!({"id": "c", "status": {}})), Some("c"));
        assert_eq!(task_of(&json!({"message": {"messageId": "m"}})), None);
    }
}
