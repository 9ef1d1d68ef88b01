//! One HTTP/1.1 request over a plain TCP connection.
//!
//! Deliberately small and literal: the request is written as given (a test of a proxy may need
//! a target no HTTP library would send), the connection is closed after one answer, and the
//! answer is parsed just enough to check status, headers and body.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::wait::PATIENCE;

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header fields in order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body as text (de-chunked when it came chunked).
    pub body: String,
    /// The whole answer as it came.
    pub raw: String,
}

impl Reply {
    /// The value of the first header field called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics showing the whole answer when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}):\n{}", self.raw))
    }
}

/// Sends `method target` with `headers` and `body` to 127.0.0.1:`port` and reads the answer.
///
/// The request carries `host: x` unless `headers` name a host, then `headers` in order,
/// `connection: close` and `content-length`. An error means nothing answered (not listening,
/// reset, no answer within [`PATIENCE`]) or the answer is not HTTP; a test polling for a
/// server to come up treats it as "not yet".
pub fn http(
    port: u16,
    method: &str,
    target: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
    body: &str,
) -> io::Result<Reply> {
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(target.as_ref());
    request.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.extend_from_slice(b"host: x\r\n");
    }
    for (k, v) in headers {
        request.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    request.extend_from_slice(
        format!(
            "connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(&request)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> io::Result<Reply> {
    let raw = String::from_utf8_lossy(raw).into_owned();
    let not_http = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(not_http)?;
    let mut lines = head.lines();
    let status_line = lines.next().ok_or_else(not_http)?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(not_http)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body).ok_or_else(not_http)?
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
        raw,
    })
}

fn dechunk(mut data: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = data.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        data = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let r = parse(
            b"HTTP/1.1 403 Forbidden\r\nX-Arbiter-Decision-Id: d1\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 403);
        assert_eq!(r.header("x-arbiter-decision-id"), Some("d1"));
        assert_eq!(r.body, "{}");
        assert_eq!(r.json(), serde_json::json!({}));
    }

    #[test]
    fn dechunks_a_chunked_body() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.body, "abcde");
    }

    #[test]
    fn refuses_what_is_not_http() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn sends_the_request_as_given() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"body") {
                let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
                assert!(n > 0, "the request ended early: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap_or_else(|e| panic!("{e}"));
            got
        });
        let r = http(port, "POST", b"/a%zz", &[("host", "h.example")], "body")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 204);
        let got = server
            .join()
            .unwrap_or_else(|_| panic!("the server failed"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            "POST /a%zz HTTP/1.1\r\nhost: h.example\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbody"
        );
    }
}
