//! Arbiter's MCP gateway.
//!
//! The gateway sits between an agent (an MCP client) and an MCP server and decides, before the
//! server sees it, every `tools/call` (on the agent, the tool, its pinned definition, the
//! arguments and the session), every `resources/read` and `prompts/get`; it filters the lists
//! the server answers down to what the agent may use, pins tool definitions so that a changed
//! tool is blocked until approved, and records every decision in the decision log under
//! enforcement point `mcp:<server>`. Decisions come from a [`arbiter_pep::Decider`]: a decision
//! point embedded in the gateway or a running `arbiter serve`.
//!
//! - [`jsonrpc`]: strict framing; every message is parsed once and re-serialized.
//! - [`session`]: what happens to each message (transport-independent).
//! - [`stdio`]: the stdio transport.
//! - [`http`]: the streamable-HTTP transport, a reverse proxy in front of an MCP server.
//! - [`values`]: arguments as Cedar values, tool definition hashes.
//! - [`paths`]: path-like arguments in lexically normal form.
//! - `pins`: tool pin checks that answer repeats from memory and wait for the store only on
//!   the blocking pool.

pub mod http;
/// Strict JSON-RPC framing, shared with the other gateways.
pub use arbiter_pep::jsonrpc;
pub mod paths;
mod pins;
pub mod session;
pub mod stdio;
pub mod values;

pub use session::{
    ApprovalUrl, ApprovalUrlError, DenyAs, Gateway, GatewayConfig, Route, Session, Upstream,
};
