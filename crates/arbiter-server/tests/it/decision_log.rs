//! Decisions are recorded before they are answered; when the log cannot persist, the node
//! fails closed and loses nothing it acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arbiter_log::{FaultSwitch, read_records, verify_dir};
use arbiter_pdp::{Identity, IdentitySettings, Pdp, Recorder, RecorderSettings};
use arbiter_server::{AppState, ServerConfig};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

use crate::support::{call, example, post};

fn read_ticket() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(example("quickstart").join("requests/read-ticket.json")).unwrap(),
    )
    .unwrap()
}

fn state_with_log(data: &std::path::Path, settings: RecorderSettings) -> AppState {
    state_and_token(data, settings).0
}

/// A state with a decision log and an identity store, and an auditor token for the
/// decision endpoints.
fn state_and_token(data: &std::path::Path, settings: RecorderSettings) -> (AppState, String) {
    let (recorder, _) = Recorder::open(data, settings).unwrap();
    let identity = Arc::new(Identity::open(data, IdentitySettings::default()).unwrap());
    let token = arbiter_pdp::admin::create_token(
        identity.store().as_ref(),
        &arbiter_pdp::admin::TokenSpec::Admin {
            role: "auditor".into(),
        },
        "tests",
        None,
        &arbiter_store::Actor::system("tests"),
        arbiter_pdp::identity::now_us(),
    )
    .unwrap();
    let pdp = Pdp::load(&example("quickstart"))
        .unwrap()
        .with_recorder(recorder)
        .with_identity(identity);
    (
        AppState::new(Arc::new(pdp), ServerConfig::default()),
        token.secret.expose().to_owned(),
    )
}

fn auditor_get(token: &str, uri: impl AsRef<str>) -> Request<Body> {
    Request::get(uri.as_ref())
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_decision_is_in_the_log_with_its_proof() {
    let data = tempfile::tempdir().unwrap();
    let (state, token) = state_and_token(
        data.path(),
        RecorderSettings {
            redact: vec!["delegation.user".into()],
            ..RecorderSettings::default()
        },
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        let got = post(&state, "/access/v1/evaluation", &read_ticket()).await;
        assert_eq!(got.status, 200);
        ids.push(
            got.json()["context"]["decision_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let batch = post(
        &state,
        "/access/v1/evaluations",
        &json!({
            "subject": {"type": "Agent", "id": "support-bot"},
            "action": {"name": "call_tool"},
            "evaluations": [
                {"resource": {"type": "Tool", "id": "helpdesk/read_ticket"}},
                {"resource": {"type": "Tool", "id": "helpdesk/delete_ticket"}},
                {}
            ]
        }),
    )
    .await
    .json();
    for item in batch["evaluations"].as_array().unwrap() {
        ids.push(item["context"]["decision_id"].as_str().unwrap().to_owned());
    }

    let proof = call(
        &state,
        auditor_get(&token, format!("/v1/decisions/{}", ids[0])),
    )
    .await;
    assert_eq!(proof.status, 200);
    let bundle = proof.json();
    assert_eq!(bundle["record"]["decision_id"], ids[0].as_str());
    assert_eq!(bundle["record"]["enforcement_point"], "authzen");
    assert_eq!(
        bundle["record"]["redacted_paths"],
        json!(["delegation.user"])
    );
    assert!(
        bundle["record"]["context"]["delegation"]["user"]
            .as_str()
            .unwrap()
            .starts_with("redacted:hmac-sha256:")
    );
    assert!(
        !bundle["record"]["context"].to_string().contains("alice"),
        "redacted value left the record"
    );
    let bundle: arbiter_log::InclusionProofBundle = serde_json::from_value(bundle).unwrap();
    arbiter_log::check_proof(&bundle, None).unwrap();

    let missing = call(
        &state,
        auditor_get(&token, "/v1/decisions/01a22612-953c-73ed-aebc-8c8cbf844725"),
    )
    .await;
    assert_eq!(missing.status, 404);
    let cp = call(
        &state,
        Request::get("/v1/log/checkpoint")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(cp.status, 200);
    let key = call(
        &state,
        Request::get("/v1/log/pubkey").body(Body::empty()).unwrap(),
    )
    .await
    .json();
    assert_eq!(key["public_key"].as_str().unwrap().len(), 64);

    // Query: filters and paging over the same records.
    let denied = call(&state, auditor_get(&token, "/v1/decisions?outcome=deny"))
        .await
        .json();
    let denied = denied["decisions"].as_array().unwrap().clone();
    assert_eq!(denied.len(), 2, "delete_ticket and the incomplete item");
    assert!(denied.iter().all(|r| r["outcome"] == "deny"));
    let by_agent = call(
        &state,
        auditor_get(
            &token,
            "/v1/decisions?outcome=deny&agent=support-bot&action=call_tool",
        ),
    )
    .await
    .json();
    assert_eq!(
        by_agent["decisions"][0]["resource"]["id"],
        "helpdesk/delete_ticket"
    );
    assert_eq!(
        by_agent["decisions"].as_array().unwrap().len(),
        1,
        "the incomplete item names no agent"
    );
    let first = call(&state, auditor_get(&token, "/v1/decisions?limit=3"))
        .await
        .json();
    assert_eq!(first["decisions"].as_array().unwrap().len(), 3);
    let after = first["next_after"].as_u64().unwrap();
    let rest = call(
        &state,
        auditor_get(&token, format!("/v1/decisions?limit=100&after={after}")),
    )
    .await
    .json();
    assert_eq!(rest["decisions"].as_array().unwrap().len(), ids.len() - 3);
    assert!(rest["next_after"].is_null());
    // Newest first, paged backwards with `before`: the same records, in reverse.
    let oldest_first: Vec<Value> = call(&state, auditor_get(&token, "/v1/decisions?limit=1000"))
        .await
        .json()["decisions"]
        .as_array()
        .unwrap()
        .clone();
    let newest = call(
        &state,
        auditor_get(&token, "/v1/decisions?order=newest&limit=2"),
    )
    .await
    .json();
    let mut seen: Vec<Value> = newest["decisions"].as_array().unwrap().clone();
    let before = newest["next_after"].as_u64().unwrap();
    let older = call(
        &state,
        auditor_get(
            &token,
            format!("/v1/decisions?order=newest&limit=1000&before={before}"),
        ),
    )
    .await
    .json();
    assert!(older["next_after"].is_null());
    seen.extend(older["decisions"].as_array().unwrap().iter().cloned());
    seen.reverse();
    assert_eq!(seen, oldest_first);
    for (q, field) in [
        ("colour=red", "colour"),
        ("order=random", "order"),
        ("order=newest&after=1", "after"),
        ("before=1", "before"),
        ("before=-1&order=newest", "before"),
    ] {
        let bad = call(&state, auditor_get(&token, format!("/v1/decisions?{q}"))).await;
        assert_eq!(bad.status, 400, "{q}");
        assert_eq!(bad.json()["error"]["field"], field, "{q}");
    }

    state.pdp.recorder().unwrap().log().shutdown().unwrap();
    let logged: Vec<String> = read_records(&data.path().join("log"))
        .unwrap()
        .map(|r| r.unwrap().1.decision_id)
        .collect();
    assert_eq!(logged.len(), ids.len());
    for id in &ids {
        assert!(logged.contains(id), "{id} answered but not logged");
    }
    let report = verify_dir(&data.path().join("log"), None, None).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_closed_and_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let switch = FaultSwitch::new();
    let state = state_with_log(
        data.path(),
        RecorderSettings {
            fault: Some(switch.hook()),
            checkpoint_every: Duration::from_secs(3600),
            checkpoint_every_records: 1_000_000,
            ..RecorderSettings::default()
        },
    );
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let got = post(&state, "/access/v1/evaluation", &read_ticket()).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["decision"], true);
        acknowledged.push(
            got.json()["context"]["decision_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    switch.fail_next_sync.store(true, Ordering::SeqCst);
    let failed = post(&state, "/access/v1/evaluation", &read_ticket()).await;
    assert_eq!(
        failed.status, 503,
        "an allow that cannot be recorded is not an allow"
    );
    let body = failed.json();
    assert_eq!(body["decision"], false);
    assert_eq!(body["error"]["code"], "decision_log_unavailable");
    assert!(body["context"]["decision_id"].is_string());
    assert_eq!(
        body["context"]["reason_user"]["en"],
        "denied: the decision could not be recorded"
    );

    // The log never retries and carries on: every later decision fails closed too.
    let later = post(&state, "/access/v1/evaluation", &read_ticket()).await;
    assert_eq!(later.status, 503);
    assert_eq!(later.json()["decision"], false);
    let batch = post(
        &state,
        "/access/v1/evaluations",
        &json!({
            "subject": {"type": "Agent", "id": "support-bot"},
            "action": {"name": "call_tool"},
            "evaluations": [{"resource": {"type": "Tool", "id": "helpdesk/read_ticket"}}]
        }),
    )
    .await;
    assert_eq!(batch.status, 503);
    assert_eq!(batch.json()["evaluations"][0]["decision"], false);

    let ready = call(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, 503);
    let ready = ready.json();
    assert_eq!(ready["status"], "not_ready");
    assert!(
        ready["decision_log"]["error"]
            .as_str()
            .unwrap()
            .contains("injected fault")
    );
    let metrics = String::from_utf8(
        call(
            &state,
            Request::get("/metrics").body(Body::empty()).unwrap(),
        )
        .await
        .body,
    )
    .unwrap();
    assert!(
        metrics.contains("arbiter_decision_log_healthy 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("arbiter_decisions_unrecorded_total 3"),
        "{metrics}"
    );

    drop(state);
    // Reopening recovers to the last durable record: everything acknowledged is there.
    let (recorder, _) = Recorder::open(data.path(), RecorderSettings::default()).unwrap();
    recorder.log().shutdown().unwrap();
    let logged: Vec<String> = read_records(&data.path().join("log"))
        .unwrap()
        .map(|r| r.unwrap().1.decision_id)
        .collect();
    for id in &acknowledged {
        assert!(logged.contains(id), "acknowledged {id} lost");
    }
    let report = verify_dir(&data.path().join("log"), None, None).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
}
