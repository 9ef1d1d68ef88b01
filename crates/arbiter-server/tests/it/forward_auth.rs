//! Forward-auth request shapes of the three proxies (nginx, Traefik, Envoy), in process.
//! The end-to-end test behind a real nginx is in `arbiter-cli/tests/forward_auth.rs`.

use std::sync::Arc;

use arbiter_pdp::IdentitySettings;
use arbiter_server::ServerConfig;
use arbiter_server::routes::RouteTable;
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::identity::Fixture;
use crate::support::{Reply, call, policy_dir};

const POLICIES: &str = r#"
permit (principal is Agent, action == Action::"http_request", resource is Route)
when { resource.service == "tickets" && resource.method == "GET" };
forbid (principal, action, resource is Route) when { context has query && context.query has export };
"#;

fn fixture() -> (Fixture, tempfile::TempDir) {
    let dir = policy_dir(&[("p.cedar", POLICIES)]);
    let mut routes = RouteTable::default();
    routes.add("tickets", "GET", "/tickets/{id}").unwrap();
    routes.add("tickets", "DELETE", "/tickets/{id}").unwrap();
    let config = ServerConfig {
        routes: Arc::new(routes),
        ..ServerConfig::default()
    };
    (
        Fixture::with(dir.path(), config, IdentitySettings::default()),
        dir,
    )
}

async fn send(f: &Fixture, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    call(&f.state, req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn nginx_traefik_and_envoy_shapes_are_understood() {
    let (f, _dir) = fixture();
    let key = f.agent_with_key("bot", json!({})).await;
    let bearer = format!("Bearer {key}");
    let auth = ("authorization", bearer.as_str());

    // nginx auth_request: the subrequest is a GET to the endpoint, the original in headers.
    let nginx = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            auth,
            ("x-original-method", "GET"),
            ("x-original-uri", "/tickets/1"),
        ],
    )
    .await;
    assert_eq!(nginx.status, 200);
    assert_eq!(nginx.headers["x-arbiter-agent-id"], "bot");
    assert!(nginx.headers.contains_key("x-arbiter-decision-id"));
    let nginx = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            auth,
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/tickets/1"),
        ],
    )
    .await;
    assert_eq!(nginx.status, 403);
    assert_eq!(nginx.json()["decision"], false);

    // Traefik forwardAuth.
    let traefik = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            auth,
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/tickets/2"),
            ("x-forwarded-host", "tickets.internal"),
        ],
    )
    .await;
    assert_eq!(traefik.status, 200);
    let traefik = send(
        &f,
        "GET",
        "/v1/forward-auth/tickets",
        &[
            auth,
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/tickets/2?export=1"),
        ],
    )
    .await;
    assert_eq!(traefik.status, 403, "the query reaches the policy");

    // Envoy ext_authz: the original method, the original path after the prefix.
    assert_eq!(
        send(&f, "GET", "/v1/forward-auth/tickets/tickets/3", &[auth])
            .await
            .status,
        200
    );
    assert_eq!(
        send(&f, "DELETE", "/v1/forward-auth/tickets/tickets/3", &[auth])
            .await
            .status,
        403
    );

    // Unauthenticated and unknown-service answers.
    let none = send(&f, "GET", "/v1/forward-auth/tickets/tickets/3", &[]).await;
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
        "/v1/forward-auth/tickets/tickets/3",
        &[("authorization", "Bearer nope")],
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
    // Half a header pair is a configuration error, not a guess.
    assert_eq!(
        send(
            &f,
            "GET",
            "/v1/forward-auth/tickets",
            &[auth, ("x-original-uri", "/tickets/1")]
        )
        .await
        .status,
        400
    );

    let records = f.records();
    assert!(
        records
            .iter()
            .all(|r| r.enforcement_point == "http:tickets")
    );
    let traefik_record = records
        .iter()
        .find(|r| r.context["host"] == "tickets.internal")
        .unwrap();
    assert_eq!(traefik_record.resource.id, "tickets:GET /tickets/{id}");
    assert_eq!(traefik_record.context["params"]["id"], "2");
}
