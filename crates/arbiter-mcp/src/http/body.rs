//! Bodies: reading one within the frame limit, and telling a JSON answer from an event
//! stream by its `Content-Type`.

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};

use super::error_chain;

pub(super) const JSON: &str = "application/json";
pub(super) const EVENT_STREAM: &str = "text/event-stream";

pub(super) enum ReadError {
    TooLarge,
    Failed(String),
}

impl ReadError {
    pub(super) fn describe(&self, max: usize) -> String {
        match self {
            ReadError::TooLarge => {
                format!("the MCP server sent a message larger than {max} bytes")
            }
            ReadError::Failed(e) => format!("the MCP server's answer cannot be read: {e}"),
        }
    }
}

pub(super) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, ReadError>
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
pub(super) enum Kind {
    Json,
    EventStream,
    Other,
}

pub(super) fn body_kind(headers: &HeaderMap) -> Kind {
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
pub(super) fn has_media_type(value: Option<&HeaderValue>, media: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::http::test_support::hv;

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
}
