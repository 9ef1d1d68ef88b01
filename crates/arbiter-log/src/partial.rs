//! Partial tiles: the rest of what a C2SP tlog-tiles client needs to check a
//! signed checkpoint from the tile directory alone.
//!
//! Full tiles ([`crate::tiles`]) cover the leaves up to the last multiple of
//! 256 (at tile level 1, of 65 536; …). A client handed a checkpoint of size
//! `S` also needs, at each tile level `L` where `W = (S >> 8·L) mod 256` is
//! not 0, the first `W` hashes of that level's rightmost tile `N = S >>
//! 8·(L+1)`: the partial tile `tile/<L>/<N>.p/<W>` (C2SP tlog-tiles; e.g. size
//! 70 000 needs `tile/0/273.p/112`, `tile/1/001.p/17` and `tile/2/000.p/1`).
//! The writer has them in memory, as the tree's right edge; this module puts
//! them on disk.
//!
//! **Which checkpoints get them.** The tiles of a checkpoint are written
//! after its records are synced. A checkpoint gets them *before* its frame
//! goes to `checkpoints.log` when at least `LogOptions::partial_tiles_every`
//! (default 1 s; zero: every checkpoint) has passed since the last one that
//! got them; and the latest checkpoint gets them, after its frame, once the
//! writer has had nothing to do for 100 ms after it (not in the short gaps
//! between bursts, where the next batch would wait for them), and when it
//! stops. So: the latest checkpoint of a log that has gone quiet always has
//! them, and under load at least one checkpoint per interval does; a
//! checkpoint signed in between under load (the writer signs one every
//! `checkpoint_every_records`, 1 000, records) may never get them. A
//! liveness checkpoint (same size) has them already. Why not every one: on
//! the development machine's ext4 a checkpoint's tiles (a new `.p`
//! directory and one or two files, 8 KiB at most, renamed into place, not
//! synced) cost about 0.5–1 ms of metadata work on the writer thread, and a
//! checkpoint every 1 000 records then took 15–20 % off a tight append loop;
//! at most once a second, no effect stood out of the run-to-run noise
//! (docs/benchmarks.md). A level
//! whose tile and width did not change since the last tiles is not written
//! again.
//!
//! **Superseded ones are deleted.** When tile `L/N` has filled, its partial
//! tiles are removed, as the specification allows: the next checkpoint
//! (which is after the full tile was written) hands the `.p` directory to
//! the sealer thread, which removes it. Not the writer itself: removing a
//! directory freshly made took about 3 ms on the development machine's ext4
//! (a new, unsynced file about 0.02 ms), time the writer would take from
//! the next batch. A client holding an older checkpoint that needs
//! `L/N.p/W` and no longer finds it reads the full tile `L/N` and takes its
//! first `W` hashes — the same hashes, since the tree only grows; the
//! specification has clients fall back this way. The full tile is written
//! before the partial ones go, so one of them is always there. This keeps
//! fewer than 256 partial tiles per level on disk (one per tiled checkpoint
//! size within the level's current tile; under load, one or two), plus the
//! few whose removal is queued, whatever the size of the log.
//! `arbiter log archive` removes the partial tiles of the full tiles it
//! moves.
//!
//! **Derived state.** Partial tiles are written from the tree and never read
//! to build it or a proof: nothing the log signs or proves depends on them.
//! A crash can leave them missing, damaged (after a power failure a renamed
//! file that was never synced may be empty), for a size no checkpoint has
//! (written before a checkpoint that never came), or superseded and not yet
//! removed. [`PartialTiles::recover`], run by `Log::open`, compares every
//! partial tile of the current tiles with the tree and rewrites the ones
//! that differ, removes the ones for sizes beyond the tree and temporary
//! files, writes those of the latest checkpoint, and hands the superseded
//! ones it finds to the sealer thread.
//! `verify_dir` compares every partial tile it comes across with the
//! records. What is not brought back: the partial tile of a checkpoint older
//! than the latest, lost in a power failure; a client holding that
//! checkpoint reads the full tile once it fills, or proves against a newer
//! checkpoint.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::{LogError, io_at};
use crate::tiles::{PartialTile, TILE_WIDTH, TiledTree, partial_dir, partial_tile_path, tile_path};

/// Suffix of a partial tile being written (`<W>.tmp` beside `<W>`).
const TMP_SUFFIX: &str = ".tmp";

/// Tile indexes per directory in a tile path (`x001/234` …).
const PER_DIR: u64 = 1000;

/// The width a partial tile's file name spells: `1` to `255`, decimal,
/// without leading zeros (C2SP tlog-tiles); `None` for any other name.
pub(crate) fn parse_width(name: &str) -> Option<u8> {
    if name.starts_with('0') || name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<u8>().ok()
}

/// The partial tiles the writer has put on disk, and what is left to remove.
#[derive(Debug)]
pub(crate) struct PartialTiles {
    dir: PathBuf,
    /// Tiles whose `.p` directory may exist; removed once the tile is full.
    dirs: BTreeSet<(u8, u64)>,
    /// Per tile level, the tile index and width last written.
    last: Vec<Option<(u64, u8)>>,
    /// The tree size whose partial tiles were written last, and when.
    size: Option<u64>,
    written_at: Option<Instant>,
}

impl PartialTiles {
    /// At open, for the tree `tree` whose latest checkpoint has `latest`
    /// leaves: brings the partial tiles of the current tiles in line with the
    /// tree and writes those of `latest`. Returns the `.p` directories of
    /// superseded tiles found, for the caller to remove (off the open path).
    ///
    /// Looked at, per level: the `.p` directories beside the tiles from the
    /// one holding leaf `since` to the current one (a whole directory of
    /// 1 000 tiles at least, and the one before). Each checkpoint queues the
    /// removal of the partial tiles its size supersedes and checkpoints are at
    /// most the unsigned window apart, so with `since` = the latest
    /// checkpoint's size less that window, only partial tiles whose removal
    /// was queued and then lost (a crash with the sealer thread behind) or
    /// failed can lie before. They hold the right hashes, and `verify_dir`
    /// checks them.
    pub(crate) fn recover(
        dir: &Path,
        tree: &TiledTree,
        latest: Option<u64>,
        since: u64,
    ) -> Result<(PartialTiles, Vec<PathBuf>), LogError> {
        let mut me = PartialTiles {
            dir: dir.to_path_buf(),
            dirs: BTreeSet::new(),
            last: Vec::new(),
            size: None,
            written_at: None,
        };
        let mut superseded = Vec::new();
        let size = tree.size();
        // The current partial tile of each level, as the tree has it now.
        let now = tree.partial_tiles(size);
        let mut level = 0u8;
        while u32::from(level) * 8 < 64 && size >> (8 * u32::from(level)) > 0 {
            let shift = 8 * u32::from(level);
            let current = (size >> shift) / TILE_WIDTH as u64;
            let from = ((since.min(size) >> shift) / TILE_WIDTH as u64 / PER_DIR).saturating_sub(1);
            for group in from..=current / PER_DIR {
                let first = group * PER_DIR;
                let parent = match tile_path(dir, level, first).parent() {
                    Some(p) => p.to_path_buf(),
                    None => continue,
                };
                let entries = match fs::read_dir(&parent) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_at(&parent)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_at(&parent))?;
                    let name = entry.file_name();
                    let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".p")) else {
                        continue;
                    };
                    if stem.len() != 3 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    let n = first + stem.parse::<u64>().unwrap_or(0);
                    if n == current {
                        let edge = now
                            .iter()
                            .find(|t| t.level == level)
                            .map_or(&[][..], |t| t.hashes.as_slice());
                        me.check_current(level, n, edge)?;
                        me.dirs.insert((level, n));
                    } else if n < current {
                        // A full tile stands for it.
                        superseded.push(entry.path());
                    } else {
                        // Beyond the tree.
                        remove_all(&entry.path())?;
                    }
                }
            }
            level += 1;
        }
        if let Some(latest) = latest {
            for t in tree.partial_tiles(latest) {
                me.ensure(&t)?;
                me.dirs.insert((t.level, t.index));
                me.set_last(&t);
            }
            me.size = Some(latest);
        }
        Ok((me, superseded))
    }

    /// The partial tiles on disk of the current tile `level`/`index`, whose
    /// hashes so far are `edge`: each one must hold the first hashes of
    /// `edge` (rewritten if not); one wider than `edge` is for records the
    /// tree does not have (removed), and so is a temporary file.
    fn check_current(&mut self, level: u8, index: u64, edge: &[[u8; 32]]) -> Result<(), LogError> {
        let pdir = partial_dir(&self.dir, level, index);
        let entries = match fs::read_dir(&pdir) {
            Ok(e) => e,
            // A file where the directory should be.
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return remove_all(&pdir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&pdir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_at(&pdir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                remove_all(&entry.path())?;
                continue;
            }
            let Some(width) = parse_width(name) else {
                continue;
            };
            match edge.get(..usize::from(width)) {
                Some(hashes) => self.ensure(&PartialTile {
                    level,
                    index,
                    hashes: hashes.to_vec(),
                })?,
                None => remove_all(&entry.path())?,
            }
        }
        Ok(())
    }

    /// Writes `t` unless its file already holds exactly its hashes.
    fn ensure(&mut self, t: &PartialTile) -> Result<(), LogError> {
        let path = partial_tile_path(&self.dir, t.level, t.index, t.width());
        match fs::read(&path) {
            Ok(bytes) if bytes == t.bytes() => Ok(()),
            Ok(_) => write_tile(&self.dir, t),
            // Missing, or not a file (a directory by that name).
            Err(_) => {
                remove_all(&path)?;
                write_tile(&self.dir, t)
            }
        }
    }

    fn set_last(&mut self, t: &PartialTile) {
        let level = usize::from(t.level);
        if self.last.len() <= level {
            self.last.resize(level + 1, None);
        }
        if let Some(l) = self.last.get_mut(level) {
            *l = Some((t.index, t.width()));
        }
    }

    /// Whether the partial tiles of a tree of `size` leaves still need
    /// writing (not for a liveness checkpoint, whose size had its tiles).
    pub(crate) fn wanted(&self, size: u64) -> bool {
        self.size != Some(size)
    }

    /// Whether a checkpoint of `size` signed at `now` gets its partial tiles
    /// before its frame: wanted, and `every` has passed since tiles were
    /// last written (or none were since the log opened).
    pub(crate) fn due(&self, size: u64, now: Instant, every: Duration) -> bool {
        self.wanted(size)
            && self
                .written_at
                .is_none_or(|t| now.saturating_duration_since(t) >= every)
    }

    /// Writes `tiles`, the partial tiles of the tree at `size`
    /// ([`TiledTree::partial_tiles`]), each to a temporary name then renamed
    /// over its own. A level whose tile was last written at the same width
    /// is skipped: same tile, same width, same hashes.
    pub(crate) fn write(
        &mut self,
        size: u64,
        tiles: &[PartialTile],
        now: Instant,
    ) -> Result<(), LogError> {
        for t in tiles {
            let key = Some((t.index, t.width()));
            if self.last.get(usize::from(t.level)) == Some(&key) {
                continue;
            }
            write_tile(&self.dir, t)?;
            self.dirs.insert((t.level, t.index));
            self.set_last(t);
        }
        self.size = Some(size);
        self.written_at = Some(now);
        Ok(())
    }

    /// The `.p` directories of the tiles that are full in a tree of `size`
    /// leaves (each of them written), no longer tracked here: for
    /// [`remove_dirs`].
    pub(crate) fn superseded(&mut self, size: u64) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        self.dirs.retain(|&(level, index)| {
            let shift = 8 * (u32::from(level) + 1);
            let full = if shift >= 64 { 0 } else { size >> shift };
            if index < full {
                gone.push(partial_dir(&self.dir, level, index));
            }
            index >= full
        });
        gone
    }
}

/// Removes superseded partial-tile directories. A failure is left as it is:
/// what such a directory holds is still right, only no longer needed, and
/// `verify_dir` checks it; the next open queues the ones near the end of the
/// log again.
pub(crate) fn remove_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = fs::remove_dir_all(d);
    }
}

/// Writes partial tile `t` under log directory `dir`: to `<W>.tmp`, then
/// renamed to `<W>` (a reader sees the old file or the new one, never part
/// of one). Not synced: see the module docs.
fn write_tile(dir: &Path, t: &PartialTile) -> Result<(), LogError> {
    let pdir = partial_dir(dir, t.level, t.index);
    let path = partial_tile_path(dir, t.level, t.index, t.width());
    let tmp = pdir.join(format!("{}{TMP_SUFFIX}", t.width()));
    let bytes = t.bytes();
    match fs::write(&tmp, &bytes) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&pdir).map_err(io_at(&pdir))?;
            fs::write(&tmp, &bytes).map_err(io_at(&tmp))?;
        }
        r => r.map_err(io_at(&tmp))?,
    }
    fs::rename(&tmp, &path).map_err(io_at(&path))
}

/// Removes a file or a directory tree; gone already is fine.
fn remove_all(path: &Path) -> Result<(), LogError> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::merkle::leaf_hash;

    fn tree(dir: &Path, n: u64) -> TiledTree {
        let mut t = TiledTree::new(dir);
        for i in 0..n {
            t.push(leaf_hash(&i.to_le_bytes())).unwrap();
        }
        t
    }

    #[test]
    fn widths_are_spelled_as_the_specification_says() {
        assert_eq!(parse_width("1"), Some(1));
        assert_eq!(parse_width("255"), Some(255));
        for bad in ["0", "256", "007", "", "+5", "5.tmp", "x1"] {
            assert_eq!(parse_width(bad), None, "{bad}");
        }
    }

    #[test]
    fn superseded_partial_tiles_are_removed_once_their_tile_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tree(dir.path(), 300);
        let (mut p, none) = PartialTiles::recover(dir.path(), &t, None, 0).unwrap();
        assert!(none.is_empty());
        let now = Instant::now();
        p.write(300, &t.partial_tiles(300), now).unwrap();
        assert!(partial_tile_path(dir.path(), 0, 1, 44).is_file());
        assert!(partial_tile_path(dir.path(), 1, 0, 1).is_file());
        for i in 300..520 {
            t.push(leaf_hash(&u64::to_le_bytes(i))).unwrap();
        }
        assert!(!p.due(520, now, Duration::from_secs(1)));
        assert!(p.due(520, now + Duration::from_secs(1), Duration::from_secs(1)));
        p.write(520, &t.partial_tiles(520), now).unwrap();
        // Tile 0/1 is full: its partial tiles go; 1/0 is not.
        let gone = p.superseded(520);
        assert_eq!(gone, [partial_dir(dir.path(), 0, 1)]);
        remove_dirs(&gone);
        assert!(!partial_dir(dir.path(), 0, 1).exists());
        assert!(p.superseded(520).is_empty());
        assert!(partial_tile_path(dir.path(), 0, 2, 8).is_file());
        assert!(partial_tile_path(dir.path(), 1, 0, 1).is_file());
        assert!(partial_tile_path(dir.path(), 1, 0, 2).is_file());
        // A liveness checkpoint writes nothing.
        assert!(!p.wanted(520));
    }
}
