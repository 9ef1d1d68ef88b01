//! The settings of `arbiter mcp http`: [`HttpSettings`] as given, and [`Config`], the same
//! checked (the upstream URL, the extra upstream headers, the allowed browser origins and the
//! limits), before anything listens.

use std::time::Duration;

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};

use super::headers::MCP_PARAM_PREFIX;

/// Settings of `arbiter mcp http`.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on (`127.0.0.1:8190`).
    pub listen: String,
    /// The MCP server's endpoint (`http://127.0.0.1:3001/mcp`); its path is the gateway's.
    pub upstream: String,
    /// `Name: value` headers sent on every upstream request.
    pub upstream_headers: Vec<String>,
    /// Browser origins allowed to call the gateway.
    pub allow_origins: Vec<String>,
    /// Most sessions alive at once; an `initialize` beyond it is answered 503.
    pub max_sessions: usize,
    /// A session unused this long (and with no open stream) is forgotten and ended at the
    /// server.
    pub session_idle: Duration,
    /// Time the server may take to start answering a request, and between two events of a
    /// streamed answer.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8190".to_owned(),
            upstream: String::new(),
            upstream_headers: Vec::new(),
            allow_origins: Vec::new(),
            max_sessions: 10_000,
            session_idle: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// Checked settings.
#[derive(Debug)]
pub(super) struct Config {
    /// The MCP endpoint's path.
    pub(super) path: String,
    pub(super) upstream: Uri,
    pub(super) upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Allowed origins, normalized (see [`normalize_origin`]).
    pub(super) origins: Vec<String>,
    pub(super) max_sessions: usize,
    pub(super) session_idle: Duration,
    pub(super) request_timeout: Duration,
}

impl Config {
    pub(super) fn new(s: &HttpSettings) -> Result<Self, String> {
        let upstream = parse_upstream(&s.upstream)?;
        let upstream_headers = s
            .upstream_headers
            .iter()
            .map(|h| parse_upstream_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let origins = s
            .allow_origins
            .iter()
            .map(|o| parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        if s.max_sessions == 0 {
            return Err("the session limit must be at least 1".to_owned());
        }
        if s.session_idle.is_zero() || s.request_timeout.is_zero() {
            return Err("the session idle time and the request timeout must be positive".into());
        }
        Ok(Self {
            path: upstream.path().to_owned(),
            upstream,
            upstream_headers,
            origins,
            max_sessions: s.max_sessions,
            session_idle: s.session_idle,
            request_timeout: s.request_timeout,
        })
    }
}

/// Headers an `--upstream-header` may not set: the transport's own and the protocol's.
fn reserved_header(name: &HeaderName) -> bool {
    arbiter_pep::http::transport_header(name)
        || matches!(
            name.as_str(),
            "content-type"
                | "accept"
                | "mcp-session-id"
                | "mcp-protocol-version"
                | "mcp-method"
                | "mcp-name"
                | "last-event-id"
        )
        || name.as_str().starts_with(MCP_PARAM_PREFIX)
}

fn parse_upstream(url: &str) -> Result<Uri, String> {
    arbiter_pep::http::parse_upstream(url, "the MCP server", "http://127.0.0.1:3001/mcp")
}

fn parse_upstream_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    arbiter_pep::http::parse_upstream_header(text, reserved_header)
}

/// Reads one `--allow-origin`: `scheme://host[:port]`.
fn parse_origin(text: &str) -> Result<String, String> {
    let normalized = normalize_origin(text);
    let bad = || {
        format!(
            "`--allow-origin {text}` is not an origin; write `https://app.example.com` (a \
             scheme, a host, an optional port; no path)"
        )
    };
    let uri: Uri = normalized.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority_ok = uri
        .authority()
        .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'));
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if scheme_ok && authority_ok && path_ok && !normalized.ends_with('/') {
        Ok(normalized)
    } else {
        Err(bad())
    }
}

/// Origins compare case-insensitively and without a trailing slash.
fn normalize_origin(text: &str) -> String {
    text.trim().trim_end_matches('/').to_ascii_lowercase()
}

pub(super) fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = normalize_origin(origin);
    allowed.contains(&origin)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use hyper::header;

    use super::*;

    #[test]
    fn origins() {
        let allowed = vec![parse_origin("https://App.example.com/").unwrap()];
        assert!(origin_allowed(&allowed, "https://app.example.com"));
        assert!(origin_allowed(&allowed, "HTTPS://APP.EXAMPLE.COM"));
        assert!(!origin_allowed(&allowed, "https://evil.example.com"));
        assert!(!origin_allowed(&allowed, "http://app.example.com"));
        assert!(!origin_allowed(&allowed, "null"));
        assert!(!origin_allowed(&[], "http://localhost:3000"));
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in [
            "localhost:3000",
            "https://a.example/path",
            "ftp://a.example",
            "*",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_settings() {
        let uri = parse_upstream("http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!(uri.path(), "/mcp");
        assert_eq!(parse_upstream("http://127.0.0.1:3001").unwrap().path(), "/");
        assert!(
            parse_upstream("https://mcp.example.com/mcp")
                .unwrap_err()
                .contains("https")
        );
        assert!(parse_upstream("ftp://x/y").is_err());
        assert!(parse_upstream("/mcp").is_err());
        assert!(
            parse_upstream("http://user:pw@host/mcp")
                .unwrap_err()
                .contains("credentials")
        );

        let (name, value) = parse_upstream_header("Authorization: Bearer s3cret").unwrap();
        assert_eq!(name, header::AUTHORIZATION);
        assert_eq!(value, "Bearer s3cret");
        assert!(value.is_sensitive());
        let (name, value) = parse_upstream_header("X-Api-Key:abc:def").unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert_eq!(value, "abc:def");
        for (bad, why) in [
            ("Authorization Bearer x", "Name: value"),
            ("Bad Name: x", "not a header name"),
            (": x", "not a header name"),
            ("X-Empty:   ", "empty"),
            ("Host: other", "sets"),
            ("Mcp-Session-Id: x", "sets"),
            ("mcp-param-region: x", "sets"),
            ("X-Bad: a\u{7f}b", "characters"),
        ] {
            let e = parse_upstream_header(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("Bearer x") || bad.contains("Authorization Bearer x"));
        }
    }

    #[test]
    fn settings_are_checked() {
        let ok = HttpSettings {
            upstream: "http://127.0.0.1:3001/mcp".into(),
            ..HttpSettings::default()
        };
        assert_eq!(Config::new(&ok).unwrap().path, "/mcp");
        let zero = HttpSettings {
            max_sessions: 0,
            ..ok.clone()
        };
        assert!(Config::new(&zero).is_err());
        let origin = HttpSettings {
            allow_origins: vec!["not an origin".into()],
            ..ok
        };
        assert!(Config::new(&origin).is_err());
    }
}
