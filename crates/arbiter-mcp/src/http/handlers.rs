//! What the gateway does with each request: the one MCP endpoint's POST (a message through
//! the session, then to the server and back), GET (the session's standalone stream), DELETE
//! (ending the session), a CORS preflight, and the origin and credential checks before them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};

use crate::jsonrpc::{self, FrameLimits, Id, Message, code};
use crate::session::{Route, Session, Upstream};

use super::body::{EVENT_STREAM, JSON, Kind, ReadError, body_kind, has_media_type, read_body};
use super::config::origin_allowed;
use super::headers::{
    LAST_EVENT_ID, MAX_EVENT_ID_BYTES, MAX_VERSION_BYTES, MCP_PROTOCOL_VERSION, MCP_SESSION_ID,
    bearer, check_stateless, copied_meta, is_stateless_version, meta_version, param_headers,
    session_id_header, visible,
};
use super::responses::{direct_answer, message_response, rpc_error, sse_response, status_only};
use super::sessions::{Entry, StreamGuard, credential_key};
use super::upstream::Link;
use super::{HEADER_MISMATCH, Proxy, STATELESS_REVISION, is_answer_to, lock};

const ALLOWED_METHODS: &str = "GET, POST, DELETE";

pub(super) async fn handle(State(proxy): State<Arc<Proxy>>, req: Request<Body>) -> Response {
    if req.uri().path() != proxy.config.path {
        return status_only(StatusCode::NOT_FOUND);
    }
    let origin = match proxy.origin(req.headers()) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut response = if req.method() == Method::OPTIONS {
        preflight(req.headers(), origin.is_some())
    } else {
        proxy.authenticated(req).await
    };
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("mcp-session-id"),
        );
    }
    response
}

/// The answer to a CORS preflight.
fn preflight(headers: &HeaderMap, cors: bool) -> Response {
    let mut r = status_only(StatusCode::NO_CONTENT);
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    if cors {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    r
}

impl Proxy {
    /// `Ok(Some(origin))` for an allowed origin, `Ok(None)` without one, 403 otherwise.
    fn origin(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, Response> {
        let mut all = headers.get_all(header::ORIGIN).iter();
        let Some(first) = all.next() else {
            return Ok(None);
        };
        let allowed = all.next().is_none()
            && first
                .to_str()
                .is_ok_and(|o| origin_allowed(&self.config.origins, o));
        if allowed {
            Ok(Some(first.clone()))
        } else {
            tracing::warn!(origin = ?first, "refused a request from an origin that is not allowed");
            Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                code::INVALID_REQUEST,
                "this origin is not allowed to call the gateway",
            ))
        }
    }

    async fn authenticated(self: &Arc<Self>, req: Request<Body>) -> Response {
        let method = req.method().clone();
        if !matches!(method, Method::POST | Method::GET | Method::DELETE) {
            let mut r = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                code::INVALID_REQUEST,
                format!("{method} is not served on the MCP endpoint"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            return r;
        }
        let Some(credential) = bearer(req.headers()) else {
            let mut r = rpc_error(
                StatusCode::UNAUTHORIZED,
                None,
                code::INVALID_REQUEST,
                "present the agent's credential as `Authorization: Bearer <key or token>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        };
        let (parts, body) = req.into_parts();
        match method {
            Method::POST => self.post(&parts.headers, body, credential).await,
            Method::GET => self.get(&parts.headers, &credential).await,
            _ => self.delete(&parts.headers, &credential).await,
        }
    }

    async fn post(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: Body,
        credential: String,
    ) -> Response {
        if !has_media_type(headers.get(header::CONTENT_TYPE), JSON) {
            return rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                code::INVALID_REQUEST,
                "POST one JSON-RPC message with `Content-Type: application/json`",
            );
        }
        let limits = self.limits();
        let bytes = match read_body(body, limits.max_bytes).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    code::INVALID_REQUEST,
                    format!("the message is larger than {} bytes", limits.max_bytes),
                );
            }
            Err(ReadError::Failed(e)) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    format!("the request body cannot be read: {e}"),
                );
            }
        };
        let message = match jsonrpc::parse(&bytes, limits) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e.message, "refused a client message");
                return message_response(StatusCode::BAD_REQUEST, &e.to_message());
            }
        };
        let request_id = match &message {
            Message::Request { id, .. } => Some(id.clone()),
            _ => None,
        };
        let bad_request = |why: String| {
            rpc_error(
                StatusCode::BAD_REQUEST,
                request_id.clone(),
                code::INVALID_REQUEST,
                why,
            )
        };

        let stateless = headers
            .get(MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_stateless_version)
            || meta_version(&message).is_some_and(is_stateless_version);
        let mut client = HeaderMap::new();
        if let Some(accept) = headers.get(header::ACCEPT) {
            client.insert(header::ACCEPT, accept.clone());
        }
        let version = if stateless {
            if let Err(why) = check_stateless(headers, &message) {
                tracing::warn!(error = %why, "refused a request whose headers do not match its body");
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    request_id,
                    HEADER_MISMATCH,
                    format!("Header mismatch: {why}"),
                );
            }
            if message.method() == Some("tools/call") {
                match param_headers(headers) {
                    Ok(params) => client.extend(params),
                    Err(why) => {
                        return rpc_error(
                            StatusCode::BAD_REQUEST,
                            request_id,
                            HEADER_MISMATCH,
                            format!("Header mismatch: {why}"),
                        );
                    }
                }
            }
            headers.get(MCP_PROTOCOL_VERSION).cloned()
        } else {
            if let Some(v) = headers.get(LAST_EVENT_ID) {
                match visible(v, MAX_EVENT_ID_BYTES) {
                    Some(_) => {
                        client.insert(LAST_EVENT_ID, v.clone());
                    }
                    None => return bad_request("`Last-Event-ID` is not a valid event id".into()),
                }
            }
            match headers.get(MCP_PROTOCOL_VERSION) {
                None => None,
                Some(v) => match visible(v, MAX_VERSION_BYTES) {
                    Some(_) => Some(v.clone()),
                    None => {
                        return bad_request(
                            "`MCP-Protocol-Version` is not a protocol version".into(),
                        );
                    }
                },
            }
        };

        let key = credential_key(&credential);
        let ctx = if stateless {
            // Session ids do not exist in this revision: a client's is ignored.
            let meta = copied_meta(&message);
            self.fresh(
                credential,
                key,
                Link::new(&self.out, version, Some(meta)),
                false,
            )
        } else {
            match session_id_header(headers) {
                Err(why) => return bad_request(why),
                Ok(Some(id)) => match self.lookup(&id, &key) {
                    Ok(entry) => {
                        entry.link.set_version(version);
                        Ctx {
                            session: Arc::clone(&entry.session),
                            link: Arc::clone(&entry.link),
                            entry: Some(entry),
                            key,
                            initialize: false,
                            stateless: false,
                        }
                    }
                    Err(r) => return r,
                },
                Ok(None) => {
                    let initialize = message.method() == Some("initialize")
                        && matches!(message, Message::Request { .. });
                    if initialize && self.full() {
                        return rpc_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            request_id,
                            code::INTERNAL_ERROR,
                            "too many sessions are open at the gateway; try again later",
                        );
                    }
                    self.fresh(
                        credential,
                        key,
                        Link::new(&self.out, version, None),
                        initialize,
                    )
                }
            }
        };

        let mut to_client = Vec::new();
        let mut to_server = Vec::new();
        for route in ctx.session.client_message(message).await {
            match route {
                Route::Client(m) => to_client.push(m),
                Route::Server(m) => to_server.push(m),
            }
        }
        // A notification that comes with a forwarded request (an approval's elicitation is
        // complete) is not sent: the answer to this POST is the server's, relayed as it comes.
        if !to_server.is_empty()
            && to_client
                .iter()
                .all(|m| matches!(m, Message::Notification { .. }))
        {
            for m in to_client.drain(..) {
                tracing::debug!(method = ?m.method(), "not sent: a notification beside a forwarded request");
            }
        }
        if !to_client.is_empty() || to_server.is_empty() {
            for m in to_server {
                ctx.link.post_detached(m);
            }
            return direct_answer(to_client, ctx.stateless);
        }
        let mut to_server = to_server.into_iter();
        let Some(first) = to_server.next() else {
            return status_only(StatusCode::ACCEPTED);
        };
        for m in to_server {
            ctx.link.post_detached(m);
        }
        self.exchange(&ctx, first, client).await
    }

    /// A session that lives for this request (or, after `initialize`, until it ends).
    fn fresh(&self, credential: String, key: [u8; 32], link: Arc<Link>, initialize: bool) -> Ctx {
        let stateless = link.stateless();
        let upstream: Arc<dyn Upstream> = link.clone();
        let session = Arc::new(Session::new(
            Arc::clone(&self.gateway),
            uuid::Uuid::now_v7().to_string(),
            Some(credential),
            upstream,
        ));
        Ctx {
            session,
            link,
            entry: None,
            key,
            initialize,
            stateless,
        }
    }

    /// Sends a message the session passed and answers the client with what comes back.
    async fn exchange(
        self: &Arc<Self>,
        ctx: &Ctx,
        message: Message,
        client: HeaderMap,
    ) -> Response {
        let request_id = match &message {
            Message::Request { id, .. } => Some(id.clone()),
            _ => None,
        };
        let response = match ctx.link.post(&message, client).await {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(error = %why, "a client message did not reach the MCP server");
                return failure(ctx, request_id.as_ref(), StatusCode::BAD_GATEWAY, why).await;
            }
        };
        let status = response.status();
        let mut new_session = None;
        if ctx.initialize
            && status.is_success()
            && let Some(server_id) = response.headers().get(MCP_SESSION_ID)
        {
            if let Err(why) = self.register(server_id, ctx) {
                tracing::warn!(error = %why, "could not keep the session the MCP server started");
                *lock(&ctx.link.session_id) = Some(server_id.clone());
                ctx.link.end_detached();
                return failure(
                    ctx,
                    request_id.as_ref(),
                    StatusCode::SERVICE_UNAVAILABLE,
                    why,
                )
                .await;
            }
            new_session = Some(server_id.clone());
        }
        if !status.is_success() {
            if status == StatusCode::NOT_FOUND
                && let Some(entry) = &ctx.entry
            {
                // The server no longer knows the session: neither does the gateway.
                self.forget(&entry.id);
            }
            return upstream_failure(
                Some(ctx),
                response,
                request_id.as_ref(),
                self.config.request_timeout,
            )
            .await;
        }
        let Some(request_id) = request_id else {
            // A notification or an answer: accepted.
            return status_only(StatusCode::ACCEPTED);
        };
        let mut answer = match body_kind(response.headers()) {
            Kind::EventStream => {
                let guard = ctx.entry.clone().map(StreamGuard::new);
                let relay = self.relay(&ctx.session, &ctx.link, Some(request_id));
                let body = relay.spawn(
                    response.into_body(),
                    Some(self.config.request_timeout),
                    guard,
                );
                sse_response(body)
            }
            Kind::Json => self.json_answer(ctx, response, &request_id).await,
            Kind::Other => {
                let why = if status == StatusCode::ACCEPTED {
                    "the MCP server accepted a request without answering it"
                } else {
                    "the MCP server answered without a JSON-RPC message"
                };
                failure(
                    ctx,
                    Some(&request_id),
                    StatusCode::BAD_GATEWAY,
                    why.to_owned(),
                )
                .await
            }
        };
        if let Some(id) = new_session {
            answer.headers_mut().insert(MCP_SESSION_ID, id);
        }
        answer
    }

    /// A JSON answer, through the session.
    async fn json_answer(
        &self,
        ctx: &Ctx,
        response: hyper::Response<Incoming>,
        request_id: &Id,
    ) -> Response {
        let limits = self.limits();
        let read = tokio::time::timeout(
            self.config.request_timeout,
            read_body(response.into_body(), limits.max_bytes),
        )
        .await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return failure(
                    ctx,
                    Some(request_id),
                    StatusCode::BAD_GATEWAY,
                    e.describe(limits.max_bytes),
                )
                .await;
            }
            Err(_) => {
                return failure(
                    ctx,
                    Some(request_id),
                    StatusCode::GATEWAY_TIMEOUT,
                    "the MCP server did not finish its answer in time".to_owned(),
                )
                .await;
            }
        };
        let message = match jsonrpc::parse(&bytes, limits) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("the MCP server sent a malformed message ({})", e.message);
                tracing::warn!(error = %why, "refused an answer of the MCP server");
                return failure(ctx, Some(request_id), StatusCode::BAD_GATEWAY, why).await;
            }
        };
        let mut answer = None;
        for route in ctx.session.server_message(message).await {
            match route {
                Route::Client(m) if answer.is_none() && is_answer_to(&m, request_id) => {
                    answer = Some(m);
                }
                Route::Client(_) => {
                    tracing::warn!(
                        "dropped a message of the MCP server sent in place of an answer"
                    );
                }
                Route::Server(m) => ctx.link.post_detached(m),
            }
        }
        match answer {
            Some(m) => message_response(StatusCode::OK, &m),
            None => {
                failure(
                    ctx,
                    Some(request_id),
                    StatusCode::BAD_GATEWAY,
                    "the MCP server answered with another message than the answer".to_owned(),
                )
                .await
            }
        }
    }

    /// GET: the session's standalone stream.
    async fn get(self: &Arc<Self>, headers: &HeaderMap, credential: &str) -> Response {
        let entry = match self.existing_session(headers, credential, "a standalone stream") {
            Ok(e) => e,
            Err(r) => return r,
        };
        let mut req = entry.link.request(Method::GET, Bytes::new());
        let h = req.headers_mut();
        let accept = headers
            .get(header::ACCEPT)
            .cloned()
            .unwrap_or(HeaderValue::from_static(EVENT_STREAM));
        h.insert(header::ACCEPT, accept);
        if let Some(v) = headers.get(LAST_EVENT_ID) {
            if visible(v, MAX_EVENT_ID_BYTES).is_none() {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    "`Last-Event-ID` is not a valid event id",
                );
            }
            h.insert(LAST_EVENT_ID, v.clone());
        }
        let response = match self.out.send(req).await {
            Ok(r) => r,
            Err(why) => {
                return rpc_error(StatusCode::BAD_GATEWAY, None, code::INTERNAL_ERROR, why);
            }
        };
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            let mut r = status_only(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return r;
        }
        if status == StatusCode::NOT_FOUND {
            self.forget(&entry.id);
        }
        if !status.is_success() {
            return upstream_failure(None, response, None, self.config.request_timeout).await;
        }
        if body_kind(response.headers()) != Kind::EventStream {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                None,
                code::INTERNAL_ERROR,
                "the MCP server answered a GET without an event stream",
            );
        }
        let relay = self.relay(&entry.session, &entry.link, None);
        let guard = Some(StreamGuard::new(Arc::clone(&entry)));
        sse_response(relay.spawn(response.into_body(), None, guard))
    }

    /// DELETE: ends the session at the server and here.
    async fn delete(self: &Arc<Self>, headers: &HeaderMap, credential: &str) -> Response {
        let entry = match self.existing_session(headers, credential, "ending a session") {
            Ok(e) => e,
            Err(r) => return r,
        };
        let req = entry.link.request(Method::DELETE, Bytes::new());
        let response = match self.out.send(req).await {
            Ok(r) => r,
            Err(why) => {
                return rpc_error(StatusCode::BAD_GATEWAY, None, code::INTERNAL_ERROR, why);
            }
        };
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            self.forget(&entry.id);
        }
        if status.is_success() {
            return status_only(status);
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return status_only(status);
        }
        upstream_failure(None, response, None, self.config.request_timeout).await
    }

    /// The session a GET or DELETE names (revisions 2025-06-18 and 2025-11-25 only).
    fn existing_session(
        &self,
        headers: &HeaderMap,
        credential: &str,
        what: &str,
    ) -> Result<Arc<Entry>, Response> {
        let stateless = headers
            .get(MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_stateless_version);
        let not_allowed = |why: String| {
            let mut r = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                code::INVALID_REQUEST,
                why,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            r
        };
        if stateless {
            return Err(not_allowed(format!(
                "protocol revision {STATELESS_REVISION} has no sessions: {what} is not available"
            )));
        }
        let id = match session_id_header(headers) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(not_allowed(format!(
                    "{what} needs the `Mcp-Session-Id` of a session"
                )));
            }
            Err(why) => {
                return Err(rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    why,
                ));
            }
        };
        let entry = self.lookup(&id, &credential_key(credential))?;
        if let Some(v) = headers.get(MCP_PROTOCOL_VERSION)
            && visible(v, MAX_VERSION_BYTES).is_some()
        {
            entry.link.set_version(Some(v.clone()));
        }
        Ok(entry)
    }
}

/// What one POST is handled with.
pub(super) struct Ctx {
    pub(super) session: Arc<Session>,
    pub(super) link: Arc<Link>,
    /// The registered session, when the request named one.
    entry: Option<Arc<Entry>>,
    pub(super) key: [u8; 32],
    /// The request is an `initialize` that may start a session.
    initialize: bool,
    stateless: bool,
}

/// Answers the request with an error, clearing it from the session's requests in flight.
async fn failure(ctx: &Ctx, request_id: Option<&Id>, status: StatusCode, why: String) -> Response {
    let error = Message::error(request_id.cloned(), code::INTERNAL_ERROR, why, None);
    if request_id.is_some() {
        let _ = ctx.session.server_message(error.clone()).await;
    }
    message_response(status, &error)
}

/// The server refused: its status with its JSON-RPC error when it sent one, else 502.
async fn upstream_failure(
    ctx: Option<&Ctx>,
    response: hyper::Response<Incoming>,
    request_id: Option<&Id>,
    timeout: Duration,
) -> Response {
    let status = response.status();
    let limits = ctx.map_or_else(FrameLimits::default, |c| c.link.out.limits);
    let body =
        tokio::time::timeout(timeout, read_body(response.into_body(), limits.max_bytes)).await;
    let error = match body {
        Ok(Ok(bytes)) if !bytes.is_empty() => match jsonrpc::parse(&bytes, limits) {
            Ok(Message::Error { id, error }) if id.is_none() || id.as_ref() == request_id => {
                Some((id, error))
            }
            _ => None,
        },
        _ => None,
    };
    let refused = status.is_client_error() || status.is_server_error();
    match error {
        Some((id, error)) if refused => {
            if let (Some(ctx), Some(rid)) = (ctx, request_id) {
                // Clears the request from the session's requests in flight.
                let _ = ctx
                    .session
                    .server_message(Message::Error {
                        id: Some(rid.clone()),
                        error: error.clone(),
                    })
                    .await;
            }
            message_response(status, &Message::Error { id, error })
        }
        _ => {
            let why = format!("the MCP server answered HTTP {status}");
            tracing::warn!(%status, "the MCP server refused a request without a JSON-RPC error");
            let out = if status == StatusCode::NOT_FOUND {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            };
            match ctx {
                Some(ctx) => failure(ctx, request_id, out, why).await,
                None => rpc_error(out, request_id.cloned(), code::INTERNAL_ERROR, why),
            }
        }
    }
}
