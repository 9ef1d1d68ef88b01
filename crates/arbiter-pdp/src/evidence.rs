//! Evidence bundles: one decision, checkable offline by someone who holds nothing but the
//! log's public key (and the witnesses' keys).
//!
//! A bundle ([`Evidence`]) holds the decision record with its inclusion proof under a signed
//! checkpoint, the witnesses' cosignatures of that checkpoint, the text of the policy version
//! the record names, and, for a governed version, the record of its activation (who proposed,
//! approved and activated it), proved under the same checkpoint. [`verify`] checks all of it:
//! an altered record, proof, checkpoint, cosignature, policy text or approval fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbiter_log::witness::{Cosignature, read_cosigned};
use arbiter_log::{Checkpoint, DecisionRecord, InclusionProofBundle, LogError, PublicKey};
use arbiter_policy::Policies;
use arbiter_store::Store;
use serde::{Deserialize, Serialize};

use crate::governed::{ACTIVATION_ACTION, ACTIVATION_ENFORCEMENT_POINT};

/// The format tag of a bundle.
pub const FORMAT: &str = "arbiter-evidence/v1";

/// One decision's evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// [`FORMAT`].
    pub format: String,
    /// The decision record and its inclusion proof.
    pub decision: InclusionProofBundle,
    /// Witness cosignatures of the decision's checkpoint (none when the log has no witness).
    pub cosignatures: Vec<Cosignature>,
    /// The activation record of the policy version, under the same checkpoint (governed mode).
    pub activation: Option<InclusionProofBundle>,
    /// The policy version's files (`None` when neither the registry nor the given policy
    /// directory holds that version).
    pub policy: Option<PolicyText>,
}

/// A policy version's files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    /// Its content hash.
    pub version: String,
    /// Its files, by path relative to the policy directory.
    pub files: Vec<PolicyFile>,
}

/// One file of a policy version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Path relative to the policy directory.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Why a bundle could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The log could not be read, or has no such decision.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The decision is newer than the latest witnessed checkpoint.
    #[error(
        "decision `{id}` is record {index}, newer than the latest witnessed checkpoint \
         ({witnessed} records): retry once the witnesses have cosigned the next checkpoint"
    )]
    NotYetWitnessed {
        /// The decision id.
        id: String,
        /// Its index.
        index: u64,
        /// The witnessed size.
        witnessed: u64,
    },
    /// No checkpoint covers the decision yet.
    #[error(
        "decision `{0}` is newer than the latest checkpoint: retry after the next one (written \
         every second by default)"
    )]
    NotYetCheckpointed(String),
    /// The store could not be read.
    #[error("cannot read the policy registry: {0}")]
    Store(String),
    /// The bundle does not verify.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> EvidenceError {
    EvidenceError::Invalid(m.into())
}

/// Where [`assemble`] finds the policy text.
#[derive(Clone, Copy, Default)]
pub struct PolicySources<'a> {
    /// The policy registry (governed versions).
    pub store: Option<&'a dyn Store>,
    /// A policy directory, used when its files are the version the decision names.
    pub dir: Option<&'a Path>,
}

impl std::fmt::Debug for PolicySources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySources")
            .field("store", &self.store.is_some())
            .field("dir", &self.dir)
            .finish()
    }
}

/// Makes the bundle of `decision_id` from the log in `log_dir` (read-only; the log may be
/// live). The proof is against the latest checkpoint the witnesses cosigned, or, for a log
/// that was never witnessed, against its latest checkpoint.
pub fn assemble(
    log_dir: &Path,
    decision_id: &str,
    sources: PolicySources<'_>,
) -> Result<Evidence, EvidenceError> {
    let log_key = PublicKey::from_file(&log_dir.join(arbiter_log::checkpoint::PUB_FILE))
        .map_err(LogError::from)?;
    // The largest cosigned checkpoint (with every cosignature it received), else the latest.
    let mut witnessed: Option<(Checkpoint, Vec<Cosignature>)> = None;
    for entry in read_cosigned(log_dir)? {
        if entry.checkpoint.verify(&log_key).is_err() {
            continue;
        }
        match &mut witnessed {
            Some((cp, sigs)) if *cp == entry.checkpoint => {
                for s in entry.cosignatures {
                    if !sigs.iter().any(|x| x.key_id == s.key_id) {
                        sigs.push(s);
                    }
                }
            }
            Some((cp, _))
                if (cp.tree_size, cp.ts_us)
                    >= (entry.checkpoint.tree_size, entry.checkpoint.ts_us) => {}
            _ => witnessed = Some((entry.checkpoint, entry.cosignatures)),
        }
    }
    let (checkpoint, cosignatures) = match witnessed {
        Some(w) => w,
        None => match arbiter_log::latest_checkpoint(log_dir)? {
            Some(cp) => (cp, Vec::new()),
            None => return Err(EvidenceError::NotYetCheckpointed(decision_id.to_owned())),
        },
    };
    let needle = format!(
        "\"decision_id\":{}",
        serde_json::Value::String(decision_id.to_owned())
    );
    let activation_needle = format!("\"enforcement_point\":\"{ACTIVATION_ENFORCEMENT_POINT}\"");
    let mut pick = |payload: &[u8]| {
        if !arbiter_log::contains(payload, needle.as_bytes())
            && !arbiter_log::contains(payload, activation_needle.as_bytes())
        {
            return false;
        }
        DecisionRecord::from_canonical_bytes(payload).is_ok_and(|r| {
            r.decision_id == decision_id
                || (r.enforcement_point == ACTIVATION_ENFORCEMENT_POINT
                    && r.action == ACTIVATION_ACTION)
        })
    };
    let picked = arbiter_log::prove_picked(log_dir, &checkpoint, &mut pick)?;
    let record_of = |b: &InclusionProofBundle| -> Option<DecisionRecord> {
        serde_json::from_value(b.record.clone()).ok()
    };
    let Some(decision) = picked
        .iter()
        .find(|b| record_of(b).is_some_and(|r| r.decision_id == decision_id))
        .cloned()
    else {
        // Newer than the checkpoint, or not in the log at all: ask the log which.
        return Err(match arbiter_log::prove_dir(log_dir, decision_id) {
            Ok(b) if !cosignatures.is_empty() => EvidenceError::NotYetWitnessed {
                id: decision_id.to_owned(),
                index: b.leaf_index,
                witnessed: checkpoint.tree_size,
            },
            Ok(_) => EvidenceError::NotYetCheckpointed(decision_id.to_owned()),
            Err(LogError::NotYetCheckpointed { .. }) if !cosignatures.is_empty() => {
                EvidenceError::NotYetWitnessed {
                    id: decision_id.to_owned(),
                    index: checkpoint.tree_size,
                    witnessed: checkpoint.tree_size,
                }
            }
            Err(LogError::NotYetCheckpointed { .. }) => {
                EvidenceError::NotYetCheckpointed(decision_id.to_owned())
            }
            Err(e) => EvidenceError::Log(e),
        });
    };
    let version = record_of(&decision)
        .map(|r| r.policy_version)
        .unwrap_or_default();
    let activation = picked
        .iter()
        .rfind(|b| {
            b.leaf_index < decision.leaf_index
                && record_of(b).is_some_and(|r| {
                    r.enforcement_point == ACTIVATION_ENFORCEMENT_POINT && r.resource.id == version
                })
        })
        .cloned();
    Ok(Evidence {
        format: FORMAT.to_owned(),
        decision,
        cosignatures,
        activation,
        policy: policy_text(&version, sources)?,
    })
}

/// The files of `version`, from the registry or the policy directory.
fn policy_text(
    version: &str,
    sources: PolicySources<'_>,
) -> Result<Option<PolicyText>, EvidenceError> {
    if let Some(store) = sources.store {
        match store.policy_version(version) {
            Ok(Some(v)) => {
                return Ok(Some(PolicyText {
                    version: v.version,
                    files: v
                        .files
                        .into_iter()
                        .map(|f| PolicyFile {
                            path: f.path,
                            text: f.text,
                        })
                        .collect(),
                }));
            }
            Ok(None) => {}
            Err(e) => return Err(EvidenceError::Store(e.to_string())),
        }
    }
    if let Some(dir) = sources.dir
        && let Ok(files) = Policies::source_files(dir)
        && Policies::from_files(files.clone()).is_ok_and(|p| p.version() == version)
    {
        return Ok(Some(PolicyText {
            version: version.to_owned(),
            files: files
                .into_iter()
                .filter(|(p, _)| is_version_file(p))
                .map(|(p, text)| PolicyFile {
                    path: p.to_string_lossy().into_owned(),
                    text,
                })
                .collect(),
        }));
    }
    Ok(None)
}

/// Whether a file of a policy directory is part of its version (not a test).
fn is_version_file(p: &Path) -> bool {
    !p.starts_with("tests")
}

/// What a verified bundle shows.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The decision record.
    pub record: DecisionRecord,
    /// The checkpoint the proofs are against.
    pub checkpoint: Checkpoint,
    /// Witnesses whose cosignature verified: key id, name, time (Unix seconds).
    pub witnesses: Vec<(String, String, u64)>,
    /// Each policy's owner (`None`: it declares none), from the verified text.
    pub owners: BTreeMap<String, Option<String>>,
    /// The governance of the version, from its verified activation record.
    pub governance: Option<serde_json::Value>,
}

/// What [`verify`] requires beyond the log's key.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// Witness keys that must each have cosigned the checkpoint.
    pub witnesses: Vec<PublicKey>,
    /// Require the activation record (the version was enforced through the registry).
    pub governed: bool,
}

/// Checks a bundle offline against the log's key and `req`.
pub fn verify(
    e: &Evidence,
    log_key: &PublicKey,
    req: &Requirements,
) -> Result<Verified, EvidenceError> {
    if e.format != FORMAT {
        return Err(invalid(format!("format `{}` is not `{FORMAT}`", e.format)));
    }
    arbiter_log::check_proof(&e.decision, Some(log_key)).map_err(|err| {
        invalid(format!(
            "the decision's inclusion proof does not verify: {err}"
        ))
    })?;
    let record: DecisionRecord = serde_json::from_value(e.decision.record.clone())
        .map_err(|err| invalid(format!("the decision record is malformed: {err}")))?;
    let checkpoint = e.decision.checkpoint.clone();
    let mut witnesses = Vec::new();
    for w in &req.witnesses {
        let found = e
            .cosignatures
            .iter()
            .find(|c| c.verify(&checkpoint, w).is_ok())
            .ok_or_else(|| {
                invalid(format!(
                    "the checkpoint (size {}) is not cosigned by the witness with key id `{}`",
                    checkpoint.tree_size,
                    w.key_id()
                ))
            })?;
        witnesses.push((w.key_id(), found.witness.clone(), found.time));
    }
    // The policy text must be the version the decision names.
    let text = e.policy.as_ref().ok_or_else(|| {
        invalid(format!(
            "the bundle does not hold the text of policy version {}",
            record.policy_version
        ))
    })?;
    let files = text
        .files
        .iter()
        .map(|f| (PathBuf::from(&f.path), f.text.clone()))
        .collect();
    let policies = Policies::from_files(files)
        .map_err(|err| invalid(format!("the policy text does not load: {err}")))?;
    if policies.version() != record.policy_version || text.version != record.policy_version {
        return Err(invalid(format!(
            "the policy text hashes to {}, but the decision was made by {}",
            policies.version(),
            record.policy_version
        )));
    }
    for p in &record.determining_policies {
        if !p.starts_with("arbiter:") && !policies.policy_texts().contains_key(p) {
            return Err(invalid(format!(
                "the decision names policy `{p}`, which the policy text does not hold"
            )));
        }
    }
    let owners = policies.owners();
    let governance = match &e.activation {
        None if req.governed => {
            return Err(invalid(format!(
                "the bundle holds no activation record of policy version {}: it was not \
                 enforced through the governed registry",
                record.policy_version
            )));
        }
        None => None,
        Some(a) => Some(check_activation(a, &e.decision, &record, &owners, log_key)?),
    };
    Ok(Verified {
        record,
        checkpoint,
        witnesses,
        owners,
        governance,
    })
}

/// Checks the activation record against the decision: same checkpoint, before the decision,
/// the same version, owners as the text declares them, approvers other than the author.
fn check_activation(
    a: &InclusionProofBundle,
    decision: &InclusionProofBundle,
    record: &DecisionRecord,
    owners: &BTreeMap<String, Option<String>>,
    log_key: &PublicKey,
) -> Result<serde_json::Value, EvidenceError> {
    if a.checkpoint != decision.checkpoint {
        return Err(invalid(
            "the activation record is proved under another checkpoint than the decision",
        ));
    }
    arbiter_log::check_proof(a, Some(log_key)).map_err(|err| {
        invalid(format!(
            "the activation record's proof does not verify: {err}"
        ))
    })?;
    let r: DecisionRecord = serde_json::from_value(a.record.clone())
        .map_err(|err| invalid(format!("the activation record is malformed: {err}")))?;
    if r.enforcement_point != ACTIVATION_ENFORCEMENT_POINT
        || r.action != ACTIVATION_ACTION
        || r.resource.id != record.policy_version
    {
        return Err(invalid(format!(
            "record {} is not the activation of policy version {}",
            a.leaf_index, record.policy_version
        )));
    }
    if a.leaf_index >= decision.leaf_index {
        return Err(invalid("the activation record comes after the decision"));
    }
    let c = &r.context;
    let declared: BTreeMap<String, Option<String>> = owners
        .iter()
        .filter(|(_, o)| o.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let recorded: BTreeMap<String, Option<String>> = c["owners"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                .collect()
        })
        .unwrap_or_default();
    if declared != recorded {
        return Err(invalid(
            "the owners in the activation record are not those the policy text declares",
        ));
    }
    let author = c["author"].as_str().unwrap_or_default();
    let approvals = c["approvals"].as_array().cloned().unwrap_or_default();
    if approvals.iter().any(|p| p["approver"] == author) {
        return Err(invalid(format!(
            "the version was approved by its own author `{author}`"
        )));
    }
    Ok(serde_json::json!({
        "author": author,
        "message": c["message"],
        "proposed_at": c["proposed_at"],
        "approvals": approvals,
        "tests": c["tests"],
        "activation": c["activation"],
        "recorded_at": arbiter_log::format_rfc3339_us(r.ts_us),
        "record_index": a.leaf_index,
    }))
}
