//! `arbiter sql`: the PostgreSQL guard.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arbiter_mcp::{Decider, LocalDecider, RemoteDecider};
use arbiter_pdp::local::{LocalConfig, open_local};
use arbiter_pdp::{LogMode, RecorderSettings};
use arbiter_sql::proxy::{Proxy, ProxyConfig, Upstream};
use clap::{Args, Subcommand};

use crate::cli::LogFormat;

/// `arbiter sql …`
#[derive(Debug, Subcommand)]
pub enum SqlCommand {
    /// Sit between agents and a PostgreSQL server, deciding every statement: `arbiter sql
    /// proxy --upstream postgres://arbiter@127.0.0.1:5432/shop --listen 127.0.0.1:6432
    /// --policies policies`.
    Proxy(ProxyArgs),
}

/// Arguments of `arbiter sql proxy`.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Agents connect with their agent id as user name and their Arbiter key as \
password (sslmode=disable: TLS is not offered). The proxy connects to the database with the \
upstream URL's credentials (trust, cleartext password or SCRAM-SHA-256). Decisions are recorded under \
enforcement point `sql:<database-name>`."
)]
pub struct ProxyArgs {
    /// The database, as `postgres://USER[:PASSWORD]@HOST:PORT/DB`.
    #[arg(long, env = "ARBITER_SQL_UPSTREAM", value_name = "URL")]
    pub upstream: String,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6432")]
    pub listen: String,

    /// The database's name in policies (`Table::"<NAME>.<schema>.<table>"`) and in the
    /// enforcement point `sql:<NAME>`; default: the upstream URL's database.
    #[arg(long, value_name = "NAME")]
    pub database_name: Option<String>,

    /// Ask this decision point (a running `arbiter serve`). Exclusive with `--policies`.
    #[arg(
        long,
        env = "ARBITER_PDP",
        value_name = "URL",
        conflicts_with = "policies"
    )]
    pub pdp: Option<String>,

    /// Decide in this process with the policies in DIR (watched), recording in `--data`.
    #[arg(long, env = "ARBITER_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,

    /// Data directory: the agent registry and the decision log (with `--policies`).
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,

    /// External token issuers whose JWTs are accepted as agent credentials (with
    /// `--policies`).
    #[arg(long, env = "ARBITER_JWT_ISSUERS", value_name = "FILE")]
    pub jwt_issuers: Option<PathBuf>,

    /// Time allowed for the decisions of one statement, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub decision_timeout_ms: u64,

    /// Largest protocol message accepted from either side, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message_bytes: usize,
}

pub fn run(cmd: SqlCommand, format: LogFormat, level: &str) -> anyhow::Result<ExitCode> {
    match cmd {
        SqlCommand::Proxy(args) => {
            super::serve::init_logging(format, level)?;
            proxy(args)
        }
    }
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !ok {
        anyhow::bail!("`--database-name` must be letters, digits, `_` or `-` (at most 63)");
    }
    Ok(())
}

fn proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let upstream = Upstream::parse(&args.upstream).map_err(anyhow::Error::msg)?;
    let mut config = ProxyConfig::new(upstream);
    if let Some(name) = &args.database_name {
        config.database_name = name.clone();
    }
    valid_name(&config.database_name)?;
    if args.max_message_bytes < 1024 {
        anyhow::bail!("`--max-message-bytes` must be at least 1024");
    }
    config.max_message_bytes = args.max_message_bytes;
    config.decision_timeout = Duration::from_millis(args.decision_timeout_ms.max(1));
    let point = format!("sql:{}", config.database_name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _guard = runtime.enter();
    let (decider, pdp, _watch, _flusher): (Arc<dyn Decider>, _, _, _) =
        match (&args.pdp, &args.policies) {
            (Some(url), None) => (
                Arc::new(RemoteDecider::new(url, point, config.decision_timeout)),
                None,
                None,
                None,
            ),
            (None, Some(policies)) => {
                let pdp = open_local(LocalConfig {
                    policies: policies.clone(),
                    data: args.data.clone(),
                    jwt_issuers: args.jwt_issuers.clone(),
                    recorder: RecorderSettings {
                        mode: LogMode::Sync,
                        ..RecorderSettings::default()
                    },
                })
                .map_err(anyhow::Error::msg)?;
                let identity = pdp
                    .identity()
                    .cloned()
                    .context("the agent registry is not open")?;
                let flusher =
                    arbiter_pdp::identity::spawn_flusher(identity, Duration::from_secs(1));
                let pdp = Arc::new(pdp);
                let watch = pdp.watch(Duration::from_millis(1000));
                let decider = LocalDecider::new(Arc::clone(&pdp), point);
                (Arc::new(decider), Some(pdp), watch, Some(flusher))
            }
            (None, None) => anyhow::bail!(
                "no decision point: give `--pdp URL` (a running `arbiter serve`) or `--policies \
                 DIR` (decide in this process)"
            ),
            (Some(_), Some(_)) => anyhow::bail!("`--pdp` and `--policies` are exclusive"),
        };
    let proxy = Proxy::new(config, decider);
    let listen = args.listen.clone();
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "sql proxy listening");
        tokio::select! {
            r = proxy.serve(listener) => r.context("the listener failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    if let Some(pdp) = &pdp {
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
    result?;
    Ok(ExitCode::SUCCESS)
}
