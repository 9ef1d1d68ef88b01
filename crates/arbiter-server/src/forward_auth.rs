//! Forward-auth: the decision endpoint for the proxies people already run — nginx
//! `auth_request`, Traefik `forwardAuth`, Envoy's HTTP `ext_authz` service.
//!
//! `ANY /v1/forward-auth/{service}[/{original path…}]` reads the original request from
//! `X-Original-Method`/`X-Original-URI` (nginx), else `X-Forwarded-Method`/`X-Forwarded-Uri`
//! (+ `X-Forwarded-Host`, Traefik), else from its own method and the path after the service
//! (Envoy, which appends the original path to the configured prefix). It authenticates the
//! agent from `Authorization: Bearer`, matches the path against the service's route table and
//! decides action `http_request` on `Route::"<service>:<METHOD> <template>"`, with the
//! concrete path, the path parameters and the query in the context.
//!
//! Answers: `200` with `X-Arbiter-Decision-Id` and `X-Arbiter-Agent-Id` (for the proxy to
//! forward); `401` with `WWW-Authenticate` for a missing or refused credential; `403` with a
//! JSON reason and the decision id for a deny (also when no route matches: fail closed).
//! Every decision is recorded under the enforcement point `http:<service>`.

use arbiter_pdp::identity::now_us;
use arbiter_pdp::{Caller, Source};
use arbiter_types::{Action, Entity, EvaluationRequest};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{bearer, client_address_of};
use crate::routes::split_target;

pub const DECISION_ID_HEADER: &str = "x-arbiter-decision-id";
pub const AGENT_ID_HEADER: &str = "x-arbiter-agent-id";
pub const REASON_HEADER: &str = "x-arbiter-reason";

/// Longest original target accepted.
const MAX_TARGET: usize = 8 * 1024;

fn plain_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut res = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"arbiter\""),
        );
    }
    res
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The original method, target and host.
fn original(
    headers: &HeaderMap,
    own_method: &str,
    rest: Option<&str>,
    own_query: Option<&str>,
) -> Result<(String, String, Option<String>), &'static str> {
    if let Some(uri) = header_str(headers, "x-original-uri") {
        let method = header_str(headers, "x-original-method")
            .ok_or("`X-Original-URI` without `X-Original-Method`: add `proxy_set_header X-Original-Method $request_method;`")?;
        return Ok((
            method.to_owned(),
            uri.to_owned(),
            header_str(headers, "x-original-host").map(str::to_owned),
        ));
    }
    if let Some(uri) = header_str(headers, "x-forwarded-uri") {
        let method = header_str(headers, "x-forwarded-method")
            .ok_or("`X-Forwarded-Uri` without `X-Forwarded-Method`")?;
        return Ok((
            method.to_owned(),
            uri.to_owned(),
            header_str(headers, "x-forwarded-host").map(str::to_owned),
        ));
    }
    // Envoy ext_authz (HTTP service): the original path follows the configured prefix and the
    // original method is the request's own.
    let path = format!("/{}", rest.unwrap_or_default());
    let target = match own_query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Ok((
        own_method.to_owned(),
        target,
        header_str(headers, "host").map(str::to_owned),
    ))
}

pub async fn service_root(
    state: State<AppState>,
    Path(service): Path<String>,
    req: Request,
) -> Response {
    handle(state, service, None, req).await
}

pub async fn with_path(
    state: State<AppState>,
    Path((service, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(state, service, Some(rest), req).await
}

async fn handle(
    State(state): State<AppState>,
    service: String,
    rest: Option<String>,
    req: Request,
) -> Response {
    let (parts, _body) = req.into_parts();
    if !state.config.routes.has_service(&service) {
        return plain_error(
            StatusCode::NOT_FOUND,
            "unknown_service",
            &format!(
                "no routes are configured for service `{service}` (`serve --routes` / `--openapi`)"
            ),
        );
    }
    let Some(identity) = state.pdp.identity().cloned() else {
        return plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_disabled",
            "this server has no identity store",
        );
    };
    let point = format!("http:{service}");
    let (method, target, host) = match original(
        &parts.headers,
        parts.method.as_str(),
        rest.as_deref(),
        parts.uri.query(),
    ) {
        Ok(o) => o,
        Err(m) => return plain_error(StatusCode::BAD_REQUEST, "invalid_request", m),
    };
    let method = method.to_ascii_uppercase();
    if target.len() > MAX_TARGET
        || method.is_empty()
        || method.len() > 16
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the original method or URI is malformed or too long",
        );
    }
    // Authenticate first: nothing about the routes is revealed to an unauthenticated caller.
    let presented = match bearer(&parts.headers) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return plain_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "an agent credential is required (`Authorization: Bearer …`)",
            );
        }
        Err(e) => return e.into_response(),
    };
    let address = client_address_of(&parts);
    let source = Source {
        address: &address,
        enforcement_point: &point,
    };
    let snapshot = state.pdp.snapshot();
    let caller = identity.authenticate(Some(presented), &source, now_us());

    let parsed = split_target(&target);
    let query = parsed.as_ref().map(|(_, q)| q.clone()).unwrap_or_default();
    let matched = parsed
        .as_ref()
        .ok()
        .and_then(|(segments, _)| state.config.routes.find(&service, &method, segments));
    let concrete_path = target.split('?').next().unwrap_or_default().to_owned();
    let (resource_id, template) = match &matched {
        Some(m) => (
            format!("{service}:{method} {}", m.route.template),
            m.route.template.clone(),
        ),
        None => (
            format!("{service}:{method} {concrete_path}"),
            concrete_path.clone(),
        ),
    };
    let mut context = Map::new();
    context.insert("path".to_owned(), Value::String(concrete_path.clone()));
    if let Some(h) = host {
        context.insert("host".to_owned(), Value::String(h));
    }
    if let Some(m) = &matched
        && !m.params.is_empty()
    {
        context.insert("params".to_owned(), json!(m.params));
    }
    if !query.is_empty() {
        context.insert("query".to_owned(), Value::Object(query));
    }
    let agent_id = match &caller {
        Ok(Caller::Agent(a)) => a.agent.id.clone(),
        Err(d) => d
            .agent_id
            .clone()
            .unwrap_or_else(|| "unauthenticated".to_owned()),
        Ok(_) => "unauthenticated".to_owned(),
    };
    let request = EvaluationRequest {
        subject: Entity {
            kind: "Agent".to_owned(),
            id: agent_id,
            properties: None,
        },
        action: Action {
            name: "http_request".to_owned(),
            properties: None,
        },
        resource: Entity {
            kind: "Route".to_owned(),
            id: resource_id,
            properties: Some(
                json!({"service": service, "method": method, "path": template})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        },
        context,
    };

    let (decided, status_on_deny) = match &caller {
        Err(denial) => (
            arbiter_pdp::Decided {
                decision: state.pdp.refuse(&snapshot, denial),
                attribution: arbiter_pdp::Attribution {
                    agent_id: denial.agent_id.clone(),
                    credential_id: denial.credential_id.clone(),
                    actor_chain: Vec::new(),
                },
                request: Some(request),
                rows: None,
            },
            StatusCode::UNAUTHORIZED,
        ),
        Ok(agent @ Caller::Agent(_)) => {
            let decided = match (&parsed, &matched) {
                (Err(problem), _) => refused(
                    &state,
                    &snapshot,
                    agent,
                    request,
                    format!("the original request cannot be matched safely: {problem}"),
                ),
                (Ok(_), None) => refused(
                    &state,
                    &snapshot,
                    agent,
                    request,
                    format!("no route of service `{service}` matches `{method} {concrete_path}`"),
                ),
                (Ok(_), Some(_)) => state.pdp.decide_as(&snapshot, agent, request, &source),
            };
            (decided, StatusCode::FORBIDDEN)
        }
        Ok(_) => {
            return plain_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "forward-auth needs the agent's own credential (an agent key or token)",
            );
        }
    };
    let recorded = state
        .pdp
        .record(
            decided.request.as_ref(),
            decided.decision,
            &point,
            Some(&decided.attribution),
        )
        .await;
    let (decision, unrecorded) = match recorded {
        Ok(d) => (d, None),
        Err(u) => (*u.decision, Some(u.error)),
    };
    let id = decision.id.to_string();
    let mut res = if decision.outcome.is_allow() {
        StatusCode::OK.into_response()
    } else {
        let status = if unrecorded.is_some() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status_on_deny
        };
        let mut res = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "decision": false,
                "decision_id": id,
                "reason": decision.reason_user,
                "error": unrecorded.map(|e| json!({"code": "decision_log_unavailable", "message": e})),
            })
            .to_string(),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&ascii_reason(&decision.reason_user)) {
            res.headers_mut().insert(REASON_HEADER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"arbiter\", error=\"invalid_token\""),
            );
        }
        res
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(DECISION_ID_HEADER, v);
    }
    if decision.outcome.is_allow()
        && let Some(agent) = decided
            .attribution
            .agent_id
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
    {
        res.headers_mut().insert(AGENT_ID_HEADER, agent);
    }
    res
}

/// A deny without evaluation (no route, an unmatchable path), still recorded.
fn refused(
    state: &AppState,
    snapshot: &arbiter_policy::Policies,
    caller: &Caller,
    request: EvaluationRequest,
    reason: String,
) -> arbiter_pdp::Decided {
    let (agent_id, credential_id) = match caller {
        Caller::Agent(a) => (Some(a.agent.id.clone()), Some(a.credential_id.clone())),
        _ => (None, None),
    };
    let denial = arbiter_pdp::Denial {
        reason_admin: reason,
        reason_user: "denied: this request is not covered by any known route".to_owned(),
        credential_id: credential_id.clone(),
        agent_id: agent_id.clone(),
    };
    arbiter_pdp::Decided {
        decision: state.pdp.refuse(snapshot, &denial),
        attribution: arbiter_pdp::Attribution {
            agent_id,
            credential_id,
            actor_chain: Vec::new(),
        },
        request: Some(request),
        rows: None,
    }
}

/// A header-safe rendering of a reason: visible ASCII and spaces, at most 256 bytes, and no
/// `"` or `\\` (proxies paste it into JSON bodies of their own).
fn ascii_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(256)
        .collect()
}
