//! In-memory structures of the live log that grow without pauses.
//!
//! The log keeps, for every record, its leaf hash (in the Merkle tree), its
//! byte offset and its decision id. Grown the ordinary way, a `Vec` copies
//! all it holds each time it doubles and a `HashMap` rehashes every key: at
//! half a million records that is a pause of tens to a hundred milliseconds,
//! taken on the commit path while every decision in flight waits for its
//! record. [`ChunkedVec`] never moves what it stores and [`DecisionIndex`]
//! rehashes one small shard at a time, so the cost of a push stays the same
//! at ten records and at ten million.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Entries per chunk of a [`ChunkedVec`] (a power of two).
const CHUNK_BITS: u32 = 14;
const CHUNK: usize = 1 << CHUNK_BITS;

/// An append-only vector in fixed-size chunks: `push` copies at most one
/// chunk (while that chunk grows to its full size), never the whole vector.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedVec<T> {
    // INVARIANT: every chunk but the last holds exactly CHUNK entries.
    chunks: Vec<Vec<T>>,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new() }
    }
}

impl<T> ChunkedVec<T> {
    /// An empty vector.
    pub fn new() -> Self {
        ChunkedVec::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    /// Appends `value`.
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(if self.chunks.is_empty() { 0 } else { CHUNK });
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
    }

    /// The entry at `index`.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks
            .get(index >> CHUNK_BITS)?
            .get(index & (CHUNK - 1))
    }
}

/// Shards of a [`DecisionIndex`]: at ten million records a shard holds about
/// ten thousand ids, rehashed in well under a millisecond.
const SHARDS: usize = 1024;

/// Decision id → index of the first record with that id, in shards so that
/// growing it rehashes one shard at a time.
#[derive(Debug, Clone)]
pub(crate) struct DecisionIndex {
    shards: Vec<HashMap<String, u64>>,
    pick: RandomState,
}

impl Default for DecisionIndex {
    fn default() -> Self {
        DecisionIndex {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
            pick: RandomState::new(),
        }
    }
}

impl DecisionIndex {
    fn shard(&self, id: &str) -> usize {
        // The high bits: the shard's own map uses the low ones of its hash.
        (self.pick.hash_one(id) >> 54) as usize % SHARDS
    }

    /// Records that `id` is at `index`, unless an earlier record has it.
    pub fn insert_first(&mut self, id: String, index: u64) {
        let s = self.shard(&id);
        if let Some(map) = self.shards.get_mut(s) {
            map.entry(id).or_insert(index);
        }
    }

    /// The index of the first record with `id`.
    pub fn get(&self, id: &str) -> Option<u64> {
        self.shards.get(self.shard(id))?.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn chunked_vec_reads_back_across_chunks() {
        let mut v = ChunkedVec::new();
        assert!(v.len() == 0 && v.get(0).is_none());
        let n = CHUNK * 3 + 17;
        for i in 0..n {
            v.push(i as u64 * 3);
        }
        assert_eq!(v.len(), n);
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, n - 1] {
            assert_eq!(v.get(i), Some(&(i as u64 * 3)), "{i}");
        }
        assert_eq!(v.get(n), None);
        assert_eq!(v.get(usize::MAX), None);
        // Full chunks are never reallocated: each holds exactly CHUNK.
        assert!(v.chunks[..3].iter().all(|c| c.len() == CHUNK));
    }

    #[test]
    fn decision_index_keeps_the_first_index_of_an_id() {
        let mut ix = DecisionIndex::default();
        for i in 0..5000u64 {
            ix.insert_first(format!("d-{i}"), i);
        }
        ix.insert_first("d-7".to_owned(), 9999);
        assert_eq!(ix.shards.iter().map(HashMap::len).sum::<usize>(), 5000);
        assert_eq!(ix.get("d-7"), Some(7));
        assert_eq!(ix.get("d-4999"), Some(4999));
        assert_eq!(ix.get("d-5000"), None);
        assert!(ix.shards.iter().filter(|s| !s.is_empty()).count() > SHARDS / 2);
    }
}
