//! `POST /access/v1/evaluations`: defaults, semantics, per-item errors.

use serde_json::{Value, json};

use crate::support::{policy_dir, post, state_for};

const POLICY: &str = r#"permit(principal, action == Action::"read", resource);"#;

fn item(action: &str) -> Value {
    json!({"action": {"name": action}})
}

fn decisions(reply: &Value) -> Vec<Value> {
    reply["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].clone())
        .collect()
}

#[tokio::test]
async fn semantics_stop_where_they_should() {
    let dir = policy_dir(&[("p.cedar", POLICY)]);
    let state = state_for(dir.path());
    let base = json!({
        "subject": {"type": "User", "id": "u"},
        "resource": {"type": "Doc", "id": "d"},
        "evaluations": [item("read"), item("write"), item("read"), item("write")]
    });
    let run = |semantic: Option<&str>| {
        let mut body = base.clone();
        if let Some(s) = semantic {
            body["options"] = json!({"evaluations_semantic": s});
        }
        body
    };
    let all = post(&state, "/access/v1/evaluations", &run(None))
        .await
        .json();
    assert_eq!(
        decisions(&all),
        vec![json!(true), json!(false), json!(true), json!(false)]
    );
    let explicit = post(&state, "/access/v1/evaluations", &run(Some("execute_all")))
        .await
        .json();
    assert_eq!(decisions(&explicit).len(), 4);
    let deny_first = post(
        &state,
        "/access/v1/evaluations",
        &run(Some("deny_on_first_deny")),
    )
    .await
    .json();
    assert_eq!(decisions(&deny_first), vec![json!(true), json!(false)]);
    let mut permit_body = run(Some("permit_on_first_permit"));
    permit_body["evaluations"] = json!([item("write"), item("read"), item("write")]);
    let permit_first = post(&state, "/access/v1/evaluations", &permit_body)
        .await
        .json();
    assert_eq!(decisions(&permit_first), vec![json!(false), json!(true)]);

    let bad = post(&state, "/access/v1/evaluations", &run(Some("sometimes"))).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["field"], "options.evaluations_semantic");
}

#[tokio::test]
async fn an_incomplete_item_is_a_deny_with_an_error_not_an_http_error() {
    let dir = policy_dir(&[("p.cedar", POLICY)]);
    let state = state_for(dir.path());
    let body = json!({
        "action": {"name": "read"},
        "evaluations": [
            {"subject": {"type": "User", "id": "u"}, "resource": {"type": "Doc", "id": "d"}},
            {"resource": {"type": "Doc", "id": "d"}},
            {"subject": {"type": "User", "id": 5}, "resource": {"type": "Doc", "id": "d"}}
        ]
    });
    let reply = post(&state, "/access/v1/evaluations", &body).await;
    assert_eq!(reply.status, 200);
    let got = reply.json();
    assert_eq!(
        decisions(&got),
        vec![json!(true), json!(false), json!(false)]
    );
    let missing = &got["evaluations"][1]["context"];
    assert_eq!(missing["error"]["field"], "subject");
    assert!(missing["decision_id"].is_string());
    assert_eq!(
        got["evaluations"][2]["context"]["error"]["field"],
        "evaluations[2].subject.id"
    );
}

#[tokio::test]
async fn absent_or_empty_evaluations_is_a_single_evaluation() {
    let dir = policy_dir(&[("p.cedar", POLICY)]);
    let state = state_for(dir.path());
    for extra in [json!(null), json!([])] {
        let mut body = json!({
            "subject": {"type": "User", "id": "u"},
            "action": {"name": "read"},
            "resource": {"type": "Doc", "id": "d"}
        });
        if !extra.is_null() {
            body["evaluations"] = extra;
        }
        let got = post(&state, "/access/v1/evaluations", &body).await.json();
        assert_eq!(got["decision"], true, "{got}");
        assert!(got.get("evaluations").is_none());
    }
    let incomplete = post(
        &state,
        "/access/v1/evaluations",
        &json!({"evaluations": []}),
    )
    .await;
    assert_eq!(incomplete.status, 400);
    assert_eq!(incomplete.json()["error"]["field"], "subject");
}

#[tokio::test]
async fn a_batch_is_decided_by_one_version() {
    let dir = policy_dir(&[("p.cedar", POLICY)]);
    let state = state_for(dir.path());
    let body = json!({
        "subject": {"type": "User", "id": "u"},
        "resource": {"type": "Doc", "id": "d"},
        "evaluations": [item("read"), item("read"), item("write")]
    });
    let got = post(&state, "/access/v1/evaluations", &body).await.json();
    let versions: Vec<&Value> = got["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["context"]["policy_version"])
        .collect();
    assert!(versions.windows(2).all(|w| w[0] == w[1]));
    let ids: std::collections::HashSet<&str> = got["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["context"]["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "every item has its own decision id");
}
