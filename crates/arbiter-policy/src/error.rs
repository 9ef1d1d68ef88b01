//! The errors this crate's request-facing functions return.

use thiserror::Error;

/// Why a request cannot be taken as it is by a policy set: what [`crate::Policies::check_request`]
/// and [`crate::delegation::validate`] report, and what a decision that cannot be evaluated
/// denies with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The request does not fit the policy set's schema or vocabulary: an unknown entity
    /// type, a context attribute of the wrong type, properties an entity may not have. The
    /// message names the attribute at fault where it can be named.
    #[error("{0}")]
    Invalid(String),
    /// `context.delegation.user` is there but names no entity.
    #[error(
        "`context.delegation.user` must be an entity reference such as \
         {{\"type\": \"User\", \"id\": \"alice\"}}"
    )]
    DelegationUser,
    /// The request is invalid as the request of the user an agent acts for.
    #[error("acting for {user}: {source}")]
    ActingFor {
        /// The user, as `Type::"id"`.
        user: String,
        /// What is wrong with the user's request.
        source: Box<RequestError>,
    },
}

/// Why no row filter can be derived for a request (see [`crate::Policies::rows`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RowsError {
    /// The request itself cannot be taken (see [`RequestError`]).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Policies that apply to the rows failed to evaluate.
    #[error("policies failed to evaluate for the table's rows: {}", .policies.join(", "))]
    Evaluation {
        /// The policies (or errors) Cedar reported.
        policies: Vec<String>,
    },
    /// A policy's condition on rows cannot be stated as a row filter.
    #[error("policy `{policy}` cannot be applied to rows: {problem}")]
    NotExpressible {
        /// The policy's id.
        policy: String,
        /// What cannot be expressed.
        problem: String,
    },
}
