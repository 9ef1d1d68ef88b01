//! Why a gap map could not be built. Messages name the source (a file, a DSN without its
//! password, the log, the registry) and what is wrong with it; never a password, a key or the
//! contents of a file.

use std::path::PathBuf;

/// A source of the gap map that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GapError {
    /// An argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// The decision log cannot be read.
    #[error("cannot read the decision log at `{dir}`: {why}")]
    Log {
        /// The log directory.
        dir: PathBuf,
        /// What failed.
        why: String,
    },
    /// The registry cannot be read.
    #[error("cannot read the registry: {0}")]
    Store(String),
    /// An MCP client configuration file cannot be read or is not one.
    #[error("MCP configuration `{path}`: {why}")]
    McpConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A PostgreSQL database cannot be read.
    #[error("PostgreSQL at {dsn}: {why}")]
    Postgres {
        /// The DSN, without its password.
        dsn: String,
        /// What failed.
        why: String,
    },
    /// An access log or host list cannot be read.
    #[error("access log `{path}`: {why}")]
    AccessLog {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}
