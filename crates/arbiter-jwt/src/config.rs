//! Issuer configuration: the trusted issuers, their audiences and key sets.
//!
//! Two stages, as everywhere in Arbiter: [`RawFile`] mirrors the JSON file and refuses
//! unknown fields; [`IssuerConfig::validate`] then decides whether the settings are
//! acceptable. [`crate::Verifier::new`] validates again, so a config built in code gets
//! the same checks as one read from a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::alg::Algorithm;
use crate::error::ConfigError;

/// Clock skew tolerated for `exp`, `nbf` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The largest leeway accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The claim that names the agent in a token without `act`, unless configured otherwise.
pub const DEFAULT_AGENT_CLAIM: &str = "sub";
/// Largest issuer config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where an issuer's JSON Web Key Set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A local file, read once when the [`crate::Verifier`] is built.
    File(PathBuf),
    /// An `http://` or `https://` URL, fetched when the verifier is built and again
    /// (rate-limited) when a token names a `kid` the cached set lacks.
    Url(String),
}

/// One trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The exact `iss` value of this issuer's tokens.
    pub issuer: String,
    /// A token's `aud` must contain at least one of these. Must not be empty.
    pub audiences: Vec<String>,
    /// The issuer's public keys.
    pub jwks: JwksSource,
    /// The claim naming the agent when the token has no `act` claim.
    pub agent_claim: String,
    /// Algorithms accepted from this issuer.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`; at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// Whether `exp` is required (it should be).
    pub require_exp: bool,
}

impl IssuerConfig {
    /// An issuer with the defaults: agent claim `sub`, algorithms RS256, ES256 and EdDSA,
    /// 60 s leeway, `exp` required.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>, jwks: JwksSource) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences,
            jwks,
            agent_claim: DEFAULT_AGENT_CLAIM.to_owned(),
            algorithms: Algorithm::DEFAULT_ALLOWED.to_vec(),
            leeway: DEFAULT_LEEWAY,
            require_exp: true,
        }
    }

    /// Checks the settings; the error names the issuer and the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            issuer: self.issuer.clone(),
            message: message.to_owned(),
        };
        if self.issuer.is_empty() {
            return Err(invalid("`issuer` is empty"));
        }
        if self.audiences.is_empty() {
            return Err(invalid(
                "`audiences` is empty: a token must be meant for us, so at least one audience is required",
            ));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(invalid("`audiences` holds an empty string"));
        }
        if self.agent_claim.is_empty() {
            return Err(invalid("`agent_claim` is empty"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid("`algorithms` is empty"));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(invalid(&format!(
                "leeway of {} s exceeds the maximum of {} s",
                self.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            )));
        }
        match &self.jwks {
            JwksSource::File(path) => {
                if path.as_os_str().is_empty() {
                    return Err(invalid("`jwks_file` is empty"));
                }
            }
            JwksSource::Url(url) => {
                let lower = url.to_ascii_lowercase();
                let rest = lower
                    .strip_prefix("https://")
                    .or_else(|| lower.strip_prefix("http://"));
                match rest {
                    Some(rest) if !rest.is_empty() && !url.chars().any(char::is_whitespace) => {}
                    Some(_) | None => {
                        return Err(invalid("`jwks_url` must be an http:// or https:// URL"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The issuer config file: `{"issuers": [ ... ]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    issuers: Vec<RawIssuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    agent_claim: Option<String>,
    #[serde(default)]
    algorithms: Option<Vec<Algorithm>>,
    #[serde(default)]
    leeway_seconds: Option<u64>,
    #[serde(default)]
    require_exp: Option<bool>,
}

/// Reads an issuer config file (format in the crate README). A relative `jwks_file` is
/// resolved against the directory of the config file. Every issuer is validated; key sets
/// are not loaded here but by [`crate::Verifier::new`].
pub fn load_issuers(path: &Path) -> Result<Vec<IssuerConfig>, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = read_bounded(path, MAX_CONFIG_BYTES).map_err(io)?;
    parse_issuers(&bytes, path)
}

/// Parses the bytes of an issuer config file that lives at `path`.
pub fn parse_issuers(bytes: &[u8], path: &Path) -> Result<Vec<IssuerConfig>, ConfigError> {
    let parse = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| parse(e.to_string()))?;
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    let mut out: Vec<IssuerConfig> = Vec::with_capacity(raw.issuers.len());
    for (index, r) in raw.issuers.into_iter().enumerate() {
        let jwks = match (r.jwks_file, r.jwks_url) {
            (Some(file), None) => JwksSource::File(base.join(file)),
            (None, Some(url)) => JwksSource::Url(url),
            (Some(_), Some(_)) => {
                return Err(parse(format!(
                    "issuers[{index}]: set only one of `jwks_file` and `jwks_url`"
                )));
            }
            (None, None) => {
                return Err(parse(format!(
                    "issuers[{index}]: one of `jwks_file` and `jwks_url` is required"
                )));
            }
        };
        let leeway = match r.leeway_seconds {
            Some(secs) if secs > MAX_LEEWAY.as_secs() => {
                return Err(parse(format!(
                    "issuers[{index}]: `leeway_seconds` {secs} exceeds the maximum of {}",
                    MAX_LEEWAY.as_secs()
                )));
            }
            Some(secs) => Duration::from_secs(secs),
            None => DEFAULT_LEEWAY,
        };
        let config = IssuerConfig {
            issuer: r.issuer,
            audiences: r.audiences,
            jwks,
            agent_claim: r
                .agent_claim
                .unwrap_or_else(|| DEFAULT_AGENT_CLAIM.to_owned()),
            algorithms: r
                .algorithms
                .unwrap_or_else(|| Algorithm::DEFAULT_ALLOWED.to_vec()),
            leeway,
            require_exp: r.require_exp.unwrap_or(true),
        };
        config.validate()?;
        if out.iter().any(|c| c.issuer == config.issuer) {
            return Err(parse(format!(
                "issuers[{index}]: issuer `{}` is listed twice",
                config.issuer
            )));
        }
        out.push(config);
    }
    Ok(out)
}

/// Reads at most `limit` bytes of `path`; a longer file is an error.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(json: &str) -> Result<Vec<IssuerConfig>, ConfigError> {
        parse_issuers(json.as_bytes(), Path::new("/etc/arbiter/issuers.json"))
    }

    #[test]
    fn full_entry() {
        let got = parse(
            r#"{"issuers":[{"issuer":"https://idp.example","audiences":["arbiter"],
                "jwks_file":"keys/idp.json","agent_claim":"client_id",
                "algorithms":["RS256","PS256"],"leeway_seconds":30,"require_exp":true}]}"#,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        let c = &got[0];
        assert_eq!(c.issuer, "https://idp.example");
        assert_eq!(
            c.jwks,
            JwksSource::File(PathBuf::from("/etc/arbiter/keys/idp.json"))
        );
        assert_eq!(c.agent_claim, "client_id");
        assert_eq!(c.algorithms, [Algorithm::RS256, Algorithm::PS256]);
        assert_eq!(c.leeway, Duration::from_secs(30));
    }

    #[test]
    fn defaults() {
        let got = parse(
            r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://idp/jwks"}]}"#,
        )
        .unwrap();
        assert_eq!(got[0], {
            IssuerConfig::new(
                "i",
                vec!["a".to_owned()],
                JwksSource::Url("https://idp/jwks".to_owned()),
            )
        });
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://x","jwks":"y"}]}"#,
                "`jwks`",
            ),
            (
                r#"{"issuers":[{"audiences":["a"],"jwks_url":"https://x"}]}"#,
                "`issuer`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"]}]}"#,
                "`jwks_file`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_file":"f","jwks_url":"https://x"}]}"#,
                "only one",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":[],"jwks_url":"https://x"}]}"#,
                "`audiences`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://x","algorithms":["HS256"]}]}"#,
                "`HS256`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://x","algorithms":[]}]}"#,
                "`algorithms`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://x","leeway_seconds":301}]}"#,
                "`leeway_seconds`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"ftp://x"}]}"#,
                "`jwks_url`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://x","agent_claim":""}]}"#,
                "`agent_claim`",
            ),
            (
                r#"{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"https://x"},{"issuer":"i","audiences":["a"],"jwks_url":"https://x"}]}"#,
                "twice",
            ),
            (r#"{"issuers":[],"extra":1}"#, "`extra`"),
        ];
        for (json, needle) in cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn too_large_leeway_refused_in_code_too() {
        let mut c = IssuerConfig::new("i", vec!["a".to_owned()], JwksSource::File("k.json".into()));
        c.leeway = Duration::from_secs(301);
        assert!(c.validate().is_err());
        c.leeway = MAX_LEEWAY;
        assert!(c.validate().is_ok());
    }
}
