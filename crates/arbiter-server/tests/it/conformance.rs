//! The AuthZEN interop vectors (corpus/authzen) through the real HTTP server.

use serde_json::{Value, json};

use crate::support::{Server, example, state_for, workspace_root};

fn vectors(name: &str) -> Value {
    let path = workspace_root().join("corpus/authzen").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn run_single(server: &Server, cases: &Value) -> usize {
    let mut checked = 0;
    for case in cases.as_array().unwrap() {
        let reply = server
            .post_json("/access/v1/evaluation", &case["request"])
            .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let got = reply.json();
        assert_eq!(
            got["decision"], case["expected"],
            "request {} got {}",
            case["request"], got
        );
        let ctx = &got["context"];
        assert!(ctx["decision_id"].as_str().is_some_and(|s| s.len() == 36));
        assert!(
            ctx["policy_version"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        checked += 1;
    }
    checked
}

#[tokio::test]
async fn todo_vectors_pass_over_http() {
    let server = Server::start(state_for(&example("authzen-todo"))).await;
    let v = vectors("todo-decisions.json");
    assert_eq!(run_single(&server, &v["evaluation"]).await, 40);
    let mut batches = 0;
    for case in v["evaluations"].as_array().unwrap() {
        let reply = server
            .post_json("/access/v1/evaluations", &case["request"])
            .await;
        assert_eq!(reply.status, 200);
        let got = reply.json();
        let decisions: Vec<Value> = got["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!({"decision": d["decision"]}))
            .collect();
        assert_eq!(
            Value::Array(decisions),
            case["expected"],
            "batch {}",
            case["request"]
        );
        batches += 1;
    }
    assert_eq!(batches, 3);
    server.stop().await;
}

#[tokio::test]
async fn api_gateway_vectors_pass_over_http() {
    let server = Server::start(state_for(&example("authzen-gateway"))).await;
    let v = vectors("api-gateway-decisions.json");
    assert_eq!(run_single(&server, &v["evaluation"]).await, 25);
    server.stop().await;
}

#[tokio::test]
async fn quickstart_over_http_names_the_forbid() {
    // The determining policies are administrators' details, given to every caller here.
    let config = arbiter_server::ServerConfig {
        admin_reasons_for_all_callers: true,
        ..arbiter_server::ServerConfig::default()
    };
    let server = Server::start(crate::support::state_with(&example("quickstart"), config)).await;
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(example("quickstart").join("requests/delete-ticket.json"))
            .unwrap(),
    )
    .unwrap();
    let got = server
        .post_json("/access/v1/evaluation", &body)
        .await
        .json();
    assert_eq!(got["decision"], false);
    assert_eq!(
        got["context"]["determining_policies"],
        json!(["no-delete-or-export"])
    );
    assert_eq!(
        got["context"]["reason_user"]["en"],
        "deleting or exporting tickets is not allowed for agents; ask a human"
    );
    server.stop().await;
}
