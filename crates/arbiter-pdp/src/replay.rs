//! Replay: re-evaluating recorded decisions against another policy version, to see what a
//! change would flip before it is live (`arbiter policy replay`).
//!
//! Each record is turned back into the request that was evaluated: its subject, action and
//! resource, its context, and the subject's and resource's properties kept in the context
//! under `arbiter_entities`. The candidate evaluates it as the decision point would (the
//! delegating user's evaluation included), and its verdict is compared with the recorded one:
//!
//! - `allow` and `require_approval` are both "the policies permit"; `deny` is "they do not".
//!   A flip is a change between the two (allow→deny, deny→allow). A permit that gains or
//!   loses `@require_approval` is reported as an approval change, not a flip.
//! - Records not decided by the policies are skipped and counted: a deny by a rate limit,
//!   a budget, an approval, a changed tool definition or an invalid request (determining
//!   policies `arbiter:…` only), and allows narrowed to rows (the row filter is not re-derived).
//! - A record whose context had redacted paths is replayed with the keyed hashes in place of
//!   the values: a policy that reads a redacted value may decide differently, so such
//!   records are marked `approximate`.
//! - Records written before entities were kept replay without the subject's and resource's
//!   properties, and are marked `approximate` too.

use arbiter_log::{DecisionRecord, Outcome as Recorded};
use arbiter_policy::Policies;
use arbiter_types::{EvaluationRequest, Outcome};
use serde_json::{Map, Value, json};

use crate::recorder::ENTITIES_KEY;

/// Keys the decision point adds to a record's context that were not in the request.
const ADDED_KEYS: [&str; 3] = [crate::sessions::EFFECTS_KEY, ENTITIES_KEY, SHADOW_KEY];

/// Where a record's context keeps the shadow version's verdict (see
/// `Pdp::set_shadow`).
pub const SHADOW_KEY: &str = "arbiter_shadow";

/// How a record's verdict changed under the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Recorded allow (or require_approval); the candidate denies.
    AllowToDeny,
    /// Recorded deny; the candidate permits.
    DenyToAllow,
    /// Permitted both times, with an approval required by one and not the other.
    Approval,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::AllowToDeny => "allow->deny",
            Change::DenyToAllow => "deny->allow",
            Change::Approval => "approval",
        }
    }
}

/// One record whose verdict the candidate changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    pub change: Change,
    pub decision_id: String,
    pub ts_us: i64,
    pub subject: String,
    pub action: String,
    pub resource: String,
    pub enforcement_point: String,
    pub recorded: Recorded,
    pub recorded_policies: Vec<String>,
    /// The candidate's outcome, its determining policies and its reason.
    pub candidate: Outcome,
    pub candidate_policies: Vec<String>,
    pub candidate_reason: String,
    /// Replayed without some of what was evaluated (redacted values, no entities).
    pub approximate: bool,
}

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Records read in the time window.
    pub considered: u64,
    /// Records re-evaluated.
    pub replayed: u64,
    /// Of those, replayed without some of what was evaluated.
    pub approximate: u64,
    /// Records decided outside the policies (limits, budgets, approvals, tool pins,
    /// invalid requests), not replayed.
    pub skipped_runtime: u64,
    /// Allows narrowed to rows, not replayed.
    pub skipped_rows: u64,
    /// Records the candidate could not turn into a request (reported, not replayed).
    pub unreadable: Vec<(String, String)>,
    pub flips: Vec<Flip>,
}

impl Report {
    /// Flips that change allow to deny or deny to allow.
    pub fn verdict_flips(&self) -> usize {
        self.flips
            .iter()
            .filter(|f| f.change != Change::Approval)
            .count()
    }
}

/// Replays the records of the log in `log_dir` with times in `[since, until)` against
/// `candidate`. A log that cannot be read to its end is an error, not a shorter report.
pub fn replay_dir(
    candidate: &Policies,
    log_dir: &std::path::Path,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Report, arbiter_log::LogError> {
    let mut unreadable = None;
    let records = arbiter_log::read_records(log_dir)?
        .map_while(|r| match r {
            Ok((_, rec)) => Some(rec),
            Err(e) => {
                unreadable = Some(e);
                None
            }
        })
        .filter(|r| since.is_none_or(|s| r.ts_us >= s) && until.is_none_or(|u| r.ts_us < u));
    let report = replay(candidate, records);
    match unreadable {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

impl Report {
    /// The report as `arbiter policy replay --json` and the admin API give it.
    pub fn to_json(&self, candidate: &str) -> serde_json::Value {
        serde_json::json!({
            "candidate": candidate,
            "considered": self.considered,
            "replayed": self.replayed,
            "approximate": self.approximate,
            "skipped": {"runtime": self.skipped_runtime, "rows": self.skipped_rows},
            "unreadable": self.unreadable.iter().map(|(id, why)| serde_json::json!({"decision_id": id, "reason": why})).collect::<Vec<_>>(),
            "changes": self.flips.iter().map(|f| serde_json::json!({
                "change": f.change.as_str(),
                "decision_id": f.decision_id,
                "time": crate::governed::time(f.ts_us),
                "subject": f.subject,
                "action": f.action,
                "resource": f.resource,
                "enforcement_point": f.enforcement_point,
                "recorded": f.recorded.as_str(),
                "recorded_policies": f.recorded_policies,
                "candidate": f.candidate.as_str(),
                "candidate_policies": f.candidate_policies,
                "candidate_reason": f.candidate_reason,
                "approximate": f.approximate,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Replays `records` against `candidate`.
pub fn replay(candidate: &Policies, records: impl IntoIterator<Item = DecisionRecord>) -> Report {
    let mut report = Report::default();
    for r in records {
        // A governed node's activation records are not decisions.
        if r.enforcement_point == crate::governed::ACTIVATION_ENFORCEMENT_POINT {
            continue;
        }
        report.considered += 1;
        if !decided_by_policies(&r.determining_policies) {
            report.skipped_runtime += 1;
            continue;
        }
        if r.outcome == Recorded::Allow && narrowed_to_rows(&r.reason_admin) {
            report.skipped_rows += 1;
            continue;
        }
        let (req, approximate) = match request_of(&r) {
            Ok(x) => x,
            Err(why) => {
                report.unreadable.push((r.decision_id.clone(), why));
                continue;
            }
        };
        report.replayed += 1;
        if approximate {
            report.approximate += 1;
        }
        let (eval, _) = arbiter_policy::delegation::evaluate(candidate, &req);
        let candidate_outcome = policy_outcome(candidate, &eval);
        let recorded = match r.outcome {
            Recorded::Allow => Outcome::Allow,
            Recorded::Deny => Outcome::Deny,
            Recorded::RequireApproval => Outcome::RequireApproval,
        };
        let Some(change) = compare(recorded, &r.reason_admin, candidate_outcome) else {
            continue;
        };
        report.flips.push(Flip {
            change,
            decision_id: r.decision_id.clone(),
            ts_us: r.ts_us,
            subject: format!("{}::\"{}\"", r.subject.kind, r.subject.id),
            action: r.action.clone(),
            resource: format!("{}::\"{}\"", r.resource.kind, r.resource.id),
            enforcement_point: r.enforcement_point.clone(),
            recorded: r.outcome,
            recorded_policies: r.determining_policies.clone(),
            candidate: candidate_outcome,
            candidate_policies: eval.determining_policies,
            candidate_reason: eval.reason_admin,
            approximate,
        });
    }
    report
}

/// Whether an allow was narrowed to some rows of a table (by its administrator reason): its
/// row filter is not re-derived by a replay or a shadow evaluation, so it is not compared.
pub fn narrowed_to_rows(reason_admin: &str) -> bool {
    reason_admin.starts_with(crate::ROWS_ALLOWED)
}

/// Whether a decision with these determining policies was the policies' verdict, not a
/// limit's, a budget's, an approval's or a refusal's (`arbiter:…` only).
pub fn decided_by_policies(determining: &[String]) -> bool {
    determining.is_empty() || !determining.iter().all(|p| p.starts_with("arbiter:"))
}

/// What the policies say of an evaluation: its outcome, or `require_approval` when a
/// determining permit carries `@require_approval`.
pub fn policy_outcome(policies: &Policies, eval: &arbiter_policy::Evaluation) -> Outcome {
    let needs_approval = eval.outcome.is_allow()
        && eval.determining_policies.iter().any(|id| {
            policies
                .runtime_rules(id)
                .is_some_and(|rules| rules.approval.is_some())
        });
    if needs_approval {
        Outcome::RequireApproval
    } else {
        eval.outcome
    }
}

/// How `candidate` (a [`policy_outcome`]) changes a decision taken as `decided` (with its
/// administrator reason): `None` when the verdict is the same. An allow that used an approval
/// was `require_approval` by the policies.
pub fn compare(decided: Outcome, reason_admin: &str, candidate: Outcome) -> Option<Change> {
    let permits = |o: Outcome| matches!(o, Outcome::Allow | Outcome::RequireApproval);
    let decided_approval = decided == Outcome::RequireApproval
        || (decided == Outcome::Allow && reason_admin.contains("; with approval `"));
    match (permits(decided), permits(candidate)) {
        (true, false) => Some(Change::AllowToDeny),
        (false, true) => Some(Change::DenyToAllow),
        (true, true) if decided_approval != (candidate == Outcome::RequireApproval) => {
            Some(Change::Approval)
        }
        _ => None,
    }
}

/// The request a record was decided on, and whether it is only approximately that.
fn request_of(r: &DecisionRecord) -> Result<(EvaluationRequest, bool), String> {
    let Value::Object(mut context) = r.context.clone() else {
        return Err("the record's context is not an object".to_owned());
    };
    let entities = context.get(ENTITIES_KEY).cloned();
    for key in ADDED_KEYS {
        context.remove(key);
    }
    // The recorder keeps the action's properties as `context.action`.
    let action_props = match context.remove("action") {
        Some(Value::Object(p)) => Some(p),
        Some(other) => {
            context.insert("action".to_owned(), other);
            None
        }
        None => None,
    };
    let props = |name: &str| -> Option<Map<String, Value>> {
        entities
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(Value::as_object)
            .cloned()
    };
    let mut action = json!({"name": r.action});
    if let Some(p) = action_props {
        action["properties"] = Value::Object(p);
    }
    let mut subject = json!({"type": r.subject.kind, "id": r.subject.id});
    if let Some(p) = props("subject") {
        subject["properties"] = Value::Object(p);
    }
    let mut resource = json!({"type": r.resource.kind, "id": r.resource.id});
    if let Some(p) = props("resource") {
        resource["properties"] = Value::Object(p);
    }
    let body = json!({
        "subject": subject,
        "action": action,
        "resource": resource,
        "context": Value::Object(context),
    });
    let Value::Object(body) = body else {
        return Err("the request could not be rebuilt".to_owned());
    };
    let req = EvaluationRequest::from_json(body).map_err(|e| e.to_string())?;
    let approximate = !r.redacted_paths.is_empty() || entities.is_none();
    Ok((req, approximate))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use arbiter_log::{EntityRef, SubjectRef};
    use arbiter_policy::SourceFile;

    fn policies(text: &str) -> Policies {
        Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: text.into(),
            }],
            None,
            None,
        )
        .unwrap()
    }

    fn record(
        id: &str,
        doc: &str,
        outcome: Recorded,
        policies: &[&str],
        ctx: Value,
    ) -> DecisionRecord {
        DecisionRecord {
            decision_id: id.into(),
            subject: SubjectRef {
                kind: "Agent".into(),
                id: "bot".into(),
                ..SubjectRef::default()
            },
            action: "read".into(),
            resource: EntityRef {
                kind: "Doc".into(),
                id: doc.into(),
            },
            context: ctx,
            outcome,
            determining_policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            ..DecisionRecord::default()
        }
    }

    const OLD: &str = r#"
        @id("read") permit (principal, action == Action::"read", resource)
        when { resource has public && resource.public };
    "#;

    #[test]
    fn flips_are_found_both_ways_and_runtime_decisions_are_skipped() {
        let public = json!({ ENTITIES_KEY: {"resource": {"public": true}} });
        let private = json!({ ENTITIES_KEY: {"resource": {"public": false}} });
        let records = vec![
            record("a", "d1", Recorded::Allow, &["read"], public.clone()),
            record("b", "d2", Recorded::Deny, &[], private.clone()),
            // A rate limit's deny: not the policies' verdict.
            record(
                "c",
                "d3",
                Recorded::Deny,
                &["arbiter:limit"],
                public.clone(),
            ),
            // An old record without entities: replayed, approximately.
            record("d", "d4", Recorded::Deny, &[], json!({})),
        ];
        // An allow narrowed to rows: its filter is not re-derived, so it is not compared.
        let mut records = records;
        let mut narrowed = record("e", "d5", Recorded::Allow, &["read"], private.clone());
        narrowed.reason_admin = format!("{} resource.tenant == \"acme\"", crate::ROWS_ALLOWED);
        records.push(narrowed);
        // The old policies flip nothing.
        let same = replay(&policies(OLD), records.clone());
        assert_eq!(same.skipped_rows, 1);
        assert_eq!(same.flips, []);
        assert_eq!(
            (
                same.considered,
                same.replayed,
                same.skipped_runtime,
                same.approximate
            ),
            (5, 3, 1, 1)
        );
        // A change that lets private documents be read and forbids public ones.
        let new = policies(
            r#"@id("read-all") permit (principal, action == Action::"read", resource);
               @id("no-public") forbid (principal, action, resource)
               when { resource has public && resource.public };"#,
        );
        let r = replay(&new, records);
        let got: Vec<(&str, Change)> = r
            .flips
            .iter()
            .map(|f| (f.decision_id.as_str(), f.change))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Change::AllowToDeny),
                ("b", Change::DenyToAllow),
                ("d", Change::DenyToAllow)
            ]
        );
        assert_eq!(r.flips[0].candidate_policies, ["no-public"]);
        assert!(r.flips[2].approximate && !r.flips[1].approximate);
        assert_eq!(r.verdict_flips(), 3);
    }

    #[test]
    fn an_added_approval_is_a_change_of_its_own() {
        let records = vec![record(
            "a",
            "d1",
            Recorded::Allow,
            &["read"],
            json!({ ENTITIES_KEY: {"resource": {"public": true}} }),
        )];
        let new = policies(
            r#"@id("read") @require_approval permit (principal, action == Action::"read", resource)
               when { resource has public && resource.public };"#,
        );
        let r = replay(&new, records);
        assert_eq!(r.flips.len(), 1);
        assert_eq!(r.flips[0].change, Change::Approval);
        assert_eq!(r.flips[0].candidate, Outcome::RequireApproval);
        assert_eq!(r.verdict_flips(), 0);
    }

    #[test]
    fn keys_the_decision_point_added_are_not_part_of_the_replayed_request() {
        let mut r = record(
            "a",
            "d1",
            Recorded::Allow,
            &["read"],
            json!({ "session_effects": {"agent": "bot"}, ENTITIES_KEY: {"subject": {"team": "x"}}, "action": {"risky": true}, "n": 1 }),
        );
        r.redacted_paths = vec!["n".into()];
        let (req, approximate) = request_of(&r).unwrap();
        assert!(approximate);
        assert_eq!(Value::Object(req.context.clone()), json!({"n": 1}));
        assert_eq!(req.action.properties.unwrap()["risky"], true);
        assert_eq!(req.subject.properties.unwrap()["team"], "x");
    }
}
