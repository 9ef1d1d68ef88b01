//! The remote decider against real HTTP listeners that answer the ways a decision point can go
//! wrong: each is a refusal with its own typed reason, never a verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use arbiter_pep::{Ask, DecideError, RemoteDecider, decide_within};
use arbiter_types::Entity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves every connection with `answer(request text)` after `delay`; returns the base URL.
async fn server(
    delay: Duration,
    answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let answer = std::sync::Arc::clone(&answer);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Read the head and a body of Content-Length bytes.
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                let (status, body) = answer(&String::from_utf8_lossy(&got));
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

fn ask() -> Ask {
    Ask::new(
        "call_tool",
        Entity {
            kind: "Tool".into(),
            id: "fs/read".into(),
            properties: None,
        },
    )
}

async fn decide(
    url: &str,
    timeout: Duration,
    asks: Vec<Ask>,
) -> Result<Vec<arbiter_pep::Verdict>, DecideError> {
    let decider = RemoteDecider::new(url, "mcp:test".into(), timeout);
    decide_within(&decider, Duration::from_secs(30), Some("arb_x"), asks, None).await
}

#[tokio::test]
async fn a_slow_decision_point_is_a_timeout() {
    let url = server(Duration::from_secs(5), |_| {
        (200, r#"{"decision": true}"#.into())
    })
    .await;
    let e = decide(&url, Duration::from_millis(200), vec![ask()])
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(
        e.to_string(),
        format!("the decision point at {url} did not answer within 200 ms")
    );
}

#[tokio::test]
async fn the_enforcement_points_deadline_holds_whatever_the_decider() {
    let url = server(Duration::from_secs(5), |_| {
        (200, r#"{"decision": true}"#.into())
    })
    .await;
    let decider = RemoteDecider::new(&url, "mcp:test".into(), Duration::from_secs(60));
    let e = decide_within(
        &decider,
        Duration::from_millis(200),
        None,
        vec![ask()],
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        DecideError::Deadline {
            after: Duration::from_millis(200)
        }
    );
}

#[tokio::test]
async fn an_unreachable_decision_point_is_not_a_timeout() {
    // A port nothing listens on, for the whole test.
    let closed = arbiter_testkit::ClosedPort::new();
    let url = format!("http://{}", closed.addr());
    let e = decide(&url, Duration::from_secs(5), vec![ask()])
        .await
        .unwrap_err();
    assert!(matches!(e, DecideError::Unreachable { .. }), "{e}");
    assert!(!e.is_timeout());
}

#[tokio::test]
async fn an_error_status_names_the_decision_points_error() {
    let url = server(Duration::ZERO, |_| {
        (401, r#"{"error": {"code": "unauthenticated", "message": "the credential was not accepted"}}"#.into())
    })
    .await;
    let e = decide(&url, Duration::from_secs(5), vec![ask()])
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the decision point at {url} answered 401: unauthenticated: the credential was not accepted"
        )
    );
}

#[tokio::test]
async fn answers_that_are_not_one_decision_per_question_are_refused() {
    for (body, problem) in [
        ("not json", "answered with a body that is not JSON"),
        (
            r#"{"evaluations": [{"decision": true}]}"#,
            "answered 1 decisions for 2 questions",
        ),
        (
            r#"{"evaluations": [{"decision": true}, {"decision": "yes"}]}"#,
            "answered without a boolean `decision`",
        ),
        (
            r#"{"decision": true}"#,
            "answered without `evaluations` for the 2 questions",
        ),
    ] {
        let url = server(Duration::ZERO, move |_| (200, body.to_owned())).await;
        let e = decide(&url, Duration::from_secs(5), vec![ask(), ask()])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the decision point at {url} {problem}"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_question_carries_the_credential_and_the_enforcement_point() {
    let url = server(Duration::ZERO, |req| {
        let ok = req.contains("authorization: Bearer arb_x")
            && req.contains("x-arbiter-enforcement-point: mcp:test")
            && req.contains(r#""action":{"name":"call_tool"}"#);
        (200, format!(r#"{{"evaluations": [{{"decision": {ok}, "context": {{"decision_id": "d-1", "reason_user": "denied: no"}}}}]}}"#))
    })
    .await;
    let v = decide(&url, Duration::from_secs(5), vec![ask()])
        .await
        .unwrap();
    assert!(v[0].allow, "the request did not carry what it must");
    assert_eq!(v[0].decision_id.as_deref(), Some("d-1"));
}
