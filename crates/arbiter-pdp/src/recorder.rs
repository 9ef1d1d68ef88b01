//! Recording decisions in the durable, tamper-evident decision log.
//!
//! Every decision the PDP returns through [`Pdp::decide_recorded`] is first appended to the
//! log (`arbiter-log`) and, in the default `sync` durability, acknowledged only once it is on
//! disk; concurrent decisions share one `fdatasync`. If the log cannot persist, the decision
//! is replaced by a deny that says so: nothing is allowed that is not recorded.
//!
//! The record keeps a digest of the full request context and a redacted copy: values at the
//! configured paths are replaced by a keyed hash (the key lives in the data directory, mode
//! 0600), so equal secrets stay linkable without being stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbiter_log::{
    DecisionRecord, Durability, EntityRef, Health, Log, LogError, LogOptions, OpenReport,
    PrincipalOutcome, SubjectRef,
};
use arbiter_types::{Decision, EvaluationRequest, Outcome};
use serde_json::{Map, Value};

use crate::{Attribution, Pdp};

/// How decisions are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Acknowledge a decision only after its record is on disk (group commit). The default.
    Sync,
    /// Acknowledge after the write; sync in the background. A crash can lose recent records.
    Async,
}

/// Settings of the decision log.
#[derive(Clone)]
pub struct RecorderSettings {
    pub mode: LogMode,
    pub checkpoint_every_records: u64,
    pub checkpoint_every: Duration,
    /// Context paths to redact, e.g. `arguments.password`.
    pub redact: Vec<String>,
    /// This node's id; `None` reads or creates `<data>/node-id`.
    pub node_id: Option<String>,
    /// Fault injection for tests (see `arbiter_log::FaultSwitch`).
    pub fault: Option<arbiter_log::FaultHook>,
    /// Open a log whose records are not covered by valid checkpoints, for this reason (the
    /// operator's `--accept-log-damage`): the override is recorded in the log. Without it such
    /// a log is refused (`arbiter_log::LogError::Unverified`).
    pub accept_log_damage: Option<String>,
}

impl std::fmt::Debug for RecorderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderSettings")
            .field("mode", &self.mode)
            .field("checkpoint_every_records", &self.checkpoint_every_records)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("redact", &self.redact)
            .field("node_id", &self.node_id)
            .field("accept_log_damage", &self.accept_log_damage)
            .finish_non_exhaustive()
    }
}

impl Default for RecorderSettings {
    fn default() -> Self {
        Self {
            mode: LogMode::Sync,
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(1),
            redact: Vec::new(),
            node_id: None,
            fault: None,
            accept_log_damage: None,
        }
    }
}

/// Why the decision log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("cannot prepare the data directory `{path}`: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the decision log: {0}")]
    Log(#[from] LogError),
}

/// The decision log, as the PDP uses it.
#[derive(Debug)]
pub struct Recorder {
    log: Arc<Log>,
    redact: Vec<String>,
    redact_key: Vec<u8>,
    node_id: String,
}

/// The engine version recorded with every decision.
pub const ENGINE_VERSION: &str = "cedar-policy 4.14";

impl Recorder {
    /// Opens (or creates) the log under `<data>/log`. Recovers to the last durable record.
    /// Refuses a log whose records are not covered by valid, consistent signed checkpoints
    /// (beyond the unsigned tail a crash can leave), unless `accept_log_damage` gives a reason.
    pub fn open(
        data: &Path,
        settings: RecorderSettings,
    ) -> Result<(Self, OpenReport), RecorderError> {
        let log_dir = data.join("log");
        std::fs::create_dir_all(&log_dir).map_err(|source| RecorderError::DataDir {
            path: log_dir.clone(),
            source,
        })?;
        let node_id = match settings.node_id {
            Some(id) => id,
            None => node_id(data)?,
        };
        let redact_key = secret_file(&log_dir.join("redaction.key"))?;
        let (log, report) = Log::open(
            &log_dir,
            LogOptions {
                node_id: node_id.clone(),
                durability: match settings.mode {
                    LogMode::Sync => Durability::Sync,
                    LogMode::Async => Durability::Async,
                },
                checkpoint_every_records: settings.checkpoint_every_records,
                checkpoint_every: settings.checkpoint_every,
                fault: settings.fault,
                accept_damage: settings.accept_log_damage,
                ..LogOptions::default()
            },
        )?;
        Ok((
            Self {
                log: Arc::new(log),
                redact: settings.redact,
                redact_key,
                node_id,
            },
            report,
        ))
    }

    /// `context` as a decision record keeps it: the configured paths replaced by keyed
    /// hashes.
    pub fn redacted(&self, context: &Value) -> Value {
        if self.redact.is_empty() {
            return context.clone();
        }
        arbiter_log::redact(context, &self.redact, &self.redact_key).0
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log, to keep a handle on it (for background work that must end with it: hold a
    /// [`std::sync::Weak`]).
    pub fn shared_log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn health(&self) -> Health {
        self.log.health()
    }

    /// The record of a decision (`req` is `None` for a request that could not be parsed).
    pub fn record_of(
        &self,
        req: Option<&EvaluationRequest>,
        d: &Decision,
        enforcement_point: &str,
        attribution: Option<&Attribution>,
    ) -> DecisionRecord {
        let context = req.map(full_context).unwrap_or_default();
        let context = Value::Object(context);
        let digest = arbiter_log::context_digest(&context).unwrap_or_default();
        let (redacted, redacted_paths) = if self.redact.is_empty() {
            (context, Vec::new())
        } else {
            arbiter_log::redact(&context, &self.redact, &self.redact_key)
        };
        let subject = req.map(|r| &r.subject);
        let mut delegation: Vec<EntityRef> = req
            .and_then(|r| r.context.get("delegation"))
            .and_then(|d| d.get("user"))
            .and_then(|u| {
                let u = u.get("__entity").unwrap_or(u);
                Some(EntityRef {
                    kind: u.get("type")?.as_str()?.to_owned(),
                    id: u.get("id")?.as_str()?.to_owned(),
                })
            })
            .into_iter()
            .collect();
        if let Some(a) = attribution {
            delegation.extend(a.actor_chain.iter().map(|id| EntityRef {
                kind: crate::delegation::AGENT_TYPE.to_owned(),
                id: id.clone(),
            }));
        }
        let agent_id = attribution
            .and_then(|a| a.agent_id.clone())
            .or_else(|| subject.filter(|s| s.kind == "Agent").map(|s| s.id.clone()));
        DecisionRecord {
            decision_id: d.id.as_str().to_owned(),
            subject: SubjectRef {
                kind: subject.map(|s| s.kind.clone()).unwrap_or_default(),
                id: subject.map(|s| s.id.clone()).unwrap_or_default(),
                agent_id,
                credential_id: attribution.and_then(|a| a.credential_id.clone()),
            },
            delegation,
            action: req.map(|r| r.action.name.clone()).unwrap_or_default(),
            resource: EntityRef {
                kind: req.map(|r| r.resource.kind.clone()).unwrap_or_default(),
                id: req.map(|r| r.resource.id.clone()).unwrap_or_default(),
            },
            context_digest: digest,
            context: redacted,
            redacted_paths,
            outcome: match d.outcome {
                Outcome::Allow => arbiter_log::Outcome::Allow,
                Outcome::Deny => arbiter_log::Outcome::Deny,
                Outcome::RequireApproval => arbiter_log::Outcome::RequireApproval,
            },
            determining_policies: d.determining_policies.clone(),
            reason_admin: d.reason_admin.clone(),
            reason_user: d.reason_user.clone(),
            errors: d.errors.clone(),
            policy_version: d.policy_version.clone(),
            engine: "cedar".to_owned(),
            engine_version: ENGINE_VERSION.to_owned(),
            enforcement_point: enforcement_point.to_owned(),
            eval_us: d.eval_us,
            evaluations: d
                .evaluations
                .iter()
                .map(|e| PrincipalOutcome {
                    principal: EntityRef {
                        kind: e.kind.clone(),
                        id: e.id.clone(),
                    },
                    outcome: match e.outcome {
                        Outcome::Allow => arbiter_log::Outcome::Allow,
                        Outcome::Deny => arbiter_log::Outcome::Deny,
                        Outcome::RequireApproval => arbiter_log::Outcome::RequireApproval,
                    },
                    determining_policies: e.determining_policies.clone(),
                })
                .collect(),
            ..DecisionRecord::default()
        }
    }

    /// Queues a record; the receiver resolves once it is durable (or written, in async mode).
    /// Queue a whole batch before awaiting so that it shares one sync.
    pub fn submit(
        &self,
        record: DecisionRecord,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, LogError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.log.append(
            record,
            Box::new(move |result| {
                let _ = tx.send(result.map(|a| a.leaf_index));
            }),
        );
        rx
    }
}

/// The context as the policy saw it: the request context plus `action` properties.
fn full_context(req: &EvaluationRequest) -> Map<String, Value> {
    let mut ctx = req.context.clone();
    if let Some(props) = &req.action.properties {
        ctx.insert("action".to_owned(), Value::Object(props.clone()));
    }
    // The subject's and the resource's properties as evaluated (the registry's attributes,
    // what the enforcement point said of the resource): what replaying the decision against
    // another policy version needs (`arbiter policy replay`).
    let mut entities = Map::new();
    for (name, entity) in [("subject", &req.subject), ("resource", &req.resource)] {
        if let Some(props) = entity.properties.as_ref().filter(|p| !p.is_empty()) {
            entities.insert(name.to_owned(), Value::Object(props.clone()));
        }
    }
    if !entities.is_empty() {
        ctx.insert(ENTITIES_KEY.to_owned(), Value::Object(entities));
    }
    ctx
}

/// Where a record's context keeps the subject's and the resource's properties.
pub const ENTITIES_KEY: &str = "arbiter_entities";

/// Reads `<data>/node-id`, creating it from the host name on first start.
fn node_id(data: &Path) -> Result<String, RecorderError> {
    let path = data.join("node-id");
    let io = |source| RecorderError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        })
        .unwrap_or_else(|| "node".to_owned());
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let id = format!("{host}-{}", hex::encode(suffix));
    std::fs::write(&path, format!("{id}\n")).map_err(io)?;
    Ok(id)
}

/// Reads a 32-byte hex secret, creating it (mode 0600) on first use.
fn secret_file(path: &Path) -> Result<Vec<u8>, RecorderError> {
    let io = |source| RecorderError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(key) = hex::decode(text.trim())
            .map_err(|_| ())
            .and_then(|k| if k.len() == 32 { Ok(k) } else { Err(()) })
        {
            return Ok(key);
        }
        return Err(io(std::io::Error::other(
            "the file does not hold a 32-byte hex key",
        )));
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(&key)).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}

/// Decisions handed to the decision log whose records may not be durable yet (see
/// [`Pdp::submit_all`]).
#[derive(Debug)]
pub struct Submitted {
    pending: Vec<(Decision, Option<Appending>)>,
}

/// The log's answer to one record handed to it: its leaf index once durable.
type Appending = tokio::sync::oneshot::Receiver<Result<u64, LogError>>;

impl Submitted {
    /// The decisions, as taken (before their records are durable).
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.pending.iter().map(|(d, _)| d)
    }
}

/// A decision that was taken but could not be recorded: it must not be acted upon.
#[derive(Debug, Clone)]
pub struct Unrecorded {
    /// The fail-closed replacement: a deny naming the logging failure.
    pub decision: Box<Decision>,
    pub error: String,
}

impl Pdp {
    /// Decides and records. Without a decision log, this is [`Pdp::decide_with`]. If the record
    /// cannot be persisted, the result is a deny (fail closed) in `Err`.
    pub async fn decide_recorded(
        &self,
        policies: &arbiter_policy::Policies,
        req: &EvaluationRequest,
        enforcement_point: &str,
    ) -> Result<Decision, Unrecorded> {
        let decision = self.decide_with(policies, req);
        self.record(Some(req), decision, enforcement_point, None)
            .await
    }

    /// Records a decision already taken; on failure, replaces it with a deny.
    pub async fn record(
        &self,
        req: Option<&EvaluationRequest>,
        decision: Decision,
        enforcement_point: &str,
        attribution: Option<&Attribution>,
    ) -> Result<Decision, Unrecorded> {
        let mut out = self
            .record_all(vec![(req, decision, attribution)], enforcement_point)
            .await;
        out.pop().unwrap_or_else(|| {
            Err(Unrecorded {
                decision: Box::new(self.reject_unrecorded()),
                error: "no decision to record".to_owned(),
            })
        })
    }

    /// Records several decisions, sharing syncs; each result as in [`Pdp::record`].
    pub async fn record_all(
        &self,
        items: Vec<(Option<&EvaluationRequest>, Decision, Option<&Attribution>)>,
        enforcement_point: &str,
    ) -> Vec<Result<Decision, Unrecorded>> {
        let submitted = self.submit_all(items, enforcement_point);
        self.durable(submitted).await
    }

    /// Hands decisions to the log without waiting: [`Pdp::durable`] then waits until their
    /// records are durable. Nothing a decision allows may take effect before that; an
    /// enforcement point may only start work whose result it withholds until then (the SQL
    /// guard's reads, see `arbiter_pep::Decider::decide_ahead`).
    pub fn submit_all(
        &self,
        items: Vec<(Option<&EvaluationRequest>, Decision, Option<&Attribution>)>,
        enforcement_point: &str,
    ) -> Submitted {
        let pending = match self.recorder() {
            None => items.into_iter().map(|(_, d, _)| (d, None)).collect(),
            Some(recorder) => items
                .into_iter()
                .map(|(req, d, attribution)| {
                    let rx = recorder.submit(recorder.record_of(
                        req,
                        &d,
                        enforcement_point,
                        attribution,
                    ));
                    (d, Some(rx))
                })
                .collect(),
        };
        Submitted { pending }
    }

    /// Waits until the records of `submitted` are durable; each result as in
    /// [`Pdp::record`].
    pub async fn durable(&self, submitted: Submitted) -> Vec<Result<Decision, Unrecorded>> {
        let mut out = Vec::with_capacity(submitted.pending.len());
        for (decision, rx) in submitted.pending {
            let Some(rx) = rx else {
                // No decision log: nothing to wait for.
                out.push(Ok(decision));
                continue;
            };
            let result = match rx.await {
                Ok(r) => r,
                Err(_) => Err(LogError::ShutDown),
            };
            // What an allow changed in the runtime context stands only with its record.
            self.sessions().settle(
                decision.id.as_str(),
                result.is_ok(),
                self.identity().map(|i| i.store().as_ref()),
            );
            out.push(match result {
                Ok(_) => Ok(decision),
                Err(e) => Err(self.unrecorded(decision, &e)),
            });
        }
        out
    }

    fn unrecorded(&self, decision: Decision, e: &LogError) -> Unrecorded {
        let error = format!("the decision log cannot persist: {e}");
        tracing::error!(decision_id = %decision.id, error = %error, "decision denied: not recorded");
        self.metrics.record_unrecorded();
        let mut denied = decision;
        denied.outcome = Outcome::Deny;
        denied.reason_admin = format!("denied: {error}");
        denied.reason_user = "denied: the decision could not be recorded".to_owned();
        denied.errors.push(error.clone());
        Unrecorded {
            decision: Box::new(denied),
            error,
        }
    }

    fn reject_unrecorded(&self) -> Decision {
        let snapshot = self.snapshot();
        self.reject(&snapshot, "no decision to record")
    }
}
