//! Signed checkpoints and the log's Ed25519 signing key.
//!
//! A checkpoint commits the node to a tree size and root at a time; anyone
//! holding the public key can later prove inclusion of a record or
//! consistency between two checkpoints without trusting the node.
//!
//! Signed message (UTF-8, every line ends with `\n`):
//!
//! ```text
//! arbiter-checkpoint/v1
//! <node_id>
//! <tree_size, decimal>
//! <root hash, 64 lowercase hex>
//! <ts_us, decimal Unix microseconds>
//! ```
//!
//! Key files: `log-signing.key` holds the 32-byte Ed25519 seed as 64
//! lowercase hex characters plus a newline (mode 0600); `log-signing.pub`
//! holds the 32-byte public key the same way.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, hash_from_hex};

/// File name of the private signing seed.
pub const KEY_FILE: &str = "log-signing.key";
/// File name of the public key.
pub const PUB_FILE: &str = "log-signing.pub";
/// First line of the signed checkpoint body.
pub const CHECKPOINT_TAG: &str = "arbiter-checkpoint/v1";

/// Key and checkpoint errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Filesystem error.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Malformed key material.
    #[error("invalid key `{0}`")]
    BadKey(String),
    /// Random number generator failure.
    #[error("cannot generate a key: {0}")]
    Random(String),
    /// A field would make the signed body ambiguous.
    #[error("invalid node id `{0}`: must not contain a newline")]
    BadNodeId(String),
    /// The checkpoint is not well formed.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Signed by a different key.
    #[error("checkpoint key id `{found}` does not match the public key `{expected}`")]
    WrongKey {
        /// The key id of the verifying key.
        expected: String,
        /// The key id in the checkpoint.
        found: String,
    },
    /// The signature does not verify.
    #[error("checkpoint signature does not verify")]
    BadSignature,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An Ed25519 public key that verifies checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<PublicKey, CheckpointError> {
        let s = s.trim();
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| CheckpointError::BadKey(s.to_string()))?;
        VerifyingKey::from_bytes(&b)
            .map(PublicKey)
            .map_err(|_| CheckpointError::BadKey(s.to_string()))
    }

    /// Reads a `log-signing.pub` file.
    pub fn from_file(path: &Path) -> Result<PublicKey, CheckpointError> {
        let s = fs::read_to_string(path).map_err(io_err(path))?;
        PublicKey::from_hex(&s)
    }

    /// Lowercase hex of the 32 key bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// First 8 bytes of SHA-256 of the key, hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// Checks a signature made by [`KeyPair::sign_node_message`].
    pub fn verify_node_message(
        &self,
        purpose: &str,
        msg: &[u8],
        signature_hex: &str,
    ) -> Result<(), CheckpointError> {
        self.verify_hex(&node_message(purpose, msg), signature_hex)
    }

    /// Checks a strict Ed25519 signature, given as 128 hex characters, over `msg`.
    pub fn verify_hex(&self, msg: &[u8], signature_hex: &str) -> Result<(), CheckpointError> {
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature_hex, &mut sig).map_err(|_| CheckpointError::BadSignature)?;
        self.0
            .verify_strict(msg, &Signature::from_bytes(&sig))
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// The node's signing key.
pub struct KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A key pair from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        KeyPair {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// A fresh random key pair (not persisted).
    pub fn generate() -> Result<KeyPair, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CheckpointError::Random(e.to_string()))?;
        Ok(KeyPair::from_seed(&seed))
    }

    /// Loads `dir/log-signing.key`, or creates it (mode 0600, fsynced, then
    /// the directory fsynced) with a fresh random seed. (Re)writes
    /// `dir/log-signing.pub` if it is missing or does not match.
    pub fn load_or_create(dir: &Path) -> Result<KeyPair, CheckpointError> {
        KeyPair::load_or_create_named(dir, KEY_FILE, PUB_FILE)
    }

    /// [`KeyPair::load_or_create`] with other file names (a witness keeps its
    /// own key beside its state).
    pub fn load_or_create_named(
        dir: &Path,
        key_file: &str,
        pub_file: &str,
    ) -> Result<KeyPair, CheckpointError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key_path = dir.join(key_file);
        let kp = match fs::read_to_string(&key_path) {
            Ok(s) => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut seed)
                    .map_err(|_| CheckpointError::BadKey(key_path.display().to_string()))?;
                KeyPair::from_seed(&seed)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let kp = KeyPair::generate()?;
                let text = format!("{}\n", hex::encode(kp.signing.to_bytes()));
                write_atomic(dir, key_file, text.as_bytes(), 0o600)?;
                kp
            }
            Err(e) => {
                return Err(CheckpointError::Io {
                    path: key_path,
                    source: e,
                });
            }
        };
        let pub_path = dir.join(pub_file);
        let want = format!("{}\n", kp.public_key_hex());
        let current = fs::read_to_string(&pub_path).ok();
        if current.as_deref() != Some(want.as_str()) {
            write_atomic(dir, pub_file, want.as_bytes(), 0o644)?;
        }
        Ok(kp)
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Lowercase hex of the public key.
    pub fn public_key_hex(&self) -> String {
        self.public_key().to_hex()
    }

    /// Signs arbitrary bytes.
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Signs a message between the nodes of a fleet (128 hex characters), for `purpose`: the
    /// signed bytes start with [`NODE_MESSAGE_TAG`] and the purpose, so they can never be taken
    /// for a checkpoint body or a message of another purpose.
    pub fn sign_node_message(&self, purpose: &str, msg: &[u8]) -> String {
        hex::encode(self.sign_bytes(&node_message(purpose, msg)))
    }
}

/// The first line of every message a node signs for other nodes.
pub const NODE_MESSAGE_TAG: &str = "arbiter-node-message/v1";

fn node_message(purpose: &str, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NODE_MESSAGE_TAG.len() + purpose.len() + msg.len() + 2);
    out.extend_from_slice(NODE_MESSAGE_TAG.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(purpose.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(msg);
    out
}

/// Writes `dir/name` via a temporary file: create with `mode`, write, fsync,
/// rename, fsync the directory.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), CheckpointError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    let dst = dir.join(name);
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    sync_dir(dir).map_err(io_err(dir))
}

/// fsyncs a directory (no-op where unsupported).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A signed statement of the log's size and root at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The node whose log this is.
    pub node_id: String,
    /// Number of records covered.
    pub tree_size: u64,
    /// Merkle root at `tree_size`, 64 lowercase hex.
    pub root_hash: String,
    /// Signing time, Unix microseconds UTC.
    pub ts_us: i64,
    /// First 8 bytes of SHA-256 of the signing public key, hex.
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::signed_body`], 128 hex.
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn body(node_id: &str, tree_size: u64, root_hex: &str, ts_us: i64) -> String {
        format!("{CHECKPOINT_TAG}\n{node_id}\n{tree_size}\n{root_hex}\n{ts_us}\n")
    }

    /// The signed body of this checkpoint.
    pub fn signed_body(&self) -> String {
        Checkpoint::body(&self.node_id, self.tree_size, &self.root_hash, self.ts_us)
    }

    /// Signs a checkpoint.
    pub fn sign(
        node_id: &str,
        tree_size: u64,
        root: &Hash,
        ts_us: i64,
        key: &KeyPair,
    ) -> Result<Checkpoint, CheckpointError> {
        if node_id.contains('\n') {
            return Err(CheckpointError::BadNodeId(node_id.to_string()));
        }
        let root_hash = hex::encode(root);
        let body = Checkpoint::body(node_id, tree_size, &root_hash, ts_us);
        let sig = key.sign_bytes(body.as_bytes());
        Ok(Checkpoint {
            node_id: node_id.to_string(),
            tree_size,
            root_hash,
            ts_us,
            key_id: key.public_key().key_id(),
            signature: hex::encode(sig),
        })
    }

    /// The root as bytes.
    pub fn root(&self) -> Result<Hash, CheckpointError> {
        if self.root_hash.len() != 64 || self.root_hash.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(CheckpointError::Malformed(format!(
                "root hash `{}`",
                self.root_hash
            )));
        }
        hash_from_hex(&self.root_hash)
            .ok_or_else(|| CheckpointError::Malformed(format!("root hash `{}`", self.root_hash)))
    }

    /// Verifies the signature (strict Ed25519) and the key id against `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CheckpointError> {
        if self.node_id.contains('\n') {
            return Err(CheckpointError::BadNodeId(self.node_id.clone()));
        }
        self.root()?;
        let expected = key.key_id();
        if self.key_id != expected {
            return Err(CheckpointError::WrongKey {
                expected,
                found: self.key_id.clone(),
            });
        }
        key.verify_hex(self.signed_body().as_bytes(), &self.signature)
    }

    /// Canonical JSON of this checkpoint (the `checkpoints.log` payload).
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        use crate::canonical::{write_i64, write_string, write_u64};
        out.extend_from_slice(b"{\"key_id\":");
        write_string(&mut out, &self.key_id);
        out.extend_from_slice(b",\"node_id\":");
        write_string(&mut out, &self.node_id);
        out.extend_from_slice(b",\"root_hash\":");
        write_string(&mut out, &self.root_hash);
        out.extend_from_slice(b",\"signature\":");
        write_string(&mut out, &self.signature);
        out.extend_from_slice(b",\"tree_size\":");
        write_u64(&mut out, self.tree_size);
        out.extend_from_slice(b",\"ts_us\":");
        write_i64(&mut out, self.ts_us);
        out.push(b'}');
        out
    }

    /// Parses a checkpoint from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let kp = KeyPair::from_seed(&[7u8; 32]);
        let pk = kp.public_key();
        let cp = Checkpoint::sign("n1", 10, &[3u8; 32], 1234, &kp).unwrap();
        cp.verify(&pk).unwrap();
        assert_eq!(cp.key_id.len(), 16);
        let mut t = cp.clone();
        t.tree_size = 11;
        assert!(matches!(t.verify(&pk), Err(CheckpointError::BadSignature)));
        let mut t = cp.clone();
        t.ts_us = 1235;
        assert!(t.verify(&pk).is_err());
        let mut t = cp.clone();
        t.root_hash = hex::encode([4u8; 32]);
        assert!(t.verify(&pk).is_err());
        let mut t = cp.clone();
        t.node_id = "n2".into();
        assert!(t.verify(&pk).is_err());
        let other = KeyPair::from_seed(&[8u8; 32]).public_key();
        assert!(matches!(
            cp.verify(&other),
            Err(CheckpointError::WrongKey { .. })
        ));
        assert!(Checkpoint::sign("a\nb", 1, &[0; 32], 0, &kp).is_err());
        // canonical json round trip
        let j = cp.to_canonical_json();
        let generic =
            crate::canonical::canonical_json(&serde_json::to_value(&cp).unwrap()).unwrap();
        assert_eq!(j, generic);
        assert_eq!(Checkpoint::from_json(&j).unwrap(), cp);
        assert_eq!(
            cp.signed_body(),
            format!(
                "arbiter-checkpoint/v1\nn1\n10\n{}\n1234\n",
                hex::encode([3u8; 32])
            )
        );
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyPair::load_or_create(dir.path()).unwrap();
        let b = KeyPair::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        let pk = PublicKey::from_file(&dir.path().join(PUB_FILE)).unwrap();
        assert_eq!(pk, a.public_key());
        assert_eq!(PublicKey::from_hex(&a.public_key_hex()).unwrap(), pk);
        assert!(PublicKey::from_hex("zz").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.path().join(KEY_FILE), "nothex").unwrap();
        assert!(KeyPair::load_or_create(dir.path()).is_err());
    }
}
