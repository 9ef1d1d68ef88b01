//! Forward-auth request shapes of the three proxies (nginx, Traefik, Envoy), in process, and
//! the trust boundary: each service reads only its configured proxy's headers, undecodable
//! or missing headers, ambiguous targets and method overrides are recorded denies.
//! The end-to-end test behind a real nginx is in `arbiter-cli/tests/forward_auth.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use arbiter_log::{DecisionRecord, Outcome};
use arbiter_pdp::IdentitySettings;
use arbiter_server::ServerConfig;
use arbiter_server::routes::{Ambiguity, Proxy, RouteTable, ServiceSettings};
use axum::body::Body;
use axum::http::{HeaderValue, Request};
use serde_json::json;

use crate::identity::Fixture;
use crate::support::{Reply, call, policy_dir};

/// The issue's policy: agents may only read tickets.
const POLICIES: &str = r#"
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.method == "GET" && resource.path == "/tickets/{id}" };
forbid (principal, action, resource is Route) when { context has query && context.query has export };
"#;

/// Services with the same routes: `tickets` behind nginx, `tk-traefik`, `tk-envoy`, and
/// `tk-lenient` (nginx, every ambiguity class and method overrides opted in).
fn fixture() -> (Fixture, tempfile::TempDir) {
    let dir = policy_dir(&[("p.cedar", POLICIES)]);
    let mut routes = RouteTable::default();
    let lenient = ServiceSettings {
        proxy: Proxy::Nginx,
        allow: Ambiguity::ALL.into_iter().collect::<BTreeSet<_>>(),
        method_override: true,
    };
    for (service, settings) in [
        ("tickets", ServiceSettings::new(Proxy::Nginx)),
        ("tk-traefik", ServiceSettings::new(Proxy::Traefik)),
        ("tk-envoy", ServiceSettings::new(Proxy::Envoy)),
        ("tk-lenient", lenient),
    ] {
        routes.add(service, "GET", "/tickets/{id}").unwrap();
        routes.add(service, "DELETE", "/tickets/{id}").unwrap();
        routes.add(service, "GET", "/admin/{x}").unwrap();
        routes.configure(service, settings).unwrap();
    }
    routes.check().unwrap();
    let config = ServerConfig {
        routes: Arc::new(routes),
        ..ServerConfig::default()
    };
    (
        Fixture::with(dir.path(), config, IdentitySettings::default()),
        dir,
    )
}

/// A request with raw header bytes (a proxy may pass any byte ≥ 0x80).
async fn send_raw(f: &Fixture, method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_bytes(v).unwrap());
    }
    call(&f.state, req.body(Body::empty()).unwrap()).await
}

async fn send(f: &Fixture, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let raw: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    send_raw(f, method, uri, &raw).await
}

/// nginx's three headers for `METHOD TARGET`.
fn nginx<'a>(auth: &'a str, method: &'a str, target: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("authorization", auth),
        ("x-original-method", method),
        ("x-original-uri", target),
        ("x-original-host", "tickets.internal"),
    ]
}

/// Asserts a recorded deny: 403, the decision id in the header and the body, the record a
/// deny under `http:<service>` whose reasons contain `why`.
/// The record of the decision named by the answer's `X-Arbiter-Decision-Id`.
fn recorded(f: &Fixture, r: &Reply) -> DecisionRecord {
    let id = r.headers["x-arbiter-decision-id"].to_str().unwrap();
    f.records()
        .into_iter()
        .find(|rec| rec.decision_id == id)
        .expect("the decision is recorded")
}

fn assert_recorded_deny(f: &Fixture, r: &Reply, why: &str) {
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(
        body["decision_id"],
        r.headers["x-arbiter-decision-id"].to_str().unwrap()
    );
    assert!(
        body["reason"].as_str().unwrap().contains(why),
        "`{why}` not in {body}"
    );
    let record = recorded(f, r);
    assert_eq!(record.outcome, Outcome::Deny);
    assert!(record.reason_admin.contains(why), "{}", record.reason_admin);
}

#[tokio::test]
async fn nginx_traefik_and_envoy_shapes_are_understood() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let auth = ("authorization", bearer.as_str());

    // nginx auth_request: the subrequest is a GET to the endpoint, the original in headers.
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &nginx(&bearer, "GET", "/tickets/1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-arbiter-agent-id"], "bot");
    assert!(r.headers.contains_key("x-arbiter-decision-id"));
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &nginx(&bearer, "DELETE", "/tickets/1"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["decision"], false);

    // Traefik forwardAuth.
    let traefik = |target: &'static str| {
        [
            auth,
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", target),
            ("x-forwarded-host", "traefik.internal"),
        ]
    };
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-traefik",
        &traefik("/tickets/2"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-traefik",
        &traefik("/tickets/2?export=1"),
    )
    .await;
    assert_eq!(r.status, 403, "the query reaches the policy");

    // Envoy ext_authz: the original method, the original path after the prefix.
    let host = ("host", "envoy.internal");
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-envoy/tickets/3",
        &[auth, host],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &f,
        "DELETE",
        "/v1/forward-auth/tk-envoy/tickets/3",
        &[auth, host],
    )
    .await;
    assert_eq!(r.status, 403);

    // Unauthenticated and unknown-service answers.
    let none = send(&f, "GET", "/v1/forward-auth/tk-envoy/tickets/3", &[host]).await;
    assert_eq!(none.status, 401);
    assert!(
        none.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let bad = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-envoy/tickets/3",
        &[("authorization", "Bearer nope"), host],
    )
    .await;
    assert_eq!(bad.status, 401);
    assert!(
        bad.headers.contains_key("x-arbiter-decision-id"),
        "a refused credential is a recorded decision"
    );
    assert_eq!(
        send(&f, "GET", "/v1/forward-auth/payroll/x", &[auth])
            .await
            .status,
        404
    );

    let records = f.records();
    let traefik_record = records
        .iter()
        .find(|r| r.context["host"] == "traefik.internal")
        .unwrap();
    assert_eq!(traefik_record.enforcement_point, "http:tk-traefik");
    assert_eq!(traefik_record.resource.id, "tk-traefik:GET /tickets/{id}");
    assert_eq!(traefik_record.context["params"]["id"], "2");
    let envoy_record = records
        .iter()
        .find(|r| r.context["host"] == "envoy.internal" && r.outcome == Outcome::Allow)
        .unwrap();
    assert_eq!(envoy_record.resource.id, "tk-envoy:GET /tickets/{id}");
}

/// Regression (issue 14, the reproduction): an `X-Original-URI` with bytes ≥ 0x80 was
/// treated as absent, and the client's own `X-Forwarded-*` headers were decided instead
/// (`GET /tickets/1`, allowed) while the upstream ran `DELETE /tickets/42`.
#[tokio::test]
async fn undecodable_original_uri_never_falls_back_to_client_forwarded_headers() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let r = send_raw(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            ("authorization", bearer.as_bytes()),
            ("x-original-method", b"DELETE"),
            ("x-original-uri", b"/tickets/42?\xc3\xa9"),
            ("x-original-host", b"tickets.internal"),
            ("x-forwarded-uri", b"/tickets/1"),
            ("x-forwarded-method", b"GET"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let record = recorded(&f, &r);
    // What nginx forwards is what is decided: DELETE of ticket 42, the é percent-encoded.
    assert_eq!(record.resource.id, "tickets:DELETE /tickets/{id}");
    assert_eq!(record.context["params"]["id"], "42");
    assert_eq!(record.context["query"], json!({"\u{e9}": ""}));
    assert_eq!(record.outcome, Outcome::Deny);
}

/// Regression: with no `X-Forwarded-*`, an undecodable `X-Original-URI` fell back to Envoy
/// mode and decided the path after `/v1/forward-auth/<service>` with the subrequest's method.
#[tokio::test]
async fn undecodable_original_uri_never_falls_back_to_the_envoy_shape() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let r = send_raw(
        &f,
        "GET",
        "/v1/forward-auth/tickets/tickets/1",
        &[
            ("authorization", bearer.as_bytes()),
            ("x-original-method", b"DELETE"),
            ("x-original-uri", b"/tickets/42\xff"),
            ("x-original-host", b"tickets.internal"),
        ],
    )
    .await;
    assert_recorded_deny(&f, &r, "invalid-utf8");
}

/// Regression: undecodable method and host headers were silently dropped (the host) or
/// answered as a configuration error without a record (the method).
#[tokio::test]
async fn undecodable_method_or_host_is_a_recorded_deny() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let auth: (&str, &[u8]) = ("authorization", bearer.as_bytes());
    for (headers, why) in [
        (
            [
                auth,
                ("x-original-method", &b"G\xc3\xa9T"[..]),
                ("x-original-uri", b"/tickets/1"),
                ("x-original-host", b"tickets.internal"),
            ],
            "X-Original-Method",
        ),
        (
            [
                auth,
                ("x-original-method", b"GET"),
                ("x-original-uri", b"/tickets/1"),
                ("x-original-host", b"tickets.\xc3\xa9"),
            ],
            "X-Original-Host",
        ),
    ] {
        let r = send_raw(&f, "GET", "/v1/forward-auth/tickets", &headers).await;
        assert_recorded_deny(&f, &r, why);
    }
}

/// Regression: which headers were read was inferred from which were present, so a client
/// could pick the proxy shape. An nginx service reads only `X-Original-*`, all three required.
#[tokio::test]
async fn nginx_mode_ignores_traefik_and_envoy_shapes() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let auth = ("authorization", bearer.as_str());
    // Traefik's headers only.
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            auth,
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/tickets/1"),
            ("x-forwarded-host", "tickets.internal"),
        ],
    )
    .await;
    assert_recorded_deny(&f, &r, "`x-original-method` is missing");
    // The Envoy shape only.
    let r = send(&f, "GET", "/v1/forward-auth/tickets/tickets/1", &[auth]).await;
    assert_recorded_deny(&f, &r, "`x-original-method` is missing");
    // No `X-Original-Host`: it would be the client's own (nginx forwards client headers).
    let mut no_host = nginx(&bearer, "GET", "/tickets/1");
    no_host.pop();
    let r = send(&f, "GET", "/v1/forward-auth/tickets", &no_host).await;
    assert_recorded_deny(&f, &r, "`x-original-host` is missing");
    // Half a pair.
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[auth, ("x-original-uri", "/tickets/1")],
    )
    .await;
    assert_recorded_deny(&f, &r, "`x-original-method` is missing");
    // A repeated header: which one would the upstream's proxy have meant?
    let mut twice = nginx(&bearer, "GET", "/tickets/1");
    twice.push(("x-original-uri", "/admin/users"));
    let r = send(&f, "GET", "/v1/forward-auth/tickets", &twice).await;
    assert_recorded_deny(&f, &r, "`x-original-uri` is sent more than once");
}

/// Regression: `X-Original-*` took precedence over Traefik's own `X-Forwarded-*`, and nginx
/// forwards client headers; a Traefik service reads only `X-Forwarded-*`.
#[tokio::test]
async fn traefik_mode_ignores_nginx_and_envoy_shapes() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let mut headers = nginx(&bearer, "GET", "/tickets/1");
    headers.extend([
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/tickets/1"),
        ("x-forwarded-host", "tickets.internal"),
    ]);
    let r = send(&f, "GET", "/v1/forward-auth/tk-traefik", &headers).await;
    assert_eq!(r.status, 403);
    let record = recorded(&f, &r);
    assert_eq!(record.resource.id, "tk-traefik:DELETE /tickets/{id}");
    // nginx's headers alone, and the Envoy shape, are missing Traefik's.
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-traefik",
        &nginx(&bearer, "GET", "/tickets/1"),
    )
    .await;
    assert_recorded_deny(&f, &r, "`x-forwarded-method` is missing");
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-traefik/tickets/1",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_recorded_deny(&f, &r, "`x-forwarded-method` is missing");
}

/// Regression: an Envoy request carrying `X-Original-*` or `X-Forwarded-*` (client headers
/// Envoy may pass on) was decided on those; and the path was decoded twice (once by the
/// router, once by the matcher), so `%2561` was matched as `a`.
#[tokio::test]
async fn envoy_mode_ignores_other_proxies_headers_and_reads_the_raw_path() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let mut headers = nginx(&bearer, "GET", "/tickets/1");
    headers.extend([
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/tickets/1"),
        ("host", "tickets.internal"),
    ]);
    let r = send(
        &f,
        "DELETE",
        "/v1/forward-auth/tk-envoy/tickets/1",
        &headers,
    )
    .await;
    assert_eq!(r.status, 403);
    let record = recorded(&f, &r);
    assert_eq!(record.resource.id, "tk-envoy:DELETE /tickets/{id}");

    let auth = ("authorization", bearer.as_str());
    let host = ("host", "tickets.internal");
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-envoy/tickets/%2561",
        &[auth, host],
    )
    .await;
    assert_recorded_deny(&f, &r, "double-encoding");
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-envoy/tickets/1%2f..%2f..%2fadmin%2fx",
        &[auth, host],
    )
    .await;
    assert_recorded_deny(&f, &r, "encoded-slash");
    // Opted in, the encoded target is matched once-decoded, as its upstream sees it.
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &nginx(&bearer, "GET", "/tickets/%2561"),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(
        &f,
        "GET",
        "/v1/forward-auth/tk-lenient",
        &nginx(&bearer, "GET", "/tickets/%2561"),
    )
    .await;
    assert_eq!(r.status, 200);
    let record = f.records().pop().unwrap();
    assert_eq!(record.context["params"]["id"], "%61");
}

/// Regression: ambiguous targets were decoded and matched, so a route and the upstream could
/// disagree on them. Each class is a recorded deny naming it, unless the service opts in.
#[tokio::test]
async fn ambiguous_targets_are_recorded_denies_unless_the_service_opts_in() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let cases: [(&[u8], &str); 14] = [
        (b"/tickets/1;jsessionid=x", "semicolon"),
        (b"/tickets/1%3Bx", "semicolon"),
        (b"/tickets/1?a=1;export=1", "semicolon"),
        (b"/tickets/1\\x", "backslash"),
        (b"/tickets/1%5cx", "encoded-backslash"),
        (b"/tickets/1%2Fx", "encoded-slash"),
        (b"/tickets/a%2eb", "encoded-dot"),
        (b"/tickets/%2E%2E", "encoded-dot"),
        (b"/tickets/%252e%252e", "double-encoding"),
        (b"/tickets/1?q=%2541", "double-encoding"),
        (b"/tickets/1%00", "control"),
        (b"/tickets/1%0A", "control"),
        (b"/tickets/1\tx", "control"),
        (b"/tickets/%ff", "invalid-utf8"),
    ];
    for (target, class) in cases {
        let headers: [(&str, &[u8]); 4] = [
            ("authorization", bearer.as_bytes()),
            ("x-original-method", b"GET"),
            ("x-original-uri", target),
            ("x-original-host", b"tickets.internal"),
        ];
        let r = send_raw(&f, "GET", "/v1/forward-auth/tickets", &headers).await;
        assert_recorded_deny(&f, &r, &format!("allow={class}"));
        let r = send_raw(&f, "GET", "/v1/forward-auth/tk-lenient", &headers).await;
        assert_eq!(
            r.status,
            200,
            "{}: {}",
            String::from_utf8_lossy(target),
            String::from_utf8_lossy(&r.body)
        );
    }
    // A fragment and raw dot segments are never opted in to.
    for target in ["/tickets/1#/../../admin/x", "/tickets/../admin/x"] {
        let r = send(
            &f,
            "GET",
            "/v1/forward-auth/tk-lenient",
            &nginx(&bearer, "GET", target),
        )
        .await;
        assert_eq!(r.status, 403, "{target}");
    }
}

/// Bytes outside ASCII in the original target are percent-encoded: the decision is about
/// the path the upstream decodes, and the record holds it in ASCII.
#[tokio::test]
async fn bytes_outside_ascii_are_percent_encoded_as_the_upstream_decodes_them() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let r = send_raw(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            ("authorization", bearer.as_bytes()),
            ("x-original-method", b"GET"),
            ("x-original-uri", "/tickets/caf\u{e9}".as_bytes()),
            ("x-original-host", b"tickets.internal"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let record = f.records().pop().unwrap();
    assert_eq!(record.context["path"], "/tickets/caf%C3%A9");
    assert_eq!(record.context["params"]["id"], "caf\u{e9}");
}

/// Regression: method-override headers reached the upstream unseen; `GET` was decided while
/// an upstream honouring `X-HTTP-Method-Override: DELETE` deleted.
#[tokio::test]
async fn method_override_headers_are_refused_unless_the_service_opts_in() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let mut headers = nginx(&bearer, "GET", "/tickets/1");
        headers.push((name, "DELETE"));
        let r = send(&f, "GET", "/v1/forward-auth/tickets", &headers).await;
        assert_recorded_deny(&f, &r, &format!("`{name}`"));
        // Opted in: the overriding method is what is decided.
        let r = send(&f, "GET", "/v1/forward-auth/tk-lenient", &headers).await;
        assert_eq!(r.status, 403);
        let record = f.records().pop().unwrap();
        assert_eq!(record.resource.id, "tk-lenient:DELETE /tickets/{id}");
    }
    // Opted in, overriding to an allowed method is allowed.
    let mut headers = nginx(&bearer, "POST", "/tickets/1");
    headers.push(("x-http-method-override", "get"));
    let r = send(&f, "GET", "/v1/forward-auth/tk-lenient", &headers).await;
    assert_eq!(r.status, 200);
    // Overrides that disagree, or are not methods, are refused even when opted in.
    let mut headers = nginx(&bearer, "GET", "/tickets/1");
    headers.extend([
        ("x-http-method-override", "GET"),
        ("x-method-override", "DELETE"),
    ]);
    let r = send(&f, "GET", "/v1/forward-auth/tk-lenient", &headers).await;
    assert_recorded_deny(&f, &r, "name different methods");
    let mut headers = nginx(&bearer, "GET", "/tickets/1");
    headers.push(("x-http-method", "GET /admin"));
    let r = send(&f, "GET", "/v1/forward-auth/tk-lenient", &headers).await;
    assert_recorded_deny(&f, &r, "x-http-method");
}
