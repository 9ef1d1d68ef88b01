//! The one error type of the store.
//!
//! Messages are written for the person at the CLI: they name the object and
//! the id, say what is wrong, and never carry a secret. The variants map to
//! stable outcomes for callers (`NotFound` → 404, `Conflict` and
//! `InvalidState` → 409, `Invalid` → 400, the rest → 500 plus an operator
//! log line).

use std::path::PathBuf;

/// Everything that can go wrong in a [`Store`](crate::Store) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named object does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What was looked up: `agent`, `credential`, `discovered identity`.
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },

    /// An object with this id already exists.
    #[error("{what} `{id}` already exists")]
    Conflict {
        /// What was being created: `agent`, `credential`.
        what: &'static str,
        /// The id that is taken.
        id: String,
    },

    /// The object exists but its state forbids the change (a retired agent
    /// cannot become active, a revoked credential cannot be rotated, ...).
    #[error("{what} `{id}` {problem}")]
    InvalidState {
        /// The kind of object: `agent`, `credential`, `discovered identity`.
        what: &'static str,
        /// Its id.
        id: String,
        /// Why the change is refused, phrased to follow the id
        /// (`is retired and cannot become active`).
        problem: String,
    },

    /// An input value failed validation.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The input field, as the caller knows it (`agent id`, `owner`).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// The database was written by a newer version of Arbiter.
    #[error(
        "the identity store has schema version {found}, but this build of Arbiter knows \
         versions up to {supported}; upgrade Arbiter to open it"
    )]
    SchemaTooNew {
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build can use.
        supported: i64,
    },

    /// The audit trail does not verify.
    #[error("audit chain broken at event {seq}: {problem}")]
    AuditChain {
        /// The first event that fails verification.
        seq: u64,
        /// What is wrong with it.
        problem: String,
    },

    /// The database holds data this code cannot interpret, or is not an
    /// Arbiter identity store at all.
    #[error("corrupt identity store: {0}")]
    Corrupt(String),

    /// The database file could not be created or opened.
    #[error("cannot open identity store `{}`: {source}", path.display())]
    Io {
        /// The path that was being opened.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// SQLite reported an error (locked database, full disk, I/O error, ...).
    #[error("identity store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// PostgreSQL reported an error (a constraint, a lost connection, ...).
    #[error("identity store database error (PostgreSQL): {0}")]
    Postgres(String),

    /// The store cannot be reached, or could not be confirmed reachable recently enough: what
    /// it holds (revocations, suspensions) cannot be relied on, so callers fail closed.
    #[error("the identity store is unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::db::DbError> for StoreError {
    fn from(e: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match e {
            DbError::Sqlite(e) => Self::Sqlite(e),
            DbError::Postgres(e) | DbError::Unique(e) => Self::Postgres(e),
            DbError::Unavailable(e) => Self::Unavailable(e),
            e @ (DbError::NoRows | DbError::Type { .. } | DbError::Invalid { .. }) => {
                Self::Corrupt(e.to_string())
            }
        }
    }
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            problem: problem.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }

    pub(crate) fn state(
        what: &'static str,
        id: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self::InvalidState {
            what,
            id: id.into(),
            problem: problem.into(),
        }
    }
}
