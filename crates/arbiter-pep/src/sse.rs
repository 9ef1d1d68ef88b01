//! Server-sent events (the WHATWG event-stream format), read with bounded memory: the
//! streams of MCP servers and A2A agents that the gateways relay event by event.

/// Longest event id kept, in bytes (a longer one is dropped, as a client would not resume
/// with it).
pub const MAX_EVENT_ID_BYTES: usize = 1024;

/// One event of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id` field, when this event had one.
    pub id: Option<String>,
    pub event: Option<String>,
    /// The data lines joined by `\n`; `None` without any `data` field.
    pub data: Option<Vec<u8>>,
    pub retry: Option<u64>,
}

/// An incremental SSE parser (the WHATWG event-stream format) with bounded memory.
#[derive(Debug)]
pub struct SseParser {
    /// Largest event data (and line) accepted.
    max: usize,
    /// Who sends the stream, for errors ("the MCP server").
    peer: &'static str,
    line: Vec<u8>,
    /// The previous chunk ended with a CR (a following LF belongs to it).
    after_cr: bool,
    started: bool,
    current: SseEvent,
}

impl SseParser {
    pub fn new(max: usize, peer: &'static str) -> Self {
        Self {
            max,
            peer,
            line: Vec::new(),
            after_cr: false,
            started: false,
            current: SseEvent::default(),
        }
    }

    fn too_large(&self) -> String {
        format!(
            "{} sent an event larger than the limit of {} bytes",
            self.peer, self.max
        )
    }

    /// Feeds a chunk; returns the events it completes.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        if !self.started && !chunk.is_empty() {
            self.started = true;
            chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
        }
        if self.after_cr {
            self.after_cr = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        while let Some(i) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&chunk[..i])?;
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out)?;
            if chunk[i] == b'\r' {
                match chunk.get(i + 1) {
                    Some(b'\n') => chunk = &chunk[i + 2..],
                    Some(_) => chunk = &chunk[i + 1..],
                    None => {
                        self.after_cr = true;
                        chunk = &[];
                    }
                }
            } else {
                chunk = &chunk[i + 1..];
            }
        }
        self.extend_line(chunk)?;
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), String> {
        // A data line carries `data: ` before the message.
        if self.line.len() + bytes.len() > self.max.saturating_add(16) {
            return Err(self.too_large());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        if line.is_empty() {
            let mut event = std::mem::take(&mut self.current);
            if let Some(d) = &mut event.data
                && d.last() == Some(&b'\n')
            {
                d.pop();
            }
            if event.data.is_some() || event.id.is_some() || event.retry.is_some() {
                out.push(event);
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let data = self.current.data.get_or_insert_with(Vec::new);
                if data.len() + value.len() + 1 > self.max {
                    return Err(self.too_large());
                }
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => {
                self.current.event = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"id" => {
                let ok = !value.contains(&0)
                    && value.len() <= MAX_EVENT_ID_BYTES
                    && value.iter().all(|b| (0x20..0x7f).contains(b));
                if ok {
                    self.current.id = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.current.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse_all(chunks: &[&[u8]], max: usize) -> Result<Vec<SseEvent>, String> {
        let mut p = SseParser::new(max, "the server");
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c)?);
        }
        Ok(out)
    }

    #[test]
    fn sse_events() {
        let events = parse_all(
            &[
                b"\xEF\xBB\xBF: comment\r\nid: e1\r\ndata: ",
                b"{\"a\":1}\r",
                b"\n\r\nevent: message\ndata: x\ndata: y\n\nid: e2\ndata:\n\nretry: 500\n\n",
                b"data: tail",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("e1".into()),
                    data: Some(b"{\"a\":1}".to_vec()),
                    ..SseEvent::default()
                },
                SseEvent {
                    event: Some("message".into()),
                    data: Some(b"x\ny".to_vec()),
                    ..SseEvent::default()
                },
                SseEvent {
                    id: Some("e2".into()),
                    data: Some(Vec::new()),
                    ..SseEvent::default()
                },
                SseEvent {
                    retry: Some(500),
                    ..SseEvent::default()
                },
            ]
        );
        // Lone CRs end lines too.
        let cr = parse_all(&[b"data: a\rdata: b\r\r"], 64).unwrap();
        assert_eq!(cr[0].data.as_deref(), Some(&b"a\nb"[..]));
    }

    #[test]
    fn sse_events_are_bounded() {
        let big = format!("data: {}\n\n", "x".repeat(100));
        assert!(parse_all(&[big.as_bytes()], 64).is_err());
        let many = "data: xxxxxxxxxx\n".repeat(10);
        assert!(parse_all(&[many.as_bytes()], 64).is_err());
        let line = "x".repeat(200);
        assert!(parse_all(&[line.as_bytes()], 64).is_err());
        assert!(parse_all(&[big.as_bytes()], 1024).is_ok());
    }
}
