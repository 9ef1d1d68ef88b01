#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arbiter_store::{Actor, SqliteStore, ToolPin};
use axum::Router;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use super::*;

// ---- fixtures ----------------------------------------------------------------------------------

fn fixture_path(name: &str) -> String {
    format!(
        "{}/tests/fixtures/agent_card/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).unwrap()
}

fn study_key() -> CardKey {
    CardKey::from_jwk_file(Path::new(&fixture_path("signed_card.pub.jwk.json"))).unwrap()
}

fn signed(keys: Vec<CardKey>) -> CardChecks {
    CardChecks {
        keys,
        require_signed: true,
    }
}

/// The upstream whose origin the card's first interface is on.
fn upstream_of(card: &Value) -> Uri {
    card["supportedInterfaces"][0]["url"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn parse_value(card: &Value, upstream: &Uri, checks: &CardChecks) -> Result<Card, CardError> {
    Card::parse(&serde_json::to_vec(card).unwrap(), upstream, checks)
}

/// Only the signature layer: strict parse, the SDK's reading, the signatures.
fn signature_verdict(card: &Value, key: &CardKey) -> Result<(), String> {
    let text = serde_json::to_vec(card).unwrap();
    let map = arbiter_types::strict::parse_strict_object(&text, MAX_CARD_DEPTH)
        .map_err(|e| e.to_string())?;
    let view = normalize::sdk_view(&map).map_err(|e| e.to_string())?;
    let payload = normalize::signed_payload(&view).map_err(|e| e.to_string())?;
    signature::verify(&map, &payload, std::slice::from_ref(key)).map_err(|e| format!("{e:?}"))
}

// ---- signatures, against the SDK's own verdicts ------------------------------------------------

/// `signature_cases.json`: cards signed by the SDK (its server, or its signer with our keys),
/// tampered or re-encoded, each with the verdict of the SDK's verifier. Arbiter must agree, or
/// (cases marked `refuses`, which the SDK accepts) refuse on purpose; it never accepts what
/// the SDK refuses.
#[test]
fn signature_verdicts_match_the_sdk_or_are_stricter() {
    let doc = fixture("signature_cases.json");
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let jwk = serde_json::to_vec(&doc["keys"][case["key"].as_str().unwrap()]).unwrap();
        let key = CardKey::from_jwk(&jwk).unwrap();
        let ours = signature_verdict(&case["card"], &key);
        let sdk_valid = case["sdk"] == "valid";
        match case["arbiter"].as_str().unwrap() {
            "same" => assert_eq!(
                ours.is_ok(),
                sdk_valid,
                "case {name}: SDK says {}, we say {ours:?}",
                case["sdk"]
            ),
            "refuses" => {
                assert!(sdk_valid, "case {name}");
                assert!(ours.is_err(), "case {name}: must be refused");
            }
            other => panic!("case {name}: unknown expectation {other}"),
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} cases");
}

#[test]
fn card_signed_by_the_sdk_server_is_accepted_and_read() {
    let bytes = fixture_bytes("signed_card.json");
    let card_json: Value = serde_json::from_slice(&bytes).unwrap();
    let card = Card::parse(&bytes, &upstream_of(&card_json), &signed(vec![study_key()])).unwrap();
    let ids: Vec<&str> = card.skills.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["summarize", "delete_records"]);
    assert_eq!(card.skills[1].name, "Delete records");
    assert_eq!(card.skills[1].tags, ["admin", "destructive"]);
    assert!(card.has_skill("summarize"));
    assert!(!card.has_skill("export_data"));
    assert!(card.streaming && card.push_notifications && card.extended_card);
    assert_eq!(card.rpc_path, "/");
    assert!(card.hash.starts_with("sha256:") && card.hash.len() == 71);
    assert_eq!(card.json, card_json);
}

#[test]
fn hybrid_v03_card_signed_by_the_sdk_server_is_accepted() {
    let card_json = fixture("signed_card_v03.json");
    let key =
        CardKey::from_jwk_file(Path::new(&fixture_path("signed_card_v03.pub.jwk.json"))).unwrap();
    let card = parse_value(&card_json, &upstream_of(&card_json), &signed(vec![key])).unwrap();
    assert_eq!(card.skills.len(), 2);
}

fn tampered(case: &str) -> Value {
    let doc = fixture("signature_cases.json");
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == case)
        .unwrap_or_else(|| panic!("no case {case}"))["card"]
        .clone()
}

#[test]
fn tampered_cards_are_refused_with_a_reason() {
    let key = study_key();
    let base = fixture("signed_card.json");
    let upstream = upstream_of(&base);
    for (case, reason) in [
        ("skill_removed", "does not verify (ES256)"),
        ("interface_url_rewritten", "does not verify (ES256)"),
        ("streaming_flipped", "does not verify (ES256)"),
        ("wrong_key_same_kid", "does not verify (ES256)"),
        ("alg_none", "algorithm `none` is not accepted"),
        (
            "hs256_keyed_with_public_jwk_text",
            "algorithm `HS256` is not accepted",
        ),
    ] {
        let err = parse_value(&tampered(case), &upstream, &signed(vec![key.clone()])).unwrap_err();
        match &err {
            CardError::BadSignature(text) => {
                assert!(text.contains(reason), "case {case}: {text}");
            }
            other => panic!("case {case}: {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("no signature of the agent card verifies")
        );
    }
    let err = parse_value(
        &tampered("signatures_removed"),
        &upstream,
        &signed(vec![key]),
    )
    .unwrap_err();
    assert_eq!(err, CardError::Unsigned);
}

#[test]
fn key_order_and_empty_fields_do_not_break_a_signature() {
    let key = study_key();
    for case in [
        "keys_reordered_at_every_level",
        "empty_values_added",
        "unknown_fields_added",
    ] {
        let card = tampered(case);
        parse_value(&card, &upstream_of(&card), &signed(vec![key.clone()]))
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
    }
}

#[test]
fn signature_checks_follow_the_settings() {
    let card = fixture("signed_card.json");
    let upstream = upstream_of(&card);
    let unsigned = tampered("signatures_removed");
    let bad = tampered("skill_removed");
    let none = CardChecks::default();
    let optional = CardChecks {
        keys: vec![study_key()],
        require_signed: false,
    };
    // No keys, not required: signatures are not looked at.
    assert!(parse_value(&bad, &upstream, &none).is_ok());
    assert!(parse_value(&unsigned, &upstream, &none).is_ok());
    // Keys, not required: an unsigned card passes, a bad signature does not.
    assert!(parse_value(&unsigned, &upstream, &optional).is_ok());
    assert!(matches!(
        parse_value(&bad, &upstream, &optional),
        Err(CardError::BadSignature(_))
    ));
    // Required without keys: nothing can pass.
    let no_keys = signed(Vec::new());
    assert_eq!(
        parse_value(&card, &upstream, &no_keys).unwrap_err(),
        CardError::NoKeys
    );
    assert_eq!(
        parse_value(&unsigned, &upstream, &no_keys).unwrap_err(),
        CardError::NoKeys
    );
    // A key of another kind does not verify an ES256 signature.
    let doc = fixture("signature_cases.json");
    let ed = CardKey::from_jwk(&serde_json::to_vec(&doc["keys"]["fixture_ed"]).unwrap()).unwrap();
    assert!(matches!(
        parse_value(&card, &upstream, &signed(vec![ed.clone()])),
        Err(CardError::BadSignature(_))
    ));
    // Several keys: one that verifies is enough.
    assert!(parse_value(&card, &upstream, &signed(vec![ed, study_key()])).is_ok());
}

#[test]
fn too_many_signatures_are_refused_before_any_is_checked() {
    let mut card = fixture("signed_card.json");
    let one = card["signatures"][0].clone();
    card["signatures"] = Value::Array(vec![one; signature::MAX_SIGNATURES + 1]);
    let err = parse_value(&card, &upstream_of(&card), &signed(vec![study_key()])).unwrap_err();
    assert!(err.to_string().contains("more than 16 signatures"), "{err}");
}

#[test]
fn card_keys_must_be_public_keys_that_verify() {
    assert!(CardKey::from_jwk(br#"{"kty":"oct","k":"c2VjcmV0"}"#).is_err());
    let jwk = fixture("signed_card.pub.jwk.json");
    let mut private = jwk.clone();
    private["d"] = json!("AAAA");
    let err = CardKey::from_jwk(&serde_json::to_vec(&private).unwrap()).unwrap_err();
    assert!(err.to_string().contains("private"), "{err}");
    let err = CardKey::from_jwk_file(Path::new("/nonexistent/key.json")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("card key /nonexistent/key.json: "),
        "{err}"
    );
    assert_eq!(study_key().kid(), Some("study-key-1"));
}

// ---- strict reading ----------------------------------------------------------------------------

fn minimal(url: &str) -> Value {
    json!({
        "name": "callee",
        "description": "d",
        "version": "1",
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": false},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {"id": "summarize", "name": "Summarize", "description": "d", "tags": ["text"]},
            {"id": "delete_records", "name": "Delete", "description": "d", "tags": []}
        ]
    })
}

fn parse_plain(card: &Value) -> Result<Card, CardError> {
    parse_value(
        card,
        &"http://agent.test:9100/".parse().unwrap(),
        &CardChecks::default(),
    )
}

#[test]
fn strict_parsing_refuses_ambiguous_or_oversized_cards() {
    let upstream: Uri = "http://agent.test:9100/".parse().unwrap();
    let none = CardChecks::default();
    let parse = |bytes: &[u8]| Card::parse(bytes, &upstream, &none);
    assert_eq!(
        parse(br#"{"name":"a","name":"b"}"#).unwrap_err(),
        CardError::DuplicateMember
    );
    assert_eq!(
        parse(br#"{"skills":[{"id":"a","\u0069d":"b"}]}"#).unwrap_err(),
        CardError::DuplicateMember
    );
    assert_eq!(parse(b"[]").unwrap_err(), CardError::NotObject);
    assert_eq!(parse(b"{").unwrap_err(), CardError::NotJson);
    assert_eq!(parse(b"{} {}").unwrap_err(), CardError::NotJson);
    let deep = format!(
        r#"{{"capabilities":{{"extensions":[{{"params":{}1{}}}]}}}}"#,
        r#"{"a":"#.repeat(MAX_CARD_DEPTH),
        "}".repeat(MAX_CARD_DEPTH)
    );
    assert_eq!(parse(deep.as_bytes()).unwrap_err(), CardError::TooDeep);
    let mut large = minimal("http://agent.test:9100/");
    large["description"] = json!("x".repeat(MAX_CARD_BYTES));
    assert_eq!(parse_plain(&large).unwrap_err(), CardError::TooLarge);
}

#[test]
fn a_card_must_be_an_a2a_1_0_card_with_unique_skill_ids() {
    let url = "http://agent.test:9100/";
    assert!(parse_plain(&minimal(url)).is_ok());
    for (mutate, expected) in [
        (
            json!({"skills": [{"id": 5}]}),
            "the agent card is not a valid A2A 1.0 agent card: `skills[0].id` must be a string",
        ),
        (
            json!({"skills": [{"name": "no id"}]}),
            "the agent card is not a valid A2A 1.0 agent card: skill 0 has no `id`",
        ),
        (
            json!({"skills": [{"id": "a"}, {"id": "a", "name": "again"}]}),
            "the agent card is not a valid A2A 1.0 agent card: skill 1 repeats the `id` of another skill",
        ),
        (
            json!({"capabilities": {"streaming": "yes"}}),
            "the agent card is not a valid A2A 1.0 agent card: `capabilities.streaming` must be a boolean",
        ),
        (
            json!({"default_input_modes": ["x"]}),
            "the agent card is not a valid A2A 1.0 agent card: `default_input_modes` is a protobuf field name; only the JSON (lowerCamelCase) name is accepted",
        ),
    ] {
        let mut card = minimal(url);
        for (k, v) in mutate.as_object().unwrap() {
            card[k] = v.clone();
        }
        assert_eq!(parse_plain(&card).unwrap_err().to_string(), expected);
    }
}

#[test]
fn the_jsonrpc_1_0_interface_must_be_on_the_upstream_origin() {
    let ok = |url: &str| parse_plain(&minimal(url)).map(|c| c.rpc_path);
    assert_eq!(ok("http://agent.test:9100/").unwrap(), "/");
    assert_eq!(
        ok("http://AGENT.test:9100/a2a/rpc?x=1").unwrap(),
        "/a2a/rpc?x=1"
    );
    for off in [
        "http://agent.test:9101/",
        "http://other.test:9100/",
        "https://agent.test:9100/",
        "http://agent.test/",
        "/relative",
        "not a url",
    ] {
        assert_eq!(ok(off).unwrap_err(), CardError::InterfaceOffOrigin, "{off}");
    }
    // Port 80 is the default of http.
    let card = minimal("http://agent.test/rpc");
    let upstream: Uri = "http://agent.test:80".parse().unwrap();
    assert_eq!(
        parse_value(&card, &upstream, &CardChecks::default())
            .unwrap()
            .rpc_path,
        "/rpc"
    );

    let mut card = minimal("http://agent.test:9100/");
    card["supportedInterfaces"] = json!([
        {"url": "http://elsewhere.test/", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
        {"url": "http://elsewhere.test/", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        {"url": "http://agent.test:9100/v1", "protocolBinding": "JSONRPC", "protocolVersion": "1.0.0"}
    ]);
    assert_eq!(parse_plain(&card).unwrap().rpc_path, "/v1");
    card["supportedInterfaces"] = json!([
        {"url": "http://agent.test:9100/", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        {"url": "http://agent.test:9100/", "protocolBinding": "JSONRPC", "protocolVersion": "1.1"}
    ]);
    assert_eq!(
        parse_plain(&card).unwrap_err(),
        CardError::NoJsonRpcInterface
    );
    // A pure v0.3 card becomes a 0.3 interface, as the SDK reads it.
    let legacy = json!({"name": "old", "url": "http://agent.test:9100/", "skills": []});
    assert_eq!(
        parse_plain(&legacy).unwrap_err(),
        CardError::NoJsonRpcInterface
    );
    assert!(
        parse_value(
            &minimal("http://x/"),
            &"https://x/".parse().unwrap(),
            &CardChecks::default()
        )
        .is_err_and(|e| e == CardError::BadUpstream)
    );
}

#[test]
fn version_1_0_is_read_by_major_and_minor() {
    for v in ["1.0", "1.0.0", "1.0.7", "v1.0", "1", "01.00"] {
        assert!(is_version_1_0(v), "{v}");
    }
    for v in [
        "", "0.3", "1.1", "2.0", "10.0", "1.", "x1.0", "1.00x", "01.1", "1.0rc1", "1.0.x",
    ] {
        assert!(!is_version_1_0(v), "{v}");
    }
}

#[test]
fn legacy_extended_card_flag_counts_as_the_capability() {
    let mut card = minimal("http://agent.test:9100/");
    card["supportsAuthenticatedExtendedCard"] = json!(true);
    assert!(parse_plain(&card).unwrap().extended_card);
    card["capabilities"]["extendedAgentCard"] = json!(false);
    assert!(!parse_plain(&card).unwrap().extended_card);
}

// ---- served ------------------------------------------------------------------------------------

#[test]
fn served_card_lists_only_allowed_skills_and_points_at_the_gateway() {
    let bytes = fixture_bytes("signed_card.json");
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    let card = Card::parse(&bytes, &upstream_of(&json), &signed(vec![study_key()])).unwrap();
    let served = card.served(&["summarize", "not_in_card"], "http://gateway.test:8080/");
    let ids: Vec<&str> = served["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["summarize"]);
    assert_eq!(
        served["supportedInterfaces"],
        json!([{"url": "http://gateway.test:8080/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}])
    );
    assert!(served.get("signatures").is_none());
    assert!(served.get("url").is_none());
    // Everything else is as the agent published it.
    assert_eq!(served["securitySchemes"], json["securitySchemes"]);
    assert_eq!(served["capabilities"], json["capabilities"]);
    // Nothing allowed: no skills at all.
    assert_eq!(card.served(&[], "http://g/")["skills"], json!([]));
}

#[test]
fn served_hybrid_card_rewrites_the_legacy_interfaces_too() {
    let mut json = fixture("signed_card_v03.json");
    json["additionalInterfaces"] = json!([
        {"url": "http://127.0.0.1:1/grpc", "transport": "GRPC"},
        {"url": "http://127.0.0.1:1/", "transport": "JSONRPC"}
    ]);
    json["preferredTransport"] = json!("GRPC");
    let mut iface = json["supportedInterfaces"][0].clone();
    iface["protocolBinding"] = json!("HTTP+JSON");
    json["supportedInterfaces"]
        .as_array_mut()
        .unwrap()
        .push(iface);
    let card = parse_value(&json, &upstream_of(&json), &CardChecks::default()).unwrap();
    let served = card.served(&["delete_records"], "http://gw/");
    assert_eq!(served["url"], "http://gw/");
    assert_eq!(served["preferredTransport"], "JSONRPC");
    assert_eq!(
        served["additionalInterfaces"],
        json!([{"url": "http://gw/", "transport": "JSONRPC"}])
    );
    let interfaces = served["supportedInterfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2);
    assert!(
        interfaces
            .iter()
            .all(|i| i["url"] == "http://gw/" && i["protocolBinding"] == "JSONRPC")
    );
    assert_eq!(served["skills"].as_array().unwrap().len(), 1);
    assert!(served.get("signatures").is_none());
}

#[test]
fn changed_error_names_both_hashes_and_the_approve_command() {
    let e = CardError::Changed {
        name: "billing agent".to_owned(),
        pinned: "sha256:aa".to_owned(),
        new: "sha256:bb".to_owned(),
    };
    let text = e.to_string();
    assert!(text.contains("pinned sha256:aa, now sha256:bb"), "{text}");
    assert!(
        text.ends_with("arbiter a2a card approve --name 'billing agent' --hash sha256:bb"),
        "{text}"
    );
    assert_eq!(e.code(), "card_changed");
}

// ---- Cards::current against a real HTTP server ------------------------------------------------

/// What the test upstream serves at the card path.
#[derive(Debug)]
struct Upstream {
    body: StdMutex<Vec<u8>>,
    status: StdMutex<StatusCode>,
    /// Never answer (for the timeout).
    hang: std::sync::atomic::AtomicBool,
    requests: AtomicUsize,
}

async fn serve_card(AxumState(upstream): AxumState<Arc<Upstream>>) -> Response {
    upstream.requests.fetch_add(1, Ordering::SeqCst);
    if upstream.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let status = *upstream.status.lock().unwrap();
    let body = upstream.body.lock().unwrap().clone();
    (status, [("content-type", "application/json")], body).into_response()
}

struct Harness {
    upstream: Arc<Upstream>,
    url: String,
    store: Arc<dyn Store>,
}

impl Harness {
    async fn start() -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let upstream = Arc::new(Upstream {
            body: StdMutex::new(Vec::new()),
            status: StdMutex::new(StatusCode::OK),
            hang: std::sync::atomic::AtomicBool::new(false),
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(CARD_PATH, axum::routing::get(serve_card))
            .with_state(Arc::clone(&upstream));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let harness = Harness {
            upstream,
            url,
            store: Arc::new(SqliteStore::open_in_memory().unwrap()),
        };
        harness.set_card(&minimal(&harness.url));
        harness
    }

    fn set_card(&self, card: &Value) {
        self.set_body(serde_json::to_vec(card).unwrap());
    }

    fn set_body(&self, body: Vec<u8>) {
        *self.upstream.body.lock().unwrap() = body;
    }

    fn cards(&self, checks: CardChecks, timeout: Duration) -> Cards {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Cards::new(
            "callee",
            self.url.parse().unwrap(),
            client,
            Arc::clone(&self.store),
            checks,
            timeout,
        )
        // Every call fetches again, so that a changed card is seen at once.
        .with_refresh(Duration::ZERO)
    }

    fn pin(&self) -> Option<ToolPin> {
        self.store.tool_pin("a2a:callee", PIN_TOOL).unwrap()
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn first_card_is_pinned_on_first_use() {
    let h = Harness::start().await;
    assert!(h.pin().is_none());
    let cards = h.cards(CardChecks::default(), TIMEOUT);
    let card = cards.current().await.unwrap();
    let pin = h.pin().unwrap();
    assert_eq!(pin.hash, card.hash);
    assert_eq!(pin.pinned_by, ToolPin::FIRST_USE);
    assert_eq!(
        serde_json::from_str::<Value>(pin.definition.as_deref().unwrap()).unwrap(),
        card.json
    );
    // The same card again: served, still the same pin.
    assert_eq!(cards.current().await.unwrap().hash, card.hash);
    assert_eq!(h.pin().unwrap().hash, card.hash);
}

#[tokio::test]
async fn changed_card_is_refused_until_approved() {
    let h = Harness::start().await;
    let cards = h.cards(CardChecks::default(), TIMEOUT);
    let first = cards.current().await.unwrap();

    let mut changed = minimal(&h.url);
    changed["skills"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "export_data", "name": "Export", "description": "d", "tags": []}));
    h.set_card(&changed);
    let err = cards.current().await.unwrap_err();
    let CardError::Changed { name, pinned, new } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((name.as_str(), pinned), ("callee", &first.hash));
    assert!(err.to_string().ends_with(&format!(
        "arbiter a2a card approve --name callee --hash {new}"
    )));
    // Still refused on the next call; the change is pending in the store.
    assert_eq!(cards.current().await.unwrap_err(), err);
    let pin = h.pin().unwrap();
    assert_eq!(pin.hash, first.hash);
    assert_eq!(pin.observed_hash.as_deref(), Some(new.as_str()));

    h.store
        .approve_tool("a2a:callee", PIN_TOOL, Some(new), &Actor::cli("test"), 1)
        .unwrap();
    let served = cards.current().await.unwrap();
    assert_eq!(&served.hash, new);
    assert!(served.has_skill("export_data"));

    // Back to the first card: that is a change again.
    h.set_card(&minimal(&h.url));
    assert!(matches!(
        cards.current().await,
        Err(CardError::Changed { .. })
    ));
}

#[tokio::test]
async fn unpinned_card_is_pinned_again_on_first_use() {
    let h = Harness::start().await;
    let cards = h.cards(CardChecks::default(), TIMEOUT);
    cards.current().await.unwrap();
    let mut changed = minimal(&h.url);
    changed["version"] = json!("2");
    h.set_card(&changed);
    assert!(cards.current().await.is_err());
    h.store
        .unpin_tool("a2a:callee", PIN_TOOL, &Actor::cli("test"), 1)
        .unwrap();
    let card = cards.current().await.unwrap();
    assert_eq!(h.pin().unwrap().hash, card.hash);
}

#[tokio::test]
async fn refused_card_is_never_pinned() {
    let h = Harness::start().await;
    // A card signed by the SDK, tampered: refused before any pin is made.
    let mut card = tampered("skill_removed");
    card["supportedInterfaces"][0]["url"] = json!(h.url);
    h.set_card(&card);
    let cards = h.cards(signed(vec![study_key()]), TIMEOUT);
    assert!(matches!(
        cards.current().await,
        Err(CardError::BadSignature(_))
    ));
    h.set_card(&minimal(&h.url));
    assert_eq!(cards.current().await.unwrap_err(), CardError::Unsigned);
    assert!(h.pin().is_none());
}

#[tokio::test]
async fn one_fetch_at_a_time_and_the_card_is_held_between_refreshes() {
    let h = Harness::start().await;
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let cards = Arc::new(Cards::new(
        "callee",
        h.url.parse().unwrap(),
        client,
        Arc::clone(&h.store),
        CardChecks::default(),
        TIMEOUT,
    ));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let cards = Arc::clone(&cards);
            tokio::spawn(async move { cards.current().await })
        })
        .collect();
    let mut hashes = Vec::new();
    for call in calls {
        hashes.push(call.await.unwrap().unwrap().hash.clone());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(h.upstream.requests.load(Ordering::SeqCst), 1);
    // Within the refresh period the held card is used.
    cards.current().await.unwrap();
    assert_eq!(h.upstream.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_failures_refuse_with_a_reason() {
    let h = Harness::start().await;
    let cards = h.cards(CardChecks::default(), TIMEOUT);

    *h.upstream.status.lock().unwrap() = StatusCode::NOT_FOUND;
    assert_eq!(cards.current().await.unwrap_err(), CardError::Status(404));
    *h.upstream.status.lock().unwrap() = StatusCode::OK;

    h.set_body(b"{\"name\":1,".to_vec());
    assert_eq!(cards.current().await.unwrap_err(), CardError::NotJson);

    h.set_body(vec![b' '; MAX_CARD_BYTES + 1]);
    assert_eq!(cards.current().await.unwrap_err(), CardError::TooLarge);

    let mut off = minimal(&h.url);
    off["supportedInterfaces"][0]["url"] = json!("http://127.0.0.1:1/");
    h.set_card(&off);
    assert_eq!(
        cards.current().await.unwrap_err(),
        CardError::InterfaceOffOrigin
    );

    h.upstream.hang.store(true, Ordering::SeqCst);
    let slow = h.cards(CardChecks::default(), Duration::from_millis(200));
    assert_eq!(
        slow.current().await.unwrap_err(),
        CardError::Timeout { ms: 200 }
    );
    assert!(h.pin().is_none());
}

#[tokio::test]
async fn unreachable_upstream_and_bad_upstream_are_refused() {
    // A port nothing listens on: bind one, then close it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let cards = Cards::new(
        "callee",
        format!("http://{addr}/").parse().unwrap(),
        client.clone(),
        Arc::clone(&store),
        CardChecks::default(),
        TIMEOUT,
    );
    assert_eq!(
        cards.current().await.unwrap_err(),
        CardError::Unreachable("connection failed")
    );
    let cards = Cards::new(
        "callee",
        "https://agent.test/".parse().unwrap(),
        client,
        store,
        CardChecks::default(),
        TIMEOUT,
    );
    assert_eq!(cards.current().await.unwrap_err(), CardError::BadUpstream);
}
