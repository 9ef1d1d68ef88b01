//! Operations endpoints: liveness, readiness, metrics, and JSON answers for unknown routes.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready while a policy version is being served. A rejected reload does not make the node
/// unready (the last good version keeps serving) but shows in the details.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.pdp.status();
    let snapshot = state.pdp.snapshot();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Json(json!({
        "status": "ready",
        "policy": {
            "version": status.active_version,
            "policies": snapshot.len(),
            "source": state.pdp.source().map(|p| p.display().to_string()),
            "loaded_at": secs(status.loaded_at),
            "last_reload_error": status.last_error,
            "last_reload_error_at": status.last_error_at.map(secs),
        },
    }))
    .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.pdp.render_metrics(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

pub async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
    .into_response()
}
