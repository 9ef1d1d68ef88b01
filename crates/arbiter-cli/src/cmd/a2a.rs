//! `arbiter a2a`: the A2A gateway (`proxy`) and its pinned agent cards (`card`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arbiter_a2a::card::{CardChecks, CardKey, Cards};
use arbiter_a2a::delegation::Delegation;
use arbiter_a2a::proxy::{Gateway, Settings};
use arbiter_pep::jsonrpc::FrameLimits;
use clap::{Args, Subcommand};

use crate::cli::LogFormat;

#[derive(Debug, Subcommand)]
pub enum A2aCommand {
    /// A reverse proxy in front of an A2A agent (protocol 1.0, JSON-RPC over HTTP) that
    /// decides every message and task request between agents.
    Proxy(Box<ProxyArgs>),
    /// The agent cards the gateway has pinned: list, show, approve a changed card, unpin.
    #[command(subcommand)]
    Card(super::a2a_card::CardCommand),
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The callee's name in policies (`Agent::"<NAME>"`) and records (`a2a:<NAME>`). Letters,
    /// digits, `.`, `_`, `-`.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// The callee's agent id in the registry, when it differs from `--name`: the agent a
    /// delegation assertion is given to, so that its own calls carry the chain on.
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,

    /// The agent's base URL, e.g. `http://127.0.0.1:9100/` (its card is at
    /// `/.well-known/agent-card.json` there).
    #[arg(long, value_name = "URL")]
    pub upstream: String,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8290")]
    pub listen: String,

    /// The URL callers reach the gateway at, written into the card it serves (default:
    /// `http://<listen address>/`).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub source: arbiter_pep::SourceArgs,

    /// A JWK (EC P-256, Ed25519 or RSA public key) an agent card's signature may verify with.
    /// Repeatable.
    #[arg(long = "card-key", value_name = "FILE")]
    pub card_keys: Vec<PathBuf>,

    /// Refuse an agent card without a signature that verifies with a `--card-key`.
    #[arg(long, requires = "card_keys")]
    pub require_signed_card: bool,

    /// Another gateway's public key (hex, its `DATA/a2a-gateway.pub`) whose delegation
    /// assertions are trusted. Repeatable.
    #[arg(long = "trust-gateway-key", value_name = "HEX")]
    pub trust_gateway_keys: Vec<String>,

    /// A header sent on every upstream request (the agent's own credential), e.g.
    /// `Authorization: Bearer …`. The caller's credential is never forwarded. Repeatable.
    #[arg(long = "upstream-header", value_name = "NAME: VALUE")]
    pub upstream_headers: Vec<String>,

    /// Time allowed for a decision, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub decision_timeout_ms: u64,

    /// Time allowed for the agent to start answering, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub request_timeout: u64,

    /// Largest accepted message (request, answer, stream event), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Deepest accepted nesting of a message.
    #[arg(long, value_name = "LEVELS", default_value_t = 64)]
    pub max_depth: usize,
}

pub fn run(cmd: A2aCommand, format: LogFormat, level: &str) -> anyhow::Result<ExitCode> {
    match cmd {
        A2aCommand::Proxy(args) => {
            super::serve::init_logging(format, level)?;
            proxy(*args)
        }
        A2aCommand::Card(cmd) => super::a2a_card::run(cmd),
    }
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "`--name {name}`: 1 to 64 letters, digits, `.`, `_`, `-` (the agent in policies, e.g. Agent::\"research\")"
        )
    }
}

fn proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    valid_name(&args.name)?;
    if args.max_message_bytes == 0 || args.max_depth == 0 || args.request_timeout == 0 {
        anyhow::bail!(
            "`--max-message-bytes`, `--max-depth` and `--request-timeout` must be at least 1"
        );
    }
    let upstream = arbiter_pep::http::parse_upstream(
        &args.upstream,
        "the A2A agent",
        "http://127.0.0.1:9100/",
    )
    .map_err(anyhow::Error::msg)?;
    let upstream_headers = args
        .upstream_headers
        .iter()
        .map(|h| arbiter_pep::http::parse_upstream_header(h, reserved_header))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let keys = args
        .card_keys
        .iter()
        .map(|p| CardKey::from_jwk_file(p).with_context(|| format!("`--card-key {}`", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trusted = args
        .trust_gateway_keys
        .iter()
        .map(|k| {
            arbiter_log::PublicKey::from_hex(k.trim())
                .map_err(|e| anyhow::anyhow!("`--trust-gateway-key {k}`: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let decision_timeout = Duration::from_millis(args.decision_timeout_ms.max(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // Everything is opened before the port is: a gateway that accepts connections is ready.
        let source = arbiter_pep::Source::open(
            &args.source.config(crate::cmd::store::shared()),
            format!("a2a:{}", args.name),
            decision_timeout,
            arbiter_pep::Usage::Serving,
        )?;
        let store = match source.store() {
            Some(store) => store,
            None => super::agent::open_store(&args.source.data)?,
        };
        let delegation =
            Delegation::open(&args.source.data, trusted).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}/"));
        let client = Gateway::client();
        let request_timeout = Duration::from_secs(args.request_timeout);
        let cards = Cards::new(
            &args.name,
            upstream.clone(),
            client.clone(),
            store,
            CardChecks {
                keys,
                require_signed: args.require_signed_card,
            },
            request_timeout,
        );
        let gateway = Arc::new(Gateway::new(
            Settings {
                name: args.name.clone(),
                agent_id: args.agent_id.clone().unwrap_or_else(|| args.name.clone()),
                upstream,
                public_url: public_url.clone(),
                limits: FrameLimits {
                    max_bytes: args.max_message_bytes,
                    max_depth: args.max_depth,
                },
                decision_timeout,
                request_timeout,
                upstream_headers,
            },
            Arc::clone(&source.decider),
            cards,
            delegation,
            client,
        ));
        tracing::info!(
            agent = %args.name,
            upstream = %args.upstream,
            gateway_key = %gateway.delegation_key(),
            "A2A gateway listening on http://{local}/ (card at {public_url}.well-known/agent-card.json)"
        );
        let served = arbiter_a2a::proxy::serve(listener, gateway, super::serve::shutdown_signal())
        .await
        .context("the gateway stopped with an error");
        source.close();
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Headers an `--upstream-header` may not set: the transport's and the protocol's own.
fn reserved_header(name: &arbiter_pep::http::HeaderName) -> bool {
    arbiter_pep::http::transport_header(name)
        || matches!(
            name.as_str(),
            "content-type" | "accept" | "a2a-version" | "a2a-extensions"
        )
}
