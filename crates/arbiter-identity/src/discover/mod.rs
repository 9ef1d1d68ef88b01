//! Discovery: which clients call LLM provider APIs, and which of them
//! Arbiter does not know about.
//!
//! `arbiter discover --access-log FILE` reads the access log of a forward
//! proxy, egress gateway or TLS-terminating proxy, keeps the requests whose
//! target host is on a [`HostList`] of LLM provider APIs, and groups them by
//! (client address, remote user, host). The caller then asks its registry
//! which groups belong to a registered agent ([`unregistered`]).
//!
//! Log files are untrusted input: lines are read with a bounded buffer
//! ([`MAX_LINE_LEN`]), every field has a length cap, the number of groups is
//! capped ([`MAX_USAGES`]), text from the log has control characters escaped,
//! and no input makes the scanner panic. Only hosts are kept from request
//! lines — never paths, query strings or credentials.

mod hosts;
mod lines;
mod parse;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use hosts::{HostList, HostListError, MAX_HOST_FILE_LEN, MAX_HOST_PATTERNS};
pub use lines::MAX_LINE_LEN;
pub use render::{render_json, render_text};

use lines::{Line, LineReader};
use parse::Entry;

/// Most distinct (source, user, host) groups kept; further matching requests
/// are counted in [`ScanReport::overflow_requests`].
pub const MAX_USAGES: usize = 20_000;
/// Most distinct user agents kept per group.
pub const MAX_USER_AGENTS: usize = 5;
/// Most malformed lines described in [`ScanReport::first_malformed_lines`].
pub const MAX_MALFORMED_EXAMPLES: usize = 10;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Per line: JSON if it starts with `{`, otherwise combined.
    #[default]
    Auto,
    /// nginx/Apache combined format, optionally with extra fields.
    Combined,
    /// One JSON object per line.
    JsonLines,
}

impl FromStr for LogFormat {
    type Err = String;

    /// `auto`, `combined`, or `json` (also `jsonl`, `json-lines`).
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "combined" => Ok(LogFormat::Combined),
            "json" | "jsonl" | "json-lines" => Ok(LogFormat::JsonLines),
            _ => Err("unknown log format; expected `auto`, `combined` or `json`".to_owned()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Auto => "auto",
            LogFormat::Combined => "combined",
            LogFormat::JsonLines => "json",
        })
    }
}

/// The requests of one client to one LLM provider host.
///
/// Text fields come from the log with control and bidirectional formatting
/// characters escaped as `\u{…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The client address, as logged.
    pub source: String,
    /// The authenticated user, if the log names one.
    pub remote_user: Option<String>,
    /// The provider name of the matching host pattern.
    pub provider: String,
    /// The target host, lowercase, without port.
    pub host: String,
    /// Number of requests.
    pub requests: u64,
    /// The time of the first request, as written in the log (file order).
    pub first_seen: String,
    /// The time of the last request, as written in the log (file order).
    pub last_seen: String,
    /// Distinct user agents, in order of first appearance, at most
    /// [`MAX_USER_AGENTS`], each cut to 256 characters.
    pub user_agents: Vec<String>,
    /// Requests per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

/// The result of [`scan_access_log`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScanReport {
    /// Lines read, including blank and malformed ones.
    pub lines: u64,
    /// Requests to a listed host (including [`ScanReport::overflow_requests`]).
    pub matched: u64,
    /// Lines skipped because they could not be parsed.
    pub skipped_malformed: u64,
    /// The first [`MAX_MALFORMED_EXAMPLES`] malformed lines: 1-based line
    /// number and reason. The line itself is never copied.
    pub first_malformed_lines: Vec<(u64, String)>,
    /// Matched requests not grouped because [`MAX_USAGES`] groups already
    /// existed.
    pub overflow_requests: u64,
    /// Groups by (source, remote user, host), most requests first.
    pub usages: Vec<Usage>,
}

type GroupKey = (String, Option<String>, String);

/// Reads an access log and groups the requests to hosts on `hosts`.
///
/// Blank lines are ignored; lines that cannot be parsed, or longer than
/// [`MAX_LINE_LEN`] bytes, are counted as malformed and skipped. Only an
/// I/O error from `reader` is an error.
pub fn scan_access_log<R: BufRead>(
    reader: R,
    format: LogFormat,
    hosts: &HostList,
) -> Result<ScanReport, io::Error> {
    let mut lines = LineReader::new(reader);
    let mut report = ScanReport::default();
    let mut groups: HashMap<GroupKey, usize> = HashMap::new();
    while let Some(line) = lines.next_line()? {
        report.lines += 1;
        let number = report.lines;
        let text = match line {
            Line::TooLong => {
                malformed(
                    &mut report,
                    number,
                    format!("longer than {MAX_LINE_LEN} bytes").as_str(),
                );
                continue;
            }
            Line::Text(text) => text.trim_ascii(),
        };
        // A UTF-8 byte order mark may open the file.
        let text = match text.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if number == 1 => rest,
            _ => text,
        };
        if text.is_empty() {
            continue;
        }
        let json = match format {
            LogFormat::Auto => text.first() == Some(&b'{'),
            LogFormat::Combined => false,
            LogFormat::JsonLines => true,
        };
        let parsed = if json {
            parse::json(text, hosts)
        } else {
            parse::combined(text, hosts)
        };
        match parsed {
            Ok(Some(entry)) => record(&mut report, &mut groups, entry),
            Ok(None) => {}
            Err(why) => malformed(&mut report, number, &why),
        }
    }
    report.usages.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.remote_user.cmp(&b.remote_user))
            .then_with(|| a.host.cmp(&b.host))
    });
    Ok(report)
}

fn malformed(report: &mut ScanReport, line: u64, why: &str) {
    report.skipped_malformed += 1;
    if report.first_malformed_lines.len() < MAX_MALFORMED_EXAMPLES {
        report.first_malformed_lines.push((line, why.to_owned()));
    }
}

fn record(report: &mut ScanReport, groups: &mut HashMap<GroupKey, usize>, entry: Entry<'_>) {
    report.matched += 1;
    let Entry {
        source,
        user,
        host,
        provider,
        time,
        status,
        user_agent,
    } = entry;
    let key = (source, user, host);
    let usage = match groups.get(&key) {
        Some(&i) => match report.usages.get_mut(i) {
            Some(usage) => usage,
            None => return,
        },
        None => {
            if report.usages.len() >= MAX_USAGES {
                report.overflow_requests += 1;
                return;
            }
            let (source, remote_user, host) = key.clone();
            groups.insert(key, report.usages.len());
            report.usages.push(Usage {
                source,
                remote_user,
                provider: provider.to_owned(),
                host,
                requests: 0,
                first_seen: time.clone(),
                last_seen: String::new(),
                user_agents: Vec::new(),
                statuses: BTreeMap::new(),
            });
            match report.usages.last_mut() {
                Some(usage) => usage,
                None => return,
            }
        }
    };
    usage.requests += 1;
    usage.last_seen = time;
    if let Some(status) = status {
        *usage.statuses.entry(status).or_insert(0) += 1;
    }
    if let Some(agent) = user_agent
        && usage.user_agents.len() < MAX_USER_AGENTS
        && !usage.user_agents.contains(&agent)
    {
        usage.user_agents.push(agent);
    }
}

/// The usages for which `is_registered` finds no registered agent, in
/// report order.
///
/// `is_registered` returns the name of the registered agent a usage belongs
/// to (matched however the caller's registry sees fit: by source address,
/// remote user, ...), or `None`.
pub fn unregistered(
    report: &ScanReport,
    is_registered: impl Fn(&Usage) -> Option<String>,
) -> Vec<&Usage> {
    report
        .usages
        .iter()
        .filter(|usage| is_registered(usage).is_none())
        .collect()
}
