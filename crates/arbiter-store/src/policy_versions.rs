//! Governed policy versions (schema version 5): proposed with their files, approved by
//! administrators other than the author, rejected, activated and rolled back.
//!
//! The store keeps what a governed decision point loads and what an auditor asks about a
//! version forever: its files, its author and message, its policies' owners, its test
//! results, who approved or rejected it, and every activation. It does not parse policies
//! (the caller computed the version hash and the owners); it enforces the rules that make the
//! process governed, inside the same transaction as the change and its audit event:
//!
//! - the author may not approve their own version; an approver approves a version once;
//! - a rejected version cannot be approved or activated, the active version cannot be
//!   rejected;
//! - a version is activated only when its tests passed and it has at least
//!   [`required_approvals`] approvals;
//! - a rollback goes back to the version active before the current one, and is itself an
//!   activation;
//! - nothing is ever deleted: a decision record names its version forever.

use std::collections::BTreeMap;

use crate::db::{Db, OptionalExtension, Row, params};
use serde_json::json;

use crate::model::{
    ActivationKind, Actor, NewPolicyVersion, PolicyActivation, PolicyApproval, PolicyFile,
    PolicyVersion, PolicyVersionState,
};
use crate::{StoreError, audit};

/// Longest commit message or rejection reason, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most files one version may hold.
pub const MAX_FILES: usize = 1000;
/// Largest total size of one version's files, in bytes.
pub const MAX_FILES_BYTES: usize = 16 << 20;
/// Approvals required when none were configured.
pub const DEFAULT_REQUIRED_APPROVALS: u32 = 1;
/// The most approvals that can be required.
pub const MAX_REQUIRED_APPROVALS: u32 = 16;

const REQUIRED_APPROVALS_KEY: &str = "policy.required_approvals";
const SHADOW_KEY: &str = "policy.shadow";

const COLUMNS: &str = "version, author, message, proposed_us, files, owners, tests_passed, \
                       tests_failed, state, rejected_by, rejected_us, rejected_reason";

fn from_row(row: &Row<'_>) -> crate::db::Result<PolicyVersion> {
    let bad = |i: usize, what: &str| crate::db::DbError::Invalid {
        column: i,
        problem: format!("not {what}"),
    };
    let count = |i: usize| -> crate::db::Result<u64> {
        u64::try_from(row.get::<_, i64>(i)?).map_err(|_| bad(i, "a count"))
    };
    Ok(PolicyVersion {
        version: row.get(0)?,
        author: row.get(1)?,
        message: row.get(2)?,
        proposed_us: row.get(3)?,
        files: serde_json::from_str(&row.get::<_, String>(4)?).map_err(|_| bad(4, "files"))?,
        owners: serde_json::from_str(&row.get::<_, String>(5)?).map_err(|_| bad(5, "owners"))?,
        tests_passed: count(6)?,
        tests_failed: count(7)?,
        state: row
            .get::<_, String>(8)?
            .parse::<PolicyVersionState>()
            .map_err(|_| bad(8, "a state"))?,
        rejected_by: row.get(9)?,
        rejected_us: row.get(10)?,
        rejected_reason: row.get(11)?,
        approvals: Vec::new(),
    })
}

fn with_approvals(conn: &dyn Db, mut v: PolicyVersion) -> Result<PolicyVersion, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT approver, at_us FROM policy_version_approvals WHERE version = ?1
         ORDER BY at_us, approver",
    )?;
    let rows = stmt.query_map(params![&v.version], |row| {
        Ok(PolicyApproval {
            approver: row.get(0)?,
            at_us: row.get(1)?,
        })
    })?;
    for row in rows {
        v.approvals.push(row?);
    }
    Ok(v)
}

/// Version `version`, if stored.
pub(crate) fn get(conn: &dyn Db, version: &str) -> Result<Option<PolicyVersion>, StoreError> {
    let v = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM policy_versions WHERE version = ?1"
        ))?
        .query_row(params![version], from_row)
        .optional()?;
    v.map(|v| with_approvals(conn, v)).transpose()
}

fn require(conn: &dyn Db, version: &str) -> Result<PolicyVersion, StoreError> {
    get(conn, version)?.ok_or_else(|| StoreError::not_found("policy version", version))
}

/// The stored version whose hash is `version` or starts with it (`sha256:` may be left out;
/// at least 8 hex digits): exactly one, or an error naming the ambiguity.
pub(crate) fn resolve(conn: &dyn Db, version: &str) -> Result<String, StoreError> {
    let wanted = version.trim();
    let hex = wanted.strip_prefix("sha256:").unwrap_or(wanted);
    if hex.len() < 8 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::invalid(
            "policy version",
            format!(
                "`{wanted}` is not a version: give its hash (`sha256:…`), or at least its \
                 first 8 hex digits"
            ),
        ));
    }
    let prefix = format!("sha256:{}", hex.to_ascii_lowercase());
    let mut stmt = conn.prepare_cached(
        "SELECT version FROM policy_versions WHERE substr(version, 1, length(?1)) = ?1 LIMIT 2",
    )?;
    let found: Vec<String> = stmt
        .query_map(params![&prefix], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(StoreError::not_found("policy version", wanted)),
        _ => Err(StoreError::invalid(
            "policy version",
            format!("`{wanted}` names more than one version; give more of its hash"),
        )),
    }
}

/// Versions, newest first; at most `limit`.
pub(crate) fn list(conn: &dyn Db, limit: usize) -> Result<Vec<PolicyVersion>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM policy_versions ORDER BY proposed_us DESC, version LIMIT ?1"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<PolicyVersion> = stmt
        .query_map(params![limit], from_row)?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(|v| with_approvals(conn, v)).collect()
}

fn activation_from_row(row: &Row<'_>) -> crate::db::Result<PolicyActivation> {
    Ok(PolicyActivation {
        seq: row.get(0)?,
        version: row.get(1)?,
        kind: row
            .get::<_, String>(2)?
            .parse::<ActivationKind>()
            .map_err(|_| crate::db::DbError::Invalid {
                column: 2,
                problem: "not an activation kind".to_owned(),
            })?,
        by: row.get(3)?,
        at_us: row.get(4)?,
    })
}

/// Activations, newest first; at most `limit`.
pub(crate) fn activations(
    conn: &dyn Db,
    limit: usize,
) -> Result<Vec<PolicyActivation>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, version, kind, \"by\", at_us FROM policy_activations ORDER BY seq DESC LIMIT ?1",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(stmt
        .query_map(params![limit], activation_from_row)?
        .collect::<Result<_, _>>()?)
}

/// The latest activation: what a governed decision point enforces.
pub(crate) fn active(conn: &dyn Db) -> Result<Option<PolicyActivation>, StoreError> {
    Ok(activations(conn, 1)?.into_iter().next())
}

/// The number of approvals (by administrators other than the author) a version needs before
/// it can be activated.
pub(crate) fn required_approvals(conn: &dyn Db) -> Result<u32, StoreError> {
    let stored: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row(params![REQUIRED_APPROVALS_KEY], |row| row.get(0))
        .optional()?;
    match stored {
        None => Ok(DEFAULT_REQUIRED_APPROVALS),
        Some(text) => text.parse::<u32>().map_err(|_| {
            StoreError::Corrupt(format!("setting {REQUIRED_APPROVALS_KEY} is `{text}`"))
        }),
    }
}

pub(crate) fn set_required_approvals(
    conn: &dyn Db,
    n: u32,
    actor: &Actor,
    now_us: i64,
) -> Result<(), StoreError> {
    if !(1..=MAX_REQUIRED_APPROVALS).contains(&n) {
        return Err(StoreError::invalid(
            "required approvals",
            format!(
                "must be 1 to {MAX_REQUIRED_APPROVALS}: a version always needs someone other \
                 than its author"
            ),
        ));
    }
    let before = required_approvals(conn)?;
    conn.prepare_cached(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![REQUIRED_APPROVALS_KEY, n.to_string()])?;
    audit::append(
        conn,
        actor,
        now_us,
        "policy.required_approvals",
        REQUIRED_APPROVALS_KEY,
        &json!({"from": before, "to": n}),
    )?;
    Ok(())
}

fn person(field: &'static str, who: &str) -> Result<(), StoreError> {
    if who.trim().is_empty() || who.len() > 256 || who.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            "must be 1 to 256 bytes without control characters: who does it",
        ));
    }
    Ok(())
}

fn text(field: &'static str, t: &str) -> Result<(), StoreError> {
    if t.trim().is_empty() || t.len() > MAX_MESSAGE_BYTES {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_MESSAGE_BYTES} bytes: say what and why"),
        ));
    }
    Ok(())
}

fn valid_version(version: &str) -> Result<(), StoreError> {
    let ok = version.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if !ok {
        return Err(StoreError::invalid(
            "policy version",
            format!("`{version}` is not `sha256:` and 64 lower-case hex digits"),
        ));
    }
    Ok(())
}

fn valid_files(files: &[PolicyFile]) -> Result<(), StoreError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(StoreError::invalid(
            "policy files",
            format!("a version holds 1 to {MAX_FILES} files"),
        ));
    }
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for f in files {
        let relative = !f.path.is_empty()
            && f.path.len() <= 1024
            && !f.path.starts_with('/')
            && !f.path.contains('\\')
            && f.path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && !f.path.chars().any(char::is_control);
        if !relative {
            return Err(StoreError::invalid(
                "policy files",
                format!(
                    "`{}` is not a relative path inside the policy directory",
                    f.path
                ),
            ));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(StoreError::invalid(
                "policy files",
                format!("`{}` is given twice", f.path),
            ));
        }
        total = total.saturating_add(f.text.len());
    }
    if total > MAX_FILES_BYTES {
        return Err(StoreError::invalid(
            "policy files",
            format!("{total} bytes in all, more than {MAX_FILES_BYTES}"),
        ));
    }
    Ok(())
}

fn valid_owners(owners: &BTreeMap<String, String>) -> Result<(), StoreError> {
    for (policy, owner) in owners {
        if policy.is_empty() || policy.len() > 256 {
            return Err(StoreError::invalid(
                "policy owners",
                "a policy id is 1 to 256 bytes",
            ));
        }
        person("policy owner", owner)?;
    }
    Ok(())
}

/// Stores a proposed version. A version that is stored already is a conflict (its hash is
/// its content: proposing the same content twice is the same version).
pub(crate) fn propose(
    conn: &dyn Db,
    new: &NewPolicyVersion,
    actor: &Actor,
    now_us: i64,
) -> Result<PolicyVersion, StoreError> {
    valid_version(&new.version)?;
    person("author", &new.author)?;
    text("message", &new.message)?;
    valid_files(&new.files)?;
    valid_owners(&new.owners)?;
    if get(conn, &new.version)?.is_some() {
        return Err(StoreError::Conflict {
            what: "policy version",
            id: new.version.clone(),
        });
    }
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO policy_versions (version, author, message, proposed_us, files, owners,
             tests_passed, tests_failed, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'proposed')",
    )?
    .execute(params![
        new.version,
        new.author.trim(),
        new.message,
        now_us,
        serde_json::to_string(&new.files).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        serde_json::to_string(&new.owners).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        count(new.tests_passed),
        count(new.tests_failed),
    ])?;
    audit::append(
        conn,
        actor,
        now_us,
        "policy.proposed",
        &new.version,
        &json!({
            "author": new.author.trim(),
            "message": new.message,
            "files": new.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            "owners": new.owners,
            "tests_passed": new.tests_passed,
            "tests_failed": new.tests_failed,
        }),
    )?;
    require(conn, &new.version)
}

/// Records `approver`'s approval of `version`.
pub(crate) fn approve(
    conn: &dyn Db,
    version: &str,
    approver: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<PolicyVersion, StoreError> {
    person("approver", approver)?;
    let v = require(conn, version)?;
    if v.state == PolicyVersionState::Rejected {
        return Err(StoreError::state(
            "policy version",
            version,
            "was rejected and cannot be approved; propose a new version",
        ));
    }
    if approver.trim().eq_ignore_ascii_case(v.author.trim()) {
        return Err(StoreError::state(
            "policy version",
            version,
            format!(
                "was proposed by `{}`, who may not approve it: another administrator must",
                v.author
            ),
        ));
    }
    if v.approvals
        .iter()
        .any(|a| a.approver.trim().eq_ignore_ascii_case(approver.trim()))
    {
        return Err(StoreError::state(
            "policy version",
            version,
            format!("is already approved by `{approver}`"),
        ));
    }
    conn.prepare_cached(
        "INSERT INTO policy_version_approvals (version, approver, at_us) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![version, approver.trim(), now_us])?;
    audit::append(
        conn,
        actor,
        now_us,
        "policy.approved",
        version,
        &json!({"approver": approver.trim(), "author": v.author}),
    )?;
    require(conn, version)
}

/// Rejects `version` for `reason`.
pub(crate) fn reject(
    conn: &dyn Db,
    version: &str,
    by: &str,
    reason: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<PolicyVersion, StoreError> {
    person("rejected by", by)?;
    text("reason", reason)?;
    let v = require(conn, version)?;
    if v.state == PolicyVersionState::Rejected {
        return Err(StoreError::state(
            "policy version",
            version,
            "is already rejected",
        ));
    }
    if active(conn)?.is_some_and(|a| a.version == version) {
        return Err(StoreError::state(
            "policy version",
            version,
            "is the active version; activate another one (or roll back) first",
        ));
    }
    conn.prepare_cached(
        "UPDATE policy_versions
         SET state = 'rejected', rejected_by = ?2, rejected_us = ?3, rejected_reason = ?4
         WHERE version = ?1 AND state = 'proposed'",
    )?
    .execute(params![version, by.trim(), now_us, reason])?;
    audit::append(
        conn,
        actor,
        now_us,
        "policy.rejected",
        version,
        &json!({"by": by.trim(), "reason": reason}),
    )?;
    require(conn, version)
}

/// Why `v` cannot be activated now, if it cannot.
fn not_activatable(conn: &dyn Db, v: &PolicyVersion) -> Result<Option<String>, StoreError> {
    if v.state == PolicyVersionState::Rejected {
        return Ok(Some("was rejected".to_owned()));
    }
    if v.tests_failed > 0 {
        return Ok(Some(format!(
            "failed {} of its {} tests",
            v.tests_failed,
            v.tests_failed + v.tests_passed
        )));
    }
    let required = required_approvals(conn)?;
    let have = u32::try_from(v.approvals.len()).unwrap_or(u32::MAX);
    if have < required {
        return Ok(Some(format!(
            "has {have} of the {required} approval(s) it needs from administrators other than \
             its author"
        )));
    }
    Ok(None)
}

fn record_activation(
    conn: &dyn Db,
    version: &str,
    kind: ActivationKind,
    by: &str,
    now_us: i64,
) -> Result<PolicyActivation, StoreError> {
    conn.prepare_cached(
        "INSERT INTO policy_activations (version, kind, \"by\", at_us) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![version, kind.as_str(), by.trim(), now_us])?;
    active(conn)?.ok_or_else(|| StoreError::Corrupt("an activation vanished".to_owned()))
}

/// Makes `version` the active one.
pub(crate) fn activate(
    conn: &dyn Db,
    version: &str,
    by: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<PolicyActivation, StoreError> {
    person("activated by", by)?;
    let v = require(conn, version)?;
    let current = active(conn)?;
    if current.as_ref().is_some_and(|a| a.version == version) {
        return Err(StoreError::state(
            "policy version",
            version,
            "is already active",
        ));
    }
    if let Some(why) = not_activatable(conn, &v)? {
        return Err(StoreError::state(
            "policy version",
            version,
            format!("cannot be activated: it {why}"),
        ));
    }
    let a = record_activation(conn, version, ActivationKind::Activate, by, now_us)?;
    audit::append(
        conn,
        actor,
        now_us,
        "policy.activated",
        version,
        &json!({
            "by": by.trim(),
            "from": current.map(|c| c.version),
            "approvers": v.approvals.iter().map(|a| a.approver.as_str()).collect::<Vec<_>>(),
        }),
    )?;
    Ok(a)
}

/// Makes the version that was active before the current one active again.
pub(crate) fn rollback(
    conn: &dyn Db,
    by: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<PolicyActivation, StoreError> {
    person("rolled back by", by)?;
    let Some(current) = active(conn)? else {
        return Err(StoreError::state(
            "policy",
            "governance",
            "has no active version to roll back from",
        ));
    };
    let previous: Option<String> = conn
        .prepare_cached(
            "SELECT version FROM policy_activations WHERE seq < ?1 AND version <> ?2
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![current.seq, current.version], |row| row.get(0))
        .optional()?;
    let Some(previous) = previous else {
        return Err(StoreError::state(
            "policy version",
            current.version,
            "is the only version ever active: there is nothing to roll back to",
        ));
    };
    let v = require(conn, &previous)?;
    if v.state == PolicyVersionState::Rejected {
        return Err(StoreError::state(
            "policy version",
            previous,
            "was active before but has been rejected since; activate another version",
        ));
    }
    let a = record_activation(conn, &previous, ActivationKind::Rollback, by, now_us)?;
    audit::append(
        conn,
        actor,
        now_us,
        "policy.rolled_back",
        &previous,
        &json!({"by": by.trim(), "from": current.version}),
    )?;
    Ok(a)
}

/// The version evaluated in shadow beside the active one, if any.
pub(crate) fn shadow(conn: &dyn Db) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row(params![SHADOW_KEY], |row| row.get(0))
        .optional()?)
}

/// Starts evaluating `version` in shadow (`Some`), or stops (`None`).
pub(crate) fn set_shadow(
    conn: &dyn Db,
    version: Option<&str>,
    actor: &Actor,
    now_us: i64,
) -> Result<(), StoreError> {
    let before = shadow(conn)?;
    match version {
        Some(v) => {
            let found = require(conn, v)?;
            if found.state == PolicyVersionState::Rejected {
                return Err(StoreError::state(
                    "policy version",
                    v,
                    "was rejected; shadow a version that may still be activated",
                ));
            }
            conn.prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![SHADOW_KEY, v])?;
            audit::append(
                conn,
                actor,
                now_us,
                "policy.shadow_started",
                v,
                &json!({"replaces": before}),
            )?;
        }
        None => {
            let Some(was) = before else {
                return Err(StoreError::state(
                    "policy",
                    "shadow",
                    "is not running: no version is evaluated in shadow",
                ));
            };
            conn.prepare_cached("DELETE FROM settings WHERE key = ?1")?
                .execute(params![SHADOW_KEY])?;
            audit::append(
                conn,
                actor,
                now_us,
                "policy.shadow_stopped",
                &was,
                &json!({}),
            )?;
        }
    }
    Ok(())
}
