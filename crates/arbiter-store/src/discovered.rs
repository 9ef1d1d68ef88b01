//! Discovered identities: the inventory of unknown credentials and agent ids
//! that enforcement points saw.
//!
//! Sightings are high-volume and attacker-driven, so recording them is not
//! audited, every text is cut to a bounded length, each identity keeps a
//! bounded list of sources, and the table stops growing at
//! [`MAX_DISCOVERED_ROWS`]: past that, sightings of new keys are dropped and
//! counted while known keys keep being updated. Adopting an identity is an
//! administrative act and is audited.

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::json;

use crate::model::{
    Actor, AgentStatus, Discovered, MAX_DISCOVERED_ROWS, MAX_DISCOVERED_SOURCES, Sighting,
    SightingsReport,
};
use crate::validate::truncate;
use crate::{StoreError, agents, audit};

/// Longest key kept (longer keys are cut).
pub const MAX_KEY_LEN: usize = 256;
/// Longest shape, source or enforcement point kept.
pub const MAX_FIELD_LEN: usize = 128;

const COLUMNS: &str = "id, kind, key, shape, first_seen_us, last_seen_us, count, sources, \
                       enforcement_points, adopted_as";

struct RawDiscovered {
    id: i64,
    kind: String,
    key: String,
    shape: String,
    first_seen_us: i64,
    last_seen_us: i64,
    count: i64,
    sources: String,
    enforcement_points: String,
    adopted_as: Option<String>,
}

impl RawDiscovered {
    fn from_row(row: &Row<'_>) -> crate::db::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            kind: row.get(1)?,
            key: row.get(2)?,
            shape: row.get(3)?,
            first_seen_us: row.get(4)?,
            last_seen_us: row.get(5)?,
            count: row.get(6)?,
            sources: row.get(7)?,
            enforcement_points: row.get(8)?,
            adopted_as: row.get(9)?,
        })
    }

    fn into_discovered(self) -> Result<Discovered, StoreError> {
        let id = self.id;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!(
                "discovered identity {id} has an invalid {what}: {e}"
            ))
        };
        Ok(Discovered {
            id,
            kind: self.kind.parse().map_err(|e| corrupt("kind", &e))?,
            key: self.key,
            shape: self.shape,
            first_seen_us: self.first_seen_us,
            last_seen_us: self.last_seen_us,
            count: u64::try_from(self.count).map_err(|e| corrupt("count", &e))?,
            sources: serde_json::from_str(&self.sources).map_err(|e| corrupt("sources", &e))?,
            enforcement_points: serde_json::from_str(&self.enforcement_points)
                .map_err(|e| corrupt("enforcement point list", &e))?,
            adopted_as: self.adopted_as,
        })
    }
}

/// Moves `item` to the front of `list` (most recent first), keeping the
/// entries distinct and at most [`MAX_DISCOVERED_SOURCES`].
fn remember(list: &mut Vec<String>, item: &str) {
    list.retain(|existing| existing != item);
    list.insert(0, item.to_owned());
    list.truncate(MAX_DISCOVERED_SOURCES);
}

fn encode(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

/// Merges a batch of sightings. Runs inside the caller's transaction.
pub(crate) fn record(conn: &dyn Db, sightings: &[Sighting]) -> Result<SightingsReport, StoreError> {
    let mut report = SightingsReport::default();
    let mut rows: i64 = conn
        .prepare_cached("SELECT count(*) FROM discovered")?
        .query_row(params![], |row| row.get(0))?;
    let cap = i64::try_from(MAX_DISCOVERED_ROWS).unwrap_or(i64::MAX);

    let mut find = conn.prepare_cached(
        "SELECT id, shape, first_seen_us, last_seen_us, count, sources, enforcement_points
         FROM discovered WHERE kind = ?1 AND key = ?2",
    )?;
    let mut update = conn.prepare_cached(
        "UPDATE discovered SET shape = ?2, first_seen_us = ?3, last_seen_us = ?4, count = ?5,
                               sources = ?6, enforcement_points = ?7
         WHERE id = ?1",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO discovered
             (kind, key, shape, first_seen_us, last_seen_us, count, sources, enforcement_points)
         VALUES (?1, ?2, ?3, ?4, ?4, 1, ?5, ?6)",
    )?;

    for sighting in sightings {
        let key = truncate(&sighting.key, MAX_KEY_LEN);
        if key.is_empty() {
            report.dropped += 1;
            continue;
        }
        let shape = truncate(&sighting.shape, MAX_FIELD_LEN);
        let source = truncate(&sighting.source, MAX_FIELD_LEN);
        let point = truncate(&sighting.enforcement_point, MAX_FIELD_LEN);
        let kind = sighting.kind.as_str();

        let existing = find
            .query_row(params![kind, key], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                ))
            })
            .optional()?;

        match existing {
            Some((id, old_shape, first, last, count, sources, points)) => {
                let mut sources: Vec<String> = serde_json::from_str(&sources).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "discovered identity {id} has invalid sources: {e}"
                    ))
                })?;
                let mut points: Vec<String> = serde_json::from_str(&points).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "discovered identity {id} has an invalid enforcement point list: {e}"
                    ))
                })?;
                remember(&mut sources, source);
                remember(&mut points, point);
                // The shape follows the latest sighting in time.
                let shape = if sighting.at_us >= last {
                    shape
                } else {
                    old_shape.as_str()
                };
                update.execute(params![
                    id,
                    shape,
                    first.min(sighting.at_us),
                    last.max(sighting.at_us),
                    count.saturating_add(1),
                    encode(&sources)?,
                    encode(&points)?,
                ])?;
                report.updated += 1;
            }
            None if rows >= cap => {
                report.dropped += 1;
            }
            None => {
                insert.execute(params![
                    kind,
                    key,
                    shape,
                    sighting.at_us,
                    encode(&[source.to_owned()])?,
                    encode(&[point.to_owned()])?,
                ])?;
                rows += 1;
                report.inserted += 1;
            }
        }
    }
    Ok(report)
}

/// All discovered identities, most recently seen first.
pub(crate) fn list(conn: &dyn Db, include_adopted: bool) -> Result<Vec<Discovered>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM discovered
         WHERE (?1 OR adopted_as IS NULL)
         ORDER BY last_seen_us DESC, id"
    ))?;
    let rows = stmt.query_map(params![include_adopted], RawDiscovered::from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.into_discovered()?);
    }
    Ok(out)
}

/// The discovered identity `id`, if any.
pub(crate) fn get(conn: &dyn Db, id: i64) -> Result<Option<Discovered>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM discovered WHERE id = ?1"))?
        .query_row(params![id], RawDiscovered::from_row)
        .optional()?
        .map(RawDiscovered::into_discovered)
        .transpose()
}

/// Records that discovered identity `id` is the agent `agent_id`.
pub(crate) fn adopt(
    conn: &dyn Db,
    id: i64,
    agent_id: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<Discovered, StoreError> {
    let found = get(conn, id)?
        .ok_or_else(|| StoreError::not_found("discovered identity", id.to_string()))?;
    if let Some(existing) = &found.adopted_as {
        return Err(StoreError::state(
            "discovered identity",
            id.to_string(),
            format!("was already adopted as agent `{existing}`"),
        ));
    }
    let agent = agents::require(conn, agent_id)?;
    if agent.status == AgentStatus::Retired {
        return Err(StoreError::state("agent", agent_id, "is retired"));
    }
    conn.prepare_cached("UPDATE discovered SET adopted_as = ?2 WHERE id = ?1")?
        .execute(params![id, agent_id])?;
    audit::append(
        conn,
        actor,
        now_us,
        "discovered.adopt",
        &id.to_string(),
        &json!({
            "kind": found.kind,
            "key": found.key,
            "shape": found.shape,
            "agent_id": agent_id,
        }),
    )?;
    get(conn, id)?.ok_or_else(|| StoreError::not_found("discovered identity", id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_keeps_distinct_most_recent_first_and_caps() {
        let mut list = Vec::new();
        for i in 0..20 {
            remember(&mut list, &format!("10.0.0.{i}"));
        }
        remember(&mut list, "10.0.0.10");
        assert_eq!(list.len(), MAX_DISCOVERED_SOURCES);
        assert_eq!(list.first().map(String::as_str), Some("10.0.0.10"));
        assert_eq!(list.get(1).map(String::as_str), Some("10.0.0.19"));
        assert!(!list.contains(&"10.0.0.3".to_owned()));
        assert_eq!(list.iter().filter(|s| *s == "10.0.0.10").count(), 1);
    }
}
