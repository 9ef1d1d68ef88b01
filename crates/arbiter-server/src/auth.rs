//! Credentials on the HTTP surface: the `Authorization: Bearer` header, the client address
//! (for discovery), and the admin-token guard of the administrative endpoints.

use std::net::SocketAddr;

use arbiter_pdp::identity::{AdminCaller, now_us};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, header, request::Parts};

use crate::error::ApiError;
use crate::{AppState, access_log};

/// Longest `Authorization` value accepted (a JWT is bounded at 16 KiB).
const MAX_AUTHORIZATION: usize = 16 * 1024 + 16;

/// The bearer credential of a request: `None` without an `Authorization` header, an error
/// (401) for any other scheme or a malformed value.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(unauthenticated("more than one `Authorization` header"));
    }
    if value.len() > MAX_AUTHORIZATION {
        return Err(unauthenticated("the `Authorization` header is too long"));
    }
    let text = value
        .to_str()
        .map_err(|_| unauthenticated("the `Authorization` header is not visible ASCII"))?;
    let (scheme, credential) = text
        .split_once(' ')
        .ok_or_else(|| unauthenticated("expected `Authorization: Bearer <credential>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(
            "only the `Bearer` scheme is accepted in `Authorization`",
        ));
    }
    let credential = credential.trim();
    if credential.is_empty() || credential.contains(' ') {
        return Err(unauthenticated(
            "the bearer credential is empty or malformed",
        ));
    }
    Ok(Some(credential))
}

/// A 401 answer (with `WWW-Authenticate: Bearer`, added by [`ApiError`]).
pub fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// The client's address, when the server was started with connection info.
pub fn client_address(parts_extensions: &axum::http::Extensions) -> String {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default()
}

/// The client address of a request, from its parts.
pub fn client_address_of(parts: &Parts) -> String {
    client_address(&parts.extensions)
}

/// What an admin endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read access: administrators and auditors.
    Read,
    /// Changes: administrators only.
    Write,
}

/// Checks the admin token of a request: 401 without a valid token, 403 when its role is
/// not enough.
///
/// Without an `Authorization` header, the console's session cookie stands in for the token
/// (see [`crate::console`]): then a request that is not GET/HEAD/OPTIONS must also carry
/// the session's CSRF token (`X-Arbiter-CSRF`), else 403 `csrf_token_missing_or_wrong`.
pub async fn require_admin(
    state: &AppState,
    headers: &HeaderMap,
    need: Need,
) -> Result<AdminCaller, ApiError> {
    let Some(identity) = state.pdp.identity() else {
        return Err(ApiError::identity_disabled());
    };
    let presented = bearer(headers).inspect_err(|_| access_log::note_refused(None))?;
    if presented.is_none()
        && let Some(cookie) = crate::console::cookie_auth()
    {
        return crate::console::admin_by_cookie(state, cookie, need).await;
    }
    let admin = identity
        .authenticate_admin_async(presented, now_us())
        .await
        .map_err(|_| {
            match presented {
                Some(_) => access_log::note_refused(None),
                None => access_log::note_caller(&arbiter_pdp::Caller::Anonymous),
            }
            unauthenticated("a valid admin token is required (`Authorization: Bearer arbadm_…`)")
        })?;
    access_log::note_admin(&admin);
    if need == Need::Write && admin.role != "administrator" {
        return Err(role_refused(&admin.role));
    }
    Ok(admin)
}

/// 403: `role` may only read.
pub(crate) fn role_refused(role: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("the `{role}` role may not change anything; an administrator token is required"),
    )
}
