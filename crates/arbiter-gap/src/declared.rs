//! Declared intent: the `systems` attribute of a registered agent names, per layer, the
//! systems the agent is meant to reach:
//!
//! ```json
//! {"systems": {"ai": ["fs"], "applications": ["tickets"], "infrastructure": ["vm"],
//!              "agents": ["billing-agent"],
//!              "data": ["shop", {"name": "warehouse", "role": "reporting"}]}}
//! ```
//!
//! A data entry may be an object naming the database role the agent connects as, so that
//! direct connections by that role (`--postgres`) are attributed to the agent. Anything else
//! is refused entry by entry with a warning naming the agent and what is wrong; the rest of
//! the declaration is kept.

use std::collections::BTreeMap;

use arbiter_store::Agent;
use serde_json::Value;

use crate::model::Layer;

/// The attribute's name.
pub const ATTRIBUTE: &str = "systems";

/// Most entries per layer.
const MAX_ENTRIES: usize = 64;
/// Longest system name or role.
const MAX_NAME: usize = 128;

/// What one agent declares.
#[derive(Debug, Default)]
pub(crate) struct Declared {
    /// Per layer, the system names.
    pub names: BTreeMap<Layer, Vec<String>>,
    /// Database role → the data system it serves.
    pub roles: Vec<(String, String)>,
}

/// Whether `s` is an agent id (`^[a-z0-9][a-z0-9._-]{0,62}$`).
pub(crate) fn is_agent_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

fn name_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control)
}

/// Reads `agent`'s `systems` attribute; problems go to `warnings`.
pub(crate) fn parse(agent: &Agent, warnings: &mut Vec<String>) -> Declared {
    let mut out = Declared::default();
    let Some(systems) = agent.attributes.get(ATTRIBUTE) else {
        return out;
    };
    let id = &agent.id;
    let mut warn =
        |what: String| warnings.push(format!("agent `{id}`: attribute `systems`: {what}"));
    let Value::Object(map) = systems else {
        warn(format!(
            "must be an object of layers ({}), found {}",
            layer_list(),
            kind(systems)
        ));
        return out;
    };
    for (key, entries) in map {
        let Some(layer) = Layer::from_key(key) else {
            warn(format!(
                "`{}` is not a layer (expected one of {})",
                printable(key),
                layer_list()
            ));
            continue;
        };
        let Value::Array(entries) = entries else {
            warn(format!(
                "`{key}` must be an array of system names, found {}",
                kind(entries)
            ));
            continue;
        };
        if entries.len() > MAX_ENTRIES {
            warn(format!(
                "`{key}` lists {} systems; only the first {MAX_ENTRIES} are read",
                entries.len()
            ));
        }
        for (i, entry) in entries.iter().take(MAX_ENTRIES).enumerate() {
            match entry {
                Value::String(name) if name_ok(name) => push(&mut out, layer, name),
                Value::Object(obj) if layer == Layer::Data => {
                    let name = obj.get("name").and_then(Value::as_str);
                    let role = obj.get("role").and_then(Value::as_str);
                    let unknown: Vec<&str> = obj
                        .keys()
                        .map(String::as_str)
                        .filter(|k| !matches!(*k, "name" | "role"))
                        .collect();
                    match (name, role) {
                        (Some(n), role)
                            if name_ok(n) && role.is_none_or(name_ok) && unknown.is_empty() =>
                        {
                            push(&mut out, layer, n);
                            if let Some(r) = role {
                                out.roles.push((r.to_owned(), n.to_owned()));
                            }
                        }
                        _ => warn(format!(
                            "`data[{i}]` must be a name or {{\"name\": NAME, \"role\": ROLE}} \
                             (names of 1 to {MAX_NAME} characters, no other fields)"
                        )),
                    }
                }
                Value::Object(_) => warn(format!(
                    "`{key}[{i}]` must be a system name (only `data` entries may be objects)"
                )),
                other => warn(format!(
                    "`{key}[{i}]` must be a system name of 1 to {MAX_NAME} characters, found {}",
                    kind(other)
                )),
            }
        }
    }
    out
}

fn push(out: &mut Declared, layer: Layer, name: &str) {
    let names = out.names.entry(layer).or_default();
    if !names.iter().any(|n| n == name) {
        names.push(name.to_owned());
    }
}

fn layer_list() -> String {
    Layer::ALL
        .iter()
        .map(|l| format!("`{}`", l.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` cut to 64 characters with control characters replaced, for messages.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}
