//! Opening a log directory: scanning segments, rebuilding the Merkle tree and
//! indexes, recovering from a torn tail, and reading records back.
//!
//! Recovery is deliberately narrow: only bytes that can never have been
//! acknowledged (a torn final frame of the last segment or of
//! `checkpoints.log`) are cut off — zeroed in place in a segment, so that a
//! preallocated segment keeps its size, and truncated in `checkpoints.log`.
//! The zero tail of a preallocated segment is the clean end of its data, not
//! damage. Anything else that does not parse — non-zero bytes after the
//! logical end included — and a cut that would leave the log shorter than its
//! latest checkpoint makes `open` fail with the segment, offset and index, for
//! `verify` to report.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointError, PublicKey, sync_dir};
use crate::merkle::ProofError;
use crate::record::{DecisionRecord, RecordError, decode_all};
use crate::sealed::{self, OpenSegment, Seal, SealedSegment};
use crate::segment::{self, CHECKPOINTS_FILE, End, FrameIter, Scan};
use crate::state::{STATE_FILE, StateRead, read_state};
use crate::tiles::TiledTree;

/// Errors from the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Filesystem error.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The on-disk log is damaged somewhere other than a torn tail.
    #[error("corrupt log segment `{segment}` at offset {offset} (record {index}): {reason}")]
    Corrupt {
        /// The file.
        segment: PathBuf,
        /// Byte offset of the bad frame.
        offset: u64,
        /// Record index (or checkpoint number in `checkpoints.log`).
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// Fewer records than the latest checkpoint covers.
    #[error("log has {records} records but its latest checkpoint covers {checkpoint_size}")]
    TruncatedBehindCheckpoint {
        /// Records found.
        records: u64,
        /// Size in the checkpoint.
        checkpoint_size: u64,
    },
    /// The latest checkpoint does not match the records.
    #[error("latest checkpoint (size {size}) does not match the records: {reason}")]
    CheckpointMismatch {
        /// Its tree size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// The directory holds another node's log.
    #[error("log belongs to node `{found}`, not `{expected}`")]
    NodeMismatch {
        /// Node id in the records.
        found: String,
        /// Configured node id.
        expected: String,
    },
    /// Key or checkpoint problem.
    #[error(transparent)]
    Key(#[from] CheckpointError),
    /// Record encoding problem.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Proof problem.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The log failed earlier and accepts no more writes.
    #[error("log has failed: {0}")]
    Failed(String),
    /// The log was shut down.
    #[error("log is shut down")]
    ShutDown,
    /// No record with this decision id.
    #[error("no record with decision id `{0}`")]
    NotFound(String),
    /// The record exists but no signed checkpoint covers it yet (read-only
    /// readers cannot force one).
    #[error(
        "record {index} is not yet covered by a signed checkpoint (the latest covers {checkpoint_size} records); retry after the next checkpoint (written every second by default)"
    )]
    NotYetCheckpointed {
        /// The record's index.
        index: u64,
        /// Records covered by the latest checkpoint.
        checkpoint_size: u64,
    },
    /// Invalid option or argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The log's records are not covered by valid, consistent signed
    /// checkpoints: opening it for writing would sign over whatever they now
    /// say.
    #[error(
        "refusing to open the decision log in `{dir}`: {problem}. Its records are not covered by valid signed checkpoints, so they may have been rewritten. Inspect it with `arbiter log verify --data <data directory> --pubkey <trusted public key>`; to open it anyway, start `arbiter serve` on it once with `--accept-log-damage <reason>`, which records the override in the log"
    )]
    Unverified {
        /// The log directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `open` found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Records in the log after recovery.
    pub records: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of a torn, unacknowledged final frame cut from the last segment
    /// (zeroed in place; a zero tail is not counted).
    pub truncated_tail_bytes: u64,
    /// Bytes cut from the end of `checkpoints.log`.
    pub truncated_checkpoint_bytes: u64,
    /// Checkpoints found.
    pub checkpoints: u64,
    /// The latest checkpoint.
    pub latest_checkpoint: Option<Checkpoint>,
    /// Segments whose records were not read (their seals, tiles and index
    /// files stand for them).
    pub sealed_segments: usize,
    /// With [`crate::LogOptions::accept_damage`]: the problem that was
    /// accepted (recorded in the log as an override record).
    pub accepted_damage: Option<String>,
    /// Where the damaged `checkpoints.log` was moved when damage was
    /// accepted.
    pub set_aside: Option<PathBuf>,
    /// The log had checkpoints but no `checkpoints.state` (written before
    /// it existed, or deleted): it was created from the checkpoints found.
    pub created_state: bool,
}

/// Everything rebuilt from disk.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub tree: TiledTree,
    /// Segments whose offsets and ids are in index files.
    pub sealed: Vec<SealedSegment>,
    /// The last segment's offsets and ids (none without a segment).
    pub open: Option<OpenSegment>,
    /// First index of each segment, ascending.
    pub segment_starts: Vec<u64>,
    pub last_ts_us: i64,
    pub node_id: Option<String>,
    pub latest_checkpoint: Option<Checkpoint>,
    /// Offset of the latest checkpoint's frame in `checkpoints.log`, and the
    /// file's length after recovery.
    pub checkpoint_offset: u64,
    pub checkpoint_bytes: u64,
    /// Logical end of the last segment after recovery (where the next frame
    /// goes).
    pub last_segment_len: u64,
    /// Size of the last segment's file (beyond `last_segment_len`: zeros).
    pub last_segment_size: u64,
    pub report: OpenReport,
    /// Checkpoints in `checkpoints.log` (all verified).
    pub checkpoint_count: u64,
    /// Generation of `checkpoints.state` (0 without one).
    pub state_generation: u64,
    /// With [`OpenCheck::accept_damage`]: the first problem that would have
    /// refused the open.
    pub damage: Option<String>,
}

struct Cut {
    path: PathBuf,
    at: u64,
    bytes: u64,
    /// Zero the bytes in place (a segment) instead of truncating the file
    /// (`checkpoints.log`, which is appended to).
    zero: bool,
}

/// How many of `seals` describe the first segment files, each followed by
/// the next one (the last segment, where writes continue, is never taken as
/// sealed).
///
/// The seals of archived segments (records before `archived`) count without
/// their files: the archive directory may be away.
pub(crate) fn matching_seals(seals: &[Seal], segs: &[(u64, PathBuf)], archived: u64) -> usize {
    let mut k = seals.iter().take_while(|s| s.end() <= archived).count();
    if k.checked_sub(1)
        .and_then(|i| seals.get(i))
        .map_or(0, Seal::end)
        != archived
    {
        return 0;
    }
    let live: Vec<u64> = segs
        .iter()
        .map(|s| s.0)
        .filter(|f| *f >= archived)
        .collect();
    let mut j = 0;
    while let (Some(seal), Some(first), Some(next)) = (seals.get(k), live.get(j), live.get(j + 1)) {
        if seal.first != *first || seal.end() != *next {
            break;
        }
        k += 1;
        j += 1;
    }
    k
}

/// Scans `dir` and rebuilds state; truncates torn tails. Segments covered by
/// `sealed.log` are not read (see [`crate::sealed`]); the others are, and
/// every one of them but the last is sealed.
///
/// The seals, tiles and index files are derived from the records: when one
/// that the open relies on is missing or damaged, the log is read from its
/// first record and they are all written again.
pub(crate) fn load(dir: &Path, check: &OpenCheck<'_>) -> Result<Loaded, LogError> {
    match load_from(dir, check, true) {
        Err(e) if derived_file_error(dir, &e) => load_from(dir, check, false),
        r => r,
    }
}

/// Whether `e` is about a tile or an index file under `dir`.
fn derived_file_error(dir: &Path, e: &LogError) -> bool {
    let path = match e {
        LogError::Io { path, .. } => path,
        LogError::Corrupt { segment, .. } => segment,
        _ => return false,
    };
    [crate::tiles::TILE_DIR, sealed::INDEX_DIR]
        .iter()
        .any(|d| path.starts_with(dir.join(d)))
}

fn load_from(dir: &Path, check: &OpenCheck<'_>, use_seals: bool) -> Result<Loaded, LogError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    let seals = if use_seals {
        sealed::read_seals(dir)?
    } else {
        None
    };
    let mut seals = seals.unwrap_or_default();
    // A damaged `archived.log` is an error naming it, not a log that seems
    // to start in the middle.
    let archived = crate::archive::archives(dir)?.last().map_or(0, |a| a.end);
    let mut k = matching_seals(&seals, &segs, archived);
    if let Some(last) = k.checked_sub(1).and_then(|i| seals.get(i))
        && !TiledTree::edge_fits(last.end(), &last.edge)
    {
        k = 0;
    }
    // A sealed segment whose index file is gone is sealed again (with the
    // segments after it).
    if let Some(gone) = seals
        .iter()
        .take(k)
        .position(|s| s.first >= archived && !sealed::index_path(dir, s.first).is_file())
    {
        k = gone;
    }
    if k < seals.len() || (!use_seals && dir.join(sealed::SEALED_FILE).exists()) {
        seals.truncate(k);
        sealed::rewrite_seals(dir, &seals)?;
    }
    // A crash between a seal and the removal of the segment's uncompressed
    // file leaves both; a compression cut short leaves its temporary file.
    for seal in &seals {
        let plain = dir.join(segment::segment_name(seal.first));
        if dir
            .join(segment::compressed_segment_name(seal.first))
            .is_file()
            && plain.is_file()
        {
            fs::remove_file(&plain).map_err(io_at(&plain))?;
        }
    }
    for (first, _) in &segs {
        let tmp = dir.join(format!("{}.tmp", segment::compressed_segment_name(*first)));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&tmp)(e)),
            _ => {}
        }
    }
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    let resume = seals.last();
    let sealed_end = resume.map_or(0, Seal::end);
    let mut st = Loaded {
        tree: TiledTree::with_edge(
            dir,
            sealed_end,
            resume.map(|s| s.edge.clone()).unwrap_or_default(),
            true,
        ),
        sealed: seals.iter().map(Seal::segment).collect(),
        open: None,
        segment_starts: segs.iter().map(|s| s.0).collect(),
        last_ts_us: resume.map_or(0, |s| s.last_ts_us),
        node_id: None,
        latest_checkpoint: None,
        checkpoint_offset: 0,
        checkpoint_bytes: 0,
        last_segment_len: 0,
        last_segment_size: 0,
        report: OpenReport::default(),
        checkpoint_count: 0,
        state_generation: 0,
        damage: None,
    };
    // Checkpoints were checked up to the one the last seal names.
    let (cp_before, cp_offset) = resume.map_or((0, 0), |s| (s.cp_before, s.cp_offset));
    if let Some((first, _)) = segs.first()
        && k > 0
    {
        let (rec, _) = read_record_at(&segment::segment_path(dir, *first), 0)?;
        st.node_id = Some(rec.node_id);
    }
    drop(seals);
    let mut cuts: Vec<Cut> = Vec::new();
    let nsegs = segs.len();
    for (si, (first, path)) in segs
        .iter()
        .enumerate()
        .filter(|(_, (first, _))| *first >= sealed_end)
    {
        let count = st.tree.size();
        if *first != count {
            return Err(LogError::Corrupt {
                segment: path.clone(),
                offset: 0,
                index: count,
                reason: format!("segment starts at record {first}, expected {count}"),
            });
        }
        let mut seg = OpenSegment::new(*first);
        let buf = segment::read_segment(path).map_err(io_at(path))?;
        let last = si + 1 == nsegs;
        let mut frames: Vec<(usize, &[u8])> = Vec::new();
        let mut bad = None;
        let mut it = FrameIter::new(&buf);
        for scan in it.by_ref() {
            match scan {
                Scan::Frame { offset, payload } => frames.push((offset, payload)),
                Scan::Bad {
                    offset,
                    error,
                    torn,
                } => bad = Some((offset, error, torn)),
            }
        }
        // The logical end: past the last frame (a zero tail may follow).
        let mut len = it.offset() as u64;
        let payloads: Vec<&[u8]> = frames.iter().map(|f| f.1).collect();
        let decoded = decode_all(&payloads);
        for ((offset, _), d) in frames.iter().zip(decoded) {
            let index = st.tree.size();
            let corrupt = |reason: String| LogError::Corrupt {
                segment: path.clone(),
                offset: *offset as u64,
                index,
                reason,
            };
            let d = d.map_err(|e| corrupt(e.to_string()))?;
            if d.seq != index {
                return Err(corrupt(format!("record has seq {}", d.seq)));
            }
            if d.ts_us < st.last_ts_us {
                return Err(corrupt("timestamp goes backwards".to_string()));
            }
            match &st.node_id {
                None => st.node_id = Some(d.node_id.clone()),
                Some(n) if *n != d.node_id => {
                    return Err(corrupt(format!("record from node `{}`", d.node_id)));
                }
                Some(_) => {}
            }
            st.last_ts_us = d.ts_us;
            st.tree.push(d.leaf)?;
            seg.push(*offset as u64, &d.decision_id);
        }
        if let Some((offset, error, torn)) = bad {
            if last && torn {
                let bytes = match segment::classify_end(&buf, offset, error) {
                    End::Torn { len } => len as u64,
                    End::Zero | End::Garbage => 0,
                };
                cuts.push(Cut {
                    path: path.clone(),
                    at: offset as u64,
                    bytes,
                    zero: true,
                });
                st.report.truncated_tail_bytes = bytes;
                len = offset as u64;
            } else {
                return Err(LogError::Corrupt {
                    segment: path.clone(),
                    offset: offset as u64,
                    index: st.tree.size(),
                    reason: error.to_string(),
                });
            }
        }
        if last {
            st.last_segment_len = len;
            st.last_segment_size = buf.len() as u64;
            st.open = Some(seg);
        } else if seg.count() > 0 {
            // A finished segment: sealed now, so that it leaves memory. The
            // checkpoints are resumed where the last seal resumed them.
            let mut s = Seal {
                first: seg.first,
                count: seg.count(),
                bytes: len,
                last_ts_us: st.last_ts_us,
                times: seg.times,
                cp_before,
                cp_offset,
                index_crc: 0,
                edge: st.tree.edge().to_vec(),
            };
            sealed::seal(dir, &seg, &mut s, seg.first, check.compress)?;
            st.sealed.push(s.segment());
        } else {
            return Err(LogError::Corrupt {
                segment: path.clone(),
                offset: 0,
                index: *first,
                reason: "a segment other than the last holds no record".to_string(),
            });
        }
    }
    // Another node's log is refused before anything else is judged.
    if let Some(found) = &st.node_id
        && found != check.node_id
    {
        return Err(LogError::NodeMismatch {
            found: found.clone(),
            expected: check.node_id.to_string(),
        });
    }
    // Checkpoints: every one must parse, verify under the key, follow the
    // previous one and match the recomputed tree at its size.
    let cp_path = dir.join(CHECKPOINTS_FILE);
    let mut cps = CheckpointCheck::new(check, dir);
    cps.count = cp_before;
    match crate::reader::read_from(&cp_path, cp_offset) {
        Ok(buf) if cp_offset > 0 && buf.is_empty() => {
            cps.damage(format!(
                "`{CHECKPOINTS_FILE}` is shorter than when the decision log sealed its segment ending at record {sealed_end} (it held a checkpoint at offset {cp_offset})"
            ))?;
        }
        Ok(buf) => {
            let mut it = FrameIter::new(&buf);
            let mut cut_at = None;
            let mut damaged = false;
            for scan in it.by_ref() {
                match scan {
                    Scan::Frame { offset, payload } => {
                        let at = cp_offset + offset as u64;
                        if cps.frame(&cp_path, at, payload, &st.tree)? {
                            st.checkpoint_offset = at;
                        }
                    }
                    Scan::Bad {
                        offset,
                        error,
                        torn,
                    } => {
                        if torn {
                            cut_at = Some(offset);
                        } else {
                            damaged = true;
                            cps.damage(LogError::Corrupt {
                                segment: cp_path.clone(),
                                offset: offset as u64,
                                index: cps.count,
                                reason: error.to_string(),
                            })?;
                        }
                    }
                }
            }
            cps.finish_batch()?;
            // A torn frame, or zeros, after the last checkpoint: the file is
            // appended to, so both are cut off.
            // (Not when the file is damaged: it is then set aside as it is.)
            let at = cut_at.unwrap_or_else(|| it.offset());
            st.checkpoint_bytes = cp_offset + at as u64;
            if at < buf.len() && !damaged {
                let bytes = (buf.len() - at) as u64;
                cuts.push(Cut {
                    path: cp_path.clone(),
                    at: cp_offset + at as u64,
                    bytes,
                    zero: false,
                });
                st.report.truncated_checkpoint_bytes = bytes;
            } else {
                st.checkpoint_bytes = cp_offset + buf.len() as u64;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && cp_offset > 0 => {
            cps.damage(format!(
                "`{CHECKPOINTS_FILE}` is missing, but the decision log had written checkpoints"
            ))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(LogError::Io {
                path: cp_path,
                source: e,
            });
        }
    }
    // What the writer last wrote, and whether the records are covered.
    cps.coverage(st.tree.size())?;
    st.report.checkpoints = cps.count;
    st.latest_checkpoint = cps.latest.take();
    st.checkpoint_count = cps.count;
    st.state_generation = cps.state_generation;
    st.report.created_state = cps.missing_state;
    st.damage = cps.damage.take();
    // Only now, with nothing else wrong, cut the torn tails.
    for cut in &cuts {
        let mut f = OpenOptions::new()
            .write(true)
            .open(&cut.path)
            .map_err(io_at(&cut.path))?;
        if cut.zero {
            zero_range(&mut f, cut.at, cut.bytes).map_err(io_at(&cut.path))?;
            f.sync_data().map_err(io_at(&cut.path))?;
        } else {
            f.set_len(cut.at).map_err(io_at(&cut.path))?;
            f.sync_all().map_err(io_at(&cut.path))?;
        }
    }
    if !cuts.is_empty() {
        sync_dir(dir).map_err(io_at(dir))?;
    }
    st.report.records = st.tree.size();
    st.report.segments = nsegs;
    st.report.sealed_segments = k;
    st.report.latest_checkpoint = st.latest_checkpoint.clone();
    Ok(st)
}

/// How [`load`] judges the checkpoints of the log it opens.
pub(crate) struct OpenCheck<'a> {
    /// The key every checkpoint must verify under.
    pub key: &'a PublicKey,
    /// The node every checkpoint must be for.
    pub node_id: &'a str,
    /// Records that may follow the latest checkpoint (the unsigned tail a
    /// crash can leave: the checkpoint interval in records).
    pub window: u64,
    /// Report problems in [`Loaded::damage`] instead of failing.
    pub accept_damage: bool,
    /// Compress the segments sealed while opening.
    pub compress: bool,
}

/// Signatures are verified this many checkpoints at a time, in parallel.
const SIGNATURE_BATCH: usize = 4096;

/// The checks of `checkpoints.log` and `checkpoints.state` at open.
struct CheckpointCheck<'a> {
    check: &'a OpenCheck<'a>,
    dir: PathBuf,
    count: u64,
    latest: Option<Checkpoint>,
    /// Checkpoints whose signature is still to be verified, with their number.
    batch: Vec<(u64, Checkpoint)>,
    damage: Option<String>,
    state_generation: u64,
    /// No state file, with checkpoints (a log from before it existed).
    missing_state: bool,
}

impl<'a> CheckpointCheck<'a> {
    fn new(check: &'a OpenCheck<'a>, dir: &Path) -> Self {
        CheckpointCheck {
            check,
            dir: dir.to_path_buf(),
            count: 0,
            latest: None,
            batch: Vec::new(),
            damage: None,
            state_generation: 0,
            missing_state: false,
        }
    }

    /// A problem: an error, or noted when damage is accepted.
    fn damage(&mut self, problem: impl std::fmt::Display) -> Result<(), LogError> {
        let problem = problem.to_string();
        if !self.check.accept_damage {
            return Err(LogError::Unverified {
                dir: self.dir.clone(),
                problem,
            });
        }
        if self.damage.is_none() {
            self.damage = Some(problem);
        }
        Ok(())
    }

    /// A problem found in a checkpoint frame (see [`CheckpointCheck::damage`]).
    fn damage_at(&mut self, problem: impl std::fmt::Display) -> Result<bool, LogError> {
        self.damage(problem).map(|()| false)
    }

    /// Checks one checkpoint frame (the signature in batches); whether it is
    /// now the latest.
    fn frame(
        &mut self,
        path: &Path,
        offset: u64,
        payload: &[u8],
        tree: &TiledTree,
    ) -> Result<bool, LogError> {
        let n = self.count;
        self.count += 1;
        if self.damage.is_some() {
            return Ok(false);
        }
        let at = || format!("checkpoint #{n} in `{}` at offset {offset}", path.display());
        let cp = match Checkpoint::from_json(payload) {
            Ok(cp) if cp.to_canonical_json() == payload => cp,
            Ok(_) => return self.damage_at(format!("{} is not canonical JSON", at())),
            Err(e) => return self.damage_at(format!("{}: {e}", at())),
        };
        if cp.node_id != self.check.node_id {
            return self.damage_at(format!(
                "{} is for node `{}`, not `{}`",
                at(),
                cp.node_id,
                self.check.node_id
            ));
        }
        if let Some(prev) = &self.latest {
            if cp.tree_size < prev.tree_size {
                return self.damage_at(format!(
                    "{} has size {} after size {}",
                    at(),
                    cp.tree_size,
                    prev.tree_size
                ));
            }
            if cp.ts_us < prev.ts_us {
                return self.damage_at(format!("{}: its time goes backwards", at()));
            }
        }
        if cp.tree_size > tree.size() {
            return self.damage_at(format!(
                "the log has {} records but {} covers {}",
                tree.size(),
                at(),
                cp.tree_size
            ));
        }
        let want = match cp.root() {
            Ok(r) => r,
            Err(e) => return self.damage_at(format!("{}: {e}", at())),
        };
        let have = tree.root_at(cp.tree_size)?;
        if want != have {
            return self.damage_at(format!(
                "{} (size {}) has root {}, but the records give {}",
                at(),
                cp.tree_size,
                cp.root_hash,
                hex::encode(have)
            ));
        }
        self.latest = Some(cp.clone());
        self.batch.push((n, cp));
        if self.batch.len() >= SIGNATURE_BATCH {
            self.finish_batch()?;
        }
        Ok(true)
    }

    /// Verifies the signatures of the pending checkpoints.
    fn finish_batch(&mut self) -> Result<(), LogError> {
        let batch = std::mem::take(&mut self.batch);
        if self.damage.is_some() {
            return Ok(());
        }
        if let Some((n, size, e)) = first_bad_signature(self.check.key, &batch) {
            return self.damage(format!(
                "checkpoint #{n} (size {size}) does not verify under the log's key: {e}"
            ));
        }
        Ok(())
    }

    /// Compares with `checkpoints.state` and checks that every record
    /// beyond the unsigned window is covered.
    fn coverage(&mut self, records: u64) -> Result<(), LogError> {
        let state_path = self.dir.join(STATE_FILE);
        let state = read_state(&self.dir).map_err(io_at(&state_path))?;
        let empty = records == 0 && self.count == 0;
        match state {
            // Records and not one checkpoint, and nothing to tell whether
            // checkpoints were removed.
            StateRead::Missing if records > 0 && self.count == 0 => self.damage(format!(
                "the log has {records} records but no checkpoint, and `{}` is missing",
                state_path.display(),
            ))?,
            // A log written before the state file: its checkpoints are all
            // checked, and the window applies; the state is created now.
            StateRead::Missing => self.missing_state = !empty,
            StateRead::Damaged if !empty => {
                self.damage(format!("`{}` is damaged", state_path.display()))?;
            }
            StateRead::Damaged => {}
            StateRead::Found(s) => {
                self.state_generation = s.generation;
                let latest = self.latest.as_ref().map_or(0, |c| c.tree_size);
                if self.count < s.checkpoints {
                    self.damage(format!(
                        "`{CHECKPOINTS_FILE}` holds {} checkpoints, but the writer had written {} \
                         (the file was deleted, emptied or cut back)",
                        self.count, s.checkpoints
                    ))?;
                } else if latest < s.tree_size {
                    self.damage(format!(
                        "the latest checkpoint covers {latest} records, but the writer had signed {}",
                        s.tree_size
                    ))?;
                }
            }
        }
        let covered = self.latest.as_ref().map_or(0, |c| c.tree_size);
        let uncovered = records.saturating_sub(covered);
        if uncovered > self.check.window {
            self.damage(format!(
                "records {covered} to {} ({uncovered}) are covered by no checkpoint; at most {} \
                 (the checkpoint interval in records) may follow the latest one after a crash",
                records - 1,
                self.check.window
            ))?;
        }
        Ok(())
    }
}

/// The first checkpoint (number, size, error) of `batch` whose signature
/// does not verify under `key`; checked in parallel.
fn first_bad_signature(
    key: &PublicKey,
    batch: &[(u64, Checkpoint)],
) -> Option<(u64, u64, CheckpointError)> {
    let check = |part: &[(u64, Checkpoint)]| {
        part.iter()
            .find_map(|(n, cp)| cp.verify(key).err().map(|e| (*n, cp.tree_size, e)))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || batch.len() < 64 {
        return check(batch);
    }
    let per = batch.len().div_ceil(threads);
    std::thread::scope(|sc| {
        let handles: Vec<_> = batch
            .chunks(per)
            .map(|part| (part, sc.spawn(move || check(part))))
            .collect();
        // Parts are in order: the first failure found is the earliest.
        handles
            .into_iter()
            .find_map(|(part, h)| h.join().unwrap_or_else(|_| check(part)))
    })
}

/// Overwrites `len` bytes of `f` from `at` with zeros, in bounded chunks.
pub(crate) fn zero_range(f: &mut File, at: u64, len: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(1 << 20)];
    f.seek(SeekFrom::Start(at))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len());
        f.write_all(zeros.get(..n).unwrap_or_default())?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads the record frame at `offset` of `path`.
pub(crate) fn read_record_at(
    path: &Path,
    offset: u64,
) -> Result<(DecisionRecord, Vec<u8>), LogError> {
    use std::io::{Read, Seek, SeekFrom};
    // A sealed segment may have been compressed since it was located.
    let zst = {
        let mut p = path.as_os_str().to_owned();
        p.push(".zst");
        PathBuf::from(p)
    };
    let mut f = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && zst.is_file() => {
            let payload = sealed::compressed_frame(&zst, offset)?;
            let rec = DecisionRecord::from_canonical_bytes(&payload)?;
            return Ok((rec, payload));
        }
        r => r.map_err(io_at(path))?,
    };
    f.seek(SeekFrom::Start(offset)).map_err(io_at(path))?;
    let mut header = [0u8; segment::HEADER_LEN];
    f.read_exact(&mut header).map_err(io_at(path))?;
    let [l0, l1, l2, l3, ..] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len == 0 || len > segment::MAX_PAYLOAD {
        return Err(LogError::Corrupt {
            segment: path.to_path_buf(),
            offset,
            index: 0,
            reason: "bad frame length".to_string(),
        });
    }
    let mut frame = header.to_vec();
    frame.resize(segment::HEADER_LEN + len, 0);
    f.read_exact(&mut frame[segment::HEADER_LEN..])
        .map_err(io_at(path))?;
    let (payload, _) = segment::parse_frame(&frame, 0).map_err(|e| LogError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        index: 0,
        reason: e.to_string(),
    })?;
    let rec = DecisionRecord::from_canonical_bytes(payload)?;
    Ok((rec, payload.to_vec()))
}

/// Iterates the records of a log directory in order, for tail, query and
/// export. Works on a live log: the zero tail of a segment, and a final
/// frame still being written, end its data. Any other problem is yielded once
/// as an error, then iteration stops.
pub fn read_records(dir: &Path) -> Result<RecordIter, LogError> {
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    Ok(RecordIter {
        segs,
        seg: 0,
        buf: Vec::new(),
        off: 0,
        index: 0,
        done: false,
        retried: None,
    })
}

/// Iterator returned by [`read_records`].
#[derive(Debug)]
pub struct RecordIter {
    segs: Vec<(u64, PathBuf)>,
    seg: usize,
    buf: Vec<u8>,
    off: usize,
    index: u64,
    done: bool,
    /// Offset in the last segment already looked at twice.
    retried: Option<usize>,
}

impl Iterator for RecordIter {
    type Item = Result<(u64, DecisionRecord), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.off >= self.buf.len() {
                // next segment
                let Some((_, path)) = self.segs.get(self.seg) else {
                    self.done = true;
                    return None;
                };
                let path = path.clone();
                self.seg += 1;
                match segment::read_segment(&path) {
                    Ok(b) => {
                        self.buf = b;
                        self.off = 0;
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(LogError::Io { path, source: e }));
                    }
                }
            }
            let last = self.seg == self.segs.len();
            let path = self
                .segs
                .get(self.seg.wrapping_sub(1))
                .map(|s| s.1.clone())
                .unwrap_or_default();
            let offset = self.off;
            match segment::parse_frame(&self.buf, offset) {
                Ok((payload, next)) => {
                    self.off = next;
                    let index = self.index;
                    self.index += 1;
                    return Some(match DecisionRecord::from_canonical_bytes(payload) {
                        Ok(r) => Ok((index, r)),
                        Err(e) => {
                            self.done = true;
                            Err(LogError::Corrupt {
                                segment: path,
                                offset: offset as u64,
                                index,
                                reason: e.to_string(),
                            })
                        }
                    });
                }
                Err(err) => {
                    match segment::classify_end(&self.buf, offset, err) {
                        // The end of this segment's data.
                        End::Zero => {
                            self.off = self.buf.len();
                            continue;
                        }
                        End::Torn { .. } if last => {
                            self.done = true;
                            return None;
                        }
                        // The last segment may be being written: a frame
                        // read half copied looks like this. Look again once.
                        End::Garbage if last && self.retried != Some(offset) => {
                            self.retried = Some(offset);
                            std::thread::sleep(crate::reader::RETRY_AFTER);
                            match segment::read_segment(&path) {
                                Ok(b) => self.buf = b,
                                Err(e) => {
                                    self.done = true;
                                    return Some(Err(LogError::Io { path, source: e }));
                                }
                            }
                            continue;
                        }
                        End::Torn { .. } | End::Garbage => {}
                    }
                    self.done = true;
                    return Some(Err(LogError::Corrupt {
                        segment: path,
                        offset: offset as u64,
                        index: self.index,
                        reason: err.to_string(),
                    }));
                }
            }
        }
    }
}
