//! Any bytes (lossily as UTF-8) as a presented credential: the Arbiter secret parser, the
//! shape classifier and the keyed fingerprint never panic, agree with each other, and the
//! fingerprint never carries the credential.
#![no_main]

use arbiter_identity::keys::BODY_LEN;
use arbiter_identity::shape::SHAPES;
use arbiter_identity::{FingerprintKey, SecretKind, classify, fingerprint, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;

    let shape = classify(text);
    assert!(
        SHAPES.contains(&shape),
        "classify returned an unlisted shape"
    );

    match parse(text) {
        Ok(secret) => {
            let kind = secret.kind;
            assert!(
                SecretKind::ALL.iter().any(|k| text.starts_with(k.prefix())),
                "parsed text without an Arbiter prefix"
            );
            assert!(
                text.starts_with(kind.prefix()),
                "parsed kind does not match the prefix"
            );
            assert_eq!(
                text.len(),
                kind.prefix().len() + BODY_LEN,
                "parsed text of the wrong length"
            );
            assert_eq!(text.len(), kind.text_len());
            assert_eq!(secret.lookup.len(), 10);
            assert_eq!(
                secret.credential_id,
                format!("{}{}", kind.credential_id_prefix(), secret.lookup)
            );
            assert_eq!(shape, kind.shape_name(), "classify disagrees with parse");
        }
        Err(_) => {
            assert!(
                !SecretKind::ALL.iter().any(|k| shape == k.shape_name()),
                "classify accepts what parse refuses"
            );
        }
    }

    let key = FingerprintKey::from_bytes([7; 32]);
    let fp = fingerprint(&key, text);
    assert!(
        fp.starts_with("fp_") && fp.len() == 23,
        "fingerprint of an unexpected form"
    );
    assert_eq!(fp, fingerprint(&key, text), "fingerprint is not stable");
    // A 9-byte input inside a 23-byte keyed hash would take a chance match of at least
    // 24 bits of HMAC output.
    if text.len() > 8 {
        assert!(!fp.contains(text), "fingerprint contains the credential");
    }
});
