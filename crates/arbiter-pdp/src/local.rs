//! An embedded decision point, for enforcement points that decide in their own process
//! (`arbiter exec --policies`, `arbiter mcp … --policies`) exactly as `arbiter serve` would:
//! the same policies, agent registry, credential checks and decision log.

use std::path::PathBuf;
use std::sync::Arc;

use arbiter_types::{Entity, EvaluationRequest};

use crate::identity::{USER_REASON_CREDENTIAL, now_us};
use arbiter_policy::Policies;

use crate::{
    Attribution, Caller, Decided, Denial, Identity, IdentitySettings, Pdp, Recorder,
    RecorderSettings, Source,
};

/// Where an embedded decision point reads and writes.
#[derive(Debug)]
pub struct LocalConfig {
    /// The policy directory.
    pub policies: PathBuf,
    /// The data directory: agent registry and decision log. Its log must not be open in
    /// another process (a running `arbiter serve`): the log is single-writer.
    pub data: PathBuf,
    /// External token issuers (the file `arbiter serve --jwt-issuers` takes).
    pub jwt_issuers: Option<PathBuf>,
    pub recorder: RecorderSettings,
    /// Where the agent registry is; `None`: `arbiter.db` in `data`.
    pub store: Option<arbiter_store::Location>,
}

/// Why an embedded decision point cannot be opened; each names the part and the path.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "the data directory `{0}` does not exist (register the agent and issue its key there \
         first, or give --data)"
    )]
    NoDataDir(PathBuf),
    #[error("cannot load policies from `{}`: {}", .path.display(), .reason.trim_end())]
    Policies { path: PathBuf, reason: String },
    #[error("cannot load token issuers from `{}`: {source}", .path.display())]
    Issuers {
        path: PathBuf,
        source: arbiter_jwt::ConfigError,
    },
    #[error("cannot open the decision log in `{}`: {reason}", .path.display())]
    Log { path: PathBuf, reason: String },
    #[error("cannot open the agent registry in `{}`: {reason}", .path.display())]
    Registry { path: PathBuf, reason: String },
}

/// Opens policies, registry and log; the error says which part failed and why.
pub fn open_local(config: LocalConfig) -> Result<Pdp, LocalError> {
    let data = &config.data;
    if !data.is_dir() {
        return Err(LocalError::NoDataDir(data.clone()));
    }
    let pdp = Pdp::load(&config.policies).map_err(|e| LocalError::Policies {
        path: config.policies.clone(),
        reason: e.to_string(),
    })?;
    let jwt = match &config.jwt_issuers {
        Some(path) => {
            let issuers = arbiter_jwt::load_issuers(path)
                .and_then(arbiter_jwt::Verifier::new)
                .map_err(|source| LocalError::Issuers {
                    path: path.clone(),
                    source,
                })?;
            Some(Arc::new(issuers))
        }
        None => None,
    };
    let (recorder, _report) =
        Recorder::open(data, config.recorder).map_err(|e| LocalError::Log {
            path: data.clone(),
            reason: e.to_string(),
        })?;
    let identity = Identity::open(
        data,
        IdentitySettings {
            jwt,
            store: config.store.clone(),
        },
    )
    .map_err(|e| LocalError::Registry {
        path: data.clone(),
        reason: e.to_string(),
    })?;
    Ok(pdp
        .with_recorder(recorder)
        .with_identity(Arc::new(identity)))
}

impl Pdp {
    /// Decides `requests` for the holder of `credential`, who must be an agent: each
    /// request's subject becomes `Agent::"<the agent>"` (with its registry attributes) and all
    /// are decided against `policies`. A credential that is missing, refused, or not an
    /// agent's (a PEP token) makes every request a recorded refusal. Nothing is recorded
    /// here: pass the results to [`Pdp::record_all`].
    pub fn decide_for_agent(
        &self,
        policies: &Policies,
        credential: Option<&str>,
        source: &Source<'_>,
        requests: Vec<EvaluationRequest>,
    ) -> Vec<Decided> {
        self.decide_for_agent_narrowing(
            policies,
            credential,
            source,
            requests.into_iter().map(|r| (r, false)).collect(),
        )
    }

    /// [`Pdp::decide_for_agent`], where each request says whether it may be allowed for some
    /// rows of its table ([`Pdp::decide_rows`]). May wait on the identity store; on an async
    /// runtime use [`Pdp::decide_for_agent_narrowing_async`].
    pub fn decide_for_agent_narrowing(
        &self,
        policies: &Policies,
        credential: Option<&str>,
        source: &Source<'_>,
        requests: Vec<(EvaluationRequest, bool)>,
    ) -> Vec<Decided> {
        let caller = match self.identity() {
            Some(identity) => identity.authenticate(credential, source, now_us()),
            None => Ok(Caller::Anonymous),
        };
        self.decide_for_authenticated(policies, caller, source, requests)
    }

    /// Decides `requests` for `caller`, as authenticated: an agent's are bound to it (which
    /// needs no store), anything else refuses them all.
    pub(crate) fn decide_for_authenticated(
        &self,
        policies: &Policies,
        caller: Result<Caller, Denial>,
        source: &Source<'_>,
        requests: Vec<(EvaluationRequest, bool)>,
    ) -> Vec<Decided> {
        let denial = match caller {
            Ok(caller @ Caller::Agent(_)) => {
                let Caller::Agent(agent) = &caller else {
                    return Vec::new();
                };
                let id = agent.agent.id.clone();
                return requests
                    .into_iter()
                    .map(|(mut req, rows)| {
                        req.subject = agent_subject(&id);
                        self.decide_as_narrowing(policies, &caller, req, source, rows)
                    })
                    .collect();
            }
            Ok(Caller::Pep { credential_id }) => Denial {
                reason_admin: format!(
                    "PEP token `{credential_id}` presented as an agent credential at `{}`",
                    source.enforcement_point
                ),
                reason_user: USER_REASON_CREDENTIAL.to_owned(),
                credential_id: Some(credential_id),
                agent_id: None,
            },
            Ok(Caller::Anonymous) => Denial {
                reason_admin: "no credential was presented".to_owned(),
                reason_user: USER_REASON_CREDENTIAL.to_owned(),
                credential_id: None,
                agent_id: None,
            },
            Err(denial) => denial,
        };
        let subject = denial
            .agent_id
            .clone()
            .unwrap_or_else(|| "unauthenticated".to_owned());
        requests
            .into_iter()
            .map(|(mut req, _)| {
                req.subject = agent_subject(&subject);
                Decided {
                    decision: self.refuse(policies, &denial),
                    attribution: Attribution {
                        agent_id: denial.agent_id.clone(),
                        credential_id: denial.credential_id.clone(),
                        actor_chain: Vec::new(),
                    },
                    request: Some(req),
                    rows: None,
                }
            })
            .collect()
    }
}

fn agent_subject(id: &str) -> Entity {
    Entity {
        kind: crate::delegation::AGENT_TYPE.to_owned(),
        id: id.to_owned(),
        properties: None,
    }
}
