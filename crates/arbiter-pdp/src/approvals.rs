//! Human approval (`@require_approval`): an allow of such a permit stands only once a person
//! has approved the exact request.
//!
//! The request is bound to its approval by a digest ([`binding`]) of the agent, the action,
//! the resource, the request's context (which holds the arguments, the statement's digest,
//! the user the agent acts for) and the policy version. The first time, the decision is
//! `require_approval` with a pending approval's id; an approver approves or denies it
//! (`arbiter approval`, the admin API); the identical request is then allowed once, and the
//! approval is used. Any change to the request, another policy version, a second retry, an
//! expired or denied approval: no allow.

use std::time::Duration;

use arbiter_policy::Policies;
use arbiter_policy::runtime::{ApprovalRule, WhoApproves};
use arbiter_store::{Approval, ApprovalLookup, Approvers, NewApproval, Store};
use arbiter_types::{ApprovalTicket, Decision, EvaluationRequest, Outcome};
use serde_json::{Value, json};

use crate::sessions::{EFFECTS_KEY, SESSION_KEY};

/// The context members that say where a request came from rather than what it asks, left out
/// of the binding: a retry from another session or connection is the same request.
const NOT_BOUND: [&str; 3] = [SESSION_KEY, EFFECTS_KEY, "session_id"];

/// What the approval step made of an allow.
#[derive(Debug)]
pub(crate) enum Gate {
    /// No permit asks for approval.
    Free,
    /// An approval was used (its id): the allow stands.
    Used(String),
    /// The decision is now `require_approval` or a deny; nothing else may change.
    Stop,
}

/// The approval rule of an allow's determining permits: the shortest expiry, and the most
/// restrictive approvers. `Err` when they contradict (only the owner, and anyone but the
/// owner).
fn rule_of(policies: &Policies, determining: &[String]) -> Result<Option<ApprovalRule>, String> {
    let mut out: Option<ApprovalRule> = None;
    for id in determining {
        let Some(r) = policies.runtime_rules(id).and_then(|r| r.approval) else {
            continue;
        };
        out = Some(match out {
            None => r,
            Some(o) => ApprovalRule {
                expires: o.expires.min(r.expires),
                approvers: match (o.approvers, r.approvers) {
                    (WhoApproves::Any, x) | (x, WhoApproves::Any) => x,
                    (a, b) if a == b => a,
                    _ => {
                        return Err(
                            "the permits ask for approval by the agent's owner only and by \
                             anyone but the owner"
                                .to_owned(),
                        );
                    }
                },
            },
        });
    }
    Ok(out)
}

/// `sha256:` digest of what an approval approves (see the module documentation).
pub fn binding(agent: &str, req: &EvaluationRequest, policy_version: &str) -> String {
    let mut context = req.context.clone();
    for k in NOT_BOUND {
        context.remove(k);
    }
    let bound = json!({
        "agent": agent,
        "action": req.action.name,
        "action_properties": req.action.properties,
        "resource": {"type": req.resource.kind, "id": req.resource.id},
        "context": context,
        "policy_version": policy_version,
    });
    // Canonical JSON cannot fail on a request that was evaluated (its numbers and depth are
    // bounded at intake); should it, the digest of nothing binds to nothing usable.
    arbiter_log::context_digest(&bound).unwrap_or_default()
}

/// Puts an allow through the approval step. `redact` gives what an approver is shown of the
/// request's context (as the decision record keeps it).
pub(crate) fn gate(
    policies: &Policies,
    store: Option<&dyn Store>,
    agent: &str,
    req: &EvaluationRequest,
    d: &mut Decision,
    now_us: i64,
    redact: &dyn Fn(&Value) -> Value,
) -> Gate {
    let rule = match rule_of(policies, &d.determining_policies) {
        Ok(None) => return Gate::Free,
        Ok(Some(rule)) => rule,
        Err(problem) => {
            refuse(d, format!("no one may approve this request: {problem}"));
            return Gate::Stop;
        }
    };
    let Some(store) = store else {
        refuse(
            d,
            "the policies ask for a person's approval, and this decision point has no \
             registry to keep approvals in (start it with `--data`)"
                .to_owned(),
        );
        return Gate::Stop;
    };
    let owner = req
        .subject
        .properties
        .as_ref()
        .and_then(|p| p.get("owner"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut context = Value::Object(req.context.clone());
    if let Some(c) = context.as_object_mut() {
        for k in NOT_BOUND {
            c.remove(k);
        }
    }
    let new = NewApproval {
        id: format!("apr_{}", uuid::Uuid::now_v7().simple()),
        binding: binding(agent, req, &d.policy_version),
        agent_id: agent.to_owned(),
        agent_owner: owner.to_owned(),
        action: req.action.name.clone(),
        resource: format!("{}::\"{}\"", req.resource.kind, req.resource.id),
        request: json!({
            "subject": {"type": req.subject.kind, "id": req.subject.id},
            "action": req.action.name,
            "resource": {"type": req.resource.kind, "id": req.resource.id},
            "context": redact(&context),
        }),
        policy_version: d.policy_version.clone(),
        policies: d.determining_policies.clone(),
        approvers: match rule.approvers {
            WhoApproves::Any => Approvers::Any,
            WhoApproves::Owner => Approvers::Owner,
            WhoApproves::NotOwner => Approvers::NotOwner,
        },
        expires_us: now_us.saturating_add(micros(rule.expires)),
        decision_id: d.id.as_str().to_owned(),
    };
    match store.approval_for(&new, now_us) {
        Ok(ApprovalLookup::Used(a)) => {
            d.reason_admin = format!(
                "{}; with approval `{}` of {} ({})",
                d.reason_admin,
                a.id,
                a.decided_by.as_deref().unwrap_or("?"),
                a.reason.as_deref().unwrap_or("")
            );
            d.approval = Some(ticket(&a, "used", now_us));
            Gate::Used(a.id)
        }
        Ok(ApprovalLookup::Denied(a)) => {
            d.outcome = Outcome::Deny;
            d.determining_policies = vec!["arbiter:approval".to_owned()];
            d.reason_admin = format!(
                "denied: approval `{}` was denied by {}: {}",
                a.id,
                a.decided_by.as_deref().unwrap_or("?"),
                a.reason.as_deref().unwrap_or("")
            );
            d.reason_user = format!(
                "denied: approval {} was denied: {}",
                a.id,
                a.reason.as_deref().unwrap_or("")
            );
            d.approval = Some(ticket(&a, "denied", now_us));
            Gate::Stop
        }
        Ok(ApprovalLookup::Pending(a)) => {
            let left = ticket(&a, "pending", now_us);
            d.outcome = Outcome::RequireApproval;
            d.reason_admin = format!(
                "approval required by {}: approval `{}` is pending ({}); {}",
                a.policies
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                a.id,
                match a.approvers {
                    Approvers::Any => "any approver",
                    Approvers::Owner => "the agent's owner only",
                    Approvers::NotOwner => "anyone but the agent's owner",
                },
                d.reason_admin
            );
            d.reason_user = format!(
                "approval required: approval {} is pending; once a person approves it, the \
                 same request is allowed once within {}",
                a.id,
                crate::sessions::human(left.expires_in_s)
            );
            d.approval = Some(left);
            Gate::Stop
        }
        Err(e) => {
            refuse(d, format!("approvals cannot be read or written: {e}"));
            Gate::Stop
        }
    }
}

/// How many decided approvals one call records at most.
const STEPS_PER_CALL: usize = 100;

impl crate::Pdp {
    /// Records in the decision log every approval decided since (approved or denied, with the
    /// CLI or the admin API, by any process on this data directory) and not recorded yet: one
    /// record per step, subject `Approver::"<who>"`, action `approve` or `deny`, resource
    /// `Approval::"<id>"`, attributed to the agent whose request it was. `serve` calls this
    /// every second; an embedded decision point before each decision its policies could need
    /// an approval for, so a step is recorded before the allow that uses it. Returns how many
    /// it recorded; `Err` when the registry or the log fails (the steps are recorded later).
    pub async fn record_approval_steps(&self) -> Result<usize, String> {
        let (Some(identity), Some(_)) = (self.identity(), self.recorder()) else {
            return Ok(0);
        };
        let store = std::sync::Arc::clone(identity.store());
        let steps =
            tokio::task::spawn_blocking(move || store.approval_steps_to_log(STEPS_PER_CALL))
                .await
                .map_err(|e| format!("the approvals could not be read: {e}"))?
                .map_err(|e| format!("the approvals could not be read: {e}"))?;
        let mut recorded = 0;
        for a in steps {
            let (req, decision) = self.approval_step(&a);
            let attribution = crate::Attribution {
                agent_id: Some(a.agent_id.clone()),
                credential_id: None,
                actor_chain: Vec::new(),
            };
            self.record(Some(&req), decision, "approval", Some(&attribution))
                .await
                .map_err(|u| u.error)?;
            let store = std::sync::Arc::clone(identity.store());
            let id = a.id.clone();
            tokio::task::spawn_blocking(move || {
                store.approval_step_logged(&id, crate::identity::now_us())
            })
            .await
            .map_err(|e| format!("the approvals could not be written: {e}"))?
            .map_err(|e| format!("the approvals could not be written: {e}"))?;
            recorded += 1;
        }
        Ok(recorded)
    }

    /// The record of an approval's step: who approved or denied what, and why.
    fn approval_step(&self, a: &Approval) -> (EvaluationRequest, Decision) {
        let approved = a.state != arbiter_store::ApprovalState::Denied;
        let who = a.decided_by.clone().unwrap_or_default();
        let reason = a.reason.clone().unwrap_or_default();
        let verb = if approved { "approved" } else { "denied" };
        let req = EvaluationRequest {
            subject: arbiter_types::Entity {
                kind: "Approver".to_owned(),
                id: who.clone(),
                properties: None,
            },
            action: arbiter_types::Action {
                name: if approved { "approve" } else { "deny" }.to_owned(),
                properties: None,
            },
            resource: arbiter_types::Entity {
                kind: "Approval".to_owned(),
                id: a.id.clone(),
                properties: None,
            },
            context: json!({
                "agent": a.agent_id,
                "action": a.action,
                "resource": a.resource,
                "binding": a.binding,
                "policies": a.policies,
                "reason": reason,
                "decided_us": a.decided_us,
                "asked_by_decision": a.decision_id,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        };
        let text = format!(
            "approval `{}` {verb} by {who}: {reason} (agent `{}`: {} on {})",
            a.id, a.agent_id, a.action, a.resource
        );
        let decision = crate::stamp(
            arbiter_policy::Evaluation {
                outcome: if approved {
                    Outcome::Allow
                } else {
                    Outcome::Deny
                },
                determining_policies: vec!["arbiter:approval".to_owned()],
                reason_admin: text.clone(),
                reason_user: text,
                errors: Vec::new(),
            },
            &a.policy_version,
            0,
        );
        (req, decision)
    }
}

fn ticket(a: &Approval, status: &str, now_us: i64) -> ApprovalTicket {
    ApprovalTicket {
        id: a.id.clone(),
        status: status.to_owned(),
        expires_in_s: u64::try_from(a.expires_us.saturating_sub(now_us).max(0) / 1_000_000)
            .unwrap_or(0),
    }
}

/// A deny that fails closed: the approval step could not be taken.
fn refuse(d: &mut Decision, why: String) {
    tracing::warn!(decision = %d.id, reason = %why, "approval step failed; denied");
    d.outcome = Outcome::Deny;
    d.determining_policies = vec!["arbiter:approval".to_owned()];
    d.reason_admin = format!("denied: {why}");
    d.reason_user = "denied: the approval this request needs cannot be checked".to_owned();
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::sessions::{Sessions, Turn};
    use arbiter_policy::SourceFile;
    use arbiter_store::{Actor, ApprovalState, SqliteStore};

    const POLICIES: &str = r#"
        @id("refunds")
        @require_approval("not_owner, expires=10m")
        permit (principal, action == Action::"call_tool", resource == Tool::"billing/refund");

        @id("reads")
        permit (principal, action == Action::"call_tool", resource == Tool::"billing/read");
    "#;

    fn policies() -> Policies {
        Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: POLICIES.into(),
            }],
            None,
            None,
        )
        .unwrap()
    }

    fn request(tool: &str, amount: i64) -> EvaluationRequest {
        let body = json!({
            "subject": {"type": "Agent", "id": "bot", "properties": {"owner": "olivia@example.com"}},
            "action": {"name": "call_tool"},
            "resource": {"type": "Tool", "id": tool},
            "context": {"arguments": {"amount": amount}, "session_id": "one-session"},
        });
        EvaluationRequest::from_json(body.as_object().unwrap().clone()).unwrap()
    }

    struct Fixture {
        sessions: Sessions,
        store: SqliteStore,
        policies: Policies,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                sessions: Sessions::default(),
                store: SqliteStore::open_in_memory().unwrap(),
                policies: policies(),
            }
        }

        fn decide(&self, mut req: EvaluationRequest, now_us: i64, track: bool) -> Decision {
            let keep = |v: &Value| v.clone();
            let turn = Turn {
                owner: "bot",
                session: "s",
                now_us,
                track,
                approvals: Some(&self.store),
                redact: &keep,
            };
            let pdp = crate::Pdp::new(policies(), None);
            self.sessions
                .decide(&self.policies, turn, &mut req, |r| {
                    (pdp.decide_with(&self.policies, r), ())
                })
                .0
        }

        fn decide_approval(
            &self,
            id: &str,
            approve: bool,
            who: &str,
            now_us: i64,
        ) -> Result<Approval, arbiter_store::StoreError> {
            self.store.decide_approval(
                id,
                approve,
                who,
                "checked the ticket",
                &Actor::cli("t"),
                now_us,
            )
        }
    }

    const T0: i64 = 1_000_000_000_000;

    /// Clocks that disagree: an approver whose clock is behind may approve what the decision
    /// point already sees as expired, and the decision point's clock wins (no allow); an
    /// approver whose clock is ahead cannot approve what it sees as expired.
    #[test]
    fn the_deciding_clock_judges_expiry_whatever_the_approvers_clock() {
        const MINUTE: i64 = 60_000_000;
        let f = Fixture::new();
        let id = f
            .decide(request("billing/refund", 50), T0, false)
            .approval
            .unwrap()
            .id;
        // The approver's clock is 20 minutes behind: to it the approval is fresh.
        f.decide_approval(&id, true, "sam@example.com", T0 + 11 * MINUTE - 20 * MINUTE)
            .unwrap();
        // The decision point, 11 minutes after the request (expiry 10m): not allowed, and
        // the request waits for a new approval.
        let late = f.decide(request("billing/refund", 50), T0 + 11 * MINUTE, false);
        assert_eq!(late.outcome, Outcome::RequireApproval, "{late:?}");
        assert_ne!(late.approval.unwrap().id, id);

        // An approver whose clock is ahead of the expiry is refused.
        let fresh = f
            .decide(request("billing/refund", 60), T0 + 12 * MINUTE, false)
            .approval
            .unwrap()
            .id;
        let e = f
            .decide_approval(
                &fresh,
                true,
                "sam@example.com",
                T0 + 12 * MINUTE + 11 * MINUTE,
            )
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    /// A store whose approvals an operator's mistake (or a full disk) makes unwritable: a
    /// request that needs an approval is denied, with a reason, and never allowed.
    #[test]
    fn a_store_that_cannot_keep_approvals_denies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let f = Fixture {
            store: SqliteStore::open(&path).unwrap(),
            ..Fixture::new()
        };
        let other = rusqlite::Connection::open(&path).unwrap();
        let fail = |what: &str| {
            other
                .execute_batch(&format!(
                    "CREATE TRIGGER no_{what} BEFORE {what} ON approvals \
                     BEGIN SELECT RAISE(FAIL, 'disk full'); END;"
                ))
                .unwrap();
        };
        let denied_for_the_store = |d: &Decision| {
            assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
            assert_eq!(d.determining_policies, ["arbiter:approval"]);
            assert!(d.approval.is_none(), "{d:?}");
            assert!(
                d.reason_admin
                    .contains("approvals cannot be read or written")
                    && d.reason_admin.contains("disk full"),
                "{}",
                d.reason_admin
            );
            assert_eq!(
                d.reason_user,
                "denied: the approval this request needs cannot be checked"
            );
        };

        // A new approval cannot be created: denied, not allowed and not left pending.
        fail("INSERT");
        denied_for_the_store(&f.decide(request("billing/refund", 50), T0, false));
        // Requests that need no approval are not affected.
        assert!(
            f.decide(request("billing/read", 50), T0, false)
                .outcome
                .is_allow()
        );

        // An approved approval whose use cannot be written is not used: denied.
        other.execute_batch("DROP TRIGGER no_INSERT").unwrap();
        let pending = f.decide(request("billing/refund", 50), T0 + 1, false);
        let id = pending.approval.unwrap().id;
        f.decide_approval(&id, true, "sam@example.com", T0 + 2)
            .unwrap();
        fail("UPDATE");
        denied_for_the_store(&f.decide(request("billing/refund", 50), T0 + 3, false));
        // Once the store is writable again, the approval is still there to use, once.
        other.execute_batch("DROP TRIGGER no_UPDATE").unwrap();
        let used = f.decide(request("billing/refund", 50), T0 + 4, false);
        assert!(used.outcome.is_allow(), "{used:?}");
        assert_eq!(used.approval.unwrap().id, id);
    }

    #[test]
    fn an_approval_allows_the_identical_request_once() {
        let f = Fixture::new();
        let d = f.decide(request("billing/refund", 50), T0, false);
        assert_eq!(d.outcome, Outcome::RequireApproval);
        let ticket = d.approval.clone().unwrap();
        assert_eq!(ticket.status, "pending");
        assert_eq!(ticket.expires_in_s, 600);
        assert!(d.reason_user.contains(&ticket.id), "{}", d.reason_user);
        // Asking again waits for the same approval.
        let again = f.decide(request("billing/refund", 50), T0 + 1, false);
        assert_eq!(again.approval.unwrap().id, ticket.id);
        // Other requests are not affected.
        assert!(
            f.decide(request("billing/read", 50), T0, false)
                .outcome
                .is_allow()
        );

        // The owner may not approve (the policy says `not_owner`); someone else may.
        let e = f
            .decide_approval(&ticket.id, true, "Olivia@example.com", T0 + 2)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("may not be decided by the agent's owner"),
            "{e}"
        );
        let a = f
            .decide_approval(&ticket.id, true, "sam@example.com", T0 + 3)
            .unwrap();
        assert_eq!(a.state, ApprovalState::Approved);

        // A changed request is not approved by it.
        let changed = f.decide(request("billing/refund", 5000), T0 + 4, false);
        assert_eq!(changed.outcome, Outcome::RequireApproval);
        assert_ne!(changed.approval.unwrap().id, ticket.id);
        // The identical one, from another session, is allowed once.
        let mut retry = request("billing/refund", 50);
        retry
            .context
            .insert("session_id".into(), json!("another-session"));
        let allowed = f.decide(retry, T0 + 5, false);
        assert!(allowed.outcome.is_allow(), "{}", allowed.reason_admin);
        assert!(
            allowed.reason_admin.contains(&ticket.id),
            "{}",
            allowed.reason_admin
        );
        assert_eq!(allowed.approval.unwrap().status, "used");
        let used = f.store.approval(&ticket.id).unwrap().unwrap();
        assert_eq!(used.state, ApprovalState::Used);
        assert_eq!(used.used_by_decision.as_deref(), Some(allowed.id.as_str()));
        // A second retry needs a new approval.
        let second = f.decide(request("billing/refund", 50), T0 + 6, false);
        assert_eq!(second.outcome, Outcome::RequireApproval);
        assert_ne!(second.approval.unwrap().id, ticket.id);
        // A used approval cannot be decided again.
        assert!(
            f.decide_approval(&ticket.id, true, "sam@example.com", T0 + 7)
                .is_err()
        );
    }

    #[test]
    fn a_denied_or_expired_approval_allows_nothing() {
        let f = Fixture::new();
        let id = f
            .decide(request("billing/refund", 7), T0, false)
            .approval
            .unwrap()
            .id;
        f.decide_approval(&id, false, "sam@example.com", T0 + 1)
            .unwrap();
        let d = f.decide(request("billing/refund", 7), T0 + 2, false);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.determining_policies, ["arbiter:approval"]);
        assert!(
            d.reason_user.contains("was denied: checked the ticket"),
            "{}",
            d.reason_user
        );
        // Once the denied approval expires, the request may be asked for again.
        let later = f.decide(request("billing/refund", 7), T0 + 601_000_000, false);
        assert_eq!(later.outcome, Outcome::RequireApproval);

        // An approval is decided before it expires or not at all.
        let id = later.approval.unwrap().id;
        let e = f
            .decide_approval(&id, true, "sam@example.com", T0 + 1_300_000_000)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(
            f.decide_approval("apr_nope", true, "sam@example.com", T0)
                .is_err()
        );
    }

    #[test]
    fn an_approval_used_by_an_unrecorded_decision_is_given_back() {
        let f = Fixture::new();
        let id = f
            .decide(request("billing/refund", 9), T0, true)
            .approval
            .unwrap()
            .id;
        f.decide_approval(&id, true, "sam@example.com", T0 + 1)
            .unwrap();
        let d = f.decide(request("billing/refund", 9), T0 + 2, true);
        assert!(d.outcome.is_allow());
        f.sessions.settle(d.id.as_str(), false, Some(&f.store));
        assert_eq!(
            f.store.approval(&id).unwrap().unwrap().state,
            ApprovalState::Approved
        );
        assert!(
            f.decide(request("billing/refund", 9), T0 + 3, true)
                .outcome
                .is_allow()
        );
    }

    /// An agent varying its arguments cannot fill the registry with pending approvals.
    #[test]
    fn pending_approvals_per_agent_are_bounded() {
        let f = Fixture::new();
        let max = arbiter_store::approvals::MAX_PENDING_PER_AGENT;
        for amount in 0..max {
            let d = f.decide(request("billing/refund", amount), T0, false);
            assert_eq!(d.outcome, Outcome::RequireApproval);
        }
        let d = f.decide(request("billing/refund", max), T0, false);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.reason_admin.contains("pending"), "{}", d.reason_admin);
        // Once they expire, asking is possible again (and long-expired ones are removed).
        let later = T0 + 601_000_000;
        let d = f.decide(request("billing/refund", max), later, false);
        assert_eq!(d.outcome, Outcome::RequireApproval);
    }

    #[test]
    fn without_a_registry_an_approval_cannot_be_asked_for() {
        let policies = policies();
        let pdp = crate::Pdp::new(policies, None);
        let snapshot = pdp.snapshot();
        let mut req = request("billing/refund", 1);
        req.subject.properties = None;
        let d = pdp
            .decide_as(
                &snapshot,
                &crate::Caller::Anonymous,
                req,
                &crate::Source {
                    address: "",
                    enforcement_point: "authzen",
                    session: None,
                },
            )
            .decision;
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.reason_admin.contains("no registry"), "{}", d.reason_admin);
    }
}
