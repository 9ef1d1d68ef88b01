#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Integration tests of the identity store against real SQLite files: the store's contract
//! (`contract`), and what only a file has (migrations, permissions, other programs).

use std::path::{Path, PathBuf};

use arbiter_store::{
    Actor, DiscoveredKind, MAX_DISCOVERED_ROWS, PinCheck, SqliteStore, Store, StoreError,
};

mod contract;

use contract::*;

/// A fresh store in its own file; `other()` opens the file again, as another process would.
struct Fixture {
    store: SqliteStore,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Fixture {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

impl Fixture {
    fn other(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.path).unwrap())
    }

    fn opener(&self) -> impl Fn() -> Box<dyn Store> + Send + 'static {
        let path = self.path.clone();
        move || Box::new(SqliteStore::open(&path).unwrap()) as Box<dyn Store>
    }
}

fn store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    Fixture {
        store: SqliteStore::open(&path).unwrap(),
        path,
        _dir: dir,
    }
}

fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

// ------------------------------------------------------------ discovered

#[test]
fn a_full_inventory_drops_new_keys_and_still_updates_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    let s = SqliteStore::open(&path).unwrap();
    s.record_sightings(&[sighting(
        DiscoveredKind::Credential,
        "fp_known",
        "10.0.0.1",
        T0,
    )])
    .unwrap();
    // Fill the table to the cap directly: one statement, no per-row calls.
    let conn = raw(&path);
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO discovered
             (kind, key, shape, first_seen_us, last_seen_us, count, sources, enforcement_points)
         SELECT 'credential', 'fp_fill_' || i, 'opaque', 1, 1, 1, '[]', '[]' FROM n",
        [i64::try_from(MAX_DISCOVERED_ROWS).unwrap() - 1],
    )
    .unwrap();
    drop(conn);

    let report = s
        .record_sightings(&[
            sighting(DiscoveredKind::Credential, "fp_new_1", "10.0.0.1", T0 + 1),
            sighting(DiscoveredKind::Credential, "fp_known", "10.0.0.2", T0 + 1),
            sighting(DiscoveredKind::AgentId, "new-agent", "10.0.0.1", T0 + 1),
        ])
        .unwrap();
    assert_eq!((report.inserted, report.updated, report.dropped), (0, 1, 2));
    let known = s.list_discovered(false).unwrap();
    assert_eq!(known.len(), usize::try_from(MAX_DISCOVERED_ROWS).unwrap());
    assert_eq!(known[0].key, "fp_known");
    assert_eq!(known[0].count, 2);
    assert!(known.iter().all(|d| d.key != "fp_new_1"));
}

// ------------------------------------------------------------ generation

#[test]
fn generation_sees_writes_from_another_handle_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    let reader = SqliteStore::open(&path).unwrap();
    let writer = SqliteStore::open(&path).unwrap();

    let g0 = reader.generation().unwrap();
    assert_eq!(
        reader.generation().unwrap(),
        g0,
        "stable while nothing changes"
    );
    writer
        .register_agent(&new_agent("bot"), &admin(), T0)
        .unwrap();
    let g1 = reader.generation().unwrap();
    assert_ne!(g1, g0);
    assert!(reader.agent("bot").unwrap().is_some());
    assert_eq!(reader.generation().unwrap(), g1);

    writer
        .insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
        .unwrap();
    let g2 = reader.generation().unwrap();
    assert_ne!(g2, g1);

    // Bookkeeping, through a handle or not, is not a change a cache holds.
    writer.touch_agents(&[("bot".to_owned(), T0)]).unwrap();
    writer
        .touch_credentials(&[("key_1".to_owned(), T0)])
        .unwrap();
    let conn = raw(&path);
    conn.execute(
        "UPDATE credentials SET last_used_us = 7 WHERE id = 'key_1'",
        [],
    )
    .unwrap();
    assert_eq!(reader.generation().unwrap(), g2);
    assert_eq!(reader.generation_now().unwrap(), Some(g2));

    // A plain connection (another program) counts too.
    conn.execute("UPDATE agents SET purpose = 'edited' WHERE id = 'bot'", [])
        .unwrap();
    let g3 = reader.generation().unwrap();
    assert_ne!(g3, g2);
    conn.execute(
        "UPDATE credentials SET revoked_at_us = 1, revoked_reason = 'by hand' WHERE id = 'key_1'",
        [],
    )
    .unwrap();
    assert_ne!(reader.generation_now().unwrap(), Some(g3));
    assert_eq!(
        reader.generation_now().unwrap(),
        Some(reader.generation().unwrap())
    );
}

/// Regression: one connection served every call, so a lookup or the generation check of the
/// decision path queued behind a write — and a write waits up to the busy timeout for another
/// process's write lock. Reads and the generation check now never wait for a write.
#[test]
fn reads_do_not_wait_for_a_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    s.insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
        .unwrap();
    let g = s.generation().unwrap();

    // Another process holds the write lock: this handle's next write waits for it.
    let mut other = raw(&path);
    let held = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let (started, start) = std::sync::mpsc::channel();
    let writer = {
        let s = std::sync::Arc::clone(&s);
        std::thread::spawn(move || {
            started.send(()).unwrap();
            s.touch_agents(&[("bot".to_owned(), T0 + 1)])
        })
    };
    start.recv().unwrap();
    for _ in 0..50 {
        assert_eq!(s.generation().unwrap(), g);
        assert_eq!(s.generation_now().unwrap(), Some(g));
        assert!(s.agent("bot").unwrap().is_some());
        assert!(s.credential("key_1").unwrap().is_some());
    }
    assert!(
        !writer.is_finished(),
        "the reads were answered only once the write was over"
    );
    held.rollback().unwrap();
    assert_eq!(writer.join().unwrap().unwrap(), 1);
    assert_eq!(s.agent("bot").unwrap().unwrap().last_seen_us, Some(T0 + 1));
}

// ----------------------------------------------------------------- audit

#[test]
fn verify_audit_names_the_first_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    let s = SqliteStore::open(&path).unwrap();
    for i in 0..4 {
        s.register_agent(&new_agent(&format!("bot-{i}")), &admin(), T0 + i)
            .unwrap();
    }
    assert_eq!(s.verify_audit().unwrap(), 4);

    let conn = raw(&path);
    // The triggers stop accidental edits ...
    let err = conn
        .execute("UPDATE audit_events SET actor_id = 'x' WHERE seq = 2", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(
        conn.execute("DELETE FROM audit_events WHERE seq = 2", [])
            .is_err()
    );
    // ... the chain catches deliberate ones.
    conn.execute_batch(
        "DROP TRIGGER audit_events_no_update;
         UPDATE audit_events SET detail = json_set(detail, '$.owner', 'mallory') WHERE seq = 2;",
    )
    .unwrap();
    let err = s.verify_audit().unwrap_err();
    match &err {
        StoreError::AuditChain { seq, .. } => assert_eq!(*seq, 2),
        other => panic!("expected an audit chain error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "audit chain broken at event 2: stored hash does not match the event's content"
    );
}

#[test]
fn verify_audit_detects_a_removed_or_relinked_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    let s = SqliteStore::open(&path).unwrap();
    for i in 0..3 {
        s.register_agent(&new_agent(&format!("bot-{i}")), &admin(), T0 + i)
            .unwrap();
    }
    let conn = raw(&path);
    conn.execute_batch(
        "DROP TRIGGER audit_events_no_delete;
         DELETE FROM audit_events WHERE seq = 2;",
    )
    .unwrap();
    let err = s.verify_audit().unwrap_err();
    assert!(
        matches!(err, StoreError::AuditChain { seq: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

// ------------------------------------------------------------- tool pins

#[test]
fn tool_pin_inputs_are_validated() {
    let s = store();
    let invalid_field = |err: StoreError| match err {
        StoreError::Invalid { field, .. } => field,
        other => panic!("expected an input error, got {other:?}"),
    };
    let d = def("v1");

    let err = s.check_tool("", "t", &h("a1"), &d, T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid MCP server name: must not be empty"
    );
    assert_eq!(
        invalid_field(s.check_tool("fs", "", &h("a1"), &d, T0).unwrap_err()),
        "tool name"
    );
    let long = "x".repeat(257);
    assert_eq!(
        invalid_field(s.check_tool(&long, "t", &h("a1"), &d, T0).unwrap_err()),
        "MCP server name"
    );
    assert_eq!(
        invalid_field(s.check_tool("fs", &long, &h("a1"), &d, T0).unwrap_err()),
        "tool name"
    );
    assert!(
        s.check_tool(&"x".repeat(256), &"y".repeat(256), &h("a1"), &d, T0)
            .is_ok()
    );
    let err = s
        .check_tool("fs", "read\nfile", &h("a1"), &d, T0)
        .unwrap_err();
    assert!(err.to_string().contains("control characters"), "{err}");
    assert_eq!(invalid_field(err), "tool name");
    assert_eq!(
        invalid_field(s.check_tool("f\u{7f}s", "t", &h("a1"), &d, T0).unwrap_err()),
        "MCP server name"
    );

    for bad in [
        "abc".to_owned(),
        format!("sha256:{}", "A1".repeat(32)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha512:{}", "a".repeat(64)),
    ] {
        let err = s.check_tool("fs", "t", &bad, &d, T0).unwrap_err();
        assert!(
            err.to_string()
                .contains("not `sha256:` followed by 64 lowercase hex digits"),
            "{err}"
        );
        assert_eq!(invalid_field(err), "tool hash");
    }
    for bad in ["", "{", "{\"a\":1} x", "nope"] {
        assert_eq!(
            invalid_field(s.check_tool("fs", "t", &h("a1"), bad, T0).unwrap_err()),
            "tool definition"
        );
    }
    let huge = format!(
        "\"{}\"",
        "x".repeat(arbiter_store::validate::MAX_TOOL_DEFINITION_BYTES)
    );
    assert_eq!(
        invalid_field(s.check_tool("fs", "t", &h("a1"), &huge, T0).unwrap_err()),
        "tool definition"
    );

    let pins = |tool: &str, hash: &str| vec![(tool.to_owned(), hash.to_owned())];
    assert_eq!(
        invalid_field(
            s.pin_tools("", &pins("t", &h("a1")), &admin(), T0)
                .unwrap_err()
        ),
        "MCP server name"
    );
    assert_eq!(
        invalid_field(
            s.pin_tools("fs", &pins("", &h("a1")), &admin(), T0)
                .unwrap_err()
        ),
        "tool name"
    );
    assert_eq!(
        invalid_field(
            s.pin_tools("fs", &pins("t", "sha256:00"), &admin(), T0)
                .unwrap_err()
        ),
        "tool hash"
    );
    let twice = vec![("t".to_owned(), h("a1")), ("t".to_owned(), h("b2"))];
    let err = s.pin_tools("fs", &twice, &admin(), T0).unwrap_err();
    assert!(err.to_string().contains("listed more than once"), "{err}");
    assert!(
        s.pin_tools("fs", &pins("t", &h("a1")), &Actor::cli(""), T0)
            .is_err()
    );

    // One bad entry refuses the whole lock.
    let mixed = vec![
        ("good".to_owned(), h("a1")),
        ("bad".to_owned(), "x".to_owned()),
    ];
    assert!(s.pin_tools("fs", &mixed, &admin(), T0).is_err());
    assert_eq!(s.tool_pin("fs", "good").unwrap(), None);

    // Only the 256x256 pin above was written.
    assert_eq!(s.list_tool_pins(None).unwrap().len(), 1);
    assert_eq!(actions(&*s), ["tool.pinned"]);

    // The schema refuses what validation would (for writers that bypass it).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = raw(&path);
    let insert = |hash: &str, definition: Option<&str>| {
        conn.execute(
            "INSERT INTO tool_pins (server, tool, hash, definition, pinned_at_us, pinned_by)
             VALUES ('fs', 't', ?1, ?2, 0, 'first-use')",
            rusqlite::params![hash, definition],
        )
    };
    assert!(insert("sha256:abc", None).is_err());
    assert!(insert(&format!("sha256:{}", "A".repeat(64)), None).is_err());
    assert!(insert(&h("a1"), Some("{")).is_err());
    insert(&h("a1"), Some("{}")).unwrap();
    assert!(
        conn.execute(
            "UPDATE tool_pins SET observed_hash = hash, observed_at_us = 1",
            []
        )
        .is_err(),
        "the observed hash differs from the pinned one"
    );
    assert!(
        conn.execute("UPDATE tool_pins SET observed_hash = ?1", [h("b2")])
            .is_err(),
        "an observed hash has its time"
    );
}

// ----------------------------------------------------- files, migrations

#[test]
fn a_version_1_database_is_migrated_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    // A version-1 file: only the first migration applied, with data and
    // audit events written the way version 1 wrote them.
    {
        let mut conn = raw(&path);
        let tx = conn.transaction().unwrap();
        tx.pragma_update(
            None,
            "application_id",
            arbiter_store::schema::APPLICATION_ID,
        )
        .unwrap();
        tx.execute_batch(arbiter_store::schema::MIGRATIONS[0])
            .unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.commit().unwrap();
    }
    {
        // Reuse today's code for the rows (and their audit events) by
        // writing through a store, then taking version 2 away again.
        let s = SqliteStore::open(&path).unwrap();
        s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
        s.insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
            .unwrap();
    }
    {
        // Versions 2 to 7 away: the pins, the change counter and its triggers, approvals.
        let conn = raw(&path);
        let triggers: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'generation_%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for t in triggers {
            conn.execute_batch(&format!("DROP TRIGGER {t};")).unwrap();
        }
        conn.execute_batch(
            "DROP TABLE tool_pins; DROP TABLE generation; DROP TABLE approvals; \
             DROP TABLE policy_activations; DROP TABLE policy_version_approvals; \
             DROP TABLE policy_versions; DROP TABLE settings; DROP TABLE charges; DROP TABLE charge_totals; DROP TABLE session_labels; \
             DROP TABLE session_calls; DROP TABLE session_call_totals; \
             DROP TABLE nodes; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let tables = |path: &Path| -> Vec<String> {
        let conn = raw(path);
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(!tables(&path).contains(&"tool_pins".to_owned()));

    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        raw(&path)
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap(),
        arbiter_store::schema::current_version()
    );
    assert!(tables(&path).contains(&"tool_pins".to_owned()));
    assert!(tables(&path).contains(&"approvals".to_owned()));
    assert!(s.list_approvals(None, 10).unwrap().is_empty());
    assert!(tables(&path).contains(&"policy_versions".to_owned()));
    assert!(s.list_policy_versions(10).unwrap().is_empty());
    assert_eq!(s.required_policy_approvals().unwrap(), 1);
    assert!(tables(&path).contains(&"charges".to_owned()));
    assert!(s.agent("bot").unwrap().is_some());
    assert!(s.credential("key_1").unwrap().is_some());
    assert_eq!(s.verify_audit().unwrap(), 2);
    assert_eq!(
        s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
            .unwrap(),
        PinCheck::Pinned
    );
    assert_eq!(s.verify_audit().unwrap(), 3);
}

// ----------------------------------------------------- files, migrations

#[test]
fn reopening_keeps_data_and_runs_no_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    }
    let version = |path: &Path| -> i64 {
        raw(path)
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&path), arbiter_store::schema::current_version());
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(version(&path), arbiter_store::schema::current_version());
    assert!(s.agent("bot").unwrap().is_some());
    assert_eq!(s.verify_audit().unwrap(), 1);
    assert_eq!(s.path(), Some(path.as_path()));
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    drop(SqliteStore::open(&path).unwrap());
    raw(&path).pragma_update(None, "user_version", 99).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 8
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade Arbiter"), "{err}");
    // Refusing did not touch the file.
    assert_eq!(
        raw(&path)
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap(),
        99
    );
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    raw(&path)
        .execute_batch("CREATE TABLE notes (body TEXT);")
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string().contains("not an Arbiter identity store"),
        "{err}"
    );

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    assert!(SqliteStore::open(&junk).is_err());
}

#[test]
fn opening_needs_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("identity.db");
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[cfg(unix)]
#[test]
fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.db");
    let s = SqliteStore::open(&path).unwrap();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "database mode {mode:o}");
    // The store runs in WAL mode, and SQLite gives the WAL the database's mode.
    let journal: String = raw(&path)
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let wal = dir.path().join("identity.db-wal");
    let mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "WAL mode {mode:o}");
}
