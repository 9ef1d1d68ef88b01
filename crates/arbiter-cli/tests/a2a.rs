//! `arbiter a2a proxy` in front of a real A2A 1.0 agent, driven by a real A2A client: both built
//! with the official Python SDK, a2a-sdk 1.3.0 (`tests/a2a/server_agent.py`,
//! `tests/a2a/client_agent.py`). A skill allowed and one forbidden; another agent's task; lists
//! cut down to the caller's tasks; a stream relayed event by event; a changed card blocked until
//! approved; the served card; the caller's credential never reaching the agent; no decision
//! point; the records; a chain of three agents; a signed card and a tampered one.
//! `scripts/test` installs the SDK into `.test-env/` (see `scripts/test-deps`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use arbiter_testkit::{
    Arbiter, ClosedPort, PATIENCE, Reply, Running, Served, decision_id, free_port, http, python,
    run_ok, text, wait_for, wait_until, workspace_root,
};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

/// The JSON-RPC error code of a denial.
const DENIED: i64 = -32040;
/// How a denial's message begins: `denied by Arbiter: <reason> (decision <id>)`, the words of
/// every enforcement point.
const DENIAL_PREFIX: &str = "denied by Arbiter: ";
/// A2A's "task not found", answered for another agent's task.
const TASK_NOT_FOUND: i64 = -32001;
const CARD_PATH: &str = "/.well-known/agent-card.json";

fn arbiter() -> Command {
    let mut c = ARBITER.command();
    c.env("ARBITER_LOG", "warn");
    c
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/a2a").join(name)
}

/// `tests/a2a/server_agent.py` on a free port, with `args`; stopped when dropped.
struct Agent {
    port: u16,
    _process: Running,
}

impl Agent {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.arg(script("server_agent.py"))
            .arg(port.to_string())
            .arg("--quiet")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut process = Running::spawn(format!("the A2A agent {args:?}"), &mut cmd);
        process.wait_for_port(port);
        Agent {
            port,
            _process: process,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// `arbiter a2a proxy --name NAME` in front of `upstream`, deciding with `decide`
/// (`--policies DIR` or `--pdp URL`), its data in `data`; stopped when dropped.
struct Gateway {
    port: u16,
    process: Running,
}

impl Gateway {
    fn start(name: &str, upstream: &Agent, decide: &[&str], data: &Path, extra: &[&str]) -> Self {
        Self::start_at(free_port(), name, &upstream.url(), decide, data, extra)
    }

    fn start_at(
        port: u16,
        name: &str,
        upstream: &str,
        decide: &[&str],
        data: &Path,
        extra: &[&str],
    ) -> Self {
        let mut cmd = arbiter();
        cmd.args(["a2a", "proxy", "--name", name, "--upstream", upstream])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--public-url", &format!("http://127.0.0.1:{port}/")])
            .args(decide)
            .arg("--data")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut process = Running::spawn(format!("arbiter a2a proxy --name {name}"), &mut cmd);
        // Ready when it answers: a call without a credential is refused with 401.
        wait_until(
            &format!("arbiter a2a proxy --name {name} answers on port {port}"),
            PATIENCE,
            || {
                process.assert_running();
                http(
                    port,
                    "POST",
                    "/",
                    &[("Content-Type", "application/json")],
                    "{}",
                )
                .is_ok_and(|r| r.status == 401)
            },
        );
        Self { port, process }
    }

    /// Its public URL, as the served card names it.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// Runs `tests/a2a/client_agent.py` against `base` with `steps`, presenting `token` as
/// `Authorization: Bearer` on every request (the card fetch included); returns its report.
fn client(base: &str, token: Option<&str>, extra: &[&str], steps: &Value) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(script("client_agent.py")).arg(base);
    if let Some(t) = token {
        cmd.args(["--token", t, "--auth-mode", "header"]);
    }
    cmd.args(extra).arg("--steps").arg(steps.to_string());
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client_agent.py printed no report ({e}): status {:?}\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// The report's steps; panics when the card could not be resolved.
fn steps(report: &Value) -> &Vec<Value> {
    assert!(
        report.get("error").is_none(),
        "the client could not start: {report}"
    );
    report["steps"].as_array().unwrap()
}

/// The error of a step: code and message; panics when the step succeeded.
fn error_of(step: &Value) -> (i64, String) {
    let e = step
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {step}"));
    (
        e["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("an error without a code: {step}")),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Panics, showing the step, when it failed.
fn ok(step: &Value) -> &Value {
    assert!(step.get("error").is_none(), "the step failed: {step}");
    step
}

/// The task a `send` answered (a non-streamed SendMessage answers with one event).
fn sent_task(step: &Value) -> &Value {
    let task = &ok(step)["events"][0]["task"];
    assert!(task.is_object(), "no task in {step}");
    task
}

/// What the agent reported about the request it received (the artifact's data part).
fn agent_report(task: &Value) -> &Value {
    let data = &task["artifacts"][0]["parts"][1]["data"];
    assert!(
        data.is_object(),
        "the task has no report of the agent: {task}"
    );
    data
}

/// The kind of each event of a stream (`task`, `statusUpdate`, `artifactUpdate`, `message`).
fn kinds(step: &Value) -> Vec<String> {
    ok(step)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_object().unwrap().keys().next().unwrap().clone())
        .collect()
}

fn skill_ids(card: &Value) -> Vec<&str> {
    card["skills"]
        .as_array()
        .unwrap_or_else(|| panic!("a card without skills: {card}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

fn task_ids(step: &Value) -> Vec<String> {
    ok(step)["result"]["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One JSON-RPC request to the gateway on `port`, presenting `token`, without the SDK (and
/// without resolving the card); the answer, which must be HTTP 200.
fn rpc(port: u16, token: &str, body: &Value) -> Value {
    let auth = format!("Bearer {token}");
    let reply = http(
        port,
        "POST",
        "/",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("A2A-Version", "1.0"),
        ],
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.raw);
    reply.json()
}

/// `GET /.well-known/agent-card.json` from the gateway on `port`, presenting `token`.
fn card_of(port: u16, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    http(port, "GET", CARD_PATH, &[("Authorization", &auth)], "").unwrap()
}

/// A SendMessage naming `skill` in its metadata (plus `more` metadata).
fn send_body(skill: &str, text: &str, more: &Value) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut metadata = json!({"skill": skill});
    if let Value::Object(m) = more {
        metadata.as_object_mut().unwrap().extend(m.clone());
    }
    json!({
        "jsonrpc": "2.0", "id": format!("send-{n}"), "method": "SendMessage",
        "params": {"message": {
            "messageId": format!("m-{n}"), "role": "ROLE_USER",
            "parts": [{"text": text}], "metadata": metadata}},
    })
}

/// A raw SendMessage naming `skill` to the gateway on `port`; the answer.
fn raw_send(port: u16, token: &str, skill: &str, text: &str) -> Value {
    rpc(port, token, &send_body(skill, text, &Value::Null))
}

/// The error of a raw JSON-RPC answer, if it is one: code and message.
fn raw_error(answer: &Value) -> Option<(i64, String)> {
    let e = answer.get("error")?;
    Some((
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Asserts `message` is a denial as the gateway words it: `denied by Arbiter: <reason> (decision
/// <id>)`.
fn assert_denial(code: i64, message: &str, reason: &str) -> String {
    assert_eq!(code, DENIED, "{message}");
    assert!(
        message.starts_with(DENIAL_PREFIX),
        "a denial's message begins with {DENIAL_PREFIX:?}: {message}"
    );
    assert!(
        message.contains(reason),
        "{message:?} should give {reason:?}"
    );
    decision_id(message)
}

/// The one record matching `pred` in `records`; panics listing them when there is not exactly
/// one.
fn the_record<'a>(records: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = records.iter().filter(|r| pred(r)).collect();
    match found.as_slice() {
        [one] => one,
        [] => panic!("no record of {what} among: {records:#?}"),
        more => panic!("{} records of {what}: {more:#?}", more.len()),
    }
}

/// Whether record `r` decided a message (not one of the skills a served card lists).
fn is_message(r: &Value) -> bool {
    r["action"] == "send_message" && r["context"].get("parts").is_some()
}

const WORKER_POLICIES: &str = r#"
@id("agents-may-use-the-worker")
@agent_reason("the test agents may use the worker")
permit (principal is Agent, action, resource == Agent::"worker");

@id("no-delete-records")
@agent_reason("deleting records is not for agents")
forbid (principal, action == Action::"send_message", resource == Agent::"worker")
when { context has skill && context.skill == "delete_records" };
"#;

/// A directory with `policies/worker.cedar`, and `data/` with agents `alice` and `bob`;
/// returns (policies, data, alice's key, bob's key).
fn worker_setup(dir: &Path) -> (PathBuf, PathBuf, String, String) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("worker.cedar"), WORKER_POLICIES).unwrap();
    let data = dir.join("data");
    let alice = ARBITER.agent_with_key(&data, "alice", "platform", &[]).key;
    let bob = ARBITER.agent_with_key(&data, "bob", "platform", &[]).key;
    (policies, data, alice, bob)
}

fn policies_arg(policies: &Path) -> [&str; 2] {
    ["--policies", policies.to_str().unwrap()]
}

#[test]
fn a_skill_is_decided_per_message_and_the_card_lists_only_allowed_skills() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, _) = worker_setup(dir.path());
    let agent = Agent::start(&[], &[]);
    let gateway = Gateway::start("worker", &agent, &policies_arg(&policies), &data, &[]);

    let report = client(
        &gateway.url(),
        Some(&alice),
        &[],
        &json!([
            {"op": "get_card"},
            {"op": "get_card_raw"},
            {"op": "send", "text": "summarize this", "message_metadata": {"skill": "summarize"}},
            {"op": "send", "text": "delete everything", "message_metadata": {"skill": "delete_records"}},
            {"op": "send", "text": "this message names no skill"},
            {"op": "raw", "body": {"jsonrpc": "2.0", "id": "raw-1", "method": "SendMessage", "params": {"message": {
                "messageId": "m-raw-1", "role": "ROLE_USER", "parts": [{"text": "delete"}],
                "metadata": {"skill": "delete_records"}}}}},
        ]),
    );
    let r = steps(&report);

    // The served card: only the skill alice may use, and every interface at the gateway (an
    // SDK client sends its calls to the card's URL, so this is what keeps it on the gateway).
    let card = &ok(&r[0])["result"];
    assert_eq!(skill_ids(card), ["summarize"], "{card}");
    let interfaces = card["supportedInterfaces"].as_array().unwrap();
    assert!(!interfaces.is_empty(), "{card}");
    for i in interfaces {
        assert_eq!(i["url"], gateway.url(), "{card}");
    }
    assert_eq!(r[1]["status"], 200, "{}", r[1]);
    assert_eq!(skill_ids(&r[1]["result"]), ["summarize"], "{}", r[1]);
    assert!(
        !r[1]["result"].to_string().contains(&agent.url()),
        "the served card names the agent's own URL: {}",
        r[1]
    );

    // The allowed skill: the agent answered, and never saw alice's credential.
    let task = sent_task(&r[2]);
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{task}");
    let seen = agent_report(task);
    assert_eq!(seen["authorization"], "<absent>", "{seen}");
    assert!(
        seen["received_headers"].get("authorization").is_none(),
        "{seen}"
    );
    assert_eq!(seen["message_metadata"]["skill"], "summarize", "{seen}");
    assert!(
        seen["message_metadata"]["arbiter.delegation"].is_string(),
        "the gateway passes the agent an `arbiter.delegation` entry: {seen}"
    );
    assert!(
        !report.to_string().contains(&alice),
        "alice's key came back from the agent: {report}"
    );

    // The forbidden skill: denied, with the policy's reason and a decision id.
    let (code, message) = error_of(&r[3]);
    let denied = assert_denial(code, &message, "deleting records is not for agents");

    // No skill named: the forbid does not apply.
    assert_eq!(
        sent_task(&r[4])["status"]["state"],
        "TASK_STATE_COMPLETED",
        "{}",
        r[4]
    );

    // The same denial as raw JSON-RPC: code, message and `data.decision_id`.
    let answer = &r[5]["result"];
    assert_eq!(answer["id"], "raw-1", "{answer}");
    let (code, message) = raw_error(answer).unwrap_or_else(|| panic!("not denied: {answer}"));
    let raw_denied = assert_denial(code, &message, "deleting records is not for agents");
    assert_eq!(
        answer["error"]["data"]["decision_id"], raw_denied,
        "{answer}"
    );

    // No credential: a call is refused with 401 (the card: at the end).
    let call = http(
        gateway.port,
        "POST",
        "/",
        &[("Content-Type", "application/json"), ("A2A-Version", "1.0")],
        r#"{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":{}}"#,
    )
    .unwrap();
    assert_eq!(call.status, 401, "{}", call.raw);

    // The records, under a2a:worker, with what the message asked.
    let records = ARBITER.records(&data);
    let rec = ARBITER.record(&data, &denied);
    assert_eq!(rec["enforcement_point"], "a2a:worker", "{rec}");
    assert_eq!(rec["action"], "send_message", "{rec}");
    assert_eq!(rec["subject"]["id"], "alice", "{rec}");
    assert_eq!(rec["resource"], json!({"kind": "Agent", "id": "worker"}));
    assert_eq!(rec["outcome"], "deny", "{rec}");
    assert_eq!(rec["determining_policies"], json!(["no-delete-records"]));
    let ctx = &rec["context"];
    assert_eq!(ctx["skill"], "delete_records", "{ctx}");
    assert_eq!(ctx["part_count"], 1, "{ctx}");
    assert_eq!(ctx["bytes"], "delete everything".len(), "{ctx}");
    assert_eq!(ctx["parts"][0]["kind"], "text", "{ctx}");
    assert_eq!(ctx["parts"][0]["bytes"], "delete everything".len(), "{ctx}");
    assert_eq!(ctx["metadata"]["skill"], "delete_records", "{ctx}");
    assert_eq!(ctx["chain"], json!([]), "{ctx}");
    assert_eq!(ctx["streaming"], false, "{ctx}");
    let allowed = the_record(&records, "the allowed summarize", |r| {
        is_message(r) && r["outcome"] == "allow" && r["context"]["skill"] == "summarize"
    });
    assert_eq!(allowed["enforcement_point"], "a2a:worker", "{allowed}");
    assert_eq!(allowed["subject"]["id"], "alice", "{allowed}");
    assert_eq!(
        allowed["context"]["parts"][0]["bytes"],
        "summarize this".len()
    );
    let unnamed = the_record(&records, "the message naming no skill", |r| {
        is_message(r) && r["context"]["parts"][0]["bytes"] == "this message names no skill".len()
    });
    assert!(unnamed["context"].get("skill").is_none(), "{unnamed}");

    // The card is public in A2A (the SDK's resolver fetches it without a credential): without
    // one it lists no skill, and no decision is taken for it.
    let before = ARBITER.records(&data).len();
    let card = http(gateway.port, "GET", CARD_PATH, &[], "").unwrap();
    assert_eq!(
        card.status, 200,
        "the card without a credential: {}",
        card.raw
    );
    let anonymous: Value = serde_json::from_str(&card.body).unwrap();
    assert!(
        anonymous
            .get("skills")
            .is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)),
        "no skill without a credential: {anonymous}"
    );
    assert_eq!(
        anonymous["supportedInterfaces"][0]["url"].as_str().unwrap(),
        gateway.url()
    );
    assert_eq!(
        ARBITER.records(&data).len(),
        before,
        "an anonymous card costs no decision"
    );
}

#[test]
fn another_agents_task_is_not_found_and_lists_hold_only_own_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, bob) = worker_setup(dir.path());
    let agent = Agent::start(&[], &[]);
    let gateway = Gateway::start("worker", &agent, &policies_arg(&policies), &data, &[]);
    let summarize = json!({"skill": "summarize"});

    // Alice starts a long task.
    let report = client(
        &gateway.url(),
        Some(&alice),
        &[],
        &json!([{"op": "send", "text": "slow job", "return_immediately": true, "message_metadata": summarize}]),
    );
    let alices = sent_task(&steps(&report)[0])["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob has a task of his own, and cannot reach alice's in any way.
    let report = client(
        &gateway.url(),
        Some(&bob),
        &[],
        &json!([
            {"op": "send", "text": "quick", "message_metadata": summarize},
            {"op": "get_task", "task_id": alices},
            {"op": "cancel_task", "task_id": alices},
            {"op": "subscribe", "task_id": alices},
            {"op": "list_push_configs", "task_id": alices},
            {"op": "send", "text": "continue it", "task_id": alices, "message_metadata": summarize},
            {"op": "list_tasks"},
        ]),
    );
    let r = steps(&report);
    let bobs = sent_task(&r[0])["id"].as_str().unwrap().to_owned();
    for (i, what) in [
        (1, "GetTask"),
        (2, "CancelTask"),
        (3, "SubscribeToTask"),
        (4, "ListTaskPushNotificationConfigs"),
        (5, "SendMessage continuing the task"),
    ] {
        let (code, message) = error_of(&r[i]);
        assert_eq!(
            code, TASK_NOT_FOUND,
            "{what} of alice's task by bob: {message}"
        );
        assert!(
            !r[i].to_string().contains("slow job"),
            "{what}: alice's task leaked: {}",
            r[i]
        );
    }
    assert_eq!(task_ids(&r[6]), [bobs], "bob's list: {}", r[6]);

    // Alice sees hers, not bob's, and can still cancel it.
    let report = client(
        &gateway.url(),
        Some(&alice),
        &[],
        &json!([
            {"op": "list_tasks"},
            {"op": "get_task", "task_id": alices},
            {"op": "cancel_task", "task_id": alices},
        ]),
    );
    let r = steps(&report);
    assert_eq!(
        task_ids(&r[0]),
        std::slice::from_ref(&alices),
        "alice's list: {}",
        r[0]
    );
    assert_eq!(ok(&r[1])["result"]["id"], alices.as_str());
    assert_eq!(
        ok(&r[2])["result"]["status"]["state"],
        "TASK_STATE_CANCELED",
        "{}",
        r[2]
    );

    // Bob's attempts are recorded as denials.
    let records = ARBITER.records(&data);
    for action in ["get_task", "cancel_task", "subscribe_to_task"] {
        let rec = the_record(&records, &format!("bob's {action}"), |r| {
            r["action"] == action && r["subject"]["id"] == "bob"
        });
        assert_eq!(rec["outcome"], "deny", "{rec}");
        assert_eq!(rec["enforcement_point"], "a2a:worker", "{rec}");
        assert_eq!(rec["context"]["task_id"], alices.as_str(), "{rec}");
    }
}

#[test]
fn a_streamed_task_is_relayed_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, _) = worker_setup(dir.path());
    let agent = Agent::start(&[], &[]);
    let gateway = Gateway::start("worker", &agent, &policies_arg(&policies), &data, &[]);
    let steps_json = json!([
        {"op": "send", "text": "stream this", "stream": true, "message_metadata": {"skill": "summarize"}},
    ]);

    // The same stream, straight from the agent and through the gateway.
    let direct = client(&agent.url(), Some("agent-token"), &[], &steps_json);
    let through = client(&gateway.url(), Some(&alice), &[], &steps_json);
    let (direct, through) = (&steps(&direct)[0], &steps(&through)[0]);
    assert_eq!(
        kinds(direct),
        [
            "task",
            "statusUpdate",
            "statusUpdate",
            "artifactUpdate",
            "statusUpdate"
        ]
    );
    assert_eq!(kinds(through), kinds(direct), "{through}");
    let events = through["events"].as_array().unwrap();
    let task = events[0]["task"]["id"].as_str().unwrap();
    for e in &events[1..] {
        let (_, body) = e.as_object().unwrap().iter().next().unwrap();
        assert_eq!(body["taskId"], task, "an event of another task: {e}");
    }
    assert_eq!(
        events[4]["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    let artifact = &events[3]["artifactUpdate"]["artifact"]["parts"][1]["data"];
    assert_eq!(artifact["authorization"], "<absent>", "{artifact}");

    // Subscribing to a running task: its events come as the agent sends them (one a second
    // for ten seconds), not gathered at the end.
    let report = client(
        &gateway.url(),
        Some(&alice),
        &[],
        &json!([
            {"op": "send", "text": "slow job", "return_immediately": true, "message_metadata": {"skill": "summarize"}},
            {"op": "subscribe", "task_id": "$task"},
        ]),
    );
    let r = steps(&report);
    let task = sent_task(&r[0])["id"].as_str().unwrap().to_owned();
    let sub = ok(&r[1]);
    let events = sub["events"].as_array().unwrap();
    assert_eq!(events[0]["task"]["id"], task.as_str(), "{sub}");
    let last = events.last().unwrap();
    assert_eq!(
        last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{sub}"
    );
    let times: Vec<i64> = sub["times_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    assert!(
        times.last().unwrap() - times[0] >= 5000,
        "the events were not relayed as they came: arrival times {times:?} ms"
    );

    // The streamed message was decided as one.
    let records = ARBITER.records(&data);
    let rec = the_record(&records, "the streamed message", |r| {
        is_message(r) && r["context"]["streaming"] == true
    });
    assert_eq!(rec["outcome"], "allow", "{rec}");
    assert_eq!(rec["context"]["skill"], "summarize", "{rec}");
}

/// The card hash an approval takes: the `sha256:<64 hex>` after `--hash ` in `text`, else the
/// last one in it.
fn card_hash(text: &str) -> Option<String> {
    let at = |from: &str| -> Option<String> {
        let hex: String = from
            .strip_prefix("sha256:")?
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        (hex.len() == 64).then(|| format!("sha256:{hex}"))
    };
    if let Some((_, after)) = text.split_once("--hash ") {
        return at(after);
    }
    text.rmatch_indices("sha256:")
        .find_map(|(i, _)| at(&text[i..]))
}

#[test]
fn a_changed_card_is_blocked_until_approved() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, _) = worker_setup(dir.path());
    let toggle = dir.path().join("card-changed");
    let agent = Agent::start(&["--card-toggle-file", toggle.to_str().unwrap()], &[]);
    let gateway = Gateway::start("worker", &agent, &policies_arg(&policies), &data, &[]);

    // First use pins the card.
    let answer = raw_send(gateway.port, &alice, "summarize", "quick");
    assert!(raw_error(&answer).is_none(), "{answer}");

    // The agent changes its card (a new skill, a new version): every call is refused.
    std::fs::write(&toggle, "").unwrap();
    let (code, message) = wait_for(
        "the gateway refuses calls once the card changed",
        PATIENCE,
        || raw_error(&raw_send(gateway.port, &alice, "summarize", "quick")),
    );
    let refused = assert_denial(code, &message, "card");
    let served = card_of(gateway.port, &alice);
    if served.status == 200 {
        assert!(
            !skill_ids(&served.json()).contains(&"export_data"),
            "the changed card was served before approval: {}",
            served.raw
        );
    }
    let rec = ARBITER.record(&data, &refused);
    assert_eq!(rec["outcome"], "deny", "{rec}");
    assert_eq!(rec["enforcement_point"], "a2a:worker", "{rec}");

    // The administrator approves the new card by its hash.
    let hash = card_hash(&message)
        .or_else(|| card_hash(&rec.to_string()))
        .unwrap_or_else(|| {
            panic!("neither the denial nor its record names the card's hash: {message}\n{rec}")
        });
    run_ok(
        arbiter()
            .args([
                "a2a", "card", "approve", "--name", "worker", "--hash", &hash,
            ])
            .arg("--data")
            .arg(&data),
    );
    wait_for("calls pass once the card is approved", PATIENCE, || {
        raw_error(&raw_send(gateway.port, &alice, "summarize", "quick"))
            .is_none()
            .then_some(())
    });
    let report = client(
        &gateway.url(),
        Some(&alice),
        &[],
        &json!([{"op": "get_card"}]),
    );
    let card = &ok(&steps(&report)[0])["result"];
    assert_eq!(skill_ids(card), ["summarize", "export_data"], "{card}");
    assert_eq!(card["version"], "1.0.1", "{card}");
}

#[test]
fn every_call_is_denied_when_the_decision_point_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let closed = ClosedPort::new();
    let pdp = format!("http://{}", closed.addr());
    let agent = Agent::start(&[], &[]);
    let gateway = Gateway::start(
        "worker",
        &agent,
        &["--pdp", &pdp],
        &dir.path().join("gateway"),
        &[],
    );
    let key = "arb_notARealKey0000000000000000000000000000000000000";

    let answer = raw_send(gateway.port, key, "summarize", "quick");
    let (code, message) =
        raw_error(&answer).unwrap_or_else(|| panic!("allowed without a decision point: {answer}"));
    assert_eq!(code, DENIED, "{message}");
    assert!(
        message.starts_with(DENIAL_PREFIX) && message.len() > DENIAL_PREFIX.len() + 3,
        "a denial's message begins with {DENIAL_PREFIX:?} and gives its reason: {message}"
    );

    let answer = rpc(
        gateway.port,
        key,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "ListTasks", "params": {}}),
    );
    let (code, message) = raw_error(&answer)
        .unwrap_or_else(|| panic!("ListTasks passed without a decision point: {answer}"));
    assert_eq!(code, DENIED, "{message}");
    let card = card_of(gateway.port, key);
    if card.status == 200 {
        assert_eq!(
            skill_ids(&card.json()),
            Vec::<&str>::new(),
            "a card listing skills no decision allowed: {}",
            card.raw
        );
    }

    // Nothing reached the agent.
    let report = client(
        &agent.url(),
        Some("agent-token"),
        &[],
        &json!([{"op": "list_tasks"}]),
    );
    assert_eq!(
        task_ids(&steps(&report)[0]),
        Vec::<String>::new(),
        "{report}"
    );
}

#[test]
fn decisions_through_a_served_decision_point_are_recorded_there() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, _) = worker_setup(dir.path());
    let pdp: Served = ARBITER.serve(&policies, &data, &[]);
    let agent = Agent::start(&[], &[]);
    let gateway = Gateway::start(
        "worker",
        &agent,
        &["--pdp", &pdp.url()],
        &dir.path().join("gateway"),
        &[],
    );

    let allowed = raw_send(gateway.port, &alice, "summarize", "quick");
    assert!(raw_error(&allowed).is_none(), "{allowed}");
    let denied = raw_send(gateway.port, &alice, "delete_records", "quick");
    let (code, message) = raw_error(&denied).unwrap_or_else(|| panic!("allowed: {denied}"));
    let id = assert_denial(code, &message, "deleting records is not for agents");

    let rec = ARBITER.record(&data, &id);
    assert_eq!(rec["enforcement_point"], "a2a:worker", "{rec}");
    assert_eq!(rec["subject"]["id"], "alice", "{rec}");
    assert_eq!(rec["context"]["skill"], "delete_records", "{rec}");
    assert_eq!(rec["determining_policies"], json!(["no-delete-records"]));
}

const CHAIN_POLICIES: &str = r#"
@id("alice-may-call-b")
@agent_reason("alice may call agent b")
permit (principal == Agent::"alice", action, resource == Agent::"b");

@id("b-may-call-c-for-alice")
@agent_reason("agent b may call agent c only on alice's behalf")
permit (principal == Agent::"b", action, resource == Agent::"c")
when { context has chain && context.chain.contains("alice") };
"#;

#[test]
fn a_chain_of_three_agents_reaches_the_last_decision() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("chain.cedar"), CHAIN_POLICIES).unwrap();
    // Each gateway decides in-process with its own data directory (registry, log, key), as
    // gateways on different hosts would: B's knows alice, C's knows B (and alice).
    let b_data = dir.path().join("gateway-b");
    let c_data = dir.path().join("gateway-c");
    let alice = ARBITER
        .agent_with_key(&b_data, "alice", "platform", &[])
        .key;
    let b_key = ARBITER.agent_with_key(&c_data, "b", "platform", &[]).key;
    let alice_at_c = ARBITER
        .agent_with_key(&c_data, "alice", "platform", &[])
        .key;
    let decide = policies_arg(&policies);

    // B calls C through C's gateway with its own key, passing on the delegation entry it
    // received; B's gateway signs that entry, and C's gateway trusts B's gateway's key.
    let c_port = free_port();
    let c_url = format!("http://127.0.0.1:{c_port}/");
    let b = Agent::start(
        &["--relay-to", &c_url, "--relay-skill", "summarize"],
        &[("A2A_RELAY_TOKEN", &b_key)],
    );
    let b_gateway = Gateway::start("b", &b, &decide, &b_data, &[]);
    let b_gateway_key = std::fs::read_to_string(b_data.join("a2a-gateway.pub"))
        .expect("B's gateway keeps its public key in DATA/a2a-gateway.pub");
    let c = Agent::start(&[], &[]);
    let _c_gateway = Gateway::start_at(
        c_port,
        "c",
        &c.url(),
        &decide,
        &c_data,
        &["--trust-gateway-key", b_gateway_key.trim()],
    );

    // A (alice) calls B.
    let report = client(
        &b_gateway.url(),
        Some(&alice),
        &[],
        &json!([{"op": "send", "text": "hello along the chain", "message_metadata": {"skill": "summarize"}}]),
    );
    let task = sent_task(&steps(&report)[0]);
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{task}");
    let at_b = agent_report(task);
    let assertion = at_b["message_metadata"]["arbiter.delegation"]
        .as_str()
        .unwrap_or_else(|| panic!("B got no delegation entry: {at_b}"))
        .to_owned();
    let relayed = &at_b["relayed"];
    assert!(
        relayed.get("error").is_none(),
        "B's call to C failed: {relayed}"
    );
    assert_eq!(
        relayed["sent_metadata"]["arbiter.delegation"],
        assertion.as_str()
    );
    let c_task = &relayed["events"][0]["task"];
    assert_eq!(
        c_task["status"]["state"], "TASK_STATE_COMPLETED",
        "{relayed}"
    );
    assert_eq!(agent_report(c_task)["authorization"], "<absent>");

    // C's decision saw who B called for.
    let records = ARBITER.records(&c_data);
    let at_c = the_record(&records, "B's message to C", |r| {
        r["enforcement_point"] == "a2a:c" && is_message(r)
    });
    assert_eq!(at_c["subject"]["id"], "b", "{at_c}");
    assert_eq!(at_c["outcome"], "allow", "{at_c}");
    assert_eq!(at_c["context"]["chain"], json!(["alice"]), "{at_c}");
    assert_eq!(
        at_c["determining_policies"],
        json!(["b-may-call-c-for-alice"])
    );
    let records = ARBITER.records(&b_data);
    let at_b_rec = the_record(&records, "alice's message to B", |r| {
        r["enforcement_point"] == "a2a:b" && is_message(r)
    });
    assert_eq!(at_b_rec["subject"]["id"], "alice", "{at_b_rec}");
    assert_eq!(at_b_rec["context"]["chain"], json!([]), "{at_b_rec}");

    // B on its own account (no chain) may not call C.
    let answer = raw_send(c_port, &b_key, "summarize", "quick");
    let (code, message) = raw_error(&answer).unwrap_or_else(|| panic!("allowed: {answer}"));
    // (No policy permits it: the reason is the decision point's, not a policy's.)
    assert_denial(code, &message, "");

    // The assertion B received is B's to pass on, not alice's.
    let replay = send_body(
        "summarize",
        "quick",
        &json!({"arbiter.delegation": assertion}),
    );
    let answer = rpc(c_port, &alice_at_c, &replay);
    let (code, message) = raw_error(&answer).unwrap_or_else(|| panic!("allowed: {answer}"));
    assert_denial(code, &message, "delegation");
}

#[test]
fn a_signed_card_is_verified_and_a_tampered_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, _) = worker_setup(dir.path());
    let key = dir.path().join("card-key.jwk.json");
    let tamper = dir.path().join("tamper");
    std::fs::write(&tamper, "").unwrap();
    let agent = Agent::start(
        &[
            "--sign",
            "--sign-key-out",
            key.to_str().unwrap(),
            "--tamper-file",
            tamper.to_str().unwrap(),
        ],
        &[],
    );
    let signed = ["--card-key", key.to_str().unwrap(), "--require-signed-card"];
    let gateway = Gateway::start("worker", &agent, &policies_arg(&policies), &data, &signed);

    // Tampered from the start: nothing passes, and the card is not served.
    let answer = raw_send(gateway.port, &alice, "summarize", "quick");
    let (code, message) = raw_error(&answer)
        .unwrap_or_else(|| panic!("a call passed with a tampered card: {answer}"));
    assert_denial(code, &message, "signature");
    let served = card_of(gateway.port, &alice);
    assert_ne!(
        served.status, 200,
        "a tampered card was served: {}",
        served.raw
    );

    // The genuine card verifies: calls pass, the card is served.
    std::fs::remove_file(&tamper).unwrap();
    wait_for("calls pass with the genuine card", PATIENCE, || {
        raw_error(&raw_send(gateway.port, &alice, "summarize", "quick"))
            .is_none()
            .then_some(())
    });
    let report = client(
        &gateway.url(),
        Some(&alice),
        &[],
        &json!([
            {"op": "get_card"},
            {"op": "send", "text": "quick", "message_metadata": {"skill": "summarize"}},
        ]),
    );
    let r = steps(&report);
    assert_eq!(skill_ids(&ok(&r[0])["result"]), ["summarize"]);
    assert_eq!(sent_task(&r[1])["status"]["state"], "TASK_STATE_COMPLETED");

    // Tampered again: refused again.
    std::fs::write(&tamper, "").unwrap();
    let (code, message) = wait_for("a tampered card is refused", PATIENCE, || {
        raw_error(&raw_send(gateway.port, &alice, "summarize", "quick"))
    });
    assert_denial(code, &message, "signature");

    // An unsigned card where a signature is required: refused.
    let unsigned = Agent::start(&[], &[]);
    let data2 = dir.path().join("data2");
    let alice2 = ARBITER.agent_with_key(&data2, "alice", "platform", &[]).key;
    let gateway2 = Gateway::start(
        "worker",
        &unsigned,
        &policies_arg(&policies),
        &data2,
        &signed,
    );
    let answer = raw_send(gateway2.port, &alice2, "summarize", "quick");
    let (code, message) =
        raw_error(&answer).unwrap_or_else(|| panic!("an unsigned card was accepted: {answer}"));
    assert_denial(code, &message, "sign");
    drop(gateway2);
    drop(gateway);
}

/// The gateway answers promptly with an error when its agent is gone, and never hangs.
#[test]
fn an_agent_that_is_gone_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, data, alice, _) = worker_setup(dir.path());
    let agent = Agent::start(&[], &[]);
    let mut gateway = Gateway::start("worker", &agent, &policies_arg(&policies), &data, &[]);
    let answer = raw_send(gateway.port, &alice, "summarize", "quick");
    assert!(raw_error(&answer).is_none(), "{answer}");
    drop(agent);
    let answer = raw_send(gateway.port, &alice, "summarize", "quick");
    let (code, message) =
        raw_error(&answer).unwrap_or_else(|| panic!("passed with no agent: {answer}"));
    assert!(code < 0, "{code} {message}");
    gateway.process.assert_running();
}
