//! The questions an enforcement point asks and the answers it acts on, and the one wording of
//! a denial that every enforcement point shows.

use arbiter_types::{Entity, RowFilter};
use serde_json::{Map, Value};

/// One question for the decision point; the subject is the agent whose credential is
/// presented with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub action: &'static str,
    pub resource: Entity,
    pub context: Map<String, Value>,
    /// Whether the decision may allow only some rows of the table (the resource): for an
    /// enforcement point that applies [`Verdict::rows`]. A remote decision point is asked with
    /// the `X-Arbiter-Row-Filters` header (`arbiter serve` honours it).
    pub rows: bool,
    /// The caller's session (see `arbiter_pdp::sessions`): the MCP session, the SQL
    /// connection, `ARBITER_SESSION`. A remote decision point is told with the
    /// `Arbiter-Session` header. Every ask of one batch must name the same session.
    pub session: Option<String>,
}

impl Ask {
    /// A question about `resource` with an empty context.
    pub fn new(action: &'static str, resource: Entity) -> Self {
        Self {
            action,
            resource,
            context: Map::new(),
            rows: false,
            session: None,
        }
    }

    /// This question, asked in `session`.
    pub fn in_session(mut self, session: Option<&str>) -> Self {
        self.session = session.map(str::to_owned);
        self
    }

    /// Reports that the enforcement point refuses this request whatever the policies say
    /// (see [`arbiter_pdp::ENFORCEMENT_REFUSAL`]): the decision point denies and records it,
    /// so the refusal is evidence like any decision. `rule` names the built-in rule
    /// (`arbiter:…`), `reason` is the operator's reason, `reason_user` what the agent is shown.
    pub fn refused_by_enforcement_point(
        mut self,
        rule: Option<&str>,
        reason: &str,
        reason_user: &str,
    ) -> Self {
        let mut report = Map::new();
        if let Some(rule) = rule {
            report.insert("rule".into(), Value::from(rule));
        }
        report.insert("reason".into(), Value::from(reason));
        report.insert("reason_user".into(), Value::from(reason_user));
        self.context.insert(
            arbiter_pdp::ENFORCEMENT_REFUSAL.into(),
            Value::Object(report),
        );
        self.rows = false;
        self
    }
}

/// The one session of a batch of asks: `Err` when they name different ones.
pub fn session_of(asks: &[Ask]) -> Result<Option<&str>, crate::DecideError> {
    let first = asks.first().and_then(|a| a.session.as_deref());
    if asks.iter().any(|a| a.session.as_deref() != first) {
        return Err(crate::DecideError::Internal(
            "the questions of one batch name different sessions".to_owned(),
        ));
    }
    Ok(first)
}

/// A decision as an enforcement point needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub decision_id: Option<String>,
    /// The reason that may be shown to the agent (`denied: …`).
    pub reason_user: String,
    /// The rows the allow is limited to, when it is (asked with [`Ask::rows`]).
    pub rows: Option<RowFilter>,
    /// The policy version that decided, when the decision point says.
    pub policy_version: Option<String>,
    /// The decision could not be recorded, so it is a deny whatever was decided (the
    /// decision point's log is unavailable; an HTTP surface answers 503).
    pub unrecorded: bool,
    /// For a deny by a rate limit or a budget: seconds until the call may be allowed.
    pub retry_after_s: Option<u64>,
    /// The approval a `require_approval` decision waits for (`apr_…`): once a person approves
    /// it, the identical request is allowed once.
    pub approval: Option<String>,
    /// The approval this decision closed: the allow that used it, or the deny that found it
    /// denied. An enforcement point that pointed someone at the approval can say it is done.
    pub approval_settled: Option<String>,
}

impl Verdict {
    /// A deny without a decision: no decision could be taken (`why`), so the enforcement
    /// point refuses (fail closed).
    pub fn refused(why: &str) -> Self {
        tracing::warn!(error = %why, "refused a request: no decision could be taken (fail closed)");
        Self {
            reason_user: format!("denied: no decision could be taken ({why})"),
            ..Self::default()
        }
    }

    /// How the denial is shown to the agent.
    pub fn denial(&self) -> Denial {
        Denial {
            retry_after_s: self.retry_after_s,
            approval: self.approval.clone(),
            ..Denial::new(&self.reason_user, self.decision_id.clone())
        }
    }
}

/// A refusal as the agent is shown it, in the same words at every enforcement point:
/// `denied by Arbiter: <reason> (decision <id>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The reason, without a leading `denied: `.
    pub reason: String,
    pub decision_id: Option<String>,
    /// For a rate limit or a budget: seconds until the call may be allowed.
    pub retry_after_s: Option<u64>,
    /// The pending approval that would allow the request (`apr_…`).
    pub approval: Option<String>,
}

impl Denial {
    /// A denial for `reason` (a leading `denied: ` is dropped; an empty reason reads
    /// `not permitted`).
    pub fn new(reason: &str, decision_id: Option<String>) -> Self {
        let reason = reason.strip_prefix("denied: ").unwrap_or(reason).trim();
        Self {
            reason: if reason.is_empty() {
                "not permitted".to_owned()
            } else {
                reason.to_owned()
            },
            decision_id,
            retry_after_s: None,
            approval: None,
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "denied by Arbiter: {}", self.reason)?;
        if let Some(id) = &self.decision_id {
            write!(f, " (decision {id})")?;
        }
        Ok(())
    }
}

/// Reads an AuthZEN decision: `decision` must be a boolean. An allow for some rows
/// (`context.row_filter`) whose filter cannot be read is a deny.
pub fn verdict_of(answer: &Value) -> Option<Verdict> {
    let a = arbiter_types::AnswerSummary::read(answer)?;
    let rows = match answer.get("context").and_then(|c| c.get("row_filter")) {
        None => Ok(None),
        Some(f) => serde_json::from_value::<RowFilter>(f.clone()).map(Some),
    };
    let (allow, reason_user, rows) = match rows {
        Ok(rows) => (
            a.allow,
            a.reason_user
                .unwrap_or_else(|| if a.allow { "allowed" } else { "denied" }.to_owned()),
            rows,
        ),
        Err(_) => (
            false,
            "denied: the decision point's row filter cannot be read".to_owned(),
            None,
        ),
    };
    Some(Verdict {
        allow,
        decision_id: a.decision_id,
        reason_user,
        rows: rows.filter(|_| allow),
        policy_version: a.policy_version,
        unrecorded: false,
        retry_after_s: answer
            .get("context")
            .and_then(|c| c.get("retry_after_s"))
            .and_then(Value::as_u64)
            .filter(|_| !allow),
        approval: approval_in(answer, "pending").filter(|_| !allow),
        approval_settled: approval_in(answer, if allow { "used" } else { "denied" }),
    })
}

/// The id of the approval in an AuthZEN answer's context, when it has `status`.
fn approval_in(answer: &Value, status: &str) -> Option<String> {
    answer
        .get("context")
        .and_then(|c| c.get("approval"))
        .filter(|a| a.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|a| a.get("id"))
        .and_then(Value::as_str)
        .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_denial_reads_the_same_everywhere() {
        let v = Verdict {
            reason_user: "denied: not permitted by policy `p`".into(),
            decision_id: Some("d-1".into()),
            ..Verdict::default()
        };
        assert_eq!(
            v.denial().to_string(),
            "denied by Arbiter: not permitted by policy `p` (decision d-1)"
        );
        assert_eq!(
            Denial::new("", None).to_string(),
            "denied by Arbiter: not permitted"
        );
    }

    #[test]
    fn answers_without_a_boolean_decision_are_not_verdicts() {
        assert!(verdict_of(&json!({"decision": "true"})).is_none());
        assert!(verdict_of(&json!({})).is_none());
        let v = verdict_of(&json!({"decision": true})).unwrap();
        assert!(v.allow);
    }

    #[test]
    fn an_unreadable_row_filter_is_a_deny() {
        let v = verdict_of(&json!({"decision": true, "context": {"row_filter": 7}})).unwrap();
        assert!(!v.allow);
        assert!(v.rows.is_none());
    }

    #[test]
    fn an_enforcement_point_refusal_never_asks_for_rows() {
        let ask = Ask {
            rows: true,
            ..Ask::new(
                "select",
                Entity {
                    kind: "Table".into(),
                    id: "t".into(),
                    properties: None,
                },
            )
        }
        .refused_by_enforcement_point(Some("arbiter:x"), "why", "denied: why");
        assert!(!ask.rows);
        assert_eq!(
            ask.context[arbiter_pdp::ENFORCEMENT_REFUSAL],
            json!({"rule": "arbiter:x", "reason": "why", "reason_user": "denied: why"})
        );
    }
}
