//! HTTP pieces every gateway shares: the caller's bearer credential, a relayed stream's body,
//! and errors with their causes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use hyper::Uri;
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderMap};
pub use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::mpsc;

/// The credential of `Authorization: Bearer <credential>`: exactly one such header, one token
/// without spaces.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then(|| token.to_owned())
}

/// An error and its causes, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A response body fed from a channel: what a gateway relays of a stream, as it goes.
#[derive(Debug)]
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads `--upstream`: an `http://` URL with a host and no credentials; `peer` names what is
/// behind it in errors (`the MCP server`), `example` is a URL to show.
pub fn parse_upstream(url: &str, peer: &str, example: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("`--upstream {url}` is not a URL ({e}); e.g. {example}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`--upstream {url}`: https:// upstreams are not supported; reach {peer} \
                 over http:// (on the same host or a private network), or put a TLS-terminating \
                 proxy next to it"
            ));
        }
        _ => {
            return Err(format!(
                "`--upstream {url}` must be an http:// URL, e.g. {example}"
            ));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`--upstream {url}` has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "`--upstream {url}`: credentials in the URL are not sent; give them with \
             `--upstream-header 'Authorization: …'`"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("`--upstream {url}` has no host"));
    }
    Ok(uri)
}

/// Headers of the transport itself, which no configured header may set.
pub fn transport_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
    )
}

/// Reads one `--upstream-header 'Name: value'`; `reserved` names the headers the gateway sets
/// itself. The value is marked sensitive (usually a credential).
pub fn parse_upstream_header(
    text: &str,
    reserved: impl Fn(&HeaderName) -> bool,
) -> Result<(HeaderName, HeaderValue), String> {
    let shown = text.split(':').next().unwrap_or_default().trim();
    let Some((name, value)) = text.split_once(':') else {
        return Err(format!(
            "`--upstream-header {shown}…`: write it as `Name: value`, e.g. `Authorization: Bearer …`"
        ));
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`--upstream-header {shown}: …`: `{shown}` is not a header name"))?;
    if reserved(&name) {
        return Err(format!(
            "`--upstream-header {name}: …`: the gateway sets `{name}` itself"
        ));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("`--upstream-header {name}: …`: the value is empty"));
    }
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        format!("`--upstream-header {name}: …`: the value has characters a header cannot carry")
    })?;
    // Usually a credential: never shown in debug output.
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_credentials() {
        let get = |v: &str| bearer(&headers(&[("authorization", v)]));
        assert_eq!(get("Bearer arb_abc").as_deref(), Some("arb_abc"));
        assert_eq!(get("bearer  arb_abc ").as_deref(), Some("arb_abc"));
        assert_eq!(get("Basic dXNlcjpwYXNz"), None);
        assert_eq!(get("Bearer "), None);
        assert_eq!(get("Bearer a b"), None);
        assert_eq!(get("arb_abc"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(bearer(&two), None);
    }
}
