//! Forward-auth behind Debian's nginx: `auth_request` pointing at `arbiter serve`, in front
//! of a small upstream. Allowed, denied and unauthenticated requests; path templates; the
//! upstream never sees the agent's key. `scripts/test` installs nginx (`nginx-light`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use arbiter_testkit::{Arbiter, Running, Scratch, Served, free_port, http, nginx};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn arbiter() -> Command {
    ARBITER.command()
}

/// A tiny HTTP upstream that records every request head it receives.
fn upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head);
            let body = "upstream ok";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

/// One request; returns status, lower-cased headers and body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    request_raw(port, method, path.as_bytes(), auth, &[])
}

/// One request whose target may hold any bytes, with extra client headers.
fn request_raw(
    port: u16,
    method: &str,
    path: &[u8],
    auth: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut headers = vec![("host", "tickets.internal")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    headers.extend_from_slice(extra);
    let reply = http(port, method, path, &headers, "").unwrap();
    (reply.status, reply.headers, reply.body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const POLICIES: &str = r#"
@id("agents-read-tickets")
@reason("agents may read tickets")
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.service == "tickets" && resource.method == "GET" };

@id("agents-reply-to-open-tickets")
permit (principal is Agent, action == Action::"http_request", resource == Route::"tickets:POST /tickets/{id}/replies")
when { context has params && context.params.id != "locked" };

@id("no-deletes")
@agent_reason("deleting tickets is not allowed for agents")
forbid (principal, action == Action::"http_request", resource is Route)
when { resource.method == "DELETE" };
"#;

const ROUTES: &str = "\
@service tickets proxy=nginx
# service  method  template
tickets    GET     /tickets
tickets    GET     /tickets/{id}
tickets    GET     /tickets/mine
tickets    POST    /tickets/{id}/replies
tickets    DELETE  /tickets/{id}
";

/// The nginx configuration the README shows, with test ports and paths.
pub fn nginx_conf(dir: &Path, listen: u16, arbiter: u16, upstream: u16) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;

  server {{
    listen 127.0.0.1:{listen};

    # Ask Arbiter about every request; the subrequest carries the agent's Authorization.
    location = /_arbiter {{
      internal;
      proxy_pass http://127.0.0.1:{arbiter}/v1/forward-auth/tickets;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Host $host;
    }}

    location / {{
      auth_request /_arbiter;
      auth_request_set $arbiter_decision $upstream_http_x_arbiter_decision_id;
      auth_request_set $arbiter_agent $upstream_http_x_arbiter_agent_id;
      auth_request_set $arbiter_reason $upstream_http_x_arbiter_reason;
      error_page 403 = @denied;

      proxy_set_header Authorization "";          # the agent's key never reaches the upstream
      proxy_set_header X-Arbiter-Decision-Id $arbiter_decision;
      proxy_set_header X-Arbiter-Agent $arbiter_agent;
      proxy_pass http://127.0.0.1:{upstream};
    }}

    location @denied {{
      default_type application/json;
      add_header X-Arbiter-Decision-Id $arbiter_decision always;
      return 403 '{{"decision": false, "decision_id": "$arbiter_decision", "reason": "$arbiter_reason"}}';
    }}
  }}
}}
"#
    )
}

/// `arbiter serve` with these policies and routes, one registered agent, and Debian's nginx
/// in front of a recording upstream, configured as `nginx_conf`.
struct Setup {
    _tmp: Scratch,
    key: String,
    auditor: String,
    arbiter_port: u16,
    nginx_port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    // Dropped after the fields above are no longer needed; nginx first (SIGTERM: its master
    // then stops its workers, which SIGKILL would orphan, keeping the test's output pipe open).
    _nginx: Running,
    _serve: Served,
}

fn setup(policy_text: &str, routes: &str) -> Setup {
    let tmp = Scratch::new();
    let dir = tmp.path();
    tmp.write("policies/tickets.cedar", policy_text);
    let routes = tmp.write("routes.txt", routes);
    let data = tmp.data();
    let key = ARBITER
        .agent_with_key(&data, "support-bot", "support@example.com", &[])
        .key;
    let auditor = ARBITER.admin_token(&data, "t", "auditor");

    let serve = ARBITER.serve(
        &tmp.join("policies"),
        &data,
        &["--routes", routes.to_str().unwrap()],
    );
    let arbiter_port = serve.port;
    let (upstream_port, seen) = upstream();
    let nginx_port = free_port();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(dir, nginx_port, arbiter_port, upstream_port),
    )
    .unwrap();
    let mut nginx_process = Running::spawn(
        "nginx",
        Command::new(nginx())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stderr(Stdio::piped()),
    );
    nginx_process.wait_for_port(nginx_port);
    Setup {
        _tmp: tmp,
        key,
        auditor,
        arbiter_port,
        nginx_port,
        seen,
        _nginx: nginx_process,
        _serve: serve,
    }
}

#[test]
fn nginx_auth_request_allows_denies_and_authenticates() {
    let setup = setup(POLICIES, ROUTES);
    let (key, auditor, arbiter_port, nginx_port, seen) = (
        setup.key.clone(),
        setup.auditor.as_str(),
        setup.arbiter_port,
        setup.nginx_port,
        &setup.seen,
    );
    let bearer = format!("Bearer {key}");

    // Allowed: the upstream answers, and sees the decision but not the key.
    let (status, _, body) = request(nginx_port, "GET", "/tickets/42", Some(&bearer));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream ok");
    let (status, _, _) = request(nginx_port, "GET", "/tickets/mine?state=open", Some(&bearer));
    assert_eq!(status, 200);
    let (status, _, _) = request(nginx_port, "POST", "/tickets/7/replies", Some(&bearer));
    assert_eq!(status, 200);

    // Denied by a forbid, by a policy condition on a path parameter, and for want of a route.
    let (status, headers, body) = request(nginx_port, "DELETE", "/tickets/42", Some(&bearer));
    assert_eq!(status, 403, "{body}");
    let denied: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        denied["reason"],
        "deleting tickets is not allowed for agents"
    );
    let decision_id = denied["decision_id"].as_str().unwrap().to_owned();
    assert_eq!(
        header(&headers, "x-arbiter-decision-id"),
        Some(decision_id.as_str())
    );
    assert_eq!(
        request(nginx_port, "POST", "/tickets/locked/replies", Some(&bearer)).0,
        403
    );
    assert_eq!(
        request(nginx_port, "GET", "/admin/users", Some(&bearer)).0,
        403
    );
    assert_eq!(
        request(nginx_port, "GET", "/tickets/../admin", Some(&bearer)).0,
        403
    );

    // Unauthenticated: no key, a wrong key, another scheme.
    for auth in [
        None,
        Some("Bearer arb_0000000000000000000000000000000000000000000000AAAAAA"),
        Some("Basic dTpw"),
    ] {
        let (status, headers, _) = request(nginx_port, "GET", "/tickets/42", auth);
        assert_eq!(status, 401, "{auth:?}");
        assert!(
            header(&headers, "www-authenticate")
                .unwrap()
                .starts_with("Bearer"),
            "{headers:?}"
        );
    }

    // The upstream saw only allowed requests, each with a decision id, never the key.
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for head in &heads {
        assert!(
            !head.contains(&key) && !head.contains(&key[14..46]),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("authorization:"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("x-arbiter-decision-id: "),
            "{head}"
        );
        assert!(head.contains("support-bot"), "{head}");
    }

    // The records speak in templates, with the concrete values in the context.
    let page = http_get(arbiter_port, "/v1/decisions?limit=100", auditor);
    let records = page["decisions"].as_array().unwrap();
    let first = &records[0];
    assert_eq!(first["enforcement_point"], "http:tickets");
    assert_eq!(
        first["resource"],
        json!({"kind": "Route", "id": "tickets:GET /tickets/{id}"})
    );
    assert_eq!(first["context"]["params"], json!({"id": "42"}));
    assert_eq!(first["context"]["path"], "/tickets/42");
    assert!(
        first["subject"]["credential_id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    assert!(
        records
            .iter()
            .any(|r| r["resource"]["id"] == "tickets:GET /tickets/mine"
                && r["context"]["query"] == json!({"state": "open"}))
    );
    assert!(
        records
            .iter()
            .any(|r| r["decision_id"] == decision_id.as_str() && r["outcome"] == "deny")
    );
}

fn http_get(port: u16, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    http(port, "GET", path, &[("authorization", &auth)], "")
        .unwrap()
        .json()
}

/// Policy and routes of issue 14's reproduction: agents may only read tickets.
const REPRO_POLICIES: &str = r#"
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.method == "GET" && resource.path == "/tickets/{id}" };
"#;

const REPRO_ROUTES: &str = "\
@service tickets proxy=nginx
tickets GET    /tickets/{id}
tickets DELETE /tickets/{id}
tickets GET    /admin/{x}
";

/// Regression (issue 14): `DELETE /tickets/42?<é as raw bytes>` with the client's own
/// `X-Forwarded-Uri: /tickets/1` and `X-Forwarded-Method: GET` was answered 200 and reached
/// the upstream: the undecodable `X-Original-URI` was treated as absent and the client's
/// headers were decided instead. Variants: other proxies' headers, ambiguous targets and a
/// method override, each through the real nginx.
#[test]
fn nginx_reproduction_undecodable_uri_with_client_forwarded_headers_is_denied() {
    let setup = setup(REPRO_POLICIES, REPRO_ROUTES);
    let bearer = format!("Bearer {}", setup.key);
    let port = setup.nginx_port;
    let forged = [
        ("X-Forwarded-Uri", "/tickets/1"),
        ("X-Forwarded-Method", "GET"),
    ];
    let (status, headers, body) = request_raw(
        port,
        "DELETE",
        b"/tickets/42?\xc3\xa9",
        Some(&bearer),
        &forged,
    );
    assert_eq!(status, 403, "{body}");
    assert!(header(&headers, "x-arbiter-decision-id").is_some());

    // Variants: forged nginx headers of the client's own are overwritten by nginx; an
    // undecodable path; a non-ASCII path is decided as the upstream decodes it.
    let forged_original = [
        ("X-Original-Uri", "/tickets/1"),
        ("X-Original-Method", "GET"),
        ("X-Original-Host", "forged.example"),
    ];
    for (method, target, extra) in [
        ("DELETE", &b"/tickets/42"[..], &forged_original[..]),
        ("DELETE", b"/tickets/42\xff", &forged[..]),
        ("GET", b"/admin/x?\xc3\xa9", &forged[..]),
        ("GET", b"/tickets/1;/../../admin/x", &[][..]),
        ("GET", b"/tickets/1%2f..%2f..%2fadmin%2fx", &[][..]),
        ("GET", b"/tickets/..%5cadmin", &[][..]),
        ("GET", b"/tickets/%252e%252e", &[][..]),
        ("GET", b"/tickets/1%0a", &[][..]),
        (
            "GET",
            b"/tickets/1",
            &[("X-HTTP-Method-Override", "DELETE")][..],
        ),
    ] {
        let (status, _, body) = request_raw(port, method, target, Some(&bearer), extra);
        assert_eq!(
            status,
            403,
            "{method} {}: {body}",
            String::from_utf8_lossy(target)
        );
    }
    let (status, _, body) = request_raw(
        port,
        "GET",
        "/tickets/caf\u{e9}".as_bytes(),
        Some(&bearer),
        &forged,
    );
    assert_eq!(status, 200, "{body}");

    // The upstream received only the allowed GET, never the DELETE.
    let heads = setup.seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("GET /tickets/caf"), "{heads:?}");

    // The records: the reproduction is decided as what nginx forwards, DELETE of ticket 42.
    let page = http_get(
        setup.arbiter_port,
        "/v1/decisions?limit=100",
        &setup.auditor,
    );
    let records = page["decisions"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["resource"]["id"] == "tickets:DELETE /tickets/{id}"
                && r["context"]["params"]["id"] == "42"
                && r["context"]["host"] == "tickets.internal"
                && r["outcome"] == "deny"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["context"]["host"] != "forged.example"),
        "{records:?}"
    );
}

/// Which proxy asks about a service is configuration, never inferred: `serve` refuses a
/// service without `proxy=`, settings it cannot read, and settings for a service without
/// routes; an OpenAPI service takes its settings from `--forward-auth`.
#[test]
fn serve_requires_each_service_to_name_its_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("p.cedar"), REPRO_POLICIES).unwrap();
    let routes = dir.join("routes.txt");
    let openapi = dir.join("billing.json");
    std::fs::write(
        &openapi,
        r#"{"openapi": "3.0.0", "paths": {"/invoices/{id}": {"get": {}}}}"#,
    )
    .unwrap();
    let serve = |routes_text: &str, extra: &[&str], port: u16| {
        std::fs::write(&routes, routes_text).unwrap();
        let mut cmd = arbiter();
        cmd.args(["serve", "--log-level", "warn", "--policies"])
            .arg(&policies)
            .arg("--data")
            .arg(dir.join("data"))
            .arg("--routes")
            .arg(&routes)
            .args(extra)
            .args(["--listen", &format!("127.0.0.1:{port}")]);
        cmd
    };
    for (routes_text, extra, expected) in [
        (
            "tickets GET /tickets/{id}\n",
            &[][..],
            "`@service tickets proxy=nginx`",
        ),
        (
            "@service tickets proxy=haproxy\ntickets GET /t\n",
            &[][..],
            "`proxy=haproxy`",
        ),
        (
            "@service tickets proxy=nginx allow=dots\ntickets GET /t\n",
            &[][..],
            "`dots` is not one of",
        ),
        (
            "@service tickets proxy=nginx\n@service tickets proxy=envoy\ntickets GET /t\n",
            &[][..],
            "given twice",
        ),
        (
            "@service tickets proxy=nginx\ntickets GET /t\n",
            &["--forward-auth", "payroll proxy=nginx"][..],
            "`payroll`, which has no routes",
        ),
        (
            "@service tickets proxy=nginx\ntickets GET /t\n",
            &["--openapi", &format!("billing={}", openapi.display())][..],
            "`billing` does not say which proxy",
        ),
    ] {
        let out = serve(routes_text, extra, free_port()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{routes_text}{extra:?}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // With `--forward-auth` for the OpenAPI service, it starts.
    let port = free_port();
    let mut cmd = serve(
        "@service tickets proxy=nginx\ntickets GET /t\n",
        &[
            "--openapi",
            &format!("billing={}", openapi.display()),
            "--forward-auth",
            "billing proxy=envoy allow=semicolon method-override",
        ],
        port,
    );
    // Started: it answers.
    let _serve = Served::start(cmd.stderr(Stdio::null()), port);
}

const LIMITED: &str = r#"
@id("reads-limited")
@limit("2/minute")
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.service == "tickets" && resource.method == "GET" };

@id("replies-are-untrusted")
@session_label("untrusted_input")
permit (principal is Agent, action == Action::"http_request", resource == Route::"tickets:POST /tickets/{id}/replies");

@id("no-deletes-after-untrusted")
forbid (principal, action == Action::"http_request", resource is Route)
when { resource.method == "DELETE" && context.session.labels.contains("untrusted_input") };

@id("deletes")
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.method == "DELETE" };

@id("replies-need-approval")
@require_approval
permit (principal is Agent, action == Action::"http_request", resource == Route::"tickets:POST /tickets/{id}/replies")
when { context has params && context.params.id == "99" };
"#;

/// Runtime context at forward-auth, asked directly as a proxy would: a rate limit is a `403`
/// with `Retry-After`, labels follow the `Arbiter-Session` of the original request, and a
/// malformed session header is a recorded deny.
#[test]
fn forward_auth_answers_limits_with_retry_after_and_reads_the_session_header() {
    let s = setup(LIMITED, ROUTES);
    let bearer = format!("Bearer {}", s.key);
    let ask = |method: &str, uri: &str, session: Option<&str>| {
        let mut extra = vec![
            ("x-original-method", method),
            ("x-original-uri", uri),
            ("x-original-host", "tickets.internal"),
        ];
        if let Some(id) = session {
            extra.push(("arbiter-session", id));
        }
        request_raw(
            s.arbiter_port,
            "GET",
            b"/v1/forward-auth/tickets",
            Some(&bearer),
            &extra,
        )
    };
    let first = ask("GET", "/tickets/1", None);
    assert_eq!(first.0, 200, "{}", first.2);
    assert_eq!(ask("GET", "/tickets/2", Some("a")).0, 200);
    let (status, headers, body) = ask("GET", "/tickets/3", Some("b"));
    assert_eq!(status, 403, "{body}");
    let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["retry_after_s"], retry);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("rate limit reached"),
        "{body}"
    );

    assert_eq!(ask("DELETE", "/tickets/1", Some("a")).0, 200);
    assert_eq!(ask("POST", "/tickets/1/replies", Some("a")).0, 200);
    let (status, _, body) = ask("DELETE", "/tickets/1", Some("a"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("no-deletes-after-untrusted") || body.contains("denied"),
        "{body}"
    );
    assert_eq!(ask("DELETE", "/tickets/1", Some("c")).0, 200);

    // A request that needs a person's approval: 403 naming it; approved over the admin API
    // (an auditor may not), the identical request passes once.
    let (status, _, body) = ask("POST", "/tickets/99/replies", Some("z"));
    assert_eq!(status, 403, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let id = body["approval_id"]
        .as_str()
        .expect("the approval id")
        .to_owned();
    let admin_api = |token: &str, method: &str, path: &str, payload: &str| {
        let bearer = format!("Bearer {token}");
        http(
            s.arbiter_port,
            method,
            path,
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            payload,
        )
        .unwrap()
    };
    let listed = admin_api(&s.auditor, "GET", "/v1/approvals", "");
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains(&id), "{}", listed.body);
    let path = format!("/v1/approvals/{id}/approve");
    let refused = admin_api(&s.auditor, "POST", &path, r#"{"reason": "ok"}"#);
    assert_eq!(refused.status, 403, "{}", refused.body);
    let admin = ARBITER.admin_token(&s._tmp.data(), "rita@example.com", "administrator");
    let missing = admin_api(&admin, "POST", &path, "{}");
    assert_eq!(missing.status, 400, "{}", missing.body);
    let approved = admin_api(&admin, "POST", &path, r#"{"reason": "customer asked"}"#);
    assert_eq!(approved.status, 200, "{}", approved.body);
    let approved: Value = serde_json::from_str(&approved.body).unwrap();
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["decided_by"], "rita@example.com");
    assert_eq!(ask("POST", "/tickets/99/replies", Some("other")).0, 200);
    assert_eq!(ask("POST", "/tickets/99/replies", Some("other")).0, 403);
    // The approver's step is in the decision log, named and with its reason.
    let recs = ARBITER.records(&s._tmp.data());
    let step = recs
        .iter()
        .find(|r| r["action"] == "approve" && r["resource"]["id"] == id.as_str())
        .expect("the approval step is recorded");
    assert_eq!(step["subject"]["id"], "rita@example.com");
    assert_eq!(step["context"]["reason"], "customer asked");
    let unknown = admin_api(
        &admin,
        "POST",
        "/v1/approvals/apr_nope/approve",
        r#"{"reason": "x"}"#,
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let (status, headers, body) = ask("DELETE", "/tickets/1", Some("two words"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Arbiter-Session"), "{body}");
    assert!(header(&headers, "x-arbiter-decision-id").is_some());
}
