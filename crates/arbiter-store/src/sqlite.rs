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

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::backend::Backend;
use crate::db::Db;
use crate::{StoreError, schema};

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

impl Backend for SqliteStore {
    /// One file, or memory: one machine.
    const SHARED: bool = false;

    /// A read transaction on the reader.
    fn read<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = lock(self.reader.as_ref().unwrap_or(&self.writer));
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&*tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// A write transaction (`BEGIN IMMEDIATE`: SQLite's one write lock, taken up front).
    fn write<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&*tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// One indexed read of the change counter, on the reader.
    fn counter(&self) -> Result<u64, StoreError> {
        let conn = lock(self.reader.as_ref().unwrap_or(&self.writer));
        Ok(read_generation(&conn)?)
    }

    /// The same read on the probe, which shares its lock with no other call
    /// and waits for no other connection.
    fn counter_now(&self) -> Result<Option<u64>, StoreError> {
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

    /// A file or memory is always there.
    fn backend_health(&self) -> crate::Health {
        crate::Health::embedded()
    }
}
