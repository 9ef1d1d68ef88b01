//! A fleet: three `arbiter serve` processes sharing one PostgreSQL store (`--store`), each with
//! its own data directory and decision log, behind no load balancer. What one node (or the
//! CLI) changes, every node enforces within a second; counters hold across the fleet; a node
//! that loses its database fails closed and says so.
//!
//! Needs PostgreSQL (`ARBITER_TEST_POSTGRES_URL`); each test creates and drops its database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use arbiter_testkit::{
    Arbiter, PATIENCE, Relay, Reply, Served, TestDb, approval_id, free_port, http, run_ok, text,
    wait_until,
};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

/// How soon a change must be enforced by every node.
const PROPAGATION: Duration = Duration::from_secs(1);

const POLICIES: &str = r#"
@id("read")
@owner("team-support")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"helpdesk/read_ticket");

@id("refunds")
@owner("team-billing")
@limit("6/hour")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"billing/refund");

@id("wires")
@owner("team-billing")
@require_approval
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"billing/wire");

@id("fetch")
@owner("team-support")
@session_label("untrusted_input")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"web/fetch");

@id("send")
@owner("team-support")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"mail/send");

@id("nothing-out-after-untrusted-input")
@owner("team-security")
forbid (principal, action == Action::"call_tool", resource == Tool::"mail/send")
when { context.session.labels.contains("untrusted_input") };

@id("search")
@owner("team-support")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"web/search");

@id("search-twice-a-minute")
@owner("team-support")
forbid (principal, action == Action::"call_tool", resource == Tool::"web/search")
when { context.session.calls_last_minute >= 2 };
"#;

/// Three nodes on one database.
struct Fleet {
    root: tempfile::TempDir,
    db: TestDb,
    policies: PathBuf,
    nodes: Vec<Served>,
}

impl Fleet {
    fn new(name: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let policies = root.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("policies.cedar"), POLICIES).unwrap();
        Self {
            db: TestDb::create(name),
            root,
            policies,
            nodes: Vec::new(),
        }
    }

    fn url(&self) -> String {
        self.db.url()
    }

    /// `arbiter ARGS --store URL --data <a data directory of no node>`.
    fn cli(&self, args: &[&str]) -> Output {
        run_ok(&mut self.cli_command(args))
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = ARBITER.command();
        c.args(args)
            .args(["--store", &self.url(), "--data"])
            .arg(self.root.path().join("cli-data"));
        c
    }

    /// Starts node `i` with `extra` arguments, its store at `store` (the database, or a relay).
    fn start(&mut self, store: &str, extra: &[&str]) {
        let i = self.nodes.len();
        let port = free_port();
        let data = self.root.path().join(format!("node-{i}"));
        let log = std::fs::File::create(self.root.path().join(format!("node-{i}.log"))).unwrap();
        let mut cmd = ARBITER.command();
        cmd.arg("serve");
        if !extra.contains(&"--governed") {
            cmd.arg("--policies").arg(&self.policies);
        }
        cmd.arg("--data")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--store",
                store,
                "--store-grace",
                "2s",
                "--log-level",
                "info",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        self.nodes.push(Served::start(&mut cmd, port));
    }

    fn agent(&self, id: &str) -> (String, String) {
        self.cli(&["agent", "register", id, "--owner", "ops"]);
        self.key(id)
    }

    /// A new key of agent `id`: `(secret, key id)`.
    fn key(&self, id: &str) -> (String, String) {
        let out = self.cli(&["agent", "key", "issue", id, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["key"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    }

    fn admin_token(&self, name: &str) -> String {
        let out = self.cli(&[
            "admin",
            "token",
            "create",
            "--name",
            name,
            "--role",
            "administrator",
            "--json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    }
}

fn call(port: u16, method: &str, path: &str, token: &str, body: &str) -> Reply {
    let auth = format!("Bearer {token}");
    http(
        port,
        method,
        path,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    )
    .unwrap()
}

/// Asks node `port` whether the holder of `key` may call `tool`.
fn evaluate(port: u16, key: &str, tool: &str) -> Value {
    evaluate_in(port, key, tool, None)
}

/// [`evaluate`] in session `session` (`Arbiter-Session`).
fn evaluate_in(port: u16, key: &str, tool: &str, session: Option<&str>) -> Value {
    let body = json!({
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": tool},
    })
    .to_string();
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    if let Some(id) = session {
        headers.push(("arbiter-session", id));
    }
    let reply = http(port, "POST", "/access/v1/evaluation", &headers, &body).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn allowed(port: u16, key: &str, tool: &str) -> bool {
    evaluate(port, key, tool)["decision"] == true
}

/// How long until `f` holds; panics past [`PATIENCE`].
fn time_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("{what}: not within {PATIENCE:?}");
}

/// Runs `f(port, key)` for every port at the same moment, one thread each; their results.
fn at_once<T: Send + 'static>(ports: &[u16], key: &str, f: fn(u16, &str) -> T) -> Vec<T> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(ports.len()));
    let threads: Vec<_> = ports
        .iter()
        .map(|&port| {
            let key = key.to_owned();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                f(port, &key)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn percentile(times: &mut [Duration], p: usize) -> Duration {
    times.sort();
    times[(times.len() * p).div_ceil(100).saturating_sub(1)]
}

/// A key revoked or an agent suspended through one node's admin API is refused by the other
/// two within a second (every sample, so the p99 too).
#[test]
fn a_revocation_or_suspension_on_one_node_is_enforced_by_every_node_within_a_second() {
    let mut fleet = Fleet::new("arbiter_fleet_revoke");
    let admin = fleet.admin_token("ops");
    let (first, _) = fleet.agent("bot");
    let keys: Vec<(String, String)> = (0..8).map(|_| fleet.key("bot")).collect();
    let url = fleet.url();
    for _ in 0..3 {
        fleet.start(&url, &[]);
    }
    let ports: Vec<u16> = fleet.nodes.iter().map(|n| n.port).collect();
    for &port in &ports {
        assert!(allowed(port, &first, "helpdesk/read_ticket"));
        let ready = http(port, "GET", "/readyz", &[], "").unwrap().json();
        assert_eq!(ready["identity_store"]["backend"], "postgres", "{ready}");
        assert_eq!(ready["identity_store"]["up"], true, "{ready}");
    }

    let mut times = Vec::new();
    for (i, (secret, id)) in keys.iter().enumerate() {
        // Seen (and cached) as valid everywhere first.
        for &port in &ports {
            assert!(allowed(port, secret, "helpdesk/read_ticket"));
        }
        let on = ports[i % 3];
        let reply = call(
            on,
            "DELETE",
            &format!("/v1/agents/bot/keys/{id}"),
            &admin,
            "",
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let revoked_at = Instant::now();
        for &port in ports.iter().filter(|&&p| p != on) {
            let took = time_until("the revoked key is refused", || {
                !allowed(port, secret, "helpdesk/read_ticket")
            });
            times.push(took.max(revoked_at.elapsed()));
        }
    }
    let p99 = percentile(&mut times, 99);
    eprintln!(
        "revocation reached the other nodes: p50 {:?}, p99 {p99:?}, max {:?} ({} samples)",
        percentile(&mut times, 50),
        times.last().unwrap(),
        times.len()
    );
    assert!(p99 < PROPAGATION, "p99 {p99:?}");

    // Suspended through node B: A and C refuse the agent's remaining key.
    let reply = call(ports[1], "POST", "/v1/agents/bot/suspend", &admin, "{}");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let suspended_at = Instant::now();
    for port in [ports[0], ports[2]] {
        time_until("the suspended agent is refused", || {
            !allowed(port, &first, "helpdesk/read_ticket")
        });
    }
    assert!(suspended_at.elapsed() < PROPAGATION * 2);
    let refused = evaluate(ports[0], &first, "helpdesk/read_ticket");
    assert_eq!(refused["decision"], false, "{refused}");

    // Each node keeps its own decision log: no node holds another's records.
    for i in 0..3 {
        assert!(fleet.root.path().join(format!("node-{i}/log")).is_dir());
    }
}

/// A rate limit of six calls an hour holds across three nodes under concurrent calls: six
/// allowed in all, whichever nodes took them; the others say the limit holds fleet-wide.
#[test]
fn a_rate_limit_holds_across_the_fleet_under_concurrent_calls() {
    let mut fleet = Fleet::new("arbiter_fleet_limit");
    let (key, _) = fleet.agent("bot");
    let url = fleet.url();
    for _ in 0..3 {
        fleet.start(&url, &[]);
    }
    let ports: Vec<u16> = fleet.nodes.iter().map(|n| n.port).collect();
    let answers: Vec<Value> = at_once(&ports, &key, |port, key| {
        (0..5)
            .map(|_| evaluate(port, key, "billing/refund"))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let allowed = answers.iter().filter(|a| a["decision"] == true).count();
    assert_eq!(allowed, 6, "{answers:#?}");
    let denied = answers
        .iter()
        .find(|a| a["decision"] == false)
        .unwrap()
        .to_string();
    assert!(denied.contains("rate limit reached"), "{denied}");
    // An unlimited permit is unaffected.
    assert!(evaluate(ports[0], &key, "helpdesk/read_ticket")["decision"] == true);
}

/// A session's labels and call counts follow it across nodes: untrusted input fetched through
/// node A blocks sending mail through node B in the same session, not in another; two searches
/// a minute in a session, whichever nodes took them.
#[test]
fn session_labels_hold_across_the_fleet() {
    let mut fleet = Fleet::new("arbiter_fleet_sessions");
    let (key, _) = fleet.agent("bot");
    let url = fleet.url();
    for _ in 0..2 {
        fleet.start(&url, &[]);
    }
    let (a, b) = (fleet.nodes[0].port, fleet.nodes[1].port);
    let decision =
        |port, tool, session| evaluate_in(port, &key, tool, Some(session))["decision"] == true;
    assert!(decision(b, "mail/send", "s1"), "nothing untrusted yet");
    assert!(decision(a, "web/fetch", "s1"));
    let denied = evaluate_in(b, &key, "mail/send", Some("s1"));
    assert_eq!(denied["decision"], false, "{denied}");
    assert!(decision(b, "mail/send", "s2"), "another session is clean");
    assert!(
        !decision(a, "mail/send", "s1"),
        "the node that added it agrees"
    );

    assert!(decision(a, "web/search", "s3"));
    assert!(decision(b, "web/search", "s3"), "one search so far");
    let third = evaluate_in(a, &key, "web/search", Some("s3"));
    assert_eq!(
        third["decision"], false,
        "two searches in the last minute: {third}"
    );
    assert!(
        decision(b, "web/search", "s4"),
        "another session counts apart"
    );
}

/// An approval is used once fleet-wide: the approved request, sent to all three nodes at
/// once, is allowed exactly once.
#[test]
fn an_approval_is_used_once_across_the_fleet() {
    let mut fleet = Fleet::new("arbiter_fleet_approval");
    let (key, _) = fleet.agent("bot");
    let url = fleet.url();
    for _ in 0..3 {
        fleet.start(&url, &[]);
    }
    let ports: Vec<u16> = fleet.nodes.iter().map(|n| n.port).collect();
    let asked = evaluate(ports[0], &key, "billing/wire");
    assert_eq!(asked["decision"], false, "{asked}");
    let id = approval_id(&asked.to_string());
    fleet.cli(&[
        "approval",
        "approve",
        &id,
        "--approver",
        "alice",
        "--reason",
        "checked",
    ]);
    let answers = at_once(&ports, &key, |port, key| {
        evaluate(port, key, "billing/wire")
    });
    let used = answers.iter().filter(|a| a["decision"] == true).count();
    assert_eq!(used, 1, "{answers:#?}");
    let shown = fleet.cli(&["approval", "show", &id, "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "used", "{shown}");
}

/// Governed nodes on one store follow an activation made anywhere within a second.
#[test]
fn a_policy_activation_reaches_every_governed_node() {
    let mut fleet = Fleet::new("arbiter_fleet_activation");
    let alice = fleet.admin_token("alice");
    let bob = fleet.admin_token("bob");
    let (key, _) = fleet.agent("bot");
    let data = fleet.root.path().join("cli-data");
    let url = fleet.url();
    let policy = |token: &str, args: &[&str]| -> String {
        let mut cmd = ARBITER.command();
        cmd.arg("policy")
            .args(args)
            .args(["--store", &url, "--data"])
            .arg(&data)
            .env("ARBITER_ADMIN_TOKEN", token);
        text(&run_ok(&mut cmd).stdout)
    };
    let root = fleet.root.path().to_path_buf();
    let version_dir = |name: &str, cedar: &str| -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policies.cedar"), cedar).unwrap();
        dir
    };
    let propose = |token: &str, dir: &Path| -> String {
        let out = policy(token, &["propose", dir.to_str().unwrap(), "-m", "fleet"]);
        out.split_whitespace().nth(1).unwrap().to_owned()
    };
    let v1 = propose(&alice, &version_dir("v1", POLICIES));
    policy(&bob, &["approve", &v1]);
    policy(&bob, &["activate", &v1]);
    for _ in 0..3 {
        fleet.start(&url, &["--governed"]);
    }
    let ports: Vec<u16> = fleet.nodes.iter().map(|n| n.port).collect();
    for &port in &ports {
        assert!(allowed(port, &key, "helpdesk/read_ticket"));
    }
    // v2 drops reading tickets; activated by alice through the CLI (another process).
    let v2 = propose(
        &bob,
        &version_dir(
            "v2",
            &POLICIES.replace("Tool::\"helpdesk/read_ticket\"", "Tool::\"helpdesk/none\""),
        ),
    );
    policy(&alice, &["approve", &v2]);
    policy(&alice, &["activate", &v2]);
    let activated = Instant::now();
    let mut times = Vec::new();
    for &port in &ports {
        times.push(time_until("the node enforces v2", || {
            http(port, "GET", "/readyz", &[], "").unwrap().json()["policy"]["version"] == v2
        }));
        assert!(!allowed(port, &key, "helpdesk/read_ticket"));
    }
    eprintln!("activation reached every node in {times:?}");
    assert!(
        activated.elapsed() < PROPAGATION * 2,
        "{:?}",
        activated.elapsed()
    );
    assert!(times.iter().all(|t| *t < PROPAGATION), "{times:?}");
}

/// A node cut off from its database keeps answering from what it knows for its grace, then
/// denies every credential it cannot confirm, says so in `/readyz` and `/metrics`, and
/// recovers when the database is back.
#[test]
fn a_node_that_loses_its_database_fails_closed_and_says_so() {
    let mut fleet = Fleet::new("arbiter_fleet_partition");
    let (key, _) = fleet.agent("bot");
    let relay = Relay::to_postgres(&fleet.url());
    fleet.start(&relay.url(), &[]);
    let port = fleet.nodes[0].port;
    assert!(allowed(port, &key, "helpdesk/read_ticket"));

    relay.cut();
    wait_until("the node fails closed", PATIENCE, || {
        !allowed(port, &key, "helpdesk/read_ticket")
    });
    let denied = evaluate(port, &key, "helpdesk/read_ticket");
    assert!(
        denied["context"]["decision_id"].is_string(),
        "a denial with a decision id: {denied}"
    );
    // (These policies read the session's labels, kept in the store: decisions deny as soon
    // as they cannot be read. Credentials alone are trusted for the grace, then the node says
    // it is not ready.)
    wait_until("the node reports the store down", PATIENCE, || {
        http(port, "GET", "/readyz", &[], "").unwrap().status == 503
    });
    let ready = http(port, "GET", "/readyz", &[], "").unwrap().json();
    assert_eq!(ready["identity_store"]["up"], false, "{ready}");
    assert!(ready["identity_store"]["problem"].is_string(), "{ready}");
    let metrics = http(port, "GET", "/metrics", &[], "").unwrap().body;
    assert!(
        metrics.contains("arbiter_store_up{backend=\"postgres\"} 0"),
        "{metrics}"
    );
    // The node's log names the problem and never the database password.
    let log = std::fs::read_to_string(fleet.root.path().join("node-0.log")).unwrap();
    assert!(log.contains("change feed"), "{log}");

    relay.restore();
    wait_until("the node recovers", PATIENCE, || {
        allowed(port, &key, "helpdesk/read_ticket")
    });
    let ready = http(port, "GET", "/readyz", &[], "").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
}

/// Each node keeps its own log and key: any node finds a decision another made (asking it,
/// signed with its own log key; no operator token leaves the node), and `log verify --fleet`
/// verifies every node's log against the key and checkpoint it registered.
#[test]
fn each_node_keeps_its_own_log_and_the_fleet_verifies_as_one() {
    let mut fleet = Fleet::new("arbiter_fleet_logs");
    let admin = fleet.admin_token("ops");
    let (key, _) = fleet.agent("bot");
    let url = fleet.url();
    for _ in 0..3 {
        fleet.start(&url, &[]);
    }
    let ports: Vec<u16> = fleet.nodes.iter().map(|n| n.port).collect();
    let made: Vec<String> = ports
        .iter()
        .map(|&port| {
            evaluate(port, &key, "helpdesk/read_ticket")["context"]["decision_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let node_ids: Vec<String> = (0..3)
        .map(|i| {
            std::fs::read_to_string(fleet.root.path().join(format!("node-{i}/node-id")))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    // A decision of node C, asked of node A.
    let path = format!("/v1/decisions/{}", made[2]);
    let found = wait_for_status(ports[0], &path, &admin, 200);
    let found = found.json();
    assert_eq!(
        found["answered_by"]["node_id"],
        node_ids[2].as_str(),
        "{found}"
    );
    assert!(found.to_string().contains(&made[2]), "{found}");
    // Unknown everywhere: 404 after asking the two others.
    let unknown = call(
        ports[0],
        "GET",
        "/v1/decisions/0190a0a0-0000-7000-8000-000000000000",
        &admin,
        "",
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body.contains("2 other node(s)"), "{}", unknown.body);
    // A peer request with a bad signature is refused, and never needs an operator token.
    let forged = http(
        ports[1],
        "GET",
        &path,
        &[
            ("arbiter-node", node_ids[0].as_str()),
            ("arbiter-node-time", &(now_ms()).to_string()),
            ("arbiter-node-signature", &"00".repeat(64)),
        ],
        "",
    )
    .unwrap();
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert!(forged.body.contains("does not verify"), "{}", forged.body);
    let stranger = http(
        ports[1],
        "GET",
        &path,
        &[
            ("arbiter-node", "not-a-node"),
            ("arbiter-node-time", &(now_ms()).to_string()),
            ("arbiter-node-signature", &"00".repeat(64)),
        ],
        "",
    )
    .unwrap();
    assert_eq!(stranger.status, 401, "{}", stranger.body);
    // Half the peer headers, or a time far from the node's clock: refused, never a lookup.
    let partial = http(
        ports[1],
        "GET",
        &path,
        &[("arbiter-node", node_ids[0].as_str())],
        "",
    )
    .unwrap();
    assert_eq!(partial.status, 401, "{}", partial.body);
    assert!(partial.body.contains("needs"), "{}", partial.body);
    let stale = http(
        ports[1],
        "GET",
        &path,
        &[
            ("arbiter-node", node_ids[0].as_str()),
            ("arbiter-node-time", &(now_ms() - 120_000).to_string()),
            ("arbiter-node-signature", &"00".repeat(64)),
        ],
        "",
    )
    .unwrap();
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(stale.body.contains("clock"), "{}", stale.body);

    // Every node publishes its checkpoint to the store.
    wait_until("every node published a checkpoint", PATIENCE, || {
        fleet
            .db
            .psql("SELECT count(*) FROM nodes WHERE checkpoint_size >= 1")
            .trim()
            == "3"
    });
    fleet.nodes.clear(); // stopped: their logs are complete on disk
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| fleet.root.path().join(format!("node-{i}")))
        .collect();
    let verify = |dirs: &[PathBuf]| -> Output {
        let mut cmd = fleet.cli_command(&["log", "verify", "--fleet"]);
        for d in dirs {
            cmd.arg("--node-data").arg(d);
        }
        cmd.output().unwrap()
    };
    let ok = verify(&dirs);
    assert!(
        ok.status.success(),
        "{}\n{}",
        text(&ok.stdout),
        text(&ok.stderr)
    );
    let out = text(&ok.stdout);
    assert!(out.contains("fleet ok: 3 node(s)"), "{out}");
    for id in &node_ids {
        assert!(out.contains(&format!("node {id} ok")), "{out}");
    }

    // A node left out is named.
    let partial = verify(&dirs[..2]);
    assert_eq!(partial.status.code(), Some(3), "{}", text(&partial.stdout));
    assert!(
        text(&partial.stderr).contains(&format!("node {} FAILED: not verified", node_ids[2])),
        "{}",
        text(&partial.stderr)
    );

    // A log rolled back to before what it published fails, even re-signed with its own key:
    // here, node B's log replaced by an empty one under the same key.
    let log_b = dirs[1].join("log");
    for entry in std::fs::read_dir(&log_b).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name != "log-signing.key" && name != "log-signing.pub" {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let rolled = verify(&dirs);
    assert_eq!(rolled.status.code(), Some(3), "{}", text(&rolled.stdout));
    assert!(
        text(&rolled.stderr).contains("does not hold the checkpoint"),
        "{}",
        text(&rolled.stderr)
    );
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// `GET path` on `port` until it answers `status` (a checkpoint may not cover a new decision
/// yet: 409 meanwhile).
fn wait_for_status(port: u16, path: &str, token: &str, status: u16) -> Reply {
    let start = Instant::now();
    loop {
        let reply = call(port, "GET", path, token, "");
        if reply.status == status || start.elapsed() > PATIENCE {
            assert_eq!(reply.status, status, "{}", reply.body);
            return reply;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
