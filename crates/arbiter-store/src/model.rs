//! The records the store keeps and the inputs that create or change them.
//!
//! These are plain data: validation lives in [`crate::validate`] and is
//! applied by every backend before anything is written. Times are Unix
//! microseconds (UTC) in an `i64`, named `*_us`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::StoreError;

/// Who made an administrative change; recorded in every audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `admin_token`, `cli` or `system` (see [`Actor::KINDS`]).
    pub kind: String,
    /// Who within that kind: the admin token's id, the OS user running the
    /// CLI, the subsystem name.
    pub id: String,
}

impl Actor {
    /// The actor kinds the store accepts.
    pub const KINDS: [&'static str; 3] = ["admin_token", "cli", "system"];

    /// A change made over the admin API with the admin token `token_id`.
    pub fn admin_token(token_id: impl Into<String>) -> Self {
        Self {
            kind: "admin_token".to_owned(),
            id: token_id.into(),
        }
    }

    /// A change made with the local CLI by `user`.
    pub fn cli(user: impl Into<String>) -> Self {
        Self {
            kind: "cli".to_owned(),
            id: user.into(),
        }
    }

    /// A change made by Arbiter itself (`component` names the part).
    pub fn system(component: impl Into<String>) -> Self {
        Self {
            kind: "system".to_owned(),
            id: component.into(),
        }
    }
}

/// `kind:id`, e.g. `cli:alice` or `admin_token:tok_7Gq2`, the form the CLI
/// shows and [`ToolPin::pinned_by`] records.
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// Declares a string-backed enum with `as_str`, `Display`, `FromStr` and
/// serde in the same spelling.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored and serialized spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Invalid {
                        field: $field,
                        problem: format!(
                            "`{other}` is not one of {}",
                            [$($text),+].join(", ")
                        ),
                    }),
                }
            }
        }
    };
}

text_enum! {
    /// The deployment environment an agent runs in.
    Environment, "environment" {
        /// Development.
        Dev = "dev",
        /// Staging / pre-production.
        Staging = "staging",
        /// Production.
        Prod = "prod",
    }
}

text_enum! {
    /// Lifecycle state of an agent. `Retired` is terminal.
    AgentStatus, "status" {
        /// May authenticate and be authorized.
        Active = "active",
        /// Temporarily blocked; can be made active again.
        Suspended = "suspended",
        /// Permanently out of service; no transition leaves this state.
        Retired = "retired",
    }
}

text_enum! {
    /// What a credential authenticates.
    CredentialKind, "credential kind" {
        /// An agent's API key; belongs to exactly one agent.
        AgentKey = "agent_key",
        /// A token for the admin API, with a role.
        AdminToken = "admin_token",
        /// A token an enforcement point uses to call the decision point.
        PepToken = "pep_token",
    }
}

text_enum! {
    /// What an enforcement point saw that the store did not know.
    DiscoveredKind, "discovered kind" {
        /// An unknown credential, identified by its fingerprint.
        Credential = "credential",
        /// An agent id that is not registered.
        AgentId = "agent_id",
    }
}

/// The roles an admin token can carry.
pub const ADMIN_ROLES: [&str; 2] = ["administrator", "auditor"];

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable slug, `^[a-z0-9][a-z0-9._-]{0,62}$`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Accountable person or team; never empty.
    pub owner: String,
    /// What the agent is for (free text, may be empty).
    pub purpose: String,
    /// Where it runs.
    pub environment: Environment,
    /// Lifecycle state.
    pub status: AgentStatus,
    /// Free-form attributes, available to policies.
    pub attributes: Map<String, Value>,
    /// When it was registered.
    pub created_us: i64,
    /// When its record last changed (not counting `last_seen_us`).
    pub updated_us: i64,
    /// When an enforcement point last saw it, if ever.
    pub last_seen_us: Option<i64>,
}

/// Input to [`Store::register_agent`](crate::Store::register_agent). New
/// agents start [`AgentStatus::Active`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAgent {
    /// Slug, `^[a-z0-9][a-z0-9._-]{0,62}$`.
    pub id: String,
    /// Human-readable name; not empty.
    pub name: String,
    /// Accountable person or team; not empty.
    pub owner: String,
    /// What the agent is for; may be empty.
    pub purpose: String,
    /// Where it runs.
    pub environment: Environment,
    /// Free-form attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// A partial update of an agent: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentPatch {
    /// New name.
    pub name: Option<String>,
    /// New owner.
    pub owner: Option<String>,
    /// New purpose.
    pub purpose: Option<String>,
    /// New environment.
    pub environment: Option<Environment>,
    /// Replaces the whole attribute map (no merge).
    pub attributes: Option<Map<String, Value>>,
}

impl AgentPatch {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.owner.is_none()
            && self.purpose.is_none()
            && self.environment.is_none()
            && self.attributes.is_none()
    }
}

/// Which agents [`Store::list_agents`](crate::Store::list_agents) returns;
/// every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFilter {
    /// Only agents in this state.
    pub status: Option<AgentStatus>,
    /// Only agents in this environment.
    pub environment: Option<Environment>,
    /// Only agents with exactly this owner.
    pub owner: Option<String>,
}

/// A stored credential: its lookup id and the hash of its secret, never the
/// secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Public lookup id chosen by the caller, e.g. `key_7Gq2…`.
    pub id: String,
    /// What it authenticates.
    pub kind: CredentialKind,
    /// The owning agent; set exactly for [`CredentialKind::AgentKey`].
    pub agent_id: Option<String>,
    /// Label.
    pub name: String,
    /// For admin tokens, one of [`ADMIN_ROLES`]; `None` otherwise.
    pub role: Option<String>,
    /// The verifier the caller computed, e.g. `sha256:<hex>`; opaque here.
    pub hash: String,
    /// When it was created.
    pub created_us: i64,
    /// When it stops being valid, if ever.
    pub expires_at_us: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_us: Option<i64>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// When it was last used, if ever.
    pub last_used_us: Option<i64>,
    /// The credential that replaced it in a rotation.
    pub replaced_by: Option<String>,
}

impl Credential {
    /// Whether the credential may authenticate at `now_us`: not revoked and
    /// not past its expiry. Agent status is the caller's to check.
    pub fn is_usable_at(&self, now_us: i64) -> bool {
        self.revoked_at_us.is_none() && self.expires_at_us.is_none_or(|exp| now_us < exp)
    }
}

/// Input to [`Store::insert_credential`](crate::Store::insert_credential) and
/// [`Store::rotate_credential`](crate::Store::rotate_credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCredential {
    /// Lookup id, 1–128 characters of `A-Z a-z 0-9 _ . : -`.
    pub id: String,
    /// What it authenticates.
    pub kind: CredentialKind,
    /// Required for agent keys, forbidden otherwise.
    pub agent_id: Option<String>,
    /// Label; may be empty.
    pub name: String,
    /// Required for admin tokens (one of [`ADMIN_ROLES`]), forbidden otherwise.
    pub role: Option<String>,
    /// The verifier, e.g. `sha256:<hex>`; never the plaintext secret.
    pub hash: String,
    /// Expiry; must be after `now` when given.
    pub expires_at_us: Option<i64>,
}

/// Which credentials [`Store::list_credentials`](crate::Store::list_credentials)
/// returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialFilter {
    /// Only this kind.
    pub kind: Option<CredentialKind>,
    /// Only credentials of this agent.
    pub agent_id: Option<String>,
    /// Also return revoked credentials.
    pub include_revoked: bool,
}

/// One observation of an unknown identity at an enforcement point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// Unknown credential or unknown agent id.
    pub kind: DiscoveredKind,
    /// A fingerprint (`fp_…`) for credentials, the agent id otherwise;
    /// never a plaintext secret.
    pub key: String,
    /// What the credential looked like: `openai-api-key`, `jwt`, `opaque`.
    pub shape: String,
    /// Client address.
    pub source: String,
    /// Which enforcement point saw it.
    pub enforcement_point: String,
    /// When.
    pub at_us: i64,
}

/// An unknown identity, aggregated over its sightings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    /// Row id.
    pub id: i64,
    /// Unknown credential or unknown agent id.
    pub kind: DiscoveredKind,
    /// Fingerprint or agent id.
    pub key: String,
    /// Shape of the most recent sighting.
    pub shape: String,
    /// Earliest sighting time.
    pub first_seen_us: i64,
    /// Latest sighting time.
    pub last_seen_us: i64,
    /// Number of sightings.
    pub count: u64,
    /// Distinct client addresses, most recently recorded first, at most
    /// [`MAX_DISCOVERED_SOURCES`].
    pub sources: Vec<String>,
    /// Distinct enforcement points, most recently recorded first, at most
    /// [`MAX_DISCOVERED_SOURCES`].
    pub enforcement_points: Vec<String>,
    /// The agent this identity was adopted as, if it was.
    pub adopted_as: Option<String>,
}

/// How many distinct sources and enforcement points a discovered identity
/// keeps.
pub const MAX_DISCOVERED_SOURCES: usize = 16;

/// The most discovered identities the store holds; sightings of new keys
/// beyond this are dropped (sightings are attacker-driven).
pub const MAX_DISCOVERED_ROWS: u64 = 100_000;

/// What [`Store::record_sightings`](crate::Store::record_sightings) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SightingsReport {
    /// Sightings that created a new discovered identity.
    pub inserted: usize,
    /// Sightings merged into an existing one.
    pub updated: usize,
    /// Sightings dropped: a new key while the table is full, or an empty key.
    pub dropped: usize,
}

/// One entry of the append-only, hash-chained audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When the change was made.
    pub at_us: i64,
    /// [`Actor::kind`].
    pub actor_kind: String,
    /// [`Actor::id`].
    pub actor_id: String,
    /// What was done: `agent.register`, `key.rotate`, `discovered.adopt`, ...
    pub action: String,
    /// The id of the object changed.
    pub target: String,
    /// Action-specific facts; never a secret or a credential hash.
    pub detail: Value,
    /// The previous event's `hash` (64 zeros after `sha256:` for the first).
    pub prev_hash: String,
    /// `sha256:<hex>` over `prev_hash`, a newline and the canonical JSON of
    /// the event; see the crate README.
    pub hash: String,
}

/// What the store holds for one tool of one MCP server: the definition an
/// administrator (or first use) approved, and a different definition seen
/// since, if any, pending approval.
///
/// Definition hashes are the caller's, `sha256:<64 lowercase hex>`; the
/// store does not recompute them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPin {
    /// The MCP server, as the gateway names it (its `--server-name`).
    pub server: String,
    /// The tool's name as the server announces it.
    pub tool: String,
    /// The approved definition hash.
    pub hash: String,
    /// The approved definition as JSON text; `None` when pinned from a lock
    /// file, which carries only the hash.
    pub definition: Option<String>,
    /// When the current hash was pinned or approved.
    pub pinned_at_us: i64,
    /// [`ToolPin::FIRST_USE`], or the [`Actor`] (in its `kind:id` form) who
    /// pinned or approved the current hash.
    pub pinned_by: String,
    /// A different definition hash announced since, pending approval.
    pub observed_hash: Option<String>,
    /// That definition as JSON text.
    pub observed_definition: Option<String>,
    /// When that different hash was first announced.
    pub observed_at_us: Option<i64>,
}

impl ToolPin {
    /// [`ToolPin::pinned_by`] of a pin made automatically the first time the
    /// tool was seen (trust on first use).
    pub const FIRST_USE: &'static str = "first-use";

    /// Whether a different definition was announced since the pin and is
    /// waiting for approval.
    pub fn is_changed(&self) -> bool {
        self.observed_hash
            .as_deref()
            .is_some_and(|observed| observed != self.hash)
    }
}

/// The outcome of [`Store::check_tool`](crate::Store::check_tool): an
/// announced definition compared with the pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PinCheck {
    /// The tool had no pin and was pinned now, to this definition (first use).
    Pinned,
    /// The definition is the pinned one.
    Matches,
    /// The definition differs from the pinned one: the tool must be blocked
    /// until an administrator approves the new definition.
    Changed {
        /// The hash that is pinned (approved).
        pinned_hash: String,
    },
}

text_enum! {
    /// Who may approve an approval (see [`Approval`]).
    Approvers, "approvers" {
        /// Any approver.
        Any = "any",
        /// Only the agent's owner.
        Owner = "owner",
        /// Anyone but the agent's owner.
        NotOwner = "not_owner",
    }
}

text_enum! {
    /// Where an approval stands.
    ApprovalState, "state" {
        /// Waiting for an approver.
        Pending = "pending",
        /// Approved: the identical request is allowed once before the expiry.
        Approved = "approved",
        /// Denied: the identical request is denied until the expiry.
        Denied = "denied",
        /// Approved and used by the one decision it allowed.
        Used = "used",
    }
}

/// A human approval asked for by a permit with `@require_approval`, bound to one exact request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approval {
    /// `apr_` and a UUIDv7.
    pub id: String,
    /// `sha256:` digest of what is approved: the agent, the user it acts for, the action, the
    /// resource, the request's context and the policy version.
    pub binding: String,
    pub agent_id: String,
    /// The agent's owner when the approval was asked for.
    pub agent_owner: String,
    pub action: String,
    /// `Type::"id"`.
    pub resource: String,
    /// What an approver reviews: the request as decided (its context, redacted as records are).
    pub request: serde_json::Value,
    pub policy_version: String,
    /// The permits that asked for it.
    pub policies: Vec<String>,
    pub approvers: Approvers,
    pub state: ApprovalState,
    pub created_us: i64,
    pub expires_us: i64,
    /// The decision that asked for it.
    pub decision_id: String,
    pub decided_by: Option<String>,
    pub decided_us: Option<i64>,
    pub reason: Option<String>,
    pub used_us: Option<i64>,
    pub used_by_decision: Option<String>,
}

/// What the decision path asks an approval for (see [`crate::Store::approval_for`]).
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// The id to give it if it is new (`apr_…`).
    pub id: String,
    pub binding: String,
    pub agent_id: String,
    pub agent_owner: String,
    pub action: String,
    pub resource: String,
    pub request: serde_json::Value,
    pub policy_version: String,
    pub policies: Vec<String>,
    pub approvers: Approvers,
    pub expires_us: i64,
    pub decision_id: String,
}

/// What the store knows about a request's approval (see [`crate::Store::approval_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalLookup {
    /// An approved, unexpired approval: now used by the decision that looked it up.
    Used(Approval),
    /// A denied, unexpired approval: the request stays denied until it expires.
    Denied(Approval),
    /// Nothing usable: a new pending approval (or the one already pending) for the request.
    Pending(Approval),
}

text_enum! {
    /// Where a governed policy version stands. Whether it is approved enough to activate
    /// depends on its approvals and the configured number required.
    PolicyVersionState, "policy version state" {
        /// Stored, awaiting approvals (or approved and activatable).
        Proposed = "proposed",
        /// Rejected by an administrator; terminal.
        Rejected = "rejected",
    }
}

text_enum! {
    /// How a policy version became active.
    ActivationKind, "activation kind" {
        /// `arbiter policy activate`.
        Activate = "activate",
        /// `arbiter policy rollback`: back to the version active before.
        Rollback = "rollback",
    }
}

/// One file of a policy version, by its path relative to the policy directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFile {
    pub path: String,
    pub text: String,
}

/// A policy version to store (see [`crate::Store::propose_policy_version`]).
#[derive(Debug, Clone)]
pub struct NewPolicyVersion {
    /// The content hash (`sha256:…`) the policy engine computes for the files.
    pub version: String,
    /// Who proposes it: the administrator's name.
    pub author: String,
    pub message: String,
    pub files: Vec<PolicyFile>,
    /// Each policy's `@owner`, by policy id.
    pub owners: std::collections::BTreeMap<String, String>,
    pub tests_passed: u64,
    /// Failed and malformed test cases.
    pub tests_failed: u64,
}

/// An administrator's approval of a policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyApproval {
    pub approver: String,
    pub at_us: i64,
}

/// A stored policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    pub version: String,
    pub author: String,
    pub message: String,
    pub proposed_us: i64,
    pub files: Vec<PolicyFile>,
    pub owners: std::collections::BTreeMap<String, String>,
    pub tests_passed: u64,
    pub tests_failed: u64,
    pub state: PolicyVersionState,
    pub rejected_by: Option<String>,
    pub rejected_us: Option<i64>,
    pub rejected_reason: Option<String>,
    /// Oldest first.
    pub approvals: Vec<PolicyApproval>,
}

/// One activation of a policy version (the latest is the active version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyActivation {
    pub seq: i64,
    pub version: String,
    pub kind: ActivationKind,
    pub by: String,
    pub at_us: i64,
}

/// One charge to a sliding-window counter that every node sharing the store must agree on:
/// a rate limit (each call charges one) or a budget (each call charges its amount). See
/// [`crate::Store::charge`].
#[derive(Debug, Clone)]
pub struct NewCharge<'a> {
    /// The counter: who and which rule, e.g. `limit:<agent>:<policy id>`.
    pub key: &'a str,
    /// What this call charges (millionths of a unit, or one million per call).
    pub amount: i64,
    /// The most the window may hold.
    pub max: i64,
    /// The window's length.
    pub window_us: i64,
    /// The decision charging it (to take the charge back, see [`crate::Store::uncharge`]).
    pub decision_id: &'a str,
}

/// What [`crate::Store::charge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged.
    Charged,
    /// Refused: the window holds `spent`, and the charge would pass the maximum. `frees_in_us`:
    /// when enough of the window's charges will have aged out for it (`None` when it never
    /// fits: more than the maximum on its own).
    Refused {
        /// What the window holds.
        spent: i64,
        /// When the charge would fit.
        frees_in_us: Option<i64>,
    },
}

/// A decision point of a fleet, as registered in a shared store (see [`crate::Store::register_node`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Its node id (the decision log's `node_id`).
    pub id: String,
    /// Its decision log's checkpoint key, 64 hex characters.
    pub public_key: String,
    /// Where other nodes reach its API, if it said.
    pub url: Option<String>,
    pub registered_us: i64,
    pub last_seen_us: i64,
    /// The latest signed checkpoint it published (canonical JSON), and its size.
    pub checkpoint: Option<String>,
    pub checkpoint_size: Option<u64>,
}

/// What a node registers.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub id: String,
    pub public_key: String,
    pub url: Option<String>,
}
