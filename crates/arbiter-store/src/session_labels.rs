//! Session labels a fleet shares: the labels (`@session_label`) an agent's session has
//! gathered, whichever node took the calls that added them, so that a rule such as "nothing
//! may be sent out after untrusted input" holds across nodes (see `docs/runtime-context.md`).
//!
//! A label row remembers the decision that added it first, to take it back when that
//! decision's record cannot be written. Adding labels to a session renews all of its labels;
//! a session's labels are forgotten once none was added for the idle time the caller gives.

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

/// Takes back the labels `decision_id` added; returns how many.
pub(crate) fn forget(conn: &dyn Db, decision_id: &str) -> Result<usize, StoreError> {
    validate::decision_id(decision_id)?;
    Ok(conn
        .prepare_cached("DELETE FROM session_labels WHERE decision_id = ?1")?
        .execute(params![decision_id])?)
}
