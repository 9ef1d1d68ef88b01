//! Frame format and segment files: the byte layout of the log on disk.
//!
//! Both the writer and the verifier parse the same frames through this
//! module, so there is exactly one definition of what a valid frame is, where
//! the data of a file ends, and what counts as a torn (never acknowledged)
//! tail.
//!
//! A frame is `[u32 LE payload length][u32 LE CRC-32 (IEEE) of payload][payload]`.
//! Payloads are never empty and at most [`MAX_PAYLOAD`] bytes. Segment files
//! are named `seg-<20-digit zero-padded index of their first record>.log`.
//!
//! Segment files are **preallocated**: the writer creates each one at its full
//! size filled with (written, synced) zeros and then writes frames in place,
//! so that syncing a batch never has to commit file-size metadata. The data
//! of a file therefore ends at its **logical end**: the end of the file, or
//! the first frame header that is all zero, provided every byte from there to
//! the end of the file is zero (the "zero tail"). Segments written before
//! preallocation simply have no zero tail. See [`classify_end`] for what a
//! bad frame followed by other bytes means.
//!
//! A **sealed** segment may be stored compressed instead, as
//! `seg-<…>.log.zst`: its data (up to its logical end, no zero tail) in
//! independent zstd frames, each a whole number of record frames (see
//! [`crate::sealed`]). Readers go through [`open_segment`],
//! [`read_segment`] and [`read_segment_from`], which give the same bytes
//! either way; when both files exist (a seal in progress) the uncompressed
//! one is read.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest accepted payload (16 MiB).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Checkpoint file name.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";
/// Where the writer prepares (zero-fills) the next segment before renaming it
/// to its `seg-…​.log` name; not a segment, and removed when a log is opened.
pub const PREPARED_FILE: &str = "seg-next.prealloc";

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

/// File name of the compressed form of that segment.
pub fn compressed_segment_name(first: u64) -> String {
    format!("seg-{first:020}.log.zst")
}

/// The first record index encoded in a segment file name (either form).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("seg-")?;
    let digits = rest
        .strip_suffix(".log")
        .or_else(|| rest.strip_suffix(".log.zst"))?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `path` names a compressed segment.
pub fn is_compressed(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(".log.zst"))
}

/// Largest decompressed segment a reader accepts: a damaged or hostile
/// compressed file cannot make it allocate more.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Opens `path`, or, when a `.log` segment is gone (sealed and compressed
/// since it was listed), its compressed form. Returns the file and its path.
fn open_either(path: &Path) -> io::Result<(File, PathBuf)> {
    match File::open(path) {
        Ok(f) => Ok((f, path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !is_compressed(path) => {
            let mut other = path.as_os_str().to_owned();
            other.push(".zst");
            let other = PathBuf::from(other);
            File::open(&other).map(|f| (f, other)).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

/// A decoder that fails once it has given [`MAX_DECOMPRESSED`] bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "compressed segment decompresses to more than 1 GiB",
            )
        })?;
        Ok(n)
    }
}

/// A reader of the data of segment `path`, compressed or not. A compressed
/// segment that does not decompress gives an `InvalidData` error.
pub fn open_segment(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let (file, path) = open_either(path)?;
    if is_compressed(&path) {
        let decoder = zstd::stream::read::Decoder::new(file)?;
        Ok(Box::new(Bounded {
            inner: decoder,
            left: MAX_DECOMPRESSED,
        }))
    } else {
        Ok(Box::new(file))
    }
}

/// The data of segment `path`, compressed or not.
pub fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    read_segment_from(path, 0)
}

/// The data of segment `path` from byte `from` (of the uncompressed data).
pub fn read_segment_from(path: &Path, from: u64) -> io::Result<Vec<u8>> {
    let (mut file, real) = open_either(path)?;
    let mut buf = Vec::new();
    if is_compressed(&real) {
        open_segment(&real)?.read_to_end(&mut buf)?;
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(buf.len());
        buf.drain(..from);
    } else {
        file.seek(SeekFrom::Start(from))?;
        file.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// The segment files in `dir`, sorted by first index.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((first, entry.path()));
        }
    }
    // Segments moved to an archive directory (see `crate::archive`), where
    // it is reachable.
    for a in crate::archive::archives(dir).unwrap_or_default() {
        let Ok(entries) = fs::read_dir(&a.dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name)
                && first >= a.first
                && first < a.end
            {
                out.push((first, entry.path()));
            }
        }
    }
    // Both forms of one segment (a seal in progress): the uncompressed one.
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(is_compressed(&a.1).cmp(&is_compressed(&b.1)))
    });
    out.dedup_by_key(|s| s.0);
    Ok(out)
}

/// The file to read segment `first` of the log in `dir` from: in the log
/// directory, or in the archive directory it was moved to. Its `.log` name;
/// readers fall back to the compressed form.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    let live = dir.join(segment_name(first));
    let moved = !live.is_file() && !dir.join(compressed_segment_name(first)).is_file();
    match crate::archive::dir_of(dir, first) {
        Some(a) if moved => a.join(segment_name(first)),
        _ => live,
    }
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

/// What the bytes from a bad frame at `off` to the end of the buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// All zero (or nothing): the clean logical end of the data — the unused
    /// part of a preallocated segment.
    Zero,
    /// A frame that was being written when the writer stopped, followed only
    /// by zeros: a frame cut short by the end of the file, or one whose
    /// checksum fails with nothing but zeros after it. `len` bytes from `off`
    /// hold its non-zero bytes. Acceptable only at the end of the last file
    /// (where it was never acknowledged).
    Torn {
        /// Bytes from `off` to the last non-zero byte, inclusive.
        len: usize,
    },
    /// Anything else: non-zero bytes after the logical end that are not
    /// part of a frame being written. Always corruption.
    Garbage,
}

/// Position just past the last non-zero byte of `b` (0 if all zero).
pub fn nonzero_end(b: &[u8]) -> usize {
    const W: usize = 64;
    let mut end = b.len();
    // The unaligned tail first, then 64-byte blocks from the end (OR-folded
    // without early exit, so the compiler can vectorise the common all-zero
    // case).
    let tail = end % W;
    if let Some(p) = b
        .get(end - tail..)
        .and_then(|t| t.iter().rposition(|x| *x != 0))
    {
        return end - tail + p + 1;
    }
    end -= tail;
    while end >= W {
        let Some(block) = b.get(end - W..end) else {
            break;
        };
        if block.iter().fold(0u8, |a, x| a | x) != 0 {
            return end - W + block.iter().rposition(|x| *x != 0).map_or(W, |p| p + 1);
        }
        end -= W;
    }
    0
}

/// Classifies the bytes from the bad frame at `off` (which failed with `err`)
/// to the end of `buf`, the whole rest of a file.
pub fn classify_end(buf: &[u8], off: usize, err: FrameError) -> End {
    let rest = buf.get(off..).unwrap_or_default();
    let nz = nonzero_end(rest);
    if nz == 0 {
        return End::Zero;
    }
    match err {
        // The frame's declared length runs past the end of the file: the
        // file ended while it was being written.
        FrameError::Incomplete => End::Torn { len: nz },
        // Written in part: its non-zero bytes all lie within the frame.
        FrameError::Crc { end } if nz <= end.saturating_sub(off) => End::Torn { len: nz },
        FrameError::Crc { .. } | FrameError::Empty | FrameError::TooLarge(_) => End::Garbage,
    }
}

/// Whether a frame error at `off` in the last file of a sequence ends its
/// data acceptably: a zero tail or a torn (never acknowledged) frame, see
/// [`classify_end`].
pub fn is_torn_tail(buf: &[u8], off: usize, err: FrameError) -> bool {
    classify_end(buf, off, err) != End::Garbage
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

/// Iterates the frames of a buffer; ends at a zero tail (see [`End::Zero`])
/// and stops after the first bad frame.
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

    /// The offset just past the last valid frame returned so far: once the
    /// iterator has ended without a bad frame, the logical end of the data.
    pub fn offset(&self) -> usize {
        self.off
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
                match classify_end(self.buf, offset, error) {
                    End::Zero => None,
                    end => Some(Scan::Bad {
                        offset,
                        error,
                        torn: end != End::Garbage,
                    }),
                }
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
        // a zero tail is the clean end of the data
        let mut z = buf.clone();
        z.extend_from_slice(&[0u8; 20]);
        let mut it = FrameIter::new(&z);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.offset(), buf.len());
    }

    /// A preallocated segment: `frames` frames, then zeros to `size` bytes.
    fn prealloc(frames: &[&[u8]], size: usize) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        for f in frames {
            encode_frame(f, &mut buf);
        }
        let end = buf.len();
        buf.resize(size, 0);
        (buf, end)
    }

    #[test]
    fn zero_tail_is_the_logical_end() {
        let (buf, end) = prealloc(&[b"one", b"two", b"three"], 4096);
        let mut it = FrameIter::new(&buf);
        assert_eq!(it.by_ref().count(), 3);
        assert_eq!(it.offset(), end);
        assert_eq!(
            classify_end(&buf, end, parse_frame(&buf, end).unwrap_err()),
            End::Zero
        );
        // an entirely zero (fresh) segment holds no frames
        let zero = vec![0u8; 1000];
        assert_eq!(FrameIter::new(&zero).count(), 0);
        // a frame that exactly fills the file, no zero tail
        let (full, end) = prealloc(&[b"exact"], 13);
        assert_eq!(end, 13);
        assert_eq!(FrameIter::new(&full).count(), 1);
    }

    #[test]
    fn torn_frame_before_zeros() {
        let (mut buf, end) = prealloc(&[b"one", b"two"], 4096);
        let mut frame = Vec::new();
        encode_frame(b"a frame that was being written", &mut frame);
        // every prefix of a frame written in place is torn, and only its
        // written (non-zero) bytes need zeroing
        for cut in 1..frame.len() {
            buf[end..end + cut].copy_from_slice(&frame[..cut]);
            let v: Vec<_> = FrameIter::new(&buf).collect();
            assert_eq!(v.len(), 3, "cut {cut}");
            let Scan::Bad {
                offset,
                error,
                torn,
            } = v[2]
            else {
                panic!("cut {cut}: {:?}", v[2]);
            };
            assert_eq!(offset, end);
            assert!(torn, "cut {cut}: {error:?}");
            let written = nonzero_end(&frame[..cut]);
            assert_eq!(
                classify_end(&buf, end, error),
                End::Torn { len: written },
                "cut {cut}"
            );
            buf[end..end + cut].fill(0);
        }
        // a whole frame with one payload byte lost (a sector not written)
        buf[end..end + frame.len()].copy_from_slice(&frame);
        buf[end + 12] = 0;
        let err = parse_frame(&buf, end).unwrap_err();
        assert!(matches!(err, FrameError::Crc { .. }));
        assert_eq!(classify_end(&buf, end, err), End::Torn { len: frame.len() });
        // the file ends inside the frame (an old, growing segment)
        let cut = &buf[..end + 10];
        let err = parse_frame(cut, end).unwrap_err();
        assert_eq!(err, FrameError::Incomplete);
        assert_eq!(classify_end(cut, end, err), End::Torn { len: 10 });
    }

    #[test]
    fn garbage_after_the_logical_end_is_corruption() {
        let (buf, end) = prealloc(&[b"one", b"two"], 4096);
        // a non-zero byte in the zero tail past an all-zero header (one in
        // the header itself is a header being written: torn)
        for at in [end + 8, end + 9, end + 100, 4095] {
            let mut b = buf.clone();
            b[at] = 0x5a;
            let v: Vec<_> = FrameIter::new(&b).collect();
            assert_eq!(v.len(), 3, "at {at}");
            assert!(
                matches!(v[2], Scan::Bad { offset, torn: false, .. } if offset == end),
                "at {at}: {:?}",
                v[2]
            );
            let err = parse_frame(&b, end).unwrap_err();
            assert_eq!(classify_end(&b, end, err), End::Garbage, "at {at}");
            assert!(!is_torn_tail(&b, end, err));
        }
        for at in [end, end + 1, end + 3] {
            let mut b = buf.clone();
            b[at] = 0x5a;
            let err = parse_frame(&b, end).unwrap_err();
            assert_eq!(classify_end(&b, end, err), End::Torn { len: at - end + 1 });
        }
        // a valid frame after a gap of zeros
        let mut b = buf.clone();
        let mut later = Vec::new();
        encode_frame(b"later", &mut later);
        b[end + 64..end + 64 + later.len()].copy_from_slice(&later);
        let err = parse_frame(&b, end).unwrap_err();
        assert_eq!(classify_end(&b, end, err), End::Garbage);
        // a torn frame with more non-zero bytes after it
        let mut b = buf.clone();
        let mut frame = Vec::new();
        encode_frame(b"half", &mut frame);
        b[end..end + 9].copy_from_slice(&frame[..9]);
        b[end + frame.len() + 3] = 1;
        let err = parse_frame(&b, end).unwrap_err();
        assert_eq!(classify_end(&b, end, err), End::Garbage);
        // a checksum failure in the middle of the data
        let (mut b, _) = prealloc(&[b"one", b"two", b"three"], 4096);
        b[9] ^= 1;
        let err = parse_frame(&b, 0).unwrap_err();
        assert_eq!(classify_end(&b, 0, err), End::Garbage);
    }

    #[test]
    fn nonzero_end_finds_the_last_non_zero_byte() {
        assert_eq!(nonzero_end(&[]), 0);
        for len in [1usize, 63, 64, 65, 127, 128, 129, 1000] {
            let z = vec![0u8; len];
            assert_eq!(nonzero_end(&z), 0);
            for at in [0, len / 3, len / 2, len - 1] {
                let mut b = z.clone();
                b[at] = 9;
                assert_eq!(nonzero_end(&b), at + 1, "len {len} at {at}");
                if at > 0 {
                    b[0] = 1;
                    assert_eq!(nonzero_end(&b), at + 1, "len {len} at {at}");
                }
            }
        }
    }
}
