//! Arbiter's HTTP surface: the AuthZEN 1.0 API, discovery, the admin API, the decision log,
//! health, readiness and metrics.
//!
//! [`app`] builds the whole router from an [`AppState`]; it holds no globals, so tests drive
//! it with `tower::ServiceExt::oneshot` and `arbiter serve` drives it with a real listener.
//! Middleware order, outermost first: the access log (when configured, [`access_log`]), the
//! request-id echo, then routing. Every error a client can cause is answered with a JSON body
//! carrying a stable `code` (see [`error::ApiError`]).
//!
//! Handlers never wait on the identity store or a token issuer on the runtime's threads: they
//! use the decision point's async calls ([`arbiter_pdp::nonblocking`]), which answer cache hits
//! in place and move the rest to the blocking pool; the other store and log work of the admin
//! endpoints runs on the blocking pool too.

pub mod access_log;
mod agents;
mod approvals;
pub mod auth;
pub mod authzen;
mod body;
pub mod console;
pub mod error;
pub mod fleet;
pub mod forward_auth;
mod gap;
mod log;
mod ops;
mod pins;
mod policy_versions;
pub mod routes;
mod stats;
mod stream;
pub mod witness;

use std::future::Future;
use std::sync::Arc;

use arbiter_pdp::Pdp;
use arbiter_types::JsonLimits;
use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get, post};
use tokio::net::TcpListener;

/// Settings of the HTTP surface (validated; see the CLI for precedence).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Body size and nesting limits for every JSON endpoint.
    pub limits: JsonLimits,
    /// The base URL advertised in discovery; when `None`, derived from the `Host` header.
    pub public_url: Option<String>,
    /// The address the server listens on, used when a request carries no usable `Host`.
    pub listen: String,
    /// Refuse evaluation requests that carry no credential (neither an agent's key or token
    /// nor a PEP token) with 401.
    pub require_authentication: bool,
    /// Give every caller of the AuthZEN endpoints the administrators' details of a decision
    /// (`reason_admin`, determining policies, errors). By default only a PEP token's holder
    /// gets them; an agent or an anonymous caller gets the decision and `reason_user`.
    pub admin_reasons_for_all_callers: bool,
    /// The forward-auth route table.
    pub routes: Arc<routes::RouteTable>,
    /// Where one JSON line per request goes, if anywhere.
    pub access_log: Option<access_log::AccessLog>,
    /// The witnesses the decision log's checkpoints are sent to, if any.
    pub witnessing: Option<Arc<witness::Witnessing>>,
    /// The sources of `GET /v1/gap` besides the log and the registry (`serve --gap-…`).
    pub gap: Arc<arbiter_gap::Sources>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: JsonLimits::default(),
            public_url: None,
            listen: "127.0.0.1:8180".to_owned(),
            require_authentication: false,
            admin_reasons_for_all_callers: false,
            routes: Arc::new(routes::RouteTable::default()),
            access_log: None,
            witnessing: None,
            gap: Arc::default(),
        }
    }
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pdp: Arc<Pdp>,
    pub config: Arc<ServerConfig>,
    /// The web console's sessions; `None` when the console is off (`/console` is then 404).
    pub console: Option<Arc<console::Console>>,
    /// The decision log's last background verification and the live decision streams.
    pub(crate) insight: Arc<stats::Insight>,
}

impl AppState {
    /// State with the web console on.
    pub fn new(pdp: Arc<Pdp>, config: ServerConfig) -> Self {
        Self {
            pdp,
            config: Arc::new(config),
            console: Some(console::new_console()),
            insight: Arc::default(),
        }
    }

    /// The same state with the web console off: no `/console` routes, no session cookies.
    pub fn without_console(mut self) -> Self {
        self.console = None;
        self
    }
}

/// The request-id header, echoed on every response when the request carries one.
pub const REQUEST_ID: &str = "x-request-id";

/// Builds the router.
pub fn app(state: AppState) -> Router {
    let access_log = state.config.access_log.clone();
    let console = match state.console {
        Some(_) => console::routes(),
        None => Router::new(),
    };
    let router = console
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/access/v1/search/subject", post(authzen::search_subject))
        .route("/access/v1/search/resource", post(authzen::search_resource))
        .route("/access/v1/search/action", post(authzen::search_action))
        .route(
            "/.well-known/authzen-configuration",
            get(authzen::configuration),
        )
        .route("/v1/agents", get(agents::list).post(agents::register))
        .route("/v1/agents/{id}", get(agents::show).patch(agents::update))
        .route("/v1/agents/{id}/suspend", post(agents::suspend))
        .route("/v1/agents/{id}/activate", post(agents::activate))
        .route("/v1/agents/{id}/retire", post(agents::retire))
        .route(
            "/v1/agents/{id}/keys",
            get(agents::list_keys)
                .post(agents::issue_key)
                .delete(agents::revoke_all),
        )
        .route("/v1/agents/{id}/keys/{key}", delete(agents::revoke_key))
        .route(
            "/v1/agents/{id}/keys/{key}/rotate",
            post(agents::rotate_key),
        )
        .route(
            "/v1/tokens",
            get(agents::list_tokens).post(agents::create_token),
        )
        .route("/v1/tokens/{id}", delete(agents::revoke_token))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/v1/policy/versions",
            get(policy_versions::list).post(policy_versions::propose),
        )
        .route("/v1/policy/versions/{version}", get(policy_versions::show))
        .route(
            "/v1/policy/versions/{version}/approve",
            post(policy_versions::approve),
        )
        .route(
            "/v1/policy/versions/{version}/reject",
            post(policy_versions::reject),
        )
        .route(
            "/v1/policy/versions/{version}/activate",
            post(policy_versions::activate),
        )
        .route("/v1/policy/rollback", post(policy_versions::rollback))
        .route("/v1/policy/diff", get(policy_versions::diff))
        .route("/v1/policy/compare", get(policy_versions::compare))
        .route("/v1/policy/replay", get(policy_versions::replay))
        .route(
            "/v1/policy/shadow",
            get(policy_versions::shadow)
                .put(policy_versions::start_shadow)
                .delete(policy_versions::stop_shadow),
        )
        .route(
            "/v1/policy/required-approvals",
            post(policy_versions::required_approvals),
        )
        .route("/v1/discovered", get(agents::discovered))
        .route("/v1/discovered/{id}/adopt", post(agents::adopt))
        .route("/v1/audit", get(agents::audit))
        .route(
            "/v1/forward-auth/{service}",
            any(forward_auth::service_root),
        )
        .route(
            "/v1/forward-auth/{service}/{*rest}",
            any(forward_auth::with_path),
        )
        .route("/v1/decisions", get(log::decisions))
        .route("/v1/decisions/stream", get(stream::decisions))
        .route("/v1/stats/decisions", get(stats::decisions))
        .route("/v1/tool-pins", get(pins::list))
        .route("/v1/tool-pins/{server}/{tool}/approve", post(pins::approve))
        .route("/v1/decisions/{id}", get(log::decision))
        .route("/v1/decisions/{id}/evidence", get(log::evidence))
        .route("/v1/gap", get(gap::show))
        .route("/v1/log/checkpoint", get(log::checkpoint))
        .route("/v1/log/pubkey", get(log::pubkey))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            console::cookie_layer,
        ))
        .layer(middleware::from_fn(echo_request_id))
        .with_state(state);
    match access_log {
        Some(log) => router.layer(middleware::from_fn_with_state(log, access_log::layer)),
        None => router,
    }
}

/// Echoes a well-formed `X-Request-ID` (visible ASCII, at most 128 bytes).
async fn echo_request_id(req: Request, next: Next) -> Response {
    let id: Option<HeaderValue> = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned();
    let mut res = next.run(req).await;
    if let Some(id) = id {
        res.headers_mut().insert(REQUEST_ID, id);
    }
    res
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
