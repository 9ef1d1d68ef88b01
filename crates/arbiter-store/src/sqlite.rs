//! [`SqliteStore`]: the [`Store`] on one embedded SQLite file.
//!
//! Every call is one transaction. Writes use `BEGIN IMMEDIATE`, so two
//! processes sharing the file queue on SQLite's write lock (up to the 5 s
//! busy timeout) instead of failing half-way with a lock upgrade error. The
//! file is opened in WAL mode, where readers never wait for a writer.
//!
//! A file store holds three connections, each behind its own mutex, so that
//! nothing on the decision path queues behind a write:
//!
//! - the writer, for every change (and its read-back);
//! - the reader, for every read: a lookup on a cache miss, a listing, the
//!   audit trail — it never waits for the writer, here or in another process;
//! - the probe, for [`Store::generation_now`] only: one indexed read that
//!   waits for nothing (busy timeout zero), so an async caller may make it on
//!   its own thread.
//!
//! An in-memory store has one connection for all three (another connection
//! would see another database).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::audit::{self, Verifier};
use crate::model::{
    Actor, Agent, AgentFilter, AgentPatch, AgentStatus, AuditEvent, Credential, CredentialFilter,
    Discovered, NewAgent, NewCredential, PinCheck, Sighting, SightingsReport, ToolPin,
};
use crate::model::{Approval, ApprovalLookup, ApprovalState, NewApproval};
use crate::model::{NewPolicyVersion, PolicyActivation, PolicyVersion};
use crate::{
    Store, StoreError, agents, approvals, credentials, discovered, pins, policy_versions, schema,
    validate,
};

/// How long a call waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The identity store on an SQLite database file.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    /// `None` for an in-memory store: the writer reads.
    reader: Option<Mutex<Connection>>,
    /// `None` for an in-memory store: the writer answers.
    probe: Option<Mutex<Connection>>,
    /// `None` for an in-memory store.
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field(
                "path",
                &self.path.as_deref().unwrap_or(Path::new(":memory:")),
            )
            .finish_non_exhaustive()
    }
}

/// A connection. A panic in another thread while it held the lock left no
/// transaction open (a dropped `Transaction` rolls back), so a poisoned lock
/// is safe to take over.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (mode 0600 on Unix) if
    /// it does not exist, and brings its schema up to date.
    ///
    /// The parent directory must exist. A file written by a newer Arbiter
    /// ([`StoreError::SchemaTooNew`]) or by another application
    /// ([`StoreError::Corrupt`]) is refused and left untouched.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path)?;
        let open = || {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        };
        let mut writer = open()?;
        prepare(&mut writer)?;
        // Opened once the writer has put the file in WAL mode and migrated it; they never
        // write (`query_only`).
        let reader = open()?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        reader.set_prepared_statement_cache_capacity(64);
        reader.pragma_update(None, "query_only", true)?;
        let probe = open()?;
        // INVARIANT: the probe waits for nothing; a lock it would have to wait for is
        // `SQLITE_BUSY` at once, which `generation_now` answers as "cannot tell now".
        probe.busy_timeout(Duration::ZERO)?;
        probe.pragma_update(None, "query_only", true)?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Some(Mutex::new(reader)),
            probe: Some(Mutex::new(probe)),
            path: Some(path.to_path_buf()),
        })
    }

    /// A fresh store in memory, gone when dropped; for tests and tools.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        prepare(&mut conn)?;
        Ok(Self {
            writer: Mutex::new(conn),
            reader: None,
            probe: None,
            path: None,
        })
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` in a read transaction on the reader.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(self.reader.as_ref().unwrap_or(&self.writer));
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a write transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs an audited change after checking the actor.
    fn change<T>(
        &self,
        actor: &Actor,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        validate::actor(actor)?;
        self.write(f)
    }
}

/// Sets up the writing connection of a store and brings the schema up to date.
fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Returns the mode now in force: `wal` for a file, `memory` in memory.
    let _mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    schema::migrate(conn)
}

/// Creates `path` with mode 0600 if it does not exist; leaves an existing
/// file as it is.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("directory `{}` does not exist", parent.display()),
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(io)
}

/// The change counter (schema version 3), in its own read transaction.
fn read_generation(conn: &Connection) -> Result<u64, rusqlite::Error> {
    let value: i64 = conn
        .prepare_cached("SELECT value FROM generation WHERE id = 1")?
        .query_row([], |row| row.get(0))?;
    // Only inequality means anything: a negative value (a hand-edited file) is still a value.
    Ok(value.cast_unsigned())
}

impl Store for SqliteStore {
    /// One indexed read of the change counter, on the reader.
    fn generation(&self) -> Result<u64, StoreError> {
        let conn = lock(self.reader.as_ref().unwrap_or(&self.writer));
        Ok(read_generation(&conn)?)
    }

    /// The same read on the probe, which shares its lock with no other call
    /// and waits for no other connection.
    fn generation_now(&self) -> Result<Option<u64>, StoreError> {
        let conn = match &self.probe {
            Some(probe) => lock(probe),
            // In memory the probe is the writer: a call in progress is a wait.
            None => match self.writer.try_lock() {
                Ok(conn) => conn,
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            },
        };
        match read_generation(&conn) {
            Ok(generation) => Ok(Some(generation)),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn register_agent(
        &self,
        new: &NewAgent,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Agent, StoreError> {
        self.change(actor, |tx| agents::register(tx, new, actor, now_us))
    }

    fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        self.read(|conn| agents::get(conn, id))
    }

    fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError> {
        self.read(|conn| agents::list(conn, filter))
    }

    fn update_agent(
        &self,
        id: &str,
        patch: &AgentPatch,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Agent, StoreError> {
        self.change(actor, |tx| agents::update(tx, id, patch, actor, now_us))
    }

    fn set_agent_status(
        &self,
        id: &str,
        status: AgentStatus,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Agent, StoreError> {
        self.change(actor, |tx| {
            agents::set_status(tx, id, status, actor, now_us)
        })
    }

    fn touch_agents(&self, seen: &[(String, i64)]) -> Result<usize, StoreError> {
        if seen.is_empty() {
            return Ok(0);
        }
        self.write(|tx| agents::touch(tx, seen))
    }

    fn insert_credential(
        &self,
        new: &NewCredential,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Credential, StoreError> {
        self.change(actor, |tx| credentials::insert(tx, new, actor, now_us))
    }

    fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        self.read(|conn| credentials::get(conn, id))
    }

    fn list_credentials(&self, filter: &CredentialFilter) -> Result<Vec<Credential>, StoreError> {
        self.read(|conn| credentials::list(conn, filter))
    }

    fn rotate_credential(
        &self,
        old_id: &str,
        new: &NewCredential,
        old_expires_at_us: i64,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(Credential, Credential), StoreError> {
        self.change(actor, |tx| {
            credentials::rotate(tx, old_id, new, old_expires_at_us, actor, now_us)
        })
    }

    fn revoke_credential(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Credential, StoreError> {
        self.change(actor, |tx| {
            credentials::revoke(tx, id, reason, actor, now_us)
        })
    }

    fn revoke_agent_credentials(
        &self,
        agent_id: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<usize, StoreError> {
        self.change(actor, |tx| {
            credentials::revoke_for_agent(tx, agent_id, reason, actor, now_us)
        })
    }

    fn touch_credentials(&self, used: &[(String, i64)]) -> Result<usize, StoreError> {
        if used.is_empty() {
            return Ok(0);
        }
        self.write(|tx| credentials::touch(tx, used))
    }

    fn record_sightings(&self, sightings: &[Sighting]) -> Result<SightingsReport, StoreError> {
        if sightings.is_empty() {
            return Ok(SightingsReport::default());
        }
        self.write(|tx| discovered::record(tx, sightings))
    }

    fn list_discovered(&self, include_adopted: bool) -> Result<Vec<Discovered>, StoreError> {
        self.read(|conn| discovered::list(conn, include_adopted))
    }

    fn discovered(&self, id: i64) -> Result<Option<Discovered>, StoreError> {
        self.read(|conn| discovered::get(conn, id))
    }

    fn mark_adopted(
        &self,
        id: i64,
        agent_id: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Discovered, StoreError> {
        self.change(actor, |tx| {
            discovered::adopt(tx, id, agent_id, actor, now_us)
        })
    }

    /// Validates, then reads `hash, observed_hash` by primary key; only a
    /// first use or a new different hash opens a write transaction, which
    /// re-reads the row before deciding.
    fn check_tool(
        &self,
        server: &str,
        tool: &str,
        hash: &str,
        definition: &str,
        now_us: i64,
    ) -> Result<PinCheck, StoreError> {
        pins::validate_check(server, tool, hash, definition)?;
        if let Some(decided) = self.read(|conn| pins::check_read(conn, server, tool, hash))? {
            return Ok(decided);
        }
        self.change(&pins::first_use_actor(), |tx| {
            pins::check(tx, server, tool, hash, definition, now_us)
        })
    }

    fn tool_pin(&self, server: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
        self.read(|conn| pins::get(conn, server, tool))
    }

    fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
        self.read(|conn| pins::list(conn, server))
    }

    fn approve_tool(
        &self,
        server: &str,
        tool: &str,
        expected_hash: Option<&str>,
        actor: &Actor,
        now_us: i64,
    ) -> Result<ToolPin, StoreError> {
        self.change(actor, |tx| {
            pins::approve(tx, server, tool, expected_hash, actor, now_us)
        })
    }

    fn pin_tools(
        &self,
        server: &str,
        pins: &[(String, String)],
        actor: &Actor,
        now_us: i64,
    ) -> Result<usize, StoreError> {
        self.change(actor, |tx| pins::pin_many(tx, server, pins, actor, now_us))
    }

    fn unpin_tool(
        &self,
        server: &str,
        tool: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.change(actor, |tx| pins::unpin(tx, server, tool, actor, now_us))
    }

    fn approval_for(&self, new: &NewApproval, now_us: i64) -> Result<ApprovalLookup, StoreError> {
        self.write(|tx| approvals::lookup(tx, new, now_us))
    }

    fn unuse_approval(&self, id: &str, decision_id: &str) -> Result<(), StoreError> {
        self.write(|tx| approvals::unuse(tx, id, decision_id))
    }

    fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Approval, StoreError> {
        self.change(actor, |tx| {
            approvals::decide(tx, id, approve, approver, reason, actor, now_us)
        })
    }

    fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.read(|conn| approvals::get(conn, id))
    }

    fn approval_steps_to_log(&self, limit: usize) -> Result<Vec<Approval>, StoreError> {
        self.read(|conn| approvals::steps_to_log(conn, limit))
    }

    fn approval_step_logged(&self, id: &str, now_us: i64) -> Result<(), StoreError> {
        self.write(|tx| approvals::step_logged(tx, id, now_us))
    }

    fn list_approvals(
        &self,
        state: Option<ApprovalState>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        self.read(|conn| approvals::list(conn, state, limit))
    }

    fn propose_policy_version(
        &self,
        new: &NewPolicyVersion,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyVersion, StoreError> {
        self.change(actor, |tx| policy_versions::propose(tx, new, actor, now_us))
    }

    fn approve_policy_version(
        &self,
        version: &str,
        approver: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyVersion, StoreError> {
        self.change(actor, |tx| {
            policy_versions::approve(tx, version, approver, actor, now_us)
        })
    }

    fn reject_policy_version(
        &self,
        version: &str,
        by: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyVersion, StoreError> {
        self.change(actor, |tx| {
            policy_versions::reject(tx, version, by, reason, actor, now_us)
        })
    }

    fn activate_policy_version(
        &self,
        version: &str,
        by: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyActivation, StoreError> {
        self.change(actor, |tx| {
            policy_versions::activate(tx, version, by, actor, now_us)
        })
    }

    fn rollback_policy_version(
        &self,
        by: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyActivation, StoreError> {
        self.change(actor, |tx| policy_versions::rollback(tx, by, actor, now_us))
    }

    fn policy_version(&self, version: &str) -> Result<Option<PolicyVersion>, StoreError> {
        self.read(|conn| policy_versions::get(conn, version))
    }

    fn resolve_policy_version(&self, version: &str) -> Result<String, StoreError> {
        self.read(|conn| policy_versions::resolve(conn, version))
    }

    fn list_policy_versions(&self, limit: usize) -> Result<Vec<PolicyVersion>, StoreError> {
        self.read(|conn| policy_versions::list(conn, limit))
    }

    fn policy_activations(&self, limit: usize) -> Result<Vec<PolicyActivation>, StoreError> {
        self.read(|conn| policy_versions::activations(conn, limit))
    }

    fn policy_shadow(&self) -> Result<Option<String>, StoreError> {
        self.read(policy_versions::shadow)
    }

    fn set_policy_shadow(
        &self,
        version: Option<&str>,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.change(actor, |tx| {
            policy_versions::set_shadow(tx, version, actor, now_us)
        })
    }

    fn required_policy_approvals(&self) -> Result<u32, StoreError> {
        self.read(policy_versions::required_approvals)
    }

    fn set_required_policy_approvals(
        &self,
        n: u32,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.change(actor, |tx| {
            policy_versions::set_required_approvals(tx, n, actor, now_us)
        })
    }

    fn list_audit(
        &self,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|conn| audit::list(conn, after_seq, limit))
    }

    fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.read(audit::head)
    }

    /// Reads the chain in batches, releasing the lock between them so that
    /// a long verification does not stall the decision path; events
    /// appended meanwhile are verified too.
    fn verify_audit(&self) -> Result<u64, StoreError> {
        let mut verifier = Verifier::new();
        loop {
            let batch = self
                .read(|conn| audit::stored_after(conn, verifier.last_seq(), audit::VERIFY_BATCH))?;
            verifier.check(&batch)?;
            if batch.len() < audit::VERIFY_BATCH {
                return Ok(verifier.last_seq());
            }
        }
    }
}
