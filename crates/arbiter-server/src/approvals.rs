//! `/v1/approvals`: the human approvals `@require_approval` permits ask for (see
//! `arbiter_pdp::approvals`). Reading needs an admin token; approving and denying an
//! administrator's, whose name is recorded as the approver.

use arbiter_pdp::identity::now_us;
use arbiter_store::{ApprovalState, StoreError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::AppState;
use crate::agents::{Params, actor, answer, bad, blocking, json_status, limit_param};
use crate::auth::{Need, require_admin};
use crate::body::read_json;

/// `GET /v1/approvals?state=pending|approved|denied|used|all&limit=N` (pending by default).
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let mut which = Some(ApprovalState::Pending);
            let mut limit = 100usize;
            for (k, v) in &params {
                match k.as_str() {
                    "state" if v == "all" => which = None,
                    "state" => {
                        which = Some(v.parse::<ApprovalState>().map_err(|_| {
                            bad("state", "`state` is pending, approved, denied, used or all")
                        })?);
                    }
                    "limit" => limit = limit_param(v, 1000)?,
                    other => {
                        return Err(bad(
                            other,
                            format!("`{other}` is not a parameter (state, limit)"),
                        ));
                    }
                }
            }
            let list = blocking(&state, move |s| Ok(s.list_approvals(which, limit)?)).await?;
            Ok(json_status(StatusCode::OK, &json!({ "approvals": list })))
        }
        .await,
    )
}

/// `GET /v1/approvals/{id}`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let a = blocking(&state, move |s| {
                s.approval(&id)?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "approval",
                        id,
                    }
                    .into()
                })
            })
            .await?;
            Ok(json_status(StatusCode::OK, &json!(a)))
        }
        .await,
    )
}

/// `POST /v1/approvals/{id}/approve` with `{"reason": "…"}`.
pub async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    decide(state, headers, id, body, true).await
}

/// `POST /v1/approvals/{id}/deny` with `{"reason": "…"}`.
pub async fn deny(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    decide(state, headers, id, body, false).await
}

async fn decide(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Body,
    approve: bool,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = read_json(&headers, body, state.config.limits).await?;
            if let Some(k) = body.keys().find(|k| k.as_str() != "reason") {
                return Err(bad(k, format!("`{k}` is not a field (reason)")));
            }
            let reason = match body.get("reason") {
                Some(Value::String(r)) => r.clone(),
                _ => return Err(bad("reason", "`reason` (a string) is required: say why")),
            };
            let a = blocking(&state, move |s| {
                // The approver is the person the admin token was issued to (its name).
                let approver = arbiter_pdp::admin::token_holder(s, &admin)?;
                Ok(s.decide_approval(&id, approve, &approver, &reason, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &json!(a)))
        }
        .await,
    )
}
