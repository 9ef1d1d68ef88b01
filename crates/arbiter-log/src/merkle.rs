//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.
//!
//! The log's tamper evidence rests on this module: leaves are
//! `SHA-256(0x00 || data)`, interior nodes `SHA-256(0x01 || left || right)`,
//! the empty tree hashes to `SHA-256("")`. [`MerkleTree`] keeps every full
//! subtree hash it has seen, so appends are O(1) amortized and roots and
//! proofs for any past size are O(log n). The verifiers follow RFC 9162
//! §2.1.3.2 and §2.1.4.2 step by step.

use sha2::{Digest, Sha256};

use crate::grow::ChunkedVec;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof or a proof request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The requested tree size is larger than the tree.
    #[error("tree size {requested} exceeds the current size {available}")]
    SizeOutOfRange {
        /// Requested size.
        requested: u64,
        /// Available size.
        available: u64,
    },
    /// Old size greater than new size.
    #[error("old size {old} is greater than new size {new}")]
    SizeOrder {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// The proof has the wrong number of hashes.
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    /// The recomputed root does not match.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly less than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only in-memory Merkle tree.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    // INVARIANT: levels[0] holds every leaf hash; levels[h][i] is the hash of
    // the complete subtree over leaves [i * 2^h, (i + 1) * 2^h), and every
    // complete subtree that fits in the current size is present. Maintained by
    // `push`, the only mutator.
    // Each level is a `ChunkedVec` so that appending never copies a level.
    levels: Vec<ChunkedVec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        MerkleTree {
            levels: vec![ChunkedVec::new()],
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash (already `leaf_hash`ed); returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(ChunkedVec::new());
        }
        let index = self.size();
        self.levels[0].push(leaf);
        let mut h = 0;
        while self.levels[h].len().is_multiple_of(2) {
            let n = self.levels[h].len();
            let (Some(left), Some(right)) = (self.levels[h].get(n - 2), self.levels[h].get(n - 1))
            else {
                break;
            };
            let parent = node_hash(left, right);
            if self.levels.len() == h + 1 {
                self.levels.push(ChunkedVec::new());
            }
            self.levels[h + 1].push(parent);
            h += 1;
        }
        index
    }

    /// Appends `leaf_hash(data)`; returns its index.
    pub fn push_data(&mut self, data: &[u8]) -> u64 {
        self.push(leaf_hash(data))
    }

    /// The leaf hash at `index`, if present.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// Root for the current size.
    pub fn root(&self) -> Hash {
        range_hash(self, 0, self.size()).unwrap_or_else(|_| empty_root())
    }

    /// Root of the tree as it was at `size`.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        root_at(self, size)
    }

    /// Audit path for leaf `index` in the tree of size `size` (RFC 6962
    /// PATH), ordered from the leaf up.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        inclusion_proof(self, index, size)
    }

    /// Consistency proof between sizes `old_size` and `new_size` (RFC 6962
    /// PROOF). Empty when `old_size` is 0 or equals `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        consistency_proof(self, old_size, new_size)
    }
}

impl Subtrees for MerkleTree {
    type Error = ProofError;

    fn size(&self) -> u64 {
        MerkleTree::size(self)
    }

    fn subtree(&self, height: u32, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(height as usize)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(ProofError::SizeOutOfRange {
                requested: (index + 1) << height,
                available: MerkleTree::size(self),
            })
    }
}

/// A Merkle tree that can give the hash of any complete subtree inside its
/// size: what roots and proofs for any past size are computed from, whether
/// the tree is all in memory ([`MerkleTree`]) or in tiles on disk.
pub trait Subtrees {
    /// Why a subtree could not be read.
    type Error: From<ProofError>;

    /// Number of leaves.
    fn size(&self) -> u64;

    /// The hash of the complete subtree of height `height` over leaves
    /// `[index << height, (index + 1) << height)`, which lie inside the
    /// tree.
    fn subtree(&self, height: u32, index: u64) -> Result<Hash, Self::Error>;
}

fn check_size<T: Subtrees + ?Sized>(t: &T, size: u64) -> Result<(), ProofError> {
    if size > t.size() {
        return Err(ProofError::SizeOutOfRange {
            requested: size,
            available: t.size(),
        });
    }
    Ok(())
}

/// MTH(D[start:end]); `end <= size`. Ranges produced by the RFC recursion
/// have every left part aligned, so each complete part is one subtree.
fn range_hash<T: Subtrees + ?Sized>(t: &T, start: u64, end: u64) -> Result<Hash, T::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let h = n.trailing_zeros();
        return t.subtree(h, start >> h);
    }
    let k = split_point(n);
    Ok(node_hash(
        &range_hash(t, start, start + k)?,
        &range_hash(t, start + k, end)?,
    ))
}

/// Root of `t` as it was at `size`.
pub fn root_at<T: Subtrees + ?Sized>(t: &T, size: u64) -> Result<Hash, T::Error> {
    check_size(t, size)?;
    range_hash(t, 0, size)
}

/// Audit path for leaf `index` in the tree of size `size` (RFC 6962 PATH),
/// ordered from the leaf up.
pub fn inclusion_proof<T: Subtrees + ?Sized>(
    t: &T,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, T::Error> {
    check_size(t, size)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    let mut out = Vec::new();
    path(t, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<T: Subtrees + ?Sized>(
    t: &T,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), T::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(t, m, start, start + k, out)?;
        out.push(range_hash(t, start + k, end)?);
    } else {
        path(t, m - k, start + k, end, out)?;
        out.push(range_hash(t, start, start + k)?);
    }
    Ok(())
}

/// Consistency proof between sizes `old_size` and `new_size` (RFC 6962
/// PROOF). Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof<T: Subtrees + ?Sized>(
    t: &T,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, T::Error> {
    check_size(t, new_size)?;
    if old_size > new_size {
        return Err(ProofError::SizeOrder {
            old: old_size,
            new: new_size,
        }
        .into());
    }
    let mut out = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(out);
    }
    subproof(t, old_size, 0, new_size, true, &mut out)?;
    Ok(out)
}

fn subproof<T: Subtrees + ?Sized>(
    t: &T,
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), T::Error> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(range_hash(t, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(t, m, start, start + k, b, out)?;
        out.push(range_hash(t, start + k, end)?);
    } else {
        subproof(t, m - k, start + k, end, false, out)?;
        out.push(range_hash(t, start, start + k)?);
    }
    Ok(())
}

/// A compact Merkle frontier: enough state to append leaves and compute the
/// current root without keeping the leaves (used by the streaming verifier).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    // INVARIANT: `nodes` holds the roots of the maximal complete subtrees of
    // the first `size` leaves, left to right, with strictly decreasing
    // heights matching the set bits of `size`.
    nodes: Vec<Hash>,
    size: u64,
}

impl Frontier {
    /// Empty frontier.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_seeing(leaf, &mut |_, _| {});
    }

    /// Appends a leaf hash, calling `seen(height, hash)` for the leaf
    /// (height 0) and for every complete subtree the leaf completes, lowest
    /// first: the hashes a tiled tree stores.
    pub(crate) fn push_seeing(&mut self, leaf: Hash, seen: &mut dyn FnMut(u32, &Hash)) {
        let mut h = leaf;
        let mut s = self.size;
        let mut height = 0;
        seen(height, &h);
        while s & 1 == 1 {
            if let Some(left) = self.nodes.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
            height += 1;
            seen(height, &h);
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(mut acc) = iter.next().copied() else {
            return empty_root();
        };
        for left in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Verifies an inclusion proof exactly as RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof exactly as RFC 9162 §2.1.4.2, plus the
/// trivial cases: `old_size == 0` (any tree extends the empty one; the proof
/// must be empty) and `old_size == new_size` (the proof must be empty and the
/// roots equal).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // 1. An empty path fails.
    let Some((first, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength);
    };
    // 2. If first is an exact power of 2, prepend first_hash.
    let (start, rest): (Hash, &[Hash]) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (*first, rest)
    };
    // 3.
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    // 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5.
    let mut fr = start;
    let mut sr = start;
    // 6.
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // 7.
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Parses a 64-character hex string into a hash.
pub fn hash_from_hex(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    // ---- Naive reference, straight from RFC 6962 §2.1 ----
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }
    fn ref_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }
    fn ref_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = ref_subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
    fn ref_proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        if m == 0 || m == d.len() {
            return vec![];
        }
        ref_subproof(m, d, true)
    }

    fn leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    fn h(s: &str) -> Hash {
        hash_from_hex(s).unwrap()
    }

    fn tree_of(d: &[Vec<u8>]) -> MerkleTree {
        let mut t = MerkleTree::new();
        for x in d {
            t.push_data(x);
        }
        t
    }

    // Roots for sizes 1..=8 of the well-known RFC 6962 test leaves (as used
    // by the Certificate Transparency reference implementations).
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn empty_root_kat() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(MerkleTree::new().root(), empty_root());
        assert_eq!(Frontier::new().root(), empty_root());
    }

    #[test]
    fn known_roots() {
        let d = leaves();
        let t = tree_of(&d);
        let mut f = Frontier::new();
        for (i, want) in ROOTS.iter().enumerate() {
            f.push(leaf_hash(&d[i]));
            assert_eq!(
                hex::encode(t.root_at(i as u64 + 1).unwrap()),
                *want,
                "size {}",
                i + 1
            );
            assert_eq!(hex::encode(mth(&d[..=i])), *want);
            assert_eq!(hex::encode(f.root()), *want);
        }
        assert_eq!(t.root(), h(ROOTS[7]));
    }

    #[test]
    fn known_inclusion_proofs() {
        let d = leaves();
        let t = tree_of(&d);
        let cases: &[(u64, u64, &[&str])] = &[
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (idx, size, want) in cases {
            let got = t.inclusion_proof(*idx, *size).unwrap();
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(got, want, "index {idx} size {size}");
            assert_eq!(got, ref_path(*idx as usize, &d[..*size as usize]));
            let root = h(ROOTS[*size as usize - 1]);
            verify_inclusion(&leaf_hash(&d[*idx as usize]), *idx, *size, &got, &root).unwrap();
        }
    }

    #[test]
    fn known_consistency_proofs() {
        let d = leaves();
        let t = tree_of(&d);
        let cases: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in cases {
            let got = t.consistency_proof(*m, *n).unwrap();
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(got, want, "{m} -> {n}");
            assert_eq!(got, ref_proof(*m as usize, &d[..*n as usize]));
            verify_consistency(
                *m,
                *n,
                &h(ROOTS[*m as usize - 1]),
                &h(ROOTS[*n as usize - 1]),
                &got,
            )
            .unwrap();
        }
    }

    #[test]
    fn inclusion_negatives() {
        let d = leaves();
        let t = tree_of(&d);
        let root = t.root();
        let leaf = leaf_hash(&d[5]);
        let proof = t.inclusion_proof(5, 8).unwrap();
        verify_inclusion(&leaf, 5, 8, &proof, &root).unwrap();
        for i in 0..proof.len() {
            for bit in [0usize, 7, 255] {
                let mut bad = proof.clone();
                bad[i][bit / 8] ^= 1 << (bit % 8);
                assert!(verify_inclusion(&leaf, 5, 8, &bad, &root).is_err());
            }
        }
        assert!(verify_inclusion(&leaf, 4, 8, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, 6, 8, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, 8, 8, &proof, &root).is_err());
        // RFC 9162 binds the size through the root: the same path checked
        // against the root of another size must fail.
        assert!(verify_inclusion(&leaf, 5, 7, &proof, &t.root_at(7).unwrap()).is_err());
        assert!(verify_inclusion(&leaf, 5, 9, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, 5, 16, &proof, &root).is_err());
        let mut long = proof.clone();
        long.push([0u8; 32]);
        assert_eq!(
            verify_inclusion(&leaf, 5, 8, &long, &root),
            Err(ProofError::WrongLength)
        );
        assert_eq!(
            verify_inclusion(&leaf, 5, 8, &proof[..2], &root),
            Err(ProofError::WrongLength)
        );
        assert!(verify_inclusion(&leaf_hash(&d[4]), 5, 8, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, 5, 8, &proof, &t.root_at(7).unwrap()).is_err());
        assert_eq!(
            t.inclusion_proof(8, 8),
            Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert!(t.inclusion_proof(0, 9).is_err());
        // single-leaf tree: empty proof only
        assert!(verify_inclusion(&leaf_hash(&d[0]), 0, 1, &[], &h(ROOTS[0])).is_ok());
        assert!(verify_inclusion(&leaf_hash(&d[0]), 0, 1, &[[0; 32]], &h(ROOTS[0])).is_err());
    }

    #[test]
    fn consistency_negatives() {
        let d = leaves();
        let t = tree_of(&d);
        let (o, n) = (h(ROOTS[5]), h(ROOTS[7]));
        let proof = t.consistency_proof(6, 8).unwrap();
        verify_consistency(6, 8, &o, &n, &proof).unwrap();
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][31] ^= 1;
            assert!(verify_consistency(6, 8, &o, &n, &bad).is_err());
        }
        let mut long = proof.clone();
        long.push([7u8; 32]);
        assert!(verify_consistency(6, 8, &o, &n, &long).is_err());
        assert!(verify_consistency(6, 8, &o, &n, &proof[..2]).is_err());
        assert!(verify_consistency(6, 8, &o, &n, &[]).is_err());
        assert!(verify_consistency(5, 8, &o, &n, &proof).is_err());
        assert!(verify_consistency(6, 7, &o, &t.root_at(7).unwrap(), &proof).is_err());
        assert!(verify_consistency(6, 8, &n, &o, &proof).is_err());
        assert!(verify_consistency(8, 6, &n, &o, &proof).is_err());
        // trivial cases
        assert!(verify_consistency(0, 8, &empty_root(), &n, &[]).is_ok());
        assert!(verify_consistency(0, 8, &empty_root(), &n, &[n]).is_err());
        assert!(verify_consistency(8, 8, &n, &n, &[]).is_ok());
        assert!(verify_consistency(8, 8, &o, &n, &[]).is_err());
        assert!(t.consistency_proof(8, 9).is_err());
        assert!(t.consistency_proof(7, 6).is_err());
    }

    #[test]
    fn large_tree_roots_are_fast_and_match_frontier() {
        let mut t = MerkleTree::new();
        let mut f = Frontier::new();
        for i in 0u64..100_000 {
            let l = leaf_hash(&i.to_le_bytes());
            t.push(l);
            f.push(l);
        }
        assert_eq!(t.root(), f.root());
        let p = t.inclusion_proof(12_345, 99_999).unwrap();
        verify_inclusion(
            &t.leaf(12_345).unwrap(),
            12_345,
            99_999,
            &p,
            &t.root_at(99_999).unwrap(),
        )
        .unwrap();
        let c = t.consistency_proof(77_777, 100_000).unwrap();
        verify_consistency(77_777, 100_000, &t.root_at(77_777).unwrap(), &t.root(), &c).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn proofs_match_reference(size in 1usize..300, seed in any::<u64>()) {
            let d: Vec<Vec<u8>> = (0..size).map(|i| (seed ^ i as u64).to_le_bytes()[..(i % 8) + 1].to_vec()).collect();
            let t = tree_of(&d);
            let mut f = Frontier::new();
            for n in 1..=size {
                f.push(leaf_hash(&d[n - 1]));
                let root = mth(&d[..n]);
                prop_assert_eq!(t.root_at(n as u64).unwrap(), root);
                prop_assert_eq!(f.root(), root);
            }
            // every inclusion proof for the full size and a few other sizes
            for n in [size, size.div_ceil(2), 1] {
                let root = t.root_at(n as u64).unwrap();
                for i in 0..n {
                    let p = t.inclusion_proof(i as u64, n as u64).unwrap();
                    prop_assert_eq!(&p, &ref_path(i, &d[..n]));
                    prop_assert!(verify_inclusion(&leaf_hash(&d[i]), i as u64, n as u64, &p, &root).is_ok());
                }
            }
            // every consistency proof into the full size, and from every size into a middle one
            let new_root = t.root();
            for m in 0..=size {
                let p = t.consistency_proof(m as u64, size as u64).unwrap();
                prop_assert_eq!(&p, &ref_proof(m, &d));
                let old_root = t.root_at(m as u64).unwrap();
                prop_assert!(verify_consistency(m as u64, size as u64, &old_root, &new_root, &p).is_ok());
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 0x80;
                    prop_assert!(verify_consistency(m as u64, size as u64, &old_root, &new_root, &bad).is_err());
                }
            }
            let mid = size / 2;
            for m in 0..=mid {
                let p = t.consistency_proof(m as u64, mid as u64).unwrap();
                prop_assert_eq!(&p, &ref_proof(m, &d[..mid]));
                prop_assert!(verify_consistency(m as u64, mid as u64, &t.root_at(m as u64).unwrap(), &t.root_at(mid as u64).unwrap(), &p).is_ok());
            }
        }
    }
}
