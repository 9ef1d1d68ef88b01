//! Token verification: the checks of the crate README, in that order.
//!
//! Nothing from the token is believed before its signature verifies, except the payload's
//! `iss`, which is read only to choose whose keys to verify with. Every check that fails
//! ends verification; there is no path that skips a check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::alg::{Algorithm, printable_name};
use crate::b64;
use crate::config::{IssuerConfig, JwksSource};
use crate::error::{ConfigError, JwtError};
use crate::fetch;
use crate::json;
use crate::jwk::{Jwk, KeySet, Lookup, MAX_KID_LEN, VerifyError};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most actors in a delegation chain (`act`, `act.act`, ...).
pub const MAX_ACT_DEPTH: usize = 8;
/// Longest agent, user or actor id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Least time between two refetches of one issuer's key set caused by unknown `kid`s.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// What a verified token says about who is acting.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The issuer (`iss`), exactly as configured.
    pub issuer: String,
    /// The agent the token authorizes: `act.sub` for a delegated token, otherwise the
    /// issuer's agent claim (`sub` by default).
    pub agent_id: String,
    /// For a delegated token, the user the agent acts for (the token's `sub`).
    pub on_behalf_of: Option<String>,
    /// For a delegated token, the `sub` of `act`, `act.act`, ...: the current actor first,
    /// then the actors that delegated to it. Empty for a token without `act`.
    pub actor_chain: Vec<String>,
    /// The header `kid`, if any.
    pub key_id: Option<String>,
    /// The `jti` claim, if any.
    pub token_id: Option<String>,
    /// The `exp` claim, if any.
    pub expires_at: Option<SystemTime>,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

/// Verifies tokens from a fixed set of issuers. `Send + Sync`: share one behind an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    issuers: HashMap<String, IssuerState>,
    /// Present when some issuer's key set comes from a URL.
    http: Option<ureq::Agent>,
}

#[derive(Debug)]
struct IssuerState {
    config: IssuerConfig,
    keys: RwLock<Arc<KeySet>>,
    /// When the key set was last refetched because of an unknown `kid`.
    last_refetch: Mutex<Option<SystemTime>>,
}

impl IssuerState {
    fn keys(&self) -> Arc<KeySet> {
        // A panic while holding the lock cannot leave a half-written `Arc`.
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The validated header of a token.
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// The three segments of a compact JWS.
struct Segments<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
}

impl Verifier {
    /// Validates every issuer and loads its key set once: a file is read, a URL fetched.
    /// Any failure (an unreadable file, an unreachable URL, a set with no usable key, a
    /// weak key) is an error: the verifier starts with every issuer working, or not at all.
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Verifier, ConfigError> {
        let http = issuers
            .iter()
            .any(|c| matches!(c.jwks, JwksSource::Url(_)))
            .then(fetch::http_agent);
        let mut states = HashMap::with_capacity(issuers.len());
        for config in issuers {
            config.validate()?;
            if states.contains_key(&config.issuer) {
                return Err(ConfigError::Invalid {
                    issuer: config.issuer,
                    message: "issuer is configured twice".to_owned(),
                });
            }
            let loaded = match (&config.jwks, &http) {
                (JwksSource::File(path), _) => fetch::load_file(path),
                (JwksSource::Url(url), Some(agent)) => fetch::fetch_url(agent, url),
                (JwksSource::Url(_), None) => Err("no HTTP client".to_owned()),
            };
            let keys = loaded.map_err(|message| ConfigError::Jwks {
                issuer: config.issuer.clone(),
                message,
            })?;
            states.insert(
                config.issuer.clone(),
                IssuerState {
                    config,
                    keys: RwLock::new(Arc::new(keys)),
                    last_refetch: Mutex::new(None),
                },
            );
        }
        Ok(Verifier {
            issuers: states,
            http,
        })
    }

    /// The configured issuers (`iss` values), in no particular order.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// The number of usable keys currently held for `issuer`, if it is configured.
    #[must_use]
    pub fn key_count(&self, issuer: &str) -> Option<usize> {
        self.issuers.get(issuer).map(|s| s.keys().len())
    }

    /// A cheap test of whether `s` has the shape of a JWT: three non-empty base64url
    /// segments within the size limit, the first decoding to a JSON object with a string
    /// `alg`. Says nothing about validity.
    #[must_use]
    pub fn looks_like_jwt(s: &str) -> bool {
        let Ok(segments) = split(s) else {
            return false;
        };
        let Ok(bytes) = b64::decode(segments.header) else {
            return false;
        };
        matches!(
            json::parse_object(&bytes).map(|h| matches!(h.get("alg"), Some(Value::String(_)))),
            Ok(true)
        )
    }

    /// Verifies `token` at time `now`. Succeeds only if every check of the crate README
    /// passes; the error says which check failed first, never what the token contained.
    ///
    /// May block: a token naming a key its issuer's cached set lacks makes one fetch of a URL
    /// key set (at most every [`REFETCH_INTERVAL`], bounded by
    /// [`FETCH_TIMEOUT`](crate::FETCH_TIMEOUT)). On an async runtime, call
    /// [`Verifier::verify_cached`] and this only where blocking is allowed.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, JwtError> {
        match self.verify_with(token, now, Fetch::Allowed) {
            Ok(verified) => Ok(verified),
            Err(Failure::Refused(e)) => Err(e),
            // Only returned when fetching is not allowed.
            Err(Failure::NeedsFetch) => Err(JwtError::UnknownKid),
        }
    }

    /// [`Verifier::verify`] with the key sets held in memory only: never does I/O, never
    /// blocks. `Err(NeedsFetch)` exactly when `verify` would fetch (the token names a key that
    /// is not held and its issuer's URL key set is due for a refetch): call `verify` then,
    /// from a thread that may block. Otherwise `Ok` of what `verify` would return.
    pub fn verify_cached(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Result<VerifiedToken, JwtError>, NeedsFetch> {
        match self.verify_with(token, now, Fetch::Never) {
            Ok(verified) => Ok(Ok(verified)),
            Err(Failure::Refused(e)) => Ok(Err(e)),
            Err(Failure::NeedsFetch) => Err(NeedsFetch),
        }
    }

    fn verify_with(
        &self,
        token: &str,
        now: SystemTime,
        fetch: Fetch,
    ) -> Result<VerifiedToken, Failure> {
        let segments = split(token)?;
        let header = decode_object(segments.header, "header")?;
        let header = check_header(&header)?;
        let payload = decode_object(segments.payload, "payload")?;

        // The issuer is chosen by the unverified `iss`; nothing else is read before the
        // signature verifies.
        let issuer = match payload.get("iss") {
            Some(Value::String(iss)) => self.issuers.get(iss).ok_or(JwtError::UnknownIssuer)?,
            Some(_) => return Err(malformed("`iss` is not a string").into()),
            None => return Err(JwtError::MissingClaim("iss").into()),
        };
        if !issuer.config.algorithms.contains(&header.alg) {
            return Err(JwtError::UnsupportedAlgorithm(format!(
                "`{}` is not accepted from this issuer",
                header.alg
            ))
            .into());
        }
        let signature =
            b64::decode(segments.signature).map_err(|e| malformed(&format!("signature: {e}")))?;
        self.check_signature(
            issuer,
            &header,
            segments.signing_input.as_bytes(),
            &signature,
            now,
            fetch,
        )?;

        let config = &issuer.config;
        let expires_at = check_times(&payload, config, now)?;
        check_audience(&payload, &config.audiences)?;
        let agent = map_agent(&payload, &config.agent_claim)?;
        let token_id = optional_string(&payload, "jti")?;
        Ok(VerifiedToken {
            issuer: config.issuer.clone(),
            agent_id: agent.agent_id,
            on_behalf_of: agent.on_behalf_of,
            actor_chain: agent.actor_chain,
            key_id: header.kid,
            token_id,
            expires_at,
            claims: payload,
        })
    }

    /// Finds the key (refetching a URL key set once if the `kid` is unknown, the refetch
    /// interval allows and `fetch` does) and verifies the signature.
    fn check_signature(
        &self,
        issuer: &IssuerState,
        header: &Header,
        signing_input: &[u8],
        signature: &[u8],
        now: SystemTime,
        fetch: Fetch,
    ) -> Result<(), Failure> {
        let keys = issuer.keys();
        match verify_with(&keys, header, signing_input, signature) {
            Attempt::Done(result) => Ok(result?),
            Attempt::NoKey => {
                let fresh = match (&issuer.config.jwks, &self.http, fetch) {
                    (JwksSource::Url(_), Some(_), Fetch::Never) => {
                        if refetch_due(issuer, now) {
                            return Err(Failure::NeedsFetch);
                        }
                        None
                    }
                    (JwksSource::Url(url), Some(agent), Fetch::Allowed) => {
                        refetch(issuer, agent, url, now)?
                    }
                    (JwksSource::Url(_), None, _) | (JwksSource::File(_), _, _) => None,
                };
                match fresh.map(|keys| verify_with(&keys, header, signing_input, signature)) {
                    Some(Attempt::Done(result)) => Ok(result?),
                    Some(Attempt::NoKey) | None => Err(JwtError::UnknownKid.into()),
                }
            }
        }
    }
}

/// Returned by [`Verifier::verify_cached`] when the answer needs a key set fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsFetch;

/// Whether verification may fetch a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Allowed,
    Never,
}

/// Why verification stopped.
enum Failure {
    Refused(JwtError),
    /// The answer needs a fetch, which was not allowed.
    NeedsFetch,
}

impl From<JwtError> for Failure {
    fn from(e: JwtError) -> Self {
        Failure::Refused(e)
    }
}

enum Attempt {
    Done(Result<(), JwtError>),
    NoKey,
}

fn verify_with(keys: &KeySet, header: &Header, input: &[u8], signature: &[u8]) -> Attempt {
    let key: &Jwk = match keys.lookup(header.alg, header.kid.as_deref()) {
        Lookup::Found(key) => key,
        Lookup::NotFound => return Attempt::NoKey,
        Lookup::Incompatible => {
            return Attempt::Done(Err(JwtError::UnsupportedAlgorithm(format!(
                "`{}` cannot be verified with the key named by `kid`",
                header.alg
            ))));
        }
        Lookup::Ambiguous => return Attempt::Done(Err(JwtError::MissingClaim("kid"))),
    };
    Attempt::Done(
        key.verify(header.alg, input, signature)
            .map_err(|e| match e {
                VerifyError::BadSignature => JwtError::BadSignature,
                VerifyError::Incompatible => JwtError::UnsupportedAlgorithm(format!(
                    "`{}` cannot be verified with the selected key",
                    header.alg
                )),
            }),
    )
}

/// Whether a refetch of the issuer's key set at `now` is allowed: none was made within
/// [`REFETCH_INTERVAL`] before (or after: clocks can step back) `now`.
fn refetch_due(issuer: &IssuerState, now: SystemTime) -> bool {
    let last = issuer
        .last_refetch
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    interval_passed(*last, now)
}

fn interval_passed(last: Option<SystemTime>, now: SystemTime) -> bool {
    last.is_none_or(|prev| {
        let apart = now.duration_since(prev).unwrap_or_else(|e| e.duration());
        apart >= REFETCH_INTERVAL
    })
}

/// Refetches `url` unless [`refetch_due`] says no. On success the new set replaces the
/// cached one; on failure the cached one stays.
fn refetch(
    issuer: &IssuerState,
    agent: &ureq::Agent,
    url: &str,
    now: SystemTime,
) -> Result<Option<Arc<KeySet>>, JwtError> {
    {
        let mut last = issuer
            .last_refetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !interval_passed(*last, now) {
            return Ok(None);
        }
        // Claimed before fetching, so concurrent requests do not fetch too.
        *last = Some(now);
    }
    let keys = fetch::fetch_url(agent, url)
        .map_err(|_| JwtError::Jwks("cannot refresh the issuer's key set".to_owned()))?;
    let keys = Arc::new(keys);
    *issuer.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&keys);
    Ok(Some(keys))
}

fn malformed(what: &str) -> JwtError {
    JwtError::Malformed(what.to_owned())
}

/// Size, segment count and alphabet; nothing is decoded yet.
fn split(token: &str) -> Result<Segments<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed(&format!(
            "token longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "a token has exactly three `.`-separated segments",
        ));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(malformed("empty segment"));
    }
    if !token.bytes().all(|b| b == b'.' || b64::is_alphabet(b)) {
        return Err(malformed(
            "a segment holds characters outside base64url without padding",
        ));
    }
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or_else(|| malformed("segment bounds"))?;
    Ok(Segments {
        header,
        payload,
        signature,
        signing_input,
    })
}

fn decode_object(segment: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = b64::decode(segment).map_err(|e| malformed(&format!("{what}: {e}")))?;
    json::parse_object(&bytes).map_err(|e| malformed(&format!("{what}: {e}")))
}

/// Header parameters that carry or point at a key. Keys come only from configuration.
const EMBEDDED_KEY_PARAMS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

fn check_header(header: &Map<String, Value>) -> Result<Header, JwtError> {
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| JwtError::UnsupportedAlgorithm(format!("`{}`", printable_name(name))))?,
        Some(_) => return Err(malformed("header `alg` is not a string")),
        None => return Err(malformed("header has no `alg`")),
    };
    if header.contains_key("crit") {
        return Err(malformed(
            "header `crit` names extensions this verifier does not implement",
        ));
    }
    if let Some(param) = EMBEDDED_KEY_PARAMS
        .iter()
        .find(|p| header.contains_key(**p))
    {
        return Err(malformed(&format!(
            "header `{param}`: keys are never taken from the token"
        )));
    }
    // JWE (`enc`, `zip`), unencoded payloads (`b64`) and nested tokens (`cty`) are not
    // plain signed JWTs.
    if let Some(param) = ["enc", "zip", "b64", "cty"]
        .iter()
        .find(|p| header.contains_key(**p))
    {
        return Err(malformed(&format!("header `{param}` is not supported")));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) => {
            let lower = typ.to_ascii_lowercase();
            let media = lower.strip_prefix("application/").unwrap_or(&lower);
            if media != "jwt" && media != "at+jwt" {
                return Err(malformed("header `typ` is neither `JWT` nor `at+jwt`"));
            }
        }
        Some(_) => return Err(malformed("header `typ` is not a string")),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => {
            Some(kid.clone())
        }
        Some(Value::String(_)) => {
            return Err(malformed(&format!(
                "header `kid` must be 1 to {MAX_KID_LEN} bytes"
            )));
        }
        Some(_) => return Err(malformed("header `kid` is not a string")),
    };
    Ok(Header { alg, kid })
}

/// A NumericDate (RFC 7519 §2) as nanoseconds since the epoch; `None` if absent.
fn numeric_date(payload: &Map<String, Value>, name: &str) -> Result<Option<i128>, JwtError> {
    const NANOS: i128 = 1_000_000_000;
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i128::from(i) * NANOS))
            } else if let Some(u) = n.as_u64() {
                Ok(Some(i128::from(u) * NANOS))
            } else if let Some(f) = n.as_f64() {
                // JSON numbers are finite; the cast saturates for absurd magnitudes.
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "saturating float-to-int conversion is intended"
                )]
                let nanos = (f * 1e9).floor() as i128;
                Ok(Some(nanos))
            } else {
                Err(malformed(&format!("`{name}` is not a number")))
            }
        }
        Some(_) => Err(malformed(&format!("`{name}` is not a number"))),
    }
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

fn system_time(nanos: i128) -> Option<SystemTime> {
    let magnitude = nanos.unsigned_abs();
    let secs = u64::try_from(magnitude / 1_000_000_000).ok()?;
    let sub = u32::try_from(magnitude % 1_000_000_000).ok()?;
    let d = Duration::new(secs, sub);
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// `exp`, `nbf`, `iat`; returns `exp` as a time.
fn check_times(
    payload: &Map<String, Value>,
    config: &IssuerConfig,
    now: SystemTime,
) -> Result<Option<SystemTime>, JwtError> {
    let now = nanos_since_epoch(now);
    let leeway = i128::try_from(config.leeway.as_nanos()).unwrap_or(i128::MAX);
    let exp = numeric_date(payload, "exp")?;
    let nbf = numeric_date(payload, "nbf")?;
    let iat = numeric_date(payload, "iat")?;
    let expires_at = match exp {
        Some(exp) => {
            if now >= exp.saturating_add(leeway) {
                return Err(JwtError::Expired);
            }
            Some(system_time(exp).ok_or_else(|| malformed("`exp` out of range"))?)
        }
        None if config.require_exp => return Err(JwtError::MissingClaim("exp")),
        None => None,
    };
    if let Some(nbf) = nbf
        && now < nbf.saturating_sub(leeway)
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(expires_at)
}

fn check_audience(payload: &Map<String, Value>, audiences: &[String]) -> Result<(), JwtError> {
    let accepted = |aud: &str| audiences.iter().any(|a| a == aud);
    match payload.get("aud") {
        None => Err(JwtError::MissingClaim("aud")),
        Some(Value::String(aud)) => {
            if accepted(aud) {
                Ok(())
            } else {
                Err(JwtError::WrongAudience)
            }
        }
        Some(Value::Array(list)) => {
            let mut found = false;
            for aud in list {
                match aud {
                    Value::String(aud) => found |= accepted(aud),
                    _ => return Err(malformed("`aud` holds a non-string")),
                }
            }
            if found {
                Ok(())
            } else {
                Err(JwtError::WrongAudience)
            }
        }
        Some(_) => Err(malformed("`aud` is neither a string nor an array")),
    }
}

fn optional_string(payload: &Map<String, Value>, name: &str) -> Result<Option<String>, JwtError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(&format!("`{name}` is not a string"))),
    }
}

/// An agent, user or actor id: non-empty, at most [`MAX_ID_BYTES`], no control characters.
fn identity(value: &Value, name: &str) -> Result<String, JwtError> {
    let Value::String(s) = value else {
        return Err(malformed(&format!("`{name}` is not a string")));
    };
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(malformed(&format!(
            "`{name}` must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(malformed(&format!("`{name}` holds control characters")));
    }
    Ok(s.clone())
}

struct Agent {
    agent_id: String,
    on_behalf_of: Option<String>,
    actor_chain: Vec<String>,
}

/// RFC 8693 §4.1: with `act`, the current actor (`act.sub`) is the agent and `sub` is
/// the user it acts for; nested `act` members are the earlier actors.
fn map_agent(payload: &Map<String, Value>, agent_claim: &str) -> Result<Agent, JwtError> {
    let Some(mut act) = payload.get("act") else {
        let value =
            payload
                .get(agent_claim)
                .ok_or(JwtError::MissingClaim(if agent_claim == "sub" {
                    "sub"
                } else {
                    "agent claim"
                }))?;
        if let Some(sub) = payload.get("sub") {
            identity(sub, "sub")?;
        }
        return Ok(Agent {
            agent_id: identity(value, "agent claim")?,
            on_behalf_of: None,
            actor_chain: Vec::new(),
        });
    };
    let mut chain = Vec::new();
    loop {
        let Value::Object(actor) = act else {
            return Err(malformed("`act` is not an object"));
        };
        if chain.len() == MAX_ACT_DEPTH {
            return Err(malformed(&format!(
                "`act` nested deeper than {MAX_ACT_DEPTH} actors"
            )));
        }
        let sub = actor.get("sub").ok_or(JwtError::MissingClaim("act.sub"))?;
        chain.push(identity(sub, "act.sub")?);
        match actor.get("act") {
            Some(next) => act = next,
            None => break,
        }
    }
    let user = payload.get("sub").ok_or(JwtError::MissingClaim("sub"))?;
    let user = identity(user, "sub")?;
    let agent_id = chain
        .first()
        .cloned()
        .ok_or(JwtError::MissingClaim("act.sub"))?;
    Ok(Agent {
        agent_id,
        on_behalf_of: Some(user),
        actor_chain: chain,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn split_counts_segments() {
        assert!(split("a.b.c").is_ok());
        assert!(split("a.b").is_err());
        assert!(split("a.b.c.d").is_err());
        assert!(split("a..c").is_err());
        assert!(split(".b.c").is_err());
        assert!(split("a.b.").is_err());
        assert!(split("a.b.c=").is_err());
        assert!(split("a.b.c ").is_err());
        assert!(split(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn numeric_dates() {
        let p = obj(json!({"a": 10, "b": 1.5, "c": "10", "d": 18446744073709551615u64, "e": -1}));
        assert_eq!(numeric_date(&p, "a").unwrap(), Some(10_000_000_000));
        assert_eq!(numeric_date(&p, "b").unwrap(), Some(1_500_000_000));
        assert!(numeric_date(&p, "c").is_err());
        assert!(numeric_date(&p, "d").unwrap().unwrap() > 0);
        assert_eq!(numeric_date(&p, "e").unwrap(), Some(-1_000_000_000));
        assert_eq!(numeric_date(&p, "z").unwrap(), None);
    }

    #[test]
    fn time_conversions_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(system_time(nanos_since_epoch(t)), Some(t));
        let before = UNIX_EPOCH - Duration::from_secs(3);
        assert_eq!(nanos_since_epoch(before), -3_000_000_000);
        assert_eq!(system_time(-3_000_000_000), Some(before));
    }

    #[test]
    fn act_chain_is_outermost_first() {
        let p =
            obj(json!({"sub": "alice", "act": {"sub": "agent", "act": {"sub": "orchestrator"}}}));
        let a = map_agent(&p, "sub").unwrap();
        assert_eq!(a.agent_id, "agent");
        assert_eq!(a.on_behalf_of.as_deref(), Some("alice"));
        assert_eq!(a.actor_chain, ["agent", "orchestrator"]);
    }

    #[test]
    fn act_depth_is_bounded() {
        let mut act = json!({"sub": "a0"});
        for i in 1..MAX_ACT_DEPTH {
            act = json!({"sub": format!("a{i}"), "act": act});
        }
        let ok = obj(json!({"sub": "u", "act": act.clone()}));
        assert_eq!(
            map_agent(&ok, "sub").unwrap().actor_chain.len(),
            MAX_ACT_DEPTH
        );
        let deep = obj(json!({"sub": "u", "act": {"sub": "top", "act": act}}));
        assert!(matches!(
            map_agent(&deep, "sub"),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn identities_are_bounded() {
        assert!(identity(&json!(""), "sub").is_err());
        assert!(identity(&json!("a".repeat(MAX_ID_BYTES)), "sub").is_ok());
        assert!(identity(&json!("a".repeat(MAX_ID_BYTES + 1)), "sub").is_err());
        assert!(identity(&json!("a\nb"), "sub").is_err());
        assert!(identity(&json!(7), "sub").is_err());
    }
}
