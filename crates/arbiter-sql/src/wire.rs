//! A small, strict codec for the PostgreSQL frontend/backend protocol, version 3.
//!
//! Every message after the startup packet is a one-byte tag followed by a big-endian `i32`
//! length that counts itself and the body. Lengths are checked against a bound before any
//! body is read, so a peer cannot make the proxy allocate more than the bound.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Protocol version 3.0 in a startup packet.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The code of an `SSLRequest`.
pub const SSL_REQUEST: i32 = 80_877_103;
/// The code of a `GSSENCRequest`.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// The code of a `CancelRequest`.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Largest startup packet accepted (PostgreSQL's own limit is 10000 bytes).
pub const MAX_STARTUP_BYTES: usize = 10_000;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("message length {0} is out of bounds (at most {1} bytes)")]
    Length(i64, usize),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// One message: its tag and its body (without tag and length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    pub fn new(tag: u8, body: Vec<u8>) -> Self {
        Self { tag, body }
    }

    /// The message as sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 5);
        out.push(self.tag);
        out.extend_from_slice(&len_prefix(self.body.len()));
        out.extend_from_slice(&self.body);
        out
    }
}

fn len_prefix(body: usize) -> [u8; 4] {
    i32::try_from(body + 4).unwrap_or(i32::MAX).to_be_bytes()
}

/// Reads the startup packet (no tag): `None` at a clean end of stream.
pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i64::from(i32::from_be_bytes(len));
    if !(8..=MAX_STARTUP_BYTES as i64).contains(&len) {
        return Err(WireError::Length(len, MAX_STARTUP_BYTES));
    }
    let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads one tagged message whose body is at most `max` bytes: `None` at a clean end of
/// stream (between messages).
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, WireError> {
    let mut tag = [0u8; 1];
    match r.read_exact(&mut tag).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = i64::from(i32::from_be_bytes(len));
    if len < 4 || len - 4 > max as i64 {
        return Err(WireError::Length(len, max));
    }
    let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
    r.read_exact(&mut body).await?;
    Ok(Some(Message { tag: tag[0], body }))
}

/// Writes one message (not flushed).
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    tag: u8,
    body: &[u8],
) -> std::io::Result<()> {
    w.write_all(&[tag]).await?;
    w.write_all(&len_prefix(body.len())).await?;
    w.write_all(body).await
}

/// A startup packet: protocol code and `name\0value\0` pairs.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (k, v) in params {
        put_cstr(&mut body, k);
        put_cstr(&mut body, v);
    }
    body.push(0);
    let mut out = len_prefix(body.len()).to_vec();
    out.extend_from_slice(&body);
    out
}

/// Appends `s` and a NUL byte.
pub fn put_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Reads NUL-terminated strings from a message body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The next NUL-terminated string, which must be UTF-8.
    pub fn cstr(&mut self) -> Result<&'a str, WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Malformed("a string is not terminated"))?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| WireError::Malformed("a string is not UTF-8"))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self
            .buf
            .split_first()
            .ok_or(WireError::Malformed("the message is too short"))?;
        self.buf = rest;
        Ok(first)
    }

    /// The next big-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        if self.buf.len() < 4 {
            return Err(WireError::Malformed("the message is too short"));
        }
        let (head, rest) = self.buf.split_at(4);
        self.buf = rest;
        Ok(i32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// The parameters of a v3 startup packet body (after the protocol code).
pub fn startup_params(body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut r = Reader::new(body);
    let mut params = Vec::new();
    loop {
        if r.rest() == [0] || r.rest().is_empty() {
            return Ok(params);
        }
        let k = r.cstr()?.to_owned();
        let v = r.cstr()?.to_owned();
        if params.iter().any(|(name, _)| *name == k) {
            return Err(WireError::Malformed("a startup parameter is repeated"));
        }
        params.push((k, v));
    }
}

/// The body of an `ErrorResponse`.
pub fn error_body(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        b.push(field);
        put_cstr(&mut b, value);
    }
    b.push(0);
    b
}

/// The fields of an `ErrorResponse` or `NoticeResponse` body, by field code.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.push((field, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    async fn read(bytes: &[u8], max: usize) -> Result<Option<Message>, WireError> {
        let mut r = bytes;
        read_message(&mut r, max).await
    }

    #[tokio::test]
    async fn messages_are_bounded_and_complete() {
        let m = Message::new(b'Q', b"SELECT 1\0".to_vec());
        assert_eq!(read(&m.encode(), 64).await.unwrap(), Some(m.clone()));
        // Too long for the bound, before reading the body.
        assert!(matches!(
            read(&m.encode(), 4).await,
            Err(WireError::Length(13, 4))
        ));
        // A length below 4.
        assert!(matches!(
            read(&[b'Q', 0, 0, 0, 3], 64).await,
            Err(WireError::Length(3, 64))
        ));
        // Negative.
        assert!(matches!(
            read(&[b'Q', 0xff, 0xff, 0xff, 0xff], 64).await,
            Err(WireError::Length(-1, 64))
        ));
        // Truncated body.
        assert!(matches!(
            read(&m.encode()[..8], 64).await,
            Err(WireError::Io(_))
        ));
        // A clean end between messages.
        assert_eq!(read(&[], 64).await.unwrap(), None);
    }

    #[tokio::test]
    async fn startup_packets() {
        let packet = startup_packet(&[("user", "bot"), ("database", "shop")]);
        let mut r = packet.as_slice();
        let body = read_startup(&mut r).await.unwrap().unwrap();
        let mut reader = Reader::new(&body);
        assert_eq!(reader.i32().unwrap(), PROTOCOL_3_0);
        assert_eq!(
            startup_params(reader.rest()).unwrap(),
            [
                ("user".to_owned(), "bot".to_owned()),
                ("database".to_owned(), "shop".to_owned())
            ]
        );
        let twice = startup_packet(&[("user", "a"), ("user", "b")]);
        assert!(startup_params(&twice[8..]).is_err());
        assert!(startup_params(b"user\0bot").is_err());
        let mut huge: &[u8] = &[0, 1, 0, 0];
        assert!(matches!(
            read_startup(&mut huge).await,
            Err(WireError::Length(65536, _))
        ));
    }

    #[test]
    fn error_bodies_round_trip() {
        let body = error_body("ERROR", "42501", "permission denied");
        assert_eq!(
            error_fields(&body),
            [
                (b'S', "ERROR".to_owned()),
                (b'V', "ERROR".to_owned()),
                (b'C', "42501".to_owned()),
                (b'M', "permission denied".to_owned())
            ]
        );
        assert!(error_fields(b"Sx").len() == 1);
    }
}
