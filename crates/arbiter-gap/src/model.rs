//! The gap map as data: what `arbiter gap --format json` prints and `GET /v1/gap` answers
//! (schema `arbiter.gap/1`, documented in docs/gap.md). Field names are a contract with the
//! web console: fields may be added, never renamed or removed.

use serde::{Deserialize, Serialize};

/// The schema name and version of [`GapMap`].
pub const SCHEMA: &str = "arbiter.gap/1";

/// An action domain: where an agent's actions land and which enforcement point decides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// HTTP APIs: forward-auth and HTTP gateways (`http:SERVICE`).
    Applications,
    /// Commands: the command guard (`exec:HOST`).
    Infrastructure,
    /// Databases: the PostgreSQL guard (`sql:DATABASE`).
    Data,
    /// AI workloads: MCP tools through the MCP gateway (`mcp:SERVER`).
    Ai,
    /// Agent-to-agent calls through the A2A gateway (`a2a:NAME`).
    Agents,
}

impl Layer {
    /// Every layer, in the order of the matrix's columns.
    pub const ALL: [Layer; 5] = [
        Layer::Applications,
        Layer::Infrastructure,
        Layer::Data,
        Layer::Ai,
        Layer::Agents,
    ];

    /// The JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Applications => "applications",
            Layer::Infrastructure => "infrastructure",
            Layer::Data => "data",
            Layer::Ai => "ai",
            Layer::Agents => "agents",
        }
    }

    /// The layer named `key` (its JSON key).
    pub fn from_key(key: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == key)
    }

    /// The layer whose decisions an enforcement point makes: `http:…` → applications,
    /// `exec:…` → infrastructure, `sql:…` → data, `mcp:…` → AI, `a2a:…` → agents (the same
    /// mapping as the decision log's `layer` filter). Anything else → none: a plain AuthZEN
    /// call that names no enforcement point (`authzen`; an HTTP gateway names itself
    /// `http:NAME` with `X-Arbiter-Enforcement-Point`), a policy activation (`arbiter:policy`).
    pub fn of_enforcement_point(point: &str) -> Option<Layer> {
        arbiter_log::layer_of(point).and_then(Layer::from_key)
    }

    /// What routes this layer's traffic through Arbiter (for a declared system that was
    /// never observed).
    pub(crate) fn route_hint(self) -> &'static str {
        match self {
            Layer::Applications => {
                "route its HTTP calls through forward-auth (`arbiter serve --forward-auth \
                 'SERVICE proxy=nginx' --routes FILE`, see docs/forward-auth.md)"
            }
            Layer::Infrastructure => {
                "run its commands through the command guard (`arbiter exec --pdp URL -- PROGRAM`)"
            }
            Layer::Data => {
                "route its database connections through the guard (`arbiter sql proxy \
                 --upstream postgres://ROLE@HOST:PORT/DB --listen ADDR --pdp URL`)"
            }
            Layer::Ai => {
                "wrap its MCP servers (`arbiter mcp stdio --server-name NAME --pdp URL -- \
                 COMMAND`)"
            }
            Layer::Agents => {
                "route its agent-to-agent calls through the A2A gateway (`arbiter a2a proxy \
                 --name NAME --upstream URL --listen ADDR`)"
            }
        }
    }
}

/// How a cell is controlled. Ordered by severity: when several apply, the greatest wins
/// (ungoverned > coarse > enforced > unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing declared or observed.
    Unknown,
    /// Actions seen at an Arbiter enforcement point of the layer (or a configuration that
    /// routes through one), and no finding.
    Enforced,
    /// Access exists that only a credential's scope controls.
    Coarse,
    /// An identity with activity and no registration.
    Ungoverned,
}

impl State {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Enforced => "enforced",
            State::Coarse => "coarse",
            State::Ungoverned => "ungoverned",
        }
    }
}

/// Where a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FindingSource {
    /// An MCP client configuration file.
    #[serde(rename = "mcp-config")]
    McpConfig,
    /// PostgreSQL's `pg_stat_activity`.
    #[serde(rename = "postgres")]
    Postgres,
    /// An access log.
    #[serde(rename = "access-log")]
    AccessLog,
    /// The registry's discovered identities.
    #[serde(rename = "discovered")]
    Discovered,
}

impl FindingSource {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingSource::McpConfig => "mcp-config",
            FindingSource::Postgres => "postgres",
            FindingSource::AccessLog => "access-log",
            FindingSource::Discovered => "discovered",
        }
    }
}

/// The whole map (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapMap {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// When the map was built (RFC 3339, UTC).
    pub generated_at: String,
    /// The start of the window of decisions and discovered identities read.
    pub since: String,
    /// The layers, in column order.
    pub layers: Vec<Layer>,
    /// One row per agent, registered or not, ordered by id.
    pub rows: Vec<Row>,
    /// Every (row, layer) pair, rows in order, layers in column order.
    pub cells: Vec<Cell>,
    /// How many cells are in each state.
    pub summary: Summary,
    /// Problems that did not stop the map.
    pub warnings: Vec<String>,
}

impl GapMap {
    /// Whether some cell is coarse or ungoverned (`arbiter gap` then exits 4).
    pub fn has_gaps(&self) -> bool {
        self.summary.coarse > 0 || self.summary.ungoverned > 0
    }

    /// The cell of `agent` in `layer`.
    pub fn cell(&self, agent: &str, layer: Layer) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.agent == agent && c.layer == layer)
    }
}

/// One agent (a matrix row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The agent id; for an unregistered identity, its key or fingerprint, a client, or
    /// `(unattributed: FILE)` / `(unattributed role R)`.
    pub agent: String,
    /// Whether it is a registered agent.
    pub registered: bool,
    /// Its status in the registry (`active`, `suspended`, `retired`), `null` when
    /// unregistered.
    pub status: Option<String>,
    /// Its name in the registry, `null` when unregistered.
    pub name: Option<String>,
}

/// One agent in one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The row's `agent`.
    pub agent: String,
    /// The column.
    pub layer: Layer,
    /// How it is controlled.
    pub state: State,
    /// The systems the agent's `systems` attribute declares for this layer.
    pub declared: Vec<String>,
    /// MCP servers found wrapped by `arbiter mcp` in a configuration file attributed to the
    /// agent (evidence of control, without decisions yet).
    #[serde(default)]
    pub wrapped: Vec<String>,
    /// What the decision log holds for this agent in this layer, `null` when nothing.
    pub enforced: Option<Enforced>,
    /// Access that is not decided at request time (coarse) or not registered (ungoverned).
    pub findings: Vec<Finding>,
    /// What to do about the cell, `null` when enforced or nothing is known.
    pub next_step: Option<String>,
}

/// Decisions of one agent in one layer, in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforced {
    /// The enforcement points that decided (at most 32, sorted).
    pub enforcement_points: Vec<String>,
    /// How many decisions.
    pub decisions: u64,
    /// How many were denials.
    pub denied: u64,
    /// `denied / decisions`.
    pub deny_rate: f64,
    /// The latest decision's time (RFC 3339).
    pub last_seen: String,
    /// The policies that determined the decisions (at most 32, sorted).
    pub policies: Vec<String>,
}

/// One piece of access that is not decided at request time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `coarse` or `ungoverned`.
    pub state: State,
    /// Where it was found.
    pub source: FindingSource,
    /// The file, or the DSN without its password, or `registry`.
    #[serde(rename = "where")]
    pub r#where: String,
    /// The server name, database role, host, or key.
    pub system: String,
    /// What was seen.
    pub detail: String,
    /// What to do about it.
    pub next_step: String,
}

/// Cells per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Enforced cells.
    pub enforced: u64,
    /// Coarse cells.
    pub coarse: u64,
    /// Ungoverned cells.
    pub ungoverned: u64,
    /// Unknown cells.
    pub unknown: u64,
}

impl Summary {
    pub(crate) fn count(&mut self, state: State) {
        match state {
            State::Enforced => self.enforced += 1,
            State::Coarse => self.coarse += 1,
            State::Ungoverned => self.ungoverned += 1,
            State::Unknown => self.unknown += 1,
        }
    }
}
