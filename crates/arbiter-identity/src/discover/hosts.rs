//! Which hosts count as LLM provider APIs.
//!
//! A [`HostList`] maps host patterns to provider names. Patterns are host
//! names whose labels may contain one `*`, matching one or more characters
//! *within that label*: `*.openai.azure.com` matches `contoso.openai.azure.com`
//! but not `a.b.openai.azure.com` nor `openai.azure.com`;
//! `*-aiplatform.googleapis.com` matches `us-central1-aiplatform.googleapis.com`;
//! `bedrock-runtime.*.amazonaws.com` matches any region. Matching is
//! ASCII case-insensitive, ignores a port and a trailing dot, and the first
//! matching pattern wins.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The built-in list: (pattern, provider).
const DEFAULT_HOSTS: &[(&str, &str)] = &[
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "google-gemini"),
    ("aiplatform.googleapis.com", "google-vertex-ai"),
    ("*-aiplatform.googleapis.com", "google-vertex-ai"),
    ("*.openai.azure.com", "azure-openai"),
    ("*.services.ai.azure.com", "azure-ai-foundry"),
    ("bedrock-runtime.*.amazonaws.com", "aws-bedrock"),
    ("bedrock-runtime-fips.*.amazonaws.com", "aws-bedrock"),
    ("api.mistral.ai", "mistral"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("api.groq.com", "groq"),
    ("api.together.xyz", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "xai"),
    ("api.perplexity.ai", "perplexity"),
    ("openrouter.ai", "openrouter"),
    ("api.replicate.com", "replicate"),
    ("api-inference.huggingface.co", "huggingface"),
    ("router.huggingface.co", "huggingface"),
];

/// Largest host file read.
pub const MAX_HOST_FILE_LEN: u64 = 1024 * 1024;
/// Most patterns in one list.
pub const MAX_HOST_PATTERNS: usize = 10_000;

/// A host list could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum HostListError {
    /// The file could not be read.
    #[error("cannot read host list `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_HOST_FILE_LEN`].
    #[error("host list `{path}` is larger than {MAX_HOST_FILE_LEN} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line of text given to [`HostList::parse`] is invalid.
    #[error("host list line {line}: {reason}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A line of a file given to [`HostList::from_file`] is invalid.
    #[error("host list `{path}` line {line}: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostEntry {
    /// Lowercase pattern.
    pattern: String,
    provider: String,
}

/// Host patterns of LLM provider APIs, each with a provider name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostList {
    entries: Vec<HostEntry>,
}

impl Default for HostList {
    /// The built-in list of LLM provider API hosts (see the crate README).
    fn default() -> HostList {
        HostList {
            entries: DEFAULT_HOSTS
                .iter()
                .map(|(pattern, provider)| HostEntry {
                    pattern: (*pattern).to_owned(),
                    provider: (*provider).to_owned(),
                })
                .collect(),
        }
    }
}

impl HostList {
    /// A list matching nothing.
    pub fn empty() -> HostList {
        HostList {
            entries: Vec::new(),
        }
    }

    /// Parses a host list: one `pattern [provider]` per line; blank lines
    /// and `#` comments are ignored. Without a provider name, the pattern
    /// itself names the provider. The result replaces the default list.
    pub fn parse(text: &str) -> Result<HostList, HostListError> {
        let mut list = HostList::empty();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let invalid = |reason: String| HostListError::Invalid { line, reason };
            let content = raw.split_once('#').map_or(raw, |(before, _)| before);
            let mut words = content.split_whitespace();
            let Some(pattern) = words.next() else {
                continue;
            };
            let provider = words.next();
            if words.next().is_some() {
                return Err(invalid(
                    "expected `pattern [provider]`, found more than two words".to_owned(),
                ));
            }
            let pattern = pattern.to_ascii_lowercase();
            check_pattern(&pattern)
                .map_err(|why| invalid(format!("`{}`: {why}", shorten(&pattern))))?;
            let provider = match provider {
                Some(name) => {
                    check_provider(name)
                        .map_err(|why| invalid(format!("`{}`: {why}", shorten(name))))?;
                    name.to_owned()
                }
                None => pattern.clone(),
            };
            if list.entries.iter().any(|e| e.pattern == pattern) {
                return Err(invalid(format!("`{}` is listed twice", shorten(&pattern))));
            }
            if list.entries.len() == MAX_HOST_PATTERNS {
                return Err(invalid(format!("more than {MAX_HOST_PATTERNS} patterns")));
            }
            list.entries.push(HostEntry { pattern, provider });
        }
        Ok(list)
    }

    /// Reads and parses a host list file (at most [`MAX_HOST_FILE_LEN`]
    /// bytes of UTF-8); see [`HostList::parse`].
    pub fn from_file(path: &Path) -> Result<HostList, HostListError> {
        let io = |source| HostListError::Io {
            path: path.to_owned(),
            source,
        };
        let file = fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_HOST_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_HOST_FILE_LEN {
            return Err(HostListError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            ))
        })?;
        HostList::parse(&text).map_err(|e| match e {
            HostListError::Invalid { line, reason } => HostListError::InvalidFile {
                path: path.to_owned(),
                line,
                reason,
            },
            other => other,
        })
    }

    /// The provider whose pattern matches `host` (a host name, optionally
    /// with a port), or `None`. Case-insensitive; the first match wins.
    pub fn matches(&self, host: &str) -> Option<&str> {
        let host = authority_host(host)?;
        self.entries
            .iter()
            .find(|e| host_matches(&e.pattern, host))
            .map(|e| e.provider.as_str())
    }

    /// The (pattern, provider) pairs, in matching order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.pattern.as_str(), e.provider.as_str()))
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list matches nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for HostList {
    /// The list in the file format read by [`HostList::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{} {}", e.pattern, e.provider)?;
        }
        Ok(())
    }
}

/// The host of an authority (`[userinfo@]host[:port]`), without userinfo,
/// port or trailing dot, if it is a syntactically valid host name or IPv4
/// address. IPv6 literals give `None`: no pattern can name them.
pub(crate) fn authority_host(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            host
        }
        None => host_port,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    valid_host(host).then_some(host)
}

/// 1 to 253 bytes of dot-separated labels of 1 to 63 bytes of
/// `A-Za-z0-9-_`.
fn valid_host(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = pattern.split('.').collect();
    if labels.len() < 2 {
        return Err("a pattern needs at least two labels, e.g. `api.example.com`");
    }
    for label in &labels {
        if !(1..=63).contains(&label.len()) {
            return Err("every label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        {
            return Err("only letters, digits, `-`, `_`, `.` and `*` are allowed");
        }
        if label.bytes().filter(|&b| b == b'*').count() > 1 {
            return Err("at most one `*` per label");
        }
    }
    if labels.last().is_some_and(|l| l.contains('*')) {
        return Err("the last label cannot contain `*`");
    }
    Ok(())
}

fn check_provider(name: &str) -> Result<(), &'static str> {
    if !(1..=64).contains(&name.len())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("a provider name is 1 to 64 letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Label-by-label glob match; both sides must have the same number of
/// labels.
fn host_matches(pattern: &str, host: &str) -> bool {
    let mut pattern_labels = pattern.split('.');
    let mut host_labels = host.split('.');
    loop {
        match (pattern_labels.next(), host_labels.next()) {
            (None, None) => return true,
            (Some(p), Some(h)) if label_matches(p, h) => {}
            _ => return false,
        }
    }
}

/// `*` in `pattern` stands for one or more characters.
fn label_matches(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(label),
        Some((prefix, suffix)) => {
            label.len() > prefix.len() + suffix.len()
                && label
                    .get(..prefix.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                && label
                    .get(label.len() - suffix.len()..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn default_patterns_are_valid_and_distinct() {
        let text = HostList::default().to_string();
        assert_eq!(HostList::parse(&text).unwrap(), HostList::default());
        assert_eq!(HostList::default().len(), DEFAULT_HOSTS.len());
    }

    #[test]
    fn default_matches() {
        let hosts = HostList::default();
        let cases = [
            ("api.openai.com", Some("openai")),
            ("API.OpenAI.com:443", Some("openai")),
            ("api.openai.com.", Some("openai")),
            ("user:pw@api.anthropic.com:443", Some("anthropic")),
            ("openai.com", None),
            ("xapi.openai.com", None),
            ("api.openai.com.evil.example", None),
            (
                "us-central1-aiplatform.googleapis.com",
                Some("google-vertex-ai"),
            ),
            ("aiplatform.googleapis.com", Some("google-vertex-ai")),
            ("-aiplatform.googleapis.com", None),
            ("contoso.openai.azure.com", Some("azure-openai")),
            ("openai.azure.com", None),
            ("a.b.openai.azure.com", None),
            ("proj.services.ai.azure.com", Some("azure-ai-foundry")),
            (
                "bedrock-runtime.us-east-1.amazonaws.com",
                Some("aws-bedrock"),
            ),
            (
                "bedrock-runtime-fips.us-west-2.amazonaws.com",
                Some("aws-bedrock"),
            ),
            ("bedrock.us-east-1.amazonaws.com", None),
            ("openrouter.ai", Some("openrouter")),
            ("router.huggingface.co", Some("huggingface")),
            ("api.openai.com:", None),
            ("api.openai.com:99999x", None),
            ("[::1]:443", None),
            ("", None),
            ("api..openai.com", None),
        ];
        for (host, want) in cases {
            assert_eq!(hosts.matches(host), want, "{host}");
        }
    }

    #[test]
    fn parse_file_format() {
        let list = HostList::parse(
            "# internal gateways\n\
             llm.corp.example  corp-gateway   # trailing comment\n\
             \n\
             *.LLM.example\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.matches("llm.corp.example"), Some("corp-gateway"));
        assert_eq!(list.matches("eu.llm.example"), Some("*.llm.example"));
        assert_eq!(list.matches("api.openai.com"), None);
    }

    #[test]
    fn parse_rejects_bad_lines() {
        for (text, line) in [
            ("a.example x y", 1),
            ("\nexample", 2),
            ("a.*", 1),
            ("a.**.example", 1),
            ("a..example", 1),
            ("a/b.example", 1),
            ("a.example bad/name", 1),
            ("a.example\nA.EXAMPLE", 2),
        ] {
            match HostList::parse(text) {
                Err(HostListError::Invalid { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
