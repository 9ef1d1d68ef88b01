//! Credentials: agent keys, admin tokens and PEP tokens, stored as the
//! caller's hash of the secret under a public lookup id.
//!
//! The store never sees a plaintext secret, and audit events carry the
//! credential's id and metadata, never its hash.

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::{Value, json};

use crate::model::{
    Actor, AgentStatus, Credential, CredentialFilter, CredentialKind, NewCredential,
};
use crate::{StoreError, agents, audit, validate};

const COLUMNS: &str = "id, kind, agent_id, name, role, hash, created_us, expires_at_us, \
                       revoked_at_us, revoked_reason, last_used_us, replaced_by";

fn from_row(row: &Row<'_>) -> crate::db::Result<(String, Credential)> {
    let kind: String = row.get(1)?;
    Ok((
        kind,
        Credential {
            id: row.get(0)?,
            // Replaced by the parsed kind in `finish`.
            kind: CredentialKind::AgentKey,
            agent_id: row.get(2)?,
            name: row.get(3)?,
            role: row.get(4)?,
            hash: row.get(5)?,
            created_us: row.get(6)?,
            expires_at_us: row.get(7)?,
            revoked_at_us: row.get(8)?,
            revoked_reason: row.get(9)?,
            last_used_us: row.get(10)?,
            replaced_by: row.get(11)?,
        },
    ))
}

fn finish((kind, mut credential): (String, Credential)) -> Result<Credential, StoreError> {
    credential.kind = kind.parse().map_err(|e| {
        StoreError::Corrupt(format!(
            "credential `{}` has an invalid kind: {e}",
            credential.id
        ))
    })?;
    Ok(credential)
}

/// The verb family of a kind in audit actions: `key.*` or `token.*`.
fn family(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::AgentKey => "key",
        CredentialKind::AdminToken | CredentialKind::PepToken => "token",
    }
}

/// The credential `id`, if stored.
pub(crate) fn get(conn: &dyn Db, id: &str) -> Result<Option<Credential>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM credentials WHERE id = ?1"))?
        .query_row(params![id], from_row)
        .optional()?
        .map(finish)
        .transpose()
}

fn require(conn: &dyn Db, id: &str) -> Result<Credential, StoreError> {
    get(conn, id)?.ok_or_else(|| StoreError::not_found("credential", id))
}

/// Credentials matching `filter`, oldest first.
pub(crate) fn list(
    conn: &dyn Db,
    filter: &CredentialFilter,
) -> Result<Vec<Credential>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM credentials
         WHERE (CAST(?1 AS TEXT) IS NULL OR kind = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR agent_id = ?2)
           AND (?3 OR revoked_at_us IS NULL)
         ORDER BY created_us, id"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.kind.map(CredentialKind::as_str),
            filter.agent_id,
            filter.include_revoked,
        ],
        from_row,
    )?;
    let mut out = Vec::new();
    for row in rows {
        out.push(finish(row?)?);
    }
    Ok(out)
}

/// Validates `new` against the input rules and the stored state, then
/// inserts it. No audit event: the callers write their own.
fn insert_row(conn: &dyn Db, new: &NewCredential, now_us: i64) -> Result<Credential, StoreError> {
    validate::new_credential(new, now_us)?;
    if let Some(agent_id) = &new.agent_id {
        let agent = agents::require(conn, agent_id)?;
        if agent.status == AgentStatus::Retired {
            return Err(StoreError::state(
                "agent",
                agent_id,
                "is retired and cannot be given new credentials",
            ));
        }
    }
    if get(conn, &new.id)?.is_some() {
        return Err(StoreError::Conflict {
            what: "credential",
            id: new.id.clone(),
        });
    }
    conn.prepare_cached(&format!(
        "INSERT INTO credentials ({COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, NULL, NULL)"
    ))?
    .execute(params![
        new.id,
        new.kind.as_str(),
        new.agent_id,
        new.name,
        new.role,
        new.hash,
        now_us,
        new.expires_at_us,
    ])?;
    require(conn, &new.id)
}

/// The audit detail describing a credential: metadata only, no hash.
fn describe(credential: &Credential) -> Value {
    json!({
        "kind": credential.kind,
        "agent_id": credential.agent_id,
        "name": credential.name,
        "role": credential.role,
        "expires_at_us": credential.expires_at_us,
    })
}

/// Stores a new credential.
pub(crate) fn insert(
    conn: &dyn Db,
    new: &NewCredential,
    actor: &Actor,
    now_us: i64,
) -> Result<Credential, StoreError> {
    let credential = insert_row(conn, new, now_us)?;
    let action = match credential.kind {
        CredentialKind::AgentKey => "key.issue",
        CredentialKind::AdminToken | CredentialKind::PepToken => "token.create",
    };
    audit::append(
        conn,
        actor,
        now_us,
        action,
        &credential.id,
        &describe(&credential),
    )?;
    Ok(credential)
}

/// Replaces `old_id` with `new`: the new credential is stored, the old one
/// keeps working until `min(its expiry, old_expires_at_us)` and points at
/// its replacement. Kind, agent and role cannot change in a rotation.
pub(crate) fn rotate(
    conn: &dyn Db,
    old_id: &str,
    new: &NewCredential,
    old_expires_at_us: i64,
    actor: &Actor,
    now_us: i64,
) -> Result<(Credential, Credential), StoreError> {
    let old = require(conn, old_id)?;
    if old.revoked_at_us.is_some() {
        return Err(StoreError::state(
            "credential",
            old_id,
            "is revoked and cannot be rotated",
        ));
    }
    if let Some(replacement) = &old.replaced_by {
        return Err(StoreError::state(
            "credential",
            old_id,
            format!("was already rotated (replaced by `{replacement}`)"),
        ));
    }
    if new.kind != old.kind {
        return Err(StoreError::invalid(
            "credential kind",
            format!("a {} can only be rotated to another {}", old.kind, old.kind),
        ));
    }
    if new.agent_id != old.agent_id {
        return Err(StoreError::invalid(
            "agent id",
            "a rotated key must belong to the same agent",
        ));
    }
    if new.role != old.role {
        return Err(StoreError::invalid(
            "role",
            "rotation keeps the role; create a new token to change it",
        ));
    }
    let created = insert_row(conn, new, now_us)?;
    let old_expiry = old.expires_at_us.map_or(old_expires_at_us, |existing| {
        existing.min(old_expires_at_us)
    });
    conn.prepare_cached(
        "UPDATE credentials SET expires_at_us = ?2, replaced_by = ?3 WHERE id = ?1",
    )?
    .execute(params![old_id, old_expiry, created.id])?;
    let mut detail = describe(&created);
    if let Value::Object(map) = &mut detail {
        map.insert("new_id".to_owned(), json!(created.id));
        map.insert("old_expires_at_us".to_owned(), json!(old_expiry));
    }
    audit::append(
        conn,
        actor,
        now_us,
        &format!("{}.rotate", family(old.kind)),
        old_id,
        &detail,
    )?;
    Ok((require(conn, old_id)?, created))
}

/// Revokes one credential.
pub(crate) fn revoke(
    conn: &dyn Db,
    id: &str,
    reason: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<Credential, StoreError> {
    validate::reason(reason)?;
    let credential = require(conn, id)?;
    if credential.revoked_at_us.is_some() {
        return Err(StoreError::state("credential", id, "is already revoked"));
    }
    revoke_row(conn, &credential, reason, actor, now_us, false)?;
    require(conn, id)
}

fn revoke_row(
    conn: &dyn Db,
    credential: &Credential,
    reason: &str,
    actor: &Actor,
    now_us: i64,
    bulk: bool,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE credentials SET revoked_at_us = ?2, revoked_reason = ?3
         WHERE id = ?1 AND revoked_at_us IS NULL",
    )?
    .execute(params![credential.id, now_us, reason])?;
    let mut detail = describe(credential);
    if let Value::Object(map) = &mut detail {
        map.insert("reason".to_owned(), json!(reason));
        if bulk {
            map.insert("all_of_agent".to_owned(), json!(true));
        }
    }
    audit::append(
        conn,
        actor,
        now_us,
        &format!("{}.revoke", family(credential.kind)),
        &credential.id,
        &detail,
    )?;
    Ok(())
}

/// Revokes every unrevoked credential of `agent_id`, one audit event each.
pub(crate) fn revoke_for_agent(
    conn: &dyn Db,
    agent_id: &str,
    reason: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<usize, StoreError> {
    validate::reason(reason)?;
    agents::require(conn, agent_id)?;
    let live = list(
        conn,
        &CredentialFilter {
            kind: None,
            agent_id: Some(agent_id.to_owned()),
            include_revoked: false,
        },
    )?;
    for credential in &live {
        revoke_row(conn, credential, reason, actor, now_us, true)?;
    }
    Ok(live.len())
}

/// Raises `last_used_us` to each given time (never lowers it); unknown ids
/// are skipped. Returns how many rows changed.
pub(crate) fn touch(conn: &dyn Db, used: &[(String, i64)]) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE credentials SET last_used_us = ?2
         WHERE id = ?1 AND (last_used_us IS NULL OR last_used_us < ?2)",
    )?;
    let mut changed = 0;
    for (id, at_us) in used {
        changed += stmt.execute(params![id, at_us])?;
    }
    Ok(changed)
}
