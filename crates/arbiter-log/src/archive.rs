//! Archiving: moving the oldest sealed segments out of the log directory.
//!
//! [`archive`] moves a prefix of sealed segments — those whose last record is
//! older than a time — with their index files and the level-0 tiles that lie
//! wholly inside them, to another directory, and records the move in
//! `archived.log` (one JSON line per move: the records moved and where).
//! Everything else stays: the seals, the checkpoints, the higher tiles (a
//! few bytes per 256 records) and the partial tiles of the tiles not moved,
//! so the live log still computes its roots and the proofs of newer
//! records. Partial tiles of the level-0 tiles moved (superseded by them;
//! the writer removes those itself, a crash can leave some) are removed.
//!
//! Readers find archived files through `archived.log`: segment listings,
//! lookups, proofs and `verify` read them from the archive directory while
//! it is reachable at the path recorded. The live log opens without it;
//! what needs an archived record then fails naming the archive directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{PUB_FILE, sync_dir};
use crate::sealed::{self, INDEX_DIR, Seal};
use crate::segment;
use crate::store::{LogError, io_at};
use crate::tiles::{TILE_DIR, partial_dir, tile_path};

/// The archive moves, one JSON line each, in the log directory.
pub const ARCHIVED_FILE: &str = "archived.log";

/// One move of records `[first, end)` to `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// First record moved.
    pub first: u64,
    /// One past the last record moved.
    pub end: u64,
    /// Where they went (absolute).
    pub dir: PathBuf,
    /// When, Unix microseconds.
    pub ts_us: i64,
}

/// The archive moves recorded in log directory `dir`, in order (none
/// without `archived.log`).
pub fn archives(dir: &Path) -> Result<Vec<Archive>, LogError> {
    let path = dir.join(ARCHIVED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let mut out: Vec<Archive> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let a: Archive = serde_json::from_str(line).map_err(|e| LogError::Corrupt {
            segment: path.clone(),
            offset: 0,
            index: n as u64,
            reason: format!("line {}: {e}", n + 1),
        })?;
        if a.first != out.last().map_or(0, |p| p.end) || a.end <= a.first {
            return Err(LogError::Corrupt {
                segment: path.clone(),
                offset: 0,
                index: n as u64,
                reason: format!(
                    "line {}: records {} to {} do not follow the previous move",
                    n + 1,
                    a.first,
                    a.end
                ),
            });
        }
        out.push(a);
    }
    Ok(out)
}

/// Records before this index are archived (0: none).
pub(crate) fn archived_end(dir: &Path) -> u64 {
    archives(dir)
        .ok()
        .and_then(|a| a.last().map(|a| a.end))
        .unwrap_or(0)
}

/// The archive directory holding record `index`, if it was archived.
pub(crate) fn dir_of(dir: &Path, index: u64) -> Option<PathBuf> {
    archives(dir)
        .ok()?
        .into_iter()
        .find(|a| index >= a.first && index < a.end)
        .map(|a| a.dir)
}

/// The archive directories recorded in `dir` (for tiles moved there).
pub(crate) fn dirs(dir: &Path) -> Vec<PathBuf> {
    archives(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.dir)
        .collect()
}

/// What [`archive`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    /// Records moved (`first..end`); empty when nothing was old enough.
    pub first: u64,
    pub end: u64,
    /// Segment files moved.
    pub segments: usize,
    /// Bytes moved (segments, index files, tiles).
    pub bytes: u64,
    /// Where to.
    pub dir: PathBuf,
}

/// Moves the sealed segments of the log in `dir` whose records are all
/// older than `before_us` (Unix microseconds), oldest first and without a
/// gap, to `to`, with their index files and the level-0 tiles inside them.
/// Copies are synced before the originals are removed, and the move is
/// recorded in `archived.log` in between, so a crash leaves either the
/// originals or a recorded archive (and at worst files in both places).
///
/// Takes the log's writer lock: the log must not be open (stop `arbiter
/// serve` first).
pub fn archive(dir: &Path, before_us: i64, to: &Path) -> Result<ArchiveReport, LogError> {
    let _lock = crate::writer::lock_dir(dir)?;
    let existed = to.exists();
    fs::create_dir_all(to).map_err(io_at(to))?;
    let made = to;
    let to = fs::canonicalize(to).map_err(io_at(to))?;
    let live = fs::canonicalize(dir).map_err(io_at(dir))?;
    if to.starts_with(&live) || live.starts_with(&to) {
        if !existed {
            let _ = fs::remove_dir(made);
        }
        return Err(LogError::Invalid(format!(
            "the archive directory `{}` must be outside the log directory `{}`",
            to.display(),
            live.display()
        )));
    }
    let seals = sealed::read_seals(dir)?.unwrap_or_default();
    let start = archived_end(dir);
    let segs = segment::list_segments(dir).map_err(io_at(dir))?;
    // Sealed segments from `start` on, all older than `before`, each with
    // its file in the live directory; never the last segment.
    let last_first = segs.last().map_or(0, |s| s.0);
    let moving: Vec<&Seal> = seals
        .iter()
        .skip_while(|s| s.end() <= start)
        .take_while(|s| s.last_ts_us < before_us && s.first < last_first)
        .collect();
    let mut report = ArchiveReport {
        first: start,
        end: start,
        segments: 0,
        bytes: 0,
        dir: to.clone(),
    };
    let Some(end) = moving.last().map(|s| s.end()) else {
        return Ok(report);
    };
    // The files: each segment (either form), its index file, and the
    // level-0 tiles wholly inside [start, end).
    let mut files: Vec<PathBuf> = Vec::new();
    for s in &moving {
        let seg = segs
            .iter()
            .find(|(f, p)| *f == s.first && p.starts_with(dir))
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                LogError::Invalid(format!(
                    "the segment starting at record {} is not in `{}`",
                    s.first,
                    dir.display()
                ))
            })?;
        files.push(seg);
        files.push(sealed::index_path(dir, s.first));
    }
    // Partial tiles of those tiles are superseded by them: removed, not
    // moved (the writer removes them itself; a crash can leave some).
    let mut partials: Vec<PathBuf> = Vec::new();
    for n in start.div_ceil(256)..end / 256 {
        let t = tile_path(dir, 0, n);
        if t.is_file() {
            files.push(t);
        }
        let p = partial_dir(dir, 0, n);
        if p.is_dir() {
            partials.push(p);
        }
    }
    let mut made: Vec<PathBuf> = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        let dst = to.join(rel);
        if let Some(parent) = dst.parent()
            && !made.iter().any(|m| m == parent)
        {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
            made.push(parent.to_path_buf());
        }
        report.bytes += fs::copy(f, &dst).map_err(io_at(f))?;
        File::open(&dst)
            .and_then(|c| c.sync_all())
            .map_err(io_at(&dst))?;
    }
    let key = dir.join(PUB_FILE);
    if key.is_file() {
        fs::copy(&key, to.join(PUB_FILE)).map_err(io_at(&key))?;
    }
    made.push(to.clone());
    for d in &made {
        sync_dir(d).map_err(io_at(d))?;
    }
    // Recorded, then the originals go.
    let line = serde_json::to_string(&Archive {
        first: start,
        end,
        dir: to.clone(),
        ts_us: crate::record::now_us(),
    })
    .map_err(|e| LogError::Invalid(e.to_string()))?;
    let path = dir.join(ARCHIVED_FILE);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_at(&path))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(io_at(&path))?;
    f.sync_all().map_err(io_at(&path))?;
    sync_dir(dir).map_err(io_at(dir))?;
    for f in &files {
        fs::remove_file(f).map_err(io_at(f))?;
    }
    for p in &partials {
        match fs::remove_dir_all(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(p)(e)),
            _ => {}
        }
    }
    for d in [
        dir.to_path_buf(),
        dir.join(INDEX_DIR),
        dir.join(TILE_DIR).join("0"),
    ] {
        if d.is_dir() {
            sync_dir(&d).map_err(io_at(&d))?;
        }
    }
    report.end = end;
    report.segments = moving.len();
    Ok(report)
}
