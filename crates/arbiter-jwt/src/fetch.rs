//! Loading key sets: the only I/O of this crate besides reading the config file.

use std::path::Path;
use std::time::Duration;

use crate::config::read_bounded;
use crate::jwk::KeySet;

/// Largest key set document read, from a file or a URL (after decompression).
pub const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Time allowed for one key set fetch, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client for key set URLs: bounded in time, no redirects (a key set URL is
/// configured exactly; following a redirect would let another host supply keys).
pub(crate) fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(true)
        .user_agent("arbiter-jwt")
        .build()
        .new_agent()
}

pub(crate) fn load_file(path: &Path) -> Result<KeySet, String> {
    let bytes = read_bounded(path, MAX_JWKS_BYTES)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    KeySet::parse(&bytes)
}

pub(crate) fn fetch_url(agent: &ureq::Agent, url: &str) -> Result<KeySet, String> {
    let mut response = agent
        .get(url)
        .header("accept", "application/json")
        .call()
        .map_err(|e| format!("cannot fetch `{url}`: {e}"))?;
    let status = response.status();
    if status != ureq::http::StatusCode::OK {
        return Err(format!("fetching `{url}` answered {status}, not 200"));
    }
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_vec()
        .map_err(|e| format!("cannot read the answer of `{url}`: {e}"))?;
    KeySet::parse(&bytes)
}
