//! Authentication at the decision point: who is really acting.
//!
//! Enforcement points pass the agent's credential (an `Authorization: Bearer` value, or
//! `ARBITER_AGENT_KEY` for wrapped processes). [`Identity::authenticate`] resolves it — an
//! Arbiter agent key (`arb_…`), a JWT from a configured issuer, or a PEP token (`arbpep_…`)
//! for a third-party enforcement point that asserts the subject itself — and
//! [`Identity::resolve`] then binds the request to the registered agent: its attributes come
//! from the registry (never from the caller), a suspended or retired agent is refused, and an
//! agent id or credential Arbiter does not know is refused and recorded in the discovered-
//! identities inventory.
//!
//! Every refusal is a [`Denial`] with an administrator's reason and a user-safe one that is
//! the same for every credential failure, so that it helps nobody guess keys.
//!
//! Lookups are cached; the cache is dropped whenever the store's generation moves (a change
//! through this process or another one writing the same database), which is checked on every
//! call, so a revocation takes effect on the very next decision. Last-used times and
//! sightings are buffered and written by [`Identity::flush`] (see [`spawn_flusher`]).
//!
//! Every call comes in two forms. [`Identity::authenticate`], [`Identity::resolve`] and
//! [`Identity::authenticate_admin`] may wait — a store read on a cache miss, a key set fetch
//! for a token naming a key not held — and belong on a thread that may block.
//! [`Identity::try_authenticate`], [`Identity::try_resolve`] and
//! [`Identity::try_authenticate_admin`] answer from memory and the store's generation check
//! that waits for nothing ([`Store::generation_now`]), or say [`WouldBlock`]; the async
//! wrappers in [`crate::nonblocking`] use them so that a cache hit costs no thread hop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arbiter_identity::{FingerprintKey, SecretKind, classify, fingerprint};
use arbiter_jwt::Verifier;
use arbiter_policy::Policies;
use arbiter_store::{
    Agent, AgentStatus, Credential, CredentialKind, DiscoveredKind, Sighting, SqliteStore, Store,
    StoreError,
};
use arbiter_types::EvaluationRequest;
use serde_json::{Map, Value, json};

use crate::delegation::{AGENT_TYPE, USER_TYPE};

/// The user-safe reason of every credential refusal.
pub const USER_REASON_CREDENTIAL: &str = "denied: the credential was not accepted";
/// The user-safe reason when the subject is not a known, active agent.
pub const USER_REASON_AGENT: &str = "denied: this agent is not allowed to act";
/// The database file in the data directory.
pub const STORE_FILE: &str = "arbiter.db";
/// The fingerprint key file in the data directory.
pub const FINGERPRINT_KEY_FILE: &str = "fingerprint.key";

/// Pending sightings kept between flushes; beyond this they are counted and dropped.
const MAX_PENDING_SIGHTINGS: usize = 10_000;
/// Cached lookups before the cache is simply cleared.
const MAX_CACHED: usize = 100_000;

/// Who is asking, as authenticated from the credential the enforcement point passed.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An agent, by its own credential.
    Agent(AgentCaller),
    /// A third-party enforcement point (PEP token) asserting the subject itself.
    Pep { credential_id: String },
    /// No credential.
    Anonymous,
}

/// An authenticated agent.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub agent: Arc<Agent>,
    /// `key_…` for an Arbiter key; `jwt:<issuer>` (and `#<jti>`) for a token.
    pub credential_id: String,
    /// The user the agent acts for, from the token's RFC 8693 claims.
    pub on_behalf_of: Option<String>,
    /// Earlier actors of a delegated token (outermost first).
    pub actor_chain: Vec<String>,
}

/// A refusal, before any policy is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason_admin: String,
    pub reason_user: String,
    /// The credential presented, when it could be identified (never the secret).
    pub credential_id: Option<String>,
    pub agent_id: Option<String>,
}

impl Denial {
    fn credential(reason_admin: String, credential_id: Option<String>) -> Self {
        Self {
            reason_admin,
            reason_user: USER_REASON_CREDENTIAL.to_owned(),
            credential_id,
            agent_id: None,
        }
    }
}

/// Where a request came from, for discovery.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The client address.
    pub address: &'a str,
    /// `authzen`, `mcp:<server>`, `http:<service>`, …
    pub enforcement_point: &'a str,
    /// The caller's session, as the enforcement point names it (see [`crate::sessions`]);
    /// `None` is the agent's default session.
    pub session: Option<&'a str>,
}

/// Who a decision is attributed to, in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    pub agent_id: Option<String>,
    pub credential_id: Option<String>,
    /// Earlier actors of a delegated token, recorded in the delegation chain.
    pub actor_chain: Vec<String>,
}

/// An administrator, authenticated by an admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller {
    pub credential_id: String,
    /// `administrator` or `auditor`.
    pub role: String,
}

/// Why an admin token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminDenial {
    /// No token, or not a valid admin token: 401.
    Unauthenticated,
}

/// The answer needs the store or a key set fetch, which may wait: ask again from a thread that
/// may block (the blocking form of the call, or its async wrapper, which does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldBlock;

/// How far a call may go for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// Memory, and the store's generation check that waits for nothing.
    Cached,
    /// Store reads and key set fetches too: only on a thread that may block.
    Blocking,
}

/// Why a call stopped before answering.
#[derive(Debug)]
enum Stop {
    Denied(Denial),
    WouldBlock,
}

impl From<Denial> for Stop {
    fn from(d: Denial) -> Self {
        Stop::Denied(d)
    }
}

/// The answer of a call made with [`Io::Blocking`], which never stops for [`Stop::WouldBlock`];
/// were it to, that is a deny all the same.
fn blocking<T>(result: Result<T, Stop>) -> Result<T, Denial> {
    result.map_err(|stop| match stop {
        Stop::Denied(d) => d,
        Stop::WouldBlock => Denial {
            reason_admin: "denied: the identity lookup could not be completed".to_owned(),
            reason_user: "denied: the request could not be authenticated".to_owned(),
            credential_id: None,
            agent_id: None,
        },
    })
}

/// The answer of a call made with [`Io::Cached`].
fn cached<T>(result: Result<T, Stop>) -> Result<Result<T, Denial>, WouldBlock> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(Stop::Denied(d)) => Ok(Err(d)),
        Err(Stop::WouldBlock) => Err(WouldBlock),
    }
}

/// Settings of the identity layer.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// External token issuers; `None` accepts no JWTs.
    pub jwt: Option<Arc<Verifier>>,
    /// Where the store is; `None`: `arbiter.db` in the data directory.
    pub store: Option<arbiter_store::Location>,
}

#[derive(Debug, Default)]
struct Cache {
    generation: u64,
    agents: HashMap<String, Option<Arc<Agent>>>,
    credentials: HashMap<String, Option<Arc<Credential>>>,
}

#[derive(Debug, Default)]
struct Pending {
    credentials_used: HashMap<String, i64>,
    agents_seen: HashMap<String, i64>,
    sightings: Vec<Sighting>,
    dropped_sightings: u64,
}

/// The identity layer of the PDP.
#[derive(Debug)]
pub struct Identity {
    store: Arc<dyn Store>,
    jwt: Option<Arc<Verifier>>,
    fingerprint_key: FingerprintKey,
    cache: Mutex<Cache>,
    pending: Mutex<Pending>,
}

/// Why the identity layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot open the identity store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read or create the fingerprint key `{path}`: {source}")]
    FingerprintKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The current time in Unix microseconds.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn us_to_system_time(us: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl Identity {
    /// Opens the store (`settings.store`, else `<data>/arbiter.db`) and the fingerprint key
    /// of a data directory.
    pub fn open(data: &Path, settings: IdentitySettings) -> Result<Self, IdentityError> {
        let store = match &settings.store {
            Some(location) => location.open()?,
            None => Arc::new(SqliteStore::open(&data.join(STORE_FILE))?),
        };
        let path = data.join(FINGERPRINT_KEY_FILE);
        let key = FingerprintKey::load_or_create(&path)
            .map_err(|source| IdentityError::FingerprintKey { path, source })?;
        Ok(Self::new(store, key, settings))
    }

    pub fn new(
        store: Arc<dyn Store>,
        fingerprint_key: FingerprintKey,
        settings: IdentitySettings,
    ) -> Self {
        Self {
            store,
            jwt: settings.jwt,
            fingerprint_key,
            cache: Mutex::new(Cache::default()),
            pending: Mutex::new(Pending::default()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Drops every cached lookup (after a change made through this process).
    pub fn invalidate(&self) {
        let mut cache = lock(&self.cache);
        cache.agents.clear();
        cache.credentials.clear();
    }

    /// Makes sure the cache reflects the store's current generation. With [`Io::Cached`] the
    /// check waits for nothing ([`Store::generation_now`]).
    fn sync_cache(&self, io: Io) -> Result<(), Stop> {
        let generation = match io {
            Io::Cached => self.store.generation_now(),
            Io::Blocking => self.store.generation().map(Some),
        };
        let generation = match generation {
            Ok(Some(g)) => g,
            Ok(None) => return Err(Stop::WouldBlock),
            Err(e) => return Err(store_unavailable(&e).into()),
        };
        let mut cache = lock(&self.cache);
        if cache.generation != generation
            || cache.agents.len() > MAX_CACHED
            || cache.credentials.len() > MAX_CACHED
        {
            cache.generation = generation;
            cache.agents.clear();
            cache.credentials.clear();
        }
        Ok(())
    }

    fn agent(&self, id: &str, io: Io) -> Result<Option<Arc<Agent>>, Stop> {
        if let Some(hit) = lock(&self.cache).agents.get(id) {
            return Ok(hit.clone());
        }
        if io == Io::Cached {
            return Err(Stop::WouldBlock);
        }
        let found = self
            .store
            .agent(id)
            .map_err(|e| store_unavailable(&e))?
            .map(Arc::new);
        lock(&self.cache)
            .agents
            .insert(id.to_owned(), found.clone());
        Ok(found)
    }

    fn credential(&self, id: &str, io: Io) -> Result<Option<Arc<Credential>>, Stop> {
        if let Some(hit) = lock(&self.cache).credentials.get(id) {
            return Ok(hit.clone());
        }
        if io == Io::Cached {
            return Err(Stop::WouldBlock);
        }
        let found = self
            .store
            .credential(id)
            .map_err(|e| store_unavailable(&e))?
            .map(Arc::new);
        lock(&self.cache)
            .credentials
            .insert(id.to_owned(), found.clone());
        Ok(found)
    }

    /// Resolves a presented credential (`None`: none was presented). May wait: see
    /// [`Identity::try_authenticate`] for the form that does not.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Caller, Denial> {
        blocking(self.authenticate_in(Io::Blocking, presented, source, now_us))
    }

    /// [`Identity::authenticate`] from memory only: `Err(WouldBlock)` when the answer needs a
    /// store read or a key set fetch. What it leaves behind (a buffered last-used time) is
    /// what the blocking call will leave too, so asking again there is safe.
    pub fn try_authenticate(
        &self,
        presented: Option<&str>,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Result<Caller, Denial>, WouldBlock> {
        cached(self.authenticate_in(Io::Cached, presented, source, now_us))
    }

    fn authenticate_in(
        &self,
        io: Io,
        presented: Option<&str>,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Caller, Stop> {
        let Some(presented) = presented else {
            return Ok(Caller::Anonymous);
        };
        self.sync_cache(io)?;
        match SecretKind::from_prefix_of(presented) {
            Some(SecretKind::AgentKey) => self.authenticate_key(presented, source, now_us, io),
            Some(SecretKind::PepToken) => self.authenticate_pep(presented, source, now_us, io),
            Some(SecretKind::AdminToken) => Err(Denial::credential(
                "an admin token is not an agent credential".to_owned(),
                arbiter_identity::parse(presented)
                    .ok()
                    .map(|p| p.credential_id.clone()),
            )
            .into()),
            None => match &self.jwt {
                Some(verifier) if Verifier::looks_like_jwt(presented) => {
                    self.authenticate_jwt(verifier, presented, source, now_us, io)
                }
                _ => {
                    self.sight_credential(presented, source, now_us);
                    Err(Denial::credential(
                        format!(
                            "unknown credential (looks like: {}); not an Arbiter key{}",
                            classify(presented),
                            if self.jwt.is_some() {
                                " nor a token"
                            } else {
                                ", and no token issuers are configured"
                            }
                        ),
                        None,
                    )
                    .into())
                }
            },
        }
    }

    /// Checks an Arbiter secret of `kind` and returns its credential record.
    fn check_secret(
        &self,
        presented: &str,
        kind: CredentialKind,
        source: &Source<'_>,
        now_us: i64,
        io: Io,
    ) -> Result<Arc<Credential>, Stop> {
        let parsed = match arbiter_identity::parse(presented) {
            Ok(p) => p,
            Err(e) => {
                self.sight_credential(presented, source, now_us);
                return Err(Denial::credential(format!("malformed credential: {e}"), None).into());
            }
        };
        let id = parsed.credential_id.clone();
        let Some(credential) = self.credential(&id, io)? else {
            self.sight_credential(presented, source, now_us);
            return Err(Denial::credential(format!("unknown credential `{id}`"), Some(id)).into());
        };
        // Verify the secret before saying anything about the credential's state.
        if credential.kind != kind || !arbiter_identity::verify(&parsed, &credential.hash) {
            self.sight_credential(presented, source, now_us);
            return Err(Denial::credential(
                format!("wrong secret for credential `{id}`"),
                Some(id),
            )
            .into());
        }
        let known = |mut d: Denial| {
            d.agent_id = credential.agent_id.clone();
            d
        };
        if let Some(at) = credential.revoked_at_us {
            return Err(known(Denial::credential(
                format!(
                    "credential `{id}` was revoked at {}{}",
                    arbiter_log::DecisionRecord {
                        ts_us: at,
                        ..Default::default()
                    }
                    .timestamp(),
                    credential
                        .revoked_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
                Some(id),
            ))
            .into());
        }
        if let Some(exp) = credential.expires_at_us
            && now_us >= exp
        {
            return Err(known(Denial::credential(
                format!(
                    "credential `{id}` expired at {}",
                    arbiter_log::DecisionRecord {
                        ts_us: exp,
                        ..Default::default()
                    }
                    .timestamp()
                ),
                Some(id),
            ))
            .into());
        }
        lock(&self.pending).credentials_used.insert(id, now_us);
        Ok(credential)
    }

    fn authenticate_key(
        &self,
        presented: &str,
        source: &Source<'_>,
        now_us: i64,
        io: Io,
    ) -> Result<Caller, Stop> {
        let credential =
            self.check_secret(presented, CredentialKind::AgentKey, source, now_us, io)?;
        let Some(agent_id) = credential.agent_id.clone() else {
            return Err(Denial::credential(
                format!("credential `{}` belongs to no agent", credential.id),
                Some(credential.id.clone()),
            )
            .into());
        };
        let agent = self.active_agent(&agent_id, Some(&credential.id), now_us, io)?;
        Ok(Caller::Agent(AgentCaller {
            agent,
            credential_id: credential.id.clone(),
            on_behalf_of: None,
            actor_chain: Vec::new(),
        }))
    }

    fn authenticate_pep(
        &self,
        presented: &str,
        source: &Source<'_>,
        now_us: i64,
        io: Io,
    ) -> Result<Caller, Stop> {
        let credential =
            self.check_secret(presented, CredentialKind::PepToken, source, now_us, io)?;
        Ok(Caller::Pep {
            credential_id: credential.id.clone(),
        })
    }

    fn authenticate_jwt(
        &self,
        verifier: &Verifier,
        presented: &str,
        source: &Source<'_>,
        now_us: i64,
        io: Io,
    ) -> Result<Caller, Stop> {
        let now = us_to_system_time(now_us);
        let verified = match io {
            Io::Cached => verifier
                .verify_cached(presented, now)
                .map_err(|arbiter_jwt::NeedsFetch| Stop::WouldBlock)?,
            Io::Blocking => verifier.verify(presented, now),
        };
        let token = match verified {
            Ok(t) => t,
            Err(e) => {
                self.sight_credential(presented, source, now_us);
                return Err(Denial::credential(format!("token refused: {e}"), None).into());
            }
        };
        let credential_id = match &token.token_id {
            Some(jti) => format!("jwt:{}#{jti}", token.issuer),
            None => format!("jwt:{}", token.issuer),
        };
        let Some(agent) = self.agent(&token.agent_id, io)? else {
            self.sight_agent(&token.agent_id, source, now_us);
            return Err(Denial {
                reason_admin: format!(
                    "token from `{}` names agent `{}`, which is not registered",
                    token.issuer, token.agent_id
                ),
                reason_user: USER_REASON_CREDENTIAL.to_owned(),
                credential_id: Some(credential_id),
                agent_id: Some(token.agent_id.clone()),
            }
            .into());
        };
        let agent = self.check_active(agent, Some(&credential_id), now_us)?;
        Ok(Caller::Agent(AgentCaller {
            agent,
            credential_id,
            on_behalf_of: token.on_behalf_of.clone(),
            // The chain starts with the current actor (the agent itself).
            actor_chain: token.actor_chain.get(1..).unwrap_or_default().to_vec(),
        }))
    }

    /// The registered agent `id`, refused unless it is active.
    fn active_agent(
        &self,
        id: &str,
        credential_id: Option<&String>,
        now_us: i64,
        io: Io,
    ) -> Result<Arc<Agent>, Stop> {
        match self.agent(id, io)? {
            Some(agent) => Ok(self.check_active(agent, credential_id, now_us)?),
            None => Err(Denial {
                reason_admin: format!("agent `{id}` is not registered"),
                reason_user: USER_REASON_AGENT.to_owned(),
                credential_id: credential_id.cloned(),
                agent_id: Some(id.to_owned()),
            }
            .into()),
        }
    }

    fn check_active(
        &self,
        agent: Arc<Agent>,
        credential_id: Option<&String>,
        now_us: i64,
    ) -> Result<Arc<Agent>, Denial> {
        if agent.status != AgentStatus::Active {
            return Err(Denial {
                reason_admin: format!("agent `{}` is {}", agent.id, agent.status.as_str()),
                reason_user: if credential_id.is_some() {
                    USER_REASON_CREDENTIAL.to_owned()
                } else {
                    USER_REASON_AGENT.to_owned()
                },
                credential_id: credential_id.cloned(),
                agent_id: Some(agent.id.clone()),
            });
        }
        lock(&self.pending)
            .agents_seen
            .insert(agent.id.clone(), now_us);
        Ok(agent)
    }

    /// Binds a request to the caller: fills or checks the subject, replaces an agent's
    /// attributes with the registry's, refuses unknown or inactive agents, and adds the
    /// token's delegation. Returns who the decision is attributed to. May wait (an `Agent`
    /// subject asked about by a PEP token's holder or an anonymous caller is looked up): see
    /// [`Identity::try_resolve`] for the form that does not. An agent caller is bound without
    /// the store.
    pub fn resolve(
        &self,
        policies: &Policies,
        caller: &Caller,
        req: &mut EvaluationRequest,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Attribution, Denial> {
        blocking(self.resolve_in(Io::Blocking, policies, caller, req, source, now_us))
    }

    /// [`Identity::resolve`] from memory only: `Err(WouldBlock)` when the answer needs a store
    /// read, and then `req` is as it was.
    pub fn try_resolve(
        &self,
        policies: &Policies,
        caller: &Caller,
        req: &mut EvaluationRequest,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Result<Attribution, Denial>, WouldBlock> {
        cached(self.resolve_in(Io::Cached, policies, caller, req, source, now_us))
    }

    fn resolve_in(
        &self,
        io: Io,
        policies: &Policies,
        caller: &Caller,
        req: &mut EvaluationRequest,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Attribution, Stop> {
        let mut attribution = Attribution::default();
        if let Err(mut denial) = refuse_asserted_agent_properties(&req.subject) {
            if let Caller::Agent(a) = caller {
                denial.credential_id = Some(a.credential_id.clone());
            } else if let Caller::Pep { credential_id } = caller {
                denial.credential_id = Some(credential_id.clone());
            }
            return Err(denial.into());
        }
        if let Caller::Agent(a) = caller {
            attribution.agent_id = Some(a.agent.id.clone());
            attribution.credential_id = Some(a.credential_id.clone());
            attribution.actor_chain = a.actor_chain.clone();
            if req.subject.kind != AGENT_TYPE || req.subject.id != a.agent.id {
                return Err(Denial {
                    reason_admin: format!(
                        "the request's subject `{}::\"{}\"` is not the authenticated agent `{}`",
                        req.subject.kind, req.subject.id, a.agent.id
                    ),
                    reason_user: "denied: the request's subject does not match its credential"
                        .to_owned(),
                    credential_id: attribution.credential_id,
                    agent_id: attribution.agent_id,
                }
                .into());
            }
            // The agent's attributes come from the registry only.
            req.subject.properties = Some(agent_properties(&a.agent));
            if let Some(user) = &a.on_behalf_of {
                let reference = json!({"__entity": {"type": USER_TYPE, "id": user}});
                let delegation = req
                    .context
                    .entry("delegation")
                    .or_insert_with(|| Value::Object(Map::new()));
                match delegation.as_object_mut() {
                    Some(d) => {
                        if let Some(claimed) = d.get("user")
                            && crate::delegation::entity_id(claimed) != Some(user.as_str())
                        {
                            return Err(Denial {
                                reason_admin: format!(
                                    "the request says the agent acts for another user than its token (`{user}`)"
                                ),
                                reason_user:
                                    "denied: the delegation in the request does not match the credential"
                                        .to_owned(),
                                credential_id: attribution.credential_id,
                                agent_id: attribution.agent_id,
                            }
                            .into());
                        }
                        d.insert("user".to_owned(), reference);
                    }
                    None => {
                        return Err(Denial {
                            reason_admin: "`context.delegation` must be an object".to_owned(),
                            reason_user: "denied: the request is not valid".to_owned(),
                            credential_id: attribution.credential_id,
                            agent_id: attribution.agent_id,
                        }
                        .into());
                    }
                }
            }
            return Ok(attribution);
        }
        if let Caller::Pep { credential_id } = caller {
            attribution.credential_id = Some(credential_id.clone());
        }
        if req.subject.kind != AGENT_TYPE {
            return Ok(attribution);
        }
        let id = req.subject.id.clone();
        attribution.agent_id = Some(id.clone());
        // INVARIANT: nothing above changed `req` on this path, so stopping for `WouldBlock`
        // here leaves it as it was.
        self.sync_cache(io)?;
        match self.agent(&id, io)? {
            Some(agent) => {
                let agent = self.check_active(agent, None, now_us).map_err(|mut d| {
                    d.credential_id = attribution.credential_id.clone();
                    d
                })?;
                req.subject.properties = Some(agent_properties(&agent));
                Ok(attribution)
            }
            None if policies.has_entity(AGENT_TYPE, &id) => Ok(attribution),
            None => {
                self.sight_agent(&id, source, now_us);
                Err(Denial {
                    reason_admin: format!(
                        "unknown agent `{id}`: not registered and not declared in the policy entities"
                    ),
                    reason_user: USER_REASON_AGENT.to_owned(),
                    credential_id: attribution.credential_id,
                    agent_id: Some(id),
                }
                .into())
            }
        }
    }

    /// Resolves an admin token. May wait: see [`Identity::try_authenticate_admin`].
    pub fn authenticate_admin(
        &self,
        presented: Option<&str>,
        now_us: i64,
    ) -> Result<AdminCaller, AdminDenial> {
        match self.authenticate_admin_in(Io::Blocking, presented, now_us) {
            Ok(admin) => Ok(admin),
            Err(Some(denial)) => Err(denial),
            Err(None) => Err(AdminDenial::Unauthenticated),
        }
    }

    /// [`Identity::authenticate_admin`] from memory only: `Err(WouldBlock)` when the answer
    /// needs a store read.
    pub fn try_authenticate_admin(
        &self,
        presented: Option<&str>,
        now_us: i64,
    ) -> Result<Result<AdminCaller, AdminDenial>, WouldBlock> {
        match self.authenticate_admin_in(Io::Cached, presented, now_us) {
            Ok(admin) => Ok(Ok(admin)),
            Err(Some(denial)) => Ok(Err(denial)),
            Err(None) => Err(WouldBlock),
        }
    }

    /// `Err(None)`: stopped for [`WouldBlock`].
    fn authenticate_admin_in(
        &self,
        io: Io,
        presented: Option<&str>,
        now_us: i64,
    ) -> Result<AdminCaller, Option<AdminDenial>> {
        let refused = |stop: Stop| match stop {
            Stop::Denied(_) => Some(AdminDenial::Unauthenticated),
            Stop::WouldBlock => None,
        };
        let presented = presented.ok_or(AdminDenial::Unauthenticated)?;
        if SecretKind::from_prefix_of(presented) != Some(SecretKind::AdminToken) {
            return Err(Some(AdminDenial::Unauthenticated));
        }
        self.sync_cache(io).map_err(refused)?;
        let source = Source {
            address: "",
            enforcement_point: "admin",
            session: None,
        };
        let credential = self
            .check_secret(presented, CredentialKind::AdminToken, &source, now_us, io)
            .map_err(refused)?;
        let role = credential
            .role
            .clone()
            .ok_or(AdminDenial::Unauthenticated)?;
        Ok(AdminCaller {
            credential_id: credential.id.clone(),
            role,
        })
    }

    fn sight_credential(&self, presented: &str, source: &Source<'_>, now_us: i64) {
        let sighting = Sighting {
            kind: DiscoveredKind::Credential,
            key: fingerprint(&self.fingerprint_key, presented),
            shape: classify(presented).to_owned(),
            source: source.address.to_owned(),
            enforcement_point: source.enforcement_point.to_owned(),
            at_us: now_us,
        };
        self.push_sighting(sighting);
    }

    fn sight_agent(&self, id: &str, source: &Source<'_>, now_us: i64) {
        self.push_sighting(Sighting {
            kind: DiscoveredKind::AgentId,
            key: id.chars().take(256).collect(),
            shape: "agent-id".to_owned(),
            source: source.address.to_owned(),
            enforcement_point: source.enforcement_point.to_owned(),
            at_us: now_us,
        });
    }

    fn push_sighting(&self, sighting: Sighting) {
        let mut pending = lock(&self.pending);
        if pending.sightings.len() >= MAX_PENDING_SIGHTINGS {
            pending.dropped_sightings += 1;
        } else {
            pending.sightings.push(sighting);
        }
    }

    /// Writes buffered last-used times and sightings to the store.
    pub fn flush(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        if pending.dropped_sightings > 0 {
            tracing::warn!(
                dropped = pending.dropped_sightings,
                "discovered-identity sightings dropped: more than {MAX_PENDING_SIGHTINGS} between flushes"
            );
        }
        let used: Vec<(String, i64)> = pending.credentials_used.into_iter().collect();
        let seen: Vec<(String, i64)> = pending.agents_seen.into_iter().collect();
        if !used.is_empty() {
            self.store.touch_credentials(&used)?;
        }
        if !seen.is_empty() {
            self.store.touch_agents(&seen)?;
        }
        if !pending.sightings.is_empty() {
            let report = self.store.record_sightings(&pending.sightings)?;
            if report.dropped > 0 {
                tracing::warn!(
                    dropped = report.dropped,
                    "discovered-identity inventory is full; new identities were not recorded"
                );
            }
        }
        Ok(())
    }
}

/// The user-safe reason when a request asserts attributes of an agent.
pub const USER_REASON_AGENT_ATTRIBUTES: &str =
    "denied: an agent's attributes cannot be set by the request";

/// Refuses a request whose subject is an `Agent` with properties: an agent's attributes
/// come only from the registry or the policy entities, whoever the caller is (an agent, a
/// PEP token, or an anonymous caller). A deny rather than silently dropping them, so that an
/// integration that relies on asserting them finds out at once (see `docs/identity.md`).
pub fn refuse_asserted_agent_properties(subject: &arbiter_types::Entity) -> Result<(), Denial> {
    if subject.kind != AGENT_TYPE {
        return Ok(());
    }
    let Some(props) = subject.properties.as_ref().filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let names: Vec<String> = props.keys().map(|k| format!("`{k}`")).collect();
    Err(Denial {
        reason_admin: format!(
            "the request asserts attributes of agent `{}` ({}); an agent's attributes come only \
             from the registry or the policy entities, never from the request",
            subject.id,
            names.join(", ")
        ),
        reason_user: USER_REASON_AGENT_ATTRIBUTES.to_owned(),
        credential_id: None,
        agent_id: Some(subject.id.clone()),
    })
}

/// The agent as policies see it: the registry's attributes, and nothing else.
pub fn agent_properties(agent: &Agent) -> Map<String, Value> {
    let mut props = Map::new();
    for (k, v) in &agent.attributes {
        props.insert(k.clone(), v.clone());
    }
    props.insert("name".to_owned(), Value::String(agent.name.clone()));
    props.insert("owner".to_owned(), Value::String(agent.owner.clone()));
    props.insert("purpose".to_owned(), Value::String(agent.purpose.clone()));
    props.insert(
        "environment".to_owned(),
        Value::String(agent.environment.as_str().to_owned()),
    );
    props.insert(
        "status".to_owned(),
        Value::String(agent.status.as_str().to_owned()),
    );
    props
}

fn store_unavailable(e: &StoreError) -> Denial {
    tracing::error!(error = %e, "identity store unavailable; denying");
    Denial {
        reason_admin: format!("denied: the identity store is unavailable: {e}"),
        reason_user: "denied: the request could not be authenticated".to_owned(),
        credential_id: None,
        agent_id: None,
    }
}

/// Flushes `identity` every `every` on a background thread until the handle is dropped
/// (which flushes one last time).
/// How often a running decision point writes buffered last-used times and sightings of
/// unknown identities to the store (what `agent list --discovered` reads).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub fn spawn_flusher(identity: Arc<Identity>, every: Duration) -> FlushHandle {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let worker = Arc::clone(&identity);
    let thread = std::thread::Builder::new()
        .name("arbiter-identity-flush".to_owned())
        .spawn(move || {
            loop {
                let done = !matches!(
                    stopped.recv_timeout(every),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if let Err(e) = worker.flush() {
                    tracing::error!(error = %e, "cannot write last-used times and sightings");
                }
                if done {
                    break;
                }
            }
        })
        .ok();
    FlushHandle {
        stop: Some(stop),
        thread,
    }
}

/// Stops the flusher on drop, after a final flush.
#[derive(Debug)]
pub struct FlushHandle {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlushHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
