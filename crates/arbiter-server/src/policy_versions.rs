//! `/v1/policy/…`: governed policy versions over the admin API, the same operations as
//! `arbiter policy propose|approve|reject|activate|rollback|history|show|diff` (see
//! `arbiter_pdp::governed` and docs/governance.md). Reading needs an admin token (auditors
//! included); changing needs an administrator's, whose name is the author or approver.

use arbiter_pdp::governed;
use arbiter_pdp::identity::{AdminCaller, now_us};
use arbiter_store::{PolicyFile, PolicyVersion, Store, StoreError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::agents::{Params, actor, answer, bad, blocking, json_status, limit_param};
use crate::auth::{Need, require_admin};
use crate::body::read_json;
use crate::error::ApiError;

impl From<governed::GovernedError> for ApiError {
    fn from(e: governed::GovernedError) -> Self {
        use governed::GovernedError as G;
        match e {
            G::Store(e) => e.into(),
            G::Load(_) | G::NoOwner(_) | G::UnknownFile(_) => bad("files", e.to_string()),
            G::NoneActive => ApiError::new(StatusCode::CONFLICT, "invalid_state", e.to_string()),
            G::Tampered { .. } | G::Read { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string())
            }
        }
    }
}

/// A version as the API answers it: where it stands, against the approvals required and the
/// active version.
fn version_answer(s: &dyn Store, v: &PolicyVersion) -> Result<Value, ApiError> {
    let required = s.required_policy_approvals()?;
    let active = s.policy_activations(1)?;
    Ok(governed::version_json(v, required, active.first()))
}

/// The person an admin token was issued to (its name).
fn person(s: &dyn Store, admin: &AdminCaller) -> Result<String, StoreError> {
    arbiter_pdp::admin::token_holder(s, admin)
}

/// Only the `allowed` fields.
fn only(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            k,
            format!("`{k}` is not a field ({})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string(body: &Map<String, Value>, field: &str, what: &str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(bad(
            field,
            format!("`{field}` (a string) is required: {what}"),
        )),
    }
}

/// `GET /v1/policy/versions?limit=N`: versions newest first, the activations, the active
/// version and the approvals required.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let mut limit = 50usize;
            for (k, v) in &params {
                match k.as_str() {
                    "limit" => limit = limit_param(v, 1000)?,
                    other => {
                        return Err(bad(other, format!("`{other}` is not a parameter (limit)")));
                    }
                }
            }
            let body = blocking(&state, move |s| {
                let versions = s.list_policy_versions(limit)?;
                let activations = s.policy_activations(limit)?;
                let required = s.required_policy_approvals()?;
                let active = activations.first();
                Ok(json!({
                    "active": active.map(|a| a.version.as_str()),
                    "approvals_required": required,
                    "versions": versions
                        .iter()
                        .map(|v| governed::version_json(v, required, active))
                        .collect::<Vec<_>>(),
                    "activations": activations.iter().map(governed::activation_json).collect::<Vec<_>>(),
                }))
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `GET /v1/policy/versions/{version}` (the hash or a prefix of at least 8 hex digits): the
/// version with its files' text and its activations.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let body = blocking(&state, move |s| {
                let v = governed::stored(s, &version)?;
                let required = s.required_policy_approvals()?;
                let activations = s.policy_activations(usize::MAX)?;
                let mut j = governed::version_json(&v, required, activations.first());
                j["files"] = json!(v.files);
                j["activations"] = json!(
                    activations
                        .iter()
                        .filter(|a| a.version == v.version)
                        .map(governed::activation_json)
                        .collect::<Vec<_>>()
                );
                Ok(j)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `POST /v1/policy/versions` with `{"message": "…", "files": [{"path": "…", "text": "…"}]}`:
/// proposes the files as a version (its tests are run; failures are in the answer, and a
/// failing version can never be activated). `201`, or `409` when the version exists.
pub async fn propose(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = read_json(&headers, body, state.config.limits).await?;
            only(&body, &["message", "files"])?;
            let message = string(&body, "message", "what the change is and why")?;
            let files: Vec<PolicyFile> = match body.get("files") {
                Some(v @ Value::Array(_)) => serde_json::from_value(v.clone())
                    .map_err(|_| bad("files", "`files` is a list of {\"path\": …, \"text\": …}"))?,
                _ => {
                    return Err(bad(
                        "files",
                        "`files` (a list of {\"path\", \"text\"}) is required",
                    ));
                }
            };
            let (v, failures) = blocking(&state, move |s| {
                let author = person(s, &admin)?;
                let c = governed::candidate_of(files, &author, &message)?;
                let v = s.propose_policy_version(&c.new, &actor(&admin), now_us())?;
                Ok((version_answer(s, &v)?, c.failures))
            })
            .await?;
            let mut v = v;
            v["test_failures"] = json!(failures);
            Ok(json_status(StatusCode::CREATED, &v))
        }
        .await,
    )
}

/// `POST /v1/policy/versions/{version}/approve` (no body): approves as the token's holder,
/// who must not be the author.
pub async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = blocking(&state, move |s| {
                let full = s.resolve_policy_version(&version)?;
                let v =
                    s.approve_policy_version(&full, &person(s, &admin)?, &actor(&admin), now_us())?;
                version_answer(s, &v)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `POST /v1/policy/versions/{version}/reject` with `{"reason": "…"}`.
pub async fn reject(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = read_json(&headers, body, state.config.limits).await?;
            only(&body, &["reason"])?;
            let reason = string(&body, "reason", "say why")?;
            let body = blocking(&state, move |s| {
                let full = s.resolve_policy_version(&version)?;
                let v = s.reject_policy_version(
                    &full,
                    &person(s, &admin)?,
                    &reason,
                    &actor(&admin),
                    now_us(),
                )?;
                version_answer(s, &v)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `POST /v1/policy/versions/{version}/activate` (no body): only a version that passed its
/// tests and has the approvals required; its stored files must still load as it.
pub async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = blocking(&state, move |s| {
                let a =
                    governed::activate(s, &version, &person(s, &admin)?, &actor(&admin), now_us())?;
                Ok(governed::activation_json(&a))
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `POST /v1/policy/rollback` (no body): the version active before the current one, again.
pub async fn rollback(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = blocking(&state, move |s| {
                let a = s.rollback_policy_version(&person(s, &admin)?, &actor(&admin), now_us())?;
                Ok(governed::activation_json(&a))
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `GET /v1/policy/diff?from=A&to=B`: policies added, removed and changed, by id.
pub async fn diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let (from, to) = from_to(&params, &["from", "to"])?;
            let body = blocking(&state, move |s| {
                let (old, new) = (governed::stored(s, &from)?, governed::stored(s, &to)?);
                let d = governed::diff(&old, &new)?;
                Ok(governed::diff_json(&old, &new, &d))
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}

/// `POST /v1/policy/required-approvals` with `{"count": N}` (1 to 16).
pub async fn required_approvals(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = read_json(&headers, body, state.config.limits).await?;
            only(&body, &["count"])?;
            let count = body
                .get("count")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("count", "`count` (a number from 1 to 16) is required"))?;
            blocking(&state, move |s| {
                Ok(s.set_required_policy_approvals(count, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(
                StatusCode::OK,
                &json!({"approvals_required": count}),
            ))
        }
        .await,
    )
}

/// `GET /v1/policy/shadow`: the version evaluated in shadow, or `null`.
pub async fn shadow(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let v = blocking(&state, |s| Ok(s.policy_shadow()?)).await?;
            Ok(json_status(StatusCode::OK, &json!({ "version": v })))
        }
        .await,
    )
}

/// `PUT /v1/policy/shadow` with `{"version": "…"}`: evaluate that stored version in shadow
/// beside the active one on live traffic.
pub async fn start_shadow(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let body = read_json(&headers, body, state.config.limits).await?;
            only(&body, &["version"])?;
            let version = string(&body, "version", "the version to evaluate in shadow")?;
            let full = blocking(&state, move |s| {
                Ok(governed::start_shadow(
                    s,
                    &version,
                    &actor(&admin),
                    now_us(),
                )?)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &json!({ "version": full })))
        }
        .await,
    )
}

/// `DELETE /v1/policy/shadow`: stop the shadow evaluation.
pub async fn stop_shadow(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            blocking(&state, move |s| {
                Ok(s.set_policy_shadow(None, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &json!({ "version": null })))
        }
        .await,
    )
}

/// The parameters of a query, refusing any but `allowed`.
fn params_of<'a>(
    params: &'a std::collections::HashMap<String, String>,
    allowed: &[&str],
) -> Result<std::collections::HashMap<&'a str, &'a str>, ApiError> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in params {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(
                k,
                format!("`{k}` is not a parameter ({})", allowed.join(", ")),
            ));
        }
        out.insert(k.as_str(), v.as_str());
    }
    Ok(out)
}

/// The `from` and `to` versions of a query that may hold only the `allowed` parameters.
fn from_to(
    params: &std::collections::HashMap<String, String>,
    allowed: &[&str],
) -> Result<(String, String), ApiError> {
    let p = params_of(params, allowed)?;
    match (p.get("from"), p.get("to")) {
        (Some(from), Some(to)) => Ok(((*from).to_owned(), (*to).to_owned())),
        _ => Err(bad("from", "`from` and `to` (two versions) are required")),
    }
}

/// `GET /v1/policy/compare?from=A&to=B[&claim=narrows|equivalent]`: the SMT proof that `to`
/// allows nothing `from` denies (or that both are equivalent), or a counterexample confirmed
/// by evaluation (`arbiter policy compare`). 503 `solver_unavailable` without cvc5.
pub async fn compare(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    use arbiter_pdp::compare::{Claim, CompareError};
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let (from, to) = from_to(&params, &["from", "to", "claim"])?;
            let p = params_of(&params, &["from", "to", "claim"])?;
            let claim = match p.get("claim").copied().unwrap_or("narrows") {
                "narrows" => Claim::Narrows,
                "equivalent" => Claim::Equivalent,
                other => {
                    return Err(bad(
                        "claim",
                        format!("`claim={other}`: `narrows` or `equivalent`"),
                    ));
                }
            };
            let (old, new) = blocking(&state, move |s| {
                Ok((
                    governed::load_stored(s, &from)?,
                    governed::load_stored(s, &to)?,
                ))
            })
            .await?;
            let c = arbiter_pdp::compare::compare(&old, &new, claim)
                .await
                .map_err(|e| match e {
                    CompareError::SolverMissing(_) => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "solver_unavailable",
                        e.to_string(),
                    ),
                    CompareError::Schema(_) => bad("to", e.to_string()),
                    CompareError::Proof { .. } => {
                        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_proof", e.to_string())
                    }
                })?;
            Ok(json_status(
                StatusCode::OK,
                &json!({"from": old.version(), "to": new.version(), "comparison": c}),
            ))
        }
        .await,
    )
}

/// `GET /v1/policy/replay?candidate=V[&since=T][&until=T]`: this node's recorded decisions
/// (times in RFC 3339 or Unix seconds) re-evaluated against a stored version, with every
/// change (`arbiter policy replay --json`).
pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let p = params_of(&params, &["candidate", "since", "until"])?;
            let Some(candidate) = p.get("candidate").map(|c| (*c).to_owned()) else {
                return Err(bad(
                    "candidate",
                    "`candidate` (a stored version) is required",
                ));
            };
            let time = |k: &str| -> Result<Option<i64>, ApiError> {
                p.get(k)
                    .map(|t| arbiter_log::parse_time(t).map_err(|e| bad(k, e.to_string())))
                    .transpose()
            };
            let (since, until) = (time("since")?, time("until")?);
            let Some(log_dir) = state.pdp.recorder().map(|r| r.log().dir().to_path_buf()) else {
                return Err(ApiError::no_decision_log());
            };
            let body = blocking(&state, move |s| {
                let policies = governed::load_stored(s, &candidate)?;
                let report = arbiter_pdp::replay::replay_dir(&policies, &log_dir, since, until)
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "decision_log_unavailable",
                            e.to_string(),
                        )
                    })?;
                Ok(report.to_json(policies.version()))
            })
            .await?;
            Ok(json_status(StatusCode::OK, &body))
        }
        .await,
    )
}
