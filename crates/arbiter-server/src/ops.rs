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

/// Ready while a policy version is being served, the decision log persists records and the
/// identity store is confirmed. A rejected reload does not make the node unready (the last
/// good version keeps serving) but shows in the details; a failed decision log does (503),
/// since every decision now denies, and so does a shared store not confirmed within its grace
/// (every credential check now denies).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.pdp.status();
    let snapshot = state.pdp.snapshot();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let log = state.pdp.recorder().map(|r| {
        let health = r.health();
        let (healthy, error) = match &health {
            arbiter_log::Health::Healthy => (true, None),
            arbiter_log::Health::Failed { reason } => (false, Some(reason.clone())),
            arbiter_log::Health::ShutDown => (false, Some("shut down".to_owned())),
        };
        let cp = r.log().latest_checkpoint();
        json!({
            "healthy": healthy,
            "error": error,
            "node_id": r.node_id(),
            "records": r.log().tree_size(),
            "latest_checkpoint": cp.map(|c| json!({"tree_size": c.tree_size, "ts_us": c.ts_us})),
        })
    });
    let log_ok = log.as_ref().is_none_or(|l| l["healthy"] == true);
    let store = state.pdp.identity().map(|i| i.store().health());
    let store_ok = store.as_ref().is_none_or(|h| h.up);
    let ready = log_ok && store_ok;
    // Witnesses never make the node unready: decisions keep flowing, checkpoints wait.
    let witness = state
        .config
        .witnessing
        .as_ref()
        .map(|w| w.status_json(checkpoint_size(&state)));
    let status_code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Json(json!({
        "status": if ready { "ready" } else { "not_ready" },
        "decision_log": log,
        "identity_store": store.map(|h| json!({
            "backend": h.backend,
            "up": h.up,
            "confirmed_ms_ago": h.confirmed_ms_ago,
            "problem": h.problem,
        })),
        "policy": {
            "version": status.active_version,
            "policies": snapshot.len(),
            "source": state.pdp.source().map(|p| p.display().to_string()),
            "loaded_at": secs(status.loaded_at),
            "last_reload_error": status.last_error,
            "last_reload_error_at": status.last_error_at.map(secs),
            "shadow_version": state.pdp.shadow_version(),
        },
        "witness": witness,
    }));
    (status_code, body).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.pdp.render_metrics();
    if let Some(w) = &state.config.witnessing {
        text.push_str(&w.render_metrics(checkpoint_size(&state)));
    }
    if let Some(recorder) = state.pdp.recorder() {
        let log = recorder.log();
        let m = log.memory();
        text.push_str(&format!(
            "# HELP arbiter_log_records Records in the decision log.\n\
             # TYPE arbiter_log_records gauge\n\
             arbiter_log_records {}\n\
             # HELP arbiter_log_sealed_segments Decision log segments sealed (their offsets and \
             ids in index files, not in memory).\n\
             # TYPE arbiter_log_sealed_segments gauge\n\
             arbiter_log_sealed_segments {}\n\
             # HELP arbiter_log_memory_bytes Bytes the decision log holds in memory for its tree \
             and indexes (bounded by the segment size, not the number of records).\n\
             # TYPE arbiter_log_memory_bytes gauge\n\
             arbiter_log_memory_bytes {}\n",
            log.tree_size(),
            m.sealed_segments,
            m.tree_bytes + m.open_segment_bytes
        ));
    }
    if let Some(identity) = state.pdp.identity() {
        let h = identity.store().health();
        text.push_str(&format!(
            "# HELP arbiter_store_up Whether the identity store is reachable and its changes are \
             followed (0: credential checks deny).\n\
             # TYPE arbiter_store_up gauge\n\
             arbiter_store_up{{backend=\"{}\"}} {}\n",
            h.backend,
            u8::from(h.up)
        ));
        if let Some(ms) = h.confirmed_ms_ago {
            text.push_str(&format!(
                "# HELP arbiter_store_confirmed_age_seconds Time since the shared identity store \
                 was last confirmed reachable and current.\n\
                 # TYPE arbiter_store_confirmed_age_seconds gauge\n\
                 arbiter_store_confirmed_age_seconds {:.3}\n",
                ms as f64 / 1000.0
            ));
        }
    }
    if let Some(log) = &state.config.access_log {
        text.push_str(&format!(
            "# HELP arbiter_access_log_lines_lost_total Access log lines dropped (the writer was \
             behind) or not written (a write failed).\n\
             # TYPE arbiter_access_log_lines_lost_total counter\n\
             arbiter_access_log_lines_lost_total {}\n",
            log.lines_lost()
        ));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
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

/// Size of the decision log's latest checkpoint (0 without one).
fn checkpoint_size(state: &AppState) -> u64 {
    state
        .pdp
        .recorder()
        .and_then(|r| r.log().latest_checkpoint())
        .map_or(0, |c| c.tree_size)
}
