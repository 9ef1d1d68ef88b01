//! Sliding-window counters every node agrees on: the rate limits and budgets of policies
//! (`@limit`, `@budget`) when the store is shared by a fleet.
//!
//! A counter is the rows of one key within its window. [`charge`] forgets what has aged out,
//! sums what is left and adds the charge only if the sum stays within the maximum, all in
//! one transaction that writers of the same key take in turn (on PostgreSQL an advisory lock
//! per key, so different agents do not wait for each other). A decision whose record cannot
//! be written gives its charges back ([`uncharge`]). Rows older than [`KEEP_US`] go whatever
//! their key, so counters of agents that stopped calling do not stay.

use crate::db::{Db, params};
use crate::model::{ChargeOutcome, NewCharge};
use crate::{StoreError, validate};

/// The longest window a counter may have (a policy's `@limit` or `@budget` window is at most
/// seven days); charges older than this are deleted.
pub const KEEP_US: i64 = 7 * 86_400 * 1_000_000;

/// Longest counter key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

fn check(c: &NewCharge<'_>) -> Result<(), StoreError> {
    if c.key.is_empty() || c.key.len() > MAX_KEY_BYTES {
        return Err(StoreError::invalid(
            "charge key",
            format!("must be 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    if c.amount < 0 || c.max < 0 {
        return Err(StoreError::invalid("charge", "amounts cannot be negative"));
    }
    if !(1..=KEEP_US).contains(&c.window_us) {
        return Err(StoreError::invalid(
            "charge window",
            "must be between 1 µs and 7 days",
        ));
    }
    validate::decision_id(c.decision_id)
}

/// Charges `c` unless the window would pass its maximum.
pub(crate) fn charge(
    conn: &dyn Db,
    c: &NewCharge<'_>,
    now_us: i64,
) -> Result<ChargeOutcome, StoreError> {
    check(c)?;
    let since = now_us.saturating_sub(c.window_us);
    conn.prepare_cached("DELETE FROM charges WHERE (key = ?1 AND at_us <= ?2) OR at_us <= ?3")?
        .execute(params![c.key, since, now_us.saturating_sub(KEEP_US)])?;
    let spent: i64 = conn
        .prepare_cached(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM charges WHERE key = ?1",
        )?
        .query_row(params![c.key], |row| row.get(0))?;
    if spent.saturating_add(c.amount) <= c.max {
        conn.prepare_cached(
            "INSERT INTO charges (key, at_us, amount, decision_id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![c.key, now_us, c.amount, c.decision_id])?;
        return Ok(ChargeOutcome::Charged);
    }
    // When enough of the window's charges have aged out for this one.
    let frees_in_us = if c.amount <= c.max {
        let need = spent.saturating_add(c.amount).saturating_sub(c.max);
        let mut freed = 0_i64;
        let mut when = None;
        let mut rows = conn.prepare_cached(
            "SELECT at_us, amount FROM charges WHERE key = ?1 ORDER BY at_us, seq",
        )?;
        for row in rows.query_map(params![c.key], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })? {
            let (at, amount) = row?;
            freed = freed.saturating_add(amount);
            if freed >= need {
                when = Some(at.saturating_add(c.window_us).saturating_sub(now_us));
                break;
            }
        }
        when
    } else {
        None
    };
    Ok(ChargeOutcome::Refused { spent, frees_in_us })
}

/// Takes back the charges of `decision_id`; returns how many.
pub(crate) fn uncharge(conn: &dyn Db, decision_id: &str) -> Result<usize, StoreError> {
    validate::decision_id(decision_id)?;
    Ok(conn
        .prepare_cached("DELETE FROM charges WHERE decision_id = ?1")?
        .execute(params![decision_id])?)
}
