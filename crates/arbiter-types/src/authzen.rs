//! The AuthZEN 1.0 request model and its strict parser.
//!
//! Requests arrive as untrusted JSON. Parsing here is total: every input either becomes a
//! well-typed request or a [`RequestError`] naming the offending field. Unknown fields are
//! ignored, as AuthZEN requires; values Cedar cannot represent are refused, not guessed.
//!
//! Property and context values are normalised once, here: a `null` member of an object is
//! dropped (JSON's usual "absent"), while floating-point numbers and `null` inside arrays are
//! refused, because Cedar has neither.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::json::kind_of;

/// A subject or a resource: a typed entity with optional attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// The entity type; becomes the Cedar entity type verbatim.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity id.
    pub id: String,
    /// Attributes; merged over any stored entity with the same type and id (the request wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// The action: a name and optional properties (exposed to policies as `context.action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// One complete access evaluation request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationRequest {
    pub subject: Entity,
    pub action: Action,
    pub resource: Entity,
    pub context: Map<String, Value>,
}

/// A request whose parts may still come from batch defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialEvaluation {
    pub subject: Option<Entity>,
    pub action: Option<Action>,
    pub resource: Option<Entity>,
    pub context: Option<Map<String, Value>>,
}

/// How a batch of evaluations stops early (AuthZEN `options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvaluationsSemantic {
    /// Evaluate every item.
    #[default]
    ExecuteAll,
    /// Stop after the first item that is denied.
    DenyOnFirstDeny,
    /// Stop after the first item that is permitted.
    PermitOnFirstPermit,
}

/// `POST /access/v1/evaluations`: defaults plus items, each item resolved on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationsRequest {
    pub defaults: PartialEvaluation,
    /// `None` when `evaluations` is absent or empty: the request is then a single evaluation.
    pub items: Option<Vec<Result<PartialEvaluation, RequestError>>>,
    pub semantic: EvaluationsSemantic,
}

/// Which search endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Subject,
    Resource,
    Action,
}

/// Pagination parameters of a search request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: Option<usize>,
    pub token: Option<String>,
}

/// A search request. The searched part carries only a type (`id` is ignored); the action
/// search has no action.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub kind: SearchKind,
    /// For a subject search, `id` is empty and only `kind` matters.
    pub subject: Entity,
    /// `None` for an action search.
    pub action: Option<Action>,
    /// For a resource search, `id` is empty and only `kind` matters.
    pub resource: Entity,
    pub context: Map<String, Value>,
    pub page: Page,
}

/// A request that could not be understood, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct RequestError {
    /// Dotted path of the field, e.g. `subject.id` or `evaluations[2].resource`.
    pub field: String,
    /// What is wrong with it, e.g. `is missing` or `must be a string, not a number`.
    pub problem: String,
}

impl RequestError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(field, "is missing")
    }

    fn wrong_type(field: &str, expected: &str, got: &Value) -> Self {
        Self::new(field, format!("must be {expected}, not {}", kind_of(got)))
    }

    /// Prefixes the field path, e.g. `subject` becomes `evaluations[3].subject`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl EvaluationRequest {
    /// Parses a single evaluation request (`POST /access/v1/evaluation`).
    pub fn from_json(mut body: Map<String, Value>) -> Result<Self, RequestError> {
        let partial = PartialEvaluation::take_from(&mut body)?;
        partial.complete()
    }
}

impl PartialEvaluation {
    /// Takes `subject`, `action`, `resource` and `context` out of an object, checking types.
    fn take_from(obj: &mut Map<String, Value>) -> Result<Self, RequestError> {
        Ok(Self {
            subject: take_entity(obj, "subject", true)?,
            action: take_action(obj, "action")?,
            resource: take_entity(obj, "resource", true)?,
            context: take_object(obj, "context", "context")?,
        })
    }

    /// Fills what this item lacks from `defaults` (AuthZEN: an item's part replaces the
    /// default part as a whole).
    pub fn with_defaults(self, defaults: &PartialEvaluation) -> PartialEvaluation {
        PartialEvaluation {
            subject: self.subject.or_else(|| defaults.subject.clone()),
            action: self.action.or_else(|| defaults.action.clone()),
            resource: self.resource.or_else(|| defaults.resource.clone()),
            context: self.context.or_else(|| defaults.context.clone()),
        }
    }

    /// Turns this into a complete request, or names the first missing part.
    pub fn complete(self) -> Result<EvaluationRequest, RequestError> {
        Ok(EvaluationRequest {
            subject: self
                .subject
                .ok_or_else(|| RequestError::missing("subject"))?,
            action: self.action.ok_or_else(|| RequestError::missing("action"))?,
            resource: self
                .resource
                .ok_or_else(|| RequestError::missing("resource"))?,
            context: self.context.unwrap_or_default(),
        })
    }
}

impl EvaluationsRequest {
    /// Parses `POST /access/v1/evaluations`. Defaults that are ill-typed fail the whole request;
    /// an ill-typed item fails only that item.
    pub fn from_json(mut body: Map<String, Value>) -> Result<Self, RequestError> {
        let defaults = PartialEvaluation::take_from(&mut body)?;
        let semantic = match body.get("options") {
            None | Some(Value::Null) => EvaluationsSemantic::default(),
            Some(Value::Object(options)) => match options.get("evaluations_semantic") {
                None | Some(Value::Null) => EvaluationsSemantic::default(),
                Some(Value::String(s)) => match s.as_str() {
                    "execute_all" => EvaluationsSemantic::ExecuteAll,
                    "deny_on_first_deny" => EvaluationsSemantic::DenyOnFirstDeny,
                    "permit_on_first_permit" => EvaluationsSemantic::PermitOnFirstPermit,
                    other => {
                        return Err(RequestError::new(
                            "options.evaluations_semantic",
                            format!(
                                "must be `execute_all`, `deny_on_first_deny` or \
                                 `permit_on_first_permit`, not `{}`",
                                truncate(other)
                            ),
                        ));
                    }
                },
                Some(other) => {
                    return Err(RequestError::wrong_type(
                        "options.evaluations_semantic",
                        "a string",
                        other,
                    ));
                }
            },
            Some(other) => return Err(RequestError::wrong_type("options", "an object", other)),
        };
        let items = match body.remove("evaluations") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let prefix = format!("evaluations[{i}]");
                        match item {
                            Value::Object(mut obj) => PartialEvaluation::take_from(&mut obj)
                                .map_err(|e| e.within(&prefix)),
                            other => Err(RequestError::wrong_type(&prefix, "an object", &other)),
                        }
                    })
                    .collect(),
            ),
            Some(other) => {
                return Err(RequestError::wrong_type("evaluations", "an array", &other));
            }
        };
        Ok(Self {
            defaults,
            items,
            semantic,
        })
    }
}

impl SearchRequest {
    /// Parses a search request for `kind`.
    pub fn from_json(kind: SearchKind, mut body: Map<String, Value>) -> Result<Self, RequestError> {
        let subject = take_entity(&mut body, "subject", kind != SearchKind::Subject)?
            .ok_or_else(|| RequestError::missing("subject"))?;
        let resource = take_entity(&mut body, "resource", kind != SearchKind::Resource)?
            .ok_or_else(|| RequestError::missing("resource"))?;
        let action = match kind {
            SearchKind::Action => None,
            SearchKind::Subject | SearchKind::Resource => Some(
                take_action(&mut body, "action")?.ok_or_else(|| RequestError::missing("action"))?,
            ),
        };
        let context = take_object(&mut body, "context", "context")?.unwrap_or_default();
        let page = match body.get("page") {
            None | Some(Value::Null) => Page::default(),
            Some(Value::Object(p)) => Page {
                limit: match p.get("limit") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => match n.as_u64() {
                        Some(l) if l > 0 => Some(usize::try_from(l).unwrap_or(usize::MAX)),
                        _ => {
                            return Err(RequestError::new(
                                "page.limit",
                                "must be a positive integer",
                            ));
                        }
                    },
                    Some(other) => {
                        return Err(RequestError::wrong_type("page.limit", "a number", other));
                    }
                },
                token: match p.get("token") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(t)) if t.is_empty() => None,
                    Some(Value::String(t)) => Some(t.clone()),
                    Some(other) => {
                        return Err(RequestError::wrong_type("page.token", "a string", other));
                    }
                },
            },
            Some(other) => return Err(RequestError::wrong_type("page", "an object", other)),
        };
        Ok(Self {
            kind,
            subject,
            action,
            resource,
            context,
            page,
        })
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn take_string(
    obj: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<String, RequestError> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(RequestError::missing(field)),
        Some(other) => Err(RequestError::wrong_type(field, "a string", &other)),
    }
}

fn take_object(
    obj: &mut Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<Map<String, Value>>, RequestError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(mut map)) => {
            normalize_object(&mut map, field)?;
            Ok(Some(map))
        }
        Some(other) => Err(RequestError::wrong_type(field, "an object", &other)),
    }
}

/// Takes an entity. With `id_required` false (the searched part of a search request), the
/// `id` may be absent and is then empty.
fn take_entity(
    obj: &mut Map<String, Value>,
    key: &str,
    id_required: bool,
) -> Result<Option<Entity>, RequestError> {
    let mut inner = match obj.remove(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(inner)) => inner,
        Some(other) => return Err(RequestError::wrong_type(key, "an object", &other)),
    };
    let kind = take_string(&mut inner, "type", &format!("{key}.type"))?;
    if kind.is_empty() {
        return Err(RequestError::new(
            format!("{key}.type"),
            "must not be empty",
        ));
    }
    let id = if id_required {
        take_string(&mut inner, "id", &format!("{key}.id"))?
    } else {
        match inner.remove("id") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        }
    };
    let properties = take_object(&mut inner, "properties", &format!("{key}.properties"))?;
    Ok(Some(Entity {
        kind,
        id,
        properties,
    }))
}

fn take_action(obj: &mut Map<String, Value>, key: &str) -> Result<Option<Action>, RequestError> {
    let mut inner = match obj.remove(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(inner)) => inner,
        Some(other) => return Err(RequestError::wrong_type(key, "an object", &other)),
    };
    let name = take_string(&mut inner, "name", &format!("{key}.name"))?;
    if name.is_empty() {
        return Err(RequestError::new(
            format!("{key}.name"),
            "must not be empty",
        ));
    }
    let properties = take_object(&mut inner, "properties", &format!("{key}.properties"))?;
    Ok(Some(Action { name, properties }))
}

/// Drops `null` members and refuses values Cedar cannot represent, naming their path.
fn normalize_object(map: &mut Map<String, Value>, path: &str) -> Result<(), RequestError> {
    map.retain(|_, v| !v.is_null());
    for (k, v) in map.iter_mut() {
        normalize_value(v, &format!("{path}.{k}"))?;
    }
    Ok(())
}

/// Whether a number that is not an `i64` is an integer too large for 64 bits: above
/// `i64::MAX` but within `u64`, or beyond `u64` (which the JSON parser can only hold as a
/// float: a whole number of magnitude at least 2^63 written without a fraction is an integer,
/// whether written `100000000000000000000` or `1e20`).
fn is_oversized_integer(n: &serde_json::Number) -> bool {
    if n.is_u64() {
        return true;
    }
    // 2^63, exactly representable as an f64.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    n.as_f64()
        .is_some_and(|f| f.is_finite() && f.fract() == 0.0 && f.abs() >= TWO_POW_63)
}

fn normalize_value(value: &mut Value, path: &str) -> Result<(), RequestError> {
    match value {
        Value::Number(n) if !(n.is_i64()) => Err(RequestError::new(
            path,
            if is_oversized_integer(n) {
                "is an integer that does not fit in 64 bits (Cedar's integers are signed 64-bit, \
                 from -9223372036854775808 to 9223372036854775807); send it as a string"
                    .to_owned()
            } else {
                "is a floating-point number, which Cedar cannot represent; send a string or \
                 an integer"
                    .to_owned()
            },
        )),
        Value::Object(map) => {
            // Cedar's JSON escapes (`__entity`, `__extn`) are passed through untouched.
            normalize_object(map, path)
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let item_path = format!("{path}[{i}]");
                if item.is_null() {
                    return Err(RequestError::new(
                        item_path,
                        "is null; sets cannot hold null",
                    ));
                }
                normalize_value(item, &item_path)?;
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::json::{JsonLimits, parse_bounded};
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn parses_a_full_request() {
        let r = EvaluationRequest::from_json(obj(json!({
            "subject": {"type": "Agent", "id": "a1", "properties": {"n": 1, "gone": null}},
            "action": {"name": "read", "properties": {"x": true}},
            "resource": {"type": "Doc", "id": "d"},
            "context": {"ip": "10.0.0.1"},
            "unknown": 5
        })))
        .unwrap();
        assert_eq!(r.subject.kind, "Agent");
        assert_eq!(r.subject.properties.unwrap().len(), 1);
        assert_eq!(r.action.properties.unwrap()["x"], json!(true));
        assert_eq!(r.context["ip"], json!("10.0.0.1"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"action": {"name": "r"}, "resource": {"type": "D", "id": "d"}}),
                "`subject` is missing",
            ),
            (
                json!({"subject": {"type": "A", "id": 7}, "action": {"name": "r"}, "resource": {"type": "D", "id": "d"}}),
                "`subject.id` must be a string, not a number",
            ),
            (
                json!({"subject": {"type": "A", "id": "a"}, "action": "r", "resource": {"type": "D", "id": "d"}}),
                "`action` must be an object, not a string",
            ),
            (
                json!({"subject": {"type": "A", "id": "a"}, "action": {"name": "r"}, "resource": {"type": "D"}}),
                "`resource.id` is missing",
            ),
            (
                json!({"subject": {"type": "A", "id": "a"}, "action": {"name": "r"}, "resource": {"type": "D", "id": "d"}, "context": {"x": 1.5}}),
                "`context.x` is a floating-point number, which Cedar cannot represent; send a string or an integer",
            ),
            (
                json!({"subject": {"type": "A", "id": "a"}, "action": {"name": "r"}, "resource": {"type": "D", "id": "d"}, "context": {"s": [1, null]}}),
                "`context.s[1]` is null; sets cannot hold null",
            ),
            (
                json!({"subject": {"type": "", "id": "a"}, "action": {"name": "r"}, "resource": {"type": "D", "id": "d"}}),
                "`subject.type` must not be empty",
            ),
        ];
        for (input, expected) in cases {
            let err = EvaluationRequest::from_json(obj(input)).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    /// An integer beyond 64 bits used to be refused as "a floating-point number".
    #[test]
    fn an_integer_too_large_for_64_bits_is_named_so() {
        let body = |x: &str| {
            let text = format!(
                r#"{{"subject": {{"type": "A", "id": "a"}}, "action": {{"name": "r"}}, "resource": {{"type": "D", "id": "d"}}, "context": {{"x": {x}}}}}"#
            );
            let map: Map<String, Value> = serde_json::from_str(&text).unwrap();
            EvaluationRequest::from_json(map)
        };
        for big in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "100000000000000000000000",
            "-9223372036854775809",
            "-100000000000000000000000",
        ] {
            let err = body(big).unwrap_err().to_string();
            assert!(
                err.starts_with("`context.x` is an integer that does not fit in 64 bits"),
                "{big}: {err}"
            );
            assert!(!err.contains("floating"), "{big}: {err}");
        }
        for float in ["1.5", "-0.25", "2.0", "1e-3"] {
            let err = body(float).unwrap_err().to_string();
            assert!(
                err.starts_with("`context.x` is a floating-point number"),
                "{float}: {err}"
            );
        }
        for fits in ["9223372036854775807", "-9223372036854775808", "0"] {
            assert!(body(fits).is_ok(), "{fits}");
        }
    }

    #[test]
    fn batch_items_fail_alone() {
        let r = EvaluationsRequest::from_json(obj(json!({
            "subject": {"type": "A", "id": "a"},
            "evaluations": [
                {"action": {"name": "r"}, "resource": {"type": "D", "id": "d"}},
                {"action": {"name": 3}},
                7
            ],
            "options": {"evaluations_semantic": "deny_on_first_deny"}
        })))
        .unwrap();
        assert_eq!(r.semantic, EvaluationsSemantic::DenyOnFirstDeny);
        let items = r.items.unwrap();
        assert!(items[0].is_ok());
        assert_eq!(
            items[1].clone().unwrap_err().to_string(),
            "`evaluations[1].action.name` must be a string, not a number"
        );
        assert_eq!(
            items[2].clone().unwrap_err().to_string(),
            "`evaluations[2]` must be an object, not a number"
        );
        let missing = items[0]
            .clone()
            .unwrap()
            .with_defaults(&PartialEvaluation::default())
            .complete()
            .unwrap_err();
        assert_eq!(missing.to_string(), "`subject` is missing");
    }

    #[test]
    fn empty_evaluations_is_a_single_request() {
        let r = EvaluationsRequest::from_json(obj(json!({"evaluations": []}))).unwrap();
        assert!(r.items.is_none());
    }

    #[test]
    fn search_requests() {
        let r = SearchRequest::from_json(
            SearchKind::Subject,
            obj(json!({"subject": {"type": "User"}, "action": {"name": "r"}, "resource": {"type": "D", "id": "d"}, "page": {"limit": 2, "token": ""}})),
        )
        .unwrap();
        assert_eq!(r.subject.id, "");
        assert_eq!(r.page.limit, Some(2));
        assert_eq!(r.page.token, None);
        let err = SearchRequest::from_json(
            SearchKind::Action,
            obj(json!({"subject": {"type": "User", "id": "u"}})),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`resource` is missing");
        let err = SearchRequest::from_json(
            SearchKind::Resource,
            obj(json!({"subject": {"type": "U", "id": "u"}, "action": {"name": "r"}, "resource": {"type": "D"}, "page": {"limit": 0}})),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`page.limit` must be a positive integer");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z\\\\\"{}\\[\\]]{0,8}".prop_map(Value::String),
            prop_oneof![
                Just("subject"),
                Just("action"),
                Just("resource"),
                Just("context"),
                Just("type"),
                Just("id"),
                Just("name"),
                Just("properties"),
                Just("evaluations"),
                Just("options"),
                Just("page")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("subject".to_owned()),
                        Just("action".to_owned()),
                        Just("resource".to_owned()),
                        Just("context".to_owned()),
                        Just("type".to_owned()),
                        Just("id".to_owned()),
                        Just("name".to_owned()),
                        Just("properties".to_owned()),
                        Just("evaluations".to_owned()),
                        Just("options".to_owned()),
                        Just("evaluations_semantic".to_owned()),
                        Just("page".to_owned()),
                        Just("limit".to_owned()),
                        Just("token".to_owned()),
                        "[a-z]{1,3}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// No JSON value, however shaped, makes the parsers panic; each gives a request or a
        /// named error.
        #[test]
        fn parsers_are_total(v in arb_json()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            if let Ok(map) = parse_bounded(&bytes, JsonLimits::default()) {
                let _ = EvaluationRequest::from_json(map.clone());
                if let Ok(batch) = EvaluationsRequest::from_json(map.clone()) {
                    for item in batch.items.into_iter().flatten().flatten() {
                        let _ = item.with_defaults(&batch.defaults).complete();
                    }
                }
                for kind in [SearchKind::Subject, SearchKind::Resource, SearchKind::Action] {
                    let _ = SearchRequest::from_json(kind, map.clone());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_bounded(&bytes, JsonLimits::default());
        }
    }
}

/// What an enforcement point acts on in a decision point's AuthZEN answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerSummary {
    pub allow: bool,
    pub decision_id: Option<String>,
    /// The reason that may be shown to the agent (`context.reason_user`, a string or
    /// `{"en": …}`).
    pub reason_user: Option<String>,
    /// The policy version that decided (`context.policy_version`).
    pub policy_version: Option<String>,
}

impl AnswerSummary {
    /// Reads one decision (`{"decision": bool, "context": {…}}`); `None` unless `decision` is a
    /// boolean.
    pub fn read(answer: &Value) -> Option<Self> {
        let allow = answer.get("decision")?.as_bool()?;
        let context = answer.get("context");
        let text = |field: &str| {
            context
                .and_then(|c| c.get(field))
                .and_then(|v| v.as_str().or_else(|| v.get("en").and_then(Value::as_str)))
                .map(str::to_owned)
        };
        Some(Self {
            allow,
            decision_id: text("decision_id"),
            reason_user: text("reason_user"),
            policy_version: text("policy_version"),
        })
    }
}
