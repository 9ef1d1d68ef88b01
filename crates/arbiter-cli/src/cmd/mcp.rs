//! `arbiter mcp`: the MCP gateway and its tool pins.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arbiter_mcp::jsonrpc::FrameLimits;
use arbiter_mcp::stdio::{Ended, KEY_ENV};
use arbiter_mcp::{DenyAs, Gateway, GatewayConfig};
use arbiter_pdp::identity::now_us;
use arbiter_store::{Store, ToolPin};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::cli::LogFormat;

/// `arbiter mcp …`
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Sit between an MCP client and a stdio MCP server: `arbiter mcp stdio --server-name fs
    /// -- npx @modelcontextprotocol/server-filesystem /srv/docs`.
    Stdio(StdioArgs),
    /// A reverse proxy in front of a streamable-HTTP MCP server.
    Http(HttpArgs),
    /// List pinned tool definitions and changed tools awaiting approval.
    Pins(PinsArgs),
    /// Pin tool definitions ahead of time from a lock file (`arbiter mcp lock` writes one).
    Pin(PinArgs),
    /// Write the pins of a server as a lock file (review it, commit it, `arbiter mcp pin` it
    /// elsewhere).
    Lock(LockArgs),
    /// Approve the changed definition of a tool, unblocking it.
    ApproveTool(ApproveArgs),
    /// Forget a tool's pin: its next definition is pinned on first use.
    Unpin(UnpinArgs),
}

/// How a denied tool call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DenyAsArg {
    /// A tool result with `isError: true` (the model sees the reason and decision id).
    ToolResult,
    /// A JSON-RPC error, code -32001.
    Error,
}

/// Settings every gateway transport shares.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The server's name in policies: its tools are `Tool::"<NAME>/<tool>"` and decisions
    /// are recorded under enforcement point `mcp:<NAME>`. Letters, digits, `.`, `_`, `-`.
    #[arg(long, value_name = "NAME")]
    pub server_name: String,

    #[command(flatten)]
    pub source: arbiter_pep::SourceArgs,

    /// How a denied `tools/call` is answered.
    #[arg(long, value_enum, default_value_t = DenyAsArg::ToolResult)]
    pub deny_as: DenyAsArg,

    /// Time allowed for one decision, in milliseconds; past it the request is denied.
    #[arg(
        long,
        env = "ARBITER_MCP_DECISION_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 5000
    )]
    pub decision_timeout_ms: u64,

    /// Largest message accepted from either side, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Deepest nesting of arrays and objects accepted in a message.
    #[arg(long, value_name = "LEVELS", default_value_t = 64)]
    pub max_depth: usize,

    /// Where a person reviews an approval, with `{id}` for its id, e.g.
    /// `https://arbiter.example/approvals/{id}`. A call that needs an approval then also asks
    /// a client that declares URL-mode elicitation to open this link.
    #[arg(long, env = "ARBITER_APPROVAL_URL", value_name = "URL")]
    pub approval_url: Option<String>,
}

/// Arguments of `arbiter mcp stdio`.
#[derive(Debug, Args)]
#[command(
    override_usage = "arbiter mcp stdio --server-name NAME [--pdp URL | --policies DIR] [--data DIR] -- COMMAND [ARGS]...",
    after_long_help = "The agent's credential (an Arbiter key `arb_…` or an accepted JWT) is read \
from ARBITER_AGENT_KEY and removed from the server's environment. Logs go to stderr; stdout \
carries only MCP messages.

In an MCP client's configuration:
  {\"mcpServers\": {\"files\": {\"command\": \"arbiter\",
     \"args\": [\"mcp\", \"stdio\", \"--server-name\", \"fs\", \"--pdp\", \"http://127.0.0.1:8180\",
              \"--\", \"npx\", \"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv/docs\"],
     \"env\": {\"ARBITER_AGENT_KEY\": \"arb_…\"}}}}

Exit status: the server's, or 1 when the gateway could not start."
)]
pub struct StdioArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// The MCP server's command and arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 1..,
        required = true,
        value_name = "COMMAND [ARGS]"
    )]
    pub command: Vec<OsString>,
}

/// Arguments of `arbiter mcp http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// The upstream MCP endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    #[arg(long, value_name = "URL")]
    pub upstream: String,

    /// Address to listen on; the MCP endpoint is served at the upstream URL's path.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8190")]
    pub listen: String,

    /// A header sent on every upstream request (the upstream's own credential), e.g.
    /// `Authorization: Bearer …`. The agent's credential is never forwarded. Repeatable.
    #[arg(long = "upstream-header", value_name = "NAME: VALUE")]
    pub upstream_headers: Vec<String>,

    /// A browser origin allowed to call the gateway (requests with any other `Origin` are
    /// refused with 403; requests without one are accepted). Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Data directory holding the pins.
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct PinsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this server's pins.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The lock file (`{"server": NAME, "tools": {"<tool>": "sha256:…", …}}`).
    #[arg(long, value_name = "FILE")]
    pub lock: PathBuf,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_name = "NAME")]
    pub server_name: String,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_name = "NAME")]
    pub server_name: String,
    /// The tool whose changed definition is approved.
    #[arg(value_name = "TOOL")]
    pub tool: String,
    /// Approve only if the pending definition has this hash (what you reviewed with
    /// `arbiter mcp pins --json`).
    #[arg(long, value_name = "sha256:…")]
    pub hash: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnpinArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_name = "NAME")]
    pub server_name: String,
    #[arg(value_name = "TOOL")]
    pub tool: String,
}

pub fn run(cmd: McpCommand, format: LogFormat, level: &str) -> anyhow::Result<ExitCode> {
    match cmd {
        McpCommand::Stdio(args) => {
            super::serve::init_logging(format, level)?;
            run_stdio(args)
        }
        McpCommand::Http(args) => {
            super::serve::init_logging(format, level)?;
            run_http(args)
        }
        McpCommand::Pins(args) => pins(&args),
        McpCommand::Pin(args) => pin(&args),
        McpCommand::Lock(args) => lock(&args),
        McpCommand::ApproveTool(args) => approve(&args),
        McpCommand::Unpin(args) => unpin(&args),
    }
}

/// A running gateway and its decision source.
struct Opened {
    gateway: Arc<Gateway>,
    source: arbiter_pep::Source,
}

fn valid_server_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "`--server-name {name}`: use 1 to 64 letters, digits, `.`, `_` or `-` (it names the \
             server in policies, e.g. Tool::\"{name}/read_file\")"
        )
    }
}

/// Opens the decision source and the pins (inside the runtime: the watcher and flusher are
/// tasks).
fn open_gateway(args: &GatewayArgs) -> anyhow::Result<Opened> {
    valid_server_name(&args.server_name)?;
    if args.max_message_bytes == 0 || args.max_depth == 0 {
        anyhow::bail!("`--max-message-bytes` and `--max-depth` must be at least 1");
    }
    let mut config = GatewayConfig::new(args.server_name.clone());
    config.deny_as = match args.deny_as {
        DenyAsArg::ToolResult => DenyAs::ToolResult,
        DenyAsArg::Error => DenyAs::Error,
    };
    config.decision_timeout = Duration::from_millis(args.decision_timeout_ms.max(1));
    config.approval_url = args
        .approval_url
        .as_deref()
        .map(arbiter_mcp::ApprovalUrl::parse)
        .transpose()?;
    config.limits = FrameLimits {
        max_bytes: args.max_message_bytes,
        max_depth: args.max_depth,
    };
    let point = format!("mcp:{}", args.server_name);
    let source = arbiter_pep::Source::open(
        &args.source.config(crate::cmd::store::shared()),
        point,
        config.decision_timeout,
        arbiter_pep::Usage::Serving,
    )?;
    let pins: Arc<dyn Store> = match source.store() {
        Some(store) => store,
        None => open_store(&args.source.data)?,
    };
    Ok(Opened {
        gateway: Arc::new(Gateway::new(config, Arc::clone(&source.decider), pins)),
        source,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn close(opened: &Opened) {
    opened.source.close();
}

fn run_stdio(args: StdioArgs) -> anyhow::Result<ExitCode> {
    let credential = std::env::var(KEY_ENV).ok().filter(|k| !k.is_empty());
    if credential.is_none() {
        tracing::warn!(
            "{KEY_ENV} is not set: every decision will be a deny (no credential was presented)"
        );
    }
    // The session the agent runs in, when its launcher names one; else this process.
    let session = arbiter_pep::session_from_env().map_err(anyhow::Error::msg)?;
    let rt = runtime()?;
    let ended = rt.block_on(async {
        let opened = open_gateway(&args.gateway)?;
        let gateway = Arc::clone(&opened.gateway);
        // Pipes (how MCP clients start servers) are driven by the event loop; anything else
        // (a terminal, a file) through tokio's blocking standard streams.
        let ended = match client_pipes() {
            Some((input, output)) => {
                arbiter_mcp::stdio::run(gateway, credential, session, &args.command, input, output)
                    .await
            }
            None => {
                arbiter_mcp::stdio::run(
                    gateway,
                    credential,
                    session,
                    &args.command,
                    tokio::io::stdin(),
                    tokio::io::stdout(),
                )
                .await
            }
        }
        .map_err(anyhow::Error::msg);
        close(&opened);
        ended
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    let code = match ended {
        Ended::ClientClosed(code) => code.unwrap_or(0),
        Ended::ServerExited(code) => {
            tracing::warn!(status = ?code, "the MCP server exited");
            code.unwrap_or(1)
        }
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Standard input and output as non-blocking pipes, when both are pipes.
fn client_pipes() -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd as _;
    let input = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let input = tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(input)).ok()?;
    let output = tokio::net::unix::pipe::Sender::from_file(std::fs::File::from(output)).ok()?;
    Some((input, output))
}

fn run_http(args: HttpArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let opened = open_gateway(&args.gateway)?;
        let settings = arbiter_mcp::http::HttpSettings {
            listen: args.listen.clone(),
            upstream: args.upstream.clone(),
            upstream_headers: args.upstream_headers.clone(),
            allow_origins: args.allow_origins.clone(),
            ..arbiter_mcp::http::HttpSettings::default()
        };
        let served = arbiter_mcp::http::serve(Arc::clone(&opened.gateway), settings, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(anyhow::Error::msg);
        close(&opened);
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

// ---- pins ---------------------------------------------------------------------------------

fn open_store(data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    super::agent::open_store(data)
}

fn state(p: &ToolPin) -> &'static str {
    if p.is_changed() { "changed" } else { "pinned" }
}

fn pin_json(p: &ToolPin) -> Value {
    let parse = |d: &Option<String>| {
        d.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null)
    };
    json!({
        "server": p.server,
        "tool": p.tool,
        "state": state(p),
        "hash": p.hash,
        "pinned_at": arbiter_log::format_rfc3339_us(p.pinned_at_us),
        "pinned_by": p.pinned_by,
        "definition": parse(&p.definition),
        "pending_hash": p.observed_hash.as_ref().filter(|_| p.is_changed()),
        "pending_definition": if p.is_changed() { parse(&p.observed_definition) } else { Value::Null },
        "pending_since": p.observed_at_us.filter(|_| p.is_changed()).map(arbiter_log::format_rfc3339_us),
    })
}

fn pins(args: &PinsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.data)?;
    let pins = store.list_tool_pins(args.server_name.as_deref())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let all: Vec<Value> = pins.iter().map(pin_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    } else if pins.is_empty() {
        writeln!(out, "no tool pins")?;
    } else {
        writeln!(out, "{:<16} {:<32} {:<8} HASH", "SERVER", "TOOL", "STATE")?;
        for p in &pins {
            writeln!(
                out,
                "{:<16} {:<32} {:<8} {}",
                p.server,
                p.tool,
                state(p),
                p.hash
            )?;
            if let Some(h) = p.observed_hash.as_ref().filter(|_| p.is_changed()) {
                // The commands name the data directory these pins came from, so that they
                // act on the same pins wherever they are run.
                let data = arbiter_pep::shell_word(&args.store.data.to_string_lossy());
                writeln!(
                    out,
                    "{:<16} {:<32} {:<8} {h}  (review: arbiter mcp pins --json --data {data}; \
                     approve: arbiter mcp approve-tool --data {data} --server-name {} {} --hash {h})",
                    "",
                    "",
                    "pending",
                    arbiter_pep::shell_word(&p.server),
                    arbiter_pep::shell_word(&p.tool)
                )?;
            }
        }
    }
    let changed = pins.iter().any(ToolPin::is_changed);
    Ok(if changed {
        ExitCode::from(super::agent::EXIT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}

fn pin(args: &PinArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(&args.lock)
        .with_context(|| format!("cannot read `{}`", args.lock.display()))?;
    let doc = arbiter_types::strict::parse_strict_object(&text, 8)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", args.lock.display()))?;
    let server = doc
        .get("server")
        .and_then(Value::as_str)
        .with_context(|| format!("`{}`: `server` must be a string", args.lock.display()))?;
    valid_server_name(server)?;
    let tools = doc
        .get("tools")
        .and_then(Value::as_object)
        .with_context(|| {
            format!(
                "`{}`: `tools` must be an object of tool name → \"sha256:…\"",
                args.lock.display()
            )
        })?;
    let mut pairs = Vec::with_capacity(tools.len());
    for (tool, hash) in tools {
        let hash = hash.as_str().with_context(|| {
            format!(
                "`{}`: the hash of `{tool}` must be a string",
                args.lock.display()
            )
        })?;
        pairs.push((tool.clone(), hash.to_owned()));
    }
    let store = open_store(&args.store.data)?;
    let changed = store.pin_tools(server, &pairs, &super::agent::cli_actor(), now_us())?;
    println!(
        "pinned {} tool(s) of `{server}` from `{}` ({changed} new or changed)",
        pairs.len(),
        args.lock.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn lock(args: &LockArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.data)?;
    let pins = store.list_tool_pins(Some(&args.server_name))?;
    let tools: Map<String, Value> = pins
        .iter()
        .map(|p| (p.tool.clone(), Value::from(p.hash.as_str())))
        .collect();
    let doc = json!({"server": args.server_name, "tools": tools});
    let text = format!("{}\n", serde_json::to_string_pretty(&doc)?);
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?,
        None => print!("{text}"),
    }
    if pins.iter().any(ToolPin::is_changed) {
        eprintln!(
            "warning: some tools of `{}` have changed definitions awaiting approval; the lock \
             file holds the approved ones",
            args.server_name
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn approve(args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.data)?;
    let pin = store.approve_tool(
        &args.server_name,
        &args.tool,
        args.hash.as_deref(),
        &super::agent::cli_actor(),
        now_us(),
    )?;
    println!(
        "approved `{}/{}`: its pinned definition is now {}",
        pin.server, pin.tool, pin.hash
    );
    Ok(ExitCode::SUCCESS)
}

fn unpin(args: &UnpinArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.data)?;
    store.unpin_tool(
        &args.server_name,
        &args.tool,
        &super::agent::cli_actor(),
        now_us(),
    )?;
    println!(
        "unpinned `{}/{}`: its next definition is pinned on first use",
        args.server_name, args.tool
    );
    Ok(ExitCode::SUCCESS)
}
