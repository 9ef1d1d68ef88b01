//! Mapping decision records to OCSF events, for `arbiter log export --format
//! ocsf`. The field-by-field mapping is documented in `docs/decision-log.md`.
//!
//! Each record becomes one OCSF 1.3 **API Activity** event (class 6003,
//! category 6 Application Activity, activity 99 "Other", named "Authorize")
//! with the `security_control` profile: the agent's call is the API
//! operation, the decision is `action_id`/`status_id`, and the outcome with
//! the determining policies is `actor.authorizations`.

use serde_json::{Map, Value, json};

use crate::record::{DecisionRecord, Outcome};

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// API Activity.
pub const CLASS_UID: u32 = 6003;
/// Application Activity.
pub const CATEGORY_UID: u32 = 6;
/// Activity "Other" (an authorization decision is none of Create, Read,
/// Update, Delete).
pub const ACTIVITY_ID: u32 = 99;

/// The OCSF event for one record.
pub fn to_ocsf(r: &DecisionRecord) -> Value {
    let (status_id, status, action_id, action) = match r.outcome {
        Outcome::Allow => (1, "Success", 1, "Allowed"),
        Outcome::Deny => (2, "Failure", 2, "Denied"),
        Outcome::RequireApproval => (99, "Other", 99, "Other"),
    };
    let mut user = Map::new();
    user.insert("uid".into(), json!(r.subject.id));
    user.insert("type".into(), json!(r.subject.kind));
    user.insert("type_id".into(), json!(99));
    if let Some(c) = &r.subject.credential_id {
        user.insert("credential_uid".into(), json!(c));
    }
    let authorizations: Vec<Value> = if r.determining_policies.is_empty() {
        vec![json!({
            "decision": r.outcome.as_str(),
            "policy": {"version": r.policy_version, "is_applied": false},
        })]
    } else {
        r.determining_policies
            .iter()
            .map(|p| {
                json!({
                    "decision": r.outcome.as_str(),
                    "policy": {"uid": p, "name": p, "version": r.policy_version, "is_applied": true},
                })
            })
            .collect()
    };
    let mut actor = Map::new();
    actor.insert("user".into(), Value::Object(user));
    if let Some(a) = &r.subject.agent_id {
        actor.insert("app_uid".into(), json!(a));
        actor.insert("app_name".into(), json!(a));
    }
    actor.insert("authorizations".into(), Value::Array(authorizations));
    json!({
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": ACTIVITY_ID,
        "activity_name": "Authorize",
        "type_uid": CLASS_UID * 100 + ACTIVITY_ID,
        "type_name": "API Activity: Authorize",
        "severity_id": 1,
        "severity": "Informational",
        "time": r.ts_us.div_euclid(1000),
        "status_id": status_id,
        "status": status,
        "status_code": r.outcome.as_str(),
        "status_detail": r.reason_user,
        "message": r.reason_admin,
        "action_id": action_id,
        "action": action,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": r.decision_id,
            "original_time": r.timestamp(),
            "sequence": r.seq,
            "log_name": "arbiter-decision-log",
            "log_provider": r.node_id,
            "profiles": ["security_control"],
            "product": {
                "name": "Arbiter",
                "vendor_name": "Arbiter",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "actor": Value::Object(actor),
        "api": {
            "operation": r.action,
            "service": {"name": r.enforcement_point},
        },
        "resources": [{"uid": r.resource.id, "type": r.resource.kind}],
        "unmapped": {
            "schema": r.schema,
            "node_id": r.node_id,
            "seq": r.seq,
            "ts_us": r.ts_us,
            "delegation": r.delegation,
            "evaluations": r.evaluations,
            "context": r.context,
            "context_digest": r.context_digest,
            "redacted_paths": r.redacted_paths,
            "determining_policies": r.determining_policies,
            "errors": r.errors,
            "policy_version": r.policy_version,
            "engine": r.engine,
            "engine_version": r.engine_version,
            "eval_us": r.eval_us,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::record::{EntityRef, SubjectRef};

    fn rec(outcome: Outcome) -> DecisionRecord {
        DecisionRecord {
            decision_id: "0190-d".into(),
            ts_us: 1_735_787_045_123_456,
            node_id: "node-a".into(),
            seq: 7,
            subject: SubjectRef {
                kind: "User".into(),
                id: "alice".into(),
                agent_id: Some("bot-1".into()),
                credential_id: Some("cred-9".into()),
            },
            delegation: vec![EntityRef {
                kind: "User".into(),
                id: "bob".into(),
            }],
            action: "fs:read".into(),
            resource: EntityRef {
                kind: "File".into(),
                id: "/etc/hosts".into(),
            },
            context_digest: "sha256:00".into(),
            outcome,
            determining_policies: vec!["p1".into(), "p2".into()],
            reason_admin: "admin says".into(),
            reason_user: "user says".into(),
            policy_version: "sha256:abc".into(),
            engine: "cedar".into(),
            engine_version: "4".into(),
            enforcement_point: "mcp:fs".into(),
            eval_us: 42,
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn maps_every_documented_field() {
        let e = to_ocsf(&rec(Outcome::Allow));
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["category_uid"], 6);
        assert_eq!(e["activity_id"], 99);
        assert_eq!(e["type_uid"], 600_399);
        assert_eq!(e["severity_id"], 1);
        assert_eq!(e["time"], 1_735_787_045_123i64);
        assert_eq!(e["metadata"]["uid"], "0190-d");
        assert_eq!(e["metadata"]["version"], "1.3.0");
        assert_eq!(e["metadata"]["sequence"], 7);
        assert_eq!(e["metadata"]["log_provider"], "node-a");
        assert_eq!(
            e["metadata"]["original_time"],
            "2025-01-02T03:04:05.123456Z"
        );
        assert_eq!(e["metadata"]["product"]["name"], "Arbiter");
        assert_eq!(e["status_id"], 1);
        assert_eq!(e["status"], "Success");
        assert_eq!(e["status_code"], "allow");
        assert_eq!(e["action_id"], 1);
        assert_eq!(e["status_detail"], "user says");
        assert_eq!(e["message"], "admin says");
        assert_eq!(e["actor"]["user"]["uid"], "alice");
        assert_eq!(e["actor"]["user"]["type"], "User");
        assert_eq!(e["actor"]["user"]["credential_uid"], "cred-9");
        assert_eq!(e["actor"]["app_uid"], "bot-1");
        assert_eq!(e["actor"]["authorizations"][1]["policy"]["uid"], "p2");
        assert_eq!(
            e["actor"]["authorizations"][0]["policy"]["version"],
            "sha256:abc"
        );
        assert_eq!(e["actor"]["authorizations"][0]["decision"], "allow");
        assert_eq!(e["api"]["operation"], "fs:read");
        assert_eq!(e["api"]["service"]["name"], "mcp:fs");
        assert_eq!(e["resources"][0]["uid"], "/etc/hosts");
        assert_eq!(e["resources"][0]["type"], "File");
        assert_eq!(e["unmapped"]["delegation"][0]["id"], "bob");
        assert_eq!(e["unmapped"]["context_digest"], "sha256:00");
        assert_eq!(e["unmapped"]["eval_us"], 42);
        assert_eq!(e["unmapped"]["ts_us"], 1_735_787_045_123_456i64);
    }

    #[test]
    fn outcomes_map_to_status_and_action() {
        let d = to_ocsf(&rec(Outcome::Deny));
        assert_eq!(
            (d["status_id"].as_u64(), d["action_id"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(d["status"], "Failure");
        assert_eq!(d["action"], "Denied");
        let a = to_ocsf(&rec(Outcome::RequireApproval));
        assert_eq!(
            (a["status_id"].as_u64(), a["action_id"].as_u64()),
            (Some(99), Some(99))
        );
        assert_eq!(a["status_code"], "require_approval");
        let mut r = rec(Outcome::Deny);
        r.determining_policies.clear();
        r.subject.agent_id = None;
        let e = to_ocsf(&r);
        assert_eq!(
            e["actor"]["authorizations"][0]["policy"]["is_applied"],
            false
        );
        assert!(e["actor"].get("app_uid").is_none());
    }
}
