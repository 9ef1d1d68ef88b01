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
use crate::contains;
use crate::merkle::{Frontier, Hash, ProofError, empty_root, hash_from_hex, leaf_hash};
use crate::partial::parse_width;
use crate::tiles::{TILE_BYTES, TILE_WIDTH, partial_dir, tile_path};
use std::borrow::Cow;

use crate::record::{Checked, DecisionRecord, RecordError, check_one, decode_all_full};
use crate::segment::{self, CHECKPOINTS_FILE, End, FrameError};
use crate::state::{STATE_FILE, StateRead, read_state};
use crate::store::{LogError, io_at};
use crate::writer::{
    DEFAULT_CHECKPOINT_EVERY_RECORDS, InclusionProofBundle, OVERRIDE_ACTION,
    OVERRIDE_ENFORCEMENT_POINT,
};

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
    /// Records that no checkpoint covers, beyond the unsigned tail a crash
    /// can leave; or records without `checkpoints.state` to tell whether
    /// checkpoints were removed.
    Uncovered,
    /// A file derived from the records — a tile of the tree, a sealed
    /// segment's index file or `sealed.log` — does not match them. The
    /// records are intact, but the live log builds its tree, proofs and
    /// lookups from these files: remove `sealed.log` and open the log (start
    /// `arbiter serve`) to rebuild them from the records.
    DamagedIndex,
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
    /// Bytes of a torn final frame (an unacknowledged tail that `Log::open`
    /// would cut); not a problem by itself. The zero tail of a preallocated
    /// segment is not counted.
    pub torn_tail_bytes: u64,
    /// Whether checkpoint signatures were checked: a public key was given
    /// or found, and there was at least one checkpoint.
    pub signatures_checked: bool,
    /// The first problem, or `None` if the log verified.
    pub problem: Option<Problem>,
    /// Operator overrides recorded in the log (damage accepted at open):
    /// what came before each was not verified by the checkpoints that
    /// follow it.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

/// An accepted-damage override recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// The override record's index.
    pub index: u64,
    /// When, Unix microseconds.
    pub ts_us: i64,
    /// The problem that was accepted.
    pub problem: String,
    /// The operator's reason.
    pub reason: String,
}

impl Override {
    /// The override recorded in `payload`, if it is an override record.
    fn from_payload(payload: &[u8]) -> Option<Override> {
        if !contains(payload, OVERRIDE_MARK) {
            return None;
        }
        let r = DecisionRecord::from_canonical_bytes(payload).ok()?;
        Override::from_record(&r)
    }

    fn from_record(r: &DecisionRecord) -> Option<Override> {
        if r.enforcement_point != OVERRIDE_ENFORCEMENT_POINT || r.action != OVERRIDE_ACTION {
            return None;
        }
        let text = |k: &str| {
            r.context
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Some(Override {
            index: r.seq,
            ts_us: r.ts_us,
            problem: text("problem"),
            reason: text("reason"),
        })
    }
}

/// Bytes every override record holds (a record may hold them without being
/// one; those are then decoded and checked).
const OVERRIDE_MARK: &[u8] = b"arbiter-log:override";

/// How [`verify_dir_with`] judges a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Records that may follow the latest checkpoint without being a
    /// problem: the writer's checkpoint interval in records (the unsigned
    /// tail a crash can leave).
    pub window: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            window: DEFAULT_CHECKPOINT_EVERY_RECORDS,
        }
    }
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

/// Loads the key and the checkpoints; `Err(report)` when a checkpoint
/// problem already ends verification.
#[allow(clippy::type_complexity)]
fn prologue(
    dir: &Path,
    pubkey: Option<&PublicKey>,
) -> Result<Result<(Vec<Cp>, VerifyReport, Ending), VerifyReport>, LogError> {
    // The state first: it is written after the checkpoints it counts, so
    // read before them it is never ahead of a live log's file.
    let state = read_state(dir).map_err(io_at(&dir.join(STATE_FILE)))?;
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
        signatures_checked: false,
        problem: None,
        overrides: Vec::new(),
    };
    let cps = match load_checkpoints(dir, key.as_ref(), &mut rep)? {
        Ok(c) => c,
        Err(p) => {
            rep.problem = Some(p);
            return Ok(Err(rep));
        }
    };
    rep.checkpoints = cps.len() as u64;
    rep.signatures_checked = key.is_some() && !cps.is_empty();
    if let StateRead::Found(s) = state {
        let latest = cps.last().map_or(0, |c| c.size);
        let detail = if rep.checkpoints < s.checkpoints {
            Some(format!(
                "`{CHECKPOINTS_FILE}` holds {} checkpoints, but `{STATE_FILE}` says {} were \
                 written (deleted, emptied or cut back)",
                rep.checkpoints, s.checkpoints
            ))
        } else if latest < s.tree_size {
            Some(format!(
                "the latest checkpoint covers {latest} records, but `{STATE_FILE}` says one \
                 covering {} was written",
                s.tree_size
            ))
        } else {
            None
        };
        if let Some(detail) = detail {
            rep.problem = problem(None, ProblemKind::Truncated, detail);
            return Ok(Err(rep));
        }
    }
    Ok(Ok((
        cps,
        rep,
        Ending {
            dir: dir.to_path_buf(),
            key,
            state,
        },
    )))
}

/// What the final checks need besides the checkpoints.
struct Ending {
    dir: PathBuf,
    key: Option<PublicKey>,
    state: StateRead,
}

impl Ending {
    /// The final checks: the log must reach the last checkpoint, and the
    /// checkpoints must cover every record beyond the unsigned window.
    fn finish(&self, rep: &mut VerifyReport, cps: &[Cp], opts: &VerifyOptions) {
        check_truncation(rep, cps);
        if rep.problem.is_some() {
            return;
        }
        let detail = match self.state {
            StateRead::Missing if rep.records > 0 && cps.is_empty() => Some(format!(
                "the log has {} records but no checkpoint, and `{STATE_FILE}` is missing",
                rep.records
            )),
            StateRead::Damaged if rep.records > 0 || !cps.is_empty() => {
                Some(format!("`{STATE_FILE}` is damaged"))
            }
            StateRead::Missing | StateRead::Damaged | StateRead::Found(_) => None,
        };
        if let Some(detail) = detail {
            rep.problem = problem(Some(0), ProblemKind::Uncovered, detail);
            return;
        }
        let mut covered = cps.last().map_or(0, |c| c.size);
        if rep.records.saturating_sub(covered) > opts.window {
            // A live log may have been checkpointed while its records were
            // read: count newer signed checkpoints (their roots are checked
            // by the next verification).
            covered = covered.max(self.newer_coverage(cps.len()));
        }
        let uncovered = rep.records.saturating_sub(covered);
        if uncovered > opts.window {
            rep.problem = problem(
                Some(covered),
                ProblemKind::Uncovered,
                format!(
                    "records {covered} to {} ({uncovered}) are covered by no checkpoint; at most \
                     {} (the checkpoint interval in records) may follow the latest one",
                    rep.records - 1,
                    opts.window
                ),
            );
        }
    }

    /// The size of the latest checkpoint appended after the first `known`
    /// ones, if its signature verifies (0 otherwise).
    fn newer_coverage(&self, known: usize) -> u64 {
        let Some(key) = self.key.as_ref() else {
            return 0;
        };
        let Ok(all) = crate::reader::read_checkpoints(&self.dir) else {
            return 0;
        };
        all.iter()
            .skip(known)
            .rev()
            .find(|cp| cp.verify(key).is_ok())
            .map_or(0, |cp| cp.tree_size)
    }
}

/// The final check: the log must reach the last checkpoint.
fn check_truncation(rep: &mut VerifyReport, cps: &[Cp]) {
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
}

fn problem(index: Option<u64>, kind: ProblemKind, detail: String) -> Option<Problem> {
    Some(Problem {
        index,
        kind,
        detail,
    })
}

/// A segment must start at the record that follows the previous one: later means records
/// are missing, earlier means the framing is wrong.
fn segment_start_problem(first: u64, index: u64, path: &Path) -> Option<Problem> {
    if first == index {
        return None;
    }
    let kind = if first > index {
        ProblemKind::Missing
    } else {
        ProblemKind::BadFraming
    };
    problem(
        Some(index),
        kind,
        format!(
            "segment `{}` starts at record {first}, expected {index}",
            path.display()
        ),
    )
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
    verify_dir_with(dir, pubkey, progress, &VerifyOptions::default())
}

/// [`verify_dir`] with options (the unsigned window).
pub fn verify_dir_with(
    dir: &Path,
    pubkey: Option<&PublicKey>,
    progress: Option<&dyn Fn(u64, u64)>,
    opts: &VerifyOptions,
) -> Result<VerifyReport, LogError> {
    verify_dir_streaming(dir, pubkey, progress, CHUNK, opts)
}

/// [`verify_dir`] the old way: each segment read whole and every record
/// checked by the full decode and canonical re-encode instead of the
/// allocation-free canonical check. Same checks and same results; kept only
/// as a benchmark and test baseline.
#[doc(hidden)]
pub fn verify_dir_reference(
    dir: &Path,
    pubkey: Option<&PublicKey>,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<VerifyReport, LogError> {
    let opts = VerifyOptions::default();
    let (cps, mut rep, ending) = match prologue(dir, pubkey)? {
        Ok(x) => x,
        Err(rep) => return Ok(rep),
    };
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
        if let Some(p) = segment_start_problem(*first, index, path) {
            rep.problem = Some(p);
            break;
        }
        // One buffer reused for every segment (no fresh 64 MiB allocation
        // and page faults per segment).
        seg_buf.clear();
        if let Err(e) = segment::open_segment(path).and_then(|mut f| f.read_to_end(&mut seg_buf)) {
            match undecodable(path, &e, index) {
                Some(p) => {
                    rep.problem = Some(p);
                    break;
                }
                None => return Err(io_at(path)(e)),
            }
        }
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
        let decoded: Vec<Result<Checked<'_>, RecordError>> = {
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
            if let Some(o) = Override::from_payload(frames[j].1) {
                rep.overrides.push(o);
            }
            frontier.push(d.leaf);
            index += 1;
            rep.records = index;
            if let Some(p) = check_cps(&cps, &mut next_cp, &frontier) {
                rep.problem = Some(p);
                break 'segs;
            }
        }
        if let Some((off, err)) = frame_problem {
            match judge_end(buf, off, err, last_seg, covered(&cps, index)) {
                Ok(End::Zero) => {}
                Ok(_) => {
                    rep.torn_tail_bytes = segment::nonzero_end(&buf[off..]) as u64;
                    break 'segs;
                }
                Err(kind) => {
                    rep.problem = problem(
                        Some(index),
                        kind,
                        format!("{err} in `{}` at offset {off}", path.display()),
                    );
                    break 'segs;
                }
            }
        }
        done_bytes += buf.len() as u64;
        if let Some(f) = progress {
            f(done_bytes, total);
        }
    }
    rep.root = hex::encode(frontier.root());
    ending.finish(&mut rep, &cps, &opts);
    Ok(rep)
}

/// Whether the latest checkpoint covers the record at `index`.
fn covered(cps: &[Cp], index: u64) -> bool {
    cps.last().is_some_and(|c| c.size > index)
}

/// How the data of a segment ends at the bad frame at `off` (`buf` holding
/// the rest of the file from some point before `off`): a zero tail ends it
/// cleanly; a torn frame is acceptable at the end of the last segment unless
/// a checkpoint covers it (a checkpoint covers only synced records, so the
/// frame's checksum failing there is damage, not a crash); anything else is
/// the problem kind to report.
fn judge_end(
    buf: &[u8],
    off: usize,
    err: FrameError,
    last_seg: bool,
    covered: bool,
) -> Result<End, ProblemKind> {
    let end = segment::classify_end(buf, off, err);
    let damage = match err {
        FrameError::Crc { .. } => ProblemKind::Modified,
        _ => ProblemKind::BadFraming,
    };
    match end {
        End::Zero => Ok(end),
        End::Torn { .. } if last_seg && !(covered && matches!(err, FrameError::Crc { .. })) => {
            Ok(end)
        }
        End::Torn { .. } | End::Garbage => Err(damage),
    }
}

/// Bytes read from a segment at a time: small enough to stay in cache and
/// to avoid faulting in a segment-sized buffer, large enough that the
/// per-chunk thread hand-off is negligible.
const CHUNK: usize = 2 << 20;

/// The order-dependent state of a verification: the frontier, the next
/// checkpoint to compare, the last timestamp and the log's node id.
struct Order<'c> {
    cps: &'c [Cp],
    frontier: Frontier,
    tiles: TileCheck,
    next_cp: usize,
    last_ts: i64,
    node: Option<Vec<u8>>,
    index: u64,
}

impl Order<'_> {
    /// Sequence, time and node checks for the record at `self.index`, then
    /// appends its leaf and checks any checkpoint at the new size.
    fn accept(
        &mut self,
        d: &Checked<'_>,
        next_seq: impl FnOnce() -> Option<u64>,
        at: impl FnOnce() -> String,
    ) -> Option<Problem> {
        let index = self.index;
        if d.seq != index {
            let next_seq = next_seq();
            let kind = if d.seq < index || next_seq == Some(index) {
                ProblemKind::Reordered
            } else {
                ProblemKind::Missing
            };
            return problem(
                Some(index),
                kind,
                format!("found seq {} at {}", d.seq, at()),
            );
        }
        if d.ts_us < self.last_ts {
            return problem(
                Some(index),
                ProblemKind::NonMonotonicTime,
                format!("ts_us {} is before the previous {}", d.ts_us, self.last_ts),
            );
        }
        match &self.node {
            None => self.node = Some(d.node_id_raw.to_vec()),
            Some(n) if n.as_slice() != &*d.node_id_raw => {
                return problem(
                    Some(index),
                    ProblemKind::Modified,
                    format!(
                        "record from node `{}` in the log of `{}`",
                        d.node_id(),
                        crate::fastcheck::unescape(n)
                    ),
                );
            }
            Some(_) => {}
        }
        self.last_ts = d.ts_us;
        let tiles = &mut self.tiles;
        self.frontier
            .push_seeing(d.leaf, &mut |height, hash| tiles.saw(height, hash));
        self.index += 1;
        check_cps(self.cps, &mut self.next_cp, &self.frontier)
    }
}

/// One frame's verdict from the parallel pass.
enum Item<'a> {
    /// Checksum good and record canonical; whether it may be an override
    /// record.
    Ok(Checked<'a>, bool),
    /// Checksum mismatch (a frame problem, reported by the framing path).
    Crc,
    /// Checksum good, record bad.
    Bad(RecordError),
}

/// CRC, canonical check, field extraction and leaf hash of one frame.
fn check_frame<'a>(chunk: &'a [u8], (start, end, crc): (usize, usize, u32)) -> Item<'a> {
    let payload = chunk.get(start..end).unwrap_or_default();
    if crc32fast::hash(payload) != crc {
        return Item::Crc;
    }
    match check_one(payload) {
        Ok(c) => Item::Ok(c, contains(payload, OVERRIDE_MARK)),
        Err(e) => Item::Bad(e),
    }
}

/// [`check_frame`] over many frames, in order, spread over the cores.
fn check_frames<'a>(
    chunk: &'a [u8],
    spans: &[(usize, usize, u32)],
    threads: usize,
) -> Vec<Item<'a>> {
    if threads < 2 || spans.len() < 64 {
        return spans.iter().map(|s| check_frame(chunk, *s)).collect();
    }
    let per = spans.len().div_ceil(threads);
    let mut parts = spans.chunks(per);
    let own = parts.next().unwrap_or_default();
    std::thread::scope(|sc| {
        let handles: Vec<_> = parts
            .map(|c| {
                (
                    c,
                    sc.spawn(move || c.iter().map(|s| check_frame(chunk, *s)).collect::<Vec<_>>()),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(spans.len());
        out.extend(own.iter().map(|s| check_frame(chunk, *s)));
        for (c, h) in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                // A worker cannot panic on input (no panicking paths); if
                // it did, redo its share here.
                Err(_) => out.extend(c.iter().map(|s| check_frame(chunk, *s))),
            }
        }
        out
    })
}

/// Fails when records of the log were archived to a directory that is not
/// there: they cannot be verified, and without them nothing after them can.
fn archives_reachable(dir: &Path) -> Result<(), LogError> {
    for a in crate::archive::archives(dir)? {
        if !a.dir.is_dir() {
            return Err(LogError::Invalid(format!(
                "records {} to {} were archived to `{}`, which is not there: make the archive \
                 reachable at that path to verify the log",
                a.first,
                a.end - 1,
                a.dir.display()
            )));
        }
    }
    Ok(())
}

/// The problem when reading compressed segment `path` failed with `e`
/// (its bytes do not decompress: they were changed), reported at record
/// `index`, the first not yet verified; `None` for an I/O error.
fn undecodable(path: &Path, e: &io::Error, index: u64) -> Option<Problem> {
    let decoding = matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
    );
    if !(segment::is_compressed(path) && decoding) {
        return None;
    }
    problem(
        Some(index),
        ProblemKind::Modified,
        format!(
            "compressed segment `{}` does not decompress: {e}",
            path.display()
        ),
    )
}

/// Reads `f` into `buf[filled..]` until the buffer is full or the file
/// ends; returns the new fill level and whether the file ended.
fn fill(f: &mut dyn Read, buf: &mut [u8], mut filled: usize) -> io::Result<(usize, bool)> {
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

/// The bytes of `path` from `off` to the end (error paths only).
fn read_from(path: &Path, off: u64) -> io::Result<Vec<u8>> {
    segment::read_segment_from(path, off)
}

/// The `seq` of the frame at byte `next` of segment `si`, or of the first
/// frame of the following segment when `next` is its end, if it decodes.
fn peek_seq_at(segs: &[(u64, PathBuf)], si: usize, next: u64) -> Option<u64> {
    let rest = read_from(&segs.get(si)?.1, next).ok()?;
    let owned;
    let b = if rest.is_empty() {
        owned = segment::read_segment(&segs.get(si + 1)?.1).ok()?;
        owned.as_slice()
    } else {
        rest.as_slice()
    };
    let (payload, _) = segment::parse_frame(b, 0).ok()?;
    Some(DecisionRecord::from_canonical_bytes(payload).ok()?.seq)
}

/// How a segment ended.
enum SegEnd {
    /// Fully valid; this many bytes.
    Done(u64),
    /// Verification stops (problem or torn tail recorded in the report).
    Stop,
}

/// Verifies one segment, streamed through `buf` in [`CHUNK`]-sized reads.
/// Frames are located sequentially, then checksummed, checked and hashed in
/// parallel, then fed in order through `ord`.
#[allow(clippy::too_many_arguments)]
fn stream_segment(
    segs: &[(u64, PathBuf)],
    si: usize,
    path: &Path,
    last_seg: bool,
    decompressed: Option<io::Result<Vec<u8>>>,
    ord: &mut Order<'_>,
    buf: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize, u32)>,
    threads: usize,
    chunk: usize,
    rep: &mut VerifyReport,
) -> Result<SegEnd, LogError> {
    // A compressed segment is one unit: decompressed whole before any of its
    // records is taken, so that one that does not decompress is reported at
    // its first record.
    let mut f: Box<dyn Read + Send> = if segment::is_compressed(path) {
        match decompressed.unwrap_or_else(|| segment::read_segment(path)) {
            Ok(data) => Box::new(io::Cursor::new(data)),
            Err(e) => match undecodable(path, &e, ord.index) {
                Some(p) => {
                    rep.problem = Some(p);
                    return Ok(SegEnd::Stop);
                }
                None => return Err(io_at(path)(e)),
            },
        }
    } else {
        segment::open_segment(path).map_err(io_at(path))?
    };
    if buf.len() < chunk.max(1) {
        buf.resize(chunk.max(1), 0);
    }
    // File offset of buf[0]; bytes of buf holding data.
    let mut base = 0u64;
    let mut filled = 0usize;
    loop {
        let (n, eof) = fill(&mut f, buf, filled).map_err(io_at(path))?;
        filled = n;
        let data = buf.get(..filled).unwrap_or_default();
        // Locate frames by their length fields.
        spans.clear();
        let mut off = 0usize;
        let mut bad: Option<usize> = None;
        let mut need = 0usize;
        while off < data.len() {
            let rest = data.get(off..).unwrap_or_default();
            let Some(header) = rest.first_chunk::<{ segment::HEADER_LEN }>() else {
                if eof {
                    bad = Some(off);
                } else {
                    need = segment::HEADER_LEN;
                }
                break;
            };
            let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
            let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            if len == 0 || len > segment::MAX_PAYLOAD {
                bad = Some(off);
                break;
            }
            let end = off + segment::HEADER_LEN + len;
            if end > data.len() {
                if eof {
                    bad = Some(off);
                } else {
                    need = end - off;
                }
                break;
            }
            spans.push((
                off + segment::HEADER_LEN,
                end,
                u32::from_le_bytes([c0, c1, c2, c3]),
            ));
            off = end;
        }
        // Checksums, canonical check and leaf hashes in parallel.
        let items = check_frames(data, spans, threads);
        // Order-dependent checks, sequentially.
        for (j, (item, (start, end, _))) in items.iter().zip(spans.iter()).enumerate() {
            let mut pending_override = None;
            let frame_off = base + (start - segment::HEADER_LEN) as u64;
            let at = || format!("`{}` offset {frame_off}", path.display());
            let d = match item {
                Item::Ok(d, maybe_override) => {
                    if *maybe_override
                        && let Some(o) = data.get(*start..*end).and_then(Override::from_payload)
                    {
                        // Reported only if the record is accepted below.
                        pending_override = Some(o);
                    }
                    d
                }
                Item::Crc => {
                    bad = Some(start - segment::HEADER_LEN);
                    break;
                }
                Item::Bad(e) => {
                    rep.problem = problem(
                        Some(ord.index),
                        ProblemKind::Modified,
                        format!("{e} at {}", at()),
                    );
                    return Ok(SegEnd::Stop);
                }
            };
            let next_seq = || match items.get(j + 1) {
                Some(Item::Ok(n, _)) => Some(n.seq),
                Some(_) => None,
                None => peek_seq_at(segs, si, base + *end as u64),
            };
            let before = ord.index;
            let verdict = ord.accept(d, next_seq, at);
            if ord.index > before
                && let Some(o) = pending_override.take()
            {
                rep.overrides.push(o);
            }
            if let Some(p) = verdict {
                rep.problem = Some(p);
                return Ok(SegEnd::Stop);
            }
        }
        drop(items);
        if let Some(off) = bad {
            let covered = covered(ord.cps, ord.index);
            return Ok(
                match frame_problem(path, base + off as u64, last_seg, covered, ord.index, rep)? {
                    Some(rest) => SegEnd::Done(base + off as u64 + rest),
                    None => SegEnd::Stop,
                },
            );
        }
        if eof && off >= filled {
            return Ok(SegEnd::Done(base + filled as u64));
        }
        // Carry the partial frame to the front and read on.
        buf.copy_within(off..filled, 0);
        filled -= off;
        base += off as u64;
        if need > buf.len() {
            buf.resize(need, 0);
        }
        if filled >= buf.len() {
            // Cannot happen (a carried partial frame is shorter than the
            // frame it needs), but never spin on a full buffer.
            buf.resize(filled + chunk.max(1), 0);
        }
    }
}

/// Judges the bad frame at byte `off` of `path`: re-reads the rest of the
/// file and classifies it exactly as a whole-file parse would (zero tail,
/// torn tail in the last segment, checksum mismatch, bad framing). Returns
/// the length of the rest when it is a zero tail (the segment ended
/// cleanly); otherwise records the torn tail or the problem in `rep`.
fn frame_problem(
    path: &Path,
    off: u64,
    last_seg: bool,
    covered: bool,
    index: u64,
    rep: &mut VerifyReport,
) -> Result<Option<u64>, LogError> {
    let rest = read_from(path, off).map_err(io_at(path))?;
    // The bytes were bad when first read; if the file has since grown into
    // a complete frame, treat it as the incomplete frame it was.
    let err = segment::parse_frame(&rest, 0)
        .err()
        .unwrap_or(FrameError::Incomplete);
    match judge_end(&rest, 0, err, last_seg, covered) {
        Ok(End::Zero) => Ok(Some(rest.len() as u64)),
        Ok(_) => {
            rep.torn_tail_bytes = segment::nonzero_end(&rest) as u64;
            Ok(None)
        }
        Err(kind) => {
            rep.problem = problem(
                Some(index),
                kind,
                format!("{err} in `{}` at offset {off}", path.display()),
            );
            Ok(None)
        }
    }
}

/// [`verify_dir`] with segments read `chunk` bytes at a time.
fn verify_dir_streaming(
    dir: &Path,
    pubkey: Option<&PublicKey>,
    progress: Option<&dyn Fn(u64, u64)>,
    chunk: usize,
    opts: &VerifyOptions,
) -> Result<VerifyReport, LogError> {
    archives_reachable(dir)?;
    let (cps, mut rep, ending) = match prologue(dir, pubkey)? {
        Ok(x) => x,
        Err(rep) => return Ok(rep),
    };
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    let total: u64 = segs
        .iter()
        .map(|(_, p)| fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let mut ord = Order {
        cps: &cps,
        frontier: Frontier::new(),
        tiles: TileCheck::new(dir),
        next_cp: 0,
        last_ts: i64::MIN,
        node: None,
        index: 0,
    };
    // size-0 checkpoints
    if let Some(p) = check_cps(&cps, &mut ord.next_cp, &ord.frontier) {
        rep.problem = Some(p);
        return Ok(rep);
    }
    let mut done_bytes = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut spans: Vec<(usize, usize, u32)> = Vec::new();
    let nsegs = segs.len();
    // Compressed segments are decompressed one ahead, on their own thread,
    // while the one before is verified.
    let ahead = |si: usize| {
        segs.get(si)
            .filter(|(_, p)| segment::is_compressed(p))
            .map(|(_, p)| {
                let p = p.clone();
                std::thread::spawn(move || segment::read_segment(&p))
            })
    };
    let mut next = ahead(0);
    for (si, (first, path)) in segs.iter().enumerate() {
        let index = ord.index;
        let data = next.take().map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the thread decompressing the segment failed",
                ))
            })
        });
        if let Some(p) = segment_start_problem(*first, index, path) {
            rep.problem = Some(p);
            break;
        }
        next = ahead(si + 1);
        rep.records = ord.index;
        let end = stream_segment(
            &segs,
            si,
            path,
            si + 1 == nsegs,
            data,
            &mut ord,
            &mut buf,
            &mut spans,
            threads,
            chunk,
            &mut rep,
        );
        rep.records = ord.index;
        match end? {
            SegEnd::Done(n) => {
                done_bytes += n;
                if let Some(f) = progress {
                    f(done_bytes, total);
                }
            }
            SegEnd::Stop => break,
        }
    }
    rep.records = ord.index;
    rep.root = hex::encode(ord.frontier.root());
    ending.finish(&mut rep, &cps, opts);
    ord.tiles.finish();
    // A tile that differs is reported only when the records verified: with
    // rewritten records, the records are the problem, not the tiles.
    if rep.problem.is_none() {
        rep.problem = ord.tiles.problem.take();
    }
    if rep.problem.is_none() {
        rep.problem = check_seals(dir, rep.records)?;
    }
    Ok(rep)
}

/// Compares the tiles under `dir` with the tree the records give, one tile
/// level at a time as the tiles fill. A tile file that is absent is not a
/// problem (a log written before tiles, or tiles not yet written); one that
/// differs is (the first one is kept).
struct TileCheck {
    problem: Option<Problem>,
    dir: PathBuf,
    /// The hashes of each tile level's partial tile.
    levels: Vec<Vec<Hash>>,
    /// Full tiles seen per level.
    full: Vec<u64>,
}

impl TileCheck {
    fn new(dir: &Path) -> Self {
        TileCheck {
            problem: None,
            dir: dir.to_path_buf(),
            levels: Vec::new(),
            full: Vec::new(),
        }
    }

    /// A complete subtree of the records: the ones at heights that are
    /// multiples of 8 are tile entries.
    fn saw(&mut self, height: u32, hash: &Hash) {
        if self.problem.is_some() || !height.is_multiple_of(8) {
            return;
        }
        let level = (height / 8) as usize;
        while self.levels.len() <= level {
            self.levels.push(Vec::with_capacity(TILE_WIDTH));
            self.full.push(0);
        }
        let Some(hashes) = self.levels.get_mut(level) else {
            return;
        };
        hashes.push(*hash);
        if hashes.len() < TILE_WIDTH {
            return;
        }
        let n = self.full.get(level).copied().unwrap_or(0);
        let path = tile_path(&self.dir, level as u8, n);
        let same = match fs::read(&path) {
            Ok(bytes) => {
                bytes.len() == TILE_BYTES
                    && bytes
                        .chunks_exact(32)
                        .zip(hashes.iter())
                        .all(|(a, b)| a == b)
            }
            // Not written (yet): nothing to compare.
            Err(_) => true,
        };
        let full = std::mem::replace(hashes, Vec::with_capacity(TILE_WIDTH));
        if !same {
            let first = n << (8 * (level as u32 + 1));
            self.problem = problem(
                Some(first),
                ProblemKind::DamagedIndex,
                format!(
                    "tile `{}` does not match records {first} on",
                    path.display()
                ),
            );
        } else {
            // Partial tiles left beside it (superseded, kept by a crash or
            // a failed removal) must agree with it too.
            self.check_partials(level as u8, n, &full);
        }
        if let Some(f) = self.full.get_mut(level) {
            *f += 1;
        }
    }

    /// After the last record: each level's current partial tiles.
    fn finish(&mut self) {
        for level in 0..self.levels.len() {
            let n = self.full.get(level).copied().unwrap_or(0);
            let hashes = self.levels.get(level).cloned().unwrap_or_default();
            if let Ok(l) = u8::try_from(level) {
                self.check_partials(l, n, &hashes);
            }
        }
    }

    /// Compares the partial tiles of tile `level`/`n` on disk with `hashes`,
    /// the tile's hashes as far as the records read go: `<W>` must hold the
    /// first `W`. One wider than that is for records not read (a live log
    /// grew meanwhile) and is skipped; names that are not a width (a
    /// temporary file) are not tiles.
    fn check_partials(&mut self, level: u8, n: u64, hashes: &[Hash]) {
        if self.problem.is_some() {
            return;
        }
        let Ok(entries) = fs::read_dir(partial_dir(&self.dir, level, n)) else {
            return;
        };
        let mut names: Vec<(u8, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((parse_width(e.file_name().to_str()?)?, e.path())))
            .collect();
        names.sort();
        for (width, path) in names {
            let Some(want) = hashes.get(..usize::from(width)) else {
                continue;
            };
            match fs::read(&path) {
                Ok(b) if b == want.concat() => continue,
                // Removed meanwhile by a live log (its tile filled).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                _ => {}
            }
            let first = n << (8 * (u32::from(level) + 1));
            self.problem = problem(
                Some(first),
                ProblemKind::DamagedIndex,
                format!(
                    "partial tile `{}` does not match records {first} on (partial tiles are derived: remove it; opening the log writes the latest checkpoint's again)",
                    path.display()
                ),
            );
            return;
        }
    }
}

/// Checks `sealed.log` and the index files it names against a log of
/// `records` verified records.
fn check_seals(dir: &Path, records: u64) -> Result<Option<Problem>, LogError> {
    let Some(seals) = crate::sealed::read_seals(dir)? else {
        return Ok(None);
    };
    for seal in &seals {
        if seal.end() > records {
            return Ok(problem(
                Some(seal.first),
                ProblemKind::DamagedIndex,
                format!(
                    "`{}` seals records {} to {} but the log has {records}",
                    crate::sealed::SEALED_FILE,
                    seal.first,
                    seal.end() - 1
                ),
            ));
        }
        if let Err(detail) = crate::sealed::check_index(dir, seal) {
            return Ok(problem(Some(seal.first), ProblemKind::DamagedIndex, detail));
        }
    }
    Ok(None)
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
        owned = segment::read_segment(&segs.get(si + 1)?.1).ok()?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod streaming_tests {
    use super::*;
    use crate::canonical::sha256_digest as context_digest;
    use crate::record::{EntityRef, Outcome, SubjectRef};
    use crate::writer::{Log, LogOptions};
    use serde_json::json;

    fn rec(i: u64) -> DecisionRecord {
        let ctx = json!({"i": i, "pad": "x".repeat((i % 13) as usize * 40)});
        DecisionRecord {
            decision_id: format!("d-{i}"),
            ts_us: 1_700_000_000_000_000 + i as i64,
            subject: SubjectRef {
                kind: "Agent".into(),
                id: "a".into(),
                agent_id: None,
                credential_id: None,
            },
            action: "fs:read".into(),
            resource: EntityRef {
                kind: "File".into(),
                id: format!("/f/{i}"),
            },
            context_digest: context_digest(&ctx).unwrap(),
            context: ctx,
            outcome: Outcome::Allow,
            ..DecisionRecord::default()
        }
    }

    /// Builds a multi-segment log with checkpoints; returns its key.
    fn build(dir: &Path) -> PublicKey {
        let (log, _) = Log::open(
            dir,
            LogOptions {
                node_id: "n1".into(),
                segment_bytes: 6000,
                checkpoint_every: std::time::Duration::from_secs(3600),
                ..LogOptions::default()
            },
        )
        .unwrap();
        for i in 0..60 {
            log.append_blocking(rec(i)).unwrap();
            if i % 17 == 5 {
                log.force_checkpoint().unwrap();
            }
        }
        drop(log);
        PublicKey::from_file(&dir.join(PUB_FILE)).unwrap()
    }

    fn agree(dir: &Path, key: &PublicKey, what: &str) {
        let want = verify_dir_reference(dir, Some(key), None).unwrap();
        for chunk in [1usize, 7, 9, 64, 333, 1000, 4096, CHUNK] {
            let got = verify_dir_streaming(dir, Some(key), None, chunk, &VerifyOptions::default())
                .unwrap();
            assert_eq!(got, want, "{what}, chunk {chunk}");
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                fs::create_dir_all(to.join(e.file_name())).unwrap();
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn streaming_agrees_with_reference_under_tampering() {
        let base = tempfile::tempdir().unwrap();
        let key = build(base.path());
        agree(base.path(), &key, "clean");
        let segs = segment::list_segments(base.path()).unwrap();
        assert!(segs.len() >= 3, "{}", segs.len());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for case in 0..120u64 {
            let d = tempfile::tempdir().unwrap();
            copy_dir(base.path(), d.path());
            let si = (next() % segs.len() as u64) as usize;
            let path = d.path().join(segs[si].1.file_name().unwrap());
            let mut b = fs::read(&path).unwrap();
            let at = (next() % b.len() as u64) as usize;
            let what = match case % 8 {
                0 => {
                    b[at] ^= 1 << (next() % 8);
                    "bit flip"
                }
                1 => {
                    b.truncate(at);
                    "truncate"
                }
                2 => {
                    for x in &mut b[at..] {
                        *x = 0;
                    }
                    "zero tail"
                }
                3 => {
                    b.extend(std::iter::repeat_n(0u8, (next() % 50) as usize + 1));
                    "zero append"
                }
                4 => {
                    b.extend((0..(next() % 50) + 1).map(|x| x as u8 | 1));
                    "garbage append"
                }
                5 => {
                    // length field changes
                    let v = next() as u32;
                    let at = at.min(b.len().saturating_sub(4));
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    "length rewrite"
                }
                6 => {
                    // swap two frames (CRCs stay valid)
                    let mut fr = Vec::new();
                    let mut off = 0;
                    while let Ok((_, n)) = segment::parse_frame(&b, off) {
                        fr.push((off, n));
                        off = n;
                    }
                    if fr.len() >= 2 {
                        let k = (next() % (fr.len() as u64 - 1)) as usize;
                        let (a0, a1) = fr[k];
                        let (_, b1) = fr[k + 1];
                        let mut sw = b[a1..b1].to_vec();
                        sw.extend_from_slice(&b[a0..a1]);
                        b.splice(a0..b1, sw);
                    }
                    "swap"
                }
                _ => {
                    // drop one frame
                    let mut off = 0;
                    let mut fr = Vec::new();
                    while let Ok((_, n)) = segment::parse_frame(&b, off) {
                        fr.push((off, n));
                        off = n;
                    }
                    if !fr.is_empty() {
                        let k = (next() % fr.len() as u64) as usize;
                        b.drain(fr[k].0..fr[k].1);
                    }
                    "drop frame"
                }
            };
            fs::write(&path, &b).unwrap();
            agree(
                d.path(),
                &key,
                &format!("case {case}: {what} in segment {si} at {at}"),
            );
        }
        // A whole segment missing.
        let d = tempfile::tempdir().unwrap();
        copy_dir(base.path(), d.path());
        fs::remove_file(d.path().join(segs[1].1.file_name().unwrap())).unwrap();
        agree(d.path(), &key, "missing segment");
    }
}
