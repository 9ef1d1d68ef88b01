//! The one mapping from what went wrong to what an HTTP client sees.
//!
//! Clients get a status, a stable machine-readable `code`, a message that names the field at
//! fault, and never an internal type name or a stack trace.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use arbiter_types::{LimitError, RequestError};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable code: `invalid_request`, `invalid_json`, `unsupported_media_type`,
    /// `payload_too_large`, `too_deep`, `empty_body`, `not_found`, `method_not_allowed`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
}

impl ApiError {
    /// The server was started without an agent registry, so nothing that needs one (agent
    /// credentials, admin tokens, forward-auth) can be served.
    pub fn identity_disabled() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_disabled",
            "this server has no agent registry (it was started without a data directory)",
        )
    }

    /// The server keeps no decision log, so nothing read from one can be served.
    pub fn no_decision_log() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "decision_log_disabled",
            "this server does not keep a decision log (`--decision-log off`)",
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let (status, code) = match &e {
            LimitError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            LimitError::TooDeep { .. } => (StatusCode::BAD_REQUEST, "too_deep"),
            LimitError::Empty => (StatusCode::BAD_REQUEST, "empty_body"),
            LimitError::Syntax(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            LimitError::NotAnObject(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(field), Some(obj)) = (self.field, error.as_object_mut()) {
            obj.insert("field".into(), json!(field));
        }
        let body = json!({ "error": error }).to_string();
        let mut res = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"arbiter\""),
            );
        }
        res
    }
}
