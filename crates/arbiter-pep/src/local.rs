//! [`LocalDecider`]: a decision point embedded in the enforcement point's process.

use std::sync::Arc;

use arbiter_pdp::{Caller, Pdp, Source};
use arbiter_types::{Action, Entity, EvaluationRequest, RowFilter};

use crate::decider::{Ahead, BoxFuture, Decider, Durable, Settle};
use crate::{Ask, AuthError, DecideError, Verdict};

/// Decides in this process with an embedded decision point (see
/// [`arbiter_pdp::local::open_local`], or `arbiter serve`'s own for forward-auth), recording
/// every decision in its log before answering.
#[derive(Debug, Clone)]
pub struct LocalDecider {
    pdp: Arc<Pdp>,
    point: String,
}

impl LocalDecider {
    /// Decisions are recorded under enforcement point `point` (`mcp:<server>`, `sql:<db>`,
    /// `exec:<host>`, `http:<service>`).
    pub fn new(pdp: Arc<Pdp>, point: String) -> Self {
        Self { pdp, point }
    }

    /// The enforcement point decisions are recorded under.
    pub fn point(&self) -> &str {
        &self.point
    }

    /// [`Decider::decide_then`] for a caller at `address` (the network peer that presented
    /// the credential, `local` for a caller in this process). Settles the decisions before
    /// they are recorded: an allow for some rows that cannot be applied is recorded as the
    /// deny it is answered as, with the reason.
    pub async fn decide_from(
        &self,
        address: &str,
        credential: Option<&str>,
        asks: Vec<Ask>,
        settle: Settle<'_>,
    ) -> Vec<Verdict> {
        match self.submit_from(address, credential, asks, settle).await {
            Ok((submitted, rows)) => verdicts_of(self.pdp.durable(submitted).await, rows),
            Err(refused) => refused,
        }
    }

    /// [`Decider::decide_ahead`] for a caller at `address`: as [`LocalDecider::decide_from`],
    /// except that when every decision allows, the verdicts come as soon as the records are
    /// handed to the log, with the wait for them to be durable.
    pub async fn decide_ahead_from(
        &self,
        address: &str,
        credential: Option<&str>,
        asks: Vec<Ask>,
        settle: Settle<'_>,
    ) -> Ahead {
        let (submitted, rows) = match self.submit_from(address, credential, asks, settle).await {
            Ok(submitted) => submitted,
            Err(refused) => return (refused, None),
        };
        let taken: Vec<_> = submitted.decisions().cloned().map(Ok).collect();
        let verdicts = verdicts_of(taken, rows.clone());
        if !verdicts.iter().all(|v| v.allow) {
            // Nothing goes ahead: answer as recorded.
            return (verdicts_of(self.pdp.durable(submitted).await, rows), None);
        }
        let pdp = Arc::clone(&self.pdp);
        let durable: Durable = Box::pin(async move {
            let recorded = pdp.durable(submitted).await;
            match verdicts_of(recorded, rows)
                .into_iter()
                .find(|v| v.unrecorded)
            {
                None => Ok(()),
                Some(denied) => Err(denied),
            }
        });
        (verdicts, Some(durable))
    }

    /// Decides `asks`, settles them, and hands their records to the log: the decisions, and
    /// the row filters of the allows for some rows. `Err`: the asks were refused before any
    /// decision (the verdicts say why).
    async fn submit_from(
        &self,
        address: &str,
        credential: Option<&str>,
        asks: Vec<Ask>,
        settle: Settle<'_>,
    ) -> Result<(arbiter_pdp::Submitted, Vec<Option<RowFilter>>), Vec<Verdict>> {
        let session = match crate::verdict::session_of(&asks) {
            Ok(s) => s.map(str::to_owned),
            Err(e) => {
                return Err(asks
                    .iter()
                    .map(|_| Verdict::refused(&e.to_string()))
                    .collect());
            }
        };
        let snapshot = self.pdp.snapshot();
        let source = Source {
            address,
            enforcement_point: &self.point,
            session: session.as_deref(),
        };
        let requests = asks
            .into_iter()
            .map(|ask| {
                let rows = ask.rows;
                (request_of(ask), rows)
            })
            .collect();
        let mut decided = self
            .pdp
            .decide_for_agent_narrowing_async(&snapshot, credential, &source, requests)
            .await;
        let preview: Vec<Verdict> = decided
            .iter()
            .map(|d| {
                let allow = d.decision.outcome.is_allow();
                Verdict {
                    allow,
                    decision_id: Some(d.decision.id.as_str().to_owned()),
                    reason_user: d.decision.reason_user.clone(),
                    rows: d.rows.clone().filter(|_| allow),
                    policy_version: Some(d.decision.policy_version.clone()),
                    unrecorded: false,
                    retry_after_s: d.decision.retry_after_s,
                    approval: pending_approval(&d.decision),
                    approval_settled: settled_approval(&d.decision),
                }
            })
            .collect();
        if let Err(reason) = settle(&preview) {
            for d in decided
                .iter_mut()
                .filter(|d| d.decision.outcome.is_allow() && d.rows.is_some())
            {
                d.rows = None;
                d.decision.outcome = arbiter_types::Outcome::Deny;
                let rows = d
                    .decision
                    .reason_admin
                    .strip_prefix("allowed for the rows where ")
                    .unwrap_or(&d.decision.reason_admin);
                d.decision.reason_admin = format!(
                    "denied: the statement cannot be narrowed to the rows where {rows}: {reason}"
                );
                d.decision.reason_user = format!("denied: {reason}");
            }
        }
        let rows: Vec<Option<RowFilter>> = decided.iter_mut().map(|d| d.rows.take()).collect();
        let items = decided
            .iter()
            .map(|d| (d.request.as_ref(), d.decision.clone(), Some(&d.attribution)))
            .collect();
        Ok((self.pdp.submit_all(items, &self.point), rows))
    }
}

/// The verdicts for decisions as recorded (or not: an unrecorded decision is a deny, fail
/// closed), with the row filters of the allows for some rows.
fn verdicts_of(
    recorded: Vec<Result<arbiter_types::Decision, arbiter_pdp::Unrecorded>>,
    rows: Vec<Option<RowFilter>>,
) -> Vec<Verdict> {
    recorded
        .into_iter()
        .zip(rows)
        .map(|(r, rows)| {
            let (d, rows, unrecorded) = match r {
                Ok(d) => (d, rows, false),
                Err(unrecorded) => (*unrecorded.decision, None, true),
            };
            let allow = d.outcome.is_allow();
            let approval = pending_approval(&d);
            let approval_settled = settled_approval(&d);
            Verdict {
                allow,
                decision_id: Some(d.id.as_str().to_owned()),
                reason_user: d.reason_user,
                rows: rows.filter(|_| allow),
                policy_version: Some(d.policy_version),
                unrecorded,
                retry_after_s: d.retry_after_s,
                approval,
                approval_settled,
            }
        })
        .collect()
}

impl Decider for LocalDecider {
    fn decide<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, DecideError>> {
        self.decide_then(credential, asks, Box::new(|_| Ok(())))
    }

    fn decide_then<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, DecideError>> {
        Box::pin(async move { Ok(self.decide_from("local", credential, asks, settle).await) })
    }

    fn decide_ahead<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Ahead, DecideError>> {
        Box::pin(async move {
            Ok(self
                .decide_ahead_from("local", credential, asks, settle)
                .await)
        })
    }

    fn policy_version(&self) -> Option<String> {
        Some(self.pdp.snapshot().version().to_owned())
    }

    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, AuthError>> {
        Box::pin(async move { self.authenticate_from("local", credential).await })
    }
}

impl LocalDecider {
    /// Who presents `credential` from `address`, as the registry says (without recording
    /// anything; the identity lookup runs off the async runtime when it is not in memory).
    /// `None` without a registry.
    pub async fn caller_from(
        &self,
        address: &str,
        credential: &str,
    ) -> Option<Result<Caller, arbiter_pdp::Denial>> {
        let identity = self.pdp.identity()?;
        let source = Source {
            address,
            enforcement_point: &self.point,
            session: None,
        };
        Some(
            identity
                .authenticate_async(Some(credential), &source, arbiter_pdp::identity::now_us())
                .await,
        )
    }

    /// [`Decider::authenticate`] for a caller at `address`.
    pub async fn authenticate_from(
        &self,
        address: &str,
        credential: &str,
    ) -> Result<Option<String>, AuthError> {
        let Some(caller) = self.caller_from(address, credential).await else {
            return Ok(None);
        };
        match caller {
            Ok(Caller::Agent(a)) => Ok(Some(a.agent.id.clone())),
            Ok(Caller::Pep { .. }) => Err(AuthError::NotAnAgent),
            Ok(Caller::Anonymous) => Err(AuthError::NoCredential),
            Err(denial) => {
                tracing::info!(reason = %denial.reason_admin, "a credential was refused");
                Err(AuthError::Refused(denial.reason_user))
            }
        }
    }
}

/// The approval a decision waits for, when it does.
fn pending_approval(d: &arbiter_types::Decision) -> Option<String> {
    d.approval
        .as_ref()
        .filter(|a| a.status == "pending" && !d.outcome.is_allow())
        .map(|a| a.id.clone())
}

/// The approval a decision used (an allow) or found denied (a deny), when it did.
fn settled_approval(d: &arbiter_types::Decision) -> Option<String> {
    let settled = if d.outcome.is_allow() {
        "used"
    } else {
        "denied"
    };
    d.approval
        .as_ref()
        .filter(|a| a.status == settled)
        .map(|a| a.id.clone())
}

fn request_of(ask: Ask) -> EvaluationRequest {
    EvaluationRequest {
        // Replaced by the authenticated agent.
        subject: Entity {
            kind: arbiter_pdp::delegation::AGENT_TYPE.to_owned(),
            id: String::new(),
            properties: None,
        },
        action: Action {
            name: ask.action.to_owned(),
            properties: None,
        },
        resource: ask.resource,
        context: ask.context,
    }
}
