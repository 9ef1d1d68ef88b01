//! Agents: registration, lookup, metadata updates and lifecycle.
//!
//! The functions here run inside a transaction the caller opened; each
//! mutating one writes its audit event through [`audit::append`] before the
//! caller commits.

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::{Map, Value, json};

use crate::model::{Actor, Agent, AgentFilter, AgentPatch, AgentStatus, NewAgent};
use crate::{StoreError, audit, validate};

const COLUMNS: &str = "id, name, owner, purpose, environment, status, attributes, \
                       created_us, updated_us, last_seen_us";

/// A row as read, before its text columns are interpreted.
struct RawAgent {
    id: String,
    name: String,
    owner: String,
    purpose: String,
    environment: String,
    status: String,
    attributes: String,
    created_us: i64,
    updated_us: i64,
    last_seen_us: Option<i64>,
}

impl RawAgent {
    fn from_row(row: &Row<'_>) -> crate::db::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            owner: row.get(2)?,
            purpose: row.get(3)?,
            environment: row.get(4)?,
            status: row.get(5)?,
            attributes: row.get(6)?,
            created_us: row.get(7)?,
            updated_us: row.get(8)?,
            last_seen_us: row.get(9)?,
        })
    }

    fn into_agent(self) -> Result<Agent, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("agent `{}` has an invalid {what}: {e}", self.id))
        };
        let environment = self
            .environment
            .parse()
            .map_err(|e| corrupt("environment", &e))?;
        let status = self.status.parse().map_err(|e| corrupt("status", &e))?;
        let attributes: Map<String, Value> =
            serde_json::from_str(&self.attributes).map_err(|e| corrupt("attributes", &e))?;
        Ok(Agent {
            id: self.id,
            name: self.name,
            owner: self.owner,
            purpose: self.purpose,
            environment,
            status,
            attributes,
            created_us: self.created_us,
            updated_us: self.updated_us,
            last_seen_us: self.last_seen_us,
        })
    }
}

/// The agent `id`, if registered.
pub(crate) fn get(conn: &dyn Db, id: &str) -> Result<Option<Agent>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM agents WHERE id = ?1"))?
        .query_row(params![id], RawAgent::from_row)
        .optional()?
        .map(RawAgent::into_agent)
        .transpose()
}

/// The agent `id`, or `NotFound`.
pub(crate) fn require(conn: &dyn Db, id: &str) -> Result<Agent, StoreError> {
    get(conn, id)?.ok_or_else(|| StoreError::not_found("agent", id))
}

/// Agents matching `filter`, ordered by id.
pub(crate) fn list(conn: &dyn Db, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM agents
         WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR environment = ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR owner = ?3)
         ORDER BY id"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.status.map(AgentStatus::as_str),
            filter.environment.map(|e| e.as_str()),
            filter.owner,
        ],
        RawAgent::from_row,
    )?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.into_agent()?);
    }
    Ok(out)
}

/// Registers a new agent, active.
pub(crate) fn register(
    conn: &dyn Db,
    new: &NewAgent,
    actor: &Actor,
    now_us: i64,
) -> Result<Agent, StoreError> {
    let attributes_json = validate::new_agent(new)?;
    if get(conn, &new.id)?.is_some() {
        return Err(StoreError::Conflict {
            what: "agent",
            id: new.id.clone(),
        });
    }
    conn.prepare_cached(&format!(
        "INSERT INTO agents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, NULL)"
    ))?
    .execute(params![
        new.id,
        new.name,
        new.owner,
        new.purpose,
        new.environment.as_str(),
        AgentStatus::Active.as_str(),
        attributes_json,
        now_us,
    ])?;
    let agent = require(conn, &new.id)?;
    audit::append(
        conn,
        actor,
        now_us,
        "agent.register",
        &agent.id,
        &json!({
            "name": agent.name,
            "owner": agent.owner,
            "purpose": agent.purpose,
            "environment": agent.environment,
            "status": agent.status,
            "attributes": agent.attributes,
        }),
    )?;
    Ok(agent)
}

/// Applies the set fields of `patch`. A patch that changes nothing returns
/// the agent as it is and writes no event.
pub(crate) fn update(
    conn: &dyn Db,
    id: &str,
    patch: &AgentPatch,
    actor: &Actor,
    now_us: i64,
) -> Result<Agent, StoreError> {
    validate::agent_patch(patch)?;
    let before = require(conn, id)?;
    if before.status == AgentStatus::Retired {
        return Err(StoreError::state(
            "agent",
            id,
            "is retired and can no longer be changed",
        ));
    }
    let mut after = before.clone();
    let mut old = Map::new();
    let mut new = Map::new();
    let mut record = |field: &str, was: Value, now: Value| {
        if was != now {
            old.insert(field.to_owned(), was);
            new.insert(field.to_owned(), now);
        }
    };
    if let Some(name) = &patch.name {
        record("name", json!(before.name), json!(name));
        after.name.clone_from(name);
    }
    if let Some(owner) = &patch.owner {
        record("owner", json!(before.owner), json!(owner));
        after.owner.clone_from(owner);
    }
    if let Some(purpose) = &patch.purpose {
        record("purpose", json!(before.purpose), json!(purpose));
        after.purpose.clone_from(purpose);
    }
    if let Some(environment) = patch.environment {
        record("environment", json!(before.environment), json!(environment));
        after.environment = environment;
    }
    if let Some(attributes) = &patch.attributes {
        record(
            "attributes",
            Value::Object(before.attributes.clone()),
            Value::Object(attributes.clone()),
        );
        after.attributes.clone_from(attributes);
    }
    if new.is_empty() {
        return Ok(before);
    }
    let attributes_json = validate::attributes(&after.attributes)?;
    conn.prepare_cached(
        "UPDATE agents SET name = ?2, owner = ?3, purpose = ?4, environment = ?5,
                           attributes = ?6, updated_us = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        after.name,
        after.owner,
        after.purpose,
        after.environment.as_str(),
        attributes_json,
        now_us,
    ])?;
    audit::append(
        conn,
        actor,
        now_us,
        "agent.update",
        id,
        &json!({ "before": old, "after": new }),
    )?;
    require(conn, id)
}

/// The audit action for a transition into `status`.
fn status_action(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Active => "agent.activate",
        AgentStatus::Suspended => "agent.suspend",
        AgentStatus::Retired => "agent.retire",
    }
}

/// Moves an agent to `status`. Retired is terminal; setting the current
/// status again is refused so that a mistaken repeat is visible.
pub(crate) fn set_status(
    conn: &dyn Db,
    id: &str,
    status: AgentStatus,
    actor: &Actor,
    now_us: i64,
) -> Result<Agent, StoreError> {
    let before = require(conn, id)?;
    match (before.status, status) {
        (AgentStatus::Retired, AgentStatus::Retired) => {
            return Err(StoreError::state("agent", id, "is already retired"));
        }
        (AgentStatus::Retired, AgentStatus::Active | AgentStatus::Suspended) => {
            return Err(StoreError::state(
                "agent",
                id,
                format!("is retired and cannot become {status}; register a new agent instead"),
            ));
        }
        (AgentStatus::Active, AgentStatus::Active)
        | (AgentStatus::Suspended, AgentStatus::Suspended) => {
            return Err(StoreError::state(
                "agent",
                id,
                format!("is already {status}"),
            ));
        }
        (AgentStatus::Active, AgentStatus::Suspended | AgentStatus::Retired)
        | (AgentStatus::Suspended, AgentStatus::Active | AgentStatus::Retired) => {}
    }
    conn.prepare_cached("UPDATE agents SET status = ?2, updated_us = ?3 WHERE id = ?1")?
        .execute(params![id, status.as_str(), now_us])?;
    audit::append(
        conn,
        actor,
        now_us,
        status_action(status),
        id,
        &json!({ "from": before.status, "to": status }),
    )?;
    require(conn, id)
}

/// Raises `last_seen_us` to each given time (never lowers it); unknown ids
/// are skipped. Returns how many rows changed.
pub(crate) fn touch(conn: &dyn Db, seen: &[(String, i64)]) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE agents SET last_seen_us = ?2
         WHERE id = ?1 AND (last_seen_us IS NULL OR last_seen_us < ?2)",
    )?;
    let mut changed = 0;
    for (id, at_us) in seen {
        changed += stmt.execute(params![id, at_us])?;
    }
    Ok(changed)
}
