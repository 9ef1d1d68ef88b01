//! The audit trail: one hash-chained event per administrative change.
//!
//! Every mutating store call appends its event inside the same transaction
//! as the change, so a change without its event (or the reverse) cannot be
//! committed. Each event's hash covers the previous hash, so editing,
//! reordering or removing an event in the middle breaks every later link;
//! [`Store::verify_audit`](crate::Store::verify_audit) recomputes the chain and names the first event that fails.
//!
//! The preimage of event `n` is
//! `prev_hash || "\n" || canonical_json({action, actor_id, actor_kind, at_us, detail, seq, target})`
//! where canonical JSON is compact with object keys sorted at every level,
//! and `hash = "sha256:" || hex(SHA-256(preimage))`.

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::StoreError;
use crate::model::{Actor, AuditEvent};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// How many events a verification reads per batch.
pub(crate) const VERIFY_BATCH: usize = 1024;

/// `value` with the keys of every object, at every depth, in sorted order.
///
/// With serde_json's `preserve_order` a map keeps insertion order, so
/// inserting in sorted order makes the serialization sorted either way.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut out = Map::with_capacity(entries.len());
            for (key, inner) in entries {
                out.insert(key.clone(), sorted(inner));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => value.clone(),
    }
}

/// Compact JSON with sorted keys.
pub fn canonical_json(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(&sorted(value))
        .map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn json_string(s: &str) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

/// The fields an event's hash covers, borrowed.
pub(crate) struct EventFields<'a> {
    pub seq: u64,
    pub at_us: i64,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    /// The detail as stored: canonical JSON text.
    pub detail_json: &'a str,
}

/// The canonical JSON of an event, with the stored detail text embedded
/// verbatim (keys in sorted order: action, actor_id, actor_kind, at_us,
/// detail, seq, target).
fn event_json(fields: &EventFields<'_>) -> Result<String, StoreError> {
    Ok(format!(
        "{{\"action\":{},\"actor_id\":{},\"actor_kind\":{},\"at_us\":{},\"detail\":{},\"seq\":{},\"target\":{}}}",
        json_string(fields.action)?,
        json_string(fields.actor_id)?,
        json_string(fields.actor_kind)?,
        fields.at_us,
        fields.detail_json,
        fields.seq,
        json_string(fields.target)?,
    ))
}

/// `sha256:<hex>` of `prev_hash || "\n" || canonical event JSON`.
pub(crate) fn event_hash(prev_hash: &str, fields: &EventFields<'_>) -> Result<String, StoreError> {
    let body = event_json(fields)?;
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The last event's `(seq, hash)`, if any.
pub(crate) fn head(conn: &dyn Db) -> Result<Option<(u64, String)>, StoreError> {
    let row = conn
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row(params![], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?;
    match row {
        None => Ok(None),
        Some((seq, hash)) => Ok(Some((seq_from_sql(seq)?, hash))),
    }
}

/// Appends one event. Call inside the transaction that makes the change.
pub(crate) fn append(
    conn: &dyn Db,
    actor: &Actor,
    now_us: i64,
    action: &str,
    target: &str,
    detail: &Value,
) -> Result<AuditEvent, StoreError> {
    let (seq, prev_hash) = match head(conn)? {
        Some((seq, hash)) => (seq.saturating_add(1), hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let detail = sorted(detail);
    let detail_json = serde_json::to_string(&detail)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))?;
    let fields = EventFields {
        seq,
        at_us: now_us,
        actor_kind: &actor.kind,
        actor_id: &actor.id,
        action,
        target,
        detail_json: &detail_json,
    };
    let hash = event_hash(&prev_hash, &fields)?;
    conn.prepare_cached(
        "INSERT INTO audit_events
             (seq, at_us, actor_kind, actor_id, action, target, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        seq_to_sql(seq)?,
        now_us,
        actor.kind,
        actor.id,
        action,
        target,
        detail_json,
        prev_hash,
        hash,
    ])?;
    Ok(AuditEvent {
        seq,
        at_us: now_us,
        actor_kind: actor.kind.clone(),
        actor_id: actor.id.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
        prev_hash,
        hash,
    })
}

/// One stored event with its detail still as text (what the hash covers).
pub(crate) struct StoredEvent {
    pub seq: u64,
    pub at_us: i64,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub target: String,
    pub detail_json: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredEvent {
    fn from_row(row: &Row<'_>) -> crate::db::Result<(i64, Self)> {
        Ok((
            row.get(0)?,
            Self {
                seq: 0,
                at_us: row.get(1)?,
                actor_kind: row.get(2)?,
                actor_id: row.get(3)?,
                action: row.get(4)?,
                target: row.get(5)?,
                detail_json: row.get(6)?,
                prev_hash: row.get(7)?,
                hash: row.get(8)?,
            },
        ))
    }

    fn fields(&self) -> EventFields<'_> {
        EventFields {
            seq: self.seq,
            at_us: self.at_us,
            actor_kind: &self.actor_kind,
            actor_id: &self.actor_id,
            action: &self.action,
            target: &self.target,
            detail_json: &self.detail_json,
        }
    }

    fn into_event(self) -> Result<AuditEvent, StoreError> {
        let detail = serde_json::from_str(&self.detail_json).map_err(|e| {
            StoreError::Corrupt(format!("audit event {}: detail is not JSON: {e}", self.seq))
        })?;
        Ok(AuditEvent {
            seq: self.seq,
            at_us: self.at_us,
            actor_kind: self.actor_kind,
            actor_id: self.actor_id,
            action: self.action,
            target: self.target,
            detail,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// Up to `limit` stored events with `seq > after`, in order.
pub(crate) fn stored_after(
    conn: &dyn Db,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_us, actor_kind, actor_id, action, target, detail, prev_hash, hash
         FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], StoredEvent::from_row)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, mut event) = row?;
        event.seq = seq_from_sql(seq)?;
        out.push(event);
    }
    Ok(out)
}

/// Up to `limit` events after `after_seq` (from the start when `None`).
pub(crate) fn list(
    conn: &dyn Db,
    after_seq: Option<u64>,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    stored_after(conn, after_seq.unwrap_or(0), limit)?
        .into_iter()
        .map(StoredEvent::into_event)
        .collect()
}

/// Where a chain verification has got to; fed one batch at a time so the
/// caller can release its lock between batches.
#[derive(Debug)]
pub(crate) struct Verifier {
    expected_seq: u64,
    prev_hash: String,
}

impl Verifier {
    pub(crate) fn new() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// The last seq verified so far (0 before any).
    pub(crate) fn last_seq(&self) -> u64 {
        self.expected_seq - 1
    }

    /// Checks the next events of the chain, in order.
    pub(crate) fn check(&mut self, events: &[StoredEvent]) -> Result<(), StoreError> {
        for event in events {
            let seq = self.expected_seq;
            if event.seq != seq {
                return Err(StoreError::AuditChain {
                    seq,
                    problem: format!("event is missing (the next stored event is {})", event.seq),
                });
            }
            if event.prev_hash != self.prev_hash {
                return Err(StoreError::AuditChain {
                    seq,
                    problem: "prev_hash does not match the previous event's hash".to_owned(),
                });
            }
            let computed = event_hash(&event.prev_hash, &event.fields())?;
            if computed != event.hash {
                return Err(StoreError::AuditChain {
                    seq,
                    problem: "stored hash does not match the event's content".to_owned(),
                });
            }
            if let Err(e) = serde_json::from_str::<Value>(&event.detail_json) {
                return Err(StoreError::AuditChain {
                    seq,
                    problem: format!("detail is not JSON: {e}"),
                });
            }
            self.prev_hash.clone_from(&event.hash);
            self.expected_seq = seq.saturating_add(1);
        }
        Ok(())
    }
}

fn seq_from_sql(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit event with seq {seq}")))
}

fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq} out of range")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    #[test]
    fn event_json_equals_sorted_serialization_of_the_event() {
        let detail = json!({"z": 1, "a": {"y": [1, {"b": 2, "a": 1}], "x": "é\n\"q\""}});
        let detail_json = canonical_json(&detail).unwrap();
        let fields = EventFields {
            seq: 7,
            at_us: -3,
            actor_kind: "cli",
            actor_id: "ops \"root\"",
            action: "agent.register",
            target: "support-bot",
            detail_json: &detail_json,
        };
        let whole = json!({
            "seq": 7, "at_us": -3, "actor_kind": "cli", "actor_id": "ops \"root\"",
            "action": "agent.register", "target": "support-bot", "detail": detail,
        });
        assert_eq!(
            event_json(&fields).unwrap(),
            canonical_json(&whole).unwrap()
        );
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let value = json!({"b": {"d": 1, "c": 2}, "a": [ {"f": 1, "e": 2} ]});
        assert_eq!(
            canonical_json(&value).unwrap(),
            r#"{"a":[{"e":2,"f":1}],"b":{"c":2,"d":1}}"#
        );
    }

    #[test]
    fn hash_matches_the_documented_formula() {
        let fields = EventFields {
            seq: 1,
            at_us: 1_700_000_000_000_000,
            actor_kind: "system",
            actor_id: "test",
            action: "agent.register",
            target: "a",
            detail_json: "{}",
        };
        let preimage = format!(
            "{GENESIS_HASH}\n{}",
            r#"{"action":"agent.register","actor_id":"test","actor_kind":"system","at_us":1700000000000000,"detail":{},"seq":1,"target":"a"}"#
        );
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(preimage.as_bytes()))
        );
        assert_eq!(event_hash(GENESIS_HASH, &fields).unwrap(), expected);
    }
}
