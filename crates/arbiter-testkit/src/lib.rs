//! The shared harness of Arbiter's integration tests.
//!
//! Integration tests drive real components: the `arbiter` binary, its served decision point,
//! nginx, PostgreSQL, the reference MCP servers. What they need to do that (start a process
//! and wait until it answers, stop it when the test ends, register an agent, read the decision
//! log, speak a little HTTP) lives here once, instead of in a copy per test file.
//!
//! Nothing here sleeps for a fixed time: a test waits for the condition it needs with
//! [`wait_until`] or [`wait_for`], under a generous deadline ([`PATIENCE`]), and fails naming
//! what did not happen. A busy machine makes a test slower, never wrong.
//!
//! | need | here |
//! | --- | --- |
//! | the `arbiter` binary, a clean environment, agents, keys, tokens, records | [`Arbiter`], [`Key`] |
//! | `arbiter serve` on a free port, ready | [`Arbiter::serve`], [`Served`] |
//! | any child process, stopped when dropped; its output line by line | [`Running`], [`Lines`] |
//! | a port that refuses connections (feature `tokio`) | `ClosedPort` |
//! | polling with a deadline | [`wait_until`], [`wait_for`] (and `_async` with feature `tokio`) |
//! | one HTTP/1.1 request | [`http`], [`Reply`] |
//! | a scratch directory, the workspace, secrets never stored | [`Scratch`], [`workspace_root`], [`assert_no_secrets`] |
//! | PostgreSQL (`ARBITER_TEST_POSTGRES_URL`) | [`TestDb`], [`psql`], [`postgres_url`] |
//! | the MCP servers and SDK (`ARBITER_TEST_ENV`), nginx | [`test_env`], [`npm_bin`], [`python`], [`nginx`] |
//!
//! A harness fails the test by panicking, with a message that names what went wrong; that is
//! its job, so the workspace's `panic` lint is expected here.

#![expect(
    clippy::panic,
    reason = "a test harness fails the test by panicking, naming what went wrong"
)]

mod arbiter;
mod env;
mod http;
mod postgres;
mod process;
mod relay;
mod text;
mod wait;

pub use crate::arbiter::{Arbiter, Key, Served};
pub use crate::env::{
    Scratch, assert_no_secrets, copy_dir, example, nginx, npm_bin, python, test_env, workspace_root,
};
pub use crate::http::{Reply, http};
pub use crate::postgres::{TestDb, postgres_url, postgres_url_for, psql};
#[cfg(feature = "tokio")]
pub use crate::process::ClosedPort;
pub use crate::process::{Lines, Running, free_port, run_ok, run_with_input};
pub use crate::relay::Relay;
pub use crate::text::{approval_id, decision_id, decision_ids, json_lines, text};
pub use crate::wait::{PATIENCE, wait_for, wait_until};
#[cfg(feature = "tokio")]
pub use crate::wait::{wait_for_async, wait_until_async};
