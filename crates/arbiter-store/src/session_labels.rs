//! Session state a fleet shares: the labels (`@session_label`) an agent's session has
//! gathered and, when policies read them, its call counts, whichever node took the calls, so
//! that a rule such as "nothing may be sent out after untrusted input" or "at most two calls
//! a minute in a session" holds across nodes (see `docs/runtime-context.md`).
//!
//! A label row remembers the decision that added it first, and a call row the decision that
//! made it, to take them back when that decision's record cannot be written. Adding labels to
//! a session renews all of its labels; a session's labels are forgotten once none was added
//! for the idle time the caller gives. Calls are kept for an hour (the longest count), their
//! total for as long as the session is active.

use crate::db::{Db, params};
use crate::{StoreError, validate};

/// Longest owner, session id and label, in bytes.
pub const MAX_PART_BYTES: usize = 256;

/// Labels older than this are deleted whatever their session (the longest idle time).
pub const KEEP_US: i64 = 7 * 86_400 * 1_000_000;

fn part(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > MAX_PART_BYTES {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_PART_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The labels of `owner`'s `session` added or renewed after `since_us`, sorted.
pub(crate) fn get(
    conn: &dyn Db,
    owner: &str,
    session: &str,
    since_us: i64,
) -> Result<Vec<String>, StoreError> {
    part("session owner", owner)?;
    part("session id", session)?;
    let mut out = Vec::new();
    for label in conn
        .prepare_cached(
            "SELECT label FROM session_labels
             WHERE owner = ?1 AND session = ?2 AND at_us > ?3 ORDER BY label",
        )?
        .query_map(params![owner, session, since_us], |row| row.get(0))?
    {
        out.push(label?);
    }
    Ok(out)
}

/// Adds `labels` to `owner`'s `session` for `decision_id` and renews the session's labels.
pub(crate) fn add(
    conn: &dyn Db,
    owner: &str,
    session: &str,
    labels: &[String],
    decision_id: &str,
    now_us: i64,
) -> Result<(), StoreError> {
    part("session owner", owner)?;
    part("session id", session)?;
    validate::decision_id(decision_id)?;
    for label in labels {
        part("session label", label)?;
        conn.prepare_cached(
            "INSERT INTO session_labels (owner, session, label, decision_id, at_us)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (owner, session, label) DO NOTHING",
        )?
        .execute(params![owner, session, label, decision_id, now_us])?;
    }
    conn.prepare_cached(
        "UPDATE session_labels SET at_us = ?3 WHERE owner = ?1 AND session = ?2 AND at_us < ?3",
    )?
    .execute(params![owner, session, now_us])?;
    conn.prepare_cached("DELETE FROM session_labels WHERE at_us <= ?1")?
        .execute(params![now_us.saturating_sub(KEEP_US)])?;
    Ok(())
}

/// The longest window a call count covers.
pub const CALLS_KEPT_US: i64 = 3_600_000_000;

/// What [`calls`] reads: every allowed call of the session after `since_us`, and those of one
/// action on one resource in the last minute and hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: u64,
    pub last_minute: u64,
    pub last_hour: u64,
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The call counts of `owner`'s `session` for `call_key` at `now_us`; a session idle since
/// `since_us` counts nothing.
pub(crate) fn calls(
    conn: &dyn Db,
    owner: &str,
    session: &str,
    call_key: &str,
    since_us: i64,
    now_us: i64,
) -> Result<CallCounts, StoreError> {
    part("session owner", owner)?;
    part("session id", session)?;
    part("call key", call_key)?;
    let calls: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(calls), 0) FROM session_call_totals
             WHERE owner = ?1 AND session = ?2 AND at_us > ?3",
        )?
        .query_row(params![owner, session, since_us], |row| row.get(0))?;
    let (last_minute, last_hour): (i64, i64) = conn
        .prepare_cached(
            "SELECT CAST(COALESCE(SUM(CASE WHEN at_us > ?4 THEN 1 ELSE 0 END), 0) AS BIGINT),
                    CAST(COUNT(*) AS BIGINT)
             FROM session_calls
             WHERE owner = ?1 AND session = ?2 AND call_key = ?3 AND at_us > ?5",
        )?
        .query_row(
            params![
                owner,
                session,
                call_key,
                now_us.saturating_sub(60_000_000),
                now_us.saturating_sub(CALLS_KEPT_US)
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
    Ok(CallCounts {
        calls: count(calls),
        last_minute: count(last_minute),
        last_hour: count(last_hour),
    })
}

/// Counts an allowed call of `owner`'s `session` (of `call_key`) for `decision_id`; a session
/// idle since `since_us` starts counting again.
pub(crate) fn add_call(
    conn: &dyn Db,
    owner: &str,
    session: &str,
    call_key: &str,
    decision_id: &str,
    since_us: i64,
    now_us: i64,
) -> Result<(), StoreError> {
    part("session owner", owner)?;
    part("session id", session)?;
    part("call key", call_key)?;
    validate::decision_id(decision_id)?;
    conn.prepare_cached(
        "INSERT INTO session_calls (owner, session, call_key, decision_id, at_us)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![owner, session, call_key, decision_id, now_us])?;
    conn.prepare_cached(
        "INSERT INTO session_call_totals (owner, session, calls, at_us) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (owner, session) DO UPDATE SET
             calls = CASE WHEN session_call_totals.at_us > ?4
                          THEN session_call_totals.calls + 1 ELSE 1 END,
             at_us = excluded.at_us",
    )?
    .execute(params![owner, session, now_us, since_us])?;
    // What no count covers any more: this session's calls older than an hour, anyone's older
    // than the longest idle time.
    conn.prepare_cached(
        "DELETE FROM session_calls WHERE (owner = ?1 AND session = ?2 AND at_us <= ?3) OR at_us <= ?4",
    )?
    .execute(params![
        owner,
        session,
        now_us.saturating_sub(CALLS_KEPT_US),
        now_us.saturating_sub(KEEP_US)
    ])?;
    conn.prepare_cached("DELETE FROM session_call_totals WHERE at_us <= ?1")?
        .execute(params![now_us.saturating_sub(KEEP_US)])?;
    Ok(())
}

/// Takes back the labels `decision_id` added and the call it made; returns how many rows.
pub(crate) fn forget(conn: &dyn Db, decision_id: &str) -> Result<usize, StoreError> {
    validate::decision_id(decision_id)?;
    let labels = conn
        .prepare_cached("DELETE FROM session_labels WHERE decision_id = ?1")?
        .execute(params![decision_id])?;
    let mut calls = 0;
    for row in conn
        .prepare_cached(
            "DELETE FROM session_calls WHERE decision_id = ?1 RETURNING owner, session",
        )?
        .query_map(params![decision_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
    {
        let (owner, session) = row?;
        calls += 1;
        conn.prepare_cached(
            "UPDATE session_call_totals SET calls = calls - 1
             WHERE owner = ?1 AND session = ?2 AND calls > 0",
        )?
        .execute(params![owner, session])?;
    }
    Ok(labels + calls)
}
