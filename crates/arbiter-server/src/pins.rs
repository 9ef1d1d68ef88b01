//! MCP tool pins over HTTP, as `arbiter mcp pins` and `arbiter mcp approve-tool` show and
//! approve them.
//!
//! | method & path | role | what |
//! | --- | --- | --- |
//! | `GET /v1/tool-pins?server=` | read | the pins, by server then tool |
//! | `POST /v1/tool-pins/{server}/{tool}/approve` `{"hash": "sha256:…"}` | write | approve the changed definition whose hash was reviewed |

use arbiter_log::format_rfc3339_us;
use arbiter_pdp::identity::now_us;
use arbiter_store::ToolPin;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::AppState;
use crate::agents::{Params, actor, answer, bad, blocking, json_status};
use crate::auth::{Need, require_admin};
use crate::body::read_json;
use crate::error::ApiError;

fn pin_json(p: &ToolPin) -> Value {
    let parse = |d: &Option<String>| {
        d.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null)
    };
    let changed = p.is_changed();
    let first_use = p.pinned_by == ToolPin::FIRST_USE;
    json!({
        "server": p.server,
        "tool": p.tool,
        "state": if changed { "changed" } else { "pinned" },
        "hash": p.hash,
        "definition": parse(&p.definition),
        "pinned_at": format_rfc3339_us(p.pinned_at_us),
        "pinned_by": p.pinned_by,
        "first_seen": if first_use { Some(format_rfc3339_us(p.pinned_at_us)) } else { None },
        "approved_by": if first_use { None } else { Some(p.pinned_by.clone()) },
        "pending_hash": p.observed_hash.as_ref().filter(|_| changed),
        "pending_definition": if changed { parse(&p.observed_definition) } else { Value::Null },
        "pending_since": p.observed_at_us.filter(|_| changed).map(format_rfc3339_us),
    })
}

fn valid_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(bad(
            field,
            format!("`{field}` must be 1 to 256 characters, none of them control characters"),
        ));
    }
    Ok(())
}

/// `GET /v1/tool-pins?server=`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    answer(
        async {
            require_admin(&state, &headers, Need::Read).await?;
            let mut server = None;
            for (k, v) in params {
                match k.as_str() {
                    "server" => {
                        valid_name("server", &v)?;
                        server = Some(v);
                    }
                    other => {
                        return Err(bad(
                            other,
                            format!("`{other}` is not a known parameter (server)"),
                        ));
                    }
                }
            }
            let pins = read(&state, move |store| {
                Ok(store.list_tool_pins(server.as_deref())?)
            })
            .await?;
            let pins: Vec<Value> = pins.iter().map(pin_json).collect();
            Ok(json_status(StatusCode::OK, &json!({ "pins": pins })))
        }
        .await,
    )
}

/// A store read off the runtime (without invalidating the decision cache, as a change does).
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn arbiter_store::Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let Some(identity) = state.pdp.identity().cloned() else {
        return Err(ApiError::identity_disabled());
    };
    tokio::task::spawn_blocking(move || f(identity.store().as_ref()))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?
}

/// `POST /v1/tool-pins/{server}/{tool}/approve` `{"hash": "sha256:…"}`: the reviewed hash
/// must be the changed definition's (409 otherwise, naming it); audited as
/// `tool.approved` with the admin token that approved.
pub async fn approve(
    State(state): State<AppState>,
    Path((server, tool)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let admin = require_admin(&state, &headers, Need::Write).await?;
            valid_name("server", &server)?;
            valid_name("tool", &tool)?;
            let mut body = read_json(&headers, body, state.config.limits).await?;
            let hash = match body.remove("hash") {
                Some(Value::String(h)) => h,
                Some(_) => return Err(bad("hash", "`hash` must be a string")),
                None => {
                    return Err(bad(
                        "hash",
                        "`hash` is required: the `sha256:…` of the changed definition you reviewed",
                    ));
                }
            };
            if let Some(k) = body.keys().next() {
                return Err(bad(k, format!("`{k}` is not a known field")));
            }
            let hex = hash.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("hash", "`hash` must be `sha256:` and 64 hex digits"));
            }
            let who = actor(&admin);
            let pin = blocking(&state, move |store| {
                let Some(current) = store.tool_pin(&server, &tool)? else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no pin for tool `{tool}` of server `{server}`"),
                    ));
                };
                if !current.is_changed() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "nothing_to_approve",
                        format!(
                            "tool `{tool}` of server `{server}` has no changed definition \
                             awaiting approval (its pinned hash is {})",
                            current.hash
                        ),
                    ));
                }
                let pending = current.observed_hash.clone().unwrap_or_default();
                if !pending.eq_ignore_ascii_case(&hash) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "hash_mismatch",
                        format!(
                            "the reviewed hash {hash} is not the changed definition's ({pending}); \
                             review the current definition and approve its hash"
                        ),
                    ));
                }
                Ok(store.approve_tool(&server, &tool, Some(&pending), &who, now_us())?)
            })
            .await?;
            Ok(json_status(
                StatusCode::OK,
                &json!({ "pin": pin_json(&pin) }),
            ))
        }
        .await,
    )
}
