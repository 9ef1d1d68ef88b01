//! Independent verification of a log directory and of exported proofs.
//!
//! `verify_dir` trusts nothing that `open` computed: it re-reads every frame,
//! re-derives every leaf from the raw bytes, re-checks canonical encoding,
//! sequence and time order, and checks every checkpoint's signature and root
//! against the recomputed tree. It reports the first problem and where it is.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::checkpoint::{Checkpoint, CheckpointError, PUB_FILE, PublicKey};
use crate::merkle::{Frontier, Hash, ProofError, empty_root, hash_from_hex, leaf_hash};
use std::borrow::Cow;

use crate::record::{Checked, DecisionRecord, RecordError, check_all, decode_all_full};
use crate::segment::{self, CHECKPOINTS_FILE, FrameError};
use crate::store::{LogError, io_at};
use crate::writer::InclusionProofBundle;

/// The kind of problem found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A record's bytes were changed (checksum, decoding or canonical form).
    Modified,
    /// A record (or a whole segment) is missing: a gap in `seq`.
    Missing,
    /// Records are out of order: `seq` decreases or two were swapped.
    Reordered,
    /// The log is shorter than a checkpoint says.
    Truncated,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint disagrees with the recomputed tree, or checkpoints go
    /// backwards.
    Fork,
    /// Frame structure is broken (bad length, cut-off segment).
    BadFraming,
    /// A timestamp goes backwards.
    NonMonotonicTime,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Record index, when the problem is at a record.
    pub index: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Human-readable detail (file, offset, values).
    pub detail: String,
}

/// Result of [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records checked (up to the first problem).
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Recomputed root over `records`, hex.
    pub root: String,
    /// Bytes of an incomplete final frame (an unacknowledged torn tail that
    /// `Log::open` would cut); not a problem by itself.
    pub torn_tail_bytes: u64,
    /// Whether checkpoint signatures were checked (false when no public key
    /// was given or found).
    pub signatures_checked: bool,
    /// The first problem, or `None` if the log verified.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Errors from offline proof checks.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The checkpoint does not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The proof does not verify.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The record is malformed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The bundle's key is not the trusted key.
    #[error("bundle public key `{found}` is not the trusted key `{expected}`")]
    KeyMismatch {
        /// Trusted key.
        expected: String,
        /// Key in the bundle.
        found: String,
    },
    /// The record does not hash to the stated leaf.
    #[error("record does not hash to leaf `{0}`")]
    LeafMismatch(String),
    /// Something else is inconsistent.
    #[error("invalid bundle: {0}")]
    Malformed(String),
}

fn problem(index: Option<u64>, kind: ProblemKind, detail: String) -> Option<Problem> {
    Some(Problem {
        index,
        kind,
        detail,
    })
}

/// Verifies the log in `dir`.
///
/// `pubkey` is the trusted checkpoint key; without it the key in
/// `dir/log-signing.pub` is used (which only proves self-consistency, since
/// whoever can rewrite the log can rewrite that file too). `progress` is
/// called with (bytes processed, total segment bytes) after each segment.
/// A directory without segments verifies as an empty log. Only I/O errors
/// are returned as `Err`; everything wrong with the contents is a
/// [`Problem`].
pub fn verify_dir(
    dir: &Path,
    pubkey: Option<&PublicKey>,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<VerifyReport, LogError> {
    verify_dir_impl(dir, pubkey, progress, true)
}

/// [`verify_dir`] with every record checked by the full decode and
/// canonical re-encode instead of the allocation-free canonical check. Same
/// checks and same results; kept only as a benchmark and test baseline.
#[doc(hidden)]
pub fn verify_dir_reference(
    dir: &Path,
    pubkey: Option<&PublicKey>,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<VerifyReport, LogError> {
    verify_dir_impl(dir, pubkey, progress, false)
}

fn verify_dir_impl(
    dir: &Path,
    pubkey: Option<&PublicKey>,
    progress: Option<&dyn Fn(u64, u64)>,
    fast: bool,
) -> Result<VerifyReport, LogError> {
    let key = match pubkey {
        Some(k) => Some(*k),
        None => {
            let p = dir.join(PUB_FILE);
            if p.exists() {
                Some(PublicKey::from_file(&p)?)
            } else {
                None
            }
        }
    };
    let mut rep = VerifyReport {
        records: 0,
        checkpoints: 0,
        root: hex::encode(empty_root()),
        torn_tail_bytes: 0,
        signatures_checked: key.is_some(),
        problem: None,
    };
    // --- checkpoints ---
    let cps = match load_checkpoints(dir, key.as_ref(), &mut rep)? {
        Ok(c) => c,
        Err(p) => {
            rep.problem = Some(p);
            return Ok(rep);
        }
    };
    rep.checkpoints = cps.len() as u64;
    // --- records ---
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    let total: u64 = segs
        .iter()
        .map(|(_, p)| fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let mut done_bytes = 0u64;
    let mut frontier = Frontier::new();
    let mut next_cp = 0usize;
    let mut last_ts = i64::MIN;
    let mut node: Option<Vec<u8>> = None;
    let mut index = 0u64;
    // size-0 checkpoints
    if let Some(p) = check_cps(&cps, &mut next_cp, &frontier) {
        rep.problem = Some(p);
        return Ok(rep);
    }
    let nsegs = segs.len();
    let mut seg_buf: Vec<u8> = Vec::new();
    'segs: for (si, (first, path)) in segs.iter().enumerate() {
        if *first != index {
            let kind = if *first > index {
                ProblemKind::Missing
            } else {
                ProblemKind::BadFraming
            };
            rep.problem = problem(
                Some(index),
                kind,
                format!(
                    "segment `{}` starts at record {first}, expected {index}",
                    path.display()
                ),
            );
            break;
        }
        // One buffer reused for every segment (no fresh 64 MiB allocation
        // and page faults per segment).
        seg_buf.clear();
        fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut seg_buf))
            .map_err(io_at(path))?;
        let buf = seg_buf.as_slice();
        let last_seg = si + 1 == nsegs;
        // Pass 1: framing (sequential, cheap).
        let mut frames: Vec<(usize, &[u8], usize)> = Vec::new();
        let mut frame_problem: Option<(usize, FrameError)> = None;
        let mut off = 0usize;
        while off < buf.len() {
            match segment::parse_frame(buf, off) {
                Ok((payload, next)) => {
                    frames.push((off, payload, next));
                    off = next;
                }
                Err(err) => {
                    frame_problem = Some((off, err));
                    break;
                }
            }
        }
        // Pass 2: decode, canonical check and leaf hash (parallel).
        let payloads: Vec<&[u8]> = frames.iter().map(|f| f.1).collect();
        let decoded: Vec<Result<Checked<'_>, RecordError>> = if fast {
            check_all(&payloads)
        } else {
            decode_all_full(&payloads)
                .into_iter()
                .map(|r| {
                    r.map(|d| {
                        let mut raw = Vec::new();
                        canonical::write_string(&mut raw, &d.node_id);
                        let inner = raw
                            .get(1..raw.len().saturating_sub(1))
                            .unwrap_or_default()
                            .to_vec();
                        Checked {
                            seq: d.seq,
                            ts_us: d.ts_us,
                            node_id_raw: Cow::Owned(inner),
                            leaf: d.leaf,
                        }
                    })
                })
                .collect()
        };
        // Pass 3: order-dependent checks (sequential).
        for (j, ((off, _, next), d)) in frames.iter().zip(decoded.iter()).enumerate() {
            let at = || format!("`{}` offset {off}", path.display());
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    rep.problem = problem(
                        Some(index),
                        ProblemKind::Modified,
                        format!("{e} at {}", at()),
                    );
                    break 'segs;
                }
            };
            if d.seq != index {
                let next_seq = match decoded.get(j + 1) {
                    Some(Ok(n)) => Some(n.seq),
                    Some(Err(_)) => None,
                    None => peek_seq(&segs, si, buf, *next),
                };
                let kind = if d.seq < index || next_seq == Some(index) {
                    ProblemKind::Reordered
                } else {
                    ProblemKind::Missing
                };
                rep.problem = problem(
                    Some(index),
                    kind,
                    format!("found seq {} at {}", d.seq, at()),
                );
                break 'segs;
            }
            if d.ts_us < last_ts {
                rep.problem = problem(
                    Some(index),
                    ProblemKind::NonMonotonicTime,
                    format!("ts_us {} is before the previous {last_ts}", d.ts_us),
                );
                break 'segs;
            }
            match &node {
                None => node = Some(d.node_id_raw.to_vec()),
                Some(n) if n.as_slice() != &*d.node_id_raw => {
                    rep.problem = problem(
                        Some(index),
                        ProblemKind::Modified,
                        format!(
                            "record from node `{}` in the log of `{}`",
                            d.node_id(),
                            crate::fastcheck::unescape(n)
                        ),
                    );
                    break 'segs;
                }
                Some(_) => {}
            }
            last_ts = d.ts_us;
            frontier.push(d.leaf);
            index += 1;
            rep.records = index;
            if let Some(p) = check_cps(&cps, &mut next_cp, &frontier) {
                rep.problem = Some(p);
                break 'segs;
            }
        }
        if let Some((off, err)) = frame_problem {
            let zero_tail = buf[off..].iter().all(|b| *b == 0);
            if last_seg && (err == FrameError::Incomplete || zero_tail) {
                rep.torn_tail_bytes = (buf.len() - off) as u64;
                break 'segs;
            }
            let kind = match err {
                FrameError::Crc { .. } => ProblemKind::Modified,
                _ => ProblemKind::BadFraming,
            };
            rep.problem = problem(
                Some(index),
                kind,
                format!("{err} in `{}` at offset {off}", path.display()),
            );
            break 'segs;
        }
        done_bytes += buf.len() as u64;
        if let Some(f) = progress {
            f(done_bytes, total);
        }
    }
    rep.root = hex::encode(frontier.root());
    if rep.problem.is_none()
        && let Some(cp) = cps.last()
        && cp.size > rep.records
    {
        rep.problem = problem(
            Some(rep.records),
            ProblemKind::Truncated,
            format!(
                "log has {} records but checkpoint #{} covers {}",
                rep.records, cp.number, cp.size
            ),
        );
    }
    Ok(rep)
}

struct Cp {
    number: u64,
    size: u64,
    root: Hash,
}

/// Checks every checkpoint whose size equals the frontier's size.
fn check_cps(cps: &[Cp], next: &mut usize, frontier: &Frontier) -> Option<Problem> {
    while let Some(cp) = cps.get(*next) {
        if cp.size != frontier.size() {
            break;
        }
        let root = frontier.root();
        if root != cp.root {
            return problem(
                None,
                ProblemKind::Fork,
                format!(
                    "checkpoint #{} at size {} has root {}, records give {}",
                    cp.number,
                    cp.size,
                    hex::encode(cp.root),
                    hex::encode(root)
                ),
            );
        }
        *next += 1;
    }
    None
}

/// The `seq` of the frame after the current one, if it decodes.
fn peek_seq(segs: &[(u64, PathBuf)], si: usize, buf: &[u8], next: usize) -> Option<u64> {
    let owned;
    let (b, off) = if next < buf.len() {
        (buf, next)
    } else {
        owned = fs::read(&segs.get(si + 1)?.1).ok()?;
        (owned.as_slice(), 0)
    };
    let (payload, _) = segment::parse_frame(b, off).ok()?;
    Some(DecisionRecord::from_canonical_bytes(payload).ok()?.seq)
}

/// Reads and checks `checkpoints.log`: framing, signatures, order. The
/// outer `Err` is an I/O error, the inner one the first problem.
fn load_checkpoints(
    dir: &Path,
    key: Option<&PublicKey>,
    rep: &mut VerifyReport,
) -> Result<Result<Vec<Cp>, Problem>, LogError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(Vec::new())),
        Err(e) => return Err(LogError::Io { path, source: e }),
    };
    let mut out: Vec<Cp> = Vec::new();
    let mut last: Option<(u64, i64)> = None;
    let mut off = 0usize;
    let mut n = 0u64;
    let bad = |kind, detail: String| {
        Ok(Err(Problem {
            index: None,
            kind,
            detail,
        }))
    };
    while off < buf.len() {
        let (payload, next) = match segment::parse_frame(&buf, off) {
            Ok(x) => x,
            Err(FrameError::Incomplete) => {
                rep.torn_tail_bytes += (buf.len() - off) as u64;
                break;
            }
            Err(e) => {
                let kind = match e {
                    FrameError::Crc { .. } => ProblemKind::Modified,
                    _ => ProblemKind::BadFraming,
                };
                return bad(
                    kind,
                    format!(
                        "checkpoint #{n}: {e} in `{}` at offset {off}",
                        path.display()
                    ),
                );
            }
        };
        let cp = match Checkpoint::from_json(payload) {
            Ok(c) if c.to_canonical_json() == payload => c,
            Ok(_) => {
                return bad(
                    ProblemKind::Modified,
                    format!("checkpoint #{n} is not canonical JSON"),
                );
            }
            Err(e) => return bad(ProblemKind::Modified, format!("checkpoint #{n}: {e}")),
        };
        let root = match cp.root() {
            Ok(r) => r,
            Err(e) => return bad(ProblemKind::Modified, format!("checkpoint #{n}: {e}")),
        };
        if let Some(k) = key
            && let Err(e) = cp.verify(k)
        {
            return bad(
                ProblemKind::BadSignature,
                format!("checkpoint #{n} (size {}): {e}", cp.tree_size),
            );
        }
        if let Some((size, ts)) = last {
            if cp.tree_size < size {
                return bad(
                    ProblemKind::Fork,
                    format!(
                        "checkpoint #{n} has size {} after size {size}",
                        cp.tree_size
                    ),
                );
            }
            if cp.ts_us < ts {
                return bad(
                    ProblemKind::NonMonotonicTime,
                    format!("checkpoint #{n} time goes backwards"),
                );
            }
        }
        last = Some((cp.tree_size, cp.ts_us));
        out.push(Cp {
            number: n,
            size: cp.tree_size,
            root,
        });
        n += 1;
        off = next;
    }
    Ok(Ok(out))
}

/// Checks an exported inclusion proof offline: the checkpoint signature, that
/// the leaf hash is the hash of the record's canonical bytes, and the audit
/// path against the checkpoint root. With `trusted`, the bundle's key must be
/// that key.
pub fn check_proof(
    bundle: &InclusionProofBundle,
    trusted: Option<&PublicKey>,
) -> Result<(), VerifyError> {
    let key = PublicKey::from_hex(&bundle.public_key)?;
    if let Some(t) = trusted
        && *t != key
    {
        return Err(VerifyError::KeyMismatch {
            expected: t.to_hex(),
            found: key.to_hex(),
        });
    }
    bundle.checkpoint.verify(&key)?;
    if bundle.tree_size != bundle.checkpoint.tree_size {
        return Err(VerifyError::Malformed(format!(
            "tree size {} differs from the checkpoint's {}",
            bundle.tree_size, bundle.checkpoint.tree_size
        )));
    }
    let bytes = canonical::canonical_json(&bundle.record)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let rec = DecisionRecord::from_canonical_bytes(&bytes)?;
    if rec.seq != bundle.leaf_index {
        return Err(VerifyError::Malformed(format!(
            "record seq {} differs from leaf index {}",
            rec.seq, bundle.leaf_index
        )));
    }
    let leaf = leaf_hash(&bytes);
    if hex::encode(leaf) != bundle.leaf_hash {
        return Err(VerifyError::LeafMismatch(bundle.leaf_hash.clone()));
    }
    let proof = parse_hashes(&bundle.proof)?;
    let root = bundle.checkpoint.root()?;
    crate::merkle::verify_inclusion(&leaf, bundle.leaf_index, bundle.tree_size, &proof, &root)?;
    Ok(())
}

/// Checks that `new` extends `old`: both signatures (by `key`), the same
/// node, and the consistency proof.
pub fn check_consistency(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[Hash],
    key: &PublicKey,
) -> Result<(), VerifyError> {
    old.verify(key)?;
    new.verify(key)?;
    if old.node_id != new.node_id {
        return Err(VerifyError::Malformed(format!(
            "checkpoints are from nodes `{}` and `{}`",
            old.node_id, new.node_id
        )));
    }
    crate::merkle::verify_consistency(
        old.tree_size,
        new.tree_size,
        &old.root()?,
        &new.root()?,
        proof,
    )?;
    Ok(())
}

/// Parses hex hashes.
pub fn parse_hashes(v: &[String]) -> Result<Vec<Hash>, VerifyError> {
    v.iter()
        .map(|s| hash_from_hex(s).ok_or_else(|| VerifyError::Malformed(format!("hash `{s}`"))))
        .collect()
}
