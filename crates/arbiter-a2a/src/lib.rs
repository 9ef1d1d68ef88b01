//! Arbiter's A2A gateway: a reverse proxy in front of an agent that speaks the Agent2Agent
//! protocol (version 1.0, JSON-RPC over HTTP), deciding every message between agents.
//!
//! - [`card`]: the callee's agent card, fetched from the upstream, verified (JWS signatures)
//!   and pinned (a changed card is blocked until approved); the card served to a caller lists
//!   only the skills it may use.
//! - `wire`: what each A2A method asks (action, context) and the strict checks of its
//!   parameters.
//! - `tasks`: tasks bound to the caller that created them.
//! - `delegation`: the chain of agents a call is made for, carried from hop to hop in a
//!   signed assertion.
//! - `proxy`: the HTTP side — authentication, decisions, forwarding, the event streams.

pub mod card;
pub mod delegation;
pub mod proxy;
pub mod tasks;
pub mod wire;
