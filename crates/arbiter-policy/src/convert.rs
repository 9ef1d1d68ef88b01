//! JSON → Cedar values without a schema, on the hot path.
//!
//! Cedar's JSON entity parser is general (schema-directed, every escape form) and costs
//! several microseconds per entity. Without a schema there is nothing to direct, so request
//! properties and context are converted here straight into restricted expressions, following
//! Cedar's JSON value format exactly: strings, booleans, 64-bit integers, arrays as sets,
//! objects as records, `{"__entity": {"type", "id"}}` as an entity reference and
//! `{"__extn": {"fn", "arg"}}` as an extension value (`ip`, `decimal`, `datetime`,
//! `duration`). With a schema, Cedar's own parser is used so that schema-directed conversion
//! (implicit entity references, extension types) applies.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};

/// Converts one JSON value; `path` names it in errors.
pub(crate) fn to_restricted(v: &Value, path: &str) -> Result<RestrictedExpression, String> {
    match v {
        Value::Bool(b) => Ok(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(RestrictedExpression::new_long)
            .ok_or_else(|| format!("`{path}`: {n} is not a 64-bit integer")),
        Value::String(s) => Ok(RestrictedExpression::new_string(s.clone())),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_restricted(item, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(RestrictedExpression::new_set),
        Value::Object(map) => object(map, path),
        Value::Null => Err(format!("`{path}`: null has no Cedar value")),
    }
}

fn object(map: &Map<String, Value>, path: &str) -> Result<RestrictedExpression, String> {
    if map.len() == 1 {
        if let Some(e) = map.get("__entity") {
            return entity_ref(e, path).map(RestrictedExpression::new_entity_uid);
        }
        if let Some(x) = map.get("__extn") {
            return extension(x, path);
        }
    }
    let fields = map
        .iter()
        .map(|(k, v)| Ok((k.clone(), to_restricted(v, &format!("{path}.{k}"))?)))
        .collect::<Result<Vec<_>, String>>()?;
    RestrictedExpression::new_record(fields).map_err(|e| format!("`{path}`: {e}"))
}

/// `{"type": "User", "id": "alice"}` as an entity uid.
pub(crate) fn entity_ref(v: &Value, path: &str) -> Result<EntityUid, String> {
    let kind = v.get("type").and_then(Value::as_str);
    let id = v.get("id").and_then(Value::as_str);
    match (kind, id) {
        (Some(kind), Some(id)) => {
            let t = EntityTypeName::from_str(kind)
                .map_err(|_| format!("`{path}`: `{kind}` is not a valid Cedar entity type name"))?;
            Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
        }
        _ => Err(format!(
            "`{path}`: an entity reference needs a string `type` and `id`"
        )),
    }
}

fn extension(v: &Value, path: &str) -> Result<RestrictedExpression, String> {
    let f = v.get("fn").and_then(Value::as_str);
    let arg = v.get("arg").and_then(Value::as_str);
    match (f, arg) {
        (Some("ip" | "ipaddr"), Some(a)) => Ok(RestrictedExpression::new_ip(a)),
        (Some("decimal"), Some(a)) => Ok(RestrictedExpression::new_decimal(a)),
        (Some("datetime"), Some(a)) => Ok(RestrictedExpression::new_datetime(a)),
        (Some("duration"), Some(a)) => Ok(RestrictedExpression::new_duration(a)),
        (Some(other), Some(_)) => Err(format!("`{path}`: unknown extension function `{other}`")),
        _ => Err(format!(
            "`{path}`: an extension value needs a string `fn` and `arg`"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,6}".prop_map(Value::String),
            Just(json!({"__entity": {"type": "User", "id": "alice"}})),
            Just(json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}})),
            Just(json!({"__extn": {"fn": "decimal", "arg": "1.25"}})),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The fast path builds exactly the entity Cedar's own JSON parser builds.
        #[test]
        fn fast_conversion_matches_cedars_json_parser(v in arb_value()) {
            let uid = entity_ref(&json!({"type": "Thing", "id": "t"}), "uid").unwrap();
            let ours = cedar_policy::Entity::new(
                uid,
                [("a".to_owned(), to_restricted(&v, "a").unwrap())].into_iter().collect(),
                std::collections::HashSet::new(),
            );
            let theirs = cedar_policy::Entity::from_json_value(
                json!({"uid": {"type": "Thing", "id": "t"}, "attrs": {"a": v}, "parents": []}),
                None,
            );
            match (ours, theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "disagree: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
}
