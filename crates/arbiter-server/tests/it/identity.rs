//! Identity at the decision point: agent keys, rotation, revocation, suspension, PEP tokens,
//! JWTs with delegation, discovery of unknown identities, and the admin API's guards.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbiter_log::read_records;
use arbiter_pdp::identity::now_us;
use arbiter_pdp::{Identity, IdentitySettings, Pdp, Recorder, RecorderSettings};
use arbiter_server::{AppState, ServerConfig};
use arbiter_store::{Actor, SqliteStore, Store};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::support::{Reply, call, example};

/// A server state with a decision log and an identity store, plus an administrator token.
pub struct Fixture {
    pub state: AppState,
    pub data: tempfile::TempDir,
    pub admin: String,
    pub identity: Arc<Identity>,
}

impl Fixture {
    pub fn new(policies: &Path) -> Self {
        Self::with(
            policies,
            ServerConfig::default(),
            IdentitySettings::default(),
        )
    }

    pub fn with(policies: &Path, config: ServerConfig, settings: IdentitySettings) -> Self {
        let data = tempfile::tempdir().unwrap();
        let (recorder, _) = Recorder::open(data.path(), RecorderSettings::default()).unwrap();
        let identity = Arc::new(Identity::open(data.path(), settings).unwrap());
        let admin = arbiter_pdp::admin::create_token(
            identity.store().as_ref(),
            &arbiter_pdp::admin::TokenSpec::Admin {
                role: "administrator".into(),
            },
            "tests",
            None,
            &Actor::system("tests"),
            now_us(),
        )
        .unwrap()
        .secret
        .expose()
        .to_owned();
        let pdp = Pdp::load(policies)
            .unwrap()
            .with_recorder(recorder)
            .with_identity(identity.clone());
        Self {
            state: AppState::new(Arc::new(pdp), config),
            data,
            admin,
            identity,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        call(&self.state, req.unwrap()).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let got = self.send(method, path, Some(&self.admin), body).await;
        assert!(
            got.status.is_success(),
            "{method} {path}: {} {}",
            got.status,
            String::from_utf8_lossy(&got.body)
        );
        got.json()
    }

    /// Registers an agent through the admin API and issues it a key.
    pub async fn agent_with_key(&self, id: &str, attributes: Value) -> String {
        self.admin(
            "POST",
            "/v1/agents",
            Some(&json!({"id": id, "owner": "team@example.com", "environment": "prod", "attributes": attributes})),
        )
        .await;
        let issued = self
            .admin(
                "POST",
                &format!("/v1/agents/{id}/keys"),
                Some(&json!({"name": "ci"})),
            )
            .await;
        issued["key"].as_str().unwrap().to_owned()
    }

    /// Creates a PEP token named `name` through the admin API.
    pub async fn pep_token(&self, name: &str) -> String {
        self.admin(
            "POST",
            "/v1/tokens",
            Some(&json!({"kind": "pep", "name": name})),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn evaluate(&self, token: Option<&str>, body: &Value) -> Reply {
        self.send("POST", "/access/v1/evaluation", token, Some(body))
            .await
    }

    pub fn records(&self) -> Vec<arbiter_log::DecisionRecord> {
        read_records(&self.data.path().join("log"))
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect()
    }
}

fn tool(name: &str) -> Value {
    json!({
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": format!("helpdesk/{name}")},
    })
}

impl Fixture {
    /// The outcome, the user's reason and the administrator's reason of an answer. An agent or
    /// anonymous caller is not given the administrator's reason: it is read from the
    /// decision's record then.
    pub fn decision(&self, r: &Reply) -> (bool, String, String) {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let admin = match v["context"]["reason_admin"]["en"].as_str() {
            Some(a) => a.to_owned(),
            None => {
                let id = v["context"]["decision_id"].as_str().unwrap();
                self.records()
                    .into_iter()
                    .find(|rec| rec.decision_id == id)
                    .unwrap_or_else(|| panic!("no record of decision {id}"))
                    .reason_admin
            }
        };
        (
            v["decision"].as_bool().unwrap(),
            v["context"]["reason_user"]["en"]
                .as_str()
                .unwrap()
                .to_owned(),
            admin,
        )
    }
}

#[tokio::test]
async fn an_agent_key_authenticates_and_the_registry_supplies_the_attributes() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    assert!(key.starts_with("arb_") && key.len() == 52, "{key}");

    // The subject may be left out: it is the authenticated agent.
    let (allowed, _, _) = f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await);
    assert!(allowed);
    let (allowed, _, _) = f.decision(&f.evaluate(Some(&key), &tool("delete_ticket")).await);
    assert!(!allowed);

    // Naming another subject is refused.
    let mut other = tool("read_ticket");
    other["subject"] = json!({"type": "Agent", "id": "old-bot"});
    let (allowed, user, admin) = f.decision(&f.evaluate(Some(&key), &other).await);
    assert!(!allowed);
    assert!(user.contains("does not match"), "{user}");
    assert!(admin.contains("old-bot"), "{admin}");

    // An agent cannot grant itself attributes: the registry's replace what it asserts.
    let plain = f.agent_with_key("plain-bot", json!({})).await;
    let mut claim = tool("read_ticket");
    claim["subject"] =
        json!({"type": "Agent", "id": "plain-bot", "properties": {"roles": ["support"]}});
    let (allowed, _, _) = f.decision(&f.evaluate(Some(&plain), &claim).await);
    assert!(!allowed, "asserted roles must not count");

    // Records carry the agent and the credential id, never the secret.
    let records = f.records();
    let first = &records[0];
    assert_eq!(first.subject.agent_id.as_deref(), Some("support-bot"));
    assert!(
        first
            .subject
            .credential_id
            .as_deref()
            .unwrap()
            .starts_with("key_")
    );
    assert!(key.contains(&first.subject.credential_id.as_deref().unwrap()[4..]));
    for r in &records {
        let text = serde_json::to_string(r).unwrap();
        assert!(!text.contains(&key) && !text.contains(&plain));
    }
}

#[tokio::test]
async fn revocation_takes_effect_on_the_very_next_decision_even_from_another_process() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let key_id = format!("key_{}", &key[4..14]);
    assert!(
        f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await)
            .0
    );

    // Revoked through the admin API.
    f.admin(
        "DELETE",
        &format!("/v1/agents/support-bot/keys/{key_id}"),
        None,
    )
    .await;
    let (allowed, user, admin) = f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await);
    assert!(!allowed);
    assert_eq!(user, "denied: the credential was not accepted");
    assert!(admin.contains("revoked"), "{admin}");
    let last = f.records().pop().unwrap();
    assert_eq!(last.subject.credential_id.as_deref(), Some(key_id.as_str()));

    // Revoked through a separate handle on the same database (as `arbiter agent key revoke`
    // does from another process): the cached credential must not survive it.
    let second = f
        .admin("POST", "/v1/agents/support-bot/keys", Some(&json!({})))
        .await;
    let second_key = second["key"].as_str().unwrap().to_owned();
    let second_id = second["credential"]["id"].as_str().unwrap().to_owned();
    assert!(
        f.decision(&f.evaluate(Some(&second_key), &tool("read_ticket")).await)
            .0
    );
    let other = SqliteStore::open(&f.data.path().join("arbiter.db")).unwrap();
    other
        .revoke_credential(&second_id, "leaked", &Actor::cli("ops"), now_us())
        .unwrap();
    let (allowed, _, admin) =
        f.decision(&f.evaluate(Some(&second_key), &tool("read_ticket")).await);
    assert!(!allowed);
    assert!(admin.contains("leaked"), "{admin}");
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_overlap_window_only() {
    let f = Fixture::new(&example("quickstart"));
    let old = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let old_id = format!("key_{}", &old[4..14]);
    let rotated = f
        .admin(
            "POST",
            &format!("/v1/agents/support-bot/keys/{old_id}/rotate"),
            Some(&json!({"overlap": "2s"})),
        )
        .await;
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous"]["state"], "expiring");
    assert!(
        f.decision(&f.evaluate(Some(&old), &tool("read_ticket")).await)
            .0,
        "old key inside the window"
    );
    assert!(
        f.decision(&f.evaluate(Some(&new), &tool("read_ticket")).await)
            .0
    );
    // Time itself is the subject: the overlap window must pass (not a wait for an event).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (allowed, user, admin) = f.decision(&f.evaluate(Some(&old), &tool("read_ticket")).await);
    assert!(!allowed, "old key after the window");
    assert_eq!(user, "denied: the credential was not accepted");
    assert!(admin.contains("expired"), "{admin}");
    assert!(
        f.decision(&f.evaluate(Some(&new), &tool("read_ticket")).await)
            .0
    );

    // A key issued with a short lifetime expires by itself.
    let short = f
        .admin(
            "POST",
            "/v1/agents/support-bot/keys",
            Some(&json!({"expires_in": "1s"})),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        f.decision(&f.evaluate(Some(&short), &tool("read_ticket")).await)
            .0
    );
    // Time itself is the subject: the key's lifetime must pass (not a wait for an event).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        !f.decision(&f.evaluate(Some(&short), &tool("read_ticket")).await)
            .0
    );
}

#[tokio::test]
async fn suspended_and_retired_agents_are_denied() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    f.admin("POST", "/v1/agents/support-bot/suspend", None)
        .await;
    let (allowed, user, admin) = f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await);
    assert!(!allowed);
    assert_eq!(user, "denied: the credential was not accepted");
    assert!(admin.contains("suspended"), "{admin}");
    // Asserted by an unauthenticated caller, too.
    let mut asserted = tool("read_ticket");
    asserted["subject"] = json!({"type": "Agent", "id": "support-bot"});
    assert!(!f.decision(&f.evaluate(None, &asserted).await).0);

    f.admin("POST", "/v1/agents/support-bot/activate", None)
        .await;
    assert!(
        f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await)
            .0
    );
    let retired = f.admin("POST", "/v1/agents/support-bot/retire", None).await;
    assert_eq!(retired["keys_revoked"], 1);
    assert!(
        !f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await)
            .0
    );
}

#[tokio::test]
async fn unknown_and_malformed_credentials_are_denied_alike_and_discovered() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    // One character off: the checksum fails fast.
    let mut typo = key.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    // Right lookup id, wrong secret, valid checksum: only the hash comparison can tell.
    let forged = {
        let parsed = arbiter_identity::issue(arbiter_identity::SecretKind::AgentKey).unwrap();
        let body = format!("arb_{}{}", &key[4..14], &parsed.expose()[14..46]);
        let crc = crc32(body.as_bytes());
        format!("{body}{}", base62_6(crc))
    };
    assert!(arbiter_identity::parse(&forged).is_ok());
    let openai = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl";
    let mut reasons = Vec::new();
    for presented in [typo.as_str(), forged.as_str(), openai, "not-a-key", openai] {
        let (allowed, user, admin) =
            f.decision(&f.evaluate(Some(presented), &tool("read_ticket")).await);
        assert!(!allowed, "{presented}");
        assert!(!admin.contains(presented) && !user.contains(presented));
        reasons.push(user);
    }
    assert!(
        reasons
            .iter()
            .all(|r| r == "denied: the credential was not accepted")
    );

    // An agent id nobody registered, asserted without a credential.
    let mut shadow = tool("read_ticket");
    shadow["subject"] = json!({"type": "Agent", "id": "shadow-bot"});
    let (allowed, user, admin) = f.decision(&f.evaluate(None, &shadow).await);
    assert!(!allowed);
    assert_eq!(user, "denied: this agent is not allowed to act");
    assert!(admin.contains("unknown agent `shadow-bot`"), "{admin}");

    f.identity.flush().unwrap();
    let found = f.admin("GET", "/v1/discovered", None).await["discovered"].clone();
    let found = found.as_array().unwrap();
    let openai_row = found
        .iter()
        .find(|d| d["shape"] == "openai-api-key")
        .unwrap();
    assert_eq!(openai_row["count"], 2);
    assert!(openai_row["key"].as_str().unwrap().starts_with("fp_"));
    assert!(found.iter().any(|d| d["shape"] == "arbiter-malformed-key"));
    let shadow_row = found.iter().find(|d| d["key"] == "shadow-bot").unwrap();
    assert_eq!(shadow_row["kind"], "agent_id");
    assert_eq!(shadow_row["enforcement_points"], json!(["authzen"]));
    let text = serde_json::to_string(&found).unwrap();
    assert!(!text.contains(openai) && !text.contains(&typo) && !text.contains(&forged));

    // Adopting the shadow agent registers it; the next decision is the policy's to make.
    let id = shadow_row["id"].as_i64().unwrap();
    f.admin(
        "POST",
        &format!("/v1/discovered/{id}/adopt"),
        Some(&json!({"id": "shadow-bot", "owner": "research@example.com", "attributes": {"roles": ["support"]}})),
    )
    .await;
    assert!(f.decision(&f.evaluate(None, &shadow).await).0);
    let remaining = f.admin("GET", "/v1/discovered", None).await;
    assert!(
        !remaining["discovered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key"] == "shadow-bot")
    );
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

fn base62_6(mut n: u32) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = A[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

#[tokio::test]
async fn require_auth_and_pep_tokens() {
    let config = ServerConfig {
        require_authentication: true,
        ..ServerConfig::default()
    };
    let f = Fixture::with(&example("quickstart"), config, IdentitySettings::default());
    f.agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let mut asserted = tool("read_ticket");
    asserted["subject"] = json!({"type": "Agent", "id": "support-bot"});

    let got = f.evaluate(None, &asserted).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert!(
        got.headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(got.json()["error"]["code"], "unauthenticated");
    let got = f
        .send("POST", "/access/v1/evaluation", None, Some(&asserted))
        .await;
    assert_eq!(got.status, 401);
    let basic = call(
        &f.state,
        Request::post("/access/v1/evaluation")
            .header("content-type", "application/json")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .body(Body::from(asserted.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, 401);

    let pep = f.pep_token("gateway").await;
    assert!(pep.starts_with("arbpep_"));
    assert!(f.decision(&f.evaluate(Some(&pep), &asserted).await).0);
    let last = f.records().pop().unwrap();
    assert!(
        last.subject
            .credential_id
            .as_deref()
            .unwrap()
            .starts_with("pep_")
    );
    // A PEP may only assert registered agents.
    let mut unknown = asserted.clone();
    unknown["subject"]["id"] = json!("nobody");
    assert!(!f.decision(&f.evaluate(Some(&pep), &unknown).await).0);
    // A revoked PEP token is refused like any credential.
    let pep_id = format!("pep_{}", &pep[7..17]);
    f.admin("DELETE", &format!("/v1/tokens/{pep_id}"), None)
        .await;
    let (allowed, user, _) = f.decision(&f.evaluate(Some(&pep), &asserted).await);
    assert!(!allowed);
    assert_eq!(user, "denied: the credential was not accepted");
}

#[tokio::test]
async fn admin_endpoints_refuse_missing_wrong_and_underprivileged_tokens() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    for path in [
        "/v1/agents",
        "/v1/agents/support-bot",
        "/v1/discovered",
        "/v1/audit",
        "/v1/decisions",
        "/v1/tokens",
    ] {
        for token in [
            None,
            Some("arbadm_wrong"),
            Some(key.as_str()),
            Some("eyJhbGciOiJub25lIn0.e30."),
        ] {
            let got = f.send("GET", path, token, None).await;
            assert_eq!(got.status, 401, "{path} with {token:?}");
            assert_eq!(got.json()["error"]["code"], "unauthenticated");
        }
    }
    let auditor = f
        .admin(
            "POST",
            "/v1/tokens",
            Some(&json!({"kind": "admin", "role": "auditor", "name": "audit"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        f.send("GET", "/v1/agents", Some(&auditor), None)
            .await
            .status,
        200
    );
    assert_eq!(
        f.send("GET", "/v1/decisions", Some(&auditor), None)
            .await
            .status,
        200
    );
    for (method, path, body) in [
        ("POST", "/v1/agents", Some(json!({"id": "x", "owner": "o"}))),
        ("POST", "/v1/agents/support-bot/suspend", None),
        ("POST", "/v1/agents/support-bot/keys", Some(json!({}))),
        ("DELETE", "/v1/agents/support-bot/keys", None),
        (
            "POST",
            "/v1/tokens",
            Some(json!({"kind": "pep", "name": "p"})),
        ),
    ] {
        let got = f.send(method, path, Some(&auditor), body.as_ref()).await;
        assert_eq!(got.status, 403, "{method} {path}");
        assert_eq!(got.json()["error"]["code"], "forbidden");
    }
    // Bad input to the admin API names the field.
    let got = f
        .send(
            "POST",
            "/v1/agents",
            Some(&f.admin),
            Some(&json!({"id": "Bad Id!", "owner": "o"})),
        )
        .await;
    assert_eq!(got.status, 400);
    let got = f
        .send(
            "POST",
            "/v1/agents",
            Some(&f.admin),
            Some(&json!({"id": "ok", "owner": "o", "color": "red"})),
        )
        .await;
    assert_eq!(
        (got.status.as_u16(), got.json()["error"]["field"].clone()),
        (400, json!("color"))
    );
    let got = f
        .send(
            "POST",
            "/v1/agents",
            Some(&f.admin),
            Some(&json!({"id": "support-bot", "owner": "o"})),
        )
        .await;
    assert_eq!(got.status, 409);
    let got = f
        .send(
            "POST",
            "/v1/agents/support-bot/keys",
            Some(&f.admin),
            Some(&json!({"expires_in": "soon"})),
        )
        .await;
    assert_eq!(got.status, 400);

    // Every change is in the audit trail, attributed to the token that made it.
    let audit = f.admin("GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in ["token.create", "agent.register", "key.issue"] {
        assert!(actions.contains(&expected), "{actions:?}");
    }
    let register = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "agent.register")
        .unwrap();
    assert_eq!(register["actor"]["kind"], "admin_token");
    assert!(
        register["actor"]["id"]
            .as_str()
            .unwrap()
            .starts_with("adm_")
    );
    assert!(!audit.to_string().contains(&key));
    f.identity.store().verify_audit().unwrap();
}

// --- JWTs and delegation ---------------------------------------------------------------------

const DELEGATION_POLICIES: &str = r#"
@id("agents-use-docs")
permit (principal is Agent, action in [Action::"read", Action::"write"], resource);
@id("readers-read")
permit (principal is User, action == Action::"read", resource) when { principal.role == "reader" };
@id("writers-write")
permit (principal is User, action, resource) when { principal.role == "writer" };
"#;

const DELEGATION_ENTITIES: &str = r#"[
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"role": "reader"}, "parents": []},
  {"uid": {"type": "User", "id": "wendy"}, "attrs": {"role": "writer"}, "parents": []}
]"#;

struct Issuer {
    key: ed25519_dalek::SigningKey,
}

impl Issuer {
    fn new() -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
        }
    }

    fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
        }]})
    }

    fn token(&self, claims: &Value) -> String {
        use ed25519_dalek::Signer;
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

fn now_s() -> i64 {
    now_us() / 1_000_000
}

#[tokio::test]
async fn jwt_delegation_allows_only_what_both_agent_and_user_may() {
    let policies = crate::support::policy_dir(&[
        ("p.cedar", DELEGATION_POLICIES),
        ("entities.json", DELEGATION_ENTITIES),
    ]);
    let issuer = Issuer::new();
    let jwks = policies.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks().to_string()).unwrap();
    let verifier = arbiter_jwt::Verifier::new(vec![arbiter_jwt::IssuerConfig::new(
        "https://idp.example.com",
        vec!["arbiter".to_owned()],
        arbiter_jwt::JwksSource::File(jwks),
    )])
    .unwrap();
    // The per-principal determining policies are administrators' details.
    let config = ServerConfig {
        admin_reasons_for_all_callers: true,
        ..ServerConfig::default()
    };
    let f = Fixture::with(
        policies.path(),
        config,
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
    let claims = |user: &str| {
        json!({
            "iss": "https://idp.example.com", "aud": "arbiter", "sub": user,
            "act": {"sub": "doc-bot"}, "exp": now_s() + 300, "iat": now_s(), "jti": format!("t-{user}"),
        })
    };
    let doc =
        |action: &str| json!({"action": {"name": action}, "resource": {"type": "Doc", "id": "d1"}});

    // alice may read, not write; the agent may do both: read allowed, write denied.
    let alice = issuer.token(&claims("alice"));
    let read = f.evaluate(Some(&alice), &doc("read")).await.json();
    assert_eq!(read["decision"], true, "{read}");
    let evaluations = &read["context"]["evaluations"];
    assert_eq!(evaluations[0]["type"], "Agent");
    assert_eq!(
        evaluations[1],
        json!({"type": "User", "id": "alice", "outcome": "allow", "determining_policies": ["readers-read"]})
    );
    let write = f.evaluate(Some(&alice), &doc("write")).await.json();
    assert_eq!(write["decision"], false);
    assert_eq!(write["context"]["evaluations"][0]["outcome"], "allow");
    assert_eq!(write["context"]["evaluations"][1]["outcome"], "deny");
    // wendy may do anything, the agent may not delete: denied on the agent's side.
    let wendy = issuer.token(&claims("wendy"));
    let delete = f.evaluate(Some(&wendy), &doc("delete")).await.json();
    assert_eq!(delete["decision"], false);
    assert_eq!(delete["context"]["evaluations"][0]["outcome"], "deny");
    assert_eq!(delete["context"]["evaluations"][1]["outcome"], "allow");
    // The token's user wins over a different one claimed in the request.
    let mut claimed = doc("write");
    claimed["context"] = json!({"delegation": {"user": {"type": "User", "id": "wendy"}}});
    assert_eq!(
        f.evaluate(Some(&alice), &claimed).await.json()["decision"],
        false
    );

    // The records hold the chain and both outcomes.
    let records = f.records();
    let write_record = records
        .iter()
        .find(|r| r.decision_id == write["context"]["decision_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(write_record.delegation[0].id, "alice");
    assert_eq!(write_record.evaluations.len(), 2);
    assert_eq!(
        write_record.evaluations[1].outcome,
        arbiter_log::Outcome::Deny
    );
    assert_eq!(
        write_record.subject.credential_id.as_deref(),
        Some("jwt:https://idp.example.com#t-alice")
    );
    assert!(!serde_json::to_string(&records).unwrap().contains(&alice));

    // Refused tokens: expired, wrong audience, unregistered agent, unsigned.
    let mut expired = claims("alice");
    expired["exp"] = json!(now_s() - 3600);
    let mut audience = claims("alice");
    audience["aud"] = json!("someone-else");
    let mut stranger = claims("alice");
    stranger["act"] = json!({"sub": "stranger-bot"});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims("alice").to_string())
    );
    for token in [
        issuer.token(&expired),
        issuer.token(&audience),
        issuer.token(&stranger),
        unsigned,
    ] {
        let (allowed, user, _) = f.decision(&f.evaluate(Some(&token), &doc("read")).await);
        assert!(!allowed);
        assert_eq!(user, "denied: the credential was not accepted");
    }
    f.identity.flush().unwrap();
    let found = f.admin("GET", "/v1/discovered", None).await;
    assert!(found.to_string().contains("stranger-bot"), "{found}");
}

#[tokio::test]
async fn no_secret_is_stored_in_plaintext() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let pep = f.pep_token("gw").await;
    let foreign = "sk-ant-api03-ThisIsAFakeAnthropicKeyForTestingOnly0123456789abcdefXYZ";
    assert!(
        f.decision(&f.evaluate(Some(&key), &tool("read_ticket")).await)
            .0
    );
    let mut asserted = tool("read_ticket");
    asserted["subject"] = json!({"type": "Agent", "id": "support-bot"});
    assert!(f.decision(&f.evaluate(Some(&pep), &asserted).await).0);
    assert!(
        !f.decision(&f.evaluate(Some(foreign), &tool("read_ticket")).await)
            .0
    );
    f.identity.flush().unwrap();
    let secrets = [
        key.as_str(),
        &key[14..46],
        pep.as_str(),
        &pep[17..49],
        f.admin.as_str(),
        &f.admin[17..49],
        foreign,
    ];
    crate::support::assert_no_secrets(f.data.path(), &secrets);
}
