//! Reading lines of bounded length from an untrusted file.

use std::io::{self, BufRead};

/// Longest line kept, in bytes (excluding the `\n`).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// One line of input.
pub(crate) enum Line<'a> {
    /// The line, without its `\n`.
    Text(&'a [u8]),
    /// The line was longer than [`MAX_LINE_LEN`]; it was consumed without
    /// being kept.
    TooLong,
}

/// Splits a reader into lines, never holding more than [`MAX_LINE_LEN`]
/// bytes of one line in memory (unlike `BufRead::lines`, whose buffer grows
/// with the longest line).
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(inner: R) -> LineReader<R> {
        LineReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next line, or `None` at end of input. A final line without `\n`
    /// is still a line.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut too_long = false;
        let mut seen_any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !seen_any {
                    return Ok(None);
                }
                break;
            }
            seen_any = true;
            let (chunk, consumed, end_of_line) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > MAX_LINE_LEN {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            self.inner.consume(consumed);
            if end_of_line {
                break;
            }
        }
        if too_long {
            return Ok(Some(Line::TooLong));
        }
        Ok(Some(Line::Text(&self.buf)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::BufReader;

    fn collect(input: &[u8], capacity: usize) -> Vec<Option<Vec<u8>>> {
        let mut reader = LineReader::new(BufReader::with_capacity(capacity, input));
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(match line {
                Line::Text(t) => Some(t.to_vec()),
                Line::TooLong => None,
            });
        }
        out
    }

    #[test]
    fn splits_lines_across_buffer_boundaries() {
        for capacity in [1, 2, 3, 7, 1024] {
            assert_eq!(
                collect(b"ab\n\ncde\nf", capacity),
                vec![
                    Some(b"ab".to_vec()),
                    Some(Vec::new()),
                    Some(b"cde".to_vec()),
                    Some(b"f".to_vec())
                ]
            );
            assert_eq!(collect(b"", capacity), Vec::<Option<Vec<u8>>>::new());
            assert_eq!(collect(b"x\n", capacity), vec![Some(b"x".to_vec())]);
        }
    }

    #[test]
    fn long_lines_are_dropped_and_reading_resumes() {
        let mut input = vec![b'a'; MAX_LINE_LEN];
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'b', MAX_LINE_LEN + 1));
        input.extend_from_slice(b"\nok\n");
        let lines = collect(&input, 4096);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].as_ref().map(Vec::len), Some(MAX_LINE_LEN));
        assert_eq!(lines[1], None);
        assert_eq!(lines[2], Some(b"ok".to_vec()));
    }
}
