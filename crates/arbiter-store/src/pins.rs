//! MCP tool pins: the definition hash each tool of each MCP server was
//! approved with, pinned on first use or from a lock file, and a changed
//! definition (a "rug pull") waiting for an administrator's approval.
//!
//! The gateway compares every announced definition with the pin
//! ([`check`]): the common case, an unchanged definition, is one indexed
//! read and writes nothing. Pinning on first use and recording a change are
//! written in a write transaction that re-reads the row first, so several
//! processes seeing the same tool at once agree on one pin. Every write is
//! audited: `tool.pinned`, `tool.changed`, `tool.approved`, `tool.unpinned`,
//! with the `server/tool` pair as the target and hashes (never definitions)
//! in the detail.

use std::collections::HashSet;

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::{Value, json};

use crate::model::{Actor, PinCheck, ToolPin};
use crate::{StoreError, audit, validate};

const COLUMNS: &str = "server, tool, hash, definition, pinned_at_us, pinned_by, \
                       observed_hash, observed_definition, observed_at_us";

/// The audit actor of pins made on first use.
pub(crate) fn first_use_actor() -> Actor {
    Actor::system(ToolPin::FIRST_USE)
}

/// The id of a pin in errors and audit targets: `server/tool`.
fn pin_id(server: &str, tool: &str) -> String {
    format!("{server}/{tool}")
}

fn from_row(row: &Row<'_>) -> crate::db::Result<ToolPin> {
    Ok(ToolPin {
        server: row.get(0)?,
        tool: row.get(1)?,
        hash: row.get(2)?,
        definition: row.get(3)?,
        pinned_at_us: row.get(4)?,
        pinned_by: row.get(5)?,
        observed_hash: row.get(6)?,
        observed_definition: row.get(7)?,
        observed_at_us: row.get(8)?,
    })
}

/// Checks the inputs of [`check`] (the caller does so before opening any
/// transaction).
pub(crate) fn validate_check(
    server: &str,
    tool: &str,
    hash: &str,
    definition: &str,
) -> Result<(), StoreError> {
    validate::tool_server(server)?;
    validate::tool(tool)?;
    validate::tool_hash("tool hash", hash)?;
    validate::tool_definition(definition)
}

/// The pin of `server`/`tool`, if any.
pub(crate) fn get(conn: &dyn Db, server: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tool_pins WHERE server = ?1 AND tool = ?2"
        ))?
        .query_row(params![server, tool], from_row)
        .optional()?)
}

fn require(conn: &dyn Db, server: &str, tool: &str) -> Result<ToolPin, StoreError> {
    get(conn, server, tool)?.ok_or_else(|| StoreError::not_found("tool pin", pin_id(server, tool)))
}

/// The pins, of one server or all, ordered by server then tool.
pub(crate) fn list(conn: &dyn Db, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tool_pins
         WHERE (CAST(?1 AS TEXT) IS NULL OR server = ?1)
         ORDER BY server, tool"
    ))?;
    let rows = stmt.query_map(params![server], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// The read-only comparison: `Some` when the pin decides without a write
/// (the hash is the pinned one, or the change is already recorded), `None`
/// when there is no pin or a change to record.
pub(crate) fn check_read(
    conn: &dyn Db,
    server: &str,
    tool: &str,
    hash: &str,
) -> Result<Option<PinCheck>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT hash, observed_hash FROM tool_pins WHERE server = ?1 AND tool = ?2",
        )?
        .query_row(params![server, tool], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .optional()?;
    Ok(match row {
        None => None,
        Some((pinned, _)) if pinned == hash => Some(PinCheck::Matches),
        Some((pinned, Some(observed))) if observed == hash => Some(PinCheck::Changed {
            pinned_hash: pinned,
        }),
        Some(_) => None,
    })
}

/// Compares an announced definition with the pin inside a write
/// transaction: pins it on first use, records a new different definition.
pub(crate) fn check(
    conn: &dyn Db,
    server: &str,
    tool: &str,
    hash: &str,
    definition: &str,
    now_us: i64,
) -> Result<PinCheck, StoreError> {
    let existing = match get(conn, server, tool)? {
        Some(pin) => pin,
        None => {
            // Another connection cannot insert while this transaction holds
            // the write lock, but a row that appeared anyway is compared
            // below rather than failing the insert.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO tool_pins
                         (server, tool, hash, definition, pinned_at_us, pinned_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (server, tool) DO NOTHING",
                )?
                .execute(params![
                    server,
                    tool,
                    hash,
                    definition,
                    now_us,
                    ToolPin::FIRST_USE
                ])?;
            if inserted == 1 {
                audit::append(
                    conn,
                    &first_use_actor(),
                    now_us,
                    "tool.pinned",
                    &pin_id(server, tool),
                    &json!({
                        "server": server,
                        "tool": tool,
                        "hash": hash,
                        "previous_hash": Value::Null,
                        "source": ToolPin::FIRST_USE,
                    }),
                )?;
                return Ok(PinCheck::Pinned);
            }
            require(conn, server, tool)?
        }
    };
    if existing.hash == hash {
        return Ok(PinCheck::Matches);
    }
    let changed = PinCheck::Changed {
        pinned_hash: existing.hash.clone(),
    };
    if existing.observed_hash.as_deref() == Some(hash) {
        return Ok(changed);
    }
    conn.prepare_cached(
        "UPDATE tool_pins
         SET observed_hash = ?3, observed_definition = ?4, observed_at_us = ?5
         WHERE server = ?1 AND tool = ?2",
    )?
    .execute(params![server, tool, hash, definition, now_us])?;
    audit::append(
        conn,
        &first_use_actor(),
        now_us,
        "tool.changed",
        &pin_id(server, tool),
        &json!({
            "server": server,
            "tool": tool,
            "pinned_hash": existing.hash,
            "observed_hash": hash,
            "previous_observed_hash": existing.observed_hash,
        }),
    )?;
    Ok(changed)
}

/// Makes the pending definition the pinned one.
pub(crate) fn approve(
    conn: &dyn Db,
    server: &str,
    tool: &str,
    expected_hash: Option<&str>,
    actor: &Actor,
    now_us: i64,
) -> Result<ToolPin, StoreError> {
    validate::tool_server(server)?;
    validate::tool(tool)?;
    if let Some(expected) = expected_hash {
        validate::tool_hash("expected hash", expected)?;
    }
    let id = pin_id(server, tool);
    let before = require(conn, server, tool)?;
    let Some(observed) = before.observed_hash.clone() else {
        return Err(StoreError::state(
            "tool pin",
            id,
            format!(
                "has no pending change to approve (pinned hash {})",
                before.hash
            ),
        ));
    };
    if let Some(expected) = expected_hash
        && expected != observed
    {
        return Err(StoreError::state(
            "tool pin",
            id,
            format!(
                "has pending definition {observed}, not the expected {expected}; review it \
                 and approve that hash"
            ),
        ));
    }
    conn.prepare_cached(
        "UPDATE tool_pins
         SET hash = observed_hash, definition = observed_definition,
             pinned_at_us = ?3, pinned_by = ?4,
             observed_hash = NULL, observed_definition = NULL, observed_at_us = NULL
         WHERE server = ?1 AND tool = ?2",
    )?
    .execute(params![server, tool, now_us, actor.to_string()])?;
    audit::append(
        conn,
        actor,
        now_us,
        "tool.approved",
        &id,
        &json!({
            "server": server,
            "tool": tool,
            "previous_hash": before.hash,
            "hash": observed,
        }),
    )?;
    require(conn, server, tool)
}

/// Pins tools to the hashes of a lock file. Returns how many pins were
/// created or changed.
pub(crate) fn pin_many(
    conn: &dyn Db,
    server: &str,
    pins: &[(String, String)],
    actor: &Actor,
    now_us: i64,
) -> Result<usize, StoreError> {
    validate::tool_server(server)?;
    let mut seen = HashSet::with_capacity(pins.len());
    for (tool, hash) in pins {
        validate::tool(tool)?;
        validate::tool_hash("tool hash", hash)?;
        if !seen.insert(tool.as_str()) {
            return Err(StoreError::invalid(
                "tool name",
                format!(
                    "`{}` is listed more than once",
                    validate::truncate(tool, 80)
                ),
            ));
        }
    }
    let pinned_by = actor.to_string();
    let mut changed = 0;
    for (tool, hash) in pins {
        let before = get(conn, server, tool)?;
        match &before {
            None => {
                conn.prepare_cached(
                    "INSERT INTO tool_pins
                         (server, tool, hash, definition, pinned_at_us, pinned_by)
                     VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
                )?
                .execute(params![server, tool, hash, now_us, pinned_by])?;
            }
            Some(pin) if pin.hash == *hash => continue,
            Some(pin) if pin.observed_hash.as_deref() == Some(hash.as_str()) => {
                // The lock file approves the pending definition: keep its text.
                conn.prepare_cached(
                    "UPDATE tool_pins
                     SET hash = observed_hash, definition = observed_definition,
                         pinned_at_us = ?3, pinned_by = ?4,
                         observed_hash = NULL, observed_definition = NULL,
                         observed_at_us = NULL
                     WHERE server = ?1 AND tool = ?2",
                )?
                .execute(params![server, tool, now_us, pinned_by])?;
            }
            Some(_) => {
                // A pending different definition, if any, stays pending.
                conn.prepare_cached(
                    "UPDATE tool_pins
                     SET hash = ?3, definition = NULL, pinned_at_us = ?4, pinned_by = ?5
                     WHERE server = ?1 AND tool = ?2",
                )?
                .execute(params![server, tool, hash, now_us, pinned_by])?;
            }
        }
        audit::append(
            conn,
            actor,
            now_us,
            "tool.pinned",
            &pin_id(server, tool),
            &json!({
                "server": server,
                "tool": tool,
                "hash": hash,
                "previous_hash": before.map(|pin| pin.hash),
                "source": "lock",
            }),
        )?;
        changed += 1;
    }
    Ok(changed)
}

/// Removes a pin.
pub(crate) fn unpin(
    conn: &dyn Db,
    server: &str,
    tool: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<(), StoreError> {
    validate::tool_server(server)?;
    validate::tool(tool)?;
    let before = require(conn, server, tool)?;
    conn.prepare_cached("DELETE FROM tool_pins WHERE server = ?1 AND tool = ?2")?
        .execute(params![server, tool])?;
    audit::append(
        conn,
        actor,
        now_us,
        "tool.unpinned",
        &pin_id(server, tool),
        &json!({
            "server": server,
            "tool": tool,
            "hash": before.hash,
            "pending_hash": before.observed_hash,
        }),
    )?;
    Ok(())
}
