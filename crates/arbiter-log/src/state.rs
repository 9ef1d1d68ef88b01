//! `checkpoints.state`: the writer's durable record of how many checkpoints it
//! has written to `checkpoints.log` and the tree size of the latest one.
//!
//! It lets `Log::open` and `verify_dir` tell a `checkpoints.log` that was
//! deleted, emptied or cut back from one that never held more: the state is
//! written (and synced) only after the checkpoint it counts is synced, so it
//! is never ahead of the file, and a file holding fewer checkpoints than the
//! state says has lost some. The state is not signed: it does not stop
//! someone who rewrites it too, but then records that no checkpoint covers
//! are still refused beyond the unsigned window.
//!
//! Format: two 64-byte slots, written alternately in place (so that a write
//! torn by a crash leaves the other slot intact). A slot is
//!
//! ```text
//! "ACST" | u32 LE version (1) | u64 LE generation | u64 LE checkpoints
//!        | u64 LE tree_size | u32 LE CRC-32 of the preceding 32 bytes | zeros
//! ```
//!
//! The valid slot with the highest generation is the state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// File name of the checkpoint state.
pub const STATE_FILE: &str = "checkpoints.state";

const MAGIC: &[u8; 4] = b"ACST";
const VERSION: u32 = 1;
const SLOT: usize = 64;
const BODY: usize = 32;

/// What the writer last wrote to `checkpoints.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointState {
    /// Increases with every write of the state.
    pub generation: u64,
    /// Checkpoints in `checkpoints.log`.
    pub checkpoints: u64,
    /// Tree size of the latest one (0 without any).
    pub tree_size: u64,
}

/// What reading the state file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRead {
    /// No state file.
    Missing,
    /// A state file with no valid slot.
    Damaged,
    /// The current state.
    Found(CheckpointState),
}

fn encode(s: &CheckpointState) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0..4].copy_from_slice(MAGIC);
    b[4..8].copy_from_slice(&VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&s.generation.to_le_bytes());
    b[16..24].copy_from_slice(&s.checkpoints.to_le_bytes());
    b[24..32].copy_from_slice(&s.tree_size.to_le_bytes());
    let crc = crc32fast::hash(&b[..BODY]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn decode(b: &[u8]) -> Option<CheckpointState> {
    let body = b.get(..BODY)?;
    let crc = u32::from_le_bytes(b.get(BODY..BODY + 4)?.try_into().ok()?);
    if body.get(0..4)? != MAGIC || crc32fast::hash(body) != crc {
        return None;
    }
    if u32::from_le_bytes(body.get(4..8)?.try_into().ok()?) != VERSION {
        return None;
    }
    Some(CheckpointState {
        generation: u64_at(body, 8)?,
        checkpoints: u64_at(body, 16)?,
        tree_size: u64_at(body, 24)?,
    })
}

/// Reads `dir/checkpoints.state`.
pub fn read_state(dir: &Path) -> io::Result<StateRead> {
    let buf = match fs::read(dir.join(STATE_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StateRead::Missing),
        Err(e) => return Err(e),
    };
    let best = buf
        .chunks(SLOT)
        .take(2)
        .filter_map(decode)
        .max_by_key(|s| s.generation);
    Ok(best.map_or(StateRead::Damaged, StateRead::Found))
}

/// The open state file, written by the log's writer.
pub(crate) struct StateFile {
    file: File,
    generation: u64,
}

impl StateFile {
    /// Opens (creating) the state file and writes `checkpoints`/`tree_size`
    /// as the generation after `previous`. The caller syncs the directory.
    pub(crate) fn create(
        dir: &Path,
        previous: u64,
        checkpoints: u64,
        tree_size: u64,
    ) -> io::Result<StateFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(STATE_FILE))?;
        let mut s = StateFile {
            file,
            generation: previous,
        };
        s.write(checkpoints, tree_size)?;
        Ok(s)
    }

    /// Writes and syncs the next generation into the older slot.
    pub(crate) fn write(&mut self, checkpoints: u64, tree_size: u64) -> io::Result<()> {
        let generation = self.generation + 1;
        let slot = encode(&CheckpointState {
            generation,
            checkpoints,
            tree_size,
        });
        let at = (generation % 2) * SLOT as u64;
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(&slot)?;
        self.file.sync_data()?;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn round_trip_and_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), StateRead::Missing);
        let mut f = StateFile::create(dir.path(), 0, 0, 0).unwrap();
        f.write(3, 30).unwrap();
        f.write(4, 40).unwrap();
        let want = CheckpointState {
            generation: 3,
            checkpoints: 4,
            tree_size: 40,
        };
        assert_eq!(read_state(dir.path()).unwrap(), StateRead::Found(want));
        // A torn write of the newest slot leaves the previous one.
        let path = dir.path().join(STATE_FILE);
        let mut b = fs::read(&path).unwrap();
        b[SLOT + 20] ^= 1;
        fs::write(&path, &b).unwrap();
        let StateRead::Found(s) = read_state(dir.path()).unwrap() else {
            panic!("no state");
        };
        assert_eq!((s.checkpoints, s.tree_size), (3, 30));
        fs::write(&path, b"junk").unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), StateRead::Damaged);
    }
}
