//! Decision-log endpoints: a decision's record with its inclusion proof, the latest signed
//! checkpoint, and the log's public key.
//!
//! These expose decision records (with redacted contexts). Until administrator tokens guard
//! them, keep `serve` on a loopback or otherwise trusted address.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use arbiter_log::LogError;

use crate::AppState;
use crate::error::ApiError;

fn no_log() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "decision_log_disabled",
        "this server does not keep a decision log (`--decision-log off`)",
    )
    .into_response()
}

pub async fn decision(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if state.pdp.recorder().is_none() {
        return no_log();
    }
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a decision id is a UUID",
        )
        .into_response();
    }
    let pdp = state.pdp.clone();
    let proved =
        tokio::task::spawn_blocking(move || pdp.recorder().map(|r| r.log().prove(&id))).await;
    match proved {
        Ok(Some(Ok(bundle))) => Json(json!(bundle)).into_response(),
        Ok(Some(Err(LogError::NotFound(_)))) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no decision with that id in this node's log",
        )
        .into_response(),
        Ok(Some(Err(e))) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "decision_log_unavailable",
            e.to_string(),
        )
        .into_response(),
        Ok(None) => no_log(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "decision_log_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

pub async fn checkpoint(State(state): State<AppState>) -> Response {
    let Some(recorder) = state.pdp.recorder() else {
        return no_log();
    };
    match recorder.log().latest_checkpoint() {
        Some(cp) => Json(json!(cp)).into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_checkpoint",
            "no signed checkpoint yet; one is written within a second of start",
        )
        .into_response(),
    }
}

pub async fn pubkey(State(state): State<AppState>) -> Response {
    let Some(recorder) = state.pdp.recorder() else {
        return no_log();
    };
    let key = recorder.log().public_key();
    Json(json!({"public_key": key.to_hex(), "key_id": key.key_id(), "algorithm": "ed25519"}))
        .into_response()
}
