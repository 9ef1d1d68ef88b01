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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
