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
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use crate::record::DecisionRecord;
use crate::segment::{self, CHECKPOINTS_FILE, FrameError};
use crate::store::{LogError, io_at};
use crate::writer::InclusionProofBundle;

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
            let mut buf = Vec::new();
            {
                let mut file = File::open(&path).map_err(io_at(&path))?;
                file.seek(SeekFrom::Start(self.offset))
                    .map_err(io_at(&path))?;
                file.read_to_end(&mut buf).map_err(io_at(&path))?;
            }
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
                        // A write in progress: wait for the next poll.
                        if err == FrameError::Incomplete
                            || (next_seg.is_none() && segment::is_torn_tail(&buf, off, err))
                        {
                            return Ok(());
                        }
                        return Err(LogError::Corrupt {
                            segment: path,
                            offset: self.offset,
                            index: self.index,
                            reason: err.to_string(),
                        });
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

/// Rebuilds the Merkle tree over the first `size` records of `dir`. Fails
/// if the log has fewer records.
fn tree_of(dir: &Path, size: u64) -> Result<MerkleTree, LogError> {
    let mut tree = MerkleTree::new();
    if size > 0 {
        Follower::new(dir).poll_raw(&mut |_, payload| {
            tree.push(leaf_hash(payload));
            if tree.size() >= size {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
    }
    if tree.size() < size {
        return Err(LogError::TruncatedBehindCheckpoint {
            records: tree.size(),
            checkpoint_size: size,
        });
    }
    Ok(tree)
}

fn check_root(tree: &MerkleTree, cp: &Checkpoint) -> Result<(), LogError> {
    let have = tree.root_at(cp.tree_size)?;
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
/// Fails with [`LogError::NotFound`] if no record has that id, and with
/// [`LogError::NotYetCheckpointed`] if the record is newer than the latest
/// checkpoint.
pub fn prove_dir(dir: &Path, decision_id: &str) -> Result<InclusionProofBundle, LogError> {
    // Read the checkpoint first: a checkpoint only covers synced records, so
    // the segments read afterwards hold at least `tree_size` records.
    let cp = latest_checkpoint(dir)?;
    let public_key = PublicKey::from_file(&dir.join(PUB_FILE))?.to_hex();
    let cp_size = cp.as_ref().map_or(0, |c| c.tree_size);
    let mut tree = MerkleTree::new();
    let mut found: Option<(u64, Vec<u8>)> = None;
    let needle = format!("\"decision_id\":{}", json_string(decision_id));
    let mut bad: Option<LogError> = None;
    Follower::new(dir).poll_raw(&mut |i, payload| {
        if i < cp_size {
            tree.push(leaf_hash(payload));
        }
        if found.is_none() && contains(payload, needle.as_bytes()) {
            match DecisionRecord::from_canonical_bytes(payload) {
                Ok(r) if r.decision_id == decision_id => found = Some((i, payload.to_vec())),
                Ok(_) => {}
                Err(e) => {
                    bad = Some(LogError::Record(e));
                    return ControlFlow::Break(());
                }
            }
        }
        if found.is_some() && tree.size() >= cp_size {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
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
    if tree.size() < cp.tree_size {
        return Err(LogError::TruncatedBehindCheckpoint {
            records: tree.size(),
            checkpoint_size: cp.tree_size,
        });
    }
    check_root(&tree, &cp)?;
    let proof = tree.inclusion_proof(index, cp.tree_size)?;
    let record: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| LogError::Invalid(format!("record {index}: {e}")))?;
    Ok(InclusionProofBundle {
        record,
        leaf_index: index,
        tree_size: cp.tree_size,
        leaf_hash: hex::encode(leaf_hash(&payload)),
        proof: proof.iter().map(hex::encode).collect(),
        checkpoint: cp,
        public_key,
    })
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
    let tree = tree_of(dir, new.tree_size)?;
    check_root(&tree, old)?;
    check_root(&tree, new)?;
    Ok(tree.consistency_proof(old.tree_size, new.tree_size)?)
}

fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    crate::canonical::write_string(&mut out, s);
    String::from_utf8(out).unwrap_or_default()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
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
