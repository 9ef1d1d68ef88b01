//! Where the gateway's decisions come from: a decision point embedded in the gateway
//! ([`LocalDecider`]) or a running `arbiter serve` asked over AuthZEN ([`RemoteDecider`]).
//! Either way each decision is recorded in the decision log before the gateway acts on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arbiter_pdp::{Caller, Pdp, Source};
use arbiter_types::{Action, Entity, EvaluationRequest, RowFilter};
use serde_json::{Map, Value, json};

/// A boxed future, for the object-safe [`Decider`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One question for the decision point; the subject is the agent whose credential is
/// presented with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub action: &'static str,
    pub resource: Entity,
    pub context: Map<String, Value>,
    /// Whether the decision may allow only some rows of the table (the resource): for an
    /// enforcement point that applies [`Verdict::rows`]. A remote decision point is asked with
    /// the `X-Arbiter-Row-Filters` header (`arbiter serve` honours it).
    pub rows: bool,
}

/// A decision as the gateway needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub decision_id: Option<String>,
    /// The reason that may be shown to the agent (`denied: …`).
    pub reason_user: String,
    /// The rows the allow is limited to, when it is (asked with [`Ask::rows`]).
    pub rows: Option<RowFilter>,
    /// The policy version that decided, when the decision point says.
    pub policy_version: Option<String>,
}

/// What an enforcement point must still do with a batch of verdicts before it can act on
/// them (the SQL guard narrows the statement to the allowed rows): `Err(reason)` when it
/// cannot, and then every allow for some rows is a deny for that reason (see
/// [`Decider::decide_then`]).
pub type Settle<'a> = Box<dyn FnOnce(&[Verdict]) -> Result<(), String> + Send + 'a>;

/// Turns an allow for some rows that could not be applied into a deny for `reason`, naming
/// the allow (whose record says `allow`) in the agent's reason.
fn not_applied(v: &mut Verdict, reason: &str) {
    tracing::warn!(
        decision = v.decision_id.as_deref().unwrap_or(""),
        reason = %reason,
        "an allow for some rows could not be applied; the statement is denied"
    );
    v.allow = false;
    v.rows = None;
    v.reason_user = format!(
        "denied: {reason} (the decision point's allow{} was not applied)",
        v.decision_id
            .take()
            .map(|id| format!(" {id}"))
            .unwrap_or_default()
    );
}

/// Takes decisions for the holder of a credential.
pub trait Decider: Send + Sync + std::fmt::Debug {
    /// Decides every ask, in order, for the agent whose credential is `credential`
    /// (`None`: none was presented, which is a refusal). An `Err` means no decision could be
    /// taken at all; the gateway then refuses (fail closed).
    fn decide<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, String>>;

    /// Decides as [`Decider::decide`] does, then runs `settle` on the verdicts. When it fails,
    /// every allow for some rows becomes a deny for its reason. A decider that records the
    /// decisions itself settles them before recording, so the record is the answer; the
    /// default, for a decision point that records elsewhere (a remote `arbiter serve`), can
    /// only answer the deny without the allow's decision id, saying the allow was not applied.
    fn decide_then<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, String>> {
        Box::pin(async move {
            let mut verdicts = self.decide(credential, asks).await?;
            if let Err(reason) = settle(&verdicts) {
                for v in verdicts.iter_mut().filter(|v| v.allow && v.rows.is_some()) {
                    not_applied(v, &reason);
                }
            }
            Ok(verdicts)
        })
    }

    /// The policy version decisions are taken with now, as far as this decider knows: the
    /// active snapshot's for an embedded decision point, the last one a remote decision point
    /// reported. `None` when it does not know.
    fn policy_version(&self) -> Option<String> {
        None
    }

    /// Checks a credential before any decision: `Ok(Some(agent id))` for an accepted agent
    /// credential, `Err(reason to show)` for a refused one, `Ok(None)` when this decider
    /// cannot tell without deciding (the credential is then checked with every decision).
    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        let _ = credential;
        Box::pin(async { Ok(None) })
    }
}

/// Decides in this process with an embedded decision point (see
/// [`arbiter_pdp::local::open_local`]).
#[derive(Debug)]
pub struct LocalDecider {
    pdp: Arc<Pdp>,
    point: String,
}

impl LocalDecider {
    /// Decisions are recorded under enforcement point `point` (`mcp:<server>`).
    pub fn new(pdp: Arc<Pdp>, point: String) -> Self {
        Self { pdp, point }
    }
}

impl Decider for LocalDecider {
    fn decide<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, String>> {
        self.decide_then(credential, asks, Box::new(|_| Ok(())))
    }

    /// Settles the decisions before they are recorded: an allow for some rows that cannot be
    /// applied is recorded as the deny it is answered as, with the reason.
    fn decide_then<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, String>> {
        Box::pin(async move {
            let snapshot = self.pdp.snapshot();
            let source = Source {
                address: "local",
                enforcement_point: &self.point,
            };
            let requests = asks
                .into_iter()
                .map(|ask| {
                    let rows = ask.rows;
                    (request_of(ask), rows)
                })
                .collect();
            let mut decided = self
                .pdp
                .decide_for_agent_narrowing_async(&snapshot, credential, &source, requests)
                .await;
            let preview: Vec<Verdict> = decided
                .iter()
                .map(|d| {
                    let allow = d.decision.outcome.is_allow();
                    Verdict {
                        allow,
                        decision_id: Some(d.decision.id.as_str().to_owned()),
                        reason_user: d.decision.reason_user.clone(),
                        rows: d.rows.clone().filter(|_| allow),
                        policy_version: Some(d.decision.policy_version.clone()),
                    }
                })
                .collect();
            if let Err(reason) = settle(&preview) {
                for d in decided
                    .iter_mut()
                    .filter(|d| d.decision.outcome.is_allow() && d.rows.is_some())
                {
                    d.rows = None;
                    d.decision.outcome = arbiter_types::Outcome::Deny;
                    let rows = d
                        .decision
                        .reason_admin
                        .strip_prefix("allowed for the rows where ")
                        .unwrap_or(&d.decision.reason_admin);
                    d.decision.reason_admin = format!(
                        "denied: the statement cannot be narrowed to the rows where {rows}: {reason}"
                    );
                    d.decision.reason_user = format!("denied: {reason}");
                }
            }
            let rows: Vec<Option<RowFilter>> = decided.iter_mut().map(|d| d.rows.take()).collect();
            let items = decided
                .iter()
                .map(|d| (d.request.as_ref(), d.decision.clone(), Some(&d.attribution)))
                .collect();
            let recorded = self.pdp.record_all(items, &self.point).await;
            Ok(recorded
                .into_iter()
                .zip(rows)
                .map(|(r, rows)| {
                    // A decision that could not be recorded is a deny (fail closed).
                    let (d, rows) = match r {
                        Ok(d) => (d, rows),
                        Err(unrecorded) => (*unrecorded.decision, None),
                    };
                    let allow = d.outcome.is_allow();
                    Verdict {
                        allow,
                        decision_id: Some(d.id.as_str().to_owned()),
                        reason_user: d.reason_user,
                        rows: rows.filter(|_| allow),
                        policy_version: Some(d.policy_version),
                    }
                })
                .collect())
        })
    }

    fn policy_version(&self) -> Option<String> {
        Some(self.pdp.snapshot().version().to_owned())
    }

    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let Some(identity) = self.pdp.identity() else {
                return Ok(None);
            };
            let source = Source {
                address: "local",
                enforcement_point: &self.point,
            };
            match identity
                .authenticate_async(Some(credential), &source, arbiter_pdp::identity::now_us())
                .await
            {
                Ok(Caller::Agent(a)) => Ok(Some(a.agent.id.clone())),
                Ok(Caller::Pep { .. }) => Err("a PEP token is not an agent credential".into()),
                Ok(Caller::Anonymous) => Err("no credential was given".into()),
                Err(denial) => {
                    tracing::info!(reason = %denial.reason_admin, "a credential was refused");
                    Err(denial.reason_user)
                }
            }
        })
    }
}

fn request_of(ask: Ask) -> EvaluationRequest {
    EvaluationRequest {
        // Replaced by the authenticated agent.
        subject: Entity {
            kind: arbiter_pdp::delegation::AGENT_TYPE.to_owned(),
            id: String::new(),
            properties: None,
        },
        action: Action {
            name: ask.action.to_owned(),
            properties: None,
        },
        resource: ask.resource,
        context: ask.context,
    }
}

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
            .user_agent(concat!("arbiter-mcp/", env!("CARGO_PKG_VERSION")))
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
    ) -> Result<Vec<Verdict>, String> {
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
        let req = req
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                Self::body(asks),
            )))
            .map_err(|e| format!("the decision request cannot be built: {e}"))?;
        let exchange = async {
            let response = client
                .request(req)
                .await
                .map_err(|e| format!("the decision point cannot be reached: {e}"))?;
            let status = response.status();
            let limited = http_body_util::Limited::new(
                response.into_body(),
                usize::try_from(MAX_ANSWER_BYTES).unwrap_or(usize::MAX),
            );
            let bytes = limited
                .collect()
                .await
                .map_err(|e| format!("the decision point's answer cannot be read: {e}"))?
                .to_bytes();
            Ok::<_, String>((status.as_u16(), bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "the decision point did not answer in time".to_owned())??;
        Self::verdicts(status, &bytes, asks.len())
    }

    fn verdicts(status: u16, bytes: &[u8], n: usize) -> Result<Vec<Verdict>, String> {
        if status != 200 {
            return Err(format!("the decision point answered {status}"));
        }
        let answer: Value = serde_json::from_slice(bytes)
            .map_err(|_| "the decision point answered with a body that is not JSON".to_owned())?;
        let items: Vec<&Value> = match answer.get("evaluations").and_then(Value::as_array) {
            Some(items) => items.iter().collect(),
            // A batch of one may be answered as a single evaluation.
            None if n == 1 => vec![&answer],
            None => return Err("the decision point's answer has no `evaluations`".to_owned()),
        };
        if items.len() != n {
            return Err(format!(
                "the decision point answered {} decisions for {n} questions",
                items.len()
            ));
        }
        items
            .into_iter()
            .map(|item| {
                verdict_of(item).ok_or_else(|| {
                    "the decision point answered without a boolean `decision`".into()
                })
            })
            .collect()
    }
}

impl Remote {
    /// Over the blocking TLS client.
    fn ask_blocking(&self, credential: Option<&str>, asks: &[Ask]) -> Result<Vec<Verdict>, String> {
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
        let mut response = req.send(Self::body(asks).as_bytes()).map_err(|e| match e {
            ureq::Error::Timeout(_) => "the decision point did not answer in time".to_owned(),
            e => format!("the decision point cannot be reached: {e}"),
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| format!("the decision point's answer cannot be read: {e}"))?;
        Self::verdicts(status, &bytes, asks.len())
    }
}

/// Reads an AuthZEN decision: `decision` must be a boolean. An allow for some rows
/// (`context.row_filter`) whose filter cannot be read is a deny.
pub fn verdict_of(answer: &Value) -> Option<Verdict> {
    let a = arbiter_types::AnswerSummary::read(answer)?;
    let rows = match answer.get("context").and_then(|c| c.get("row_filter")) {
        None => Ok(None),
        Some(f) => serde_json::from_value::<RowFilter>(f.clone()).map(Some),
    };
    let (allow, reason_user, rows) = match rows {
        Ok(rows) => (
            a.allow,
            a.reason_user
                .unwrap_or_else(|| if a.allow { "allowed" } else { "denied" }.to_owned()),
            rows,
        ),
        Err(_) => (
            false,
            "denied: the decision point's row filter cannot be read".to_owned(),
            None,
        ),
    };
    Some(Verdict {
        allow,
        decision_id: a.decision_id,
        reason_user,
        rows: rows.filter(|_| allow),
        policy_version: a.policy_version,
    })
}

impl Decider for RemoteDecider {
    fn decide<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, String>> {
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
                .map_err(|e| format!("the decision point call failed: {e}"))?
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
    /// question carrying `context.enforcement_failure` (the allow's decision id and why),
    /// which it refuses and records. The agent is answered that recorded deny, so the log holds
    /// the allow, then the deny that names it, and the answer is the last of them.
    fn decide_then<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, String>> {
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
                        arbiter_pdp::ENFORCEMENT_FAILURE.into(),
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
