//! Arbiter's vocabulary: the AuthZEN 1.0 request model, decisions and their ids.
//!
//! This crate owns the shapes every other crate speaks in, and the strict parser that turns
//! untrusted bytes into them. It performs no I/O and knows nothing of Cedar, HTTP or storage,
//! so that every enforcement point parses requests the same way and fails the same way.

pub mod authzen;
pub mod decision;
pub mod json;
pub mod rows;
pub mod strict;
pub mod text;

pub use authzen::{
    Action, AnswerSummary, Entity, EvaluationRequest, EvaluationsRequest, EvaluationsSemantic,
    Page, PartialEvaluation, RequestError, SearchKind, SearchRequest,
};
pub use decision::{ApprovalTicket, Audience, Decision, DecisionId, Outcome, PrincipalEvaluation};
pub use json::{JsonLimits, LimitError};
pub use rows::{RowExpr, RowFilter, RowPolicies};
