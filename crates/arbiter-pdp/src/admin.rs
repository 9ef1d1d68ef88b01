//! Administrative operations on the identity store, shared by the CLI (`arbiter agent …`,
//! `arbiter admin token …`) and the admin HTTP API (`/v1/agents`, `/v1/tokens`), so that
//! both enforce the same rules: keys are issued only for active agents, expire (90 days by
//! default), rotate with an overlap window, and are shown exactly once.

use std::time::Duration;

use arbiter_identity::{IssuedSecret, KeyError, SecretKind};
use arbiter_store::{
    Actor, Agent, AgentStatus, AuditEvent, Credential, CredentialKind, Discovered, NewAgent,
    NewCredential, Store, StoreError,
};
use serde_json::{Value, json};

/// How long an agent key lives unless told otherwise.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The longest lifetime a key or token may be given.
pub const MAX_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("cannot generate a secret: {0}")]
    Random(#[from] KeyError),
}

impl AdminError {
    fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            problem: problem.into(),
        }
    }
}

/// A newly issued secret and its stored record. The secret is shown once, never stored.
#[derive(Debug)]
pub struct Issued {
    pub secret: IssuedSecret,
    pub credential: Credential,
}

/// Why text is not a duration (see [`parse_duration`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration; use e.g. `90d`, `12h`, `30m`, `45s`")]
    Empty,
    /// More seconds than fit in 64 bits.
    #[error("duration `{0}` is too large")]
    TooLarge(String),
    /// A unit other than `d`, `h`, `m`, `s`.
    #[error("invalid duration `{text}`: unknown unit `{unit}` (use d, h, m or s)")]
    Unit {
        /// The duration as given.
        text: String,
        /// The unknown unit.
        unit: char,
    },
    /// A unit with no number before it.
    #[error("invalid duration `{0}`: a unit needs a number before it")]
    NoNumber(String),
    /// A number with no unit after it.
    #[error("invalid duration `{0}`: the last number has no unit (d, h, m or s)")]
    NoUnit(String),
}

/// Parses a duration such as `90d`, `12h`, `30m`, `45s` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let too_large = || DurationError::TooLarge(text.to_owned());
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(too_large)?,
            );
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(DurationError::Unit {
                    text: text.to_owned(),
                    unit: c,
                });
            }
        };
        let n = number
            .take()
            .ok_or_else(|| DurationError::NoNumber(text.to_owned()))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(too_large)?;
    }
    if number.is_some() {
        return Err(DurationError::NoUnit(text.to_owned()));
    }
    Ok(Duration::from_secs(total))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn check_ttl(ttl: Duration) -> Result<(), AdminError> {
    if ttl.is_zero() {
        return Err(AdminError::invalid(
            "expires_in",
            "must be longer than zero",
        ));
    }
    if ttl > MAX_TTL {
        return Err(AdminError::invalid("expires_in", "must be at most 5 years"));
    }
    Ok(())
}

/// Registers an agent.
pub fn register_agent(
    store: &dyn Store,
    new: &NewAgent,
    actor: &Actor,
    now_us: i64,
) -> Result<Agent, AdminError> {
    Ok(store.register_agent(new, actor, now_us)?)
}

/// Issues an API key for an active agent, valid for `ttl` (default 90 days).
pub fn issue_key(
    store: &dyn Store,
    agent_id: &str,
    name: &str,
    ttl: Option<Duration>,
    actor: &Actor,
    now_us: i64,
) -> Result<Issued, AdminError> {
    let ttl = ttl.unwrap_or(DEFAULT_KEY_TTL);
    check_ttl(ttl)?;
    let agent = store.agent(agent_id)?.ok_or_else(|| StoreError::NotFound {
        what: "agent",
        id: agent_id.to_owned(),
    })?;
    if agent.status != AgentStatus::Active {
        return Err(AdminError::invalid(
            "agent",
            format!(
                "agent `{agent_id}` is {}; keys are issued only to active agents",
                agent.status.as_str()
            ),
        ));
    }
    let secret = arbiter_identity::issue(SecretKind::AgentKey)?;
    let credential = store.insert_credential(
        &NewCredential {
            id: secret.credential_id.clone(),
            kind: CredentialKind::AgentKey,
            agent_id: Some(agent_id.to_owned()),
            name: name.to_owned(),
            role: None,
            hash: secret.hash.clone(),
            expires_at_us: Some(now_us.saturating_add(micros(ttl))),
        },
        actor,
        now_us,
    )?;
    Ok(Issued { secret, credential })
}

/// Rotates an agent's key: a new key is issued and the old one keeps working for
/// `overlap` (then expires). Returns the new key and the old key's updated record.
pub fn rotate_key(
    store: &dyn Store,
    agent_id: &str,
    key_id: &str,
    overlap: Duration,
    ttl: Option<Duration>,
    actor: &Actor,
    now_us: i64,
) -> Result<(Issued, Credential), AdminError> {
    let ttl = ttl.unwrap_or(DEFAULT_KEY_TTL);
    check_ttl(ttl)?;
    if overlap > Duration::from_secs(30 * 86_400) {
        return Err(AdminError::invalid("overlap", "must be at most 30 days"));
    }
    let old = owned_key(store, agent_id, key_id)?;
    let secret = arbiter_identity::issue(SecretKind::AgentKey)?;
    let (old, credential) = store.rotate_credential(
        &old.id,
        &NewCredential {
            id: secret.credential_id.clone(),
            kind: CredentialKind::AgentKey,
            agent_id: Some(agent_id.to_owned()),
            name: old.name.clone(),
            role: None,
            hash: secret.hash.clone(),
            expires_at_us: Some(now_us.saturating_add(micros(ttl))),
        },
        now_us.saturating_add(micros(overlap)),
        actor,
        now_us,
    )?;
    Ok((Issued { secret, credential }, old))
}

/// Revokes one key of an agent, effective on the next decision.
pub fn revoke_key(
    store: &dyn Store,
    agent_id: &str,
    key_id: &str,
    reason: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<Credential, AdminError> {
    let key = owned_key(store, agent_id, key_id)?;
    Ok(store.revoke_credential(&key.id, reason, actor, now_us)?)
}

/// The key `key_id`, checked to belong to `agent_id`.
fn owned_key(store: &dyn Store, agent_id: &str, key_id: &str) -> Result<Credential, AdminError> {
    match store.credential(key_id)? {
        Some(c)
            if c.kind == CredentialKind::AgentKey && c.agent_id.as_deref() == Some(agent_id) =>
        {
            Ok(c)
        }
        _ => Err(StoreError::NotFound {
            what: "key",
            id: format!("{key_id}` of agent `{agent_id}"),
        }
        .into()),
    }
}

/// Changes an agent's status; retiring it also revokes every key it has. Returns the agent
/// and the number of keys revoked.
pub fn set_status(
    store: &dyn Store,
    agent_id: &str,
    status: AgentStatus,
    actor: &Actor,
    now_us: i64,
) -> Result<(Agent, usize), AdminError> {
    let revoked = if status == AgentStatus::Retired {
        store.agent(agent_id)?.ok_or_else(|| StoreError::NotFound {
            what: "agent",
            id: agent_id.to_owned(),
        })?;
        store.revoke_agent_credentials(agent_id, "agent retired", actor, now_us)?
    } else {
        0
    };
    Ok((
        store.set_agent_status(agent_id, status, actor, now_us)?,
        revoked,
    ))
}

/// Every admin and PEP token (metadata only), revoked ones included.
/// The person an admin token was issued to (its name): who an approval or a governed policy
/// change names. A token whose record is gone is named by its id.
pub fn token_holder(
    store: &dyn Store,
    caller: &crate::identity::AdminCaller,
) -> Result<String, arbiter_store::StoreError> {
    Ok(store
        .credential(&caller.credential_id)?
        .map(|c| c.name)
        .unwrap_or_else(|| caller.credential_id.clone()))
}

pub fn list_tokens(store: &dyn Store) -> Result<Vec<Credential>, AdminError> {
    let mut all = Vec::new();
    for kind in [CredentialKind::AdminToken, CredentialKind::PepToken] {
        all.extend(store.list_credentials(&arbiter_store::CredentialFilter {
            kind: Some(kind),
            agent_id: None,
            include_revoked: true,
        })?);
    }
    Ok(all)
}

/// What kind of operator token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// An admin token with a role (`administrator` or `auditor`).
    Admin { role: String },
    /// A token for a third-party enforcement point that asserts subjects.
    Pep,
}

/// Creates an admin or PEP token (no expiry unless `ttl` is given).
pub fn create_token(
    store: &dyn Store,
    spec: &TokenSpec,
    name: &str,
    ttl: Option<Duration>,
    actor: &Actor,
    now_us: i64,
) -> Result<Issued, AdminError> {
    if let Some(ttl) = ttl {
        check_ttl(ttl)?;
    }
    let (kind, secret_kind, role) = match spec {
        TokenSpec::Admin { role } => {
            if !arbiter_store::ADMIN_ROLES.contains(&role.as_str()) {
                return Err(AdminError::invalid(
                    "role",
                    format!("`{role}` is not a role; use `administrator` or `auditor`"),
                ));
            }
            (
                CredentialKind::AdminToken,
                SecretKind::AdminToken,
                Some(role.clone()),
            )
        }
        TokenSpec::Pep => (CredentialKind::PepToken, SecretKind::PepToken, None),
    };
    let secret = arbiter_identity::issue(secret_kind)?;
    let credential = store.insert_credential(
        &NewCredential {
            id: secret.credential_id.clone(),
            kind,
            agent_id: None,
            name: name.to_owned(),
            role,
            hash: secret.hash.clone(),
            expires_at_us: ttl.map(|t| now_us.saturating_add(micros(t))),
        },
        actor,
        now_us,
    )?;
    Ok(Issued { secret, credential })
}

/// Registers a discovered identity as an agent (a new one, or an existing agent id) and
/// marks it adopted.
pub fn adopt(
    store: &dyn Store,
    discovered_id: i64,
    new: &NewAgent,
    actor: &Actor,
    now_us: i64,
) -> Result<Agent, AdminError> {
    let found = store
        .discovered(discovered_id)?
        .ok_or_else(|| StoreError::NotFound {
            what: "discovered identity",
            id: discovered_id.to_string(),
        })?;
    if let Some(agent) = &found.adopted_as {
        return Err(AdminError::invalid(
            "discovered",
            format!("identity {discovered_id} was already adopted as `{agent}`"),
        ));
    }
    let agent = match store.agent(&new.id)? {
        Some(existing) => existing,
        None => store.register_agent(new, actor, now_us)?,
    };
    store.mark_adopted(discovered_id, &agent.id, actor, now_us)?;
    Ok(agent)
}

fn time(us: i64) -> Value {
    Value::String(arbiter_log::format_rfc3339_us(us))
}

fn opt_time(us: Option<i64>) -> Value {
    us.map_or(Value::Null, time)
}

/// An agent as the admin API and `--json` output show it.
pub fn agent_json(a: &Agent) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "owner": a.owner,
        "purpose": a.purpose,
        "environment": a.environment.as_str(),
        "status": a.status.as_str(),
        "attributes": a.attributes,
        "created": time(a.created_us),
        "updated": time(a.updated_us),
        "last_seen": opt_time(a.last_seen_us),
    })
}

/// The state of a credential at `now`: `active`, `expiring` (rotated, in its overlap
/// window), `expired` or `revoked`.
pub fn credential_state(c: &Credential, now_us: i64) -> &'static str {
    if c.revoked_at_us.is_some() {
        "revoked"
    } else if c.expires_at_us.is_some_and(|e| now_us >= e) {
        "expired"
    } else if c.replaced_by.is_some() {
        "expiring"
    } else {
        "active"
    }
}

/// A credential's metadata (never its hash).
pub fn credential_json(c: &Credential, now_us: i64) -> Value {
    json!({
        "id": c.id,
        "kind": c.kind.as_str(),
        "agent_id": c.agent_id,
        "name": c.name,
        "role": c.role,
        "state": credential_state(c, now_us),
        "created": time(c.created_us),
        "expires": opt_time(c.expires_at_us),
        "revoked": opt_time(c.revoked_at_us),
        "revoked_reason": c.revoked_reason,
        "last_used": opt_time(c.last_used_us),
        "replaced_by": c.replaced_by,
    })
}

/// A discovered identity.
pub fn discovered_json(d: &Discovered) -> Value {
    json!({
        "id": d.id,
        "kind": d.kind.as_str(),
        "key": d.key,
        "shape": d.shape,
        "first_seen": time(d.first_seen_us),
        "last_seen": time(d.last_seen_us),
        "count": d.count,
        "sources": d.sources,
        "enforcement_points": d.enforcement_points,
        "adopted_as": d.adopted_as,
    })
}

/// An audit event.
pub fn audit_json(e: &AuditEvent) -> Value {
    json!({
        "seq": e.seq,
        "at": time(e.at_us),
        "actor": {"kind": e.actor_kind, "id": e.actor_id},
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
        "hash": e.hash,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        for bad in ["", "h", "10", "1x", "99999999999999999999d", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
