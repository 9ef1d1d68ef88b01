//! Parsing one access-log line (nginx/Apache combined, or a JSON object)
//! into the few fields discovery needs.
//!
//! Only the target host is used to decide whether a line matters; the URL
//! path, query string and any userinfo are never kept (API keys travel in
//! query strings, e.g. `?key=AIza…`).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::hosts::{HostList, authority_host};

/// Longest client address or user name kept.
pub(crate) const MAX_FIELD_LEN: usize = 255;
/// Longest time stamp kept.
pub(crate) const MAX_TIME_LEN: usize = 64;
/// User agents are cut to this many characters.
pub(crate) const MAX_USER_AGENT_CHARS: usize = 256;
/// More fields than this on a combined line is malformed.
const MAX_FIELDS: usize = 64;

/// Why a line was skipped.
pub(crate) type Malformed = Cow<'static, str>;

/// One request to a listed host.
#[derive(Debug)]
pub(crate) struct Entry<'h> {
    pub(crate) source: String,
    pub(crate) user: Option<String>,
    /// Lowercase, without port.
    pub(crate) host: String,
    pub(crate) provider: &'h str,
    pub(crate) time: String,
    pub(crate) status: Option<u16>,
    pub(crate) user_agent: Option<String>,
}

// ---------------------------------------------------------------- combined

/// A field of a combined-format line.
#[derive(Debug)]
enum Field<'a> {
    Bare(&'a [u8]),
    Bracketed(&'a [u8]),
    Quoted(Cow<'a, [u8]>),
}

/// Parses `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"` and any extra fields.
///
/// `Ok(None)`: a well-formed line whose target is not a listed host.
pub(crate) fn combined<'h>(
    line: &[u8],
    hosts: &'h HostList,
) -> Result<Option<Entry<'h>>, Malformed> {
    let fields = split_fields(line)?;
    let [
        addr,
        _ident,
        user,
        time,
        request,
        status,
        bytes,
        referer,
        agent,
        extra @ ..,
    ] = fields.as_slice()
    else {
        return Err(format!(
            "expected at least 9 fields of the combined format, found {}",
            fields.len()
        )
        .into());
    };
    let Field::Bare(addr) = addr else {
        return Err("field 1 (remote address) is quoted or bracketed".into());
    };
    let Field::Bare(user) = user else {
        return Err("field 3 (remote user) is quoted or bracketed".into());
    };
    let Field::Bracketed(time) = time else {
        return Err("field 4 (time) is not in brackets".into());
    };
    let Field::Quoted(request) = request else {
        return Err("field 5 (request) is not quoted".into());
    };
    let Field::Bare(status) = status else {
        return Err("field 6 (status) is quoted or bracketed".into());
    };
    let Field::Bare(bytes) = bytes else {
        return Err("field 7 (bytes sent) is quoted or bracketed".into());
    };
    if !matches!(referer, Field::Quoted(_)) {
        return Err("field 8 (referer) is not quoted".into());
    }
    let Field::Quoted(agent) = agent else {
        return Err("field 9 (user agent) is not quoted".into());
    };

    if addr.len() > MAX_FIELD_LEN {
        return Err(format!("remote address longer than {MAX_FIELD_LEN} bytes").into());
    }
    if user.len() > MAX_FIELD_LEN {
        return Err(format!("remote user longer than {MAX_FIELD_LEN} bytes").into());
    }
    if time.is_empty() || time.len() > MAX_TIME_LEN {
        return Err(format!("time is empty or longer than {MAX_TIME_LEN} bytes").into());
    }
    let status = match status {
        [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err("field 6 (status) is not a three-digit status".into()),
    };
    if !(*bytes == b"-"
        || (!bytes.is_empty() && bytes.len() <= 20 && bytes.iter().all(u8::is_ascii_digit)))
    {
        return Err("field 7 (bytes sent) is not a number".into());
    }

    let request = String::from_utf8_lossy(request);
    let target = match request_host(&request) {
        Some(host) => hosts
            .matches(host)
            .map(|provider| (host.to_owned(), provider)),
        // No host in the request line: the last quoted extra field naming
        // a listed host (`"$host"` appended to the format).
        None => extra.iter().rev().find_map(|field| {
            let Field::Quoted(value) = field else {
                return None;
            };
            let host = authority_host(std::str::from_utf8(value).ok()?)?;
            hosts
                .matches(host)
                .map(|provider| (host.to_owned(), provider))
        }),
    };
    let Some((host, provider)) = target else {
        return Ok(None);
    };

    Ok(Some(Entry {
        source: clean(&String::from_utf8_lossy(addr)),
        user: optional(&String::from_utf8_lossy(user)),
        host: host.to_ascii_lowercase(),
        provider,
        time: clean(&String::from_utf8_lossy(time)),
        status: Some(status),
        user_agent: user_agent(&String::from_utf8_lossy(agent)),
    }))
}

/// Splits a line into space-separated bare, `[bracketed]` and `"quoted"`
/// fields. Quoted fields may contain `\"`, `\\` and `\xHH` escapes (nginx
/// writes `"` as `\x22`); other escapes are kept as written.
fn split_fields(line: &[u8]) -> Result<Vec<Field<'_>>, Malformed> {
    let mut fields = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i] == b' ' {
            i += 1;
            continue;
        }
        if fields.len() == MAX_FIELDS {
            return Err(format!("more than {MAX_FIELDS} fields").into());
        }
        let rest = &line[i..];
        let (field, len) = match rest[0] {
            b'"' => {
                let (value, len) = quoted(rest)?;
                (Field::Quoted(value), len)
            }
            b'[' => {
                let close = rest
                    .iter()
                    .position(|&b| b == b']')
                    .ok_or("unterminated `[` field")?;
                (Field::Bracketed(&rest[1..close]), close + 1)
            }
            _ => {
                let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
                (Field::Bare(&rest[..len]), len)
            }
        };
        if rest.get(len).is_some_and(|&b| b != b' ') {
            return Err("a quoted or bracketed field is not followed by a space".into());
        }
        fields.push(field);
        i += len;
    }
    Ok(fields)
}

/// A quoted field at the start of `text`: its decoded value and its length
/// including both quotes.
fn quoted(text: &[u8]) -> Result<(Cow<'_, [u8]>, usize), Malformed> {
    let mut decoded: Option<Vec<u8>> = None;
    let mut i = 1;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                let value = match decoded {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&text[1..i]),
                };
                return Ok((value, i + 1));
            }
            b'\\' => {
                let out = decoded.get_or_insert_with(|| text[1..i].to_vec());
                match text.get(i + 1) {
                    Some(&c @ (b'"' | b'\\')) => {
                        out.push(c);
                        i += 2;
                    }
                    Some(b'x') => {
                        let hi = text.get(i + 2).and_then(|&h| hex_digit(h));
                        let lo = text.get(i + 3).and_then(|&h| hex_digit(h));
                        if let (Some(hi), Some(lo)) = (hi, lo) {
                            out.push(hi << 4 | lo);
                            i += 4;
                        } else {
                            out.extend_from_slice(b"\\x");
                            i += 2;
                        }
                    }
                    Some(&c) => {
                        out.extend_from_slice(&[b'\\', c]);
                        i += 2;
                    }
                    None => break,
                }
            }
            _ => {
                if let Some(out) = decoded.as_mut() {
                    out.push(b);
                }
                i += 1;
            }
        }
    }
    Err("unterminated quoted field".into())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ------------------------------------------------------------------- JSON

const CLIENT_KEYS: &[&str] = &["remote_addr", "client_ip", "client", "src_ip", "source"];
const HOST_KEYS: &[&str] = &[
    "host",
    "server_name",
    "upstream_host",
    "http_host",
    "authority",
];
const URL_KEYS: &[&str] = &["url", "uri", "request"];
const TIME_KEYS: &[&str] = &["time_local", "time", "timestamp", "ts"];
const USER_KEYS: &[&str] = &["remote_user", "user"];
const AGENT_KEYS: &[&str] = &["http_user_agent", "user_agent"];

/// Parses one JSON object. The host is the first present of [`HOST_KEYS`],
/// else taken from the first present of [`URL_KEYS`] (an absolute URI or a
/// request line). Other fields are only checked on lines whose host is
/// listed.
pub(crate) fn json<'h>(line: &[u8], hosts: &'h HostList) -> Result<Option<Entry<'h>>, Malformed> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {}", e.classify_name()))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".into());
    };
    let host = match first_text(&object, HOST_KEYS) {
        Some(host) => authority_host(host).or_else(|| uri_host(host)),
        None => first_text(&object, URL_KEYS).and_then(target_host),
    };
    let Some((host, provider)) = host.and_then(|h| hosts.matches(h).map(|p| (h, p))) else {
        return Ok(None);
    };

    let source = first_text(&object, CLIENT_KEYS)
        .ok_or("no client address (remote_addr, client_ip, client, src_ip or source)")?;
    if source.len() > MAX_FIELD_LEN {
        return Err(format!("client address longer than {MAX_FIELD_LEN} bytes").into());
    }
    let user = first_text(&object, USER_KEYS);
    if user.is_some_and(|u| u.len() > MAX_FIELD_LEN) {
        return Err(format!("user longer than {MAX_FIELD_LEN} bytes").into());
    }
    let time = match TIME_KEYS.iter().find_map(|k| object.get(*k)) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("the time field is not a string or number".into()),
        None => "-".to_owned(),
    };
    if time.len() > MAX_TIME_LEN {
        return Err(format!("time longer than {MAX_TIME_LEN} bytes").into());
    }
    let status = match object.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .filter(|s| *s <= 999)
                .ok_or("`status` is not an HTTP status")?,
        ),
        Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        Some(_) => return Err("`status` is not an HTTP status".into()),
    };
    Ok(Some(Entry {
        source: clean(source),
        user: user.and_then(optional),
        host: host.to_ascii_lowercase(),
        provider,
        time,
        status: status.and_then(|s| u16::try_from(s).ok()),
        user_agent: first_text(&object, AGENT_KEYS).and_then(user_agent),
    }))
}

/// The first of `keys` holding a string other than `""` and `"-"`.
fn first_text<'v>(object: &'v Map<String, Value>, keys: &[&str]) -> Option<&'v str> {
    keys.iter().find_map(|k| match object.get(*k) {
        Some(Value::String(s)) if !s.is_empty() && s != "-" => Some(s.as_str()),
        _ => None,
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

// ----------------------------------------------------------- shared pieces

/// The host named by a request line (`CONNECT host:port HTTP/1.1` or
/// `METHOD scheme://authority/... HTTP/1.1`) or by a bare absolute URI.
fn target_host(text: &str) -> Option<&str> {
    if text.contains(' ') {
        request_host(text)
    } else {
        uri_host(text)
    }
}

/// The host of a request line's target, if it names one: `CONNECT` with an
/// authority, or any method with an absolute URI. Origin-form targets
/// (`/v1/...`) and garbage give `None`.
fn request_host(request: &str) -> Option<&str> {
    let mut parts = request.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    match parts.next() {
        None => {}
        Some(version) if version.starts_with("HTTP/") => {}
        Some(_) => return None,
    }
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
    {
        return None;
    }
    if method == "CONNECT" {
        authority_host(target)
    } else {
        uri_host(target)
    }
}

/// The host of an absolute URI `scheme://authority[/?#...]`.
fn uri_host(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once("://")?;
    let mut scheme_bytes = scheme.bytes();
    if !scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    authority_host(rest.get(..end)?)
}

/// `None` for the log's "absent" markers `-` and empty.
fn optional(text: &str) -> Option<String> {
    (!text.is_empty() && text != "-").then(|| clean(text))
}

/// A user agent, cut to [`MAX_USER_AGENT_CHARS`] characters.
fn user_agent(text: &str) -> Option<String> {
    let cut = match text.char_indices().nth(MAX_USER_AGENT_CHARS) {
        Some((i, _)) => text.get(..i).unwrap_or(text),
        None => text,
    };
    optional(cut)
}

/// Escapes control characters and bidirectional formatting characters as
/// `\u{…}`, so text from a log cannot drive a terminal or reorder what an
/// operator reads.
pub(crate) fn clean(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn fields(line: &str) -> Vec<String> {
        split_fields(line.as_bytes())
            .unwrap()
            .into_iter()
            .map(|f| match f {
                Field::Bare(b) => format!("B:{}", String::from_utf8_lossy(b)),
                Field::Bracketed(b) => format!("[:{}", String::from_utf8_lossy(b)),
                Field::Quoted(b) => format!("Q:{}", String::from_utf8_lossy(&b)),
            })
            .collect()
    }

    #[test]
    fn splits_fields_with_escapes() {
        assert_eq!(
            fields(
                r#"1.2.3.4 - - [10/Oct/2025:13:55:36 +0000] "GET / HTTP/1.1" 200 5 "-" "a \"q\" \x22x\x22 \\ \n \xZZ""#
            ),
            vec![
                "B:1.2.3.4",
                "B:-",
                "B:-",
                "[:10/Oct/2025:13:55:36 +0000",
                "Q:GET / HTTP/1.1",
                "B:200",
                "B:5",
                "Q:-",
                r#"Q:a "q" "x" \ \n \xZZ"#,
            ]
        );
        assert_eq!(fields(r#""""#), vec!["Q:"]);
        assert_eq!(fields("  a   b  "), vec!["B:a", "B:b"]);
    }

    #[test]
    fn rejects_broken_fields() {
        for line in [r#""abc"#, r#""abc\"#, r#""a"b"#, "[abc", "[a]b", r#""a\""#] {
            assert!(split_fields(line.as_bytes()).is_err(), "{line}");
        }
        let many = "a ".repeat(MAX_FIELDS + 1);
        assert!(split_fields(many.as_bytes()).is_err());
        let exactly = "a ".repeat(MAX_FIELDS);
        assert_eq!(split_fields(exactly.as_bytes()).unwrap().len(), MAX_FIELDS);
    }

    #[test]
    fn request_targets() {
        let cases = [
            (
                "GET https://api.openai.com/v1/models HTTP/1.1",
                Some("api.openai.com"),
            ),
            (
                "POST http://user:pw@api.openai.com:8080?x=1 HTTP/1.0",
                Some("api.openai.com"),
            ),
            (
                "CONNECT api.anthropic.com:443 HTTP/1.1",
                Some("api.anthropic.com"),
            ),
            (
                "CONNECT api.anthropic.com HTTP/1.1",
                Some("api.anthropic.com"),
            ),
            ("GET /v1/models HTTP/1.1", None),
            (
                "GET https://api.openai.com/v1/models",
                Some("api.openai.com"),
            ),
            ("GET https://api.openai.com/ HTTP/1.1 extra", None),
            ("GET https://api.openai.com/ SPDY/3", None),
            ("-", None),
            ("\u{16}\u{3}\u{1}", None),
            ("GET ://api.openai.com/ HTTP/1.1", None),
            ("GET 1http://api.openai.com/ HTTP/1.1", None),
            ("GET https://[::1]:443/ HTTP/1.1", None),
        ];
        for (line, want) in cases {
            assert_eq!(request_host(line), want, "{line}");
        }
    }

    #[test]
    fn clean_escapes_controls_and_bidi() {
        assert_eq!(clean("curl/8.0"), "curl/8.0");
        assert_eq!(clean("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(clean("naïve"), "naïve");
    }

    #[test]
    fn user_agents_are_cut() {
        let long = "é".repeat(MAX_USER_AGENT_CHARS + 10);
        assert_eq!(
            user_agent(&long).unwrap().chars().count(),
            MAX_USER_AGENT_CHARS
        );
        assert_eq!(user_agent("-"), None);
        assert_eq!(user_agent(""), None);
    }
}
