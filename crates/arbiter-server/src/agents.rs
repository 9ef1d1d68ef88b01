//! The admin API: agents, their keys, operator tokens, discovered identities and the audit
//! trail. Every endpoint needs an admin token (`Authorization: Bearer arbadm_…`): reads are
//! open to the `administrator` and `auditor` roles, changes to administrators only. Every
//! change is written to the audit trail with the token that made it.
//!
//! | method & path | role | what |
//! | --- | --- | --- |
//! | `GET /v1/agents?status=&environment=&owner=` | read | list agents |
//! | `POST /v1/agents` | write | register an agent |
//! | `GET /v1/agents/{id}` | read | an agent and its keys |
//! | `PATCH /v1/agents/{id}` | write | change name, owner, purpose, environment, attributes |
//! | `POST /v1/agents/{id}/suspend`, `/activate`, `/retire` | write | change status (`retire` also revokes every key) |
//! | `GET /v1/agents/{id}/keys` | read | the agent's keys (metadata only) |
//! | `POST /v1/agents/{id}/keys` | write | issue a key (shown once) |
//! | `POST /v1/agents/{id}/keys/{key}/rotate` | write | rotate with an overlap window |
//! | `DELETE /v1/agents/{id}/keys/{key}` | write | revoke one key |
//! | `DELETE /v1/agents/{id}/keys` | write | revoke every key of the agent |
//! | `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{id}` | read / write | admin and PEP tokens |
//! | `GET /v1/discovered`, `POST /v1/discovered/{id}/adopt` | read / write | discovered identities |
//! | `GET /v1/audit?after=&limit=` | read | the audit trail |

use std::time::Duration;

use arbiter_pdp::admin::{
    self, AdminError, TokenSpec, agent_json, audit_json, credential_json, discovered_json,
};
use arbiter_pdp::identity::now_us;
use arbiter_store::{
    Actor, AgentFilter, AgentPatch, AgentStatus, CredentialFilter, CredentialKind, Environment,
    NewAgent, Store, StoreError,
};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{Need, require_admin};
use crate::body::read_json;
use crate::error::ApiError;

pub(crate) type Params = Query<std::collections::HashMap<String, String>>;

pub(crate) fn json_status(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A `limit` query parameter: a positive integer, capped at `max`.
pub(crate) fn limit_param(v: &str, max: usize) -> Result<usize, ApiError> {
    match v.parse::<usize>() {
        Ok(l) if l > 0 => Ok(l.min(max)),
        _ => Err(bad("limit", "`limit` must be a positive integer")),
    }
}

pub(crate) fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_request",
        message: message.into(),
        field: Some(field.to_owned()),
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Store(s) => s.into(),
            AdminError::Invalid { field, .. } => bad(field, e.to_string()),
            AdminError::Random(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::InvalidState { .. } => (StatusCode::CONFLICT, "invalid_state"),
            StoreError::Invalid { field, .. } => {
                return bad(field, e.to_string());
            }
            _ => {
                tracing::error!(error = %e, "identity store error");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Runs a store operation off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let Some(identity) = state.pdp.identity().cloned() else {
        return Err(ApiError::identity_disabled());
    };
    tokio::task::spawn_blocking(move || {
        let out = f(identity.store().as_ref());
        // A change made here must be seen by the very next decision.
        identity.invalidate();
        out
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?
}

pub(crate) fn actor(admin: &arbiter_pdp::identity::AdminCaller) -> Actor {
    Actor::admin_token(admin.credential_id.clone())
}

pub(crate) fn answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

// --- fields -----------------------------------------------------------------------------

fn take_string(
    body: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ApiError> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, format!("`{field}` must be a string"))),
    }
}

fn take_attributes(body: &mut Map<String, Value>) -> Result<Option<Map<String, Value>>, ApiError> {
    match body.remove("attributes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(bad("attributes", "`attributes` must be an object")),
    }
}

fn take_duration(
    body: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<Duration>, ApiError> {
    take_string(body, field)?
        .map(|t| admin::parse_duration(&t).map_err(|e| bad(field, format!("`{field}`: {e}"))))
        .transpose()
}

fn parse_env(text: &str) -> Result<Environment, ApiError> {
    text.parse::<Environment>().map_err(ApiError::from)
}

fn no_unknown(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.keys().next() {
        Some(k) => Err(bad(k, format!("`{k}` is not a known field"))),
        None => Ok(()),
    }
}

fn parse_new_agent(mut body: Map<String, Value>) -> Result<NewAgent, ApiError> {
    let id = take_string(&mut body, "id")?.ok_or_else(|| bad("id", "`id` is required"))?;
    let owner =
        take_string(&mut body, "owner")?.ok_or_else(|| bad("owner", "`owner` is required"))?;
    let new = NewAgent {
        name: take_string(&mut body, "name")?.unwrap_or_else(|| id.clone()),
        owner,
        purpose: take_string(&mut body, "purpose")?.unwrap_or_default(),
        environment: match take_string(&mut body, "environment")? {
            Some(e) => parse_env(&e)?,
            None => Environment::Dev,
        },
        attributes: take_attributes(&mut body)?.unwrap_or_default(),
        id,
    };
    no_unknown(&body)?;
    Ok(new)
}

// --- agents -------------------------------------------------------------------------------

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let mut filter = AgentFilter::default();
            for (k, v) in params {
                match k.as_str() {
                    "status" => filter.status = Some(v.parse::<AgentStatus>()?),
                    "environment" => filter.environment = Some(parse_env(&v)?),
                    "owner" => filter.owner = Some(v),
                    other => {
                        return Err(bad(
                            other,
                            format!("`{other}` is not a filter (status, environment, owner)"),
                        ));
                    }
                }
            }
            let agents = blocking(&state, move |s| Ok(s.list_agents(&filter)?)).await?;
            let list: Vec<Value> = agents.iter().map(agent_json).collect();
            Ok(json_status(StatusCode::OK, &json!({ "agents": list })))
        }
        .await,
    )
}

pub async fn register(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let new = parse_new_agent(read_json(&headers, body, state.config.limits).await?)?;
            let agent = blocking(&state, move |s| {
                Ok(admin::register_agent(s, &new, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(StatusCode::CREATED, &agent_json(&agent)))
        }
        .await,
    )
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let (agent, keys) = blocking(&state, move |s| {
                let agent = s.agent(&id)?.ok_or(StoreError::NotFound {
                    what: "agent",
                    id: id.clone(),
                })?;
                let keys = s.list_credentials(&CredentialFilter {
                    kind: Some(CredentialKind::AgentKey),
                    agent_id: Some(id),
                    include_revoked: true,
                })?;
                Ok((agent, keys))
            })
            .await?;
            let now = now_us();
            let mut v = agent_json(&agent);
            v["keys"] = keys.iter().map(|k| credential_json(k, now)).collect();
            Ok(json_status(StatusCode::OK, &v))
        }
        .await,
    )
}

pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let mut body = read_json(&headers, body, state.config.limits).await?;
            let patch = AgentPatch {
                name: take_string(&mut body, "name")?,
                owner: take_string(&mut body, "owner")?,
                purpose: take_string(&mut body, "purpose")?,
                environment: take_string(&mut body, "environment")?
                    .map(|e| parse_env(&e))
                    .transpose()?,
                attributes: take_attributes(&mut body)?,
            };
            no_unknown(&body)?;
            let agent = blocking(&state, move |s| {
                Ok(s.update_agent(&id, &patch, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &agent_json(&agent)))
        }
        .await,
    )
}

async fn set_status(
    state: AppState,
    headers: HeaderMap,
    id: String,
    status: AgentStatus,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let (agent, revoked) = blocking(&state, move |s| {
                Ok(admin::set_status(s, &id, status, &actor(&admin), now_us())?)
            })
            .await?;
            let mut v = agent_json(&agent);
            v["keys_revoked"] = json!(revoked);
            Ok(json_status(StatusCode::OK, &v))
        }
        .await,
    )
}

pub async fn suspend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_status(state, headers, id, AgentStatus::Suspended).await
}

pub async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_status(state, headers, id, AgentStatus::Active).await
}

pub async fn retire(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_status(state, headers, id, AgentStatus::Retired).await
}

// --- keys ---------------------------------------------------------------------------------

pub async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let keys = blocking(&state, move |s| {
                s.agent(&id)?.ok_or(StoreError::NotFound {
                    what: "agent",
                    id: id.clone(),
                })?;
                Ok(s.list_credentials(&CredentialFilter {
                    kind: Some(CredentialKind::AgentKey),
                    agent_id: Some(id),
                    include_revoked: true,
                })?)
            })
            .await?;
            let now = now_us();
            let list: Vec<Value> = keys.iter().map(|k| credential_json(k, now)).collect();
            Ok(json_status(StatusCode::OK, &json!({ "keys": list })))
        }
        .await,
    )
}

/// `{"key": "<secret, shown once>", "credential": {…}}`
fn issued_json(issued: &admin::Issued, now: i64) -> Value {
    json!({
        "key": issued.secret.expose(),
        "credential": credential_json(&issued.credential, now),
        "notice": "store this secret now: Arbiter keeps only its hash and cannot show it again",
    })
}

pub async fn issue_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let mut body = optional_body(&state, &headers, body).await?;
            let name = take_string(&mut body, "name")?.unwrap_or_else(|| "default".to_owned());
            let ttl = take_duration(&mut body, "expires_in")?;
            no_unknown(&body)?;
            let issued = blocking(&state, move |s| {
                Ok(admin::issue_key(
                    s,
                    &id,
                    &name,
                    ttl,
                    &actor(&admin),
                    now_us(),
                )?)
            })
            .await?;
            Ok(json_status(
                StatusCode::CREATED,
                &issued_json(&issued, now_us()),
            ))
        }
        .await,
    )
}

pub async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let mut body = optional_body(&state, &headers, body).await?;
            let overlap = take_duration(&mut body, "overlap")?.unwrap_or(Duration::from_secs(3600));
            let ttl = take_duration(&mut body, "expires_in")?;
            no_unknown(&body)?;
            let (issued, old) = blocking(&state, move |s| {
                Ok(admin::rotate_key(
                    s,
                    &id,
                    &key,
                    overlap,
                    ttl,
                    &actor(&admin),
                    now_us(),
                )?)
            })
            .await?;
            let now = now_us();
            let mut v = issued_json(&issued, now);
            v["previous"] = credential_json(&old, now);
            Ok(json_status(StatusCode::CREATED, &v))
        }
        .await,
    )
}

pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let reason = params
                .get("reason")
                .cloned()
                .unwrap_or_else(|| "revoked by an administrator".to_owned());
            let revoked = blocking(&state, move |s| {
                Ok(admin::revoke_key(
                    s,
                    &id,
                    &key,
                    &reason,
                    &actor(&admin),
                    now_us(),
                )?)
            })
            .await?;
            Ok(json_status(
                StatusCode::OK,
                &credential_json(&revoked, now_us()),
            ))
        }
        .await,
    )
}

pub async fn revoke_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let reason = params
                .get("reason")
                .cloned()
                .unwrap_or_else(|| "revoked by an administrator".to_owned());
            let n = blocking(&state, move |s| {
                s.agent(&id)?.ok_or(StoreError::NotFound {
                    what: "agent",
                    id: id.clone(),
                })?;
                Ok(s.revoke_agent_credentials(&id, &reason, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &json!({ "revoked": n })))
        }
        .await,
    )
}

/// A JSON object body, or an empty object when the request has no body.
async fn optional_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (headers.get(header::CONTENT_TYPE).is_none()
            && headers.get(header::CONTENT_LENGTH).is_none());
    if empty {
        return Ok(Map::new());
    }
    read_json(headers, body, state.config.limits).await
}

// --- tokens -------------------------------------------------------------------------------

pub async fn list_tokens(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let tokens = blocking(&state, |s| Ok(admin::list_tokens(s)?)).await?;
            let now = now_us();
            let list: Vec<Value> = tokens.iter().map(|t| credential_json(t, now)).collect();
            Ok(json_status(StatusCode::OK, &json!({ "tokens": list })))
        }
        .await,
    )
}

pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let mut body = read_json(&headers, body, state.config.limits).await?;
            let kind = take_string(&mut body, "kind")?
                .ok_or_else(|| bad("kind", "`kind` is required: `admin` or `pep`"))?;
            let role = take_string(&mut body, "role")?;
            let spec = match kind.as_str() {
                "admin" => TokenSpec::Admin {
                    role: role.unwrap_or_else(|| "auditor".to_owned()),
                },
                "pep" if role.is_none() => TokenSpec::Pep,
                "pep" => return Err(bad("role", "PEP tokens have no role")),
                _ => return Err(bad("kind", "`kind` must be `admin` or `pep`")),
            };
            let name =
                take_string(&mut body, "name")?.ok_or_else(|| bad("name", "`name` is required"))?;
            let ttl = take_duration(&mut body, "expires_in")?;
            no_unknown(&body)?;
            let issued = blocking(&state, move |s| {
                Ok(admin::create_token(
                    s,
                    &spec,
                    &name,
                    ttl,
                    &actor(&admin),
                    now_us(),
                )?)
            })
            .await?;
            let mut v = issued_json(&issued, now_us());
            if let Some(obj) = v.as_object_mut()
                && let Some(secret) = obj.remove("key")
            {
                obj.insert("token".to_owned(), secret);
            }
            Ok(json_status(StatusCode::CREATED, &v))
        }
        .await,
    )
}

pub async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let reason = params
                .get("reason")
                .cloned()
                .unwrap_or_else(|| "revoked by an administrator".to_owned());
            let revoked = blocking(&state, move |s| {
                match s.credential(&id)? {
                    Some(c) if c.kind != CredentialKind::AgentKey => {}
                    _ => return Err(StoreError::NotFound { what: "token", id }.into()),
                }
                Ok(s.revoke_credential(&id, &reason, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(
                StatusCode::OK,
                &credential_json(&revoked, now_us()),
            ))
        }
        .await,
    )
}

// --- discovery and audit ------------------------------------------------------------------

pub async fn discovered(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let include_adopted = match params.get("include_adopted").map(String::as_str) {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(bad(
                        "include_adopted",
                        "`include_adopted` must be `true` or `false`",
                    ));
                }
            };
            let found = blocking(&state, move |s| Ok(s.list_discovered(include_adopted)?)).await?;
            let list: Vec<Value> = found.iter().map(discovered_json).collect();
            Ok(json_status(StatusCode::OK, &json!({ "discovered": list })))
        }
        .await,
    )
}

pub async fn adopt(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            let new = parse_new_agent(read_json(&headers, body, state.config.limits).await?)?;
            let agent = blocking(&state, move |s| {
                Ok(admin::adopt(s, id, &new, &actor(&admin), now_us())?)
            })
            .await?;
            Ok(json_status(StatusCode::OK, &agent_json(&agent)))
        }
        .await,
    )
}

pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let mut after = None;
            let mut limit = 100usize;
            for (k, v) in &params {
                match k.as_str() {
                    "after" => {
                        after = Some(
                            v.parse::<u64>()
                                .map_err(|_| bad("after", "`after` must be an event number"))?,
                        )
                    }
                    "limit" => limit = limit_param(v, 1000)?,
                    other => {
                        return Err(bad(
                            other,
                            format!("`{other}` is not a parameter (after, limit)"),
                        ));
                    }
                }
            }
            let events = blocking(&state, move |s| Ok(s.list_audit(after, limit)?)).await?;
            let next = events.last().map(|e| e.seq);
            let list: Vec<Value> = events.iter().map(audit_json).collect();
            Ok(json_status(
                StatusCode::OK,
                &json!({ "events": list, "next_after": next }),
            ))
        }
        .await,
    )
}
