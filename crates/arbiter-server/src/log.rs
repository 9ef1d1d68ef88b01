//! Decision-log endpoints: a decision's record with its inclusion proof, the latest signed
//! checkpoint, and the log's public key.
//!
//! Decision records (with redacted contexts) need an admin token (`administrator` or
//! `auditor`); the checkpoint and the public key are public, since anyone may verify.

use std::ops::ControlFlow;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use arbiter_log::LogError;

use crate::AppState;
use crate::auth::{Need, require_admin};
use crate::error::ApiError;
use axum::http::HeaderMap;

/// The decision log, for a caller whose admin token (or console session) may read: 401/403
/// otherwise, 404 when this server keeps no log.
pub(crate) async fn readable_log<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
) -> Result<&'s arbiter_pdp::Recorder, ApiError> {
    require_admin(state, headers, Need::Read).await?;
    state.pdp.recorder().ok_or_else(ApiError::no_decision_log)
}

fn no_log() -> Response {
    ApiError::no_decision_log().into_response()
}

/// An admin token that may read, a decision log, and an id shaped like a decision id; else
/// the answer that refuses.
async fn may_read_decision(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(), Response> {
    require_admin(state, headers, Need::Read)
        .await
        .map_err(IntoResponse::into_response)?;
    valid_decision_id(state, id).map_or(Ok(()), Err)
}

/// Why this node cannot look `id` up (it has no log, or the id is not UUID-shaped), if so.
fn valid_decision_id(state: &AppState, id: &str) -> Option<Response> {
    if state.pdp.recorder().is_none() {
        return Some(no_log());
    }
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Some(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a decision id is a UUID",
            )
            .into_response(),
        );
    }
    None
}

/// A decision not in this node's log, asked of the other nodes of the fleet: the first that
/// holds it answers (its proof is against its own checkpoint, signed by its own key).
async fn elsewhere(state: &AppState, path: String) -> Response {
    let pdp = state.pdp.clone();
    let asked = tokio::task::spawn_blocking(move || crate::fleet::ask_others(&pdp, &path)).await;
    match asked {
        Ok(Ok(crate::fleet::Elsewhere::Found { node, mut body })) => {
            if let Some(map) = body.as_object_mut() {
                map.insert(
                    "answered_by".to_owned(),
                    json!({"node_id": node.id, "url": node.url, "public_key": node.public_key}),
                );
            }
            Json(body).into_response()
        }
        Ok(Ok(crate::fleet::Elsewhere::NotFound { asked, unreachable })) if unreachable.is_empty() => {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no decision with that id in this node's log or in the {asked} other node(s) of the fleet"
                ),
            )
            .into_response()
        }
        Ok(Ok(crate::fleet::Elsewhere::NotFound { unreachable, .. })) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "nodes_unreachable",
            format!(
                "no decision with that id in this node's log or in the nodes that answered; not \
                 asked or not answering: {}",
                unreachable.join(", ")
            ),
        )
        .into_response(),
        Ok(Err(why)) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "nodes_unreachable", why)
            .into_response(),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: impl ToString) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "decision_log_unavailable",
        e.to_string(),
    )
    .into_response()
}

pub async fn decision(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    // Another node of the fleet asking (signed with its log key): only this node's log.
    let path = format!("/v1/decisions/{id}");
    let from_peer = match crate::fleet::peer(&state.pdp, &headers, "GET", &path).await {
        Ok(peer) => peer,
        Err(why) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why).into_response();
        }
    };
    let checked = match &from_peer {
        None => may_read_decision(&state, &headers, &id).await,
        Some(_) => valid_decision_id(&state, &id).map_or(Ok(()), Err),
    };
    if let Err(refused) = checked {
        return refused;
    }
    let pdp = state.pdp.clone();
    let wanted = id.clone();
    let proved =
        tokio::task::spawn_blocking(move || pdp.recorder().map(|r| r.log().prove(&wanted))).await;
    let shared = state.pdp.identity().is_some_and(|i| i.store().shared());
    match proved {
        Ok(Some(Ok(bundle))) => Json(json!(bundle)).into_response(),
        Ok(Some(Err(LogError::NotFound(_)))) if shared && from_peer.is_none() => {
            elsewhere(&state, path).await
        }
        Ok(Some(Err(LogError::NotFound(_)))) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no decision with that id in this node's log",
        )
        .into_response(),
        Ok(Some(Err(e))) => unavailable(e),
        Ok(None) => no_log(),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/decisions/{id}/evidence`: the decision's evidence bundle (as `arbiter evidence`
/// writes it), for an administrator or an auditor.
pub async fn evidence(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = may_read_decision(&state, &headers, &id).await {
        return refused;
    }
    let pdp = state.pdp.clone();
    let made = tokio::task::spawn_blocking(move || {
        let recorder = pdp.recorder()?;
        let sources = arbiter_pdp::evidence::PolicySources {
            store: pdp.identity().map(|i| i.store().as_ref()),
            dir: pdp.source(),
        };
        Some(arbiter_pdp::evidence::assemble(
            recorder.log().dir(),
            &id,
            sources,
        ))
    })
    .await;
    use arbiter_pdp::evidence::EvidenceError as E;
    match made {
        Ok(Some(Ok(bundle))) => Json(json!(bundle)).into_response(),
        Ok(Some(Err(E::Log(LogError::NotFound(_))))) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no decision with that id in this node's log",
        )
        .into_response(),
        Ok(Some(Err(e @ (E::NotYetWitnessed { .. } | E::NotYetCheckpointed(_))))) => {
            ApiError::new(StatusCode::CONFLICT, "not_yet_provable", e.to_string()).into_response()
        }
        Ok(Some(Err(e))) => unavailable(e),
        Ok(None) => no_log(),
        Err(e) => unavailable(e),
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

/// Largest page of `GET /v1/decisions`.
const MAX_DECISIONS_PAGE: usize = 1000;

/// A filter parameter shared by `GET /v1/decisions`, its stream and its statistics: `None`
/// when `key` is not one, else whether `value` is valid (set on `filter`).
pub(crate) fn filter_param(
    filter: &mut arbiter_log::RecordFilter,
    key: &str,
    value: &str,
) -> Option<Result<(), ApiError>> {
    let bad = |msg: String| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_request",
        message: format!("`{key}` {msg}"),
        field: Some(key.to_owned()),
    };
    let text = || {
        if value.is_empty() || value.len() > 1024 {
            Err(bad("must be 1 to 1024 characters".into()))
        } else {
            Ok(Some(value.to_owned()))
        }
    };
    let set = |slot: &mut Option<String>| text().map(|v| *slot = v);
    Some(match key {
        "agent" => set(&mut filter.agent),
        "action" => set(&mut filter.action),
        "resource" => set(&mut filter.resource),
        "policy_version" => set(&mut filter.policy_version),
        "enforcement_point" => set(&mut filter.enforcement_point),
        "layer" => {
            if arbiter_log::LAYERS.contains(&value) {
                filter.layer = Some(value.to_owned());
                Ok(())
            } else {
                Err(bad(format!(
                    "must be one of {}",
                    arbiter_log::LAYERS.join(", ")
                )))
            }
        }
        "outcome" => match value {
            "allow" => Ok(arbiter_log::Outcome::Allow),
            "deny" => Ok(arbiter_log::Outcome::Deny),
            "require_approval" => Ok(arbiter_log::Outcome::RequireApproval),
            _ => Err(bad("must be `allow`, `deny` or `require_approval`".into())),
        }
        .map(|o| filter.outcome = Some(o)),
        "since" | "until" => match arbiter_log::parse_time(value) {
            Ok(t) if key == "since" => {
                filter.since_us = Some(t);
                Ok(())
            }
            Ok(t) => {
                filter.until_us = Some(t);
                Ok(())
            }
            Err(e) => Err(bad(e.to_string())),
        },
        _ => return None,
    })
}

/// `GET /v1/decisions?agent=&action=&outcome=&resource=&since=&until=&policy_version=&enforcement_point=&layer=&order=&limit=&after=&before=`
/// Records in log order (oldest first), at most `limit` (default 100, at most 1000); `after`
/// is the `seq` (leaf index) of the last record of the previous page (the response's
/// `next_after`, `null` on the last page). With `order=newest`, the newest first, paged with
/// `before` (the `next_after` of the previous page, which is then the oldest record it
/// returned; a full page's next page may be empty). `enforcement_point` is a prefix (`mcp:` or
/// `mcp:fs`); `layer` one of `applications`, `infrastructure`, `data`, `ai`, `agents`
/// (see [`arbiter_log::layer_of`]). Reads from the segment a page starts in (`after`, `since`,
/// or the end for `order=newest`): meant for consoles and investigations, not for hot paths.
pub async fn decisions(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let recorder = match readable_log(&state, &headers).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let bad = |field: &str, msg: String| {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: format!("`{field}` {msg}"),
            field: Some(field.to_owned()),
        }
        .into_response()
    };
    let mut filter = arbiter_log::RecordFilter::default();
    let mut limit = 100usize;
    let mut after: Option<u64> = None;
    let mut before: Option<u64> = None;
    let mut newest = false;
    for (key, value) in &params {
        if let Some(known) = filter_param(&mut filter, key, value) {
            if let Err(e) = known {
                return e.into_response();
            }
            continue;
        }
        match key.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(l) if l > 0 => limit = l.min(MAX_DECISIONS_PAGE),
                _ => return bad("limit", "must be a positive integer".into()),
            },
            "after" => match value.parse::<u64>() {
                Ok(a) => after = Some(a),
                Err(_) => return bad("after", "must be a record sequence number".into()),
            },
            "before" => match value.parse::<u64>() {
                Ok(b) => before = Some(b),
                Err(_) => return bad("before", "must be a record sequence number".into()),
            },
            "order" => match value.as_str() {
                "oldest" => newest = false,
                "newest" => newest = true,
                _ => return bad("order", "must be `oldest` or `newest`".into()),
            },
            other => return bad(other, "is not a known filter (agent, action, outcome, resource, since, until, policy_version, enforcement_point, layer, order, limit, after, before)".into()),
        }
    }
    if newest && after.is_some() {
        return bad(
            "after",
            "pages newest first with `before`, not `after`".into(),
        );
    }
    if !newest && before.is_some() {
        return bad(
            "before",
            "pages oldest first with `after`, not `before` (or add `order=newest`)".into(),
        );
    }
    let dir = recorder.log().dir().to_path_buf();
    let scanned = tokio::task::spawn_blocking(
        move || -> Result<(Vec<serde_json::Value>, Option<u64>), LogError> {
            if newest {
                let (page, next) = arbiter_log::newest_records(&dir, &filter, before, limit)?;
                return Ok((page.iter().map(|(_, r)| json!(r)).collect(), next));
            }
            // Oldest first, from the segment that holds the record after `after` (or the
            // first that can hold `since`), not from the start of the log.
            let mut follower = match (after, filter.since_us) {
                (Some(a), _) => arbiter_log::Follower::at_record(&dir, a.saturating_add(1))?,
                (None, Some(t)) => arbiter_log::Follower::since(&dir, t)?,
                (None, None) => arbiter_log::Follower::new(&dir),
            };
            let mut page = Vec::new();
            let mut last = None;
            let mut more = false;
            follower.poll(&mut |seq, record| {
                if after.is_some_and(|a| seq <= a) || !filter.matches(&record) {
                    return ControlFlow::Continue(());
                }
                if page.len() == limit {
                    more = true;
                    return ControlFlow::Break(());
                }
                last = Some(seq);
                page.push(json!(record));
                ControlFlow::Continue(())
            })?;
            Ok((page, if more { last } else { None }))
        },
    )
    .await;
    match scanned {
        Ok(Ok((page, next))) => {
            Json(json!({"decisions": page, "next_after": next})).into_response()
        }
        Ok(Err(e)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "decision_log_unavailable",
            e.to_string(),
        )
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "decision_log_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}
