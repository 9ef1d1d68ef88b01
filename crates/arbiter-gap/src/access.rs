//! Access logs: traffic to LLM and API providers that went around forward-auth, read with
//! the scanner of `arbiter discover` (bounded lines and groups, no panics on any input).
//!
//! Each group of requests (client address, remote user, provider host) is attributed to the
//! registered agent whose id is the log's remote user or whose `addresses` attribute lists
//! the client address (as `arbiter discover` does): a coarse finding in its `applications`
//! cell, since forward-auth, which would decide each call, records in that layer. A group no
//! registered agent claims is an ungoverned row named `client:ADDRESS` (or
//! `client:USER@ADDRESS`).

use std::path::Path;

use arbiter_identity::{HostList, LogFormat, Usage};
use arbiter_store::Agent;
use serde_json::Value;

use crate::error::GapError;
use crate::model::{Finding, FindingSource, State};

/// The provider host list: `path`'s, or the built-in list of LLM provider APIs.
pub(crate) fn hosts(path: Option<&Path>) -> Result<HostList, GapError> {
    match path {
        None => Ok(HostList::default()),
        Some(p) => HostList::from_file(p).map_err(|e| GapError::AccessLog {
            path: p.to_path_buf(),
            why: format!("host list: {e}"),
        }),
    }
}

/// What one access log showed: (row, finding) pairs and warnings.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub findings: Vec<(String, Finding)>,
    pub warnings: Vec<String>,
}

pub(crate) fn scan(path: &Path, hosts: &HostList, agents: &[Agent]) -> Result<Found, GapError> {
    let fail = |why: String| GapError::AccessLog {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open it: {e}")))?;
    let report =
        arbiter_identity::scan_access_log(std::io::BufReader::new(file), LogFormat::Auto, hosts)
            .map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut found = Found::default();
    let shown = path.display();
    if report.skipped_malformed > 0 {
        found.warnings.push(format!(
            "access log `{shown}`: {} line(s) could not be read and were skipped",
            report.skipped_malformed
        ));
    }
    if report.overflow_requests > 0 {
        found.warnings.push(format!(
            "access log `{shown}`: {} request(s) beyond the first {} client × host groups are not in the map",
            report.overflow_requests,
            arbiter_identity::discover::MAX_USAGES
        ));
    }
    for usage in &report.usages {
        let agent = agent_of(usage, agents);
        let (row, state) = match &agent {
            Some(id) => (id.clone(), State::Coarse),
            None => (
                match &usage.remote_user {
                    Some(u) => format!("client:{u}@{}", usage.source),
                    None => format!("client:{}", usage.source),
                },
                State::Ungoverned,
            ),
        };
        let next_step = match state {
            State::Ungoverned => format!(
                "register the client at {} (`arbiter agent register AGENT-ID --owner TEAM \
                 --attributes '{{\"addresses\": [\"{}\"]}}'`), then send this traffic through \
                 forward-auth (`arbiter serve --forward-auth 'SERVICE proxy=nginx'`, see \
                 docs/forward-auth.md)",
                usage.source, usage.source
            ),
            State::Coarse | State::Enforced | State::Unknown => format!(
                "send this traffic through forward-auth: let the proxy in front of {} ask \
                 `arbiter serve --forward-auth 'SERVICE proxy=nginx'` before each call, with \
                 the agent's own key (see docs/forward-auth.md)",
                usage.host
            ),
        };
        found.findings.push((
            row,
            Finding {
                state,
                source: FindingSource::AccessLog,
                r#where: shown.to_string(),
                system: usage.host.clone(),
                detail: format!(
                    "{} request(s) from {}{} to {} ({}) between {} and {} without forward-auth",
                    usage.requests,
                    usage.source,
                    usage
                        .remote_user
                        .as_deref()
                        .map(|u| format!(" as `{u}`"))
                        .unwrap_or_default(),
                    usage.host,
                    usage.provider,
                    usage.first_seen,
                    usage.last_seen
                ),
                next_step,
            },
        ));
    }
    Ok(found)
}

/// The registered agent a usage belongs to: the log's remote user is its id, or its
/// `addresses` attribute lists the client address.
fn agent_of(usage: &Usage, agents: &[Agent]) -> Option<String> {
    agents
        .iter()
        .find(|a| {
            usage.remote_user.as_deref() == Some(a.id.as_str())
                || a.attributes
                    .get("addresses")
                    .and_then(Value::as_array)
                    .is_some_and(|addrs| addrs.iter().any(|x| x.as_str() == Some(&usage.source)))
        })
        .map(|a| a.id.clone())
}
