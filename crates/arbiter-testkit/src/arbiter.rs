//! The `arbiter` binary under test, and what tests ask of it again and again.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::http::http;
use crate::process::{Running, free_port, run_ok};
use crate::text::{json_lines, text};
use crate::wait::{PATIENCE, wait_until};

/// The `arbiter` binary a test runs.
///
/// Cargo tells only the integration tests of `arbiter-cli` where it built the binary
/// (`env!("CARGO_BIN_EXE_arbiter")`, at compile time), so the path is a parameter:
///
/// ```text
/// const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Arbiter {
    path: &'static str,
}

/// An agent key as `arbiter agent key issue --json` prints it.
#[derive(Debug, Clone)]
pub struct Key {
    /// The secret (`arb_…`), for `Authorization: Bearer` or `ARBITER_AGENT_KEY`.
    pub key: String,
    /// Its public id (`key_…`), to revoke or rotate it.
    pub id: String,
}

impl Arbiter {
    /// The binary at `path`.
    pub const fn at(path: &'static str) -> Self {
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// A command running the binary, isolated from the environment the tests run in: every
    /// inherited `ARBITER_*` variable is removed (a developer's `ARBITER_DATA` or `ARBITER_PDP`
    /// must not change what a test means), and `LC_ALL=C`.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.path);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ARBITER_") {
                c.env_remove(name);
            }
        }
        c.env("LC_ALL", "C");
        c
    }

    /// Registers agent `id` with `owner` in the data directory `data` (`extra`: more
    /// `agent register` arguments, such as `--attributes JSON`) and issues it a key.
    pub fn agent_with_key(&self, data: &Path, id: &str, owner: &str, extra: &[&str]) -> Key {
        run_ok(
            self.command()
                .args(["agent", "register", id, "--owner", owner])
                .args(extra)
                .arg("--data")
                .arg(data),
        );
        self.issue_key(data, id)
    }

    /// Issues agent `id` another key.
    pub fn issue_key(&self, data: &Path, id: &str) -> Key {
        let out = run_ok(
            self.command()
                .args(["agent", "key", "issue", id, "--json", "--data"])
                .arg(data),
        );
        let issued: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`agent key issue --json` printed no JSON ({e})"));
        let field = |name: &str| match issued[name].as_str() {
            Some(s) => s.to_owned(),
            None => panic!("`agent key issue --json` printed no `{name}`: {issued}"),
        };
        Key {
            key: field("key"),
            id: field("id"),
        }
    }

    /// `arbiter approval approve ID --approver APPROVER` on `data`; panics when it fails.
    pub fn approve(&self, data: &Path, id: &str, approver: &str) {
        run_ok(
            self.command()
                .args(["approval", "approve", id, "--reason", "checked"])
                .args(["--approver", approver, "--data"])
                .arg(data),
        );
    }

    /// Creates an administrator token with `role` (`administrator`, `auditor`) named `name`;
    /// returns the secret.
    pub fn admin_token(&self, data: &Path, name: &str, role: &str) -> String {
        let out = run_ok(
            self.command()
                .args(["admin", "token", "create", "--name", name, "--role", role])
                .args(["--json", "--data"])
                .arg(data),
        );
        let created: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`admin token create --json` printed no JSON ({e})"));
        match created["token"].as_str() {
            Some(t) => t.to_owned(),
            None => panic!("`admin token create --json` printed no `token`: {created}"),
        }
    }

    /// Every record of the decision log in `data`, oldest first, as `arbiter log query`
    /// prints them.
    pub fn records(&self, data: &Path) -> Vec<Value> {
        json_lines(&text(
            &run_ok(self.command().args(["log", "query", "--data"]).arg(data)).stdout,
        ))
    }

    /// The record of decision `decision_id`; panics if the log in `data` does not hold it.
    pub fn record(&self, data: &Path, decision_id: &str) -> Value {
        self.records(data)
            .into_iter()
            .find(|r| r["decision_id"] == decision_id)
            .unwrap_or_else(|| panic!("decision {decision_id} is not in the log"))
    }

    /// `arbiter serve --policies POLICIES --data DATA --listen LISTEN`, not started: for a
    /// test that adds its own arguments or output, then starts it with [`Served::start`].
    pub fn serve_command(&self, policies: &Path, data: &Path, listen: &str) -> Command {
        let mut c = self.command();
        c.arg("serve")
            .arg("--policies")
            .arg(policies)
            .arg("--data")
            .arg(data)
            .args(["--listen", listen]);
        c
    }

    /// Starts `arbiter serve --log-level warn` with `policies`, `data` and `extra` on a free
    /// port of 127.0.0.1, its output discarded, and waits until it is ready.
    pub fn serve(&self, policies: &Path, data: &Path, extra: &[&str]) -> Served {
        let port = free_port();
        let mut cmd = self.serve_command(policies, data, &format!("127.0.0.1:{port}"));
        cmd.args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Served::start(&mut cmd, port)
    }
}

/// A running `arbiter serve`, stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct Served {
    /// The port it listens on (on 127.0.0.1, or on every address it listens on).
    pub port: u16,
    /// The process.
    pub process: Running,
}

impl Served {
    /// Spawns `cmd`, an `arbiter serve` that listens on `port`, and waits until
    /// `GET /healthz` on 127.0.0.1:`port` answers 200; panics if it exits first.
    pub fn start(cmd: &mut Command, port: u16) -> Self {
        let mut process = Running::spawn(format!("arbiter serve on port {port}"), cmd);
        wait_until(
            &format!("arbiter serve answers GET /healthz on port {port}"),
            PATIENCE,
            || {
                process.assert_running();
                http(port, "GET", "/healthz", &[], "").is_ok_and(|r| r.status == 200)
            },
        );
        Self { port, process }
    }

    /// `http://127.0.0.1:PORT`, for `--pdp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_drops_arbiter_variables_of_the_test_environment() {
        // `env` prints the environment the binary would get.
        let env = Arbiter::at("env");
        let printed = text(&run_ok(env.command().env("ARBITER_SET_BY_THE_TEST", "1")).stdout);
        assert!(printed.contains("ARBITER_SET_BY_THE_TEST=1"), "{printed}");
        assert!(printed.contains("LC_ALL=C"), "{printed}");
        let inherited: Vec<&str> = printed
            .lines()
            .filter(|l| l.starts_with("ARBITER_") && !l.starts_with("ARBITER_SET_BY_THE_TEST="))
            .collect();
        assert!(inherited.is_empty(), "{inherited:?}");
    }
}
