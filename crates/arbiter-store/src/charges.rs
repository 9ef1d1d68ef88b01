//! Sliding-window counters every node agrees on: the rate limits and budgets of policies
//! (`@limit`, `@budget`) when the store is shared by a fleet.
//!
//! A counter is the rows of one key in `charges`, and their sum in `charge_totals`, kept
//! together. [`charge`] deletes the key's rows that have aged out of the window (taking them off
//! the total), reads the total (one row, whatever the limit) and adds the charge only if the
//! total stays within the maximum, all in one transaction that charges to the same key take in
//! turn (on PostgreSQL an advisory lock per key, so different agents do not wait for each
//! other). Totals only ever change by what a transaction itself inserted or deleted, so they
//! stay exact whatever runs concurrently. A decision whose record cannot be written gives its
//! charges back ([`uncharge`]). One charge in [`SWEEP_ONE_IN`] also deletes rows older than
//! [`KEEP_US`] of any key, so counters of agents that stopped calling do not stay.

use std::collections::BTreeMap;

use crate::db::{Db, params};
use crate::model::{ChargeOutcome, NewCharge};
use crate::{StoreError, validate};

/// The longest window a counter may have (a policy's `@limit` or `@budget` window is at most
/// seven days); charges older than this are deleted.
pub const KEEP_US: i64 = 7 * 86_400 * 1_000_000;

/// Longest counter key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// How many charges, on average, for one sweep of old rows.
pub const SWEEP_ONE_IN: u64 = 64;

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

/// Deletes the rows `sql` returns as `(key, amount)` and takes them off their keys' totals;
/// returns how many.
fn delete_rows(
    conn: &dyn Db,
    sql: &str,
    params: &[crate::db::Val<'_>],
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    let mut gone: BTreeMap<String, i64> = BTreeMap::new();
    for row in conn.prepare_cached(sql)?.query_map(params, |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })? {
        let (key, amount) = row?;
        deleted += 1;
        let sum = gone.entry(key).or_default();
        *sum = sum.saturating_add(amount);
    }
    for (key, amount) in gone {
        conn.prepare_cached(
            "UPDATE charge_totals SET total = CASE WHEN total > ?2 THEN total - ?2 ELSE 0 END
             WHERE key = ?1",
        )?
        .execute(params![key, amount])?;
    }
    Ok(deleted)
}

/// Charges `c` unless the window would pass its maximum.
pub(crate) fn charge(
    conn: &dyn Db,
    c: &NewCharge<'_>,
    now_us: i64,
) -> Result<ChargeOutcome, StoreError> {
    check(c)?;
    let since = now_us.saturating_sub(c.window_us);
    delete_rows(
        conn,
        "DELETE FROM charges WHERE key = ?1 AND at_us <= ?2 RETURNING key, amount",
        params![c.key, since],
    )?;
    if sweeps(c.decision_id) {
        delete_rows(
            conn,
            "DELETE FROM charges WHERE at_us <= ?1 RETURNING key, amount",
            params![now_us.saturating_sub(KEEP_US)],
        )?;
    }
    let spent: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(total), 0) FROM charge_totals WHERE key = ?1")?
        .query_row(params![c.key], |row| row.get(0))?;
    if spent.saturating_add(c.amount) <= c.max {
        conn.prepare_cached(
            "INSERT INTO charges (key, at_us, amount, decision_id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![c.key, now_us, c.amount, c.decision_id])?;
        conn.prepare_cached(
            "INSERT INTO charge_totals (key, total) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET total = charge_totals.total + excluded.total",
        )?
        .execute(params![c.key, c.amount])?;
        return Ok(ChargeOutcome::Charged);
    }
    // When enough of the window's charges have aged out for this one: read oldest first, only
    // as far as needed.
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

/// Whether the charge of `decision_id` also sweeps old rows (one in [`SWEEP_ONE_IN`]).
fn sweeps(decision_id: &str) -> bool {
    let h = decision_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h.is_multiple_of(SWEEP_ONE_IN)
}

/// Takes back the charges of `decision_id`; returns how many.
pub(crate) fn uncharge(conn: &dyn Db, decision_id: &str) -> Result<usize, StoreError> {
    validate::decision_id(decision_id)?;
    delete_rows(
        conn,
        "DELETE FROM charges WHERE decision_id = ?1 RETURNING key, amount",
        params![decision_id],
    )
}
