//! Any bytes as an agent's JWT (as is when valid UTF-8, and base64url-encoded as its
//! header and payload), verified against one issuer with one Ed25519 key: verification
//! never panics and never succeeds (the private key is not used here, so no input can
//! carry a valid signature), and the shape test never panics.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use arbiter_jwt::{IssuerConfig, JwksSource, Verifier};
use libfuzzer_sys::fuzz_target;

/// Unpadded base64url.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let public = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"fuzz","x":"{}"}}]}}"#,
            b64url(public.as_bytes())
        );
        let path =
            std::env::temp_dir().join(format!("arbiter-fuzz-jwks-{}.json", std::process::id()));
        std::fs::write(&path, jwks).expect("write the JWKS file");
        let issuer = IssuerConfig::new(
            "https://issuer.example",
            vec!["arbiter".into()],
            JwksSource::File(path.clone()),
        );
        let verifier = Verifier::new(vec![issuer]).expect("the fuzz verifier builds");
        // The key set is read once, when the verifier is built.
        let _ = std::fs::remove_file(&path);
        verifier
    })
}

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = Verifier::looks_like_jwt(token);
        assert!(
            verifier().verify(token, now).is_err(),
            "a token verified without the private key"
        );
    }
    // The same bytes as the decoded header and payload (split at the first newline) of a
    // well-encoded token, so the JSON and header checks are reached without the fuzzer
    // having to discover base64url first. The signature is not made with the key.
    let (header, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    if header.is_empty() || payload.is_empty() {
        return;
    }
    let token = format!(
        "{}.{}.{}",
        b64url(header),
        b64url(payload),
        b64url(&[1; 64])
    );
    let _ = Verifier::looks_like_jwt(&token);
    assert!(
        verifier().verify(&token, now).is_err(),
        "a token verified without the private key"
    );
});
