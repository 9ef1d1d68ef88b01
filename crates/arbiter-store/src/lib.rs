//! Arbiter's identity store: who the agents are, which credentials
//! authenticate them and the operators, which unknown identities the
//! enforcement points have seen, which MCP tool definitions are approved,
//! and an audit trail of every administrative change.
//!
//! - [`Store`]: the access layer the server, the decision point and the CLI
//!   program against; [`SqliteStore`] implements it on one embedded SQLite
//!   file, so that another backend can follow without touching callers;
//! - [`model`]: the records ([`Agent`], [`Credential`], [`Discovered`],
//!   [`ToolPin`], [`AuditEvent`]) and the inputs that create or change them;
//! - [`validate`]: the input rules every backend applies;
//! - [`audit`]: the hash chain over administrative changes;
//! - [`schema`]: the SQLite schema and its migrations.
//!
//! Rules that hold for every call:
//!
//! - times are Unix microseconds (UTC) in an `i64`; the caller passes `now`,
//!   the store reads no clock;
//! - every administrative change takes the [`Actor`] making it and writes one
//!   [`AuditEvent`] per object changed, in the same transaction;
//! - runtime bookkeeping ([`Store::touch_agents`],
//!   [`Store::touch_credentials`], [`Store::record_sightings`]) is not
//!   audited: it is high-volume and driven by traffic, not by operators;
//! - [`Store::check_tool`] is driven by traffic too, but the writes it can
//!   make (a pin on first use, a changed definition) are rare and
//!   security-relevant, so they are audited, with a `system` actor; the
//!   common case, an unchanged definition, writes nothing;
//! - no plaintext secret is ever passed in: credentials arrive as the
//!   caller's hash, discovered credentials as a fingerprint.
//!
//! Synchronous, with no async runtime and no other Arbiter crate; async
//! callers run it on a blocking thread, except [`Store::generation_now`],
//! which waits for nothing and is made for their own threads.

mod agents;
pub mod approvals;
pub mod audit;
mod backend;
pub mod charges;
mod credentials;
mod db;
mod discovered;
mod error;
pub mod model;
pub mod nodes;
mod pg;
pub mod pg_schema;
mod pg_tls;
mod pins;
pub mod policy_versions;
pub mod schema;
pub mod session_labels;
mod sqlite;
pub mod validate;

pub use audit::GENESIS_HASH;
pub use error::StoreError;
pub use model::{
    ADMIN_ROLES, ActivationKind, Actor, Agent, AgentFilter, AgentPatch, AgentStatus, Approval,
    ApprovalLookup, ApprovalState, Approvers, AuditEvent, ChargeOutcome, Credential,
    CredentialFilter, CredentialKind, Discovered, DiscoveredKind, Environment, MAX_DISCOVERED_ROWS,
    MAX_DISCOVERED_SOURCES, NewAgent, NewApproval, NewCharge, NewCredential, NewNode,
    NewPolicyVersion, Node, PinCheck, PolicyActivation, PolicyApproval, PolicyFile, PolicyVersion,
    PolicyVersionState, Sighting, SightingsReport, ToolPin,
};
pub use pg::{CHANNEL, PgOptions, PgStore, connect_client, describe_url as describe_postgres_url};
pub use sqlite::{BUSY_TIMEOUT, SqliteStore};

/// Where a store lives: an SQLite file (the embedded default) or a PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Location {
    /// An SQLite file, created if missing.
    File(std::path::PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), shared by a fleet.
    Postgres {
        /// The connection URL (may hold a password: never logged).
        url: String,
        /// Change feed and failure settings.
        options: PgOptions,
    },
}

impl Location {
    /// `postgres://…` / `postgresql://…` is a PostgreSQL database; anything else is refused
    /// (an SQLite file is named by a path, not a URL). Its `sslmode` and `sslrootcert` are
    /// checked here; the root certificate file is read when the store opens.
    pub fn parse_url(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                pg_tls::parse(url)?;
                Ok(Self::Postgres {
                    url: url.to_owned(),
                    options,
                })
            }
            _ => Err(StoreError::invalid(
                "store URL",
                "expected `postgres://user@host:port/database` (the embedded store needs no \
                 URL: it is `arbiter.db` in the data directory)",
            )),
        }
    }

    /// Opens the store here.
    pub fn open(&self) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::File(path) => std::sync::Arc::new(SqliteStore::open(path)?),
            Self::Postgres { url, options } => std::sync::Arc::new(PgStore::open(url, options)?),
        })
    }

    /// Where, for messages: the file, or `host:port/database` without credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Postgres { url, .. } => pg::describe_url(url),
        }
    }
}

/// What [`Store::health`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Reachable, and changes made elsewhere are being seen.
    pub up: bool,
    /// Milliseconds since the store was last confirmed reachable and current; `None` for an
    /// embedded store, which is always there.
    pub confirmed_ms_ago: Option<u64>,
    /// What is wrong, when something is.
    pub problem: Option<String>,
}

impl Health {
    /// An embedded file (or memory): always there.
    pub fn embedded() -> Self {
        Self {
            backend: "sqlite",
            up: true,
            confirmed_ms_ago: None,
            problem: None,
        }
    }
}

/// The identity store's access layer.
///
/// Every method is one transaction: it either happens entirely, with its
/// audit events, or not at all ([`Store::check_tool`] reads first and opens
/// a write transaction only when it has something to write). Mutating
/// methods take the [`Actor`] and the caller's `now_us`; the writes of
/// [`Store::check_tool`] are made by the `system` actor `first-use`.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A number that changes after every change to agents, credentials or
    /// tool pins and after every administrative (audited) change, whoever
    /// makes it: this handle, another handle, or another program writing the
    /// same database. Caches compare it to know when to reload.
    ///
    /// Only inequality is meaningful. Runtime bookkeeping
    /// ([`Store::touch_agents`], [`Store::touch_credentials`],
    /// [`Store::record_sightings`]) leaves it alone: it changes last-seen
    /// times and the inventory, which no cache holds. It may change when
    /// nothing a cache holds did, never the reverse. One indexed read, which
    /// never waits for a write of this handle; it may wait (up to the busy
    /// timeout) for another process, so an async caller uses
    /// [`Store::generation_now`] on its own threads.
    fn generation(&self) -> Result<u64, StoreError>;

    /// [`Store::generation`] for the decision path on an async runtime:
    /// never waits — for a write in progress, another call, or another
    /// process. `Ok(None)` when the answer would need waiting (rare: another
    /// process recovering the file); ask [`Store::generation`] then, from a
    /// thread that may block.
    fn generation_now(&self) -> Result<Option<u64>, StoreError>;

    /// Whether the store is reachable and its change feed current; never waits. A shared store
    /// that lost its database says so here (for `/readyz` and metrics) while
    /// [`Store::generation_now`] starts failing once its grace has run out.
    fn health(&self) -> Health;

    /// Whether several nodes share this store (PostgreSQL): then counters every node must
    /// agree on (rate limits, budgets) are kept in it ([`Store::charge`]), not in each node's
    /// memory.
    fn shared(&self) -> bool;

    /// Registers a new, active agent. `Conflict` if the id is taken.
    fn register_agent(
        &self,
        new: &NewAgent,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Agent, StoreError>;

    /// The agent `id`, if registered.
    fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError>;

    /// The agents matching `filter`, ordered by id.
    fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError>;

    /// Changes the fields set in `patch`. A retired agent cannot be changed.
    /// If nothing actually differs, returns the agent unchanged and writes no
    /// audit event.
    fn update_agent(
        &self,
        id: &str,
        patch: &AgentPatch,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Agent, StoreError>;

    /// Moves the agent to `status`: active ⇄ suspended, either → retired.
    /// Retired is terminal, and setting the current status is refused.
    /// Credentials are not touched; use
    /// [`Store::revoke_agent_credentials`] to revoke them.
    fn set_agent_status(
        &self,
        id: &str,
        status: AgentStatus,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Agent, StoreError>;

    /// Records when agents were last seen: each `(agent id, at_us)` raises
    /// `last_seen_us` to `at_us` if later. Unknown ids are skipped. Not
    /// audited. Returns how many agents changed.
    fn touch_agents(&self, seen: &[(String, i64)]) -> Result<usize, StoreError>;

    /// Stores a new credential. `Conflict` if the id is taken; an agent key
    /// needs an existing, non-retired agent; an admin token needs a role.
    fn insert_credential(
        &self,
        new: &NewCredential,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Credential, StoreError>;

    /// The credential `id`, if stored (revoked or not).
    fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError>;

    /// The credentials matching `filter`, oldest first.
    fn list_credentials(&self, filter: &CredentialFilter) -> Result<Vec<Credential>, StoreError>;

    /// Atomically stores `new` as the replacement of `old_id`, which keeps
    /// working until `min(its current expiry, old_expires_at_us)` and gets
    /// `replaced_by` set. Refused if the old credential is revoked or was
    /// already rotated, or if kind, agent or role would change. Returns
    /// `(old, new)` as stored.
    fn rotate_credential(
        &self,
        old_id: &str,
        new: &NewCredential,
        old_expires_at_us: i64,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(Credential, Credential), StoreError>;

    /// Revokes one credential; refused if it already is.
    fn revoke_credential(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Credential, StoreError>;

    /// Revokes every unrevoked credential of the agent, with one audit event
    /// each; returns how many.
    fn revoke_agent_credentials(
        &self,
        agent_id: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<usize, StoreError>;

    /// Records when credentials were last used: each `(credential id,
    /// at_us)` raises `last_used_us` to `at_us` if later. Unknown ids are
    /// skipped. Not audited. Returns how many credentials changed.
    fn touch_credentials(&self, used: &[(String, i64)]) -> Result<usize, StoreError>;

    /// Merges sightings of unknown identities into the inventory, upserting
    /// on `(kind, key)`. Not audited. When the inventory holds
    /// [`MAX_DISCOVERED_ROWS`], sightings of new keys are dropped (and
    /// counted in the report) while known keys keep being updated.
    fn record_sightings(&self, sightings: &[Sighting]) -> Result<SightingsReport, StoreError>;

    /// The discovered identities, most recently seen first; adopted ones
    /// only if `include_adopted`.
    fn list_discovered(&self, include_adopted: bool) -> Result<Vec<Discovered>, StoreError>;

    /// The discovered identity `id`, if any.
    fn discovered(&self, id: i64) -> Result<Option<Discovered>, StoreError>;

    /// Records that discovered identity `id` is the (existing, non-retired)
    /// agent `agent_id`. Refused if it was already adopted.
    fn mark_adopted(
        &self,
        id: i64,
        agent_id: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Discovered, StoreError>;

    /// Compares the definition an MCP server announces for `tool` with its
    /// pin (`hash` is the caller's hash of `definition`, `sha256:<64
    /// lowercase hex>`; `definition` is its JSON text, at most
    /// [`validate::MAX_TOOL_DEFINITION_BYTES`]):
    ///
    /// - no pin: pins this definition ([`ToolPin::FIRST_USE`], audited as
    ///   `tool.pinned` by the `system` actor `first-use`) and returns
    ///   [`PinCheck::Pinned`];
    /// - the pinned hash: [`PinCheck::Matches`], without writing (even if a
    ///   different definition is pending: it stays pending);
    /// - another hash: [`PinCheck::Changed`]; the first time this hash is
    ///   seen it becomes the pending definition, audited as `tool.changed`,
    ///   so repeated announcements of it write nothing more.
    ///
    /// The decision path: when nothing needs writing it is one indexed read.
    /// Processes seeing a new tool at the same time agree on one pin.
    fn check_tool(
        &self,
        server: &str,
        tool: &str,
        hash: &str,
        definition: &str,
        now_us: i64,
    ) -> Result<PinCheck, StoreError>;

    /// The pin of `tool` of `server`, if any.
    fn tool_pin(&self, server: &str, tool: &str) -> Result<Option<ToolPin>, StoreError>;

    /// The tool pins of `server`, or of every server, ordered by server then
    /// tool.
    fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError>;

    /// Approves the pending definition of a tool: it becomes the pinned one
    /// (`pinned_by` the actor) and nothing is pending any more. `NotFound`
    /// without a pin; `InvalidState` without a pending change, or if
    /// `expected_hash` is given and is not the pending hash (the message
    /// names the pending hash), so that what is approved is exactly what was
    /// reviewed. Audited as `tool.approved`.
    fn approve_tool(
        &self,
        server: &str,
        tool: &str,
        expected_hash: Option<&str>,
        actor: &Actor,
        now_us: i64,
    ) -> Result<ToolPin, StoreError>;

    /// Pins tools of `server` to the `(tool, hash)` pairs of a lock file,
    /// creating or moving each pin (`pinned_by` the actor). A pin moved to
    /// the pending hash takes over the pending definition and clears it;
    /// otherwise its definition is unknown (`None`) and a pending different
    /// definition stays pending. Pins already at their hash are left alone.
    /// Returns how many pins were created or moved, each audited as
    /// `tool.pinned`. A tool listed twice is refused.
    fn pin_tools(
        &self,
        server: &str,
        pins: &[(String, String)],
        actor: &Actor,
        now_us: i64,
    ) -> Result<usize, StoreError>;

    /// Removes the pin of a tool, so that its next announcement pins it
    /// again on first use. `NotFound` without a pin. Audited as
    /// `tool.unpinned`.
    fn unpin_tool(
        &self,
        server: &str,
        tool: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(), StoreError>;

    /// What the decision path does about a request that needs a human approval (one write
    /// transaction): uses an approved, unexpired approval of its binding
    /// ([`ApprovalLookup::Used`], single use), reports a denied one, or returns the pending
    /// one, asking for it (`new`) when there is none. Not audited: the decision that asks is
    /// in the decision log.
    fn approval_for(&self, new: &NewApproval, now_us: i64) -> Result<ApprovalLookup, StoreError>;

    /// Charges a sliding-window counter (a rate limit or budget every node must agree on):
    /// forgets what has aged out of the window and adds the charge only if the window then
    /// holds at most `max`; callers charging the same key, on any node, take turns. Not
    /// audited: the decision that charges is in the decision log.
    fn charge(&self, charge: &NewCharge<'_>, now_us: i64) -> Result<ChargeOutcome, StoreError>;

    /// Takes back the charges `decision_id` made (its record could not be written, or a later
    /// rule turned it into a deny); returns how many.
    fn uncharge(&self, decision_id: &str) -> Result<usize, StoreError>;

    /// The labels of `owner`'s `session` added or renewed after `since_us`, sorted (session
    /// labels a fleet shares; see [`session_labels`]).
    fn session_labels(
        &self,
        owner: &str,
        session: &str,
        since_us: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Adds `labels` to `owner`'s `session` for `decision_id`, and renews the session's
    /// labels. Not audited: the decision is in the decision log.
    fn add_session_labels(
        &self,
        owner: &str,
        session: &str,
        labels: &[String],
        decision_id: &str,
        now_us: i64,
    ) -> Result<(), StoreError>;

    /// The call counts of `owner`'s `session` for `call_key` (one action on one resource) at
    /// `now_us`; a session idle since `since_us` counts nothing.
    fn session_calls(
        &self,
        owner: &str,
        session: &str,
        call_key: &str,
        since_us: i64,
        now_us: i64,
    ) -> Result<session_labels::CallCounts, StoreError>;

    /// Counts an allowed call of `owner`'s `session` for `decision_id` (a session idle since
    /// `since_us` starts again at one). Not audited.
    fn add_session_call(
        &self,
        owner: &str,
        session: &str,
        call_key: &str,
        decision_id: &str,
        since_us: i64,
        now_us: i64,
    ) -> Result<(), StoreError>;

    /// Takes back the session labels `decision_id` added and the call it counted; returns how
    /// many rows.
    fn forget_session_effects(&self, decision_id: &str) -> Result<usize, StoreError>;

    /// Gives back the approval `id` that `decision_id` used, when that decision could not be
    /// recorded (and so became a deny).
    fn unuse_approval(&self, id: &str, decision_id: &str) -> Result<(), StoreError>;

    /// Approves or denies the pending approval `id` as the person `approver`, for `reason`.
    /// Refused unless it is pending and unexpired, and unless `approver` may decide it (the
    /// agent's owner only, or anyone but the owner, as the approval says). Audited as
    /// `approval.approved` or `approval.denied`.
    fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<Approval, StoreError>;

    /// The approval `id`, if any.
    fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError>;

    /// Approvals decided (approved or denied) whose step no decision log has recorded yet,
    /// oldest first; at most `limit`. The decision point records them and then calls
    /// [`Store::approval_step_logged`].
    fn approval_steps_to_log(&self, limit: usize) -> Result<Vec<Approval>, StoreError>;

    /// Notes that the step of approval `id` is in a decision log.
    fn approval_step_logged(&self, id: &str, now_us: i64) -> Result<(), StoreError>;

    /// Approvals, newest first: every one, or those in `state`; at most `limit`.
    fn list_approvals(
        &self,
        state: Option<ApprovalState>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError>;

    // ---- governed policy versions (see [`policy_versions`]) ----

    /// Stores a proposed policy version (audited `policy.proposed`).
    fn propose_policy_version(
        &self,
        new: &NewPolicyVersion,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyVersion, StoreError>;

    /// `approver` approves `version`; never its author (audited `policy.approved`).
    fn approve_policy_version(
        &self,
        version: &str,
        approver: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyVersion, StoreError>;

    /// `by` rejects `version` for `reason` (audited `policy.rejected`).
    fn reject_policy_version(
        &self,
        version: &str,
        by: &str,
        reason: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyVersion, StoreError>;

    /// `by` makes `version` the active one: only a version that passed its tests, has enough
    /// approvals and was not rejected (audited `policy.activated`).
    fn activate_policy_version(
        &self,
        version: &str,
        by: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyActivation, StoreError>;

    /// `by` makes the version active before the current one active again (audited
    /// `policy.rolled_back`).
    fn rollback_policy_version(
        &self,
        by: &str,
        actor: &Actor,
        now_us: i64,
    ) -> Result<PolicyActivation, StoreError>;

    /// The stored version `version`, if any.
    fn policy_version(&self, version: &str) -> Result<Option<PolicyVersion>, StoreError>;

    /// The full version hash of `version` or of the one version it is a prefix of.
    fn resolve_policy_version(&self, version: &str) -> Result<String, StoreError>;

    /// Policy versions, newest first; at most `limit`.
    fn list_policy_versions(&self, limit: usize) -> Result<Vec<PolicyVersion>, StoreError>;

    /// Activations, newest first (the first is the active version); at most `limit`.
    fn policy_activations(&self, limit: usize) -> Result<Vec<PolicyActivation>, StoreError>;

    /// The version evaluated in shadow beside the active one, if any.
    fn policy_shadow(&self) -> Result<Option<String>, StoreError>;

    /// Starts evaluating `version` in shadow (`Some`), or stops (`None`); audited
    /// `policy.shadow_started` / `policy.shadow_stopped`.
    fn set_policy_shadow(
        &self,
        version: Option<&str>,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(), StoreError>;

    /// Approvals a policy version needs before activation (default 1).
    fn required_policy_approvals(&self) -> Result<u32, StoreError>;

    /// Sets the approvals a policy version needs (1 to 16; audited).
    fn set_required_policy_approvals(
        &self,
        n: u32,
        actor: &Actor,
        now_us: i64,
    ) -> Result<(), StoreError>;

    // ---- the nodes of a fleet (see [`nodes`]) ----

    /// Registers a decision point (audited `node.register`), or records that it is up again
    /// and where (audited `node.update` when its URL changed). Refused when the id is
    /// registered with another key.
    fn register_node(&self, new: &NewNode, actor: &Actor, now_us: i64) -> Result<Node, StoreError>;

    /// Stores node `id`'s latest signed checkpoint (canonical JSON) unless a larger one is
    /// there. Not audited.
    fn publish_node_checkpoint(
        &self,
        id: &str,
        tree_size: u64,
        checkpoint: &str,
        now_us: i64,
    ) -> Result<(), StoreError>;

    /// The node `id`, if registered.
    fn node(&self, id: &str) -> Result<Option<Node>, StoreError>;

    /// Every registered node, by id.
    fn nodes(&self) -> Result<Vec<Node>, StoreError>;

    /// Up to `limit` audit events with `seq > after_seq` (from the first
    /// when `None`), in order.
    fn list_audit(
        &self,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// The last audit event's `(seq, hash)`, if any: record it elsewhere to
    /// make truncation or a rewritten chain detectable later.
    fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError>;

    /// Recomputes the whole audit chain; returns how many events it checked,
    /// or [`StoreError::AuditChain`] naming the first event that fails.
    fn verify_audit(&self) -> Result<u64, StoreError>;
}
