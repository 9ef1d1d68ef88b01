//! Filtering records: the [`RecordFilter`] behind `arbiter log query`, pure
//! so that an HTTP API can reuse it.

use serde::{Deserialize, Serialize};

use crate::record::{DecisionRecord, Outcome};

/// A conjunction of optional conditions on a record; an empty filter
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFilter {
    /// The agent: equals `subject.agent_id`, or `subject.id` when the record
    /// has no `agent_id`.
    pub agent: Option<String>,
    /// The action id, exactly.
    pub action: Option<String>,
    /// The outcome.
    pub outcome: Option<Outcome>,
    /// The resource: `ID` (equals `resource.id`), or `TYPE::ID` or
    /// `TYPE::"ID"` (equals `resource.kind` and `resource.id`).
    pub resource: Option<String>,
    /// Records at or after this time (Unix microseconds), inclusive.
    pub since_us: Option<i64>,
    /// Records before this time (Unix microseconds), exclusive.
    pub until_us: Option<i64>,
    /// The policy version, exactly.
    pub policy_version: Option<String>,
    /// The enforcement point: records whose `enforcement_point` starts with
    /// this text (`mcp:` for every MCP gateway, `mcp:fs` for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement_point: Option<String>,
    /// The layer (one of [`LAYERS`]): records whose enforcement point maps to
    /// it by [`layer_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// The action domains an agent's actions fall in, by where they are
/// enforced: HTTP APIs, commands, databases, MCP tools, agent-to-agent calls.
pub const LAYERS: [&str; 5] = ["applications", "infrastructure", "data", "ai", "agents"];

/// The layer of a record's enforcement point: `http:<service>` (forward-auth
/// and HTTP gateways) → `applications`, `exec:<host>` → `infrastructure`,
/// `sql:<db>` → `data`, `mcp:<server>` → `ai`, `a2a:<name>` → `agents`.
/// `None` for anything else (direct AuthZEN callers recorded as `authzen`,
/// the log's own override records).
pub fn layer_of(enforcement_point: &str) -> Option<&'static str> {
    let kind = enforcement_point.split_once(':')?.0;
    Some(match kind {
        "http" => "applications",
        "exec" => "infrastructure",
        "sql" => "data",
        "mcp" => "ai",
        "a2a" => "agents",
        _ => return None,
    })
}

impl RecordFilter {
    /// Whether `r` satisfies every condition that is set.
    pub fn matches(&self, r: &DecisionRecord) -> bool {
        if let Some(a) = &self.agent {
            let agent = r.subject.agent_id.as_deref().unwrap_or(&r.subject.id);
            if agent != a {
                return false;
            }
        }
        if self.action.as_ref().is_some_and(|a| *a != r.action) {
            return false;
        }
        if self.outcome.is_some_and(|o| o != r.outcome) {
            return false;
        }
        if let Some(res) = &self.resource
            && !resource_matches(res, &r.resource.kind, &r.resource.id)
        {
            return false;
        }
        if self.since_us.is_some_and(|t| r.ts_us < t) {
            return false;
        }
        if self.until_us.is_some_and(|t| r.ts_us >= t) {
            return false;
        }
        if self
            .policy_version
            .as_ref()
            .is_some_and(|v| *v != r.policy_version)
        {
            return false;
        }
        if self
            .enforcement_point
            .as_ref()
            .is_some_and(|p| !r.enforcement_point.starts_with(p.as_str()))
        {
            return false;
        }
        if self
            .layer
            .as_ref()
            .is_some_and(|l| layer_of(&r.enforcement_point) != Some(l.as_str()))
        {
            return false;
        }
        true
    }
}

fn resource_matches(want: &str, kind: &str, id: &str) -> bool {
    if want == id {
        return true;
    }
    let Some(rest) = want.strip_prefix(kind).and_then(|r| r.strip_prefix("::")) else {
        return false;
    };
    rest == id
        || rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .is_some_and(|r| r == id)
}

/// Text that is not a time (see [`parse_time`]); holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a time: use RFC 3339 (e.g. 2025-01-02T03:04:05Z) or Unix seconds")]
pub struct TimeError(pub String);

/// Parses a time given as RFC 3339 (`2025-01-02T03:04:05Z`,
/// `2025-01-02T03:04:05.123456+02:00`; a space may replace the `T`) or as
/// Unix seconds (`1735787045`, optionally with a fraction), into Unix
/// microseconds.
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    let s = s.trim();
    let bad = || TimeError(s.to_owned());
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s.contains("--")
    {
        if s.len() > 10 && s.as_bytes().get(4) == Some(&b'-') {
            // a date such as 2025-01-02, handled below
        } else {
            return parse_unix_seconds(s).ok_or_else(bad);
        }
    }
    parse_rfc3339(s).ok_or_else(bad)
}

fn parse_unix_seconds(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let micros = frac_micros(frac);
    let v = secs.checked_mul(1_000_000)?.checked_add(micros)?;
    Some(if neg { -v } else { v })
}

fn frac_micros(frac: &str) -> i64 {
    let mut digits: String = frac.chars().take(6).collect();
    while digits.len() < 6 {
        digits.push('0');
    }
    digits.parse().unwrap_or(0)
}

fn num(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    if b.get(16) != Some(&b':') {
        return None;
    }
    let (y, mo, d) = (num(s, 0..4)?, num(s, 5..7)?, num(s, 8..10)?);
    let (h, mi, se) = (num(s, 11..13)?, num(s, 14..16)?, num(s, 17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut micros = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        micros = frac_micros(r.get(..n)?);
        rest = r.get(n..)?;
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let (oh, om) = (num(rest, 1..3)?, num(rest, 4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_secs;
    Some(secs * 1_000_000 + micros)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Howard Hinnant's days_from_civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::record::{EntityRef, SubjectRef, format_rfc3339_us};

    fn rec() -> DecisionRecord {
        DecisionRecord {
            decision_id: "d1".into(),
            ts_us: 1_735_787_045_000_006,
            subject: SubjectRef {
                kind: "User".into(),
                id: "alice".into(),
                agent_id: Some("bot-1".into()),
                credential_id: None,
            },
            action: "fs:read".into(),
            resource: EntityRef {
                kind: "File".into(),
                id: "/etc/hosts".into(),
            },
            outcome: Outcome::Allow,
            policy_version: "sha256:abc".into(),
            ..DecisionRecord::default()
        }
    }

    #[test]
    fn layers_and_enforcement_point_prefix() {
        assert_eq!(layer_of("http:tickets"), Some("applications"));
        assert_eq!(layer_of("exec:host-1"), Some("infrastructure"));
        assert_eq!(layer_of("sql:app"), Some("data"));
        assert_eq!(layer_of("mcp:fs"), Some("ai"));
        assert_eq!(layer_of("a2a:planner"), Some("agents"));
        assert_eq!(layer_of("authzen"), None);
        assert_eq!(layer_of("arbiter-log:override"), None);
        let mut r = rec();
        r.enforcement_point = "mcp:fs".into();
        let mut f = RecordFilter {
            enforcement_point: Some("mcp:".into()),
            layer: Some("ai".into()),
            ..RecordFilter::default()
        };
        assert!(f.matches(&r));
        f.enforcement_point = Some("mcp:fs".into());
        assert!(f.matches(&r));
        f.enforcement_point = Some("sql:".into());
        assert!(!f.matches(&r));
        f.enforcement_point = None;
        f.layer = Some("data".into());
        assert!(!f.matches(&r));
        // Older serialized filters (without the new fields) still read.
        let old: RecordFilter = serde_json::from_str(r#"{"agent":null,"action":null,"outcome":null,"resource":null,"since_us":null,"until_us":null,"policy_version":null}"#).unwrap();
        assert_eq!(old, RecordFilter::default());
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(RecordFilter::default().matches(&rec()));
    }

    #[test]
    fn agent_prefers_agent_id_then_subject_id() {
        let mut f = RecordFilter {
            agent: Some("bot-1".into()),
            ..RecordFilter::default()
        };
        assert!(f.matches(&rec()));
        f.agent = Some("alice".into());
        assert!(
            !f.matches(&rec()),
            "agent_id is set, so subject.id is not used"
        );
        let mut r = rec();
        r.subject.agent_id = None;
        assert!(f.matches(&r));
    }

    #[test]
    fn each_condition_filters() {
        let r = rec();
        let t = r.ts_us;
        let cases = [
            (
                RecordFilter {
                    action: Some("fs:read".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    action: Some("fs:write".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    outcome: Some(Outcome::Allow),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    outcome: Some(Outcome::Deny),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    resource: Some("/etc/hosts".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    resource: Some("File::/etc/hosts".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    resource: Some("File::\"/etc/hosts\"".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    resource: Some("Dir::/etc/hosts".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    resource: Some("/etc".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    since_us: Some(t),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    since_us: Some(t + 1),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    until_us: Some(t + 1),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    until_us: Some(t),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    policy_version: Some("sha256:abc".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                RecordFilter {
                    policy_version: Some("sha256:x".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                RecordFilter {
                    agent: Some("bot-1".into()),
                    outcome: Some(Outcome::Allow),
                    action: Some("fs:write".into()),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (f, want) in cases {
            assert_eq!(f.matches(&r), want, "{f:?}");
        }
    }

    #[test]
    fn times_parse() {
        let t = 1_735_787_045_000_006;
        assert_eq!(parse_time(&format_rfc3339_us(t)).unwrap(), t);
        assert_eq!(
            parse_time("2025-01-02T03:04:05Z").unwrap(),
            1_735_787_045_000_000
        );
        assert_eq!(
            parse_time("2025-01-02 03:04:05z").unwrap(),
            1_735_787_045_000_000
        );
        assert_eq!(
            parse_time("2025-01-02T05:04:05.5+02:00").unwrap(),
            1_735_787_045_500_000
        );
        assert_eq!(
            parse_time("2025-01-02T02:04:05-01:00").unwrap(),
            1_735_787_045_000_000
        );
        assert_eq!(parse_time("1735787045").unwrap(), 1_735_787_045_000_000);
        assert_eq!(parse_time("1735787045.25").unwrap(), 1_735_787_045_250_000);
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2024-02-29T00:00:00Z").unwrap(),
            1_709_164_800_000_000
        );
        for bad in [
            "",
            "yesterday",
            "2025-01-02",
            "2025-13-02T00:00:00Z",
            "2025-02-30T00:00:00Z",
            "2025-01-02T03:04:05",
            "2025-01-02T03:04:05+0200",
            "12a",
            "1.2.3",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
