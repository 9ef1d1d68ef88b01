//! Delegation: an agent acting for a user is allowed only if the agent is allowed **and**
//! the user is allowed.
//!
//! A request says an agent acts for a user with `context.delegation.user`, a `User` entity
//! reference (`{"__entity": {"type": "User", "id": "alice"}}`, or `{"type": "User", "id":
//! "alice"}`). Enforcement points put it there from what they authenticated: the RFC 8693
//! `sub`/`act` claims of a token, or the user a PEP asserts. The PDP then evaluates the same
//! action, resource and context twice against the same policy snapshot — once with the agent
//! as principal, once with the user — and intersects the outcomes. Both evaluations are kept
//! on the decision and in its record.

use crate::{Evaluation, Policies, RequestError};
use arbiter_types::{Entity, EvaluationRequest, Outcome, PrincipalEvaluation};
use serde_json::Value;

/// The entity type of a delegating user.
pub const USER_TYPE: &str = "User";
/// The entity type of an agent.
pub const AGENT_TYPE: &str = "Agent";

/// The user an agent acts for, when the request says it acts for one; an error when it
/// says so in a form that names no entity (which must deny, not be ignored).
pub fn delegated_user(req: &EvaluationRequest) -> Result<Option<(String, String)>, RequestError> {
    if req.subject.kind != AGENT_TYPE {
        return Ok(None);
    }
    let Some(user) = req.context.get("delegation").and_then(|d| d.get("user")) else {
        return Ok(None);
    };
    let user = user.get("__entity").unwrap_or(user);
    match (
        user.get("type").and_then(Value::as_str),
        user.get("id").and_then(Value::as_str),
    ) {
        (Some(kind), Some(id)) if !kind.is_empty() && !id.is_empty() => {
            Ok(Some((kind.to_owned(), id.to_owned())))
        }
        _ => Err(RequestError::DelegationUser),
    }
}

/// The id of an entity reference in either accepted form.
pub fn entity_id(reference: &Value) -> Option<&str> {
    reference
        .get("__entity")
        .unwrap_or(reference)
        .get("id")
        .and_then(Value::as_str)
}

/// Evaluates `req`, intersecting with the delegating user's own evaluation when there is
/// one. Returns the effective evaluation and, for a delegated request, both principals'
/// outcomes (agent first).
pub fn evaluate(
    policies: &Policies,
    req: &EvaluationRequest,
) -> (Evaluation, Vec<PrincipalEvaluation>) {
    let (user_kind, user_id) = match delegated_user(req) {
        Ok(Some(user)) => user,
        Ok(None) => return (policies.evaluate(req), Vec::new()),
        Err(problem) => {
            return (
                Evaluation {
                    outcome: Outcome::Deny,
                    determining_policies: Vec::new(),
                    reason_admin: format!("denied: the request cannot be evaluated: {problem}"),
                    reason_user: "denied: the request is not valid for this policy set".to_owned(),
                    errors: vec![problem.to_string()],
                },
                Vec::new(),
            );
        }
    };
    let agent = policies.evaluate(req);
    let as_user = EvaluationRequest {
        subject: Entity {
            kind: user_kind.clone(),
            id: user_id.clone(),
            properties: None,
        },
        action: req.action.clone(),
        resource: req.resource.clone(),
        context: req.context.clone(),
    };
    let user = policies.evaluate(&as_user);
    let evaluations = vec![
        PrincipalEvaluation {
            kind: req.subject.kind.clone(),
            id: req.subject.id.clone(),
            outcome: agent.outcome,
            determining_policies: agent.determining_policies.clone(),
        },
        PrincipalEvaluation {
            kind: user_kind.clone(),
            id: user_id.clone(),
            outcome: user.outcome,
            determining_policies: user.determining_policies.clone(),
        },
    ];
    (
        intersect(agent, user, &format!("{user_kind}::\"{user_id}\"")),
        evaluations,
    )
}

/// Checks that `req` is valid for the policies' schema as [`evaluate`] would take it: as the
/// request of its subject and, when an agent acts for a user, as the user's too. The error
/// says what is wrong (see [`Policies::check_request`]).
pub fn validate(policies: &Policies, req: &EvaluationRequest) -> Result<(), RequestError> {
    let user = delegated_user(req)?;
    policies.check_request(req)?;
    if let Some((kind, id)) = user {
        let as_user = EvaluationRequest {
            subject: Entity {
                kind: kind.clone(),
                id: id.clone(),
                properties: None,
            },
            action: req.action.clone(),
            resource: req.resource.clone(),
            context: req.context.clone(),
        };
        policies
            .check_request(&as_user)
            .map_err(|e| RequestError::ActingFor {
                user: format!("{kind}::\"{id}\""),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// Allow only if both allow. The determining policies are those of the evaluations that
/// decided the outcome: both permits for an allow, the denying side(s) for a deny.
fn intersect(agent: Evaluation, user: Evaluation, user_label: &str) -> Evaluation {
    let outcome = match (agent.outcome, user.outcome) {
        (Outcome::Allow, Outcome::Allow) => Outcome::Allow,
        _ => Outcome::Deny,
    };
    let mut determining = Vec::new();
    let mut errors = Vec::new();
    for e in [&agent, &user] {
        if outcome == Outcome::Allow || e.outcome == Outcome::Deny {
            determining.extend(e.determining_policies.iter().cloned());
        }
        errors.extend(e.errors.iter().cloned());
    }
    determining.sort();
    determining.dedup();
    let reason_admin = format!(
        "agent: {}; acting for {user_label}: {}",
        agent.reason_admin, user.reason_admin
    );
    let reason_user = match (agent.outcome, user.outcome) {
        (Outcome::Allow, Outcome::Allow) => agent.reason_user,
        // Evaluation answers allow or deny; `require_approval` comes later, from the
        // decision point.
        (Outcome::Deny | Outcome::RequireApproval, _) => agent.reason_user,
        (Outcome::Allow, Outcome::Deny | Outcome::RequireApproval) => {
            format!(
                "the user this agent acts for is not permitted: {}",
                user.reason_user
            )
        }
    };
    Evaluation {
        outcome,
        determining_policies: determining,
        reason_admin,
        reason_user,
        errors,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn policies() -> Policies {
        Policies::from_sources(
            &[crate::SourceFile {
                path: "p.cedar".into(),
                text: r#"
                @id("agents-read") permit (principal is Agent, action == Action::"read", resource);
                @id("agents-write") permit (principal is Agent, action == Action::"write", resource);
                @id("alice-read") permit (principal == User::"alice", action == Action::"read", resource);
                @id("bob-all") permit (principal == User::"bob", action, resource);
                @id("no-secret") forbid (principal, action, resource == Doc::"secret");
                "#
                .to_owned(),
            }],
            None,
            None,
        )
        .unwrap()
    }

    fn req(action: &str, resource: &str, user: Option<Value>) -> EvaluationRequest {
        let mut body = json!({
            "subject": {"type": "Agent", "id": "bot"},
            "action": {"name": action},
            "resource": {"type": "Doc", "id": resource},
        });
        if let Some(u) = user {
            body["context"] = json!({"delegation": {"user": u}});
        }
        EvaluationRequest::from_json(body.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn validation_says_whose_request_is_at_fault() {
        let p = policies();
        assert_eq!(validate(&p, &req("read", "a", None)), Ok(()));
        assert_eq!(
            validate(&p, &req("read", "a", Some(json!({"type": "User"})))),
            Err(RequestError::DelegationUser)
        );
        // Valid for the agent, but the user's entity type is not a Cedar type name.
        let e = validate(
            &p,
            &req("read", "a", Some(json!({"type": "not a type", "id": "z"}))),
        )
        .unwrap_err();
        assert!(
            matches!(&e, RequestError::ActingFor { user, .. } if user == "not a type::\"z\""),
            "{e:?}"
        );
    }

    fn outcome_of(e: &[PrincipalEvaluation]) -> Vec<(&str, Outcome)> {
        e.iter().map(|p| (p.kind.as_str(), p.outcome)).collect()
    }

    #[test]
    fn both_must_allow() {
        let p = policies();
        let alice = json!({"__entity": {"type": "User", "id": "alice"}});
        // Agent allowed, alice allowed.
        let (e, ev) = evaluate(&p, &req("read", "d", Some(alice.clone())));
        assert_eq!(e.outcome, Outcome::Allow);
        assert_eq!(e.determining_policies, ["agents-read", "alice-read"]);
        assert_eq!(
            outcome_of(&ev),
            [("Agent", Outcome::Allow), ("User", Outcome::Allow)]
        );
        // Agent allowed, alice not: deny, and the user side is what determined it.
        let (e, ev) = evaluate(&p, &req("write", "d", Some(alice)));
        assert_eq!(e.outcome, Outcome::Deny);
        assert_eq!(
            outcome_of(&ev),
            [("Agent", Outcome::Allow), ("User", Outcome::Deny)]
        );
        assert!(
            e.reason_user.contains("user this agent acts for"),
            "{}",
            e.reason_user
        );
        assert!(
            e.reason_admin.contains("User::\"alice\""),
            "{}",
            e.reason_admin
        );
        // The user may, the agent may not: deny.
        let bob = json!({"type": "User", "id": "bob"});
        let (e, ev) = evaluate(&p, &req("delete", "d", Some(bob.clone())));
        assert_eq!(e.outcome, Outcome::Deny);
        assert_eq!(
            outcome_of(&ev),
            [("Agent", Outcome::Deny), ("User", Outcome::Allow)]
        );
        // A forbid applies to both.
        let (e, _) = evaluate(&p, &req("read", "secret", Some(bob)));
        assert_eq!(e.outcome, Outcome::Deny);
        assert_eq!(e.determining_policies, ["no-secret"]);
    }

    #[test]
    fn no_delegation_is_a_single_evaluation() {
        let p = policies();
        let (e, ev) = evaluate(&p, &req("write", "d", None));
        assert_eq!(e.outcome, Outcome::Allow);
        assert!(ev.is_empty());
        // A malformed user reference denies: the user cannot be evaluated.
        for bad in [
            json!("alice"),
            json!({"type": "User"}),
            json!({"__entity": {"id": "a"}}),
        ] {
            let (e, ev) = evaluate(&p, &req("write", "d", Some(bad)));
            assert_eq!(e.outcome, Outcome::Deny);
            assert!(e.errors[0].contains("context.delegation.user"));
            assert!(ev.is_empty());
        }
    }
}
