//! `arbiter gap` and `GET /v1/gap` end to end: a real `arbiter serve` with real decisions, an
//! MCP client configuration with a wrapped and an unwrapped server (coarse, exit 4) that is
//! then wrapped (enforced, exit 0), and a real PostgreSQL where a connection made directly
//! with a role is coarse while one through `arbiter sql proxy` is not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use arbiter_testkit::{
    Arbiter, PATIENCE, Running, Scratch, TestDb, free_port, http, psql, wait_until,
};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn gap(data: &Path, extra: &[&str]) -> Output {
    ARBITER
        .command()
        .args(["gap", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap()
}

fn gap_json(data: &Path, extra: &[&str]) -> (i32, Value) {
    let out = gap(data, &[&["--format", "json"], extra].concat());
    let code = out.status.code().unwrap();
    let map = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gap printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, map)
}

fn cell<'a>(map: &'a Value, agent: &str, layer: &str) -> &'a Value {
    map["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["agent"] == agent && c["layer"] == layer)
        .unwrap_or_else(|| panic!("no cell {agent} / {layer} in {map:#}"))
}

fn mcp_config(wrapped_github: bool, key: &str) -> String {
    let github = if wrapped_github {
        json!({"command": "arbiter", "args": ["mcp", "stdio", "--server-name", "github", "--", "npx", "-y", "@mcp/github"]})
    } else {
        json!({"command": "npx", "args": ["-y", "@mcp/github"]})
    };
    json!({"mcpServers": {
        "fs": {"command": "/usr/local/bin/arbiter",
               "args": ["mcp", "stdio", "--server-name", "fs", "--pdp", "http://127.0.0.1:1", "--", "npx", "srv-fs"],
               "env": {"ARBITER_AGENT_KEY": key}},
        "github": github
    }})
    .to_string()
}

#[test]
fn the_gap_map_shows_an_unwrapped_mcp_server_as_coarse_until_it_is_wrapped() {
    let s = Scratch::new();
    let data = s.data();
    let policies = s.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("all.cedar"),
        "@id(\"tools-read\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let key = ARBITER.agent_with_key(
        &data,
        "support-bot",
        "team",
        &[
            "--attributes",
            r#"{"systems": {"ai": ["fs", "github"], "data": ["shop"]}}"#,
        ],
    );
    let auditor = ARBITER.admin_token(&data, "audit", "auditor");
    // Attributed by the key of the wrapped entry (the key is never printed).
    let config = s.write("claude_desktop_config.json", mcp_config(false, &key.key));
    let served = ARBITER.serve(
        &policies,
        &data,
        &["--gap-mcp-config", config.to_str().unwrap()],
    );

    // Real decisions at the MCP gateway's enforcement point.
    let bearer = format!("Bearer {}", key.key);
    for _ in 0..3 {
        let r = http(
            served.port,
            "POST",
            "/access/v1/evaluation",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("x-arbiter-enforcement-point", "mcp:fs"),
            ],
            r#"{"action": {"name": "tools/call"}, "resource": {"type": "Tool", "id": "fs/read_file"}}"#,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["decision"], true, "{}", r.body);
    }

    // Over HTTP: an auditor reads it; nobody else.
    let r = http(served.port, "GET", "/v1/gap", &[], "").unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let auth = format!("Bearer {auditor}");
    let r = http(
        served.port,
        "GET",
        "/v1/gap?since=1h",
        &[("authorization", &auth)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let map = r.json();
    assert_eq!(map["schema"], "arbiter.gap/1");
    assert!(!r.body.contains(&key.key), "the agent key is never shown");
    let ai = cell(&map, "support-bot", "ai");
    assert_eq!(ai["state"], "coarse", "{ai:#}");
    assert_eq!(ai["enforced"]["enforcement_points"], json!(["mcp:fs"]));
    assert_eq!(ai["enforced"]["decisions"], 3);
    assert_eq!(ai["enforced"]["denied"], 0);
    assert_eq!(ai["enforced"]["policies"], json!(["tools-read"]));
    assert_eq!(ai["wrapped"], json!(["fs"]));
    assert_eq!(ai["findings"][0]["system"], "github");
    assert_eq!(ai["findings"][0]["source"], "mcp-config");
    assert!(
        ai["next_step"].as_str().unwrap().starts_with(
            "wrap this server: arbiter mcp stdio --server-name github --pdp http://127.0.0.1:"
        ),
        "{ai:#}"
    );
    assert_eq!(cell(&map, "support-bot", "data")["state"], "unknown");
    assert_eq!(
        cell(&map, "support-bot", "data")["declared"],
        json!(["shop"])
    );
    let r = http(
        served.port,
        "GET",
        "/v1/gap?since=never",
        &[("authorization", &auth)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);

    // The CLI on the same data directory: coarse, exit 4.
    let (code, map) = gap_json(&data, &["--mcp-config", config.to_str().unwrap()]);
    assert_eq!(code, 4, "{map:#}");
    assert_eq!(cell(&map, "support-bot", "ai")["state"], "coarse");
    assert_eq!(map["summary"]["coarse"], 1, "{map:#}");
    let table = gap(
        &data,
        &[
            "--format",
            "table",
            "--mcp-config",
            config.to_str().unwrap(),
        ],
    );
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("COARSE") && table.contains("next: wrap this server"),
        "{table}"
    );
    let html = gap(
        &data,
        &["--format", "html", "--mcp-config", config.to_str().unwrap()],
    );
    assert_eq!(html.status.code(), Some(4));
    assert!(
        String::from_utf8(html.stdout)
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );

    // Wrapped: the next map (the file is read again) shows it enforced, and nothing is left.
    std::fs::write(&config, mcp_config(true, &key.key)).unwrap();
    let r = http(
        served.port,
        "GET",
        "/v1/gap",
        &[("authorization", &auth)],
        "",
    )
    .unwrap();
    let map = r.json();
    let ai = cell(&map, "support-bot", "ai");
    assert_eq!(ai["state"], "enforced", "{ai:#}");
    assert_eq!(ai["findings"], json!([]));
    assert_eq!(ai["wrapped"], json!(["fs", "github"]));
    let (code, map) = gap_json(&data, &["--mcp-config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{map:#}");

    // A malformed file is an error naming it.
    std::fs::write(&config, "{\"mcpServers\": [").unwrap();
    let out = gap(&data, &["--mcp-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("claude_desktop_config.json") && err.contains("invalid JSON"),
        "{err}"
    );
    let r = http(
        served.port,
        "GET",
        "/v1/gap",
        &[("authorization", &auth)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("claude_desktop_config.json"), "{}", r.body);
}

/// Roles made for one test, dropped (with their connections) at the end.
struct Roles(Vec<String>);

impl Drop for Roles {
    fn drop(&mut self) {
        for role in &self.0 {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-d"])
                .arg(arbiter_testkit::postgres_url())
                .args([
                    "-c",
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
                    ),
                    "-c",
                    &format!("DROP ROLE IF EXISTS {role}"),
                ])
                .output();
        }
    }
}

/// psql connected with `conninfo`, idle (its standard input stays open), until dropped.
fn idle_psql(what: &str, conninfo: &str) -> Running {
    Running::spawn(
        what,
        Command::new("psql")
            .args(["-X", "-q"])
            .arg(conninfo)
            .env("LC_ALL", "C")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

#[test]
fn a_direct_postgres_connection_is_coarse_and_one_through_the_guard_is_not() {
    let db = TestDb::create("arbiter_gap");
    let pid = std::process::id();
    let direct = format!("gap_direct_{pid}");
    let guarded = format!("gap_guard_{pid}");
    let _roles = Roles(vec![direct.clone(), guarded.clone()]);
    for role in [&direct, &guarded] {
        psql(
            "postgres",
            &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"),
        );
    }

    let s = Scratch::new();
    let data = s.data();
    let policies = s.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("all.cedar"),
        "permit (principal, action, resource);\n",
    )
    .unwrap();
    let attributes = json!({"systems": {"data": [
        {"name": "shop", "role": direct},
        {"name": "shop-guarded", "role": guarded}
    ]}})
    .to_string();
    let key = ARBITER.agent_with_key(&data, "report-bot", "team", &["--attributes", &attributes]);

    // Directly, as the role.
    let _direct = idle_psql(
        "psql as the direct role",
        &format!(
            "host=127.0.0.1 port=5432 user={direct} dbname={} application_name=reports sslmode=disable",
            db.name()
        ),
    );
    // Through the guard, whose upstream role is the other one.
    let port = free_port();
    let mut proxy = Running::spawn(
        "arbiter sql proxy",
        ARBITER
            .command()
            .env("ARBITER_LOG", "warn")
            .args(["sql", "proxy", "--upstream"])
            .arg(format!("postgres://{guarded}@127.0.0.1:5432/{}", db.name()))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--policies"])
            .arg(&policies)
            .arg("--data")
            .arg(&data),
    );
    proxy.wait_for_port(port);
    let _through = idle_psql(
        "psql through the guard",
        &format!(
            "host=127.0.0.1 port={port} user=report-bot password={} dbname={} application_name=reports sslmode=disable",
            key.key,
            db.name()
        ),
    );
    wait_until("both connections are in pg_stat_activity", PATIENCE, || {
        let seen = psql(
            "postgres",
            &format!(
                "SELECT string_agg(usename || '=' || application_name, ',' ORDER BY usename) \
                 FROM pg_stat_activity WHERE usename IN ('{direct}', '{guarded}')"
            ),
        );
        seen.contains(&format!("{direct}=reports"))
            && seen.contains(&format!("{guarded}=arbiter-sql/reports"))
    });

    let dsn = arbiter_testkit::postgres_url_for(db.name());
    let (code, map) = gap_json(&data, &["--postgres", &dsn]);
    assert_eq!(code, 4, "{map:#}");
    let cell = cell(&map, "report-bot", "data");
    assert_eq!(cell["state"], "coarse", "{cell:#}");
    let findings = cell["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{cell:#}");
    assert_eq!(findings[0]["system"], direct.as_str());
    assert_eq!(findings[0]["source"], "postgres");
    assert!(
        findings[0]["next_step"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "route role {direct} through the guard: arbiter sql proxy"
            )),
        "{cell:#}"
    );
    let text = map.to_string();
    assert!(
        !text.contains(&format!("\"system\":\"{guarded}\"")),
        "{map:#}"
    );
    assert!(!text.contains(&key.key));

    // A DSN that cannot be reached: an error naming it, without its password.
    let out = gap(
        &data,
        &[
            "--postgres",
            "postgres://u:hunter2@127.0.0.1:1/nothere?connect_timeout=3",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1/nothere") && !err.contains("hunter2"),
        "{err}"
    );
}
