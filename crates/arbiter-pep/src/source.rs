//! Where an enforcement point's decisions come from: the decision-source settings
//! (`--pdp URL`, or `--policies DIR` with `--data DIR`) and the [`Source`] they open.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbiter_pdp::local::{LocalConfig, open_local};
use arbiter_pdp::{LogMode, Pdp, RecorderSettings};

use crate::{Decider, LocalDecider, RemoteDecider, SourceError};

/// Durability of an embedded decision point's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LocalLogMode {
    /// No decision is acted on until its record is on disk.
    #[default]
    Sync,
    /// Records are written in the background (a crash may lose the last ones).
    Async,
}

/// The decision-source settings.
#[derive(Debug, Clone, Default)]
pub struct SourceConfig {
    /// Ask this decision point (a running `arbiter serve`).
    pub pdp: Option<String>,
    /// Decide in this process with the policies in this directory.
    pub policies: Option<PathBuf>,
    /// The agent registry and the decision log of an embedded decision point.
    pub data: PathBuf,
    /// External token issuers accepted as agent credentials (embedded).
    pub jwt_issuers: Option<PathBuf>,
    pub decision_log: LocalLogMode,
    /// Context paths redacted in decision records (embedded).
    pub redact: Vec<String>,
    /// Where the agent registry (and the MCP gateway's tool pins) are; `None`: `arbiter.db`
    /// in `data`.
    pub store: Option<arbiter_store::Location>,
}

/// How long the source lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A long-running enforcement point: the policies are watched (changes apply live) and
    /// credentials' last-used times are written in the background. Open inside the runtime.
    Serving,
    /// One decision and exit (`arbiter exec`): nothing runs in the background; [`Source::close`]
    /// writes what is pending.
    Once,
}

/// The decision-source flags, for an enforcement point's command line.
#[cfg(feature = "clap")]
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Ask this decision point (a running `arbiter serve`), e.g. `http://127.0.0.1:8180`.
    /// Exclusive with `--policies`.
    #[arg(long, env = "ARBITER_PDP", value_name = "URL")]
    pub pdp: Option<String>,

    /// Decide in this process with the policies in DIR (watched: changes apply live),
    /// recording in `--data`'s decision log (which must not be open in a running
    /// `arbiter serve`: use `--pdp` then). Exclusive with `--pdp`.
    #[arg(long, env = "ARBITER_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,

    /// Data directory: the agent registry and the decision log (with `--policies`); the MCP
    /// gateway also keeps its tool pins here (always).
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,

    /// External token issuers whose JWTs are accepted as agent credentials (with
    /// `--policies`; the same file as `arbiter serve --jwt-issuers`).
    #[arg(long, env = "ARBITER_JWT_ISSUERS", value_name = "FILE")]
    pub jwt_issuers: Option<PathBuf>,

    /// With `--policies`: `sync` (default) acts on no decision until its record is on disk;
    /// `async` writes records in the background (a crash may lose the last ones).
    #[arg(long, value_enum, default_value_t = LocalLogMode::Sync)]
    pub decision_log: LocalLogMode,

    /// Redact this context path in decision records (with `--policies`), e.g.
    /// `arguments.content`. Repeatable.
    #[arg(long = "redact", value_name = "PATH")]
    pub redact: Vec<String>,
}

#[cfg(feature = "clap")]
impl SourceArgs {
    /// The settings these flags give, with the registry at `store` (`None`: in `--data`).
    pub fn config(&self, store: Option<arbiter_store::Location>) -> SourceConfig {
        SourceConfig {
            pdp: self.pdp.clone(),
            policies: self.policies.clone(),
            data: self.data.clone(),
            jwt_issuers: self.jwt_issuers.clone(),
            decision_log: self.decision_log,
            redact: self.redact.clone(),
            store,
        }
    }
}

/// An open decision source; keeps the policy watcher and the last-used flusher alive.
pub struct Source {
    pub decider: Arc<dyn Decider>,
    /// The embedded decision point, with `--policies`.
    pub pdp: Option<Arc<Pdp>>,
    _watch: Option<arbiter_pdp::WatchHandle>,
    _flusher: Option<arbiter_pdp::identity::FlushHandle>,
}

impl SourceConfig {
    /// Which decision point these settings name; an empty value counts as not given.
    fn choice(&self) -> Result<Choice<'_>, SourceError> {
        let pdp = self.pdp.as_deref().filter(|u| !u.trim().is_empty());
        let policies = self.policies.as_ref().filter(|p| !p.as_os_str().is_empty());
        match (pdp, policies) {
            (Some(_), Some(_)) => Err(SourceError::Both),
            (None, None) => Err(SourceError::Missing),
            (Some(url), None) => {
                let url = url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(SourceError::BadUrl(url.to_owned()));
                }
                Ok(Choice::Remote(url))
            }
            (None, Some(policies)) => Ok(Choice::Local(policies)),
        }
    }

    /// Checks the settings without opening anything.
    pub fn check(&self) -> Result<(), SourceError> {
        self.choice().map(|_| ())
    }
}

enum Choice<'a> {
    Remote(&'a str),
    Local(&'a PathBuf),
}

impl Source {
    /// Opens the source; decisions are recorded under enforcement point `point`, and a remote
    /// decision point must answer within `timeout`.
    pub fn open(
        config: &SourceConfig,
        point: String,
        timeout: Duration,
        usage: Usage,
    ) -> Result<Self, SourceError> {
        match config.choice()? {
            Choice::Remote(url) => Ok(Self {
                decider: Arc::new(RemoteDecider::new(url, point, timeout)),
                pdp: None,
                _watch: None,
                _flusher: None,
            }),
            Choice::Local(policies) => {
                if usage == Usage::Once && !config.data.is_dir() {
                    return Err(SourceError::NoDataDir(config.data.display().to_string()));
                }
                let pdp = open_local(LocalConfig {
                    policies: policies.clone(),
                    data: config.data.clone(),
                    jwt_issuers: config.jwt_issuers.clone(),
                    recorder: RecorderSettings {
                        mode: match config.decision_log {
                            LocalLogMode::Sync => LogMode::Sync,
                            LocalLogMode::Async => LogMode::Async,
                        },
                        redact: config.redact.clone(),
                        ..RecorderSettings::default()
                    },
                    store: config.store.clone(),
                })?;
                let identity = pdp.identity().cloned().ok_or(SourceError::NoRegistry)?;
                let pdp = Arc::new(pdp);
                let (watch, flusher) = match usage {
                    Usage::Serving => (
                        pdp.watch(Duration::from_millis(1000)),
                        Some(arbiter_pdp::identity::spawn_flusher(
                            identity,
                            arbiter_pdp::identity::FLUSH_EVERY,
                        )),
                    ),
                    Usage::Once => (None, None),
                };
                Ok(Self {
                    decider: Arc::new(LocalDecider::new(Arc::clone(&pdp), point)),
                    pdp: Some(pdp),
                    _watch: watch,
                    _flusher: flusher,
                })
            }
        }
    }

    /// The agent registry's store, with `--policies`.
    pub fn store(&self) -> Option<Arc<dyn arbiter_store::Store>> {
        let pdp = self.pdp.as_ref()?;
        Some(Arc::clone(pdp.identity()?.store()))
    }

    /// Writes last-used times and closes the decision log cleanly; says what failed.
    pub fn close(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(pdp) = &self.pdp else {
            return problems;
        };
        if let Some(identity) = pdp.identity()
            && let Err(e) = identity.flush()
        {
            problems.push(format!("cannot write the credential's last-used time: {e}"));
        }
        if let Err(e) = pdp.close_recorder() {
            problems.push(e);
        }
        for p in &problems {
            tracing::warn!("{p}");
        }
        problems
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("embedded", &self.pdp.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pdp: Option<&str>, policies: Option<&str>) -> SourceConfig {
        SourceConfig {
            pdp: pdp.map(str::to_owned),
            policies: policies.map(PathBuf::from),
            ..SourceConfig::default()
        }
    }

    #[test]
    fn exactly_one_decision_point_is_named() {
        let check = |pdp, policies| config(pdp, policies).check().map_err(|e| e.to_string());
        assert_eq!(check(None, None), Err(SourceError::Missing.to_string()));
        assert_eq!(
            check(Some(""), Some("")),
            Err(SourceError::Missing.to_string())
        );
        assert_eq!(
            check(Some("http://a"), Some("p")),
            Err(SourceError::Both.to_string())
        );
        assert_eq!(
            check(Some("ftp://a"), None),
            Err(SourceError::BadUrl("ftp://a".into()).to_string())
        );
        assert_eq!(check(Some("https://a"), None), Ok(()));
        assert_eq!(check(None, Some("p")), Ok(()));
    }
}
