//! Where an enforcement point's decisions come from (`--pdp URL` or `--policies DIR`), shared
//! by `arbiter mcp` and `arbiter sql`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arbiter_mcp::{Decider, LocalDecider, RemoteDecider};
use arbiter_pdp::local::{LocalConfig, open_local};
use arbiter_pdp::{LogMode, Pdp, RecorderSettings};
use clap::{Args, ValueEnum};

/// Durability of an embedded decision point's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LocalLogMode {
    Sync,
    Async,
}

/// The decision source flags.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Ask this decision point (a running `arbiter serve`), e.g. `http://127.0.0.1:8180`.
    /// Exclusive with `--policies`.
    #[arg(
        long,
        env = "ARBITER_PDP",
        value_name = "URL",
        conflicts_with = "policies"
    )]
    pub pdp: Option<String>,

    /// Decide in this process with the policies in DIR (watched: changes apply live),
    /// recording in `--data`'s decision log (which must not be open in a running
    /// `arbiter serve`: use `--pdp` then).
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

/// An open decision source; keeps the policy watcher and the last-used flusher alive.
pub struct Source {
    pub decider: Arc<dyn Decider>,
    /// The embedded decision point, with `--policies`.
    pub pdp: Option<Arc<Pdp>>,
    _watch: Option<arbiter_pdp::WatchHandle>,
    _flusher: Option<arbiter_pdp::identity::FlushHandle>,
}

impl Source {
    /// Opens the source; decisions are recorded under enforcement point `point`. Call inside
    /// the runtime (the watcher and the flusher are tasks).
    pub fn open(args: &SourceArgs, point: String, timeout: Duration) -> anyhow::Result<Self> {
        match (&args.pdp, &args.policies) {
            (Some(url), None) => Ok(Self {
                decider: Arc::new(RemoteDecider::new(url, point, timeout)),
                pdp: None,
                _watch: None,
                _flusher: None,
            }),
            (None, Some(policies)) => {
                let pdp = open_local(LocalConfig {
                    policies: policies.clone(),
                    data: args.data.clone(),
                    jwt_issuers: args.jwt_issuers.clone(),
                    recorder: RecorderSettings {
                        mode: match args.decision_log {
                            LocalLogMode::Sync => LogMode::Sync,
                            LocalLogMode::Async => LogMode::Async,
                        },
                        redact: args.redact.clone(),
                        ..RecorderSettings::default()
                    },
                })
                .map_err(anyhow::Error::msg)?;
                let identity = pdp
                    .identity()
                    .cloned()
                    .context("the agent registry is not open")?;
                let flusher = arbiter_pdp::identity::spawn_flusher(
                    identity,
                    arbiter_pdp::identity::FLUSH_EVERY,
                );
                let pdp = Arc::new(pdp);
                let watch = pdp.watch(Duration::from_millis(1000));
                Ok(Self {
                    decider: Arc::new(LocalDecider::new(Arc::clone(&pdp), point)),
                    pdp: Some(pdp),
                    _watch: watch,
                    _flusher: Some(flusher),
                })
            }
            (None, None) => anyhow::bail!(
                "no decision point: give `--pdp URL` (a running `arbiter serve`) or `--policies \
                 DIR` (decide in this process)"
            ),
            (Some(_), Some(_)) => anyhow::bail!("`--pdp` and `--policies` are exclusive"),
        }
    }

    /// The agent registry's store, with `--policies`.
    pub fn store(&self) -> Option<Arc<dyn arbiter_store::Store>> {
        let pdp = self.pdp.as_ref()?;
        Some(Arc::clone(pdp.identity()?.store()))
    }

    /// Writes last-used times and closes the decision log cleanly.
    pub fn close(&self) {
        let Some(pdp) = &self.pdp else { return };
        if let Some(identity) = pdp.identity()
            && let Err(e) = identity.flush()
        {
            tracing::warn!(error = %e, "cannot write the credential's last-used time");
        }
        if let Some(recorder) = pdp.recorder()
            && let Err(e) = recorder.log().shutdown()
        {
            tracing::warn!(error = %e, "the decision log did not close cleanly");
        }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("embedded", &self.pdp.is_some())
            .finish_non_exhaustive()
    }
}
