//! `GET /v1/decisions/stream`: new decision records as Server-Sent Events.
//!
//! Each record matching the filters (those of `GET /v1/decisions`) is sent as
//! `id: <leaf index>` / `event: decision` / `data: <the record's JSON, as one item of
//! /v1/decisions>`; a comment (`: ping`) goes every 15 s. The stream starts at the end of the
//! log (only decisions made after connecting), or after the leaf index given by `?after=` or
//! by the `Last-Event-ID` header an `EventSource` sends when it reconnects.
//!
//! A thread per stream follows the log's files ([`arbiter_log::Follower`], polled every
//! 200 ms) and hands events to the connection through a bounded channel (64 events: a slow
//! client slows its own thread, nothing else); it ends when the client goes away, when the
//! console session that opened the stream ends or its admin token is revoked or expires
//! (checked at each ping), or at a log read error (sent as
//! `event: error` first). At most 32 streams at once (503 beyond).

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arbiter_pdp::identity::now_us;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;

use crate::AppState;
use crate::agents::bad;
use crate::error::ApiError;

const MAX_STREAMS: usize = 32;
const PING_EVERY: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(200);
const BUFFERED_EVENTS: usize = 64;

struct Events {
    rx: mpsc::Receiver<Bytes>,
}

impl futures_core::Stream for Events {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|o| o.map(Ok))
    }
}

/// Decrements the stream count when the following thread ends.
struct Slot(Arc<crate::stats::Insight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn decisions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    crate::agents::answer(decisions_in(&state, &headers, params).await)
}

async fn decisions_in(
    state: &AppState,
    headers: &HeaderMap,
    params: std::collections::HashMap<String, String>,
) -> Result<Response, ApiError> {
    let recorder = crate::log::readable_log(state, headers).await?;
    let mut filter = arbiter_log::RecordFilter::default();
    let mut after: Option<u64> = None;
    for (key, value) in &params {
        if key == "after" {
            after =
                Some(value.parse().map_err(|_| {
                    bad("after", "`after` must be a leaf index (a record's `id:`)")
                })?);
            continue;
        }
        match crate::log::filter_param(&mut filter, key, value) {
            Some(r) => r?,
            None => {
                return Err(bad(
                    key,
                    format!(
                        "`{key}` is not a known parameter (after, agent, action, outcome, resource, since, until, policy_version, enforcement_point, layer)"
                    ),
                ));
            }
        }
    }
    if after.is_none()
        && let Some(v) = headers.get("last-event-id")
    {
        after = Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| bad("Last-Event-ID", "`Last-Event-ID` must be a leaf index"))?,
        );
    }
    let start = match after {
        Some(a) => a.saturating_add(1),
        None => recorder.log().tree_size(),
    };
    let insight = state.insight.clone();
    if insight.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        insight.streams.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("at most {MAX_STREAMS} decision streams at once; close one and retry"),
        ));
    }
    let slot = Slot(insight);
    // A stream opened with the console's cookie ends with its session.
    let session = match (
        crate::console::cookie_auth(),
        &state.console,
        state.pdp.identity(),
    ) {
        (
            Some(crate::console::CookieAuth::Live { key, session, .. }),
            Some(console),
            Some(identity),
        ) if crate::auth::bearer(headers).ok().flatten().is_none() => Some(Watched {
            console: console.clone(),
            key,
            identity: identity.clone(),
            session,
        }),
        _ => None,
    };
    let dir = recorder.log().dir().to_path_buf();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_EVENTS);
    let spawned = std::thread::Builder::new()
        .name("decision-stream".to_owned())
        .spawn(move || {
            let _slot = slot;
            follow(&dir, start, &filter, &tx, session);
        });
    if let Err(e) = spawned {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("cannot start the stream: {e}"),
        ));
    }
    let mut res = Body::from_stream(Events { rx }).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

fn follow(
    dir: &std::path::Path,
    start: u64,
    filter: &arbiter_log::RecordFilter,
    tx: &mpsc::Sender<Bytes>,
    session: Option<Watched>,
) {
    if tx
        .blocking_send(Bytes::from_static(b": connected\n\n"))
        .is_err()
    {
        return;
    }
    let mut follower = match arbiter_log::Follower::at_record(dir, start) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(error_event(&e.to_string()));
            return;
        }
    };
    let mut last_ping = Instant::now();
    loop {
        let mut closed = false;
        let polled = follower.poll(&mut |i, record| {
            if i < start || !filter.matches(&record) {
                return ControlFlow::Continue(());
            }
            let event = format!("id: {i}\nevent: decision\ndata: {}\n\n", json!(record));
            if tx.blocking_send(Bytes::from(event)).is_err() {
                closed = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if closed || tx.is_closed() {
            return;
        }
        if let Err(e) = polled {
            let _ = tx.blocking_send(error_event(&e.to_string()));
            return;
        }
        if last_ping.elapsed() >= PING_EVERY {
            last_ping = Instant::now();
            if let Some(watched) = &session
                && !watched.live()
            {
                let _ = tx.blocking_send(Bytes::from_static(
                    b"event: end\ndata: {\"reason\":\"the console session ended\"}\n\n",
                ));
                return;
            }
            if tx.blocking_send(Bytes::from_static(b": ping\n\n")).is_err() {
                return;
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The console session a stream was opened with, checked at each ping.
struct Watched {
    console: Arc<crate::console::Console>,
    key: crate::console::session::Key,
    identity: Arc<arbiter_pdp::Identity>,
    session: crate::console::session::Session,
}

impl Watched {
    /// Whether the session is still open and its admin token still valid (read from the
    /// registry; a token revoked or expired ends the session).
    fn live(&self) -> bool {
        let now = now_us();
        if self.console.sessions.get(&self.key, now, false).is_none() {
            return false;
        }
        let valid = match self
            .identity
            .store()
            .credential(&self.session.credential_id)
        {
            Ok(Some(c)) => {
                c.kind == arbiter_store::CredentialKind::AdminToken
                    && c.is_usable_at(now)
                    && c.role.as_deref() == Some(self.session.role.as_str())
            }
            Ok(None) => false,
            // The registry unreachable: keep streaming; the next request decides.
            Err(_) => true,
        };
        if !valid {
            self.console.sessions.end(&self.key);
        }
        valid
    }
}

fn error_event(message: &str) -> Bytes {
    Bytes::from(format!(
        "event: error\ndata: {}\n\n",
        json!({"code": "decision_log_unavailable", "message": message})
    ))
}
