//! The nodes of a fleet: each decision point registers its node id, the public key its
//! decision log signs checkpoints with, and where its API is; it publishes its latest signed
//! checkpoint. An auditor verifies every node's log against the key and checkpoint registered
//! here (`arbiter log verify --fleet`), and nodes find each other's decisions through it.
//!
//! A node keeps its key: registering a known id with another key is refused, so a log swapped
//! for one signed by another key cannot pass as the node's.

use crate::db::{Db, OptionalExtension, Row, params};
use crate::model::{Actor, NewNode, Node};
use crate::{StoreError, audit};

const COLUMNS: &str =
    "id, public_key, url, registered_us, last_seen_us, checkpoint, checkpoint_size";

/// Longest node id, URL and published checkpoint, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 128;
pub const MAX_URL_BYTES: usize = 512;
pub const MAX_CHECKPOINT_BYTES: usize = 4_096;

fn from_row(row: &Row<'_>) -> crate::db::Result<Node> {
    Ok(Node {
        id: row.get(0)?,
        public_key: row.get(1)?,
        url: row.get(2)?,
        registered_us: row.get(3)?,
        last_seen_us: row.get(4)?,
        checkpoint: row.get(5)?,
        checkpoint_size: row
            .get::<_, Option<i64>>(6)?
            .map(|s| u64::try_from(s).unwrap_or(0)),
    })
}

fn check(new: &NewNode) -> Result<(), StoreError> {
    let id = &new.id;
    if id.is_empty() || id.len() > MAX_NODE_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::invalid(
            "node id",
            format!("must be 1 to {MAX_NODE_ID_BYTES} visible ASCII characters"),
        ));
    }
    let key = &new.public_key;
    if key.len() != 64 || !key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(StoreError::invalid(
            "node public key",
            "must be 64 lowercase hex characters",
        ));
    }
    if let Some(url) = &new.url
        && (url.len() > MAX_URL_BYTES
            || !(url.starts_with("http://") || url.starts_with("https://"))
            || url.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(StoreError::invalid(
            "node URL",
            format!("must be an http:// or https:// URL of at most {MAX_URL_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The node `id`, if registered.
pub(crate) fn get(conn: &dyn Db, id: &str) -> Result<Option<Node>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM nodes WHERE id = ?1"))?
        .query_row(params![id], from_row)
        .optional()?)
}

/// Every node, by id.
pub(crate) fn list(conn: &dyn Db) -> Result<Vec<Node>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM nodes ORDER BY id"))?;
    let mut out = Vec::new();
    for row in stmt.query_map(params![], from_row)? {
        out.push(row?);
    }
    Ok(out)
}

/// Registers `new`, or notes that it is up again (and where). Audited when it is new or moves.
pub(crate) fn register(
    conn: &dyn Db,
    new: &NewNode,
    actor: &Actor,
    now_us: i64,
) -> Result<Node, StoreError> {
    check(new)?;
    match get(conn, &new.id)? {
        None => {
            conn.prepare_cached(
                "INSERT INTO nodes (id, public_key, url, registered_us, last_seen_us)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![new.id, new.public_key, new.url, now_us])?;
            audit::append(
                conn,
                actor,
                now_us,
                "node.register",
                &new.id,
                &serde_json::json!({"public_key": new.public_key, "url": new.url}),
            )?;
        }
        Some(known) if known.public_key != new.public_key => {
            return Err(StoreError::state(
                "node",
                &new.id,
                format!(
                    "is registered with another public key ({}…, since {}); a node keeps its \
                     key: start it with its own data directory, or give this one a new node id",
                    &known.public_key[..16],
                    known.registered_us
                ),
            ));
        }
        Some(known) => {
            conn.prepare_cached("UPDATE nodes SET url = ?2, last_seen_us = ?3 WHERE id = ?1")?
                .execute(params![new.id, new.url, now_us])?;
            if known.url != new.url {
                audit::append(
                    conn,
                    actor,
                    now_us,
                    "node.update",
                    &new.id,
                    &serde_json::json!({"before": {"url": known.url}, "after": {"url": new.url}}),
                )?;
            }
        }
    }
    get(conn, &new.id)?.ok_or_else(|| StoreError::not_found("node", &new.id))
}

/// Stores `checkpoint` (canonical JSON of size `tree_size`) as node `id`'s latest, unless a
/// larger one is already there. Not audited: it changes with traffic.
pub(crate) fn publish_checkpoint(
    conn: &dyn Db,
    id: &str,
    tree_size: u64,
    checkpoint: &str,
    now_us: i64,
) -> Result<(), StoreError> {
    if checkpoint.len() > MAX_CHECKPOINT_BYTES {
        return Err(StoreError::invalid(
            "checkpoint",
            format!("at most {MAX_CHECKPOINT_BYTES} bytes"),
        ));
    }
    let size = i64::try_from(tree_size)
        .map_err(|_| StoreError::invalid("checkpoint", "tree size out of range"))?;
    let changed = conn
        .prepare_cached(
            "UPDATE nodes SET checkpoint = ?2, checkpoint_size = ?3, last_seen_us = ?4
             WHERE id = ?1 AND (checkpoint_size IS NULL OR checkpoint_size <= ?3)",
        )?
        .execute(params![id, checkpoint, size, now_us])?;
    if changed == 0 && get(conn, id)?.is_none() {
        return Err(StoreError::not_found("node", id));
    }
    Ok(())
}
