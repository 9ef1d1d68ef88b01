//! The HTTP side of the gateway: `POST` JSON-RPC requests and `GET
//! /.well-known/agent-card.json`.
//!
//! For each request: the caller's credential (`Authorization: Bearer`, never forwarded), the
//! message parsed once and strictly ([`arbiter_pep::jsonrpc`]), its parameters read
//! ([`crate::wire`]), the refusals the gateway makes itself (a card it cannot trust, a task of
//! another caller, a delegation assertion that does not check, a skill the card does not
//! list) recorded as decisions, then the decision point's decision; an allowed request goes
//! upstream re-serialized with only `A2A-Version`, `A2A-Extensions` and the configured headers,
//! and the answer comes back parsed and checked (event by event for a stream).

// Refusals are HTTP responses, returned as they are.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arbiter_pep::http::{ChannelBody, error_chain};
use arbiter_pep::jsonrpc::{self, FrameLimits, Id, Message, code};
use arbiter_pep::sse::SseParser;
use arbiter_pep::{Ask, Decider, Verdict};
use arbiter_types::Entity;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use tokio::sync::mpsc;

use crate::card::{Card, Cards};
use crate::delegation::Delegation;
use crate::tasks::Tasks;
use crate::wire::{self, DELEGATION_KEY, Method};

/// JSON-RPC error code of a request denied by policy (A2A keeps -32001 to -32009 for its own
/// errors).
pub const DENIED: i64 = -32040;
/// A2A's "task not found", answered for another caller's task.
pub const TASK_NOT_FOUND: i64 = -32001;
/// A2A's "extended agent card not configured".
pub const EXTENDED_CARD_NOT_CONFIGURED: i64 = -32007;
/// The protocol version asked of the agent when the caller names none.
pub const A2A_VERSION: &str = "1.0";
const VERSION_HEADER: &str = "a2a-version";
const EXTENSIONS_HEADER: &str = "a2a-extensions";
/// Who sends the event streams, in errors.
const PEER: &str = "the A2A agent";

/// The HTTP client the gateway reaches the agent with.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The gateway's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The callee's name: resource `Agent::"<name>"`, records under `a2a:<name>`.
    pub name: String,
    /// The callee's agent id in the registry, named as callee in delegation assertions.
    pub agent_id: String,
    /// The agent's base URL (`http://host:port/…`).
    pub upstream: hyper::Uri,
    /// The URL the served card points callers at.
    pub public_url: String,
    pub limits: FrameLimits,
    /// Time allowed for a decision.
    pub decision_timeout: Duration,
    /// Time allowed for the agent to start answering.
    pub request_timeout: Duration,
    /// Headers sent on every upstream request (the agent's own credential).
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The gateway in front of one agent.
#[derive(Debug)]
pub struct Gateway {
    settings: Settings,
    decider: Arc<dyn Decider>,
    cards: Cards,
    tasks: Arc<Tasks>,
    delegation: Delegation,
    client: HttpClient,
}

/// Who is calling: the owner key tasks are bound to, and the agent id when known.
#[derive(Debug, Clone)]
struct Caller {
    credential: String,
    owner: String,
    agent: Option<String>,
}

impl Gateway {
    pub fn new(
        settings: Settings,
        decider: Arc<dyn Decider>,
        cards: Cards,
        delegation: Delegation,
        client: HttpClient,
    ) -> Self {
        Self {
            settings,
            decider,
            cards,
            tasks: Arc::new(Tasks::default()),
            delegation,
            client,
        }
    }

    /// The gateway's public key for delegation assertions (hex).
    pub fn delegation_key(&self) -> String {
        self.delegation.public_key_hex()
    }

    /// A client for the agent (HTTP/1.1, pooled, no Nagle delay, connecting within 10 s).
    pub fn client() -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector)
    }

    fn callee(&self) -> Entity {
        Entity {
            kind: "Agent".into(),
            id: self.settings.name.clone(),
            properties: None,
        }
    }

    async fn caller(&self, credential: String) -> Caller {
        let agent = self.decider.authenticate(&credential).await.ok().flatten();
        let owner = match &agent {
            Some(id) => format!("agent:{id}"),
            None => format!(
                "credential:{}",
                hex::encode(&sha2::Sha256::digest(credential.as_bytes())[..16])
            ),
        };
        Caller {
            credential,
            owner,
            agent,
        }
    }

    async fn decide(&self, caller: &Caller, ask: Ask) -> Verdict {
        match arbiter_pep::decide_within(
            self.decider.as_ref(),
            self.settings.decision_timeout,
            Some(&caller.credential),
            vec![ask],
            None,
        )
        .await
        {
            Ok(mut v) => v.pop().unwrap_or_else(|| Verdict::refused("no verdict")),
            Err(e) => Verdict::refused(&e.to_string()),
        }
    }
}

/// Serves `gateway` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let gateway = Arc::clone(&gateway);
        async move { gateway.handle(req).await }
    });
    use axum::serve::ListenerExt as _;
    // Answers go out as they are written (no Nagle delay behind a small write).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The path of the agent card.
pub const CARD_PATH: &str = "/.well-known/agent-card.json";

impl Gateway {
    async fn handle(self: Arc<Self>, req: Request<Body>) -> Response {
        let is_card = req.uri().path() == CARD_PATH;
        match (req.method().as_str(), is_card) {
            ("GET", true) | ("POST", false) => {}
            (m, _) => {
                return error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    None,
                    code::INVALID_REQUEST,
                    format!(
                        "{m} {} is not served: POST JSON-RPC requests, GET {CARD_PATH}",
                        req.uri().path()
                    ),
                );
            }
        }
        let credential = arbiter_pep::bearer(req.headers());
        if is_card && credential.is_none() {
            // The card is public in A2A (clients fetch it before they authenticate): without a
            // credential it lists no skill.
            return self.card(None).await;
        }
        let Some(credential) = credential else {
            let mut r = error_response(
                StatusCode::UNAUTHORIZED,
                None,
                DENIED,
                "present the agent's credential as `Authorization: Bearer <key or token>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        };
        let caller = self.caller(credential).await;
        if is_card {
            self.card(Some(&caller)).await
        } else {
            self.rpc(caller, req).await
        }
    }

    /// The card as this caller may see it (without a credential: no skill).
    async fn card(&self, caller: Option<&Caller>) -> Response {
        let card = match self.cards.current().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(agent = %self.settings.name, error = %e, "the agent card cannot be served");
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    DENIED,
                    format!("the agent card cannot be served: {e}"),
                );
            }
        };
        let allowed = match caller {
            Some(caller) => self.allowed_skills(caller, &card).await,
            None => Vec::new(),
        };
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let mut served = card.served(&allowed, &self.settings.public_url);
        if let Some(Value::Object(c)) = served.get_mut("capabilities") {
            c.insert("extendedAgentCard".into(), json!(false));
        }
        json_response(StatusCode::OK, &served)
    }

    /// The skills of `card` the caller may ask for: `send_message` decided for each.
    async fn allowed_skills(&self, caller: &Caller, card: &Card) -> Vec<String> {
        if card.skills.is_empty() {
            return Vec::new();
        }
        let asks = card
            .skills
            .iter()
            .map(|s| {
                let mut ask = Ask::new("send_message", self.callee());
                ask.context.insert("skill".into(), json!(s.id));
                ask.context.insert("card".into(), json!(true));
                ask
            })
            .collect();
        match arbiter_pep::decide_within(
            self.decider.as_ref(),
            self.settings.decision_timeout,
            Some(&caller.credential),
            asks,
            None,
        )
        .await
        {
            Ok(verdicts) => card
                .skills
                .iter()
                .zip(verdicts)
                .filter(|(_, v)| v.allow)
                .map(|(s, _)| s.id.clone())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "no skill of the agent card could be decided; the card lists none");
                Vec::new()
            }
        }
    }

    async fn rpc(&self, caller: Caller, req: Request<Body>) -> Response {
        let (parts, body) = req.into_parts();
        let limits = self.settings.limits;
        let bytes = match Limited::new(body, limits.max_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    code::INVALID_REQUEST,
                    format!(
                        "the request is larger than {} bytes or cannot be read",
                        limits.max_bytes
                    ),
                );
            }
        };
        let message = match jsonrpc::parse(&bytes, limits) {
            Ok(m) => m,
            Err(e) => return message_response(StatusCode::OK, &e.to_message()),
        };
        let Message::Request { id, method, params } = message else {
            return error_response(
                StatusCode::OK,
                message_id(&message),
                code::INVALID_REQUEST,
                "send A2A requests: a JSON-RPC request with an `id` and a `method`",
            );
        };
        let method_kind = match Method::parse(&method) {
            Ok(m) => m,
            Err(why) => {
                return error_response(StatusCode::OK, Some(id), code::METHOD_NOT_FOUND, why);
            }
        };
        if method_kind == Method::GetExtendedCard {
            // Not pinned, not checked: the card callers get is the pinned one, which says
            // there is no extended card.
            return error_response(
                StatusCode::OK,
                Some(id),
                EXTENDED_CARD_NOT_CONFIGURED,
                "the gateway serves the agent card at /.well-known/agent-card.json and no extended card",
            );
        }
        let request = match wire::read(method_kind, params.as_ref()) {
            Ok(r) => r,
            Err(why) => {
                return error_response(StatusCode::OK, Some(id), code::INVALID_PARAMS, why);
            }
        };
        let version = match headers_to_forward(&parts.headers) {
            Ok(v) => v,
            Err(why) => {
                return error_response(StatusCode::OK, Some(id), code::INVALID_REQUEST, why);
            }
        };

        // What the gateway refuses itself, recorded as decisions.
        let mut ask = Ask::new(method_kind.action(), self.callee());
        ask.context = request.context.clone();
        if let Some(c) = request.context.get("context_id").and_then(Value::as_str) {
            let session = format!("a2a:{c}");
            if arbiter_pep::valid_session_id(&session) {
                ask = ask.in_session(Some(&session));
            }
        }
        let mut chain = Vec::new();
        let mut refusal: Option<(&str, String, i64)> = None;
        let card = match self.cards.current().await {
            Ok(card) => Some(card),
            Err(e) => {
                refusal = Some((
                    "arbiter:a2a-card",
                    format!("the agent card cannot be trusted: {e}"),
                    DENIED,
                ));
                None
            }
        };
        if let Some(token) = &request.delegation {
            let checked = match &caller.agent {
                Some(agent) => self.delegation.check(token, agent),
                None => Err("a delegation assertion needs the caller's agent id, which the decision point did not give".to_owned()),
            };
            match checked {
                Ok(c) => chain = c,
                Err(e) => refusal = refusal.or(Some(("arbiter:a2a-delegation", e, DENIED))),
            }
        }
        ask.context.insert("chain".into(), json!(chain));
        if let Some(task) = &request.task_id
            && !self.tasks.owned_by(task, &caller.owner)
        {
            refusal = refusal.or(Some((
                "arbiter:a2a-task",
                format!("task {task} was not created by this caller through the gateway"),
                TASK_NOT_FOUND,
            )));
        }
        if let (Some(skill), Some(card)) = (&request.skill, &card)
            && !card.has_skill(skill)
        {
            refusal = refusal.or(Some((
                "arbiter:a2a-skill",
                format!("the agent card lists no skill `{skill}`"),
                DENIED,
            )));
        }
        let mut answer_code = DENIED;
        if let Some((rule, reason, code)) = &refusal {
            answer_code = *code;
            let user = if *code == TASK_NOT_FOUND {
                "denied: task not found".to_owned()
            } else {
                format!("denied: {reason}")
            };
            ask = ask.refused_by_enforcement_point(Some(rule), reason, &user);
        }
        let verdict = self.decide(&caller, ask).await;
        let (true, Some(card)) = (verdict.allow, card) else {
            return denied(id, &verdict, answer_code);
        };

        // Forward what was decided on.
        let mut params = params.unwrap_or_default();
        if method_kind.sends()
            && let Some(agent) = &caller.agent
        {
            let token = self
                .delegation
                .assert(&chain, agent, &self.settings.agent_id);
            add_delegation(&mut params, token);
        }
        let forwarded = Message::Request {
            id: id.clone(),
            method,
            params: Some(params),
        };
        let upstream = match self.send(&card, &forwarded, &version, &parts.headers).await {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(agent = %self.settings.name, error = %why, "the agent did not answer");
                return error_response(StatusCode::OK, Some(id), code::INTERNAL_ERROR, why);
            }
        };
        let is_stream = upstream
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if is_stream && method_kind.streams() {
            return self.relay(upstream, id, &caller, request.task_id);
        }
        match self
            .answer(
                upstream,
                &id,
                method_kind,
                &caller,
                request.task_id.as_deref(),
            )
            .await
        {
            Ok(m) => message_response(StatusCode::OK, &m),
            Err(why) => {
                tracing::warn!(agent = %self.settings.name, error = %why, "refused the agent's answer");
                error_response(StatusCode::OK, Some(id), code::INTERNAL_ERROR, why)
            }
        }
    }

    async fn send(
        &self,
        card: &Card,
        message: &Message,
        version: &[(HeaderName, HeaderValue)],
        client_headers: &HeaderMap,
    ) -> Result<hyper::Response<Incoming>, String> {
        let uri = rpc_uri(&self.settings.upstream, &card.rpc_path)?;
        let mut req = hyper::Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(message.to_bytes())))
            .map_err(|e| format!("cannot build the request to the agent: {e}"))?;
        let h = req.headers_mut();
        let accept = client_headers
            .get(header::ACCEPT)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/json, text/event-stream"));
        h.insert(header::ACCEPT, accept);
        for (k, v) in version {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.settings.upstream_headers {
            h.append(k.clone(), v.clone());
        }
        match tokio::time::timeout(self.settings.request_timeout, self.client.request(req)).await {
            Err(_) => Err(format!(
                "the agent did not answer within {} s",
                self.settings.request_timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!("the agent cannot be reached: {}", error_chain(&e))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// A JSON answer, read and checked.
    async fn answer(
        &self,
        upstream: hyper::Response<Incoming>,
        id: &Id,
        method: Method,
        caller: &Caller,
        task: Option<&str>,
    ) -> Result<Message, String> {
        let status = upstream.status();
        let json = upstream
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if !json {
            return Err(format!(
                "the agent answered HTTP {} without a JSON body",
                status.as_u16()
            ));
        }
        let limits = self.settings.limits;
        let bytes = Limited::new(upstream.into_body(), limits.max_bytes)
            .collect()
            .await
            .map_err(|_| {
                format!(
                    "the agent's answer is larger than {} bytes or cannot be read",
                    limits.max_bytes
                )
            })?
            .to_bytes();
        if method == Method::DeletePushConfig && is_null_result(&bytes, id, limits) {
            return Ok(Message::Result {
                id: id.clone(),
                result: Map::new(),
            });
        }
        let message = jsonrpc::parse(&bytes, limits)
            .map_err(|e| format!("the agent answered nonsense: {e}"))?;
        match message {
            Message::Error {
                id: Some(ref got), ..
            } if got == id => Ok(message),
            Message::Result {
                id: got,
                mut result,
            } if &got == id => {
                self.check_result(method, &mut result, caller, task)?;
                Ok(Message::Result { id: got, result })
            }
            _ => Err("the agent's answer is not the answer to this request".to_owned()),
        }
    }

    /// Binds the tasks an answer creates; keeps the caller to its own tasks.
    fn check_result(
        &self,
        method: Method,
        result: &mut Map<String, Value>,
        caller: &Caller,
        task: Option<&str>,
    ) -> Result<(), String> {
        let named = wire::task_in(result).map(str::to_owned);
        match method {
            Method::SendMessage | Method::SendStreamingMessage => {
                if let Some(t) = &named {
                    self.tasks.bind(t, &caller.owner).map_err(|_| {
                        format!("the agent answered with task {t}, which another caller created")
                    })?;
                }
            }
            Method::GetTask | Method::CancelTask | Method::SubscribeToTask
                if named.as_deref() != task =>
            {
                return Err("the agent answered with another task than the one asked for".into());
            }
            Method::ListTasks => {
                if let Some(Value::Array(tasks)) = result.get_mut("tasks") {
                    tasks.retain(|t| {
                        t.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| self.tasks.owned_by(id, &caller.owner))
                    });
                    let n = tasks.len();
                    result.insert("totalSize".into(), json!(n));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Relays an event stream: each event parsed; the first task it names is bound to the
    /// caller (or must be the one asked for); events of another task are dropped; anything
    /// unreadable ends the stream with an error event.
    fn relay(
        &self,
        upstream: hyper::Response<Incoming>,
        id: Id,
        caller: &Caller,
        task: Option<String>,
    ) -> Response {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let limits = self.settings.limits;
        let owner = caller.owner.clone();
        let tasks = Arc::clone(&self.tasks);
        let name = self.settings.name.clone();
        tokio::spawn(async move {
            let mut body = upstream.into_body();
            let mut parser = SseParser::new(limits.max_bytes, PEER);
            let mut bound = task;
            loop {
                let chunk = match body.frame().await {
                    None => break,
                    Some(Err(e)) => {
                        let _ = tx
                            .send(error_event(&id, &format!("the agent's stream failed: {e}")))
                            .await;
                        break;
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                };
                let events = match parser.push(&chunk) {
                    Ok(e) => e,
                    Err(why) => {
                        let _ = tx.send(error_event(&id, &why)).await;
                        break;
                    }
                };
                for event in events {
                    let Some(data) = event.data else { continue };
                    match relay_event(
                        &data,
                        event.event.as_deref(),
                        &id,
                        limits,
                        &mut bound,
                        &owner,
                        &tasks,
                    ) {
                        Relayed::Send(bytes) => {
                            if tx.send(bytes).await.is_err() {
                                return;
                            }
                        }
                        Relayed::Drop(why) => {
                            tracing::warn!(agent = %name, reason = %why, "dropped an event of the agent's stream");
                        }
                        Relayed::End(bytes) => {
                            let _ = tx.send(bytes).await;
                            return;
                        }
                    }
                }
            }
        });
        let mut r = Response::new(Body::new(ChannelBody(rx)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

/// What becomes of one event of the agent's stream.
enum Relayed {
    Send(Bytes),
    Drop(String),
    /// The last event: an error, or what ends the stream.
    End(Bytes),
}

fn relay_event(
    data: &[u8],
    event: Option<&str>,
    id: &Id,
    limits: FrameLimits,
    bound: &mut Option<String>,
    owner: &str,
    tasks: &Tasks,
) -> Relayed {
    if event == Some("error") {
        // `{"error": {...}}`: the agent's error, answered as this request's.
        let error = arbiter_types::strict::parse_strict(data, limits.max_depth)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .and_then(|e| {
                let code = e.get("code")?.as_i64()?;
                let message = e.get("message")?.as_str()?.to_owned();
                Some((code, message))
            });
        let (code, message) =
            error.unwrap_or((code::INTERNAL_ERROR, "the agent's stream failed".to_owned()));
        return Relayed::End(sse_data(&Message::error(
            Some(id.clone()),
            code,
            message,
            None,
        )));
    }
    let message = match jsonrpc::parse(data, limits) {
        Ok(m) => m,
        Err(e) => {
            return Relayed::End(error_event(
                id,
                &format!("the agent sent an event the gateway cannot read: {e}"),
            ));
        }
    };
    match message {
        Message::Result {
            id: ref got,
            ref result,
        } if got == id => {
            let value = Value::Object(result.clone());
            let Some(task) = wire::task_of(&value) else {
                // A message that belongs to no task: the answer itself.
                return Relayed::Send(sse_data(&message));
            };
            match bound {
                None => {
                    if tasks.bind(task, owner).is_err() {
                        return Relayed::End(error_event(
                            id,
                            &format!(
                                "the agent streamed task {task}, which another caller created"
                            ),
                        ));
                    }
                    *bound = Some(task.to_owned());
                }
                Some(b) if b != task => {
                    return Relayed::Drop(format!(
                        "an event of task {task} in the stream of task {b}"
                    ));
                }
                Some(_) => {}
            }
            Relayed::Send(sse_data(&message))
        }
        Message::Error {
            id: Some(ref got), ..
        } if got == id => Relayed::End(sse_data(&message)),
        _ => Relayed::End(error_event(
            id,
            "the agent sent an event that is not an answer to this request",
        )),
    }
}

fn sse_data(message: &Message) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&message.to_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn error_event(id: &Id, why: &str) -> Bytes {
    tracing::warn!(error = %why, "ended an event stream");
    sse_data(&Message::error(
        Some(id.clone()),
        code::INTERNAL_ERROR,
        why.to_owned(),
        None,
    ))
}

/// The answer to a denied request: `code` with the denial, its decision id in `data`.
fn denied(id: Id, verdict: &Verdict, code: i64) -> Response {
    let denial = verdict.denial();
    let mut data = Map::new();
    if let Some(d) = &denial.decision_id {
        data.insert("decision_id".into(), json!(d));
    }
    data.insert("reason".into(), json!(denial.reason));
    if let Some(s) = denial.retry_after_s {
        data.insert("retry_after_s".into(), json!(s));
    }
    let message = if code == TASK_NOT_FOUND {
        match &denial.decision_id {
            Some(d) => format!("task not found (decision {d})"),
            None => "task not found".to_owned(),
        }
    } else {
        denial.to_string()
    };
    message_response(
        StatusCode::OK,
        &Message::error(Some(id), code, message, Some(Value::Object(data))),
    )
}

fn message_id(m: &Message) -> Option<Id> {
    m.id().cloned()
}

fn error_response(
    status: StatusCode,
    id: Option<Id>,
    code: i64,
    message: impl Into<String>,
) -> Response {
    message_response(status, &Message::error(id, code, message, None))
}

fn message_response(status: StatusCode, message: &Message) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        message.to_bytes(),
    )
        .into_response()
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The caller's headers that go on: `A2A-Version` (visible ASCII, at most 16 bytes; `1.0`
/// when absent) and `A2A-Extensions` (at most 1024 bytes).
fn headers_to_forward(h: &HeaderMap) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let visible = |name: &str, max: usize| -> Result<Option<HeaderValue>, String> {
        let mut all = h.get_all(name).iter();
        let Some(v) = all.next() else { return Ok(None) };
        let ok = all.next().is_none()
            && !v.is_empty()
            && v.len() <= max
            && v.as_bytes().iter().all(|b| (0x20..0x7f).contains(b));
        if ok {
            Ok(Some(v.clone()))
        } else {
            Err(format!(
                "the `{name}` header must be one value of at most {max} visible ASCII bytes"
            ))
        }
    };
    let mut out = vec![(
        HeaderName::from_static(VERSION_HEADER),
        visible(VERSION_HEADER, 16)?.unwrap_or(HeaderValue::from_static(A2A_VERSION)),
    )];
    if let Some(v) = visible(EXTENSIONS_HEADER, 1024)? {
        out.push((HeaderName::from_static(EXTENSIONS_HEADER), v));
    }
    Ok(out)
}

/// Puts the delegation assertion in `params.message.metadata`.
fn add_delegation(params: &mut Map<String, Value>, token: String) {
    if let Some(Value::Object(message)) = params.get_mut("message") {
        let metadata = message
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if metadata.is_null() {
            *metadata = Value::Object(Map::new());
        }
        if let Value::Object(m) = metadata {
            m.insert(DELEGATION_KEY.into(), Value::String(token));
        }
    }
}

/// The agent's JSON-RPC endpoint: the upstream's origin and the card's interface path.
fn rpc_uri(upstream: &hyper::Uri, path: &str) -> Result<hyper::Uri, String> {
    let authority = upstream
        .authority()
        .ok_or("the upstream URL has no host")?
        .as_str();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!("http://{authority}{path}")
        .parse()
        .map_err(|e| format!("the agent's endpoint is not a URL: {e}"))
}

/// Whether `bytes` is `{"jsonrpc": "2.0", "id": <id>, "result": null}` (how an agent answers a
/// deleted push configuration).
fn is_null_result(bytes: &[u8], id: &Id, limits: FrameLimits) -> bool {
    let Ok(Value::Object(m)) = arbiter_types::strict::parse_strict(bytes, limits.max_depth) else {
        return false;
    };
    let same_id = match (m.get("id"), id) {
        (Some(Value::String(s)), Id::String(want)) => s == want,
        (Some(Value::Number(n)), Id::Number(want)) => n.as_i64() == Some(*want),
        _ => false,
    };
    m.len() == 3
        && m.get("jsonrpc") == Some(&json!("2.0"))
        && same_id
        && m.get("result") == Some(&Value::Null)
}
