//! The transport-independent gateway: what happens to each message between an agent (the MCP
//! client) and an MCP server.
//!
//! A [`Session`] is one agent's conversation with the server. The transports (stdio, streamable
//! HTTP) parse nothing themselves: they hand raw frames to [`Session::from_client`] and
//! [`Session::from_server`] and deliver the [`Route`]s that come back. See `docs/mcp.md` for
//! the method table.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arbiter_store::{PinCheck, Store};

use crate::pins::Pins;
use arbiter_types::Entity;
use serde_json::{Map, Value, json};

use crate::jsonrpc::{self, FrameLimits, Id, Message, code};
use crate::{paths, values};
use arbiter_pep::{Ask, BoxFuture, DecideError, Decider, Verdict, decide_within};

/// How a denied `tools/call` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyAs {
    /// A tool result with `isError: true` whose text carries the reason and the decision
    /// id, so that the model can adapt.
    #[default]
    ToolResult,
    /// A JSON-RPC error (code `-32001`, `data.decision_id`).
    Error,
}

/// The gateway's settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The server's name in policies: tools are `Tool::"<server>/<tool>"`.
    pub server_name: String,
    pub deny_as: DenyAs,
    pub limits: FrameLimits,
    /// Time allowed for one decision (or one batch); past it the request is refused.
    pub decision_timeout: Duration,
    /// Time allowed for the gateway's own requests to the server (a `tools/list` to learn a
    /// tool's definition before deciding a call to it).
    pub upstream_timeout: Duration,
    /// Where a person reviews an approval, with `{id}` standing for its id
    /// (`https://arbiter.example/approvals/{id}`). When set and the client declares URL-mode
    /// elicitation, a call that needs an approval also asks the client to show this link.
    pub approval_url: Option<ApprovalUrl>,
}

/// A link template for approvals: an `http(s)` URL holding `{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalUrl(String);

/// Why an approval URL template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the approval URL {0}")]
pub struct ApprovalUrlError(&'static str);

impl ApprovalUrl {
    pub fn parse(template: &str) -> Result<Self, ApprovalUrlError> {
        let rest = template
            .strip_prefix("https://")
            .or_else(|| template.strip_prefix("http://"))
            .ok_or(ApprovalUrlError("must start with https:// or http://"))?;
        if !template.contains("{id}") {
            return Err(ApprovalUrlError(
                "must hold `{id}`, where the approval's id goes",
            ));
        }
        if rest.starts_with('/') || rest.starts_with('{') {
            return Err(ApprovalUrlError("must name a host before `{id}`"));
        }
        if template.len() > 2048
            || template
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApprovalUrlError(
                "must be at most 2048 bytes, without spaces or control characters",
            ));
        }
        Ok(Self(template.to_owned()))
    }

    /// The link for approval `id` (an `apr_…` id: letters, digits and `_`, nothing to escape).
    pub fn for_approval(&self, id: &str) -> String {
        self.0.replace("{id}", id)
    }
}

impl GatewayConfig {
    /// Defaults for `server_name`.
    pub fn new(server_name: impl Into<String>) -> Self {
        Self {
            server_name: server_name.into(),
            deny_as: DenyAs::default(),
            limits: FrameLimits::default(),
            decision_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            approval_url: None,
        }
    }
}

/// What the gateway shares between sessions: its settings, decisions and tool pins.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    decider: Arc<dyn Decider>,
    pins: Pins,
}

impl Gateway {
    pub fn new(config: GatewayConfig, decider: Arc<dyn Decider>, pins: Arc<dyn Store>) -> Self {
        Self {
            config,
            decider,
            pins: Pins::new(pins),
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// `mcp:<server>`, the enforcement point decisions are recorded under.
    pub fn enforcement_point(&self) -> String {
        format!("mcp:{}", self.config.server_name)
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// To the MCP server.
    Server(Message),
    /// Back to the agent.
    Client(Message),
}

/// Sends the gateway's own requests to the server and waits for their answers.
pub trait Upstream: Send + Sync {
    fn request(&self, message: Message) -> BoxFuture<'_, Result<Message, String>>;
}

/// Which kind of list a request asked for (its answer is filtered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
}

/// A client request forwarded to the server, waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Plain,
    List(List),
}

/// A tool as the server last announced it in this session.
#[derive(Debug, Clone)]
struct ToolEntry {
    annotations: Option<Map<String, Value>>,
    hash: String,
    definition: String,
}

/// Whether `initialize` params declare URL-mode elicitation (`capabilities.elicitation.url`;
/// an empty `elicitation` object means form mode only).
fn declares_url_elicitation(params: Option<&Map<String, Value>>) -> bool {
    params
        .and_then(|p| p.get("capabilities"))
        .and_then(|c| c.get("elicitation"))
        .and_then(|e| e.get("url"))
        .is_some_and(Value::is_object)
}

/// Client notifications that are passed to the server.
const CLIENT_NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// Client requests passed without a decision: the handshake, liveness, and follow-ups of
/// requests that were themselves decided.
const PASSED_REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "logging/setLevel",
    "resources/unsubscribe",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
];

/// Requests a server may send to the client.
const SERVER_REQUESTS: &[&str] = &[
    "ping",
    "sampling/createMessage",
    "roots/list",
    "elicitation/create",
];

/// Largest number of pages the gateway reads when it lists tools itself.
const MAX_LIST_PAGES: usize = 100;

/// Largest number of approvals a session points its client at and has not seen settled; past
/// it, a call that needs an approval is answered without an elicitation.
const MAX_ELICITATIONS: usize = 64;

/// The gateway's URL-mode elicitations in one session.
#[derive(Debug, Default)]
struct Elicitations {
    /// The client declared URL-mode elicitation in `initialize`.
    supported: bool,
    /// `elicitation/create` requests sent and not answered: request id → approval id.
    asked: HashMap<Id, String>,
    /// Approvals the client was pointed at and that are not settled yet.
    open: HashSet<String>,
}

/// One agent's conversation with the server.
pub struct Session {
    gateway: Arc<Gateway>,
    id: String,
    credential: Option<String>,
    upstream: Arc<dyn Upstream>,
    pending: Mutex<HashMap<Id, Pending>>,
    server_requests: Mutex<HashSet<Id>>,
    tools: Mutex<HashMap<String, ToolEntry>>,
    elicitations: Mutex<Elicitations>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("server", &self.gateway.config.server_name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// A session `id` for the agent holding `credential`; `upstream` carries the gateway's own
    /// requests to the server.
    pub fn new(
        gateway: Arc<Gateway>,
        id: String,
        credential: Option<String>,
        upstream: Arc<dyn Upstream>,
    ) -> Self {
        Self {
            gateway,
            id,
            credential,
            upstream,
            pending: Mutex::new(HashMap::new()),
            server_requests: Mutex::new(HashSet::new()),
            tools: Mutex::new(HashMap::new()),
            elicitations: Mutex::new(Elicitations::default()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Requests forwarded to the server and not answered yet.
    pub fn pending_ids(&self) -> Vec<Id> {
        lock(&self.pending).keys().cloned().collect()
    }

    /// Answers every request still waiting for the server with an error (the server went
    /// away or sent something unreadable), so that no client request hangs.
    pub fn fail_pending(&self, why: &str) -> Vec<Route> {
        let ids: Vec<Id> = lock(&self.pending).drain().map(|(id, _)| id).collect();
        ids.into_iter()
            .map(|id| {
                Route::Client(Message::error(
                    Some(id),
                    code::INTERNAL_ERROR,
                    why.to_owned(),
                    None,
                ))
            })
            .collect()
    }

    /// One frame from the agent.
    pub async fn from_client(&self, bytes: &[u8]) -> Vec<Route> {
        match jsonrpc::parse(bytes, self.gateway.config.limits) {
            Ok(message) => self.client_message(message).await,
            Err(e) => {
                tracing::warn!(session = %self.id, error = %e.message, "refused a client message");
                // An answer to a notification is not expected, but when it cannot be told
                // whether the message was a request, the client is told (with id null, as
                // JSON-RPC requires for unreadable messages).
                vec![Route::Client(e.to_message())]
            }
        }
    }

    /// One parsed message from the agent.
    pub async fn client_message(&self, message: Message) -> Vec<Route> {
        match message {
            Message::Request { id, method, params } => {
                if lock(&self.pending).contains_key(&id) {
                    return vec![Route::Client(Message::error(
                        Some(id),
                        code::INVALID_REQUEST,
                        "this id is already used by a request in flight",
                        None,
                    ))];
                }
                self.client_request(id, method, params).await
            }
            Message::Notification { method, params } => {
                if CLIENT_NOTIFICATIONS.contains(&method.as_str()) {
                    vec![Route::Server(Message::Notification { method, params })]
                } else {
                    tracing::warn!(session = %self.id, %method, "dropped a client notification the gateway does not pass");
                    Vec::new()
                }
            }
            answer @ (Message::Result { .. } | Message::Error { .. }) => {
                if self.elicitation_answered(&answer) {
                    return Vec::new();
                }
                let known = answer
                    .id()
                    .is_some_and(|id| lock(&self.server_requests).remove(id));
                if known {
                    vec![Route::Server(answer)]
                } else {
                    tracing::warn!(session = %self.id, "dropped a client answer to no request of the server");
                    Vec::new()
                }
            }
        }
    }

    async fn client_request(
        &self,
        id: Id,
        method: String,
        params: Option<Map<String, Value>>,
    ) -> Vec<Route> {
        if method == "initialize" {
            lock(&self.elicitations).supported = declares_url_elicitation(params.as_ref());
        }
        let pending = match method.as_str() {
            "tools/call" => return self.call_tool(id, params).await,
            "resources/read" | "resources/subscribe" => {
                return self.read_resource(id, method, params).await;
            }
            "prompts/get" => return self.get_prompt(id, params).await,
            "completion/complete" => return self.complete(id, params).await,
            "tools/list" => Pending::List(List::Tools),
            "resources/list" => Pending::List(List::Resources),
            "resources/templates/list" => Pending::List(List::ResourceTemplates),
            "prompts/list" => Pending::List(List::Prompts),
            m if PASSED_REQUESTS.contains(&m) => Pending::Plain,
            _ => {
                return vec![Route::Client(Message::error(
                    Some(id),
                    code::METHOD_NOT_FOUND,
                    format!("`{method}` is not passed by the Arbiter MCP gateway"),
                    None,
                ))];
            }
        };
        self.forward(id, method, params, pending)
    }

    fn forward(
        &self,
        id: Id,
        method: String,
        params: Option<Map<String, Value>>,
        pending: Pending,
    ) -> Vec<Route> {
        lock(&self.pending).insert(id.clone(), pending);
        vec![Route::Server(Message::Request { id, method, params })]
    }

    /// One frame from the server.
    pub async fn from_server(&self, bytes: &[u8]) -> Vec<Route> {
        match jsonrpc::parse(bytes, self.gateway.config.limits) {
            Ok(message) => self.server_message(message).await,
            Err(e) => {
                tracing::warn!(session = %self.id, error = %e.message, "the MCP server sent a malformed message");
                self.fail_pending(&format!(
                    "the MCP server sent a malformed message ({}); the request was not completed",
                    e.message
                ))
            }
        }
    }

    /// One parsed message from the server.
    pub async fn server_message(&self, message: Message) -> Vec<Route> {
        match message {
            Message::Request { id, method, params } => {
                if SERVER_REQUESTS.contains(&method.as_str()) {
                    lock(&self.server_requests).insert(id.clone());
                    vec![Route::Client(Message::Request { id, method, params })]
                } else {
                    vec![Route::Server(Message::error(
                        Some(id),
                        code::METHOD_NOT_FOUND,
                        format!(
                            "`{method}` is not passed to the client by the Arbiter MCP gateway"
                        ),
                        None,
                    ))]
                }
            }
            Message::Notification { method, params } => {
                if method.starts_with("notifications/") {
                    vec![Route::Client(Message::Notification { method, params })]
                } else {
                    Vec::new()
                }
            }
            Message::Result { id, result } => {
                let Some(pending) = lock(&self.pending).remove(&id) else {
                    tracing::warn!(session = %self.id, %id, "dropped a server answer to no request in flight");
                    return Vec::new();
                };
                match pending {
                    Pending::Plain => vec![Route::Client(Message::Result { id, result })],
                    Pending::List(list) => vec![Route::Client(self.filter(id, list, result).await)],
                }
            }
            Message::Error {
                id: Some(id),
                error,
            } => {
                if lock(&self.pending).remove(&id).is_none() {
                    tracing::warn!(session = %self.id, %id, "dropped a server error for no request in flight");
                    return Vec::new();
                }
                vec![Route::Client(Message::Error {
                    id: Some(id),
                    error,
                })]
            }
            Message::Error { id: None, error } => {
                tracing::warn!(session = %self.id, code = error.code, message = %error.message, "the MCP server reported an error without an id");
                Vec::new()
            }
        }
    }

    // ---- decisions ----------------------------------------------------------------------

    async fn decide(&self, asks: Vec<Ask>) -> Result<Vec<Verdict>, DecideError> {
        decide_within(
            self.gateway.decider.as_ref(),
            self.gateway.config.decision_timeout,
            self.credential.as_deref(),
            asks,
            None,
        )
        .await
    }

    /// Decides one ask; a failure to decide is a refusal.
    async fn decide_one(&self, ask: Ask) -> Verdict {
        match self.decide(vec![ask]).await.map(|mut v| v.pop()) {
            Ok(Some(v)) => v,
            Ok(None) => Verdict::refused("no decision was taken"),
            Err(e) => Verdict::refused(&e.to_string()),
        }
    }

    fn context(&self, arguments: Option<&Map<String, Value>>) -> Map<String, Value> {
        let mut ctx = Map::new();
        if let Some(args) = arguments {
            ctx.insert(
                "arguments".into(),
                Value::Object(values::cedar_record(args)),
            );
        }
        ctx.insert("session_id".into(), Value::String(self.id.clone()));
        ctx
    }

    /// The context of a tool decision: the arguments, and the pin state (also a property of
    /// the tool; in the context it is kept in the decision record).
    fn tool_context(
        &self,
        arguments: Option<&Map<String, Value>>,
        entry: &ToolEntry,
        pinned: bool,
    ) -> Map<String, Value> {
        let mut ctx = self.context(arguments);
        ctx.insert(
            "tool_pin".into(),
            json!({"hash": entry.hash, "pinned": pinned}),
        );
        ctx
    }

    fn server(&self) -> &str {
        &self.gateway.config.server_name
    }

    fn tool_resource(&self, name: &str, entry: &ToolEntry, pinned: bool) -> Entity {
        let mut props = Map::new();
        props.insert("server".into(), Value::from(self.server()));
        props.insert("name".into(), Value::from(name));
        if let Some(a) = &entry.annotations {
            props.insert("annotations".into(), Value::Object(a.clone()));
        }
        props.insert("definition_hash".into(), Value::from(entry.hash.as_str()));
        props.insert("pinned".into(), Value::Bool(pinned));
        Entity {
            kind: "Tool".into(),
            id: format!("{}/{name}", self.server()),
            properties: Some(props),
        }
    }

    /// Whether the announced definition is the pinned one (pinning it on first use).
    async fn pinned(&self, name: &str, entry: &ToolEntry) -> Result<bool, String> {
        let now = arbiter_pdp::identity::now_us();
        match self
            .gateway
            .pins
            .check(self.server(), name, &entry.hash, &entry.definition, now)
            .await
        {
            Ok(PinCheck::Pinned) => {
                tracing::info!(server = %self.server(), tool = %name, hash = %entry.hash, "pinned a tool definition on first use");
                Ok(true)
            }
            Ok(PinCheck::Matches) => Ok(true),
            Ok(PinCheck::Changed { pinned_hash }) => {
                tracing::warn!(server = %self.server(), tool = %name, pinned = %pinned_hash, announced = %entry.hash, "a tool's definition changed since it was pinned: blocked until approved");
                Ok(false)
            }
            Err(e) => Err(format!("the tool pins cannot be read: {e}")),
        }
    }

    fn denied(&self, id: Id, verdict: &Verdict, as_tool_result: bool) -> Vec<Route> {
        let text = verdict.denial().to_string();
        let message = if as_tool_result && self.gateway.config.deny_as == DenyAs::ToolResult {
            let mut result = Map::new();
            result.insert("content".into(), json!([{"type": "text", "text": text}]));
            result.insert("isError".into(), Value::Bool(true));
            // The same facts, structured, for clients that act on a denial: the approval to
            // ask for and when to retry, when they apply.
            let mut denial = Map::new();
            denial.insert("decision_id".into(), json!(verdict.decision_id));
            denial.insert("reason".into(), json!(verdict.reason_user));
            if let Some(a) = &verdict.approval {
                denial.insert("approval_id".into(), json!(a));
            }
            if let Some(s) = verdict.retry_after_s {
                denial.insert("retry_after_s".into(), json!(s));
            }
            result.insert("_meta".into(), json!({ (DENIAL_META): denial }));
            Message::Result { id, result }
        } else {
            Message::error(
                Some(id),
                code::DENIED,
                text,
                Some(json!({"decision_id": verdict.decision_id, "reason": verdict.reason_user})),
            )
        };
        vec![Route::Client(message)]
    }

    async fn call_tool(&self, id: Id, params: Option<Map<String, Value>>) -> Vec<Route> {
        let Some(params) = params else {
            return invalid_params(id, "`tools/call` needs `params`");
        };
        let Some(name) = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return invalid_params(id, "`params.name` must be the tool's name (a string)");
        };
        let mut params = params;
        let arguments = match params.get("arguments") {
            None => None,
            Some(Value::Object(a)) => Some(a.clone()),
            Some(_) => return invalid_params(id, "`params.arguments` must be an object"),
        };
        // Path-like arguments in normal form: what the policy sees is what the server gets.
        let arguments = match arguments.as_ref().map(paths::normalize_arguments) {
            None => None,
            Some(Ok(None)) => arguments,
            Some(Ok(Some(normal))) => {
                params.insert("arguments".into(), Value::Object(normal.clone()));
                Some(normal)
            }
            Some(Err(problem)) => return invalid_params(id, &problem.to_string()),
        };
        let entry = match self.tool_entry(&name).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return invalid_params(
                    id,
                    &format!("the server does not announce a tool named `{name}`"),
                );
            }
            Err(e) => return self.denied(id, &Verdict::refused(&e), true),
        };
        let pinned = match self.pinned(&name, &entry).await {
            Ok(p) => p,
            Err(e) => return self.denied(id, &Verdict::refused(&e), true),
        };
        let mut ask = Ask {
            action: "call_tool",
            resource: self.tool_resource(&name, &entry, pinned),
            context: self.tool_context(arguments.as_ref(), &entry, pinned),
            rows: false,
            session: Some(self.id.clone()),
        };
        if !pinned {
            // Refused whatever the policies say, and recorded as such by the decision point.
            let reason = format!(
                "the definition of tool `{}` ({}) differs from its pinned definition; approve \
                 it with `arbiter mcp approve-tool`",
                ask.resource.id, entry.hash
            );
            ask = ask.refused_by_enforcement_point(
                Some(TOOL_PIN_POLICY),
                &reason,
                "denied: this tool changed since it was approved and is blocked until an \
                 administrator reviews it",
            );
        }
        let verdict = self.decide_one(ask).await;
        let mut routes = self.approval_settled(&verdict);
        if !verdict.allow {
            routes.extend(self.elicit_approval(&name, &verdict));
            routes.extend(self.denied(id, &verdict, true));
            return routes;
        }
        routes.extend(self.forward(id, "tools/call".into(), Some(params), Pending::Plain));
        routes
    }

    /// For a call that waits for an approval, when the client declared URL-mode elicitation
    /// and an approval URL is configured: an `elicitation/create` request (mode `url`,
    /// `elicitationId` the approval's id) asking the client to show the approval's link, sent
    /// before the tool result that says the approval is pending. Once per approval.
    fn elicit_approval(&self, tool: &str, verdict: &Verdict) -> Vec<Route> {
        let (Some(approval), Some(template)) =
            (&verdict.approval, &self.gateway.config.approval_url)
        else {
            return Vec::new();
        };
        let mut e = lock(&self.elicitations);
        if !e.supported || e.open.contains(approval) || e.open.len() >= MAX_ELICITATIONS {
            return Vec::new();
        }
        e.open.insert(approval.clone());
        let request_id = Id::String(format!("arbiter-elicit-{}", uuid::Uuid::now_v7()));
        e.asked.insert(request_id.clone(), approval.clone());
        let mut params = Map::new();
        params.insert("mode".into(), json!("url"));
        params.insert("elicitationId".into(), json!(approval));
        params.insert("url".into(), json!(template.for_approval(approval)));
        params.insert(
            "message".into(),
            json!(format!(
                "Calling tool `{}/{tool}` needs a person's approval ({approval}). Open the link \
                 to review the request; once it is approved, the same call succeeds once.",
                self.server()
            )),
        );
        tracing::info!(session = %self.id, %approval, "asked the client to show an approval's link");
        vec![Route::Client(Message::Request {
            id: request_id,
            method: "elicitation/create".into(),
            params: Some(params),
        })]
    }

    /// `notifications/elicitation/complete` for an approval the client was pointed at, once a
    /// decision used it or found it denied.
    fn approval_settled(&self, verdict: &Verdict) -> Vec<Route> {
        let Some(approval) = &verdict.approval_settled else {
            return Vec::new();
        };
        if !lock(&self.elicitations).open.remove(approval) {
            return Vec::new();
        }
        let mut params = Map::new();
        params.insert("elicitationId".into(), json!(approval));
        vec![Route::Client(Message::Notification {
            method: "notifications/elicitation/complete".into(),
            params: Some(params),
        })]
    }

    /// Whether `answer` answers one of the gateway's own `elicitation/create` requests (then
    /// it is consumed here: the approval is decided elsewhere, whatever the client answers).
    fn elicitation_answered(&self, answer: &Message) -> bool {
        let Some(id) = answer.id() else {
            return false;
        };
        let Some(approval) = lock(&self.elicitations).asked.remove(id) else {
            return false;
        };
        let action = match answer {
            Message::Result { result, .. } => result
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            _ => "error".to_owned(),
        };
        tracing::info!(session = %self.id, %approval, %action, "the client answered the approval's elicitation");
        true
    }

    /// The tool's definition as announced in this session, listing the server's tools first
    /// when the client has not.
    async fn tool_entry(&self, name: &str) -> Result<Option<ToolEntry>, String> {
        if let Some(e) = lock(&self.tools).get(name) {
            return Ok(Some(e.clone()));
        }
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_LIST_PAGES {
            let params = cursor.take().map(|c| {
                let mut p = Map::new();
                p.insert("cursor".into(), c);
                p
            });
            let request = Message::Request {
                id: Id::String(format!("arbiter-{}-{page}", uuid::Uuid::now_v7())),
                method: "tools/list".into(),
                params,
            };
            let answer = tokio::time::timeout(
                self.gateway.config.upstream_timeout,
                self.upstream.request(request),
            )
            .await
            .map_err(|_| "the MCP server did not list its tools in time".to_owned())??;
            let Message::Result { result, .. } = answer else {
                return Err("the MCP server refused to list its tools".into());
            };
            self.learn_tools(&result);
            if let Some(e) = lock(&self.tools).get(name) {
                return Ok(Some(e.clone()));
            }
            match result.get("nextCursor") {
                Some(c @ Value::String(_)) => cursor = Some(c.clone()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Remembers the definitions in a `tools/list` result; returns the tools by name.
    fn learn_tools(&self, result: &Map<String, Value>) -> Vec<(String, ToolEntry, Value)> {
        let mut out = Vec::new();
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            return out;
        };
        let mut cache = lock(&self.tools);
        for tool in tools {
            let Some(obj) = tool.as_object() else {
                continue;
            };
            let Some(name) = obj.get("name").and_then(Value::as_str) else {
                continue;
            };
            let Ok((hash, definition)) = values::definition_hash(&values::tool_definition(obj))
            else {
                continue;
            };
            let entry = ToolEntry {
                annotations: values::tool_annotations(obj),
                hash,
                definition,
            };
            cache.insert(name.to_owned(), entry.clone());
            out.push((name.to_owned(), entry, tool.clone()));
        }
        out
    }

    async fn filter(&self, id: Id, list: List, mut result: Map<String, Value>) -> Message {
        let (member, action) = match list {
            List::Tools => ("tools", "list_tools"),
            List::Resources => ("resources", "list_resources"),
            List::ResourceTemplates => ("resourceTemplates", "list_resources"),
            List::Prompts => ("prompts", "list_prompts"),
        };
        let candidates: Vec<(Value, Entity)> = match list {
            List::Tools => {
                let mut out = Vec::new();
                for (name, entry, tool) in self.learn_tools(&result) {
                    match self.pinned(&name, &entry).await {
                        Ok(true) => {
                            let resource = self.tool_resource(&name, &entry, true);
                            out.push((tool, resource));
                        }
                        // A changed tool is not shown until it is approved.
                        Ok(false) => {}
                        Err(e) => return list_failed(id, &e),
                    }
                }
                out
            }
            _ => result
                .get(member)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| Some((item.clone(), self.list_item(list, item)?)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let asks: Vec<Ask> = candidates
            .iter()
            .map(|(_, resource)| {
                let mut context = self.context(None);
                if let Some(props) = resource.properties.as_ref()
                    && let Some(hash) = props.get("definition_hash")
                {
                    context.insert("tool_pin".into(), json!({"hash": hash, "pinned": true}));
                }
                Ask {
                    action,
                    resource: resource.clone(),
                    context,
                    rows: false,
                    session: Some(self.id.clone()),
                }
            })
            .collect();
        let verdicts = if asks.is_empty() {
            Vec::new()
        } else {
            match self.decide(asks).await {
                Ok(v) => v,
                Err(e) => return list_failed(id, &e.to_string()),
            }
        };
        let kept: Vec<Value> = candidates
            .into_iter()
            .zip(verdicts)
            .filter(|(_, v)| v.allow)
            .map(|((item, _), _)| item)
            .collect();
        result.insert(member.into(), Value::Array(kept));
        // A filtered list is this agent's alone: never to be served to another from a cache.
        if result.contains_key("cacheScope") || result.contains_key("ttlMs") {
            result.insert("cacheScope".into(), Value::from("private"));
        }
        Message::Result { id, result }
    }

    fn list_item(&self, list: List, item: &Value) -> Option<Entity> {
        let obj = item.as_object()?;
        match list {
            List::Resources => {
                let uri = obj.get("uri")?.as_str()?;
                Some(self.resource_entity(uri, obj))
            }
            List::ResourceTemplates => {
                let uri = obj.get("uriTemplate")?.as_str()?;
                Some(self.resource_entity(uri, obj))
            }
            List::Prompts => {
                let name = obj.get("name")?.as_str()?;
                Some(self.prompt_entity(name))
            }
            List::Tools => None,
        }
    }

    fn resource_entity(&self, uri: &str, announced: &Map<String, Value>) -> Entity {
        let mut props = Map::new();
        props.insert("server".into(), Value::from(self.server()));
        props.insert("uri".into(), Value::from(uri));
        if let Some(Value::String(n)) = announced.get("name") {
            props.insert("name".into(), Value::from(n.as_str()));
        }
        if let Some(Value::String(m)) = announced.get("mimeType") {
            props.insert("mime_type".into(), Value::from(m.as_str()));
        }
        Entity {
            kind: "McpResource".into(),
            id: format!("{}/{uri}", self.server()),
            properties: Some(props),
        }
    }

    fn prompt_entity(&self, name: &str) -> Entity {
        let mut props = Map::new();
        props.insert("server".into(), Value::from(self.server()));
        props.insert("name".into(), Value::from(name));
        Entity {
            kind: "Prompt".into(),
            id: format!("{}/{name}", self.server()),
            properties: Some(props),
        }
    }

    async fn read_resource(
        &self,
        id: Id,
        method: String,
        params: Option<Map<String, Value>>,
    ) -> Vec<Route> {
        let Some(uri) = params
            .as_ref()
            .and_then(|p| p.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return invalid_params(id, "`params.uri` must be the resource's URI (a string)");
        };
        let ask = Ask {
            action: "read_resource",
            resource: self.resource_entity(&uri, &Map::new()),
            context: self.context(None),
            rows: false,
            session: Some(self.id.clone()),
        };
        let verdict = self.decide_one(ask).await;
        if !verdict.allow {
            return self.denied(id, &verdict, false);
        }
        self.forward(id, method, params, Pending::Plain)
    }

    async fn get_prompt(&self, id: Id, params: Option<Map<String, Value>>) -> Vec<Route> {
        let Some(name) = params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return invalid_params(id, "`params.name` must be the prompt's name (a string)");
        };
        let arguments = match params.as_ref().and_then(|p| p.get("arguments")) {
            None => None,
            Some(Value::Object(a)) => Some(a.clone()),
            Some(_) => return invalid_params(id, "`params.arguments` must be an object"),
        };
        let ask = Ask {
            action: "get_prompt",
            resource: self.prompt_entity(&name),
            context: self.context(arguments.as_ref()),
            rows: false,
            session: Some(self.id.clone()),
        };
        let verdict = self.decide_one(ask).await;
        if !verdict.allow {
            return self.denied(id, &verdict, false);
        }
        self.forward(id, "prompts/get".into(), params, Pending::Plain)
    }

    /// Completions reveal what a prompt or resource would accept: decided as a use of it.
    async fn complete(&self, id: Id, params: Option<Map<String, Value>>) -> Vec<Route> {
        let reference = params.as_ref().and_then(|p| p.get("ref"));
        let kind = reference
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str);
        let ask = match kind {
            Some("ref/prompt") => {
                let Some(name) = reference
                    .and_then(|r| r.get("name"))
                    .and_then(Value::as_str)
                else {
                    return invalid_params(id, "`params.ref.name` must be a string");
                };
                Ask {
                    action: "get_prompt",
                    resource: self.prompt_entity(name),
                    context: self.context(None),
                    rows: false,
                    session: Some(self.id.clone()),
                }
            }
            Some("ref/resource") => {
                let Some(uri) = reference.and_then(|r| r.get("uri")).and_then(Value::as_str) else {
                    return invalid_params(id, "`params.ref.uri` must be a string");
                };
                Ask {
                    action: "read_resource",
                    resource: self.resource_entity(uri, &Map::new()),
                    context: self.context(None),
                    rows: false,
                    session: Some(self.id.clone()),
                }
            }
            _ => {
                return invalid_params(
                    id,
                    "`params.ref.type` must be `ref/prompt` or `ref/resource`",
                );
            }
        };
        let verdict = self.decide_one(ask).await;
        if !verdict.allow {
            return self.denied(id, &verdict, false);
        }
        self.forward(id, "completion/complete".into(), params, Pending::Plain)
    }
}

/// The determining policy of the refusal of a tool whose definition changed since it was
/// pinned: it holds whatever the policies say, until an administrator approves the new
/// definition (`arbiter mcp approve-tool`).
pub const TOOL_PIN_POLICY: &str = "arbiter:tool-pin";

/// The `_meta` member of a denied tool result that carries the decision id and the reason.
pub const DENIAL_META: &str = "arbiter/denial";

fn invalid_params(id: Id, message: &str) -> Vec<Route> {
    vec![Route::Client(Message::error(
        Some(id),
        code::INVALID_PARAMS,
        message.to_owned(),
        None,
    ))]
}

fn list_failed(id: Id, why: &str) -> Message {
    tracing::warn!(error = %why, "refused a list: the gateway could not decide what to show (fail closed)");
    Message::error(
        Some(id),
        code::INTERNAL_ERROR,
        format!("the gateway could not decide what may be listed ({why})"),
        None,
    )
}

#[cfg(test)]
mod approval_url_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn approval_urls_are_checked() {
        let u = ApprovalUrl::parse("https://arbiter.example/approvals/{id}").unwrap();
        assert_eq!(
            u.for_approval("apr_1"),
            "https://arbiter.example/approvals/apr_1"
        );
        for (bad, why) in [
            ("ftp://x/{id}", "https://"),
            ("https://arbiter.example/approvals", "`{id}`"),
            ("https:///{id}", "host"),
            ("https://{id}", "host"),
            ("https://a.example/{id} x", "spaces"),
            ("https://a.example/{id}\n", "control"),
        ] {
            let e = ApprovalUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_url_mode_elicitation_counts() {
        let caps = |c: Value| {
            let mut p = Map::new();
            p.insert("capabilities".into(), c);
            declares_url_elicitation(Some(&p))
        };
        assert!(caps(json!({"elicitation": {"url": {}}})));
        assert!(!caps(json!({"elicitation": {}})));
        assert!(!caps(json!({"elicitation": {"form": {}}})));
        assert!(!caps(json!({"elicitation": {"url": true}})));
        assert!(!caps(json!({})));
        assert!(!declares_url_elicitation(None));
    }
}
