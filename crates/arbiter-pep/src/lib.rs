//! The enforcement-point side of Arbiter, shared by every enforcement point (the MCP gateway,
//! the SQL guard, `arbiter exec` and forward-auth).
//!
//! An enforcement point turns what an agent asks to do into [`Ask`]s, gets a [`Verdict`] for
//! each from a [`Decider`], acts on it, and shows a refusal as a [`Denial`], in the same words
//! everywhere. Decisions come from a decision point embedded in the process
//! ([`LocalDecider`], which records each decision in its log before answering) or a running
//! `arbiter serve` asked over AuthZEN ([`RemoteDecider`]); [`Source`] opens one from the
//! decision-source settings (`--pdp URL` or `--policies DIR --data DIR`). When no decision
//! can be taken, the [`DecideError`] says why, and the enforcement point refuses (fail
//! closed).
//!
//! Every ask names the caller's session ([`Ask::session`]; see `arbiter_pdp::sessions`): the
//! decision point keeps session labels, rate limits and budgets per agent and session.

mod decider;
mod error;
pub mod http;
pub mod jsonrpc;
mod local;
mod remote;
mod source;
pub mod sse;
mod verdict;

pub use decider::{Ahead, BoxFuture, Decider, Durable, Settle, decide_ahead_within, decide_within};
pub use error::{AuthError, DecideError, SourceError};
pub use http::bearer;
pub use local::LocalDecider;
pub use remote::RemoteDecider;
pub use remote::SESSION_HEADER;
#[cfg(feature = "clap")]
pub use source::SourceArgs;
pub use source::{LocalLogMode, Source, SourceConfig, Usage};
pub use verdict::{Ask, Denial, Verdict, verdict_of};

pub use arbiter_pdp::sessions::{MAX_SESSION_ID_BYTES, valid_session_id};

/// The environment variable that names the session an agent runs in, set by whoever launched
/// it (`arbiter exec` and `arbiter mcp stdio` read it).
pub const SESSION_ENV: &str = "ARBITER_SESSION";

/// [`SESSION_ENV`] is set to something that is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SESSION_ENV} must be 1 to {MAX_SESSION_ID_BYTES} visible ASCII characters")]
pub struct InvalidSessionEnv;

/// The session named by [`SESSION_ENV`]: `Ok(None)` when it is not set (or empty), an error
/// when it is not a valid session id.
pub fn session_from_env() -> Result<Option<String>, InvalidSessionEnv> {
    match std::env::var(SESSION_ENV) {
        Ok(s) if s.is_empty() => Ok(None),
        Ok(s) if valid_session_id(&s) => Ok(Some(s)),
        Ok(_) | Err(std::env::VarError::NotUnicode(_)) => Err(InvalidSessionEnv),
        Err(std::env::VarError::NotPresent) => Ok(None),
    }
}

/// A fresh session id for a session the enforcement point starts (an MCP stdio process, a SQL
/// connection): `<kind>:<UUIDv7>`.
pub fn new_session_id(kind: &str) -> String {
    format!("{kind}:{}", uuid::Uuid::now_v7())
}

/// `word` as one word of a POSIX shell command line (for the commands an operator is told to
/// run): as it is when it is made only of characters no shell treats specially, else
/// single-quoted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
