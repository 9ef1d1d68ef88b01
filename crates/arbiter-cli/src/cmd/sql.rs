//! `arbiter sql`: the PostgreSQL guard.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
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

    #[command(flatten)]
    pub source: arbiter_pep::SourceArgs,

    /// Time allowed for the decisions of one statement, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub decision_timeout_ms: u64,

    /// A column whose inserted values are added up for budgets: an `INSERT … (COLUMN, …)
    /// VALUES …` of numbers puts their sum in the insert question's `context.totals.COLUMN`
    /// (see docs/runtime-context.md). Repeat for several columns.
    #[arg(long = "sum", value_name = "COLUMN")]
    pub sum: Vec<String>,

    /// Largest protocol message accepted from either side, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message_bytes: usize,

    /// Send every statement only once its decision's record is durable. By default a plain
    /// read (one `SELECT` of tables that locks nothing and calls only side-effect-free
    /// built-in functions) is sent as soon as it is decided, and its results are held back
    /// until its record is durable, discarded if the record fails. Use this when views call
    /// functions that change data.
    #[arg(long)]
    pub strict_order: bool,

    /// Threads that relay and decide statements. Default: half the machine's cores, at least
    /// one (the database and its clients often share the machine; on two cores one thread
    /// relays more statements a second than two, which trade the connections back and forth).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
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
    let upstream = Upstream::parse(&args.upstream)?;
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
    for column in &args.sum {
        if column.is_empty() || column.len() > 63 || column.contains('.') {
            anyhow::bail!(
                "`--sum {column}` must be one column's name as PostgreSQL spells it (lower case unless quoted, at most 63 bytes, no table prefix)"
            );
        }
    }
    config.summed_columns = args.sum.clone();
    config.strict_order = args.strict_order;
    let point = format!("sql:{}", config.database_name);
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _guard = runtime.enter();
    let source = arbiter_pep::Source::open(
        &args.source.config(crate::cmd::store::shared()),
        point,
        config.decision_timeout,
        arbiter_pep::Usage::Serving,
    )?;
    let proxy = Proxy::new(config, Arc::clone(&source.decider));
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
    source.close();
    result?;
    Ok(ExitCode::SUCCESS)
}
