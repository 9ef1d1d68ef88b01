//! The SQLite schema and its migrations.
//!
//! `MIGRATIONS[n]` brings a database from schema version `n` to `n + 1`; the
//! version lives in `PRAGMA user_version`. All pending migrations run in one
//! write transaction together with the version bump, so a crash leaves the
//! file at the old version or the new one, never in between. Migrations are
//! append-only: a released script is never edited, a change is a new entry.
//! A database whose version is newer than `MIGRATIONS.len()` is refused
//! rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// `PRAGMA application_id` of an Arbiter identity store (`"ARBS"`), so that
/// another application's SQLite file is refused instead of migrated.
pub const APPLICATION_ID: i32 = 0x4152_4253;

/// Schema version 1: agents, credentials, discovered identities, audit.
const V1: &str = r"
CREATE TABLE agents (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    owner         TEXT    NOT NULL CHECK (owner <> ''),
    purpose       TEXT    NOT NULL,
    environment   TEXT    NOT NULL CHECK (environment IN ('dev', 'staging', 'prod')),
    status        TEXT    NOT NULL CHECK (status IN ('active', 'suspended', 'retired')),
    attributes    TEXT    NOT NULL CHECK (json_type(attributes) = 'object'),
    created_us    INTEGER NOT NULL,
    updated_us    INTEGER NOT NULL,
    last_seen_us  INTEGER
) STRICT;

CREATE INDEX agents_owner ON agents (owner);

CREATE TABLE credentials (
    id             TEXT    NOT NULL PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('agent_key', 'admin_token', 'pep_token')),
    agent_id       TEXT    REFERENCES agents (id) ON UPDATE RESTRICT ON DELETE RESTRICT,
    name           TEXT    NOT NULL,
    role           TEXT,
    hash           TEXT    NOT NULL CHECK (hash <> ''),
    created_us     INTEGER NOT NULL,
    expires_at_us  INTEGER,
    revoked_at_us  INTEGER,
    revoked_reason TEXT,
    last_used_us   INTEGER,
    replaced_by    TEXT    REFERENCES credentials (id) ON UPDATE RESTRICT ON DELETE RESTRICT,
    CHECK ((kind = 'agent_key') = (agent_id IS NOT NULL)),
    CHECK ((kind = 'admin_token') = (role IS NOT NULL))
) STRICT;

CREATE INDEX credentials_agent ON credentials (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX credentials_kind ON credentials (kind, created_us);

CREATE TABLE discovered (
    id                 INTEGER NOT NULL PRIMARY KEY,
    kind               TEXT    NOT NULL CHECK (kind IN ('credential', 'agent_id')),
    key                TEXT    NOT NULL,
    shape              TEXT    NOT NULL,
    first_seen_us      INTEGER NOT NULL,
    last_seen_us       INTEGER NOT NULL,
    count              INTEGER NOT NULL CHECK (count >= 1),
    sources            TEXT    NOT NULL CHECK (json_type(sources) = 'array'),
    enforcement_points TEXT    NOT NULL CHECK (json_type(enforcement_points) = 'array'),
    adopted_as         TEXT    REFERENCES agents (id) ON UPDATE RESTRICT ON DELETE RESTRICT,
    UNIQUE (kind, key)
) STRICT;

CREATE INDEX discovered_last_seen ON discovered (last_seen_us DESC, id);

CREATE TABLE audit_events (
    seq         INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at_us       INTEGER NOT NULL,
    actor_kind  TEXT    NOT NULL,
    actor_id    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
) STRICT;

-- Append-only. This stops mistakes, not an attacker with the file: the hash
-- chain is what detects deliberate edits.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
";

/// Schema version 2: MCP tool pins.
///
/// One row per tool of an MCP server: the approved definition hash (and the
/// definition, unless pinned from a lock file), and a different definition
/// seen since, pending an administrator's approval. The primary key's index
/// serves the gateway's lookup and the listing order.
const V2: &str = r"
CREATE TABLE tool_pins (
    server              TEXT    NOT NULL CHECK (server <> '' AND length(CAST(server AS BLOB)) <= 256),
    tool                TEXT    NOT NULL CHECK (tool <> '' AND length(CAST(tool AS BLOB)) <= 256),
    hash                TEXT    NOT NULL CHECK (
                            length(hash) = 71 AND substr(hash, 1, 7) = 'sha256:'
                            AND substr(hash, 8) NOT GLOB '*[^0-9a-f]*'),
    definition          TEXT    CHECK (definition IS NULL OR json_valid(definition)),
    pinned_at_us        INTEGER NOT NULL,
    pinned_by           TEXT    NOT NULL CHECK (pinned_by <> ''),
    observed_hash       TEXT    CHECK (observed_hash IS NULL OR (
                            length(observed_hash) = 71 AND substr(observed_hash, 1, 7) = 'sha256:'
                            AND substr(observed_hash, 8) NOT GLOB '*[^0-9a-f]*'
                            AND observed_hash <> hash)),
    observed_definition TEXT    CHECK (observed_definition IS NULL OR json_valid(observed_definition)),
    observed_at_us      INTEGER,
    PRIMARY KEY (server, tool),
    CHECK ((observed_hash IS NULL) = (observed_at_us IS NULL)),
    CHECK (observed_hash IS NOT NULL OR observed_definition IS NULL)
) STRICT;
";

/// Schema version 3: the change counter behind [`Store::generation`](crate::Store::generation).
///
/// One row, bumped by triggers in the transaction of every change a cache of agents,
/// credentials or tool pins must see — whichever connection or program makes it — and of
/// every audit event (every administrative change). Runtime bookkeeping (`last_seen_us`,
/// `last_used_us`, the discovered inventory) does not move it: `UPDATE OF` lists every other
/// column. Reading it is one indexed read on any connection, so the decision path can check it
/// without sharing a connection (or a lock) with writers.
const V3: &str = r"
CREATE TABLE generation (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;

INSERT INTO generation (id, value) VALUES (1, 1);

CREATE TRIGGER generation_agents_insert AFTER INSERT ON agents
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER generation_agents_delete AFTER DELETE ON agents
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER generation_agents_update
AFTER UPDATE OF id, name, owner, purpose, environment, status, attributes, created_us, updated_us
ON agents
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;

CREATE TRIGGER generation_credentials_insert AFTER INSERT ON credentials
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER generation_credentials_delete AFTER DELETE ON credentials
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER generation_credentials_update
AFTER UPDATE OF id, kind, agent_id, name, role, hash, created_us, expires_at_us, revoked_at_us,
    revoked_reason, replaced_by
ON credentials
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;

CREATE TRIGGER generation_tool_pins_insert AFTER INSERT ON tool_pins
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER generation_tool_pins_delete AFTER DELETE ON tool_pins
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER generation_tool_pins_update AFTER UPDATE ON tool_pins
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;

CREATE TRIGGER generation_audit_events_insert AFTER INSERT ON audit_events
BEGIN UPDATE generation SET value = value + 1 WHERE id = 1; END;
";

/// Schema version 4: human approvals.
///
/// One row per approval a permit with `@require_approval` asked for: what it approves (the
/// `binding`, a digest of the exact request and policy version), for whom, who may approve it,
/// its state (`pending`, then `approved` or `denied`; an approved one becomes `used` by the one
/// decision it allows) and its expiry. The decision path looks approvals up by binding.
/// Approving and denying are audited; nothing here moves the generation counter (no cache
/// holds approvals).
const V4: &str = r"
CREATE TABLE approvals (
    id             TEXT    NOT NULL PRIMARY KEY CHECK (id <> '' AND length(id) <= 64),
    binding        TEXT    NOT NULL CHECK (
                       length(binding) = 71 AND substr(binding, 1, 7) = 'sha256:'
                       AND substr(binding, 8) NOT GLOB '*[^0-9a-f]*'),
    agent_id       TEXT    NOT NULL CHECK (agent_id <> ''),
    agent_owner    TEXT    NOT NULL,
    action         TEXT    NOT NULL CHECK (action <> ''),
    resource       TEXT    NOT NULL CHECK (resource <> ''),
    request        TEXT    NOT NULL CHECK (json_valid(request)),
    policy_version TEXT    NOT NULL,
    policies       TEXT    NOT NULL CHECK (json_valid(policies)),
    approvers      TEXT    NOT NULL CHECK (approvers IN ('any', 'owner', 'not_owner')),
    state          TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')),
    created_us     INTEGER NOT NULL,
    expires_us     INTEGER NOT NULL,
    decision_id    TEXT    NOT NULL,
    decided_by     TEXT,
    decided_us     INTEGER,
    reason         TEXT,
    used_us        INTEGER,
    used_by_decision TEXT,
    logged_us      INTEGER,
    CHECK ((state = 'pending') = (decided_by IS NULL)),
    CHECK ((state = 'used') = (used_us IS NOT NULL))
) STRICT;

CREATE INDEX approvals_by_binding ON approvals (binding, created_us);
CREATE INDEX approvals_by_state ON approvals (state, created_us);
CREATE INDEX approvals_to_log ON approvals (decided_us) WHERE decided_us IS NOT NULL AND logged_us IS NULL;
";

/// Schema version 5: governed policy versions, their approvals and activations, settings.
const V5: &str = r"
CREATE TABLE policy_versions (
    version         TEXT    NOT NULL PRIMARY KEY CHECK (version LIKE 'sha256:%'),
    author          TEXT    NOT NULL CHECK (author <> ''),
    message         TEXT    NOT NULL,
    proposed_us     INTEGER NOT NULL,
    files           TEXT    NOT NULL CHECK (json_type(files) = 'array'),
    owners          TEXT    NOT NULL CHECK (json_type(owners) = 'object'),
    tests_passed    INTEGER NOT NULL CHECK (tests_passed >= 0),
    tests_failed    INTEGER NOT NULL CHECK (tests_failed >= 0),
    state           TEXT    NOT NULL CHECK (state IN ('proposed', 'rejected')),
    rejected_by     TEXT,
    rejected_us     INTEGER,
    rejected_reason TEXT,
    CHECK ((state = 'rejected') = (rejected_by IS NOT NULL))
) STRICT;

CREATE INDEX policy_versions_by_time ON policy_versions (proposed_us);

CREATE TABLE policy_version_approvals (
    version  TEXT    NOT NULL REFERENCES policy_versions (version)
                     ON UPDATE RESTRICT ON DELETE RESTRICT,
    approver TEXT    NOT NULL CHECK (approver <> ''),
    at_us    INTEGER NOT NULL,
    PRIMARY KEY (version, approver)
) STRICT;

CREATE TABLE policy_activations (
    seq     INTEGER NOT NULL PRIMARY KEY,
    version TEXT    NOT NULL REFERENCES policy_versions (version)
                    ON UPDATE RESTRICT ON DELETE RESTRICT,
    kind    TEXT    NOT NULL CHECK (kind IN ('activate', 'rollback')),
    by      TEXT    NOT NULL CHECK (by <> ''),
    at_us   INTEGER NOT NULL
) STRICT;

CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Schema version 6: sliding-window counters (rate limits and budgets kept in the store,
/// see [`crate::charges`]). Nothing here moves the generation counter.
const V6: &str = r"
CREATE TABLE charges (
    seq         INTEGER NOT NULL PRIMARY KEY,
    key         TEXT    NOT NULL CHECK (key <> '' AND length(CAST(key AS BLOB)) <= 512),
    at_us       INTEGER NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount >= 0),
    decision_id TEXT    NOT NULL
) STRICT;

CREATE INDEX charges_by_key ON charges (key, at_us);
CREATE INDEX charges_by_time ON charges (at_us);
CREATE INDEX charges_by_decision ON charges (decision_id);

-- The sum of each key's rows in `charges`, kept with them, so that a charge reads one row.
CREATE TABLE charge_totals (
    key   TEXT    NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL CHECK (total >= 0)
) STRICT;
";

/// Schema version 7: the nodes of a fleet (see [`crate::nodes`]).
const V7: &str = r"
CREATE TABLE nodes (
    id              TEXT    NOT NULL PRIMARY KEY CHECK (id <> '' AND length(CAST(id AS BLOB)) <= 128),
    public_key      TEXT    NOT NULL CHECK (length(public_key) = 64),
    url             TEXT,
    registered_us   INTEGER NOT NULL,
    last_seen_us    INTEGER NOT NULL,
    checkpoint      TEXT,
    checkpoint_size INTEGER,
    CHECK ((checkpoint IS NULL) = (checkpoint_size IS NULL))
) STRICT;
";

/// Schema version 8: session labels a fleet shares (see [`crate::session_labels`]).
const V8: &str = r"
CREATE TABLE session_labels (
    owner       TEXT    NOT NULL CHECK (owner <> ''),
    session     TEXT    NOT NULL CHECK (session <> ''),
    label       TEXT    NOT NULL CHECK (label <> ''),
    decision_id TEXT    NOT NULL,
    at_us       INTEGER NOT NULL,
    PRIMARY KEY (owner, session, label)
) STRICT;

CREATE INDEX session_labels_by_time ON session_labels (at_us);
CREATE INDEX session_labels_by_decision ON session_labels (decision_id);

-- The allowed calls of sessions whose policies read their counts (the last hour of each).
CREATE TABLE session_calls (
    seq         INTEGER NOT NULL PRIMARY KEY,
    owner       TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    call_key    TEXT    NOT NULL,
    decision_id TEXT    NOT NULL,
    at_us       INTEGER NOT NULL
) STRICT;

CREATE INDEX session_calls_by_key ON session_calls (owner, session, call_key, at_us);
CREATE INDEX session_calls_by_time ON session_calls (at_us);
CREATE INDEX session_calls_by_decision ON session_calls (decision_id);

-- Every allowed call of a session, counted.
CREATE TABLE session_call_totals (
    owner   TEXT    NOT NULL,
    session TEXT    NOT NULL,
    calls   INTEGER NOT NULL CHECK (calls >= 0),
    at_us   INTEGER NOT NULL,
    PRIMARY KEY (owner, session)
) STRICT;
";

/// The migrations, in order; the schema version is the number applied.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the database up to [`current_version`], or refuses it.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let app_id: i32 = tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let supported = current_version();

    if app_id != APPLICATION_ID && app_id != 0 {
        return Err(StoreError::Corrupt(format!(
            "the file belongs to another application (application_id {app_id:#x})"
        )));
    }
    if version == 0 {
        let objects: i64 = tx.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
            [],
            |row| row.get(0),
        )?;
        if objects > 0 {
            return Err(StoreError::Corrupt(
                "the file is an SQLite database with tables but not an Arbiter identity store"
                    .to_owned(),
            ));
        }
    } else if app_id == 0 {
        return Err(StoreError::Corrupt(
            "the file is an SQLite database but not an Arbiter identity store".to_owned(),
        ));
    }
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "negative schema version {version}"
        )));
    }
    if version == supported {
        // Nothing to do; dropping the transaction ends it.
        return Ok(());
    }

    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    for (index, script) in MIGRATIONS.iter().enumerate() {
        let to = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if to <= version {
            continue;
        }
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", to)?;
    }
    tx.commit()?;
    Ok(())
}
