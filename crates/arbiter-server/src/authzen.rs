//! AuthZEN 1.0 handlers: evaluation, evaluations, search and discovery.
//!
//! Every handler takes one policy snapshot for the whole request, so a batch or a paginated
//! search page is decided by a single version even while a reload swaps the next one in.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use arbiter_types::{
    EvaluationRequest, EvaluationsRequest, EvaluationsSemantic, SearchKind, SearchRequest,
};

use arbiter_pdp::Unrecorded;

use crate::AppState;
use crate::body::read_json;
use crate::error::ApiError;

/// Page size when the request gives none, and the largest honoured.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Where AuthZEN decisions come from, in their records.
const ENFORCEMENT_POINT: &str = "authzen";

fn json_response(value: &Value) -> Response {
    json_status(StatusCode::OK, value)
}

fn json_status(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A decision whose record could not be persisted: a deny, answered with 503 so that load
/// balancers move away from this node while PEPs fail closed on the body.
fn unrecorded_response(u: &Unrecorded) -> Response {
    let mut body = u.decision.to_authzen();
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "error".into(),
            json!({"code": "decision_log_unavailable", "message": u.error}),
        );
    }
    json_status(StatusCode::SERVICE_UNAVAILABLE, &body)
}

pub async fn evaluation(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let req = match read_json(&headers, body, state.config.limits)
        .await
        .and_then(|map| EvaluationRequest::from_json(map).map_err(ApiError::from))
    {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let snapshot = state.pdp.snapshot();
    answer_one(&state, &snapshot, &req).await
}

/// Decides and records one request, answered as an AuthZEN decision.
async fn answer_one(
    state: &AppState,
    snapshot: &arbiter_policy::Policies,
    req: &EvaluationRequest,
) -> Response {
    match state
        .pdp
        .decide_recorded(snapshot, req, ENFORCEMENT_POINT)
        .await
    {
        Ok(d) => json_response(&d.to_authzen()),
        Err(u) => unrecorded_response(&u),
    }
}

pub async fn evaluations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match evaluate_many(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn evaluate_many(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let map = read_json(headers, body, state.config.limits).await?;
    let batch = EvaluationsRequest::from_json(map)?;
    let snapshot = state.pdp.snapshot();
    let Some(items) = batch.items else {
        // No items: a single evaluation from the top-level fields, answered as one.
        let req = batch.defaults.complete()?;
        return Ok(answer_one(state, &snapshot, &req).await);
    };
    // Decide in order (the semantic may stop early), then record the batch together.
    let mut decided = Vec::with_capacity(items.len());
    for item in items {
        let resolved = item.and_then(|partial| partial.with_defaults(&batch.defaults).complete());
        let (req, decision, error) = match resolved {
            Ok(req) => {
                let d = state.pdp.decide_with(&snapshot, &req);
                (Some(req), d, None)
            }
            Err(e) => (None, state.pdp.reject(&snapshot, &e.to_string()), Some(e)),
        };
        let allowed = decision.outcome.is_allow();
        decided.push((req, decision, error));
        let stop = match batch.semantic {
            EvaluationsSemantic::ExecuteAll => false,
            EvaluationsSemantic::DenyOnFirstDeny => !allowed,
            EvaluationsSemantic::PermitOnFirstPermit => allowed,
        };
        if stop {
            break;
        }
    }
    let recorded = state
        .pdp
        .record_all(
            decided
                .iter()
                .map(|(req, d, _)| (req.as_ref(), d.clone()))
                .collect(),
            ENFORCEMENT_POINT,
        )
        .await;
    let mut failure = None;
    let mut results = Vec::with_capacity(recorded.len());
    for ((_, _, error), outcome) in decided.iter().zip(recorded) {
        let mut v = match outcome {
            Ok(d) => d.to_authzen(),
            Err(u) => {
                let v = u.decision.to_authzen();
                failure = Some(u.error);
                v
            }
        };
        if let (Some(e), Some(ctx)) = (error, v.get_mut("context").and_then(Value::as_object_mut)) {
            ctx.insert(
                "error".into(),
                json!({"code": "invalid_request", "field": e.field, "message": e.to_string()}),
            );
        }
        results.push(v);
    }
    Ok(match failure {
        None => json_response(&json!({ "evaluations": results })),
        Some(error) => json_status(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "evaluations": results,
                "error": {"code": "decision_log_unavailable", "message": error},
            }),
        ),
    })
}

pub async fn search_subject(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    search(state, headers, body, SearchKind::Subject).await
}

pub async fn search_resource(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    search(state, headers, body, SearchKind::Resource).await
}

pub async fn search_action(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    search(state, headers, body, SearchKind::Action).await
}

async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
    kind: SearchKind,
) -> Response {
    match run_search(&state, &headers, body, kind).await {
        Ok(v) => json_response(&v),
        Err(e) => e.into_response(),
    }
}

async fn run_search(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    kind: SearchKind,
) -> Result<Value, ApiError> {
    let map = read_json(headers, body, state.config.limits).await?;
    let req = SearchRequest::from_json(kind, map)?;
    let snapshot = state.pdp.snapshot();
    let offset = match &req.page.token {
        None => 0,
        Some(token) => decode_token(token, snapshot.version())?,
    };
    let limit = req.page.limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let all = snapshot.search(&req);
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let end = offset.saturating_add(page.len());
    let next_token = if end < total {
        encode_token(end, snapshot.version())
    } else {
        String::new()
    };
    Ok(json!({
        "results": page,
        "page": {"next_token": next_token, "count": end - offset.min(end), "total": total},
    }))
}

/// Page tokens are opaque to clients: `base64url("v1:<offset>:<policy version>")`. A token
/// from another policy version is refused, since the result list may have changed under it.
fn encode_token(offset: usize, version: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{offset}:{version}"))
}

fn decode_token(token: &str, version: &str) -> Result<usize, ApiError> {
    let bad = |msg: &str| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_request",
        message: format!("`page.token` {msg}"),
        field: Some("page.token".into()),
    };
    let raw = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad("is not a token this server issued"))?;
    let mut parts = raw.splitn(3, ':');
    match (
        parts.next(),
        parts.next().and_then(|o| o.parse::<usize>().ok()),
        parts.next(),
    ) {
        (Some("v1"), Some(offset), Some(v)) if v == version => Ok(offset),
        (Some("v1"), Some(_), Some(_)) => Err(bad(
            "was issued for another policy version; restart the search without a token",
        )),
        _ => Err(bad("is not a token this server issued")),
    }
}

pub async fn configuration(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state, &headers);
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
        "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
        "search_action_endpoint": format!("{base}/access/v1/search/action"),
    }))
    .into_response()
}

/// The base URL the server is reached at: the configured public URL, else `http://<Host>`
/// when the `Host` header is a plausible authority, else the listen address.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        });
    format!("http://{}", host.unwrap_or(&state.config.listen))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_a_version() {
        let t = encode_token(42, "sha256:abc");
        assert_eq!(decode_token(&t, "sha256:abc").unwrap(), 42);
        assert!(
            decode_token(&t, "sha256:def")
                .unwrap_err()
                .message
                .contains("another policy version")
        );
        assert!(decode_token("!!", "sha256:abc").is_err());
        assert!(decode_token(&URL_SAFE_NO_PAD.encode("v1:x:sha256:abc"), "sha256:abc").is_err());
    }
}
