//! The web console's server side: sign-in sessions and their cookie on the admin API, CSRF,
//! roles, expiry and revocation, the embedded files and their headers, and the read APIs the
//! console uses (decision filters by layer, the live stream, statistics, tool pins).

use std::time::{Duration, Instant};

use arbiter_pdp::identity::now_us;
use arbiter_server::console::CSP;
use arbiter_store::Actor;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::identity::Fixture;
use crate::support::{Reply, call, example};

const EP: &str = "x-arbiter-enforcement-point";

struct Browser {
    cookie: String,
    csrf: String,
}

fn cookie_of(r: &Reply) -> String {
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn login(f: &Fixture, token: &str) -> Reply {
    f.send(
        "POST",
        "/console/api/login",
        None,
        Some(&json!({ "token": token })),
    )
    .await
}

async fn sign_in(f: &Fixture, token: &str) -> Browser {
    let r = login(f, token).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    Browser {
        cookie: cookie_of(&r),
        csrf: r.json()["csrf"].as_str().unwrap().to_owned(),
    }
}

/// A request with the browser's cookie, and its CSRF header when `csrf` is given.
async fn with_cookie(
    f: &Fixture,
    b: &Browser,
    method: &str,
    path: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", &b.cookie);
    if let Some(c) = csrf {
        req = req.header("x-arbiter-csrf", c);
    }
    let req = match body {
        Some(v) => req
            .header("content-type", "application/json")
            .body(Body::from(v.to_string())),
        None => req.body(Body::empty()),
    };
    call(&f.state, req.unwrap()).await
}

fn code(r: &Reply) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn token(f: &Fixture, role: &str, name: &str, expires_in: Option<&str>) -> (String, String) {
    let mut body = json!({"kind": "admin", "role": role, "name": name});
    if let Some(e) = expires_in {
        body["expires_in"] = json!(e);
    }
    let made = f.admin("POST", "/v1/tokens", Some(&body)).await;
    (
        made["token"].as_str().unwrap().to_owned(),
        made["credential"]["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn sign_in_then_the_cookie_reads_and_with_csrf_changes() {
    let f = Fixture::new(&example("quickstart"));

    // Refused sign-ins: a wrong token, no token, an unknown member, not JSON.
    let bad = login(&f, "arbadm_not-a-real-token").await;
    assert_eq!(bad.status, 401);
    assert_eq!(code(&bad), "unauthenticated");
    assert!(bad.headers.get("set-cookie").is_none());
    let r = f
        .send("POST", "/console/api/login", None, Some(&json!({})))
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token"))
    );
    let r = f
        .send(
            "POST",
            "/console/api/login",
            None,
            Some(&json!({"token": 7})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("token"))
    );
    let r = f
        .send(
            "POST",
            "/console/api/login",
            None,
            Some(&json!({"token": ""})),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = f
        .send(
            "POST",
            "/console/api/login",
            None,
            Some(&json!({"token": f.admin, "remember": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("remember"))
    );
    let big = json!({ "token": "x".repeat(5000) });
    assert_eq!(
        f.send("POST", "/console/api/login", None, Some(&big))
            .await
            .status,
        413
    );

    // A good one: the session, and a cookie with the right flags.
    let r = login(&f, &f.admin).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["name"], "tests");
    assert_eq!(v["role"], "administrator");
    let csrf = v["csrf"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 43);
    let expires = arbiter_log::parse_time(v["expires_at"].as_str().unwrap()).unwrap();
    assert!((expires - now_us() - 8 * 3600 * 1_000_000).abs() < 60_000_000);
    let set = r.headers["set-cookie"].to_str().unwrap();
    let value = set
        .strip_prefix("arbiter_console=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_eq!(value.len(), 43, "256 random bits, base64url: {set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2880"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http, no public https URL: {set}"
    );
    assert_eq!(r.headers["content-security-policy"], CSP);
    let b = Browser {
        cookie: cookie_of(&r),
        csrf,
    };
    // The secret of the cookie is not the token, nor in the answer.
    assert!(!String::from_utf8_lossy(&r.body).contains(value));

    // A reload gets the same session, CSRF token included.
    let s = with_cookie(&f, &b, "GET", "/console/api/session", None, None).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["csrf"], b.csrf.as_str());
    assert_eq!(s.json()["role"], "administrator");

    // Reads need no CSRF token.
    let r = with_cookie(&f, &b, "GET", "/v1/agents", None, None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // A change without the CSRF token, or with a wrong one, is refused and changes nothing.
    let agent = json!({"id": "csrf-bot", "owner": "team@example.com"});
    let r = with_cookie(&f, &b, "POST", "/v1/agents", None, Some(&agent)).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::FORBIDDEN, "csrf_token_missing_or_wrong")
    );
    let wrong = format!("{}x", &b.csrf[..b.csrf.len() - 1]);
    let r = with_cookie(&f, &b, "POST", "/v1/agents", Some(&wrong), Some(&agent)).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::FORBIDDEN, "csrf_token_missing_or_wrong")
    );
    let r = with_cookie(&f, &b, "DELETE", "/v1/agents/csrf-bot/keys", Some(""), None).await;
    assert_eq!(r.status, 403);
    let r = f
        .send("GET", "/v1/agents/csrf-bot", Some(&f.admin), None)
        .await;
    assert_eq!(r.status, 404, "nothing was created");

    // With it, the change is made, in the name of the token that signed in.
    let r = with_cookie(&f, &b, "POST", "/v1/agents", Some(&b.csrf), Some(&agent)).await;
    assert!(
        r.status.is_success(),
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let r = f
        .send("GET", "/v1/agents/csrf-bot", Some(&f.admin), None)
        .await;
    assert_eq!(r.status, 200);
    let audit = f.admin("GET", "/v1/audit?limit=1000", None).await;
    let register = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "agent.register")
        .unwrap()
        .clone();
    assert_eq!(register["actor"]["kind"], "admin_token", "{register}");
    let r = with_cookie(
        &f,
        &b,
        "POST",
        "/v1/agents/csrf-bot/suspend",
        Some(&b.csrf),
        Some(&json!({})),
    )
    .await;
    assert!(
        r.status.is_success(),
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );

    // An `Authorization` header wins over the cookie: a bad bearer is refused even with a
    // good cookie; a good bearer needs no CSRF token.
    let mut req = Request::get("/v1/agents")
        .header("cookie", &b.cookie)
        .header("authorization", "Bearer arbadm_wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&f.state, req).await.status, 401);
    req = Request::post("/v1/agents/csrf-bot/activate")
        .header("cookie", &b.cookie)
        .header("authorization", format!("Bearer {}", f.admin))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let r = call(&f.state, req).await;
    assert!(
        r.status.is_success(),
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );

    // Logout needs the CSRF token; then the session is gone server-side.
    let r = with_cookie(&f, &b, "POST", "/console/api/logout", None, None).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::FORBIDDEN, "csrf_token_missing_or_wrong")
    );
    let r = with_cookie(&f, &b, "POST", "/console/api/logout", Some(&b.csrf), None).await;
    assert_eq!(r.status, 204);
    let cleared = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("arbiter_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let r = with_cookie(&f, &b, "GET", "/console/api/session", None, None).await;
    assert_eq!(r.status, 401);
    let r = with_cookie(&f, &b, "GET", "/v1/agents", None, None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session")
    );
}

#[tokio::test]
async fn an_auditor_session_reads_but_never_changes() {
    let f = Fixture::new(&example("quickstart"));
    let (auditor, _) = token(&f, "auditor", "audit-team", None).await;
    let b = sign_in(&f, &auditor).await;
    let s = with_cookie(&f, &b, "GET", "/console/api/session", None, None).await;
    assert_eq!(
        (s.json()["role"].clone(), s.json()["name"].clone()),
        (json!("auditor"), json!("audit-team"))
    );
    assert_eq!(
        with_cookie(&f, &b, "GET", "/v1/agents", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        with_cookie(&f, &b, "GET", "/v1/audit", None, None)
            .await
            .status,
        200
    );
    let agent = json!({"id": "aud-bot", "owner": "team@example.com"});
    let r = with_cookie(&f, &b, "POST", "/v1/agents", Some(&b.csrf), Some(&agent)).await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let r = f
        .send("GET", "/v1/agents/aud-bot", Some(&f.admin), None)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn revoking_or_expiring_the_token_ends_its_sessions() {
    let f = Fixture::new(&example("quickstart"));
    let (second, id) = token(&f, "administrator", "second", None).await;
    let b = sign_in(&f, &second).await;
    assert_eq!(
        with_cookie(&f, &b, "GET", "/v1/agents", None, None)
            .await
            .status,
        200
    );
    f.admin("DELETE", &format!("/v1/tokens/{id}"), None).await;
    let r = with_cookie(&f, &b, "GET", "/v1/agents", None, None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // Ended for good: the next request finds no session at all.
    assert_eq!(
        with_cookie(&f, &b, "GET", "/console/api/session", None, None)
            .await
            .status,
        401
    );

    // A token that expires: the session reports the earlier expiry and ends with it.
    let issued = arbiter_pdp::admin::create_token(
        f.identity.store().as_ref(),
        &arbiter_pdp::admin::TokenSpec::Admin {
            role: "administrator".into(),
        },
        "short",
        Some(Duration::from_secs(60)),
        &Actor::system("tests"),
        now_us() - 58_000_000,
    )
    .unwrap();
    let r = login(&f, issued.secret.expose()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let expires = arbiter_log::parse_time(r.json()["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        expires <= now_us() + 2_000_000,
        "the token's expiry, not 8 h"
    );
    let b = Browser {
        cookie: cookie_of(&r),
        csrf: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = with_cookie(&f, &b, "GET", "/v1/agents", None, None).await;
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(Instant::now() < deadline, "the session outlived its token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn failed_sign_ins_are_throttled() {
    let f = Fixture::new(&example("quickstart"));
    for _ in 0..10 {
        assert_eq!(login(&f, "arbadm_guess").await.status, 401);
    }
    let r = login(&f, "arbadm_guess").await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
    assert!(r.headers.contains_key("retry-after"));
    // Even the right token waits: the bucket is checked before the token is.
    assert_eq!(login(&f, &f.admin).await.status, 429);
}

#[tokio::test]
async fn secure_cookie_when_served_over_https() {
    let config = arbiter_server::ServerConfig {
        public_url: Some("https://arbiter.example.com".into()),
        ..Default::default()
    };
    let f = Fixture::with(&example("quickstart"), config, Default::default());
    let r = login(&f, &f.admin).await;
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn the_console_files_are_embedded_with_strict_headers() {
    let f = Fixture::new(&example("quickstart"));
    let r = f.send("GET", "/console", None, None).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "/console/");
    for (path, ty) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/assets/app.js", "text/javascript; charset=utf-8"),
        (
            "/console/assets/verify.js",
            "text/javascript; charset=utf-8",
        ),
        ("/console/assets/style.css", "text/css; charset=utf-8"),
        (
            "/console/assets/favicon.svg",
            "image/svg+xml; charset=utf-8",
        ),
    ] {
        let r = f.send("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.headers["content-type"], ty, "{path}");
        assert_eq!(r.headers["content-security-policy"], CSP);
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["cache-control"], "no-cache");
        assert!(!r.body.is_empty());
        let etag = r.headers["etag"].to_str().unwrap().to_owned();
        let again = Request::get(path)
            .header("if-none-match", &etag)
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&f.state, again).await.status, 304, "{path}");
    }
    for path in [
        "/console/assets/index.html",
        "/console/assets/nope.js",
        "/console/assets/..%2Fapp.js",
        "/console/nope",
    ] {
        assert_eq!(f.send("GET", path, None, None).await.status, 404, "{path}");
    }

    // Turned off: no console at all, and its cookie means nothing.
    let b = sign_in(&f, &f.admin).await;
    let off = f.state.clone().without_console();
    for path in ["/console", "/console/", "/console/assets/app.js"] {
        let r = call(&off, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = call(
        &off,
        crate::support::post_json("/console/api/login", json!({"token": f.admin}).to_string()),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &off,
        Request::get("/v1/agents")
            .header("cookie", &b.cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
}

/// Three decisions at two layers: an MCP allow and deny, an HTTP allow.
async fn decide_at_layers(f: &Fixture) {
    let key = f
        .agent_with_key("layer-bot", json!({"roles": ["support"]}))
        .await;
    for (point, tool) in [
        ("mcp:fs", "read_ticket"),
        ("mcp:fs", "delete_ticket"),
        ("http:tickets", "read_ticket"),
    ] {
        let req = Request::post("/access/v1/evaluation")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header(EP, point)
            .body(Body::from(
                json!({
                    "action": {"name": "call_tool"},
                    "resource": {"type": "Tool", "id": format!("helpdesk/{tool}")},
                })
                .to_string(),
            ))
            .unwrap();
        let r = call(&f.state, req).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}

#[tokio::test]
async fn decisions_filter_by_layer_and_enforcement_point_and_stats_count_them() {
    let f = Fixture::new(&example("quickstart"));
    decide_at_layers(&f).await;
    let points = |v: &Value| -> Vec<String> {
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["enforcement_point"].as_str().unwrap().to_owned())
            .collect()
    };
    let ai = f.admin("GET", "/v1/decisions?layer=ai", None).await;
    assert_eq!(points(&ai), ["mcp:fs", "mcp:fs"]);
    let apps = f
        .admin("GET", "/v1/decisions?enforcement_point=http:", None)
        .await;
    assert_eq!(points(&apps), ["http:tickets"]);
    let one = f
        .admin(
            "GET",
            "/v1/decisions?enforcement_point=mcp:fs&outcome=deny",
            None,
        )
        .await;
    assert_eq!(points(&one), ["mcp:fs"]);
    let r = f
        .send("GET", "/v1/decisions?layer=cloud", Some(&f.admin), None)
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("layer"))
    );

    let s = f
        .admin("GET", "/v1/stats/decisions?since=2h&bucket=1h", None)
        .await;
    assert_eq!(s["bucket_seconds"], 3600);
    assert!(s["buckets"].as_array().unwrap().len() >= 2);
    assert_eq!(
        s["totals"]["ai"],
        json!({"allow": 1, "deny": 1, "require_approval": 0})
    );
    assert_eq!(s["totals"]["applications"]["allow"], 1);
    assert_eq!(
        s["totals"]["data"],
        json!({"allow": 0, "deny": 0, "require_approval": 0})
    );
    let summed: u64 = s["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["by_layer"]["ai"]["allow"].as_u64().unwrap()
                + b["by_layer"]["ai"]["deny"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(summed, 2);
    assert!(s["log"]["records"].as_u64().unwrap() >= 3);
    // The log's latest checkpoint, verified in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = f.admin("GET", "/v1/stats/decisions", None).await;
        let verified = &s["log"]["verified"];
        if verified["ok"] == true {
            assert!(verified["checked"].as_str().unwrap().contains("signature"));
            assert!(s["log"]["checkpoint"]["root"].as_str().unwrap().len() == 64);
            break;
        }
        assert!(Instant::now() < deadline, "never verified: {s}");
        // The first checkpoint is written within a second of start.
        if let Some(r) = f.state.pdp.recorder() {
            let _ = r.log().force_checkpoint();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (q, field) in [
        ("since=32d", "since"),
        ("since=soon", "since"),
        ("bucket=1s", "bucket"),
        ("since=30d&bucket=1m", "bucket"),
        ("color=red", "color"),
    ] {
        let r = f
            .send(
                "GET",
                &format!("/v1/stats/decisions?{q}"),
                Some(&f.admin),
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!(field)),
            "{q}"
        );
    }
    assert_eq!(
        f.send("GET", "/v1/stats/decisions", None, None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn concurrent_first_requests_both_report_the_first_verification() {
    let f = Fixture::new(&example("quickstart"));
    decide_at_layers(&f).await;
    if let Some(r) = f.state.pdp.recorder() {
        let _ = r.log().force_checkpoint();
    }
    // Before the fix, the request that did not start the first verification answered
    // `verified: null` ("never verified") while it ran.
    let (a, b) = tokio::join!(
        f.admin("GET", "/v1/stats/decisions", None),
        f.admin("GET", "/v1/stats/decisions", None)
    );
    for s in [a, b] {
        assert!(
            s["log"]["verified"].is_object(),
            "no verification reported: {s}"
        );
    }
}

#[tokio::test]
async fn the_stream_delivers_decisions_made_after_connecting() {
    let f = Fixture::new(&example("quickstart"));
    decide_at_layers(&f).await;
    let b = sign_in(&f, &f.admin).await;
    let req = Request::get("/v1/decisions/stream?layer=ai")
        .header("cookie", &b.cookie)
        .body(Body::empty())
        .unwrap();
    let res = arbiter_server::app(f.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut body = res.into_body();
    // A decision at another layer, then one at the AI layer: only the latter arrives.
    let key = f
        .agent_with_key("stream-bot", json!({"roles": ["support"]}))
        .await;
    for point in ["sql:app", "mcp:helpdesk"] {
        let req = Request::post("/access/v1/evaluation")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header(EP, point)
            .body(Body::from(
                json!({"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "helpdesk/read_ticket"}}).to_string(),
            ))
            .unwrap();
        assert_eq!(call(&f.state, req).await.status, 200);
    }
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("event: decision") || !text.ends_with("\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, body.frame())
            .await
            .expect("no decision event in time")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.starts_with(": connected"), "{text}");
    let event = text.split("event: decision\n").nth(1).unwrap();
    let data: Value = serde_json::from_str(
        event
            .strip_prefix("data: ")
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["enforcement_point"], "mcp:helpdesk");
    assert_eq!(data["subject"]["agent_id"], "stream-bot");
    assert!(!text.contains("sql:app"), "{text}");
    assert!(
        !text.contains("layer-bot"),
        "older decisions are not replayed: {text}"
    );
    drop(body);

    // Refused without credentials; bad filters named.
    assert_eq!(
        f.send("GET", "/v1/decisions/stream", None, None)
            .await
            .status,
        401
    );
    let r = f
        .send("GET", "/v1/decisions/stream?after=x", Some(&f.admin), None)
        .await;
    assert_eq!(r.json()["error"]["field"], "after");
}

#[tokio::test]
async fn tool_pins_list_and_approve_only_the_reviewed_hash() {
    let f = Fixture::new(&example("quickstart"));
    let store = f.identity.store();
    let h = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    store
        .check_tool(
            "fs",
            "read_file",
            &h('a'),
            r#"{"name":"read_file"}"#,
            now_us(),
        )
        .unwrap();
    store
        .check_tool(
            "fs",
            "read_file",
            &h('b'),
            r#"{"name":"read_file","x":1}"#,
            now_us(),
        )
        .unwrap();
    store
        .check_tool(
            "fs",
            "list_dir",
            &h('c'),
            r#"{"name":"list_dir"}"#,
            now_us(),
        )
        .unwrap();
    let pins = f.admin("GET", "/v1/tool-pins?server=fs", None).await;
    let pins = pins["pins"].as_array().unwrap().clone();
    assert_eq!(pins.len(), 2);
    let changed = pins.iter().find(|p| p["tool"] == "read_file").unwrap();
    assert_eq!(changed["state"], "changed");
    assert_eq!(changed["hash"], h('a'));
    assert_eq!(changed["pending_hash"], h('b'));
    assert_eq!(changed["pending_definition"]["x"], 1);
    assert!(changed["first_seen"].is_string());
    assert_eq!(changed["approved_by"], Value::Null);
    let same = pins.iter().find(|p| p["tool"] == "list_dir").unwrap();
    assert_eq!(
        (same["state"].clone(), same["pending_hash"].clone()),
        (json!("pinned"), Value::Null)
    );
    assert_eq!(
        f.admin("GET", "/v1/tool-pins?server=other", None).await["pins"],
        json!([])
    );
    let r = f
        .send("GET", "/v1/tool-pins?srv=fs", Some(&f.admin), None)
        .await;
    assert_eq!(r.json()["error"]["field"], "srv");

    // The wrong hash: 409 naming the right one; nothing approved.
    let r = f
        .send(
            "POST",
            "/v1/tool-pins/fs/read_file/approve",
            Some(&f.admin),
            Some(&json!({"hash": h('a')})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&h('b'))
    );
    for bad in [
        json!({"hash": "md5:00"}),
        json!({}),
        json!({"hash": h('b'), "why": "ok"}),
    ] {
        let r = f
            .send(
                "POST",
                "/v1/tool-pins/fs/read_file/approve",
                Some(&f.admin),
                Some(&bad),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    let r = f
        .send(
            "POST",
            "/v1/tool-pins/fs/nope/approve",
            Some(&f.admin),
            Some(&json!({"hash": h('b')})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = f
        .send(
            "POST",
            "/v1/tool-pins/fs/list_dir/approve",
            Some(&f.admin),
            Some(&json!({"hash": h('c')})),
        )
        .await;
    assert_eq!(r.status, 409);

    // By cookie: the CSRF token is needed; an auditor may not.
    let (auditor, _) = token(&f, "auditor", "aud", None).await;
    let a = sign_in(&f, &auditor).await;
    let r = with_cookie(
        &f,
        &a,
        "POST",
        "/v1/tool-pins/fs/read_file/approve",
        Some(&a.csrf),
        Some(&json!({"hash": h('b')})),
    )
    .await;
    assert_eq!(r.status, 403);
    let b = sign_in(&f, &f.admin).await;
    let r = with_cookie(
        &f,
        &b,
        "POST",
        "/v1/tool-pins/fs/read_file/approve",
        None,
        Some(&json!({"hash": h('b')})),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (StatusCode::FORBIDDEN, "csrf_token_missing_or_wrong")
    );
    assert_eq!(
        store.tool_pin("fs", "read_file").unwrap().unwrap().hash,
        h('a')
    );
    let r = with_cookie(
        &f,
        &b,
        "POST",
        "/v1/tool-pins/fs/read_file/approve",
        Some(&b.csrf),
        Some(&json!({"hash": h('b')})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let pin = &r.json()["pin"];
    assert_eq!(
        (pin["state"].clone(), pin["hash"].clone()),
        (json!("pinned"), json!(h('b')))
    );
    assert!(
        pin["approved_by"]
            .as_str()
            .unwrap()
            .starts_with("admin_token:")
    );
    // Audited like the CLI's approval, with the token that approved.
    let audit = f.admin("GET", "/v1/audit?limit=1000", None).await;
    let text = audit.to_string();
    assert!(text.contains("tool.approved"), "{text}");
}

#[tokio::test]
async fn the_access_log_names_the_admin_of_a_session_and_never_its_cookie() {
    use arbiter_server::access_log::{AccessLog, Target};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let (log, writer) = AccessLog::open(Target::File(path.clone())).unwrap();
    let config = arbiter_server::ServerConfig {
        access_log: Some(log),
        ..Default::default()
    };
    let f = Fixture::with(&example("quickstart"), config, Default::default());
    let b = sign_in(&f, &f.admin).await;
    let r = with_cookie(&f, &b, "GET", "/v1/agents", None, None).await;
    assert_eq!(r.status, 200);
    let r = with_cookie(
        &f,
        &b,
        "POST",
        "/v1/agents",
        None,
        Some(&json!({"id": "x", "owner": "o"})),
    )
    .await;
    assert_eq!(r.status, 403);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.iter().filter(|l| l["path"] == "/v1/agents").count() >= 2 {
            break (text, lines);
        }
        assert!(Instant::now() < deadline, "access log: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (text, lines) = lines;
    for line in lines
        .iter()
        .filter(|l| l["path"] == "/v1/agents" || l["path"] == "/console/api/login")
    {
        assert_eq!(line["caller"]["kind"], "admin", "{line}");
        assert_eq!(line["caller"]["role"], "administrator", "{line}");
    }
    let value = b.cookie.strip_prefix("arbiter_console=").unwrap();
    for secret in [value, f.admin.as_str(), b.csrf.as_str()] {
        assert!(!text.contains(secret), "a secret in the access log: {text}");
    }
    drop(writer);
}
