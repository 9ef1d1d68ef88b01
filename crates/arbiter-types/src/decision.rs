//! Decisions, as every enforcement point and the decision log see them.
//!
//! A [`Decision`] has no `Default` and no constructor outside the PDP's evaluation path, so
//! nothing can produce an allow by accident. The AuthZEN rendering lives here so that every
//! HTTP surface answers in the same shape.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The outcome of an authorization decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    /// Allowed once a person approves this exact request (see [`Decision::approval`]); until
    /// then it is not an allow (`"decision": false`).
    RequireApproval,
}

impl Outcome {
    pub fn is_allow(self) -> bool {
        match self {
            Outcome::Allow => true,
            Outcome::Deny | Outcome::RequireApproval => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::RequireApproval => "require_approval",
        }
    }
}

/// The approval a [`Outcome::RequireApproval`] decision waits for, or that an allow used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalTicket {
    /// `apr_…`: what an approver approves (`arbiter approval approve ID`).
    pub id: String,
    /// `pending`, or `used` on the allow that used it.
    pub status: String,
    /// When it expires, in seconds from the decision.
    pub expires_in_s: u64,
}

/// A decision id: a UUIDv7 in its hyphenated text form, time-ordered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DecisionId(String);

impl DecisionId {
    /// Wraps an id minted by the PDP.
    pub fn from_minted(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One principal's own evaluation within a delegated decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrincipalEvaluation {
    /// The principal's entity type (`Agent`, `User`).
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub outcome: Outcome,
    pub determining_policies: Vec<String>,
}

/// A decision, stamped with its id and the policy version that made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub id: DecisionId,
    pub outcome: Outcome,
    /// Content hash of the policy set that decided, e.g. `sha256:…`.
    pub policy_version: String,
    /// Ids of the policies that determined the outcome: the satisfied permits of an allow,
    /// the satisfied forbids of a deny, or the policies that failed to evaluate.
    pub determining_policies: Vec<String>,
    /// For administrators: policy ids, their `@reason` annotations, evaluation errors.
    pub reason_admin: String,
    /// For the agent or user: no policy internals.
    pub reason_user: String,
    /// Evaluation errors; any error makes the outcome a deny.
    pub errors: Vec<String>,
    /// Time spent evaluating, in microseconds.
    pub eval_us: u64,
    /// For an agent acting for a user: the agent's and the user's own evaluations (the
    /// outcome is allow only if both are); empty otherwise.
    pub evaluations: Vec<PrincipalEvaluation>,
    /// For a deny by a rate limit or a budget: whole seconds until the same call may be
    /// allowed (`context.retry_after_s` in the answer; `Retry-After` over HTTP).
    pub retry_after_s: Option<u64>,
    /// The approval this decision waits for (`require_approval`) or used (an allow).
    pub approval: Option<ApprovalTicket>,
}

/// Who an answer is for: what it may reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// An enforcement point or an administrator: every detail.
    Administrator,
    /// The agent itself, or a caller nobody authenticated: no policy internals.
    User,
}

impl Decision {
    /// The AuthZEN 1.0 response body: `{"decision": bool, "context": {…}}`, with every
    /// detail (see [`Decision::to_authzen_for`]).
    pub fn to_authzen(&self) -> Value {
        self.to_authzen_for(Audience::Administrator)
    }

    /// The AuthZEN 1.0 response body for `audience`. A [`Audience::User`] answer carries the
    /// decision, its id, the policy version and `reason_user`; what is for administrators —
    /// `reason_admin` (policy ids and their reasons, registry and credential details),
    /// `determining_policies`, evaluation `errors` and each principal's determining policies —
    /// is left out.
    pub fn to_authzen_for(&self, audience: Audience) -> Value {
        if audience == Audience::User {
            let mut context = Map::new();
            context.insert("decision_id".into(), json!(self.id));
            context.insert("policy_version".into(), json!(self.policy_version));
            context.insert("outcome".into(), json!(self.outcome));
            context.insert("reason_user".into(), json!({ "en": self.reason_user }));
            if let Some(s) = self.retry_after_s {
                context.insert("retry_after_s".into(), json!(s));
            }
            if let Some(a) = &self.approval {
                context.insert("approval".into(), json!(a));
            }
            if !self.evaluations.is_empty() {
                let evaluations: Vec<Value> = self
                    .evaluations
                    .iter()
                    .map(|e| json!({"type": e.kind, "id": e.id, "outcome": e.outcome}))
                    .collect();
                context.insert("evaluations".into(), Value::Array(evaluations));
            }
            return json!({ "decision": self.outcome.is_allow(), "context": context });
        }
        let mut context = Map::new();
        context.insert("decision_id".into(), json!(self.id));
        context.insert("policy_version".into(), json!(self.policy_version));
        context.insert("outcome".into(), json!(self.outcome));
        context.insert(
            "determining_policies".into(),
            json!(self.determining_policies),
        );
        context.insert("reason_admin".into(), json!({ "en": self.reason_admin }));
        context.insert("reason_user".into(), json!({ "en": self.reason_user }));
        if !self.errors.is_empty() {
            context.insert("errors".into(), json!(self.errors));
        }
        if !self.evaluations.is_empty() {
            context.insert("evaluations".into(), json!(self.evaluations));
        }
        if let Some(s) = self.retry_after_s {
            context.insert("retry_after_s".into(), json!(s));
        }
        if let Some(a) = &self.approval {
            context.insert("approval".into(), json!(a));
        }
        json!({ "decision": self.outcome.is_allow(), "context": context })
    }
}
