//! Human approvals (schema version 4): asked for by the decision path, approved or denied by
//! a person, used once by the identical request.
//!
//! The decision path's one call is [`lookup`], in a write transaction: it uses an approved,
//! unexpired approval of the request's binding (so two racing retries cannot both use it),
//! reports a denied one, or returns the pending one — creating it when there is none. Approving
//! and denying ([`decide`]) are audited as `approval.approved` and `approval.denied`, with the
//! approver and the reason.

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::json;

use crate::model::{Actor, Approval, ApprovalLookup, ApprovalState, Approvers, NewApproval};
use crate::{StoreError, audit, validate};

const COLUMNS: &str = "id, binding, agent_id, agent_owner, action, resource, request, \
                       policy_version, policies, approvers, state, created_us, expires_us, \
                       decision_id, decided_by, decided_us, reason, used_us, used_by_decision";

/// Longest reason an approver may give, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Unexpired pending approvals one agent may have: past this, a request that would ask for
/// another is refused (an agent varying its arguments cannot fill the registry).
pub const MAX_PENDING_PER_AGENT: i64 = 1_000;

/// How long an approval is kept after it expires (its steps stay in the audit trail and the
/// decision log).
pub const KEEP_EXPIRED_US: i64 = 30 * 86_400 * 1_000_000;

fn from_row(row: &Row<'_>) -> crate::db::Result<Approval> {
    let text = |i: usize| row.get::<_, String>(i);
    let bad = |i: usize, what: &str| crate::db::DbError::Invalid {
        column: i,
        problem: format!("not {what}"),
    };
    Ok(Approval {
        id: text(0)?,
        binding: text(1)?,
        agent_id: text(2)?,
        agent_owner: text(3)?,
        action: text(4)?,
        resource: text(5)?,
        request: serde_json::from_str(&text(6)?).map_err(|_| bad(6, "JSON"))?,
        policy_version: text(7)?,
        policies: serde_json::from_str(&text(8)?).map_err(|_| bad(8, "a list of ids"))?,
        approvers: text(9)?
            .parse::<Approvers>()
            .map_err(|_| bad(9, "an approvers rule"))?,
        state: text(10)?
            .parse::<ApprovalState>()
            .map_err(|_| bad(10, "a state"))?,
        created_us: row.get(11)?,
        expires_us: row.get(12)?,
        decision_id: text(13)?,
        decided_by: row.get(14)?,
        decided_us: row.get(15)?,
        reason: row.get(16)?,
        used_us: row.get(17)?,
        used_by_decision: row.get(18)?,
    })
}

/// The approval `id`, if any.
pub(crate) fn get(conn: &dyn Db, id: &str) -> Result<Option<Approval>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"))?
        .query_row(params![id], from_row)
        .optional()?)
}

/// Approvals, newest first: all, or those in `state`; at most `limit`.
pub(crate) fn list(
    conn: &dyn Db,
    state: Option<ApprovalState>,
    limit: usize,
) -> Result<Vec<Approval>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1)
         ORDER BY created_us DESC, id DESC LIMIT ?2"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![state.map(ApprovalState::as_str), limit], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// What the decision path does with the request `new` describes (see the module
/// documentation). `decision_id` is the decision looking it up.
pub(crate) fn lookup(
    conn: &dyn Db,
    new: &NewApproval,
    now_us: i64,
) -> Result<ApprovalLookup, StoreError> {
    validate::tool_hash("approval binding", &new.binding)?;
    // The latest unexpired approval of this exact request that still means something.
    let current = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM approvals
             WHERE binding = ?1 AND expires_us > ?2 AND state IN ('pending', 'approved', 'denied')
             ORDER BY created_us DESC, id DESC LIMIT 1"
        ))?
        .query_row(params![new.binding, now_us], from_row)
        .optional()?;
    match current {
        Some(a) if a.state == ApprovalState::Approved => {
            conn.prepare_cached(
                "UPDATE approvals SET state = 'used', used_us = ?2, used_by_decision = ?3
                 WHERE id = ?1 AND state = 'approved'",
            )?
            .execute(params![a.id, now_us, new.decision_id])?;
            require(conn, &a.id).map(ApprovalLookup::Used)
        }
        Some(a) if a.state == ApprovalState::Denied => Ok(ApprovalLookup::Denied(a)),
        Some(a) => Ok(ApprovalLookup::Pending(a)),
        None => {
            conn.prepare_cached("DELETE FROM approvals WHERE expires_us < ?1")?
                .execute(params![now_us.saturating_sub(KEEP_EXPIRED_US)])?;
            let pending: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM approvals
                     WHERE agent_id = ?1 AND state = 'pending' AND expires_us > ?2",
                )?
                .query_row(params![new.agent_id, now_us], |row| row.get(0))?;
            if pending >= MAX_PENDING_PER_AGENT {
                return Err(StoreError::state(
                    "approvals of agent",
                    new.agent_id.clone(),
                    format!(
                        "number {pending} pending; no more are asked for until some are decided \
                         or expire"
                    ),
                ));
            }
            conn.prepare_cached(
                "INSERT INTO approvals (id, binding, agent_id, agent_owner, action, resource,
                     request, policy_version, policies, approvers, state, created_us, expires_us,
                     decision_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13)",
            )?
            .execute(params![
                new.id,
                new.binding,
                new.agent_id,
                new.agent_owner,
                new.action,
                new.resource,
                new.request.to_string(),
                new.policy_version,
                json!(new.policies).to_string(),
                new.approvers.as_str(),
                now_us,
                new.expires_us,
                new.decision_id,
            ])?;
            require(conn, &new.id).map(ApprovalLookup::Pending)
        }
    }
}

/// Decided approvals whose step (approved or denied) is not in a decision log yet, oldest
/// first; at most `limit`.
pub(crate) fn steps_to_log(conn: &dyn Db, limit: usize) -> Result<Vec<Approval>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM approvals
         WHERE decided_us IS NOT NULL AND logged_us IS NULL
         ORDER BY decided_us, id LIMIT ?1"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![limit], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// Notes that the step of approval `id` is in a decision log.
pub(crate) fn step_logged(conn: &dyn Db, id: &str, now_us: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE approvals SET logged_us = ?2 WHERE id = ?1 AND logged_us IS NULL")?
        .execute(params![id, now_us])?;
    Ok(())
}

/// Gives back an approval a decision used but could not record (the decision became a deny).
pub(crate) fn unuse(conn: &dyn Db, id: &str, decision_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE approvals SET state = 'approved', used_us = NULL, used_by_decision = NULL
         WHERE id = ?1 AND state = 'used' AND used_by_decision = ?2",
    )?
    .execute(params![id, decision_id])?;
    Ok(())
}

fn require(conn: &dyn Db, id: &str) -> Result<Approval, StoreError> {
    get(conn, id)?.ok_or_else(|| StoreError::not_found("approval", id))
}

/// Approves (`approve`) or denies a pending, unexpired approval as `approver` (a person's
/// name, compared with the agent's owner when the approval says who may approve), for
/// `reason`.
pub(crate) fn decide(
    conn: &dyn Db,
    id: &str,
    approve: bool,
    approver: &str,
    reason: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<Approval, StoreError> {
    if approver.trim().is_empty() || approver.len() > 256 {
        return Err(StoreError::invalid(
            "approver",
            "must be 1 to 256 bytes: the person approving",
        ));
    }
    if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(StoreError::invalid(
            "reason",
            format!("must be 1 to {MAX_REASON_BYTES} bytes: say why"),
        ));
    }
    let a = require(conn, id)?;
    if a.state != ApprovalState::Pending {
        return Err(StoreError::state(
            "approval",
            id,
            format!("is {}, not pending", a.state.as_str()),
        ));
    }
    if a.expires_us <= now_us {
        return Err(StoreError::state("approval", id, "has expired"));
    }
    let is_owner = approver.trim().eq_ignore_ascii_case(a.agent_owner.trim());
    match a.approvers {
        Approvers::Owner if !is_owner => {
            return Err(StoreError::state(
                "approval",
                id,
                format!(
                    "may be decided only by the agent's owner `{}`, not `{approver}`",
                    a.agent_owner
                ),
            ));
        }
        Approvers::NotOwner if is_owner => {
            return Err(StoreError::state(
                "approval",
                id,
                format!(
                    "may not be decided by the agent's owner `{approver}` (the policy asks for \
                     someone else)"
                ),
            ));
        }
        _ => {}
    }
    let state = if approve { "approved" } else { "denied" };
    conn.prepare_cached(
        "UPDATE approvals SET state = ?2, decided_by = ?3, decided_us = ?4, reason = ?5
         WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, state, approver, now_us, reason])?;
    audit::append(
        conn,
        actor,
        now_us,
        if approve {
            "approval.approved"
        } else {
            "approval.denied"
        },
        id,
        &json!({
            "approver": approver,
            "reason": reason,
            "agent_id": a.agent_id,
            "action": a.action,
            "resource": a.resource,
            "binding": a.binding,
            "policy_version": a.policy_version,
        }),
    )?;
    require(conn, id)
}
