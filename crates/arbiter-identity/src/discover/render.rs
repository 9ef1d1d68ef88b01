//! Text and JSON views of a [`ScanReport`] for `arbiter discover`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::parse::clean;
use super::{ScanReport, Usage};

#[derive(Serialize)]
struct UsageView<'a> {
    #[serde(flatten)]
    usage: &'a Usage,
    registered_as: Option<String>,
}

#[derive(Serialize)]
struct MalformedView<'a> {
    line: u64,
    reason: &'a str,
}

#[derive(Serialize)]
struct ReportView<'a> {
    lines: u64,
    matched: u64,
    skipped_malformed: u64,
    first_malformed_lines: Vec<MalformedView<'a>>,
    overflow_requests: u64,
    unregistered: usize,
    usages: Vec<UsageView<'a>>,
}

/// The report as JSON: its counters, `first_malformed_lines` as
/// `{line, reason}` objects, the number of `unregistered` usages, and every
/// usage with a `registered_as` field (the agent name, or `null`).
pub fn render_json(report: &ScanReport, is_registered: impl Fn(&Usage) -> Option<String>) -> Value {
    let usages: Vec<UsageView<'_>> = report
        .usages
        .iter()
        .map(|usage| UsageView {
            usage,
            registered_as: is_registered(usage),
        })
        .collect();
    let view = ReportView {
        lines: report.lines,
        matched: report.matched,
        skipped_malformed: report.skipped_malformed,
        first_malformed_lines: report
            .first_malformed_lines
            .iter()
            .map(|(line, reason)| MalformedView {
                line: *line,
                reason,
            })
            .collect(),
        overflow_requests: report.overflow_requests,
        unregistered: usages.iter().filter(|u| u.registered_as.is_none()).count(),
        usages,
    };
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// The report as text for a terminal: a summary, then one block per usage
/// (unregistered ones marked `NOT REGISTERED`), then the first malformed
/// lines.
pub fn render_text(
    report: &ScanReport,
    is_registered: impl Fn(&Usage) -> Option<String>,
) -> String {
    let mut out = String::new();
    let registered: Vec<Option<String>> = report.usages.iter().map(&is_registered).collect();
    let unregistered = registered.iter().filter(|r| r.is_none()).count();
    let _ = writeln!(
        out,
        "{} lines read, {} requests to LLM provider hosts, {} malformed lines skipped",
        report.lines, report.matched, report.skipped_malformed
    );
    let _ = writeln!(
        out,
        "{} sources, {} not registered",
        report.usages.len(),
        unregistered
    );
    if report.overflow_requests > 0 {
        let _ = writeln!(
            out,
            "{} requests not grouped: too many distinct sources",
            report.overflow_requests
        );
    }
    for (usage, registered) in report.usages.iter().zip(&registered) {
        out.push('\n');
        let user = usage
            .remote_user
            .as_deref()
            .map(|u| format!(" (user {u})"))
            .unwrap_or_default();
        let status = match registered {
            Some(name) => format!("registered as {}", clean(name)),
            None => "NOT REGISTERED".to_owned(),
        };
        let _ = writeln!(
            out,
            "{}{} -> {} [{}]  {}",
            usage.source, user, usage.host, usage.provider, status
        );
        let _ = writeln!(
            out,
            "    {} requests, {} .. {}",
            usage.requests, usage.first_seen, usage.last_seen
        );
        if !usage.statuses.is_empty() {
            let statuses: Vec<String> = usage
                .statuses
                .iter()
                .map(|(status, n)| format!("{status} x{n}"))
                .collect();
            let _ = writeln!(out, "    statuses: {}", statuses.join(", "));
        }
        if !usage.user_agents.is_empty() {
            let _ = writeln!(out, "    user agents: {}", usage.user_agents.join(" | "));
        }
    }
    if !report.first_malformed_lines.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "first malformed lines:");
        for (line, why) in &report.first_malformed_lines {
            let _ = writeln!(out, "    line {line}: {why}");
        }
    }
    out
}
