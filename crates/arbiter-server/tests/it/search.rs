//! AuthZEN search endpoints with pagination.

use serde_json::{Value, json};

use crate::support::{example, policy_dir, post, state_for};

const ROLE_ADMIN: &str = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";

fn ids(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn subject_search_pages_through_permitted_subjects() {
    let state = state_for(&example("authzen-todo"));
    let mut body = json!({
        "subject": {"type": "user"},
        "action": {"name": "can_create_todo"},
        "resource": {"type": "todo", "id": "t1"},
        "page": {"limit": 2}
    });
    let first = post(&state, "/access/v1/search/subject", &body)
        .await
        .json();
    assert_eq!(first["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        first["page"]["total"], 3,
        "rick, morty, summer create todos"
    );
    let token = first["page"]["next_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    body["page"]["token"] = json!(token);
    let second = post(&state, "/access/v1/search/subject", &body)
        .await
        .json();
    assert_eq!(second["results"].as_array().unwrap().len(), 1);
    assert_eq!(second["page"]["next_token"], "", "last page");
    let mut all = ids(&first);
    all.extend(ids(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);
    assert!(all.contains(&ROLE_ADMIN.to_owned()));

    body["page"]["token"] = json!("garbage");
    let bad = post(&state, "/access/v1/search/subject", &body).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["field"], "page.token");
}

#[tokio::test]
async fn resource_and_action_search() {
    let dir = policy_dir(&[
        (
            "p.cedar",
            r#"permit(principal, action == Action::"view", resource) when { resource.public };
           permit(principal, action == Action::"edit", resource == Doc::"mine");"#,
        ),
        (
            "entities.json",
            r#"[{"uid":{"type":"Doc","id":"a"},"attrs":{"public":true},"parents":[]},
            {"uid":{"type":"Doc","id":"b"},"attrs":{"public":false},"parents":[]},
            {"uid":{"type":"Doc","id":"c"},"attrs":{"public":true},"parents":[]}]"#,
        ),
    ]);
    let state = state_for(dir.path());
    let got = post(
        &state,
        "/access/v1/search/resource",
        &json!({
            "subject": {"type": "User", "id": "u"},
            "action": {"name": "view"},
            "resource": {"type": "Doc"}
        }),
    )
    .await
    .json();
    assert_eq!(ids(&got), vec!["a", "c"]);
    assert_eq!(got["results"][0]["type"], "Doc");

    let got = post(
        &state,
        "/access/v1/search/action",
        &json!({
            "subject": {"type": "User", "id": "u"},
            "resource": {"type": "Doc", "id": "mine", "properties": {"public": true}}
        }),
    )
    .await
    .json();
    assert_eq!(got["results"], json!([{"name": "edit"}, {"name": "view"}]));

    let unknown = post(
        &state,
        "/access/v1/search/resource",
        &json!({
            "subject": {"type": "User", "id": "u"},
            "action": {"name": "view"},
            "resource": {"type": "Nothing"}
        }),
    )
    .await;
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.json()["results"], json!([]));

    let missing = post(
        &state,
        "/access/v1/search/resource",
        &json!({"subject": {"type": "User", "id": "u"}}),
    )
    .await;
    assert_eq!(missing.status, 400);
}
