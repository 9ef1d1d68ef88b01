//! The access log: one JSON line per HTTP request, for operators.
//!
//! The decision log is the evidence of what was decided; the access log says what the HTTP
//! surface served — who called which endpoint, how it was answered and how long it took — so
//! that an operator can follow traffic, latency and errors, and find the decisions a request
//! produced. A line holds:
//!
//! | field | |
//! | --- | --- |
//! | `ts` | when the request arrived, RFC 3339 UTC with microseconds |
//! | `duration_us` | until the response head was ready |
//! | `method`, `path`, `status` | the path without its query: query values can carry secrets |
//! | `remote` | the client's address, when known |
//! | `request_id` | the `X-Request-ID` the response echoes, when there is one |
//! | `caller` | who the request authenticated as, when the endpoint authenticates: `{"kind": "agent", "agent_id", "credential_id"}`, `{"kind": "pep", "credential_id"}`, `{"kind": "admin", "credential_id", "role"}`, `{"kind": "anonymous"}`, or `{"kind": "refused"}` with the credential id and agent id when they are known |
//! | `enforcement_point` | the enforcement point the request was decided for |
//! | `decision_ids` | the decisions the request produced, in order |
//!
//! It never holds a header value other than those, a query string, a request or response
//! body, or a credential: credential ids (`key_…`) are public lookup ids, and a path segment
//! that has the shape of a credential (an Arbiter key, a JWT, a known provider's API key) is
//! replaced by `[credential:<shape>]`.
//!
//! Writing never holds a request up and never fails one: a line is handed to a dedicated
//! writer thread through a bounded queue, and a line that cannot be queued (the writer is
//! behind) or written (a full disk, a closed pipe) is counted
//! (`arbiter_access_log_lines_lost_total`) and reported on the operational log once per
//! outage, with the number lost when writing works again.
//!
//! Handlers add what they learn about the request (the caller, the enforcement point, the
//! decisions) with the `note_*` functions. They write into the request's entry, which the
//! layer keeps in a task-local for the request's duration; outside the layer (no access log)
//! they do nothing.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arbiter_pdp::identity::AdminCaller;
use arbiter_pdp::{Caller, Denial};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value, json};

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 8192;
/// Longest path written; a longer one is cut (at a character boundary) and marked `…`.
const MAX_PATH: usize = 2048;
/// Most decision ids written for one request (a batch has more): `decision_count` has all.
const MAX_DECISION_IDS: usize = 256;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`-`): the operational log is on standard error.
    Stdout,
    /// A file, appended to (created with mode 0600).
    File(PathBuf),
}

impl Target {
    /// `-` is standard output; anything else a file.
    pub fn parse(text: &str) -> Self {
        if text == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(text))
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Stdout => "standard output".to_owned(),
            Target::File(path) => format!("`{}`", path.display()),
        }
    }
}

/// Why the access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log `{}`: {source}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// What the writer thread and the request path share.
#[derive(Debug, Default)]
struct Shared {
    /// Lines dropped or not written, ever.
    lost: AtomicU64,
    /// The queue was full and that has not been reported yet as over.
    overflowing: AtomicBool,
    /// Reopen the file before the next write (`SIGHUP`, after a rotation).
    reopen: AtomicBool,
    /// The writer is to finish: write what is queued, then stop.
    closing: AtomicBool,
}

/// The access log of a server: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct AccessLog {
    queue: SyncSender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("lost", &self.lines_lost())
            .finish_non_exhaustive()
    }
}

/// The writer thread; [`Writer::finish`] writes what is queued and stops it.
#[derive(Debug)]
pub struct Writer {
    done: Receiver<()>,
    shared: Arc<Shared>,
}

impl AccessLog {
    /// Opens `target` (a file is created if needed, mode 0600, and appended to) and starts
    /// the writer thread.
    pub fn open(target: Target) -> Result<(AccessLog, Writer), OpenError> {
        let sink = Sink::open(&target)?;
        let (queue, lines) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (finished, done) = std::sync::mpsc::sync_channel::<()>(1);
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("arbiter-access-log".to_owned())
            .spawn(move || {
                write_lines(&lines, sink, &target, &worker);
                let _ = finished.send(());
            })
            .map_err(|source| OpenError {
                path: PathBuf::from("(writer thread)"),
                source,
            })?;
        let log = AccessLog {
            queue,
            shared: Arc::clone(&shared),
        };
        Ok((log, Writer { done, shared }))
    }

    /// Lines dropped (the writer was behind) or not written (a write failed), since start.
    pub fn lines_lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Reopens the file before the next line, e.g. after `logrotate` moved it (`SIGHUP`).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// Queues a line without waiting; a full queue drops it.
    fn submit(&self, line: Vec<u8>) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                if !self.shared.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the access log cannot keep up: lines are dropped until its writer \
                         catches up (requests are served as usual)"
                    );
                }
            }
        }
    }
}

impl Writer {
    /// Writes what is queued and stops the thread; waits at most `within`.
    pub fn finish(self, within: Duration) {
        self.shared.closing.store(true, Ordering::Relaxed);
        if self.done.recv_timeout(within).is_err() {
            tracing::warn!(
                "the access log writer did not finish in time; its last lines may be lost"
            );
        }
    }
}

/// Where lines are written.
enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    fn open(target: &Target) -> Result<Sink, OpenError> {
        match target {
            Target::Stdout => Ok(Sink::Stdout),
            Target::File(path) => open_file(path).map(Sink::File).map_err(|source| OpenError {
                path: path.clone(),
                source,
            }),
        }
    }

    fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
            Sink::File(file) => file.write_all(batch),
        }
    }
}

fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The writer thread: waits for a line, writes every line queued by then in one write, and
/// reports the first failure of an outage and its end.
fn write_lines(lines: &Receiver<Vec<u8>>, mut sink: Sink, target: &Target, shared: &Shared) {
    let mut failing: Option<u64> = None;
    let mut batch = Vec::new();
    loop {
        let first = match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) if !shared.closing.load(Ordering::Relaxed) => continue,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                if let Ok(line) = lines.try_recv() {
                    line
                } else {
                    return;
                }
            }
        };
        batch.clear();
        batch.extend_from_slice(&first);
        let mut count = 1u64;
        while let Ok(line) = lines.try_recv() {
            batch.extend_from_slice(&line);
            count += 1;
        }
        // The queue was drained: a new overflow is a new episode.
        shared.overflowing.store(false, Ordering::Relaxed);
        if shared.reopen.swap(false, Ordering::Relaxed) {
            match Sink::open(target) {
                Ok(reopened) => sink = reopened,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log; writing to the open file")
                }
            }
        }
        match sink.write(&batch) {
            Ok(()) => {
                if let Some(lost) = failing.take() {
                    tracing::warn!(
                        destination = %target.describe(),
                        lost,
                        "the access log is written again; {lost} line(s) were lost meanwhile"
                    );
                }
            }
            Err(e) => {
                shared.lost.fetch_add(count, Ordering::Relaxed);
                match &mut failing {
                    Some(lost) => *lost += count,
                    None => {
                        tracing::error!(
                            destination = %target.describe(),
                            error = %e,
                            "cannot write the access log; its lines are lost until it can be \
                             written again (requests are served as usual; decisions are in the \
                             decision log)"
                        );
                        failing = Some(count);
                    }
                }
            }
        }
    }
}

// ---- what a request noted -----------------------------------------------------------------

/// What handlers learned about one request.
#[derive(Debug, Default)]
struct Facts {
    caller: Option<Map<String, Value>>,
    enforcement_point: Option<String>,
    decision_ids: Vec<String>,
    decision_count: usize,
}

tokio::task_local! {
    static FACTS: Arc<Mutex<Facts>>;
}

fn note(f: impl FnOnce(&mut Facts)) {
    let _ = FACTS.try_with(|facts| f(&mut facts.lock().unwrap_or_else(PoisonError::into_inner)));
}

/// The caller, as authenticated.
pub fn note_caller(caller: &Caller) {
    let fact = match caller {
        Caller::Agent(a) => json!({
            "kind": "agent", "agent_id": a.agent.id, "credential_id": a.credential_id,
        }),
        Caller::Pep { credential_id } => json!({"kind": "pep", "credential_id": credential_id}),
        Caller::Anonymous => json!({"kind": "anonymous"}),
    };
    note(|f| f.caller = fact.as_object().cloned());
}

/// A credential that was refused (missing where one is required, malformed, or not
/// accepted), with what the refusal identified.
pub fn note_refused(denial: Option<&Denial>) {
    let mut fact = Map::new();
    fact.insert("kind".into(), json!("refused"));
    if let Some(id) = denial.and_then(|d| d.credential_id.as_ref()) {
        fact.insert("credential_id".into(), json!(id));
    }
    if let Some(id) = denial.and_then(|d| d.agent_id.as_ref()) {
        fact.insert("agent_id".into(), json!(id));
    }
    note(|f| f.caller = Some(fact));
}

/// An administrator, by admin token.
pub fn note_admin(admin: &AdminCaller) {
    let fact = json!({"kind": "admin", "credential_id": admin.credential_id, "role": admin.role});
    note(|f| f.caller = fact.as_object().cloned());
}

/// The enforcement point the request is decided for.
pub fn note_enforcement_point(point: &str) {
    note(|f| f.enforcement_point = Some(point.to_owned()));
}

/// A decision the request produced.
pub fn note_decision(id: &str) {
    note(|f| {
        f.decision_count += 1;
        if f.decision_ids.len() < MAX_DECISION_IDS {
            f.decision_ids.push(id.to_owned());
        }
    });
}

// ---- the layer ----------------------------------------------------------------------------

/// The middleware: times the request, lets handlers note what they learn, and queues the
/// line once the response head is ready.
pub async fn layer(State(log): State<AccessLog>, req: Request, next: Next) -> Response {
    let arrived_us = arbiter_pdp::identity::now_us();
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = loggable_path(req.uri().path());
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let request_id = req
        .headers()
        .get(crate::REQUEST_ID)
        .filter(|v| v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .and_then(|v| v.to_str().ok())
        .map(scrub);
    let facts = Arc::new(Mutex::new(Facts::default()));
    let response = FACTS.scope(Arc::clone(&facts), next.run(req)).await;
    let duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let facts = std::mem::take(&mut *facts.lock().unwrap_or_else(PoisonError::into_inner));

    let mut line = Map::new();
    line.insert(
        "ts".into(),
        json!(arbiter_log::format_rfc3339_us(arrived_us)),
    );
    line.insert("duration_us".into(), json!(duration_us));
    line.insert("method".into(), json!(method));
    line.insert("path".into(), json!(path));
    line.insert("status".into(), json!(response.status().as_u16()));
    if let Some(remote) = remote {
        line.insert("remote".into(), json!(remote));
    }
    if let Some(id) = request_id {
        line.insert("request_id".into(), json!(id));
    }
    if let Some(caller) = facts.caller {
        line.insert("caller".into(), Value::Object(caller));
    }
    if let Some(point) = facts.enforcement_point {
        line.insert("enforcement_point".into(), json!(point));
    }
    if facts.decision_count > 0 {
        line.insert("decision_ids".into(), json!(facts.decision_ids));
        if facts.decision_count > facts.decision_ids.len() {
            line.insert("decision_count".into(), json!(facts.decision_count));
        }
    }
    let mut bytes = Value::Object(line).to_string().into_bytes();
    bytes.push(b'\n');
    log.submit(bytes);
    response
}

/// The path as logged: no query (the URI's path has none), credential-shaped segments
/// replaced, at most [`MAX_PATH`] bytes.
fn loggable_path(path: &str) -> String {
    let mut out = path.split('/').map(scrub).collect::<Vec<_>>().join("/");
    if out.len() > MAX_PATH {
        let mut cut = MAX_PATH;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// `text`, or `[credential:<shape>]` when it has the shape of a credential.
fn scrub(text: &str) -> String {
    match arbiter_identity::classify(text) {
        "opaque" | "empty" | "oversized" => text.to_owned(),
        shape => format!("[credential:{shape}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_shaped_path_segments_are_replaced() {
        let key = arbiter_identity::issue(arbiter_identity::SecretKind::AgentKey)
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        assert!(key.starts_with("arb_"), "{key}");
        let path = format!("/v1/agents/bot/keys/{key}");
        assert_eq!(
            loggable_path(&path),
            "/v1/agents/bot/keys/[credential:arbiter-agent-key]"
        );
        assert_eq!(
            loggable_path("/v1/forward-auth/tickets/ghp_0123456789abcdefghijABCDEFGHIJ0123"),
            "/v1/forward-auth/tickets/[credential:github-token]"
        );
        assert_eq!(loggable_path("/v1/agents/bot"), "/v1/agents/bot");
        assert_eq!(loggable_path("/"), "/");
        let long = format!("/{}", "é".repeat(MAX_PATH));
        let logged = loggable_path(&long);
        assert!(logged.len() <= MAX_PATH + '…'.len_utf8());
        assert!(logged.ends_with('…'));
    }
}
