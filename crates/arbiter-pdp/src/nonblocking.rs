//! The decision path on an async runtime, without blocking the runtime's threads.
//!
//! The identity layer's lookups can wait: a credential or an agent that is not cached is a
//! store read, which may wait up to the store's busy timeout for another process; a token
//! naming a key its issuer's cached set lacks is an HTTP fetch of the key set. On a runtime
//! thread such a wait stalls every other request that thread serves.
//!
//! So each call here first asks the identity layer from memory
//! ([`Identity::try_authenticate`] and the like: the cache and the store's generation check
//! that waits for nothing). A cache hit is answered on the spot, with no thread hop. Only what
//! memory cannot answer goes to the blocking pool (`spawn_blocking`), bounded by
//! [`LOOKUP_TIMEOUT`]; a lookup that fails or runs out of time is a deny that says so.
//!
//! These functions need a Tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use arbiter_policy::Policies;
use arbiter_types::EvaluationRequest;

use crate::identity::{AdminCaller, AdminDenial, WouldBlock};
use crate::{Attribution, Caller, Decided, Denial, Identity, Pdp, Source};

/// Longest time an identity lookup may take on the blocking pool before the request is
/// refused. Longer than the store's busy timeout and a key set fetch (5 s each), so that
/// their own errors, which say more, come first.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(6);

/// A [`Source`] that can move to another thread.
struct OwnedSource {
    address: String,
    enforcement_point: String,
    session: Option<String>,
}

impl OwnedSource {
    fn of(source: &Source<'_>) -> Self {
        Self {
            address: source.address.to_owned(),
            enforcement_point: source.enforcement_point.to_owned(),
            session: source.session.map(str::to_owned),
        }
    }

    fn source(&self) -> Source<'_> {
        Source {
            address: &self.address,
            enforcement_point: &self.enforcement_point,
            session: self.session.as_deref(),
        }
    }
}

/// Why a lookup on the blocking pool gave no answer.
enum Offloaded {
    TimedOut,
    Failed(String),
}

/// Runs `f` on the blocking pool, for at most [`LOOKUP_TIMEOUT`].
async fn offload<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Offloaded> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(Offloaded::Failed(e.to_string())),
        Err(_) => Err(Offloaded::TimedOut),
    }
}

/// What went wrong, for the operator (logged here) and the record.
fn unanswered_reason(why: &Offloaded) -> String {
    let reason = match why {
        Offloaded::TimedOut => format!(
            "the identity lookup did not finish within {} s (the identity store or a token \
             issuer's key set is too slow)",
            LOOKUP_TIMEOUT.as_secs()
        ),
        Offloaded::Failed(e) => format!("the identity lookup failed: {e}"),
    };
    tracing::error!(reason = %reason, "identity lookup gave no answer; denying");
    reason
}

/// The deny for a lookup that gave no answer.
fn unanswered(why: &Offloaded) -> Denial {
    Denial {
        reason_admin: format!("denied: {}", unanswered_reason(why)),
        reason_user: "denied: the request could not be authenticated".to_owned(),
        credential_id: None,
        agent_id: None,
    }
}

impl Identity {
    /// [`Identity::authenticate`] without blocking the runtime: from memory when it can, on
    /// the blocking pool when it cannot.
    pub async fn authenticate_async(
        self: &Arc<Self>,
        presented: Option<&str>,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Caller, Denial> {
        if let Ok(answer) = self.try_authenticate(presented, source, now_us) {
            return answer;
        }
        let identity = Arc::clone(self);
        let presented = presented.map(str::to_owned);
        let source = OwnedSource::of(source);
        offload(move || identity.authenticate(presented.as_deref(), &source.source(), now_us))
            .await
            .unwrap_or_else(|why| Err(unanswered(&why)))
    }

    /// [`Identity::resolve`] without blocking the runtime: from memory when it can, on the
    /// blocking pool when it cannot.
    pub async fn resolve_async(
        self: &Arc<Self>,
        policies: &Arc<Policies>,
        caller: &Caller,
        req: &mut EvaluationRequest,
        source: &Source<'_>,
        now_us: i64,
    ) -> Result<Attribution, Denial> {
        if let Ok(answer) = self.try_resolve(policies, caller, req, source, now_us) {
            return answer;
        }
        // `req` is as it was (see `try_resolve`): bind a copy there, keep what it became.
        let identity = Arc::clone(self);
        let policies = Arc::clone(policies);
        let caller = caller.clone();
        let mut bound = req.clone();
        let source = OwnedSource::of(source);
        let answer = offload(move || {
            let attribution =
                identity.resolve(&policies, &caller, &mut bound, &source.source(), now_us);
            (attribution, bound)
        })
        .await;
        match answer {
            Ok((attribution, bound)) => {
                *req = bound;
                attribution
            }
            Err(why) => Err(unanswered(&why)),
        }
    }

    /// [`Identity::authenticate_admin`] without blocking the runtime: from memory when it
    /// can, on the blocking pool when it cannot. A lookup that gives no answer refuses.
    pub async fn authenticate_admin_async(
        self: &Arc<Self>,
        presented: Option<&str>,
        now_us: i64,
    ) -> Result<AdminCaller, AdminDenial> {
        match self.try_authenticate_admin(presented, now_us) {
            Ok(answer) => answer,
            Err(WouldBlock) => {
                let identity = Arc::clone(self);
                let presented = presented.map(str::to_owned);
                offload(move || identity.authenticate_admin(presented.as_deref(), now_us))
                    .await
                    .unwrap_or_else(|why| {
                        unanswered_reason(&why);
                        Err(AdminDenial::Unauthenticated)
                    })
            }
        }
    }
}

impl Pdp {
    /// Where the policies may need an approval, records the approval steps decided since
    /// first, so that a step is in the log before the allow that uses it (see
    /// [`Pdp::record_approval_steps`]).
    async fn approval_steps_first(&self, policies: &Policies) {
        if policies.has_approval_rules()
            && let Err(e) = self.record_approval_steps().await
        {
            tracing::warn!(error = %e, "approval steps could not be recorded yet");
        }
    }

    /// [`Pdp::decide_as_narrowing`] without blocking the runtime.
    pub async fn decide_as_narrowing_async(
        &self,
        policies: &Arc<Policies>,
        caller: &Caller,
        mut req: EvaluationRequest,
        source: &Source<'_>,
        rows: bool,
    ) -> Decided {
        let bound = match self.identity() {
            Some(identity) => {
                identity
                    .resolve_async(
                        policies,
                        caller,
                        &mut req,
                        source,
                        crate::identity::now_us(),
                    )
                    .await
            }
            None => crate::unbound(&req),
        };
        self.decide_bound(policies, req, bound, rows, source.session)
    }

    /// [`Pdp::decide_for_caller`] without blocking the runtime.
    pub async fn decide_for_caller_async(
        &self,
        policies: &Arc<Policies>,
        caller: &Caller,
        req: EvaluationRequest,
        source: &Source<'_>,
        rows: bool,
    ) -> Decided {
        self.approval_steps_first(policies).await;
        match self.confined(policies, caller, req) {
            Ok(req) => {
                self.decide_as_narrowing_async(policies, caller, req, source, rows)
                    .await
            }
            Err(refused) => *refused,
        }
    }

    /// [`Pdp::decide_for_agent_narrowing`] without blocking the runtime.
    pub async fn decide_for_agent_narrowing_async(
        &self,
        policies: &Policies,
        credential: Option<&str>,
        source: &Source<'_>,
        requests: Vec<(EvaluationRequest, bool)>,
    ) -> Vec<Decided> {
        self.approval_steps_first(policies).await;
        let caller = match self.identity() {
            Some(identity) => {
                identity
                    .authenticate_async(credential, source, crate::identity::now_us())
                    .await
            }
            None => Ok(Caller::Anonymous),
        };
        self.decide_for_authenticated(policies, caller, source, requests)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::IdentitySettings;
    use crate::identity::now_us;
    use arbiter_store::{Actor, Environment, NewAgent};

    fn identity() -> (tempfile::TempDir, Arc<Identity>, String, String) {
        let data = tempfile::tempdir().unwrap();
        let identity = Arc::new(Identity::open(data.path(), IdentitySettings::default()).unwrap());
        let store = identity.store();
        let actor = Actor::system("tests");
        store
            .register_agent(
                &NewAgent {
                    id: "bot".into(),
                    name: "bot".into(),
                    owner: "team@example.com".into(),
                    purpose: String::new(),
                    environment: Environment::Prod,
                    attributes: serde_json::Map::new(),
                },
                &actor,
                now_us(),
            )
            .unwrap();
        let issued =
            crate::admin::issue_key(store.as_ref(), "bot", "k", None, &actor, now_us()).unwrap();
        let key = issued.secret.expose().to_owned();
        (data, identity, key, issued.credential.id)
    }

    const SOURCE: Source<'static> = Source {
        address: "127.0.0.1",
        enforcement_point: "authzen",
        session: None,
    };

    #[tokio::test]
    async fn a_cache_miss_goes_to_the_blocking_pool_and_a_hit_is_answered_in_place() {
        let (_data, identity, key, credential_id) = identity();
        // Nothing cached: the answer needs the store.
        assert_eq!(
            identity
                .try_authenticate(Some(&key), &SOURCE, now_us())
                .err(),
            Some(WouldBlock)
        );
        let caller = identity
            .authenticate_async(Some(&key), &SOURCE, now_us())
            .await
            .unwrap();
        assert!(matches!(&caller, Caller::Agent(a) if a.agent.id == "bot"));
        // Cached now: answered from memory.
        let hit = identity.try_authenticate(Some(&key), &SOURCE, now_us());
        assert!(matches!(hit, Ok(Ok(Caller::Agent(_)))), "{hit:?}");

        // A revocation (by any handle on the store) empties the cache: the next call reads the
        // store again and refuses.
        identity
            .store()
            .revoke_credential(&credential_id, "leaked", &Actor::system("tests"), now_us())
            .unwrap();
        assert_eq!(
            identity
                .try_authenticate(Some(&key), &SOURCE, now_us())
                .err(),
            Some(WouldBlock)
        );
        let denial = identity
            .authenticate_async(Some(&key), &SOURCE, now_us())
            .await
            .unwrap_err();
        assert!(denial.reason_admin.contains("revoked"), "{denial:?}");
        // The refusal is cached too.
        assert!(matches!(
            identity.try_authenticate(Some(&key), &SOURCE, now_us()),
            Ok(Err(_))
        ));
    }

    #[tokio::test]
    async fn a_subject_looked_up_on_the_blocking_pool_is_bound_as_in_place() {
        let (_data, identity, _key, _) = identity();
        let policies = Arc::new(Policies::empty());
        let request = || {
            EvaluationRequest::from_json(
                serde_json::json!({
                    "subject": {"type": "Agent", "id": "bot"},
                    "action": {"name": "read"},
                    "resource": {"type": "Doc", "id": "d"},
                })
                .as_object()
                .unwrap()
                .clone(),
            )
            .unwrap()
        };
        let mut req = request();
        assert_eq!(
            identity
                .try_resolve(&policies, &Caller::Anonymous, &mut req, &SOURCE, now_us())
                .err(),
            Some(WouldBlock)
        );
        assert_eq!(
            req,
            request(),
            "a request stopped for the store is left as it was"
        );
        let attribution = identity
            .resolve_async(&policies, &Caller::Anonymous, &mut req, &SOURCE, now_us())
            .await
            .unwrap();
        assert_eq!(attribution.agent_id.as_deref(), Some("bot"));
        assert_eq!(
            req.subject.properties.as_ref().unwrap()["owner"],
            "team@example.com"
        );
        let mut again = request();
        let in_place = identity
            .try_resolve(&policies, &Caller::Anonymous, &mut again, &SOURCE, now_us())
            .unwrap()
            .unwrap();
        assert_eq!((in_place, again), (attribution, req));
    }
}
