#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Integration tests of `arbiter-jwt`: real keys, real signatures, a real HTTP key-set
//! server on the loopback interface. Most cases are attacks that must be refused.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbiter_jwt::{
    Algorithm, ConfigError, IssuerConfig, JwksSource, JwtError, MAX_ACT_DEPTH, MAX_TOKEN_BYTES,
    NeedsFetch, VerifiedToken, Verifier,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use proptest::prelude::*;
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

const ISS: &str = "https://idp.example.com";
const AUD: &str = "arbiter";
/// 2023-11-14T22:13:20Z: every test runs at this instant.
const NOW_SECS: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        now() + Duration::from_secs(secs.unsigned_abs())
    } else {
        now() - Duration::from_secs(secs.unsigned_abs())
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

struct Keys {
    rsa_a: RsaPrivateKey,
    rsa_b: RsaPrivateKey,
    rsa_1024: RsaPrivateKey,
    ec: p256::ecdsa::SigningKey,
    ec_other: p256::ecdsa::SigningKey,
    ed: ed25519_dalek::SigningKey,
    ed_other: ed25519_dalek::SigningKey,
}

fn read_pem(name: &str) -> RsaPrivateKey {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let pem = std::fs::read_to_string(path).unwrap();
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    RsaPrivateKey::from_pkcs8_der(&STANDARD.decode(b64).unwrap()).unwrap()
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa_a: read_pem("rsa2048-a.pem"),
        rsa_b: read_pem("rsa2048-b.pem"),
        rsa_1024: read_pem("rsa1024.pem"),
        ec: p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap(),
        ec_other: p256::ecdsa::SigningKey::from_bytes(&[8u8; 32].into()).unwrap(),
        ed: ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]),
        ed_other: ed25519_dalek::SigningKey::from_bytes(&[10u8; 32]),
    })
}

fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk(key: &RsaPrivateKey, kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig",
           "n": b64u(&key.n().to_bytes_be()), "e": b64u(&key.e().to_bytes_be())})
}

fn ec_jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "kid": kid,
           "x": b64u(point.x().unwrap()), "y": b64u(point.y().unwrap())})
}

fn ed_jwk(key: &ed25519_dalek::SigningKey, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
           "x": b64u(key.verifying_key().as_bytes())})
}

/// The key set of the main test issuer: two RSA keys, one P-256 key, one Ed25519 key.
fn main_jwks() -> Value {
    let k = keys();
    json!({"keys": [
        rsa_jwk(&k.rsa_a, "rsa-a"),
        rsa_jwk(&k.rsa_b, "rsa-b"),
        ec_jwk(&k.ec, "ec-1"),
        ed_jwk(&k.ed, "ed-1"),
    ]})
}

// ---------------------------------------------------------------------------------------
// A test-only signer
// ---------------------------------------------------------------------------------------

/// Deterministic randomness for PSS salts (splitmix64); test-only.
struct TestRng(u64);

impl rsa::rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for TestRng {}

#[derive(Clone, Copy)]
enum Signer<'a> {
    Rs(Algorithm, &'a RsaPrivateKey),
    Ps(Algorithm, &'a RsaPrivateKey),
    Es(&'a p256::ecdsa::SigningKey),
    Ed(&'a ed25519_dalek::SigningKey),
    /// HMAC-SHA256 with these key bytes.
    Hs256(&'a [u8]),
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn rsa_digest(alg: Algorithm, msg: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => Sha256::digest(msg).to_vec(),
        Algorithm::RS384 | Algorithm::PS384 => Sha384::digest(msg).to_vec(),
        Algorithm::RS512 | Algorithm::PS512 => Sha512::digest(msg).to_vec(),
        Algorithm::ES256 | Algorithm::EdDSA => panic!("not RSA"),
    }
}

fn signature(signer: Signer<'_>, msg: &[u8]) -> Vec<u8> {
    match signer {
        Signer::Rs(alg, key) => {
            let scheme = match alg {
                Algorithm::RS256 => Pkcs1v15Sign::new::<Sha256>(),
                Algorithm::RS384 => Pkcs1v15Sign::new::<Sha384>(),
                Algorithm::RS512 => Pkcs1v15Sign::new::<Sha512>(),
                _ => panic!("not RS*"),
            };
            key.sign(scheme, &rsa_digest(alg, msg)).unwrap()
        }
        Signer::Ps(alg, key) => {
            let scheme = match alg {
                Algorithm::PS256 => Pss::new_with_salt::<Sha256>(32),
                Algorithm::PS384 => Pss::new_with_salt::<Sha384>(48),
                Algorithm::PS512 => Pss::new_with_salt::<Sha512>(64),
                _ => panic!("not PS*"),
            };
            key.sign_with_rng(
                &mut TestRng(msg.len() as u64),
                scheme,
                &rsa_digest(alg, msg),
            )
            .unwrap()
        }
        Signer::Es(key) => {
            let sig: p256::ecdsa::Signature = key.sign(msg);
            sig.to_bytes().to_vec()
        }
        Signer::Ed(key) => ed25519_dalek::Signer::sign(key, msg).to_bytes().to_vec(),
        Signer::Hs256(key) => hmac_sha256(key, msg),
    }
}

/// A token from raw header and payload JSON text (so tests can write duplicates).
fn sign_raw(header: &str, payload: &str, signer: Signer<'_>) -> String {
    let input = format!("{}.{}", b64u(header.as_bytes()), b64u(payload.as_bytes()));
    let sig = signature(signer, input.as_bytes());
    format!("{input}.{}", b64u(&sig))
}

fn sign_json(header: &Value, payload: &Value, signer: Signer<'_>) -> String {
    sign_raw(&header.to_string(), &payload.to_string(), signer)
}

fn alg_of(signer: Signer<'_>) -> &'static str {
    match signer {
        Signer::Rs(alg, _) | Signer::Ps(alg, _) => alg.as_str(),
        Signer::Es(_) => "ES256",
        Signer::Ed(_) => "EdDSA",
        Signer::Hs256(_) => "HS256",
    }
}

/// Claims of a valid token for the main issuer.
fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "agent-7",
        "iat": NOW_SECS - 10,
        "exp": NOW_SECS + 600,
        "jti": "token-1",
    })
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn token_with(signer: Signer<'_>, kid: Option<&str>, payload: &Value) -> String {
    let mut header = json!({"alg": alg_of(signer), "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign_json(&header, payload, signer)
}

fn rs256() -> Signer<'static> {
    Signer::Rs(Algorithm::RS256, &keys().rsa_a)
}

fn es256() -> Signer<'static> {
    Signer::Es(&keys().ec)
}

fn eddsa() -> Signer<'static> {
    Signer::Ed(&keys().ed)
}

/// A valid RS256 token for the main issuer.
fn good_token() -> String {
    token_with(rs256(), Some("rsa-a"), &claims())
}

// ---------------------------------------------------------------------------------------
// Verifiers
// ---------------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    verifier: Verifier,
}

fn write_jwks(dir: &tempfile::TempDir, name: &str, jwks: &Value) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, jwks.to_string()).unwrap();
    path
}

fn try_fixture(
    jwks: &Value,
    tweak: impl FnOnce(&mut IssuerConfig),
) -> Result<Fixture, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_jwks(&dir, "jwks.json", jwks);
    let mut config = IssuerConfig::new(ISS, vec![AUD.to_owned()], JwksSource::File(path));
    config.algorithms = Algorithm::ALL.to_vec();
    tweak(&mut config);
    Ok(Fixture {
        verifier: Verifier::new(vec![config])?,
        _dir: dir,
    })
}

fn fixture_with(tweak: impl FnOnce(&mut IssuerConfig)) -> Fixture {
    try_fixture(&main_jwks(), tweak).unwrap()
}

/// The main issuer, accepting every algorithm, with the main key set; shared.
fn main() -> &'static Verifier {
    static MAIN: OnceLock<Fixture> = OnceLock::new();
    &MAIN.get_or_init(|| fixture_with(|_| {})).verifier
}

fn verify(token: &str) -> Result<VerifiedToken, JwtError> {
    main().verify(token, now())
}

fn assert_malformed(token: &str) {
    match verify(token) {
        Err(JwtError::Malformed(_)) => {}
        other => panic!("expected Malformed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Accepted tokens
// ---------------------------------------------------------------------------------------

#[test]
fn valid_rs256_token_is_accepted_with_its_claims() {
    let v = verify(&good_token()).unwrap();
    assert_eq!(v.issuer, ISS);
    assert_eq!(v.agent_id, "agent-7");
    assert_eq!(v.on_behalf_of, None);
    assert!(v.actor_chain.is_empty());
    assert_eq!(v.key_id.as_deref(), Some("rsa-a"));
    assert_eq!(v.token_id.as_deref(), Some("token-1"));
    assert_eq!(v.expires_at, Some(at(600)));
    assert_eq!(v.claims["aud"], AUD);
    assert_eq!(v.claims.len(), 6);
}

#[test]
fn every_algorithm_verifies_with_its_key_type() {
    let k = keys();
    let cases: Vec<(Signer<'_>, &str)> = vec![
        (Signer::Rs(Algorithm::RS256, &k.rsa_a), "rsa-a"),
        (Signer::Rs(Algorithm::RS384, &k.rsa_b), "rsa-b"),
        (Signer::Rs(Algorithm::RS512, &k.rsa_a), "rsa-a"),
        (Signer::Ps(Algorithm::PS256, &k.rsa_a), "rsa-a"),
        (Signer::Ps(Algorithm::PS384, &k.rsa_b), "rsa-b"),
        (Signer::Ps(Algorithm::PS512, &k.rsa_a), "rsa-a"),
        (Signer::Es(&k.ec), "ec-1"),
        (Signer::Ed(&k.ed), "ed-1"),
    ];
    for (signer, kid) in cases {
        let v = verify(&token_with(signer, Some(kid), &claims()))
            .unwrap_or_else(|e| panic!("{}: {e}", alg_of(signer)));
        assert_eq!(v.agent_id, "agent-7");
        assert_eq!(v.key_id.as_deref(), Some(kid));
    }
}

#[test]
fn audience_array_containing_ours_is_accepted() {
    let payload = with(claims(), json!({"aud": ["other", AUD]}));
    assert!(verify(&token_with(es256(), Some("ec-1"), &payload)).is_ok());
}

#[test]
fn typ_variants_are_accepted_case_insensitively() {
    for typ in [
        "JWT",
        "jwt",
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "application/JWT",
    ] {
        let header = json!({"alg": "ES256", "kid": "ec-1", "typ": typ});
        assert!(
            verify(&sign_json(&header, &claims(), es256())).is_ok(),
            "{typ}"
        );
    }
    let header = json!({"alg": "ES256", "kid": "ec-1"});
    assert!(verify(&sign_json(&header, &claims(), es256())).is_ok());
}

#[test]
fn unknown_header_parameters_are_ignored() {
    let header = json!({"alg": "ES256", "kid": "ec-1", "x5t": "abc", "custom": {"a": 1}});
    assert!(verify(&sign_json(&header, &claims(), es256())).is_ok());
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    let payload = with(
        claims(),
        json!({"exp": NOW_SECS as f64 + 0.5, "iat": 1.6e9}),
    );
    let v = verify(&token_with(eddsa(), Some("ed-1"), &payload)).unwrap();
    assert_eq!(v.expires_at, Some(now() + Duration::from_millis(500)));
}

#[test]
fn custom_agent_claim_names_the_agent() {
    let f = fixture_with(|c| c.agent_claim = "client_id".to_owned());
    let payload = with(claims(), json!({"client_id": "billing-bot"}));
    let v = f
        .verifier
        .verify(&token_with(es256(), Some("ec-1"), &payload), now())
        .unwrap();
    assert_eq!(v.agent_id, "billing-bot");
    let missing = with(claims(), json!({"client_id": null}));
    assert_eq!(
        f.verifier
            .verify(&token_with(es256(), Some("ec-1"), &missing), now()),
        Err(JwtError::MissingClaim("agent claim"))
    );
}

#[test]
fn verifier_is_shared_across_threads() {
    let token = token_with(es256(), Some("ec-1"), &claims());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert!(verify(&token).is_ok()));
        }
    });
}

// ---------------------------------------------------------------------------------------
// Delegation (RFC 8693 `act`)
// ---------------------------------------------------------------------------------------

#[test]
fn act_claim_makes_the_actor_the_agent_and_sub_the_user() {
    let payload = with(
        claims(),
        json!({"sub": "alice@example.com", "act": {"sub": "mail-agent"}}),
    );
    let v = verify(&token_with(es256(), Some("ec-1"), &payload)).unwrap();
    assert_eq!(v.agent_id, "mail-agent");
    assert_eq!(v.on_behalf_of.as_deref(), Some("alice@example.com"));
    assert_eq!(v.actor_chain, ["mail-agent"]);
}

#[test]
fn nested_act_lists_the_chain_current_actor_first() {
    let payload = with(
        claims(),
        json!({"sub": "alice", "act": {"sub": "tool-agent", "iss": "https://other",
               "act": {"sub": "planner", "act": {"sub": "gateway"}}}}),
    );
    let v = verify(&token_with(es256(), Some("ec-1"), &payload)).unwrap();
    assert_eq!(v.agent_id, "tool-agent");
    assert_eq!(v.on_behalf_of.as_deref(), Some("alice"));
    assert_eq!(v.actor_chain, ["tool-agent", "planner", "gateway"]);
}

#[test]
fn act_chain_at_the_bound_is_accepted_and_deeper_is_malformed() {
    let chain = |depth: usize| {
        let mut act = json!({"sub": format!("actor-{}", depth - 1)});
        for i in (0..depth - 1).rev() {
            act = json!({"sub": format!("actor-{i}"), "act": act});
        }
        with(claims(), json!({"sub": "alice", "act": act}))
    };
    let v = verify(&token_with(es256(), Some("ec-1"), &chain(MAX_ACT_DEPTH))).unwrap();
    assert_eq!(v.actor_chain.len(), MAX_ACT_DEPTH);
    assert_eq!(v.agent_id, "actor-0");
    assert_malformed(&token_with(
        es256(),
        Some("ec-1"),
        &chain(MAX_ACT_DEPTH + 1),
    ));
}

#[test]
fn malformed_act_claims_are_refused() {
    let cases = [
        (json!({"act": "mail-agent"}), "act string"),
        (json!({"act": {"sub": 5}}), "act.sub number"),
        (json!({"act": {"sub": ""}}), "act.sub empty"),
        (json!({"act": {"sub": "a", "act": []}}), "nested act array"),
        (json!({"act": {"sub": "a"}, "sub": ["alice"]}), "sub array"),
    ];
    for (change, what) in cases {
        let t = token_with(es256(), Some("ec-1"), &with(claims(), change));
        assert!(matches!(verify(&t), Err(JwtError::Malformed(_))), "{what}");
    }
    let no_sub = with(claims(), json!({"act": {"iss": "x"}}));
    assert_eq!(
        verify(&token_with(es256(), Some("ec-1"), &no_sub)),
        Err(JwtError::MissingClaim("act.sub"))
    );
    let no_user = with(claims(), json!({"act": {"sub": "a"}, "sub": null}));
    assert_eq!(
        verify(&token_with(es256(), Some("ec-1"), &no_user)),
        Err(JwtError::MissingClaim("sub"))
    );
}

#[test]
fn agent_id_is_bounded() {
    let long = with(claims(), json!({"sub": "a".repeat(257)}));
    assert_malformed(&token_with(es256(), Some("ec-1"), &long));
    let empty = with(claims(), json!({"sub": ""}));
    assert_malformed(&token_with(es256(), Some("ec-1"), &empty));
    let control = with(claims(), json!({"sub": "agent\u{0}7"}));
    assert_malformed(&token_with(es256(), Some("ec-1"), &control));
    let max = with(claims(), json!({"sub": "a".repeat(256)}));
    assert!(verify(&token_with(es256(), Some("ec-1"), &max)).is_ok());
    let missing = with(claims(), json!({"sub": null}));
    assert_eq!(
        verify(&token_with(es256(), Some("ec-1"), &missing)),
        Err(JwtError::MissingClaim("sub"))
    );
}

// ---------------------------------------------------------------------------------------
// Algorithm attacks
// ---------------------------------------------------------------------------------------

#[test]
fn alg_none_without_signature_is_refused() {
    let header = b64u(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64u(claims().to_string().as_bytes());
    assert_malformed(&format!("{header}.{payload}."));
}

#[test]
fn alg_none_with_signature_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "kid": "rsa-a"});
        let real = token_with(rs256(), Some("rsa-a"), &claims());
        let sig = real.rsplit('.').next().unwrap();
        let input = format!(
            "{}.{}",
            b64u(header.to_string().as_bytes()),
            b64u(claims().to_string().as_bytes())
        );
        assert!(matches!(
            verify(&format!("{input}.{sig}")),
            Err(JwtError::UnsupportedAlgorithm(_))
        ));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic key-confusion attack: the "secret" is the issuer's public key.
    let public = keys().rsa_a.to_public_key();
    let spki_der = public.to_public_key_der().unwrap().as_bytes().to_vec();
    let pkcs1_der = public.to_pkcs1_der().unwrap().as_bytes().to_vec();
    let body = STANDARD.encode(&spki_der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    let jwk_text = rsa_jwk(&keys().rsa_a, "rsa-a").to_string();
    for secret in [
        pem.as_bytes(),
        pem.trim_end().as_bytes(),
        &spki_der,
        &pkcs1_der,
        jwk_text.as_bytes(),
    ] {
        for kid in [Some("rsa-a"), None] {
            let t = token_with(Signer::Hs256(secret), kid, &claims());
            match verify(&t) {
                Err(JwtError::UnsupportedAlgorithm(msg)) => assert!(msg.contains("HS256")),
                other => panic!("expected UnsupportedAlgorithm, got {other:?}"),
            }
        }
    }
}

#[test]
fn alg_outside_the_issuer_allow_list_is_refused() {
    // Default allow-list: RS256, ES256, EdDSA.
    let f = fixture_with(|c| c.algorithms = Algorithm::DEFAULT_ALLOWED.to_vec());
    let k = keys();
    for signer in [
        Signer::Ps(Algorithm::PS256, &k.rsa_a),
        Signer::Rs(Algorithm::RS512, &k.rsa_a),
    ] {
        let t = token_with(signer, Some("rsa-a"), &claims());
        assert!(
            matches!(
                f.verifier.verify(&t, now()),
                Err(JwtError::UnsupportedAlgorithm(_))
            ),
            "{}",
            alg_of(signer)
        );
    }
    let only_es = fixture_with(|c| c.algorithms = vec![Algorithm::ES256]);
    assert!(matches!(
        only_es.verifier.verify(&good_token(), now()),
        Err(JwtError::UnsupportedAlgorithm(_))
    ));
}

#[test]
fn rs256_header_naming_an_ec_key_is_refused() {
    let t = token_with(rs256(), Some("ec-1"), &claims());
    assert!(matches!(verify(&t), Err(JwtError::UnsupportedAlgorithm(_))));
    // And the other way round, with a signature made by the EC key.
    let t = token_with(es256(), Some("rsa-a"), &claims());
    assert!(matches!(verify(&t), Err(JwtError::UnsupportedAlgorithm(_))));
    let t = token_with(eddsa(), Some("ec-1"), &claims());
    assert!(matches!(verify(&t), Err(JwtError::UnsupportedAlgorithm(_))));
}

#[test]
fn jwk_alg_pins_the_key_to_one_algorithm() {
    let k = keys();
    let mut jwk = rsa_jwk(&k.rsa_a, "rsa-a");
    jwk["alg"] = json!("RS256");
    let f = try_fixture(&json!({"keys": [jwk]}), |_| {}).unwrap();
    let ok = token_with(rs256(), Some("rsa-a"), &claims());
    assert!(f.verifier.verify(&ok, now()).is_ok());
    let pss = token_with(
        Signer::Ps(Algorithm::PS256, &k.rsa_a),
        Some("rsa-a"),
        &claims(),
    );
    assert!(matches!(
        f.verifier.verify(&pss, now()),
        Err(JwtError::UnsupportedAlgorithm(_))
    ));
}

#[test]
fn ecdsa_der_signature_is_refused() {
    let header = json!({"alg": "ES256", "kid": "ec-1"});
    let input = format!(
        "{}.{}",
        b64u(header.to_string().as_bytes()),
        b64u(claims().to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = keys().ec.sign(input.as_bytes());
    let der = sig.to_der();
    assert_eq!(
        verify(&format!("{input}.{}", b64u(der.as_bytes()))),
        Err(JwtError::BadSignature)
    );
    // Sanity: the same signature in JWS form verifies.
    assert!(verify(&format!("{input}.{}", b64u(&sig.to_bytes()))).is_ok());
}

#[test]
fn zero_ecdsa_and_ed25519_signatures_are_refused() {
    for (alg, kid) in [("ES256", "ec-1"), ("EdDSA", "ed-1")] {
        let header = json!({"alg": alg, "kid": kid});
        let input = format!(
            "{}.{}",
            b64u(header.to_string().as_bytes()),
            b64u(claims().to_string().as_bytes())
        );
        assert_eq!(
            verify(&format!("{input}.{}", b64u(&[0u8; 64]))),
            Err(JwtError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn rsa_signature_plus_modulus_is_refused() {
    // `s + n` is the same residue as `s`; it must not verify (PSS and PKCS#1 v1.5).
    let key = &keys().rsa_a;
    let n = key.n().clone();
    let k = key.size();
    for signer in [rs256(), Signer::Ps(Algorithm::PS256, key)] {
        let mut tested = false;
        for i in 0..64 {
            let payload = with(claims(), json!({"jti": format!("t{i}")}));
            let t = token_with(signer, Some("rsa-a"), &payload);
            assert!(verify(&t).is_ok());
            let (input, sig) = t.rsplit_once('.').unwrap();
            let s = BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(sig).unwrap());
            let bumped = (s + &n).to_bytes_be();
            if bumped.len() != k {
                continue;
            }
            assert_eq!(
                verify(&format!("{input}.{}", b64u(&bumped))),
                Err(JwtError::BadSignature)
            );
            tested = true;
            break;
        }
        assert!(tested, "no signature left room for s + n");
    }
}

// ---------------------------------------------------------------------------------------
// Key selection
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_kid_is_refused() {
    let t = token_with(rs256(), Some("rsa-z"), &claims());
    assert_eq!(verify(&t), Err(JwtError::UnknownKid));
}

#[test]
fn missing_kid_with_several_keys_for_the_alg_is_refused() {
    // Two RSA keys: which one is meant is not for the token to leave open.
    let t = token_with(rs256(), None, &claims());
    assert_eq!(verify(&t), Err(JwtError::MissingClaim("kid")));
}

#[test]
fn missing_kid_with_exactly_one_usable_key_is_accepted() {
    // One P-256 key and one Ed25519 key in a set that also holds RSA keys.
    assert!(verify(&token_with(es256(), None, &claims())).is_ok());
    assert!(verify(&token_with(eddsa(), None, &claims())).is_ok());
}

#[test]
fn signature_by_a_key_outside_the_set_is_refused() {
    let k = keys();
    assert_eq!(
        verify(&token_with(
            Signer::Es(&k.ec_other),
            Some("ec-1"),
            &claims()
        )),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        verify(&token_with(Signer::Ed(&k.ed_other), None, &claims())),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        verify(&token_with(
            Signer::Rs(Algorithm::RS256, &k.rsa_b),
            Some("rsa-a"),
            &claims()
        )),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn malformed_kid_is_refused() {
    for kid in [
        json!(""),
        json!(7),
        json!(["rsa-a"]),
        json!("k".repeat(257)),
    ] {
        let header = json!({"alg": "RS256", "kid": kid});
        assert_malformed(&sign_json(&header, &claims(), rs256()));
    }
}

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_audience_is_refused() {
    for aud in [
        json!("someone-else"),
        json!(["a", "b"]),
        json!([]),
        json!("Arbiter"),
    ] {
        let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"aud": aud})));
        assert_eq!(verify(&t), Err(JwtError::WrongAudience));
    }
}

#[test]
fn missing_or_mistyped_audience_is_refused() {
    let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"aud": null})));
    assert_eq!(verify(&t), Err(JwtError::MissingClaim("aud")));
    for aud in [json!(1), json!({"a": AUD}), json!([AUD, 1])] {
        let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"aud": aud})));
        assert!(matches!(verify(&t), Err(JwtError::Malformed(_))));
    }
}

#[test]
fn wrong_or_missing_issuer_is_refused() {
    for iss in [
        "https://evil.example.com",
        "https://idp.example.com/",
        "HTTPS://IDP.EXAMPLE.COM",
    ] {
        let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"iss": iss})));
        assert_eq!(verify(&t), Err(JwtError::UnknownIssuer), "{iss}");
    }
    let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"iss": null})));
    assert_eq!(verify(&t), Err(JwtError::MissingClaim("iss")));
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"iss": [ISS]})),
    );
    assert!(matches!(verify(&t), Err(JwtError::Malformed(_))));
}

#[test]
fn expired_beyond_leeway_is_refused_and_within_leeway_accepted() {
    let t = token_with(es256(), Some("ec-1"), &claims()); // exp = now + 600, leeway 60
    assert!(main().verify(&t, at(600)).is_ok());
    assert!(main().verify(&t, at(659)).is_ok());
    assert_eq!(main().verify(&t, at(660)), Err(JwtError::Expired));
    assert_eq!(main().verify(&t, at(86_400)), Err(JwtError::Expired));
    let zero = fixture_with(|c| c.leeway = Duration::ZERO);
    assert_eq!(zero.verifier.verify(&t, at(600)), Err(JwtError::Expired));
    assert!(zero.verifier.verify(&t, at(599)).is_ok());
}

#[test]
fn nbf_in_the_future_is_refused() {
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"nbf": NOW_SECS + 300})),
    );
    assert_eq!(verify(&t), Err(JwtError::NotYetValid));
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"nbf": NOW_SECS + 60})),
    );
    assert!(verify(&t).is_ok(), "within leeway");
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"nbf": NOW_SECS + 61})),
    );
    assert_eq!(verify(&t), Err(JwtError::NotYetValid));
}

#[test]
fn iat_in_the_future_is_refused() {
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"iat": NOW_SECS + 120})),
    );
    assert_eq!(verify(&t), Err(JwtError::NotYetValid));
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"iat": NOW_SECS + 60})),
    );
    assert!(verify(&t).is_ok(), "within leeway");
}

#[test]
fn numeric_dates_as_strings_are_refused() {
    for (name, value) in [
        ("exp", json!((NOW_SECS + 600).to_string())),
        ("nbf", json!(NOW_SECS.to_string())),
        ("iat", json!(NOW_SECS.to_string())),
        ("exp", json!(null)), // removed: see below
        ("exp", json!(true)),
        ("exp", json!([NOW_SECS + 600])),
    ] {
        let payload = with(claims(), json!({ name: value.clone() }));
        let t = token_with(es256(), Some("ec-1"), &payload);
        if value.is_null() {
            assert_eq!(verify(&t), Err(JwtError::MissingClaim("exp")));
        } else {
            assert!(
                matches!(verify(&t), Err(JwtError::Malformed(_))),
                "{name}: {value}"
            );
        }
    }
}

#[test]
fn exp_is_optional_only_when_configured() {
    let no_exp = token_with(es256(), Some("ec-1"), &with(claims(), json!({"exp": null})));
    assert_eq!(verify(&no_exp), Err(JwtError::MissingClaim("exp")));
    let lax = fixture_with(|c| c.require_exp = false);
    let v = lax.verifier.verify(&no_exp, now()).unwrap();
    assert_eq!(v.expires_at, None);
}

#[test]
fn absurd_exp_is_malformed_not_a_panic() {
    for exp in [json!(1e300), json!(u64::MAX), json!(1e19)] {
        let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"exp": exp})));
        assert!(matches!(verify(&t), Err(JwtError::Malformed(_))), "{exp}");
    }
    let t = token_with(
        es256(),
        Some("ec-1"),
        &with(claims(), json!({"exp": -1e300})),
    );
    assert_eq!(verify(&t), Err(JwtError::Expired));
    // A clock before 1970 is handled too.
    assert!(
        main()
            .verify(&good_token(), UNIX_EPOCH - Duration::from_secs(5))
            .is_err()
    );
}

#[test]
fn mistyped_jti_is_refused() {
    let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({"jti": 12})));
    assert_malformed(&t);
}

// ---------------------------------------------------------------------------------------
// Signature and encoding
// ---------------------------------------------------------------------------------------

#[test]
fn tampered_payload_is_refused() {
    let t = good_token();
    let parts: Vec<&str> = t.split('.').collect();
    let forged = with(claims(), json!({"sub": "admin"}));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64u(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(verify(&forged), Err(JwtError::BadSignature));
}

#[test]
fn tampered_header_is_refused() {
    let t = token_with(es256(), Some("ec-1"), &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let header = json!({"alg": "ES256", "kid": "ec-1", "typ": "at+jwt"});
    let forged = format!(
        "{}.{}.{}",
        b64u(header.to_string().as_bytes()),
        parts[1],
        parts[2]
    );
    assert_eq!(verify(&forged), Err(JwtError::BadSignature));
}

#[test]
fn truncated_signature_is_refused() {
    for signer in [rs256(), es256(), eddsa()] {
        let kid = match signer {
            Signer::Es(_) => "ec-1",
            Signer::Ed(_) => "ed-1",
            _ => "rsa-a",
        };
        let t = token_with(signer, Some(kid), &claims());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        // Valid base64url of a shorter signature: the wrong length.
        for cut in [1, 3, sig.len() / 2, sig.len() - 1] {
            let short = format!("{input}.{}", b64u(&sig[..sig.len() - cut]));
            assert_eq!(verify(&short), Err(JwtError::BadSignature), "{cut}");
        }
        // Characters cut off: not a canonical encoding, or too short.
        for cut in 1..=4 {
            assert!(matches!(
                verify(&t[..t.len() - cut]),
                Err(JwtError::Malformed(_) | JwtError::BadSignature)
            ));
        }
    }
}

#[test]
fn padded_base64_is_refused() {
    // A header whose encoding needs padding, padded.
    let header = r#"{"alg":"ES256","kid":"ec-1"}"#;
    assert_ne!(header.len() % 3, 0);
    let t = sign_raw(header, &claims().to_string(), es256());
    assert!(verify(&t).is_ok());
    let parts: Vec<&str> = t.split('.').collect();
    let padded_header = STANDARD.encode(header).replace('+', "-").replace('/', "_");
    assert!(padded_header.ends_with('='));
    assert_malformed(&format!("{padded_header}.{}.{}", parts[1], parts[2]));
    assert_malformed(&format!("{}.{}=.{}", parts[0], parts[1], parts[2]));
    assert_malformed(&format!("{}.{}.{}==", parts[0], parts[1], parts[2]));
}

#[test]
fn standard_alphabet_whitespace_and_bearer_prefix_are_refused() {
    let t = good_token();
    assert_malformed(&format!("Bearer {t}"));
    assert_malformed(&format!(" {t}"));
    assert_malformed(&format!("{t}\n"));
    assert_malformed(&t.replacen('.', ". ", 1));
    let std_alphabet = t.replace('-', "+").replace('_', "/");
    if std_alphabet != t {
        assert_malformed(&std_alphabet);
    }
}

#[test]
fn non_canonical_trailing_bits_are_refused() {
    // An ES256 signature is 64 bytes: 86 characters, the last carrying 4 unused bits.
    let t = token_with(es256(), Some("ec-1"), &claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    assert_eq!(sig.len(), 86);
    let last = sig.as_bytes()[85];
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = ALPHABET.iter().position(|c| *c == last).unwrap();
    let sibling = ALPHABET[idx ^ 1] as char; // same top 4 bits, an unused bit set
    let forged = format!("{input}.{}{sibling}", &sig[..85]);
    assert_malformed(&forged);
}

#[test]
fn duplicate_alg_in_header_is_refused() {
    let payload = claims().to_string();
    for header in [
        r#"{"alg":"ES256","kid":"ec-1","alg":"ES256"}"#,
        r#"{"alg":"none","kid":"ec-1","alg":"ES256"}"#,
        r#"{"alg":"ES256","kid":"ec-1","kid":"rsa-a"}"#,
        r#"{"alg":"ES256","kid":"ec-1","\u0061lg":"ES256"}"#,
    ] {
        assert_malformed(&sign_raw(header, &payload, es256()));
    }
}

#[test]
fn duplicate_claim_is_refused() {
    let header = r#"{"alg":"ES256","kid":"ec-1"}"#;
    let base = format!(r#""iss":"{ISS}","aud":"{AUD}","exp":{},"#, NOW_SECS + 600);
    for dup in [
        r#""sub":"agent-7","sub":"admin""#,
        r#""sub":"agent-7","aud":"other""#,
        r#""sub":"agent-7","exp":1"#,
        r#""sub":"agent-7","act":{"sub":"a","sub":"b"}"#,
    ] {
        let payload = format!("{{{base}{dup}}}");
        assert_malformed(&sign_raw(header, &payload, es256()));
    }
    // Control: the same shape without the duplicate verifies.
    let ok = format!(r#"{{{base}"sub":"agent-7"}}"#);
    assert!(verify(&sign_raw(header, &ok, es256())).is_ok());
}

#[test]
fn crit_header_is_refused() {
    for crit in [json!(["exp"]), json!([]), json!(["b64"])] {
        let header = json!({"alg": "ES256", "kid": "ec-1", "crit": crit, "exp": 1});
        assert_malformed(&sign_json(&header, &claims(), es256()));
    }
}

#[test]
fn embedded_key_headers_are_refused() {
    // The attacker signs with their own key and ships it in the header.
    let attacker = &keys().ec_other;
    let attacker_jwk = ec_jwk(attacker, "ec-1");
    for (name, value) in [
        ("jwk", attacker_jwk.clone()),
        ("jku", json!("https://evil.example.com/jwks.json")),
        ("x5u", json!("https://evil.example.com/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut header = json!({"alg": "ES256"});
        header[name] = value;
        assert_malformed(&sign_json(&header, &claims(), Signer::Es(attacker)));
        // Even when the kid and signature would otherwise be right.
        header["kid"] = json!("ec-1");
        assert_malformed(&sign_json(&header, &claims(), es256()));
    }
}

#[test]
fn other_token_kinds_are_refused() {
    for (name, value) in [
        ("typ", json!("JWE")),
        ("typ", json!("dpop+jwt")),
        ("typ", json!(1)),
        ("cty", json!("JWT")),
        ("enc", json!("A256GCM")),
        ("zip", json!("DEF")),
        ("b64", json!(false)),
    ] {
        let mut header = json!({"alg": "ES256", "kid": "ec-1"});
        header[name] = value;
        assert_malformed(&sign_json(&header, &claims(), es256()));
    }
}

#[test]
fn wrong_segment_counts_and_empty_segments_are_refused() {
    let t = good_token();
    let parts: Vec<&str> = t.split('.').collect();
    assert_malformed(&format!("{t}.{}", parts[2]));
    assert_malformed(&format!("{t}."));
    assert_malformed(&format!("{}.{}", parts[0], parts[1]));
    assert_malformed(parts[0]);
    assert_malformed(&format!(".{}.{}", parts[1], parts[2]));
    assert_malformed(&format!("{}..{}", parts[0], parts[2]));
    assert_malformed(&format!("{}.{}.", parts[0], parts[1]));
    assert_malformed("..");
    assert_malformed("");
    // A JWE has five segments.
    assert_malformed(&format!(
        "{}.{}.{}.{}.{}",
        parts[0], parts[1], parts[2], parts[1], parts[2]
    ));
}

#[test]
fn non_object_header_or_payload_is_refused() {
    for payload in ["[1,2]", "\"agent-7\"", "42", "null", "", "{", "{}garbage"] {
        assert_malformed(&sign_raw(
            r#"{"alg":"ES256","kid":"ec-1"}"#,
            payload,
            es256(),
        ));
    }
    for header in ["[\"ES256\"]", "\"ES256\"", "{\"alg\":1}", "{}"] {
        assert_malformed(&sign_raw(header, &claims().to_string(), es256()));
    }
}

#[test]
fn invalid_utf8_payload_is_refused() {
    let header = b64u(br#"{"alg":"ES256","kid":"ec-1"}"#);
    let payload = b64u(b"{\"iss\":\"\xff\"}");
    let input = format!("{header}.{payload}");
    let sig = signature(es256(), input.as_bytes());
    assert_malformed(&format!("{input}.{}", b64u(&sig)));
}

#[test]
fn deeply_nested_claims_are_refused() {
    let mut v = json!(1);
    for _ in 0..40 {
        v = json!({ "n": v });
    }
    let t = token_with(es256(), Some("ec-1"), &with(claims(), json!({ "nest": v })));
    assert_malformed(&t);
}

#[test]
fn oversized_token_is_refused() {
    let big = with(claims(), json!({"pad": "x".repeat(MAX_TOKEN_BYTES)}));
    let t = token_with(es256(), Some("ec-1"), &big);
    assert!(t.len() > MAX_TOKEN_BYTES);
    assert_malformed(&t);
    // Just under the limit is fine.
    let mut pad = MAX_TOKEN_BYTES / 2;
    let fits = loop {
        let t = token_with(
            es256(),
            Some("ec-1"),
            &with(claims(), json!({"pad": "x".repeat(pad)})),
        );
        if t.len() <= MAX_TOKEN_BYTES {
            break t;
        }
        pad -= 64;
    };
    assert!(verify(&fits).is_ok());
}

#[test]
fn errors_never_echo_the_token_or_claims() {
    let secret_sub = "SECRET-SUBJECT-4711";
    let p = with(claims(), json!({"sub": secret_sub}));
    let t = token_with(es256(), Some("ec-1"), &p);
    let parts: Vec<&str> = t.split('.').collect();
    let tokens = [
        format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]),
        token_with(
            es256(),
            Some("ec-1"),
            &with(p.clone(), json!({"aud": secret_sub})),
        ),
        token_with(
            es256(),
            Some("ec-1"),
            &with(p.clone(), json!({"iss": secret_sub})),
        ),
        token_with(es256(), Some(secret_sub), &p),
        sign_json(&json!({"alg": secret_sub}), &p, es256()),
        sign_json(
            &json!({"alg": "ES256", "kid": "ec-1", "typ": secret_sub}),
            &p,
            es256(),
        ),
        token_with(
            es256(),
            Some("ec-1"),
            &with(p.clone(), json!({"act": secret_sub})),
        ),
    ];
    for token in tokens {
        let err = verify(&token).unwrap_err().to_string();
        assert!(!err.contains(secret_sub), "{err}");
        for part in token.split('.') {
            assert!(part.len() < 8 || !err.contains(part), "{err}");
        }
    }
}

#[test]
fn error_codes_are_distinct() {
    let errors = [
        JwtError::Malformed(String::new()),
        JwtError::UnsupportedAlgorithm(String::new()),
        JwtError::UnknownIssuer,
        JwtError::UnknownKid,
        JwtError::BadSignature,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::WrongAudience,
        JwtError::MissingClaim("x"),
        JwtError::Jwks(String::new()),
    ];
    let codes: std::collections::HashSet<&str> = errors.iter().map(JwtError::code).collect();
    assert_eq!(codes.len(), errors.len());
}

#[test]
fn looks_like_jwt_is_a_shape_test() {
    assert!(Verifier::looks_like_jwt(&good_token()));
    let expired = token_with(es256(), Some("ec-1"), &with(claims(), json!({"exp": 1})));
    assert!(Verifier::looks_like_jwt(&expired));
    assert!(Verifier::looks_like_jwt(&format!(
        "{}.e30.c2ln",
        b64u(br#"{"alg":"none"}"#)
    )));
    for s in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "sk-live-1234567890",
        "eyJhbGciOiJSUzI1NiJ9",
        "..",
        "Bearer x.y.z",
    ] {
        assert!(!Verifier::looks_like_jwt(s), "{s}");
    }
    let no_alg = format!("{}.e30.c2ln", b64u(br#"{"typ":"JWT"}"#));
    assert!(!Verifier::looks_like_jwt(&no_alg));
    let not_object = format!("{}.e30.c2ln", b64u(b"[1]"));
    assert!(!Verifier::looks_like_jwt(&not_object));
    assert!(!Verifier::looks_like_jwt(&format!("{}.", good_token())));
}

// ---------------------------------------------------------------------------------------
// Key sets and configuration
// ---------------------------------------------------------------------------------------

fn jwks_error(jwks: Value) -> String {
    match try_fixture(&jwks, |_| {}) {
        Err(e @ ConfigError::Jwks { .. }) => e.to_string(),
        Err(other) => panic!("expected a key set error, got {other}"),
        Ok(_) => panic!("key set {jwks} was accepted"),
    }
}

#[test]
fn rsa_1024_key_is_refused_at_load() {
    let k = keys();
    let err = jwks_error(json!({"keys": [rsa_jwk(&k.rsa_1024, "weak")]}));
    assert!(err.contains("1024 bits"), "{err}");
    // Even next to good keys.
    let err = jwks_error(json!({"keys": [rsa_jwk(&k.rsa_a, "a"), rsa_jwk(&k.rsa_1024, "weak")]}));
    assert!(err.contains("weak"), "{err}");
}

#[test]
fn unusable_keys_are_skipped_but_an_empty_set_is_refused() {
    let k = keys();
    let skipped = [
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"}),
        json!({"kty": "OKP", "crv": "X25519", "x": "AA", "kid": "x25519"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc", "kid": "enc"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RSA-OAEP", "kid": "oaep"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "key_ops": ["encrypt"], "kid": "ops"}),
        json!({"kty": "PQC", "kid": "future"}),
    ];
    let err = jwks_error(json!({ "keys": skipped.to_vec() }));
    assert!(err.contains("no usable"), "{err}");
    assert!(jwks_error(json!({"keys": []})).contains("no usable"));

    let mut keys_list = skipped.to_vec();
    keys_list.push(ec_jwk(&k.ec, "ec-1"));
    let f = try_fixture(&json!({ "keys": keys_list }), |_| {}).unwrap();
    assert_eq!(f.verifier.key_count(ISS), Some(1));
    assert!(
        f.verifier
            .verify(&token_with(es256(), None, &claims()), now())
            .is_ok()
    );
    // A token naming a skipped key finds nothing.
    let hs = token_with(es256(), Some("hmac"), &claims());
    assert_eq!(f.verifier.verify(&hs, now()), Err(JwtError::UnknownKid));
}

#[test]
fn broken_key_sets_are_refused() {
    let k = keys();
    let mut private = ec_jwk(&k.ec, "ec-1");
    private["d"] = json!(b64u(&[7u8; 32]));
    let mut off_curve = ec_jwk(&k.ec, "ec-1");
    off_curve["y"] = json!(b64u(&[1u8; 32]));
    let mut short_x = ed_jwk(&k.ed, "ed-1");
    short_x["x"] = json!(b64u(&[1u8; 31]));
    let mut padded = rsa_jwk(&k.rsa_a, "rsa-a");
    padded["e"] = json!("AQAB==");
    let mut even_e = rsa_jwk(&k.rsa_a, "rsa-a");
    even_e["e"] = json!(b64u(&[1, 0, 0]));
    let mut mismatched_alg = ec_jwk(&k.ec, "ec-1");
    mismatched_alg["alg"] = json!("RS256");
    // The identity point as an Ed25519 key: small order.
    let mut weak_ed = ed_jwk(&k.ed, "ed-1");
    let mut identity = [0u8; 32];
    identity[0] = 1;
    weak_ed["x"] = json!(b64u(&identity));
    let cases = [
        (json!({"keys": [private]}), "private"),
        (json!({"keys": [off_curve]}), "P-256"),
        (json!({"keys": [short_x]}), "32 bytes"),
        (json!({"keys": [padded]}), "`e`"),
        (json!({"keys": [even_e]}), "exponent"),
        (json!({"keys": [mismatched_alg]}), "`alg`"),
        (json!({"keys": [weak_ed]}), "small order"),
        (
            json!({"keys": [ec_jwk(&k.ec, "same"), ed_jwk(&k.ed, "same")]}),
            "duplicate kid",
        ),
        (json!({"keys": [{"crv": "P-256"}]}), "`kty`"),
        (json!({"keys": ["not a key"]}), "not an object"),
        (json!({"keys": {}}), "not an array"),
        (json!({"kty": "EC"}), "missing `keys`"),
        (json!([1]), "not a JSON object"),
    ];
    for (jwks, needle) in cases {
        let err = jwks_error(jwks.clone());
        assert!(err.contains(needle), "{jwks}: {err}");
    }
}

#[test]
fn duplicate_members_in_a_key_set_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let jwk = ec_jwk(&k.ec, "ec-1").to_string();
    let dup = jwk.replacen('{', r#"{"kty":"RSA","#, 1);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, format!(r#"{{"keys":[{dup}]}}"#)).unwrap();
    let config = IssuerConfig::new(ISS, vec![AUD.to_owned()], JwksSource::File(path));
    assert!(matches!(
        Verifier::new(vec![config]),
        Err(ConfigError::Jwks { .. })
    ));
}

#[test]
fn missing_key_file_is_refused() {
    let config = IssuerConfig::new(
        ISS,
        vec![AUD.to_owned()],
        JwksSource::File("/nonexistent/jwks.json".into()),
    );
    assert!(matches!(
        Verifier::new(vec![config]),
        Err(ConfigError::Jwks { .. })
    ));
}

#[test]
fn bad_issuer_settings_are_refused() {
    let invalid = |tweak: fn(&mut IssuerConfig)| {
        matches!(
            try_fixture(&main_jwks(), tweak),
            Err(ConfigError::Invalid { .. })
        )
    };
    assert!(invalid(|c| c.audiences.clear()));
    assert!(invalid(|c| c.audiences = vec![String::new()]));
    assert!(invalid(|c| c.algorithms.clear()));
    assert!(invalid(|c| c.leeway = Duration::from_secs(301)));
    assert!(invalid(|c| c.issuer.clear()));
    assert!(invalid(|c| c.agent_claim.clear()));
    assert!(invalid(
        |c| c.jwks = JwksSource::Url("file:///etc/passwd".to_owned())
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = write_jwks(&dir, "jwks.json", &main_jwks());
    let one = IssuerConfig::new(ISS, vec![AUD.to_owned()], JwksSource::File(path));
    assert!(matches!(
        Verifier::new(vec![one.clone(), one]),
        Err(ConfigError::Invalid { .. })
    ));
}

#[test]
fn several_issuers_keep_their_keys_apart() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let a = write_jwks(&dir, "a.json", &json!({"keys": [ec_jwk(&k.ec, "ec-1")]}));
    let b = write_jwks(
        &dir,
        "b.json",
        &json!({"keys": [ec_jwk(&k.ec_other, "ec-1")]}),
    );
    let verifier = Verifier::new(vec![
        IssuerConfig::new("https://a", vec![AUD.to_owned()], JwksSource::File(a)),
        IssuerConfig::new(
            "https://b",
            vec!["other-aud".to_owned()],
            JwksSource::File(b),
        ),
    ])
    .unwrap();
    let for_a = with(claims(), json!({"iss": "https://a"}));
    let for_b = with(claims(), json!({"iss": "https://b", "aud": "other-aud"}));
    assert!(
        verifier
            .verify(&token_with(es256(), Some("ec-1"), &for_a), now())
            .is_ok()
    );
    // A's key does not sign for B, and B's audience is not A's.
    assert_eq!(
        verifier.verify(&token_with(es256(), Some("ec-1"), &for_b), now()),
        Err(JwtError::BadSignature)
    );
    let b_signer = Signer::Es(&k.ec_other);
    assert!(
        verifier
            .verify(&token_with(b_signer, Some("ec-1"), &for_b), now())
            .is_ok()
    );
    let a_aud_at_b = with(for_b.clone(), json!({"aud": AUD}));
    assert_eq!(
        verifier.verify(&token_with(b_signer, Some("ec-1"), &a_aud_at_b), now()),
        Err(JwtError::WrongAudience)
    );
    let mut names: Vec<&str> = verifier.issuers().collect();
    names.sort_unstable();
    assert_eq!(names, ["https://a", "https://b"]);
}

#[test]
fn issuer_file_loads_and_verifies_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    write_jwks(&dir, "keys/idp.json", &main_jwks());
    let config_path = dir.path().join("issuers.json");
    std::fs::write(
        &config_path,
        json!({"issuers": [{
            "issuer": ISS,
            "audiences": ["x", AUD],
            "jwks_file": "keys/idp.json",
            "agent_claim": "sub",
            "algorithms": ["ES256", "PS256"],
            "leeway_seconds": 5
        }]})
        .to_string(),
    )
    .unwrap();
    let issuers = arbiter_jwt::load_issuers(&config_path).unwrap();
    assert_eq!(issuers[0].leeway, Duration::from_secs(5));
    let verifier = Verifier::new(issuers).unwrap();
    let t = token_with(es256(), Some("ec-1"), &claims());
    assert!(verifier.verify(&t, now()).is_ok());
    assert_eq!(verifier.verify(&t, at(605)), Err(JwtError::Expired));
    assert!(matches!(
        verifier.verify(&good_token(), now()),
        Err(JwtError::UnsupportedAlgorithm(_))
    ));

    std::fs::write(
        &config_path,
        r#"{"issuers":[{"issuer":"i","audience":["a"]}]}"#,
    )
    .unwrap();
    let err = arbiter_jwt::load_issuers(&config_path).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains("`audience`"), "{err}");
    assert!(matches!(
        arbiter_jwt::load_issuers(&dir.path().join("missing.json")),
        Err(ConfigError::Io { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Key sets from a URL
// ---------------------------------------------------------------------------------------

/// A one-request-per-connection HTTP server on the loopback interface.
struct JwksServer {
    addr: SocketAddr,
    response: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    fn start(status: u16, body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let response = Arc::new(Mutex::new((status, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (response, hits, stop) = (response.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (status, body) = response.lock().unwrap().clone();
                    serve(stream, status, &body, &hits);
                }
            })
        };
        JwksServer {
            addr,
            response,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn set(&self, status: u16, body: String) {
        *self.response.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, status: u16, body: &str, hits: &AtomicUsize) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let location = if status / 100 == 3 {
        "Location: http://127.0.0.1:1/elsewhere\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn url_verifier(server: &JwksServer) -> Result<Verifier, ConfigError> {
    let mut config = IssuerConfig::new(ISS, vec![AUD.to_owned()], JwksSource::Url(server.url()));
    config.algorithms = Algorithm::ALL.to_vec();
    Verifier::new(vec![config])
}

#[test]
fn jwks_url_is_fetched_and_refetched_on_rotation_at_most_every_30_s() {
    let k = keys();
    let server = JwksServer::start(200, json!({"keys": [ec_jwk(&k.ec, "ec-1")]}).to_string());
    let verifier = url_verifier(&server).unwrap();
    assert_eq!(server.hits(), 1);
    assert!(
        verifier
            .verify(&token_with(es256(), Some("ec-1"), &claims()), now())
            .is_ok()
    );
    assert_eq!(server.hits(), 1, "a known kid needs no fetch");

    // Rotation: the issuer publishes a new key and starts using it.
    server.set(
        200,
        json!({"keys": [ec_jwk(&k.ec, "ec-1"), ed_jwk(&k.ed, "ed-2")]}).to_string(),
    );
    let rotated = token_with(eddsa(), Some("ed-2"), &claims());
    let v = verifier.verify(&rotated, now()).unwrap();
    assert_eq!(v.key_id.as_deref(), Some("ed-2"));
    assert_eq!(server.hits(), 2);
    assert_eq!(verifier.key_count(ISS), Some(2));

    // Another unknown kid within 30 s: no fetch, refused.
    let unknown = token_with(es256(), Some("ec-9"), &claims());
    assert_eq!(verifier.verify(&unknown, at(10)), Err(JwtError::UnknownKid));
    assert_eq!(verifier.verify(&unknown, at(29)), Err(JwtError::UnknownKid));
    assert_eq!(server.hits(), 2);
    // 30 s later one more fetch is allowed; the kid is still unknown.
    assert_eq!(verifier.verify(&unknown, at(30)), Err(JwtError::UnknownKid));
    assert_eq!(server.hits(), 3);
    assert_eq!(verifier.verify(&unknown, at(31)), Err(JwtError::UnknownKid));
    assert_eq!(server.hits(), 3);
}

/// `verify_cached` makes no request: it says exactly when `verify` would fetch, and
/// otherwise answers what `verify` answers.
#[test]
fn verify_cached_never_fetches_and_says_when_a_fetch_is_due() {
    let k = keys();
    let server = JwksServer::start(200, json!({"keys": [ec_jwk(&k.ec, "ec-1")]}).to_string());
    let verifier = url_verifier(&server).unwrap();
    assert_eq!(server.hits(), 1);
    let known = token_with(es256(), Some("ec-1"), &claims());
    assert_eq!(
        verifier.verify_cached(&known, now()),
        Ok(verifier.verify(&known, now()))
    );
    assert!(verifier.verify_cached(&known, now()).unwrap().is_ok());

    server.set(
        200,
        json!({"keys": [ec_jwk(&k.ec, "ec-1"), ed_jwk(&k.ed, "ed-2")]}).to_string(),
    );
    let rotated = token_with(eddsa(), Some("ed-2"), &claims());
    assert_eq!(verifier.verify_cached(&rotated, now()), Err(NeedsFetch));
    assert_eq!(verifier.verify_cached(&rotated, now()), Err(NeedsFetch));
    assert_eq!(server.hits(), 1, "verify_cached made a request");
    // `verify` makes the fetch; then the key is held.
    assert!(verifier.verify(&rotated, now()).is_ok());
    assert_eq!(server.hits(), 2);
    assert!(verifier.verify_cached(&rotated, now()).unwrap().is_ok());

    // Within the refetch interval no fetch would be made: the refusal is the answer.
    let unknown = token_with(es256(), Some("ec-9"), &claims());
    assert_eq!(
        verifier.verify_cached(&unknown, at(29)),
        Ok(Err(JwtError::UnknownKid))
    );
    assert_eq!(verifier.verify_cached(&unknown, at(30)), Err(NeedsFetch));
    // A token refused before its key is looked up needs no fetch either.
    let mut foreign = claims();
    foreign["iss"] = json!("https://other.example.com");
    assert_eq!(
        verifier.verify_cached(&token_with(es256(), Some("ec-9"), &foreign), at(30)),
        Ok(Err(JwtError::UnknownIssuer))
    );
    assert_eq!(server.hits(), 2);
}

#[test]
fn failed_refetch_keeps_the_cached_keys() {
    let k = keys();
    let server = JwksServer::start(200, json!({"keys": [ec_jwk(&k.ec, "ec-1")]}).to_string());
    let verifier = url_verifier(&server).unwrap();
    server.set(500, "oops".to_owned());
    let unknown = token_with(es256(), Some("ec-9"), &claims());
    assert!(matches!(
        verifier.verify(&unknown, now()),
        Err(JwtError::Jwks(_))
    ));
    assert_eq!(server.hits(), 2);
    assert!(
        verifier
            .verify(&token_with(es256(), Some("ec-1"), &claims()), now())
            .is_ok()
    );
    // A set without usable keys does not replace the cached one either.
    server.set(200, json!({"keys": []}).to_string());
    assert!(matches!(
        verifier.verify(&unknown, at(60)),
        Err(JwtError::Jwks(_))
    ));
    assert!(
        verifier
            .verify(&token_with(es256(), Some("ec-1"), &claims()), at(60))
            .is_ok()
    );
}

#[test]
fn file_key_sets_are_not_reloaded_on_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let path = write_jwks(&dir, "jwks.json", &json!({"keys": [ec_jwk(&k.ec, "ec-1")]}));
    let verifier = Verifier::new(vec![IssuerConfig::new(
        ISS,
        vec![AUD.to_owned()],
        JwksSource::File(path.clone()),
    )])
    .unwrap();
    write_jwks(&dir, "jwks.json", &json!({"keys": [ed_jwk(&k.ed, "ed-2")]}));
    let t = token_with(eddsa(), Some("ed-2"), &claims());
    assert_eq!(verifier.verify(&t, at(100)), Err(JwtError::UnknownKid));
    assert_eq!(
        verifier.verify_cached(&t, at(100)),
        Ok(Err(JwtError::UnknownKid))
    );
}

#[test]
fn unreachable_jwks_url_fails_construction() {
    // A port nothing listens on, for the whole test.
    let closed = arbiter_testkit::ClosedPort::new();
    let config = IssuerConfig::new(
        ISS,
        vec![AUD.to_owned()],
        JwksSource::Url(format!("http://{}/jwks.json", closed.addr())),
    );
    assert!(matches!(
        Verifier::new(vec![config]),
        Err(ConfigError::Jwks { .. })
    ));
}

#[test]
fn bad_jwks_answers_fail_construction() {
    let k = keys();
    let good = json!({"keys": [ec_jwk(&k.ec, "ec-1")]}).to_string();
    let oversized = format!(
        r#"{{"keys":[{}],"pad":"{}"}}"#,
        ec_jwk(&k.ec, "ec-1"),
        "x".repeat(1 << 20)
    );
    for (status, body, needle) in [
        (404, good.clone(), "404"),
        (302, good.clone(), "302"),
        (204, String::new(), "204"),
        (200, oversized, "read"),
        (200, "<html>".to_owned(), "not a JWKS"),
    ] {
        let server = JwksServer::start(status, body);
        match url_verifier(&server) {
            Err(e @ ConfigError::Jwks { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{status}: {msg}");
            }
            Err(other) => panic!("{status}: {other}"),
            Ok(_) => panic!("{status}: accepted"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Valid tokens of every key type, for mutation.
fn valid_tokens() -> &'static [String] {
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let delegated = with(claims(), json!({"sub": "alice", "act": {"sub": "agent"}}));
        let t = vec![
            good_token(),
            token_with(
                Signer::Ps(Algorithm::PS256, &keys().rsa_b),
                Some("rsa-b"),
                &claims(),
            ),
            token_with(es256(), Some("ec-1"), &claims()),
            token_with(eddsa(), None, &delegated),
        ];
        for token in &t {
            assert!(verify(token).is_ok());
        }
        t
    })
}

const TOKEN_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n\0";

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!(NOW_SECS + 100)),
        Just(json!(AUD)),
        Just(json!(ISS)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![Just("sub".to_owned()), Just("act".to_owned()), "[a-z]{1,3}"],
                    inner
                ),
                0..4
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_never_verify(s in any::<String>()) {
        prop_assert!(verify(&s).is_err());
        let _ = Verifier::looks_like_jwt(&s);
    }

    #[test]
    fn token_shaped_noise_never_verifies(s in "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,90}") {
        prop_assert!(verify(&s).is_err());
    }

    #[test]
    fn mutated_tokens_never_verify(
        which in 0usize..4,
        pos in any::<prop::sample::Index>(),
        replacement in prop::sample::select(TOKEN_CHARS),
    ) {
        let token = &valid_tokens()[which];
        let i = pos.index(token.len());
        prop_assume!(token.as_bytes()[i] != replacement);
        let mut bytes = token.clone().into_bytes();
        bytes[i] = replacement;
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(verify(&mutated).is_err());
    }

    #[test]
    fn truncated_or_extended_tokens_never_verify(
        which in 0usize..4,
        pos in any::<prop::sample::Index>(),
        extra in prop::sample::select(TOKEN_CHARS),
    ) {
        let token = &valid_tokens()[which];
        let i = pos.index(token.len());
        prop_assert!(verify(&token[..i]).is_err());
        let mut extended = token.clone();
        extended.insert(i, extra as char);
        prop_assert!(verify(&extended).is_err());
    }

    #[test]
    fn validly_signed_arbitrary_claims_never_panic(
        aud in json_value(), exp in json_value(), sub in json_value(), act in json_value(),
        nbf in json_value(),
    ) {
        let payload = json!({"iss": ISS, "aud": aud, "exp": exp, "sub": sub, "act": act, "nbf": nbf});
        if let Ok(v) = verify(&token_with(es256(), Some("ec-1"), &payload)) {
            prop_assert!(!v.agent_id.is_empty() && v.agent_id.len() <= 256);
            prop_assert!(v.on_behalf_of.is_some());
            prop_assert_eq!(Some(&v.agent_id), v.actor_chain.first());
        }
    }
}
