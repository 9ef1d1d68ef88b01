//! In-memory structures of the live log that grow without pauses.
//!
//! The in-memory [`crate::MerkleTree`] keeps every level of the tree. Grown
//! the ordinary way, a `Vec` copies all it holds each time it doubles: a
//! pause that grows with the tree. [`ChunkedVec`] never moves what it
//! stores, so the cost of a push stays the same at ten entries and at ten
//! million. (The live log keeps its tree in tiles, see [`crate::tiles`].)

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
}
