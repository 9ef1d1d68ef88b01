//! `GET /v1/stats/decisions`: decisions per layer and outcome over time, and the decision
//! log's health (its size, latest checkpoint, and the last background verification).
//!
//! The verification runs off the request path, at most once a minute (started by a request
//! when the last one is older than that; the very first one is awaited so that the first
//! answer has it): the latest checkpoint's Ed25519 signature against the log's key, its root
//! recomputed from the records on disk (the sealed segments' tiles and the records after
//! the last seal), and, when an earlier checkpoint was verified, that the new one extends it
//! (both roots from the same tree).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use arbiter_log::{Checkpoint, Outcome, format_rfc3339_us};
use arbiter_pdp::identity::now_us;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::agents::{bad, json_status};
use crate::error::ApiError;

/// Longest window of the statistics.
const MAX_SINCE_US: i64 = 31 * 24 * 3600 * 1_000_000;
/// Most buckets in one answer.
const MAX_BUCKETS: i64 = 1000;
/// Shortest bucket.
const MIN_BUCKET_US: i64 = 60 * 1_000_000;
/// Most records one answer reads; beyond, it says `"truncated": true`.
const MAX_SCANNED: u64 = 5_000_000;
/// How often the log is verified at most.
const VERIFY_EVERY_US: i64 = 60 * 1_000_000;

/// The result of one background verification.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub at_us: i64,
    pub checkpoint: Option<Checkpoint>,
    pub ok: bool,
    pub error: Option<String>,
    pub checked: &'static str,
}

/// The verification state and the count of live decision streams.
#[derive(Debug, Default)]
pub(crate) struct Insight {
    verified: Mutex<Option<Verified>>,
    verifying: AtomicBool,
    pub streams: AtomicUsize,
}

impl Insight {
    fn last(&self) -> Option<Verified> {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Verifies the log's latest checkpoint (see the module's documentation).
fn verify(log: &arbiter_log::Log, previous: Option<&Verified>) -> Verified {
    let at_us = now_us();
    let Some(cp) = log.latest_checkpoint() else {
        return Verified {
            at_us,
            checkpoint: None,
            ok: false,
            error: Some("no signed checkpoint yet".to_owned()),
            checked: "nothing (no checkpoint)",
        };
    };
    let fail = |error: String, checked| Verified {
        at_us,
        checkpoint: Some(cp.clone()),
        ok: false,
        error: Some(error),
        checked,
    };
    if let Err(e) = cp.verify(&log.public_key()) {
        return fail(
            format!("the checkpoint's signature does not verify: {e}"),
            "signature",
        );
    }
    let older = previous
        .filter(|p| p.ok)
        .and_then(|p| p.checkpoint.clone())
        .filter(|p| p.tree_size <= cp.tree_size);
    let base = older.as_ref().unwrap_or(&cp);
    if let Err(e) = arbiter_log::consistency_dir(log.dir(), base, &cp) {
        return fail(
            format!("the records on disk do not match the checkpoint: {e}"),
            "signature, root recomputed from the records",
        );
    }
    Verified {
        at_us,
        checkpoint: Some(cp),
        ok: true,
        error: None,
        checked: if older.is_some() {
            "signature, root recomputed from the records, consistent with the previously verified checkpoint"
        } else {
            "signature, root recomputed from the records"
        },
    }
}

/// The last verification, starting a new one when it is older than a minute (awaited when
/// there is none yet).
async fn verification(state: &AppState) -> Option<Verified> {
    state.pdp.recorder()?;
    let insight = state.insight.clone();
    let last = insight.last();
    // Once a minute; when there was no checkpoint to check yet (nothing was read), again
    // after a second.
    let stale = last.as_ref().is_none_or(|v| {
        let age = now_us().saturating_sub(v.at_us);
        age >= VERIFY_EVERY_US || (v.checkpoint.is_none() && age >= 1_000_000)
    });
    let started = stale && !insight.verifying.swap(true, Ordering::AcqRel);
    if started {
        let pdp = state.pdp.clone();
        let worker = insight.clone();
        let task = tokio::task::spawn_blocking(move || {
            let previous = worker.last();
            let outcome = pdp.recorder().map(|r| verify(r.log(), previous.as_ref()));
            if let Some(v) = outcome {
                *worker
                    .verified
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(v);
            }
            worker.verifying.store(false, Ordering::Release);
        });
        if last.is_none() {
            let _ = task.await;
            return insight.last();
        }
    } else if last.is_none() {
        // The first verification was started by another request: wait for it (bounded) so
        // that no answer says "never verified" while one is running.
        let deadline = tokio::time::Instant::now() + FIRST_VERIFICATION_WAIT;
        while insight.verifying.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        return insight.last();
    }
    last
}

/// How long a request waits for a first verification another request started.
const FIRST_VERIFICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default, Clone, Copy)]
struct Counts {
    allow: u64,
    deny: u64,
    require_approval: u64,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Allow => self.allow += 1,
            Outcome::Deny => self.deny += 1,
            Outcome::RequireApproval => self.require_approval += 1,
        }
    }
    fn json(&self) -> Value {
        json!({"allow": self.allow, "deny": self.deny, "require_approval": self.require_approval})
    }
}

/// Layers in answer order; `other` holds records of no layer (direct AuthZEN callers).
const KEYS: [&str; 6] = [
    "applications",
    "infrastructure",
    "data",
    "ai",
    "agents",
    "other",
];

fn slot(enforcement_point: &str) -> usize {
    let layer = arbiter_log::layer_of(enforcement_point).unwrap_or("other");
    KEYS.iter()
        .position(|k| *k == layer)
        .unwrap_or(KEYS.len() - 1)
}

fn by_layer(counts: &[Counts; 6]) -> Value {
    let map: Map<String, Value> = KEYS
        .iter()
        .zip(counts.iter())
        .map(|(k, c)| ((*k).to_owned(), c.json()))
        .collect();
    Value::Object(map)
}

/// A window or bucket length: `24h`, `90m`, `7d`, `30s` (see `admin::parse_duration`).
fn duration_param(field: &str, value: &str) -> Result<i64, ApiError> {
    let d = arbiter_pdp::admin::parse_duration(value)
        .map_err(|e| bad(field, format!("`{field}`: {e} (e.g. `24h`, `15m`, `7d`)")))?;
    i64::try_from(d.as_micros()).map_err(|_| bad(field, format!("`{field}` is too long")))
}

/// `GET /v1/stats/decisions?since=24h&bucket=1h` (both optional; also the filters of
/// `GET /v1/decisions` but `since`/`until`).
pub async fn decisions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    crate::agents::answer(decisions_in(&state, &headers, params).await)
}

async fn decisions_in(
    state: &AppState,
    headers: &HeaderMap,
    params: std::collections::HashMap<String, String>,
) -> Result<Response, ApiError> {
    let recorder = crate::log::readable_log(state, headers).await?;
    let mut window = 24 * 3600 * 1_000_000i64;
    let mut bucket = 3600 * 1_000_000i64;
    let mut filter = arbiter_log::RecordFilter::default();
    for (key, value) in &params {
        match key.as_str() {
            "since" => window = duration_param("since", value)?,
            "bucket" => bucket = duration_param("bucket", value)?,
            "until" => {
                return Err(bad(
                    "until",
                    "`until` is not supported here: statistics run up to now",
                ));
            }
            k => match crate::log::filter_param(&mut filter, k, value) {
                Some(r) => r?,
                None => {
                    return Err(bad(
                        k,
                        format!(
                            "`{k}` is not a known parameter (since, bucket, agent, action, outcome, resource, policy_version, enforcement_point, layer)"
                        ),
                    ));
                }
            },
        }
    }
    if window <= 0 || window > MAX_SINCE_US {
        return Err(bad(
            "since",
            "`since` must be more than 0 and at most 31 days (`31d`)",
        ));
    }
    if bucket < MIN_BUCKET_US {
        return Err(bad("bucket", "`bucket` must be at least one minute (`1m`)"));
    }
    let now = now_us();
    // Buckets aligned on multiples of their length, so that a chart is stable between calls.
    let start = (now - window).div_euclid(bucket) * bucket;
    let count = (now - start) / bucket + 1;
    if count > MAX_BUCKETS {
        return Err(bad(
            "bucket",
            format!("{count} buckets of that length; at most {MAX_BUCKETS}: use a longer `bucket`"),
        ));
    }
    let n = usize::try_from(count).unwrap_or(0);
    let dir = recorder.log().dir().to_path_buf();
    let scanned = tokio::task::spawn_blocking(move || {
        let mut buckets = vec![[Counts::default(); 6]; n];
        let mut totals = [Counts::default(); 6];
        let mut read = 0u64;
        let mut truncated = false;
        let mut follower = arbiter_log::Follower::since(&dir, start)?;
        follower.poll(&mut |_, r| {
            read += 1;
            if read > MAX_SCANNED {
                truncated = true;
                return ControlFlow::Break(());
            }
            if r.ts_us < start || !filter.matches(&r) {
                return ControlFlow::Continue(());
            }
            let i = usize::try_from((r.ts_us - start) / bucket).unwrap_or(usize::MAX);
            let s = slot(&r.enforcement_point);
            if let Some(b) = buckets.get_mut(i).and_then(|b| b.get_mut(s)) {
                b.add(r.outcome);
                if let Some(t) = totals.get_mut(s) {
                    t.add(r.outcome);
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok::<_, arbiter_log::LogError>((buckets, totals, truncated))
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(|e| unavailable(e.to_string()))?;
    let (buckets, totals, truncated) = scanned;
    let buckets: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            json!({
                "start": format_rfc3339_us(start + bucket * i as i64),
                "by_layer": by_layer(counts),
            })
        })
        .collect();
    let checkpoint = recorder.log().latest_checkpoint().map(|cp| {
        json!({
            "tree_size": cp.tree_size,
            "signed_at": format_rfc3339_us(cp.ts_us),
            "root": cp.root_hash,
            "key_id": cp.key_id,
        })
    });
    let verified = verification(state).await.map(|v| {
        json!({
            "at": format_rfc3339_us(v.at_us),
            "tree_size": v.checkpoint.as_ref().map(|c| c.tree_size),
            "ok": v.ok,
            "error": v.error,
            "checked": v.checked,
        })
    });
    let totals_json = by_layer(&totals);
    let body = json!({
        "since": format_rfc3339_us(start),
        "bucket_seconds": bucket / 1_000_000,
        "buckets": buckets,
        "totals": totals_json,
        "truncated": truncated,
        "log": {
            "records": recorder.log().tree_size(),
            "checkpoint": checkpoint,
            "verified": verified,
        },
    });
    Ok(json_status(StatusCode::OK, &body))
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "decision_log_unavailable",
        message,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn slots_follow_the_layer_mapping() {
        assert_eq!(KEYS.get(slot("mcp:fs")), Some(&"ai"));
        assert_eq!(KEYS.get(slot("http:tickets")), Some(&"applications"));
        assert_eq!(KEYS.get(slot("authzen")), Some(&"other"));
        assert_eq!(duration_param("since", "24h").unwrap(), 86_400_000_000);
        assert!(duration_param("since", "soon").is_err());
    }
}
