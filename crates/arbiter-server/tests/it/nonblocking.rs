//! The runtime keeps serving while an identity lookup waits: for the store's write lock held
//! by another process, or for a token issuer's key set. These tests run on a current-thread
//! runtime (`#[tokio::test]`), where a lookup that blocked its thread would stall every other
//! request until it was over.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use arbiter_jwt::{IssuerConfig, JwksSource, Verifier};
use arbiter_pdp::IdentitySettings;
use arbiter_server::ServerConfig;
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::identity::Fixture;
use crate::support::{call, policy_dir};

const AGENTS_MAY: &str = "permit (principal is Agent, action, resource);";
const ISSUER: &str = "https://idp.example.com";

fn read_doc() -> Value {
    json!({"action": {"name": "read"}, "resource": {"type": "Doc", "id": "d1"}})
}

fn allowed(reply: &crate::support::Reply) -> bool {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["decision"] == true
}

/// Regression: the store had one connection behind one lock, and every decision checked the
/// store's generation through it; a write waiting for another process's write lock (the
/// flusher's last-used times, up to the 5 s busy timeout) held that lock and stalled every
/// decision on the runtime's thread behind it.
#[tokio::test]
async fn decisions_are_answered_while_a_store_write_waits_for_another_process() {
    let policies = policy_dir(&[("p.cedar", AGENTS_MAY)]);
    let f = Fixture::new(policies.path());
    let key = f.agent_with_key("bot", json!({})).await;
    assert!(allowed(&f.evaluate(Some(&key), &read_doc()).await));

    // Another process takes the store's write lock; the flusher's write waits for it.
    let mut other = rusqlite::Connection::open(f.data.path().join("arbiter.db")).unwrap();
    let held = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let (started, start) = std::sync::mpsc::channel();
    let flusher = {
        let identity = Arc::clone(&f.identity);
        std::thread::spawn(move || {
            started.send(()).unwrap();
            identity.flush()
        })
    };
    start.recv().unwrap();
    for _ in 0..20 {
        assert!(allowed(&f.evaluate(Some(&key), &read_doc()).await));
    }
    assert!(
        !flusher.is_finished(),
        "the decisions were answered only once the store's write was over"
    );
    held.rollback().unwrap();
    flusher.join().unwrap().unwrap();
}

/// An issuer's key set server that answers the first fetch at once and holds the next one
/// until released.
struct SlowJwks {
    url: String,
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    release: std::sync::mpsc::Sender<()>,
}

impl SlowJwks {
    fn start(first: Value, then: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let answer = |mut stream: std::net::TcpStream, body: &Value| {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = body.to_string();
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            };
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            answer(stream, &first);
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let _ = arrived_tx.send(());
            // Held until the test releases it (bounded, so a stalled test still ends).
            let _ = released.recv_timeout(Duration::from_secs(30));
            answer(stream, &then);
        });
        Self {
            url,
            arrived: Some(arrived),
            release,
        }
    }
}

fn ed25519(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn jwk(key: &ed25519_dalek::SigningKey, kid: &str) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    })
}

fn token(key: &ed25519_dalek::SigningKey, kid: &str, claims: &Value) -> String {
    use ed25519_dalek::Signer;
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Regression: a token naming a key its issuer's cached set lacked was verified on the
/// runtime's thread, which then fetched the issuer's key set over HTTP (up to 5 s) while
/// every other request on it waited.
#[tokio::test]
async fn the_runtime_keeps_serving_while_a_token_issuers_key_set_is_fetched() {
    let policies = policy_dir(&[("p.cedar", AGENTS_MAY)]);
    let (old, new) = (ed25519(7), ed25519(9));
    let mut jwks = SlowJwks::start(
        json!({"keys": [jwk(&old, "k1")]}),
        json!({"keys": [jwk(&old, "k1"), jwk(&new, "k2")]}),
    );
    let verifier = Verifier::new(vec![IssuerConfig::new(
        ISSUER,
        vec!["arbiter".to_owned()],
        JwksSource::Url(jwks.url.clone()),
    )])
    .unwrap();
    let f = Fixture::with(
        policies.path(),
        ServerConfig::default(),
        IdentitySettings {
            jwt: Some(Arc::new(verifier)),
            ..IdentitySettings::default()
        },
    );
    f.admin(
        "POST",
        "/v1/agents",
        Some(&json!({"id": "doc-bot", "owner": "docs@example.com"})),
    )
    .await;
    let key = f.agent_with_key("key-bot", json!({})).await;
    assert!(allowed(&f.evaluate(Some(&key), &read_doc()).await));

    // The issuer rotated: its token names a key the cached set lacks.
    let now = arbiter_pdp::identity::now_us() / 1_000_000;
    let rotated = token(
        &new,
        "k2",
        &json!({"iss": ISSUER, "aud": "arbiter", "sub": "doc-bot", "exp": now + 300, "iat": now}),
    );
    let state = f.state.clone();
    let pending = tokio::spawn(async move {
        let req = Request::post("/access/v1/evaluation")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {rotated}"))
            .body(Body::from(read_doc().to_string()))
            .unwrap();
        call(&state, req).await
    });
    jwks.arrived.take().unwrap().await.unwrap();

    // While the issuer holds the fetch, the runtime answers other requests.
    let health = call(
        &f.state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(health.status, 200);
    assert!(allowed(&f.evaluate(Some(&key), &read_doc()).await));
    assert!(
        !pending.is_finished(),
        "the runtime answered only once the key set fetch was over"
    );

    // Released, the fetch brings the new key and the token is accepted.
    jwks.release.send(()).unwrap();
    let reply = pending.await.unwrap();
    assert!(allowed(&reply), "{}", reply.json());
}
