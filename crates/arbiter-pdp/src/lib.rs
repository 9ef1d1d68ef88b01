//! The decision service: holds the active policy snapshot, turns evaluations into stamped
//! decisions, reloads policy, and counts what it does.
//!
//! Every enforcement point (the AuthZEN API today) asks through [`Pdp::decide`]. Reads take
//! the current snapshot without locking; a reload builds a complete new snapshot off to the
//! side and swaps it in atomically, so a request is always decided by exactly one version.

pub mod admin;
pub mod approvals;
pub mod compare;
pub mod evidence;
pub mod governed;
pub use arbiter_policy::delegation;
pub mod identity;
pub mod local;
mod metrics;
pub mod nonblocking;
mod recorder;
pub mod replay;
pub mod sessions;
pub mod snapshot;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arbiter_policy::{Evaluation, LoadErrors, Policies};
use arbiter_types::{Decision, DecisionId, Entity, EvaluationRequest, Outcome, RowExpr, RowFilter};
use arc_swap::ArcSwap;

pub use identity::{Attribution, Caller, Denial, Identity, IdentitySettings, Source};
pub use metrics::Metrics;
pub use nonblocking::LOOKUP_TIMEOUT;
pub use recorder::{LogMode, Recorder, RecorderError, RecorderSettings, Submitted, Unrecorded};
pub use watch::{WatchHandle, fingerprint};

/// The state of policy loading, for `/readyz` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStatus {
    /// The version being served.
    pub active_version: String,
    /// When the active version was loaded.
    pub loaded_at: SystemTime,
    /// The error of the last reload attempt, if it failed (the active version keeps serving).
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new version is active.
    Swapped { from: String, to: String },
    /// The directory's content hash did not change.
    Unchanged,
}

/// How the administrator reason of an allow narrowed to some rows begins.
pub(crate) const ROWS_ALLOWED: &str = "allowed for the rows where";

/// The policy decision point.
#[derive(Debug)]
pub struct Pdp {
    current: ArcSwap<Policies>,
    source: Option<PathBuf>,
    status: Mutex<ReloadStatus>,
    metrics: Metrics,
    recorder: Option<Recorder>,
    identity: Option<Arc<Identity>>,
    sessions: sessions::Sessions,
    /// A candidate version evaluated beside the active one, its verdict kept in each record
    /// (`arbiter policy shadow`).
    shadow: arc_swap::ArcSwapOption<Policies>,
}

/// A request bound to its caller and decided.
#[derive(Debug)]
pub struct Decided {
    /// The request as evaluated (subject bound to the caller, registry attributes in),
    /// or `None` when it was refused before evaluation.
    pub request: Option<EvaluationRequest>,
    pub decision: Decision,
    pub attribution: Attribution,
    /// For a decision taken with row filters asked for ([`Pdp::decide_rows`]) that allows
    /// only some rows of the table: which ones.
    pub rows: Option<RowFilter>,
}

impl Pdp {
    /// A PDP serving `policies`, reloadable from `source` when given.
    pub fn new(policies: Policies, source: Option<PathBuf>) -> Self {
        let status = ReloadStatus {
            active_version: policies.version().to_owned(),
            loaded_at: SystemTime::now(),
            last_error: None,
            last_error_at: None,
        };
        Self {
            current: ArcSwap::from_pointee(policies),
            source,
            status: Mutex::new(status),
            metrics: Metrics::default(),
            recorder: None,
            identity: None,
            sessions: sessions::Sessions::default(),
            shadow: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Evaluates `candidate` beside the active version on every decision from now on (or
    /// stops, with `None`): enforcement follows the active version; the candidate's verdict is
    /// kept in the record (`context.arbiter_shadow`) and counted in the metrics.
    pub fn set_shadow(&self, candidate: Option<Policies>) {
        let was = self.shadow_version();
        let now = candidate.as_ref().map(|p| p.version().to_owned());
        if was != now {
            tracing::info!(from = ?was, to = ?now, "shadow policy version changed");
        }
        self.shadow.store(candidate.map(Arc::new));
    }

    /// The version evaluated in shadow, if any.
    pub fn shadow_version(&self) -> Option<String> {
        self.shadow.load().as_ref().map(|p| p.version().to_owned())
    }

    /// The shadow version's verdict on `req`, decided as `decision`, kept in the request's
    /// context for the record.
    fn shadow_into(&self, req: &mut EvaluationRequest, decision: &Decision) {
        let guard = self.shadow.load();
        let Some(shadow) = guard.as_ref() else {
            return;
        };
        let mut asked = req.clone();
        asked.context.remove(sessions::EFFECTS_KEY);
        let (eval, _) = arbiter_policy::delegation::evaluate(shadow, &asked);
        let outcome = replay::policy_outcome(shadow, &eval);
        // Decisions not taken by the policies (limits, budgets, approvals, refusals) are
        // not compared.
        let by_policies = replay::decided_by_policies(&decision.determining_policies)
            && !(decision.outcome.is_allow() && replay::narrowed_to_rows(&decision.reason_admin));
        let change = by_policies
            .then(|| replay::compare(decision.outcome, &decision.reason_admin, outcome))
            .flatten();
        if by_policies {
            self.metrics.record_shadow(change);
        }
        req.context.insert(
            replay::SHADOW_KEY.to_owned(),
            serde_json::json!({
                "version": shadow.version(),
                "outcome": outcome.as_str(),
                "determining_policies": eval.determining_policies,
                "change": change.map(replay::Change::as_str),
            }),
        );
    }

    /// Authenticates callers and binds agents to the registry through `identity`.
    pub fn with_identity(mut self, identity: Arc<Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The identity layer, when there is one.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// Binds `req` to `caller` (see [`Identity::resolve`]) and decides it. Without an
    /// identity layer this is [`Pdp::decide_with`].
    pub fn decide_as(
        &self,
        policies: &Policies,
        caller: &Caller,
        req: EvaluationRequest,
        source: &Source<'_>,
    ) -> Decided {
        self.decide_as_narrowing(policies, caller, req, source, false)
    }

    /// [`Pdp::decide_as`]; with `rows`, a request on a table is decided by
    /// [`Pdp::decide_rows`], so that it may be allowed for some of the table's rows.
    ///
    /// May wait on the identity store (see [`Identity::resolve`]); on an async runtime use
    /// [`Pdp::decide_as_narrowing_async`].
    pub fn decide_as_narrowing(
        &self,
        policies: &Policies,
        caller: &Caller,
        mut req: EvaluationRequest,
        source: &Source<'_>,
        rows: bool,
    ) -> Decided {
        let bound = match &self.identity {
            Some(identity) => {
                identity.resolve(policies, caller, &mut req, source, identity::now_us())
            }
            None => unbound(&req),
        };
        self.decide_bound(policies, req, bound, rows, source.session)
    }

    /// Decides `req` once it is bound to its caller, or refuses it as the binding did. The
    /// runtime context ([`sessions`]) takes part when the policies use it.
    pub(crate) fn decide_bound(
        &self,
        policies: &Policies,
        mut req: EvaluationRequest,
        bound: Result<Attribution, Denial>,
        rows: bool,
        session: Option<&str>,
    ) -> Decided {
        let bound = bound.and_then(|attribution| {
            match [
                sessions::SESSION_KEY,
                sessions::EFFECTS_KEY,
                recorder::ENTITIES_KEY,
                replay::SHADOW_KEY,
            ]
            .into_iter()
            .find(|k| req.context.contains_key(*k))
            {
                None => Ok(attribution),
                Some(key) => Err(Denial {
                    reason_admin: format!(
                        "`context.{key}` is set by the decision point (the caller's runtime \
                         context); a request may not set it"
                    ),
                    reason_user: "denied: the request is not valid".to_owned(),
                    credential_id: attribution.credential_id,
                    agent_id: attribution.agent_id,
                }),
            }
        });
        match bound {
            Ok(attribution) => {
                let evaluate = |req: &EvaluationRequest| {
                    if rows {
                        self.decide_rows(policies, req)
                    } else {
                        (self.decide_with(policies, req), None)
                    }
                };
                let (decision, rows) = if sessions::active(policies) {
                    let owner = sessions::owner_of(attribution.agent_id.as_deref(), &req);
                    let redact = |v: &serde_json::Value| match &self.recorder {
                        Some(r) => r.redacted(v),
                        None => v.clone(),
                    };
                    let turn = sessions::Turn {
                        owner: &owner,
                        session: session.unwrap_or(sessions::DEFAULT_SESSION),
                        now_us: identity::now_us(),
                        track: self.recorder.is_some(),
                        approvals: self.identity.as_ref().map(|i| i.store().as_ref()),
                        redact: &redact,
                    };
                    let (d, rows) = self.sessions.decide(policies, turn, &mut req, evaluate);
                    (d, rows.flatten())
                } else {
                    evaluate(&req)
                };
                self.shadow_into(&mut req, &decision);
                Decided {
                    decision,
                    request: Some(req),
                    attribution,
                    rows,
                }
            }
            Err(denial) => Decided {
                decision: self.refuse(policies, &denial),
                attribution: Attribution {
                    agent_id: denial.agent_id,
                    credential_id: denial.credential_id,
                    actor_chain: Vec::new(),
                },
                request: Some(req),
                rows: None,
            },
        }
    }

    /// The runtime-context state (sessions, limits, budgets).
    pub fn sessions(&self) -> &sessions::Sessions {
        &self.sessions
    }

    /// Decides a request that the caller built itself and sent to the decision point
    /// (AuthZEN), as [`Pdp::decide_as_narrowing`] does, except that when the caller is an
    /// agent (its key or token) what it says about the resource is confined by
    /// [`confine_agent_assertions`]: it never becomes an attribute of the resource.
    ///
    /// [`Pdp::decide_as`] and [`Pdp::decide_as_narrowing`] are for enforcement points that
    /// build the request in this process (the embedded gateways, forward-auth): the
    /// attributes there are the enforcement point's, not the agent's. On an async runtime use
    /// [`Pdp::decide_for_caller_async`].
    pub fn decide_for_caller(
        &self,
        policies: &Policies,
        caller: &Caller,
        req: EvaluationRequest,
        source: &Source<'_>,
        rows: bool,
    ) -> Decided {
        match self.confined(policies, caller, req) {
            Ok(req) => self.decide_as_narrowing(policies, caller, req, source, rows),
            Err(refused) => *refused,
        }
    }

    /// `req` with what a calling agent asserts about the resource confined, or its refusal.
    pub(crate) fn confined(
        &self,
        policies: &Policies,
        caller: &Caller,
        mut req: EvaluationRequest,
    ) -> Result<EvaluationRequest, Box<Decided>> {
        if let Caller::Agent(agent) = caller
            && let Err(problem) = confine_agent_assertions(policies, &mut req)
        {
            let denial = Denial {
                reason_admin: problem.to_string(),
                reason_user: "denied: the request is not valid".to_owned(),
                credential_id: Some(agent.credential_id.clone()),
                agent_id: Some(agent.agent.id.clone()),
            };
            return Err(Box::new(Decided {
                decision: self.refuse(policies, &denial),
                attribution: Attribution {
                    agent_id: denial.agent_id,
                    credential_id: denial.credential_id,
                    actor_chain: agent.actor_chain.clone(),
                },
                request: Some(req),
                rows: None,
            }));
        }
        Ok(req)
    }

    /// A deny for a caller refused before evaluation (bad credential, unknown or inactive
    /// agent, subject mismatch).
    pub fn refuse(&self, policies: &Policies, denial: &Denial) -> Decision {
        self.metrics.record_decision(Outcome::Deny, Duration::ZERO);
        stamp(
            Evaluation {
                outcome: Outcome::Deny,
                determining_policies: Vec::new(),
                reason_admin: format!("denied: {}", denial.reason_admin),
                reason_user: denial.reason_user.clone(),
                errors: Vec::new(),
            },
            policies.version(),
            0,
        )
    }

    /// Records every decision in `recorder`, and takes the runtime context (sessions, limits,
    /// budgets) back from the effects its records carry (see [`sessions`]), starting from its
    /// snapshot ([`snapshot`]); snapshots are then kept while the log grows.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        let log = recorder.log();
        let node = recorder.node_id();
        let now = identity::now_us();
        let started = std::time::Instant::now();
        let mut taken = 0;
        match self.sessions.resume(log, node, now) {
            Ok(r) => {
                tracing::info!(
                    snapshot = ?r.snapshot,
                    records_read = r.read,
                    effects_replayed = r.replayed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "runtime context taken back from the decision log"
                );
                // Nothing is decided yet: the state is exactly the log's first `size` records.
                let saved = if r.snapshot == Some(r.size) {
                    Ok(())
                } else {
                    snapshot::save(log, node, r.size, self.sessions.to_snapshot(), now)
                };
                match saved {
                    Ok(()) => taken = r.size,
                    Err(e) => {
                        tracing::warn!(error = %e, "the runtime context snapshot could not be written")
                    }
                }
            }
            // The log opened and verified; a record it cannot decode now would have failed
            // that. Starting with what was read is stricter than nothing; say so.
            Err(e) => {
                tracing::error!(error = %e, "the runtime context could not be read back in full from the decision log")
            }
        }
        snapshot::spawn_keeper(recorder.shared_log(), node.to_owned(), taken);
        self.recorder = Some(recorder);
        self
    }

    /// Closes the decision log (see [`arbiter_log::Log::shutdown`]) and
    /// takes a last snapshot of the runtime context, so the next start reads no records.
    pub fn close_recorder(&self) -> Result<(), String> {
        let Some(recorder) = &self.recorder else {
            return Ok(());
        };
        recorder
            .log()
            .shutdown()
            .map_err(|e| format!("the decision log did not close cleanly: {e}"))?;
        if let Err(e) = snapshot::refresh(recorder.log(), recorder.node_id(), identity::now_us()) {
            tracing::warn!(error = %e, "the runtime context snapshot could not be written at shutdown");
        }
        Ok(())
    }

    /// The decision log, when decisions are recorded.
    pub fn recorder(&self) -> Option<&Recorder> {
        self.recorder.as_ref()
    }

    /// Loads `dir` and serves it; errors if the directory does not load.
    pub fn load(dir: &Path) -> Result<Self, LoadErrors> {
        Ok(Self::new(Policies::load_dir(dir)?, Some(dir.to_path_buf())))
    }

    /// The snapshot in force now. Hold it for the duration of one request (or one batch) so
    /// that every part of it is decided by the same version.
    pub fn snapshot(&self) -> Arc<Policies> {
        self.current.load_full()
    }

    /// Decides one request against the current snapshot.
    pub fn decide(&self, req: &EvaluationRequest) -> Decision {
        let snapshot = self.current.load();
        self.decide_with(&snapshot, req)
    }

    /// Decides one request against a given snapshot (see [`Pdp::snapshot`]).
    ///
    /// When an agent acts for a user (`context.delegation.user`), the user is evaluated as
    /// the principal too, against the same snapshot, and the decision is allow only if both
    /// are (see [`delegation`]).
    pub fn decide_with(&self, policies: &Policies, req: &EvaluationRequest) -> Decision {
        if let Some(evaluation) = builtin_refusal(req) {
            self.metrics.record_decision(Outcome::Deny, Duration::ZERO);
            return stamp(evaluation, policies.version(), 0);
        }
        let start = Instant::now();
        let (evaluation, evaluations) = arbiter_policy::delegation::evaluate(policies, req);
        let elapsed = start.elapsed();
        self.metrics.record_decision(evaluation.outcome, elapsed);
        let mut d = stamp(evaluation, policies.version(), elapsed.as_micros());
        d.evaluations = evaluations;
        d
    }

    /// Decides `req` as [`Pdp::decide_with`] does, then, for a request on a `Table`, looks
    /// at the table's rows ([`Policies::row_policies`]), for the agent and for the user it acts
    /// for:
    ///
    /// - denied only because no policy permits the table as a whole (no forbid, no error):
    ///   if the row policies permit some rows, the decision becomes an allow for those rows;
    /// - allowed as a whole, while some `forbid` may apply to rows: the rows such forbids
    ///   hold for are taken out (all of them: the deny stands, with those forbids).
    ///
    /// An allow for some rows carries the [`RowFilter`]; its determining policies are the
    /// row policies (and the table permits), and its admin reason states the filter. Where
    /// no filter can be stated the answer is a deny that says why.
    ///
    /// Only an enforcement point that applies the filter may ask for this: the allow is
    /// for the filtered rows, never for the table.
    pub fn decide_rows(
        &self,
        policies: &Policies,
        req: &EvaluationRequest,
    ) -> (Decision, Option<RowFilter>) {
        let mut d = self.decide_with(policies, req);
        let allowed = d.outcome.is_allow();
        if !d.errors.is_empty()
            || req.resource.kind != "Table"
            || (!allowed && !d.determining_policies.is_empty())
            || (allowed && !policies.may_forbid_rows())
        {
            return (d, None);
        }
        // Whose policies decide: the agent, and the user it acts for (each evaluated alone).
        let mut principals: Vec<(EvaluationRequest, bool, Vec<String>)> = Vec::new();
        if d.evaluations.is_empty() {
            principals.push((req.clone(), allowed, d.determining_policies.clone()));
        } else {
            for e in &d.evaluations {
                if !e.outcome.is_allow() && !e.determining_policies.is_empty() {
                    return (d, None);
                }
                let subject = if e.kind == req.subject.kind && e.id == req.subject.id {
                    req.subject.clone()
                } else {
                    Entity {
                        kind: e.kind.clone(),
                        id: e.id.clone(),
                        properties: None,
                    }
                };
                principals.push((
                    EvaluationRequest {
                        subject,
                        ..req.clone()
                    },
                    e.outcome.is_allow(),
                    e.determining_policies.clone(),
                ));
            }
        }
        let start = Instant::now();
        let mut filter = RowFilter::default();
        let mut every_row: Vec<String> = Vec::new();
        for (r, table_allowed, table_permits) in principals {
            let mut part = match policies.row_policies(&r) {
                Ok(part) => part,
                Err(problem) => {
                    return (
                        self.no_row_filter(
                            d,
                            &format!("no row filter could be derived: {problem}"),
                        ),
                        None,
                    );
                }
            };
            let forbid_all: Vec<String> = part
                .forbids
                .iter()
                .filter(|(_, c)| *c == RowExpr::Bool(true))
                .map(|(id, _)| id.clone())
                .collect();
            if !forbid_all.is_empty() {
                d.determining_policies = forbid_all;
                return (
                    self.no_row_filter(d, "every row of the table is forbidden"),
                    None,
                );
            }
            if table_allowed {
                if part.forbids.is_empty() {
                    continue;
                }
                // The whole table is permitted; only the forbids narrow it.
                part.permits = table_permits
                    .into_iter()
                    .map(|id| (id, RowExpr::Bool(true)))
                    .collect();
            } else if part.permits.is_empty() {
                return (d, None);
            } else if !part.permits.iter().any(|(_, c)| c.may_hold()) {
                // Each permit's condition is false or an error whatever the row (Cedar keeps
                // `x && false`): a filter would answer "no rows", which reads as "there are
                // none". It is a deny that says so.
                let named: Vec<String> = part
                    .permits
                    .iter()
                    .map(|(id, c)| format!("`{id}` {c}"))
                    .collect();
                d.outcome = Outcome::Deny;
                d.reason_admin = format!(
                    "{}; no row can be allowed for {}: the row permits that apply can never hold for this request: {}",
                    d.reason_admin,
                    part.principal,
                    named.join(", ")
                );
                d.reason_user =
                    "denied: the policies allow no row of this table for this statement".to_owned();
                return (d, None);
            } else if part.forbids.is_empty()
                && part.permits.iter().all(|(_, c)| *c == RowExpr::Bool(true))
            {
                // Every row: no filter is needed for this principal.
                every_row.extend(part.permits.into_iter().map(|(id, _)| id));
                continue;
            }
            filter.parts.push(part);
        }
        if filter.parts.is_empty() {
            if !allowed && !every_row.is_empty() {
                // The row permits hold for every row of the table (and no row forbid applies).
                every_row.sort();
                every_row.dedup();
                d.outcome = Outcome::Allow;
                d.reason_admin = format!(
                    "allowed for every row of the table by {}",
                    every_row
                        .iter()
                        .map(|id| format!("`{id}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                d.determining_policies = every_row;
                d.reason_user = "allowed".to_owned();
            }
            return (d, None);
        }
        d.eval_us = d
            .eval_us
            .saturating_add(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        d.outcome = Outcome::Allow;
        d.determining_policies = filter.policies();
        d.determining_policies.extend(every_row);
        d.determining_policies.sort();
        d.determining_policies.dedup();
        d.reason_admin = format!("{ROWS_ALLOWED} {filter}");
        d.reason_user = "allowed for the rows the policies permit".to_owned();
        (d, Some(filter))
    }

    /// `d` as a deny (it may have been an allow of the whole table) that says why no row
    /// filter stands.
    fn no_row_filter(&self, mut d: Decision, why: &str) -> Decision {
        d.outcome = Outcome::Deny;
        d.reason_admin = format!("{}; {why}", d.reason_admin);
        if d.reason_user == "allowed" {
            d.reason_user = "denied by policy".to_owned();
        }
        d
    }

    /// A deny for a request that could not be understood (e.g. a batch item that lacks a
    /// subject). It is a decision like any other: it has an id and names the version in force.
    pub fn reject(&self, policies: &Policies, problem: &str) -> Decision {
        self.metrics.record_decision(Outcome::Deny, Duration::ZERO);
        stamp(
            Evaluation {
                outcome: Outcome::Deny,
                determining_policies: Vec::new(),
                reason_admin: format!("denied: invalid request: {problem}"),
                reason_user: "denied: the request is not valid".to_owned(),
                errors: vec![problem.to_owned()],
            },
            policies.version(),
            0,
        )
    }

    /// Reloads from the source directory. On error the active snapshot keeps serving and the
    /// error is kept for `/readyz` and the metrics.
    pub fn reload(&self) -> Result<ReloadOutcome, LoadErrors> {
        let Some(dir) = &self.source else {
            return Ok(ReloadOutcome::Unchanged);
        };
        match Policies::load_dir(dir) {
            Ok(next) => Ok(self.install(next)),
            Err(errors) => {
                if self.note_reload_error(&errors.to_string()) {
                    tracing::error!(
                        active = %self.status().active_version,
                        errors = %errors,
                        "policy reload rejected; the active version keeps serving"
                    );
                }
                Err(errors)
            }
        }
    }

    /// Keeps `error` for `/readyz` and the metrics: a new version could not be installed and
    /// the active one keeps serving. `false` when it is the error already kept (the same
    /// rejected content seen again: already counted and logged).
    pub fn note_reload_error(&self, error: &str) -> bool {
        let mut status = self.lock_status();
        if status.last_error.as_deref() == Some(error) {
            return false;
        }
        status.last_error = Some(error.to_owned());
        status.last_error_at = Some(SystemTime::now());
        self.metrics.record_reload(false);
        true
    }

    /// Makes `next` the snapshot decisions are taken with (unchanged when it is the same
    /// version): what a reload does once a directory loaded, and what a governed decision
    /// point does when another version is activated.
    pub fn install(&self, next: Policies) -> ReloadOutcome {
        let from = self.current.load().version().to_owned();
        let to = next.version().to_owned();
        let mut status = self.lock_status();
        status.last_error = None;
        status.last_error_at = None;
        if from == to {
            return ReloadOutcome::Unchanged;
        }
        self.current.store(Arc::new(next));
        status.active_version = to.clone();
        status.loaded_at = SystemTime::now();
        self.metrics.record_reload(true);
        tracing::info!(from = %from, to = %to, "policy version installed");
        ReloadOutcome::Swapped { from, to }
    }

    /// The policy directory this PDP reloads from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub fn status(&self) -> ReloadStatus {
        self.lock_status().clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Prometheus text exposition of this PDP's metrics.
    pub fn render_metrics(&self) -> String {
        let status = self.status();
        let log_healthy = self
            .recorder
            .as_ref()
            .map(|r| matches!(r.health(), arbiter_log::Health::Healthy));
        self.metrics.render(
            &status.active_version,
            status.last_error.is_some(),
            log_healthy,
        )
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        // A poisoned lock only means a panic elsewhere while holding it; the status is plain
        // data and stays meaningful.
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The binding of a request without an identity layer: nothing to look up, only asserted
/// agent attributes to refuse.
pub(crate) fn unbound(req: &EvaluationRequest) -> Result<Attribution, Denial> {
    identity::refuse_asserted_agent_properties(&req.subject).map(|()| Attribution::default())
}

/// Confines what a calling agent asserts about the resource of a request it sent itself:
///
/// - the resource's properties never become its attributes: a resource declared in the
///   policy entities (`entities.json`) keeps exactly its stored attributes, any other gets
///   the attributes the vocabulary derives from its id ([`arbiter_policy::derived_attributes`]:
///   a Tool's `server` and `name` from `server/name`, …) and nothing else;
/// - the asserted properties that differ from those attributes (an assertion that agrees
///   says nothing) are given to policies as `context.asserted` (declared in the built-in
///   vocabulary), so that a policy that wants to use them says so, and anyone reading it
///   sees who asserted them.
///
/// A request whose context already has `asserted` is refused: that key is the decision
/// point's.
pub fn confine_agent_assertions(
    policies: &Policies,
    req: &mut EvaluationRequest,
) -> Result<(), AssertedKeySet> {
    use arbiter_policy::ASSERTED_CONTEXT_KEY;
    if req.context.contains_key(ASSERTED_CONTEXT_KEY) {
        return Err(AssertedKeySet);
    }
    let asserted = req.resource.properties.take();
    let known = if policies.has_entity(&req.resource.kind, &req.resource.id) {
        policies
            .stored_attributes(&req.resource.kind, &req.resource.id)
            .unwrap_or_default()
    } else {
        let derived = arbiter_policy::derived_attributes(&req.resource.kind, &req.resource.id);
        req.resource.properties = (!derived.is_empty()).then(|| derived.clone());
        derived
    };
    // An assertion that agrees with what the decision point knows says nothing: only the
    // rest is kept (so a gateway asking with the agent's key, whose identifying attributes
    // are the derived ones, adds nothing to the context).
    let asserted = asserted
        .map(|mut a| {
            a.retain(|k, v| known.get(k) != Some(v));
            a
        })
        .filter(|a| !a.is_empty());
    if let Some(asserted) = asserted {
        req.context.insert(
            ASSERTED_CONTEXT_KEY.to_owned(),
            serde_json::Value::Object(asserted),
        );
    }
    Ok(())
}

/// A request that sets `context.asserted`, which is the decision point's (see
/// [`confine_agent_assertions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "`context.asserted` is set by the decision point (what a calling agent asserts about the \
     resource); a request may not set it"
)]
pub struct AssertedKeySet;

/// Mints a decision id and stamps an evaluation into a [`Decision`].
fn stamp(e: Evaluation, version: &str, eval_us: u128) -> Decision {
    Decision {
        id: DecisionId::from_minted(uuid::Uuid::now_v7().hyphenated().to_string()),
        outcome: e.outcome,
        policy_version: version.to_owned(),
        determining_policies: e.determining_policies,
        reason_admin: e.reason_admin,
        reason_user: e.reason_user,
        errors: e.errors,
        eval_us: u64::try_from(eval_us).unwrap_or(u64::MAX),
        evaluations: Vec::new(),
        retry_after_s: None,
        approval: None,
    }
}

/// The context member with which an enforcement point reports that it refuses the request
/// whatever the policies say, so that the refusal is decided and recorded like any decision
/// (with the policy version and the agent) instead of happening out of sight:
/// `{"reason": "…", "reason_user"?: "…", "rule"?: "arbiter:…", "decision_id"?: "…"}`.
///
/// The MCP gateway sends it for a tool whose definition changed since it was approved (rule
/// `arbiter:tool-pin`); forward-auth for an original request it cannot read safely; the SQL
/// guard, with the `decision_id` of an allow for some rows that it could not apply, so the log
/// says the allow was not applied. A request that carries it is always denied. Any caller may
/// send it: it can only turn its own question into a deny. `rule` becomes the determining
/// policy only when it names a built-in rule (`arbiter:…`), so a caller cannot make a record
/// name one of the operator's policies.
pub const ENFORCEMENT_REFUSAL: &str = "enforcement_refusal";

/// Longest text kept from an enforcement point's refusal report.
const MAX_REPORT_TEXT: usize = 1024;

/// Refusals that hold whatever the policies say: an enforcement point's
/// ([`ENFORCEMENT_REFUSAL`]).
fn builtin_refusal(req: &EvaluationRequest) -> Option<Evaluation> {
    req.context
        .get(ENFORCEMENT_REFUSAL)
        .map(enforcement_refusal)
}

fn enforcement_refusal(report: &serde_json::Value) -> Evaluation {
    let field = |k: &str| {
        report
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(|s| s.chars().take(MAX_REPORT_TEXT).collect::<String>())
            .filter(|s| !s.trim().is_empty())
    };
    let reason = field("reason").unwrap_or_else(|| "no reason given".to_owned());
    let reason_admin = match field("decision_id") {
        Some(decision) => format!(
            "denied: the enforcement point could not apply the allow `{decision}`: {reason}"
        ),
        None => format!("denied: the enforcement point refused: {reason}"),
    };
    let reason_user = field("reason_user").unwrap_or_else(|| format!("denied: {reason}"));
    let determining_policies = field("rule")
        .filter(|r| r.starts_with("arbiter:") && r.len() <= 64)
        .into_iter()
        .collect();
    Evaluation {
        outcome: Outcome::Deny,
        determining_policies,
        reason_admin,
        reason_user,
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use arbiter_types::Action;
    use serde_json::json;

    fn with_report(report: serde_json::Value) -> EvaluationRequest {
        let body = json!({
            "subject": {"type": "Agent", "id": "a"},
            "action": {"name": "call_tool"},
            "resource": {"type": "Tool", "id": "fs/read"},
            "context": {"enforcement_refusal": report},
        });
        EvaluationRequest::from_json(body.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn an_enforcement_point_refusal_is_a_deny_whatever_the_policies_say() {
        let pdp = Pdp::new(policies(None), None);
        let req = with_report(json!({
            "rule": "arbiter:tool-pin",
            "reason": "tool `fs/read` changed",
            "reason_user": "denied: this tool changed",
        }));
        let d = pdp.decide(&req);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.determining_policies, vec!["arbiter:tool-pin"]);
        assert_eq!(
            d.reason_admin,
            "denied: the enforcement point refused: tool `fs/read` changed"
        );
        assert_eq!(d.reason_user, "denied: this tool changed");
    }

    #[test]
    fn a_reported_enforcement_failure_is_a_deny_naming_the_allow() {
        let refused = builtin_refusal(&with_report(
            json!({"decision_id": "d-1", "reason": "cannot narrow"}),
        ))
        .expect("refused");
        assert_eq!(refused.outcome, Outcome::Deny);
        assert!(refused.reason_admin.contains("`d-1`: cannot narrow"));
        assert_eq!(refused.reason_user, "denied: cannot narrow");
        // Malformed, it is still a deny.
        assert_eq!(
            builtin_refusal(&with_report(json!(7)))
                .expect("refused")
                .outcome,
            Outcome::Deny
        );
    }

    /// A caller cannot make a record name one of the operator's policies.
    #[test]
    fn only_built_in_rules_become_determining_policies() {
        for rule in [
            json!("allow-support"),
            json!("arbiter:".to_owned() + &"x".repeat(80)),
            json!(7),
        ] {
            let refused = builtin_refusal(&with_report(json!({"rule": rule, "reason": "r"})))
                .expect("refused");
            assert!(refused.determining_policies.is_empty(), "{rule}");
        }
    }

    fn policies(entities: Option<&str>) -> Policies {
        Policies::from_sources(
            &[arbiter_policy::SourceFile {
                path: "p.cedar".into(),
                text: "permit(principal, action, resource);".into(),
            }],
            None,
            entities,
        )
        .unwrap()
    }

    fn tool(id: &str, props: serde_json::Value) -> EvaluationRequest {
        EvaluationRequest {
            subject: Entity {
                kind: "Agent".into(),
                id: "bot".into(),
                properties: None,
            },
            action: Action {
                name: "call_tool".into(),
                properties: None,
            },
            resource: Entity {
                kind: "Tool".into(),
                id: id.into(),
                properties: props.as_object().cloned(),
            },
            context: serde_json::Map::new(),
        }
    }

    #[test]
    fn an_agents_assertions_about_the_resource_become_context_asserted() {
        let p = policies(None);
        let mut r = tool(
            "db/drop",
            json!({"server": "db", "name": "select", "pinned": true}),
        );
        confine_agent_assertions(&p, &mut r).unwrap();
        assert_eq!(
            json!(r.resource.properties),
            json!({"server": "db", "name": "drop"})
        );
        // `server` agreed with the id: it says nothing and is dropped.
        assert_eq!(
            r.context["asserted"],
            json!({"name": "select", "pinned": true})
        );
        // A stored entity keeps exactly its stored attributes.
        let p = policies(Some(
            r#"[{"uid": {"type": "Tool", "id": "db/drop"}, "attrs": {"server": "db", "name": "drop", "danger": true}, "parents": []}]"#,
        ));
        let mut r = tool("db/drop", json!({"danger": false}));
        confine_agent_assertions(&p, &mut r).unwrap();
        assert_eq!(r.resource.properties, None);
        assert_eq!(r.context["asserted"], json!({"danger": false}));
        // The key is the decision point's.
        let mut r = tool("db/drop", json!({}));
        r.context.insert("asserted".into(), json!({}));
        assert!(
            confine_agent_assertions(&p, &mut r)
                .unwrap_err()
                .to_string()
                .contains("`context.asserted`")
        );
    }
}
