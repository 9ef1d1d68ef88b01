//! Arbiter's credential formats, shapes, fingerprints and access-log
//! discovery, through the public API only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufReader, Cursor};
use std::path::PathBuf;

use arbiter_identity::discover::{MAX_LINE_LEN, MAX_MALFORMED_EXAMPLES};
use arbiter_identity::shape::SHAPES;
use arbiter_identity::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// An independent implementation of the checksum, as a secret scanner would
/// write it from the README.
fn scanner_accepts(text: &str) -> bool {
    let Some(prefix) = ["arbadm_", "arbpep_", "arb_"]
        .into_iter()
        .find(|p| text.starts_with(p))
    else {
        return false;
    };
    let body = &text[prefix.len()..];
    if body.len() != 48 || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (signed, checksum) = text.split_at(text.len() - 6);
    let mut value = u64::from(crc32fast::hash(signed.as_bytes()));
    let mut expected = [b'0'; 6];
    for slot in expected.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    checksum.as_bytes() == expected
}

/// Replaces the secret part of `text` and recomputes the checksum.
fn with_secret(text: &str, secret: &str) -> String {
    let prefix_len = text.len() - 48;
    let mut out = format!("{}{}", &text[..prefix_len + 10], secret);
    let mut value = u64::from(crc32fast::hash(out.as_bytes()));
    let mut checksum = [b'0'; 6];
    for slot in checksum.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out.push_str(std::str::from_utf8(&checksum).unwrap());
    out
}

// ------------------------------------------------------------------ keys

#[test]
fn issued_secrets_round_trip() {
    for kind in SecretKind::ALL {
        let issued = issue(kind).unwrap();
        let text = issued.expose();
        assert!(text.starts_with(kind.prefix()));
        assert_eq!(text.len(), kind.prefix().len() + 48);
        assert!(scanner_accepts(text));
        assert_eq!(
            issued.lookup,
            &text[kind.prefix().len()..kind.prefix().len() + 10]
        );
        assert_eq!(
            issued.credential_id,
            format!("{}{}", kind.credential_id_prefix(), issued.lookup)
        );

        let presented = parse(text).unwrap();
        assert_eq!(presented.kind, kind);
        assert_eq!(presented.lookup, issued.lookup);
        assert_eq!(presented.credential_id, issued.credential_id);
        assert_eq!(hash(&presented), issued.hash);
        assert!(verify(&presented, &issued.hash));
    }
    assert_eq!(SecretKind::AgentKey.credential_id_prefix(), "key_");
    assert_eq!(SecretKind::AdminToken.credential_id_prefix(), "adm_");
    assert_eq!(SecretKind::PepToken.credential_id_prefix(), "pep_");
}

#[test]
fn hash_is_domain_separated_sha256_of_the_full_text() {
    let issued = issue(SecretKind::AgentKey).unwrap();
    let mut hasher = Sha256::new();
    hasher.update(b"arbiter-secret-v1\0");
    hasher.update(issued.expose().as_bytes());
    assert_eq!(
        issued.hash,
        format!("sha256:{}", hex::encode(hasher.finalize()))
    );
}

#[test]
fn verify_rejects_a_different_key_with_the_same_lookup() {
    let issued = issue(SecretKind::AgentKey).unwrap();
    let forged = with_secret(issued.expose(), &"A".repeat(32));
    let presented = parse(&forged).unwrap();
    assert_eq!(presented.lookup, issued.lookup);
    assert!(!verify(&presented, &issued.hash));
}

#[test]
fn verify_rejects_malformed_stored_hashes() {
    let issued = issue(SecretKind::PepToken).unwrap();
    let presented = parse(issued.expose()).unwrap();
    let digest = issued.hash.strip_prefix("sha256:").unwrap();
    for stored in [
        String::new(),
        "sha256:".to_owned(),
        digest.to_owned(),
        format!("SHA256:{digest}"),
        format!("sha512:{digest}"),
        format!("sha256:{}", &digest[..63]),
        format!("sha256:{digest}0"),
        format!("sha256:{digest}00"),
        format!("sha256:{}zz", &digest[..62]),
        format!("sha256: {digest}"),
    ] {
        assert!(!verify(&presented, &stored), "{stored}");
    }
}

#[test]
fn parse_errors_are_distinct_and_never_echo_the_input() {
    let issued = issue(SecretKind::AdminToken).unwrap();
    let text = issued.expose();
    let cases: Vec<(String, KeyFormatError)> = vec![
        ("Bearer xyz".to_owned(), KeyFormatError::UnknownPrefix),
        (String::new(), KeyFormatError::UnknownPrefix),
        (
            text.replacen("arbadm_", "arbxdm_", 1),
            KeyFormatError::UnknownPrefix,
        ),
        (
            text[..text.len() - 1].to_owned(),
            KeyFormatError::Length {
                kind: SecretKind::AdminToken,
                expected: 55,
                found: 54,
            },
        ),
        (
            format!("{text}0"),
            KeyFormatError::Length {
                kind: SecretKind::AdminToken,
                expected: 55,
                found: 56,
            },
        ),
        (
            format!("{}-{}", &text[..20], &text[21..]),
            KeyFormatError::Charset {
                kind: SecretKind::AdminToken,
            },
        ),
        (
            format!("{}é{}", &text[..20], &text[22..]),
            KeyFormatError::Charset {
                kind: SecretKind::AdminToken,
            },
        ),
        (
            {
                let mut wrong = with_secret(text, &"B".repeat(32));
                let right = wrong.split_off(wrong.len() - 6);
                wrong.push_str(if right == "000000" {
                    "000001"
                } else {
                    "000000"
                });
                wrong
            },
            KeyFormatError::Checksum {
                kind: SecretKind::AdminToken,
            },
        ),
        // The prefix is covered by the checksum: relabelling the body of an
        // admin token as an agent key does not give a valid agent key.
        (
            format!("arb_{}", &text[7..]),
            KeyFormatError::Checksum {
                kind: SecretKind::AgentKey,
            },
        ),
    ];
    for (input, want) in cases {
        let err = parse(&input).unwrap_err();
        assert_eq!(err, want);
        let message = err.to_string();
        assert!(!message.contains(&issued.lookup), "{message}");
        if let Some(window) = input.get(7..15) {
            assert!(!message.contains(window), "{message}");
        }
    }
}

#[test]
fn debug_never_shows_the_secret() {
    for kind in SecretKind::ALL {
        let issued = issue(kind).unwrap();
        let secret_part = &issued.expose()[kind.prefix().len() + 10..];
        let shown = format!("{issued:?} {issued:#?}");
        assert!(!shown.contains(secret_part), "{shown}");
        assert!(shown.contains("[redacted]"));
        let presented = parse(issued.expose()).unwrap();
        let shown = format!("{presented:?} {:?}", presented.clone());
        assert!(!shown.contains(secret_part), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}

#[test]
fn issued_characters_are_roughly_uniform() {
    const KEYS: usize = 2000;
    let mut lookup = BTreeMap::<u8, usize>::new();
    let mut secret = BTreeMap::<u8, usize>::new();
    for _ in 0..KEYS {
        let issued = issue(SecretKind::AgentKey).unwrap();
        let body = &issued.expose().as_bytes()[4..];
        for &b in &body[..10] {
            *lookup.entry(b).or_default() += 1;
        }
        for &b in &body[10..42] {
            *secret.entry(b).or_default() += 1;
        }
    }
    // Expected 1032 per character in the secret part (sd ≈ 32) and 322 in
    // the lookup part (sd ≈ 18); the bounds are about ten standard
    // deviations wide, while a plain `byte % 62` would put the first eight
    // characters 25% above the rest.
    assert_eq!(secret.len(), 62);
    assert_eq!(lookup.len(), 62);
    let expected = (KEYS * 32) as f64 / 62.0;
    for (c, n) in &secret {
        let ratio = *n as f64 / expected;
        assert!((0.7..1.3).contains(&ratio), "{} {n}", *c as char);
    }
    let expected = (KEYS * 10) as f64 / 62.0;
    for (c, n) in &lookup {
        let ratio = *n as f64 / expected;
        assert!((0.5..1.5).contains(&ratio), "{} {n}", *c as char);
    }
    let first_eight: usize = BASE62[..8].iter().map(|c| secret[c]).sum();
    let last_eight: usize = BASE62[54..].iter().map(|c| secret[c]).sum();
    let skew = first_eight as f64 / last_eight as f64;
    assert!((0.85..1.15).contains(&skew), "{skew}");
}

#[test]
fn issued_secrets_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let issued = issue(SecretKind::AgentKey).unwrap();
        assert!(seen.insert(issued.expose().to_owned()));
    }
}

// ----------------------------------------------------------------- shape

#[test]
fn classify_names_are_documented() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for name in SHAPES {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} missing from README"
        );
    }
}

#[test]
fn classify_issued_and_mistyped_keys() {
    let issued = issue(SecretKind::AgentKey).unwrap();
    assert_eq!(classify(issued.expose()), "arbiter-agent-key");
    let flipped = with_secret(issued.expose(), &"C".repeat(32));
    assert_eq!(classify(&flipped), "arbiter-agent-key");
    let mut typo = flipped.clone().into_bytes();
    typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
    assert_eq!(
        classify(std::str::from_utf8(&typo).unwrap()),
        "arbiter-malformed-key"
    );
    assert_eq!(classify(&"a".repeat(1 << 20)), "oversized");
}

#[test]
fn fingerprint_key_file_is_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fingerprint.key");
    let key = FingerprintKey::load_or_create(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert!(
        text[..64]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = FingerprintKey::load_or_create(&path).unwrap();
    assert_eq!(
        fingerprint(&key, "some-credential"),
        fingerprint(&again, "some-credential")
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&text[..64], &mut bytes).unwrap();
    let from_bytes = FingerprintKey::from_bytes(bytes);
    assert_eq!(fingerprint(&key, "x"), fingerprint(&from_bytes, "x"));
    assert!(!format!("{key:?}").contains(&text[..8]));

    let other = FingerprintKey::generate().unwrap();
    assert_ne!(fingerprint(&key, "x"), fingerprint(&other, "x"));
}

#[test]
fn fingerprint_key_file_with_wrong_content_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = "ab".repeat(32);
    for (name, content) in [
        ("short", format!("{}\n", &good[..62])),
        ("no-newline", good.clone()),
        ("crlf", format!("{}\r\n", &good[..63])),
        ("uppercase", format!("{}\n", good.to_uppercase())),
        ("not-hex", format!("{}zz\n", &good[..62])),
        ("long", format!("{good}\n\n")),
        ("empty", String::new()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &content).unwrap();
        let err = FingerprintKey::load_or_create(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{name}");
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            content,
            "{name} was changed"
        );
    }
    let err = FingerprintKey::load_or_create(dir.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let missing = dir.path().join("no-such-dir/fingerprint.key");
    let err = FingerprintKey::load_or_create(&missing).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

// -------------------------------------------------------------- discover

fn scan(text: &str, format: LogFormat, hosts: &HostList) -> ScanReport {
    scan_access_log(Cursor::new(text.as_bytes()), format, hosts).unwrap()
}

#[test]
fn combined_log() {
    let text = std::fs::read_to_string(data("combined.log")).unwrap();
    let report = scan(&text, LogFormat::Combined, &HostList::default());
    assert_eq!(report.lines, 15);
    assert_eq!(report.matched, 9);
    assert_eq!(report.skipped_malformed, 2);
    assert_eq!(
        report
            .first_malformed_lines
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        vec![10, 13]
    );
    let summary: Vec<(&str, Option<&str>, &str, &str, u64)> = report
        .usages
        .iter()
        .map(|u| {
            (
                u.source.as_str(),
                u.remote_user.as_deref(),
                u.host.as_str(),
                u.provider.as_str(),
                u.requests,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("10.1.2.3", None, "api.openai.com", "openai", 3),
            (
                "10.1.2.7",
                Some("alice"),
                "api.anthropic.com",
                "anthropic",
                2
            ),
            ("192.168.4.20", None, "api.groq.com", "groq", 2),
            (
                "10.1.2.11",
                None,
                "us-central1-aiplatform.googleapis.com",
                "google-vertex-ai",
                1
            ),
            (
                "10.1.2.3",
                None,
                "bedrock-runtime.us-east-1.amazonaws.com",
                "aws-bedrock",
                1
            ),
        ]
    );
    let openai = &report.usages[0];
    assert_eq!(openai.first_seen, "10/Oct/2025:13:55:36 +0000");
    assert_eq!(openai.last_seen, "10/Oct/2025:14:00:00 +0000");
    assert_eq!(openai.statuses, BTreeMap::from([(200, 2), (502, 1)]));
    assert_eq!(
        openai.user_agents,
        vec!["OpenAI/Python 1.51.0", "python-httpx/0.27.0 \"quoted\""]
    );
    assert_eq!(
        report.usages[1].statuses,
        BTreeMap::from([(200, 1), (429, 1)])
    );

    // Nothing from the request line but the host is kept.
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("DO-NOT-KEEP"));
    assert!(!json.contains("/v1/"));

    // Auto detection gives the same result.
    assert_eq!(scan(&text, LogFormat::Auto, &HostList::default()), report);
}

#[test]
fn json_lines_log() {
    let text = std::fs::read_to_string(data("access.jsonl")).unwrap();
    let report = scan(&text, LogFormat::JsonLines, &HostList::default());
    assert_eq!(report.lines, 10);
    assert_eq!(report.matched, 4);
    assert_eq!(report.skipped_malformed, 4);
    assert_eq!(
        report
            .first_malformed_lines
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        vec![4, 5, 6, 10]
    );
    assert!(report.first_malformed_lines[2].1.contains("client address"));
    let azure = &report.usages[0];
    assert_eq!(azure.source, "10.2.0.6");
    assert_eq!(azure.host, "contoso.openai.azure.com");
    assert_eq!(azure.provider, "azure-openai");
    assert_eq!(azure.requests, 2);
    assert_eq!(azure.first_seen, "1728568536.25");
    assert_eq!(azure.last_seen, "2025-10-10T13:55:37Z");
    assert_eq!(azure.user_agents, vec!["AzureOpenAI/Python 1.51.0"]);
    let mistral = report
        .usages
        .iter()
        .find(|u| u.provider == "mistral")
        .unwrap();
    assert_eq!(mistral.source, "10.2.0.5");
    assert_eq!(mistral.remote_user, None);
    assert_eq!(mistral.statuses, BTreeMap::from([(200, 1)]));
    let xai = report.usages.iter().find(|u| u.provider == "xai").unwrap();
    assert_eq!(xai.remote_user.as_deref(), Some("svc-batch"));
    assert_eq!(xai.host, "api.x.ai");
    assert_eq!(xai.statuses, BTreeMap::from([(503, 1)]));
    // Auto mode reads `[1,2,3]` as a (malformed) combined line.
    let auto = scan(&text, LogFormat::Auto, &HostList::default());
    assert_eq!(auto.usages, report.usages);
    assert_eq!(auto.skipped_malformed, report.skipped_malformed);

    // Read as combined, every non-blank line is malformed.
    let as_combined = scan(&text, LogFormat::Combined, &HostList::default());
    assert_eq!(as_combined.skipped_malformed, 10);
    assert_eq!(
        as_combined.first_malformed_lines.len(),
        MAX_MALFORMED_EXAMPLES
    );
}

#[test]
fn mixed_log_in_auto_mode() {
    let combined = std::fs::read_to_string(data("combined.log")).unwrap();
    let json = std::fs::read_to_string(data("access.jsonl")).unwrap();
    let report = scan(
        &format!("{json}{combined}"),
        LogFormat::Auto,
        &HostList::default(),
    );
    assert_eq!(report.lines, 25);
    assert_eq!(report.matched, 13);
    assert_eq!(report.skipped_malformed, 6);
    assert_eq!(report.first_malformed_lines[4].0, 20);
}

#[test]
fn json_host_fields_and_byte_order_mark() {
    let log = "\u{feff}{\"remote_addr\":\"10.6.0.1\",\"host\":\"https://api.openai.com/v1\"}\n\
{\"remote_addr\":\"10.6.0.1\",\"server_name\":\"API.OPENAI.COM:443\",\"host\":\"-\"}\n\
{\"remote_addr\":\"10.6.0.1\",\"host\":\"\",\"request\":\"GET https://api.openai.com/v1 HTTP/1.1\"}\n\
{\"remote_addr\":\"10.6.0.1\",\"host\":\"intranet.example\",\"url\":\"https://api.openai.com/v1\"}\n";
    let report = scan(log, LogFormat::Auto, &HostList::default());
    assert_eq!(report.skipped_malformed, 0, "{report:?}");
    assert_eq!(report.matched, 3);
    assert_eq!(report.usages[0].host, "api.openai.com");
    assert_eq!(report.usages[0].first_seen, "-");
}

#[test]
fn custom_host_file() {
    let hosts = HostList::from_file(&data("hosts.txt")).unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(
        hosts.matches("LLM-GW.corp.example:8443"),
        Some("corp-gateway")
    );
    assert_eq!(
        hosts.matches("gpu7.inference.corp.example"),
        Some("corp-inference")
    );
    assert_eq!(hosts.matches("a.gpu7.inference.corp.example"), None);
    assert_eq!(hosts.matches("api.anthropic.com"), None);

    let log = "\
10.3.0.1 - - [10/Oct/2025:13:55:36 +0000] \"CONNECT llm-gw.corp.example:443 HTTP/1.1\" 200 1 \"-\" \"svc/1\"
10.3.0.2 - - [10/Oct/2025:13:55:37 +0000] \"POST https://gpu7.inference.corp.example/v1/completions HTTP/1.1\" 200 1 \"-\" \"svc/2\"
10.3.0.3 - - [10/Oct/2025:13:55:38 +0000] \"CONNECT api.anthropic.com:443 HTTP/1.1\" 200 1 \"-\" \"svc/3\"
";
    let report = scan(log, LogFormat::Auto, &hosts);
    let providers: Vec<&str> = report.usages.iter().map(|u| u.provider.as_str()).collect();
    assert_eq!(providers, vec!["corp-gateway", "corp-inference"]);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-hosts.txt");
    std::fs::write(&bad, "ok.example\nnot a valid line\n").unwrap();
    let err = HostList::from_file(&bad).unwrap_err();
    assert!(
        matches!(err, HostListError::InvalidFile { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("bad-hosts.txt"), "{err}");
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
    assert!(matches!(
        HostList::from_file(&big),
        Err(HostListError::TooLarge { .. })
    ));
    assert!(matches!(
        HostList::from_file(&dir.path().join("missing")),
        Err(HostListError::Io { .. })
    ));
}

#[test]
fn one_mebibyte_line_is_skipped_and_scanning_continues() {
    let good = "10.4.0.1 - - [10/Oct/2025:13:55:36 +0000] \"CONNECT api.openai.com:443 HTTP/1.1\" 200 1 \"-\" \"a\"\n";
    let mut log = String::from(good);
    log.push_str("10.4.0.2 - - [10/Oct/2025:13:55:36 +0000] \"CONNECT api.openai.com:443 HTTP/1.1\" 200 1 \"-\" \"");
    log.push_str(&"x".repeat(1 << 20));
    log.push_str("\"\n");
    log.push_str(good);
    // A small buffer, so the long line spans many reads.
    let reader = BufReader::with_capacity(512, Cursor::new(log.into_bytes()));
    let report = scan_access_log(reader, LogFormat::Auto, &HostList::default()).unwrap();
    assert_eq!(report.lines, 3);
    assert_eq!(report.matched, 2);
    assert_eq!(report.skipped_malformed, 1);
    assert_eq!(report.first_malformed_lines[0].0, 2);
    assert!(
        report.first_malformed_lines[0]
            .1
            .contains(&MAX_LINE_LEN.to_string())
    );
    assert_eq!(report.usages.len(), 1);
    assert_eq!(report.usages[0].source, "10.4.0.1");
}

#[test]
fn terminal_escapes_in_the_log_are_neutralised() {
    let log = "{\"remote_addr\":\"10.5.0.1\",\"host\":\"api.openai.com\",\"user\":\"a\\u001b]0;pwned\\u0007\",\"user_agent\":\"x\\u202Ey\\u001b[2J\"}\n\
10.5.0.2 - - [10/Oct/2025:13:55:36 +0000] \"CONNECT api.openai.com:443 HTTP/1.1\" 200 1 \"-\" \"\\x1B[31mred\"\n";
    let report = scan(log, LogFormat::Auto, &HostList::default());
    assert_eq!(report.usages.len(), 2);
    let text = render_text(&report, |_| Some("evil\u{1b}[2Jname".to_owned()));
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(!text.contains('\u{202e}'));
    assert!(text.contains("\\u{1b}[31mred"));
}

#[test]
fn unregistered_and_rendering() {
    let text = std::fs::read_to_string(data("combined.log")).unwrap();
    let report = scan(&text, LogFormat::Auto, &HostList::default());
    let registry = |u: &Usage| (u.source == "10.1.2.7").then(|| "support-bot".to_owned());
    let missing = unregistered(&report, registry);
    assert_eq!(missing.len(), 4);
    assert!(missing.iter().all(|u| u.source != "10.1.2.7"));
    assert_eq!(missing[0].host, "api.openai.com");

    let text = render_text(&report, registry);
    assert!(text.starts_with("15 lines read, 9 requests to LLM provider hosts, 2 malformed lines skipped\n5 sources, 4 not registered\n"), "{text}");
    assert!(text.contains(
        "10.1.2.7 (user alice) -> api.anthropic.com [anthropic]  registered as support-bot"
    ));
    assert!(text.contains("10.1.2.3 -> api.openai.com [openai]  NOT REGISTERED\n    3 requests, 10/Oct/2025:13:55:36 +0000 .. 10/Oct/2025:14:00:00 +0000\n    statuses: 200 x2, 502 x1\n"), "{text}");
    assert!(text.contains("line 10: "));

    let json = render_json(&report, registry);
    assert_eq!(json["lines"], 15);
    assert_eq!(json["unregistered"], 4);
    assert_eq!(json["first_malformed_lines"][0]["line"], 10);
    assert_eq!(json["usages"][0]["source"], "10.1.2.3");
    assert_eq!(json["usages"][0]["registered_as"], serde_json::Value::Null);
    assert_eq!(json["usages"][0]["statuses"]["502"], 1);
    assert_eq!(json["usages"][1]["registered_as"], "support-bot");

    // The report itself round-trips through JSON.
    let back: ScanReport = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}

#[test]
fn log_format_names() {
    assert_eq!("auto".parse::<LogFormat>().unwrap(), LogFormat::Auto);
    assert_eq!(
        "combined".parse::<LogFormat>().unwrap(),
        LogFormat::Combined
    );
    assert_eq!("jsonl".parse::<LogFormat>().unwrap(), LogFormat::JsonLines);
    assert!("nginx".parse::<LogFormat>().is_err());
    assert_eq!(LogFormat::JsonLines.to_string(), "json");
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(" ".to_owned()),
        Just("\\".to_owned()),
        Just("\\x2".to_owned()),
        Just("\\x22".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("\"host\":".to_owned()),
        Just("\n".to_owned()),
        Just("-".to_owned()),
        Just("200".to_owned()),
        Just("CONNECT api.openai.com:443 HTTP/1.1".to_owned()),
        Just("https://api.openai.com/".to_owned()),
        Just("10.0.0.1 - - [t] \"GET / HTTP/1.1\" 200 1 \"-\" \"ua\"".to_owned()),
        Just("é".to_owned()),
        "[ -~]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for format in [LogFormat::Auto, LogFormat::Combined, LogFormat::JsonLines] {
            let report = scan_access_log(Cursor::new(&bytes), format, &HostList::default()).unwrap();
            prop_assert!(report.matched + report.skipped_malformed <= report.lines);
        }
        let _ = classify(&String::from_utf8_lossy(&bytes));
        let _ = parse(&String::from_utf8_lossy(&bytes));
        let _ = HostList::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn log_like_input_never_panics(parts in proptest::collection::vec(fragment(), 0..64)) {
        let text = parts.concat();
        for format in [LogFormat::Auto, LogFormat::Combined, LogFormat::JsonLines] {
            let report = scan(&text, format, &HostList::default());
            let requests: u64 = report.usages.iter().map(|u| u.requests).sum();
            prop_assert_eq!(requests + report.overflow_requests, report.matched);
            prop_assert!(report.first_malformed_lines.len() <= MAX_MALFORMED_EXAMPLES);
        }
    }

    #[test]
    fn classify_is_total(text in ".{0,200}") {
        prop_assert!(SHAPES.contains(&classify(&text)));
    }
}
