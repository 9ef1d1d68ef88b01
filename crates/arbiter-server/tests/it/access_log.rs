//! The access log: a JSON line per request, saying who asked and what was decided, and never
//! a credential; a log that cannot be written fails no request.

use std::path::Path;
use std::time::{Duration, Instant};

use arbiter_pdp::IdentitySettings;
use arbiter_server::ServerConfig;
use arbiter_server::access_log::{AccessLog, Target};
use serde_json::{Value, json};

use crate::identity::Fixture;
use crate::support::{Server, policy_dir};

const AGENTS_MAY: &str = "permit (principal is Agent, action, resource);";

/// The lines of the access log once there are at least `n` (polled, with a deadline).
async fn lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Complete lines only: the writer may be half-way through one.
        let lines: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} access log lines, expected {n}: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn decision_ids(reply: &crate::support::Reply) -> Vec<Value> {
    let v = reply.json();
    match v.get("evaluations").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .map(|e| e["context"]["decision_id"].clone())
            .collect(),
        None => vec![v["context"]["decision_id"].clone()],
    }
}

#[tokio::test]
async fn each_request_has_a_line_with_its_caller_and_decisions_and_never_a_credential() {
    let policies = policy_dir(&[("p.cedar", AGENTS_MAY)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let (log, _writer) = AccessLog::open(Target::File(path.clone())).unwrap();
    let f = Fixture::with(
        policies.path(),
        ServerConfig {
            access_log: Some(log),
            ..ServerConfig::default()
        },
        IdentitySettings::default(),
    );
    let key = f.agent_with_key("bot", json!({})).await;
    let before = lines(&path, 2).await.len();
    let server = Server::start(f.state.clone()).await;
    let agent = format!("Bearer {key}");
    let admin = format!("Bearer {}", f.admin);
    let doc = json!({"action": {"name": "read"}, "resource": {"type": "Doc", "id": "d1"}});
    let json_type = ("content-type", "application/json");

    // An agent's evaluation, with the key in the query string too and a request id.
    let one = server
        .request(
            "POST",
            &format!("/access/v1/evaluation?api_key={key}&x=1"),
            &[
                json_type,
                ("authorization", &agent),
                ("x-request-id", "req-1"),
            ],
            doc.to_string().as_bytes(),
        )
        .await;
    assert_eq!(one.status, 200);
    // A batch for a named enforcement point.
    let batch = server
        .request(
            "POST",
            "/access/v1/evaluations",
            &[
                json_type,
                ("authorization", &agent),
                ("x-arbiter-enforcement-point", "exec:build-host"),
            ],
            json!({"evaluations": [doc, doc]}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(batch.status, 200);
    // A credential that is refused: a recorded deny.
    let refused = server
        .request(
            "POST",
            "/access/v1/evaluation",
            &[json_type, ("authorization", "Bearer arb_not-a-key")],
            doc.to_string().as_bytes(),
        )
        .await;
    assert_eq!(refused.status, 200);
    // No authentication at all.
    let health = server.request("GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);
    // An administrator, with a key where an id belongs.
    let odd = server
        .request(
            "GET",
            &format!("/v1/agents/{key}"),
            &[("authorization", &admin)],
            b"",
        )
        .await;
    assert_eq!(odd.status, 404);
    server.stop().await;

    let all = lines(&path, before + 5).await;
    let [one_line, batch_line, refused_line, health_line, odd_line] = &all[before..] else {
        panic!("{all:?}");
    };
    for line in &all[before..] {
        assert!(line["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(line["duration_us"].is_u64(), "{line}");
        assert_eq!(line["remote"], "127.0.0.1", "{line}");
    }
    let credential_id = one_line["caller"]["credential_id"].as_str().unwrap();
    assert!(credential_id.starts_with("key_"), "{one_line}");
    assert_eq!(
        one_line,
        &json!({
            "ts": one_line["ts"], "duration_us": one_line["duration_us"],
            "method": "POST", "path": "/access/v1/evaluation", "status": 200,
            "remote": "127.0.0.1", "request_id": "req-1",
            "caller": {"kind": "agent", "agent_id": "bot", "credential_id": credential_id},
            "enforcement_point": "authzen",
            "decision_ids": decision_ids(&one),
        })
    );
    assert_eq!(batch_line["enforcement_point"], "exec:build-host");
    assert_eq!(batch_line["caller"]["agent_id"], "bot");
    assert_eq!(batch_line["decision_ids"], json!(decision_ids(&batch)));
    assert_eq!(batch_line["decision_ids"].as_array().unwrap().len(), 2);
    assert_eq!(refused_line["caller"]["kind"], "refused");
    assert_eq!(refused_line["decision_ids"], json!(decision_ids(&refused)));
    assert_eq!(health_line["path"], "/healthz");
    assert!(health_line.get("caller").is_none(), "{health_line}");
    assert!(health_line.get("decision_ids").is_none(), "{health_line}");
    assert_eq!(
        odd_line["path"],
        "/v1/agents/[credential:arbiter-agent-key]"
    );
    assert_eq!(odd_line["caller"]["kind"], "admin");
    assert_eq!(odd_line["caller"]["role"], "administrator");
    assert_eq!(odd_line["status"], 404);

    // No credential, anywhere: not the agent's key (nor its secret part), not the admin token.
    let text = std::fs::read_to_string(&path).unwrap();
    let secret_part = key.rsplit('_').next().unwrap();
    for secret in [key.as_str(), secret_part, f.admin.as_str(), "arb_not-a-key"] {
        assert!(
            !text.contains(secret),
            "a credential is in the access log: {text}"
        );
    }
    assert!(
        !text.contains("api_key"),
        "the query string is in the access log"
    );
}

/// A log that cannot be written (here: a full device) fails and delays no request; the lost
/// lines are counted.
#[tokio::test]
async fn a_log_that_cannot_be_written_fails_no_request() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let policies = policy_dir(&[("p.cedar", AGENTS_MAY)]);
    let (log, _writer) = AccessLog::open(Target::File(full.to_path_buf())).unwrap();
    let f = Fixture::with(
        policies.path(),
        ServerConfig {
            access_log: Some(log.clone()),
            ..ServerConfig::default()
        },
        IdentitySettings::default(),
    );
    let key = f.agent_with_key("bot", json!({})).await;
    let doc = json!({"action": {"name": "read"}, "resource": {"type": "Doc", "id": "d1"}});
    for _ in 0..3 {
        let r = f.evaluate(Some(&key), &doc).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["decision"], true);
    }
    // 2 admin requests, 3 evaluations.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.lines_lost() < 5 {
        assert!(Instant::now() < deadline, "lost: {}", log.lines_lost());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = f.send("GET", "/metrics", None, None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    let lost: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("arbiter_access_log_lines_lost_total "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!(lost >= 5, "{text}");
}
