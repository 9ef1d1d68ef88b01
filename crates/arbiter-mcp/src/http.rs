//! The streamable-HTTP transport: `arbiter mcp http`, a reverse proxy in front of an MCP
//! server's streamable-HTTP endpoint.
//!
//! The gateway serves one MCP endpoint (the upstream URL's path) and handles every message
//! the way the stdio transport does: each POSTed message is parsed once, handed to a
//! [`Session`], and only what the session routes goes on, re-serialized. The server's answers
//! (a JSON body or an SSE stream) pass through the same session, event by event.
//!
//! - **Authentication.** The agent presents `Authorization: Bearer <credential>` (an Arbiter
//!   agent key or an accepted JWT). It becomes the session's credential and is never sent
//!   upstream: only `Accept`, `MCP-Protocol-Version`, `Mcp-Session-Id` and `Last-Event-ID`
//!   of the client's headers go on (and, on `tools/call` of revision 2026-07-28, its
//!   `Mcp-Param-*` headers, which the server must check against the body), then the
//!   configured upstream headers. `Mcp-Method` and `Mcp-Name` are set by the gateway from the
//!   message it forwards.
//! - **Sessions (revisions 2025-06-18 and 2025-11-25).** A session is created by `initialize`
//!   when the server answers it with an `Mcp-Session-Id`; the gateway keeps one [`Session`]
//!   per server session id, bound to (a SHA-256 of) the credential that initialized it.
//!   Another credential on that session is refused with 403; an unknown session id gets 404.
//!   Sessions are bounded in number and forgotten (and ended at the server) when idle.
//! - **Stateless requests (revision 2026-07-28, or a server without sessions).** Each request
//!   gets its own [`Session`] whose id is a fresh UUIDv7 (the `session_id` its decisions are
//!   recorded with). `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` must match the body
//!   (400, `-32020` otherwise).
//!
//! Only `http://` upstreams are supported.

// Refusals are HTTP responses, returned as they are.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::jsonrpc::{self, FrameLimits, Id, Message, code};
use crate::session::{Gateway, Route, Session, Upstream};
use arbiter_pep::BoxFuture;

/// JSON-RPC error code of a header that is missing or does not match the body (revision
/// 2026-07-28, `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32020;

/// The first protocol revision without sessions, whose requests carry their metadata.
pub const STATELESS_REVISION: &str = "2026-07-28";

const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const MCP_PARAM_PREFIX: &str = "mcp-param-";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` members a 2026-07-28 request carries, copied onto the gateway's own requests.
const META_COPIED: &[&str] = &[
    META_VERSION,
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
];

const BASE64_SENTINEL_START: &str = "=?base64?";
const BASE64_SENTINEL_END: &str = "?=";

/// Longest accepted `Mcp-Session-Id`, in bytes.
const MAX_SESSION_ID_BYTES: usize = 256;
/// Longest accepted `MCP-Protocol-Version`, in bytes.
const MAX_VERSION_BYTES: usize = 64;
/// Longest accepted `Last-Event-ID` and SSE event id, in bytes.
const MAX_EVENT_ID_BYTES: usize = 1024;
/// Most `Mcp-Param-*` headers passed on one request, and the longest value.
const MAX_PARAM_HEADERS: usize = 64;
const MAX_PARAM_BYTES: usize = 8 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// SSE events buffered towards one client.
const STREAM_BUFFER: usize = 16;
/// Time allowed to end a session at the server when the gateway forgets it.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the open streams get to end after shutdown was asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";
const DEFAULT_ACCEPT: &str = "application/json, text/event-stream";
const ALLOWED_METHODS: &str = "GET, POST, DELETE";

/// Settings of `arbiter mcp http`.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on (`127.0.0.1:8190`).
    pub listen: String,
    /// The MCP server's endpoint (`http://127.0.0.1:3001/mcp`); its path is the gateway's.
    pub upstream: String,
    /// `Name: value` headers sent on every upstream request.
    pub upstream_headers: Vec<String>,
    /// Browser origins allowed to call the gateway.
    pub allow_origins: Vec<String>,
    /// Most sessions alive at once; an `initialize` beyond it is answered 503.
    pub max_sessions: usize,
    /// A session unused this long (and with no open stream) is forgotten and ended at the
    /// server.
    pub session_idle: Duration,
    /// Time the server may take to start answering a request, and between two events of a
    /// streamed answer.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8190".to_owned(),
            upstream: String::new(),
            upstream_headers: Vec::new(),
            allow_origins: Vec::new(),
            max_sessions: 10_000,
            session_idle: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// Serves the gateway until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // Settings are checked before anything listens.
    Config::new(&settings)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("cannot listen on `{}`: {e}", settings.listen))?;
    serve_on(gateway, settings, listener, shutdown).await
}

/// Serves the gateway on `listener` (its address is used, `settings.listen` is not) until
/// `shutdown` resolves.
pub async fn serve_on(
    gateway: Arc<Gateway>,
    settings: HttpSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let config = Config::new(&settings)?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let proxy = Arc::new(Proxy::new(gateway, config, stop_rx.clone()));
    tracing::info!(
        listen = %addr,
        path = %proxy.config.path,
        upstream = %proxy.out.uri,
        server = %proxy.gateway.config().server_name,
        "MCP gateway listening (streamable HTTP)"
    );
    let sweeper = tokio::spawn(sweep(Arc::clone(&proxy)));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&proxy));

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let mut forced = stop_rx;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    });
    // Open streams end when shutdown is asked; the grace bounds the wait for the rest.
    let served = tokio::select! {
        served = server => served.map_err(|e| format!("the HTTP server failed: {e}")),
        () = async move {
            let _ = forced.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    sweeper.abort();
    tracing::info!("MCP gateway stopped");
    served
}

// ---- settings -----------------------------------------------------------------------------

/// Checked settings.
#[derive(Debug)]
struct Config {
    /// The MCP endpoint's path.
    path: String,
    upstream: Uri,
    upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Allowed origins, normalized (see [`normalize_origin`]).
    origins: Vec<String>,
    max_sessions: usize,
    session_idle: Duration,
    request_timeout: Duration,
}

impl Config {
    fn new(s: &HttpSettings) -> Result<Self, String> {
        let upstream = parse_upstream(&s.upstream)?;
        let upstream_headers = s
            .upstream_headers
            .iter()
            .map(|h| parse_upstream_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let origins = s
            .allow_origins
            .iter()
            .map(|o| parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        if s.max_sessions == 0 {
            return Err("the session limit must be at least 1".to_owned());
        }
        if s.session_idle.is_zero() || s.request_timeout.is_zero() {
            return Err("the session idle time and the request timeout must be positive".into());
        }
        Ok(Self {
            path: upstream.path().to_owned(),
            upstream,
            upstream_headers,
            origins,
            max_sessions: s.max_sessions,
            session_idle: s.session_idle,
            request_timeout: s.request_timeout,
        })
    }
}

/// Reads `--upstream`: an `http://` URL with a host and no credentials.
fn parse_upstream(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.trim().parse().map_err(|e| {
        format!("`--upstream {url}` is not a URL ({e}); e.g. http://127.0.0.1:3001/mcp")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`--upstream {url}`: https:// upstreams are not supported; reach the MCP server \
                 over http:// (on the same host or a private network), or put a TLS-terminating \
                 proxy next to it"
            ));
        }
        _ => {
            return Err(format!(
                "`--upstream {url}` must be an http:// URL, e.g. http://127.0.0.1:3001/mcp"
            ));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`--upstream {url}` has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "`--upstream {url}`: credentials in the URL are not sent; give them with \
             `--upstream-header 'Authorization: …'`"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("`--upstream {url}` has no host"));
    }
    Ok(uri)
}

/// Headers an `--upstream-header` may not set: the transport's own and the protocol's.
fn reserved_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
            | "content-type"
            | "accept"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "mcp-method"
            | "mcp-name"
            | "last-event-id"
    ) || name.as_str().starts_with(MCP_PARAM_PREFIX)
}

/// Reads one `--upstream-header 'Name: value'`.
fn parse_upstream_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let shown = text.split(':').next().unwrap_or_default().trim();
    let Some((name, value)) = text.split_once(':') else {
        return Err(format!(
            "`--upstream-header {shown}…`: write it as `Name: value`, e.g. `Authorization: Bearer …`"
        ));
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`--upstream-header {shown}: …`: `{shown}` is not a header name"))?;
    if reserved_header(&name) {
        return Err(format!(
            "`--upstream-header {name}: …`: the gateway sets `{name}` itself"
        ));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("`--upstream-header {name}: …`: the value is empty"));
    }
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        format!("`--upstream-header {name}: …`: the value has characters a header cannot carry")
    })?;
    // Usually a credential: never shown in debug output.
    value.set_sensitive(true);
    Ok((name, value))
}

/// Reads one `--allow-origin`: `scheme://host[:port]`.
fn parse_origin(text: &str) -> Result<String, String> {
    let normalized = normalize_origin(text);
    let bad = || {
        format!(
            "`--allow-origin {text}` is not an origin; write `https://app.example.com` (a \
             scheme, a host, an optional port; no path)"
        )
    };
    let uri: Uri = normalized.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority_ok = uri
        .authority()
        .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'));
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if scheme_ok && authority_ok && path_ok && !normalized.ends_with('/') {
        Ok(normalized)
    } else {
        Err(bad())
    }
}

/// Origins compare case-insensitively and without a trailing slash.
fn normalize_origin(text: &str) -> String {
    text.trim().trim_end_matches('/').to_ascii_lowercase()
}

// ---- shared state -------------------------------------------------------------------------

/// How the gateway reaches the server.
#[derive(Debug)]
struct Outbound {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    limits: FrameLimits,
    request_timeout: Duration,
}

impl Outbound {
    /// Sends a request; the answer's headers must arrive within the request timeout.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>, String> {
        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Err(_) => Err(format!(
                "the MCP server did not answer within {} s",
                self.request_timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!(
                "the MCP server cannot be reached: {}",
                error_chain(&e)
            )),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

struct Proxy {
    gateway: Arc<Gateway>,
    config: Config,
    out: Arc<Outbound>,
    sessions: Mutex<HashMap<String, Arc<Entry>>>,
    /// Turns true when the gateway stops (open streams end).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session of the 2025 revisions, known by the server's session id.
struct Entry {
    id: String,
    session: Arc<Session>,
    link: Arc<Link>,
    /// SHA-256 of the credential that initialized the session.
    key: [u8; 32],
    last_used: Mutex<Instant>,
    /// Streams open on this session (it does not expire while one is).
    streams: AtomicUsize,
}

impl Entry {
    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    fn expired(&self, idle: Duration) -> bool {
        self.streams.load(Ordering::SeqCst) == 0 && self.idle_for() > idle
    }
}

/// Counts an open stream on a session.
struct StreamGuard(Arc<Entry>);

impl StreamGuard {
    fn new(entry: Arc<Entry>) -> Self {
        entry.streams.fetch_add(1, Ordering::SeqCst);
        Self(entry)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

fn credential_key(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
fn same_key(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Forgets idle sessions (ending them at the server).
async fn sweep(proxy: Arc<Proxy>) {
    let every =
        (proxy.config.session_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired: Vec<Arc<Entry>> = {
            let mut sessions = lock(&proxy.sessions);
            let ids: Vec<String> = sessions
                .values()
                .filter(|e| e.expired(proxy.config.session_idle))
                .map(|e| e.id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for entry in expired {
            tracing::info!(session = %entry.session.id(), "forgot an idle MCP session");
            entry.link.end_detached();
        }
    }
}

impl Proxy {
    fn new(
        gateway: Arc<Gateway>,
        config: Config,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let out = Arc::new(Outbound {
            client,
            uri: config.upstream.clone(),
            headers: config.upstream_headers.clone(),
            limits: gateway.config().limits,
            request_timeout: config.request_timeout,
        });
        Self {
            gateway,
            config,
            out,
            sessions: Mutex::new(HashMap::new()),
            stop,
        }
    }

    fn relay(&self, session: &Arc<Session>, link: &Arc<Link>, pending: Option<Id>) -> Relay {
        Relay {
            session: Arc::clone(session),
            link: Arc::clone(link),
            limits: self.limits(),
            pending,
            answered: false,
            stop: self.stop.clone(),
        }
    }

    fn limits(&self) -> FrameLimits {
        self.gateway.config().limits
    }

    /// The live session `id`, if `key` initialized it.
    fn lookup(&self, id: &str, key: &[u8; 32]) -> Result<Arc<Entry>, Response> {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get(id).cloned() else {
            return Err(unknown_session());
        };
        if !same_key(&entry.key, key) {
            tracing::warn!(session = %entry.session.id(), "refused a request on a session initialized with another credential");
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                code::INVALID_REQUEST,
                "this session was started with another credential; start a new session",
            ));
        }
        if entry.expired(self.config.session_idle) {
            sessions.remove(id);
            drop(sessions);
            entry.link.end_detached();
            return Err(unknown_session());
        }
        entry.touch();
        Ok(entry)
    }

    fn full(&self) -> bool {
        lock(&self.sessions).len() >= self.config.max_sessions
    }

    fn forget(&self, id: &str) {
        if let Some(entry) = lock(&self.sessions).remove(id) {
            tracing::info!(session = %entry.session.id(), "MCP session ended");
        }
    }

    /// Registers the session the server created in answer to `initialize`.
    fn register(&self, server_id: &HeaderValue, ctx: &Ctx) -> Result<(), String> {
        let id = session_id_text(server_id)
            .ok_or("the MCP server gave a session id that is not visible ASCII")?;
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= self.config.max_sessions {
            return Err("too many sessions are open at the gateway; try again later".into());
        }
        if sessions.contains_key(&id) {
            return Err("the MCP server gave a session id that is already in use".into());
        }
        *lock(&ctx.link.session_id) = Some(server_id.clone());
        sessions.insert(
            id.clone(),
            Arc::new(Entry {
                id,
                session: Arc::clone(&ctx.session),
                link: Arc::clone(&ctx.link),
                key: ctx.key,
                last_used: Mutex::new(Instant::now()),
                streams: AtomicUsize::new(0),
            }),
        );
        tracing::info!(session = %ctx.session.id(), "MCP session started");
        Ok(())
    }
}

/// The upstream side of one [`Session`]: how its messages, and the gateway's own requests,
/// reach the server.
struct Link {
    out: Arc<Outbound>,
    /// The server's session id, once `initialize` was answered with one.
    session_id: Mutex<Option<HeaderValue>>,
    /// The protocol version the client last announced.
    version: Mutex<Option<HeaderValue>>,
    /// Revision 2026-07-28: the `_meta` members every request carries (copied from the
    /// client's request onto the gateway's own); `None` before it.
    meta: Option<Map<String, Value>>,
}

impl Link {
    fn new(
        out: &Arc<Outbound>,
        version: Option<HeaderValue>,
        meta: Option<Map<String, Value>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            out: Arc::clone(out),
            session_id: Mutex::new(None),
            version: Mutex::new(version),
            meta,
        })
    }

    fn set_version(&self, version: Option<HeaderValue>) {
        if let Some(v) = version {
            *lock(&self.version) = Some(v);
        }
    }

    fn stateless(&self) -> bool {
        self.meta.is_some()
    }

    /// A request to the endpoint with the session's headers and the configured ones.
    fn request(&self, method: Method, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.out.uri.clone();
        let h = req.headers_mut();
        if let Some(id) = lock(&self.session_id).clone() {
            h.insert(MCP_SESSION_ID, id);
        }
        if let Some(v) = lock(&self.version).clone() {
            h.insert(MCP_PROTOCOL_VERSION, v);
        }
        for (name, value) in &self.out.headers {
            h.append(name.clone(), value.clone());
        }
        req
    }

    /// POSTs `message`; `client` holds the client's headers that go on with it.
    async fn post(
        &self,
        message: &Message,
        client: HeaderMap,
    ) -> Result<hyper::Response<Incoming>, String> {
        let mut req = self.request(Method::POST, Bytes::from(message.to_bytes()));
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        h.insert(header::ACCEPT, HeaderValue::from_static(DEFAULT_ACCEPT));
        for name in client.keys() {
            h.remove(name);
        }
        h.extend(client);
        if self.stateless()
            && let Some(method) = message.method()
        {
            let method = HeaderValue::from_str(method)
                .map_err(|_| "the method cannot be sent as a header".to_owned())?;
            h.insert(MCP_METHOD, method);
            if let Some(name) = mirrored_name(message) {
                let name = HeaderValue::from_str(&encode_header_value(name))
                    .map_err(|_| "the name cannot be sent as a header".to_owned())?;
                h.insert(MCP_NAME, name);
            }
        }
        self.out.send(req).await
    }

    /// Sends a message whose answer nobody waits for (the gateway's refusal of a server
    /// request).
    fn post_detached(self: &Arc<Self>, message: Message) {
        let link = Arc::clone(self);
        tokio::spawn(async move {
            match link.post(&message, HeaderMap::new()).await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "the MCP server refused a message of the gateway")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a message of the gateway did not reach the MCP server")
                }
            }
        });
    }

    /// Ends the session at the server (best effort).
    fn end_detached(self: &Arc<Self>) {
        if lock(&self.session_id).is_none() {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let req = link.request(Method::DELETE, Bytes::new());
            let _ = tokio::time::timeout(DELETE_TIMEOUT, link.out.client.request(req)).await;
        });
    }

    /// Adds the client's `_meta` members (2026-07-28) to one of the gateway's own requests.
    fn with_meta(&self, message: Message) -> Message {
        let (Some(meta), Message::Request { id, method, params }) = (&self.meta, &message) else {
            return message;
        };
        let mut params = params.clone().unwrap_or_default();
        let mut own = match params.remove("_meta") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in meta {
            own.entry(k.clone()).or_insert_with(|| v.clone());
        }
        params.insert("_meta".into(), Value::Object(own));
        Message::Request {
            id: id.clone(),
            method: method.clone(),
            params: Some(params),
        }
    }

    /// The answer to request `id` in a server response (JSON, or the SSE stream up to it).
    async fn answer_of(
        &self,
        response: hyper::Response<Incoming>,
        id: &Id,
    ) -> Result<Message, String> {
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the MCP server answered HTTP {status}"));
        }
        let limits = self.out.limits;
        match body_kind(response.headers()) {
            Kind::Json => {
                let bytes = read_body(response.into_body(), limits.max_bytes)
                    .await
                    .map_err(|e| e.describe(limits.max_bytes))?;
                let message = jsonrpc::parse(&bytes, limits)
                    .map_err(|e| format!("the MCP server's answer is malformed ({})", e.message))?;
                if is_answer_to(&message, id) {
                    Ok(message)
                } else {
                    Err("the MCP server answered with another message".to_owned())
                }
            }
            Kind::EventStream => {
                let mut body = response.into_body();
                let mut parser = SseParser::new(limits.max_bytes);
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| {
                        format!("the MCP server's stream broke: {}", error_chain(&e))
                    })?;
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    for event in parser.push(&data)? {
                        let Some(data) = event.data else { continue };
                        if let Ok(m) = jsonrpc::parse(&data, limits)
                            && is_answer_to(&m, id)
                        {
                            return Ok(m);
                        }
                    }
                }
                Err("the MCP server ended its stream without answering".to_owned())
            }
            Kind::Other => Err("the MCP server answered without a JSON-RPC message".to_owned()),
        }
    }
}

impl Upstream for Link {
    fn request(&self, message: Message) -> BoxFuture<'_, Result<Message, String>> {
        Box::pin(async move {
            let Some(id) = message.id().cloned() else {
                return Err("the gateway's request has no id".to_owned());
            };
            let message = self.with_meta(message);
            let response = self.post(&message, HeaderMap::new()).await?;
            self.answer_of(response, &id).await
        })
    }
}

// ---- requests -----------------------------------------------------------------------------

async fn handle(State(proxy): State<Arc<Proxy>>, req: Request<Body>) -> Response {
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
struct Ctx {
    session: Arc<Session>,
    link: Arc<Link>,
    /// The registered session, when the request named one.
    entry: Option<Arc<Entry>>,
    key: [u8; 32],
    /// The request is an `initialize` that may start a session.
    initialize: bool,
    stateless: bool,
}

/// Answers a request the session answered itself (a refusal), or accepts a notification.
fn direct_answer(messages: Vec<Message>, stateless: bool) -> Response {
    match messages.as_slice() {
        [] => status_only(StatusCode::ACCEPTED),
        [m] => {
            // Revision 2026-07-28 answers an unknown method with 404.
            let status = match m {
                Message::Error { error, .. }
                    if stateless && error.code == code::METHOD_NOT_FOUND =>
                {
                    StatusCode::NOT_FOUND
                }
                _ => StatusCode::OK,
            };
            message_response(status, m)
        }
        many => {
            let mut text = Vec::new();
            for m in many {
                text.extend_from_slice(b"event: message\ndata: ");
                text.extend_from_slice(&m.to_bytes());
                text.extend_from_slice(b"\n\n");
            }
            let mut r = Response::new(Body::from(text));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
            r
        }
    }
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

fn unknown_session() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        None,
        code::INVALID_REQUEST,
        "this session is not known (it ended or expired); start a new one with `initialize`",
    )
}

fn status_only(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

fn message_response(status: StatusCode, message: &Message) -> Response {
    let mut r = Response::new(Body::from(message.to_bytes()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    r
}

fn rpc_error(
    status: StatusCode,
    id: Option<Id>,
    code: i64,
    message: impl Into<String>,
) -> Response {
    message_response(status, &Message::error(id, code, message, None))
}

fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    r
}

// ---- bodies -------------------------------------------------------------------------------

enum ReadError {
    TooLarge,
    Failed(String),
}

impl ReadError {
    fn describe(&self, max: usize) -> String {
        match self {
            ReadError::TooLarge => {
                format!("the MCP server sent a message larger than {max} bytes")
            }
            ReadError::Failed(e) => format!("the MCP server's answer cannot be read: {e}"),
        }
    }
}

async fn read_body<B>(body: B, max: usize) -> Result<Bytes, ReadError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ReadError::TooLarge)
        }
        Err(e) => Err(ReadError::Failed(error_chain(e.as_ref()))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    EventStream,
    Other,
}

fn body_kind(headers: &HeaderMap) -> Kind {
    let ct = headers.get(header::CONTENT_TYPE);
    if has_media_type(ct, JSON) {
        Kind::Json
    } else if has_media_type(ct, EVENT_STREAM) {
        Kind::EventStream
    } else {
        Kind::Other
    }
}

/// Whether a `Content-Type` is `media` (parameters such as `charset` aside).
fn has_media_type(value: Option<&HeaderValue>, media: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

/// The body of a streamed answer: what the relay sends.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

// ---- streams ------------------------------------------------------------------------------

/// Passes a server's SSE stream to the client, event by event, through the session.
struct Relay {
    session: Arc<Session>,
    link: Arc<Link>,
    limits: FrameLimits,
    /// The client request this stream answers (none for a standalone stream).
    pending: Option<Id>,
    answered: bool,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Relay {
    /// Relays `body` in a task; `idle` bounds the wait for each piece of the stream.
    fn spawn(
        mut self,
        mut body: Incoming,
        idle: Option<Duration>,
        guard: Option<StreamGuard>,
    ) -> Body {
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        tokio::spawn(async move {
            let _guard = guard;
            let mut parser = SseParser::new(self.limits.max_bytes);
            // Whether the server gave event ids (the client may then resume the stream).
            let mut resumable = false;
            let mut stop = self.stop.clone();
            let ended: Result<(), String> = loop {
                let next = async {
                    match idle {
                        Some(t) => tokio::time::timeout(t, body.frame()).await.map_err(|_| ()),
                        None => Ok(body.frame().await),
                    }
                };
                let frame = tokio::select! {
                    () = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                    f = next => f,
                };
                let chunk = match frame {
                    Err(()) => {
                        break Err("the MCP server's stream went quiet for too long".to_owned());
                    }
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(e))) => {
                        break Err(format!(
                            "the MCP server's stream broke: {}",
                            error_chain(&e)
                        ));
                    }
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                };
                let events = match parser.push(&chunk) {
                    Ok(e) => e,
                    Err(e) => break Err(e),
                };
                let mut failed = None;
                for event in events {
                    resumable |= event.id.is_some();
                    match self.event(event).await {
                        Ok(text) if text.is_empty() => {}
                        Ok(text) => {
                            if tx.send(Bytes::from(text)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break Err(e);
                }
            };
            if let Err(e) = &ended {
                tracing::warn!(session = %self.session.id(), error = %e, "an event stream of the MCP server ended early");
            }
            // A request left unanswered is answered with an error, unless the client can
            // resume the stream and get the answer.
            if let Some(id) = self.pending.clone()
                && !self.answered
                && (ended.is_err() || !resumable)
            {
                let why = ended
                    .err()
                    .unwrap_or_else(|| "the MCP server ended its stream without answering".into());
                let error = Message::error(Some(id), code::INTERNAL_ERROR, why, None);
                let routes = self.session.server_message(error).await;
                for route in routes {
                    if let Route::Client(m) = route {
                        let _ = tx.send(Bytes::from(sse_event(None, &m))).await;
                    }
                }
            }
        });
        Body::new(ChannelBody(rx))
    }

    /// The SSE text for one event of the server (empty: nothing to send).
    async fn event(&mut self, event: SseEvent) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if let Some(retry) = event.retry {
            out.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
        }
        let data = event
            .data
            .filter(|d| !d.iter().all(u8::is_ascii_whitespace));
        let mut messages = Vec::new();
        if let Some(data) = data {
            match jsonrpc::parse(&data, self.limits) {
                Ok(m) => {
                    for route in self.session.server_message(m).await {
                        match route {
                            Route::Client(m) => messages.push(m),
                            Route::Server(m) => self.link.post_detached(m),
                        }
                    }
                }
                Err(e) => {
                    let why = format!("the MCP server sent a malformed message ({})", e.message);
                    if self.pending.is_some() {
                        return Err(why);
                    }
                    tracing::warn!(session = %self.session.id(), error = %why, "dropped an event of the MCP server");
                }
            }
        }
        if messages.is_empty() {
            // Nothing to deliver; the id still marks the client's place in the stream.
            if let Some(id) = &event.id {
                out.extend_from_slice(format!("id: {id}\ndata: \n\n").as_bytes());
            }
            return Ok(out);
        }
        let n = messages.len();
        for (i, m) in messages.iter().enumerate() {
            if self.pending.as_ref().is_some_and(|p| is_answer_to(m, p)) {
                self.answered = true;
            }
            let id = if i + 1 == n {
                event.id.as_deref()
            } else {
                None
            };
            out.extend_from_slice(&sse_event(id, m));
        }
        Ok(out)
    }
}

fn sse_event(id: Option<&str>, message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"event: message\n");
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    // Compact JSON: no newline inside.
    out.extend_from_slice(&message.to_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// One event of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct SseEvent {
    /// The `id` field, when this event had one.
    id: Option<String>,
    event: Option<String>,
    /// The data lines joined by `\n`; `None` without any `data` field.
    data: Option<Vec<u8>>,
    retry: Option<u64>,
}

/// An incremental SSE parser (the WHATWG event-stream format) with bounded memory.
#[derive(Debug)]
struct SseParser {
    /// Largest event data (and line) accepted.
    max: usize,
    line: Vec<u8>,
    /// The previous chunk ended with a CR (a following LF belongs to it).
    after_cr: bool,
    started: bool,
    current: SseEvent,
}

impl SseParser {
    fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            after_cr: false,
            started: false,
            current: SseEvent::default(),
        }
    }

    fn too_large(&self) -> String {
        format!(
            "the MCP server sent an event larger than the limit of {} bytes",
            self.max
        )
    }

    /// Feeds a chunk; returns the events it completes.
    fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        if !self.started && !chunk.is_empty() {
            self.started = true;
            chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
        }
        if self.after_cr {
            self.after_cr = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        while let Some(i) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&chunk[..i])?;
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out)?;
            if chunk[i] == b'\r' {
                match chunk.get(i + 1) {
                    Some(b'\n') => chunk = &chunk[i + 2..],
                    Some(_) => chunk = &chunk[i + 1..],
                    None => {
                        self.after_cr = true;
                        chunk = &[];
                    }
                }
            } else {
                chunk = &chunk[i + 1..];
            }
        }
        self.extend_line(chunk)?;
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), String> {
        // A data line carries `data: ` before the message.
        if self.line.len() + bytes.len() > self.max.saturating_add(16) {
            return Err(self.too_large());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        if line.is_empty() {
            let mut event = std::mem::take(&mut self.current);
            if let Some(d) = &mut event.data
                && d.last() == Some(&b'\n')
            {
                d.pop();
            }
            if event.data.is_some() || event.id.is_some() || event.retry.is_some() {
                out.push(event);
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let data = self.current.data.get_or_insert_with(Vec::new);
                if data.len() + value.len() + 1 > self.max {
                    return Err(self.too_large());
                }
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => {
                self.current.event = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"id" => {
                let ok = !value.contains(&0)
                    && value.len() <= MAX_EVENT_ID_BYTES
                    && value.iter().all(|b| (0x20..0x7f).contains(b));
                if ok {
                    self.current.id = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.current.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
        Ok(())
    }
}

// ---- headers ------------------------------------------------------------------------------

/// The credential of `Authorization: Bearer <credential>` (exactly one such header).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then(|| token.to_owned())
}

fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = normalize_origin(origin);
    allowed.contains(&origin)
}

/// The text of a header value of visible ASCII (spaces inside allowed) of at most `max`
/// bytes.
fn visible(value: &HeaderValue, max: usize) -> Option<&str> {
    let bytes = value.as_bytes();
    let ok =
        !bytes.is_empty() && bytes.len() <= max && bytes.iter().all(|b| (0x20..0x7f).contains(b));
    if ok { value.to_str().ok() } else { None }
}

/// A session id: visible ASCII, no spaces.
fn session_id_text(value: &HeaderValue) -> Option<String> {
    visible(value, MAX_SESSION_ID_BYTES)
        .filter(|v| !v.contains(' '))
        .map(str::to_owned)
}

/// The client's `Mcp-Session-Id`, if any.
fn session_id_header(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut all = headers.get_all(MCP_SESSION_ID).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err("more than one `Mcp-Session-Id` header".to_owned());
    }
    session_id_text(value)
        .map(Some)
        .ok_or_else(|| "`Mcp-Session-Id` is not a session id".to_owned())
}

/// Whether `version` (`YYYY-MM-DD`) is the stateless revision or a later one.
fn is_stateless_version(version: &str) -> bool {
    let b = version.as_bytes();
    let dated = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    dated && version >= STATELESS_REVISION
}

fn params_of(message: &Message) -> Option<&Map<String, Value>> {
    match message {
        Message::Request { params, .. } | Message::Notification { params, .. } => params.as_ref(),
        Message::Result { .. } | Message::Error { .. } => None,
    }
}

/// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
fn meta_version(message: &Message) -> Option<&str> {
    params_of(message)?
        .get("_meta")?
        .get(META_VERSION)?
        .as_str()
}

/// The `_meta` members the gateway's own requests copy from the client's request.
fn copied_meta(message: &Message) -> Map<String, Value> {
    let meta = params_of(message)
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    META_COPIED
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), meta?.get(*k)?.clone())))
        .collect()
}

/// What `Mcp-Name` mirrors: the tool or prompt name, or the resource URI.
fn mirrored_name(message: &Message) -> Option<&str> {
    let Message::Request { method, params, .. } = message else {
        return None;
    };
    let field = match method.as_str() {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params.as_ref()?.get(field)?.as_str()
}

fn needs_name(message: &Message) -> bool {
    matches!(
        message,
        Message::Request { method, .. }
            if matches!(method.as_str(), "tools/call" | "prompts/get" | "resources/read")
    )
}

/// A header value of revision 2026-07-28 in the form sent: plain visible ASCII, or
/// `=?base64?…?=` for anything else (and for plain values that look like that).
fn encode_header_value(value: &str) -> String {
    let sentinel = value.starts_with(BASE64_SENTINEL_START) && value.ends_with(BASE64_SENTINEL_END);
    let plain = !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if plain && !sentinel {
        value.to_owned()
    } else {
        format!(
            "{BASE64_SENTINEL_START}{}{BASE64_SENTINEL_END}",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Reads a header value of revision 2026-07-28, decoding `=?base64?…?=`.
fn decode_header_value(value: &HeaderValue) -> Result<String, String> {
    let text = std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or("the value has characters that are not visible ASCII")?;
    let encoded = text
        .strip_prefix(BASE64_SENTINEL_START)
        .and_then(|t| t.strip_suffix(BASE64_SENTINEL_END));
    match encoded {
        None => Ok(text.to_owned()),
        Some(b64) => {
            let bytes = BASE64_ANY_PADDING
                .decode(b64)
                .map_err(|_| "the value is not valid base64")?;
            String::from_utf8(bytes).map_err(|_| "the decoded value is not UTF-8".to_owned())
        }
    }
}

/// One header of revision 2026-07-28 (exactly one occurrence).
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, String> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(format!("more than one `{name}` header"));
    }
    Ok(first)
}

/// Checks the headers of a revision 2026-07-28 request against its body.
fn check_stateless(headers: &HeaderMap, message: &Message) -> Result<(), String> {
    let version = single(headers, &MCP_PROTOCOL_VERSION)?
        .ok_or("the `MCP-Protocol-Version` header is missing")?;
    let version = visible(version, MAX_VERSION_BYTES)
        .ok_or("`MCP-Protocol-Version` has invalid characters")?;
    let is_request = matches!(message, Message::Request { .. });
    match meta_version(message) {
        Some(v) if v != version => {
            return Err(format!(
                "`MCP-Protocol-Version` is `{version}` but `params._meta` says `{v}`"
            ));
        }
        None if is_request => {
            return Err(format!(
                "the request's `params._meta` has no `{META_VERSION}` to match \
                 `MCP-Protocol-Version`"
            ));
        }
        _ => {}
    }
    let Some(method) = message.method() else {
        return Ok(());
    };
    match single(headers, &MCP_METHOD)? {
        None if is_request => return Err("the `Mcp-Method` header is missing".into()),
        None => {}
        Some(h) => {
            let h = visible(h, jsonrpc::MAX_METHOD_BYTES)
                .ok_or("`Mcp-Method` has invalid characters")?;
            if h != method {
                return Err(format!(
                    "`Mcp-Method` is `{h}` but the body's method is `{method}`"
                ));
            }
        }
    }
    if needs_name(message) {
        let Some(h) = single(headers, &MCP_NAME)? else {
            return Err(format!(
                "the `Mcp-Name` header is missing (required on `{method}`)"
            ));
        };
        let h = decode_header_value(h).map_err(|e| format!("`Mcp-Name`: {e}"))?;
        match mirrored_name(message) {
            Some(body) if body == h => {}
            Some(_) => return Err("`Mcp-Name` does not match the body".into()),
            None => return Err(format!("the body of `{method}` has no name for `Mcp-Name`")),
        }
    }
    Ok(())
}

/// The client's `Mcp-Param-*` headers of a 2026-07-28 `tools/call` (the server checks them
/// against the body).
fn param_headers(headers: &HeaderMap) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !name.as_str().starts_with(MCP_PARAM_PREFIX) {
            continue;
        }
        if visible(value, MAX_PARAM_BYTES).is_none() {
            return Err(format!("`{name}` has invalid characters"));
        }
        out.append(name.clone(), value.clone());
        if out.len() > MAX_PARAM_HEADERS {
            return Err(format!(
                "more than {MAX_PARAM_HEADERS} `Mcp-Param-*` headers"
            ));
        }
    }
    Ok(out)
}

fn is_answer_to(message: &Message, id: &Id) -> bool {
    match message {
        Message::Result { id: i, .. } | Message::Error { id: Some(i), .. } => i == id,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), hv(v));
        }
        h
    }

    fn msg(s: &str) -> Message {
        jsonrpc::parse(s.as_bytes(), FrameLimits::default()).unwrap()
    }

    #[test]
    fn bearer_credentials() {
        let get = |v: &str| bearer(&headers(&[("authorization", v)]));
        assert_eq!(get("Bearer arb_abc").as_deref(), Some("arb_abc"));
        assert_eq!(get("bearer  arb_abc ").as_deref(), Some("arb_abc"));
        assert_eq!(get("Basic dXNlcjpwYXNz"), None);
        assert_eq!(get("Bearer "), None);
        assert_eq!(get("Bearer a b"), None);
        assert_eq!(get("arb_abc"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(bearer(&two), None);
    }

    #[test]
    fn header_values_round_trip() {
        for (plain, sent) in [
            ("get_weather", "get_weather"),
            ("file:///a b.txt", "file:///a b.txt"),
            ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
            (" padded ", "=?base64?IHBhZGRlZCA=?="),
            ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
            ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        ] {
            assert_eq!(encode_header_value(plain), sent);
            assert_eq!(decode_header_value(&hv(sent)).unwrap(), plain);
        }
        // Padding may be left out; case of the markers matters.
        assert_eq!(
            decode_header_value(&hv("=?base64?IHBhZGRlZCA?=")).unwrap(),
            " padded "
        );
        assert_eq!(
            decode_header_value(&hv("=?BASE64?IHBhZGRlZCA=?=")).unwrap(),
            "=?BASE64?IHBhZGRlZCA=?="
        );
        assert!(decode_header_value(&hv("=?base64?!!!?=")).is_err());
        assert!(
            decode_header_value(&hv("=?base64?/w==?=")).is_err(),
            "not UTF-8"
        );
        assert!(decode_header_value(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
        assert!(decode_header_value(&hv("a\tb")).is_err());
    }

    #[test]
    fn stateless_versions() {
        assert!(is_stateless_version("2026-07-28"));
        assert!(is_stateless_version("2027-01-01"));
        assert!(!is_stateless_version("2025-11-25"));
        assert!(!is_stateless_version("2025-06-18"));
        assert!(!is_stateless_version("DRAFT-2026"));
        assert!(!is_stateless_version("2026-7-28"));
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get weather","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    #[test]
    fn stateless_headers_match_the_body() {
        let m = msg(CALL);
        let ok = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "get weather"),
        ]);
        check_stateless(&ok, &m).unwrap();
        let b64 = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0IHdlYXRoZXI=?="),
        ]);
        check_stateless(&b64, &m).unwrap();
        for (bad, why) in [
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-name", "get weather"),
                ],
                "missing",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/list"),
                    ("mcp-name", "get weather"),
                ],
                "Mcp-Method",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                ],
                "Mcp-Name",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?b3RoZXI=?="),
                ],
                "does not match",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2027-01-01"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get weather"),
                ],
                "MCP-Protocol-Version",
            ),
            (
                vec![("mcp-method", "tools/call"), ("mcp-name", "get weather")],
                "MCP-Protocol-Version",
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get weather"),
                ],
                "more than one",
            ),
        ] {
            let e = check_stateless(&headers(&bad), &m).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Lists carry no Mcp-Name; a request must carry its version in `_meta`.
        let list = msg(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        check_stateless(&h, &list).unwrap();
        let bare = msg(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert!(check_stateless(&h, &bare).unwrap_err().contains("_meta"));
    }

    #[test]
    fn mirrored_names() {
        assert_eq!(mirrored_name(&msg(CALL)), Some("get weather"));
        let read = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(mirrored_name(&read), Some("file:///x"));
        let list = msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}"#);
        assert_eq!(mirrored_name(&list), None);
        let copied = copied_meta(&msg(CALL));
        assert_eq!(copied.len(), 1);
        assert_eq!(copied[META_VERSION], "2026-07-28");
    }

    #[test]
    fn origins() {
        let allowed = vec![parse_origin("https://App.example.com/").unwrap()];
        assert!(origin_allowed(&allowed, "https://app.example.com"));
        assert!(origin_allowed(&allowed, "HTTPS://APP.EXAMPLE.COM"));
        assert!(!origin_allowed(&allowed, "https://evil.example.com"));
        assert!(!origin_allowed(&allowed, "http://app.example.com"));
        assert!(!origin_allowed(&allowed, "null"));
        assert!(!origin_allowed(&[], "http://localhost:3000"));
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in [
            "localhost:3000",
            "https://a.example/path",
            "ftp://a.example",
            "*",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_settings() {
        let uri = parse_upstream("http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!(uri.path(), "/mcp");
        assert_eq!(parse_upstream("http://127.0.0.1:3001").unwrap().path(), "/");
        assert!(
            parse_upstream("https://mcp.example.com/mcp")
                .unwrap_err()
                .contains("https")
        );
        assert!(parse_upstream("ftp://x/y").is_err());
        assert!(parse_upstream("/mcp").is_err());
        assert!(
            parse_upstream("http://user:pw@host/mcp")
                .unwrap_err()
                .contains("credentials")
        );

        let (name, value) = parse_upstream_header("Authorization: Bearer s3cret").unwrap();
        assert_eq!(name, header::AUTHORIZATION);
        assert_eq!(value, "Bearer s3cret");
        assert!(value.is_sensitive());
        let (name, value) = parse_upstream_header("X-Api-Key:abc:def").unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert_eq!(value, "abc:def");
        for (bad, why) in [
            ("Authorization Bearer x", "Name: value"),
            ("Bad Name: x", "not a header name"),
            (": x", "not a header name"),
            ("X-Empty:   ", "empty"),
            ("Host: other", "sets"),
            ("Mcp-Session-Id: x", "sets"),
            ("mcp-param-region: x", "sets"),
            ("X-Bad: a\u{7f}b", "characters"),
        ] {
            let e = parse_upstream_header(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("Bearer x") || bad.contains("Authorization Bearer x"));
        }
    }

    #[test]
    fn settings_are_checked() {
        let ok = HttpSettings {
            upstream: "http://127.0.0.1:3001/mcp".into(),
            ..HttpSettings::default()
        };
        assert_eq!(Config::new(&ok).unwrap().path, "/mcp");
        let zero = HttpSettings {
            max_sessions: 0,
            ..ok.clone()
        };
        assert!(Config::new(&zero).is_err());
        let origin = HttpSettings {
            allow_origins: vec!["not an origin".into()],
            ..ok
        };
        assert!(Config::new(&origin).is_err());
    }

    #[test]
    fn session_ids_and_keys() {
        assert_eq!(session_id_text(&hv("abc-123")).as_deref(), Some("abc-123"));
        assert_eq!(session_id_text(&hv("a b")), None);
        assert_eq!(session_id_text(&hv(&"x".repeat(300))), None);
        let a = credential_key("arb_one");
        assert!(same_key(&a, &credential_key("arb_one")));
        assert!(!same_key(&a, &credential_key("arb_two")));
    }

    #[test]
    fn media_types() {
        assert!(has_media_type(Some(&hv("application/json")), JSON));
        assert!(has_media_type(
            Some(&hv("Application/JSON; charset=utf-8")),
            JSON
        ));
        assert!(!has_media_type(Some(&hv("text/plain")), JSON));
        assert!(!has_media_type(None, JSON));
    }

    fn parse_all(chunks: &[&[u8]], max: usize) -> Result<Vec<SseEvent>, String> {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c)?);
        }
        Ok(out)
    }

    #[test]
    fn sse_events() {
        let events = parse_all(
            &[
                b"\xEF\xBB\xBF: comment\r\nid: e1\r\ndata: ",
                b"{\"a\":1}\r",
                b"\n\r\nevent: message\ndata: x\ndata: y\n\nid: e2\ndata:\n\nretry: 500\n\n",
                b"data: tail",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("e1".into()),
                    data: Some(b"{\"a\":1}".to_vec()),
                    ..SseEvent::default()
                },
                SseEvent {
                    event: Some("message".into()),
                    data: Some(b"x\ny".to_vec()),
                    ..SseEvent::default()
                },
                SseEvent {
                    id: Some("e2".into()),
                    data: Some(Vec::new()),
                    ..SseEvent::default()
                },
                SseEvent {
                    retry: Some(500),
                    ..SseEvent::default()
                },
            ]
        );
        // Lone CRs end lines too.
        let cr = parse_all(&[b"data: a\rdata: b\r\r"], 64).unwrap();
        assert_eq!(cr[0].data.as_deref(), Some(&b"a\nb"[..]));
    }

    #[test]
    fn sse_events_are_bounded() {
        let big = format!("data: {}\n\n", "x".repeat(100));
        assert!(parse_all(&[big.as_bytes()], 64).is_err());
        let many = "data: xxxxxxxxxx\n".repeat(10);
        assert!(parse_all(&[many.as_bytes()], 64).is_err());
        let line = "x".repeat(200);
        assert!(parse_all(&[line.as_bytes()], 64).is_err());
        assert!(parse_all(&[big.as_bytes()], 1024).is_ok());
    }

    #[test]
    fn relayed_events_keep_their_id() {
        let m = msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        let text = String::from_utf8(sse_event(Some("e7"), &m)).unwrap();
        assert_eq!(
            text,
            "event: message\nid: e7\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
        );
        let back = parse_all(&[text.as_bytes()], 1024).unwrap();
        assert_eq!(back[0].id.as_deref(), Some("e7"));
        assert_eq!(back[0].data.as_deref(), Some(&m.to_bytes()[..]));
    }
}
