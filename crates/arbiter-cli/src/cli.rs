//! Command-line definitions. Precedence for every setting: flag > environment > default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (policy engine: cedar-policy 4)"
);

/// Arbiter: runtime authorization for AI agents.
///
/// Every action an agent takes is checked against live Cedar policy by a decision point that
/// speaks the AuthZEN 1.0 API. Start with `arbiter policy init my-policies`, then
/// `arbiter serve --policies my-policies`.
#[derive(Debug, Parser)]
#[command(name = "arbiter", version, long_version = LONG_VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ARBITER_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `arbiter_pdp=debug`.
    #[arg(long, global = true, default_value = "info", env = "ARBITER_LOG")]
    pub log_level: String,

    /// Keep the agent registry, credentials, tool pins, approvals and policy versions in this
    /// PostgreSQL database (`postgres://user:password@host:5432/db`), shared by every node,
    /// instead of `arbiter.db` in the data directory. The decision log stays in the data
    /// directory: each node keeps its own.
    #[arg(
        long,
        global = true,
        env = "ARBITER_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<String>,

    /// With `--store`: how long a node keeps accepting the credentials it knows after it last
    /// heard from the database; past it, every credential check fails closed until the
    /// database is back (`500ms`, `5s`, `1m`).
    #[arg(
        long,
        global = true,
        env = "ARBITER_STORE_GRACE",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub store_grace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the decision point: the AuthZEN API, health, readiness and metrics over HTTP.
    Serve(ServeArgs),
    /// Decide one AuthZEN request locally (exit 0 allow, 2 deny, 1 error).
    Check(CheckArgs),
    /// Work with policy directories.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Inspect, verify and prove the decision log.
    #[command(subcommand)]
    Log(crate::cmd::log::LogCommand),
    /// The agent registry: agents, their keys, discovered identities.
    Agent(crate::cmd::agent::AgentArgs),
    /// Human approvals that `@require_approval` permits ask for: list, show, approve, deny.
    Approval(crate::cmd::approval::ApprovalArgs),
    /// Operator tokens (admin and PEP) and the audit trail.
    Admin(crate::cmd::agent::AdminArgs),
    /// Report sources calling LLM provider APIs that are not registered agents, from an
    /// access log (exit 4 when there are any).
    Discover(crate::cmd::agent::DiscoverArgs),
    /// The gap map: for each agent and layer (applications, infrastructure, data, AI,
    /// agents), what it reaches and whether Arbiter decides it at request time (exit 4 when a
    /// cell is coarse or ungoverned).
    Gap(crate::cmd::gap::GapArgs),
    /// Run a program only if policy allows it (the command guard).
    Exec(crate::cmd::exec::ExecArgs),
    /// The MCP gateway (stdio and streamable HTTP) and its tool pins.
    #[command(subcommand)]
    Mcp(crate::cmd::mcp::McpCommand),
    /// The A2A gateway: decides every message and task request between agents (Agent2Agent
    /// protocol 1.0), and its pinned agent cards.
    #[command(subcommand)]
    A2a(crate::cmd::a2a::A2aCommand),
    /// The PostgreSQL guard: a protocol proxy that decides every statement.
    #[command(subcommand)]
    Sql(crate::cmd::sql::SqlCommand),
    /// One decision's evidence bundle (`arbiter evidence ID --out FILE`), checked offline with
    /// `arbiter evidence verify FILE --pubkey KEY`.
    Evidence(crate::cmd::evidence::EvidenceArgs),
    /// A signed compliance archive: what Arbiter enforced and recorded, mapped to the controls
    /// of OWASP's NHI and agentic top tens, NIST CSF 2.0, SP 800-207 and the AI RMF.
    #[command(subcommand)]
    Compliance(crate::cmd::compliance::ComplianceCommand),
    /// A witness that cosigns decision-log checkpoints, so that a log rewritten after it was
    /// witnessed is detected by anyone holding the witness's public key.
    #[command(subcommand)]
    Witness(crate::cmd::witness::WitnessCommand),
    /// Print a shell completion script, e.g. `arbiter completions bash > /etc/bash_completion.d/arbiter`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Policy directory (`*.cedar`, optional `schema.cedarschema`, `entities.json`, `tests/`).
    /// Watched: valid changes are applied live, invalid ones rejected. Without it, every
    /// request is denied.
    #[arg(long, env = "ARBITER_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,

    /// Governed mode: enforce the policy version activated in the registry (`arbiter policy
    /// propose|approve|activate`) instead of a directory, and follow activations and
    /// rollbacks within a second, without a restart. Refuses to start while no version is
    /// active.
    #[arg(long, env = "ARBITER_GOVERNED", conflicts_with = "policies")]
    pub governed: bool,

    /// Data directory for Arbiter's own state; created if missing.
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,

    /// Address to listen on.
    #[arg(
        long,
        env = "ARBITER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8180"
    )]
    pub listen: String,

    /// With `--store`: the base URL the other nodes of the fleet reach this one at, to find the
    /// decisions it made (`GET /v1/decisions/{id}` on any node). Default: `http://` and the
    /// listen address, unless it listens on every address (then this node's decisions are
    /// found only on this node).
    #[arg(long, env = "ARBITER_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// Base URL advertised by `/.well-known/authzen-configuration` (default: from the request's
    /// `Host`).
    #[arg(long, env = "ARBITER_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Turn the web console off (`/console` then answers 404 and session cookies are
    /// ignored). The console is on by default, at `/console/`; see `docs/console.md`.
    #[arg(long)]
    pub no_console: bool,

    /// Largest accepted request body, in bytes (larger bodies get 413).
    #[arg(long, env = "ARBITER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Deepest accepted JSON nesting (deeper bodies get 400).
    #[arg(long, env = "ARBITER_MAX_DEPTH", default_value_t = 32)]
    pub max_depth: usize,

    /// How often to check the policy directory for changes, in milliseconds (0 disables).
    #[arg(long, env = "ARBITER_RELOAD_INTERVAL_MS", default_value_t = 500)]
    pub reload_interval_ms: u64,

    /// Worker threads (default: one per core).
    #[arg(long, env = "ARBITER_WORKERS")]
    pub workers: Option<usize>,

    /// Decision log durability: `sync` answers a decision only once its record is on disk
    /// (group commit); `async` answers after the write and syncs in the background (a crash
    /// can lose the last records); `off` keeps no decision log (for development only).
    #[arg(long, env = "ARBITER_DECISION_LOG", value_enum, default_value_t = DecisionLogMode::Sync)]
    pub decision_log: DecisionLogMode,

    /// Write a signed checkpoint after this many records.
    #[arg(long, env = "ARBITER_CHECKPOINT_RECORDS", default_value_t = 1000)]
    pub checkpoint_every_records: u64,

    /// Write a signed checkpoint this long after the latest one when decisions were recorded
    /// since, in milliseconds. An idle log gets a liveness checkpoint every 10 minutes only.
    #[arg(long, env = "ARBITER_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,

    /// Open a decision log that fails its checks at start (records not covered by valid
    /// signed checkpoints, a missing or cut-back `checkpoints.log`, a bad signature): the
    /// damaged checkpoints are set aside and an override record with REASON is appended and
    /// signed, which `arbiter log verify` reports from then on. Inspect the log with
    /// `arbiter log verify` first. Deliberately not settable from the environment.
    #[arg(long, value_name = "REASON")]
    pub accept_log_damage: Option<String>,

    /// Context path whose value is replaced by a keyed hash in decision records, e.g.
    /// `arguments.password` (repeatable; `*` matches every array element).
    #[arg(
        long = "redact",
        env = "ARBITER_REDACT",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub redact: Vec<String>,

    /// This node's id in decision records (default: kept in DATA/node-id, created from the
    /// host name on first start).
    #[arg(long, env = "ARBITER_NODE_ID")]
    pub node_id: Option<String>,

    /// Refuse evaluation requests without a credential (an agent's key or token, or a PEP
    /// token) with 401. Without it, a caller may assert an AuthZEN subject, but an `Agent`
    /// subject must still be a registered, active agent (or declared in the policy entities).
    #[arg(long, env = "ARBITER_REQUIRE_AUTH")]
    pub require_auth: bool,

    /// Serve on an address other than loopback without `--require-auth`: gives up
    /// authentication, so anyone who can reach the address may ask for decisions as any
    /// subject they name. Without this flag (or `--require-auth`), `serve` refuses to start
    /// on such an address.
    #[arg(long, env = "ARBITER_INSECURE_ALLOW_UNAUTHENTICATED")]
    pub insecure_allow_unauthenticated: bool,

    /// Give every AuthZEN caller the administrators' details of a decision (`reason_admin`
    /// with policy ids, registry and credential details; determining policies; errors). By
    /// default only a PEP token's holder gets them; agents and anonymous callers get the
    /// decision and `reason_user` (administrators read the details in the decision log).
    #[arg(long, env = "ARBITER_ADMIN_REASONS_FOR_ALL_CALLERS")]
    pub admin_reasons_for_all_callers: bool,

    /// External token issuers (JSON: issuer, audiences, jwks_file or jwks_url, agent_claim,
    /// algorithms); their JWTs are accepted as agent credentials.
    #[arg(long, env = "ARBITER_JWT_ISSUERS", value_name = "FILE")]
    pub jwt_issuers: Option<PathBuf>,

    /// Write one JSON line per HTTP request to FILE (appended; created with mode 0600) or to
    /// standard output (`-`): time, method, path without the query, status, duration, client
    /// address, request id, the caller (agent, PEP, admin, anonymous or refused, by id), the
    /// enforcement point and the decision ids. Never a credential, a query string or a body.
    /// Writing it never delays or fails a request: lines that cannot be written are counted
    /// (`arbiter_access_log_lines_lost_total`) and reported once per outage. SIGHUP reopens
    /// FILE (after a log rotation).
    #[arg(long, env = "ARBITER_ACCESS_LOG", value_name = "FILE|-")]
    pub access_log: Option<String>,

    /// Send every new checkpoint of the decision log to this witness (`arbiter witness
    /// serve`; repeatable) and keep its cosignatures in DIR/log/cosignatures.log. Decisions
    /// never wait for witnesses: an unreachable or refusing one shows in `/readyz` and
    /// `arbiter_witness_*` metrics, and checkpoints wait for it.
    #[arg(long = "witness", value_name = "URL")]
    pub witnesses: Vec<String>,

    /// Cosignatures a checkpoint needs to count as witnessed (readiness and metrics).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub witness_quorum: usize,

    /// Bound on one exchange with a witness, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub witness_timeout_ms: u64,

    /// Forward-auth route list: `SERVICE METHOD /path/{param}` per line and one
    /// `@service SERVICE proxy=nginx|traefik|envoy [allow=…] [method-override]` line per
    /// service (repeatable).
    #[arg(
        long = "routes",
        env = "ARBITER_ROUTES",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub routes: Vec<PathBuf>,

    /// Forward-auth routes of a service from an OpenAPI 3 JSON document (repeatable).
    #[arg(long = "openapi", value_name = "SERVICE=FILE")]
    pub openapi: Vec<String>,

    /// How a forward-auth service's proxy describes the original request, e.g.
    /// `billing proxy=nginx` or `billing proxy=envoy allow=semicolon method-override`
    /// (repeatable; the words of a routes file's `@service` line). Every service needs one.
    #[arg(long = "forward-auth", value_name = "'SERVICE proxy=… [OPTION…]'")]
    pub forward_auth: Vec<String>,

    /// For `GET /v1/gap`: an MCP client configuration file, `FILE=AGENT` to attribute it to
    /// an agent (repeatable; read again on every request).
    #[arg(long = "gap-mcp-config", value_name = "FILE[=AGENT]")]
    pub gap_mcp_configs: Vec<String>,

    /// For `GET /v1/gap`: a PostgreSQL database whose `pg_stat_activity` is read on every
    /// request (repeatable).
    #[arg(long = "gap-postgres", value_name = "DSN")]
    pub gap_postgres: Vec<String>,

    /// For `GET /v1/gap`: an access log scanned on every request (repeatable).
    #[arg(long = "gap-access-log", value_name = "FILE")]
    pub gap_access_logs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionLogMode {
    Sync,
    Async,
    Off,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy directory.
    #[arg(long, value_name = "DIR")]
    pub policies: PathBuf,

    /// AuthZEN evaluation request: a file, or `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    pub request: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a policy directory; print its version. With `--request`, also
    /// check sample requests against the directory's schema (exit 1 if any is not valid).
    Validate {
        /// Policy directory.
        dir: PathBuf,
        /// A file holding an AuthZEN evaluation request, a JSON array of them, or an AuthZEN
        /// batch (`{"evaluations": [...]}`), to check against the schema: each is reported
        /// valid, or invalid with what is wrong. Repeatable.
        #[arg(long = "request", value_name = "FILE")]
        requests: Vec<PathBuf>,
    },
    /// Run the test cases in DIR/tests/*.json against the policies in DIR.
    Test {
        /// Policy directory.
        dir: PathBuf,
    },
    /// Create a policy directory that uses the built-in agent vocabulary, with an example
    /// policy and a test.
    Init {
        /// Directory to create (must not exist or be empty).
        dir: PathBuf,
    },
    /// Print the built-in agent vocabulary (a Cedar schema).
    Schema,
    #[command(flatten)]
    Governed(crate::cmd::governance::GovernCommand),
}
