//! `GET /v1/gap?since=…`: the gap map (schema `arbiter.gap/1`, docs/gap.md) for
//! administrators and auditors, built from this node's decision log, the registry and the
//! sources configured with `arbiter serve --gap-…` ([`crate::ServerConfig::gap`]). Every
//! request reads them again (a configuration file changed since is seen at once), on the
//! blocking pool.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::{Need, require_admin};
use crate::error::ApiError;

/// `since`: RFC 3339, Unix seconds, or a time ago (`90s`, `15m`, `1h`, `7d`); default 30
/// days ago.
fn since_param(value: &str, now_us: i64) -> Option<i64> {
    let t = value.trim();
    let unit: i64 = match t.as_bytes().last() {
        Some(b's') => 1,
        Some(b'm') => 60,
        Some(b'h') => 3_600,
        Some(b'd') => 86_400,
        _ => return arbiter_log::parse_time(t).ok(),
    };
    let digits = t.get(..t.len() - 1)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return arbiter_log::parse_time(t).ok();
    }
    let ago = digits
        .parse::<i64>()
        .ok()?
        .checked_mul(unit)?
        .checked_mul(1_000_000)?;
    Some(now_us.saturating_sub(ago))
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = require_admin(&state, &headers, Need::Read).await {
        return e.into_response();
    }
    let now_us = arbiter_log::record::now_us();
    let mut since_us = now_us.saturating_sub(arbiter_gap::DEFAULT_SINCE_US);
    for (key, value) in &params {
        match key.as_str() {
            "since" => match since_param(value, now_us) {
                Some(t) => since_us = t,
                None => {
                    return ApiError {
                        status: StatusCode::BAD_REQUEST,
                        code: "invalid_request",
                        message: "`since` must be RFC 3339 (2025-01-02T03:04:05Z), Unix seconds \
                                  or a time ago (`15m`, `1h`, `7d`)"
                            .to_owned(),
                        field: Some("since".to_owned()),
                    }
                    .into_response();
                }
            },
            other => {
                return ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_request",
                    message: format!(
                        "`{}` is not a known parameter (since)",
                        other.chars().take(64).collect::<String>()
                    ),
                    field: Some(other.chars().take(64).collect()),
                }
                .into_response();
            }
        }
    }
    let pdp = state.pdp.clone();
    let sources = state.config.gap.clone();
    let built = tokio::task::spawn_blocking(move || {
        let store = pdp.identity().map(|i| i.store().clone());
        let log_dir = pdp.recorder().map(|r| r.log().dir().to_path_buf());
        let inputs = arbiter_gap::Inputs {
            log_dir: log_dir.as_deref(),
            store: store.as_deref(),
            since_us,
            now_us,
        };
        arbiter_gap::build(&sources, &inputs)
    })
    .await;
    match built {
        Ok(Ok(map)) => Json(map).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the gap map could not be built");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gap_source_unavailable",
                e.to_string(),
            )
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "the gap map task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the gap map could not be built",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn since_reads_times_and_times_ago() {
        let now = 1_000_000_000_000_000;
        assert_eq!(since_param("1h", now), Some(now - 3_600_000_000));
        assert_eq!(since_param("7d", now), Some(now - 7 * 86_400_000_000));
        assert_eq!(since_param("1735787045", now), Some(1_735_787_045_000_000));
        assert!(since_param("2025-01-02T03:04:05Z", now).is_some());
        assert_eq!(since_param("soon", now), None);
        assert_eq!(since_param("99999999999999999999d", now), None);
    }
}
