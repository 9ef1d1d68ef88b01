//! The HTTP answers the gateway builds itself: an empty status, a JSON-RPC message or error,
//! an event stream, and the session's own answers to a request it refused.

use axum::body::Body;
use axum::response::Response;
use hyper::StatusCode;
use hyper::header::{self, HeaderName, HeaderValue};

use crate::jsonrpc::{Id, Message, code};

use super::body::{EVENT_STREAM, JSON};

/// Answers a request the session answered itself (a refusal), or accepts a notification.
pub(super) fn direct_answer(messages: Vec<Message>, stateless: bool) -> Response {
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

pub(super) fn unknown_session() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        None,
        code::INVALID_REQUEST,
        "this session is not known (it ended or expired); start a new one with `initialize`",
    )
}

pub(super) fn status_only(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

pub(super) fn message_response(status: StatusCode, message: &Message) -> Response {
    let mut r = Response::new(Body::from(message.to_bytes()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    r
}

pub(super) fn rpc_error(
    status: StatusCode,
    id: Option<Id>,
    code: i64,
    message: impl Into<String>,
) -> Response {
    message_response(status, &Message::error(id, code, message, None))
}

pub(super) fn sse_response(body: Body) -> Response {
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
