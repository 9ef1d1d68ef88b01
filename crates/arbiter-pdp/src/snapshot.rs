//! Snapshots of the runtime context, so that a decision point does not read back a week of
//! decision records when it starts.
//!
//! The runtime context (sessions, limits, budgets; see [`crate::sessions`]) is rebuilt from the
//! effects its decision records carry. Reading the records of the last
//! [`arbiter_policy::runtime::MAX_WINDOW`] at every start grows with the traffic of that week;
//! a snapshot says what those effects add up to for the first `size` records of the log, so a
//! start reads the snapshot and only the records after it.
//!
//! - **Exact.** A snapshot is never taken from the live state (which holds the effects of
//!   decisions whose records are not durable yet): it is built from the log alone — the
//!   previous snapshot and the committed records after it — on a state of its own, and names
//!   the tree size and root it covers.
//! - **Trusted only when it checks.** The file (`<log>/runtime-context.snapshot`) is signed
//!   with the log's key (purpose `runtime-context-snapshot`) and names the node and the root of
//!   the log at its size. A snapshot that is missing, unsigned, tampered with, from another
//!   log, or ahead of the log (records lost in a crash) is set aside with a warning and the
//!   records of the whole window are read instead: never fewer effects than the log holds. An
//!   older snapshot put back in place is still exact (the records after it are read).
//! - **When.** After the start-up replay, every [`EVERY`] while the log grows (on a thread of
//!   its own, with a transient copy of the state), and when the log closes.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arbiter_log::Log;
use serde_json::{Value, json};

use crate::sessions::Sessions;

/// The snapshot's file, in the log's directory.
pub const FILE: &str = "runtime-context.snapshot";
/// How often a snapshot is taken while the log grows.
pub const EVERY: Duration = Duration::from_secs(300);
const FORMAT: &str = "arbiter-runtime-context/1";
const PURPOSE: &str = "runtime-context-snapshot";
/// Larger files are not read (the state's own bounds keep a real one far below).
const MAX_BYTES: u64 = 1 << 30;

/// A snapshot that checked: the state after the log's first `size` records.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub size: u64,
    pub state: Value,
}

/// Reads and checks the snapshot of `log` (written by node `node_id`). `Ok(None)`: there is
/// none. An error says why the one there cannot be used.
pub(crate) fn load(log: &Log, node_id: &str) -> Result<Option<Snapshot>, String> {
    let path = log.dir().join(FILE);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if len > MAX_BYTES {
        return Err(format!(
            "{} is larger than {MAX_BYTES} bytes",
            path.display()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (body, signature) =
        split(&bytes).ok_or("not a snapshot file (body and signature lines)")?;
    log.public_key()
        .verify_node_message(PURPOSE, body, signature)
        .map_err(|_| "its signature does not verify with this log's key".to_owned())?;
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| format!("its body is not JSON: {e}"))?;
    if v["format"] != FORMAT {
        return Err(format!("its format is not {FORMAT}"));
    }
    if v["node_id"] != node_id {
        return Err(format!(
            "it was written by node {}, not {node_id}",
            v["node_id"]
        ));
    }
    let size = v["size"].as_u64().ok_or("it names no size")?;
    let have = log.tree_size();
    if size > have {
        return Err(format!(
            "it covers {size} records and the log holds {have} (records lost since it was written)"
        ));
    }
    let root = log.root_at(size).map_err(|e| e.to_string())?;
    if v["root"] != hex::encode(root) {
        return Err(format!(
            "the log's root at {size} records is not the one it names (another log's snapshot)"
        ));
    }
    Ok(Some(Snapshot {
        size,
        state: v["state"].take(),
    }))
}

/// The body and the signature of a snapshot file: `<json>\n<signature hex>\n`.
fn split(bytes: &[u8]) -> Option<(&[u8], &str)> {
    let text = bytes.strip_suffix(b"\n")?;
    let at = text.iter().position(|&b| b == b'\n')?;
    let (body, rest) = (text.get(..at)?, text.get(at + 1..)?);
    let signature = std::str::from_utf8(rest).ok()?;
    Some((body, signature))
}

/// Writes the snapshot of `state` after the log's first `size` records.
pub(crate) fn save(
    log: &Log,
    node_id: &str,
    size: u64,
    state: Value,
    now_us: i64,
) -> Result<(), String> {
    let root = log.root_at(size).map_err(|e| e.to_string())?;
    let body = json!({
        "format": FORMAT,
        "node_id": node_id,
        "size": size,
        "root": hex::encode(root),
        "written_us": now_us,
        "state": state,
    });
    let mut bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let signature = log.sign_node_message(PURPOSE, &bytes);
    bytes.push(b'\n');
    bytes.extend_from_slice(signature.as_bytes());
    bytes.push(b'\n');
    arbiter_log::write_atomic(log.dir(), FILE, &bytes, 0o600).map_err(|e| e.to_string())
}

/// Takes a fresh snapshot of `log` from the log alone: the previous snapshot and the committed
/// records after it, on a state of its own. Returns the size it covers.
pub(crate) fn refresh(log: &Log, node_id: &str, now_us: i64) -> Result<u64, String> {
    let state = Sessions::default();
    let resumed = state.resume(log, node_id, now_us)?;
    // The one there already covers the log (no record since): nothing to write.
    if resumed.snapshot != Some(resumed.size) {
        save(log, node_id, resumed.size, state.to_snapshot(), now_us)?;
    }
    Ok(resumed.size)
}

/// Takes a snapshot every [`EVERY`] while the log grows, until the log is dropped.
pub(crate) fn spawn_keeper(log: &Arc<Log>, node_id: String, mut taken: u64) {
    let weak: Weak<Log> = Arc::downgrade(log);
    let spawned = std::thread::Builder::new()
        .name("arbiter-runtime-snapshot".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                let Some(log) = weak.upgrade() else { return };
                if log.tree_size() == taken || !log.is_healthy() {
                    continue;
                }
                match refresh(&log, &node_id, crate::identity::now_us()) {
                    Ok(size) => taken = size,
                    Err(e) => {
                        tracing::warn!(error = %e, "the runtime context snapshot could not be taken")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the runtime context snapshots; a restart reads back the whole window");
    }
}
