//! `arbiter agent …`, `arbiter admin …` and `arbiter discover`: the identity registry from the
//! command line. These work on the store in the data directory directly (the same SQLite file
//! a running `arbiter serve` uses; a change is seen by its very next decision). Every change
//! is recorded in the audit trail as made by `cli:<user>`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arbiter_identity::{HostList, LogFormat as AccessLogFormat};
use arbiter_pdp::admin::{
    self, TokenSpec, agent_json, audit_json, credential_json, credential_state, discovered_json,
};
use arbiter_pdp::identity::now_us;
use arbiter_store::{
    Actor, AgentFilter, AgentPatch, AgentStatus, CredentialFilter, CredentialKind, Environment,
    NewAgent, Store,
};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::out::print;

/// Where the store lives.
#[derive(Debug, Args)]
pub struct DataArg {
    /// Data directory (as given to `arbiter serve`).
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data",
        global = true
    )]
    pub data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: DataArg,
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent.
    Register(RegisterArgs),
    /// List agents (or, with --discovered, identities seen but not registered).
    List {
        /// Only agents with this status (active, suspended, retired).
        #[arg(long)]
        status: Option<String>,
        /// Only agents in this environment (dev, staging, prod).
        #[arg(long)]
        environment: Option<String>,
        /// Only agents of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// List the discovered-identities inventory instead.
        #[arg(long)]
        discovered: bool,
        /// With --discovered: include identities already adopted.
        #[arg(long, requires = "discovered")]
        all: bool,
    },
    /// Show an agent and its keys.
    Show {
        /// The agent's id.
        id: String,
    },
    /// Change an agent's name, owner, purpose, environment or attributes.
    Update {
        /// The agent's id.
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        purpose: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// Replace the attributes with this JSON object.
        #[arg(long, value_name = "JSON")]
        attributes: Option<String>,
    },
    /// Suspend an agent: every decision for it is denied until it is activated again.
    Suspend {
        /// The agent's id.
        id: String,
    },
    /// Activate a suspended agent.
    Activate {
        /// The agent's id.
        id: String,
    },
    /// Retire an agent for good, revoking all its keys.
    Retire {
        /// The agent's id.
        id: String,
    },
    /// Register a discovered identity as an agent (see `agent list --discovered`).
    Adopt {
        /// The discovered identity's number.
        discovered: i64,
        #[command(flatten)]
        agent: RegisterArgs,
    },
    /// Manage an agent's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Agent id: lowercase letters, digits, `.`, `_`, `-` (e.g. `support-bot`).
    pub id: String,
    /// The accountable person or team.
    #[arg(long)]
    pub owner: String,
    /// Display name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// What the agent is for.
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// dev, staging or prod.
    #[arg(long, default_value = "dev")]
    pub environment: String,
    /// Free-form attributes as a JSON object, e.g. '{"roles": ["support"]}'.
    #[arg(long, value_name = "JSON")]
    pub attributes: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue a new API key (shown once).
    Issue {
        /// The agent's id.
        agent: String,
        /// A label for the key.
        #[arg(long, default_value = "default")]
        name: String,
        /// Lifetime, e.g. `90d`, `12h`.
        #[arg(long, default_value = "90d")]
        expires_in: String,
        /// Print only the key, for scripts: `KEY=$(arbiter agent key issue bot --quiet)`.
        #[arg(long, short, conflicts_with = "json")]
        quiet: bool,
    },
    /// Issue a replacement key; the old one keeps working for the overlap window.
    Rotate {
        /// The agent's id.
        agent: String,
        /// The key to replace (`key_…`).
        key: String,
        /// How long the old key stays valid, e.g. `1h`.
        #[arg(long, default_value = "1h")]
        overlap: String,
        /// Lifetime of the new key.
        #[arg(long, default_value = "90d")]
        expires_in: String,
        /// Print only the new key, for scripts.
        #[arg(long, short, conflicts_with = "json")]
        quiet: bool,
    },
    /// Revoke one key (`key_…`), or every key of the agent with --all.
    Revoke {
        /// The agent's id.
        agent: String,
        /// The key to revoke (`key_…`).
        key: Option<String>,
        #[arg(long, conflicts_with = "key")]
        all: bool,
        #[arg(long, default_value = "revoked by an administrator")]
        reason: String,
    },
    /// List an agent's keys (metadata only).
    List {
        /// The agent's id.
        agent: String,
    },
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub common: DataArg,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Admin and PEP tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit trail of administrative changes.
    Audit {
        /// Recompute the hash chain instead of listing (exit 3 if broken).
        #[arg(long)]
        verify: bool,
        /// Events after this number.
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (shown once).
    Create {
        /// A label, e.g. who or what uses it.
        #[arg(long)]
        name: String,
        /// `administrator` or `auditor` (admin tokens).
        #[arg(long, default_value = "administrator")]
        role: String,
        /// Create a PEP token instead: for a third-party enforcement point that asserts
        /// subjects itself.
        #[arg(long)]
        pep: bool,
        /// Lifetime (default: no expiry).
        #[arg(long)]
        expires_in: Option<String>,
        /// Print only the token, for scripts:
        /// `ARBITER_ADMIN_TOKEN=$(arbiter admin token create --name alice --quiet)`.
        #[arg(long, short, conflicts_with = "json")]
        quiet: bool,
    },
    /// List admin and PEP tokens (metadata only).
    List,
    /// Revoke a token (`adm_…` or `pep_…`).
    Revoke {
        id: String,
        #[arg(long, default_value = "revoked by an administrator")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Access log to read (nginx combined or JSON lines); `-` for standard input.
    #[arg(long, value_name = "FILE")]
    pub access_log: String,
    /// auto, combined or json.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// A file of LLM provider hosts (`pattern [provider]` per line) instead of the built-in list.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Data directory whose registered agents are recognised (by id as the log's user, or
    /// by an address listed in the agent's `addresses` attribute).
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Exit code when `discover` finds unregistered sources.
pub const EXIT_FOUND: u8 = 4;

/// Opens the identity store: `--store`'s database, or `arbiter.db` in `data` (created with
/// the directory if missing).
pub(crate) fn open_store(data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if crate::cmd::store::shared().is_none() {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the data directory `{}`", data.display()))?;
    }
    crate::cmd::store::open(data)
}

pub(crate) fn cli_actor() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    Actor::cli(user)
}

fn parse_json_object(text: &str, flag: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => anyhow::bail!("`{flag}` must be a JSON object"),
        Err(e) => anyhow::bail!("`{flag}` is not valid JSON: {e}"),
    }
}

fn duration(text: &str, flag: &str) -> anyhow::Result<Duration> {
    admin::parse_duration(text).map_err(|e| anyhow::anyhow!("`{flag}`: {e}"))
}

fn new_agent(a: &RegisterArgs) -> anyhow::Result<NewAgent> {
    Ok(NewAgent {
        id: a.id.clone(),
        name: a.name.clone().unwrap_or_else(|| a.id.clone()),
        owner: a.owner.clone(),
        purpose: a.purpose.clone(),
        environment: a.environment.parse::<Environment>()?,
        attributes: match &a.attributes {
            Some(t) => parse_json_object(t, "--attributes")?,
            None => Map::new(),
        },
    })
}

fn show(json: bool, value: &Value, text: impl FnOnce() -> String) -> anyhow::Result<ExitCode> {
    if json {
        print(&serde_json::to_string_pretty(value)?)?;
    } else {
        print(&text())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn agent_line(a: &arbiter_store::Agent) -> String {
    format!(
        "{:<24} {:<9} {:<7} {:<28} {}",
        a.id,
        a.status.as_str(),
        a.environment.as_str(),
        a.owner,
        a.name
    )
}

fn key_line(c: &arbiter_store::Credential, now: i64) -> String {
    let v = credential_json(c, now);
    format!(
        "{:<16} {:<9} {:<14} expires {}  last used {}",
        c.id,
        credential_state(c, now),
        c.name,
        v["expires"].as_str().unwrap_or("never"),
        v["last_used"].as_str().unwrap_or("never"),
    )
}

fn secret_notice(kind: &str, secret: &str, id: &str) -> String {
    format!(
        "{kind} {id} issued. Store this secret now: Arbiter keeps only its hash and cannot show it again.\n\n  {secret}\n"
    )
}

pub fn run_agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.common.data)?;
    let json = args.common.json;
    let now = now_us();
    match args.command {
        AgentCommand::Register(r) => {
            let agent = admin::register_agent(store.as_ref(), &new_agent(&r)?, &cli_actor(), now)?;
            show(json, &agent_json(&agent), || {
                format!(
                    "registered agent `{}` (owner {}); issue it a key with `arbiter agent key issue {}`",
                    agent.id, agent.owner, agent.id
                )
            })
        }
        AgentCommand::List {
            status,
            environment,
            owner,
            discovered,
            all,
        } => {
            if discovered {
                let found = store.list_discovered(all)?;
                let list: Vec<Value> = found.iter().map(discovered_json).collect();
                let delay = format!(
                    "(a running decision point writes what it saw every {} s: an identity seen \
                     within the last {} s may not be listed yet)",
                    arbiter_pdp::identity::FLUSH_EVERY.as_secs(),
                    2 * arbiter_pdp::identity::FLUSH_EVERY.as_secs()
                );
                return show(json, &Value::Array(list), || {
                    if found.is_empty() {
                        return format!("no unknown identities seen\n{delay}");
                    }
                    let mut out = format!(
                        "{:<5} {:<10} {:<28} {:<20} {:>7}  {:<20} sources\n",
                        "#", "kind", "identity", "looks like", "count", "last seen"
                    );
                    for d in &found {
                        out.push_str(&format!(
                            "{:<5} {:<10} {:<28} {:<20} {:>7}  {:<20} {}{}\n",
                            d.id,
                            d.kind.as_str(),
                            d.key,
                            d.shape,
                            d.count,
                            arbiter_log::format_rfc3339_us(d.last_seen_us)
                                .get(..19)
                                .unwrap_or_default(),
                            d.sources.join(","),
                            d.adopted_as
                                .as_deref()
                                .map(|a| format!(" (adopted as {a})"))
                                .unwrap_or_default(),
                        ));
                    }
                    out.push_str(&delay);
                    out
                });
            }
            let filter = AgentFilter {
                status: status.map(|s| s.parse::<AgentStatus>()).transpose()?,
                environment: environment.map(|e| e.parse::<Environment>()).transpose()?,
                owner,
            };
            let agents = store.list_agents(&filter)?;
            let list: Vec<Value> = agents.iter().map(agent_json).collect();
            show(json, &Value::Array(list), || {
                if agents.is_empty() {
                    return "no agents registered".to_owned();
                }
                let mut out = format!(
                    "{:<24} {:<9} {:<7} {:<28} name\n",
                    "id", "status", "env", "owner"
                );
                for a in &agents {
                    out.push_str(&agent_line(a));
                    out.push('\n');
                }
                out
            })
        }
        AgentCommand::Show { id } => {
            let agent = store
                .agent(&id)?
                .ok_or_else(|| anyhow::anyhow!("agent `{id}` not found"))?;
            let keys = store.list_credentials(&CredentialFilter {
                kind: Some(CredentialKind::AgentKey),
                agent_id: Some(id.clone()),
                include_revoked: true,
            })?;
            let mut v = agent_json(&agent);
            v["keys"] = keys.iter().map(|k| credential_json(k, now)).collect();
            show(json, &v, || {
                let mut out = serde_json::to_string_pretty(&agent_json(&agent)).unwrap_or_default();
                out.push_str("\nkeys:\n");
                for k in &keys {
                    out.push_str("  ");
                    out.push_str(&key_line(k, now));
                    out.push('\n');
                }
                out
            })
        }
        AgentCommand::Update {
            id,
            name,
            owner,
            purpose,
            environment,
            attributes,
        } => {
            let patch = AgentPatch {
                name,
                owner,
                purpose,
                environment: environment.map(|e| e.parse::<Environment>()).transpose()?,
                attributes: attributes
                    .map(|a| parse_json_object(&a, "--attributes"))
                    .transpose()?,
            };
            let agent = store.update_agent(&id, &patch, &cli_actor(), now)?;
            show(json, &agent_json(&agent), || {
                format!("updated agent `{id}`")
            })
        }
        AgentCommand::Suspend { id } => status(store.as_ref(), json, &id, AgentStatus::Suspended),
        AgentCommand::Activate { id } => status(store.as_ref(), json, &id, AgentStatus::Active),
        AgentCommand::Retire { id } => status(store.as_ref(), json, &id, AgentStatus::Retired),
        AgentCommand::Adopt { discovered, agent } => {
            let agent = admin::adopt(
                store.as_ref(),
                discovered,
                &new_agent(&agent)?,
                &cli_actor(),
                now,
            )?;
            show(json, &agent_json(&agent), || {
                format!(
                    "identity {discovered} adopted as agent `{}`; issue it a key with `arbiter agent key issue {}`",
                    agent.id, agent.id
                )
            })
        }
        AgentCommand::Key(cmd) => run_key(store.as_ref(), json, cmd, now),
    }
}

fn status(
    store: &dyn Store,
    json: bool,
    id: &str,
    status: AgentStatus,
) -> anyhow::Result<ExitCode> {
    let (agent, revoked) = admin::set_status(store, id, status, &cli_actor(), now_us())?;
    let mut v = agent_json(&agent);
    v["keys_revoked"] = Value::from(revoked);
    show(json, &v, || {
        let mut s = format!("agent `{id}` is now {}", status.as_str());
        if revoked > 0 {
            s.push_str(&format!("; {revoked} key(s) revoked"));
        }
        s
    })
}

fn run_key(store: &dyn Store, json: bool, cmd: KeyCommand, now: i64) -> anyhow::Result<ExitCode> {
    let actor = cli_actor();
    match cmd {
        KeyCommand::Issue {
            agent,
            name,
            expires_in,
            quiet,
        } => {
            let ttl = duration(&expires_in, "--expires-in")?;
            let issued = admin::issue_key(store, &agent, &name, Some(ttl), &actor, now)?;
            if quiet {
                print(issued.secret.expose())?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut v = credential_json(&issued.credential, now);
            v["key"] = Value::String(issued.secret.expose().to_owned());
            show(json, &v, || {
                secret_notice("key", issued.secret.expose(), &issued.credential.id)
            })
        }
        KeyCommand::Rotate {
            agent,
            key,
            overlap,
            expires_in,
            quiet,
        } => {
            let overlap = duration(&overlap, "--overlap")?;
            let ttl = duration(&expires_in, "--expires-in")?;
            let (issued, old) =
                admin::rotate_key(store, &agent, &key, overlap, Some(ttl), &actor, now)?;
            if quiet {
                print(issued.secret.expose())?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut v = credential_json(&issued.credential, now);
            v["key"] = Value::String(issued.secret.expose().to_owned());
            v["previous"] = credential_json(&old, now);
            show(json, &v, || {
                format!(
                    "{}the previous key {} keeps working until {}.",
                    secret_notice("key", issued.secret.expose(), &issued.credential.id),
                    old.id,
                    old.expires_at_us
                        .map(arbiter_log::format_rfc3339_us)
                        .unwrap_or_default()
                )
            })
        }
        KeyCommand::Revoke {
            agent,
            key,
            all,
            reason,
        } => match (key, all) {
            (Some(key), false) => {
                let c = admin::revoke_key(store, &agent, &key, &reason, &actor, now)?;
                show(json, &credential_json(&c, now), || {
                    format!(
                        "key {key} of agent `{agent}` revoked; it is refused from the next decision on"
                    )
                })
            }
            (None, true) => {
                store
                    .agent(&agent)?
                    .ok_or_else(|| anyhow::anyhow!("agent `{agent}` not found"))?;
                let n = store.revoke_agent_credentials(&agent, &reason, &actor, now)?;
                show(json, &serde_json::json!({ "revoked": n }), || {
                    format!("{n} key(s) of agent `{agent}` revoked")
                })
            }
            _ => anyhow::bail!("name the key to revoke (`key_…`), or pass --all"),
        },
        KeyCommand::List { agent } => {
            store
                .agent(&agent)?
                .ok_or_else(|| anyhow::anyhow!("agent `{agent}` not found"))?;
            let keys = store.list_credentials(&CredentialFilter {
                kind: Some(CredentialKind::AgentKey),
                agent_id: Some(agent.clone()),
                include_revoked: true,
            })?;
            let list: Vec<Value> = keys.iter().map(|k| credential_json(k, now)).collect();
            show(json, &Value::Array(list), || {
                if keys.is_empty() {
                    return format!("agent `{agent}` has no keys");
                }
                keys.iter()
                    .map(|k| key_line(k, now))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

pub fn run_admin(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.common.data)?;
    let json = args.common.json;
    let now = now_us();
    match args.command {
        AdminCommand::Token(TokenCommand::Create {
            name,
            role,
            pep,
            expires_in,
            quiet,
        }) => {
            let spec = if pep {
                TokenSpec::Pep
            } else {
                TokenSpec::Admin { role }
            };
            let ttl = expires_in
                .map(|t| duration(&t, "--expires-in"))
                .transpose()?;
            let issued = admin::create_token(store.as_ref(), &spec, &name, ttl, &cli_actor(), now)?;
            if quiet {
                print(issued.secret.expose())?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut v = credential_json(&issued.credential, now);
            v["token"] = Value::String(issued.secret.expose().to_owned());
            show(json, &v, || {
                secret_notice(
                    if pep { "PEP token" } else { "admin token" },
                    issued.secret.expose(),
                    &issued.credential.id,
                )
            })
        }
        AdminCommand::Token(TokenCommand::List) => {
            let tokens = admin::list_tokens(store.as_ref())?;
            let list: Vec<Value> = tokens.iter().map(|t| credential_json(t, now)).collect();
            show(json, &Value::Array(list), || {
                tokens
                    .iter()
                    .map(|t| {
                        format!(
                            "{} ({})",
                            key_line(t, now),
                            t.role.as_deref().unwrap_or("pep")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::Token(TokenCommand::Revoke { id, reason }) => {
            match store.credential(&id)? {
                Some(c) if c.kind != CredentialKind::AgentKey => {}
                _ => anyhow::bail!(
                    "token `{id}` not found (agent keys are revoked with `arbiter agent key revoke`)"
                ),
            }
            let c = store.revoke_credential(&id, &reason, &cli_actor(), now)?;
            show(json, &credential_json(&c, now), || {
                format!("token {id} revoked")
            })
        }
        AdminCommand::Audit {
            verify,
            after,
            limit,
        } => {
            if verify {
                return match store.verify_audit() {
                    Ok(n) => {
                        print(&format!(
                            "audit trail sound: {n} event(s), hash chain intact"
                        ))?;
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("audit trail TAMPERED: {e}");
                        Ok(ExitCode::from(3))
                    }
                };
            }
            let events = store.list_audit(after, limit.clamp(1, 10_000))?;
            let list: Vec<Value> = events.iter().map(audit_json).collect();
            show(json, &Value::Array(list), || {
                events
                    .iter()
                    .map(|e| {
                        format!(
                            "{:>5} {} {}:{} {} {}",
                            e.seq,
                            arbiter_log::format_rfc3339_us(e.at_us),
                            e.actor_kind,
                            e.actor_id,
                            e.action,
                            e.target
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

pub fn run_discover(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let format: AccessLogFormat = args
        .format
        .parse()
        .map_err(|e| anyhow::anyhow!("`--format`: {e}"))?;
    let hosts = match &args.hosts {
        Some(p) => HostList::from_file(p)?,
        None => HostList::default(),
    };
    let report = if args.access_log == "-" {
        arbiter_identity::scan_access_log(std::io::stdin().lock(), format, &hosts)?
    } else {
        let file = std::fs::File::open(&args.access_log)
            .with_context(|| format!("cannot open `{}`", args.access_log))?;
        arbiter_identity::scan_access_log(std::io::BufReader::new(file), format, &hosts)?
    };
    // Registered agents, recognised by id (as the log's user) or by address.
    let agents = if crate::cmd::store::exists(&args.data) {
        open_store(&args.data)?.list_agents(&AgentFilter::default())?
    } else {
        Vec::new()
    };
    let is_registered = |u: &arbiter_identity::Usage| -> Option<String> {
        agents
            .iter()
            .find(|a| {
                u.remote_user.as_deref() == Some(a.id.as_str())
                    || a.attributes
                        .get("addresses")
                        .and_then(Value::as_array)
                        .is_some_and(|addrs| addrs.iter().any(|x| x.as_str() == Some(&u.source)))
            })
            .map(|a| a.id.clone())
    };
    let unregistered = arbiter_identity::unregistered(&report, is_registered).len();
    if args.json {
        print(&serde_json::to_string_pretty(
            &arbiter_identity::render_json(&report, is_registered),
        )?)?;
    } else {
        print(&arbiter_identity::render_text(&report, is_registered))?;
    }
    Ok(if unregistered > 0 {
        ExitCode::from(EXIT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}
