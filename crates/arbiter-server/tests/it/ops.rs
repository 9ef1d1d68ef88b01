//! Discovery, request ids, health, readiness, metrics and reload over HTTP.

use std::time::Duration;

use arbiter_server::{AppState, ServerConfig};
use arbiter_testkit::{PATIENCE, wait_for_async, wait_until_async};
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::support::{Server, call, example, policy_dir, post, state_for};

#[tokio::test]
async fn discovery_advertises_the_base_url_the_client_used() {
    let server = Server::start(state_for(&example("quickstart"))).await;
    let reply = server
        .request("GET", "/.well-known/authzen-configuration", &[], b"")
        .await;
    assert_eq!(reply.status, 200);
    let cfg = reply.json();
    let base = format!("http://{}", server.addr);
    assert_eq!(cfg["policy_decision_point"], base);
    for (key, path) in [
        ("access_evaluation_endpoint", "/access/v1/evaluation"),
        ("access_evaluations_endpoint", "/access/v1/evaluations"),
        ("search_subject_endpoint", "/access/v1/search/subject"),
        ("search_resource_endpoint", "/access/v1/search/resource"),
        ("search_action_endpoint", "/access/v1/search/action"),
    ] {
        assert_eq!(cfg[key], format!("{base}{path}"));
    }
    server.stop().await;

    let state = AppState::new(
        state_for(&example("quickstart")).pdp,
        ServerConfig {
            public_url: Some("https://pdp.example.com/".into()),
            ..ServerConfig::default()
        },
    );
    let cfg = call(
        &state,
        Request::get("/.well-known/authzen-configuration")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .json();
    assert_eq!(cfg["policy_decision_point"], "https://pdp.example.com");
}

#[tokio::test]
async fn request_ids_are_echoed() {
    let state = state_for(&example("quickstart"));
    let req = Request::post("/access/v1/evaluation")
        .header("content-type", "application/json")
        .header("x-request-id", "req-123")
        .body(Body::from("{}"))
        .unwrap();
    let reply = call(&state, req).await;
    assert_eq!(
        reply.headers["x-request-id"], "req-123",
        "echoed on errors too"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let state = state_for(&example("quickstart"));
    let health = call(
        &state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(health.status, 200);
    let body: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(example("quickstart").join("requests/read-ticket.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        post(&state, "/access/v1/evaluation", &body).await.json()["decision"],
        true
    );
    let ready = call(&state, Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .json();
    assert_eq!(ready["status"], "ready");
    let version = ready["policy"]["version"].as_str().unwrap().to_owned();
    let metrics = call(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("arbiter_decisions_total{outcome=\"allow\"} 1"),
        "{text}"
    );
    assert!(text.contains("arbiter_decision_duration_seconds_count 1"));
    assert!(text.contains(&format!("arbiter_policy_info{{version=\"{version}\"}} 1")));
    assert!(text.contains("arbiter_policy_reloads_total{result=\"failure\"} 0"));
}

#[tokio::test]
async fn reload_over_http_keeps_serving_the_last_good_version() {
    let dir = policy_dir(&[("p.cedar", "forbid(principal, action, resource);")]);
    let state = state_for(dir.path());
    let _watch = state.pdp.watch(Duration::from_millis(25)).unwrap();
    let server = Server::start(state).await;
    let req = json!({"subject": {"type": "U", "id": "u"}, "action": {"name": "a"}, "resource": {"type": "R", "id": "r"}});
    assert_eq!(
        server.post_json("/access/v1/evaluation", &req).await.json()["decision"],
        false
    );

    std::fs::write(
        dir.path().join("p.cedar"),
        "permit(principal, action, resource);",
    )
    .unwrap();
    wait_until_async("the valid change is applied", PATIENCE, async || {
        server.post_json("/access/v1/evaluation", &req).await.json()["decision"] == true
    })
    .await;

    std::fs::write(
        dir.path().join("p.cedar"),
        "permit(principal, action, resource) when {",
    )
    .unwrap();
    let err = wait_for_async("the invalid change is reported", PATIENCE, async || {
        let ready = server.request("GET", "/readyz", &[], b"").await;
        assert_eq!(ready.status, 200);
        ready.json()["policy"]["last_reload_error"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(err.contains("p.cedar:1:"), "{err}");
    assert_eq!(
        server.post_json("/access/v1/evaluation", &req).await.json()["decision"],
        true,
        "last good version serves"
    );
    let metrics = server.request("GET", "/metrics", &[], b"").await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("arbiter_policy_reload_failing 1"));
    assert!(text.contains("arbiter_policy_reloads_total{result=\"failure\"} 1"));
    server.stop().await;
}
