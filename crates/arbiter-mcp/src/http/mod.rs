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
//!
//! The parts:
//!
//! - `config`: the settings of `arbiter mcp http` ([`HttpSettings`]) and their checks.
//! - `sessions`: the table of sessions of the 2025 revisions, bound to their credential,
//!   and the sweep that forgets idle ones.
//! - `upstream`: how a [`Session`]'s messages and the gateway's own requests reach the
//!   server.
//! - `handlers`: what the gateway does with each POST, GET, DELETE and CORS preflight.
//! - `responses`: the HTTP answers the gateway builds itself.
//! - `body`: reading bodies within the frame limit, and telling JSON from an event stream.
//! - `sse`: the server's event streams, parsed and relayed to the client through the session.
//! - `headers`: the client's headers: credential, session id, protocol version, and the
//!   headers of revision 2026-07-28 that mirror the body.
//!
//! [`Session`]: crate::session::Session

// Refusals are HTTP responses, returned as they are.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::jsonrpc::{FrameLimits, Id, Message};
use crate::session::Gateway;

mod body;
mod config;
mod handlers;
mod headers;
mod responses;
mod sessions;
mod sse;
mod upstream;

pub use config::HttpSettings;

use config::Config;
use handlers::handle;
use sessions::{Entry, sweep};
use upstream::Outbound;

/// JSON-RPC error code of a header that is missing or does not match the body (revision
/// 2026-07-28, `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32020;

/// The first protocol revision without sessions, whose requests carry their metadata.
pub const STATELESS_REVISION: &str = "2026-07-28";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the open streams get to end after shutdown was asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the HTTP gateway could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is out of range or malformed (the message names it).
    #[error("{0}")]
    Settings(String),
    #[error("cannot listen on `{addr}`: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot read the listening address: {0}")]
    Address(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
}

/// Serves the gateway until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Settings are checked before anything listens.
    Config::new(&settings).map_err(ServeError::Settings)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: settings.listen.clone(),
            source,
        })?;
    serve_on(gateway, settings, listener, shutdown).await
}

/// Serves the gateway on `listener` (its address is used, `settings.listen` is not) until
/// `shutdown` resolves.
pub async fn serve_on(
    gateway: Arc<Gateway>,
    settings: HttpSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Config::new(&settings).map_err(ServeError::Settings)?;
    let addr = listener.local_addr().map_err(ServeError::Address)?;
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
        served = server => served.map_err(ServeError::Server),
        () = async move {
            let _ = forced.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    sweeper.abort();
    tracing::info!("MCP gateway stopped");
    served
}

/// The gateway's state, shared by every request: the checked settings, the way to the
/// server, and the sessions of the 2025 revisions.
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

/// Locks `m`; a lock poisoned by a panic elsewhere is taken as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

use arbiter_pep::http::error_chain;

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

    fn limits(&self) -> FrameLimits {
        self.gateway.config().limits
    }
}

/// Whether `message` is the answer (a result or an error) to request `id`.
fn is_answer_to(message: &Message, id: &Id) -> bool {
    match message {
        Message::Result { id: i, .. } | Message::Error { id: Some(i), .. } => i == id,
        _ => false,
    }
}

/// Helpers of the unit tests of this module's parts.
#[cfg(test)]
mod test_support {
    #![allow(clippy::unwrap_used)]
    use hyper::header::{HeaderMap, HeaderName, HeaderValue};

    use crate::jsonrpc::{self, FrameLimits, Message};

    pub(super) fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), hv(v));
        }
        h
    }

    pub(super) fn msg(s: &str) -> Message {
        jsonrpc::parse(s.as_bytes(), FrameLimits::default()).unwrap()
    }
}
