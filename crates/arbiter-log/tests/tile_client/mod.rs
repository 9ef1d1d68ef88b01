//! The tile directory as a C2SP tlog-tiles client sees it: given only a
//! checkpoint's size and root and the files under `tile/` (full and partial
//! tiles), recompute the root and check inclusion proofs.
//!
//! The client here is written again from the specification and RFC 6962 /
//! RFC 9162 (SHA-256 from `sha2`): it calls none of the crate's tile, Merkle
//! or proof code, so a tile the crate writes wrong cannot be read back wrong
//! the same way.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use sha2::{Digest, Sha256};

use super::*;

type H = [u8; 32];

fn node(l: &H, r: &H) -> H {
    let mut s = Sha256::new();
    s.update([1u8]);
    s.update(l);
    s.update(r);
    s.finalize().into()
}

/// `tile/<L>/<N>[.p/<W>]`, N in zero-padded groups of three, all but the
/// last prefixed `x`.
fn spec_path(root: &Path, level: u8, n: u64, width: Option<u64>) -> PathBuf {
    let mut s = format!("{:03}", n % 1000);
    let mut m = n / 1000;
    while m > 0 {
        s = format!("x{:03}/{s}", m % 1000);
        m /= 1000;
    }
    let mut p = format!("tile/{level}/{s}");
    if let Some(w) = width {
        p.push_str(&format!(".p/{w}"));
    }
    root.join(p)
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

struct Client<'a> {
    /// Where to look for tiles, in order (the log directory, then archive
    /// directories, where `arbiter log archive` moves level-0 tiles).
    roots: &'a [PathBuf],
    size: u64,
    /// Read the full tile when a partial tile is gone (allowed for a
    /// checkpoint older than the latest: the log deletes superseded ones).
    fallback: bool,
    cache: RefCell<HashMap<(u8, u64), Vec<H>>>,
}

impl<'a> Client<'a> {
    fn new(roots: &'a [PathBuf], size: u64, fallback: bool) -> Self {
        Client {
            roots,
            size,
            fallback,
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn read(&self, level: u8, n: u64, width: Option<u64>) -> Option<Vec<u8>> {
        self.roots
            .iter()
            .find_map(|r| fs::read(spec_path(r, level, n, width)).ok())
    }

    /// Tile `level`/`n` as a tree of `size` leaves has it.
    fn tile(&self, level: u8, n: u64) -> Vec<H> {
        if let Some(t) = self.cache.borrow().get(&(level, n)) {
            return t.clone();
        }
        let entries = self.size >> (8 * u32::from(level));
        let full = entries / 256;
        let (bytes, width) = if n < full {
            let b = self
                .read(level, n, None)
                .unwrap_or_else(|| panic!("full tile {level}/{n} missing"));
            (b, 256)
        } else {
            assert_eq!(n, full, "tile {level}/{n} is beyond size {}", self.size);
            let w = entries % 256;
            assert!(w > 0);
            let b = match self.read(level, n, Some(w)) {
                Some(b) => b,
                None if self.fallback => {
                    let mut b = self.read(level, n, None).unwrap_or_else(|| {
                        panic!("tile {level}/{n}: neither .p/{w} nor the full tile")
                    });
                    b.truncate(w as usize * 32);
                    b
                }
                None => panic!(
                    "partial tile {} missing for size {}",
                    spec_path(Path::new(""), level, n, Some(w)).display(),
                    self.size
                ),
            };
            (b, w)
        };
        assert_eq!(bytes.len() as u64, width * 32, "tile {level}/{n}");
        let t: Vec<H> = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        self.cache.borrow_mut().insert((level, n), t.clone());
        t
    }

    /// The hash at position `i` of tile level `level`.
    fn entry(&self, level: u8, i: u64) -> H {
        self.tile(level, i / 256)[(i % 256) as usize]
    }

    /// The complete subtree of `2^height` leaves at position `k`.
    fn subtree(&self, height: u32, k: u64) -> H {
        let level = (height / 8) as u8;
        let r = height % 8;
        let mut hs: Vec<H> = ((k << r)..((k + 1) << r))
            .map(|i| self.entry(level, i))
            .collect();
        while hs.len() > 1 {
            hs = hs.chunks(2).map(|p| node(&p[0], &p[1])).collect();
        }
        hs[0]
    }

    /// MTH(D[lo:hi]), RFC 6962 section 2.1.
    fn mth(&self, lo: u64, hi: u64) -> H {
        let n = hi - lo;
        if n.is_power_of_two() {
            let h = n.trailing_zeros();
            assert_eq!(lo % n, 0);
            return self.subtree(h, lo >> h);
        }
        let k = split(n);
        node(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
    }

    /// PATH(m, D[lo:hi]), RFC 6962 section 2.1.1 (`m` counted from `lo`).
    fn path(&self, m: u64, lo: u64, hi: u64) -> Vec<H> {
        let n = hi - lo;
        if n == 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m - k, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

/// RFC 9162 section 2.1.3.2.
fn verify_inclusion(leaf: &H, index: u64, size: u64, path: &[H], root: &H) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// What a client holding `cp` checks from the tiles under `roots`: the
/// root, and the inclusion of the first, a middle and the last leaf (each
/// equal to the leaf the log acknowledged).
fn client_checks(roots: &[PathBuf], cp: &Checkpoint, leaves: &[Hash], fallback: bool) {
    let size = cp.tree_size;
    let c = Client::new(roots, size, fallback);
    let root = c.mth(0, size);
    assert_eq!(root, cp.root().unwrap(), "root at {size}");
    for index in [0, size / 2, size - 1] {
        let leaf = c.entry(0, index);
        assert_eq!(leaf, leaves[index as usize], "leaf {index} at {size}");
        let path = c.path(index, 0, size);
        assert!(
            verify_inclusion(&leaf, index, size, &path, &root),
            "{index} in {size}"
        );
        // The same path does not prove another position.
        if size > 1 {
            let other = (index + 1) % size;
            assert!(!verify_inclusion(&leaf, other, size, &path, &root));
        }
    }
}

/// Appends records `range` (ids from `id`) concurrently; their leaf hashes.
fn append(log: &Log, range: Range<u64>, id: impl Fn(u64) -> String) -> Vec<Hash> {
    let tickets: Vec<_> = range
        .map(|i| {
            let mut r = rec(i, "t");
            r.decision_id = id(i);
            log.append_ticket(r)
        })
        .collect();
    tickets
        .into_iter()
        .map(|t| t.wait().unwrap().leaf_hash)
        .collect()
}

fn tag(i: u64) -> String {
    format!("t-{i}")
}

/// The partial tiles a tree of `size` leaves has: (level, index, width).
fn partials_of(size: u64) -> Vec<(u8, u64, u64)> {
    (0u8..8)
        .filter_map(|l| {
            let e = size >> (8 * u32::from(l));
            (!e.is_multiple_of(256)).then_some((l, e / 256, e % 256))
        })
        .collect()
}

fn hashes_bytes(h: &[Hash]) -> Vec<u8> {
    h.concat()
}

/// [`opts`] with partial tiles for every checkpoint (not at most one a
/// second), so that each checkpoint a test asks for has them before
/// `force_checkpoint` returns.
fn every_cp() -> LogOptions {
    LogOptions {
        partial_tiles_every: Duration::ZERO,
        ..opts()
    }
}

#[test]
fn a_tile_client_checks_each_checkpoint_from_the_tile_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        // Only the checkpoints this test asks for.
        checkpoint_every_records: 1 << 20,
        ..every_cp()
    };
    let (log, _) = open(dir.path(), o.clone());
    let roots = [dir.path().to_path_buf()];
    let mut leaves: Vec<Hash> = Vec::new();
    let mut cps = Vec::new();
    // 773 = 3·256 + 5 leaves partial tiles at two levels; 70 000 at three.
    for size in [1, 255, 256, 257, 773, 65_536 + 3, 70_000] {
        let have = leaves.len() as u64;
        leaves.extend(append(&log, have..size, tag));
        let cp = log.force_checkpoint().unwrap();
        assert_eq!(cp.tree_size, size);
        // The latest checkpoint: its partial tiles must be there (no
        // fallback), and the tiles they stand for not yet full.
        client_checks(&roots, &cp, &leaves, false);
        for (l, n, w) in partials_of(size) {
            assert!(spec_path(dir.path(), l, n, Some(w)).is_file());
            assert!(!spec_path(dir.path(), l, n, None).exists());
        }
        cps.push(cp);
    }
    // A client holding an older checkpoint whose partial tiles a full tile
    // superseded reads the full tile instead.
    for cp in &cps {
        client_checks(&roots, cp, &leaves, true);
    }
    drop(log);
    // Superseded partial tiles are removed (by the sealer thread, done by
    // the time the log is closed): the current tiles' are all that remain.
    for (level, want) in [(0, "273.p"), (1, "001.p"), (2, "000.p")] {
        let mut found: Vec<String> = fs::read_dir(dir.path().join(format!("tile/{level}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".p"))
            .collect();
        found.sort();
        assert_eq!(found, [want], "level {level}");
    }
    // Reopened: the latest checkpoint's tiles are still served, and the log
    // verifies with them.
    let (log, _) = open(dir.path(), o);
    let key = log.public_key();
    let cp = log.latest_checkpoint().unwrap();
    assert_eq!(cp.tree_size, 70_000);
    client_checks(&roots, &cp, &leaves, false);
    drop(log);
    assert!(verify(dir.path(), &key).is_ok());
}

#[test]
fn open_puts_right_the_partial_tiles_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, armed) = crash_before_checkpoints();
    let (log, _) = open(
        dir.path(),
        LogOptions {
            fault: Some(hook),
            ..every_cp()
        },
    );
    let key = log.public_key();
    let mut leaves = append(&log, 0..300, tag);
    assert_eq!(log.force_checkpoint().unwrap().tree_size, 300);
    // The shutdown checkpoint writes the partial tiles of 310, then fails
    // before its frame: tiles of a size no checkpoint has.
    armed.store(true, Ordering::SeqCst);
    leaves.extend(append(&log, 300..310, tag));
    drop(log);
    let p = |l: u8, n: u64, w: u64| spec_path(dir.path(), l, n, Some(w));
    assert!(p(0, 1, 54).is_file());
    assert_eq!(
        read_checkpoints(dir.path())
            .unwrap()
            .last()
            .unwrap()
            .tree_size,
        300
    );
    // What else a crash or a power failure can leave: a renamed file that
    // was never synced (empty), a file with other hashes, one wider than
    // the tree, a temporary file, a superseded tile's partial tiles.
    fs::write(p(0, 1, 44), b"").unwrap();
    fs::write(p(0, 1, 50), vec![7u8; 50 * 32]).unwrap();
    fs::write(p(0, 1, 60), vec![7u8; 60 * 32]).unwrap();
    fs::write(dir.path().join("tile/0/001.p/20.tmp"), b"x").unwrap();
    fs::create_dir_all(dir.path().join("tile/0/000.p")).unwrap();
    fs::write(p(0, 0, 7), vec![9u8; 7 * 32]).unwrap();
    // And the latest checkpoint's level-1 tile gone.
    fs::remove_file(p(1, 0, 1)).unwrap();

    let (log, _) = open(dir.path(), every_cp());
    assert_eq!(log.latest_checkpoint().unwrap().tree_size, 310);
    for w in [44u64, 50, 54] {
        let want = hashes_bytes(&leaves[256..256 + w as usize]);
        assert_eq!(fs::read(p(0, 1, w)).unwrap(), want, "0/001.p/{w}");
    }
    assert!(!p(0, 1, 60).exists());
    assert!(!dir.path().join("tile/0/001.p/20.tmp").exists());
    assert!(p(1, 0, 1).is_file());
    let cp = log.latest_checkpoint().unwrap();
    drop(log);
    // The superseded one is removed off the open path, by the time it closes.
    assert!(!dir.path().join("tile/0/000.p").exists());
    client_checks(&[dir.path().to_path_buf()], &cp, &leaves, false);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
}

#[test]
fn a_tampered_partial_tile_is_reported_by_verify_and_rewritten_by_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), every_cp());
    let key = log.public_key();
    let leaves = append(&log, 0..1000, tag);
    drop(log);
    // Checkpoint at 1000: tile/0/003.p/232 and tile/1/000.p/3.
    let p1 = spec_path(dir.path(), 1, 0, Some(3));
    let good = fs::read(&p1).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 1;
    fs::write(&p1, &bad).unwrap();
    let v = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(v.kind, ProblemKind::DamagedIndex, "{v:?}");
    assert!(
        v.detail.contains("partial tile") && v.detail.contains("tile/1/000.p/3"),
        "{}",
        v.detail
    );
    let (log, _) = open(dir.path(), opts());
    drop(log);
    assert_eq!(fs::read(&p1).unwrap(), good);
    assert!(verify(dir.path(), &key).is_ok());
    // A superseded partial tile left behind is compared with its full tile.
    let p0 = spec_path(dir.path(), 0, 1, Some(9));
    fs::create_dir_all(p0.parent().unwrap()).unwrap();
    fs::write(&p0, hashes_bytes(&leaves[256..265])).unwrap();
    assert!(verify(dir.path(), &key).is_ok());
    fs::write(&p0, hashes_bytes(&leaves[257..266])).unwrap();
    let v = verify(dir.path(), &key).problem.unwrap();
    assert_eq!((v.kind, v.index), (ProblemKind::DamagedIndex, Some(256)));
    assert!(v.detail.contains("tile/0/001.p/9"), "{}", v.detail);
}

#[test]
fn a_failed_partial_tile_write_fails_the_checkpoint_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = armed.clone();
    let hook: FaultHook = Arc::new(move |p| {
        if p == FaultPoint::PartialTileWrite && a.load(Ordering::SeqCst) {
            Err(std::io::Error::other("disk full"))
        } else {
            Ok(())
        }
    });
    let (log, _) = open(
        dir.path(),
        LogOptions {
            fault: Some(hook),
            ..every_cp()
        },
    );
    append(&log, 0..10, tag);
    log.force_checkpoint().unwrap();
    armed.store(true, Ordering::SeqCst);
    append(&log, 10..11, tag);
    assert!(log.force_checkpoint().is_err());
    assert!(!log.is_healthy());
    drop(log);
    // No checkpoint at 11 was signed without its tiles; reopened, the tail
    // is signed and its tiles written.
    assert_eq!(
        read_checkpoints(dir.path())
            .unwrap()
            .last()
            .unwrap()
            .tree_size,
        10
    );
    let (log, _) = open(dir.path(), opts());
    assert_eq!(log.latest_checkpoint().unwrap().tree_size, 11);
    drop(log);
    assert!(spec_path(dir.path(), 0, 0, Some(11)).is_file());
}

#[test]
fn archive_with_partial_tiles_present_keeps_proofs_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let adir = store.path().join("2026-q1");
    let o = LogOptions {
        segment_bytes: 64 << 10,
        compress_sealed: true,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    let key = log.public_key();
    let mut leaves = append(&log, 0..3_000, uuid7);
    drop(log);
    // A superseded partial tile a crash left, with the right hashes.
    let left = spec_path(dir.path(), 0, 0, Some(7));
    fs::create_dir_all(left.parent().unwrap()).unwrap();
    fs::write(&left, hashes_bytes(&leaves[..7])).unwrap();
    // Checkpoint at 3 000: 3 000 = 11·256 + 184.
    let current = spec_path(dir.path(), 0, 11, Some(184));
    assert!(current.is_file());

    let r = archive::archive(dir.path(), 1_700_000_000_000_000 + 1_500, &adir).unwrap();
    assert!(r.segments >= 2 && r.end > 256, "{r:?}");
    assert!(adir.join("tile/0/000").is_file());
    // Moved tiles' partial tiles are removed, not moved; the current ones stay.
    assert!(!dir.path().join("tile/0/000.p").exists());
    assert!(!adir.join("tile/0/000.p").exists());
    assert!(current.is_file());
    assert!(spec_path(dir.path(), 1, 0, Some(11)).is_file());

    let (log, _) = open(dir.path(), o);
    check_found(&log, &key, &uuid7(3), 3);
    check_found(&log, &key, &uuid7(2_999), 2_999);
    leaves.extend(append(&log, 3_000..3_100, uuid7));
    let cp = log.force_checkpoint().unwrap();
    assert_eq!(cp.tree_size, 3_100);
    drop(log);
    // The client finds the archived level-0 tiles where the archive went.
    client_checks(
        &[dir.path().to_path_buf(), adir.clone()],
        &cp,
        &leaves,
        false,
    );
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 3_100);
    check_proof(&prove_dir(dir.path(), &uuid7(5)).unwrap(), Some(&key)).unwrap();
}

#[test]
fn under_load_one_checkpoint_per_interval_and_the_latest_get_partial_tiles() {
    let dir = tempfile::tempdir().unwrap();
    // The first batch's write waits until the test has queued the rest, so
    // that the writer takes those 99 records as one batch: a checkpoint
    // every 10 records, and nothing queued only after the last one.
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(Some(gate));
    let hook: FaultHook = Arc::new(move |p| {
        if p == FaultPoint::SegmentWrite
            && let Some(g) = gate.lock().unwrap().take()
        {
            let _ = g.recv();
        }
        Ok(())
    });
    let (log, _) = open(
        dir.path(),
        LogOptions {
            checkpoint_every_records: 10,
            partial_tiles_every: Duration::from_secs(3600),
            fault: Some(hook),
            ..opts()
        },
    );
    let first = log.append_ticket(rec(0, "t"));
    let rest: Vec<_> = (1..100).map(|i| log.append_ticket(rec(i, "t"))).collect();
    go.send(()).unwrap();
    first.wait().unwrap();
    for t in rest {
        t.wait().unwrap();
    }
    // Nothing queued any more: the writer writes the latest checkpoint's.
    wait_for(
        "the partial tile of the latest checkpoint",
        PATIENCE,
        || {
            spec_path(dir.path(), 0, 0, Some(100))
                .is_file()
                .then_some(())
        },
    );
    let sizes: Vec<u64> = read_checkpoints(dir.path())
        .unwrap()
        .iter()
        .map(|c| c.tree_size)
        .collect();
    assert_eq!(sizes, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    // The first checkpoint (none had tiles yet) and the latest have them;
    // those signed under load within the interval do not.
    let tiled: Vec<u64> = (1..=100)
        .filter(|w| spec_path(dir.path(), 0, 0, Some(*w)).is_file())
        .collect();
    assert_eq!(tiled, [10, 100]);
    drop(log);
}
