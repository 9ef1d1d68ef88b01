//! The gap map: for each agent and each layer, what the agent reaches and how it is
//! controlled.
//!
//! A security team's first question about agents is not "are they registered?" but "which
//! systems can each one reach, and where is each action checked at request time rather than
//! left to a credential's scope?". [`build`] answers it as a matrix agent × [`Layer`], from:
//!
//! - the decision log (actions seen at an Arbiter enforcement point: [`State::Enforced`]);
//! - the registry (registered agents, their declared `systems`, discovered identities that
//!   nobody adopted: [`State::Ungoverned`]);
//! - MCP client configuration files, PostgreSQL's `pg_stat_activity` and access logs, which
//!   show access that exists but that no enforcement point decides ([`State::Coarse`]).
//!
//! Every source that is not the log or the registry is untrusted input: bounded, parsed
//! strictly, and reported by name when it is wrong. The result ([`GapMap`]) serializes to the
//! documented schema `arbiter.gap/1` (docs/gap.md) and renders as a table or an HTML page
//! ([`render`]).

mod access;
mod declared;
mod error;
mod logscan;
pub mod mcp;
mod model;
pub mod postgres;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use error::GapError;
pub use model::{
    Cell, Enforced, Finding, FindingSource, GapMap, Layer, Row, SCHEMA, State, Summary,
};

use arbiter_store::Store;

/// Exit status of `arbiter gap` when some cell is coarse or ungoverned.
pub const EXIT_GAPS: u8 = 4;

/// How far back the decision log is read by default: 30 days.
pub const DEFAULT_SINCE_US: i64 = 30 * 86_400 * 1_000_000;

/// Where the evidence other than the decision log and the registry comes from. Configured
/// once (flags of `arbiter gap`, or of `arbiter serve` for `GET /v1/gap`); every file is read
/// again on every [`build`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// MCP client configuration files (Claude Desktop, Cursor, VS Code, generic `mcpServers`).
    pub mcp_configs: Vec<McpConfigSource>,
    /// PostgreSQL connection URLs whose `pg_stat_activity` is read.
    pub postgres: Vec<String>,
    /// Access logs scanned for LLM / API provider traffic (nginx combined or JSON lines).
    pub access_logs: Vec<PathBuf>,
    /// The provider host list for the access logs (`pattern [provider]` per line); the
    /// built-in list of LLM provider APIs when `None`.
    pub hosts: Option<PathBuf>,
    /// The decision point's URL, for the commands the next steps suggest (`--pdp URL`);
    /// [`DEFAULT_PDP_URL`] when `None`.
    pub pdp_url: Option<String>,
}

/// The `--pdp` of suggested commands when [`Sources::pdp_url`] is not set.
pub const DEFAULT_PDP_URL: &str = "http://127.0.0.1:8180";

/// One MCP client configuration file, optionally attributed to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfigSource {
    /// The file.
    pub path: PathBuf,
    /// The agent whose client this is (`FILE=AGENT`), if given.
    pub agent: Option<String>,
}

impl McpConfigSource {
    /// Reads `FILE` or `FILE=AGENT` (the last `=` separates them when what follows it is an
    /// agent id).
    pub fn parse(text: &str) -> Result<Self, GapError> {
        if text.is_empty() {
            return Err(GapError::Usage(
                "an MCP configuration file must be named".to_owned(),
            ));
        }
        if let Some((file, agent)) = text.rsplit_once('=')
            && !file.is_empty()
            && declared::is_agent_id(agent)
        {
            return Ok(Self {
                path: PathBuf::from(file),
                agent: Some(agent.to_owned()),
            });
        }
        Ok(Self {
            path: PathBuf::from(text),
            agent: None,
        })
    }
}

/// What a [`build`] reads besides its [`Sources`]: the decision log, the registry and the
/// clock.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The decision log's directory (DATA/log); `None` when there is none (no decisions).
    pub log_dir: Option<&'a Path>,
    /// The registry; `None` when there is none (no registered agents).
    pub store: Option<&'a dyn Store>,
    /// Decisions and discovered identities older than this (Unix microseconds) are ignored.
    pub since_us: i64,
    /// Now (Unix microseconds): `generated_at`.
    pub now_us: i64,
}

/// Builds the gap map. Blocking (files, the log, the registry and PostgreSQL are read);
/// an async caller runs it on a blocking thread.
///
/// Errors name the source that failed (a file, a DSN without its password, the log, the
/// registry); problems that do not stop the map (an agent's malformed `systems` attribute,
/// a malformed access-log line, decisions at an enforcement point of no known layer) are
/// [`GapMap::warnings`].
pub fn build(sources: &Sources, inputs: &Inputs<'_>) -> Result<GapMap, GapError> {
    let mut acc = Accumulator::default();
    let pdp_url = sources.pdp_url.as_deref().unwrap_or(DEFAULT_PDP_URL);

    // The registry: rows for every agent that is not retired, and what each declares.
    let mut agents = Vec::new();
    if let Some(store) = inputs.store {
        agents = store
            .list_agents(&arbiter_store::AgentFilter::default())
            .map_err(|e| GapError::Store(e.to_string()))?;
        for agent in &agents {
            if agent.status == arbiter_store::AgentStatus::Retired {
                // A row only if something is seen of it (see `ensure_row`).
                acc.retired.insert(agent.id.clone(), agent.name.clone());
                continue;
            }
            acc.row(Row {
                agent: agent.id.clone(),
                registered: true,
                status: Some(agent.status.as_str().to_owned()),
                name: Some(agent.name.clone()),
            });
            let systems = declared::parse(agent, &mut acc.warnings);
            for (layer, names) in systems.names {
                let cell = acc.cell(&agent.id, layer);
                for name in names {
                    if !cell.declared.contains(&name) {
                        cell.declared.push(name);
                    }
                }
            }
            for (role, system) in systems.roles {
                match acc.roles.get(&role) {
                    Some((other, _)) if *other != agent.id => acc.warnings.push(format!(
                        "agents `{other}` and `{}` both declare database role `{}`; its direct \
                         connections are attributed to `{other}`",
                        agent.id,
                        declared::printable(&role)
                    )),
                    Some(_) => {}
                    None => {
                        acc.roles.insert(role, (agent.id.clone(), system));
                    }
                }
            }
        }
    }

    // The decision log: what enforcement points decided.
    if let Some(dir) = inputs.log_dir {
        let scanned = logscan::scan(dir, inputs.since_us)?;
        for ((agent, layer), stats) in scanned.cells {
            acc.ensure_row(&agent);
            acc.cell(&agent, layer).enforced = Some(stats);
        }
        acc.warnings.extend(scanned.warnings);
    }

    // Discovered identities with activity in the window and no registration.
    if let Some(store) = inputs.store {
        let discovered = store
            .list_discovered(false)
            .map_err(|e| GapError::Store(e.to_string()))?;
        for d in discovered {
            if d.adopted_as.is_some() || d.last_seen_us < inputs.since_us {
                continue;
            }
            let row = d.key.clone();
            acc.ensure_row(&row);
            let mut layers: BTreeSet<Layer> = d
                .enforcement_points
                .iter()
                .filter_map(|p| Layer::of_enforcement_point(p))
                .collect();
            if layers.is_empty() {
                layers.insert(Layer::Applications);
            }
            for layer in layers {
                let points: Vec<&str> = d
                    .enforcement_points
                    .iter()
                    .filter(|p| Layer::of_enforcement_point(p) == Some(layer))
                    .map(String::as_str)
                    .collect();
                let at = if points.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", points.join(", "))
                };
                acc.cell(&row, layer).findings.push(Finding {
                    state: State::Ungoverned,
                    source: FindingSource::Discovered,
                    r#where: "registry".to_owned(),
                    system: d.key.clone(),
                    detail: format!(
                        "unregistered {} ({}) seen {} time(s){at}, last {}",
                        d.kind.as_str(),
                        d.shape,
                        d.count,
                        arbiter_log::format_rfc3339_us(d.last_seen_us)
                    ),
                    next_step: format!(
                        "register this key: arbiter agent adopt {} AGENT-ID --owner TEAM \
                         (then give it its own key with `arbiter agent key issue AGENT-ID`)",
                        d.id
                    ),
                });
            }
        }
    }

    // MCP client configuration files.
    for source in &sources.mcp_configs {
        let file = mcp::read_file(&source.path)?;
        let agent = match &source.agent {
            Some(a) => a.clone(),
            None => mcp::attribute(&file, inputs.store)
                .unwrap_or_else(|| format!("(unattributed: {})", source.path.display())),
        };
        acc.ensure_row(&agent);
        let cell = acc.cell(&agent, Layer::Ai);
        for server in &file.servers {
            // A remote server the client calls at a URL cannot be seen to be behind
            // `arbiter mcp http` from the file: it counts as wrapped once the agent's calls are
            // decided at the gateway the next step names (`mcp:NAME`).
            let gateway = format!("mcp:{}", mcp::server_name_for(&server.name));
            let behind_gateway = server.command.is_none()
                && cell
                    .enforced
                    .as_ref()
                    .is_some_and(|e| e.enforcement_points.contains(&gateway));
            match &server.wrapped_as {
                Some(name) => {
                    if !cell.wrapped.contains(name) {
                        cell.wrapped.push(name.clone());
                    }
                }
                None if behind_gateway => {
                    let name = mcp::server_name_for(&server.name);
                    if !cell.wrapped.contains(&name) {
                        cell.wrapped.push(name);
                    }
                }
                None => cell
                    .findings
                    .push(mcp::finding(&file.path, server, pdp_url)),
            }
        }
    }

    // PostgreSQL: connections that do not come from the guard.
    for dsn in &sources.postgres {
        let seen = postgres::read_activity(dsn)?;
        acc.warnings.extend(seen.warnings);
        for access in seen.direct {
            let agent = acc
                .roles
                .get(&access.role)
                .map(|(agent, _)| agent.clone())
                .unwrap_or_else(|| format!("(unattributed role {})", access.role));
            acc.ensure_row(&agent);
            acc.cell(&agent, Layer::Data)
                .findings
                .push(postgres::finding(&seen.display, &access, pdp_url));
        }
    }

    // Access logs: provider traffic that bypasses forward-auth.
    if !sources.access_logs.is_empty() {
        let hosts = access::hosts(sources.hosts.as_deref())?;
        for path in &sources.access_logs {
            let found = access::scan(path, &hosts, &agents)?;
            acc.warnings.extend(found.warnings);
            for (agent, finding) in found.findings {
                acc.ensure_row(&agent);
                acc.cell(&agent, Layer::Applications).findings.push(finding);
            }
        }
    }

    Ok(acc.finish(inputs))
}

/// Cells as they are gathered, before states and next steps are decided.
#[derive(Debug, Default)]
struct Accumulator {
    rows: BTreeMap<String, Row>,
    cells: BTreeMap<(String, Layer), Draft>,
    /// Database role → (agent, system) from the agents' `systems` declarations.
    roles: BTreeMap<String, (String, String)>,
    /// Retired agents (id → name): a row only when something is seen of them.
    retired: BTreeMap<String, String>,
    warnings: Vec<String>,
}

#[derive(Debug, Default)]
struct Draft {
    declared: Vec<String>,
    /// MCP servers seen wrapped in a configuration file (evidence of control, not of use).
    wrapped: Vec<String>,
    enforced: Option<Enforced>,
    findings: Vec<Finding>,
}

impl Accumulator {
    fn row(&mut self, row: Row) {
        self.rows.entry(row.agent.clone()).or_insert(row);
    }

    /// A row for `agent`: the registered agent's if it is one (active and suspended agents
    /// have theirs already; a retired one gets it now), else an unregistered one.
    fn ensure_row(&mut self, agent: &str) {
        if self.rows.contains_key(agent) {
            return;
        }
        let retired = self.retired.get(agent).cloned();
        self.row(Row {
            agent: agent.to_owned(),
            registered: retired.is_some(),
            status: retired
                .is_some()
                .then(|| arbiter_store::AgentStatus::Retired.as_str().to_owned()),
            name: retired,
        });
    }

    fn cell(&mut self, agent: &str, layer: Layer) -> &mut Draft {
        self.cells.entry((agent.to_owned(), layer)).or_default()
    }

    fn finish(mut self, inputs: &Inputs<'_>) -> GapMap {
        let mut cells = Vec::new();
        let mut summary = Summary::default();
        for agent in self.rows.keys() {
            for layer in Layer::ALL {
                let draft = self
                    .cells
                    .remove(&(agent.clone(), layer))
                    .unwrap_or_default();
                let cell = decide(agent, layer, draft);
                summary.count(cell.state);
                cells.push(cell);
            }
        }
        GapMap {
            schema: SCHEMA.to_owned(),
            generated_at: arbiter_log::format_rfc3339_us(inputs.now_us),
            since: arbiter_log::format_rfc3339_us(inputs.since_us),
            layers: Layer::ALL.to_vec(),
            rows: self.rows.into_values().collect(),
            cells,
            summary,
            warnings: self.warnings,
        }
    }
}

/// The state of a cell and its next step: the worst finding wins (ungoverned > coarse >
/// enforced > unknown); a cell with enforced evidence and a coarse finding is coarse and
/// keeps both.
fn decide(agent: &str, layer: Layer, draft: Draft) -> Cell {
    let Draft {
        declared,
        wrapped,
        enforced,
        findings,
    } = draft;
    let worst = findings.iter().map(|f| f.state).max();
    let state = match worst {
        Some(s) => s,
        None if enforced.is_some() || !wrapped.is_empty() => State::Enforced,
        None => State::Unknown,
    };
    let next_step = match state {
        State::Enforced => None,
        State::Coarse | State::Ungoverned => findings
            .iter()
            .find(|f| f.state == state)
            .map(|f| f.next_step.clone()),
        State::Unknown if !declared.is_empty() => Some(format!(
            "declared ({}) but nothing observed: {}",
            declared.join(", "),
            layer.route_hint()
        )),
        State::Unknown => None,
    };
    Cell {
        agent: agent.to_owned(),
        layer,
        state,
        declared,
        wrapped,
        enforced,
        findings,
        next_step,
    }
}

#[cfg(test)]
mod tests;
