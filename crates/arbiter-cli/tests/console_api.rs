//! The console's server side against a real `arbiter serve`: the start-up line naming the
//! console, signing in over HTTP, the cookie on the admin API with and without the CSRF
//! header, a token revoked by another process ending its session, and `--no-console`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;

use arbiter_testkit::{Arbiter, Scratch, Served, example, free_port, http, run_ok};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn login(served: &Served, token: &str) -> arbiter_testkit::Reply {
    http(
        served.port,
        "POST",
        "/console/api/login",
        &[("content-type", "application/json")],
        &json!({ "token": token }).to_string(),
    )
    .unwrap()
}

#[test]
fn sign_in_csrf_and_revocation_on_a_real_server() {
    let scratch = Scratch::new();
    let data = scratch.data();
    let admin = ARBITER.admin_token(&data, "alice", "administrator");
    let other = ARBITER.admin_token(&data, "bob", "administrator");
    let port = free_port();
    let stderr = scratch.join("serve.err");
    let mut cmd =
        ARBITER.serve_command(&example("quickstart"), &data, &format!("127.0.0.1:{port}"));
    cmd.args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let served = Served::start(&mut cmd, port);
    let printed = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        printed.contains(&format!("console: http://127.0.0.1:{port}/console/"))
            && printed.contains("arbiter admin token create"),
        "{printed}"
    );

    let page = http(port, "GET", "/console/", &[], "").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").is_some());

    assert_eq!(login(&served, "arbadm_wrong").status, 401);
    let r = login(&served, &other);
    assert_eq!(r.status, 200, "{}", r.raw);
    let v = r.json();
    assert_eq!(
        (v["name"].clone(), v["role"].clone()),
        (json!("bob"), json!("administrator"))
    );
    let csrf = v["csrf"].as_str().unwrap().to_owned();
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();

    let agents = http(port, "GET", "/v1/agents", &[("cookie", &cookie)], "").unwrap();
    assert_eq!(agents.status, 200, "{}", agents.raw);
    let body = json!({"id": "web-bot", "owner": "team@example.com"}).to_string();
    let refused = http(
        port,
        "POST",
        "/v1/agents",
        &[("cookie", &cookie), ("content-type", "application/json")],
        &body,
    )
    .unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["error"]["code"],
        "csrf_token_missing_or_wrong"
    );
    let bearer = format!("Bearer {admin}");
    let none = http(
        port,
        "GET",
        "/v1/agents/web-bot",
        &[("authorization", &bearer)],
        "",
    )
    .unwrap();
    assert_eq!(none.status, 404, "nothing was registered");
    let made = http(
        port,
        "POST",
        "/v1/agents",
        &[
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("x-arbiter-csrf", &csrf),
        ],
        &body,
    )
    .unwrap();
    assert!(made.status == 201 || made.status == 200, "{}", made.raw);

    // Bob's token revoked by another process: his session ends at its next request.
    let tokens = http(port, "GET", "/v1/tokens", &[("authorization", &bearer)], "").unwrap();
    let tokens = tokens.json();
    let id = tokens
        .as_object()
        .and_then(|o| o.values().find_map(Value::as_array))
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bob")
        .and_then(|t| t["id"].as_str())
        .unwrap_or_else(|| panic!("no token named bob: {tokens}"))
        .to_owned();
    run_ok(
        ARBITER
            .command()
            .args(["admin", "token", "revoke", &id, "--data"])
            .arg(&data),
    );
    let after = http(port, "GET", "/v1/agents", &[("cookie", &cookie)], "").unwrap();
    assert_eq!(after.status, 401, "{}", after.raw);
    let session = http(
        port,
        "GET",
        "/console/api/session",
        &[("cookie", &cookie)],
        "",
    )
    .unwrap();
    assert_eq!(session.status, 401);
}

#[test]
fn no_console_turns_it_off() {
    let scratch = Scratch::new();
    let data = scratch.data();
    let admin = ARBITER.admin_token(&data, "alice", "administrator");
    let served = ARBITER.serve(&example("quickstart"), &data, &["--no-console"]);
    for path in ["/console", "/console/", "/console/assets/app.js"] {
        assert_eq!(
            http(served.port, "GET", path, &[], "").unwrap().status,
            404,
            "{path}"
        );
    }
    assert_eq!(login(&served, &admin).status, 404);
    // The admin API is untouched.
    let bearer = format!("Bearer {admin}");
    let r = http(
        served.port,
        "GET",
        "/v1/agents",
        &[("authorization", &bearer)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}
