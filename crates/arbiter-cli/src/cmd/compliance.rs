//! `arbiter compliance`: a signed archive mapping what Arbiter enforced and recorded to the
//! controls of OWASP's NHI and agentic top tens, NIST CSF 2.0, SP 800-207 and the AI RMF.
//!
//! The figures are computed from the data directory (decision log, registry, audit trail,
//! witness cosignatures) when the report is made; each control says what Arbiter does for it,
//! which figures show it, and which evidence files hold them. The archive's `MANIFEST.json`
//! lists every file with its SHA-256 and is signed with the decision log's key
//! (`MANIFEST.sig`); `arbiter compliance verify` checks it offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use arbiter_log::{KeyPair, PublicKey, format_rfc3339_us};
use arbiter_pdp::identity::now_us;
use arbiter_store::{AgentFilter, AgentStatus, CredentialFilter, CredentialKind, Store};
use clap::Subcommand;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cmd::agent::{DataArg, open_store};
use crate::cmd::log::{EXIT_VERIFY_FAILED, load_key};
use crate::out::print;

/// The format tag of an archive's manifest.
const FORMAT: &str = "arbiter-compliance/v1";
const MANIFEST: &str = "MANIFEST.json";
const SIGNATURE: &str = "MANIFEST.sig";

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// Write the compliance archive to DIR (created; must be empty): `report.json`, a static
    /// `report.html` (no external assets), the evidence files, and `MANIFEST.json` with every
    /// file's SHA-256, signed with the decision log's key (`MANIFEST.sig`).
    Report {
        /// Figures from decisions at or after this time (RFC 3339, Unix seconds, or a time
        /// ago: `30d`); the registry and the log's verification are reported as they stand.
        #[arg(long, value_name = "TIME")]
        since: String,
        /// The archive directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keys older than this many days count as past rotation.
        #[arg(long, value_name = "DAYS", default_value_t = 90)]
        rotation_days: u32,
        /// Also check the log against this witness's cosignatures (repeatable).
        #[arg(long = "witness-key", value_name = "FILE|HEX")]
        witness_keys: Vec<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Check an archive offline: the manifest's signature under the log's key, every file's
    /// SHA-256, and no file missing or added. Exit 0, or 3 naming what does not hold.
    Verify {
        /// The archive directory.
        dir: PathBuf,
        /// The log's public key (a file or 64 hex characters).
        #[arg(long, value_name = "FILE|HEX")]
        pubkey: String,
    },
}

pub fn run(cmd: ComplianceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ComplianceCommand::Report {
            since,
            out,
            rotation_days,
            witness_keys,
            data,
        } => report(&data.data, &since, &out, rotation_days, &witness_keys),
        ComplianceCommand::Verify { dir, pubkey } => verify(&dir, &pubkey),
    }
}

/// The layer of an enforcement point, as the action domains are named.
fn layer(point: &str) -> &'static str {
    match point.split_once(':').map_or(point, |(p, _)| p) {
        "http" => "applications (HTTP APIs)",
        "exec" => "infrastructure (commands)",
        "sql" => "data (databases)",
        "mcp" => "AI workloads (MCP tools)",
        "a2a" => "agent-to-agent",
        _ => "decision API (direct callers)",
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    allow: u64,
    deny: u64,
    require_approval: u64,
}

fn report(
    data: &Path,
    since: &str,
    out: &Path,
    rotation_days: u32,
    witness_keys: &[String],
) -> anyhow::Result<ExitCode> {
    let now = now_us();
    let since_us =
        crate::cmd::log::time_arg(since).map_err(|e| anyhow::anyhow!("`--since {since}`: {e}"))?;
    let log_dir = data.join("log");
    if !log_dir.is_dir() || !crate::cmd::store::exists(data) {
        bail!(
            "`{}` holds no decision log and registry: give the data directory of `arbiter serve` \
             with --data",
            data.display()
        );
    }
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "`{}` is not empty: give a new directory for the archive",
            out.display()
        );
    }
    let key =
        KeyPair::load_or_create(&log_dir).context("cannot read the decision log's signing key")?;
    let store = open_store(data)?;
    let store: &dyn Store = store.as_ref();
    let mut evidence: BTreeMap<&str, Value> = BTreeMap::new();

    // Decisions in the window, by layer and outcome; activations of policy versions.
    let mut by_layer: BTreeMap<&str, Outcomes> = BTreeMap::new();
    let mut total = 0u64;
    let mut activations_recorded = 0u64;
    for item in arbiter_log::read_records(&log_dir)? {
        let (_, r) = item?;
        if r.ts_us < since_us {
            continue;
        }
        if r.enforcement_point == arbiter_pdp::governed::ACTIVATION_ENFORCEMENT_POINT {
            activations_recorded += 1;
            continue;
        }
        total += 1;
        let o = by_layer.entry(layer(&r.enforcement_point)).or_default();
        match r.outcome {
            arbiter_log::Outcome::Allow => o.allow += 1,
            arbiter_log::Outcome::Deny => o.deny += 1,
            arbiter_log::Outcome::RequireApproval => o.require_approval += 1,
        }
    }
    let denied: u64 = by_layer.values().map(|o| o.deny).sum();

    // The log verified, and against its witnesses.
    let log_key = PublicKey::from_file(&log_dir.join("log-signing.pub"))?;
    let verified = arbiter_log::verify_dir(&log_dir, Some(&log_key), None)?;
    let wkeys = witness_keys
        .iter()
        .map(|k| load_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let witnessed = if wkeys.is_empty() || !verified.is_ok() {
        Vec::new()
    } else {
        arbiter_log::witness::check_witnessed(
            &log_dir,
            &log_key,
            &wkeys,
            &[],
            arbiter_log::witness::DEFAULT_UNWITNESSED_RECORDS,
        )?
    };
    let cosigned = arbiter_log::witness::read_cosigned(&log_dir)?;
    let latest_cosigned = cosigned.iter().map(|c| c.checkpoint.tree_size).max();
    evidence.insert(
        "log-verify.json",
        json!({
            "verify": verified,
            "public_key": log_key.to_hex(),
            "latest_checkpoint": arbiter_log::latest_checkpoint(&log_dir)?,
            "cosignatures": cosigned.len(),
            "latest_cosigned_size": latest_cosigned,
            "witnesses_checked": witnessed,
        }),
    );

    // The audit trail's hash chain.
    let audit = store.verify_audit();
    evidence.insert(
        "audit-verify.json",
        json!({
            "ok": audit.is_ok(),
            "events": audit.as_ref().ok(),
            "error": audit.as_ref().err().map(ToString::to_string),
        }),
    );

    // Agents and their keys (metadata only: never a key or its hash).
    let agents = store.list_agents(&AgentFilter::default())?;
    let creds = store.list_credentials(&CredentialFilter {
        include_revoked: true,
        ..CredentialFilter::default()
    })?;
    let rotation_us = i64::from(rotation_days) * 86_400_000_000;
    let active_key = |c: &&arbiter_store::Credential| {
        c.kind == CredentialKind::AgentKey
            && c.revoked_at_us.is_none()
            && c.expires_at_us.is_none_or(|e| e > now)
    };
    let keys: Vec<_> = creds.iter().filter(active_key).collect();
    let past_rotation = keys
        .iter()
        .filter(|c| now - c.created_us > rotation_us)
        .count();
    let no_expiry = keys.iter().filter(|c| c.expires_at_us.is_none()).count();
    let revoked_in_window: Vec<_> = creds
        .iter()
        .filter(|c| c.revoked_at_us.is_some_and(|t| t >= since_us))
        .collect();
    let without_owner = agents.iter().filter(|a| a.owner.trim().is_empty()).count();
    let active_agents = agents
        .iter()
        .filter(|a| a.status == AgentStatus::Active)
        .count();
    let discovered = store.list_discovered(false)?.len();
    evidence.insert(
        "agents.json",
        json!({
            "agents": agents.iter().map(|a| json!({
                "id": a.id, "owner": a.owner, "environment": a.environment, "status": a.status,
                "created_at": format_rfc3339_us(a.created_us),
                "last_seen_at": a.last_seen_us.map(format_rfc3339_us),
            })).collect::<Vec<_>>(),
            "keys": creds.iter().filter(|c| c.kind == CredentialKind::AgentKey).map(|c| json!({
                "id": c.id, "agent": c.agent_id, "name": c.name,
                "created_at": format_rfc3339_us(c.created_us),
                "expires_at": c.expires_at_us.map(format_rfc3339_us),
                "revoked_at": c.revoked_at_us.map(format_rfc3339_us),
                "revoked_reason": c.revoked_reason,
                "last_used_at": c.last_used_us.map(format_rfc3339_us),
            })).collect::<Vec<_>>(),
            "discovered_unregistered": discovered,
        }),
    );

    // Governed policy versions.
    let required = store.required_policy_approvals()?;
    let versions = store.list_policy_versions(1000)?;
    let activations = store.policy_activations(1000)?;
    let active = activations.first().map(|a| a.version.clone());
    let activated: Vec<&String> = activations.iter().map(|a| &a.version).collect();
    let activated_without_approvals = versions
        .iter()
        .filter(|v| activated.contains(&&v.version) && (v.approvals.len() as u32) < required)
        .count();
    let active_unowned = versions
        .iter()
        .find(|v| Some(&v.version) == active.as_ref())
        .map(|v| {
            arbiter_pdp::governed::load(v)
                .map(|p| p.owners().values().filter(|o| o.is_none()).count())
                .unwrap_or(0)
        });
    evidence.insert(
        "policy-versions.json",
        json!({
            "required_approvals": required,
            "active": active,
            "versions": versions.iter().map(|v| arbiter_pdp::governed::version_json(v, required, activations.first())).collect::<Vec<_>>(),
            "activations": activations.iter().map(arbiter_pdp::governed::activation_json).collect::<Vec<_>>(),
        }),
    );

    let figures = json!({
        "window": {"since": format_rfc3339_us(since_us), "until": format_rfc3339_us(now)},
        "decisions": {"total": total, "denied": denied, "by_layer": by_layer.iter().map(|(k, o)| ((*k).to_owned(), json!({"allow": o.allow, "deny": o.deny, "require_approval": o.require_approval}))).collect::<serde_json::Map<_, _>>()},
        "agents": {"total": agents.len(), "active": active_agents, "without_owner": without_owner,
                   "discovered_unregistered": discovered},
        "keys": {"active": keys.len(), "past_rotation": past_rotation, "rotation_days": rotation_days,
                 "without_expiry": no_expiry, "revoked_in_window": revoked_in_window.len(),
                 "revocations": revoked_in_window.iter().map(|c| json!({"key": c.id, "agent": c.agent_id, "at": c.revoked_at_us.map(format_rfc3339_us), "reason": c.revoked_reason})).collect::<Vec<_>>(),
                 "revocation_effect": "immediate on every node sharing the registry: the next request with a revoked key is refused"},
        "policy": {"governed": active.is_some(), "active_version": active, "required_approvals": required,
                   "versions": versions.len(), "activations": activations.len(),
                   "activated_without_required_approvals": activated_without_approvals,
                   "active_policies_without_owner": active_unowned,
                   "activation_records_in_log": activations_recorded},
        "log": {"verified": verified.is_ok(), "records": verified.records, "checkpoints": verified.checkpoints,
                "problem": verified.problem.as_ref().map(|p| p.detail.clone()),
                "cosigned_checkpoints": cosigned.len(), "latest_cosigned_size": latest_cosigned,
                "witnesses_agree": if witnessed.is_empty() { Value::Null } else { Value::from(witnessed.iter().all(|w| w.is_ok())) }},
        "audit": {"verified": audit.is_ok(), "events": audit.as_ref().ok()},
    });
    let controls = controls(&figures);
    let report = json!({
        "format": FORMAT,
        "created_at": format_rfc3339_us(now),
        "node_id": verified_node(&log_dir),
        "figures": figures,
        "controls": controls,
    });

    std::fs::create_dir_all(out.join("evidence"))
        .with_context(|| format!("cannot create `{}`", out.display()))?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("report.json".into(), serde_json::to_vec_pretty(&report)?);
    files.insert("report.html".into(), html(&report).into_bytes());
    for (name, v) in &evidence {
        files.insert(format!("evidence/{name}"), serde_json::to_vec_pretty(v)?);
    }
    let manifest = json!({
        "format": FORMAT,
        "created_at": format_rfc3339_us(now),
        "log_public_key": key.public_key_hex(),
        "files": files.iter().map(|(k, v)| (k.clone(), Value::from(hex::encode(Sha256::digest(v))))).collect::<serde_json::Map<_, _>>(),
    });
    let manifest = serde_json::to_vec_pretty(&manifest)?;
    for (name, bytes) in &files {
        std::fs::write(out.join(name), bytes).with_context(|| format!("cannot write `{name}`"))?;
    }
    std::fs::write(out.join(MANIFEST), &manifest)?;
    std::fs::write(
        out.join(SIGNATURE),
        format!("{}\n", hex::encode(key.sign_bytes(&manifest))),
    )?;
    let attention = controls
        .iter()
        .filter(|c| c["status"] == "attention")
        .count();
    print(&format!(
        "compliance archive written to {} ({} controls, {} needing attention; {} decisions since {})",
        out.display(),
        controls.len(),
        attention,
        total,
        format_rfc3339_us(since_us)
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn verified_node(log_dir: &Path) -> Option<String> {
    arbiter_log::latest_checkpoint(log_dir)
        .ok()
        .flatten()
        .map(|c| c.node_id)
}

/// Every control with what Arbiter does for it, its figures and its evidence files.
fn controls(f: &Value) -> Vec<Value> {
    let n = |path: &[&str]| -> u64 { path.iter().fold(f, |v, k| &v[*k]).as_u64().unwrap_or(0) };
    let yes = |path: &[&str]| -> bool { path.iter().fold(f, |v, k| &v[*k]) == true };
    let log_ok = yes(&["log", "verified"]) && yes(&["audit", "verified"]);
    let keys_ok = n(&["keys", "past_rotation"]) == 0;
    let governed_ok = yes(&["policy", "governed"])
        && n(&["policy", "activated_without_required_approvals"]) == 0
        && n(&["policy", "active_policies_without_owner"]) == 0;
    let inventory_ok =
        n(&["agents", "without_owner"]) == 0 && n(&["agents", "discovered_unregistered"]) == 0;
    let decisions = format!(
        "{} decisions ({} denied) across {} layer(s)",
        n(&["decisions", "total"]),
        n(&["decisions", "denied"]),
        f["decisions"]["by_layer"]
            .as_object()
            .map_or(0, |m| m.len())
    );
    let keys = format!(
        "{} active keys, {} past {}-day rotation, {} without expiry, {} revoked in the window",
        n(&["keys", "active"]),
        n(&["keys", "past_rotation"]),
        n(&["keys", "rotation_days"]),
        n(&["keys", "without_expiry"]),
        n(&["keys", "revoked_in_window"])
    );
    let agents = format!(
        "{} agents ({} active), {} without owner, {} discovered identities not registered",
        n(&["agents", "total"]),
        n(&["agents", "active"]),
        n(&["agents", "without_owner"]),
        n(&["agents", "discovered_unregistered"])
    );
    let policy = format!(
        "governed: {}; {} versions, {} activations; {} activated without the {} required approval(s); {} active policies without owner",
        yes(&["policy", "governed"]),
        n(&["policy", "versions"]),
        n(&["policy", "activations"]),
        n(&["policy", "activated_without_required_approvals"]),
        n(&["policy", "required_approvals"]),
        n(&["policy", "active_policies_without_owner"])
    );
    let log = format!(
        "log verified: {} ({} records, {} checkpoints, {} cosigned); audit trail verified: {} ({} events)",
        yes(&["log", "verified"]),
        n(&["log", "records"]),
        n(&["log", "checkpoints"]),
        n(&["log", "cosigned_checkpoints"]),
        yes(&["audit", "verified"]),
        n(&["audit", "events"])
    );
    let c = |framework: &str,
             id: &str,
             title: &str,
             arbiter: &str,
             figures: Vec<&String>,
             ok: bool,
             evidence: &[&str]| {
        json!({
            "framework": framework, "id": id, "title": title, "arbiter": arbiter,
            "figures": figures, "status": if ok { "evidenced" } else { "attention" },
            "evidence": evidence,
        })
    };
    const AGENTS: &str = "evidence/agents.json";
    const LOG: &str = "evidence/log-verify.json";
    const AUDIT: &str = "evidence/audit-verify.json";
    const POLICY: &str = "evidence/policy-versions.json";
    vec![
        c(
            "OWASP Non-Human Identities Top 10 (2025)",
            "NHI1",
            "Improper Offboarding",
            "Agents are retired or suspended in the registry; retiring revokes every key, and the next request with it is refused.",
            vec![&agents, &keys],
            inventory_ok,
            &[AGENTS, AUDIT],
        ),
        c(
            "OWASP Non-Human Identities Top 10 (2025)",
            "NHI3",
            "Vulnerable Third-Party NHI",
            "Tool definitions of third-party MCP servers are pinned; a changed definition is blocked until approved; discovered identities are inventoried.",
            vec![&agents, &decisions],
            inventory_ok,
            &[AGENTS, LOG],
        ),
        c(
            "OWASP Non-Human Identities Top 10 (2025)",
            "NHI4",
            "Insecure Authentication",
            "Every request is authenticated with an Arbiter key (hashed at rest, checksummed, constant-time compared) or a JWT from a configured issuer; unknown or revoked credentials are denied.",
            vec![&keys, &decisions],
            true,
            &[AGENTS, LOG],
        ),
        c(
            "OWASP Non-Human Identities Top 10 (2025)",
            "NHI5",
            "Overprivileged NHI",
            "Each action is decided at request time by policy, per tool, statement, route and command, not by a coarse scope.",
            vec![&decisions, &policy],
            governed_ok,
            &[LOG, POLICY],
        ),
        c(
            "OWASP Non-Human Identities Top 10 (2025)",
            "NHI7",
            "Long-Lived Secrets",
            "Keys carry an expiry and are rotated with an overlap; keys past the rotation age are counted here.",
            vec![&keys],
            keys_ok,
            &[AGENTS],
        ),
        c(
            "OWASP Top 10 for Agentic Applications (2026)",
            "ASI02",
            "Tool Misuse and Exploitation",
            "MCP tool calls, SQL statements, HTTP requests and commands are each authorized against live policy before they reach the tool.",
            vec![&decisions],
            true,
            &[LOG],
        ),
        c(
            "OWASP Top 10 for Agentic Applications (2026)",
            "ASI03",
            "Identity and Privilege Abuse",
            "The acting agent comes from its credential, never from the request; delegation chains are evaluated hop by hop.",
            vec![&agents, &keys, &decisions],
            inventory_ok && keys_ok,
            &[AGENTS, LOG],
        ),
        c(
            "OWASP Top 10 for Agentic Applications (2026)",
            "ASI05",
            "Unexpected Code Execution",
            "`arbiter exec` runs a program only when policy allows that command line for that agent.",
            vec![&decisions],
            true,
            &[LOG],
        ),
        c(
            "OWASP Top 10 for Agentic Applications (2026)",
            "ASI10",
            "Rogue Agents",
            "Unregistered agents are discovered from access logs; a suspended agent is denied on its next request; every decision is recorded before it is answered.",
            vec![&agents, &log],
            inventory_ok && log_ok,
            &[AGENTS, LOG],
        ),
        c(
            "NIST CSF 2.0",
            "PR.AA-01",
            "Identities and credentials for authorized users, services, and hardware are managed by the organization",
            "The agent registry: owners, environments, keys with expiry, rotation and revocation, all audited.",
            vec![&agents, &keys],
            inventory_ok && keys_ok,
            &[AGENTS, AUDIT],
        ),
        c(
            "NIST CSF 2.0",
            "PR.AA-03",
            "Users, services, and hardware are authenticated",
            "Every enforcement point authenticates the agent before asking for a decision; failures are denied and recorded.",
            vec![&decisions],
            true,
            &[LOG],
        ),
        c(
            "NIST CSF 2.0",
            "PR.AA-05",
            "Access permissions, entitlements, and authorizations are defined in a policy, managed, enforced, and reviewed",
            "Policies with owners, proposed and approved by two people, activated and rolled back on record; enforced per request; replay, shadow and proofs review changes.",
            vec![&policy, &decisions],
            governed_ok,
            &[POLICY, LOG],
        ),
        c(
            "NIST CSF 2.0",
            "PR.PS-04",
            "Log records are generated and made available for continuous monitoring",
            "A durable, hash-chained, signed and (with witnesses) cosigned decision log; every decision is recorded before it is answered.",
            vec![&log],
            log_ok,
            &[LOG, AUDIT],
        ),
        c(
            "NIST SP 800-207",
            "Tenet 3",
            "Access to individual enterprise resources is granted on a per-session basis",
            "Each action is decided when it is requested, with session context; nothing is granted for longer than the action.",
            vec![&decisions],
            true,
            &[LOG],
        ),
        c(
            "NIST SP 800-207",
            "Tenet 4",
            "Access to resources is determined by dynamic policy",
            "Live policy with the request's attributes, the agent's registry attributes, runtime context (sessions, limits, budgets, approvals).",
            vec![&decisions, &policy],
            true,
            &[LOG, POLICY],
        ),
        c(
            "NIST SP 800-207",
            "Tenet 6",
            "All resource authentication and authorization are dynamic and strictly enforced before access is allowed",
            "Enforcement points fail closed: unknown agent, bad credential, policy error, decision point unreachable or a record that cannot be written all deny.",
            vec![&decisions, &log],
            log_ok,
            &[LOG],
        ),
        c(
            "NIST SP 800-207",
            "Tenet 7",
            "The enterprise collects as much information as possible about the current state of assets, network infrastructure and communications and uses it to improve its security posture",
            "Every decision's record, the discovered-identities inventory and the audit trail.",
            vec![&log, &agents],
            log_ok,
            &[LOG, AGENTS],
        ),
        c(
            "NIST AI RMF 1.0",
            "GOVERN 1",
            "Policies, processes, procedures, and practices related to the mapping, measuring, and managing of AI risks are in place, transparent, and implemented effectively",
            "Policy as code with owners and tests; the two-person rule for changes; activation records in the decision log.",
            vec![&policy],
            governed_ok,
            &[POLICY, LOG],
        ),
        c(
            "NIST AI RMF 1.0",
            "GOVERN 2",
            "Accountability structures are in place",
            "Every agent and every policy has an owner; every approval and activation names who made it.",
            vec![&agents, &policy],
            governed_ok && inventory_ok,
            &[AGENTS, POLICY, AUDIT],
        ),
        c(
            "NIST AI RMF 1.0",
            "MANAGE 2",
            "Strategies to maximize AI benefits and minimize negative impacts are planned, prepared, implemented, documented, and informed by input from relevant AI actors",
            "Human approval for the actions policy marks; rate limits and budgets; suspend and revoke take effect on the next request.",
            vec![&decisions, &keys],
            true,
            &[LOG, AGENTS],
        ),
        c(
            "NIST AI RMF 1.0",
            "MANAGE 4",
            "Risk treatments, including response and recovery, and communication plans for the identified and measured AI risks are documented and monitored regularly",
            "Decisions, denials and verifications are reported here from the records themselves.",
            vec![&decisions, &log],
            log_ok,
            &[LOG, AUDIT],
        ),
    ]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one static page: inline style, no script, no external asset.
fn html(report: &Value) -> String {
    let f = &report["figures"];
    let mut rows = String::new();
    for c in report["controls"].as_array().into_iter().flatten() {
        let figures: Vec<String> = c["figures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| esc(x.as_str().unwrap_or_default()))
            .collect();
        let evidence: Vec<String> = c["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                let p = esc(x.as_str().unwrap_or_default());
                format!("<a href=\"{p}\">{p}</a>")
            })
            .collect();
        let status = c["status"].as_str().unwrap_or_default();
        rows.push_str(&format!(
            "<tr class=\"{status}\"><td>{}</td><td><b>{}</b> {}</td><td>{}</td><td>{}</td><td>{status}</td><td>{}</td></tr>\n",
            esc(c["framework"].as_str().unwrap_or_default()),
            esc(c["id"].as_str().unwrap_or_default()),
            esc(c["title"].as_str().unwrap_or_default()),
            esc(c["arbiter"].as_str().unwrap_or_default()),
            figures.join("<br>"),
            evidence.join("<br>"),
        ));
    }
    let mut layers = String::new();
    for (name, o) in f["decisions"]["by_layer"].as_object().into_iter().flatten() {
        layers.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            o["allow"],
            o["deny"],
            o["require_approval"]
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Arbiter compliance report</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:80em}}\
         table{{border-collapse:collapse;width:100%;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}}\
         tr.attention td{{background:#fff3f0}}tr.evidenced td:nth-child(5){{color:#1a7f37}}\
         </style></head><body>\n<h1>Arbiter compliance report</h1>\n\
         <p>Node {} · created {} · decisions from {} to {}</p>\n\
         <h2>Decisions by layer</h2><table><tr><th>layer</th><th>allow</th><th>deny</th><th>require approval</th></tr>{layers}</table>\n\
         <h2>Controls</h2><table><tr><th>framework</th><th>control</th><th>what Arbiter enforces</th><th>figures</th><th>status</th><th>evidence</th></tr>\n{rows}</table>\n\
         <p>Every file of this archive is listed with its SHA-256 in MANIFEST.json, signed with the \
         decision log's key: check it with <code>arbiter compliance verify DIR --pubkey KEY</code>.</p>\n\
         </body></html>\n",
        esc(report["node_id"].as_str().unwrap_or("?")),
        esc(report["created_at"].as_str().unwrap_or_default()),
        esc(f["window"]["since"].as_str().unwrap_or_default()),
        esc(f["window"]["until"].as_str().unwrap_or_default()),
    )
}

fn verify(dir: &Path, pubkey: &str) -> anyhow::Result<ExitCode> {
    let key = load_key(pubkey)?;
    match check_archive(dir, &key) {
        Ok(n) => {
            print(&format!(
                "compliance archive ok: {n} files, manifest signed by the log key {}",
                key.key_id()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("compliance archive verification FAILED: {e}");
            Ok(ExitCode::from(EXIT_VERIFY_FAILED))
        }
    }
}

/// Checks the manifest's signature, every file's hash, and that no file was added or removed.
fn check_archive(dir: &Path, key: &PublicKey) -> Result<usize, String> {
    let manifest = std::fs::read(dir.join(MANIFEST)).map_err(|e| format!("{MANIFEST}: {e}"))?;
    let sig =
        std::fs::read_to_string(dir.join(SIGNATURE)).map_err(|e| format!("{SIGNATURE}: {e}"))?;
    key.verify_hex(&manifest, sig.trim())
        .map_err(|_| format!("{MANIFEST} is not signed by the log key {}", key.key_id()))?;
    let m: Value = serde_json::from_slice(&manifest).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if m["format"] != FORMAT {
        return Err(format!("{MANIFEST}: not an `{FORMAT}` manifest"));
    }
    let listed = m["files"]
        .as_object()
        .ok_or_else(|| format!("{MANIFEST} lists no files"))?;
    for (name, want) in listed {
        let bytes = std::fs::read(dir.join(name)).map_err(|e| format!("`{name}`: {e}"))?;
        if Some(hex::encode(Sha256::digest(&bytes)).as_str()) != want.as_str() {
            return Err(format!("`{name}` was changed after the archive was signed"));
        }
    }
    let mut present = Vec::new();
    walk(dir, dir, &mut present).map_err(|e| e.to_string())?;
    for p in present {
        if p != MANIFEST && p != SIGNATURE && !listed.contains_key(&p) {
            return Err(format!("`{p}` is not in the signed manifest"));
        }
    }
    Ok(listed.len())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}
