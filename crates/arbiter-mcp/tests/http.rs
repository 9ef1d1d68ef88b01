//! The streamable-HTTP transport end to end: a real gateway (an embedded decision point over a
//! temporary registry and policies) in front of an in-process fake MCP server that answers
//! with JSON or SSE, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_mcp::http::{HttpSettings, serve_on};
use arbiter_mcp::{Gateway, GatewayConfig};
use arbiter_pdp::identity::now_us;
use arbiter_pdp::local::{LocalConfig, open_local};
use arbiter_pdp::{LogMode, RecorderSettings};
use arbiter_pep::LocalDecider;
use arbiter_store::{Actor, Environment, NewAgent, Store};
use arbiter_testkit::{PATIENCE, wait_for_async, wait_until_async};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const POLICIES: &str = r#"
permit (principal, action, resource);

forbid (
  principal,
  action in [Action::"call_tool", Action::"list_tools"],
  resource == Tool::"fake/secret"
);
"#;

const MODERN: &str = "2026-07-28";

// ---- the fake MCP server ------------------------------------------------------------------

/// One HTTP request the fake server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Debug, Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    sessions: AtomicUsize,
    /// Announce one more tool, `added`, from now on.
    added: AtomicBool,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The POSTed messages whose `method` is `method`.
    fn posts_of(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| {
                s.method == "POST" && s.body.get("method").and_then(Value::as_str) == Some(method)
            })
            .collect()
    }
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Echoes", "inputSchema": {"type": "object"}},
        {"name": "secret", "description": "Never", "inputSchema": {"type": "object"}},
        {"name": "stream", "description": "Streams", "inputSchema": {"type": "object"}},
    ])
}

fn json_reply(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn sse_reply(events: &[(&str, Value)]) -> Response {
    let mut text = String::from(": stream start\n\n");
    for (id, data) in events {
        text.push_str(&format!("id: {id}\nevent: message\ndata: {data}\n\n"));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(text))
        .unwrap()
}

async fn fake(State(fake): State<Arc<Fake>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    fake.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    match parts.method.as_str() {
        "GET" => return Response::builder().status(405).body(Body::empty()).unwrap(),
        "DELETE" => return Response::builder().status(200).body(Body::empty()).unwrap(),
        _ => {}
    }
    let modern = parts
        .headers
        .get("mcp-protocol-version")
        .is_some_and(|v| v == MODERN);
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let method = body
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if method == "initialize" {
        let n = fake.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        let mut r = json_reply(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "1"}}}),
        );
        r.headers_mut()
            .insert("mcp-session-id", format!("sess-{n}").parse().unwrap());
        return r;
    }
    if !modern && parts.headers.get("mcp-session-id").is_none() {
        return json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}}),
        );
    }
    if body.get("id").is_none() || body.get("method").is_none() {
        // A notification, or the answer to a request of the server.
        return Response::builder().status(202).body(Body::empty()).unwrap();
    }
    match method {
        "tools/list" => {
            let mut tools = tools();
            if fake.added.load(Ordering::SeqCst)
                && let Some(list) = tools.as_array_mut()
            {
                list.push(json!({"name": "added", "description": "New", "inputSchema": {"type": "object"}}));
            }
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}});
            if id.as_str().is_some_and(|i| i.starts_with("sse-")) {
                sse_reply(&[("l1", answer)])
            } else {
                json_reply(StatusCode::OK, &answer)
            }
        }
        "tools/call" => match body["params"]["name"].as_str() {
            Some("stream") => sse_reply(&[
                (
                    "s1",
                    json!({"jsonrpc": "2.0", "method": "notifications/progress",
                           "params": {"progressToken": 1, "progress": 1}}),
                ),
                (
                    "s2",
                    json!({"jsonrpc": "2.0", "id": "srv-1", "method": "bogus/ask", "params": {}}),
                ),
                ("s3", json!({"jsonrpc": "2.0", "id": 999_999, "result": {}})),
                (
                    "s4",
                    json!({"jsonrpc": "2.0", "id": id, "result": {
                        "content": [{"type": "text", "text": "streamed"}]}}),
                ),
            ]),
            Some(name) => json_reply(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": id, "result": {
                    "content": [{"type": "text", "text": format!("called {name}")}]}}),
            ),
            None => json_reply(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no name"}}),
            ),
        },
        _ => json_reply(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "unknown"}}),
        ),
    }
}

// ---- the rig ------------------------------------------------------------------------------

struct Rig {
    url: String,
    /// The data directory: the registry and the tool pins (`arbiter.db`), the decision log.
    data: std::path::PathBuf,
    fake: Arc<Fake>,
    key: String,
    other_key: String,
    client: Client<HttpConnector, Full<Bytes>>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _stop: oneshot::Sender<()>,
}

fn agent(store: &dyn Store, id: &str) -> String {
    let actor = Actor::system("tests");
    arbiter_pdp::admin::register_agent(
        store,
        &NewAgent {
            id: id.into(),
            name: id.into(),
            owner: "team@example.com".into(),
            purpose: String::new(),
            environment: Environment::Dev,
            attributes: serde_json::Map::new(),
        },
        &actor,
        now_us(),
    )
    .unwrap();
    arbiter_pdp::admin::issue_key(store, id, "test", None, &actor, now_us())
        .unwrap()
        .secret
        .expose()
        .to_owned()
}

async fn rig() -> Rig {
    rig_with(None, |_| {}).await
}

/// A gateway in front of the fake server (or of `upstream`), its settings adjusted by `adjust`.
async fn rig_with(upstream: Option<String>, adjust: impl FnOnce(&mut HttpSettings)) -> Rig {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("policies.cedar"), POLICIES).unwrap();
    let data = tempfile::tempdir().unwrap();
    let pdp = open_local(LocalConfig {
        policies: policies.path().to_path_buf(),
        data: data.path().to_path_buf(),
        jwt_issuers: None,
        recorder: RecorderSettings {
            mode: LogMode::Sync,
            ..RecorderSettings::default()
        },
        store: None,
    })
    .unwrap();
    let identity = pdp.identity().cloned().unwrap();
    let key = agent(identity.store().as_ref(), "bot");
    let other_key = agent(identity.store().as_ref(), "other-bot");
    let pdp = Arc::new(pdp);
    let mut config = GatewayConfig::new("fake");
    config.limits.max_bytes = 64 * 1024;
    config.upstream_timeout = Duration::from_secs(5);
    let gateway = Arc::new(Gateway::new(
        config,
        Arc::new(LocalDecider::new(pdp, "mcp:fake".into())),
        Arc::clone(identity.store()),
    ));

    let fake = Arc::new(Fake::default());
    let fake_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake_listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(self::fake)
        .with_state(Arc::clone(&fake));
    tokio::spawn(async move { axum::serve(fake_listener, app).await.unwrap() });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = HttpSettings {
        listen: addr.to_string(),
        upstream: upstream.unwrap_or_else(|| format!("http://{fake_addr}/mcp")),
        upstream_headers: vec!["X-Upstream-Key: up-secret".into()],
        allow_origins: vec!["https://app.example.com".into()],
        request_timeout: Duration::from_secs(5),
        ..HttpSettings::default()
    };
    adjust(&mut settings);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        serve_on(gateway, settings, listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Rig {
        url: format!("http://{addr}/mcp"),
        data: data.path().to_path_buf(),
        fake,
        key,
        other_key,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _dirs: (policies, data),
        _stop: stop,
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The SSE events of the body: (id, data).
    fn events(&self) -> Vec<(Option<String>, String)> {
        assert_eq!(
            self.header("content-type"),
            Some("text/event-stream"),
            "{self:?}"
        );
        self.text
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut id = None;
                let mut data = String::new();
                for line in e.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                (id, data)
            })
            .collect()
    }
}

impl Rig {
    async fn send(&self, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        let mut req = Request::builder().method(method).uri(&self.url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default().to_owned()));
        let response = self.client.request(req.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// POSTs a message as an MCP client would, with `key` and maybe a session id.
    async fn post_as(&self, key: &str, session: Option<&str>, body: &Value) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("x-test-secret", "client-only"),
        ];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
            headers.push(("mcp-protocol-version", "2025-11-25"));
        }
        self.send("POST", &headers, Some(&body.to_string())).await
    }

    async fn post(&self, session: Option<&str>, body: &Value) -> Reply {
        self.post_as(&self.key, session, body).await
    }

    /// Initializes a session for `key`; returns its id.
    async fn initialize_as(&self, key: &str) -> String {
        let r = self
            .post_as(
                key,
                None,
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.json()["result"]["protocolVersion"], "2025-11-25");
        let id = r.header("mcp-session-id").expect("a session id").to_owned();
        let n = self
            .post_as(
                key,
                Some(&id),
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(n.status, StatusCode::ACCEPTED, "{n:?}");
        assert!(n.text.is_empty());
        id
    }

    async fn initialize(&self) -> String {
        self.initialize_as(&self.key).await
    }

    /// A 2026-07-28 request with the headers given (the protocol version is added).
    async fn post_modern(&self, extra: &[(&str, &str)], body: &Value) -> Reply {
        let auth = format!("Bearer {}", self.key);
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", MODERN),
        ];
        headers.extend_from_slice(extra);
        self.send("POST", &headers, Some(&body.to_string())).await
    }
}

fn call(id: i64, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": {"message": "hi"}}})
}

fn modern_call(id: i64, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": {"message": "hi"}, "_meta": {
               "io.modelcontextprotocol/protocolVersion": MODERN,
               "io.modelcontextprotocol/clientCapabilities": {}}}})
}

fn tool_names(result: &Value) -> Vec<String> {
    result["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn an_allowed_call_reaches_the_server_without_the_agents_credential() {
    let rig = rig().await;
    let session = rig.initialize().await;
    assert_eq!(session, "sess-1");
    let r = rig.post(Some(&session), &call(7, "echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let answer = r.json();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["content"][0]["text"], "called echo");

    // The gateway listed the tools itself before deciding the call to an unlisted tool.
    assert_eq!(rig.fake.posts_of("tools/list").len(), 1);
    let calls = rig.fake.posts_of("tools/call");
    assert_eq!(calls.len(), 1);
    for seen in rig.fake.seen() {
        assert!(seen.headers.get("authorization").is_none(), "{seen:?}");
        assert!(seen.headers.get("x-test-secret").is_none(), "{seen:?}");
        assert_eq!(seen.headers.get("x-upstream-key").unwrap(), "up-secret");
        assert!(seen.headers.get("mcp-method").is_none());
        assert_eq!(seen.headers.get_all("accept").iter().count(), 1);
    }
    let seen = &calls[0];
    assert_eq!(seen.headers.get("mcp-session-id").unwrap(), "sess-1");
    assert_eq!(
        seen.headers.get("mcp-protocol-version").unwrap(),
        "2025-11-25"
    );
    assert_eq!(seen.body["params"]["name"], "echo");
    assert_eq!(seen.body["id"], 7);
}

#[tokio::test]
async fn a_denied_call_is_a_tool_error_and_never_reaches_the_server() {
    let rig = rig().await;
    let session = rig.initialize().await;
    let r = rig.post(Some(&session), &call(8, "secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let answer = r.json();
    assert_eq!(answer["id"], 8);
    assert_eq!(answer["result"]["isError"], true);
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("denied by Arbiter"), "{text}");
    assert!(text.contains("(decision "), "{text}");
    assert!(rig.fake.posts_of("tools/call").is_empty());
}

#[tokio::test]
async fn lists_are_filtered_in_json_and_sse_answers() {
    let rig = rig().await;
    let session = rig.initialize().await;
    let r = rig
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(tool_names(&r.json()), ["echo", "stream"]);

    let r = rig
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": "sse-1", "method": "tools/list"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let events = r.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0.as_deref(), Some("l1"));
    let answer: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(answer["id"], "sse-1");
    assert_eq!(tool_names(&answer), ["echo", "stream"]);
}

#[tokio::test]
async fn a_streamed_answer_passes_event_by_event_through_the_session() {
    let rig = rig().await;
    let session = rig.initialize().await;
    let r = rig.post(Some(&session), &call(9, "stream")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let events = r.events();
    let ids: Vec<Option<&str>> = events.iter().map(|(id, _)| id.as_deref()).collect();
    assert_eq!(
        ids,
        [Some("s1"), Some("s2"), Some("s3"), Some("s4")],
        "{events:?}"
    );
    let progress: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(progress["method"], "notifications/progress");
    // The server's request of a method the gateway does not pass, and an answer to no
    // request, are not delivered: their events keep only their ids.
    assert!(events[1].1.trim().is_empty(), "{events:?}");
    assert!(events[2].1.trim().is_empty(), "{events:?}");
    let answer: Value = serde_json::from_str(&events[3].1).unwrap();
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["result"]["content"][0]["text"], "streamed");

    // The gateway refused the server's request itself, upstream.
    let refusal = wait_for_async("the refusal reaches the server", PATIENCE, async || {
        rig.fake
            .seen()
            .into_iter()
            .find(|s| s.body.get("id") == Some(&json!("srv-1")))
    })
    .await;
    assert_eq!(refusal.body["error"]["code"], -32601);
    assert_eq!(refusal.headers.get("mcp-session-id").unwrap(), "sess-1");
    assert!(refusal.headers.get("authorization").is_none());
}

#[tokio::test]
async fn a_session_belongs_to_the_credential_that_started_it() {
    let rig = rig().await;
    let session = rig.initialize().await;
    let list = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"});
    let r = rig.post_as(&rig.other_key, Some(&session), &list).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another credential")
    );
    let r = rig
        .post_as(&rig.other_key, Some(&session), &call(5, "echo"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(rig.fake.posts_of("tools/list").is_empty());
    assert!(rig.fake.posts_of("tools/call").is_empty());
    let auth = format!("Bearer {}", rig.other_key);
    for method in ["GET", "DELETE"] {
        let r = rig
            .send(
                method,
                &[
                    ("authorization", auth.as_str()),
                    ("mcp-session-id", session.as_str()),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}: {r:?}");
    }
    // Its own holder still uses it; the other agent starts its own.
    let r = rig.post(Some(&session), &list).await;
    assert_eq!(r.status, StatusCode::OK);
    let other = rig.initialize_as(&rig.other_key).await;
    assert_ne!(other, session);
}

#[tokio::test]
async fn requests_without_a_bearer_credential_are_refused() {
    let rig = rig().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for auth in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearer ")] {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = rig.send("POST", &headers, Some(&body)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.json()["jsonrpc"], "2.0");
        assert!(r.json()["error"]["code"].is_i64());
    }
    assert!(rig.fake.seen().is_empty());
}

#[tokio::test]
async fn origins_are_checked() {
    let rig = rig().await;
    let auth = format!("Bearer {}", rig.key);
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}})
    .to_string();
    let r = rig
        .send(
            "POST",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("origin", "https://evil.example.com"),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.json()["error"].is_object());
    assert!(rig.fake.seen().is_empty());

    let r = rig
        .send(
            "POST",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("origin", "https://app.example.com"),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(rig.fake.seen()[0].headers.get("origin").is_none());
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let rig = rig().await;
    let auth = format!("Bearer {}", rig.key);
    let json_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
    let r = rig.send("POST", &json_headers, Some(batch)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.json()["error"]["code"], -32600);

    let r = rig.send("POST", &json_headers, Some("{not json")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32700);

    let r = rig
        .send(
            "POST",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "text/plain"),
            ],
            Some(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let r = rig.send("POST", &json_headers, Some(&huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let r = rig
        .send("PUT", &[("authorization", auth.as_str())], Some("{}"))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    let other = rig.url.replace("/mcp", "/other");
    let response = rig
        .client
        .request(
            Request::builder()
                .method("POST")
                .uri(other)
                .header("authorization", auth.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(rig.fake.seen().is_empty());
}

#[tokio::test]
async fn unknown_and_ended_sessions_are_404() {
    let rig = rig().await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let r = rig.post(Some("no-such-session"), &list).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert!(r.json()["error"].is_object());

    let session = rig.initialize().await;
    let auth = format!("Bearer {}", rig.key);
    // The server has no standalone stream: its 405 passes.
    let r = rig
        .send(
            "GET",
            &[
                ("authorization", auth.as_str()),
                ("mcp-session-id", session.as_str()),
                ("accept", "text/event-stream"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{r:?}");
    let r = rig
        .send(
            "DELETE",
            &[
                ("authorization", auth.as_str()),
                ("mcp-session-id", session.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let deleted = rig
        .fake
        .seen()
        .into_iter()
        .find(|s| s.method == "DELETE")
        .unwrap();
    assert_eq!(deleted.headers.get("mcp-session-id").unwrap(), "sess-1");
    assert!(deleted.headers.get("authorization").is_none());
    let r = rig.post(Some(&session), &list).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stateless_requests_have_headers_matching_their_body() {
    let rig = rig().await;
    // Mcp-Method differs from the body.
    let r = rig
        .post_modern(
            &[("mcp-method", "tools/list"), ("mcp-name", "echo")],
            &modern_call(1, "echo"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.json()["error"]["code"], -32020);
    assert_eq!(r.json()["id"], 1);
    // Mcp-Method missing.
    let r = rig
        .post_modern(&[("mcp-name", "echo")], &modern_call(1, "echo"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32020);
    // Mcp-Name missing, different, different once decoded.
    for name in [None, Some("secret"), Some("=?base64?c2VjcmV0?=")] {
        let mut headers = vec![("mcp-method", "tools/call")];
        if let Some(n) = name {
            headers.push(("mcp-name", n));
        }
        let r = rig.post_modern(&headers, &modern_call(1, "echo")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name:?}: {r:?}");
        assert_eq!(r.json()["error"]["code"], -32020);
    }
    // The version in the header and in `_meta` differ.
    let mut body = modern_call(1, "echo");
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2026-12-01");
    let r = rig
        .post_modern(&[("mcp-method", "tools/call"), ("mcp-name", "echo")], &body)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32020);
    assert!(rig.fake.seen().is_empty());

    // Matching, with the name in its base64 form; a session id is ignored.
    let r = rig
        .post_modern(
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?ZWNobw==?="),
                ("mcp-session-id", "sess-1"),
                ("mcp-param-region", "eu"),
            ],
            &modern_call(2, "echo"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["result"]["content"][0]["text"], "called echo");
    assert!(r.header("mcp-session-id").is_none());

    // The gateway's own tools/list carried the request's metadata.
    let lists = rig.fake.posts_of("tools/list");
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].headers.get("mcp-method").unwrap(), "tools/list");
    assert_eq!(
        lists[0].headers.get("mcp-protocol-version").unwrap(),
        MODERN
    );
    assert!(lists[0].headers.get("mcp-name").is_none());
    assert_eq!(
        lists[0].body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        MODERN
    );
    let calls = rig.fake.posts_of("tools/call");
    assert_eq!(calls.len(), 1);
    let h = &calls[0].headers;
    assert_eq!(h.get("mcp-method").unwrap(), "tools/call");
    assert_eq!(h.get("mcp-name").unwrap(), "echo");
    assert_eq!(h.get("mcp-param-region").unwrap(), "eu");
    assert!(h.get("mcp-session-id").is_none());
    assert!(h.get("authorization").is_none());

    // A denied stateless call never reaches the server either.
    let r = rig
        .post_modern(
            &[("mcp-method", "tools/call"), ("mcp-name", "secret")],
            &modern_call(3, "secret"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["result"]["isError"], true);
    assert_eq!(rig.fake.posts_of("tools/call").len(), 1);

    // No sessions in this revision: GET and DELETE are 405.
    let auth = format!("Bearer {}", rig.key);
    for method in ["GET", "DELETE"] {
        let r = rig
            .send(
                method,
                &[
                    ("authorization", auth.as_str()),
                    ("mcp-protocol-version", MODERN),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_bad_gateway() {
    // A port nothing listens on, for the whole test.
    let held = arbiter_testkit::ClosedPort::new();
    let closed = held.addr();
    let rig = rig_with(Some(format!("http://{closed}/mcp")), |_| {}).await;
    let r = rig
        .post(
            None,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"]["code"], -32603);
    assert_eq!(r.json()["id"], 1);
    // A call is refused (fail closed): the tools cannot be listed to decide it.
    let r = rig.post(None, &call(2, "echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["result"]["isError"], true);
    drop(held);
}

#[tokio::test]
async fn sessions_are_bounded_in_number() {
    let rig = rig_with(None, |s| s.max_sessions = 1).await;
    let first = rig.initialize().await;
    let r = rig
        .post_as(
            &rig.other_key,
            None,
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.json()["id"], 0);
    assert_eq!(rig.fake.posts_of("initialize").len(), 1);
    // Ending the first makes room.
    let auth = format!("Bearer {}", rig.key);
    let r = rig
        .send(
            "DELETE",
            &[
                ("authorization", auth.as_str()),
                ("mcp-session-id", first.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    rig.initialize_as(&rig.other_key).await;
}

#[tokio::test]
async fn idle_sessions_are_forgotten_and_ended_at_the_server() {
    let rig = rig_with(None, |s| s.session_idle = Duration::from_millis(300)).await;
    let session = rig.initialize().await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    wait_until_async(
        "the idle session is ended at the server",
        PATIENCE,
        async || rig.fake.seen().iter().any(|s| s.method == "DELETE"),
    )
    .await;
    let ended = rig
        .fake
        .seen()
        .into_iter()
        .find(|s| s.method == "DELETE")
        .unwrap();
    assert_eq!(
        ended.headers.get("mcp-session-id").unwrap(),
        session.as_str()
    );
    assert_eq!(ended.headers.get("x-upstream-key").unwrap(), "up-secret");
    let r = rig.post(Some(&session), &list).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

/// Regression: tool pins were checked on the gateway's runtime thread, so a pin write waiting
/// for the store's write lock (held by another process, up to the 5 s busy timeout) stalled
/// every other session's calls. Now a pin that matched before is answered from memory, and a
/// check that needs the store waits on the blocking pool.
#[tokio::test]
async fn other_calls_are_served_while_a_new_pin_waits_for_the_store() {
    let rig = Arc::new(rig().await);
    let session = rig.initialize().await;
    for id in [1, 2] {
        let r = rig.post(Some(&session), &call(id, "echo")).await;
        assert_eq!(r.json()["result"]["content"][0]["text"], "called echo");
    }

    // Another process holds the store's write lock; the server announces a new tool, whose
    // pin on first use is a write that waits for the lock.
    let mut other = rusqlite::Connection::open(rig.data.join("arbiter.db")).unwrap();
    let held = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    rig.fake.added.store(true, Ordering::SeqCst);
    let lists = rig.fake.posts_of("tools/list").len();
    let listing = {
        let rig = Arc::clone(&rig);
        let other_session = rig.initialize().await;
        tokio::spawn(async move {
            rig.post(
                Some(&other_session),
                &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
            )
            .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.fake.posts_of("tools/list").len() == lists {
        assert!(
            std::time::Instant::now() < deadline,
            "the list never reached the server"
        );
        tokio::task::yield_now().await;
    }

    // A call whose tool's pin is known is served meanwhile.
    let r = rig.post(Some(&session), &call(4, "echo")).await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "called echo");
    assert!(
        !listing.is_finished(),
        "the call was served only once the pin write was over"
    );

    // Released, the new tool is pinned on first use and listed.
    held.rollback().unwrap();
    let listed = listing.await.unwrap();
    assert!(
        tool_names(&listed.json()).contains(&"added".to_owned()),
        "{listed:?}"
    );
}
