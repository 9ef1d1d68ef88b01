//! `arbiter gap`: the gap map, agent × layer (see `arbiter_gap` and docs/gap.md). Exit 0
//! when no cell is coarse or ungoverned, 4 when one is (for CI and cron), 1 on an error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use arbiter_gap::{Inputs, McpConfigSource, Sources};
use clap::{Args, ValueEnum};

use crate::out::print;

/// How the map is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GapFormat {
    /// An aligned matrix and the findings with their next steps.
    Table,
    /// The `arbiter.gap/1` JSON document (docs/gap.md).
    Json,
    /// One self-contained HTML page.
    Html,
}

#[derive(Debug, Args)]
pub struct GapArgs {
    /// Read decisions (and discovered identities) from this time on: RFC 3339, Unix seconds,
    /// or a time ago (`15m`, `1h`, `7d`). Default: 30 days ago.
    #[arg(long, value_name = "TIME", value_parser = crate::cmd::log::time_arg)]
    pub since: Option<i64>,

    /// Output format (default: `table` on a terminal, `json` otherwise).
    #[arg(long, value_enum)]
    pub format: Option<GapFormat>,

    /// Data directory of `arbiter serve` (its decision log and registry).
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,

    /// An MCP client configuration file (Claude Desktop, Cursor, VS Code, any `mcpServers`
    /// JSON); `FILE=AGENT` attributes it to an agent (repeatable).
    #[arg(long = "mcp-config", value_name = "FILE[=AGENT]")]
    pub mcp_configs: Vec<String>,

    /// A PostgreSQL database whose `pg_stat_activity` shows connections that bypass the SQL
    /// guard (`postgres://USER[:PASSWORD]@HOST:PORT/DB`; repeatable).
    #[arg(long = "postgres", value_name = "DSN")]
    pub postgres: Vec<String>,

    /// An access log (nginx combined or JSON lines) showing LLM / API provider traffic that
    /// bypasses forward-auth (repeatable).
    #[arg(long = "access-log", value_name = "FILE")]
    pub access_logs: Vec<PathBuf>,

    /// Provider hosts for `--access-log` (`pattern [provider]` per line) instead of the
    /// built-in list of LLM provider APIs.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,

    /// The decision point's URL, used in the commands the next steps suggest.
    #[arg(long, value_name = "URL")]
    pub pdp: Option<String>,
}

/// The [`Sources`] of `--mcp-config`, `--postgres`, `--access-log` and `--hosts` (shared
/// with `arbiter serve --gap-…`).
pub fn sources(
    mcp_configs: &[String],
    postgres: &[String],
    access_logs: &[PathBuf],
    hosts: Option<PathBuf>,
    pdp_url: Option<String>,
) -> anyhow::Result<Sources> {
    let mcp_configs = mcp_configs
        .iter()
        .map(|t| McpConfigSource::parse(t).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    Ok(Sources {
        mcp_configs,
        postgres: postgres.to_vec(),
        access_logs: access_logs.to_vec(),
        hosts,
        pdp_url,
    })
}

pub fn run(args: GapArgs) -> anyhow::Result<ExitCode> {
    let sources = sources(
        &args.mcp_configs,
        &args.postgres,
        &args.access_logs,
        args.hosts.clone(),
        args.pdp.clone(),
    )?;
    let now_us = arbiter_pdp::identity::now_us();
    let since_us = args
        .since
        .unwrap_or_else(|| now_us.saturating_sub(arbiter_gap::DEFAULT_SINCE_US));
    let store = if crate::cmd::store::exists(&args.data) {
        Some(crate::cmd::store::open(&args.data)?)
    } else {
        None
    };
    let log_dir = args.data.join("log");
    let inputs = Inputs {
        log_dir: log_dir.is_dir().then_some(log_dir.as_path()),
        store: store.as_deref(),
        since_us,
        now_us,
    };
    let map = arbiter_gap::build(&sources, &inputs)?;
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        GapFormat::Table
    } else {
        GapFormat::Json
    });
    match format {
        GapFormat::Table => print(&arbiter_gap::render::table(&map))?,
        GapFormat::Json => {
            print(&serde_json::to_string_pretty(&map).context("cannot encode the gap map")?)?;
        }
        GapFormat::Html => print(&arbiter_gap::render::html(&map))?,
    }
    Ok(if map.has_gaps() {
        ExitCode::from(arbiter_gap::EXIT_GAPS)
    } else {
        ExitCode::SUCCESS
    })
}
