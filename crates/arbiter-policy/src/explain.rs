//! Why a request's context is not valid for the schema, naming the attribute.
//!
//! Cedar rejects a context that does not match the schema's declaration for the action, but
//! for a value of the wrong type its error shows only the start of the whole context ("context
//! `{arguments: {path: 5}}` is not valid for `Action::"call_tool"`"), and for an undeclared
//! attribute it names the attribute without saying where it is. When Cedar has rejected a
//! context, [`ContextShapes::explain`] walks the context against the declaration (from the
//! schema in Cedar's JSON form, types resolved) and names the first attribute at fault, e.g.
//! "`context.arguments.path` must be a string, not a whole number, as the schema declares it
//! for action `call_tool`". Cedar stays the judge of validity: this only words the
//! reason; when the walk finds nothing, Cedar's own message is kept.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// The context declarations of a schema's actions (namespace-less, as Arbiter's actions are
/// `Action::"<name>"`), and the common types they refer to.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextShapes {
    /// Action name → its context type.
    contexts: HashMap<String, Value>,
    /// The schema in JSON form, for common types (`{namespace: {"commonTypes": {...}}}`).
    schema: Value,
}

impl ContextShapes {
    /// Reads the declarations from a Cedar schema's text; empty if it cannot be converted
    /// (the schema itself was accepted: then Cedar's messages are used as they are).
    pub(crate) fn from_cedarschema(src: &str) -> Self {
        let Ok((schema, _warnings)) = cedar_policy::schema_str_to_json_with_resolved_types(src)
        else {
            return Self::default();
        };
        let contexts = schema
            .get("")
            .and_then(|ns| ns.get("actions"))
            .and_then(Value::as_object)
            .map(|actions| {
                actions
                    .iter()
                    .filter_map(|(name, a)| {
                        let context = a.get("appliesTo")?.get("context")?;
                        Some((name.clone(), context.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { contexts, schema }
    }

    /// The first attribute of `context` that does not match the declaration of `action`'s
    /// context, and what is wrong with it.
    pub(crate) fn explain(&self, action: &str, context: &Map<String, Value>) -> Option<String> {
        let declared = self.contexts.get(action)?;
        let walk = Walk {
            shapes: self,
            action,
        };
        walk.check("context", declared, &Value::Object(context.clone()), 0)
    }

    /// A common type's declaration, by its (possibly namespaced) name.
    fn common_type(&self, name: &str) -> Option<&Value> {
        let (namespace, short) = name.rsplit_once("::").unwrap_or(("", name));
        self.schema.get(namespace)?.get("commonTypes")?.get(short)
    }
}

struct Walk<'a> {
    shapes: &'a ContextShapes,
    action: &'a str,
}

/// Common types may refer to each other; a schema cannot make that a cycle, but the walk does
/// not rely on it.
const MAX_DEPTH: usize = 64;

impl Walk<'_> {
    fn declared(&self) -> String {
        format!("the schema declares it for action `{}`", self.action)
    }

    fn wrong(&self, path: &str, expected: &str, value: &Value) -> Option<String> {
        Some(format!(
            "`{path}` must be {expected}, not {}, as {}",
            kind_of(value),
            self.declared()
        ))
    }

    fn check(&self, path: &str, ty: &Value, value: &Value, depth: usize) -> Option<String> {
        if depth > MAX_DEPTH {
            return None;
        }
        if value.is_null() {
            return Some(format!(
                "`{path}` is null, which no Cedar type allows: leave the attribute out instead"
            ));
        }
        let kind = ty.get("type").and_then(Value::as_str)?;
        match kind {
            "String" | "__cedar::String" => {
                (!value.is_string()).then(|| self.wrong(path, "a string", value))?
            }
            "Long" | "__cedar::Long" => (!value.is_i64())
                .then(|| self.wrong(path, "a whole number (a Cedar `Long`)", value))?,
            "Bool" | "Boolean" | "__cedar::Bool" => {
                (!value.is_boolean()).then(|| self.wrong(path, "a boolean", value))?
            }
            "Set" | "__cedar::Set" => {
                let Some(items) = value.as_array() else {
                    return self.wrong(path, "an array (a Cedar set)", value);
                };
                let element = ty.get("element")?;
                items.iter().enumerate().find_map(|(i, item)| {
                    self.check(&format!("{path}[{i}]"), element, item, depth + 1)
                })
            }
            "Record" | "__cedar::Record" => {
                let Some(members) = value.as_object() else {
                    return self.wrong(path, "an object (a Cedar record)", value);
                };
                let attributes = ty.get("attributes").and_then(Value::as_object)?;
                for (name, member) in members {
                    let member_path = member_path(path, name);
                    match attributes.get(name) {
                        None => {
                            return Some(format!(
                                "`{member_path}` is not declared in the schema (for action `{}`)",
                                self.action
                            ));
                        }
                        Some(attr) => {
                            if let Some(problem) = self.check(&member_path, attr, member, depth + 1)
                            {
                                return Some(problem);
                            }
                        }
                    }
                }
                attributes.iter().find_map(|(name, attr)| {
                    let required = attr.get("required").and_then(Value::as_bool) != Some(false);
                    (required && !members.contains_key(name)).then(|| {
                        format!(
                            "`{}` is missing: the schema requires it (for action `{}`)",
                            member_path(path, name),
                            self.action
                        )
                    })
                })
            }
            "Entity" | "__cedar::Entity" => {
                let name = ty.get("name").and_then(Value::as_str)?;
                let reference = value
                    .as_object()
                    .map(|o| o.get("__entity").unwrap_or(value));
                let given = reference
                    .and_then(|r| r.get("type"))
                    .and_then(Value::as_str);
                let has_id = reference
                    .and_then(|r| r.get("id"))
                    .is_some_and(Value::is_string);
                match given {
                    Some(given) if has_id && given == name => None,
                    Some(given) if has_id => Some(format!(
                        "`{path}` must be a `{name}` entity reference, not a `{given}` one, as {}",
                        self.declared()
                    )),
                    _ => self.wrong(
                        path,
                        &format!("a `{name}` entity reference such as {{\"type\": \"{name}\", \"id\": \"…\"}}"),
                        value,
                    ),
                }
            }
            // Extension values (`decimal`, `ipaddr`, …) are written several ways; Cedar judges
            // them.
            "Extension" | "__cedar::Extension" => None,
            // A common type, by name.
            other => {
                let declared = self.shapes.common_type(other)?;
                self.check(path, declared, value, depth + 1)
            }
        }
    }
}

/// `context.arguments` + `path` → `context.arguments.path`; a name that is not an identifier is
/// quoted (`context.arguments["file name"]`).
fn member_path(path: &str, name: &str) -> String {
    let identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier {
        format!("{path}.{name}")
    } else {
        format!("{path}[{}]", Value::String(name.to_owned()))
    }
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "a whole number".to_owned(),
        Value::Number(_) => "a number with a fraction".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(o) if o.contains_key("__entity") => "an entity reference".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"
        entity User;
        entity Doc;
        type Args = { "path"?: String, "n"?: Long, "tags"?: Set<String>, "when"?: decimal };
        action read appliesTo {
          principal: User,
          resource: Doc,
          context: {
            "arguments"?: Args,
            "pin"?: { "hash": String, "pinned": Bool },
            "by"?: User,
          },
        };
    "#;

    fn explain(context: Value) -> Option<String> {
        let shapes = ContextShapes::from_cedarschema(SCHEMA);
        shapes.explain("read", context.as_object().unwrap())
    }

    #[test]
    fn names_the_attribute_at_fault() {
        assert_eq!(
            explain(json!({"arguments": {"path": 5}})).unwrap(),
            "`context.arguments.path` must be a string, not a whole number, as the schema \
             declares it for action `read`"
        );
        assert_eq!(
            explain(json!({"arguments": {"path": "a", "encoding": "latin1"}})).unwrap(),
            "`context.arguments.encoding` is not declared in the schema (for action `read`)"
        );
        assert_eq!(
            explain(json!({"arguments": {"n": 1.5}})).unwrap(),
            "`context.arguments.n` must be a whole number (a Cedar `Long`), not a number with a \
             fraction, as the schema declares it for action `read`"
        );
        assert_eq!(
            explain(json!({"arguments": {"tags": ["a", 2]}})).unwrap(),
            "`context.arguments.tags[1]` must be a string, not a whole number, as the schema \
             declares it for action `read`"
        );
        assert_eq!(
            explain(json!({"pin": {"hash": "h"}})).unwrap(),
            "`context.pin.pinned` is missing: the schema requires it (for action `read`)"
        );
        assert_eq!(
            explain(json!({"by": {"type": "Doc", "id": "d"}})).unwrap(),
            "`context.by` must be a `User` entity reference, not a `Doc` one, as the schema \
             declares it for action `read`"
        );
        assert_eq!(
            explain(json!({"by": "alice"})).unwrap(),
            "`context.by` must be a `User` entity reference such as {\"type\": \"User\", \
             \"id\": \"…\"}, not a string, as the schema declares it for action `read`"
        );
        assert_eq!(
            explain(json!({"arguments": {"file name": "x"}})).unwrap(),
            "`context.arguments[\"file name\"]` is not declared in the schema (for action `read`)"
        );
        assert_eq!(
            explain(json!({"arguments": null})).unwrap(),
            "`context.arguments` is null, which no Cedar type allows: leave the attribute out \
             instead"
        );
    }

    #[test]
    fn a_valid_context_has_nothing_to_explain() {
        assert_eq!(
            explain(json!({
                "arguments": {"path": "a", "n": 2, "tags": ["x"], "when": "1.5"},
                "pin": {"hash": "h", "pinned": true},
                "by": {"__entity": {"type": "User", "id": "alice"}},
            })),
            None
        );
        // An action without a declaration, or a schema that is not Cedar: nothing to say.
        let shapes = ContextShapes::from_cedarschema(SCHEMA);
        assert_eq!(shapes.explain("write", &Map::new()), None);
        assert!(
            ContextShapes::from_cedarschema("not a schema")
                .explain("read", &Map::new())
                .is_none()
        );
    }
}
