//! Witnesses over HTTP: the witness's own server (`arbiter witness serve`) and the
//! decision point's side of it (`serve --witness URL`), which sends every new checkpoint to
//! the witnesses and keeps their cosignatures beside the log.
//!
//! The witness API (see `docs/evidence.md`):
//! - `POST /add-checkpoint`: body as [`AddCheckpoint`]; 200 with a [`Cosignature`] (JSON);
//!   409 with the size the witness holds (`text/x.tlog.size`); 400, 403, 404, 422 with a
//!   JSON error naming what is wrong.
//! - `GET /checkpoint/{log_key_id}`: the latest checkpoint the witness cosigned for that log,
//!   with its cosignature (what `arbiter log verify --witness` compares the log with).
//! - `GET /pubkey`: the witness's name and public key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arbiter_log::witness::{
    AddCheckpoint, Cosignature, CosignedCheckpoint, MAX_REQUEST_BYTES, Witness, append_cosigned,
};
use arbiter_log::{Checkpoint, Log, PublicKey};
use arbiter_pdp::Pdp;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// The witness's server.

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/checkpoint/{log_key_id}", get(latest))
        .route("/pubkey", get(pubkey))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async {
            witness_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such witness endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(witness)
}

fn witness_error(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let request = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(e) => return witness_error(StatusCode::BAD_REQUEST, "malformed", &e.to_string()),
    };
    let w = witness.clone();
    let answer = tokio::task::spawn_blocking(move || w.add(&request, unix_secs())).await;
    match answer {
        Ok(Ok(cosignature)) => Json(cosignature).into_response(),
        Ok(Err(arbiter_log::witness::WitnessError::Conflict { size })) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{size}\n"),
        )
            .into_response(),
        Ok(Err(e)) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::error!(error = %e, "witness cannot cosign");
            } else {
                tracing::warn!(error = %e, "checkpoint refused");
            }
            let kind = match status.as_u16() {
                403 => "bad_signature",
                404 => "unknown_log",
                422 => "inconsistent",
                _ => "storage",
            };
            witness_error(status, kind, &e.to_string())
        }
        Err(e) => witness_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            &format!("the witness failed: {e}"),
        ),
    }
}

async fn latest(State(witness): State<Arc<Witness>>, Path(id): Path<String>) -> Response {
    match witness.latest(&id) {
        Some(held) => Json(held).into_response(),
        None => witness_error(
            StatusCode::NOT_FOUND,
            "unknown_log",
            &format!("this witness holds no checkpoint of the log with key id `{id}`"),
        ),
    }
}

async fn pubkey(State(witness): State<Arc<Witness>>) -> Response {
    let key = witness.public_key();
    Json(json!({
        "name": witness.name(),
        "public_key": key.to_hex(),
        "key_id": key.key_id(),
        "algorithm": "ed25519",
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// The decision point's side: send checkpoints, keep cosignatures.

/// Largest answer read from a witness.
const MAX_ANSWER_BYTES: u64 = 16 * 1024;
/// How often each witness's sender looks for a new checkpoint.
const POLL: Duration = Duration::from_millis(250);
/// A checkpoint of the same size is sent again (a liveness checkpoint) this often.
const REFRESH: Duration = Duration::from_secs(60);
/// Longest wait before trying a failing witness again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where checkpoints go and how many cosignatures count.
#[derive(Debug, Clone)]
pub struct WitnessSettings {
    /// Base URLs of the witnesses.
    pub urls: Vec<String>,
    /// Cosignatures a checkpoint needs to count as witnessed.
    pub quorum: usize,
    /// Bound on one exchange with a witness.
    pub timeout: Duration,
}

/// What is known of one witness.
#[derive(Debug)]
struct Peer {
    url: String,
    /// The witness's key, asked for once (cosignatures are checked with it).
    key: Option<PublicKey>,
    /// The size the witness holds, as it last said.
    held: Option<u64>,
    /// The latest checkpoint it cosigned: size, when sent.
    cosigned: Option<(u64, Instant, u64)>,
    last_error: Option<String>,
    failures: u64,
    /// Failures in a row, and when to try again after them (doubling, at most a minute).
    failing: u32,
    retry_at: Option<Instant>,
}

/// Sends each new checkpoint of the decision log to the witnesses and appends their
/// cosignatures to `cosignatures.log`. Decisions never wait for witnesses: an unreachable
/// or refusing witness shows in readiness and metrics, and its checkpoints wait.
#[derive(Debug)]
pub struct Witnessing {
    peers: Vec<Mutex<Peer>>,
    quorum: usize,
    agent: ureq::Agent,
    stop: AtomicBool,
    /// Held while `cosignatures.log` is written (one sender thread per witness).
    file: Mutex<()>,
}

impl Witnessing {
    /// Checks the settings: at least one URL, each `http(s)://host[:port][/path]` without
    /// query or fragment, and a quorum between 1 and the number of witnesses.
    pub fn new(settings: WitnessSettings) -> Result<Witnessing, String> {
        if settings.urls.is_empty() {
            return Err("no witness URL given".to_string());
        }
        if settings.quorum == 0 || settings.quorum > settings.urls.len() {
            return Err(format!(
                "`--witness-quorum {}` must be between 1 and the number of witnesses ({})",
                settings.quorum,
                settings.urls.len()
            ));
        }
        let mut peers = Vec::new();
        for url in &settings.urls {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| {
                    format!("witness URL `{url}` must start with http:// or https://")
                })?;
            if rest.is_empty()
                || rest.starts_with('/')
                || rest.contains(['?', '#', ' ', '@'])
                || rest.chars().any(char::is_control)
            {
                return Err(format!(
                    "witness URL `{url}`: expected http(s)://host[:port][/path], without \
                     credentials, query or fragment"
                ));
            }
            peers.push(Mutex::new(Peer {
                url: url.trim_end_matches('/').to_string(),
                key: None,
                held: None,
                cosigned: None,
                last_error: None,
                failures: 0,
                failing: 0,
                retry_at: None,
            }));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("arbiter/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Witnessing {
            peers,
            quorum: settings.quorum,
            agent,
            stop: AtomicBool::new(false),
            file: Mutex::new(()),
        })
    }

    /// Starts one sender thread per witness, following the latest checkpoint of `pdp`'s
    /// decision log.
    pub fn spawn(self: &Arc<Self>, pdp: Arc<Pdp>) -> Vec<std::thread::JoinHandle<()>> {
        (0..self.peers.len())
            .filter_map(|i| {
                let me = self.clone();
                let pdp = pdp.clone();
                std::thread::Builder::new()
                    .name(format!("witness-{i}"))
                    .spawn(move || {
                        while !me.stop.load(Ordering::Relaxed) {
                            if let Some(recorder) = pdp.recorder() {
                                me.send_due(i, recorder.log());
                            }
                            std::thread::sleep(POLL);
                        }
                    })
                    .map_err(|e| tracing::error!(error = %e, "cannot start a witness sender"))
                    .ok()
            })
            .collect()
    }

    /// Stops the senders, then sends the log's final checkpoint to every witness once.
    pub fn finish(&self, log: &Log) {
        self.stop.store(true, Ordering::Relaxed);
        for i in 0..self.peers.len() {
            self.send_due_now(i, log, true);
        }
    }

    fn send_due(&self, i: usize, log: &Log) {
        self.send_due_now(i, log, false);
    }

    /// Sends the latest checkpoint to witness `i` when it has not cosigned it, unless the
    /// witness is in its back-off after failures (`force`: regardless).
    fn send_due_now(&self, i: usize, log: &Log, force: bool) {
        let Some(peer) = self.peers.get(i) else {
            return;
        };
        let Some(cp) = log.latest_checkpoint() else {
            return;
        };
        let mut peer = lock(peer);
        let due = match peer.cosigned {
            None => true,
            Some((size, at, _)) => cp.tree_size > size || at.elapsed() >= REFRESH,
        };
        let waiting = peer.retry_at.is_some_and(|t| Instant::now() < t);
        if !due || (waiting && !force) {
            return;
        }
        match self.send(&mut peer, log, &cp) {
            Ok(()) => {
                peer.last_error = None;
                peer.failing = 0;
                peer.retry_at = None;
            }
            Err(e) => {
                if peer.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(witness = %peer.url, error = %e, "checkpoint not witnessed");
                }
                peer.failures += 1;
                peer.failing = peer.failing.saturating_add(1);
                let backoff = Duration::from_millis(500)
                    .saturating_mul(1 << peer.failing.min(7))
                    .min(MAX_BACKOFF);
                peer.retry_at = Some(Instant::now() + backoff);
                peer.last_error = Some(e);
            }
        }
    }

    fn send(&self, peer: &mut Peer, log: &Log, cp: &Checkpoint) -> Result<(), String> {
        let key = match peer.key {
            Some(k) => k,
            None => {
                let k = self.witness_key(&peer.url)?;
                peer.key = Some(k);
                k
            }
        };
        // At most two rounds: the first may learn the size the witness holds (409).
        for _ in 0..2 {
            let old = peer.held.unwrap_or(0);
            if old > cp.tree_size {
                return Err(format!(
                    "the witness holds {old} records of this log, more than the {} it has now: \
                     the log was rolled back or replaced, and no witness will cosign it",
                    cp.tree_size
                ));
            }
            let proof = log
                .consistency_from(old, cp)
                .map_err(|e| format!("cannot prove the log grew from size {old}: {e}"))?;
            let body = AddCheckpoint {
                old_size: old,
                proof,
                checkpoint: cp.clone(),
            }
            .encode();
            let url = format!("{}/add-checkpoint", peer.url);
            let mut response = self
                .agent
                .post(&url)
                .header("content-type", "text/plain")
                .send(&body[..])
                .map_err(|e| format!("cannot reach the witness: {e}"))?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_string()
                .map_err(|e| format!("the witness's answer cannot be read: {e}"))?;
            match status {
                200 => {
                    let cosig: Cosignature = serde_json::from_str(&text).map_err(|e| {
                        format!("the witness answered a malformed cosignature: {e}")
                    })?;
                    cosig
                        .verify(cp, &key)
                        .map_err(|e| format!("the witness's cosignature does not verify: {e}"))?;
                    let entry = CosignedCheckpoint {
                        checkpoint: cp.clone(),
                        cosignatures: vec![cosig.clone()],
                    };
                    let _file = lock(&self.file);
                    append_cosigned(log.dir(), &entry)
                        .map_err(|e| format!("cannot keep the cosignature: {e}"))?;
                    peer.held = Some(cp.tree_size);
                    peer.cosigned = Some((cp.tree_size, Instant::now(), cosig.time));
                    return Ok(());
                }
                409 => {
                    let held: u64 = text.trim().parse().map_err(|_| {
                        "the witness answered 409 without the size it holds".to_string()
                    })?;
                    if Some(held) == peer.held {
                        return Err(format!("the witness keeps answering 409 (holds {held})"));
                    }
                    peer.held = Some(held);
                }
                _ => {
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    return Err(format!("the witness refused ({status}): {message}"));
                }
            }
        }
        Err("the witness's size keeps changing".to_string())
    }

    fn witness_key(&self, url: &str) -> Result<PublicKey, String> {
        let mut response = self
            .agent
            .get(&format!("{url}/pubkey"))
            .call()
            .map_err(|e| format!("cannot reach the witness: {e}"))?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| format!("the witness's key cannot be read: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| "the witness's /pubkey is not JSON".to_string())?;
        PublicKey::from_hex(value["public_key"].as_str().unwrap_or_default())
            .map_err(|e| format!("the witness's /pubkey: {e}"))
    }

    /// The size of the largest checkpoint cosigned by at least the quorum of witnesses.
    pub fn witnessed_size(&self) -> Option<u64> {
        let mut sizes: Vec<u64> = self
            .peers
            .iter()
            .filter_map(|p| lock(p).cosigned.map(|c| c.0))
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes.get(self.quorum - 1).copied()
    }

    /// Readiness details: the witnessed size against `checkpoint_size`, and each witness.
    pub fn status_json(&self, checkpoint_size: u64) -> serde_json::Value {
        let witnessed = self.witnessed_size();
        let peers: Vec<_> = self
            .peers
            .iter()
            .map(|p| {
                let p = lock(p);
                json!({
                    "url": p.url,
                    "key_id": p.key.map(|k| k.key_id()),
                    "cosigned_size": p.cosigned.map(|c| c.0),
                    "cosigned_at": p.cosigned.map(|c| c.2),
                    "failures": p.failures,
                    "last_error": p.last_error,
                })
            })
            .collect();
        json!({
            "quorum": self.quorum,
            "witnessed_size": witnessed,
            "unwitnessed_records": checkpoint_size.saturating_sub(witnessed.unwrap_or(0)),
            "status": if witnessed == Some(checkpoint_size) { "witnessed" } else { "behind" },
            "witnesses": peers,
        })
    }

    /// Prometheus text for the witnesses.
    pub fn render_metrics(&self, checkpoint_size: u64) -> String {
        let mut out = String::from(
            "# HELP arbiter_witness_unwitnessed_records Records in the latest checkpoint that \
             the quorum of witnesses has not cosigned yet.\n\
             # TYPE arbiter_witness_unwitnessed_records gauge\n",
        );
        out.push_str(&format!(
            "arbiter_witness_unwitnessed_records {}\n",
            checkpoint_size.saturating_sub(self.witnessed_size().unwrap_or(0))
        ));
        out.push_str(
            "# HELP arbiter_witness_cosigned_size Size of the latest checkpoint each witness \
             cosigned.\n# TYPE arbiter_witness_cosigned_size gauge\n",
        );
        let mut failures = String::from(
            "# HELP arbiter_witness_failures_total Checkpoints a witness did not cosign \
             (unreachable, refused, or an answer that does not verify).\n\
             # TYPE arbiter_witness_failures_total counter\n",
        );
        for p in &self.peers {
            let p = lock(p);
            let url = p.url.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "arbiter_witness_cosigned_size{{witness=\"{url}\"}} {}\n",
                p.cosigned.map_or(0, |c| c.0)
            ));
            failures.push_str(&format!(
                "arbiter_witness_failures_total{{witness=\"{url}\"}} {}\n",
                p.failures
            ));
        }
        out.push_str(&failures);
        out
    }
}
