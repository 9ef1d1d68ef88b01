//! Frame format and segment files: the byte layout of the log on disk.
//!
//! Both the writer and the verifier parse the same frames through this
//! module, so there is exactly one definition of what a valid frame is and
//! what counts as a torn (never acknowledged) tail.
//!
//! A frame is `[u32 LE payload length][u32 LE CRC-32 (IEEE) of payload][payload]`.
//! Payloads are never empty and at most [`MAX_PAYLOAD`] bytes. Segment files
//! are named `seg-<20-digit zero-padded index of their first record>.log`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest accepted payload (16 MiB).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Checkpoint file name.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";

/// Appends a frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// File name of the segment whose first record has index `first`.
pub fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// The first record index encoded in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, sorted by first index.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// What is wrong with the frame at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header or payload runs past the end of the data.
    Incomplete,
    /// Zero-length payload.
    Empty,
    /// Declared length above [`MAX_PAYLOAD`].
    TooLarge(u32),
    /// Checksum mismatch; `end` is where the frame would end.
    Crc {
        /// Offset just past the frame.
        end: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => write!(f, "incomplete frame"),
            FrameError::Empty => write!(f, "empty frame"),
            FrameError::TooLarge(n) => write!(f, "frame length {n} exceeds the maximum"),
            FrameError::Crc { .. } => write!(f, "frame checksum mismatch"),
        }
    }
}

/// Parses the frame at `off`; returns the payload and the next offset.
pub fn parse_frame(buf: &[u8], off: usize) -> Result<(&[u8], usize), FrameError> {
    let rest = buf.get(off..).unwrap_or_default();
    let Some((header, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Incomplete);
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len32 = u32::from_le_bytes([l0, l1, l2, l3]);
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let len = len32 as usize;
    if len > body.len() {
        return Err(FrameError::Incomplete);
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len32));
    }
    let payload = &body[..len];
    let end = off + HEADER_LEN + len;
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Crc { end });
    }
    Ok((payload, end))
}

/// Whether a frame error at `off` in the last file of a sequence is a torn
/// tail — bytes that were never acknowledged: a frame cut short by the end
/// of the file, a final frame whose checksum fails, or a run of zero bytes
/// to the end (pre-allocated or zero-filled after a crash).
pub fn is_torn_tail(buf: &[u8], off: usize, err: FrameError) -> bool {
    match err {
        FrameError::Incomplete => true,
        FrameError::Crc { end } => end == buf.len(),
        FrameError::Empty | FrameError::TooLarge(_) => {
            buf.get(off..).unwrap_or_default().iter().all(|b| *b == 0)
        }
    }
}

/// One step of scanning a buffer of frames.
#[derive(Debug)]
pub enum Scan<'a> {
    /// A valid frame at `offset`.
    Frame {
        /// Frame start.
        offset: usize,
        /// Its payload.
        payload: &'a [u8],
    },
    /// A bad frame at `offset`.
    Bad {
        /// Frame start.
        offset: usize,
        /// What is wrong.
        error: FrameError,
        /// Whether it qualifies as a torn tail (if this is the last file).
        torn: bool,
    },
}

/// Iterates the frames of a buffer; stops after the first bad frame.
#[derive(Debug)]
pub struct FrameIter<'a> {
    buf: &'a [u8],
    off: usize,
    done: bool,
}

impl<'a> FrameIter<'a> {
    /// Scans `buf` from the start.
    pub fn new(buf: &'a [u8]) -> Self {
        FrameIter {
            buf,
            off: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Scan<'a>;

    fn next(&mut self) -> Option<Scan<'a>> {
        if self.done || self.off >= self.buf.len() {
            return None;
        }
        let offset = self.off;
        match parse_frame(self.buf, offset) {
            Ok((payload, next)) => {
                self.off = next;
                Some(Scan::Frame { offset, payload })
            }
            Err(error) => {
                self.done = true;
                Some(Scan::Bad {
                    offset,
                    error,
                    torn: is_torn_tail(self.buf, offset, error),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_name(0), "seg-00000000000000000000.log");
        assert_eq!(parse_segment_name(&segment_name(12345)), Some(12345));
        assert_eq!(parse_segment_name("seg-1.log"), None);
        assert_eq!(parse_segment_name("checkpoints.log"), None);
    }

    #[test]
    fn frames() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"world!", &mut buf);
        let v: Vec<_> = FrameIter::new(&buf).collect();
        assert!(matches!(
            v[0],
            Scan::Frame {
                offset: 0,
                payload: b"hello"
            }
        ));
        assert!(matches!(
            v[1],
            Scan::Frame {
                offset: 13,
                payload: b"world!"
            }
        ));
        assert_eq!(v.len(), 2);
        // cut short
        let cut = &buf[..buf.len() - 1];
        let v: Vec<_> = FrameIter::new(cut).collect();
        assert!(matches!(
            v[1],
            Scan::Bad {
                offset: 13,
                error: FrameError::Incomplete,
                torn: true
            }
        ));
        // checksum failure in the middle is not torn; at the end it is
        let mut mid = buf.clone();
        mid[9] ^= 1;
        let v: Vec<_> = FrameIter::new(&mid).collect();
        assert!(matches!(
            v[0],
            Scan::Bad {
                offset: 0,
                error: FrameError::Crc { .. },
                torn: false
            }
        ));
        let mut last = buf.clone();
        let n = last.len();
        last[n - 1] ^= 1;
        let v: Vec<_> = FrameIter::new(&last).collect();
        assert!(matches!(v[1], Scan::Bad { torn: true, .. }));
        // zero fill is torn
        let mut z = buf.clone();
        z.extend_from_slice(&[0u8; 20]);
        let v: Vec<_> = FrameIter::new(&z).collect();
        assert!(matches!(
            v[2],
            Scan::Bad {
                error: FrameError::Empty,
                torn: true,
                ..
            }
        ));
    }
}
