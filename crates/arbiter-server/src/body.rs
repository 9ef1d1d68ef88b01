//! Reading a JSON request body: content type, size and depth are checked before parsing.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use arbiter_types::json::parse_bounded;
use arbiter_types::{JsonLimits, LimitError};

use crate::error::ApiError;

/// Reads and parses a JSON object body under `limits`.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limits: JsonLimits,
) -> Result<Map<String, Value>, ApiError> {
    check_content_type(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&len| len > limits.max_bytes)
    {
        return Err(LimitError::TooLarge {
            size: len,
            limit: limits.max_bytes,
        }
        .into());
    }
    let bytes = match Limited::new(body, limits.max_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is larger than the limit of {} bytes",
                    limits.max_bytes
                ),
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body could not be read: {e}"),
            ));
        }
    };
    Ok(parse_bounded(&bytes, limits)?)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let wrong = |got: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_media_type",
            format!("`Content-Type` must be `application/json`, not `{got}`"),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_media_type",
            "`Content-Type` is missing; send `application/json`",
        ));
    };
    let text = value.to_str().map_err(|_| wrong("(not text)"))?;
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(wrong(text))
    }
}
