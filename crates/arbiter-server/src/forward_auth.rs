//! Forward-auth: the decision endpoint for the proxies people already run — nginx
//! `auth_request`, Traefik `forwardAuth`, Envoy's HTTP `ext_authz` service.
//!
//! `ANY /v1/forward-auth/{service}[/{original path…}]` reads the original request the way
//! the service's configured proxy describes it, and only that way ([`Proxy`]): nginx
//! `X-Original-Method`/`-URI`/`-Host`; Traefik `X-Forwarded-Method`/`-Uri`/`-Host`; Envoy the
//! request's own method, the raw path after `/v1/forward-auth/<service>` and its `Host`.
//! Another proxy's headers are never read, and a required header that is missing, repeated or
//! not decodable is a recorded deny, never a reason to look elsewhere. Method-override
//! headers and ambiguous targets ([`crate::routes::Ambiguity`]) are recorded denies unless
//! the service opts in. It authenticates the agent from `Authorization: Bearer`, matches the
//! path against the service's route table and decides action `http_request` on
//! `Route::"<service>:<METHOD> <template>"`, with the concrete path, the path parameters and
//! the query in the context.
//!
//! Answers: `200` with `X-Arbiter-Decision-Id` and `X-Arbiter-Agent-Id` (for the proxy to
//! forward); `401` with `WWW-Authenticate` for a missing or refused credential; `403` with a
//! JSON reason and the decision id for a deny (also when no route matches or the original
//! request cannot be read safely: fail closed). Every decision is recorded under the
//! enforcement point `http:<service>`.

use std::sync::Arc;

use arbiter_pep::{Ask, LocalDecider, Verdict};
use arbiter_types::Entity;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::{bearer, client_address_of, unauthenticated};
use crate::error::ApiError;
use crate::routes::{Proxy, ServiceSettings, Target, split_target};
use crate::{AppState, access_log};

pub const DECISION_ID_HEADER: &str = "x-arbiter-decision-id";
pub const AGENT_ID_HEADER: &str = "x-arbiter-agent-id";
pub const REASON_HEADER: &str = "x-arbiter-reason";

/// Longest original target accepted.
const MAX_TARGET: usize = 8 * 1024;

/// Method-override headers: an upstream that honours one runs another method than the
/// request line's.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The original request as the service's proxy describes it.
struct Original {
    method: String,
    /// The raw target bytes (checked and decoded by [`split_target`]).
    target: Vec<u8>,
    host: String,
}

/// The value of a header that must be sent at most once; `Err` when it is repeated.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a [u8]>, String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(format!("`{name}` is sent more than once"));
    }
    Ok(first.map(HeaderValue::as_bytes))
}

/// A header the configured proxy sets on every request: missing or repeated is a refusal.
fn required<'a>(headers: &'a HeaderMap, name: &str, proxy: Proxy) -> Result<&'a [u8], String> {
    single(headers, name)?.ok_or_else(|| {
        format!(
            "`{name}` is missing: the service is configured for {}, whose configuration must \
             set it on every request (see docs/forward-auth.md)",
            proxy.name()
        )
    })
}

/// A header value that must be visible ASCII (a method, a host).
fn visible_ascii(name: &str, value: &[u8]) -> Result<String, String> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_graphic) {
        return Err(format!(
            "`{name}` is empty or holds bytes outside visible ASCII"
        ));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// An HTTP method token, upper-cased (upstreams differ on case; routes name upper case).
fn method_token(name: &str, value: &[u8]) -> Result<String, String> {
    let method = visible_ascii(name, value)?.to_ascii_uppercase();
    if method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("`{name}` is not an HTTP method"));
    }
    Ok(method)
}

/// Envoy appends the original path (and query) to the configured prefix: the raw target is
/// what follows `/v1/forward-auth/<service>` in the request's own, undecoded path.
fn envoy_target(uri: &Uri, service: &str) -> Result<Vec<u8>, String> {
    let rest = uri
        .path()
        .strip_prefix("/v1/forward-auth/")
        .and_then(|r| r.strip_prefix(service))
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or("the request path does not start with `/v1/forward-auth/<service>/` verbatim")?;
    let mut target = if rest.is_empty() { "/" } else { rest }.to_owned();
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    Ok(target.into_bytes())
}

/// Reads the original method, target and host from exactly the headers of the configured
/// proxy. Every problem is a reason to deny, never a reason to read other headers.
fn original(
    settings: &ServiceSettings,
    service: &str,
    headers: &HeaderMap,
    own_method: &str,
    uri: &Uri,
) -> Result<Original, String> {
    let proxy = settings.proxy;
    let (method, target, host) = match proxy {
        Proxy::Nginx => (
            method_token(
                "X-Original-Method",
                required(headers, "x-original-method", proxy)?,
            )?,
            required(headers, "x-original-uri", proxy)?.to_vec(),
            visible_ascii(
                "X-Original-Host",
                required(headers, "x-original-host", proxy)?,
            )?,
        ),
        Proxy::Traefik => (
            method_token(
                "X-Forwarded-Method",
                required(headers, "x-forwarded-method", proxy)?,
            )?,
            required(headers, "x-forwarded-uri", proxy)?.to_vec(),
            visible_ascii(
                "X-Forwarded-Host",
                required(headers, "x-forwarded-host", proxy)?,
            )?,
        ),
        Proxy::Envoy => {
            let host = match single(headers, "host")? {
                Some(h) => visible_ascii("Host", h)?,
                None => uri
                    .authority()
                    .map(|a| a.to_string())
                    .ok_or("the request has no `Host`: Envoy passes the original one")?,
            };
            (
                method_token("the request method", own_method.as_bytes())?,
                envoy_target(uri, service)?,
                host,
            )
        }
    };
    if target.len() > MAX_TARGET {
        return Err(format!(
            "the original target is longer than {MAX_TARGET} bytes"
        ));
    }
    let mut method = method;
    let mut overridden: Option<(&str, String)> = None;
    for name in METHOD_OVERRIDE_HEADERS {
        let Some(value) = single(headers, name)? else {
            continue;
        };
        if !settings.method_override {
            return Err(format!(
                "the request carries `{name}`, which an upstream may honour to run another \
                 method than `{method}` (a service whose upstream honours it opts in with \
                 `method-override`, and the overriding method is decided)"
            ));
        }
        let value = method_token(name, value)?;
        if let Some((other, previous)) = &overridden
            && *previous != value
        {
            return Err(format!(
                "`{other}` ({previous}) and `{name}` ({value}) name different methods"
            ));
        }
        overridden = Some((name, value));
    }
    if let Some((_, value)) = overridden {
        method = value;
    }
    Ok(Original {
        method,
        target,
        host,
    })
}

pub async fn service_root(
    state: State<AppState>,
    Path(service): Path<String>,
    req: Request,
) -> Response {
    handle(state, service, req).await
}

pub async fn with_path(
    state: State<AppState>,
    Path((service, _rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    // Envoy's original path is read from the raw request path, never from the decoded one.
    handle(state, service, req).await
}

/// What the decision is about: a route to evaluate, or a reason to refuse without one.
enum Subject {
    Matched,
    Refused { admin: String, user: String },
}

async fn handle(State(state): State<AppState>, service: String, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    if !state.config.routes.has_service(&service) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!(
                "no routes are configured for service `{service}` (`serve --routes` / `--openapi`)"
            ),
        )
        .into_response();
    }
    let Some(settings) = state.config.routes.settings(&service) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_not_configured",
            format!(
                "service `{service}` does not say which proxy asks for it (`@service {service} proxy=…`)"
            ),
        )
        .into_response();
    };
    if state.pdp.identity().is_none() {
        return ApiError::identity_disabled().into_response();
    }
    let point = format!("http:{service}");
    access_log::note_enforcement_point(&point);
    let decider = LocalDecider::new(Arc::clone(&state.pdp), point);
    // Authenticate first: nothing about the routes is revealed to an unauthenticated caller.
    let presented = match bearer(&parts.headers) {
        Ok(Some(p)) => p,
        Ok(None) => {
            access_log::note_caller(&arbiter_pdp::Caller::Anonymous);
            return unauthenticated("an agent credential is required (`Authorization: Bearer …`)")
                .into_response();
        }
        Err(e) => {
            access_log::note_refused(None);
            return e.into_response();
        }
    };
    let address = client_address_of(&parts);
    // A refused credential is still decided (and so recorded), as a `401`.
    let agent = match decider.caller_from(&address, presented).await {
        Some(Ok(caller)) => {
            access_log::note_caller(&caller);
            match caller {
                arbiter_pdp::Caller::Agent(a) => Ok(Some(a.agent.id.clone())),
                _ => Err("forward-auth needs the agent's own credential".to_owned()),
            }
        }
        Some(Err(denial)) => {
            access_log::note_refused(Some(&denial));
            Err(denial.reason_user)
        }
        None => Ok(None),
    };

    let read = original(
        settings,
        &service,
        &parts.headers,
        parts.method.as_str(),
        &parts.uri,
    );
    let parsed: Result<(Original, Target), String> = read.and_then(|o| {
        split_target(&o.target, &settings.allow)
            .map(|t| (o, t))
            .map_err(|p| format!("the original request target is refused: {p}"))
    });
    let mut context = Map::new();
    let (resource_id, method, template, subject) = match &parsed {
        Err(problem) => (
            // Nothing trustworthy to name: the record says so, the reason says why.
            format!("{service}:? ?"),
            "?".to_owned(),
            "?".to_owned(),
            Subject::Refused {
                admin: format!(
                    "the original request cannot be read safely ({} mode): {problem}",
                    settings.proxy.name()
                ),
                user: format!("denied: the original request cannot be read safely: {problem}"),
            },
        ),
        Ok((o, target)) => {
            context.insert("path".to_owned(), Value::String(target.path.clone()));
            context.insert("host".to_owned(), Value::String(o.host.clone()));
            if !target.query.is_empty() {
                context.insert("query".to_owned(), Value::Object(target.query.clone()));
            }
            match state
                .config
                .routes
                .find(&service, &o.method, &target.segments)
            {
                Some(m) => {
                    if !m.params.is_empty() {
                        context.insert("params".to_owned(), json!(m.params));
                    }
                    (
                        format!("{service}:{} {}", o.method, m.route.template),
                        o.method.clone(),
                        m.route.template.clone(),
                        Subject::Matched,
                    )
                }
                None => (
                    format!("{service}:{} {}", o.method, target.path),
                    o.method.clone(),
                    target.path.clone(),
                    Subject::Refused {
                        admin: format!(
                            "no route of service `{service}` matches `{} {}`",
                            o.method, target.path
                        ),
                        user: "denied: this request is not covered by any known route".to_owned(),
                    },
                ),
            }
        }
    };
    let mut properties = Map::new();
    properties.insert("service".into(), json!(service));
    properties.insert("method".into(), json!(method));
    properties.insert("path".into(), json!(template));
    let mut ask = Ask {
        context,
        ..Ask::new(
            "http_request",
            Entity {
                kind: "Route".to_owned(),
                id: resource_id,
                properties: Some(properties),
            },
        )
    };
    if let Subject::Refused { admin, user } = subject {
        ask = ask.refused_by_enforcement_point(None, &admin, &user);
    }
    // The agent's session, from the original request (`Arbiter-Session`).
    match crate::authzen::session_header(&parts.headers) {
        Ok(session) => ask.session = session,
        Err(e) => {
            ask = ask.refused_by_enforcement_point(
                None,
                &e.message,
                "denied: the `Arbiter-Session` header is not valid",
            );
        }
    }
    let verdict = decider
        .decide_from(&address, Some(presented), vec![ask], Box::new(|_| Ok(())))
        .await
        .pop()
        .unwrap_or_else(|| Verdict::refused("no decision was taken"));
    if let Some(id) = &verdict.decision_id {
        access_log::note_decision(id);
    }
    answer(&verdict, agent)
}

/// The answer to the proxy: `200` with the decision and agent ids on an allow; otherwise the
/// denial, as `401` for a refused credential, `503` when the decision could not be recorded,
/// and `403` for the rest.
fn answer(verdict: &Verdict, agent: Result<Option<String>, String>) -> Response {
    let mut res = if verdict.allow {
        StatusCode::OK.into_response()
    } else {
        let status = if verdict.unrecorded {
            StatusCode::SERVICE_UNAVAILABLE
        } else if agent.is_err() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        let mut res = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "decision": false,
                "decision_id": verdict.decision_id,
                "reason": verdict.reason_user,
                "retry_after_s": verdict.retry_after_s,
                "approval_id": verdict.approval,
                "error": verdict.unrecorded.then(|| json!({
                    "code": "decision_log_unavailable",
                    "message": "the decision could not be recorded, so it is a deny",
                })),
            })
            .to_string(),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&ascii_reason(&verdict.reason_user)) {
            res.headers_mut().insert(REASON_HEADER, v);
        }
        if let Some(secs) = verdict.retry_after_s {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"arbiter\", error=\"invalid_token\""),
            );
        }
        res
    };
    if let Some(id) = verdict
        .decision_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        res.headers_mut().insert(DECISION_ID_HEADER, id);
    }
    if verdict.allow
        && let Ok(Some(agent)) = agent
        && let Ok(agent) = HeaderValue::from_str(&agent)
    {
        res.headers_mut().insert(AGENT_ID_HEADER, agent);
    }
    res
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
