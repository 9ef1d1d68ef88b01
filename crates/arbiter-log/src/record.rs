//! The decision record: the one durable thing Arbiter writes per
//! authorization decision, plus its canonical byte encoding (what the Merkle
//! leaf hashes) and request-context redaction.
//!
//! Schema 1 is documented field by field in the crate README. The canonical
//! encoding of a record is RFC 8785 JSON of its serde form (see
//! [`crate::canonical`]); [`DecisionRecord::canonical_bytes`] writes it
//! directly (fast path) and is tested byte-for-byte against the generic
//! encoder.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::borrow::Cow;

use crate::canonical::{self, CanonicalError, write_i64, write_string, write_u64};
use crate::fastcheck;

/// The only record schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Prefix of a redacted value.
pub const REDACTED_PREFIX: &str = "redacted:hmac-sha256:";

/// The result of an authorization decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request was allowed.
    Allow,
    /// The request was denied (also the default: fail closed).
    #[default]
    Deny,
    /// The request needs a human approval before it may proceed.
    RequireApproval,
}

impl Outcome {
    /// The serialized name (`allow`, `deny`, `require_approval`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::RequireApproval => "require_approval",
        }
    }
}

/// The principal a decision was made for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    /// Cedar entity type, e.g. `Agent` or `User`.
    pub kind: String,
    /// Entity id.
    pub id: String,
    /// The agent acting, when the subject is an agent or acts through one.
    pub agent_id: Option<String>,
    /// The credential presented, if any.
    pub credential_id: Option<String>,
}

/// The fields of a record that reports count by (who, where, when, what outcome, which
/// policies), read from its payload without decoding the rest or checking that it is
/// canonical: for scans over many records (the gap map), several times faster than
/// [`DecisionRecord::from_canonical_bytes`]. Proofs and verification use the full record.
#[derive(Debug, Deserialize)]
pub struct RecordSummary<'a> {
    pub ts_us: i64,
    pub outcome: Outcome,
    #[serde(borrow, default)]
    pub enforcement_point: Cow<'a, str>,
    #[serde(borrow)]
    pub subject: SummarySubject<'a>,
    #[serde(borrow, default)]
    pub determining_policies: Vec<Cow<'a, str>>,
}

/// The subject of a [`RecordSummary`].
#[derive(Debug, Deserialize)]
pub struct SummarySubject<'a> {
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub agent_id: Option<Cow<'a, str>>,
}

impl<'a> RecordSummary<'a> {
    /// The summary of the record whose canonical payload is `bytes`.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::Decode(e.to_string()))
    }
}

/// A typed entity reference (`{kind, id}`), used for delegation links and the
/// resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    /// Cedar entity type.
    pub kind: String,
    /// Entity id.
    pub id: String,
}

/// The outcome of one principal's evaluation in a delegated decision: an agent
/// acting for a user is allowed only if both are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalOutcome {
    /// The principal evaluated (the agent, or the user it acts for).
    pub principal: EntityRef,
    /// That principal's own outcome.
    pub outcome: Outcome,
    /// The policies that determined it.
    pub determining_policies: Vec<String>,
}

/// One authorization decision (schema 1).
///
/// Time is represented canonically as `ts_us`, microseconds since the Unix
/// epoch (UTC); [`DecisionRecord::timestamp`] renders it as RFC 3339. The log
/// assigns `seq` and `node_id` and clamps `ts_us` so it never decreases (see
/// [`crate::Log::append`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Unique id of the decision (e.g. a UUIDv7).
    pub decision_id: String,
    /// Decision time, microseconds since the Unix epoch, UTC.
    pub ts_us: i64,
    /// The node that wrote the record.
    pub node_id: String,
    /// 0-based position in this node's log; equals the Merkle leaf index.
    pub seq: u64,
    /// Who asked.
    pub subject: SubjectRef,
    /// Delegation chain, outermost first.
    pub delegation: Vec<EntityRef>,
    /// The Cedar action id.
    pub action: String,
    /// What was acted on.
    pub resource: EntityRef,
    /// `sha256:<hex>` of the canonical JSON of the full, unredacted context.
    pub context_digest: String,
    /// The request context with `redacted_paths` replaced by keyed hashes.
    pub context: Value,
    /// Which redaction paths matched.
    pub redacted_paths: Vec<String>,
    /// The decision.
    pub outcome: Outcome,
    /// Ids of the policies that determined the outcome.
    pub determining_policies: Vec<String>,
    /// Explanation for administrators.
    pub reason_admin: String,
    /// Explanation safe to show the requester.
    pub reason_user: String,
    /// Evaluation errors, if any.
    pub errors: Vec<String>,
    /// Version (digest) of the policy set used.
    pub policy_version: String,
    /// Engine name, e.g. `cedar`.
    pub engine: String,
    /// Engine version.
    pub engine_version: String,
    /// Where the decision was enforced, e.g. `authzen` or `mcp:fs`.
    pub enforcement_point: String,
    /// Evaluation time in microseconds.
    pub eval_us: u64,
    /// For a delegated decision, each principal's own evaluation (the agent
    /// first, then the users it acts for); empty otherwise. `outcome` is allow
    /// only if every entry is.
    pub evaluations: Vec<PrincipalOutcome>,
}

impl Default for DecisionRecord {
    fn default() -> Self {
        DecisionRecord {
            schema: SCHEMA_VERSION,
            decision_id: String::new(),
            ts_us: 0,
            node_id: String::new(),
            seq: 0,
            subject: SubjectRef::default(),
            delegation: Vec::new(),
            action: String::new(),
            resource: EntityRef::default(),
            context_digest: String::new(),
            context: Value::Object(serde_json::Map::new()),
            redacted_paths: Vec::new(),
            outcome: Outcome::Deny,
            determining_policies: Vec::new(),
            reason_admin: String::new(),
            reason_user: String::new(),
            errors: Vec::new(),
            policy_version: String::new(),
            engine: String::new(),
            engine_version: String::new(),
            enforcement_point: String::new(),
            eval_us: 0,
            evaluations: Vec::new(),
        }
    }
}

/// Why record bytes were rejected.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The context cannot be canonically encoded.
    #[error("cannot encode record canonically: {0}")]
    Canonical(#[from] CanonicalError),
    /// The bytes are not a valid schema-1 record.
    #[error("invalid record: {0}")]
    Decode(String),
    /// Unknown schema version.
    #[error("unsupported record schema `{0}`")]
    Schema(u32),
    /// The bytes decode, but are not the canonical encoding of what they
    /// decode to (they were produced or modified by something else).
    #[error("record bytes are not canonical")]
    NotCanonical,
}

impl DecisionRecord {
    /// The canonical (RFC 8785) encoding of this record; the Merkle leaf is
    /// `SHA-256(0x00 || canonical_bytes)`.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(512);
        self.write_canonical(&mut out)?;
        Ok(out)
    }

    /// Appends the canonical encoding to `out` (members in RFC 8785 order).
    pub fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        fn key(out: &mut Vec<u8>, k: &str, first: bool) {
            if !first {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
        }
        fn strings(out: &mut Vec<u8>, v: &[String]) {
            out.push(b'[');
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, s);
            }
            out.push(b']');
        }
        fn entity(out: &mut Vec<u8>, e: &EntityRef) {
            out.extend_from_slice(b"{\"id\":");
            write_string(out, &e.id);
            out.extend_from_slice(b",\"kind\":");
            write_string(out, &e.kind);
            out.push(b'}');
        }
        fn opt(out: &mut Vec<u8>, v: Option<&String>) {
            match v {
                Some(s) => write_string(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'{');
        key(out, "action", true);
        write_string(out, &self.action);
        key(out, "context", false);
        canonical::write_canonical(out, &self.context)?;
        key(out, "context_digest", false);
        write_string(out, &self.context_digest);
        key(out, "decision_id", false);
        write_string(out, &self.decision_id);
        key(out, "delegation", false);
        out.push(b'[');
        for (i, e) in self.delegation.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            entity(out, e);
        }
        out.push(b']');
        key(out, "determining_policies", false);
        strings(out, &self.determining_policies);
        key(out, "enforcement_point", false);
        write_string(out, &self.enforcement_point);
        key(out, "engine", false);
        write_string(out, &self.engine);
        key(out, "engine_version", false);
        write_string(out, &self.engine_version);
        key(out, "errors", false);
        strings(out, &self.errors);
        key(out, "eval_us", false);
        write_u64(out, self.eval_us);
        key(out, "evaluations", false);
        out.push(b'[');
        for (i, e) in self.evaluations.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"determining_policies\":");
            strings(out, &e.determining_policies);
            out.extend_from_slice(b",\"outcome\":");
            write_string(out, e.outcome.as_str());
            out.extend_from_slice(b",\"principal\":");
            entity(out, &e.principal);
            out.push(b'}');
        }
        out.push(b']');
        key(out, "node_id", false);
        write_string(out, &self.node_id);
        key(out, "outcome", false);
        write_string(out, self.outcome.as_str());
        key(out, "policy_version", false);
        write_string(out, &self.policy_version);
        key(out, "reason_admin", false);
        write_string(out, &self.reason_admin);
        key(out, "reason_user", false);
        write_string(out, &self.reason_user);
        key(out, "redacted_paths", false);
        strings(out, &self.redacted_paths);
        key(out, "resource", false);
        entity(out, &self.resource);
        key(out, "schema", false);
        write_u64(out, u64::from(self.schema));
        key(out, "seq", false);
        write_u64(out, self.seq);
        key(out, "subject", false);
        out.extend_from_slice(b"{\"agent_id\":");
        opt(out, self.subject.agent_id.as_ref());
        out.extend_from_slice(b",\"credential_id\":");
        opt(out, self.subject.credential_id.as_ref());
        out.extend_from_slice(b",\"id\":");
        write_string(out, &self.subject.id);
        out.extend_from_slice(b",\"kind\":");
        write_string(out, &self.subject.kind);
        out.push(b'}');
        key(out, "ts_us", false);
        write_i64(out, self.ts_us);
        out.push(b'}');
        Ok(())
    }

    /// Decodes canonical record bytes, rejecting anything that is not exactly
    /// the canonical encoding of a schema-1 record.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<DecisionRecord, RecordError> {
        let rec: DecisionRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Decode(e.to_string()))?;
        if rec.schema != SCHEMA_VERSION {
            return Err(RecordError::Schema(rec.schema));
        }
        let mut again = Vec::with_capacity(bytes.len());
        rec.write_canonical(&mut again)?;
        if again != bytes {
            return Err(RecordError::NotCanonical);
        }
        Ok(rec)
    }

    /// The record time as RFC 3339 UTC with microseconds,
    /// e.g. `2025-01-02T03:04:05.000006Z`.
    pub fn timestamp(&self) -> String {
        format_rfc3339_us(self.ts_us)
    }

    /// The current wall-clock time in Unix microseconds.
    pub fn now_us() -> i64 {
        now_us()
    }
}

/// What the scanners need from one stored record.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub seq: u64,
    pub ts_us: i64,
    pub node_id: String,
    pub decision_id: String,
    pub leaf: crate::merkle::Hash,
}

/// The full decode path: strict serde decode plus canonical re-encode check.
fn decode_one_full(payload: &[u8]) -> Result<Decoded, RecordError> {
    let r = DecisionRecord::from_canonical_bytes(payload)?;
    Ok(Decoded {
        seq: r.seq,
        ts_us: r.ts_us,
        node_id: r.node_id,
        decision_id: r.decision_id,
        leaf: crate::merkle::leaf_hash(payload),
    })
}

/// Allocation-free canonical check first; the full decode only when that
/// rejects (to report the precise error, and so that a rejection by the
/// fast check can never change the verdict).
fn decode_one(payload: &[u8]) -> Result<Decoded, RecordError> {
    match fastcheck::check_record(payload) {
        Some(v) => Ok(Decoded {
            seq: v.seq,
            ts_us: v.ts_us,
            node_id: fastcheck::unescape(v.node_id),
            decision_id: fastcheck::unescape(v.decision_id),
            leaf: crate::merkle::leaf_hash(payload),
        }),
        None => decode_one_full(payload),
    }
}

/// What `verify_dir` needs from one stored record, borrowed where possible.
#[derive(Debug)]
pub(crate) struct Checked<'a> {
    pub seq: u64,
    pub ts_us: i64,
    /// The node id as raw canonical string contents (escaped, no quotes);
    /// canonical escaping is injective, so equal raw forms are equal ids.
    pub node_id_raw: Cow<'a, [u8]>,
    pub leaf: crate::merkle::Hash,
}

impl Checked<'_> {
    /// The decoded node id (for messages).
    pub fn node_id(&self) -> String {
        fastcheck::unescape(&self.node_id_raw)
    }
}

pub(crate) fn check_one(payload: &[u8]) -> Result<Checked<'_>, RecordError> {
    match fastcheck::check_record(payload) {
        Some(v) => Ok(Checked {
            seq: v.seq,
            ts_us: v.ts_us,
            node_id_raw: Cow::Borrowed(v.node_id),
            leaf: crate::merkle::leaf_hash(payload),
        }),
        None => {
            let r = DecisionRecord::from_canonical_bytes(payload)?;
            let mut raw = Vec::new();
            write_string(&mut raw, &r.node_id);
            let inner = raw
                .get(1..raw.len().saturating_sub(1))
                .unwrap_or_default()
                .to_vec();
            Ok(Checked {
                seq: r.seq,
                ts_us: r.ts_us,
                node_id_raw: Cow::Owned(inner),
                leaf: crate::merkle::leaf_hash(payload),
            })
        }
    }
}

/// Decodes, checks canonical form and leaf-hashes many payloads, in order,
/// spread over the available cores (decoding is the expensive part of
/// `open` and `verify`; the order-dependent checks stay sequential).
pub(crate) fn decode_all(payloads: &[&[u8]]) -> Vec<Result<Decoded, RecordError>> {
    par_map(payloads, decode_one)
}

/// [`decode_all`] through the full decode only (the pre-fast-path
/// behaviour; kept as the benchmark and test baseline).
pub(crate) fn decode_all_full(payloads: &[&[u8]]) -> Vec<Result<Decoded, RecordError>> {
    par_map(payloads, decode_one_full)
}

fn par_map<'a, T, F>(payloads: &[&'a [u8]], f: F) -> Vec<Result<T, RecordError>>
where
    T: Send + 'a,
    F: Fn(&'a [u8]) -> Result<T, RecordError> + Sync,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || payloads.len() < 2048 {
        return payloads.iter().map(|p| f(p)).collect();
    }
    let chunk = payloads.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = payloads
            .chunks(chunk)
            .map(|c| {
                (
                    c.len(),
                    s.spawn(move || c.iter().map(|p| f(p)).collect::<Vec<_>>()),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(payloads.len());
        for (len, h) in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(_) => out.extend(
                    (0..len)
                        .map(|_| Err(RecordError::Decode("decoder thread panicked".to_string()))),
                ),
            }
        }
        out
    })
}

/// Current wall-clock time in Unix microseconds (0 if the clock is before
/// 1970, saturating far in the future).
pub fn now_us() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Formats Unix microseconds as RFC 3339 UTC with exactly six fractional
/// digits.
pub fn format_rfc3339_us(ts_us: i64) -> String {
    let secs = ts_us.div_euclid(1_000_000);
    let micros = ts_us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Replaces the values at `paths` in a copy of `context` by
/// `"redacted:hmac-sha256:<hex>"`, the HMAC-SHA256 under `key` of the
/// canonical JSON of the replaced value, and returns the copy plus the paths
/// (as given, deduplicated, in input order) that matched at least once.
///
/// Path syntax: segments separated by `.`. A segment names an object member.
/// On an array, a numeric segment selects that element, `*` selects every
/// element, and any other segment is applied to every element (so
/// `items.secret` and `items.*.secret` are the same). On an object, `*`
/// selects every member. Values already redacted are left alone. Empty paths
/// are ignored. A value too deep to encode canonically is still replaced, by
/// the HMAC of an empty message.
pub fn redact(context: &Value, paths: &[String], key: &[u8]) -> (Value, Vec<String>) {
    let mut out = context.clone();
    let mut hit: Vec<String> = Vec::new();
    for p in paths {
        if p.is_empty() {
            continue;
        }
        let segs: Vec<&str> = p.split('.').collect();
        if redact_at(&mut out, &segs, key) && !hit.contains(p) {
            hit.push(p.clone());
        }
    }
    (out, hit)
}

fn redact_at(v: &mut Value, segs: &[&str], key: &[u8]) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        if let Value::String(s) = v
            && s.starts_with(REDACTED_PREFIX)
        {
            return true;
        }
        let bytes = canonical::canonical_json(v).unwrap_or_default();
        let mac = canonical::hmac_sha256(key, &bytes);
        *v = Value::String(format!("{REDACTED_PREFIX}{}", hex::encode(mac)));
        return true;
    };
    match v {
        Value::Object(map) => {
            if *first == "*" {
                let mut any = false;
                for child in map.values_mut() {
                    any |= redact_at(child, rest, key);
                }
                any
            } else {
                match map.get_mut(*first) {
                    Some(child) => redact_at(child, rest, key),
                    None => false,
                }
            }
        }
        Value::Array(items) => {
            if *first == "*" {
                let mut any = false;
                for child in items.iter_mut() {
                    any |= redact_at(child, rest, key);
                }
                any
            } else if let Ok(i) = first.parse::<usize>() {
                match items.get_mut(i) {
                    Some(child) => redact_at(child, rest, key),
                    None => false,
                }
            } else {
                let mut any = false;
                for child in items.iter_mut() {
                    any |= redact_at(child, segs, key);
                }
                any
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> DecisionRecord {
        DecisionRecord {
            decision_id: "01900000-0000-7000-8000-000000000001".into(),
            ts_us: 1_735_787_045_000_006,
            node_id: "node-a".into(),
            seq: 7,
            subject: SubjectRef {
                kind: "Agent".into(),
                id: "agent-1".into(),
                agent_id: Some("agent-1".into()),
                credential_id: None,
            },
            delegation: vec![EntityRef {
                kind: "User".into(),
                id: "alice".into(),
            }],
            action: "fs:read".into(),
            resource: EntityRef {
                kind: "File".into(),
                id: "/etc/\"passwd\"\n".into(),
            },
            context_digest: "sha256:00".into(),
            context: json!({"z": 1, "a": [1.5, "é", null, {"y": true, "b": -3}]}),
            redacted_paths: vec!["a.secret".into()],
            outcome: Outcome::RequireApproval,
            determining_policies: vec!["p1".into(), "p2".into()],
            reason_admin: "admin".into(),
            reason_user: "user 😀".into(),
            errors: vec![],
            policy_version: "sha256:abc".into(),
            engine: "cedar".into(),
            engine_version: "4.14".into(),
            enforcement_point: "mcp:fs".into(),
            eval_us: 42,
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn fast_encoder_matches_generic_canonical_json() {
        let r = sample();
        let generic = canonical::canonical_json(&serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(r.canonical_bytes().unwrap()).unwrap(),
            String::from_utf8(generic).unwrap()
        );
        let d = DecisionRecord::default();
        let generic = canonical::canonical_json(&serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(d.canonical_bytes().unwrap(), generic);
    }

    #[test]
    fn round_trip_and_non_canonical_rejected() {
        let r = sample();
        let bytes = r.canonical_bytes().unwrap();
        assert_eq!(DecisionRecord::from_canonical_bytes(&bytes).unwrap(), r);
        let pretty = serde_json::to_vec_pretty(&r).unwrap();
        assert!(matches!(
            DecisionRecord::from_canonical_bytes(&pretty),
            Err(RecordError::NotCanonical)
        ));
        let mut v = serde_json::to_value(&r).unwrap();
        v["schema"] = json!(2);
        let b = canonical::canonical_json(&v).unwrap();
        assert!(matches!(
            DecisionRecord::from_canonical_bytes(&b),
            Err(RecordError::Schema(2))
        ));
        v["schema"] = json!(1);
        v["extra"] = json!(1);
        let b = canonical::canonical_json(&v).unwrap();
        assert!(matches!(
            DecisionRecord::from_canonical_bytes(&b),
            Err(RecordError::Decode(_))
        ));
    }

    #[test]
    fn outcome_serde_names() {
        assert_eq!(
            serde_json::to_string(&Outcome::RequireApproval).unwrap(),
            "\"require_approval\""
        );
        assert_eq!(serde_json::to_string(&Outcome::Allow).unwrap(), "\"allow\"");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_rfc3339_us(1_735_787_045_000_006),
            "2025-01-02T03:04:05.000006Z"
        );
        assert_eq!(
            format_rfc3339_us(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(format_rfc3339_us(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn redaction() {
        let ctx = json!({
            "arguments": {"password": "hunter2", "user": "bob"},
            "items": [{"secret": 1}, {"secret": {"x": 2}}, {"other": 3}],
            "list": ["a", "b"],
        });
        let paths: Vec<String> = [
            "arguments.password",
            "items.*.secret",
            "missing.path",
            "list.1",
            "arguments.password",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (out, hit) = redact(&ctx, &paths, b"k");
        assert_eq!(hit, vec!["arguments.password", "items.*.secret", "list.1"]);
        let mac = |v: &Value| {
            format!(
                "{REDACTED_PREFIX}{}",
                hex::encode(canonical::hmac_sha256(
                    b"k",
                    &canonical::canonical_json(v).unwrap()
                ))
            )
        };
        assert_eq!(out["arguments"]["password"], json!(mac(&json!("hunter2"))));
        assert_eq!(out["arguments"]["user"], json!("bob"));
        assert_eq!(out["items"][0]["secret"], json!(mac(&json!(1))));
        assert_eq!(out["items"][1]["secret"], json!(mac(&json!({"x": 2}))));
        assert_eq!(out["items"][2], json!({"other": 3}));
        assert_eq!(out["list"], json!(["a", mac(&json!("b"))]));
        // implicit array descent is the same as `*`
        let (out2, hit2) = redact(&ctx, &["items.secret".to_string()], b"k");
        assert_eq!(out2["items"], out["items"]);
        assert_eq!(hit2, vec!["items.secret"]);
        // a different key gives a different hash; same key is deterministic
        let (out3, _) = redact(&ctx, &paths, b"other");
        assert_ne!(out3, out);
        assert_eq!(redact(&ctx, &paths, b"k").0, out);
        // the original is untouched
        assert_eq!(ctx["arguments"]["password"], json!("hunter2"));
        // nothing matches
        let (same, none) = redact(&ctx, &["nope".to_string(), String::new()], b"k");
        assert_eq!(same, ctx);
        assert!(none.is_empty());
    }

    #[test]
    fn context_digest_is_over_canonical_json() {
        let a = json!({"b": 1, "a": 2});
        let b: Value = serde_json::from_str(r#"{ "a" : 2 , "b" : 1 }"#).unwrap();
        assert_eq!(
            canonical::sha256_digest(&a).unwrap(),
            canonical::sha256_digest(&b).unwrap()
        );
        assert!(canonical::sha256_digest(&a).unwrap().starts_with("sha256:"));
    }
}
