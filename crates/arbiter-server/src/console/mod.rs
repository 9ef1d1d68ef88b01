//! The web console: static pages embedded in the binary ([`assets`]) and sign-in sessions
//! ([`session`]) whose cookie stands in for `Authorization: Bearer` on the admin API.
//!
//! | method & path | what |
//! | --- | --- |
//! | `GET /console` | 308 to `/console/` |
//! | `GET /console/` | the page |
//! | `GET /console/assets/{app.js,verify.js,style.css,favicon.svg}` | its files |
//! | `POST /console/api/login` `{"token": "arbadm_…"}` | opens a session: cookie + CSRF token |
//! | `GET /console/api/session` | the session (its CSRF token again, after a reload) |
//! | `POST /console/api/logout` | ends it (needs `X-Arbiter-CSRF`) |
//!
//! How the cookie reaches the admin API: [`cookie_layer`] runs around every request; a
//! request without `Authorization` that carries the session cookie is looked up (by the
//! cookie's SHA-256) and run inside a task-local [`CookieAuth`], which
//! [`crate::auth::require_admin`] reads when the request has no bearer credential. The layer
//! also decides the CSRF check, since it sees the method: a request that is not
//! GET/HEAD/OPTIONS must carry `X-Arbiter-CSRF` equal to the session's token, else every
//! admin endpoint answers 403 `csrf_token_missing_or_wrong`.

pub mod assets;
pub mod session;

use std::sync::Arc;

use arbiter_pdp::identity::{AdminCaller, now_us};
use arbiter_store::CredentialKind;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::auth::{Need, unauthenticated};
use crate::error::ApiError;
use crate::{AppState, access_log};
use session::{COOKIE, CSRF_HEADER, Key, Session, Sessions, Throttle, cookie_value, key_of};

/// The console's state: its sessions and the sign-in throttle.
#[derive(Debug, Default)]
pub struct Console {
    pub sessions: Sessions,
    pub throttle: Throttle,
}

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes, with its security headers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(assets::redirect))
        .route("/console/", get(assets::index))
        .route("/console/assets/{name}", get(assets::asset))
        .route("/console/api/login", post(login))
        .route("/console/api/session", get(current))
        .route("/console/api/logout", post(logout))
        .layer(middleware::map_response(security_headers))
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let json = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // Session answers are never stored; the files are revalidated (by their ETag).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if json { "no-store" } else { "no-cache" }),
    );
    res
}

/// How the session cookie authenticated the request being served.
#[derive(Debug, Clone)]
pub(crate) enum CookieAuth {
    /// A live session; `csrf_ok` when the method is safe or the CSRF header matched.
    Live {
        key: Key,
        session: Session,
        csrf_ok: bool,
    },
    /// A cookie with no live session behind it (ended, expired, or from before a restart).
    Ended,
}

tokio::task_local! {
    static COOKIE_AUTH: CookieAuth;
}

/// The session cookie of the request being served, if it carried one and no
/// `Authorization` header.
pub(crate) fn cookie_auth() -> Option<CookieAuth> {
    COOKIE_AUTH.try_with(Clone::clone).ok()
}

/// Looks the session cookie up (when the request has no `Authorization` header) and serves
/// the request inside it; see the module's documentation.
pub(crate) async fn cookie_layer(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(console) = state.console.as_ref() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(header::AUTHORIZATION) {
        return next.run(req).await;
    }
    let Some(value) = cookie_value(req.headers()) else {
        return next.run(req).await;
    };
    let key = key_of(&value);
    let auth = match console.sessions.get(&key, now_us(), true) {
        Some(session) => {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let mut presented = req.headers().get_all(CSRF_HEADER).iter();
            let csrf_ok = safe
                || match (presented.next(), presented.next()) {
                    (Some(v), None) => session.csrf_matches(v.as_bytes()),
                    _ => false,
                };
            CookieAuth::Live {
                key,
                session,
                csrf_ok,
            }
        }
        None => CookieAuth::Ended,
    };
    COOKIE_AUTH.scope(auth, next.run(req)).await
}

/// Whether the admin token behind `session` still authenticates: not revoked, not expired,
/// same role. Read from the store (the token itself is not kept).
async fn still_valid(state: &AppState, session: &Session) -> Result<bool, ApiError> {
    let Some(identity) = state.pdp.identity().cloned() else {
        return Err(ApiError::identity_disabled());
    };
    let id = session.credential_id.clone();
    let role = session.role.clone();
    let read = tokio::task::spawn_blocking(move || identity.store().credential(&id)).await;
    match read {
        Ok(Ok(Some(c))) => Ok(c.kind == CredentialKind::AdminToken
            && c.is_usable_at(now_us())
            && c.role.as_deref() == Some(role.as_str())),
        Ok(Ok(None)) => Ok(false),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
    }
}

fn ended() -> ApiError {
    unauthenticated(
        "the console session has ended or expired (or the server restarted); sign in again",
    )
}

fn token_gone() -> ApiError {
    unauthenticated(
        "the admin token that opened this console session was revoked or has expired, so the \
         session has ended; sign in with a valid token",
    )
}

/// A live session of the console's, after re-checking its token (ended if not valid).
async fn live_session(
    state: &AppState,
    auth: Option<CookieAuth>,
) -> Result<(Key, Session, bool), ApiError> {
    match auth {
        Some(CookieAuth::Live {
            key,
            session,
            csrf_ok,
        }) => {
            if still_valid(state, &session).await? {
                Ok((key, session, csrf_ok))
            } else {
                if let Some(console) = &state.console {
                    console.sessions.end(&key);
                }
                Err(token_gone())
            }
        }
        Some(CookieAuth::Ended) | None => Err(ended()),
    }
}

/// [`crate::auth::require_admin`] for a request authenticated by the session cookie.
pub(crate) async fn admin_by_cookie(
    state: &AppState,
    auth: CookieAuth,
    need: Need,
) -> Result<AdminCaller, ApiError> {
    let (_, session, csrf_ok) = live_session(state, Some(auth))
        .await
        .inspect_err(|_| access_log::note_refused(None))?;
    let admin = session.admin();
    access_log::note_admin(&admin);
    if !csrf_ok {
        return Err(csrf_refused());
    }
    if need == Need::Write && admin.role != "administrator" {
        return Err(crate::auth::role_refused(&admin.role));
    }
    Ok(admin)
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_token_missing_or_wrong",
        "a change made with the console's session cookie needs the `X-Arbiter-CSRF` header \
         with the session's CSRF token (from `GET /console/api/session`)",
    )
}

fn session_json(s: &Session) -> Value {
    json!({
        "name": s.name,
        "role": s.role,
        "csrf": s.csrf,
        "expires_at": arbiter_log::format_rfc3339_us(s.expires_us),
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Whether the cookie should carry `Secure`: the request came over HTTPS (directly, as the
/// forwarding proxy says, or as the configured public URL says).
fn secure(state: &AppState, headers: &HeaderMap, scheme_https: bool) -> bool {
    scheme_https
        || state
            .config
            .public_url
            .as_deref()
            .and_then(|u| u.get(..8))
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Largest sign-in body: the token and a little JSON around it.
const LOGIN_LIMITS: arbiter_types::JsonLimits = arbiter_types::JsonLimits {
    max_bytes: 4096,
    max_depth: 2,
};

/// `POST /console/api/login` `{"token": "arbadm_…"}`.
pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    crate::agents::answer(login_in(&state, req).await)
}

async fn login_in(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let console = state.console.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the console is turned off",
        )
    })?;
    let Some(identity) = state.pdp.identity().cloned() else {
        return Err(ApiError::identity_disabled());
    };
    let client = crate::auth::client_address_of(&parts);
    let now = now_us();
    if let Err(wait) = console.throttle.check(&client, now) {
        access_log::note_refused(None);
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed sign-ins from this address; try again in {wait} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(res);
    }
    let mut body = crate::body::read_json(&parts.headers, body, LOGIN_LIMITS).await?;
    let token = match body.remove("token") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(crate::agents::bad("token", "`token` must be a string")),
        None => {
            access_log::note_refused(None);
            let mut e = unauthenticated("`token` is required: an admin token (`arbadm_…`)");
            e.field = Some("token".to_owned());
            return Err(e);
        }
    };
    if let Some(k) = body.keys().next() {
        return Err(crate::agents::bad(k, format!("`{k}` is not a known field")));
    }
    let admin = match identity
        .authenticate_admin_async(Some(token.as_str()), now)
        .await
    {
        Ok(admin) => admin,
        Err(_) => {
            console.throttle.failed(&client, now);
            access_log::note_refused(None);
            return Err(unauthenticated(
                "that is not a valid admin token (it may be mistyped, revoked or expired); \
                 create one with `arbiter admin token create --name NAME`",
            ));
        }
    };
    drop(token);
    access_log::note_admin(&admin);
    let id = admin.credential_id.clone();
    let credential = tokio::task::spawn_blocking(move || identity.store().credential(&id))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?
        .map_err(ApiError::from)?
        .ok_or_else(token_gone)?;
    let (cookie, session) = console
        .sessions
        .open(
            admin.credential_id,
            credential.name,
            admin.role,
            credential.expires_at_us,
            now,
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("no randomness for a session: {e}"),
            )
        })?;
    let max_age = (session.expires_us - now).max(0) / 1_000_000;
    let https = parts.uri.scheme_str() == Some("https");
    let flags = if secure(state, &parts.headers, https) {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{flags}");
    let mut res = json_response(StatusCode::OK, &session_json(&session));
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?,
    );
    Ok(res)
}

/// `GET /console/api/session`: the session of the cookie (with its CSRF token), or 401.
pub async fn current(State(state): State<AppState>) -> Response {
    match live_session(&state, cookie_auth()).await {
        Ok((_, session, _)) => {
            access_log::note_admin(&session.admin());
            json_response(StatusCode::OK, &session_json(&session))
        }
        Err(e) => {
            access_log::note_refused(None);
            e.into_response()
        }
    }
}

/// `POST /console/api/logout`: ends the session (CSRF header required) and clears the cookie.
pub async fn logout(State(state): State<AppState>) -> Response {
    let auth = cookie_auth();
    // A session whose token was revoked is ended by the look-up itself.
    let (key, session, csrf_ok) = match live_session(&state, auth).await {
        Ok(live) => live,
        Err(e) => return with_cleared_cookie(e.into_response()),
    };
    access_log::note_admin(&session.admin());
    if !csrf_ok {
        return csrf_refused().into_response();
    }
    if let Some(console) = &state.console {
        console.sessions.end(&key);
    }
    with_cleared_cookie(StatusCode::NO_CONTENT.into_response())
}

fn with_cleared_cookie(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("arbiter_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    res
}

/// Keeps the `Arc` type in the public signature simple for callers building state.
pub(crate) fn new_console() -> Arc<Console> {
    Arc::new(Console::default())
}
