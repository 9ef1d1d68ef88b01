//! The log's Merkle tree, kept on disk as tiles so that its memory does not
//! grow with the log.
//!
//! The layout follows C2SP tlog-tiles: a tile holds 256 consecutive hashes
//! of one tree level. Tiles of *tile level* `L` hold hashes of tree level
//! `8·L` (level 0: the leaf hashes; level 1: roots of 256-leaf subtrees; …),
//! so the tile `L/N` covers leaves `[N·256^(L+1), (N+1)·256^(L+1))`. A full
//! tile is written to `tile/<L>/<N>` (N in three-digit groups, `x`-prefixed
//! but the last: tile 1234067 is `tile/0/x001/x234/067`) as its 256 hashes,
//! 8 KiB, once it fills, and never changes after.
//!
//! In memory the tree keeps only its right edge: the hashes of each level's
//! partial tile (fewer than 256 per level, so a few kilobytes at any size),
//! and a bounded cache of full tiles read back, each expanded to all nine
//! levels of its subtree so that a proof step inside it is a lookup.
//!
//! A full tile read from disk is checked before use: the root of its 256
//! hashes must equal the hash one tile level up that covers it (itself
//! checked the same way, up to the in-memory edge). A damaged or replaced
//! tile file is an error naming the file, never a wrong proof.
//!
//! For signed checkpoints the writer also puts the edge at their size on
//! disk as C2SP *partial tiles*, `tile/<L>/<N>.p/<W>` ([`partial_tile_path`],
//! [`TiledTree::partial_tiles`]), so that a tile client can check such a
//! checkpoint from the tile directory alone; for which checkpoints, and when
//! they are removed and repaired, see `partial.rs`. The tree never reads
//! them back.
//!
//! Entry bundles (`tile/entries/<N>`: the records themselves, 256 to a
//! file) are not written. The records are in the segments, sealed ones
//! zstd-compressed (82 bytes a record in the 10 M-record benchmark, against
//! a target of at most a third of the former ~700), and bundles would store
//! every record a second time — uncompressed as C2SP has them (compression
//! is left to HTTP), about ten times what the segments take. A record can
//! also be longer than a bundle's 16-bit length prefix allows (frames go to
//! 16 MiB). Records are read through the log (`Log::get`, `read_records`,
//! the `arbiter log` commands); a server that wants to serve bundles can
//! build one from the 256 records of a level-0 tile when asked.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::merkle::{Hash, ProofError, Subtrees, node_hash};
use crate::store::LogError;

/// Hashes per tile (C2SP tlog-tiles).
pub const TILE_WIDTH: usize = 256;
/// Tree levels per tile level.
const TILE_HEIGHT: u32 = 8;
/// Bytes of a full tile file.
pub const TILE_BYTES: usize = TILE_WIDTH * 32;
/// The directory of tiles under a log directory.
pub const TILE_DIR: &str = "tile";
/// Full tiles kept in memory (expanded: 511 hashes, 16 KiB each).
const CACHED_TILES: usize = 128;

/// The path of tile `level`/`index` under `dir` (the log directory), as
/// C2SP tlog-tiles spells it.
pub fn tile_path(dir: &Path, level: u8, index: u64) -> PathBuf {
    let mut p = dir.join(TILE_DIR).join(level.to_string());
    let digits = index.to_string();
    // Groups of three from the right; all but the last get an `x`.
    let pad = (3 - digits.len() % 3) % 3;
    let padded = format!("{}{digits}", "0".repeat(pad));
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap_or("000"))
        .collect();
    let last = groups.len() - 1;
    for (i, g) in groups.iter().enumerate() {
        if i == last {
            p.push(g);
        } else {
            p.push(format!("x{g}"));
        }
    }
    p
}

/// The path of the partial tile `level`/`index` of `width` hashes (1 to
/// 255) under `dir`: the full tile's path with `.p/<width>` after it
/// (`tile/0/x001/x234/067.p/5`), as C2SP tlog-tiles spells it.
pub fn partial_tile_path(dir: &Path, level: u8, index: u64, width: u8) -> PathBuf {
    partial_dir(dir, level, index).join(width.to_string())
}

/// The directory of tile `level`/`index`'s partial tiles: `<tile path>.p`.
pub(crate) fn partial_dir(dir: &Path, level: u8, index: u64) -> PathBuf {
    let mut p = tile_path(dir, level, index).into_os_string();
    p.push(".p");
    PathBuf::from(p)
}

/// A partial tile: the first `hashes.len()` (1 to 255) hashes of tile
/// `level`/`index`, the rightmost tile of its level for some tree size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialTile {
    /// Tile level.
    pub level: u8,
    /// Tile index within the level.
    pub index: u64,
    /// The hashes, in order.
    pub hashes: Vec<Hash>,
}

impl PartialTile {
    /// Its width, 1 to 255.
    pub fn width(&self) -> u8 {
        u8::try_from(self.hashes.len()).unwrap_or(u8::MAX)
    }

    /// Its file contents: the hashes, 32 bytes each, no header.
    pub fn bytes(&self) -> Vec<u8> {
        self.hashes.concat()
    }
}

/// A full tile expanded to every level of its 256-leaf subtree: 256 hashes,
/// then their 128 parents, …, then the tile's root (511 in all).
#[derive(Debug)]
pub(crate) struct Tile {
    nodes: Vec<Hash>,
}

impl Tile {
    fn expand(hashes: Vec<Hash>) -> Tile {
        debug_assert_eq!(hashes.len(), TILE_WIDTH);
        let mut nodes = hashes;
        nodes.reserve(TILE_WIDTH - 1);
        let mut from = 0;
        let mut width = TILE_WIDTH;
        while width > 1 {
            for i in 0..width / 2 {
                let parent = node_hash(&nodes[from + 2 * i], &nodes[from + 2 * i + 1]);
                nodes.push(parent);
            }
            from += width;
            width /= 2;
        }
        Tile { nodes }
    }

    /// The node `index` at `height` (0 to 8) inside the tile.
    fn node(&self, height: u32, index: usize) -> Option<Hash> {
        let start = 2 * TILE_WIDTH - ((2 * TILE_WIDTH) >> height);
        self.nodes.get(start + index).copied()
    }

    fn root(&self) -> Hash {
        self.nodes.last().copied().unwrap_or([0; 32])
    }

    fn leaves(&self) -> &[Hash] {
        self.nodes.get(..TILE_WIDTH).unwrap_or_default()
    }
}

/// The hash of `hashes` (a power of two of them) as one subtree.
fn subtree_of(hashes: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [l, r] => node_hash(l, r),
                [one] => *one,
                _ => [0; 32],
            })
            .collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

/// Where full tiles go: files under the log directory, or (for a reader
/// next to a live writer, which must not write) memory.
#[derive(Debug)]
enum Sink {
    Files,
    Memory(HashMap<(u8, u64), Arc<Tile>>),
}

/// A bounded cache of expanded tiles, least recently used out first.
#[derive(Debug, Default)]
struct Cache {
    tiles: HashMap<(u8, u64), (Arc<Tile>, u64)>,
    tick: u64,
}

impl Cache {
    fn get(&mut self, key: (u8, u64)) -> Option<Arc<Tile>> {
        self.tick += 1;
        let tick = self.tick;
        self.tiles.get_mut(&key).map(|(t, used)| {
            *used = tick;
            t.clone()
        })
    }

    fn put(&mut self, key: (u8, u64), tile: Arc<Tile>) {
        if self.tiles.len() >= CACHED_TILES
            && let Some(old) = self
                .tiles
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            self.tiles.remove(&old);
        }
        self.tick += 1;
        self.tiles.insert(key, (tile, self.tick));
    }
}

/// The log's Merkle tree: tiles on disk, the right edge in memory.
#[derive(Debug)]
pub struct TiledTree {
    dir: PathBuf,
    size: u64,
    // INVARIANT: edge[L] holds the hashes of tile level L's partial tile:
    // exactly (size >> 8L) % 256 of them; every full tile of level L has
    // been handed to `sink` and its root pushed to edge[L + 1].
    edge: Vec<Vec<Hash>>,
    sink: Sink,
    cache: Mutex<Cache>,
    /// Tile directories known to exist (saves a `create_dir_all` per tile).
    made: Vec<PathBuf>,
    /// Archive directories, where level-0 tiles of archived records went.
    archives: Vec<PathBuf>,
}

/// Tile writes that [`TiledTree::push`] made, for the log to sync later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrote(pub u8, pub u64);

impl TiledTree {
    /// An empty tree whose full tiles go under `dir` (the log directory).
    pub fn new(dir: &Path) -> Self {
        Self::with_edge(dir, 0, Vec::new(), true)
    }

    /// A tree of `size` leaves whose full tiles are already under `dir`,
    /// with this right edge (as [`TiledTree::edge`] gave it). With
    /// `persist` false, tiles filled from now on stay in memory.
    pub(crate) fn with_edge(dir: &Path, size: u64, edge: Vec<Vec<Hash>>, persist: bool) -> Self {
        TiledTree {
            dir: dir.to_path_buf(),
            size,
            edge,
            sink: if persist {
                Sink::Files
            } else {
                Sink::Memory(HashMap::new())
            },
            cache: Mutex::new(Cache::default()),
            made: Vec::new(),
            archives: crate::archive::dirs(dir),
        }
    }

    /// Whether `edge` is a right edge for a tree of `size` leaves.
    pub(crate) fn edge_fits(size: u64, edge: &[Vec<Hash>]) -> bool {
        let mut level = 0u32;
        let mut n = size;
        loop {
            let want = (n % TILE_WIDTH as u64) as usize;
            let have = edge.get(level as usize).map_or(0, Vec::len);
            if have != want {
                return false;
            }
            n >>= TILE_HEIGHT;
            level += 1;
            if n == 0 {
                return edge.iter().skip(level as usize).all(Vec::is_empty);
            }
        }
    }

    /// The right edge: each tile level's partial tile.
    pub(crate) fn edge(&self) -> &[Vec<Hash>] {
        &self.edge
    }

    /// The partial tiles of the tree at `size` (at most [`TiledTree::size`])
    /// that are still partial now: at each tile level where `size` leaves a
    /// partial tile (its width, `(size >> 8·L) mod 256`, is not 0), the
    /// first hashes of the level's current right edge. A level whose tile at
    /// `size` has filled since is left out: its full tile stands for it.
    pub fn partial_tiles(&self, size: u64) -> Vec<PartialTile> {
        let mut out = Vec::new();
        if size > self.size {
            return out;
        }
        let mut level = 0u32;
        while level * TILE_HEIGHT < 64 && (size >> (level * TILE_HEIGHT)) > 0 {
            let shift = level * TILE_HEIGHT;
            let width = ((size >> shift) % TILE_WIDTH as u64) as usize;
            let index = (size >> shift) / TILE_WIDTH as u64;
            let current = (self.size >> shift) / TILE_WIDTH as u64;
            if width > 0
                && index == current
                && let (Ok(l), Some(hashes)) = (
                    u8::try_from(level),
                    self.edge.get(level as usize).and_then(|e| e.get(..width)),
                )
            {
                out.push(PartialTile {
                    level: l,
                    index,
                    hashes: hashes.to_vec(),
                });
            }
            level += 1;
        }
        out
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory by the edge and the tile cache (what the tree
    /// costs at any size).
    pub fn memory_bytes(&self) -> usize {
        let edge: usize = self.edge.iter().map(|l| l.capacity() * 32).sum();
        let cached = self
            .cache
            .lock()
            .map_or(0, |c| c.tiles.len() * (2 * TILE_WIDTH - 1) * 32);
        let pending = match &self.sink {
            Sink::Files => 0,
            Sink::Memory(m) => m.len() * (2 * TILE_WIDTH - 1) * 32,
        };
        edge + cached + pending
    }

    /// Appends a leaf hash; returns its index and the tiles it filled (each
    /// written to its file, not yet synced).
    pub(crate) fn push(&mut self, leaf: Hash) -> Result<(u64, Vec<Wrote>), LogError> {
        let index = self.size;
        let new_size = index + 1;
        // The carry first, then the writes, then the state: a failed write
        // leaves the tree as it was.
        let mut carry = leaf;
        let mut filled: Vec<(u8, u64, Tile)> = Vec::new();
        let mut level = 0usize;
        loop {
            let have = self.edge.get(level).map_or(0, Vec::len);
            if have + 1 < TILE_WIDTH {
                break;
            }
            let mut hashes = self.edge.get(level).cloned().unwrap_or_default();
            hashes.push(carry);
            let tile = Tile::expand(hashes);
            carry = tile.root();
            let n = (new_size >> (TILE_HEIGHT * (level as u32 + 1))) - 1;
            filled.push((level as u8, n, tile));
            level += 1;
        }
        let mut wrote = Vec::with_capacity(filled.len());
        for (l, n, tile) in &filled {
            if let Sink::Files = self.sink {
                self.write_tile(*l, *n, tile)?;
            }
            wrote.push(Wrote(*l, *n));
        }
        for (l, n, tile) in filled {
            if let Some(e) = self.edge.get_mut(l as usize) {
                e.clear();
            }
            let tile = Arc::new(tile);
            match &mut self.sink {
                Sink::Memory(m) => {
                    m.insert((l, n), tile);
                }
                Sink::Files => {
                    if let Ok(mut c) = self.cache.lock() {
                        c.put((l, n), tile);
                    }
                }
            }
        }
        while self.edge.len() <= level {
            self.edge.push(Vec::with_capacity(TILE_WIDTH));
        }
        if let Some(e) = self.edge.get_mut(level) {
            e.push(carry);
        }
        self.size = new_size;
        Ok((index, wrote))
    }

    fn write_tile(&mut self, level: u8, index: u64, tile: &Tile) -> Result<(), LogError> {
        let path = tile_path(&self.dir, level, index);
        let io_err = |source: io::Error| LogError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent()
            && !self.made.iter().any(|m| m == parent)
        {
            fs::create_dir_all(parent).map_err(io_err)?;
            if self.made.len() >= 16 {
                self.made.remove(0);
            }
            self.made.push(parent.to_path_buf());
        }
        let mut bytes = Vec::with_capacity(TILE_BYTES);
        for h in tile.leaves() {
            bytes.extend_from_slice(h);
        }
        fs::write(&path, &bytes).map_err(io_err)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, LogError> {
        if index >= self.size {
            return Err(ProofError::IndexOutOfRange {
                index,
                size: self.size,
            }
            .into());
        }
        self.subtree(0, index)
    }

    /// Root for the current size.
    pub fn root(&self) -> Result<Hash, LogError> {
        crate::merkle::root_at(self, self.size)
    }

    /// Root of the tree as it was at `size`.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        crate::merkle::root_at(self, size)
    }

    /// Audit path for leaf `index` in the tree of size `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        crate::merkle::inclusion_proof(self, index, size)
    }

    /// Consistency proof between `old_size` and `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, LogError> {
        crate::merkle::consistency_proof(self, old_size, new_size)
    }

    /// Full tile `level`/`index` (one that has filled), checked against the
    /// hash that covers it one tile level up.
    fn full_tile(&self, level: u8, index: u64) -> Result<Arc<Tile>, LogError> {
        if let Sink::Memory(m) = &self.sink
            && let Some(t) = m.get(&(level, index))
        {
            return Ok(t.clone());
        }
        if let Some(t) = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get((level, index)))
        {
            return Ok(t);
        }
        let mut path = tile_path(&self.dir, level, index);
        let mut read = fs::read(&path);
        if let Err(e) = &read
            && e.kind() == io::ErrorKind::NotFound
            && let Some(p) = self
                .archives
                .iter()
                .map(|a| tile_path(a, level, index))
                .find(|p| p.is_file())
        {
            read = fs::read(&p);
            path = p;
        }
        let bytes = read.map_err(|source| LogError::Io {
            path: path.clone(),
            source,
        })?;
        let corrupt = |reason: String| LogError::Corrupt {
            segment: path.clone(),
            offset: 0,
            index: index << (TILE_HEIGHT * (u32::from(level) + 1)),
            reason,
        };
        if bytes.len() != TILE_BYTES {
            return Err(corrupt(format!(
                "a full tile holds {TILE_BYTES} bytes, this one {}",
                bytes.len()
            )));
        }
        let hashes: Vec<Hash> = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let tile = Tile::expand(hashes);
        let want = self.subtree(TILE_HEIGHT * (u32::from(level) + 1), index)?;
        if tile.root() != want {
            return Err(corrupt(
                "the tile's hashes do not match the tree above them (the file was damaged or replaced)"
                    .to_string(),
            ));
        }
        let tile = Arc::new(tile);
        if let Ok(mut c) = self.cache.lock() {
            c.put((level, index), tile.clone());
        }
        Ok(tile)
    }
}

impl Subtrees for TiledTree {
    type Error = LogError;

    fn size(&self) -> u64 {
        self.size
    }

    fn subtree(&self, height: u32, index: u64) -> Result<Hash, LogError> {
        let out_of_range = || {
            LogError::from(ProofError::SizeOutOfRange {
                requested: index.saturating_add(1).saturating_mul(1 << height.min(63)),
                available: self.size,
            })
        };
        if height >= 64 || (index.checked_add(1).ok_or_else(out_of_range)? << height) > self.size {
            return Err(out_of_range());
        }
        let level = height / TILE_HEIGHT;
        let r = height % TILE_HEIGHT;
        // The subtree's first hash at tree level 8·level, its tile and
        // position in it.
        let first = index << r;
        let tile = first / TILE_WIDTH as u64;
        let at = (first % TILE_WIDTH as u64) as usize;
        let entries = self.size >> (TILE_HEIGHT * level);
        let full = entries / TILE_WIDTH as u64;
        let l = u8::try_from(level).map_err(|_| out_of_range())?;
        if tile < full {
            let t = self.full_tile(l, tile)?;
            return t.node(r, at >> r).ok_or_else(out_of_range);
        }
        let edge = self
            .edge
            .get(level as usize)
            .and_then(|e| e.get(at..at + (1 << r)))
            .ok_or_else(out_of_range)?;
        Ok(subtree_of(edge))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::merkle::{MerkleTree, leaf_hash};

    #[test]
    fn tile_paths_follow_c2sp() {
        let d = Path::new("/l");
        assert_eq!(tile_path(d, 0, 5), Path::new("/l/tile/0/005"));
        assert_eq!(tile_path(d, 1, 999), Path::new("/l/tile/1/999"));
        assert_eq!(tile_path(d, 0, 1000), Path::new("/l/tile/0/x001/000"));
        assert_eq!(
            tile_path(d, 2, 1_234_067),
            Path::new("/l/tile/2/x001/x234/067")
        );
    }

    #[test]
    fn partial_tile_paths_follow_c2sp() {
        let d = Path::new("/l");
        assert_eq!(
            partial_tile_path(d, 0, 1_234_067, 5),
            Path::new("/l/tile/0/x001/x234/067.p/5")
        );
        assert_eq!(
            partial_tile_path(d, 2, 0, 255),
            Path::new("/l/tile/2/000.p/255")
        );
    }

    #[test]
    fn partial_tiles_are_the_edge_at_each_level_still_partial() {
        let dir = tempfile::tempdir().unwrap();
        let mut tiled = TiledTree::new(dir.path());
        let mut mem = MerkleTree::new();
        let n: u64 = 70_000;
        for i in 0..n {
            let leaf = leaf_hash(&i.to_le_bytes());
            tiled.push(leaf).unwrap();
            mem.push(leaf);
        }
        // The specification's example: 70 000 leaves leave partial tiles of
        // widths 112, 17 and 1 at levels 0, 1 and 2.
        let p = tiled.partial_tiles(n);
        let shape: Vec<(u8, u64, u8)> = p.iter().map(|t| (t.level, t.index, t.width())).collect();
        assert_eq!(shape, [(0, 273, 112), (1, 1, 17), (2, 0, 1)]);
        for (i, h) in p[0].hashes.iter().enumerate() {
            assert_eq!(*h, mem.leaf(273 * 256 + i as u64).unwrap());
        }
        assert_eq!(p[2].hashes[0], mem.root_at(65_536).unwrap());
        // An older size: only the levels whose tile has not filled since.
        let shape: Vec<(u8, u64, u8)> = tiled
            .partial_tiles(69_990)
            .iter()
            .map(|t| (t.level, t.index, t.width()))
            .collect();
        assert_eq!(shape, [(0, 273, 102), (1, 1, 17), (2, 0, 1)]);
        let shape: Vec<(u8, u64, u8)> = tiled
            .partial_tiles(65_539)
            .iter()
            .map(|t| (t.level, t.index, t.width()))
            .collect();
        assert_eq!(shape, [(2, 0, 1)]);
        assert!(tiled.partial_tiles(n + 1).is_empty());
        assert!(tiled.partial_tiles(0).is_empty());
    }

    #[test]
    fn a_tiled_tree_gives_the_roots_and_proofs_of_the_tree_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut tiled = TiledTree::new(dir.path());
        let mut mem = MerkleTree::new();
        let n: u64 = 256 * 256 + 3 * 256 + 17;
        for i in 0..n {
            let leaf = leaf_hash(&i.to_le_bytes());
            tiled.push(leaf).unwrap();
            mem.push(leaf);
            assert!(TiledTree::edge_fits(tiled.size(), tiled.edge()), "{i}");
        }
        assert_eq!(tiled.root().unwrap(), mem.root());
        for size in [1, 2, 255, 256, 257, 65535, 65536, 65537, n] {
            assert_eq!(tiled.root_at(size).unwrap(), mem.root_at(size).unwrap());
            for index in [0, size / 2, size - 1] {
                assert_eq!(
                    tiled.inclusion_proof(index, size).unwrap(),
                    mem.inclusion_proof(index, size).unwrap(),
                    "{index} {size}"
                );
            }
            for old in [1, size / 3, size - 1] {
                assert_eq!(
                    tiled.consistency_proof(old, size).unwrap(),
                    mem.consistency_proof(old, size).unwrap()
                );
            }
        }
        assert_eq!(tiled.leaf(60000).unwrap(), mem.leaf(60000).unwrap());
        assert!(tiled.leaf(n).is_err());
        assert!(tiled.root_at(n + 1).is_err());
        // Reopened from its edge, with a cold cache, it reads the same.
        let again = TiledTree::with_edge(dir.path(), n, tiled.edge().to_vec(), true);
        assert_eq!(
            again.inclusion_proof(12345, n).unwrap(),
            mem.inclusion_proof(12345, n).unwrap()
        );
        assert!(tiled.memory_bytes() < 4 << 20);
    }

    #[test]
    fn a_damaged_tile_is_an_error_naming_it_not_a_wrong_proof() {
        let dir = tempfile::tempdir().unwrap();
        let mut tiled = TiledTree::new(dir.path());
        for i in 0..1000u64 {
            tiled.push(leaf_hash(&i.to_le_bytes())).unwrap();
        }
        let path = tile_path(dir.path(), 0, 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let cold = TiledTree::with_edge(dir.path(), 1000, tiled.edge().to_vec(), true);
        let err = cold.inclusion_proof(300, 1000).unwrap_err().to_string();
        assert!(
            err.contains("tile/0/001") && err.contains("damaged"),
            "{err}"
        );
        fs::write(&path, &bytes[..100]).unwrap();
        let err = cold.leaf(300).unwrap_err().to_string();
        assert!(err.contains("8192 bytes"), "{err}");
        fs::remove_file(&path).unwrap();
        assert!(cold.leaf(300).is_err());
        // Other tiles still serve.
        assert!(cold.leaf(5).is_ok());
    }

    #[test]
    fn edges_that_do_not_fit_are_told_apart() {
        assert!(TiledTree::edge_fits(0, &[]));
        assert!(TiledTree::edge_fits(3, &[vec![[0; 32]; 3]]));
        assert!(!TiledTree::edge_fits(3, &[vec![[0; 32]; 2]]));
        assert!(TiledTree::edge_fits(256, &[vec![], vec![[0; 32]]]));
        assert!(!TiledTree::edge_fits(256, &[vec![]]));
        assert!(!TiledTree::edge_fits(1, &[vec![[0; 32]], vec![[0; 32]]]));
    }
}
