//! Why no decision could be taken. Every one of these is a refusal at the enforcement point
//! (fail closed); they differ in what the operator should look at.

use std::time::Duration;

/// No decision could be taken: the enforcement point refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The decision point could not be connected to, or the connection failed.
    #[error("the decision point at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    /// The decision point did not answer within the enforcement point's timeout.
    #[error("the decision point at {url} did not answer within {} ms", .after.as_millis())]
    Timeout { url: String, after: Duration },
    /// The decision point answered with an HTTP status other than 200.
    #[error("the decision point at {url} answered {status}{}", status_detail(.code.as_deref(), .message.as_deref()))]
    Status {
        url: String,
        status: u16,
        /// The AuthZEN error code of the answer, when it has one.
        code: Option<String>,
        /// The AuthZEN error message of the answer, when it has one.
        message: Option<String>,
    },
    /// The decision point answered something that is not a decision for every question.
    #[error("the decision point at {url} {problem}")]
    BadAnswer { url: String, problem: String },
    /// The enforcement point's own deadline passed before a decision came.
    #[error("no decision within {} ms", .after.as_millis())]
    Deadline { after: Duration },
    /// The decider answered another number of decisions than questions asked.
    #[error("{got} decisions for {asked} questions")]
    Count { asked: usize, got: usize },
    /// The question could not be put (a header that cannot be sent, a task that failed).
    #[error("the decision could not be asked for: {0}")]
    Internal(String),
}

fn status_detail(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(": {c}: {m}"),
        (None, Some(m)) => format!(": {m}"),
        (Some(c), None) => format!(": {c}"),
        (None, None) => String::new(),
    }
}

impl DecideError {
    /// Whether the decision point was too slow (as opposed to unreachable or wrong).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Deadline { .. })
    }
}

/// Why a credential checked ahead of any decision was refused (see
/// [`crate::Decider::authenticate`]). Every message is one the caller may be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A valid credential, but an enforcement point's, not an agent's.
    #[error("a PEP token is not an agent credential")]
    NotAnAgent,
    /// No credential was given.
    #[error("no credential was given")]
    NoCredential,
    /// The registry refused the credential (unknown, expired, revoked, wrong address); the
    /// reason is the one its caller may see.
    #[error("{0}")]
    Refused(String),
}

/// Why a decision source cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Neither `--pdp` nor `--policies` was given.
    #[error(
        "no decision point: give `--pdp URL` (ARBITER_PDP) to ask a running `arbiter serve`, or \
         `--policies DIR` (ARBITER_POLICIES) with `--data DIR` (ARBITER_DATA) to decide in this \
         process"
    )]
    Missing,
    /// Both were given.
    #[error(
        "give either `--pdp URL` (ARBITER_PDP) or `--policies DIR` (ARBITER_POLICIES), not both"
    )]
    Both,
    /// `--pdp` is not an `http://` or `https://` URL.
    #[error("`--pdp {0}` is not an http:// or https:// URL")]
    BadUrl(String),
    /// The data directory of an embedded decision point does not exist.
    #[error(
        "the data directory `{0}` does not exist (register the agent and issue its key there \
         first, or give --data)"
    )]
    NoDataDir(String),
    /// The embedded decision point cannot be opened (policies, issuers, log, registry).
    #[error(transparent)]
    Local(#[from] arbiter_pdp::local::LocalError),
    /// The embedded decision point opened without an agent registry.
    #[error("the agent registry is not open")]
    NoRegistry,
}
