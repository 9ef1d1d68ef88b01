//! AuthZEN 1.0 handlers: evaluation, evaluations, search and discovery.
//!
//! Every handler takes one policy snapshot for the whole request, so a batch or a paginated
//! search page is decided by a single version even while a reload swaps the next one in.

use std::sync::Arc;

use arbiter_policy::Policies;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use arbiter_types::{
    Action, Audience, EvaluationRequest, EvaluationsRequest, EvaluationsSemantic, RequestError,
    SearchKind, SearchRequest,
};

use arbiter_pdp::identity::now_us;
use arbiter_pdp::{Attribution, Caller, Decided, Denial, Source, Unrecorded};
use axum::extract::Request;
use axum::http::request::Parts;

use crate::auth::{bearer, client_address_of, unauthenticated};
use crate::body::read_json;
use crate::error::ApiError;
use crate::{AppState, access_log};

/// Page size when the request gives none, and the largest honoured.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Where AuthZEN decisions come from, in their records, unless the caller names itself.
const ENFORCEMENT_POINT: &str = "authzen";

/// The header an Arbiter enforcement point names itself with (`exec:<host>`, `mcp:<server>`,
/// `sql:<db>`, `http:<service>`), so that its decisions are recorded as its own.
pub const ENFORCEMENT_POINT_HEADER: &str = "x-arbiter-enforcement-point";

/// The header with which an enforcement point that applies row filters (`arbiter sql proxy
/// --pdp`) lists the evaluations (by index in the batch, comma-separated) that may be
/// allowed for some rows of their table: those get [`arbiter_pdp::Pdp::decide_rows`], and an
/// answer allowed for some rows carries them as `context.row_filter`.
pub const ROW_FILTERS_HEADER: &str = "x-arbiter-row-filters";

/// The evaluations, by index, that may be narrowed to rows (see [`ROW_FILTERS_HEADER`]).
fn row_filter_items(parts: &Parts, items: usize) -> Result<Vec<bool>, ApiError> {
    let mut rows = vec![false; items];
    let Some(value) = parts.headers.get(ROW_FILTERS_HEADER) else {
        return Ok(rows);
    };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`X-Arbiter-Row-Filters` must list indices of the batch's evaluations, comma-separated",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    for index in text.split(',') {
        let i: usize = index.trim().parse().map_err(|_| bad())?;
        *rows.get_mut(i).ok_or_else(bad)? = true;
    }
    Ok(rows)
}

/// The enforcement point a request is recorded under.
fn enforcement_point(parts: &Parts) -> Result<String, ApiError> {
    let Some(value) = parts.headers.get(ENFORCEMENT_POINT_HEADER) else {
        return Ok(ENFORCEMENT_POINT.to_owned());
    };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`X-Arbiter-Enforcement-Point` must be `exec:<name>`, `mcp:<name>`, `sql:<name>`, \
             `http:<name>` or `a2a:<name>` (name: letters, digits, `.`, `_`, `-`, at most 128)",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let (kind, name) = text.split_once(':').ok_or_else(bad)?;
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !matches!(kind, "exec" | "mcp" | "sql" | "http" | "a2a") || !name_ok {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// The caller's session, from the `Arbiter-Session` header (see `arbiter_pdp::sessions`):
/// one header of 1 to 128 visible ASCII characters, or none.
pub(crate) fn session_header(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(SESSION_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) if values.next().is_none() && arbiter_pdp::sessions::valid_session_id(text) => {
            Ok(Some(text.to_owned()))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "`Arbiter-Session` must be given once, 1 to {} visible ASCII characters",
                arbiter_pdp::sessions::MAX_SESSION_ID_BYTES
            ),
        )),
    }
}

/// The header naming the caller's session.
pub(crate) const SESSION_HEADER: &str = "arbiter-session";

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
fn unrecorded_response(u: &Unrecorded, audience: Audience) -> Response {
    let mut body = u.decision.to_authzen_for(audience);
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "error".into(),
            json!({"code": "decision_log_unavailable", "message": u.error}),
        );
    }
    json_status(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// How the caller of an evaluation endpoint authenticated.
enum Authn {
    Caller(Caller),
    /// A credential was presented and refused: every decision is a recorded deny.
    Refused(Denial),
}

/// Authenticates the caller of an evaluation endpoint. A refused credential is not an HTTP
/// error: it becomes a recorded deny. Without any credential, `--require-auth` answers 401.
async fn authenticate(state: &AppState, parts: &Parts) -> Result<(Authn, Asker), ApiError> {
    let presented = bearer(&parts.headers).inspect_err(|_| access_log::note_refused(None))?;
    let address = client_address_of(parts);
    let point = enforcement_point(parts)?;
    let session = session_header(&parts.headers)?;
    access_log::note_enforcement_point(&point);
    let authn = match state.pdp.identity() {
        Some(identity) => {
            let source = Source {
                address: &address,
                enforcement_point: &point,
                session: session.as_deref(),
            };
            match identity
                .authenticate_async(presented, &source, now_us())
                .await
            {
                Ok(caller) => Authn::Caller(caller),
                Err(denial) => Authn::Refused(denial),
            }
        }
        None if presented.is_some() => Authn::Refused(Denial {
            reason_admin:
                "a credential was presented, but this server has no identity store to check it"
                    .to_owned(),
            reason_user: arbiter_pdp::identity::USER_REASON_CREDENTIAL.to_owned(),
            credential_id: None,
            agent_id: None,
        }),
        None => Authn::Caller(Caller::Anonymous),
    };
    match &authn {
        Authn::Caller(caller) => access_log::note_caller(caller),
        Authn::Refused(denial) => access_log::note_refused(Some(denial)),
    }
    if state.config.require_authentication && matches!(authn, Authn::Caller(Caller::Anonymous)) {
        return Err(unauthenticated(
            "this server requires a credential: an agent's key or token, or a PEP token \
             (`Authorization: Bearer …`)",
        ));
    }
    Ok((
        authn,
        Asker {
            address,
            point,
            session,
        },
    ))
}

/// Who an answer is for: a PEP token's holder gets every detail of a decision, anyone else
/// only the user-safe part, unless the server was told to give every caller the details
/// (`arbiter serve --admin-reasons-for-all-callers`).
fn audience(state: &AppState, authn: &Authn) -> Audience {
    match authn {
        Authn::Caller(Caller::Pep { .. }) => Audience::Administrator,
        Authn::Caller(Caller::Agent(_) | Caller::Anonymous) | Authn::Refused(_) => {
            if state.config.admin_reasons_for_all_callers {
                Audience::Administrator
            } else {
                Audience::User
            }
        }
    }
}

/// Where a request came from: the client address and the enforcement point.
struct Asker {
    address: String,
    point: String,
    /// The caller's session (`Arbiter-Session`).
    session: Option<String>,
}

/// A caller that presents an agent credential may leave the subject out: it is the agent
/// itself (for a refused credential, the agent it belongs to when known).
fn default_subject(authn: &Authn, body: &mut serde_json::Map<String, Value>) {
    if body.contains_key("subject") {
        return;
    }
    let id = match authn {
        Authn::Caller(Caller::Agent(a)) => a.agent.id.clone(),
        Authn::Refused(d) => d
            .agent_id
            .clone()
            .unwrap_or_else(|| "unauthenticated".to_owned()),
        Authn::Caller(_) => return,
    };
    body.insert(
        "subject".to_owned(),
        json!({"type": arbiter_pdp::delegation::AGENT_TYPE, "id": id}),
    );
}

async fn decide(
    state: &AppState,
    snapshot: &Arc<Policies>,
    authn: &Authn,
    req: EvaluationRequest,
    asker: &Asker,
    rows: bool,
) -> Decided {
    match authn {
        Authn::Caller(caller) => {
            state
                .pdp
                .decide_for_caller_async(
                    snapshot,
                    caller,
                    req,
                    &Source {
                        address: &asker.address,
                        enforcement_point: &asker.point,
                        session: asker.session.as_deref(),
                    },
                    rows,
                )
                .await
        }
        Authn::Refused(denial) => Decided {
            decision: state.pdp.refuse(snapshot, denial),
            attribution: Attribution {
                agent_id: denial.agent_id.clone(),
                credential_id: denial.credential_id.clone(),
                actor_chain: Vec::new(),
            },
            request: Some(req),
            rows: None,
        },
    }
}

pub async fn evaluation(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (authn, asker) = match authenticate(&state, &parts).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let req = match read_json(&parts.headers, body, state.config.limits)
        .await
        .and_then(|mut map| {
            default_subject(&authn, &mut map);
            EvaluationRequest::from_json(map).map_err(ApiError::from)
        }) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let snapshot = state.pdp.snapshot();
    answer_one(&state, &snapshot, &authn, req, &asker).await
}

/// Decides and records one request, answered as an AuthZEN decision.
async fn answer_one(
    state: &AppState,
    snapshot: &Arc<Policies>,
    authn: &Authn,
    req: EvaluationRequest,
    asker: &Asker,
) -> Response {
    let decided = decide(state, snapshot, authn, req, asker, false).await;
    match state
        .pdp
        .record(
            decided.request.as_ref(),
            decided.decision,
            &asker.point,
            Some(&decided.attribution),
        )
        .await
    {
        Ok(d) => {
            access_log::note_decision(d.id.as_str());
            json_response(&d.to_authzen_for(audience(state, authn)))
        }
        Err(u) => {
            access_log::note_decision(u.decision.id.as_str());
            unrecorded_response(&u, audience(state, authn))
        }
    }
}

pub async fn evaluations(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match evaluate_many(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn evaluate_many(state: &AppState, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    let (authn, asker) = authenticate(state, parts).await?;
    let mut map = read_json(&parts.headers, body, state.config.limits).await?;
    default_subject(&authn, &mut map);
    let batch = EvaluationsRequest::from_json(map)?;
    let snapshot = state.pdp.snapshot();
    let Some(items) = batch.items else {
        // No items: a single evaluation from the top-level fields, answered as one.
        let req = batch.defaults.complete()?;
        return Ok(answer_one(state, &snapshot, &authn, req, &asker).await);
    };
    // Decide in order (the semantic may stop early), then record the batch together.
    let narrowable = row_filter_items(parts, items.len())?;
    let mut decided: Vec<(Decided, Option<RequestError>)> = Vec::with_capacity(items.len());
    for (item, rows) in items.into_iter().zip(narrowable) {
        let resolved = item.and_then(|partial| partial.with_defaults(&batch.defaults).complete());
        let (d, error) = match resolved {
            Ok(req) => (
                decide(state, &snapshot, &authn, req, &asker, rows).await,
                None,
            ),
            Err(e) => (
                Decided {
                    request: None,
                    decision: state.pdp.reject(&snapshot, &e.to_string()),
                    attribution: Attribution::default(),
                    rows: None,
                },
                Some(e),
            ),
        };
        let allowed = d.decision.outcome.is_allow();
        decided.push((d, error));
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
                .map(|(d, _)| (d.request.as_ref(), d.decision.clone(), Some(&d.attribution)))
                .collect(),
            &asker.point,
        )
        .await;
    let mut failure = None;
    let mut results = Vec::with_capacity(recorded.len());
    for ((d, error), outcome) in decided.iter().zip(recorded) {
        let mut v = match outcome {
            Ok(recorded) => {
                access_log::note_decision(recorded.id.as_str());
                let mut v = recorded.to_authzen_for(audience(state, &authn));
                if let (Some(filter), true, Some(ctx)) = (
                    &d.rows,
                    recorded.outcome.is_allow(),
                    v.get_mut("context").and_then(Value::as_object_mut),
                ) {
                    ctx.insert("row_filter".into(), json!(filter));
                }
                v
            }
            Err(u) => {
                access_log::note_decision(u.decision.id.as_str());
                let v = u.decision.to_authzen_for(audience(state, &authn));
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

pub async fn search_subject(state: State<AppState>, request: Request) -> Response {
    search(state, request, SearchKind::Subject).await
}

pub async fn search_resource(state: State<AppState>, request: Request) -> Response {
    search(state, request, SearchKind::Resource).await
}

pub async fn search_action(state: State<AppState>, request: Request) -> Response {
    search(state, request, SearchKind::Action).await
}

async fn search(State(state): State<AppState>, request: Request, kind: SearchKind) -> Response {
    let (parts, body) = request.into_parts();
    match run_search(&state, &parts, body, kind).await {
        Ok(v) => json_response(&v),
        Err(e) => e.into_response(),
    }
}

/// A search is authenticated exactly as an evaluation is: without a credential under
/// `--require-auth` it is answered 401; a refused credential is answered 401 (a search is not
/// a decision, so there is nothing to record); an agent searches only its own permissions
/// (a resource or action search whose subject is itself; a subject search, which lists other
/// subjects, is refused); a PEP token or, without `--require-auth`, an anonymous caller may
/// search for any subject. The subject and the resource are bound as for an evaluation
/// ([`bind_search`]).
async fn run_search(
    state: &AppState,
    parts: &Parts,
    body: Body,
    kind: SearchKind,
) -> Result<Value, ApiError> {
    let (authn, asker) = authenticate(state, parts).await?;
    let caller = match &authn {
        Authn::Caller(c) => c.clone(),
        Authn::Refused(denial) => {
            tracing::info!(reason = %denial.reason_admin, "a search credential was refused");
            return Err(unauthenticated(denial.reason_user.clone()));
        }
    };
    let mut map = read_json(&parts.headers, body, state.config.limits).await?;
    if let Caller::Agent(a) = &caller {
        if kind == SearchKind::Subject {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "an agent may search only its own permissions: a subject search lists other \
                     subjects; search resources or actions for `Agent::\"{}\"`",
                    a.agent.id
                ),
            ));
        }
        default_subject(&authn, &mut map);
    }
    let mut req = SearchRequest::from_json(kind, map)?;
    let snapshot = state.pdp.snapshot();
    bind_search(state, &snapshot, &caller, &mut req, &asker).await?;
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

/// Binds a search to its caller as an evaluation is bound: an `Agent` subject with asserted
/// properties is refused; an agent caller must be the subject, and what it asserts about the
/// resource is confined ([`arbiter_pdp::confine_agent_assertions`]); an `Agent` subject of a
/// resource or action search gets its registry attributes (and is refused when unknown or
/// not active).
async fn bind_search(
    state: &AppState,
    snapshot: &Arc<Policies>,
    caller: &Caller,
    req: &mut SearchRequest,
    asker: &Asker,
) -> Result<(), ApiError> {
    let forbidden = |denial: &Denial| {
        tracing::info!(reason = %denial.reason_admin, "a search was refused");
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            denial.reason_user.clone(),
        )
    };
    if let Err(denial) = arbiter_pdp::identity::refuse_asserted_agent_properties(&req.subject) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: denial.reason_admin,
            field: Some("subject.properties".into()),
        });
    }
    let mut bound = EvaluationRequest {
        subject: req.subject.clone(),
        action: req.action.clone().unwrap_or(Action {
            name: String::new(),
            properties: None,
        }),
        resource: req.resource.clone(),
        context: std::mem::take(&mut req.context),
    };
    if let Caller::Agent(_) = caller {
        arbiter_pdp::confine_agent_assertions(snapshot, &mut bound).map_err(|problem| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                problem.to_string(),
            )
        })?;
    }
    if req.kind != SearchKind::Subject
        && let Some(identity) = state.pdp.identity()
    {
        let source = Source {
            address: &asker.address,
            enforcement_point: &asker.point,
            session: asker.session.as_deref(),
        };
        identity
            .resolve_async(snapshot, caller, &mut bound, &source, now_us())
            .await
            .map_err(|denial| forbidden(&denial))?;
    }
    req.subject = bound.subject;
    req.resource = bound.resource;
    req.context = bound.context;
    Ok(())
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
    fn the_session_header_is_one_bounded_visible_ascii_value() {
        use axum::http::{HeaderMap, HeaderValue};
        let with = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(SESSION_HEADER, HeaderValue::from_bytes(v).unwrap());
            }
            session_header(&h)
        };
        assert_eq!(with(&[]).unwrap(), None);
        assert_eq!(with(&[b"s-1"]).unwrap().as_deref(), Some("s-1"));
        for bad in [
            &[b"a b".as_slice()][..],
            &[b"caf\xc3\xa9".as_slice()],
            &[b"s1".as_slice(), b"s2".as_slice()],
            &["x".repeat(129).as_bytes()],
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("Arbiter-Session"), "{}", e.message);
        }
    }

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
