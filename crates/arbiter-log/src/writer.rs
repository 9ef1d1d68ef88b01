//! The live log: a single writer thread doing group commit, periodic signed
//! checkpoints, fail-stop error handling, and the proof/read API.
//!
//! Callers encode, hash and frame their record on their own thread (in
//! `append`, under the queue lock so that queue order equals `seq` order);
//! the writer thread then drains the whole queue, issues one `write_all` and
//! one `sync_data` for the batch, and completes every callback. Any I/O error
//! fails the log permanently: fsync is never retried, because after a failed
//! fsync the kernel may have dropped the dirty pages and a later "successful"
//! fsync would lie.
//!
//! Segments are preallocated: each is created at its full size
//! ([`LogOptions::segment_bytes`]) filled with zeros that are written and
//! synced (under a temporary name, then renamed into place and the directory
//! synced), and batches overwrite those zeros in place. A batch's
//! `sync_data` then has only data to write — no file size, no block
//! allocation — which is what keeps its latency short and steady. Once the
//! current segment is half full, a background thread prepares the next one
//! the same way, so that rolling over is a rename; if that preparation
//! failed (a full disk, say), the roll prepares the file itself and fails the
//! log if it cannot. The current segment is never touched by a preparation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, KeyPair, PublicKey, sync_dir};
use crate::merkle::{Hash, leaf_hash};
use crate::partial::{self, PartialTiles};
use crate::record::{DecisionRecord, now_us};
use crate::sealed::{self, IdKey, OpenSegment, Seal, SealedSegment};
use crate::segment::{self, CHECKPOINTS_FILE};
use crate::state::{STATE_FILE, StateFile};
use crate::store::{self, LogError, OpenReport, io_at};
use crate::tiles::{PartialTile, TILE_DIR, TiledTree};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the batch's `sync_data` returned Ok (default).
    #[default]
    Sync,
    /// After `write` returned; a background flush syncs every
    /// [`LogOptions::async_sync_every`]. A crash can lose acknowledged
    /// records: this trades durability for latency. Checkpoints still only
    /// ever cover synced records.
    Async,
}

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before writing a batch of frames to a segment.
    SegmentWrite,
    /// Before `sync_data` on a segment.
    SegmentSync,
    /// Before creating a new segment.
    SegmentRoll,
    /// Before zero-filling a new segment file (at open, at a roll, or in the
    /// background ahead of a roll).
    SegmentPrepare,
    /// Before writing a checkpoint frame.
    CheckpointWrite,
    /// Before `sync_data` on `checkpoints.log`.
    CheckpointSync,
    /// Before writing a checkpoint's partial tiles (before its frame).
    PartialTileWrite,
}

/// A fault-injection hook: return `Err` to make that operation fail.
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> io::Result<()> + Send + Sync>;

/// A ready-made fault switch for tests: flip `fail_next_write` or
/// `fail_next_sync` and the next such operation fails once with an I/O error.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    /// Fail the next segment or checkpoint write.
    pub fail_next_write: Arc<AtomicBool>,
    /// Fail the next segment or checkpoint sync.
    pub fail_next_sync: Arc<AtomicBool>,
}

impl FaultSwitch {
    /// A new switch with both flags off.
    pub fn new() -> Self {
        FaultSwitch::default()
    }

    /// The hook to put in [`LogOptions::fault`].
    pub fn hook(&self) -> FaultHook {
        let w = self.fail_next_write.clone();
        let s = self.fail_next_sync.clone();
        Arc::new(move |p| {
            let flag = match p {
                FaultPoint::SegmentWrite | FaultPoint::CheckpointWrite => &w,
                FaultPoint::SegmentSync | FaultPoint::CheckpointSync => &s,
                FaultPoint::SegmentRoll
                | FaultPoint::SegmentPrepare
                | FaultPoint::PartialTileWrite => return Ok(()),
            };
            if flag.swap(false, Ordering::SeqCst) {
                Err(io::Error::other(format!("injected fault at {p:?}")))
            } else {
                Ok(())
            }
        })
    }
}

/// Default [`LogOptions::partial_tiles_every`].
pub const DEFAULT_PARTIAL_TILES_EVERY: Duration = Duration::from_secs(1);

/// How long the writer must have had nothing to do after the latest
/// checkpoint before it writes that checkpoint's partial tiles, if it was
/// signed without them: not in the short gaps between bursts, where the
/// next batch would wait for them.
const PARTIAL_TILES_QUIET: Duration = Duration::from_millis(100);

/// Default [`LogOptions::checkpoint_every_records`]; also the unsigned tail
/// `open` and `verify` accept by default.
pub const DEFAULT_CHECKPOINT_EVERY_RECORDS: u64 = 1000;

/// Default [`LogOptions::liveness_every`]: 10 minutes.
pub const DEFAULT_LIVENESS_EVERY: Duration = Duration::from_secs(600);

/// `action` of the record an accepted-damage override appends.
pub const OVERRIDE_ACTION: &str = "arbiter:accept-log-damage";
/// `enforcement_point` of the record an accepted-damage override appends
/// (set only by the log itself).
pub const OVERRIDE_ENFORCEMENT_POINT: &str = "arbiter-log:override";

/// Default [`LogOptions::segment_bytes`]: 16 MiB — tens of thousands of
/// records, zero-filled in tens of milliseconds, and little to read past the
/// logical end when a log is opened.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// Zeros are written this many bytes at a time (the buffer is allocated once
/// per preparation).
const ZERO_CHUNK: usize = 1 << 20;

/// A background preparation syncs after every this many bytes, so that it
/// never has much dirty data queued in front of a batch's sync.
const BACKGROUND_SYNC_EVERY: u64 = 1 << 20;

/// Creates `path` (replacing any file there) as `size` zero bytes, written
/// and synced. `sync_every` bytes (0: only at the end) bound the dirty data
/// in flight; `cancel` stops a background preparation early. On any error
/// the partial file is removed.
fn prepare_segment(
    path: &Path,
    size: u64,
    sync_every: u64,
    cancel: Option<&AtomicBool>,
    fault: Option<&FaultHook>,
) -> io::Result<()> {
    let r = (|| {
        if let Some(h) = fault {
            h(FaultPoint::SegmentPrepare)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let chunk = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .clamp(1, ZERO_CHUNK);
        let zeros = vec![0u8; chunk];
        let (mut done, mut unsynced) = (0u64, 0u64);
        while done < size {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(io::Error::other("segment preparation cancelled"));
            }
            let n = usize::try_from(size - done)
                .unwrap_or(usize::MAX)
                .min(chunk);
            f.write_all(zeros.get(..n).unwrap_or_default())?;
            done += n as u64;
            unsynced += n as u64;
            if sync_every > 0 && unsynced >= sync_every {
                f.sync_data()?;
                unsynced = 0;
            }
        }
        f.sync_all()
    })();
    if r.is_err() {
        let _ = fs::remove_file(path);
    }
    r
}

/// Moves the prepared file into place as the segment starting at `first`
/// (replacing the file there only if `replace`), syncs the directory and
/// opens the segment for writing at offset 0.
fn install_segment(dir: &Path, first: u64, replace: bool) -> io::Result<(File, PathBuf)> {
    let path = dir.join(segment::segment_name(first));
    if !replace && fs::symlink_metadata(&path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("segment `{}` already exists", path.display()),
        ));
    }
    fs::rename(dir.join(segment::PREPARED_FILE), &path)?;
    sync_dir(dir)?;
    let f = OpenOptions::new().write(true).open(&path)?;
    Ok((f, path))
}

/// The next segment, being zero-filled on a background thread.
struct Prep {
    handle: JoinHandle<io::Result<()>>,
    cancel: Arc<AtomicBool>,
}

/// Options for [`Log::open`].
#[derive(Clone)]
pub struct LogOptions {
    /// This node's id, written into every record and checkpoint.
    pub node_id: String,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Write a checkpoint after this many new records (default 1000).
    pub checkpoint_every_records: u64,
    /// Write a checkpoint this long after the latest one when records were
    /// added since (default 1 s).
    pub checkpoint_every: Duration,
    /// When no record was added, write a liveness checkpoint (same size and
    /// root, fresh time) this long after the latest one (default 10 min:
    /// 144 a day, about 50 KB).
    pub liveness_every: Duration,
    /// Open the log even if its checkpoints do not cover its records (see
    /// [`LogError::Unverified`]), for this operator-given reason: the damaged
    /// `checkpoints.log` is set aside, and an override record naming the
    /// problem and the reason is appended and checkpointed before `open`
    /// returns, so that `verify` reports it.
    pub accept_damage: Option<String>,
    /// Roll to a new segment beyond this many bytes (default 16 MiB); also
    /// the size each segment file is preallocated (zero-filled) to.
    pub segment_bytes: u64,
    /// In [`Durability::Async`], sync at least this often (default 200 ms).
    pub async_sync_every: Duration,
    /// Store sealed segments compressed (`seg-….log.zst`, default true).
    pub compress_sealed: bool,
    /// Directory of `log-signing.key`; default: the log directory.
    pub key_dir: Option<PathBuf>,
    /// Write a checkpoint's partial tiles (`tile/<L>/<N>.p/<W>`) before its
    /// frame when at least this long has passed since the last checkpoint
    /// that got them (default 1 s; `Duration::ZERO`: every checkpoint). The
    /// latest checkpoint always gets them once the writer has had nothing
    /// to do for 100 ms, and when it stops. See the crate README, "Partial
    /// tiles".
    pub partial_tiles_every: Duration,
    /// Fault injection for tests.
    pub fault: Option<FaultHook>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            node_id: "node-0".to_string(),
            durability: Durability::Sync,
            checkpoint_every_records: DEFAULT_CHECKPOINT_EVERY_RECORDS,
            checkpoint_every: Duration::from_secs(1),
            liveness_every: DEFAULT_LIVENESS_EVERY,
            accept_damage: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            async_sync_every: Duration::from_millis(200),
            compress_sealed: true,
            key_dir: None,
            partial_tiles_every: DEFAULT_PARTIAL_TILES_EVERY,
            fault: None,
        }
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("node_id", &self.node_id)
            .field("durability", &self.durability)
            .field("checkpoint_every_records", &self.checkpoint_every_records)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("liveness_every", &self.liveness_every)
            .field("accept_damage", &self.accept_damage)
            .field("segment_bytes", &self.segment_bytes)
            .field("async_sync_every", &self.async_sync_every)
            .field("key_dir", &self.key_dir)
            .field("partial_tiles_every", &self.partial_tiles_every)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

/// A successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's `seq`.
    pub seq: u64,
    /// Its Merkle leaf index (equal to `seq`).
    pub leaf_index: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
}

/// Completion callback for [`Log::append`].
pub type AppendCallback = Box<dyn FnOnce(Result<Appended, LogError>) + Send>;

/// Log health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Accepting writes.
    Healthy,
    /// A write or sync failed; the log accepts nothing more until reopened.
    Failed {
        /// The first error.
        reason: String,
    },
    /// Shut down.
    ShutDown,
}

/// A pending append you can block on.
#[derive(Debug)]
pub struct Ticket {
    rx: mpsc::Receiver<Result<Appended, LogError>>,
}

impl Ticket {
    /// Blocks until the append completes.
    pub fn wait(self) -> Result<Appended, LogError> {
        self.rx.recv().unwrap_or(Err(LogError::ShutDown))
    }
}

/// Everything needed to check a record's inclusion offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InclusionProofBundle {
    /// The record (its canonical JSON parsed as a value).
    pub record: serde_json::Value,
    /// Leaf index.
    pub leaf_index: u64,
    /// Tree size the proof is for (= `checkpoint.tree_size`).
    pub tree_size: u64,
    /// Leaf hash, hex.
    pub leaf_hash: String,
    /// Audit path, hex, leaf upwards.
    pub proof: Vec<String>,
    /// The signed checkpoint the proof is against.
    pub checkpoint: Checkpoint,
    /// The log's public key, hex.
    pub public_key: String,
}

impl InclusionProofBundle {
    /// The bundle of record `index` (its canonical `payload`) with its audit path `proof`
    /// against checkpoint `cp` of the log whose key is `public_key` (hex).
    pub(crate) fn of(
        index: u64,
        payload: &[u8],
        proof: &[Hash],
        cp: Checkpoint,
        public_key: String,
    ) -> Result<InclusionProofBundle, LogError> {
        let record: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| LogError::Invalid(format!("record {index}: {e}")))?;
        Ok(InclusionProofBundle {
            record,
            leaf_index: index,
            tree_size: cp.tree_size,
            leaf_hash: hex::encode(leaf_hash(payload)),
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint: cp,
            public_key,
        })
    }
}

struct Pending {
    frame: Vec<u8>,
    seq: u64,
    leaf: Hash,
    id: IdKey,
    ts_us: i64,
    done: AppendCallback,
}

struct Queue {
    items: Vec<Pending>,
    next_seq: u64,
    last_ts_us: i64,
    health: Health,
    shutdown: bool,
    cp_requests: Vec<mpsc::Sender<Result<Checkpoint, LogError>>>,
    /// The writer is waiting on `wake` (set and cleared by it under this
    /// lock): only then does an append need to notify, which saves a
    /// system call per append while the writer is busy.
    writer_waiting: bool,
}

struct Shared {
    tree: TiledTree,
    /// Segments whose offsets and ids are in index files, ascending.
    sealed: Vec<SealedSegment>,
    /// Finished segments being sealed (their offsets and ids still here).
    sealing: Vec<Arc<OpenSegment>>,
    /// The segment being written.
    live: OpenSegment,
    segment_starts: Vec<u64>,
    latest: Option<Checkpoint>,
}

/// Where a record is: its segment file and its frame's offset.
struct Located {
    index: u64,
    path: PathBuf,
    offset: u64,
}

impl Shared {
    /// The segment file and frame offset of record `index` (the record
    /// itself read back when the offset came from an index file).
    fn locate(&self, dir: &Path, index: u64) -> Result<Located, LogError> {
        let path = |first: u64| segment::segment_path(dir, first);
        for seg in self.sealing.iter().map(|s| &**s).chain([&self.live]) {
            if let Some(offset) = seg.offset(index) {
                return Ok(Located {
                    index,
                    path: path(seg.first),
                    offset,
                });
            }
        }
        let pos = self.sealed.partition_point(|s| s.first <= index);
        match pos.checked_sub(1).and_then(|p| self.sealed.get(p)) {
            Some(seg) if seg.holds(index) => Ok(Located {
                index,
                path: path(seg.first),
                offset: sealed::sealed_offset(dir, seg, index)?,
            }),
            _ => Err(LogError::Invalid(format!("no record at index {index}"))),
        }
    }

    /// The first record in memory (the segments not yet sealed) with
    /// `decision_id`: the candidates, in order, to be confirmed.
    fn find_open(&self, dir: &Path, decision_id: &str) -> Vec<Located> {
        self.sealing
            .iter()
            .map(|s| &**s)
            .chain([&self.live])
            .flat_map(|seg| {
                seg.candidates(decision_id)
                    .into_iter()
                    .filter_map(move |index| {
                        Some(Located {
                            index,
                            path: dir.join(segment::segment_name(seg.first)),
                            offset: seg.offset(index)?,
                        })
                    })
            })
            .collect()
    }
}

/// Bytes the live log holds in memory for its tree and indexes: bounded by
/// the segment size, not by the number of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// The tree's right edge and its tile cache.
    pub tree_bytes: usize,
    /// Offsets and decision ids of the segments not yet sealed.
    pub open_segment_bytes: usize,
    /// Segments not yet sealed (the one being written included).
    pub open_segments: usize,
    /// Sealed segments (a few dozen bytes each).
    pub sealed_segments: usize,
}

struct Inner {
    dir: PathBuf,
    opts: LogOptions,
    key: KeyPair,
    queue: Mutex<Queue>,
    wake: Condvar,
    shared: RwLock<Shared>,
}

/// A finished segment for the sealer thread.
struct SealJob {
    segment: Arc<OpenSegment>,
    seal: Seal,
}

/// Work for the sealer thread: whatever must not hold up the writer.
enum Job {
    Seal(SealJob),
    /// Partial-tile directories that full tiles superseded, to remove (see
    /// `crate::partial`: on this machine's ext4 a removal can take
    /// milliseconds, which the writer thread would spend between batches).
    Remove(Vec<PathBuf>),
}

impl Inner {
    /// Seals finished segments in order until the writer drops its sender:
    /// index file, tiles and seal synced, then the segment's offsets and ids
    /// leave memory. A failure fails the log (what cannot be sealed cannot
    /// be found again at open without a full scan). Removes superseded
    /// partial tiles in between.
    fn run_sealer(&self, jobs: mpsc::Receiver<Job>) {
        for job in jobs {
            let mut job = match job {
                Job::Seal(job) => job,
                Job::Remove(dirs) => {
                    partial::remove_dirs(&dirs);
                    continue;
                }
            };
            let first = job.segment.first;
            let compress = self.opts.compress_sealed;
            if let Err(e) = sealed::seal(&self.dir, &job.segment, &mut job.seal, first, compress) {
                let mut q = lock(&self.queue);
                if q.health == Health::Healthy {
                    q.health = Health::Failed {
                        reason: format!("cannot seal the segment starting at record {first}: {e}"),
                    };
                }
                return;
            }
            let mut s = self.shared.write().unwrap_or_else(|e| e.into_inner());
            s.sealing.retain(|seg| seg.first != first);
            s.sealed.push(job.seal.segment());
        }
    }
}

/// An open, append-only decision log.
pub struct Log {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    sealer: Mutex<Option<JoinHandle<()>>>,
    /// An exclusive lock on `<dir>/writer.lock`, held while the log is open: one writer per
    /// directory, across processes (released by the OS when the process ends).
    _lock: std::fs::File,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Takes the directory's writer lock, or fails at once if another process (or another `Log`
/// in this one) holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, LogError> {
    std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("writer.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LogError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Invalid(format!(
            "the decision log in `{}` is open in another process (one writer at a time: \
             stop it, or give this one its own data directory)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(LogError::Io { path, source }),
    }
}

/// The record an accepted-damage override appends: who (the operator, by
/// the log's own hand), what was wrong, why it was accepted, and where the
/// old checkpoints went.
fn override_record(
    node_id: &str,
    problem: &str,
    reason: &str,
    loaded: &store::Loaded,
    set_aside: &Option<PathBuf>,
) -> DecisionRecord {
    let ts = now_us();
    let context = serde_json::json!({
        "problem": problem,
        "reason": reason,
        "records": loaded.tree.size(),
        "checkpoints_set_aside": loaded.checkpoint_count,
        "set_aside_file": set_aside
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
    });
    DecisionRecord {
        decision_id: format!("log-override-{ts}"),
        ts_us: ts,
        subject: crate::record::SubjectRef {
            kind: "Operator".to_string(),
            id: "log-override".to_string(),
            agent_id: None,
            credential_id: None,
        },
        action: OVERRIDE_ACTION.to_string(),
        resource: crate::record::EntityRef {
            kind: "DecisionLog".to_string(),
            id: node_id.to_string(),
        },
        context_digest: crate::canonical::sha256_digest(&context).unwrap_or_default(),
        context,
        outcome: crate::record::Outcome::Allow,
        reason_admin: format!("the operator accepted log damage: {problem}; reason: {reason}"),
        reason_user: "the operator accepted damage to the decision log".to_string(),
        engine: "arbiter-log".to_string(),
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        enforcement_point: OVERRIDE_ENFORCEMENT_POINT.to_string(),
        ..DecisionRecord::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// Opens (creating if needed) the log in `dir`: recovers a torn tail,
    /// rebuilds the tree, loads or creates the signing key, and starts the
    /// writer thread.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(Log, OpenReport), LogError> {
        if opts.node_id.is_empty() || opts.node_id.contains('\n') {
            return Err(LogError::Invalid(format!("node id `{}`", opts.node_id)));
        }
        if opts.checkpoint_every.is_zero() {
            return Err(LogError::Invalid(
                "checkpoint interval must be positive".to_string(),
            ));
        }
        let accept_reason = match &opts.accept_damage {
            Some(r) if r.trim().is_empty() => {
                return Err(LogError::Invalid(
                    "accepting log damage needs a reason".to_string(),
                ));
            }
            Some(r) => Some(r.trim().to_string()),
            None => None,
        };
        let writer_lock = lock_dir(dir)?;
        let key_dir = opts.key_dir.clone().unwrap_or_else(|| dir.to_path_buf());
        let key = KeyPair::load_or_create(&key_dir)?;
        let public = key.public_key();
        let check = store::OpenCheck {
            key: &public,
            node_id: &opts.node_id,
            window: opts.checkpoint_every_records.max(1),
            accept_damage: accept_reason.is_some(),
            compress: opts.compress_sealed,
        };
        let mut loaded = store::load(dir, &check)?;
        if let Some(found) = &loaded.node_id
            && *found != opts.node_id
        {
            return Err(LogError::NodeMismatch {
                found: found.clone(),
                expected: opts.node_id.clone(),
            });
        }
        let cp_path = dir.join(CHECKPOINTS_FILE);
        // Damage accepted by the operator: the checkpoints are set aside as
        // evidence and signing starts afresh, after an override record.
        let override_record = match (loaded.damage.take(), accept_reason) {
            (Some(problem), Some(reason)) => {
                let aside = dir.join(format!("{CHECKPOINTS_FILE}.damaged-{}", now_us()));
                let set_aside = match fs::rename(&cp_path, &aside) {
                    Ok(()) => Some(aside),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_at(&cp_path)(e)),
                };
                let record = override_record(&opts.node_id, &problem, &reason, &loaded, &set_aside);
                loaded.latest_checkpoint = None;
                loaded.checkpoint_count = 0;
                loaded.report.accepted_damage = Some(problem);
                loaded.report.set_aside = set_aside;
                loaded.report.latest_checkpoint = None;
                Some(record)
            }
            _ => None,
        };
        if loaded.report.accepted_damage.is_some() {
            // The seals name offsets in the checkpoints just set aside.
            let seals = sealed::read_seals(dir)?.unwrap_or_default();
            let reset: Vec<Seal> = seals
                .into_iter()
                .map(|s| Seal {
                    cp_before: 0,
                    cp_offset: 0,
                    ..s
                })
                .collect();
            sealed::rewrite_seals(dir, &reset)?;
        }
        let mut starts = loaded.segment_starts.clone();
        let size = loaded.tree.size();
        let mut live = loaded.open.take();
        // A preparation left behind by a crash may be incomplete.
        let prepared = dir.join(segment::PREPARED_FILE);
        match fs::remove_file(&prepared) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&prepared)(e)),
        }
        let limit = opts.segment_bytes.max(1);
        // Writes go into a preallocated segment. A last segment smaller than
        // that (none yet, or one written before preallocation) is replaced
        // by a preallocated one if it holds no records, and otherwise left as
        // it is: the next record starts a new, preallocated segment.
        let (seg, seg_path, seg_len, seg_cap) = match starts.last().copied() {
            Some(first) if loaded.last_segment_size >= limit => {
                let path = dir.join(segment::segment_name(first));
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_at(&path))?;
                f.seek(SeekFrom::Start(loaded.last_segment_len))
                    .map_err(io_at(&path))?;
                (f, path, loaded.last_segment_len, loaded.last_segment_size)
            }
            last => {
                let (first, replace) = match last {
                    Some(first) if loaded.last_segment_len == 0 => (first, true),
                    _ => {
                        // The last segment is finished: sealed before the
                        // next one starts.
                        if let Some(seg) = live.take().filter(|s| s.count() > 0) {
                            let mut s = Seal {
                                first: seg.first,
                                count: seg.count(),
                                bytes: loaded.last_segment_len,
                                last_ts_us: loaded.last_ts_us,
                                times: seg.times,
                                cp_before: loaded.checkpoint_count.saturating_sub(1),
                                cp_offset: loaded.checkpoint_offset,
                                index_crc: 0,
                                edge: loaded.tree.edge().to_vec(),
                            };
                            sealed::seal(dir, &seg, &mut s, seg.first, opts.compress_sealed)?;
                            loaded.sealed.push(s.segment());
                        }
                        starts.push(size);
                        (size, false)
                    }
                };
                prepare_segment(&prepared, limit, 0, None, opts.fault.as_ref())
                    .map_err(io_at(&prepared))?;
                let (f, path) = install_segment(dir, first, replace).map_err(io_at(dir))?;
                (f, path, 0, limit)
            }
        };
        let live_first = starts.last().copied().unwrap_or(0);
        let cp_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cp_path)
            .map_err(io_at(&cp_path))?;
        let state_path = dir.join(STATE_FILE);
        let state = StateFile::create(
            dir,
            loaded.state_generation,
            loaded.checkpoint_count,
            loaded.latest_checkpoint.as_ref().map_or(0, |c| c.tree_size),
        )
        .map_err(io_at(&state_path))?;
        sync_dir(dir).map_err(io_at(dir))?;
        // Partial tiles are derived: checked against the tree, repaired, and
        // those of the latest checkpoint written (see `crate::partial`).
        let latest_size = loaded.latest_checkpoint.as_ref().map(|c| c.tree_size);
        let since = latest_size.map_or(0, |s| s.saturating_sub(check.window));
        let (partials, superseded) = PartialTiles::recover(dir, &loaded.tree, latest_size, since)?;
        let report = loaded.report.clone();
        let cp_count = loaded.checkpoint_count;
        let cp_size = loaded.latest_checkpoint.as_ref().map_or(0, |c| c.tree_size);
        let last_cp_ts = loaded
            .latest_checkpoint
            .as_ref()
            .map_or(i64::MIN, |c| c.ts_us);
        // INVARIANT: `queue.next_seq` = committed records + queued items, and
        // queued items are in `seq` order (both updated together under the
        // queue lock in `append`); the writer commits them in that order, so
        // leaf index == seq for every record.
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            key,
            queue: Mutex::new(Queue {
                items: Vec::new(),
                next_seq: size,
                last_ts_us: loaded.last_ts_us,
                health: Health::Healthy,
                shutdown: false,
                cp_requests: Vec::new(),
                writer_waiting: false,
            }),
            wake: Condvar::new(),
            shared: RwLock::new(Shared {
                tree: loaded.tree,
                sealed: loaded.sealed,
                sealing: Vec::new(),
                live: live.unwrap_or_else(|| OpenSegment::new(live_first)),
                segment_starts: starts,
                latest: loaded.latest_checkpoint,
            }),
            opts,
        });
        let (seal_tx, seal_rx) = mpsc::channel::<Job>();
        let sealer_inner = inner.clone();
        let sealer = std::thread::Builder::new()
            .name("arbiter-log-sealer".to_string())
            .spawn(move || sealer_inner.run_sealer(seal_rx))
            .map_err(|e| LogError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        if !superseded.is_empty() {
            let _ = seal_tx.send(Job::Remove(superseded));
        }
        let (cp_bytes, cp_last_offset) = if loaded.report.accepted_damage.is_some() {
            (0, 0)
        } else {
            (loaded.checkpoint_bytes, loaded.checkpoint_offset)
        };
        let w = Writer {
            inner: inner.clone(),
            seals: seal_tx,
            rolled: std::collections::VecDeque::new(),
            last_ts_us: loaded.last_ts_us,
            cp_bytes,
            cp_last_offset,
            seg,
            seg_path,
            seg_len,
            seg_cap,
            prep: None,
            cp_file,
            cp_path,
            cp_size,
            cp_count,
            committed: size,
            partials,
            state,
            last_cp_ts,
            last_cp_at: Instant::now(),
            dirty: false,
            last_sync_at: Instant::now(),
        };
        let log = Log {
            inner,
            thread: Mutex::new(None),
            sealer: Mutex::new(Some(sealer)),
            _lock: writer_lock,
        };
        // An override record goes first, with a checkpoint right after it:
        // queued before the writer starts, nothing can come between. Records
        // no checkpoint covers (a crash before the checkpoint, within the
        // window `load` allows) are signed before `open` returns.
        let ticket = override_record.map(|record| log.append_ticket(record));
        let signed = (ticket.is_some() || size > cp_size).then(|| {
            let (tx, rx) = mpsc::channel();
            lock(&log.inner.queue).cp_requests.push(tx);
            rx
        });
        let thread = std::thread::Builder::new()
            .name("arbiter-log-writer".to_string())
            .spawn(move || w.run())
            .map_err(|e| LogError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        *lock(&log.thread) = Some(thread);
        if let Some(ticket) = ticket {
            ticket.wait()?;
        }
        if let Some(rx) = signed {
            rx.recv().unwrap_or(Err(LogError::ShutDown))?;
        }
        Ok((log, report))
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The checkpoint-signing public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.key.public_key()
    }

    /// Signs a message to the other nodes of a fleet with this log's key (see
    /// [`KeyPair::sign_node_message`]).
    pub fn sign_node_message(&self, purpose: &str, msg: &[u8]) -> String {
        self.inner.key.sign_node_message(purpose, msg)
    }

    /// Queues `record` and calls `done` when it is durable (or failed).
    ///
    /// The log overwrites `seq` (next in sequence) and `node_id` (from the
    /// options), sets `schema` to 1, and clamps `ts_us` to be no earlier than
    /// the previous record's (`ts_us == 0` means "now"). `done` runs on the
    /// writer thread (or, for immediate errors, on the caller's): keep it
    /// short, e.g. send on a channel.
    pub fn append(&self, mut record: DecisionRecord, done: AppendCallback) {
        let mut q = lock(&self.inner.queue);
        match &q.health {
            Health::Healthy if !q.shutdown => {}
            Health::Failed { reason } => {
                let reason = reason.clone();
                drop(q);
                done(Err(LogError::Failed(reason)));
                return;
            }
            _ => {
                drop(q);
                done(Err(LogError::ShutDown));
                return;
            }
        }
        record.schema = crate::record::SCHEMA_VERSION;
        record.seq = q.next_seq;
        record.node_id.clone_from(&self.inner.opts.node_id);
        if record.ts_us == 0 {
            record.ts_us = now_us();
        }
        record.ts_us = record.ts_us.max(q.last_ts_us);
        let mut frame = Vec::with_capacity(640);
        frame.extend_from_slice(&[0u8; segment::HEADER_LEN]);
        if let Err(e) = record.write_canonical(&mut frame) {
            drop(q);
            done(Err(LogError::Record(e)));
            return;
        }
        let payload = &frame[segment::HEADER_LEN..];
        let leaf = leaf_hash(payload);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if payload.len() > segment::MAX_PAYLOAD {
            drop(q);
            done(Err(LogError::Invalid(format!(
                "record of {} bytes is too large",
                len
            ))));
            return;
        }
        let crc = crc32fast::hash(payload);
        frame[0..4].copy_from_slice(&len.to_le_bytes());
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        q.next_seq += 1;
        q.last_ts_us = record.ts_us;
        q.items.push(Pending {
            frame,
            seq: record.seq,
            leaf,
            id: IdKey::of(&record.decision_id),
            ts_us: record.ts_us,
            done,
        });
        let waiting = q.writer_waiting;
        drop(q);
        if waiting {
            self.inner.wake.notify_one();
        }
    }

    /// Queues `record` and returns a [`Ticket`] to wait on.
    pub fn append_ticket(&self, record: DecisionRecord) -> Ticket {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append(
            record,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        Ticket { rx }
    }

    /// Appends and blocks until durable.
    pub fn append_blocking(&self, record: DecisionRecord) -> Result<Appended, LogError> {
        self.append_ticket(record).wait()
    }

    /// Current health.
    pub fn health(&self) -> Health {
        let q = lock(&self.inner.queue);
        if q.shutdown && q.health == Health::Healthy {
            return Health::ShutDown;
        }
        q.health.clone()
    }

    /// Whether the log accepts writes.
    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    /// The first error that failed the log, if any.
    pub fn failure(&self) -> Option<String> {
        match &lock(&self.inner.queue).health {
            Health::Failed { reason } => Some(reason.clone()),
            _ => None,
        }
    }

    fn read_shared(&self) -> std::sync::RwLockReadGuard<'_, Shared> {
        self.inner.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of committed records (written and, in Sync mode, synced).
    pub fn tree_size(&self) -> u64 {
        self.read_shared().tree.size()
    }

    /// Root over the committed records.
    pub fn root(&self) -> Result<Hash, LogError> {
        self.read_shared().tree.root()
    }

    /// Root over the first `size` committed records.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        self.read_shared().tree.root_at(size)
    }

    /// What the log holds in memory for its tree and indexes.
    pub fn memory(&self) -> MemoryUse {
        let s = self.read_shared();
        MemoryUse {
            tree_bytes: s.tree.memory_bytes(),
            open_segment_bytes: s
                .sealing
                .iter()
                .map(|seg| seg.memory_bytes())
                .sum::<usize>()
                + s.live.memory_bytes(),
            open_segments: s.sealing.len() + 1,
            sealed_segments: s.sealed.len(),
        }
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.read_shared().latest.clone()
    }

    /// Asks the writer for a checkpoint covering everything queued so far and
    /// waits for it.
    pub fn force_checkpoint(&self) -> Result<Checkpoint, LogError> {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = lock(&self.inner.queue);
            if let Health::Failed { reason } = &q.health {
                return Err(LogError::Failed(reason.clone()));
            }
            if q.shutdown {
                return Err(LogError::ShutDown);
            }
            q.cp_requests.push(tx);
        }
        self.inner.wake.notify_one();
        rx.recv().unwrap_or(Err(LogError::ShutDown))
    }

    /// An inclusion proof for `decision_id` against the latest signed
    /// checkpoint; forces a checkpoint first if the record is newer.
    pub fn prove(&self, decision_id: &str) -> Result<InclusionProofBundle, LogError> {
        let (found, payload) = self
            .find(decision_id)?
            .ok_or_else(|| LogError::NotFound(decision_id.to_string()))?;
        let index = found.index;
        let mut cp = self.read_shared().latest.clone();
        if cp.as_ref().is_none_or(|c| c.tree_size <= index) {
            cp = Some(self.force_checkpoint()?);
        }
        let cp = cp.ok_or(LogError::ShutDown)?;
        let (leaf, proof) = {
            let s = self.read_shared();
            (
                s.tree.leaf(index)?,
                s.tree.inclusion_proof(index, cp.tree_size)?,
            )
        };
        if leaf_hash(&payload) != leaf {
            return Err(LogError::Corrupt {
                segment: found.path,
                offset: found.offset,
                index,
                reason: "record on disk does not match its leaf hash".to_string(),
            });
        }
        InclusionProofBundle::of(index, &payload, &proof, cp, self.inner.key.public_key_hex())
    }

    /// The first committed record with `decision_id`, where it is, and its
    /// canonical bytes.
    fn find(&self, decision_id: &str) -> Result<Option<(Located, Vec<u8>)>, LogError> {
        let dir = &self.inner.dir;
        let time = sealed::uuid7_ms(decision_id);
        // Sealed segments never change: their index files are read without
        // holding the lock.
        let (candidates, open) = {
            let s = self.read_shared();
            let c: Vec<SealedSegment> = s
                .sealed
                .iter()
                .filter(|seg| seg.times.may_hold(time))
                .copied()
                .collect();
            (c, s.find_open(dir, decision_id))
        };
        let confirmed = |at: &Located| -> Result<Option<Vec<u8>>, LogError> {
            let (rec, payload) = store::read_record_at(&at.path, at.offset)?;
            Ok((rec.seq == at.index && rec.decision_id == decision_id).then_some(payload))
        };
        for seg in &candidates {
            for (index, offset) in sealed::sealed_candidates(dir, seg, decision_id)? {
                let at = Located {
                    index,
                    path: segment::segment_path(dir, seg.first),
                    offset,
                };
                if let Some(payload) = confirmed(&at)? {
                    return Ok(Some((at, payload)));
                }
            }
        }
        for at in open {
            if let Some(payload) = confirmed(&at)? {
                return Ok(Some((at, payload)));
            }
        }
        Ok(None)
    }

    /// The committed record with this decision id (the first one, if the id
    /// was reused).
    pub fn get(&self, decision_id: &str) -> Result<Option<DecisionRecord>, LogError> {
        match self.find(decision_id)? {
            Some((_, payload)) => Ok(Some(DecisionRecord::from_canonical_bytes(&payload)?)),
            None => Ok(None),
        }
    }

    /// The committed record at `index`.
    pub fn get_index(&self, index: u64) -> Result<Option<DecisionRecord>, LogError> {
        let at = {
            let s = self.read_shared();
            if index >= s.tree.size() {
                return Ok(None);
            }
            s.locate(&self.inner.dir, index)?
        };
        let (rec, _) = store::read_record_at(&at.path, at.offset)?;
        if rec.seq != at.index {
            return Err(LogError::Corrupt {
                segment: at.path,
                offset: at.offset,
                index,
                reason: format!("the index points at record {}", rec.seq),
            });
        }
        Ok(Some(rec))
    }

    /// A consistency proof from `old` to `new`, both of which must be
    /// checkpoints of this log.
    pub fn consistency(&self, old: &Checkpoint, new: &Checkpoint) -> Result<Vec<Hash>, LogError> {
        let s = self.read_shared();
        for cp in [old, new] {
            let have = s.tree.root_at(cp.tree_size)?;
            if have != cp.root()? {
                return Err(LogError::CheckpointMismatch {
                    size: cp.tree_size,
                    reason: "root differs from this log".to_string(),
                });
            }
        }
        s.tree.consistency_proof(old.tree_size, new.tree_size)
    }

    /// A consistency proof from this log's first `old_size` records to `new`, a checkpoint
    /// of this log (what a witness that last saw `old_size` records needs).
    pub fn consistency_from(&self, old_size: u64, new: &Checkpoint) -> Result<Vec<Hash>, LogError> {
        let s = self.read_shared();
        if s.tree.root_at(new.tree_size)? != new.root()? {
            return Err(LogError::CheckpointMismatch {
                size: new.tree_size,
                reason: "root differs from this log".to_string(),
            });
        }
        s.tree.consistency_proof(old_size, new.tree_size)
    }

    /// Drains the queue, syncs, writes a final checkpoint and stops the
    /// writer thread. Later appends fail with [`LogError::ShutDown`].
    pub fn shutdown(&self) -> Result<(), LogError> {
        {
            let mut q = lock(&self.inner.queue);
            q.shutdown = true;
        }
        self.inner.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        // The writer has dropped its sender: the sealer finishes what it
        // was given and stops.
        if let Some(t) = lock(&self.sealer).take() {
            let _ = t.join();
        }
        match &lock(&self.inner.queue).health {
            Health::Failed { reason } => Err(LogError::Failed(reason.clone())),
            _ => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Runs a completion callback on the writer thread; a panicking callback
/// must not kill the writer (every later append would hang).
fn complete(done: AppendCallback, r: Result<Appended, LogError>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(r)));
}

struct Writer {
    inner: Arc<Inner>,
    /// Finished segments go to the sealer thread.
    seals: mpsc::Sender<Job>,
    /// Segments rolled to whose records are not yet all in the tree: the
    /// first record of the new segment and the old one's logical end.
    rolled: std::collections::VecDeque<(u64, u64)>,
    /// Time of the last record in the tree.
    last_ts_us: i64,
    /// Length of `checkpoints.log`, and the offset of its latest frame.
    cp_bytes: u64,
    cp_last_offset: u64,
    /// The current segment, positioned at `seg_len`.
    seg: File,
    seg_path: PathBuf,
    /// Logical end of the current segment: where the next frame goes.
    seg_len: u64,
    /// Size of the current segment's file; zeros from `seg_len` on.
    seg_cap: u64,
    /// The next segment, if its preparation has started.
    prep: Option<Prep>,
    cp_file: File,
    cp_path: PathBuf,
    /// Tree size of the latest checkpoint.
    cp_size: u64,
    /// Checkpoints in `checkpoints.log`.
    cp_count: u64,
    /// Records published to the tree.
    committed: u64,
    /// The partial tiles of the checkpoints' sizes.
    partials: PartialTiles,
    /// `checkpoints.state`, rewritten after every checkpoint.
    state: StateFile,
    last_cp_ts: i64,
    last_cp_at: Instant,
    dirty: bool,
    last_sync_at: Instant,
}

impl Writer {
    fn fault(&self, p: FaultPoint) -> io::Result<()> {
        match &self.inner.opts.fault {
            Some(h) => h(p),
            None => Ok(()),
        }
    }

    /// When the next checkpoint is due without new appends: the interval
    /// after the latest one if records were added since (or none was ever
    /// written), else the liveness interval.
    fn next_checkpoint_at(&self) -> Instant {
        let opts = &self.inner.opts;
        if self.committed > self.cp_size || self.cp_count == 0 {
            self.last_cp_at + opts.checkpoint_every
        } else {
            self.last_cp_at + opts.liveness_every.max(opts.checkpoint_every)
        }
    }

    fn run(mut self) {
        let opts = self.inner.opts.clone();
        let every_records = opts.checkpoint_every_records.max(1);
        let mut batch: Vec<Pending> = Vec::new();
        self.prepare_next();
        loop {
            let (cp_reqs, shutdown) = {
                let mut q = lock(&self.inner.queue);
                loop {
                    if !q.items.is_empty() || !q.cp_requests.is_empty() || q.shutdown {
                        break;
                    }
                    let mut deadline = self.next_checkpoint_at();
                    if self.dirty {
                        deadline = deadline.min(self.last_sync_at + opts.async_sync_every);
                    }
                    if let Some(at) = self.catch_up_at() {
                        deadline = deadline.min(at);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q.writer_waiting = true;
                    q = self
                        .inner
                        .wake
                        .wait_timeout(q, deadline - now)
                        .map_or_else(|e| e.into_inner().0, |r| r.0);
                    q.writer_waiting = false;
                }
                std::mem::swap(&mut batch, &mut q.items);
                (std::mem::take(&mut q.cp_requests), q.shutdown)
            };
            // The batch is written in slices that never leave more than
            // `every_records` records without a checkpoint on disk: that is
            // the unsigned tail `open` accepts after a crash.
            while !batch.is_empty() {
                if self.committed - self.cp_size >= every_records
                    && let Err(e) = self.checkpoint()
                {
                    self.fail(format!("cannot write checkpoint: {e}"), &mut batch, cp_reqs);
                    return;
                }
                let room = usize::try_from(every_records - (self.committed - self.cp_size))
                    .unwrap_or(usize::MAX)
                    .max(1);
                let rest = if batch.len() > room {
                    batch.split_off(room)
                } else {
                    Vec::new()
                };
                let n = batch.len();
                match self.write_batch(&batch) {
                    Ok(offsets) => {
                        if let Err(e) = self.publish(&mut batch, &offsets) {
                            let reason = format!("cannot add {n} records to the tree: {e}");
                            batch.extend(rest);
                            self.fail(reason, &mut batch, cp_reqs);
                            return;
                        }
                        for p in batch.drain(..) {
                            let r = Ok(Appended {
                                seq: p.seq,
                                leaf_index: p.seq,
                                leaf_hash: p.leaf,
                            });
                            complete(p.done, r);
                        }
                        // (An empty `rest` keeps the batch's buffer for reuse.)
                        if !rest.is_empty() {
                            batch = rest;
                        }
                    }
                    Err(e) => {
                        let reason = format!("cannot write {n} records: {e}");
                        batch.extend(rest);
                        self.fail(reason, &mut batch, cp_reqs);
                        return;
                    }
                }
            }
            let now = Instant::now();
            let size = self.committed;
            let due = !cp_reqs.is_empty()
                || size - self.cp_size >= every_records
                || now >= self.next_checkpoint_at()
                || (shutdown && size != self.cp_size);
            if due {
                match self.checkpoint() {
                    Ok(cp) => {
                        for r in cp_reqs {
                            let _ = r.send(Ok(cp.clone()));
                        }
                    }
                    Err(e) => {
                        self.fail(format!("cannot write checkpoint: {e}"), &mut batch, cp_reqs);
                        return;
                    }
                }
            } else if self.dirty
                && (shutdown || now >= self.last_sync_at + opts.async_sync_every)
                && let Err(e) = self.sync_segment()
            {
                self.fail(format!("cannot sync segment: {e}"), &mut batch, cp_reqs);
                return;
            }
            if let Err(e) = self.catch_up_partials(shutdown) {
                self.fail(
                    format!("cannot write partial tiles: {e}"),
                    &mut batch,
                    Vec::new(),
                );
                return;
            }
            if shutdown {
                let q = lock(&self.inner.queue);
                if q.items.is_empty() && q.cp_requests.is_empty() {
                    return;
                }
            }
        }
    }

    /// Adds a written batch to the tree and the live segment's offsets and
    /// ids; a segment rolled to starts a new live one and the finished one
    /// goes to the sealer.
    fn publish(&mut self, batch: &mut [Pending], offsets: &[u64]) -> Result<(), LogError> {
        let mut s = self.inner.shared.write().unwrap_or_else(|e| e.into_inner());
        for (p, off) in batch.iter_mut().zip(offsets) {
            if self.rolled.front().is_some_and(|r| r.0 == p.seq) {
                let (first, bytes) = self.rolled.pop_front().unwrap_or_default();
                let done = Arc::new(std::mem::replace(&mut s.live, OpenSegment::new(first)));
                if done.count() > 0 {
                    let seal = Seal {
                        first: done.first,
                        count: done.count(),
                        bytes,
                        last_ts_us: self.last_ts_us,
                        times: done.times,
                        cp_before: self.cp_count.saturating_sub(1),
                        cp_offset: self.cp_last_offset,
                        index_crc: 0,
                        edge: s.tree.edge().to_vec(),
                    };
                    s.sealing.push(done.clone());
                    // A sealer that is gone has failed the log already.
                    let _ = self.seals.send(Job::Seal(SealJob {
                        segment: done,
                        seal,
                    }));
                }
            }
            s.tree.push(p.leaf)?;
            s.live.push_hashed(*off, p.id);
            self.last_ts_us = p.ts_us;
        }
        self.committed = s.tree.size();
        Ok(())
    }

    /// Marks the log failed and fails everything pending.
    fn fail(
        &mut self,
        reason: String,
        batch: &mut Vec<Pending>,
        cp_reqs: Vec<mpsc::Sender<Result<Checkpoint, LogError>>>,
    ) {
        let (rest, more_cp) = {
            let mut q = lock(&self.inner.queue);
            if q.health == Health::Healthy {
                q.health = Health::Failed {
                    reason: reason.clone(),
                };
            }
            (
                std::mem::take(&mut q.items),
                std::mem::take(&mut q.cp_requests),
            )
        };
        for p in batch.drain(..).chain(rest) {
            complete(p.done, Err(LogError::Failed(reason.clone())));
        }
        for r in cp_reqs.into_iter().chain(more_cp) {
            let _ = r.send(Err(LogError::Failed(reason.clone())));
        }
    }

    fn sync_segment(&mut self) -> io::Result<()> {
        self.fault(FaultPoint::SegmentSync)?;
        self.seg.sync_data()?;
        self.dirty = false;
        self.last_sync_at = Instant::now();
        Ok(())
    }

    /// Writes the batch (rolling segments as needed) with one write and, in
    /// Sync mode, one sync per segment touched. Returns each frame's offset.
    fn write_batch(&mut self, batch: &[Pending]) -> io::Result<Vec<u64>> {
        let limit = self.inner.opts.segment_bytes.max(1);
        let total: usize = batch.iter().map(|p| p.frame.len()).sum();
        let mut buf = Vec::with_capacity(total.min(64 << 20));
        let mut offsets = Vec::with_capacity(batch.len());
        for p in batch {
            let pending = self.seg_len + buf.len() as u64;
            if pending > 0 && pending + p.frame.len() as u64 > limit {
                self.flush(&mut buf)?;
                self.sync_segment()?;
                self.roll(p.seq)?;
            }
            offsets.push(self.seg_len + buf.len() as u64);
            buf.extend_from_slice(&p.frame);
        }
        self.flush(&mut buf)?;
        match self.inner.opts.durability {
            Durability::Sync => self.sync_segment()?,
            Durability::Async => {}
        }
        self.prepare_next();
        Ok(offsets)
    }

    /// Starts preparing the next segment in the background once the current
    /// one is half full. A failure to start is not an error here: the roll
    /// then prepares the segment itself.
    fn prepare_next(&mut self) {
        if self.prep.is_some() || self.seg_len < self.seg_cap / 2 {
            return;
        }
        let path = self.inner.dir.join(segment::PREPARED_FILE);
        let size = self.inner.opts.segment_bytes.max(1);
        let fault = self.inner.opts.fault.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("arbiter-log-prealloc".to_string())
            .spawn(move || {
                prepare_segment(
                    &path,
                    size,
                    BACKGROUND_SYNC_EVERY,
                    Some(&stop),
                    fault.as_ref(),
                )
            });
        if let Ok(handle) = spawned {
            self.prep = Some(Prep { handle, cancel });
        }
    }

    fn flush(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.fault(FaultPoint::SegmentWrite)?;
        self.dirty = true;
        self.seg.write_all(buf)?;
        self.seg_len += buf.len() as u64;
        // A frame larger than what is left grows the file.
        self.seg_cap = self.seg_cap.max(self.seg_len);
        buf.clear();
        Ok(())
    }

    fn roll(&mut self, first: u64) -> io::Result<()> {
        self.fault(FaultPoint::SegmentRoll)?;
        let size = self.inner.opts.segment_bytes.max(1);
        let ready = match self.prep.take() {
            Some(p) => matches!(p.handle.join(), Ok(Ok(()))),
            None => false,
        };
        if !ready {
            let path = self.inner.dir.join(segment::PREPARED_FILE);
            prepare_segment(&path, size, 0, None, self.inner.opts.fault.as_ref())?;
        }
        let (f, path) = install_segment(&self.inner.dir, first, false)?;
        self.rolled.push_back((first, self.seg_len));
        self.seg = f;
        self.seg_path = path;
        self.seg_len = 0;
        self.seg_cap = size;
        {
            let mut s = self.inner.shared.write().unwrap_or_else(|e| e.into_inner());
            s.segment_starts.push(first);
        }
        Ok(())
    }

    fn write_partials(&mut self, size: u64, tiles: &[PartialTile]) -> Result<(), LogError> {
        let tile_dir = self.inner.dir.join(TILE_DIR);
        self.fault(FaultPoint::PartialTileWrite)
            .map_err(io_at(&tile_dir))?;
        self.partials.write(size, tiles, Instant::now())
    }

    /// When the latest checkpoint, signed without its partial tiles, gets
    /// them if nothing comes before: [`PARTIAL_TILES_QUIET`] after it.
    fn catch_up_at(&self) -> Option<Instant> {
        (self.cp_count > 0 && self.partials.wanted(self.cp_size))
            .then(|| self.last_cp_at + PARTIAL_TILES_QUIET)
    }

    /// The latest checkpoint's partial tiles, if it was signed without them
    /// (within `partial_tiles_every` of the last one that got them), nothing
    /// is queued, and nothing was for [`PARTIAL_TILES_QUIET`] (or the
    /// writer is stopping).
    fn catch_up_partials(&mut self, stopping: bool) -> Result<(), LogError> {
        match self.catch_up_at() {
            Some(at) if stopping || Instant::now() >= at => {}
            _ => return Ok(()),
        }
        {
            let q = lock(&self.inner.queue);
            if !q.items.is_empty() || !q.cp_requests.is_empty() {
                return Ok(());
            }
        }
        let size = self.cp_size;
        let tiles = {
            let s = self.inner.shared.read().unwrap_or_else(|e| e.into_inner());
            s.tree.partial_tiles(size)
        };
        self.write_partials(size, &tiles)
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, LogError> {
        if self.dirty {
            self.sync_segment().map_err(io_at(&self.seg_path))?;
        }
        let every = self.inner.opts.partial_tiles_every;
        let (size, root, partial) = {
            let s = self.inner.shared.read().unwrap_or_else(|e| e.into_inner());
            let size = s.tree.size();
            let partial = self
                .partials
                .due(size, Instant::now(), every)
                .then(|| s.tree.partial_tiles(size));
            (size, s.tree.root()?, partial)
        };
        // The partial tiles of this size go first (its records are synced):
        // whoever reads the checkpoint finds them (see `crate::partial`).
        if let Some(tiles) = partial {
            self.write_partials(size, &tiles)?;
        }
        let ts = now_us().max(self.last_cp_ts);
        let cp = Checkpoint::sign(&self.inner.opts.node_id, size, &root, ts, &self.inner.key)?;
        let mut frame = Vec::with_capacity(400);
        segment::encode_frame(&cp.to_canonical_json(), &mut frame);
        let path = self.cp_path.clone();
        self.fault(FaultPoint::CheckpointWrite)
            .map_err(io_at(&path))?;
        self.cp_file.write_all(&frame).map_err(io_at(&path))?;
        self.fault(FaultPoint::CheckpointSync)
            .map_err(io_at(&path))?;
        self.cp_file.sync_data().map_err(io_at(&path))?;
        self.cp_count += 1;
        self.cp_last_offset = self.cp_bytes;
        self.cp_bytes += frame.len() as u64;
        // Only after the checkpoint is durable: the state is never ahead of
        // the file.
        let state_path = self.inner.dir.join(STATE_FILE);
        self.state
            .write(self.cp_count, size)
            .map_err(io_at(&state_path))?;
        self.cp_size = size;
        self.last_cp_ts = ts;
        self.last_cp_at = Instant::now();
        {
            let mut s = self.inner.shared.write().unwrap_or_else(|e| e.into_inner());
            s.latest = Some(cp.clone());
        }
        // Partial tiles that full tiles now stand for go, off this thread.
        let superseded = self.partials.superseded(size);
        if !superseded.is_empty() {
            // A sealer that is gone has failed the log already.
            let _ = self.seals.send(Job::Remove(superseded));
        }
        Ok(cp)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Stop a preparation still running; the file it leaves is removed
        // (by it, or by the next open).
        if let Some(p) = self.prep.take() {
            p.cancel.store(true, Ordering::Relaxed);
            let _ = p.handle.join();
        }
    }
}

#[cfg(test)]
mod lock_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn one_writer_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let opts = || LogOptions {
            node_id: "n".to_owned(),
            ..LogOptions::default()
        };
        let (first, _) = Log::open(dir.path(), opts()).unwrap();
        let second = Log::open(dir.path(), opts());
        assert!(
            matches!(&second, Err(LogError::Invalid(m)) if m.contains("open in another process")),
            "{second:?}"
        );
        drop(first);
        Log::open(dir.path(), opts()).unwrap();
    }
}
