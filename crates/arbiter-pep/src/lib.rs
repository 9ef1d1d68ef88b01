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

mod decider;
mod error;
mod local;
mod remote;
mod source;
mod verdict;

pub use decider::{BoxFuture, Decider, Settle, decide_within};
pub use error::{AuthError, DecideError, SourceError};
pub use local::LocalDecider;
pub use remote::RemoteDecider;
#[cfg(feature = "clap")]
pub use source::SourceArgs;
pub use source::{LocalLogMode, Source, SourceConfig, Usage};
pub use verdict::{Ask, Denial, Verdict, verdict_of};
