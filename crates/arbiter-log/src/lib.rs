//! Arbiter's decision log: every authorization decision becomes a durable,
//! tamper-evident record.
//!
//! - [`record`]: the schema-1 [`DecisionRecord`], its canonical encoding and
//!   context redaction;
//! - [`merkle`]: RFC 6962/9162 Merkle tree, proofs and verifiers;
//! - [`checkpoint`]: the Ed25519 key and signed [`Checkpoint`]s;
//! - [`segment`] and [`store`]: frames, segment files, recovery, reading;
//! - [`archive`]: moving the oldest sealed segments to another directory;
//! - [`tiles`]: the tree on disk as C2SP tlog tiles ([`TiledTree`]), and
//!   (`partial.rs`) the partial tiles of each checkpoint's size;
//! - [`sealed`]: finished segments' index files and `sealed.log`, which
//!   keep the live log's memory bounded and its open short;
//! - [`state`]: `checkpoints.state`, what the writer last wrote to
//!   `checkpoints.log`;
//! - [`writer`]: the live [`Log`] (group commit, checkpoints, proofs);
//! - [`verify`]: offline verification of a directory or a proof;
//! - [`reader`]: read-only access to a live directory (follow, prove,
//!   consistency) without opening a writer;
//! - [`query`]: the [`RecordFilter`] used by `arbiter log query`;
//! - [`ocsf`]: mapping records to OCSF events for export;
//! - [`witness`]: cosigned checkpoints, a witness's state, and checking a
//!   log against what witnesses saw.
//!
//! Pure and synchronous: no async runtime, no network, no policy engine.

pub mod archive;
pub mod canonical;
pub mod checkpoint;
mod fastcheck;
mod grow;
pub mod merkle;
pub mod ocsf;
mod partial;
pub mod query;
pub mod reader;
pub mod record;
pub mod sealed;
pub mod segment;
pub mod state;
pub mod store;
pub mod tiles;
pub mod verify;
pub mod witness;
pub mod writer;

pub use canonical::{CanonicalError, canonical_json, sha256_digest as context_digest};

/// Whether `needle` occurs in `hay` (a record's bytes): the cheap test before a record is
/// decoded.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}
pub use checkpoint::{Checkpoint, CheckpointError, KeyPair, PublicKey, write_atomic};
pub use merkle::{
    Frontier, Hash, MerkleTree, ProofError, leaf_hash, node_hash, verify_consistency,
    verify_inclusion,
};
pub use query::{LAYERS, RecordFilter, TimeError, layer_of, parse_time};
pub use reader::{
    Follower, NewestPage, consistency_dir, latest_checkpoint, newest_records, prove_dir,
    prove_picked, read_checkpoints,
};
pub use record::{
    DecisionRecord, EntityRef, Outcome, PrincipalOutcome, RecordError, RecordSummary, SubjectRef,
    SummarySubject, format_rfc3339_us, redact,
};
pub use store::{LogError, OpenReport, RecordIter, read_records};
pub use tiles::TiledTree;
pub use verify::{
    Override, Problem, ProblemKind, VerifyError, VerifyOptions, VerifyReport, check_consistency,
    check_proof, verify_dir, verify_dir_with,
};
pub use writer::{
    AppendCallback, Appended, DEFAULT_CHECKPOINT_EVERY_RECORDS, DEFAULT_LIVENESS_EVERY,
    DEFAULT_PARTIAL_TILES_EVERY, DEFAULT_SEGMENT_BYTES, Durability, FaultHook, FaultPoint,
    FaultSwitch, Health, InclusionProofBundle, Log, LogOptions, MemoryUse, OVERRIDE_ACTION,
    OVERRIDE_ENFORCEMENT_POINT, Ticket,
};
