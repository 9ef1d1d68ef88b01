//! The identity commands end to end against a served PDP: the README tour (register, issue a
//! key, an allowed and a denied call, revoke, the denial), no plaintext secret in the data
//! directory or the logs, discovery of unknown credentials, and `arbiter discover`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use arbiter_testkit::{
    Arbiter, PATIENCE, Reply, Served, assert_no_secrets, example, free_port, http, run_ok, wait_for,
};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn arbiter() -> Command {
    ARBITER.command()
}

fn quickstart() -> PathBuf {
    example("quickstart")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One request to the served decision point, as a JSON client sends it.
fn call(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    http(port, method, path, &headers, body).unwrap()
}

fn evaluate(port: u16, key: &str, tool: &str) -> Value {
    let body = json!({
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": format!("helpdesk/{tool}")},
    });
    let reply = call(
        port,
        "POST",
        "/access/v1/evaluation",
        Some(key),
        &body.to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[test]
fn the_tour_register_issue_allow_deny_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = |cmd: &mut Command| -> Output { run_ok(cmd.arg("--data").arg(&data)) };
    let registered = d(arbiter().args([
        "agent",
        "register",
        "support-bot",
        "--owner",
        "support@example.com",
        "--environment",
        "prod",
        "--attributes",
        r#"{"roles": ["support"]}"#,
        "--json",
    ]));
    assert_eq!(json_of(&registered)["status"], "active");
    let issued = json_of(&d(arbiter().args([
        "agent",
        "key",
        "issue",
        "support-bot",
        "--json",
    ])));
    let key = issued["key"].as_str().unwrap().to_owned();
    let key_id = issued["id"].as_str().unwrap().to_owned();
    let admin = json_of(&d(arbiter().args([
        "admin", "token", "create", "--name", "ops", "--role", "auditor", "--json",
    ])))["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let port = free_port();
    let log_path = tmp.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut served = Served::start(
        ARBITER
            .serve_command(&quickstart(), &data, &format!("127.0.0.1:{port}"))
            .args(["--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(log),
        port,
    );

    assert_eq!(evaluate(port, &key, "read_ticket")["decision"], true);
    let denied = evaluate(port, &key, "delete_ticket");
    assert_eq!(denied["decision"], false);
    // The agent is not told which policies decided (administrators' details): the record
    // says, to an auditor.
    assert!(
        denied["context"].get("determining_policies").is_none(),
        "{denied}"
    );
    assert!(denied["context"].get("reason_admin").is_none(), "{denied}");
    let denied_id = denied["context"]["decision_id"].as_str().unwrap();
    let reply = call(
        port,
        "GET",
        &format!("/v1/decisions/{denied_id}"),
        Some(&admin),
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let record = reply.json();
    assert_eq!(
        record["record"]["determining_policies"],
        json!(["no-delete-or-export"])
    );

    // Revoked from another process: refused on the next request.
    d(arbiter().args(["agent", "key", "revoke", "support-bot", &key_id]));
    let refused = evaluate(port, &key, "read_ticket");
    assert_eq!(refused["decision"], false);
    assert_eq!(
        refused["context"]["reason_user"]["en"],
        "denied: the credential was not accepted"
    );
    let refused_id = refused["context"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // An unknown credential is denied and shows up in the inventory.
    let foreign = "sk-ant-api03-NotARealKeyButShapedLikeOne0123456789abcdefghijklmnopqrstuv";
    assert_eq!(evaluate(port, foreign, "read_ticket")["decision"], false);

    // The refusal is in the log, attributed to the key, readable with an auditor token.
    let reply = call(
        port,
        "GET",
        &format!("/v1/decisions/{refused_id}"),
        Some(&admin),
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let record = reply.json();
    assert_eq!(record["record"]["subject"]["credential_id"], json!(key_id));
    assert_eq!(
        call(
            port,
            "GET",
            &format!("/v1/decisions/{refused_id}"),
            None,
            ""
        )
        .status,
        401
    );

    // The server flushes its sightings to the inventory about once a second.
    let row = wait_for(
        "the unknown credential is listed in the inventory",
        PATIENCE,
        || {
            let discovered = json_of(&d(arbiter().args([
                "agent",
                "list",
                "--discovered",
                "--json",
            ])));
            discovered
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["shape"] == "anthropic-api-key")
                .cloned()
        },
    );
    assert_eq!(row["sources"], json!(["127.0.0.1"]));
    let listed = json_of(&d(arbiter().args([
        "agent",
        "key",
        "list",
        "support-bot",
        "--json",
    ])));
    assert_eq!(listed[0]["state"], "revoked");
    assert!(
        listed[0]["last_used"].is_string(),
        "last-used time recorded: {listed}"
    );

    served.process.terminate();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("arbiter serving"), "{logs}");
    let secrets = [key.as_str(), &key[14..46], admin.as_str(), foreign];
    assert_no_secrets(&data, &secrets);
    for s in secrets {
        assert!(!logs.contains(s), "a secret reached the server log");
    }
    // The audit trail holds every change, and verifies.
    let audit = json_of(&d(arbiter().args(["admin", "audit", "--json"])));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"agent.register") && actions.contains(&"key.revoke"),
        "{actions:?}"
    );
    assert!(audit[0]["actor"]["kind"] == "cli");
    d(arbiter().args(["admin", "audit", "--verify"]));
}

#[test]
fn cli_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let fail = |args: &[&str]| -> String {
        let out = arbiter()
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(fail(&["agent", "register", "Bad Id", "--owner", "o"]).contains("id"));
    assert!(
        fail(&[
            "agent",
            "register",
            "a",
            "--owner",
            "o",
            "--environment",
            "moon"
        ])
        .contains("environment")
    );
    assert!(fail(&["agent", "key", "issue", "ghost"]).contains("ghost"));
    run_ok(
        arbiter()
            .args(["agent", "register", "a", "--owner", "o"])
            .arg("--data")
            .arg(&data),
    );
    assert!(fail(&["agent", "register", "a", "--owner", "o"]).contains("already exists"));
    assert!(fail(&["agent", "key", "issue", "a", "--expires-in", "soon"]).contains("--expires-in"));
    assert!(fail(&["admin", "token", "create", "--name", "x", "--role", "root"]).contains("role"));
}

#[test]
fn discover_reports_unregistered_sources_calling_llm_apis() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_ok(
        arbiter()
            .args([
                "agent",
                "register",
                "known-bot",
                "--owner",
                "o",
                "--attributes",
                r#"{"addresses": ["10.0.0.7"]}"#,
            ])
            .arg("--data")
            .arg(&data),
    );
    let log = tmp.path().join("access.log");
    std::fs::write(
        &log,
        concat!(
            "10.0.0.5 - - [29/Nov/2026:10:00:00 +0000] \"POST https://api.openai.com/v1/chat/completions HTTP/1.1\" 200 512 \"-\" \"python-httpx/0.27\"\n",
            "10.0.0.5 - - [29/Nov/2026:10:00:05 +0000] \"CONNECT api.anthropic.com:443 HTTP/1.1\" 200 0 \"-\" \"curl/8\"\n",
            "10.0.0.7 - - [29/Nov/2026:10:00:06 +0000] \"POST https://api.openai.com/v1/responses HTTP/1.1\" 200 90 \"-\" \"agent\"\n",
            "10.0.0.9 - - [29/Nov/2026:10:00:07 +0000] \"GET https://example.com/ HTTP/1.1\" 200 90 \"-\" \"browser\"\n",
            "{\"remote_addr\": \"10.0.0.8\", \"host\": \"generativelanguage.googleapis.com\", \"time\": \"2026-11-29T10:00:08Z\", \"status\": 200}\n",
            "this line is not a log line\n",
        ),
    )
    .unwrap();
    let out = arbiter()
        .args(["discover", "--json", "--access-log"])
        .arg(&log)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("10.0.0.5") && text.contains("10.0.0.8"),
        "{text}"
    );
    assert!(!text.contains("example.com"), "{text}");
    assert!(
        text.contains("known-bot"),
        "the registered source is recognised: {text}"
    );
    // Text output, too.
    let out = arbiter()
        .args(["discover", "--access-log"])
        .arg(&log)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.0.0.5"));
}
