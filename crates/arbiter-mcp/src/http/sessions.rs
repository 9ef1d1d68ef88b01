//! The sessions of revisions 2025-06-18 and 2025-11-25: one [`Entry`] per server session id,
//! bound to (a SHA-256 of) the credential that initialized it, bounded in number, and
//! forgotten (and ended at the server) when idle.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::response::Response;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use sha2::{Digest as _, Sha256};

use crate::jsonrpc::code;
use crate::session::Session;

use super::handlers::Ctx;
use super::headers::session_id_text;
use super::responses::{rpc_error, unknown_session};
use super::upstream::Link;
use super::{Proxy, lock};

/// A session of the 2025 revisions, known by the server's session id.
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) session: Arc<Session>,
    pub(super) link: Arc<Link>,
    /// SHA-256 of the credential that initialized the session.
    key: [u8; 32],
    last_used: Mutex<Instant>,
    /// Streams open on this session (it does not expire while one is).
    streams: AtomicUsize,
}

impl Entry {
    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    fn expired(&self, idle: Duration) -> bool {
        self.streams.load(Ordering::SeqCst) == 0 && self.idle_for() > idle
    }
}

/// Counts an open stream on a session.
pub(super) struct StreamGuard(Arc<Entry>);

impl StreamGuard {
    pub(super) fn new(entry: Arc<Entry>) -> Self {
        entry.streams.fetch_add(1, Ordering::SeqCst);
        Self(entry)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

pub(super) fn credential_key(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
fn same_key(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Forgets idle sessions (ending them at the server).
pub(super) async fn sweep(proxy: Arc<Proxy>) {
    let every =
        (proxy.config.session_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired: Vec<Arc<Entry>> = {
            let mut sessions = lock(&proxy.sessions);
            let ids: Vec<String> = sessions
                .values()
                .filter(|e| e.expired(proxy.config.session_idle))
                .map(|e| e.id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for entry in expired {
            tracing::info!(session = %entry.session.id(), "forgot an idle MCP session");
            entry.link.end_detached();
        }
    }
}

impl Proxy {
    /// The live session `id`, if `key` initialized it.
    pub(super) fn lookup(&self, id: &str, key: &[u8; 32]) -> Result<Arc<Entry>, Response> {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get(id).cloned() else {
            return Err(unknown_session());
        };
        if !same_key(&entry.key, key) {
            tracing::warn!(session = %entry.session.id(), "refused a request on a session initialized with another credential");
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                code::INVALID_REQUEST,
                "this session was started with another credential; start a new session",
            ));
        }
        if entry.expired(self.config.session_idle) {
            sessions.remove(id);
            drop(sessions);
            entry.link.end_detached();
            return Err(unknown_session());
        }
        entry.touch();
        Ok(entry)
    }

    pub(super) fn full(&self) -> bool {
        lock(&self.sessions).len() >= self.config.max_sessions
    }

    pub(super) fn forget(&self, id: &str) {
        if let Some(entry) = lock(&self.sessions).remove(id) {
            tracing::info!(session = %entry.session.id(), "MCP session ended");
        }
    }

    /// Registers the session the server created in answer to `initialize`.
    pub(super) fn register(&self, server_id: &HeaderValue, ctx: &Ctx) -> Result<(), String> {
        let id = session_id_text(server_id)
            .ok_or("the MCP server gave a session id that is not visible ASCII")?;
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= self.config.max_sessions {
            return Err("too many sessions are open at the gateway; try again later".into());
        }
        if sessions.contains_key(&id) {
            return Err("the MCP server gave a session id that is already in use".into());
        }
        *lock(&ctx.link.session_id) = Some(server_id.clone());
        sessions.insert(
            id.clone(),
            Arc::new(Entry {
                id,
                session: Arc::clone(&ctx.session),
                link: Arc::clone(&ctx.link),
                key: ctx.key,
                last_used: Mutex::new(Instant::now()),
                streams: AtomicUsize::new(0),
            }),
        );
        tracing::info!(session = %ctx.session.id(), "MCP session started");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::http::test_support::hv;

    #[test]
    fn session_ids_and_keys() {
        assert_eq!(session_id_text(&hv("abc-123")).as_deref(), Some("abc-123"));
        assert_eq!(session_id_text(&hv("a b")), None);
        assert_eq!(session_id_text(&hv(&"x".repeat(300))), None);
        let a = credential_key("arb_one");
        assert!(same_key(&a, &credential_key("arb_one")));
        assert!(!same_key(&a, &credential_key("arb_two")));
    }
}
