//! The decision log, read once from the first segment that may hold a decision of the window
//! to the end, one record at a time: per (agent, layer), the enforcement points, how many
//! decisions and denials, the latest time and the determining policies. Memory is bounded by
//! the number of distinct (agent, layer) pairs ([`MAX_CELLS`]), never by the number of
//! records.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::Path;

use arbiter_log::{Follower, Outcome, RecordError, RecordSummary};

use crate::error::GapError;
use crate::model::{Enforced, Layer};

/// Most (agent, layer) pairs kept; decisions of further agents are counted in a warning.
pub(crate) const MAX_CELLS: usize = 50_000;
/// Most enforcement points and policies listed per cell.
pub(crate) const MAX_LISTED: usize = 32;

#[derive(Debug, Default)]
struct Stats {
    points: BTreeSet<String>,
    policies: BTreeSet<String>,
    decisions: u64,
    denied: u64,
    last_us: i64,
}

/// The subject the decision point records when it refuses a credential that names no agent.
const UNAUTHENTICATED: &str = "unauthenticated";

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    pub cells: BTreeMap<(String, Layer), Enforced>,
    pub warnings: Vec<String>,
}

/// The agent a record is about: `subject.agent_id`, else the subject itself when it is an
/// agent; `None` for a user acting without an agent.
fn agent_of<'r>(r: &'r RecordSummary<'_>) -> Option<&'r str> {
    match &r.subject.agent_id {
        Some(a) => Some(a),
        None if r.subject.kind == "Agent" || r.subject.kind.ends_with("::Agent") => {
            Some(&r.subject.id)
        }
        None => None,
    }
}

pub(crate) fn scan(dir: &Path, since_us: i64) -> Result<Scanned, GapError> {
    let fail = |e: arbiter_log::LogError| GapError::Log {
        dir: dir.to_path_buf(),
        why: e.to_string(),
    };
    let mut out = Scanned::default();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stats: BTreeMap<(String, Layer), Stats> = BTreeMap::new();
    let mut no_layer: BTreeMap<String, u64> = BTreeMap::new();
    let mut dropped = 0u64;
    let mut refused = 0u64;
    let mut bad: Option<(u64, RecordError)> = None;
    let mut follower = Follower::since(dir, since_us).map_err(fail)?;
    // Only the fields counted are decoded (`RecordSummary`): `arbiter log verify` is what
    // checks records; a payload that does not decode at all still stops the scan.
    follower
        .poll_raw(&mut |index, payload| {
            let r = match RecordSummary::from_bytes(payload) {
                Ok(r) => r,
                Err(e) => {
                    bad = Some((index, e));
                    return ControlFlow::Break(());
                }
            };
            if r.ts_us < since_us {
                return ControlFlow::Continue(());
            }
            let Some(agent) = agent_of(&r) else {
                return ControlFlow::Continue(());
            };
            // A credential no agent owns is refused under the placeholder subject
            // `unauthenticated`: not an agent; what presented it is a discovered identity.
            if agent == UNAUTHENTICATED && r.outcome == Outcome::Deny {
                refused += 1;
                return ControlFlow::Continue(());
            }
            let point: &str = &r.enforcement_point;
            let Some(layer) = Layer::of_enforcement_point(point) else {
                if no_layer.len() < MAX_LISTED || no_layer.contains_key(point) {
                    *no_layer.entry(point.to_owned()).or_insert(0) += 1;
                }
                return ControlFlow::Continue(());
            };
            let key = (agent.to_owned(), layer);
            if !stats.contains_key(&key) && stats.len() >= MAX_CELLS {
                dropped += 1;
                return ControlFlow::Continue(());
            }
            let s = stats.entry(key).or_default();
            s.decisions += 1;
            if r.outcome == Outcome::Deny {
                s.denied += 1;
            }
            s.last_us = s.last_us.max(r.ts_us);
            if s.points.len() < MAX_LISTED && !s.points.contains(point) {
                s.points.insert(point.to_owned());
            }
            for p in &r.determining_policies {
                if s.policies.len() >= MAX_LISTED {
                    break;
                }
                if !s.policies.contains(p.as_ref()) {
                    s.policies.insert(p.to_string());
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(fail)?;
    if let Some((index, e)) = bad {
        return Err(GapError::Log {
            dir: dir.to_path_buf(),
            why: format!("record {index} cannot be read: {e}"),
        });
    }
    for ((agent, layer), s) in stats {
        #[expect(clippy::cast_precision_loss, reason = "a rate; counts far below 2^52")]
        let deny_rate = if s.decisions == 0 {
            0.0
        } else {
            s.denied as f64 / s.decisions as f64
        };
        out.cells.insert(
            (agent, layer),
            Enforced {
                enforcement_points: s.points.into_iter().collect(),
                decisions: s.decisions,
                denied: s.denied,
                deny_rate,
                last_seen: arbiter_log::format_rfc3339_us(s.last_us),
                policies: s.policies.into_iter().collect(),
            },
        );
    }
    for (point, n) in no_layer {
        // The policy activations of governed mode are not an agent's actions.
        if point == "arbiter:policy" {
            continue;
        }
        out.warnings.push(if point == "authzen" {
            format!(
                "{n} decision(s) of AuthZEN callers that name no enforcement point are not in \
                 the map (an enforcement point names itself with the header \
                 `X-Arbiter-Enforcement-Point: http:SERVICE`, `exec:…`, `sql:…`, `mcp:…` or `a2a:…`)"
            )
        } else {
            format!(
                "{n} decision(s) at enforcement point `{}`, which belongs to no layer, are not in the map",
                crate::declared::printable(&point)
            )
        });
    }
    if refused > 0 {
        out.warnings.push(format!(
            "{refused} decision(s) refused a credential that belongs to no agent; what presented \
             them is listed among the discovered identities (ungoverned rows) when it was recorded"
        ));
    }
    if dropped > 0 {
        out.warnings.push(format!(
            "{dropped} decision(s) of agents beyond the first {MAX_CELLS} agent × layer pairs are not in the map"
        ));
    }
    Ok(out)
}
