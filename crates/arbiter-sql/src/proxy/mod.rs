//! The PostgreSQL guard: a protocol v3 proxy that decides every statement an agent sends
//! before the database sees it.
//!
//! The agent connects with its agent id as user name and its Arbiter credential as password
//! (asked in clear text: run the proxy on a trusted network or loopback, TLS is refused).
//! The credential is checked at startup where the decision point can tell
//! ([`Decider::authenticate`]) and presented with every decision, so a refused credential
//! reaches nothing. The proxy connects to the database with its own configured credentials.
//!
//! Every simple query (`Q`) and every `Parse` (`P`) is analyzed ([`crate::analyze`]) and
//! decided (see [`asks_for`]); a denied statement is answered with SQLSTATE 42501 and the
//! session stays usable. Denials are delivered in order with the database's own answers: the
//! proxy sends the database a `Sync` in place of the denied message and puts its
//! `ErrorResponse` just before the `ReadyForQuery` that answers it.
//!
//! The parts:
//!
//! - `config`: [`Upstream`], the database the proxy connects to, and [`ProxyConfig`].
//! - `session`: one agent's connection, from the startup phase to the end: every client
//!   message decided in order, the database's answers passed back with the denials in place.
//! - `decision`: what is asked about a piece of SQL ([`asks_for`]) and how the verdicts become
//!   an allow, a narrowed statement or a denial ([`Proxy::check`]).
//! - `database`: the proxy's own connection to the database (startup, authentication) and
//!   the cancel requests passed on to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arbiter_pep::Decider;
use tokio::net::TcpListener;

use crate::wire;
use crate::{Analysis, analyze};

mod config;
mod database;
mod decision;
mod session;

pub use config::{ProxyConfig, Upstream, UpstreamUrlError};
pub use database::{GUARD_APPLICATION_NAME, upstream_application_name};
pub use decision::{PSEUDO_SCHEMA, asks_for, asks_summing, reads_only};

/// A running proxy: its settings, decision source and the cancel keys it handed out.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    decider: Arc<dyn Decider>,
    /// Client-visible backend key → the database's.
    keys: Mutex<HashMap<(i32, i32), (i32, i32)>>,
    /// Analyses of recently seen texts, by exact text (see [`Proxy::analysis_of`]).
    analyses: Mutex<HashMap<String, Arc<Analysis>>>,
}

/// Texts longer than this are analyzed every time.
const MAX_CACHED_TEXT: usize = 8 * 1024;
/// Analyses kept; when full, the cache starts over.
const MAX_CACHED_ANALYSES: usize = 4096;

/// What an allowed statement becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `None`: send it as it is; `Some(text)`: send `text`, the statement narrowed to the rows
    /// the policies allow (see [`crate::rewrite`]).
    pub narrowed: Option<String>,
    /// The policy version that allowed it, when the decision point says.
    pub policy_version: Option<String>,
}

/// Why a statement is refused, as shown to the agent (in the words every enforcement point
/// uses), sent as an `insufficient_privilege` error.
pub use arbiter_pep::Denial;

trait ErrorBody {
    fn error_body(&self) -> Vec<u8>;
}

impl ErrorBody for Denial {
    /// `42501` (insufficient_privilege); `53400` (configuration_limit_exceeded) for a rate
    /// limit or a budget that frees up later.
    fn error_body(&self) -> Vec<u8> {
        let code = if self.retry_after_s.is_some() {
            "53400"
        } else {
            "42501"
        };
        wire::error_body("ERROR", code, &self.to_string())
    }
}

impl Proxy {
    pub fn new(config: ProxyConfig, decider: Arc<dyn Decider>) -> Arc<Self> {
        Arc::new(Self {
            config,
            decider,
            keys: Mutex::new(HashMap::new()),
            analyses: Mutex::new(HashMap::new()),
        })
    }

    /// The analysis of `sql`, from the cache when this exact text was analyzed before.
    ///
    /// The cache is keyed by the text itself, never by pg_query's fingerprint: the
    /// fingerprint leaves out constants (which the analysis reads, e.g. `set_config`'s
    /// setting name), the relation name behind an alias (`FROM secrets s` and `FROM open s`
    /// share one), schema names, and digit runs in relation names, so statements on
    /// different tables share a fingerprint and a cache keyed by it would decide one as the
    /// other.
    pub fn analysis_of(&self, sql: &str) -> Result<Arc<Analysis>, crate::AnalyzeError> {
        let cacheable = sql.len() <= MAX_CACHED_TEXT;
        if cacheable && let Some(hit) = self.analyses.lock().ok().and_then(|c| c.get(sql).cloned())
        {
            return Ok(hit);
        }
        let analysis = Arc::new(analyze(sql)?);
        if cacheable && let Ok(mut cache) = self.analyses.lock() {
            if cache.len() >= MAX_CACHED_ANALYSES {
                cache.clear();
            }
            cache.insert(sql.to_owned(), Arc::clone(&analysis));
        }
        Ok(analysis)
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let proxy = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = proxy.session(stream).await {
                    tracing::debug!(%peer, error = %e, "sql session ended with an error");
                }
            });
        }
    }
}

/// Binds `listen` and serves until the listener fails.
pub async fn run(proxy: Arc<Proxy>, listen: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(proxy.serve(listener));
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use arbiter_pep::{Ask, Verdict};

    use super::*;

    /// Takes no decision: these tests look at the analysis cache only.
    #[derive(Debug)]
    struct NoDecisions;

    impl Decider for NoDecisions {
        fn decide<'a>(
            &'a self,
            _credential: Option<&'a str>,
            _asks: Vec<Ask>,
        ) -> arbiter_pep::BoxFuture<'a, Result<Vec<Verdict>, arbiter_pep::DecideError>> {
            Box::pin(async {
                Err(arbiter_pep::DecideError::Internal(
                    "no decisions in this test".to_owned(),
                ))
            })
        }
    }

    #[test]
    fn analyses_are_cached_by_exact_text_only() {
        let upstream = Upstream::parse("postgres://u@127.0.0.1/db").unwrap();
        let proxy = Proxy::new(ProxyConfig::new(upstream), Arc::new(NoDecisions));
        let a = proxy.analysis_of("SELECT * FROM open o").unwrap();
        let b = proxy.analysis_of("SELECT * FROM open o").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Same fingerprint (the relation name behind an alias is not part of it), other table.
        let c = proxy.analysis_of("SELECT * FROM secrets o").unwrap();
        assert_eq!(a.fingerprint, c.fingerprint);
        assert_eq!(c.statements[0].tables[0].name, "secrets");
        // Long texts are not kept; errors are not kept.
        let long = format!("SELECT 1 {}", " ".repeat(MAX_CACHED_TEXT));
        let d = proxy.analysis_of(&long).unwrap();
        assert!(!Arc::ptr_eq(&d, &proxy.analysis_of(&long).unwrap()));
        assert!(proxy.analysis_of("SELEC").is_err());
    }
}
