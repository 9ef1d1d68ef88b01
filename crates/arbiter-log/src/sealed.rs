//! Sealed segments: what lets the log keep only its newest segment in
//! memory and reopen without reading more than that.
//!
//! While a segment is written, the log keeps each record's byte offset and
//! decision id in memory (`OpenSegment`). When the log rolls to the next
//! segment, the finished one is *sealed* in the background:
//!
//! 1. its **index file** `index/<first>.idx` is written and synced: each
//!    record's frame offset, and its decision ids as a table sorted by a
//!    64-bit hash of the id (SHA-256's first eight bytes), found with a
//!    binary search of a few reads;
//! 2. the tiles filled up to the segment's end are synced;
//! 3. a **seal** is appended to `sealed.log` and synced: the segment's
//!    first record, count and data length, the range of UUIDv7 times of its
//!    decision ids, the tree's right edge at its end, the checkpoints written
//!    by then and the CRC of its index file.
//!
//! Then the segment's offsets and ids leave memory. A decision id is looked
//! up in the sealed segments whose id times cover the id's time (one or two
//! for a UUIDv7 id; every segment for an id that is not one), then in the
//! open ones; every hit is confirmed by reading the record, so a damaged
//! index can hide a record but never return a wrong one.
//!
//! At open, the segments the last seal covers are not read: the tree starts
//! from the seal's edge and tiles, and only the segments after it (the
//! unsealed tail) are scanned. Without `sealed.log`, or when it does not
//! match the segment files, every segment is scanned and sealed again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::checkpoint::sync_dir;
use crate::merkle::Hash;
use crate::segment::{self, FrameIter, Scan};
use crate::store::{LogError, io_at};
use crate::tiles::{TILE_DIR, tile_path};

/// Directory of index files under a log directory.
pub const INDEX_DIR: &str = "index";
/// The seals, one frame each.
pub const SEALED_FILE: &str = "sealed.log";

const INDEX_MAGIC: &[u8; 8] = b"ARBIDX1\n";
const INDEX_HEADER: u64 = 48;
const SEAL_VERSION: u8 = 1;

/// The path of the index file of the segment starting at `first`.
pub fn index_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(INDEX_DIR).join(format!("{first:020}.idx"))
}

/// The index file to read for the segment starting at `first`: in the log
/// directory, or in the archive it was moved to.
pub(crate) fn resolve_index(dir: &Path, first: u64) -> PathBuf {
    let live = index_path(dir, first);
    if live.is_file() {
        return live;
    }
    match crate::archive::dir_of(dir, first) {
        Some(a) => index_path(&a, first),
        None => live,
    }
}

/// The millisecond time of a UUIDv7 in hyphenated form.
pub(crate) fn uuid7_ms(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() != 36
        || [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-'))
        || b.get(14) != Some(&b'7')
    {
        return None;
    }
    let hex: String = id
        .get(0..8)?
        .chars()
        .chain(id.get(9..13)?.chars())
        .collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// What the log keeps of a decision id while its segment is open: its hash
/// and its UUIDv7 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdKey {
    pub hash: u64,
    pub ms: Option<u64>,
}

impl IdKey {
    pub fn of(id: &str) -> IdKey {
        IdKey {
            hash: id_hash(id),
            ms: uuid7_ms(id),
        }
    }
}

fn id_hash(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(b)
}

/// The UUIDv7 times of a segment's decision ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    pub min: u64,
    pub max: u64,
    /// Every id was a UUIDv7.
    pub all_uuid7: bool,
}

impl Default for Times {
    fn default() -> Self {
        Times {
            min: u64::MAX,
            max: 0,
            all_uuid7: true,
        }
    }
}

impl Times {
    fn add_time(&mut self, ms: Option<u64>) {
        match ms {
            Some(t) => {
                self.min = self.min.min(t);
                self.max = self.max.max(t);
            }
            None => self.all_uuid7 = false,
        }
    }

    /// Whether an id of time `t` (None: not a UUIDv7) may be in the segment.
    pub fn may_hold(&self, t: Option<u64>) -> bool {
        match t {
            Some(t) => !self.all_uuid7 || (self.min <= t && t <= self.max),
            None => !self.all_uuid7,
        }
    }
}

/// A segment whose records' offsets and ids are still in memory.
#[derive(Debug, Clone)]
pub(crate) struct OpenSegment {
    pub first: u64,
    /// Byte offset of each record's frame.
    pub offsets: Vec<u64>,
    /// Hash of a decision id (see [`id_hash`]) → index of the first record
    /// with that hash in this segment. Hashes, not the ids: no allocation
    /// per record; a hit is confirmed against the record read back.
    pub ids: HashMap<u64, u64>,
    /// Later records whose id hash was already in `ids` (a repeated id, or
    /// another id with the same hash): (hash, index).
    pub more: Vec<(u64, u64)>,
    pub times: Times,
}

impl OpenSegment {
    pub fn new(first: u64) -> Self {
        OpenSegment {
            first,
            offsets: Vec::new(),
            ids: HashMap::new(),
            more: Vec::new(),
            times: Times::default(),
        }
    }

    /// Adds the record at index `first + offsets.len()`.
    pub fn push(&mut self, offset: u64, id: &str) {
        self.push_hashed(offset, IdKey::of(id));
    }

    /// [`OpenSegment::push`] with the id's key computed beforehand.
    pub fn push_hashed(&mut self, offset: u64, key: IdKey) {
        let index = self.first + self.offsets.len() as u64;
        self.offsets.push(offset);
        self.times.add_time(key.ms);
        match self.ids.entry(key.hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.more.push((key.hash, index)),
        }
    }

    /// Indexes of the records that may have decision id `id`, ascending.
    pub fn candidates(&self, id: &str) -> Vec<u64> {
        let h = id_hash(id);
        let mut out: Vec<u64> = self.ids.get(&h).copied().into_iter().collect();
        out.extend(self.more.iter().filter(|m| m.0 == h).map(|m| m.1));
        out
    }

    pub fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    pub fn offset(&self, index: u64) -> Option<u64> {
        let i = usize::try_from(index.checked_sub(self.first)?).ok()?;
        self.offsets.get(i).copied()
    }

    /// Bytes held in memory (roughly).
    pub fn memory_bytes(&self) -> usize {
        self.offsets.capacity() * 8 + self.ids.capacity() * 24 + self.more.capacity() * 16
    }
}

/// A sealed segment: its offsets and ids are in its index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedSegment {
    pub first: u64,
    pub count: u64,
    pub times: Times,
}

impl SealedSegment {
    pub fn holds(&self, index: u64) -> bool {
        index >= self.first && index - self.first < self.count
    }
}

/// What `sealed.log` says about one sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seal {
    pub first: u64,
    pub count: u64,
    /// The segment's logical end (where its data stops).
    pub bytes: u64,
    /// The time of its last record.
    pub last_ts_us: i64,
    pub times: Times,
    /// Checkpoint frames in `checkpoints.log` before `cp_offset`.
    pub cp_before: u64,
    /// Offset of the latest checkpoint frame written when the segment was
    /// sealed (0: check `checkpoints.log` from its start).
    pub cp_offset: u64,
    /// CRC-32 of the index file.
    pub index_crc: u32,
    /// The tree's right edge after the segment's last record.
    pub edge: Vec<Vec<Hash>>,
}

impl Seal {
    /// Records up to the end of this segment.
    pub fn end(&self) -> u64 {
        self.first + self.count
    }

    pub fn segment(&self) -> SealedSegment {
        SealedSegment {
            first: self.first,
            count: self.count,
            times: self.times,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96 + self.edge.len() * 8192);
        b.push(SEAL_VERSION);
        for v in [
            self.first,
            self.count,
            self.bytes,
            self.last_ts_us as u64,
            self.times.min,
            self.times.max,
            self.cp_before,
            self.cp_offset,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(u8::from(self.times.all_uuid7));
        b.extend_from_slice(&self.index_crc.to_le_bytes());
        b.push(self.edge.len() as u8);
        for level in &self.edge {
            b.extend_from_slice(&(level.len() as u16).to_le_bytes());
            for h in level {
                b.extend_from_slice(h);
            }
        }
        b
    }

    fn decode(p: &[u8]) -> Option<Seal> {
        let mut r = Reader(p);
        if r.take(1)? != [SEAL_VERSION] {
            return None;
        }
        let mut v = [0u64; 8];
        for x in &mut v {
            *x = r.u64()?;
        }
        let all_uuid7 = match r.take(1)? {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        let index_crc = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let levels = *r.take(1)?.first()?;
        let mut edge = Vec::with_capacity(usize::from(levels));
        for _ in 0..levels {
            let n = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            let mut level = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                level.push(r.take(32)?.try_into().ok()?);
            }
            edge.push(level);
        }
        if !r.0.is_empty() {
            return None;
        }
        let [first, count, bytes, last_ts, min, max, cp_before, cp_offset] = v;
        Some(Seal {
            first,
            count,
            bytes,
            last_ts_us: last_ts as i64,
            times: Times {
                min,
                max,
                all_uuid7,
            },
            cp_before,
            cp_offset,
            index_crc,
            edge,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The seals of `sealed.log`, in order, as far as they are whole, follow each
/// other from record 0, and decode; `None` without the file. What follows a
/// bad frame is ignored (the seals are derived data: the segments after the
/// last good one are scanned).
pub(crate) fn read_seals(dir: &Path) -> Result<Option<Vec<Seal>>, LogError> {
    let path = dir.join(SEALED_FILE);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let mut out: Vec<Seal> = Vec::new();
    for scan in FrameIter::new(&buf) {
        let Scan::Frame { payload, .. } = scan else {
            break;
        };
        let Some(seal) = Seal::decode(payload) else {
            break;
        };
        if seal.first != out.last().map_or(0, Seal::end) || seal.count == 0 {
            break;
        }
        out.push(seal);
    }
    Ok(Some(out))
}

/// Starts `sealed.log` afresh with `seals` (when it did not match the
/// segments), synced.
pub(crate) fn rewrite_seals(dir: &Path, seals: &[Seal]) -> Result<(), LogError> {
    let path = dir.join(SEALED_FILE);
    let tmp = dir.join(format!("{SEALED_FILE}.tmp"));
    let mut buf = Vec::new();
    for s in seals {
        segment::encode_frame(&s.encode(), &mut buf);
    }
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(&buf).map_err(io_at(&tmp))?;
    f.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir).map_err(io_at(dir))
}

/// Compresses the segment (with `compress`), writes `seg`'s index file,
/// syncs the tiles filled since record `from` and up to the seal's end, and
/// appends `seal` to `sealed.log`, synced: after this returns, the segment
/// need not be read again at open. Then the uncompressed file is removed.
pub(crate) fn seal(
    dir: &Path,
    seg: &OpenSegment,
    seal: &mut Seal,
    from: u64,
    compress: bool,
) -> Result<(), LogError> {
    let blocks = if compress {
        compress_segment(dir, seg, seal.bytes)?
    } else {
        Vec::new()
    };
    seal.index_crc = write_index(dir, seg, &blocks)?;
    sync_tiles(dir, from, seal.end())?;
    let path = dir.join(SEALED_FILE);
    let mut frame = Vec::new();
    segment::encode_frame(&seal.encode(), &mut frame);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_at(&path))?;
    f.write_all(&frame).map_err(io_at(&path))?;
    f.sync_data().map_err(io_at(&path))?;
    if compress {
        let plain = dir.join(segment::segment_name(seg.first));
        match fs::remove_file(&plain) {
            Ok(()) => sync_dir(dir).map_err(io_at(dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&plain)(e)),
        }
    }
    Ok(())
}

/// Uncompressed bytes per compressed block (a block ends at the first record
/// frame boundary at or past this).
const BLOCK_BYTES: u64 = 64 << 10;
/// zstd level: fast enough for the sealer to keep up with the writer.
const ZSTD_LEVEL: i32 = 3;

/// Writes `seg-<first>.log.zst` (temporary name, synced, renamed) from the
/// segment's data up to `bytes`: independent zstd frames of whole record
/// frames. Returns each block's (uncompressed start, compressed start).
/// Reads and writes one block at a time, so that sealing holds little
/// memory.
fn compress_segment(
    dir: &Path,
    seg: &OpenSegment,
    bytes: u64,
) -> Result<Vec<(u64, u64)>, LogError> {
    let src = dir.join(segment::segment_name(seg.first));
    let mut input = segment::open_segment(&src).map_err(io_at(&src))?;
    let dst = dir.join(segment::compressed_segment_name(seg.first));
    let tmp = dir.join(format!(
        "{}.tmp",
        segment::compressed_segment_name(seg.first)
    ));
    let mut out = io::BufWriter::new(File::create(&tmp).map_err(io_at(&tmp))?);
    let mut written = 0u64;
    let mut blocks = Vec::new();
    let mut block = Vec::with_capacity(BLOCK_BYTES as usize * 2);
    let mut start = 0u64;
    let mut cut = seg.offsets.iter().copied().chain([bytes]).peekable();
    while start < bytes {
        // The first frame boundary at or past start + BLOCK_BYTES.
        let mut stop = bytes;
        while let Some(&o) = cut.peek() {
            if o > start && o >= start + BLOCK_BYTES {
                stop = o;
                break;
            }
            cut.next();
        }
        block.clear();
        let got = (&mut input)
            .take(stop - start)
            .read_to_end(&mut block)
            .map_err(io_at(&src))?;
        if got as u64 != stop - start {
            return Err(LogError::Corrupt {
                segment: src.clone(),
                offset: start + got as u64,
                index: seg.first,
                reason: "the segment is shorter than its records".to_string(),
            });
        }
        blocks.push((start, written));
        let z = zstd::bulk::compress(&block, ZSTD_LEVEL).map_err(io_at(&tmp))?;
        out.write_all(&z).map_err(io_at(&tmp))?;
        written += z.len() as u64;
        start = stop;
    }
    let f = out.into_inner().map_err(|e| io_at(&tmp)(e.into_error()))?;
    f.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, &dst).map_err(io_at(&dst))?;
    sync_dir(dir).map_err(io_at(dir))?;
    Ok(blocks)
}

/// Reads the record frame at uncompressed `offset` of the compressed segment
/// `path` (`seg-<first>.log.zst` in the log directory): the block holding it
/// is found in the segment's index file, read and decompressed. Returns the
/// payload.
pub(crate) fn compressed_frame(path: &Path, offset: u64) -> Result<Vec<u8>, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        index: 0,
        reason,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let first = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(segment::parse_segment_name)
        .ok_or_else(|| corrupt("not a segment file name".to_string()))?;
    let idx = Index::open_unchecked(dir, first)?;
    let (ustart, uend, cstart, cend) = idx.block_of(offset)?;
    let file = File::open(path).map_err(io_at(path))?;
    let cend = match cend {
        Some(c) => c,
        None => file.metadata().map_err(io_at(path))?.len(),
    };
    let len = cend
        .checked_sub(cstart)
        .filter(|l| *l <= (1 << 30))
        .ok_or_else(|| corrupt("the index file's block table is damaged".to_string()))?;
    let mut z = vec![0u8; len as usize];
    file.read_exact_at(&mut z, cstart).map_err(io_at(path))?;
    let cap = usize::try_from(uend.saturating_sub(ustart))
        .unwrap_or(usize::MAX)
        .min(1 << 30);
    let block = zstd::bulk::decompress(&z, cap)
        .map_err(|e| corrupt(format!("the block does not decompress: {e}")))?;
    let at = usize::try_from(offset - ustart).unwrap_or(usize::MAX);
    let (payload, _) = segment::parse_frame(&block, at).map_err(|e| corrupt(e.to_string()))?;
    Ok(payload.to_vec())
}

/// Syncs the full tiles that records `from..to` filled, and their
/// directories.
fn sync_tiles(dir: &Path, from: u64, to: u64) -> Result<(), LogError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut level = 0u8;
    loop {
        let shift = 8 * (u32::from(level) + 1);
        if shift >= 64 {
            break;
        }
        let (a, b) = (from >> shift, to >> shift);
        if b == 0 {
            break;
        }
        for n in a..b {
            let path = tile_path(dir, level, n);
            let f = File::open(&path).map_err(io_at(&path))?;
            f.sync_all().map_err(io_at(&path))?;
            if let Some(p) = path.parent()
                && !dirs.iter().any(|d| d == p)
            {
                dirs.push(p.to_path_buf());
            }
        }
        level += 1;
    }
    // New directories up to `tile/` itself.
    let top = dir.join(TILE_DIR);
    let mut parents: Vec<PathBuf> = Vec::new();
    for d in &dirs {
        let mut p = d.clone();
        while p.starts_with(&top) {
            if !parents.contains(&p) {
                parents.push(p.clone());
            }
            if !p.pop() {
                break;
            }
        }
    }
    for d in &parents {
        sync_dir(d).map_err(io_at(d))?;
    }
    if !parents.is_empty() {
        sync_dir(dir).map_err(io_at(dir))?;
    }
    Ok(())
}

/// Writes the index file of `seg` (temporary name, synced, renamed); returns
/// its CRC-32.
fn write_index(dir: &Path, seg: &OpenSegment, blocks: &[(u64, u64)]) -> Result<u32, LogError> {
    let idx_dir = dir.join(INDEX_DIR);
    fs::create_dir_all(&idx_dir).map_err(io_at(&idx_dir))?;
    let path = index_path(dir, seg.first);
    let count = seg.count();
    let mut b = Vec::with_capacity(INDEX_HEADER as usize + seg.offsets.len() * 24 + 4);
    b.extend_from_slice(INDEX_MAGIC);
    for v in [
        seg.first,
        count,
        (seg.ids.len() + seg.more.len()) as u64,
        blocks.len() as u64,
        0,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for o in &seg.offsets {
        b.extend_from_slice(&o.to_le_bytes());
    }
    let mut table: Vec<(u64, u64)> = seg
        .ids
        .iter()
        .map(|(h, index)| (*h, *index))
        .chain(seg.more.iter().copied())
        .map(|(h, index)| (h, index - seg.first))
        .collect();
    table.sort_unstable();
    for (h, local) in table {
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&local.to_le_bytes());
    }
    for (u, c) in blocks {
        b.extend_from_slice(&u.to_le_bytes());
        b.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("idx.tmp");
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(&b).map_err(io_at(&tmp))?;
    f.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(&idx_dir).map_err(io_at(&idx_dir))?;
    Ok(crc)
}

/// An index file opened for lookups.
struct Index {
    file: File,
    path: PathBuf,
    count: u64,
    ids: u64,
    blocks: u64,
}

impl Index {
    fn open(dir: &Path, seg: &SealedSegment) -> Result<Index, LogError> {
        let idx = Index::open_unchecked(dir, seg.first)?;
        if idx.count != seg.count {
            return Err(LogError::Corrupt {
                segment: idx.path,
                offset: 0,
                index: seg.first,
                reason: "the index file does not describe its sealed segment".to_string(),
            });
        }
        Ok(idx)
    }

    /// The index file of the segment starting at `seg_first`, checked for
    /// its form (not against a seal).
    fn open_unchecked(dir: &Path, seg_first: u64) -> Result<Index, LogError> {
        let path = resolve_index(dir, seg_first);
        let file = File::open(&path).map_err(io_at(&path))?;
        let mut h = [0u8; INDEX_HEADER as usize];
        file.read_exact_at(&mut h, 0).map_err(io_at(&path))?;
        let word = |i: usize| {
            h.get(8 + 8 * i..16 + 8 * i)
                .and_then(|w| w.try_into().ok())
                .map_or(u64::MAX, u64::from_le_bytes)
        };
        let (first, count, ids, blocks) = (word(0), word(1), word(2), word(3));
        let len = file.metadata().map_err(io_at(&path))?.len();
        let expect = INDEX_HEADER
            .checked_add(count.saturating_mul(8))
            .and_then(|v| v.checked_add(ids.saturating_mul(16)))
            .and_then(|v| v.checked_add(blocks.saturating_mul(16)))
            .and_then(|v| v.checked_add(4));
        if h.get(..8) != Some(INDEX_MAGIC.as_slice())
            || first != seg_first
            || ids != count
            || blocks > count
            || expect != Some(len)
        {
            return Err(LogError::Corrupt {
                segment: path,
                offset: 0,
                index: seg_first,
                reason: "the index file does not describe its sealed segment".to_string(),
            });
        }
        Ok(Index {
            file,
            path,
            count,
            ids,
            blocks,
        })
    }

    /// The compressed block holding uncompressed `offset`: its uncompressed
    /// start and end, and its compressed start and end (None: the file's).
    fn block_of(&self, offset: u64) -> Result<(u64, u64, u64, Option<u64>), LogError> {
        let table = INDEX_HEADER + 8 * self.count + 16 * self.ids;
        let entry = |i: u64| -> Result<(u64, u64), LogError> {
            Ok((self.word(table + 16 * i)?, self.word(table + 16 * i + 8)?))
        };
        // The last block starting at or before `offset`.
        let (mut lo, mut hi) = (0u64, self.blocks);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry(mid)?.0 <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(i) = lo.checked_sub(1) else {
            return Err(LogError::Corrupt {
                segment: self.path.clone(),
                offset,
                index: 0,
                reason: "no compressed block holds this offset".to_string(),
            });
        };
        let (ustart, cstart) = entry(i)?;
        let (uend, cend) = if i + 1 < self.blocks {
            let (u, c) = entry(i + 1)?;
            (u, Some(c))
        } else {
            (u64::MAX, None)
        };
        Ok((ustart, uend, cstart, cend))
    }

    fn word(&self, at: u64) -> Result<u64, LogError> {
        let mut w = [0u8; 8];
        self.file
            .read_exact_at(&mut w, at)
            .map_err(io_at(&self.path))?;
        Ok(u64::from_le_bytes(w))
    }

    fn offset(&self, local: u64) -> Result<u64, LogError> {
        self.word(INDEX_HEADER + 8 * local)
    }

    /// Local indexes whose id hashes to `h`, ascending.
    fn find(&self, h: u64) -> Result<Vec<u64>, LogError> {
        let table = INDEX_HEADER + 8 * self.count;
        let (mut lo, mut hi) = (0u64, self.ids);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.word(table + 16 * mid)? < h {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        while lo < self.ids && self.word(table + 16 * lo)? == h {
            let local = self.word(table + 16 * lo + 8)?;
            if local < self.count {
                out.push(local);
            }
            lo += 1;
        }
        Ok(out)
    }
}

/// The frame offset of record `index` of a sealed segment.
pub(crate) fn sealed_offset(dir: &Path, seg: &SealedSegment, index: u64) -> Result<u64, LogError> {
    Index::open(dir, seg)?.offset(index - seg.first)
}

/// Indexes of the records of a sealed segment whose decision id may be `id`
/// (same hash), ascending: to be confirmed by reading them.
pub(crate) fn sealed_candidates(
    dir: &Path,
    seg: &SealedSegment,
    id: &str,
) -> Result<Vec<(u64, u64)>, LogError> {
    let idx = Index::open(dir, seg)?;
    idx.find(id_hash(id))?
        .into_iter()
        .map(|local| Ok((seg.first + local, idx.offset(local)?)))
        .collect()
}

/// Checks an index file against its seal (for `verify`): it exists, its CRC
/// matches, and it describes the segment.
pub(crate) fn check_index(dir: &Path, seal: &Seal) -> Result<(), String> {
    let path = resolve_index(dir, seal.first);
    let b = fs::read(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let (body, crc) = b
        .split_last_chunk::<4>()
        .ok_or_else(|| format!("`{}` is too short", path.display()))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) || crc32fast::hash(body) != seal.index_crc
    {
        return Err(format!(
            "`{}` does not match its checksum or its seal",
            path.display()
        ));
    }
    Index::open(dir, &seal.segment()).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn uuid7_times_are_read_and_other_ids_are_not() {
        assert_eq!(
            uuid7_ms("01900000-0001-7000-8000-000000000001"),
            Some(0x0190_0000_0001)
        );
        assert_eq!(uuid7_ms("01900000-0001-4000-8000-000000000001"), None);
        assert_eq!(uuid7_ms("apr_123"), None);
        assert_eq!(uuid7_ms("01900000-0001-7000-8000-00000000000"), None);
    }

    #[test]
    fn an_index_finds_its_ids_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = OpenSegment::new(1000);
        for i in 0..5000u64 {
            seg.push(
                i * 300,
                &format!("0190{:04x}-0000-7000-8000-{:012}", i % 7, i),
            );
        }
        seg.push(5000 * 300, "not-a-uuid");
        seg.push(5001 * 300, "0190000a-0000-7000-8000-000000000003");
        let mut s = Seal {
            first: 1000,
            count: seg.count(),
            bytes: 0,
            last_ts_us: 0,
            times: seg.times,
            cp_before: 0,
            cp_offset: 0,
            index_crc: 0,
            edge: vec![vec![[7; 32]; 3]],
        };
        let end = s.end();
        seal(dir.path(), &seg, &mut s, end, false).unwrap();
        let seals = read_seals(dir.path()).unwrap().unwrap();
        // Seals must start at record 0: this one is not kept.
        assert!(seals.is_empty());
        rewrite_seals(dir.path(), &[]).unwrap();
        check_index(dir.path(), &s).unwrap();
        let sealed = s.segment();
        assert!(!sealed.times.all_uuid7);
        let id = format!("0190{:04x}-0000-7000-8000-{:012}", 4321 % 7, 4321);
        let found = sealed_candidates(dir.path(), &sealed, &id).unwrap();
        assert_eq!(found, vec![(1000 + 4321, 4321 * 300)]);
        assert!(
            sealed_candidates(dir.path(), &sealed, "nope")
                .unwrap()
                .is_empty()
        );
        assert_eq!(sealed_offset(dir.path(), &sealed, 1002).unwrap(), 600);
        // A damaged index is refused by the check.
        let p = index_path(dir.path(), 1000);
        let mut b = fs::read(&p).unwrap();
        b[100] ^= 1;
        fs::write(&p, &b).unwrap();
        assert!(check_index(dir.path(), &s).is_err());
    }

    #[test]
    fn seals_round_trip_and_a_torn_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |first, count| Seal {
            first,
            count,
            bytes: 77,
            last_ts_us: 5,
            times: Times::default(),
            cp_before: 2,
            cp_offset: 300,
            index_crc: 9,
            edge: vec![vec![[1; 32]; 5], vec![], vec![[2; 32]]],
        };
        let seals = vec![mk(0, 10), mk(10, 5)];
        rewrite_seals(dir.path(), &seals).unwrap();
        assert_eq!(read_seals(dir.path()).unwrap().unwrap(), seals);
        let p = dir.path().join(SEALED_FILE);
        let mut b = fs::read(&p).unwrap();
        b.truncate(b.len() - 3);
        fs::write(&p, &b).unwrap();
        assert_eq!(read_seals(dir.path()).unwrap().unwrap(), seals[..1]);
    }
}
