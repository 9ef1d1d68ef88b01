//! What a permit declares about runtime context: the session labels an allowed call adds,
//! the rate limit and the budget that bound it.
//!
//! ```cedar
//! @id("read-customers")
//! @session_label("private_data")
//! permit (principal is Agent, action == Action::"select", resource == Table::"shop.public.customers");
//!
//! @id("refunds")
//! @limit("20/hour")
//! @budget("arguments.amount: 1000/day")
//! permit (principal is Agent, action == Action::"call_tool", resource == Tool::"billing/refund");
//! ```
//!
//! - `@session_label("a, b")`: when this permit allows a call, the labels join the caller's
//!   session; later decisions see them in `context.session.labels`.
//! - `@limit("N/WINDOW")`: this permit allows at most `N` calls per agent in any sliding
//!   `WINDOW` (`second`, `minute`, `hour`, `day`, or a duration such as `10m`, `12h`).
//! - `@require_approval` (options `owner` or `not_owner`, `expires=DURATION`): an allow of
//!   this permit needs a person's approval of the exact request first; the decision is
//!   `require_approval` until then, and an approval allows the identical request once.
//! - `@budget("PATH: MAX/WINDOW")`: the numbers at context path `PATH` of the calls this
//!   permit allows add up to at most `MAX` per agent in any sliding `WINDOW`. A call without
//!   a non-negative number there is denied.
//!
//! Only permits may carry them; they are checked when the policies load (a malformed one is
//! a load error at its file and line). The decision point keeps the state they need
//! (`arbiter_pdp::sessions`).

use std::time::Duration;

/// The longest window a limit or a budget may have.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// The most calls a limit may allow per window (the decision point keeps one entry per call
/// in the window).
pub const MAX_LIMIT_CALLS: u64 = 1_000_000;

/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// What one permit declares (see the module documentation). Empty for most policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeRules {
    /// Labels an allowed call adds to its session.
    pub labels: Vec<String>,
    pub limit: Option<Limit>,
    pub budget: Option<Budget>,
    pub approval: Option<ApprovalRule>,
}

/// `@require_approval`: an allow of this permit needs a person's approval of the exact
/// request first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalRule {
    pub approvers: WhoApproves,
    /// How long the approval is valid, asked for and once approved.
    pub expires: Duration,
}

/// Who may approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhoApproves {
    /// Any approver.
    Any,
    /// Only the agent's owner.
    Owner,
    /// Anyone but the agent's owner.
    NotOwner,
}

/// How long an approval is valid when the annotation does not say.
pub const DEFAULT_APPROVAL_EXPIRY: Duration = Duration::from_secs(3_600);

impl RuntimeRules {
    /// Whether the permit declares nothing.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
            && self.limit.is_none()
            && self.budget.is_none()
            && self.approval.is_none()
    }
}

/// At most `calls` allowed calls per agent in any window of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub calls: u64,
    pub window: Duration,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.calls, window_text(self.window))
    }
}

/// The numbers at `path` add up to at most `max` per agent in any window of `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Dotted path into the request context, e.g. `arguments.amount`.
    pub path: Vec<String>,
    pub max: Amount,
    pub window: Duration,
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}/{}",
            self.path.join("."),
            self.max,
            window_text(self.window)
        )
    }
}

/// A non-negative decimal with up to [`Amount::SCALE_DIGITS`] digits after the point, kept
/// exactly (money adds up without rounding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(u128);

impl Amount {
    /// Digits kept after the decimal point.
    pub const SCALE_DIGITS: u32 = 6;
    const SCALE: u128 = 10u128.pow(Self::SCALE_DIGITS);
    /// The largest amount accepted (a bound far above any budget, so sums cannot overflow).
    const MAX: u128 = 10u128.pow(30);

    /// Reads a non-negative decimal (`12`, `12.5`, `0.000001`; JSON number text). `None` for
    /// anything else: a sign, an exponent, more fraction digits than kept, too large.
    pub fn parse(text: &str) -> Option<Amount> {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (text.contains('.') && frac.is_empty())
            || frac.len() > Self::SCALE_DIGITS as usize
            || int.len() > 30
        {
            return None;
        }
        let int: u128 = int.parse().ok()?;
        let mut f: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..Self::SCALE_DIGITS as usize {
            f *= 10;
        }
        let v = int.checked_mul(Self::SCALE)?.checked_add(f)?;
        (v <= Self::MAX * Self::SCALE).then_some(Amount(v))
    }

    /// The amount of a context value: a non-negative number (no exponent), a Cedar decimal
    /// (`{"__extn": {"fn": "decimal", "arg": "12.5"}}`, how enforcement points pass a
    /// fraction), or a string holding a decimal (`"12.50"`).
    pub fn of_json(v: &serde_json::Value) -> Option<Amount> {
        use serde_json::Value;
        match v {
            Value::Number(n) => Amount::parse(&n.to_string()),
            Value::String(s) => Amount::parse(s),
            Value::Object(o) => {
                let ext = o.get("__extn")?;
                if o.len() != 1 || ext.get("fn")?.as_str()? != "decimal" {
                    return None;
                }
                Amount::parse(ext.get("arg")?.as_str()?)
            }
            Value::Null | Value::Bool(_) | Value::Array(_) => None,
        }
    }

    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// The amount in millionths (its exact internal value).
    pub fn millionths(self) -> u128 {
        self.0
    }

    /// From millionths (see [`Amount::millionths`]).
    pub const fn from_millionths(v: u128) -> Amount {
        Amount(v)
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let int = self.0 / Self::SCALE;
        let frac = self.0 % Self::SCALE;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let digits = format!("{frac:0width$}", width = Self::SCALE_DIGITS as usize);
        write!(f, "{int}.{}", digits.trim_end_matches('0'))
    }
}

/// Reads the runtime annotations of one policy. `annotation` gives an annotation's value by
/// name; `is_permit` whether the policy is a permit. The error says what is wrong.
pub(crate) fn parse_rules<'a>(
    annotation: impl Fn(&str) -> Option<&'a str>,
    is_permit: bool,
) -> Result<RuntimeRules, String> {
    let mut rules = RuntimeRules::default();
    if let Some(text) = annotation("session_label") {
        for label in text.split(',').map(str::trim) {
            if label.is_empty()
                || label.len() > MAX_LABEL_BYTES
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
            {
                return Err(format!(
                    "`@session_label(\"{text}\")`: a label is 1 to {MAX_LABEL_BYTES} letters, \
                     digits, `_`, `-`, `.` or `:`; give several separated by commas"
                ));
            }
            if !rules.labels.iter().any(|l| l == label) {
                rules.labels.push(label.to_owned());
            }
        }
    }
    if let Some(text) = annotation("limit") {
        let (calls, window) = text
            .split_once('/')
            .and_then(|(n, w)| Some((n.trim().parse::<u64>().ok()?, parse_window(w.trim())?)))
            .filter(|(n, _)| (1..=MAX_LIMIT_CALLS).contains(n))
            .ok_or_else(|| {
                format!(
                    "`@limit(\"{text}\")`: expected CALLS/WINDOW such as `20/hour`, `5/minute` \
                     or `100/12h` (CALLS 1 to 1000000, WINDOW at most 7 days)"
                )
            })?;
        rules.limit = Some(Limit { calls, window });
    }
    if let Some(text) = annotation("budget") {
        rules.budget = Some(parse_budget(text).ok_or_else(|| {
            format!(
                "`@budget(\"{text}\")`: expected PATH: MAX/WINDOW such as \
                 `arguments.amount: 1000/day` (PATH a dotted context path, MAX a non-negative \
                 decimal, WINDOW at most 7 days)"
            )
        })?);
    }
    if let Some(text) = annotation("require_approval") {
        rules.approval = Some(parse_approval(text).ok_or_else(|| {
            format!(
                "`@require_approval(\"{text}\")`: expected nothing, or comma-separated options: \
                 `owner` (only the agent's owner approves) or `not_owner` (anyone but the \
                 owner), `expires=DURATION` (how long the approval is valid, e.g. `30m`, at \
                 most 7 days; default 1 hour)"
            )
        })?);
    }
    if !is_permit && !rules.is_empty() {
        return Err(
            "`@session_label`, `@limit`, `@budget` and `@require_approval` apply to what a \
             permit allows; a forbid cannot carry them"
                .to_owned(),
        );
    }
    Ok(rules)
}

fn parse_approval(text: &str) -> Option<ApprovalRule> {
    let mut rule = ApprovalRule {
        approvers: WhoApproves::Any,
        expires: DEFAULT_APPROVAL_EXPIRY,
    };
    let (mut who, mut expires) = (false, false);
    for option in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option {
            "owner" | "not_owner" if !who => {
                who = true;
                rule.approvers = if option == "owner" {
                    WhoApproves::Owner
                } else {
                    WhoApproves::NotOwner
                };
            }
            _ => {
                let d = option.strip_prefix("expires=").filter(|_| !expires)?;
                expires = true;
                rule.expires = parse_window(d.trim())?;
            }
        }
    }
    Some(rule)
}

fn parse_budget(text: &str) -> Option<Budget> {
    let (path, rest) = text.split_once(':')?;
    let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
    if path.iter().any(|p| {
        p.is_empty()
            || p.len() > 64
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) || path.len() > 8
    {
        return None;
    }
    let (max, window) = rest.split_once('/')?;
    Some(Budget {
        path,
        max: Amount::parse(max.trim())?,
        window: parse_window(window.trim())?,
    })
}

/// `second`, `minute`, `hour`, `day` (also plural), or `N` followed by `s`, `m`, `h`, `d`;
/// at most [`MAX_WINDOW`].
fn parse_window(text: &str) -> Option<Duration> {
    let secs = match text {
        "second" | "seconds" | "s" => 1,
        "minute" | "minutes" | "m" => 60,
        "hour" | "hours" | "h" => 3_600,
        "day" | "days" | "d" => 86_400,
        _ => {
            let unit = match text.as_bytes().last()? {
                b's' => 1,
                b'm' => 60,
                b'h' => 3_600,
                b'd' => 86_400,
                _ => return None,
            };
            let n = text.get(..text.len() - 1)?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 7 {
                return None;
            }
            n.parse::<u64>().ok()?.checked_mul(unit)?
        }
    };
    let window = Duration::from_secs(secs);
    (secs > 0 && window <= MAX_WINDOW).then_some(window)
}

/// A window as written back (`hour`, `10m`).
fn window_text(w: Duration) -> String {
    match w.as_secs() {
        1 => "second".into(),
        60 => "minute".into(),
        3_600 => "hour".into(),
        86_400 => "day".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rules(pairs: &[(&str, &'static str)]) -> Result<RuntimeRules, String> {
        let pairs: Vec<(String, &'static str)> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        parse_rules(
            |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v),
            true,
        )
    }

    #[test]
    fn annotations_are_read() {
        let r = rules(&[
            ("session_label", "private_data, pii,private_data"),
            ("limit", "20/hour"),
            ("budget", "arguments.amount: 1000.50/day"),
        ])
        .unwrap();
        assert_eq!(r.labels, ["private_data", "pii"]);
        assert_eq!(
            r.limit,
            Some(Limit {
                calls: 20,
                window: Duration::from_secs(3_600)
            })
        );
        let b = r.budget.unwrap();
        assert_eq!(b.path, ["arguments", "amount"]);
        assert_eq!(b.max, Amount::parse("1000.5").unwrap());
        assert_eq!(b.to_string(), "arguments.amount: 1000.5/day");
        assert_eq!(
            rules(&[("limit", "5/10m")])
                .unwrap()
                .limit
                .unwrap()
                .to_string(),
            "5/10m"
        );
        assert_eq!(
            rules(&[("require_approval", "")]).unwrap().approval,
            Some(ApprovalRule {
                approvers: WhoApproves::Any,
                expires: DEFAULT_APPROVAL_EXPIRY
            })
        );
        assert_eq!(
            rules(&[("require_approval", "not_owner, expires=30m")])
                .unwrap()
                .approval,
            Some(ApprovalRule {
                approvers: WhoApproves::NotOwner,
                expires: Duration::from_secs(1_800)
            })
        );
    }

    #[test]
    fn malformed_annotations_are_refused() {
        for (k, v) in [
            ("session_label", ""),
            ("session_label", "a b"),
            ("session_label", "a,,b"),
            ("limit", "0/hour"),
            ("limit", "20"),
            ("limit", "20/fortnight"),
            ("limit", "-1/hour"),
            ("limit", "20/8d"),
            ("limit", "20/0s"),
            ("limit", "1000001/day"),
            ("budget", "amount 1000/day"),
            ("budget", "arguments.amount: -5/day"),
            ("budget", "arguments.amount: 1e3/day"),
            ("budget", ": 5/day"),
            ("budget", "a..b: 5/day"),
            ("require_approval", "someone"),
            ("require_approval", "owner, not_owner"),
            ("require_approval", "expires=8d"),
            ("require_approval", "expires=1h, expires=2h"),
        ] {
            assert!(rules(&[(k, v)]).is_err(), "{k}={v}");
        }
        assert!(
            parse_rules(|n| (n == "limit").then_some("1/hour"), false)
                .unwrap_err()
                .contains("forbid")
        );
    }

    #[test]
    fn a_malformed_annotation_is_a_load_error_at_its_line() {
        let text = "permit (principal, action, resource);\n\n@limit(\"often\")\npermit (principal, action, resource);\n";
        let errors = crate::Policies::from_sources(
            &[crate::SourceFile {
                path: "limits.cedar".into(),
                text: text.into(),
            }],
            None,
            None,
        )
        .unwrap_err();
        let e = &errors.0[0];
        assert_eq!(e.file, std::path::Path::new("limits.cedar"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("`@limit(\"often\")`"), "{}", e.message);
    }

    #[test]
    fn amounts_are_exact() {
        let a = Amount::parse("0.1").unwrap();
        let b = Amount::parse("0.2").unwrap();
        assert_eq!(a.saturating_add(b), Amount::parse("0.3").unwrap());
        assert_eq!(Amount::parse("12").unwrap().to_string(), "12");
        assert_eq!(Amount::parse("12.340").unwrap().to_string(), "12.34");
        for bad in ["", "-1", "1e3", "1.", ".5", "1.0000001", "0x10", " 1"] {
            assert_eq!(Amount::parse(bad), None, "{bad}");
        }
        assert_eq!(Amount::of_json(&serde_json::json!(-3)), None);
        assert_eq!(Amount::of_json(&serde_json::json!("3")), Amount::parse("3"));
        assert_eq!(Amount::of_json(&serde_json::json!("-3")), None);
        assert_eq!(
            Amount::of_json(&serde_json::json!({"__extn": {"fn": "decimal", "arg": "2.25"}})),
            Amount::parse("2.25")
        );
        assert_eq!(
            Amount::of_json(&serde_json::json!({"__extn": {"fn": "ip", "arg": "2.25"}})),
            None
        );
        assert_eq!(Amount::of_json(&serde_json::json!(true)), None);
        assert_eq!(
            Amount::of_json(&serde_json::json!(2.5)),
            Amount::parse("2.5")
        );
    }
}
