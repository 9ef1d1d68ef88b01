//! Runtime context: what the decision point remembers between decisions — each agent's
//! sessions (labels, recent calls), and the rate limits and budgets its permits declare
//! (`@session_label`, `@limit`, `@budget`; see [`arbiter_policy::runtime`]).
//!
//! - **Who and which session.** State is kept per agent (the authenticated agent, or the
//!   request's subject without a registry) and, within it, per session id. The session id
//!   comes from the enforcement point ([`crate::Source::session`]: the MCP session, the SQL
//!   connection, `ARBITER_SESSION`, the `Arbiter-Session` header); a request without one is
//!   in the agent's [`DEFAULT_SESSION`]. An agent cannot see or change another agent's
//!   sessions, whatever id it names.
//! - **What policies see.** When some policy reads `context.session`, every request gets it
//!   (a request that brings its own is refused): `{id, labels, calls, calls_last_minute,
//!   calls_last_hour}` — the session's labels, its allowed calls, and its allowed calls of
//!   this action on this resource in the last minute and hour.
//! - **Order.** One agent's decisions are taken one at a time from reading its state to
//!   changing it, so racing calls cannot exceed a limit; different agents do not wait for
//!   each other. Evaluation happens inside that section; recording does not.
//! - **What changes it.** Only an allow changes anything: the call is counted, the labels of
//!   its determining permits join the session, their limits and budgets are charged. A limit
//!   or budget that the allow would exceed turns it into a deny (`arbiter:limit`,
//!   `arbiter:budget`) that says when it resets; a deny changes nothing.
//! - **Evidence and restarts.** What an allow changed is written into its decision record
//!   (`context.session_effects`, added after evaluation), so the change is exactly as durable
//!   as the record: if the record cannot be persisted the decision is a deny and the change is
//!   undone. On start the decision point replays the effects of the records of the last
//!   [`arbiter_policy::runtime::MAX_WINDOW`] (see [`Sessions::replay`]).
//!
//! Memory is bounded: at most [`MAX_SESSIONS_PER_AGENT`] sessions per agent (the least
//! recently used goes), sessions idle for [`SESSION_IDLE`] are forgotten, at most
//! [`MAX_RECENT_CALLS`] recent calls of one action on one resource, and
//! [`MAX_CALL_KEYS`] distinct ones, are kept per session for the counts.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arbiter_policy::Policies;
use arbiter_policy::runtime::{Amount, MAX_WINDOW};
use arbiter_store::{ChargeOutcome, NewCharge};
use arbiter_types::{Decision, EvaluationRequest, Outcome};
use serde_json::{Map, Value, json};

/// The context member policies read the session from.
pub const SESSION_KEY: &str = "session";
/// The context member of a decision record that says what an allow changed.
pub const EFFECTS_KEY: &str = "session_effects";
/// The session of a request that names none.
pub const DEFAULT_SESSION: &str = "default";
/// Longest session id, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// A session idle this long is forgotten.
pub const SESSION_IDLE: Duration = Duration::from_secs(86_400);
/// Sessions kept per agent.
pub const MAX_SESSIONS_PER_AGENT: usize = 256;
/// Recent calls of one action on one resource kept per session (for `calls_last_minute`,
/// `calls_last_hour`).
pub const MAX_RECENT_CALLS: usize = 4_096;
/// Distinct calls (action and resource) counted per session; past this the one called least
/// recently is forgotten.
pub const MAX_CALL_KEYS: usize = 1_024;
/// Decisions whose effects wait for their record; beyond this the oldest are settled.
const MAX_PENDING: usize = 100_000;
/// Charges kept per limit or budget (a limit allows at most
/// [`arbiter_policy::runtime::MAX_LIMIT_CALLS`], so it never reaches this).
const MAX_CHARGES: usize = 1_000_000;
/// Agents (or subjects) whose state is kept; past this the least recently active go.
pub const MAX_AGENTS: usize = 100_000;

const MINUTE_US: i64 = 60_000_000;
/// What one call charges a limit.
const ONE_CALL: Amount = Amount::from_millionths(1_000_000);
const HOUR_US: i64 = 3_600_000_000;

/// Whether `id` may name a session: 1 to [`MAX_SESSION_ID_BYTES`] visible ASCII characters.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The runtime-context state of a decision point.
#[derive(Debug, Default)]
pub struct Sessions {
    agents: Mutex<HashMap<String, Arc<Mutex<AgentState>>>>,
    /// Effects applied for decisions whose records are not yet durable, by decision id.
    pending: Mutex<HashMap<String, Applied>>,
}

#[derive(Debug, Default)]
struct AgentState {
    sessions: HashMap<String, SessionState>,
    /// Allowed calls by limited permit (each charged 1).
    limits: HashMap<String, Charges>,
    /// Charged amounts by budgeted permit.
    budgets: HashMap<String, Charges>,
    last_us: i64,
    /// When [`AgentState::expire`] last ran.
    expired_us: i64,
}

/// Charges in time order and their sum: a sliding window, trimmed as it is read.
#[derive(Debug, Default)]
struct Charges {
    events: VecDeque<(i64, Amount)>,
    sum: Amount,
}

impl Charges {
    /// Forgets the charges at or before `since_us`.
    fn trim(&mut self, since_us: i64) {
        while let Some(&(at, a)) = self.events.front() {
            if at > since_us {
                break;
            }
            self.events.pop_front();
            self.sum = self.sum.saturating_sub(a);
        }
    }

    /// Adds a charge. Past [`MAX_CHARGES`] the two oldest are merged into one at the later
    /// time: the sum stays exact, and it frees up later, never sooner.
    fn push(&mut self, at: i64, amount: Amount) {
        if self.events.len() >= MAX_CHARGES
            && let Some((_, a)) = self.events.pop_front()
            && let Some((_, b)) = self.events.front_mut()
        {
            *b = b.saturating_add(a);
        }
        self.events.push_back((at, amount));
        self.sum = self.sum.saturating_add(amount);
    }

    fn remove(&mut self, at: i64, amount: Amount) {
        if let Some(i) = self.events.iter().rposition(|e| *e == (at, amount)) {
            self.events.remove(i);
            self.sum = self.sum.saturating_sub(amount);
        }
    }

    /// How long until charges adding up to `need` have aged out of `window`.
    fn frees_in(&self, need: Amount, window: i64, now_us: i64) -> Option<i64> {
        let mut freed = Amount::default();
        for (at, a) in &self.events {
            freed = freed.saturating_add(*a);
            if freed >= need {
                return Some(at + window - now_us);
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct SessionState {
    labels: BTreeSet<String>,
    calls: u64,
    /// The times of the last hour's allowed calls, oldest first, by call key (action and
    /// resource).
    recent: HashMap<u64, VecDeque<i64>>,
    last_us: i64,
}

/// Whose decision is taken, and when.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // holds a closure
pub struct Turn<'a> {
    /// The agent (see [`owner_of`]).
    pub owner: &'a str,
    pub session: &'a str,
    pub now_us: i64,
    /// Whether the effects wait for a record ([`Sessions::settle`]).
    pub track: bool,
    /// Where approvals are kept (`@require_approval`); without it such an allow is a deny.
    pub approvals: Option<&'a dyn arbiter_store::Store>,
    /// What an approver is shown of a request's context (redacted as records are).
    pub redact: &'a dyn Fn(&Value) -> Value,
}

/// What one allow changed, to undo it when its record fails, and to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    agent: String,
    session: String,
    ts_us: i64,
    call: u64,
    new_labels: Vec<String>,
    limits: Vec<String>,
    budgets: Vec<(String, Amount)>,
    /// The approval the allow used.
    approval: Option<String>,
    /// Whether limits and budgets were charged in the shared store (under the decision id).
    shared: bool,
}

/// What [`Sessions::resume`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// The size of the snapshot it started from.
    pub snapshot: Option<u64>,
    /// Records read after the snapshot.
    pub read: u64,
    /// Records whose effects were replayed.
    pub replayed: u64,
    /// The log's first `size` records are in the state.
    pub size: u64,
}

/// Who a request's state belongs to: the agent, or `Type::"id"` of a subject without a
/// registry.
pub fn owner_of(agent_id: Option<&str>, req: &EvaluationRequest) -> String {
    match agent_id {
        Some(id) => id.to_owned(),
        None => format!("{}::\"{}\"", req.subject.kind, req.subject.id),
    }
}

fn call_key(req: &EvaluationRequest) -> u64 {
    let mut h = DefaultHasher::new();
    req.action.name.hash(&mut h);
    req.resource.kind.hash(&mut h);
    req.resource.id.hash(&mut h);
    h.finish()
}

/// The key of a call (action and resource) in a shared store: the same on every node, whatever
/// its build (a SHA-256 prefix, not a process-local hash).
fn shared_call_key(req: &EvaluationRequest) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [&req.action.name, &req.resource.kind, &req.resource.id] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..16])
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is plain data: a panic elsewhere leaves it meaningful.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the runtime context takes part in decisions on `policies`.
pub fn active(policies: &Policies) -> bool {
    policies.reads_session() || policies.has_runtime_rules()
}

impl Sessions {
    fn agent(&self, owner: &str) -> Arc<Mutex<AgentState>> {
        let mut agents = lock(&self.agents);
        if let Some(a) = agents.get(owner) {
            return Arc::clone(a);
        }
        if agents.len() >= MAX_AGENTS {
            // The least recently active tenth goes (their limits start again: an agent that
            // many others displace is not one a registry keeps; without a registry the
            // caller names the subject anyway).
            let mut seen: Vec<(i64, String)> = agents
                .iter()
                .map(|(k, v)| (lock(v).last_us, k.clone()))
                .collect();
            seen.sort_unstable();
            for (_, k) in seen.into_iter().take(MAX_AGENTS / 10) {
                agents.remove(&k);
            }
        }
        let a = Arc::new(Mutex::new(AgentState::default()));
        agents.insert(owner.to_owned(), Arc::clone(&a));
        a
    }

    /// Decides `req` for `owner` in `session` with `evaluate`, as the module documentation
    /// says: adds `context.session` when policies read it, applies the limits and budgets of
    /// an allow's determining permits, and records what the allow changes (in
    /// `req.context.session_effects`). `track` says whether the effects must wait for a
    /// record ([`Sessions::settle`]).
    #[allow(clippy::too_many_lines)]
    pub fn decide<R>(
        &self,
        policies: &Policies,
        turn: Turn<'_>,
        req: &mut EvaluationRequest,
        evaluate: impl FnOnce(&EvaluationRequest) -> (Decision, R),
    ) -> (Decision, Option<R>) {
        let Turn {
            owner,
            session,
            now_us,
            track,
            approvals,
            redact,
        } = turn;
        let state = self.agent(owner);
        let mut st = lock(&state);
        st.expire(now_us);
        let call = call_key(req);
        // A store shared by a fleet keeps what every node must agree on: counters (limits,
        // budgets) and the session's labels.
        let shared = approvals.filter(|s| s.shared());
        let mut unreadable = None;
        if policies.reads_session() {
            let mut view = st.view(session, call, now_us);
            if let Some(store) = shared {
                let since = now_us.saturating_sub(micros(SESSION_IDLE));
                match store.session_labels(owner, session, since) {
                    Ok(more) => merge_labels(&mut view, more),
                    Err(e) => unreadable = Some(e),
                }
                if policies.reads_session_calls() {
                    match store.session_calls(owner, session, &shared_call_key(req), since, now_us)
                    {
                        Ok(c) => {
                            view["calls"] = json!(c.calls);
                            view["calls_last_minute"] = json!(c.last_minute);
                            view["calls_last_hour"] = json!(c.last_hour);
                        }
                        Err(e) => unreadable = Some(e),
                    }
                }
            }
            req.context.insert(SESSION_KEY.to_owned(), view);
        }
        let (mut d, extra) = evaluate(req);
        if !d.outcome.is_allow() {
            return (d, Some(extra));
        }
        if let Some(e) = unreadable {
            // The policies read labels this node could not: what it evaluated may miss one.
            session_unavailable(&mut d, &e);
            return (d, None);
        }
        let mut applied = Applied {
            agent: owner.to_owned(),
            session: session.to_owned(),
            ts_us: now_us,
            call,
            new_labels: Vec::new(),
            limits: Vec::new(),
            budgets: Vec::new(),
            approval: None,
            shared: false,
        };
        let give_back = |applied: &Applied, d: &Decision| {
            if applied.shared
                && let Some(store) = shared
            {
                take_back(store, d.id.as_str());
            }
        };
        let mut labels: Vec<&str> = Vec::new();
        let determining = d.determining_policies.clone();
        for id in &determining {
            let Some(rules) = policies.runtime_rules(id) else {
                continue;
            };
            if let Some(limit) = rules.limit
                && let Some(store) = shared
            {
                let charge = NewCharge {
                    key: &format!("limit:{owner}:{id}"),
                    amount: 1,
                    max: i64::try_from(limit.calls).unwrap_or(i64::MAX),
                    window_us: micros(limit.window),
                    decision_id: d.id.as_str(),
                };
                match store.charge(&charge, now_us) {
                    Ok(ChargeOutcome::Charged) => applied.shared = true,
                    refused => {
                        give_back(&applied, &d);
                        let wait = match &refused {
                            Ok(ChargeOutcome::Refused { frees_in_us, .. }) => {
                                frees_in_us.map_or(0, retry_after)
                            }
                            _ => 0,
                        };
                        match refused {
                            Err(e) => counter_unavailable(&mut d, "limit", id, &e),
                            _ => exceeded(
                                &mut d,
                                "arbiter:limit",
                                format!(
                                    "the limit {limit} of policy `{id}` is reached for `{owner}` \
                                     across the fleet; the next call is allowed in {}",
                                    human(wait)
                                ),
                                format!("rate limit reached; retry in {}", human(wait)),
                                wait,
                            ),
                        }
                        return (d, None);
                    }
                }
                applied.limits.push(id.clone());
            } else if let Some(limit) = rules.limit {
                let window = micros(limit.window);
                let calls = st.limits.entry(id.clone()).or_default();
                calls.trim(now_us - window);
                if calls.events.len() as u64 >= limit.calls {
                    // The call that frees a place: the oldest in the window.
                    let oldest = calls.events.front().map_or(now_us, |(at, _)| *at);
                    let wait = retry_after(oldest + window - now_us);
                    exceeded(
                        &mut d,
                        "arbiter:limit",
                        format!(
                            "the limit {limit} of policy `{id}` is reached for `{owner}`; the next \
                             call is allowed in {}",
                            human(wait)
                        ),
                        format!("rate limit reached; retry in {}", human(wait)),
                        wait,
                    );
                    return (d, None);
                }
                applied.limits.push(id.clone());
            }
            if let Some(budget) = &rules.budget {
                let path = budget.path.join(".");
                let Some(amount) = lookup(&req.context, &budget.path).and_then(Amount::of_json)
                else {
                    exceeded(
                        &mut d,
                        "arbiter:budget",
                        format!(
                            "policy `{id}` has the budget {budget}, and the request has no \
                             non-negative number at `context.{path}`"
                        ),
                        format!("`{path}` must be a non-negative number"),
                        0,
                    );
                    return (d, None);
                };
                let window = micros(budget.window);
                if let Some(store) = shared {
                    let as_i64 = |a: Amount| i64::try_from(a.millionths()).unwrap_or(i64::MAX);
                    let charge = NewCharge {
                        key: &format!("budget:{owner}:{id}"),
                        amount: as_i64(amount),
                        max: as_i64(budget.max),
                        window_us: window,
                        decision_id: d.id.as_str(),
                    };
                    match store.charge(&charge, now_us) {
                        Ok(ChargeOutcome::Charged) => applied.shared = true,
                        Ok(ChargeOutcome::Refused { spent, frees_in_us }) => {
                            give_back(&applied, &d);
                            let wait = frees_in_us.map_or(0, retry_after);
                            let spent = Amount::from_millionths(u128::try_from(spent).unwrap_or(0));
                            let left = budget.max.saturating_sub(spent);
                            exceeded(
                                &mut d,
                                "arbiter:budget",
                                format!(
                                    "the budget {budget} of policy `{id}` is exceeded for \
                                     `{owner}` across the fleet: {spent} spent, {left} left, \
                                     {amount} asked{}",
                                    frees_in_us
                                        .map(|_| format!("; enough frees up in {}", human(wait)))
                                        .unwrap_or_default()
                                ),
                                format!(
                                    "budget exceeded: {left} of {} left{}",
                                    budget.max,
                                    frees_in_us
                                        .map(|_| format!("; retry in {}", human(wait)))
                                        .unwrap_or_default()
                                ),
                                wait,
                            );
                            return (d, None);
                        }
                        Err(e) => {
                            give_back(&applied, &d);
                            counter_unavailable(&mut d, "budget", id, &e);
                            return (d, None);
                        }
                    }
                    applied.budgets.push((id.clone(), amount));
                    labels.extend(rules.labels.iter().map(String::as_str));
                    continue;
                }
                let charges = st.budgets.entry(id.clone()).or_default();
                charges.trim(now_us - window);
                let spent = charges.sum;
                if spent.saturating_add(amount) > budget.max {
                    // When enough of the window's charges have aged out for this amount.
                    let need = spent.saturating_add(amount).saturating_sub(budget.max);
                    let when = (amount <= budget.max)
                        .then(|| charges.frees_in(need, window, now_us))
                        .flatten();
                    let wait = when.map_or(0, retry_after);
                    let left = budget.max.saturating_sub(spent);
                    exceeded(
                        &mut d,
                        "arbiter:budget",
                        format!(
                            "the budget {budget} of policy `{id}` is exceeded for `{owner}`: \
                             {spent} spent, {left} left, {amount} asked{}",
                            when.map(|_| format!("; enough frees up in {}", human(wait)))
                                .unwrap_or_default()
                        ),
                        format!(
                            "budget exceeded: {left} of {} left{}",
                            budget.max,
                            when.map(|_| format!("; retry in {}", human(wait)))
                                .unwrap_or_default()
                        ),
                        wait,
                    );
                    return (d, None);
                }
                applied.budgets.push((id.clone(), amount));
            }
            labels.extend(rules.labels.iter().map(String::as_str));
        }
        // Last, once nothing else can turn the allow down: an approval is used only by an
        // allow that stands.
        match crate::approvals::gate(policies, approvals, owner, req, &mut d, now_us, redact) {
            crate::approvals::Gate::Free => {}
            crate::approvals::Gate::Used(id) => applied.approval = Some(id),
            crate::approvals::Gate::Stop => {
                give_back(&applied, &d);
                return (d, None);
            }
        }
        if let Some(store) = shared
            && policies.reads_session_calls()
        {
            let since = now_us.saturating_sub(micros(SESSION_IDLE));
            let counted = store.add_session_call(
                owner,
                session,
                &shared_call_key(req),
                d.id.as_str(),
                since,
                now_us,
            );
            match counted {
                Ok(()) => applied.shared = true,
                Err(e) => {
                    give_back(&applied, &d);
                    session_unavailable(&mut d, &e);
                    return (d, None);
                }
            }
        }
        if let Some(store) = shared
            && !labels.is_empty()
        {
            // Every label of the allow, written before it takes effect: another node may not
            // have seen the ones this node knows.
            let mut all: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
            all.sort();
            all.dedup();
            match store.add_session_labels(owner, session, &all, d.id.as_str(), now_us) {
                Ok(()) => applied.shared = true,
                Err(e) => {
                    give_back(&applied, &d);
                    session_unavailable(&mut d, &e);
                    return (d, None);
                }
            }
        }
        let known = st.sessions.get(session).map(|s| &s.labels);
        let mut new_labels: Vec<String> = labels
            .into_iter()
            .filter(|l| known.is_none_or(|k| !k.contains(*l)))
            .map(str::to_owned)
            .collect();
        new_labels.sort();
        new_labels.dedup();
        applied.new_labels = new_labels;
        st.apply(&applied);
        drop(st);
        req.context
            .insert(EFFECTS_KEY.to_owned(), applied.to_json());
        if track {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                // A decision nobody recorded: keep its effects (the stricter choice).
                pending.clear();
            }
            pending.insert(d.id.as_str().to_owned(), applied);
        }
        (d, Some(extra))
    }

    /// The record of decision `id` is durable (`ok`) or failed: keep or undo its effects
    /// (giving back an approval it used to `approvals`).
    pub fn settle(&self, id: &str, ok: bool, approvals: Option<&dyn arbiter_store::Store>) {
        let Some(applied) = lock(&self.pending).remove(id) else {
            return;
        };
        if !ok {
            let state = self.agent(&applied.agent);
            lock(&state).undo(&applied);
            if applied.shared
                && let Some(store) = approvals
            {
                take_back(store, id);
            }
            if let (Some(approval), Some(store)) = (&applied.approval, approvals)
                && let Err(e) = store.unuse_approval(approval, id)
            {
                tracing::error!(approval = %approval, error = %e, "an approval used by a decision that could not be recorded could not be given back");
            }
        }
    }

    /// Takes the runtime context back from `log` (whose records node `node_id` wrote): its
    /// snapshot when there is one that checks ([`crate::snapshot`]), then the effects of the
    /// allows recorded after it within [`MAX_WINDOW`] of `now_us`, up to the records committed
    /// when it starts.
    pub(crate) fn resume(
        &self,
        log: &arbiter_log::Log,
        node_id: &str,
        now_us: i64,
    ) -> Result<Resumed, String> {
        let mut from = 0;
        let mut snapshot = None;
        match crate::snapshot::load(log, node_id) {
            Ok(None) => {}
            Ok(Some(s)) => match self.restore(&s.state) {
                Ok(()) => {
                    from = s.size;
                    snapshot = Some(s.size);
                }
                Err(e) => {
                    *lock(&self.agents) = HashMap::new();
                    tracing::warn!(error = %e, "the runtime context snapshot is not well formed; reading back the whole window instead");
                }
            },
            Err(e) => tracing::warn!(
                file = %log.dir().join(crate::snapshot::FILE).display(),
                error = %e,
                "the runtime context snapshot cannot be used; reading back the whole window instead"
            ),
        }
        let dir = log.dir();
        let end = log.tree_size();
        let since = now_us.saturating_sub(micros(MAX_WINDOW));
        let by_time = arbiter_log::Follower::since(dir, since).map_err(|e| e.to_string())?;
        let by_index = arbiter_log::Follower::at_record(dir, from).map_err(|e| e.to_string())?;
        let mut follower = if by_time.next_index() > by_index.next_index() {
            by_time
        } else {
            by_index
        };
        let needle = format!("\"{EFFECTS_KEY}\"");
        let (mut replayed, mut read, mut reached) = (0, 0, from.min(end));
        let mut bad = None;
        follower
            .poll_raw(&mut |index, bytes| {
                if index >= end {
                    return std::ops::ControlFlow::Break(());
                }
                reached = index + 1;
                if index < from {
                    return std::ops::ControlFlow::Continue(());
                }
                read += 1;
                // Most records have no effects: only those are decoded.
                if arbiter_log::contains(bytes, needle.as_bytes()) {
                    match arbiter_log::DecisionRecord::from_canonical_bytes(bytes) {
                        Ok(r) => {
                            let allowed = r.outcome == arbiter_log::Outcome::Allow;
                            if self.replay(r.ts_us, allowed, &r.context, now_us) {
                                replayed += 1;
                            }
                        }
                        Err(e) => bad = Some(format!("record {index}: {e}")),
                    }
                }
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        if let Some(e) = bad {
            return Err(e);
        }
        // Records skipped for their age count as covered: they have nothing left to replay.
        let size = if follower.next_index() > end || reached == end {
            end
        } else {
            reached.max(from)
        };
        Ok(Resumed {
            snapshot,
            read,
            replayed,
            size,
        })
    }

    /// Replays the effects written in a decision record's context (see the module
    /// documentation): `ts_us` is the record's time, `allowed` whether it is an allow.
    /// Whether it had effects to replay.
    pub fn replay(&self, ts_us: i64, allowed: bool, context: &Value, now_us: i64) -> bool {
        if !allowed || ts_us <= now_us - micros(MAX_WINDOW) {
            return false;
        }
        let Some(applied) = context
            .get(EFFECTS_KEY)
            .and_then(|e| Applied::from_json(e, ts_us))
        else {
            return false;
        };
        let state = self.agent(&applied.agent);
        let mut st = lock(&state);
        st.expire(now_us);
        st.apply(&applied);
        true
    }

    /// The labels of `owner`'s `session` (for tests and the admin surface).
    pub fn labels(&self, owner: &str, session: &str) -> Vec<String> {
        let state = self.agent(owner);
        let st = lock(&state);
        st.sessions
            .get(session)
            .map(|s| s.labels.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The state in a snapshot ([`crate::snapshot`]): agents by owner, each with its sessions
/// (labels, call count, recent calls by call key), limits and budgets (charges in time order,
/// as `[time, amount]`).
impl Sessions {
    pub(crate) fn to_snapshot(&self) -> Value {
        let agents: Vec<(String, Arc<Mutex<AgentState>>)> = lock(&self.agents)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut out = Map::new();
        for (owner, state) in agents {
            out.insert(owner, lock(&state).to_snapshot());
        }
        json!({ "agents": out })
    }

    /// Replaces the state with the one `v` holds (from [`Sessions::to_snapshot`]); an error
    /// names what is not well formed, and leaves the state as it was.
    pub(crate) fn restore(&self, v: &Value) -> Result<(), String> {
        let agents = v
            .get("agents")
            .and_then(Value::as_object)
            .ok_or("no `agents` object")?;
        if agents.len() > MAX_AGENTS {
            return Err(format!("more than {MAX_AGENTS} agents"));
        }
        let mut out = HashMap::with_capacity(agents.len());
        for (owner, a) in agents {
            let state = AgentState::from_snapshot(a).map_err(|e| format!("agent {owner}: {e}"))?;
            out.insert(owner.clone(), Arc::new(Mutex::new(state)));
        }
        *lock(&self.agents) = out;
        Ok(())
    }
}

impl Charges {
    fn to_snapshot(&self) -> Value {
        Value::Array(
            self.events
                .iter()
                .map(|(at, a)| json!([at, a.to_string()]))
                .collect(),
        )
    }

    fn from_snapshot(v: &Value) -> Result<Charges, String> {
        let list = v.as_array().ok_or("charges are not a list")?;
        if list.len() > MAX_CHARGES {
            return Err(format!("more than {MAX_CHARGES} charges"));
        }
        let mut c = Charges::default();
        let mut last = i64::MIN;
        for e in list {
            let (at, amount) = match e.as_array().map(Vec::as_slice) {
                Some([at, amount]) => (at.as_i64(), amount.as_str().and_then(Amount::parse)),
                _ => (None, None),
            };
            let (Some(at), Some(amount)) = (at, amount) else {
                return Err(format!("a charge is not [time, amount]: {e}"));
            };
            if at < last {
                return Err("charges are not in time order".to_owned());
            }
            last = at;
            c.events.push_back((at, amount));
            c.sum = c.sum.saturating_add(amount);
        }
        Ok(c)
    }
}

impl AgentState {
    fn to_snapshot(&self) -> Value {
        let sessions: Map<String, Value> = self
            .sessions
            .iter()
            .map(|(id, s)| {
                let recent: Map<String, Value> = s
                    .recent
                    .iter()
                    .map(|(k, t)| (format!("{k:016x}"), json!(t)))
                    .collect();
                let v = json!({
                    "labels": s.labels,
                    "calls": s.calls,
                    "last_us": s.last_us,
                    "recent": recent,
                });
                (id.clone(), v)
            })
            .collect();
        let charges = |m: &HashMap<String, Charges>| -> Map<String, Value> {
            m.iter()
                .map(|(k, c)| (k.clone(), c.to_snapshot()))
                .collect()
        };
        json!({
            "last_us": self.last_us,
            "sessions": sessions,
            "limits": charges(&self.limits),
            "budgets": charges(&self.budgets),
        })
    }

    fn from_snapshot(v: &Value) -> Result<AgentState, String> {
        let object = |k: &str| {
            v.get(k)
                .and_then(Value::as_object)
                .ok_or_else(|| format!("no `{k}` object"))
        };
        let mut state = AgentState {
            last_us: v["last_us"].as_i64().ok_or("no `last_us`")?,
            ..AgentState::default()
        };
        let sessions = object("sessions")?;
        if sessions.len() > MAX_SESSIONS_PER_AGENT {
            return Err(format!("more than {MAX_SESSIONS_PER_AGENT} sessions"));
        }
        for (id, s) in sessions {
            let session =
                SessionState::from_snapshot(s).map_err(|e| format!("session {id}: {e}"))?;
            state.sessions.insert(id.clone(), session);
        }
        for (k, into) in [
            ("limits", &mut state.limits),
            ("budgets", &mut state.budgets),
        ] {
            for (id, c) in object(k)? {
                let charges = Charges::from_snapshot(c).map_err(|e| format!("{k} {id}: {e}"))?;
                into.insert(id.clone(), charges);
            }
        }
        Ok(state)
    }
}

impl SessionState {
    fn from_snapshot(v: &Value) -> Result<SessionState, String> {
        let labels = v["labels"]
            .as_array()
            .ok_or("no `labels` list")?
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_owned)
                    .ok_or("a label is not a string")
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let recent_in = v["recent"].as_object().ok_or("no `recent` object")?;
        if recent_in.len() > MAX_CALL_KEYS {
            return Err(format!("more than {MAX_CALL_KEYS} calls"));
        }
        let mut recent = HashMap::with_capacity(recent_in.len());
        for (k, times) in recent_in {
            let key = u64::from_str_radix(k, 16).map_err(|_| format!("call key {k} is not hex"))?;
            let times: VecDeque<i64> = times
                .as_array()
                .filter(|t| t.len() <= MAX_RECENT_CALLS)
                .ok_or_else(|| {
                    format!("the times of call {k} are not a list of at most {MAX_RECENT_CALLS}")
                })?
                .iter()
                .map(|t| t.as_i64().ok_or("a call time is not an integer"))
                .collect::<Result<_, _>>()?;
            if !times.iter().is_sorted() {
                return Err(format!("the times of call {k} are not in order"));
            }
            recent.insert(key, times);
        }
        Ok(SessionState {
            labels,
            calls: v["calls"].as_u64().ok_or("no `calls` count")?,
            recent,
            last_us: v["last_us"].as_i64().ok_or("no `last_us`")?,
        })
    }
}

impl AgentState {
    fn expire(&mut self, now_us: i64) {
        // At most once a second: windows are trimmed again where they are read.
        if now_us < self.expired_us + 1_000_000 && now_us >= self.expired_us {
            return;
        }
        self.expired_us = now_us;
        let idle = micros(SESSION_IDLE);
        self.sessions.retain(|_, s| s.last_us > now_us - idle);
        let longest = now_us - micros(MAX_WINDOW);
        for charges in self.limits.values_mut().chain(self.budgets.values_mut()) {
            charges.trim(longest);
        }
        self.limits.retain(|_, c| !c.events.is_empty());
        self.budgets.retain(|_, c| !c.events.is_empty());
    }

    fn view(&self, session: &str, call: u64, now_us: i64) -> Value {
        let s = self.sessions.get(session);
        // The times are in order: a count is a binary search.
        let times = s.and_then(|s| s.recent.get(&call));
        let count = |window: i64| {
            times.map_or(0, |t| {
                t.len() - t.partition_point(|&at| at <= now_us - window)
            })
        };
        json!({
            "id": session,
            "labels": s.map(|s| s.labels.iter().collect::<Vec<_>>()).unwrap_or_default(),
            "calls": s.map_or(0, |s| s.calls),
            "calls_last_minute": count(MINUTE_US),
            "calls_last_hour": count(HOUR_US),
        })
    }

    fn apply(&mut self, a: &Applied) {
        if !self.sessions.contains_key(&a.session)
            && self.sessions.len() >= MAX_SESSIONS_PER_AGENT
            && let Some(lru) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_us)
                .map(|(k, _)| k.clone())
        {
            self.sessions.remove(&lru);
        }
        let s = self.sessions.entry(a.session.clone()).or_default();
        s.labels.extend(a.new_labels.iter().cloned());
        s.calls += 1;
        if !s.recent.contains_key(&a.call) && s.recent.len() >= MAX_CALL_KEYS {
            // The key whose last call is oldest goes.
            if let Some(oldest) = s
                .recent
                .iter()
                .min_by_key(|(_, t)| t.back().copied().unwrap_or(i64::MIN))
                .map(|(k, _)| *k)
            {
                s.recent.remove(&oldest);
            }
        }
        let times = s.recent.entry(a.call).or_default();
        // Kept in order even when a replayed record is older than the last call.
        let at = times.partition_point(|&t| t <= a.ts_us);
        times.insert(at, a.ts_us);
        while times.len() > MAX_RECENT_CALLS
            || times.front().is_some_and(|&t| t <= a.ts_us - HOUR_US)
        {
            times.pop_front();
        }
        s.last_us = s.last_us.max(a.ts_us);
        for id in &a.limits {
            self.limits
                .entry(id.clone())
                .or_default()
                .push(a.ts_us, ONE_CALL);
        }
        for (id, amount) in &a.budgets {
            self.budgets
                .entry(id.clone())
                .or_default()
                .push(a.ts_us, *amount);
        }
        self.last_us = self.last_us.max(a.ts_us);
    }

    fn undo(&mut self, a: &Applied) {
        if let Some(s) = self.sessions.get_mut(&a.session) {
            for l in &a.new_labels {
                s.labels.remove(l);
            }
            s.calls = s.calls.saturating_sub(1);
            if let Some(times) = s.recent.get_mut(&a.call)
                && let Some(i) = times.iter().rposition(|&t| t == a.ts_us)
            {
                times.remove(i);
            }
        }
        for id in &a.limits {
            if let Some(c) = self.limits.get_mut(id) {
                c.remove(a.ts_us, ONE_CALL);
            }
        }
        for (id, amount) in &a.budgets {
            if let Some(c) = self.budgets.get_mut(id) {
                c.remove(a.ts_us, *amount);
            }
        }
    }
}

impl Applied {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("agent".into(), json!(self.agent));
        out.insert("session".into(), json!(self.session));
        out.insert("call".into(), json!(format!("{:016x}", self.call)));
        // What did not change is left out (records stay small).
        if !self.new_labels.is_empty() {
            out.insert("labels".into(), json!(self.new_labels));
        }
        if !self.limits.is_empty() {
            out.insert("limits".into(), json!(self.limits));
        }
        if !self.budgets.is_empty() {
            let budgets: Map<String, Value> = self
                .budgets
                .iter()
                .map(|(id, a)| (id.clone(), json!(a.to_string())))
                .collect();
            out.insert("budgets".into(), Value::Object(budgets));
        }
        if let Some(a) = &self.approval {
            out.insert("approval".into(), json!(a));
        }
        Value::Object(out)
    }

    fn from_json(v: &Value, ts_us: i64) -> Option<Applied> {
        // A member that is there must be well formed; one that is not is empty.
        let strings = |k: &str| -> Option<Vec<String>> {
            match v.get(k) {
                None => Some(Vec::new()),
                Some(list) => list
                    .as_array()?
                    .iter()
                    .map(|s| s.as_str().map(str::to_owned))
                    .collect(),
            }
        };
        let budgets = match v.get("budgets") {
            None => Vec::new(),
            Some(b) => b
                .as_object()?
                .iter()
                .map(|(id, a)| Some((id.clone(), Amount::parse(a.as_str()?)?)))
                .collect::<Option<Vec<_>>>()?,
        };
        Some(Applied {
            agent: v.get("agent")?.as_str()?.to_owned(),
            session: v.get("session")?.as_str()?.to_owned(),
            ts_us,
            call: u64::from_str_radix(v.get("call")?.as_str()?, 16).ok()?,
            new_labels: strings("labels")?,
            limits: strings("limits")?,
            budgets,
            approval: None,
            // Replayed into this node's memory only: the shared store keeps its own charges.
            shared: false,
        })
    }
}

/// Takes back what decision `id` wrote to the shared store (charges, session labels): it
/// became a deny, or its record could not be written.
fn take_back(store: &dyn arbiter_store::Store, id: &str) {
    if let Err(e) = store.uncharge(id) {
        tracing::error!(decision_id = %id, error = %e, "charges of a decision that did not stand could not be given back");
    }
    if let Err(e) = store.forget_session_effects(id) {
        tracing::error!(decision_id = %id, error = %e, "session labels of a decision that did not stand could not be taken back");
    }
}

/// Adds the labels a shared store holds for the session to the `context.session` view.
fn merge_labels(view: &mut Value, more: Vec<String>) {
    if more.is_empty() {
        return;
    }
    let mut all: BTreeSet<String> = view["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    all.extend(more);
    view["labels"] = json!(all);
}

/// Session labels kept in the shared store that cannot be read or written: a deny (fail
/// closed), since the policies may have missed one.
fn session_unavailable(d: &mut Decision, e: &arbiter_store::StoreError) {
    tracing::error!(error = %e, "the session's labels in the shared store cannot be read or written; denying");
    exceeded(
        d,
        "arbiter:session",
        format!("the session's labels cannot be read or written: {e}"),
        "denied: the session's state cannot be checked right now".to_owned(),
        0,
    );
}

/// A limit or budget kept in the shared store that cannot be checked: a deny (fail closed).
fn counter_unavailable(d: &mut Decision, what: &str, id: &str, e: &arbiter_store::StoreError) {
    tracing::error!(policy = %id, error = %e, "a {what} kept in the shared store cannot be checked; denying");
    exceeded(
        d,
        &format!("arbiter:{what}"),
        format!("the {what} of policy `{id}` cannot be checked: {e}"),
        format!("denied: the {what} cannot be checked right now"),
        0,
    );
}

/// Turns an allow into the deny of a runtime rule.
fn exceeded(d: &mut Decision, rule: &str, admin: String, user: String, retry_after_s: u64) {
    d.outcome = Outcome::Deny;
    d.determining_policies = vec![rule.to_owned()];
    d.reason_admin = format!("denied: {admin}");
    d.reason_user = format!("denied: {user}");
    d.retry_after_s = (retry_after_s > 0).then_some(retry_after_s);
}

fn lookup<'a>(context: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(context.get(first)?, |v, k| v.get(k))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Whole seconds until `us` from now, at least 1.
fn retry_after(us: i64) -> u64 {
    u64::try_from(us.max(0))
        .unwrap_or(0)
        .div_ceil(1_000_000)
        .max(1)
}

/// A wait as people read it: `45s`, `12m 3s`, `2h 5m`.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::{Caller, Decided, Pdp, Source};
    use arbiter_policy::SourceFile;

    const POLICIES: &str = r#"
        @id("read-customers")
        @session_label("private_data")
        permit (principal, action == Action::"select", resource == Table::"customers");

        @id("fetch-web")
        @session_label("untrusted_input")
        permit (principal, action == Action::"call_tool", resource == Tool::"web/fetch");

        @id("send-mail")
        permit (principal, action == Action::"call_tool", resource == Tool::"mail/send");

        @id("lethal-trifecta")
        forbid (principal, action == Action::"call_tool", resource == Tool::"mail/send")
        when { context.session.labels.containsAll(["private_data", "untrusted_input"]) };

        @id("refunds")
        @limit("3/minute")
        @budget("arguments.amount: 100/day")
        permit (principal, action == Action::"call_tool", resource == Tool::"billing/refund");

        @id("pings")
        @limit("10/hour")
        permit (principal, action == Action::"call_tool", resource == Tool::"net/ping");

        @id("hourly-reads")
        permit (principal, action == Action::"call_tool", resource == Tool::"fs/read")
        when { context.session.calls_last_minute < 2 };
    "#;

    fn pdp() -> Pdp {
        let policies = Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: POLICIES.into(),
            }],
            None,
            None,
        )
        .unwrap();
        Pdp::new(policies, None)
    }

    fn request(agent: &str, action: &str, resource: &str, args: Value) -> EvaluationRequest {
        let (kind, id) = resource.split_once("::").unwrap();
        let mut body = json!({
            "subject": {"type": "Agent", "id": agent},
            "action": {"name": action},
            "resource": {"type": kind, "id": id},
        });
        if !args.is_null() {
            body["context"] = json!({ "arguments": args });
        }
        EvaluationRequest::from_json(body.as_object().unwrap().clone()).unwrap()
    }

    fn decide(pdp: &Pdp, session: Option<&str>, req: EvaluationRequest) -> Decided {
        let policies = pdp.snapshot();
        let source = Source {
            address: "127.0.0.1",
            enforcement_point: "authzen",
            session,
        };
        pdp.decide_as(&policies, &Caller::Anonymous, req, &source)
    }

    fn allowed(pdp: &Pdp, agent: &str, session: Option<&str>, resource: &str, args: Value) -> bool {
        let action = if resource.starts_with("Table") {
            "select"
        } else {
            "call_tool"
        };
        decide(pdp, session, request(agent, action, resource, args))
            .decision
            .outcome
            .is_allow()
    }

    #[test]
    fn labels_from_one_call_block_another_in_the_same_session_only() {
        let pdp = pdp();
        let send = |agent, session| allowed(&pdp, agent, session, "Tool::mail/send", Value::Null);
        assert!(send("bot", Some("s1")));
        assert!(allowed(
            &pdp,
            "bot",
            Some("s1"),
            "Table::customers",
            Value::Null
        ));
        assert!(send("bot", Some("s1")), "one label is not the trifecta");
        assert!(allowed(
            &pdp,
            "bot",
            Some("s1"),
            "Tool::web/fetch",
            Value::Null
        ));
        let d = decide(
            &pdp,
            Some("s1"),
            request("bot", "call_tool", "Tool::mail/send", Value::Null),
        );
        assert_eq!(d.decision.outcome, Outcome::Deny);
        assert_eq!(d.decision.determining_policies, ["lethal-trifecta"]);
        // The session the policies saw is in the record's context.
        let seen = &d.request.unwrap().context[SESSION_KEY];
        assert_eq!(seen["labels"], json!(["private_data", "untrusted_input"]));
        assert_eq!(seen["id"], "s1");
        // Another session of the same agent, and the same session id of another agent, are
        // clean.
        assert!(send("bot", Some("s2")));
        assert!(send("other", Some("s1")));
        assert_eq!(
            pdp.sessions().labels("Agent::\"bot\"", "s1"),
            ["private_data", "untrusted_input"]
        );
    }

    #[test]
    fn a_request_without_a_session_is_in_the_agents_default_session() {
        let pdp = pdp();
        assert!(allowed(&pdp, "bot", None, "Table::customers", Value::Null));
        assert!(allowed(&pdp, "bot", None, "Tool::web/fetch", Value::Null));
        assert!(!allowed(&pdp, "bot", None, "Tool::mail/send", Value::Null));
        assert!(allowed(
            &pdp,
            "bot",
            Some("fresh"),
            "Tool::mail/send",
            Value::Null
        ));
    }

    #[test]
    fn a_limit_denies_the_call_over_it_and_says_when_it_resets() {
        let pdp = pdp();
        for _ in 0..3 {
            assert!(allowed(
                &pdp,
                "bot",
                Some("a"),
                "Tool::billing/refund",
                json!({"amount": 1})
            ));
        }
        // Across sessions: the limit is the agent's.
        let d = decide(
            &pdp,
            Some("b"),
            request(
                "bot",
                "call_tool",
                "Tool::billing/refund",
                json!({"amount": 1}),
            ),
        )
        .decision;
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.determining_policies, ["arbiter:limit"]);
        assert!(
            d.reason_admin.contains("3/minute of policy `refunds`"),
            "{}",
            d.reason_admin
        );
        let wait = d.retry_after_s.expect("retry after");
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            d.reason_user
                .starts_with("denied: rate limit reached; retry in")
        );
        // Another agent has its own.
        assert!(allowed(
            &pdp,
            "other",
            None,
            "Tool::billing/refund",
            json!({"amount": 1})
        ));
    }

    #[test]
    fn a_denied_call_changes_nothing() {
        let pdp = pdp();
        // Denied for a missing amount: not counted against the limit.
        for _ in 0..5 {
            assert!(!allowed(
                &pdp,
                "bot",
                None,
                "Tool::billing/refund",
                json!({})
            ));
        }
        for _ in 0..3 {
            assert!(allowed(
                &pdp,
                "bot",
                None,
                "Tool::billing/refund",
                json!({"amount": 1})
            ));
        }
    }

    #[test]
    fn racing_calls_never_exceed_a_limit() {
        let pdp = Arc::new(pdp());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let pdp = Arc::clone(&pdp);
                std::thread::spawn(move || {
                    let session = format!("s{i}");
                    (0..5)
                        .filter(|_| {
                            allowed(&pdp, "bot", Some(&session), "Tool::net/ping", Value::Null)
                        })
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn a_budget_adds_up_exactly_and_refuses_what_is_not_a_number() {
        let pdp = pdp();
        let refund = |amount: Value| {
            decide(
                &pdp,
                None,
                request(
                    "bot",
                    "call_tool",
                    "Tool::billing/refund",
                    json!({ "amount": amount }),
                ),
            )
            .decision
        };
        let decimal = |s: &str| json!({"__extn": {"fn": "decimal", "arg": s}});
        assert!(refund(decimal("60.5")).outcome.is_allow());
        let d = refund(json!(40));
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.determining_policies, ["arbiter:budget"]);
        assert!(
            d.reason_admin.contains("60.5 spent, 39.5 left, 40 asked"),
            "{}",
            d.reason_admin
        );
        assert!(d.retry_after_s.is_some());
        assert!(refund(json!("39.5")).outcome.is_allow());
        // Nothing is left; more than the whole budget never fits (no retry).
        let d = refund(json!(500));
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.retry_after_s, None);
        for bad in [
            json!(-5),
            json!("-5"),
            decimal("-1.5"),
            json!(true),
            json!("1e3"),
        ] {
            let d = refund(bad.clone());
            assert_eq!(d.outcome, Outcome::Deny, "{bad}");
            assert_eq!(d.determining_policies, ["arbiter:budget"], "{bad}");
        }
    }

    #[test]
    fn policies_see_the_calls_of_the_session() {
        let pdp = pdp();
        assert!(allowed(
            &pdp,
            "bot",
            Some("r"),
            "Tool::fs/read",
            Value::Null
        ));
        assert!(allowed(
            &pdp,
            "bot",
            Some("r"),
            "Tool::fs/read",
            Value::Null
        ));
        assert!(!allowed(
            &pdp,
            "bot",
            Some("r"),
            "Tool::fs/read",
            Value::Null
        ));
        assert!(allowed(
            &pdp,
            "bot",
            Some("other"),
            "Tool::fs/read",
            Value::Null
        ));
    }

    /// A shadow version is evaluated beside the active one: enforcement is unchanged, the
    /// shadow verdict (seeing the same session) is kept for the record and counted, decisions
    /// a limit took are not compared, and stopping it stops it.
    #[test]
    fn a_shadow_version_is_evaluated_beside_the_active_one() {
        use crate::replay::SHADOW_KEY;
        let pdp = pdp();
        let shadow = Policies::from_sources(
            &[SourceFile {
                path: "s.cedar".into(),
                text: r#"
                    @id("send-mail") permit (principal, action == Action::"call_tool", resource == Tool::"mail/send");
                    @id("no-mail") forbid (principal, action, resource == Tool::"mail/send");
                    @id("refunds") permit (principal, action == Action::"call_tool", resource == Tool::"billing/refund");
                    @id("reads") permit (principal, action == Action::"call_tool", resource == Tool::"fs/read")
                    when { context.session.calls_last_minute < 100 };
                "#
                .into(),
            }],
            None,
            None,
        )
        .unwrap();
        let version = shadow.version().to_owned();
        pdp.set_shadow(Some(shadow));
        assert_eq!(pdp.shadow_version().as_deref(), Some(version.as_str()));

        let d = decide(
            &pdp,
            Some("s"),
            request("bot", "call_tool", "Tool::mail/send", Value::Null),
        );
        assert!(
            d.decision.outcome.is_allow(),
            "enforcement follows the active version"
        );
        let seen = &d.request.unwrap().context[SHADOW_KEY];
        assert_eq!(seen["version"], version.as_str());
        assert_eq!(seen["outcome"], "deny");
        assert_eq!(seen["change"], "allow->deny");
        assert_eq!(seen["determining_policies"], json!(["no-mail"]));

        // The shadow sees the session the active version saw: the third read in a minute is
        // denied by the active version only.
        for _ in 0..2 {
            assert!(allowed(
                &pdp,
                "bot",
                Some("s"),
                "Tool::fs/read",
                Value::Null
            ));
        }
        let d = decide(
            &pdp,
            Some("s"),
            request("bot", "call_tool", "Tool::fs/read", Value::Null),
        );
        assert!(!d.decision.outcome.is_allow());
        assert_eq!(
            d.request.unwrap().context[SHADOW_KEY]["change"],
            "deny->allow"
        );

        // Over the active version's rate limit: a deny not taken by the policies, recorded
        // with the shadow's verdict and no change.
        for _ in 0..3 {
            assert!(allowed(
                &pdp,
                "bot",
                Some("s"),
                "Tool::billing/refund",
                json!({"amount": 1})
            ));
        }
        let d = decide(
            &pdp,
            Some("s"),
            request(
                "bot",
                "call_tool",
                "Tool::billing/refund",
                json!({"amount": 1}),
            ),
        );
        assert_eq!(d.decision.determining_policies, ["arbiter:limit"]);
        let seen = &d.request.unwrap().context[SHADOW_KEY];
        assert_eq!(seen["outcome"], "allow");
        assert_eq!(seen["change"], Value::Null);

        let metrics = pdp.render_metrics();
        assert!(
            metrics.contains("arbiter_shadow_decisions_total{change=\"allow_to_deny\"} 1")
                && metrics.contains("arbiter_shadow_decisions_total{change=\"deny_to_allow\"} 1"),
            "{metrics}"
        );
        pdp.set_shadow(None);
        let d = decide(
            &pdp,
            Some("s"),
            request("bot", "call_tool", "Tool::mail/send", Value::Null),
        );
        assert!(!d.request.unwrap().context.contains_key(SHADOW_KEY));
    }

    #[test]
    fn a_caller_cannot_bring_its_own_session_or_effects() {
        let pdp = pdp();
        // Nor the recorded entities a replay reads.
        for key in [
            SESSION_KEY,
            EFFECTS_KEY,
            crate::recorder::ENTITIES_KEY,
            crate::replay::SHADOW_KEY,
        ] {
            let mut req = request("bot", "call_tool", "Tool::mail/send", Value::Null);
            req.context.insert(key.into(), json!({"labels": []}));
            let d = decide(&pdp, None, req).decision;
            assert_eq!(d.outcome, Outcome::Deny, "{key}");
            assert!(
                d.reason_admin.contains(&format!("`context.{key}`")),
                "{}",
                d.reason_admin
            );
        }
    }

    #[test]
    fn effects_undo_when_their_record_fails_and_replay_from_the_record() {
        let pdp = pdp();
        let sessions = &pdp.sessions;
        let policies = pdp.snapshot();
        let mut req = request("bot", "select", "Table::customers", Value::Null);
        let keep = |v: &Value| v.clone();
        let turn = |track| Turn {
            owner: "bot",
            session: "s",
            now_us: 1_000_000_000,
            track,
            approvals: None,
            redact: &keep,
        };
        let (d, _) = sessions.decide(&policies, turn(true), &mut req, |r| {
            (pdp.decide_with(&policies, r), ())
        });
        assert_eq!(sessions.labels("bot", "s"), ["private_data"]);
        sessions.settle(d.id.as_str(), false, None);
        assert!(sessions.labels("bot", "s").is_empty());

        // The record's context carries what the allow changed; another decision point takes
        // it back from there.
        let effects = req.context[EFFECTS_KEY].clone();
        assert_eq!(effects["labels"], json!(["private_data"]));
        let fresh = Sessions::default();
        let ctx = json!({ EFFECTS_KEY: effects });
        assert!(fresh.replay(1_000_000_000, true, &ctx, 1_000_000_001));
        assert_eq!(fresh.labels("bot", "s"), ["private_data"]);
        // Denies, records past the longest window and malformed effects are not replayed.
        assert!(!fresh.replay(1_000_000_000, false, &ctx, 1_000_000_001));
        assert!(!fresh.replay(0, true, &ctx, micros(MAX_WINDOW) + 1));
        assert!(!fresh.replay(1, true, &json!({ EFFECTS_KEY: {"agent": 7} }), 2));
    }

    /// Records written by a process whose clock was ahead: their charges count until their
    /// own time leaves the window (stricter, never looser), and nothing breaks.
    #[test]
    fn effects_from_a_clock_ahead_count_until_their_own_time_leaves_the_window() {
        let pdp = pdp();
        let now = crate::identity::now_us();
        let ahead = now + 30_000_000;
        let effects = |n: u64| {
            json!({ EFFECTS_KEY: {
                "agent": "Agent::\"bot\"", "session": "s", "call": format!("{n:016x}"),
                "labels": [], "limits": ["refunds"], "budgets": {"refunds": "1"},
            }})
        };
        for n in 0..3 {
            assert!(pdp.sessions.replay(ahead, true, &effects(n), now));
        }
        // The limit of 3 a minute is used up by the three records "from the future".
        let d = decide(
            &pdp,
            Some("s"),
            request(
                "bot",
                "call_tool",
                "Tool::billing/refund",
                json!({"amount": 1}),
            ),
        )
        .decision;
        assert_eq!(
            d.determining_policies,
            ["arbiter:limit"],
            "{}",
            d.reason_admin
        );
        assert!(d.retry_after_s.unwrap() > 60, "{:?}", d.retry_after_s);
    }

    /// The log that cannot persist: the decision is a deny and the session is as before.
    #[tokio::test]
    async fn an_allow_whose_record_fails_changes_nothing() {
        let data = tempfile::tempdir().unwrap();
        let fault = arbiter_log::FaultSwitch::new();
        let (recorder, _) = crate::Recorder::open(
            data.path(),
            crate::RecorderSettings {
                fault: Some(fault.hook()),
                ..crate::RecorderSettings::default()
            },
        )
        .unwrap();
        let policies = pdp().snapshot();
        let pdp = Pdp::new(
            Policies::from_sources(
                &[SourceFile {
                    path: "p.cedar".into(),
                    text: POLICIES.into(),
                }],
                None,
                None,
            )
            .unwrap(),
            None,
        )
        .with_recorder(recorder);
        let read = || {
            let d = decide(
                &pdp,
                Some("s"),
                request("bot", "select", "Table::customers", Value::Null),
            );
            (d.decision, d.request.unwrap())
        };
        // Recorded: the label stays. (The fetch label is another session's.)
        let fetch = decide(
            &pdp,
            Some("t"),
            request("bot", "call_tool", "Tool::web/fetch", Value::Null),
        );
        let ok = pdp
            .record(fetch.request.as_ref(), fetch.decision, "authzen", None)
            .await;
        assert!(ok.is_ok());
        assert_eq!(
            pdp.sessions().labels("Agent::\"bot\"", "t"),
            ["untrusted_input"]
        );
        fault
            .fail_next_write
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (d, req) = read();
        assert!(d.outcome.is_allow());
        assert_eq!(
            pdp.sessions().labels("Agent::\"bot\"", "s"),
            ["private_data"]
        );
        let recorded = pdp.record(Some(&req), d, "authzen", None).await;
        assert!(recorded.is_err(), "the record must fail");
        assert!(pdp.sessions().labels("Agent::\"bot\"", "s").is_empty());
        drop(policies);
    }

    fn recorder(data: &std::path::Path) -> crate::Recorder {
        crate::Recorder::open(data, crate::RecorderSettings::default())
            .unwrap()
            .0
    }

    /// What a start on `data` takes back, and the decision point it starts.
    fn restart(data: &std::path::Path) -> (Resumed, Pdp) {
        let recorder = recorder(data);
        let resumed = Sessions::default()
            .resume(
                recorder.log(),
                recorder.node_id(),
                crate::identity::now_us(),
            )
            .unwrap();
        (resumed, pdp().with_recorder(recorder))
    }

    /// Decides and records a refund by `agent`; whether it was allowed.
    async fn refund(pdp: &Pdp, agent: &str) -> bool {
        let d = decide(
            pdp,
            None,
            request(
                agent,
                "call_tool",
                "Tool::billing/refund",
                json!({"amount": 1}),
            ),
        );
        let allowed = d.decision.outcome.is_allow();
        pdp.record(d.request.as_ref(), d.decision, "authzen", None)
            .await
            .unwrap();
        allowed
    }

    /// A restart takes the runtime context from the snapshot written when the log closed,
    /// without reading a record; the limit holds across it.
    #[tokio::test]
    async fn a_restart_takes_the_runtime_context_from_its_snapshot() {
        let data = tempfile::tempdir().unwrap();
        let pdp = pdp().with_recorder(recorder(data.path()));
        for _ in 0..3 {
            assert!(refund(&pdp, "bot").await);
        }
        assert!(!refund(&pdp, "bot").await, "three a minute");
        pdp.close_recorder().unwrap();
        drop(pdp);

        let (resumed, pdp) = restart(data.path());
        let size = pdp.recorder().unwrap().log().tree_size();
        assert_eq!(
            resumed,
            Resumed {
                snapshot: Some(size),
                read: 0,
                replayed: 0,
                size,
            }
        );
        assert!(!refund(&pdp, "bot").await, "the limit outlives the restart");
        assert!(refund(&pdp, "someone-else").await);
    }

    /// A snapshot that is forged, another log's, or not a snapshot is set aside and the
    /// records are read instead; an older snapshot put back is still exact.
    #[tokio::test]
    async fn a_snapshot_that_does_not_check_is_set_aside() {
        let data = tempfile::tempdir().unwrap();
        let first_node = pdp().with_recorder(recorder(data.path()));
        for _ in 0..3 {
            assert!(refund(&first_node, "bot").await);
        }
        first_node.close_recorder().unwrap();
        drop(first_node);
        let file = data.path().join("log").join(crate::snapshot::FILE);
        let good = std::fs::read_to_string(&file).unwrap();
        let restarted = |content: &str| {
            std::fs::write(&file, content).unwrap();
            restart(data.path())
        };

        // Forged: the state emptied, the signature kept.
        let (body, signature) = good.trim_end().split_once('\n').unwrap();
        let mut forged: Value = serde_json::from_str(body).unwrap();
        forged["state"] = json!({"agents": {}});
        let (resumed, node) = restarted(&format!("{forged}\n{signature}\n"));
        assert_eq!(resumed.snapshot, None);
        assert_eq!(resumed.replayed, 3);
        assert!(
            !refund(&node, "bot").await,
            "the charges come back from the records"
        );
        node.close_recorder().unwrap();
        drop(node);

        // Another log's snapshot, signed with that log's key.
        let other = tempfile::tempdir().unwrap();
        let elsewhere = pdp().with_recorder(recorder(other.path()));
        assert!(refund(&elsewhere, "bot").await);
        elsewhere.close_recorder().unwrap();
        let foreign =
            std::fs::read_to_string(other.path().join("log").join(crate::snapshot::FILE)).unwrap();
        let (resumed, node) = restarted(&foreign);
        assert_eq!(resumed.snapshot, None);
        assert_eq!(
            resumed.replayed, 3,
            "this log's three refunds, not the other log's"
        );
        assert!(!refund(&node, "bot").await);
        node.close_recorder().unwrap();
        drop(node);

        // Not a snapshot at all.
        let (resumed, node) = restarted("{}\n");
        assert_eq!(resumed.snapshot, None);
        node.close_recorder().unwrap();
        drop(node);

        // The first snapshot put back after more decisions: the records after it are read.
        let (resumed, node) = restarted(&good);
        let first = resumed.snapshot.expect("the first snapshot checks");
        assert!(refund(&node, "ann").await);
        assert!(refund(&node, "ann").await);
        node.close_recorder().unwrap();
        drop(node);
        let (resumed, node) = restarted(&good);
        assert_eq!(resumed.snapshot, Some(first));
        assert_eq!(resumed.read, resumed.size - first);
        assert!(resumed.replayed >= 2);
        assert!(refund(&node, "ann").await, "the third of three");
        assert!(!refund(&node, "ann").await);
        assert!(!refund(&node, "bot").await);
    }

    /// The state goes through a snapshot unchanged; a malformed one is refused whole.
    #[test]
    fn the_state_goes_through_a_snapshot_unchanged() {
        let pdp = pdp();
        assert!(allowed(
            &pdp,
            "bot",
            Some("s1"),
            "Table::customers",
            Value::Null
        ));
        assert!(allowed(
            &pdp,
            "bot",
            Some("s1"),
            "Tool::fs/read",
            Value::Null
        ));
        assert!(allowed(
            &pdp,
            "bot",
            None,
            "Tool::billing/refund",
            json!({"amount": 40})
        ));
        assert!(allowed(
            &pdp,
            "eve",
            Some("x"),
            "Tool::net/ping",
            Value::Null
        ));
        let state = pdp.sessions().to_snapshot();
        let copy = Sessions::default();
        copy.restore(&state).unwrap();
        assert_eq!(copy.to_snapshot(), state);
        assert_eq!(copy.labels("Agent::\"bot\"", "s1"), ["private_data"]);

        for (path, bad) in [
            ("/agents", json!([])),
            ("/agents/Agent::\"bot\"/sessions/s1/labels", json!([1])),
            ("/agents/Agent::\"bot\"/limits/refunds", json!([[1, "x"]])),
            (
                "/agents/Agent::\"bot\"/budgets/refunds",
                json!([[5, "1"], [4, "1"]]),
            ),
            ("/agents/Agent::\"bot\"/last_us", json!("soon")),
        ] {
            let mut broken = state.clone();
            *broken.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = bad;
            let target = Sessions::default();
            target.restore(&state).unwrap();
            let e = target.restore(&broken).unwrap_err();
            assert!(!e.is_empty(), "{path}");
            assert_eq!(target.to_snapshot(), state, "{path}: left as it was");
        }
    }

    #[test]
    fn session_ids_are_bounded_visible_ascii() {
        assert!(valid_session_id("mcp:0190-abc"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("a b"));
        assert!(!valid_session_id("é"));
        assert!(!valid_session_id(&"x".repeat(MAX_SESSION_ID_BYTES + 1)));
    }
}
