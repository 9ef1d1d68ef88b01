//! Input validation shared by every backend.
//!
//! Everything that reaches SQL has passed through here first, so the
//! database only ever holds values the rest of Arbiter can rely on: slugs
//! that are safe in policies and URLs, single-line labels, bounded sizes.

use serde_json::{Map, Value};

use crate::StoreError;
use crate::model::{ADMIN_ROLES, Actor, AgentPatch, CredentialKind, NewAgent, NewCredential};

/// Longest agent id (the slug pattern allows 1 + 62 characters).
pub const MAX_AGENT_ID_LEN: usize = 63;
/// Longest name, owner or credential label.
pub const MAX_LABEL_LEN: usize = 200;
/// Longest agent purpose.
pub const MAX_PURPOSE_LEN: usize = 2000;
/// Longest credential id.
pub const MAX_CREDENTIAL_ID_LEN: usize = 128;
/// Longest credential hash text.
pub const MAX_HASH_LEN: usize = 512;
/// Longest revocation reason.
pub const MAX_REASON_LEN: usize = 500;
/// Largest attribute map, as compact JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
/// Longest MCP server name or tool name of a tool pin.
pub const MAX_TOOL_NAME_LEN: usize = 256;
/// Largest MCP tool definition a pin stores, as JSON text.
pub const MAX_TOOL_DEFINITION_BYTES: usize = 1024 * 1024;

/// Checks an agent id against `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub fn agent_id(id: &str) -> Result<(), StoreError> {
    let invalid = |problem: String| {
        Err(StoreError::Invalid {
            field: "agent id",
            problem,
        })
    };
    if id.is_empty() {
        return invalid("must not be empty".to_owned());
    }
    if id.len() > MAX_AGENT_ID_LEN {
        return invalid(format!(
            "`{}…` is longer than {MAX_AGENT_ID_LEN} characters",
            truncate(id, 20)
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return invalid(format!(
            "`{id}` must start with a lowercase letter or a digit"
        ));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    if let Some(bad) = id.chars().find(|&c| !allowed(c)) {
        return invalid(format!(
            "`{id}` contains `{}`; use lowercase letters, digits, `.`, `_` and `-`",
            bad.escape_default()
        ));
    }
    Ok(())
}

/// Checks a credential lookup id: 1–128 characters of `A-Z a-z 0-9 _ . : -`.
pub fn credential_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::invalid("credential id", "must not be empty"));
    }
    if id.len() > MAX_CREDENTIAL_ID_LEN {
        return Err(StoreError::invalid(
            "credential id",
            format!("longer than {MAX_CREDENTIAL_ID_LEN} characters"),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(StoreError::invalid(
            "credential id",
            format!(
                "`{}` contains `{}`; use letters, digits, `_`, `.`, `:` and `-`",
                truncate(id, 40),
                bad.escape_default()
            ),
        ));
    }
    Ok(())
}

/// A single-line text: no control characters, at most `max` bytes, and not
/// blank when `required`.
pub fn label(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), StoreError> {
    if required && value.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(StoreError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Free text that may span lines (tabs and newlines allowed).
fn text(field: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.len() > max {
        return Err(StoreError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// An attribute map, bounded in size; returns its JSON text.
pub fn attributes(map: &Map<String, Value>) -> Result<String, StoreError> {
    let json = serde_json::to_string(map)
        .map_err(|e| StoreError::invalid("attributes", format!("cannot encode as JSON: {e}")))?;
    if json.len() > MAX_ATTRIBUTES_BYTES {
        return Err(StoreError::invalid(
            "attributes",
            format!(
                "{} bytes as JSON; the limit is {MAX_ATTRIBUTES_BYTES}",
                json.len()
            ),
        ));
    }
    Ok(json)
}

/// An actor: a known kind and a non-empty id.
pub fn actor(actor: &Actor) -> Result<(), StoreError> {
    if !Actor::KINDS.contains(&actor.kind.as_str()) {
        return Err(StoreError::invalid(
            "actor kind",
            format!(
                "`{}` is not one of {}",
                truncate(&actor.kind, 40),
                Actor::KINDS.join(", ")
            ),
        ));
    }
    label("actor id", &actor.id, MAX_LABEL_LEN, true)
}

/// A new agent's fields.
pub fn new_agent(new: &NewAgent) -> Result<String, StoreError> {
    agent_id(&new.id)?;
    label("name", &new.name, MAX_LABEL_LEN, true)?;
    label("owner", &new.owner, MAX_LABEL_LEN, true)?;
    text("purpose", &new.purpose, MAX_PURPOSE_LEN)?;
    attributes(&new.attributes)
}

/// The set fields of a patch.
pub fn agent_patch(patch: &AgentPatch) -> Result<(), StoreError> {
    if patch.is_empty() {
        return Err(StoreError::invalid("agent update", "no field to change"));
    }
    if let Some(name) = &patch.name {
        label("name", name, MAX_LABEL_LEN, true)?;
    }
    if let Some(owner) = &patch.owner {
        label("owner", owner, MAX_LABEL_LEN, true)?;
    }
    if let Some(purpose) = &patch.purpose {
        text("purpose", purpose, MAX_PURPOSE_LEN)?;
    }
    if let Some(attrs) = &patch.attributes {
        attributes(attrs)?;
    }
    Ok(())
}

/// A new credential's fields, independent of what is already stored.
pub fn new_credential(new: &NewCredential, now_us: i64) -> Result<(), StoreError> {
    credential_id(&new.id)?;
    label("credential name", &new.name, MAX_LABEL_LEN, false)?;
    label("credential hash", &new.hash, MAX_HASH_LEN, true)?;
    if new.hash.contains(char::is_whitespace) {
        return Err(StoreError::invalid(
            "credential hash",
            "must not contain whitespace",
        ));
    }
    match new.kind {
        CredentialKind::AgentKey => match &new.agent_id {
            Some(agent) => agent_id(agent)?,
            None => {
                return Err(StoreError::invalid(
                    "agent id",
                    "an agent key must name the agent it belongs to",
                ));
            }
        },
        CredentialKind::AdminToken | CredentialKind::PepToken => {
            if new.agent_id.is_some() {
                return Err(StoreError::invalid(
                    "agent id",
                    format!("a {} does not belong to an agent", new.kind),
                ));
            }
        }
    }
    match (new.kind, &new.role) {
        (CredentialKind::AdminToken, Some(role)) => {
            if !ADMIN_ROLES.contains(&role.as_str()) {
                return Err(StoreError::invalid(
                    "role",
                    format!(
                        "`{}` is not one of {}",
                        truncate(role, 40),
                        ADMIN_ROLES.join(", ")
                    ),
                ));
            }
        }
        (CredentialKind::AdminToken, None) => {
            return Err(StoreError::invalid(
                "role",
                format!("an admin token needs a role: {}", ADMIN_ROLES.join(" or ")),
            ));
        }
        (CredentialKind::AgentKey | CredentialKind::PepToken, Some(_)) => {
            return Err(StoreError::invalid(
                "role",
                format!("only admin tokens have a role, not a {}", new.kind),
            ));
        }
        (CredentialKind::AgentKey | CredentialKind::PepToken, None) => {}
    }
    if let Some(expires) = new.expires_at_us
        && expires <= now_us
    {
        return Err(StoreError::invalid("expiry", "must be in the future"));
    }
    Ok(())
}

/// A revocation reason.
pub fn reason(reason: &str) -> Result<(), StoreError> {
    label("reason", reason, MAX_REASON_LEN, false)
}

/// An MCP server name of a tool pin: not empty, at most
/// [`MAX_TOOL_NAME_LEN`] bytes, no control characters.
pub fn tool_server(server: &str) -> Result<(), StoreError> {
    tool_name("MCP server name", server)
}

/// An MCP tool name of a tool pin: not empty, at most [`MAX_TOOL_NAME_LEN`]
/// bytes, no control characters.
pub fn tool(tool: &str) -> Result<(), StoreError> {
    tool_name("tool name", tool)
}

fn tool_name(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TOOL_NAME_LEN {
        return Err(StoreError::invalid(
            field,
            format!(
                "`{}…` is longer than {MAX_TOOL_NAME_LEN} bytes",
                truncate(value, 40)
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!(
                "`{}` must not contain control characters",
                truncate(value, 40).escape_default()
            ),
        ));
    }
    Ok(())
}

/// A tool definition hash: `sha256:` followed by 64 lowercase hex digits.
/// `field` names the input (`tool hash`, `expected hash`).
pub fn tool_hash(field: &'static str, hash: &str) -> Result<(), StoreError> {
    let well_formed = hash.len() == 71
        && hash.strip_prefix("sha256:").is_some_and(|hex| {
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if well_formed {
        return Ok(());
    }
    Err(StoreError::invalid(
        field,
        format!(
            "`{}` is not `sha256:` followed by 64 lowercase hex digits",
            truncate(hash, 80).escape_default()
        ),
    ))
}

/// A tool definition: JSON text of at most [`MAX_TOOL_DEFINITION_BYTES`].
pub fn tool_definition(definition: &str) -> Result<(), StoreError> {
    if definition.len() > MAX_TOOL_DEFINITION_BYTES {
        return Err(StoreError::invalid(
            "tool definition",
            format!(
                "{} bytes; the limit is {MAX_TOOL_DEFINITION_BYTES}",
                definition.len()
            ),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(definition)
        .map(drop)
        .map_err(|e| StoreError::invalid("tool definition", format!("not valid JSON: {e}")))
}

/// The first `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A decision id a charge is made for: 1 to 64 visible ASCII characters.
pub fn decision_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::invalid(
            "decision id",
            "must be 1 to 64 visible ASCII characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_accepts_the_documented_pattern() {
        for ok in ["a", "0", "support-bot", "a.b_c-d", &"x".repeat(63)] {
            assert!(agent_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a b",
            "a/b",
            "bot!",
            &"x".repeat(64),
            "é",
        ] {
            assert!(agent_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tool_hash_is_sha256_and_64_lowercase_hex() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert!(tool_hash("tool hash", &good).is_ok());
        for bad in [
            String::new(),
            "sha256:".to_owned(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha512:{}", "a".repeat(64)),
            format!("SHA256:{}", "a".repeat(64)),
            format!("sha256:{}g", "a".repeat(63)),
            format!("sha256:{}é", "a".repeat(62)),
        ] {
            assert!(tool_hash("tool hash", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
