//! The callee's agent card: fetched from the upstream agent, checked, pinned, and served to
//! callers with only the skills they may use.
//!
//! An A2A client learns from the card what an agent can do (its skills and capabilities) and
//! where to send its calls (the interface URL). Whoever can change the card can therefore
//! widen what callers believe they may ask, or send their calls elsewhere. The gateway trusts
//! a card only when:
//!
//! - it is strict JSON (no member named twice, at most [`MAX_CARD_DEPTH`] deep, at most
//!   [`MAX_CARD_BYTES`]) and a valid A2A 1.0 card as the A2A SDK reads it
//!   (`normalize`), with a JSONRPC 1.0 interface on the upstream's own origin;
//! - its signatures verify with a configured key ([`CardChecks`]; `signature`), checked
//!   exactly as the SDK checks them, or more strictly;
//! - it is the card pinned for this agent: the first card seen is pinned (trust on first use,
//!   as for MCP tools), and a different card is refused — every call is denied — until an
//!   administrator approves it (`arbiter a2a card approve`).
//!
//! [`Cards`] is the I/O edge (fetch, cache, store); [`Card::parse`] is the pure check.

mod normalize;
mod signature;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbiter_store::{PinCheck, Store, StoreError};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// Where an agent card is served, at the upstream's origin.
pub const CARD_PATH: &str = "/.well-known/agent-card.json";

/// Largest card accepted, in bytes (as fetched, and as canonical JSON for the pin).
pub const MAX_CARD_BYTES: usize = 1024 * 1024;

/// Deepest nesting accepted in a card: a scalar at the top level is depth 0, the members of
/// the card object are at depth 1. Far deeper than any real card, and shallow enough that the
/// SDK's own limits (protobuf's 100 message levels, its canonicalizer's 128) never decide.
pub const MAX_CARD_DEPTH: usize = 32;

/// How long a fetched card is used before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// How long a failed fetch is reported before the next attempt.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// The tool name under which a card pin is kept (the server is [`pin_server`]).
pub const PIN_TOOL: &str = "agent-card";

/// What the server name of a card pin starts with.
pub const PIN_SERVER_PREFIX: &str = "a2a:";

/// Largest JWK file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The server name under which the card of the callee named `name` is pinned.
#[must_use]
pub fn pin_server(name: &str) -> String {
    format!("{PIN_SERVER_PREFIX}{name}")
}

/// How upstream agent cards are checked.
#[derive(Debug, Clone, Default)]
pub struct CardChecks {
    /// Keys a card signature may verify with (`--card-key FILE`, JWK: EC P-256 (ES256), OKP
    /// Ed25519 (EdDSA), RSA (RS256, RS384, RS512, PS256, PS384, PS512)).
    ///
    /// When keys are given, a card that carries signatures must have one that verifies with
    /// one of them, even if signatures are not required: a signature that does not verify is
    /// a sign of tampering, not an absence of signature.
    pub keys: Vec<CardKey>,
    /// Refuse a card that has no signature verifying with one of `keys`.
    pub require_signed: bool,
}

/// A public key that may sign agent cards.
#[derive(Debug, Clone)]
pub struct CardKey {
    jwk: arbiter_jwt::PublicJwk,
}

impl CardKey {
    /// Reads one public JWK from `path`.
    pub fn from_jwk_file(path: &Path) -> Result<CardKey, CardError> {
        use std::io::Read as _;
        let key_error = |problem: String| CardError::Key {
            path: path.display().to_string(),
            problem,
        };
        let file = std::fs::File::open(path).map_err(|e| key_error(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| key_error(e.to_string()))?;
        if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(key_error(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
        }
        Self::from_jwk(&bytes).map_err(|e| match e {
            CardError::Key { problem, .. } => key_error(problem),
            other => other,
        })
    }

    /// Parses one public JWK.
    pub fn from_jwk(bytes: &[u8]) -> Result<CardKey, CardError> {
        arbiter_jwt::PublicJwk::parse(bytes)
            .map(|jwk| CardKey { jwk })
            .map_err(|e| CardError::Key {
                path: String::new(),
                problem: e.to_string(),
            })
    }

    /// The key's `kid`, if any: a signature whose header names a `kid` verifies only with the
    /// key of that `kid` (or a key without one).
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.jwk.kid()
    }
}

/// Why no card can be trusted now. The gateway denies every call with this text, so it is
/// shown to callers: it names members of the card and hashes, never credentials or the
/// upstream's address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// The gateway's upstream is not an `http://` URI with a host.
    #[error("the gateway's upstream is not an http:// URI with a host")]
    BadUpstream,
    /// The card request failed (connection refused, reset, …).
    #[error("the upstream agent's card could not be fetched: {0}")]
    Unreachable(&'static str),
    /// The card did not arrive in time (or the gateway was busy fetching it that long).
    #[error("the upstream agent's card did not arrive within {ms} ms")]
    Timeout {
        /// The limit, in milliseconds.
        ms: u64,
    },
    /// The card request got another status than 200.
    #[error("the upstream agent answered the agent card request with HTTP status {0}")]
    Status(u16),
    /// Larger than [`MAX_CARD_BYTES`].
    #[error("the agent card is larger than {MAX_CARD_BYTES} bytes")]
    TooLarge,
    /// Not JSON.
    #[error("the agent card is not valid JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("the agent card is not a JSON object")]
    NotObject,
    /// Nested deeper than [`MAX_CARD_DEPTH`].
    #[error("the agent card nests deeper than {MAX_CARD_DEPTH} levels")]
    TooDeep,
    /// An object of the card names a member twice.
    #[error("the agent card names a member twice in one object")]
    DuplicateMember,
    /// Not a valid A2A 1.0 card (the text names the member and the problem).
    #[error("the agent card is not a valid A2A 1.0 agent card: {0}")]
    Invalid(String),
    /// No `supportedInterfaces` entry with binding `JSONRPC` and protocol version 1.0.
    #[error("the agent card lists no JSONRPC interface for protocol version 1.0")]
    NoJsonRpcInterface,
    /// The JSONRPC 1.0 interface is not on the upstream's origin (scheme, host and port).
    #[error(
        "the agent card's JSONRPC interface is not on the upstream agent's origin (scheme, host and port)"
    )]
    InterfaceOffOrigin,
    /// A signed card is required and this one has no signature.
    #[error("the agent card is not signed, and a card signed with a configured key is required")]
    Unsigned,
    /// A signed card is required but no key is configured to check it with.
    #[error("a signed agent card is required, but no card key is configured")]
    NoKeys,
    /// The card carries signatures and none verifies with a configured key.
    #[error("no signature of the agent card verifies with a configured card key ({0})")]
    BadSignature(String),
    /// The card differs from the pinned one and is not approved.
    #[error(
        "the agent card of `{name}` changed since it was pinned (pinned {pinned}, now {new}); \
         calls are refused until an administrator reviews and approves it: \
         arbiter a2a card approve --name {quoted} --hash {new}",
        quoted = arbiter_pep::shell_word(name)
    )]
    Changed {
        /// The gateway's name for the callee.
        name: String,
        /// The hash that is pinned.
        pinned: String,
        /// The hash of the card now served.
        new: String,
    },
    /// The pin could not be checked (store error or timeout; the detail is logged).
    #[error("the agent card pin could not be checked")]
    PinCheck,
    /// A card key file is not usable (configuration; never a caller's concern).
    #[error("card key {path}: {problem}")]
    Key {
        /// The file, or empty for bytes.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

impl CardError {
    /// A stable, machine-readable code for this error, for logs and responses.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUpstream => "bad_upstream",
            Self::Unreachable(_) => "card_unreachable",
            Self::Timeout { .. } => "card_timeout",
            Self::Status(_) => "card_status",
            Self::TooLarge => "card_too_large",
            Self::NotJson | Self::NotObject | Self::TooDeep | Self::DuplicateMember => {
                "card_malformed"
            }
            Self::Invalid(_) => "card_invalid",
            Self::NoJsonRpcInterface => "card_no_interface",
            Self::InterfaceOffOrigin => "card_interface_off_origin",
            Self::Unsigned | Self::NoKeys => "card_unsigned",
            Self::BadSignature(_) => "card_bad_signature",
            Self::Changed { .. } => "card_changed",
            Self::PinCheck => "card_pin_check",
            Self::Key { .. } => "card_key",
        }
    }
}

/// A skill the card lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
}

/// An agent card that passed every check of [`Card::parse`].
#[derive(Debug)]
pub struct Card {
    /// The card as fetched.
    pub json: Value,
    /// `"sha256:<hex>"` of the card's RFC 8785 canonical JSON, signatures included: the pinned
    /// hash.
    pub hash: String,
    /// The skills, as the A2A SDK reads them (ids unique and non-empty).
    pub skills: Vec<Skill>,
    /// `capabilities.streaming`.
    pub streaming: bool,
    /// `capabilities.pushNotifications`.
    pub push_notifications: bool,
    /// `capabilities.extendedAgentCard` (or the legacy `supportsAuthenticatedExtendedCard`).
    pub extended_card: bool,
    /// Path (and query) of the JSONRPC 1.0 interface URL at the upstream, e.g. `"/"`; the
    /// interface URL is on the upstream's origin.
    pub rpc_path: String,
    /// The canonical JSON whose hash is `hash` (what the pin stores).
    canonical: String,
}

/// The scheme-less origin of an `http://` URI: lowercase host (IPv6 in brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Option<Origin> {
        if !uri.scheme_str()?.eq_ignore_ascii_case("http") {
            return None;
        }
        let host = uri.host()?;
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(80),
        })
    }
}

impl Card {
    /// Checks `bytes` as the agent card of the agent at `upstream` (an `http://` URI; its
    /// origin is what the card's JSONRPC interface must be on), with `checks`. Pure: no I/O,
    /// no pin (that is [`Cards::current`]).
    pub fn parse(bytes: &[u8], upstream: &Uri, checks: &CardChecks) -> Result<Card, CardError> {
        let origin = Origin::of(upstream).ok_or(CardError::BadUpstream)?;
        Self::parse_at(bytes, &origin, checks)
    }

    fn parse_at(bytes: &[u8], origin: &Origin, checks: &CardChecks) -> Result<Card, CardError> {
        use arbiter_types::strict::StrictJsonError;
        if bytes.len() > MAX_CARD_BYTES {
            return Err(CardError::TooLarge);
        }
        let map = arbiter_types::strict::parse_strict_object(bytes, MAX_CARD_DEPTH).map_err(
            |e| match e {
                StrictJsonError::Syntax(_) => CardError::NotJson,
                StrictJsonError::DuplicateMember(_) => CardError::DuplicateMember,
                StrictJsonError::TooDeep(_) => CardError::TooDeep,
                StrictJsonError::NotObject => CardError::NotObject,
            },
        )?;
        let view = normalize::sdk_view(&map).map_err(|e| CardError::Invalid(e.to_string()))?;

        if !checks.keys.is_empty() || checks.require_signed {
            let payload =
                normalize::signed_payload(&view).map_err(|e| CardError::Invalid(e.to_string()))?;
            match signature::verify(&map, &payload, &checks.keys) {
                Ok(()) => {}
                Err(signature::Failure::Unsigned) => {
                    if checks.require_signed {
                        return Err(if checks.keys.is_empty() {
                            CardError::NoKeys
                        } else {
                            CardError::Unsigned
                        });
                    }
                }
                Err(_) if checks.keys.is_empty() => return Err(CardError::NoKeys),
                Err(signature::Failure::TooMany) => {
                    return Err(CardError::BadSignature(format!(
                        "more than {} signatures",
                        signature::MAX_SIGNATURES
                    )));
                }
                Err(signature::Failure::NoneVerifies(reasons)) => {
                    return Err(CardError::BadSignature(reasons.join("; ")));
                }
            }
        }

        let skills = skills(&view)?;
        let capability = |name: &str| view["capabilities"][name] == Value::Bool(true);
        let rpc_path = rpc_path(&view, origin)?;

        let json = Value::Object(map);
        let canonical = arbiter_log::canonical_json(&json)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| CardError::Invalid("it has no canonical JSON form".to_owned()))?;
        if canonical.len() > MAX_CARD_BYTES {
            return Err(CardError::TooLarge);
        }
        let hash = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        Ok(Card {
            hash,
            skills,
            streaming: capability("streaming"),
            push_notifications: capability("pushNotifications"),
            extended_card: capability("extendedAgentCard"),
            rpc_path,
            canonical,
            json,
        })
    }

    /// Whether the card lists skill `id`.
    #[must_use]
    pub fn has_skill(&self, id: &str) -> bool {
        self.skills.iter().any(|s| s.id == id)
    }

    /// The card served to a caller: only the `allowed` skills (by id); every interface URL
    /// (`supportedInterfaces[].url`, and the legacy v0.3 `url` and `additionalInterfaces[].url`)
    /// set to `public_url`, the gateway, so that SDK clients send their calls through it;
    /// interfaces of other bindings than `JSONRPC` (which the gateway does not speak) removed,
    /// and a legacy `preferredTransport` set to `JSONRPC`.
    ///
    /// `signatures` are removed: they covered the card as the agent published it, and this
    /// edited card is not that card, so they would not verify (a client that requires a signed
    /// card must trust the gateway, which checked them).
    #[must_use]
    pub fn served(&self, allowed: &[&str], public_url: &str) -> Value {
        let Value::Object(mut card) = self.json.clone() else {
            // INVARIANT: `json` is an object (`parse` only accepts objects).
            return Value::Object(Map::new());
        };
        card.remove("signatures");
        if let Some(Value::Array(skills)) = card.get_mut("skills") {
            skills.retain(|skill| {
                skill
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| allowed.contains(&id))
            });
        }
        let public = Value::String(public_url.to_owned());
        for (list, binding) in [
            ("supportedInterfaces", "protocolBinding"),
            ("additionalInterfaces", "transport"),
        ] {
            if let Some(Value::Array(interfaces)) = card.get_mut(list) {
                interfaces.retain(|i| i.get(binding).and_then(Value::as_str) == Some("JSONRPC"));
                for interface in interfaces.iter_mut() {
                    if let Value::Object(interface) = interface {
                        interface.insert("url".to_owned(), public.clone());
                    }
                }
            }
        }
        if card.contains_key("url") {
            card.insert("url".to_owned(), public);
        }
        if card.contains_key("preferredTransport") {
            card.insert(
                "preferredTransport".to_owned(),
                Value::String("JSONRPC".to_owned()),
            );
        }
        Value::Object(card)
    }
}

/// The skills of the SDK's reading of the card: each with a non-empty id, no id twice.
fn skills(view: &Value) -> Result<Vec<Skill>, CardError> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out: Vec<Skill> = Vec::new();
    for (i, skill) in view["skills"].as_array().into_iter().flatten().enumerate() {
        let id = text(&skill["id"]);
        if id.is_empty() {
            return Err(CardError::Invalid(format!("skill {i} has no `id`")));
        }
        if out.iter().any(|s| s.id == id) {
            return Err(CardError::Invalid(format!(
                "skill {i} repeats the `id` of another skill"
            )));
        }
        out.push(Skill {
            id,
            name: text(&skill["name"]),
            tags: skill["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect(),
        });
    }
    Ok(out)
}

/// Whether a protocol version is 1.0 by major and minor (`"1.0"`, `"1.0.0"`, `"v1.0"`, `"1"`),
/// as the SDK client's `major_minor` compares them. Only plain release numbers are read: a
/// version the SDK would read with a pre-release suffix (`"1.0rc1"`) is not 1.0 here, which
/// can only refuse a card, never route calls elsewhere.
fn is_version_1_0(version: &str) -> bool {
    let version = version.strip_prefix(['v', 'V']).unwrap_or(version);
    let mut parts = version.split('.');
    let plain = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let number = |part: &str| part.parse::<u64>().ok();
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or("0");
    plain(major)
        && plain(minor)
        && parts.all(plain)
        && number(major) == Some(1)
        && number(minor) == Some(0)
}

/// The path of the first JSONRPC 1.0 interface (the one an SDK client picks), which must be on
/// the upstream's origin.
fn rpc_path(view: &Value, origin: &Origin) -> Result<String, CardError> {
    let interface = view["supportedInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["protocolBinding"] == "JSONRPC"
                && i["protocolVersion"].as_str().is_some_and(is_version_1_0)
        })
        .ok_or(CardError::NoJsonRpcInterface)?;
    let url = interface["url"].as_str().unwrap_or_default();
    let uri: Uri = url.parse().map_err(|_| CardError::InterfaceOffOrigin)?;
    if Origin::of(&uri).as_ref() != Some(origin) {
        return Err(CardError::InterfaceOffOrigin);
    }
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Ok(match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    })
}

/// The callee's agent card, fetched, checked and pinned.
#[derive(Debug)]
pub struct Cards {
    /// The gateway's name for the callee.
    name: String,
    /// [`pin_server`] of `name`.
    server: String,
    /// The upstream's origin and the card's URI there.
    // INVARIANT: `Err` only when the upstream given to `new` is not an `http://` URI with a
    // host; then every `current` is that error.
    target: Result<(Origin, Uri), CardError>,
    client: Client<HttpConnector, Full<Bytes>>,
    store: Arc<dyn Store>,
    checks: CardChecks,
    timeout: Duration,
    refresh: Duration,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    fetched: Option<Fetched>,
}

/// The outcome of one fetch, and of the pin check of its card.
#[derive(Debug)]
struct Fetched {
    at: Instant,
    outcome: Result<Arc<Card>, CardError>,
    /// The pin check, valid while the store's generation is `generation`.
    pin: Option<(u64, Result<(), CardError>)>,
}

impl Cards {
    /// `name`: the gateway's name for the callee (its card is pinned under server
    /// `a2a:<name>`, tool [`PIN_TOOL`], in the store's tool pins); `upstream`: the upstream
    /// base URI (`http://` only); the card is fetched from `<origin>/.well-known/agent-card.json`.
    /// `timeout` bounds a fetch, and a caller's wait for another caller's fetch.
    pub fn new(
        name: &str,
        upstream: Uri,
        client: Client<HttpConnector, Full<Bytes>>,
        store: Arc<dyn Store>,
        checks: CardChecks,
        timeout: Duration,
    ) -> Self {
        let target = Origin::of(&upstream)
            .and_then(|origin| {
                let uri = format!("http://{}:{}{CARD_PATH}", origin.host, origin.port);
                uri.parse::<Uri>().ok().map(|uri| (origin, uri))
            })
            .ok_or(CardError::BadUpstream);
        Self {
            name: name.to_owned(),
            server: pin_server(name),
            target,
            client,
            store,
            checks,
            timeout,
            refresh: REFRESH,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The card as pinned, fetched again when the one held is older than [`REFRESH`] (one
    /// fetch at a time; callers during a fetch wait for it, bounded by the timeout). `Err` says
    /// why no card can be trusted now; the gateway then denies every call with that reason.
    /// A first card is pinned on first use; a changed card is refused until approved, and
    /// served once approved (an approval or unpin is seen on the next call: the store's
    /// generation moves).
    pub async fn current(&self) -> Result<Arc<Card>, CardError> {
        let (origin, uri) = self.target.as_ref().map_err(Clone::clone)?;
        let mut state = tokio::time::timeout(self.timeout, self.state.lock())
            .await
            .map_err(|_| self.timeout_error())?;
        let fetched = match state.fetched.take() {
            Some(fetched) if !self.stale(&fetched) => fetched,
            _ => {
                let outcome = self.fetch(origin, uri).await.map(Arc::new);
                if let Err(e) = &outcome {
                    tracing::warn!(agent = %self.name, code = e.code(), error = %e, "agent card refused");
                }
                Fetched {
                    at: Instant::now(),
                    outcome,
                    pin: None,
                }
            }
        };
        let fetched = state.fetched.insert(fetched);
        let card = match &fetched.outcome {
            Ok(card) => Arc::clone(card),
            Err(e) => return Err(e.clone()),
        };
        if let Some((generation, outcome)) = &fetched.pin
            && matches!(self.store.generation_now(), Ok(Some(now)) if now == *generation)
        {
            return outcome.clone().map(|()| card);
        }
        let (generation, check) = self.check_pin(&card).await?;
        let outcome = match check {
            PinCheck::Pinned => {
                tracing::info!(agent = %self.name, hash = %card.hash, "agent card pinned on first use");
                Ok(())
            }
            PinCheck::Matches => Ok(()),
            PinCheck::Changed { pinned_hash } => {
                let e = CardError::Changed {
                    name: self.name.clone(),
                    pinned: pinned_hash,
                    new: card.hash.clone(),
                };
                tracing::warn!(agent = %self.name, error = %e, "agent card changed");
                Err(e)
            }
        };
        fetched.pin = Some((generation, outcome.clone()));
        outcome.map(|()| card)
    }

    fn stale(&self, fetched: &Fetched) -> bool {
        let max_age = match fetched.outcome {
            Ok(_) => self.refresh,
            Err(_) => RETRY_AFTER_ERROR.min(self.refresh),
        };
        fetched.at.elapsed() >= max_age
    }

    fn timeout_error(&self) -> CardError {
        CardError::Timeout {
            ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    async fn fetch(&self, origin: &Origin, uri: &Uri) -> Result<Card, CardError> {
        let request = Request::get(uri.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .header("a2a-version", "1.0")
            .body(Full::new(Bytes::new()))
            .map_err(|_| CardError::BadUpstream)?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                CardError::Unreachable(if e.is_connect() {
                    "connection failed"
                } else {
                    "the request failed"
                })
            })?;
            if response.status() != StatusCode::OK {
                return Err(CardError::Status(response.status().as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_CARD_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        CardError::TooLarge
                    } else {
                        CardError::Unreachable("reading the card failed")
                    }
                })?;
            Ok(body.to_bytes())
        };
        let bytes = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.timeout_error())??;
        Card::parse_at(&bytes, origin, &self.checks)
    }

    /// [`Store::check_tool`] on the blocking pool, with the store's generation read before it.
    async fn check_pin(&self, card: &Card) -> Result<(u64, PinCheck), CardError> {
        let store = Arc::clone(&self.store);
        let (server, hash, definition) = (
            self.server.clone(),
            card.hash.clone(),
            card.canonical.clone(),
        );
        let check = tokio::task::spawn_blocking(move || {
            // The generation before the check: a change after it moves the generation, so an
            // outcome remembered under it is never used once stale.
            let generation = store.generation()?;
            let check = store.check_tool(
                &server,
                PIN_TOOL,
                &hash,
                &definition,
                arbiter_pdp::identity::now_us(),
            )?;
            Ok::<_, StoreError>((generation, check))
        });
        match tokio::time::timeout(arbiter_pdp::LOOKUP_TIMEOUT, check).await {
            Ok(Ok(Ok(checked))) => Ok(checked),
            Ok(Ok(Err(e))) => {
                tracing::warn!(agent = %self.name, error = %e, "agent card pin check failed");
                Err(CardError::PinCheck)
            }
            Ok(Err(e)) => {
                tracing::warn!(agent = %self.name, error = %e, "agent card pin check failed");
                Err(CardError::PinCheck)
            }
            Err(_) => {
                tracing::warn!(agent = %self.name, "agent card pin check timed out");
                Err(CardError::PinCheck)
            }
        }
    }

    #[cfg(test)]
    fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }
}

#[cfg(test)]
mod tests;
