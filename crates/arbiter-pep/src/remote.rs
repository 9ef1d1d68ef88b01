//! [`RemoteDecider`]: a running `arbiter serve` asked over its AuthZEN API.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::decider::{BoxFuture, Decider, Settle, not_applied};
use crate::{Ask, DecideError, Verdict, verdict_of};

/// Largest decision point answer read.
const MAX_ANSWER_BYTES: u64 = 8 << 20;

/// Asks a running `arbiter serve` (`POST /access/v1/evaluations`, the agent's credential as
/// `Authorization: Bearer`, `X-Arbiter-Enforcement-Point: mcp:<server>`). `http://` decision
/// points are asked over pooled keep-alive connections from the gateway's own runtime;
/// `https://` ones through a blocking TLS client on the blocking pool.
#[derive(Debug, Clone)]
pub struct RemoteDecider {
    inner: Arc<Remote>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<hyper::body::Bytes>,
>;

#[derive(Debug)]
struct Remote {
    /// The decision point's base URL, as errors name it.
    url: String,
    endpoint: String,
    point: String,
    timeout: Duration,
    plain: Option<HttpClient>,
    agent: ureq::Agent,
    /// The policy version of the last answer.
    version: std::sync::Mutex<Option<String>>,
}

impl RemoteDecider {
    /// `url` is the decision point's base URL (`http://127.0.0.1:8180`); `timeout` bounds the
    /// whole exchange.
    pub fn new(url: &str, point: String, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("arbiter-pep/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let plain = url.starts_with("http://").then(|| {
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            connector.set_nodelay(true);
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector)
        });
        Self {
            inner: Arc::new(Remote {
                url: url.trim_end_matches('/').to_owned(),
                endpoint: format!("{}/access/v1/evaluations", url.trim_end_matches('/')),
                point,
                timeout,
                plain,
                agent,
                version: std::sync::Mutex::new(None),
            }),
        }
    }
}

/// The header listing the evaluations that may be narrowed to rows (as `arbiter serve`
/// reads it).
const ROW_FILTERS_HEADER: &str = "x-arbiter-row-filters";

/// The header naming the caller's session (see `arbiter_pdp::sessions`).
pub const SESSION_HEADER: &str = "arbiter-session";

impl Remote {
    /// `0,3`: the indices of the asks that may be allowed for some rows.
    fn row_filter_items(asks: &[Ask]) -> Option<String> {
        let items: Vec<String> = asks
            .iter()
            .enumerate()
            .filter(|(_, a)| a.rows)
            .map(|(i, _)| i.to_string())
            .collect();
        (!items.is_empty()).then(|| items.join(","))
    }

    fn body(asks: &[Ask]) -> String {
        let evaluations: Vec<Value> = asks
            .iter()
            .map(|a| {
                json!({
                    "action": {"name": a.action},
                    "resource": a.resource,
                    "context": a.context,
                })
            })
            .collect();
        json!({ "evaluations": evaluations }).to_string()
    }

    /// Over a pooled plain-HTTP connection.
    async fn ask_plain(
        &self,
        client: &HttpClient,
        credential: Option<&str>,
        asks: &[Ask],
    ) -> Result<Vec<Verdict>, DecideError> {
        use http_body_util::BodyExt as _;
        let mut req = hyper::Request::post(&self.endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("x-arbiter-enforcement-point", &self.point);
        if let Some(c) = credential {
            req = req.header("authorization", format!("Bearer {c}"));
        }
        if let Some(rows) = Self::row_filter_items(asks) {
            req = req.header(ROW_FILTERS_HEADER, rows);
        }
        if let Some(session) = crate::verdict::session_of(asks)? {
            req = req.header(SESSION_HEADER, session);
        }
        let req = req
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                Self::body(asks),
            )))
            .map_err(|e| {
                DecideError::Internal(format!("the decision request cannot be built: {e}"))
            })?;
        let exchange = async {
            let response = client
                .request(req)
                .await
                .map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            let limited = http_body_util::Limited::new(
                response.into_body(),
                usize::try_from(MAX_ANSWER_BYTES).unwrap_or(usize::MAX),
            );
            let bytes = limited
                .collect()
                .await
                .map_err(|e| self.bad_answer(format!("sent an answer that cannot be read: {e}")))?
                .to_bytes();
            Ok::<_, DecideError>((status.as_u16(), bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.timed_out())??;
        self.verdicts(status, &bytes, asks.len())
    }

    fn unreachable(&self, e: &dyn std::fmt::Display) -> DecideError {
        DecideError::Unreachable {
            url: self.url.clone(),
            detail: e.to_string(),
        }
    }

    fn timed_out(&self) -> DecideError {
        DecideError::Timeout {
            url: self.url.clone(),
            after: self.timeout,
        }
    }

    fn bad_answer(&self, problem: String) -> DecideError {
        DecideError::BadAnswer {
            url: self.url.clone(),
            problem,
        }
    }

    /// Reads the answer to `n` questions.
    fn verdicts(&self, status: u16, bytes: &[u8], n: usize) -> Result<Vec<Verdict>, DecideError> {
        let answer: Option<Value> = serde_json::from_slice(bytes).ok();
        if status != 200 {
            let error = answer.as_ref().and_then(|a| a.get("error"));
            let field = |k: &str| {
                error
                    .and_then(|e| e.get(k))
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(512).collect::<String>())
            };
            return Err(DecideError::Status {
                url: self.url.clone(),
                status,
                code: field("code"),
                message: field("message"),
            });
        }
        let answer = answer
            .ok_or_else(|| self.bad_answer("answered with a body that is not JSON".into()))?;
        let items: Vec<&Value> = match answer.get("evaluations").and_then(Value::as_array) {
            Some(items) => items.iter().collect(),
            // A batch of one may be answered as a single evaluation.
            None if n == 1 => vec![&answer],
            None => {
                return Err(self.bad_answer(format!(
                    "answered without `evaluations` for the {n} questions"
                )));
            }
        };
        if items.len() != n {
            return Err(self.bad_answer(format!(
                "answered {} decisions for {n} questions",
                items.len()
            )));
        }
        items
            .into_iter()
            .map(|item| {
                verdict_of(item)
                    .ok_or_else(|| self.bad_answer("answered without a boolean `decision`".into()))
            })
            .collect()
    }
}

impl Remote {
    /// Over the blocking TLS client.
    fn ask_blocking(
        &self,
        credential: Option<&str>,
        asks: &[Ask],
    ) -> Result<Vec<Verdict>, DecideError> {
        let mut req = self
            .agent
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("x-arbiter-enforcement-point", &self.point);
        if let Some(c) = credential {
            req = req.header("authorization", &format!("Bearer {c}"));
        }
        if let Some(rows) = Self::row_filter_items(asks) {
            req = req.header(ROW_FILTERS_HEADER, &rows);
        }
        if let Some(session) = crate::verdict::session_of(asks)? {
            req = req.header(SESSION_HEADER, session);
        }
        let mut response = req.send(Self::body(asks).as_bytes()).map_err(|e| match e {
            ureq::Error::Timeout(_) => self.timed_out(),
            e => self.unreachable(&e),
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => self.timed_out(),
                e => self.bad_answer(format!("sent an answer that cannot be read: {e}")),
            })?;
        self.verdicts(status, &bytes, asks.len())
    }
}

impl Decider for RemoteDecider {
    fn decide<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, DecideError>> {
        Box::pin(async move {
            let remote = Arc::clone(&self.inner);
            let verdicts = if let Some(client) = &remote.plain {
                remote.ask_plain(client, credential, &asks).await
            } else {
                let credential = credential.map(str::to_owned);
                let blocking = Arc::clone(&remote);
                tokio::task::spawn_blocking(move || {
                    blocking.ask_blocking(credential.as_deref(), &asks)
                })
                .await
                .map_err(|e| DecideError::Internal(format!("the decision task failed: {e}")))?
            };
            if let Ok(v) = &verdicts
                && let Some(version) = v.iter().find_map(|v| v.policy_version.clone())
                && let Ok(mut last) = remote.version.lock()
            {
                *last = Some(version);
            }
            verdicts
        })
    }

    /// Settles as the default does, but records what happened: an allow the remote decision
    /// point already recorded and that cannot be applied is reported back to it as a new
    /// question carrying `context.enforcement_refusal` (the allow's decision id and why),
    /// which it refuses and records. The agent is answered that recorded deny, so the log holds
    /// the allow, then the deny that names it, and the answer is the last of them.
    fn decide_then<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, DecideError>> {
        Box::pin(async move {
            let originals = asks.clone();
            let mut verdicts = self.decide(credential, asks).await?;
            let Err(reason) = settle(&verdicts) else {
                return Ok(verdicts);
            };
            let failed: Vec<usize> = verdicts
                .iter()
                .enumerate()
                .filter(|(_, v)| v.allow && v.rows.is_some())
                .map(|(i, _)| i)
                .collect();
            let reports: Vec<Ask> = failed
                .iter()
                .filter_map(|&i| {
                    let mut ask = originals.get(i)?.clone();
                    ask.rows = false;
                    ask.context.insert(
                        arbiter_pdp::ENFORCEMENT_REFUSAL.into(),
                        json!({"decision_id": verdicts[i].decision_id, "reason": reason}),
                    );
                    Some(ask)
                })
                .collect();
            let recorded = match self.decide(credential, reports).await {
                Ok(r) if r.len() == failed.len() => r,
                Ok(_) | Err(_) => Vec::new(),
            };
            for (k, &i) in failed.iter().enumerate() {
                let Some(v) = verdicts.get_mut(i) else {
                    continue;
                };
                match recorded.get(k) {
                    Some(deny) if !deny.allow => *v = deny.clone(),
                    // The report could not be recorded: still a deny, saying which allow was
                    // not applied.
                    _ => not_applied(v, &reason),
                }
            }
            Ok(verdicts)
        })
    }

    fn policy_version(&self) -> Option<String> {
        self.inner.version.lock().ok().and_then(|v| v.clone())
    }
}
