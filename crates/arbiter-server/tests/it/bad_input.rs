//! Bad input gets a clear 4xx naming what is wrong; never a 500, a panic or a hang.

use arbiter_server::ServerConfig;
use arbiter_types::JsonLimits;
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::support::{call, example, post, post_json, state_for, state_with};

#[tokio::test]
async fn malformed_requests_get_400_naming_the_field() {
    let state = state_for(&example("quickstart"));
    let cases = [
        ("not json", "invalid_json", None),
        ("", "empty_body", None),
        ("[1,2]", "invalid_request", None),
        ("\"str\"", "invalid_request", None),
        (
            r#"{"action":{"name":"a"},"resource":{"type":"T","id":"t"}}"#,
            "invalid_request",
            Some("subject"),
        ),
        (
            r#"{"subject":{"type":"Agent","id":1},"action":{"name":"a"},"resource":{"type":"T","id":"t"}}"#,
            "invalid_request",
            Some("subject.id"),
        ),
        (
            r#"{"subject":{"type":"Agent","id":"a"},"action":{},"resource":{"type":"T","id":"t"}}"#,
            "invalid_request",
            Some("action.name"),
        ),
        (
            r#"{"subject":{"type":"Agent","id":"a"},"action":{"name":"a"},"resource":[]}"#,
            "invalid_request",
            Some("resource"),
        ),
        (
            r#"{"subject":{"type":"Agent","id":"a"},"action":{"name":"a"},"resource":{"type":"T","id":"t"},"context":3}"#,
            "invalid_request",
            Some("context"),
        ),
        (
            r#"{"subject":{"type":"Agent","id":"a","properties":{"x":0.5}},"action":{"name":"a"},"resource":{"type":"T","id":"t"}}"#,
            "invalid_request",
            Some("subject.properties.x"),
        ),
    ];
    for (body, code, field) in cases {
        let reply = call(&state, post_json("/access/v1/evaluation", body)).await;
        assert_eq!(reply.status, 400, "{body}");
        let err = &reply.json()["error"];
        assert_eq!(err["code"], code, "{body}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
        match field {
            Some(f) => assert_eq!(err["field"], f, "{body}"),
            None => assert!(err.get("field").is_none()),
        }
    }
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let state = state_for(&example("quickstart"));
    let body = json!({
        "subject": {"type": "Agent", "id": "support-bot", "extra": 1},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/read_ticket"},
        "whatever": {"nested": true}
    });
    let reply = post(&state, "/access/v1/evaluation", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["decision"], true);
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_400() {
    let state = state_for(&example("quickstart"));
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = Request::post("/access/v1/evaluation");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let reply = call(&state, req.body(Body::from("{}")).unwrap()).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["code"], "unsupported_media_type");
    }
    let ok = call(
        &state,
        Request::post("/access/v1/evaluation")
            .header("content-type", "application/json; charset=utf-8")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 400);
    assert_eq!(
        ok.json()["error"]["code"],
        "invalid_request",
        "charset parameter is accepted"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_and_deep_ones_400() {
    let state = state_with(
        &example("quickstart"),
        ServerConfig {
            limits: JsonLimits {
                max_bytes: 256,
                max_depth: 8,
            },
            ..ServerConfig::default()
        },
    );
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300));
    let reply = call(&state, post_json("/access/v1/evaluation", big.clone())).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "payload_too_large");
    // Without a content-length (a streamed body), the limit still holds.
    let stream = Body::from_stream(futures_stream(big));
    let reply = call(&state, post_json("/access/v1/evaluation", stream)).await;
    assert_eq!(reply.status, 413);

    let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
    let reply = call(
        &state,
        post_json("/access/v1/evaluation", format!(r#"{{"a":{deep}}}"#)),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "too_deep");
}

fn futures_stream(s: String) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    struct Once(Option<Vec<u8>>);
    impl futures_core::Stream for Once {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.take().map(Ok))
        }
    }
    Once(Some(s.into_bytes()))
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let state = state_for(&example("quickstart"));
    let reply = call(&state, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "not_found");
    let reply = call(
        &state,
        Request::get("/access/v1/evaluation")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn invalid_cedar_names_are_denied_with_a_decision_id() {
    // The errors are administrators' details, given to every caller here.
    let config = arbiter_server::ServerConfig {
        admin_reasons_for_all_callers: true,
        ..arbiter_server::ServerConfig::default()
    };
    let state = crate::support::state_with(&example("quickstart"), config);
    let body = json!({
        "subject": {"type": "not a type", "id": "x"},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/read_ticket"}
    });
    let got = post(&state, "/access/v1/evaluation", &body).await.json();
    assert_eq!(got["decision"], false);
    assert!(got["context"]["decision_id"].is_string());
    assert!(
        got["context"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("`subject.type`")
    );
}
