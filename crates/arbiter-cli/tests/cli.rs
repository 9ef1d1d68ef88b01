//! The `arbiter` binary, end to end: exit codes, messages, scaffolding, and a served PDP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arbiter_testkit::{
    Arbiter, PATIENCE, Served, example, free_port, http, run_with_input, text, wait_until,
};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn arbiter() -> Command {
    ARBITER.command()
}

fn quickstart() -> PathBuf {
    example("quickstart")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[test]
fn check_exit_codes_follow_the_decision() {
    let allow = run(arbiter()
        .args(["check", "--policies"])
        .arg(quickstart())
        .arg("--request")
        .arg(quickstart().join("requests/read-ticket.json")));
    assert_eq!(allow.status.code(), Some(0), "{}", text(&allow.stderr));
    let out: serde_json::Value = serde_json::from_slice(&allow.stdout).unwrap();
    assert_eq!(out["decision"], true);
    // The agent acts for alice: both evaluations are in the answer.
    assert_eq!(
        out["context"]["determining_policies"],
        serde_json::json!(["customers-use-helpdesk", "support-read-tickets"])
    );
    assert_eq!(out["context"]["evaluations"][1]["id"], "alice");

    let deny = run(arbiter()
        .args(["check", "--policies"])
        .arg(quickstart())
        .arg("--request")
        .arg(quickstart().join("requests/delete-ticket.json")));
    assert_eq!(deny.status.code(), Some(2));
    let out: serde_json::Value = serde_json::from_slice(&deny.stdout).unwrap();
    assert_eq!(out["decision"], false);

    let bad = run_with_input(
        arbiter()
            .args(["check", "--policies"])
            .arg(quickstart())
            .args(["--request", "-"]),
        br#"{"subject": {"type": "Agent"}}"#,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("`subject.id` is missing"),
        "{}",
        text(&bad.stderr)
    );

    let missing = run(arbiter()
        .args(["check", "--policies"])
        .arg(quickstart())
        .args(["--request", "/nonexistent.json"]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read `/nonexistent.json`"));
}

#[test]
fn validate_reports_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.cedar"),
        "permit(principal, action, resource);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "// comment\npermit(principal, action, resource)\nwhen { 1 + };\n",
    )
    .unwrap();
    let out = run(arbiter().args(["policy", "validate"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.cedar:3:"), "{err}");
    // One `error:` per line: the diagnostic's own, then the summary.
    assert!(
        err.lines().all(|l| l.matches("error:").count() <= 1),
        "doubled prefix: {err}"
    );
    assert!(err.contains("error: 1 error(s) in"), "{err}");

    std::fs::remove_file(dir.path().join("bad.cedar")).unwrap();
    let out = run(arbiter().args(["policy", "validate"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("version sha256:"));
}

/// `policy validate --request` checks sample requests against the schema: one line each,
/// naming the attribute at fault; exit 1 when any is invalid.
#[test]
fn validate_checks_sample_requests_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let valid = quickstart().join("requests/read-ticket.json");
    let undeclared = quickstart().join("requests/undeclared-argument.json");
    let call = |context: &str| {
        format!(
            r#"{{"subject": {{"type": "Agent", "id": "support-bot"}}, "action": {{"name": "call_tool"}},
                "resource": {{"type": "Tool", "id": "fs/read_text_file"}}, "context": {context}}}"#
        )
    };
    let several = dir.path().join("several.json");
    std::fs::write(
        &several,
        format!(
            "[{}, {}, {}]",
            call(r#"{"arguments": {"path": "/srv/a", "head": 2}}"#),
            call(r#"{"arguments": {"path": 7}}"#),
            call(r#"{"delegation": {"user": {"type": "User", "id": "alice"}}, "tool_pin": {"hash": "sha256:00"}}"#)
        ),
    )
    .unwrap();
    let batch = dir.path().join("batch.json");
    std::fs::write(
        &batch,
        r#"{"subject": {"type": "Agent", "id": "support-bot"}, "action": {"name": "http_request"},
            "evaluations": [
              {"resource": {"type": "Route", "id": "tickets:GET /tickets/{id}"}, "context": {"params": {"id": "42"}}},
              {"resource": {"type": "Route", "id": "tickets:GET /tickets"}, "context": {"query": {"sort": "age"}}},
              {"resource": {"type": "Tool", "id": "fs/read_text_file"}}
            ]}"#,
    )
    .unwrap();
    let missing = dir.path().join("missing.json");
    let out = run(arbiter()
        .args(["policy", "validate"])
        .arg(quickstart())
        .arg("--request")
        .arg(&valid)
        .arg("--request")
        .arg(&undeclared)
        .arg("--request")
        .arg(&several)
        .arg("--request")
        .arg(&batch)
        .arg("--request")
        .arg(&missing));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let (s, b) = (several.display(), batch.display());
    let expected = [
        format!("{}: valid", valid.display()),
        format!(
            "{}: invalid: `context.arguments.encoding` is not declared in the schema (for action \
             `call_tool`)",
            undeclared.display()
        ),
        format!("{s}[0]: valid"),
        format!(
            "{s}[1]: invalid: `context.arguments.path` must be a string, not a whole number, as \
             the schema declares it for action `call_tool`"
        ),
        format!(
            "{s}[2]: invalid: `context.tool_pin.pinned` is missing: the schema requires it (for \
             action `call_tool`)"
        ),
        format!("{b}[0]: valid"),
        format!(
            "{b}[1]: invalid: `context.query.sort` is not declared in the schema (for action \
             `http_request`)"
        ),
        format!(
            "{b}[2]: invalid: resource type `Tool` is not valid for `Action::\"http_request\"`"
        ),
    ];
    assert!(lines[0].starts_with("ok: "), "{stdout}");
    assert_eq!(lines[1..=expected.len()], expected, "{stdout}");
    assert!(
        lines[expected.len() + 1].starts_with(&format!(
            "{}: invalid: cannot read the file:",
            missing.display()
        )),
        "{stdout}"
    );

    // All valid: exit 0.
    let out = run(arbiter()
        .args(["policy", "validate"])
        .arg(quickstart())
        .arg("--request")
        .arg(&valid));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn validate_type_checks_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = run(arbiter().args(["policy", "schema"]));
    std::fs::write(dir.path().join("schema.cedarschema"), &schema.stdout).unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        "permit(principal is Agent, action == Action::\"call_tool\", resource is Tool)\nwhen { resource.sever == \"x\" };\n",
    )
    .unwrap();
    let out = run(arbiter().args(["policy", "validate"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("p.cedar:2:"), "{err}");
    assert!(err.contains("help:"), "{err}");
}

#[test]
fn policy_test_passes_and_fails_honestly() {
    let out = run(arbiter().args(["policy", "test"]).arg(quickstart()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        "@id(\"all\") permit(principal, action, resource);",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/t.json"),
        r#"[{"name": "wrongly expects deny", "request": {"subject": {"type": "U", "id": "u"}, "action": {"name": "a"}, "resource": {"type": "R", "id": "r"}}, "expect": "deny"},
            {"name": "right", "request": {"subject": {"type": "U", "id": "u"}, "action": {"name": "a"}, "resource": {"type": "R", "id": "r"}}, "expect": "allow", "determining_policies": ["all"]}]"#,
    )
    .unwrap();
    let out = run(arbiter().args(["policy", "test"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL  wrongly expects deny"), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn policy_test_runs_the_other_cases_when_one_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        "@id(\"all\") permit(principal, action, resource);",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/a.json"),
        r#"[{"name": "no expect", "request": {"subject": {"type": "U", "id": "u"}, "action": {"name": "a"}, "resource": {"type": "R", "id": "r"}}},
            {"name": "right", "request": {"subject": {"type": "U", "id": "u"}, "action": {"name": "a"}, "resource": {"type": "R", "id": "r"}}, "expect": "allow"}]"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("tests/b.json"), "[{").unwrap();
    let out = run(arbiter().args(["policy", "test"]).arg(dir.path()));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok    right"), "{stdout}");
    assert!(stdout.contains("tests/a.json: error: case [0]"), "{stdout}");
    assert!(stdout.contains("tests/b.json:"), "{stdout}");
    assert!(
        stdout.contains("1 passed, 0 failed, 2 malformed"),
        "{stdout}"
    );
}

#[test]
fn init_scaffolds_a_passing_directory_from_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mine");
    let out = run(arbiter().args(["policy", "init"]).arg(&target));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let test = run(arbiter().args(["policy", "test"]).arg(&target));
    assert_eq!(test.status.code(), Some(0), "{}", text(&test.stdout));
    let again = run(arbiter().args(["policy", "init"]).arg(&target));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("not empty"));
}

#[test]
fn version_and_help() {
    let out = run(arbiter().arg("--version"));
    assert!(text(&out.stdout).starts_with("arbiter 0."));
    let help = run(arbiter().args(["serve", "--help"]));
    let help = text(&help.stdout);
    assert!(
        help.contains("--policies") && help.contains("127.0.0.1:8180"),
        "{help}"
    );
}

#[test]
fn broken_pipe_exits_cleanly() {
    let mut child = arbiter()
        .args(["policy", "schema"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_answers_and_shuts_down_gracefully() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    // `Served::start` waits until /healthz answers 200.
    let mut served = Served::start(
        ARBITER
            .serve_command(
                &quickstart(),
                &data.path().join("d"),
                &format!("127.0.0.1:{port}"),
            )
            .args(["--log-format", "json"])
            .stderr(Stdio::piped()),
        port,
    );
    let body = std::fs::read_to_string(quickstart().join("requests/read-ticket.json")).unwrap();
    let reply = http(
        port,
        "POST",
        "/access/v1/evaluation",
        &[("content-type", "application/json")],
        &body,
    )
    .unwrap();
    assert!(reply.body.contains("\"decision\":true"), "{}", reply.raw);
    assert!(data.path().join("d").is_dir(), "data directory created");

    // SIGTERM: drain and exit 0.
    let out = served.process.terminate();
    assert_eq!(out.status.code(), Some(0));
    let logs = text(&out.stderr);
    let first: serde_json::Value =
        serde_json::from_str(logs.lines().next().unwrap()).expect("json logs");
    assert_eq!(first["level"], "INFO");
    assert!(logs.contains("shut down cleanly"), "{logs}");
}

#[test]
fn serve_refuses_a_broken_policy_directory_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), "permit(").unwrap();
    let out = run(arbiter()
        .args(["serve", "--policies"])
        .arg(dir.path())
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("p.cedar:1:"),
        "{}",
        text(&out.stderr)
    );
}

/// Starts `arbiter serve` with the quickstart policies on `data` listening on `listen` (whose
/// port is `port`); waits until it answers on loopback, failing the test if it exits first.
fn start_serve_on(data: &Path, listen: &str, port: u16, extra: &[&str]) -> Served {
    Served::start(
        ARBITER
            .serve_command(&quickstart(), data, listen)
            .args(["--log-level", "warn"])
            .args(extra)
            .stderr(Stdio::null()),
        port,
    )
}

fn decide(port: u16, body: &str) -> Option<String> {
    let reply = http(
        port,
        "POST",
        "/access/v1/evaluation",
        &[("content-type", "application/json")],
        body,
    )
    .ok()?;
    if reply.status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
    Some(json["context"]["decision_id"].as_str()?.to_owned())
}

/// SIGKILL at random moments under concurrent load, several rounds: every decision id a
/// client received is in the log after restart, and the log verifies.
#[test]
fn sigkill_under_load_loses_no_acknowledged_decision() {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().join("d");
    let body = std::fs::read_to_string(quickstart().join("requests/read-ticket.json")).unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..4u64 {
        let port = free_port();
        let mut served = start_serve_on(&data, &format!("127.0.0.1:{port}"), port, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (stop, answered, body) = (stop.clone(), answered.clone(), body.clone());
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(id) = decide(port, &body) {
                            got.push(id);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    got
                })
            })
            .collect();
        // Under load (a few decisions answered, however slow the machine), then a pseudo-random
        // moment 150 to 650 ms later. This sleep is the subject of the test, not a wait for
        // something: the kill must land at an arbitrary point of the load.
        wait_until("the load gets decisions answered", PATIENCE, || {
            answered.load(Ordering::Relaxed) >= 6
        });
        let nanos = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
        std::thread::sleep(Duration::from_millis(150 + (nanos ^ (round * 7919)) % 500));
        served.process.kill(); // SIGKILL
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            acknowledged.extend(w.join().unwrap());
        }
    }
    assert!(
        acknowledged.len() > 20,
        "the load produced too few decisions: {}",
        acknowledged.len()
    );

    // Restart once (recovery cuts any torn tail), stop cleanly, then check the log.
    let port = free_port();
    let mut served = start_serve_on(&data, &format!("127.0.0.1:{port}"), port, &[]);
    assert_eq!(served.process.terminate().status.code(), Some(0));

    let logged: std::collections::HashSet<String> = arbiter_log::read_records(&data.join("log"))
        .unwrap()
        .map(|r| r.unwrap().1.decision_id)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !logged.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged decisions lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost.first()
    );
    let report = arbiter_log::verify_dir(&data.join("log"), None, None).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
}

#[test]
fn key_issue_quiet_prints_only_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run(arbiter()
        .args([
            "agent",
            "register",
            "bot",
            "--owner",
            "o@example.com",
            "--data",
        ])
        .arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(arbiter()
        .args(["agent", "key", "issue", "bot", "--quiet", "--data"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let key = text(&out.stdout);
    assert!(key.starts_with("arb_"), "{key}");
    // The inventory says that what a running server saw reaches it with a delay.
    let out = run(arbiter()
        .args(["agent", "list", "--discovered", "--data"])
        .arg(&data));
    let listed = text(&out.stdout);
    assert!(listed.contains("may not be listed yet"), "{listed}");
    assert_eq!(key.trim_end().lines().count(), 1, "{key}");
    let out = run(arbiter()
        .args([
            "agent", "key", "issue", "bot", "--quiet", "--json", "--data",
        ])
        .arg(&data));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(arbiter().args(["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains("serve"), "{shell}: {script}");
        assert!(script.contains("completions"), "{shell}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("arbiter.bash");
    std::fs::write(&file, run(arbiter().args(["completions", "bash"])).stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let out = run(arbiter().args(["completions", "powershell-7"]));
    assert_eq!(out.status.code(), Some(2));
}

/// Secure by default: `serve` on an address other than loopback refuses to start without
/// `--require-auth` or `--insecure-allow-unauthenticated`, and says so naming both. (It used
/// to start and answer anyone.)
#[test]
fn serve_refuses_a_network_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:0", "0.0.0.0:8180"] {
        let out = run(arbiter()
            .args(["serve", "--policies"])
            .arg(quickstart())
            .arg("--data")
            .arg(dir.path().join("d"))
            .args(["--listen", listen])
            .env_remove("ARBITER_REQUIRE_AUTH")
            .env_remove("ARBITER_INSECURE_ALLOW_UNAUTHENTICATED"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{listen}: {stderr}");
        assert!(
            stderr.contains("--require-auth")
                && stderr.contains("--insecure-allow-unauthenticated")
                && stderr.contains(listen)
                && stderr.contains("not a loopback address"),
            "{stderr}"
        );
        assert!(
            !dir.path().join("d").exists(),
            "refused before touching the data"
        );
    }
    // Loopback, or either flag on the network address: it starts.
    for extra in [
        &["--require-auth"][..],
        &["--insecure-allow-unauthenticated"][..],
    ] {
        let port = free_port();
        let mut served = start_serve_on(
            &dir.path().join("d"),
            &format!("0.0.0.0:{port}"),
            port,
            extra,
        );
        served.process.kill();
    }
}

/// `serve --access-log FILE`: a JSON line per request, with the agent and the decision, and
/// never the credential; documented in `serve --help`.
#[test]
fn serve_writes_an_access_log_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = ARBITER
        .agent_with_key(&data, "bot", "o@example.com", &[])
        .key;
    let log = dir.path().join("access.log");
    let port = free_port();
    let _served = start_serve_on(
        &data,
        &format!("127.0.0.1:{port}"),
        port,
        &["--access-log", log.to_str().unwrap()],
    );
    let body = r#"{"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "helpdesk/read_ticket"}}"#;
    let reply = http(
        port,
        "POST",
        format!("/access/v1/evaluation?token={key}"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body,
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let answer: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let decision_id = answer["context"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let line_for_the_evaluation = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["path"] == "/access/v1/evaluation")
    };
    wait_until(
        "the access log has a line for the evaluation",
        PATIENCE,
        || line_for_the_evaluation().is_some(),
    );
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(
        !written.contains(&key),
        "the key is in the access log: {written}"
    );
    let line = line_for_the_evaluation().unwrap();
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], 200);
    assert_eq!(line["remote"], "127.0.0.1");
    assert_eq!(line["caller"]["kind"], "agent");
    assert_eq!(line["caller"]["agent_id"], "bot");
    assert!(
        line["caller"]["credential_id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    assert_eq!(line["enforcement_point"], "authzen");
    assert_eq!(line["decision_ids"], serde_json::json!([decision_id]));
    assert!(line["duration_us"].is_u64());

    let help = text(&run(arbiter().args(["serve", "--help"])).stdout);
    assert!(help.contains("--access-log <FILE|->"), "{help}");
}

/// An access log that cannot be written (a full device) fails no request and is reported
/// once, however many lines are lost.
#[test]
fn serve_reports_an_unwritable_access_log_once_and_serves_on() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut served = Served::start(
        ARBITER
            .serve_command(
                &quickstart(),
                &dir.path().join("d"),
                &format!("127.0.0.1:{port}"),
            )
            .args(["--access-log", "/dev/full"])
            .stderr(Stdio::piped()),
        port,
    );
    let body = std::fs::read_to_string(quickstart().join("requests/read-ticket.json")).unwrap();
    for _ in 0..3 {
        assert!(decide(port, &body).is_some(), "a decision failed");
    }
    // Every line so far is lost, and counted.
    let lost = || {
        http(port, "GET", "/metrics", &[], "")
            .map(|r| r.body)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("arbiter_access_log_lines_lost_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until(
        "four access log lines are counted as lost",
        PATIENCE,
        || lost() >= 4,
    );
    let out = served.process.terminate();
    assert_eq!(out.status.code(), Some(0));
    let logs = text(&out.stderr);
    assert_eq!(
        logs.matches("cannot write the access log").count(),
        1,
        "{logs}"
    );
}

const GOVERNED_V1: &str = r#"
@id("read-docs")
@owner("team-docs")
permit (principal, action == Action::"read", resource is Doc);
"#;

const GOVERNED_V2: &str = r#"
@id("read-public-docs")
@owner("team-docs")
permit (principal, action == Action::"read", resource == Doc::"public");
"#;

const GOVERNED_TESTS: &str = r#"[
  {"name": "a public doc is readable",
   "request": {"subject": {"type": "Agent", "id": "bot"}, "action": {"name": "read"},
               "resource": {"type": "Doc", "id": "public"}},
   "expect": "allow"}
]"#;

fn policy_dir(root: &Path, name: &str, cedar: &str, tests: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("policies.cedar"), cedar).unwrap();
    if let Some(t) = tests {
        std::fs::write(dir.join("tests/cases.json"), t).unwrap();
    }
    dir
}

/// Governed policy versions end to end: proposing needs an administrator and owners; the
/// author cannot approve; an auditor cannot; an unapproved or failing version cannot be
/// activated; `serve --governed` refuses to start with nothing active, enforces the active
/// version, follows an activation and a rollback without a restart, and its records name
/// the version; `diff` and `history` show what changed; the audit trail verifies.
#[test]
fn governed_versions_need_two_people_and_serve_follows_activations() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let alice = ARBITER.admin_token(&data, "alice", "administrator");
    let bob = ARBITER.admin_token(&data, "bob", "administrator");
    let carol = ARBITER.admin_token(&data, "carol", "auditor");
    let bot = ARBITER.agent_with_key(&data, "bot", "team-docs", &[]);
    let policy = |token: Option<&str>, args: &[&str]| -> Output {
        let mut c = arbiter();
        c.arg("policy").args(args).arg("--data").arg(&data);
        if let Some(t) = token {
            c.env("ARBITER_ADMIN_TOKEN", t);
        }
        run(&mut c)
    };
    let ok = |out: Output| -> String {
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let fails = |out: Output, needle: &str| {
        assert!(!out.status.success(), "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    };

    // Every policy needs an owner; proposing needs an administrator's token.
    let unowned = policy_dir(
        root.path(),
        "unowned",
        "@id(\"nobody\")\npermit (principal, action, resource);\n",
        None,
    );
    fails(
        policy(
            Some(&alice),
            &["propose", unowned.to_str().unwrap(), "-m", "x"],
        ),
        "add `@owner(\"team-or-person\")` to: `nobody` (policies.cedar:1)",
    );
    let v1_dir = policy_dir(root.path(), "v1", GOVERNED_V1, Some(GOVERNED_TESTS));
    let v1_arg = v1_dir.to_str().unwrap();
    fails(
        policy(None, &["propose", v1_arg, "-m", "docs"]),
        "ARBITER_ADMIN_TOKEN",
    );
    fails(
        policy(
            Some("arbadm_not-a-token"),
            &["propose", v1_arg, "-m", "docs"],
        ),
        "not a valid admin token",
    );
    fails(
        policy(Some(&carol), &["propose", v1_arg, "-m", "docs"]),
        "`auditor` role",
    );
    let out = ok(policy(
        Some(&alice),
        &["propose", v1_arg, "-m", "read docs"],
    ));
    assert!(
        out.contains("by alice") && out.contains("1 passed, 0 failed"),
        "{out}"
    );
    let v1 = out.split_whitespace().nth(1).unwrap().to_owned();
    assert!(v1.starts_with("sha256:"), "{out}");
    fails(
        policy(Some(&bob), &["propose", v1_arg, "-m", "again"]),
        "was proposed before",
    );

    // Nothing active: a governed server does not start.
    let refused = run(arbiter()
        .args(["serve", "--governed", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data));
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("no policy version is active"),
        "{}",
        text(&refused.stderr)
    );

    // Two people: not the author, not an auditor; then activation.
    fails(
        policy(Some(&alice), &["approve", &v1]),
        "who may not approve it",
    );
    fails(policy(Some(&carol), &["approve", &v1]), "`auditor` role");
    fails(
        policy(Some(&bob), &["activate", &v1]),
        "has 0 of the 1 approval(s)",
    );
    ok(policy(Some(&bob), &["approve", &v1[7..19]]));
    ok(policy(Some(&bob), &["activate", &v1]));

    let port = free_port();
    let _served = Served::start(
        ARBITER
            .command()
            .args(["serve", "--governed", "--log-level", "warn", "--data"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        port,
    );
    let decide = |doc: &str| -> serde_json::Value {
        let body = serde_json::json!({
            "subject": {"type": "Agent", "id": "bot"},
            "action": {"name": "read"},
            "resource": {"type": "Doc", "id": doc},
        });
        let auth = format!("Bearer {}", bot.key);
        http(
            port,
            "POST",
            "/access/v1/evaluation",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            &body.to_string(),
        )
        .unwrap()
        .json()
    };
    let first = decide("private");
    assert_eq!(first["decision"], true, "{first}");

    // A failing candidate is stored but never activated.
    let failing = policy_dir(
        root.path(),
        "failing",
        "@id(\"none\")\n@owner(\"team-docs\")\nforbid (principal, action, resource);\n",
        Some(GOVERNED_TESTS),
    );
    let out = policy(
        Some(&bob),
        &["propose", failing.to_str().unwrap(), "-m", "oops"],
    );
    assert_eq!(out.status.code(), Some(1));
    let failing_v = text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(text(&out.stdout).contains("FAIL"), "{}", text(&out.stdout));
    ok(policy(Some(&alice), &["approve", &failing_v]));
    fails(
        policy(Some(&alice), &["activate", &failing_v]),
        "failed 1 of its 1 tests",
    );
    ok(policy(
        Some(&alice),
        &["reject", &failing_v, "--reason", "its tests fail"],
    ));

    // v2 by bob, approved and activated by alice: the running server follows.
    let v2_dir = policy_dir(root.path(), "v2", GOVERNED_V2, Some(GOVERNED_TESTS));
    let out = ok(policy(
        Some(&bob),
        &[
            "propose",
            v2_dir.to_str().unwrap(),
            "-m",
            "public docs only",
        ],
    ));
    let v2 = out.split_whitespace().nth(1).unwrap().to_owned();
    ok(policy(Some(&alice), &["approve", &v2]));
    ok(policy(Some(&alice), &["activate", &v2]));
    wait_until(
        "the server enforces the activated version",
        PATIENCE,
        || decide("private")["decision"] == false,
    );
    assert_eq!(decide("public")["decision"], true);

    // Shadow: v1 evaluated beside the enforced v2 on live traffic; enforcement does not
    // change, the records and the metrics say what v1 would have done.
    fails(policy(Some(&carol), &["shadow", &v1]), "`auditor` role");
    ok(policy(Some(&alice), &["shadow", &v1]));
    let shadow_flips = || {
        let m = http(port, "GET", "/metrics", &[], "").unwrap().body;
        m.lines()
            .find_map(|l| {
                l.strip_prefix("arbiter_shadow_decisions_total{change=\"deny_to_allow\"} ")
            })
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until("the server evaluates v1 in shadow", PATIENCE, || {
        let enforced = decide("private")["decision"] == false;
        enforced && shadow_flips() > 0
    });
    assert_eq!(decide("public")["decision"], true);
    let ready = http(port, "GET", "/readyz", &[], "").unwrap().json();
    assert_eq!(ready["policy"]["shadow_version"], v1.as_str(), "{ready}");
    assert_eq!(ready["policy"]["version"], v2.as_str(), "{ready}");
    ok(policy(Some(&alice), &["shadow", "stop"]));
    fails(policy(Some(&alice), &["shadow", "stop"]), "is not running");
    let report: serde_json::Value =
        serde_json::from_str(&ok(policy(None, &["shadow-report", "--json"]))).unwrap();
    let of_v1 = &report["shadow_versions"][v1.as_str()];
    assert!(
        of_v1["changes"]["deny->allow"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(of_v1["changes"]["same"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(of_v1["examples"]["deny->allow"][0]["enforced"], "deny");
    assert_eq!(of_v1["examples"]["deny->allow"][0]["shadow"], "allow");

    // Rolled back: the first version again, without a restart.
    let out = ok(policy(Some(&bob), &["rollback"]));
    assert!(out.contains(&v1), "{out}");
    wait_until(
        "the server enforces the rolled-back version",
        PATIENCE,
        || decide("private")["decision"] == true,
    );

    // The records name the version that decided.
    drop(_served);
    let versions: Vec<String> = ARBITER
        .records(&data)
        .iter()
        .map(|r| r["policy_version"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        versions.contains(&v1) && versions.contains(&v2),
        "{versions:?}"
    );

    // Replay: v2 against everything recorded turns exactly the allowed reads of the private
    // document into denies (exit 4); v1 turns v2's denial back; a directory works too.
    let recs = ARBITER.records(&data);
    let private_allowed: Vec<&str> = recs
        .iter()
        .filter(|r| r["resource"]["id"] == "private" && r["outcome"] == "allow")
        .map(|r| r["decision_id"].as_str().unwrap())
        .collect();
    let private_denied: Vec<&str> = recs
        .iter()
        .filter(|r| r["resource"]["id"] == "private" && r["outcome"] == "deny")
        .map(|r| r["decision_id"].as_str().unwrap())
        .collect();
    assert!(!private_allowed.is_empty() && !private_denied.is_empty());
    let changes = |out: &Output| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["change"].as_str().unwrap().to_owned(),
                    c["decision_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let out = policy(None, &["replay", &v2, "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let expected: Vec<(String, String)> = private_allowed
        .iter()
        .map(|id| ("allow->deny".to_owned(), (*id).to_owned()))
        .collect();
    assert_eq!(changes(&out), expected);
    let out = policy(None, &["replay", v1_arg, "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let expected: Vec<(String, String)> = private_denied
        .iter()
        .map(|id| ("deny->allow".to_owned(), (*id).to_owned()))
        .collect();
    assert_eq!(changes(&out), expected);
    let out = policy(None, &["replay", &v2, "--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("0 decisions read"),
        "{}",
        text(&out.stdout)
    );

    // What changed, and the history.
    let out = policy(None, &["diff", &v1, &v2]);
    assert_eq!(out.status.code(), Some(1));
    let d = text(&out.stdout);
    assert!(
        d.contains("removed `read-docs`") && d.contains("added `read-public-docs`"),
        "{d}"
    );
    assert_eq!(policy(None, &["diff", &v1, &v1]).status.code(), Some(0));
    let history: serde_json::Value =
        serde_json::from_str(&ok(policy(None, &["history", "--json"]))).unwrap();
    assert_eq!(history["active"], v1.as_str());
    let kinds: Vec<&str> = history["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rollback", "activate", "activate"]);
    let shown: serde_json::Value =
        serde_json::from_str(&ok(policy(None, &["show", &v2, "--json"]))).unwrap();
    assert_eq!(shown["author"], "bob");
    assert_eq!(shown["approvals"][0]["approver"], "alice");
    assert_eq!(shown["owners"]["read-public-docs"], "team-docs");
    assert_eq!(shown["standing"], "approved");
    let rejected: serde_json::Value =
        serde_json::from_str(&ok(policy(None, &["show", &failing_v, "--json"]))).unwrap();
    assert_eq!(rejected["standing"], "rejected");
    assert_eq!(rejected["rejected"]["reason"], "its tests fail");

    // Every step is in the audit trail, and the chain verifies.
    let audit = ok(run(arbiter()
        .args(["admin", "audit", "--json", "--data"])
        .arg(&data)));
    for step in [
        "policy.proposed",
        "policy.approved",
        "policy.activated",
        "policy.rejected",
        "policy.rolled_back",
    ] {
        assert!(audit.contains(step), "{step}");
    }
    ok(run(arbiter()
        .args(["admin", "audit", "--verify", "--data"])
        .arg(&data)));

    // Evidence of a decision by v1 (proposed by alice, approved by bob), with a witness.
    let log_pub = data.join("log/log-signing.pub");
    let wdata = root.path().join("witness");
    let wport = free_port();
    let mut witness = arbiter_testkit::Running::spawn(
        "arbiter witness serve",
        arbiter()
            .args([
                "witness",
                "serve",
                "--listen",
                &format!("127.0.0.1:{wport}"),
            ])
            .arg("--log-key")
            .arg(&log_pub)
            .arg("--data")
            .arg(&wdata)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    witness.wait_for_port(wport);
    let wkey = ok(run(arbiter()
        .args(["witness", "pubkey", "--data"])
        .arg(&wdata)))
    .trim()
    .to_owned();
    let port = free_port();
    let served = Served::start(
        ARBITER
            .command()
            .args(["serve", "--governed", "--log-level", "warn", "--data"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--checkpoint-interval-ms", "100"])
            .args(["--witness", &format!("http://127.0.0.1:{wport}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        port,
    );
    let auth = format!("Bearer {}", bot.key);
    let body = serde_json::json!({
        "subject": {"type": "Agent", "id": "bot"},
        "action": {"name": "read"},
        "resource": {"type": "Doc", "id": "private"},
    });
    let answer = http(
        port,
        "POST",
        "/access/v1/evaluation",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        &body.to_string(),
    )
    .unwrap()
    .json();
    assert_eq!(answer["decision"], true, "{answer}");
    let id = answer["context"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until("the decision is witnessed", PATIENCE, || {
        let v = http(port, "GET", "/readyz", &[], "").unwrap().json();
        v["witness"]["status"] == "witnessed"
            && v["witness"]["witnessed_size"] == v["decision_log"]["records"]
    });
    // The API gives the same bundle to an auditor, and to nobody else.
    let path = format!("/v1/decisions/{id}/evidence");
    let carol_auth = format!("Bearer {carol}");
    let from_api = http(port, "GET", &path, &[("authorization", &carol_auth)], "").unwrap();
    assert_eq!(from_api.status, 200, "{}", from_api.raw);
    assert_eq!(
        http(port, "GET", &path, &[("authorization", &auth)], "")
            .unwrap()
            .status,
        401
    );
    drop(served);
    let api_file = root.path().join("api-evidence.json");
    std::fs::write(&api_file, &from_api.body).unwrap();
    let file = root.path().join("evidence.json");
    ok(run(arbiter()
        .args(["evidence", &id, "--out"])
        .arg(&file)
        .arg("--data")
        .arg(&data)));
    let log_pub_arg = log_pub.to_str().unwrap();
    let verify = |f: &Path, extra: &[&str]| -> Output {
        run(arbiter()
            .args(["evidence", "verify"])
            .arg(f)
            .args(["--pubkey", log_pub_arg, "--witness-key", &wkey])
            .args(extra))
    };
    for f in [&file, &api_file] {
        let summary = ok(verify(f, &["--governed"]));
        for needle in [
            "evidence ok: decision",
            "was allow",
            "by arbiter-witness",
            "determining: read-docs (owner team-docs)",
            "proposed by alice",
            "approved by bob",
        ] {
            assert!(summary.contains(needle), "{needle}: {summary}");
        }
    }
    // Every kind of alteration fails it.
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let altered = root.path().join("altered.json");
    let alter = |change: &dyn Fn(&mut serde_json::Value), extra: &[&str], why: &str| {
        let mut b = bundle.clone();
        change(&mut b);
        std::fs::write(&altered, b.to_string()).unwrap();
        let out = verify(&altered, extra);
        assert_eq!(out.status.code(), Some(3), "{why}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("evidence verification FAILED"),
            "{why}: {}",
            text(&out.stderr)
        );
    };
    alter(
        &|b| b["decision"]["record"]["outcome"] = "deny".into(),
        &[],
        "record",
    );
    alter(
        &|b| b["decision"]["record"]["reason_admin"] = "edited".into(),
        &[],
        "reason",
    );
    alter(
        &|b| b["decision"]["proof"][0] = "00".repeat(32).into(),
        &[],
        "proof",
    );
    alter(
        &|b| b["decision"]["checkpoint"]["tree_size"] = 1_000_000.into(),
        &[],
        "checkpoint",
    );
    alter(
        &|b| {
            let t = b["policy"]["files"][0]["text"].as_str().unwrap().to_owned();
            b["policy"]["files"][0]["text"] = t.replace("permit", "forbid").into();
        },
        &[],
        "policy text",
    );
    alter(&|b| b["policy"] = serde_json::Value::Null, &[], "no policy");
    alter(
        &|b| b["activation"]["record"]["context"]["approvals"][0]["approver"] = "mallory".into(),
        &[],
        "approval",
    );
    alter(
        &|b| b["activation"]["record"]["context"]["author"] = "bob".into(),
        &[],
        "author",
    );
    alter(
        &|b| b["cosignatures"][0]["signature"] = "00".repeat(64).into(),
        &[],
        "cosignature",
    );
    alter(
        &|b| b["activation"] = serde_json::Value::Null,
        &["--governed"],
        "activation",
    );
    // Without --governed, a bundle without the activation verifies and says so.
    let mut b = bundle.clone();
    b["activation"] = serde_json::Value::Null;
    std::fs::write(&altered, b.to_string()).unwrap();
    assert!(ok(verify(&altered, &[])).contains("governance:  none recorded"));
    // Another log key, an unknown decision.
    let out = run(arbiter()
        .args(["evidence", "verify"])
        .arg(&file)
        .args(["--pubkey", &"ab".repeat(32)]));
    assert_ne!(out.status.code(), Some(0));
    let out = run(arbiter()
        .args(["evidence", "0190aaaa-0000-7000-8000-000000000000", "--data"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot make the evidence"),
        "{}",
        text(&out.stderr)
    );
    drop(witness);

    // The compliance archive: figures from this data directory, signed; any change fails it.
    let archive = root.path().join("compliance");
    let out = ok(run(arbiter()
        .args(["compliance", "report", "--since", "1h", "--out"])
        .arg(&archive)
        .args(["--witness-key", &wkey, "--data"])
        .arg(&data)));
    assert!(out.contains("compliance archive written"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(archive.join("report.json")).unwrap()).unwrap();
    let f = &report["figures"];
    assert_eq!(f["policy"]["governed"], true, "{f}");
    assert_eq!(f["policy"]["activated_without_required_approvals"], 0);
    assert_eq!(f["policy"]["active_policies_without_owner"], 0);
    assert!(f["policy"]["activation_records_in_log"].as_u64().unwrap() >= 1);
    assert_eq!(f["log"]["verified"], true);
    assert_eq!(f["log"]["witnesses_agree"], true);
    assert_eq!(f["audit"]["verified"], true);
    assert_eq!(f["agents"]["total"], 1);
    let recorded = ARBITER.records(&data).len() as u64;
    let counted = f["decisions"]["total"].as_u64().unwrap()
        + f["policy"]["activation_records_in_log"].as_u64().unwrap();
    assert_eq!(
        counted, recorded,
        "every record of the last hour is counted once"
    );
    let ids: Vec<&str> = report["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for id in [
        "NHI1", "NHI5", "NHI7", "ASI02", "ASI03", "PR.AA-01", "PR.AA-05", "Tenet 6", "GOVERN 1",
        "MANAGE 4",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let page = std::fs::read_to_string(archive.join("report.html")).unwrap();
    assert!(page.contains("PR.AA-05") && !page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("<script"));
    let agents_file = std::fs::read_to_string(archive.join("evidence/agents.json")).unwrap();
    assert!(!agents_file.contains(&bot.key), "no key in the archive");
    let check = || {
        run(arbiter()
            .args(["compliance", "verify"])
            .arg(&archive)
            .args(["--pubkey", log_pub_arg]))
    };
    assert!(ok(check()).contains("compliance archive ok"));
    let report_path = archive.join("report.json");
    let original = std::fs::read(&report_path).unwrap();
    let mut changed = original.clone();
    let at = changed.len() / 2;
    changed[at] ^= 1;
    std::fs::write(&report_path, &changed).unwrap();
    fails(check(), "`report.json` was changed");
    std::fs::write(&report_path, &original).unwrap();
    std::fs::write(archive.join("evidence/extra.json"), "{}").unwrap();
    fails(
        check(),
        "`evidence/extra.json` is not in the signed manifest",
    );
    std::fs::remove_file(archive.join("evidence/extra.json")).unwrap();
    std::fs::remove_file(archive.join("evidence/agents.json")).unwrap();
    fails(check(), "evidence/agents.json");
    let out = run(arbiter()
        .args(["compliance", "verify"])
        .arg(&archive)
        .args(["--pubkey", &wkey]));
    assert_eq!(out.status.code(), Some(3));
    // A second report into the same directory is refused.
    let out = run(arbiter()
        .args(["compliance", "report", "--since", "1h", "--out"])
        .arg(&archive)
        .arg("--data")
        .arg(&data));
    assert_eq!(out.status.code(), Some(1));
}

const COMPARE_SCHEMA: &str = r#"
entity Team;
entity Agent in [Team];
entity Doc = { public: Bool, team: Team };
action read appliesTo { principal: Agent, resource: Doc };
"#;

/// `policy compare` proves a narrowing and refuses a widening with a counterexample;
/// `propose --must-narrow` stores only what narrows the active version; without the solver
/// the error says what to install.
#[test]
fn compare_proves_narrowing_and_must_narrow_gates_proposals() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let alice = ARBITER.admin_token(&data, "alice", "administrator");
    let bob = ARBITER.admin_token(&data, "bob", "administrator");
    let dir = |name: &str, cedar: &str| {
        let d = policy_dir(root.path(), name, cedar, None);
        std::fs::write(d.join("schema.cedarschema"), COMPARE_SCHEMA).unwrap();
        d.to_str().unwrap().to_owned()
    };
    let old = dir(
        "old",
        "@id(\"public-or-team\")\n@owner(\"docs\")\npermit (principal, action, resource)\nwhen { resource.public || principal in resource.team };\n",
    );
    let narrower = dir(
        "narrower",
        "@id(\"public-only\")\n@owner(\"docs\")\npermit (principal, action, resource)\nwhen { resource.public };\n",
    );
    let wider = dir(
        "wider",
        "@id(\"every-doc\")\n@owner(\"docs\")\npermit (principal, action, resource);\n",
    );
    let compare = |args: &[&str]| {
        run(arbiter()
            .args(["policy", "compare"])
            .args(args)
            .arg("--data")
            .arg(&data))
    };
    let out = compare(&[&old, &narrower]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("proved: "),
        "{}",
        text(&out.stdout)
    );
    let out = compare(&[&old, &wider, "--narrows"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("allows a request") && shown.contains("confirmed by evaluating it"),
        "{shown}"
    );
    assert!(shown.contains("(by every-doc)"), "{shown}");
    let out = compare(&[&old, &narrower, "--equivalent", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["comparison"]["counterexample"]["direction"],
        "allowed_by_old"
    );
    assert_eq!(v["comparison"]["counterexample"]["old"], "allow");
    assert_eq!(v["comparison"]["counterexample"]["new"], "deny");
    assert_eq!(
        compare(&[&old, &old, "--equivalent"]).status.code(),
        Some(0)
    );
    // Without the solver: an error naming it, never a verdict.
    let out = run(arbiter()
        .args(["policy", "compare", &old, &wider, "--data"])
        .arg(&data)
        .env("CVC5", root.path().join("no-such-cvc5")));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("apt-get install cvc5"),
        "{}",
        text(&out.stderr)
    );
    // No schema: refused.
    let bare = policy_dir(
        root.path(),
        "bare",
        "@id(\"x\")\n@owner(\"docs\")\npermit (principal, action, resource);\n",
        None,
    );
    let out = compare(&[&old, bare.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("needs a schema"),
        "{}",
        text(&out.stderr)
    );

    // --must-narrow: nothing active yet, then only narrowing proposals are stored.
    let propose = |token: &str, d: &str, extra: &[&str]| {
        run(arbiter()
            .args(["policy", "propose", d, "-m", "change"])
            .args(extra)
            .arg("--data")
            .arg(&data)
            .env("ARBITER_ADMIN_TOKEN", token))
    };
    let out = propose(&alice, &old, &["--must-narrow"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no version is active"),
        "{}",
        text(&out.stderr)
    );
    let out = propose(&alice, &old, &["--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v1 = text(&out.stdout).trim().to_owned();
    for (token, step) in [(&bob, "approve"), (&bob, "activate")] {
        let out = run(arbiter()
            .args(["policy", step, &v1, "--data"])
            .arg(&data)
            .env("ARBITER_ADMIN_TOKEN", token));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = propose(&bob, &wider, &["--must-narrow"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not proposed: --must-narrow"),
        "{}",
        text(&out.stderr)
    );
    let out = propose(&bob, &narrower, &["--must-narrow"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("proved: it narrows the active version"));
    let history: serde_json::Value = serde_json::from_slice(
        &run(arbiter()
            .args(["policy", "history", "--json", "--data"])
            .arg(&data))
        .stdout,
    )
    .unwrap();
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
}
