//! What the gateway tells the decision point about tools, resources and prompts.
//!
//! - [`cedar_value`] turns an agent's JSON arguments into values every Cedar policy can
//!   read: objects become records, arrays sets, integers `Long`s, and what Cedar has no
//!   literal for is mapped explicitly (see the function) rather than dropped or guessed.
//! - [`tool_definition`] and [`definition_hash`] are what a tool is pinned by.
//! - [`tool_annotations`] keeps the annotations the vocabulary declares, with their types.

use serde_json::{Map, Value};

/// Converts an argument value into Cedar's JSON value form.
///
/// - strings, booleans and integers that fit in 64 bits are kept;
/// - a number with a fraction becomes a `decimal` extension value when it has at most four
///   fractional digits and fits Cedar's decimal range, otherwise its JSON text as a string;
/// - `null` members of objects are left out (Cedar has no null: `context.arguments has x`
///   is then false), `null` items of arrays are dropped;
/// - arrays become sets (order and duplicates are not kept);
/// - an object whose only member is `__entity` or `__extn` would be read by Cedar as an
///   entity reference or an extension call, so it is passed as its JSON text instead: an
///   agent cannot make its arguments name entities.
pub fn cedar_value(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(_) | Value::String(_) => Some(v.clone()),
        Value::Number(n) => {
            if n.is_i64() {
                Some(v.clone())
            } else {
                Some(decimal(n).unwrap_or_else(|| Value::String(n.to_string())))
            }
        }
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(cedar_value).collect())),
        Value::Object(map) => {
            if map.len() == 1 && (map.contains_key("__entity") || map.contains_key("__extn")) {
                return Some(Value::String(v.to_string()));
            }
            Some(Value::Object(cedar_record(map)))
        }
    }
}

/// [`cedar_value`] for each member of an object.
pub fn cedar_record(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter_map(|(k, v)| Some((k.clone(), cedar_value(v)?)))
        .collect()
}

/// `{"__extn": {"fn": "decimal", "arg": "…"}}` when `n` is exactly a Cedar decimal.
fn decimal(n: &serde_json::Number) -> Option<Value> {
    let text = n.to_string();
    if text.contains(['e', 'E']) {
        return None;
    }
    let (whole, frac) = text.split_once('.')?;
    if frac.is_empty() || frac.len() > 4 || whole.trim_start_matches('-').len() > 14 {
        return None;
    }
    Some(serde_json::json!({"__extn": {"fn": "decimal", "arg": text}}))
}

/// The members of a tool as announced that make up its definition: what it is called, what
/// it says it does, what it takes and returns, and its annotations. `_meta` and icons are not
/// part of it.
pub fn tool_definition(tool: &Map<String, Value>) -> Value {
    let mut def = Map::new();
    for key in [
        "name",
        "title",
        "description",
        "inputSchema",
        "outputSchema",
        "annotations",
    ] {
        if let Some(v) = tool.get(key) {
            def.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(def)
}

/// `sha256:<hex>` of the RFC 8785 canonical encoding of `definition`, and that encoding.
/// An error when the definition has no canonical encoding (a number out of range, nesting
/// too deep).
pub fn definition_hash(
    definition: &Value,
) -> Result<(String, String), arbiter_log::CanonicalError> {
    let bytes = arbiter_log::canonical_json(definition)?;
    let hash = arbiter_log::context_digest(definition)?;
    Ok((hash, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The annotations the vocabulary declares (`title` and the four hints), with the right
/// types; anything else a server announces is left out so that it cannot break a schema.
pub fn tool_annotations(tool: &Map<String, Value>) -> Option<Map<String, Value>> {
    let ann = tool.get("annotations")?.as_object()?;
    let mut out = Map::new();
    if let Some(Value::String(t)) = ann.get("title") {
        out.insert("title".into(), Value::String(t.clone()));
    }
    for hint in [
        "readOnlyHint",
        "destructiveHint",
        "idempotentHint",
        "openWorldHint",
    ] {
        if let Some(Value::Bool(b)) = ann.get(hint) {
            out.insert(hint.into(), Value::Bool(*b));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_become_cedar_values() {
        let args = json!({
            "path": "/tmp/x", "n": 3, "ratio": 0.25, "big": 1.0e300, "tiny": 0.123456,
            "flags": ["a", null, "b"], "none": null,
            "nested": {"deep": {"ok": true}},
            "sneaky": {"__entity": {"type": "User", "id": "admin"}},
            "sneaky2": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}
        });
        let out = cedar_record(args.as_object().unwrap());
        assert_eq!(out["path"], "/tmp/x");
        assert_eq!(out["n"], 3);
        assert_eq!(
            out["ratio"],
            json!({"__extn": {"fn": "decimal", "arg": "0.25"}})
        );
        assert!(out["big"].is_string());
        assert!(out["tiny"].is_string());
        assert_eq!(out["flags"], json!(["a", "b"]));
        assert!(!out.contains_key("none"));
        assert_eq!(out["nested"]["deep"]["ok"], true);
        assert!(out["sneaky"].is_string());
        assert!(out["sneaky2"].is_string());
    }

    #[test]
    fn definitions_hash_canonically() {
        let a = json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {}}, "_meta": {"x": 1}});
        let b = json!({"inputSchema": {"properties": {}, "type": "object"}, "description": "d", "name": "t"});
        let ha = definition_hash(&tool_definition(a.as_object().unwrap())).unwrap();
        let hb = definition_hash(&tool_definition(b.as_object().unwrap())).unwrap();
        assert_eq!(ha.0, hb.0);
        assert!(ha.0.starts_with("sha256:") && ha.0.len() == 71);
        let c = json!({"name": "t", "description": "d (changed)", "inputSchema": {"type": "object", "properties": {}}});
        assert_ne!(
            definition_hash(&tool_definition(c.as_object().unwrap()))
                .unwrap()
                .0,
            ha.0
        );
    }

    #[test]
    fn annotations_keep_declared_members() {
        let t = json!({"annotations": {"readOnlyHint": true, "destructiveHint": "yes", "custom": 1, "title": "T"}});
        let a = tool_annotations(t.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(a),
            json!({"title": "T", "readOnlyHint": true})
        );
    }
}
