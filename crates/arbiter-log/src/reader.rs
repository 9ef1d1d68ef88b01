//! Read-only access to a log directory that a live writer may be appending
//! to: following new records, reading checkpoints, and computing inclusion
//! and consistency proofs from the files alone.
//!
//! Nothing here opens a file for writing or truncates anything, so these
//! functions are safe to run next to `arbiter serve` on the same directory.
//! An incomplete final frame (a write in progress) is treated as the end of
//! the log.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, PUB_FILE, PublicKey};
use crate::contains;
use crate::merkle::{Hash, MerkleTree, Subtrees, leaf_hash};
use crate::record::DecisionRecord;
use crate::sealed;
use crate::segment::{self, CHECKPOINTS_FILE, End};
use crate::store;
use crate::store::{LogError, io_at};
use crate::tiles::TiledTree;
use crate::writer::InclusionProofBundle;

/// How long a reader waits before looking again at bytes after the logical
/// end of the last segment that are not a frame: a frame being written in
/// place can be read half copied.
pub(crate) const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

/// The bytes of `path` from `from` to the end.
pub(crate) fn read_from(path: &Path, from: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// The bytes of `path` from `from` up to where its data ends: the first frame
/// header that is all zero (the zero tail of a preallocated segment) or
/// cannot start a frame, or the end of the file. Reads in bounded chunks, so
/// that polling a preallocated segment does not read its zero tail.
pub(crate) fn read_data(path: &Path, from: u64) -> io::Result<Vec<u8>> {
    const CHUNK: usize = 256 << 10;
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut buf: Vec<u8> = Vec::new();
    // Start of the next frame to walk, and the bytes needed to see past it.
    let mut pos = 0usize;
    let mut need = segment::HEADER_LEN;
    loop {
        while buf.len() < pos + need {
            let have = buf.len();
            let want = (pos + need - have).max(CHUNK);
            buf.resize(have + want, 0);
            let mut got = 0;
            while got < want {
                match file.read(buf.get_mut(have + got..).unwrap_or_default()) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(have + got);
            if got == 0 {
                return Ok(buf);
            }
        }
        // Walk the frames that are in the buffer.
        loop {
            let Some(header) = buf
                .get(pos..)
                .and_then(|r| r.first_chunk::<{ segment::HEADER_LEN }>())
            else {
                need = segment::HEADER_LEN;
                break;
            };
            let [l0, l1, l2, l3, ..] = *header;
            let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            if len == 0 || len > segment::MAX_PAYLOAD {
                return Ok(buf);
            }
            if buf.len() < pos + segment::HEADER_LEN + len {
                need = segment::HEADER_LEN + len;
                break;
            }
            pos += segment::HEADER_LEN + len;
        }
    }
}

/// A read position in a log directory that can be polled for new records.
///
/// Each [`Follower::poll`] reads only what was appended since the previous
/// call (from the current segment's last offset, then any later segments).
#[derive(Debug, Clone)]
pub struct Follower {
    dir: PathBuf,
    seg_first: u64,
    offset: u64,
    index: u64,
}

impl Follower {
    /// A follower positioned at the first record of the log in `dir`.
    pub fn new(dir: &Path) -> Self {
        Follower {
            dir: dir.to_path_buf(),
            seg_first: 0,
            offset: 0,
            index: 0,
        }
    }

    /// A follower positioned at the first record of the segment that starts
    /// at record `first`.
    pub(crate) fn at_segment(dir: &Path, first: u64) -> Self {
        Follower {
            dir: dir.to_path_buf(),
            seg_first: first,
            offset: 0,
            index: first,
        }
    }

    /// A follower positioned at the first record of the segment (in the log or an archive of
    /// it) that holds record `index`: a poll returns the records before `index` in that
    /// segment too (callers skip them by index). Past the end, it starts at the last segment.
    pub fn at_record(dir: &Path, index: u64) -> Result<Self, LogError> {
        let firsts = live_firsts(dir)?;
        let first = firsts
            .iter()
            .rev()
            .find(|&&f| f <= index)
            .or(firsts.first())
            .copied()
            .unwrap_or(0);
        Ok(Follower::at_segment(dir, first))
    }

    /// A follower positioned at the first segment that may hold records of time
    /// `ts_us` or later: the segments before it were sealed with every record older (record
    /// times never go backwards in a log).
    pub fn since(dir: &Path, ts_us: i64) -> Result<Self, LogError> {
        let firsts = live_firsts(dir)?;
        let seals = sealed::read_seals(dir)?.unwrap_or_default();
        let old = |first: u64| {
            seals
                .iter()
                .find(|s| s.first == first)
                .is_some_and(|s| s.last_ts_us < ts_us)
        };
        let first = firsts
            .iter()
            .find(|&&f| !old(f))
            .or(firsts.last())
            .copied()
            .unwrap_or(0);
        Ok(Follower::at_segment(dir, first))
    }

    /// The index of the next record a poll will return.
    pub fn next_index(&self) -> u64 {
        self.index
    }

    /// Calls `f` with the index and raw (canonical) payload of every record
    /// appended since the last poll, in order, until the end of what is on
    /// disk or until `f` breaks (the position is then just after the record
    /// `f` broke on). A final frame that is still being written ends the
    /// poll without error; the next poll picks it up.
    pub fn poll_raw(
        &mut self,
        f: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        loop {
            let segs = match segment::list_segments(&self.dir) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_at(&self.dir)(e)),
            };
            if segs.is_empty() {
                return Ok(());
            }
            let Some(pos) = segs.iter().position(|(first, _)| *first == self.seg_first) else {
                let detail = if self.index == 0 {
                    "the log has no first segment (seg-00000000000000000000.log)".to_string()
                } else {
                    format!(
                        "the segment starting at record {} is no longer there",
                        self.seg_first
                    )
                };
                return Err(LogError::Corrupt {
                    segment: self.dir.join(segment::segment_name(self.seg_first)),
                    offset: self.offset,
                    index: self.index,
                    reason: detail,
                });
            };
            let path = segs.get(pos).map(|s| s.1.clone()).unwrap_or_default();
            let next_seg = segs.get(pos + 1).map(|s| s.0);
            let last = next_seg.is_none();
            // The last segment is read only up to its zero tail (it is being
            // written); an earlier one to its end.
            let read = |at: u64| {
                if last && !segment::is_compressed(&path) {
                    read_data(&path, at)
                } else {
                    segment::read_segment_from(&path, at)
                }
                .map_err(io_at(&path))
            };
            let mut buf = read(self.offset)?;
            let mut retried = false;
            let mut off = 0usize;
            while off < buf.len() {
                match segment::parse_frame(&buf, off) {
                    Ok((payload, next)) => {
                        let i = self.index;
                        self.index += 1;
                        self.offset += (next - off) as u64;
                        off = next;
                        if f(i, payload).is_break() {
                            return Ok(());
                        }
                    }
                    Err(err) => {
                        // The zero tail of the segment being written: the end
                        // for now (a record being written starts there).
                        if last && buf.get(off..off + segment::HEADER_LEN) == Some(&[0u8; 8][..]) {
                            return Ok(());
                        }
                        // Judge the bad frame against the rest of the file.
                        let rest = if last {
                            segment::read_segment_from(&path, self.offset).map_err(io_at(&path))?
                        } else {
                            buf.split_off(off)
                        };
                        let end = match segment::parse_frame(&rest, 0) {
                            // Completed since the first read.
                            Ok(_) => None,
                            Err(e) => Some(segment::classify_end(&rest, 0, e)),
                        };
                        match end {
                            None => {}
                            Some(End::Zero) => break,
                            // A write in progress: wait for the next poll.
                            Some(End::Torn { .. }) if last => return Ok(()),
                            // Possibly a write caught half copied: look again
                            // once, shortly.
                            Some(End::Garbage) if last && !retried => {
                                retried = true;
                                std::thread::sleep(RETRY_AFTER);
                            }
                            Some(_) => {
                                return Err(LogError::Corrupt {
                                    segment: path,
                                    offset: self.offset,
                                    index: self.index,
                                    reason: err.to_string(),
                                });
                            }
                        }
                        buf = read(self.offset)?;
                        off = 0;
                    }
                }
            }
            match next_seg {
                None => return Ok(()),
                Some(first) if first == self.index => {
                    self.seg_first = first;
                    self.offset = 0;
                }
                Some(first) => {
                    return Err(LogError::Corrupt {
                        segment: segs.get(pos + 1).map(|s| s.1.clone()).unwrap_or_default(),
                        offset: 0,
                        index: self.index,
                        reason: format!(
                            "segment starts at record {first}, expected {}",
                            self.index
                        ),
                    });
                }
            }
        }
    }

    /// Like [`Follower::poll_raw`], with each record decoded.
    pub fn poll(
        &mut self,
        f: &mut dyn FnMut(u64, DecisionRecord) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        let mut bad: Option<LogError> = None;
        let seg_first = self.seg_first;
        let dir = self.dir.clone();
        self.poll_raw(
            &mut |i, payload| match DecisionRecord::from_canonical_bytes(payload) {
                Ok(r) => f(i, r),
                Err(e) => {
                    bad = Some(LogError::Corrupt {
                        segment: dir.join(segment::segment_name(seg_first)),
                        offset: 0,
                        index: i,
                        reason: e.to_string(),
                    });
                    ControlFlow::Break(())
                }
            },
        )?;
        match bad {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A page of [`newest_records`]: `(index, record)` newest first, and the next page's cursor.
pub type NewestPage = (Vec<(u64, DecisionRecord)>, Option<u64>);

/// One page of records matching `filter`, **newest first**: at most `limit` records, all
/// before record `before` (exclusive) when it is given, with the cursor of the next page: the
/// index of the oldest record returned when the page is full (the next page may then be
/// empty), `None` when the scan reached the start of the log.
///
/// The log is read segment by segment from its end, so a page costs the segments it spans,
/// not the whole log; with `filter.since_us`, sealed segments wholly older than it end the
/// scan. Meant for consoles and investigations ("the latest denials"), not hot paths.
pub fn newest_records(
    dir: &Path,
    filter: &crate::RecordFilter,
    before: Option<u64>,
    limit: usize,
) -> Result<NewestPage, LogError> {
    let firsts = live_firsts(dir)?;
    let seals = sealed::read_seals(dir)?.unwrap_or_default();
    let mut page: Vec<(u64, DecisionRecord)> = Vec::new();
    if limit == 0 {
        return Ok((page, None));
    }
    for (i, &first) in firsts.iter().enumerate().rev() {
        if before.is_some_and(|b| first >= b) {
            continue;
        }
        if let Some(since) = filter.since_us
            && seals
                .iter()
                .find(|s| s.first == first)
                .is_some_and(|s| s.last_ts_us < since)
        {
            break;
        }
        let end = firsts.get(i + 1).copied().unwrap_or(u64::MAX);
        let mut found = Vec::new();
        Follower::at_segment(dir, first).poll(&mut |index, record| {
            if index >= end || before.is_some_and(|b| index >= b) {
                return ControlFlow::Break(());
            }
            if filter.matches(&record) {
                found.push((index, record));
            }
            ControlFlow::Continue(())
        })?;
        for item in found.into_iter().rev() {
            let index = item.0;
            page.push(item);
            if page.len() == limit {
                return Ok((page, Some(index)));
            }
        }
    }
    Ok((page, None))
}

/// The first record of each segment of the log in `dir` (with its archives), in order.
fn live_firsts(dir: &Path) -> Result<Vec<u64>, LogError> {
    match segment::list_segments(dir) {
        Ok(s) => Ok(s.into_iter().map(|(first, _)| first).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_at(dir)(e)),
    }
}

/// The checkpoints in `dir/checkpoints.log`, oldest first (empty if the file
/// does not exist). An incomplete final frame (a write in progress) is
/// ignored; any other damage is an error. Signatures are not checked here.
pub fn read_checkpoints(dir: &Path) -> Result<Vec<Checkpoint>, LogError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::Io { path, source: e }),
    };
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < buf.len() {
        match segment::parse_frame(&buf, off) {
            Ok((payload, next)) => {
                let cp = Checkpoint::from_json(payload).map_err(|e| LogError::Corrupt {
                    segment: path.clone(),
                    offset: off as u64,
                    index: out.len() as u64,
                    reason: e.to_string(),
                })?;
                out.push(cp);
                off = next;
            }
            Err(err) if segment::is_torn_tail(&buf, off, err) => break,
            Err(err) => {
                return Err(LogError::Corrupt {
                    segment: path,
                    offset: off as u64,
                    index: out.len() as u64,
                    reason: err.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The latest checkpoint in `dir/checkpoints.log`, if any (signature not
/// checked).
pub fn latest_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, LogError> {
    Ok(read_checkpoints(dir)?.pop())
}

/// The tree of a log directory, read without writing: from the last seal's
/// edge and the tiles (see [`crate::sealed`]), then the records after it,
/// with at least `size` records. Calls `tail`
/// with each record read after the last seal; reading stops once the tree
/// has `size` records and `tail` breaks (or at the end of the log).
fn view(
    dir: &Path,
    size: u64,
    tail: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
) -> Result<TiledTree, LogError> {
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    let seals = sealed::read_seals(dir)?.unwrap_or_default();
    let mut k = store::matching_seals(&seals, &segs, crate::archive::archived_end(dir));
    if let Some(last) = k.checked_sub(1).and_then(|i| seals.get(i))
        && !TiledTree::edge_fits(last.end(), &last.edge)
    {
        k = 0;
    }
    let seals = seals.get(..k).unwrap_or_default();
    let (start, edge) = seals
        .last()
        .map_or((0, Vec::new()), |s| (s.end(), s.edge.clone()));
    let mut tree = TiledTree::with_edge(dir, start, edge, false);
    let mut failed: Option<LogError> = None;
    let mut looking = true;
    if start > 0 || !segs.is_empty() {
        Follower::at_segment(dir, start).poll_raw(&mut |i, payload| {
            if let Err(e) = tree.push(leaf_hash(payload)) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            if looking && tail(i, payload).is_break() {
                looking = false;
            }
            if !looking && tree.size() >= size {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if tree.size() < size {
        return Err(LogError::TruncatedBehindCheckpoint {
            records: tree.size(),
            checkpoint_size: size,
        });
    }
    Ok(tree)
}

fn check_root<T: Subtrees>(tree: &T, cp: &Checkpoint) -> Result<(), LogError>
where
    LogError: From<T::Error>,
{
    let have = crate::merkle::root_at(tree, cp.tree_size)?;
    if have != cp.root()? {
        return Err(LogError::CheckpointMismatch {
            size: cp.tree_size,
            reason: "root hash differs from the tree recomputed from the segments".to_string(),
        });
    }
    Ok(())
}

/// An inclusion proof for the first record with `decision_id`, against the
/// latest checkpoint in `dir`, computed from the files alone (read-only; the
/// log may be live). The bundle's public key is read from
/// `dir/log-signing.pub`.
///
/// Sealed segments are searched through their index files and the tree is
/// read from its tiles, so only the records after the last seal are read.
///
/// Fails with [`LogError::NotFound`] if no record has that id, and with
/// [`LogError::NotYetCheckpointed`] if the record is newer than the latest
/// checkpoint.
pub fn prove_dir(dir: &Path, decision_id: &str) -> Result<InclusionProofBundle, LogError> {
    // Read the checkpoint first: a checkpoint only covers synced records, so
    // the segments read afterwards hold at least `tree_size` records.
    let cp = latest_checkpoint(dir)?;
    let public_key = PublicKey::from_file(&dir.join(PUB_FILE))?.to_hex();
    let cp_size = cp.as_ref().map_or(0, |c| c.tree_size);
    let needle = format!("\"decision_id\":{}", json_string(decision_id));
    // The sealed segments first (the first record with the id wins).
    let mut found = find_sealed(dir, decision_id)?;
    let mut bad: Option<LogError> = None;
    let sealed_hit = found.is_some();
    let tree = view(dir, cp_size, &mut |i, payload| {
        if sealed_hit {
            return ControlFlow::Break(());
        }
        if contains(payload, needle.as_bytes()) {
            match DecisionRecord::from_canonical_bytes(payload) {
                Ok(r) if r.decision_id == decision_id => {
                    found = Some((i, payload.to_vec()));
                    return ControlFlow::Break(());
                }
                Ok(_) => {}
                Err(e) => {
                    bad = Some(LogError::Record(e));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = bad {
        return Err(e);
    }
    let Some((index, payload)) = found else {
        return Err(LogError::NotFound(decision_id.to_string()));
    };
    let cp = match cp {
        Some(cp) if index < cp.tree_size => cp,
        other => {
            return Err(LogError::NotYetCheckpointed {
                index,
                checkpoint_size: other.map_or(0, |c| c.tree_size),
            });
        }
    };
    check_root(&tree, &cp)?;
    if tree.leaf(index)? != leaf_hash(&payload) {
        return Err(LogError::Corrupt {
            segment: dir.to_path_buf(),
            offset: 0,
            index,
            reason: "record on disk does not match its leaf hash".to_string(),
        });
    }
    let proof = tree.inclusion_proof(index, cp.tree_size)?;
    InclusionProofBundle::of(index, &payload, &proof, cp, public_key)
}

/// The first record with `decision_id` in the sealed segments of `dir`, read
/// back through their index files and confirmed.
fn find_sealed(dir: &Path, decision_id: &str) -> Result<Option<(u64, Vec<u8>)>, LogError> {
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    let seals = sealed::read_seals(dir)?.unwrap_or_default();
    let k = store::matching_seals(&seals, &segs, crate::archive::archived_end(dir));
    let time = sealed::uuid7_ms(decision_id);
    for seal in seals.iter().take(k) {
        let seg = seal.segment();
        if !seg.times.may_hold(time) {
            continue;
        }
        for (index, offset) in sealed::sealed_candidates(dir, &seg, decision_id)? {
            let path = segment::segment_path(dir, seg.first);
            let (rec, payload) = store::read_record_at(&path, offset)?;
            if rec.seq == index && rec.decision_id == decision_id {
                return Ok(Some((index, payload)));
            }
        }
    }
    Ok(None)
}

/// The records among the first `cp.tree_size` of `dir` whose canonical bytes `pick` chooses,
/// each with its inclusion proof against `cp` (read-only; the log may be live). `cp` must be a
/// checkpoint of this log: its root is checked against the recomputed tree (its signature is
/// not; see [`crate::check_proof`]). For bundles of several records under one checkpoint,
/// e.g. a decision and the activation of the policy version that made it.
pub fn prove_picked(
    dir: &Path,
    cp: &Checkpoint,
    pick: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Vec<InclusionProofBundle>, LogError> {
    let public_key = PublicKey::from_file(&dir.join(PUB_FILE))?.to_hex();
    let mut tree = MerkleTree::new();
    let mut picked: Vec<(u64, Vec<u8>)> = Vec::new();
    if cp.tree_size > 0 {
        Follower::new(dir).poll_raw(&mut |i, payload| {
            tree.push(leaf_hash(payload));
            if pick(payload) {
                picked.push((i, payload.to_vec()));
            }
            if tree.size() >= cp.tree_size {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
    }
    if tree.size() < cp.tree_size {
        return Err(LogError::TruncatedBehindCheckpoint {
            records: tree.size(),
            checkpoint_size: cp.tree_size,
        });
    }
    check_root(&tree, cp)?;
    picked
        .into_iter()
        .map(|(index, payload)| {
            let proof = tree.inclusion_proof(index, cp.tree_size)?;
            InclusionProofBundle::of(index, &payload, &proof, cp.clone(), public_key.clone())
        })
        .collect()
}

/// A consistency proof from checkpoint `old` to checkpoint `new`, computed
/// from the records in `dir` (read-only). Both checkpoints' roots must match
/// the tree recomputed from the segments; signatures are not checked here
/// (see [`crate::check_consistency`]).
pub fn consistency_dir(
    dir: &Path,
    old: &Checkpoint,
    new: &Checkpoint,
) -> Result<Vec<Hash>, LogError> {
    if old.tree_size > new.tree_size {
        return Err(LogError::Invalid(format!(
            "the old checkpoint (size {}) is larger than the new one (size {})",
            old.tree_size, new.tree_size
        )));
    }
    let tree = view(dir, new.tree_size, &mut |_, _| ControlFlow::Break(()))?;
    check_root(&tree, old)?;
    check_root(&tree, new)?;
    tree.consistency_proof(old.tree_size, new.tree_size)
}

fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    crate::canonical::write_string(&mut out, s);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn contains_and_json_string() {
        assert!(contains(b"abc\"x\"", b"\"x\""));
        assert!(!contains(b"abc", b"abd"));
        assert_eq!(json_string("a\"b"), "\"a\\\"b\"");
    }
}
