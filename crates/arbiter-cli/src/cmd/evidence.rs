//! `arbiter evidence`: one decision's evidence bundle, and its offline verification.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use arbiter_log::format_rfc3339_us;
use arbiter_pdp::evidence::{self, Evidence, PolicySources, Requirements, Verified};
use clap::{Args, Subcommand};

use crate::cmd::agent::{DataArg, open_store};
use crate::cmd::log::{EXIT_VERIFY_FAILED, load_key};
use crate::out::print;

/// Write one decision's evidence bundle: the record with its inclusion proof under a signed
/// (and, with witnesses, cosigned) checkpoint, the policy version's text and owners, who
/// proposed, approved and activated it (governed mode), and the engine. `arbiter evidence
/// verify` checks it offline.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvidenceArgs {
    #[command(subcommand)]
    pub command: Option<EvidenceCommand>,
    /// The decision's id (as answered by the decision point and recorded in the log).
    #[arg(required = true, value_name = "DECISION_ID")]
    pub decision_id: Option<String>,
    /// Write the bundle to FILE (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The policy directory that made the decision, when its version is not in the registry
    /// (directory mode): its text is included when its files hash to the decision's version.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    #[command(flatten)]
    pub common: DataArg,
}

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Check a bundle offline: the record's inclusion proof and checkpoint signature under
    /// the log's key, each witness's cosignature, that the policy text is the version the
    /// decision names (and holds its determining policies), and the activation record with
    /// its approvals. Exit 0 when all of it holds, 3 when anything does not.
    Verify {
        /// The bundle written by `arbiter evidence`.
        file: PathBuf,
        /// The log's public key (a file or 64 hex characters; see `arbiter log pubkey`),
        /// obtained from its operator through a channel you trust.
        #[arg(long, value_name = "FILE|HEX")]
        pubkey: String,
        /// A witness's public key (repeatable): the checkpoint must be cosigned by each.
        #[arg(long = "witness-key", value_name = "FILE|HEX")]
        witness_keys: Vec<String>,
        /// Require the activation record: the version was proposed, approved and activated
        /// through the governed registry (`arbiter policy propose|approve|activate`).
        #[arg(long)]
        governed: bool,
    },
}

pub fn run(args: EvidenceArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(EvidenceCommand::Verify {
            file,
            pubkey,
            witness_keys,
            governed,
        }) => verify(&file, &pubkey, &witness_keys, governed, args.common.json),
        None => export(&args),
    }
}

fn export(args: &EvidenceArgs) -> anyhow::Result<ExitCode> {
    let id = args.decision_id.as_deref().unwrap_or_default();
    let data = &args.common.data;
    let log_dir = data.join("log");
    if !log_dir.is_dir() {
        anyhow::bail!(
            "no decision log in `{}` (expected `{}`): give the data directory of `arbiter serve` \
             with --data",
            data.display(),
            log_dir.display()
        );
    }
    let store = if crate::cmd::store::exists(data) {
        Some(open_store(data)?)
    } else {
        None
    };
    let sources = PolicySources {
        store: store.as_deref(),
        dir: args.policies.as_deref(),
    };
    let bundle = evidence::assemble(&log_dir, id, sources)
        .map_err(|e| anyhow::anyhow!("cannot make the evidence of `{id}`: {e}"))?;
    if bundle.policy.is_none() {
        eprintln!(
            "warning: policy version {} is neither in the registry nor in --policies: the bundle \
             holds no policy text, and `evidence verify` will fail on it",
            record_version(&bundle)
        );
    }
    if bundle.cosignatures.is_empty() {
        eprintln!(
            "note: this log has no witness cosignatures (`serve --witness`): the checkpoint is \
             signed by the log's key only"
        );
    }
    let text = serde_json::to_string_pretty(&bundle)?;
    match &args.out {
        Some(path) => {
            write_private(path, text.as_bytes())?;
            eprintln!("evidence of {id} written to {}", path.display());
        }
        None => print(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn record_version(e: &Evidence) -> String {
    e.decision.record["policy_version"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Writes `path` with mode 0600 (records may hold what agents sent).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.write_all(b"\n"))
        .with_context(|| format!("cannot write `{}`", path.display()))
}

fn verify(
    file: &std::path::Path,
    pubkey: &str,
    witness_keys: &[String],
    governed: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let log_key = load_key(pubkey)?;
    let req = Requirements {
        witnesses: witness_keys
            .iter()
            .map(|k| load_key(k))
            .collect::<anyhow::Result<_>>()?,
        governed,
    };
    let text = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let result = serde_json::from_slice::<Evidence>(&text)
        .map_err(|e| evidence::EvidenceError::Invalid(format!("not an evidence bundle: {e}")))
        .and_then(|bundle| evidence::verify(&bundle, &log_key, &req));
    match result {
        Ok(v) => {
            if json {
                print(&serde_json::to_string_pretty(&serde_json::json!({
                    "ok": true,
                    "verified": v,
                }))?)?;
            } else {
                print(&summary(&v))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                print(&serde_json::to_string_pretty(
                    &serde_json::json!({"ok": false, "error": e.to_string()}),
                )?)?;
            }
            eprintln!("evidence verification FAILED: {e}");
            Ok(ExitCode::from(EXIT_VERIFY_FAILED))
        }
    }
}

/// The plain summary of a verified bundle.
fn summary(v: &Verified) -> String {
    let r = &v.record;
    let mut out = vec![
        format!(
            "evidence ok: decision {} was {} at {}",
            r.decision_id,
            r.outcome.as_str(),
            format_rfc3339_us(r.ts_us)
        ),
        format!(
            "  request:     {}::\"{}\" {} {}::\"{}\" (enforcement point {})",
            r.subject.kind,
            r.subject.id,
            r.action,
            r.resource.kind,
            r.resource.id,
            r.enforcement_point
        ),
        format!(
            "  log:         record {} of the checkpoint of {} records signed at {} by node {}",
            r.seq,
            v.checkpoint.tree_size,
            format_rfc3339_us(v.checkpoint.ts_us),
            v.checkpoint.node_id
        ),
    ];
    if v.witnesses.is_empty() {
        out.push("  witnessed:   not checked (no --witness-key)".to_owned());
    }
    for (key, name, at) in &v.witnesses {
        out.push(format!(
            "  witnessed:   by {name} (key {key}) at {}",
            format_rfc3339_us(i64::try_from(*at).unwrap_or(0).saturating_mul(1_000_000))
        ));
    }
    let engine = if r.engine_version.starts_with(&r.engine) {
        r.engine_version.clone()
    } else {
        format!("{} {}", r.engine, r.engine_version)
    };
    out.push(format!(
        "  policy:      version {} (engine {engine})",
        r.policy_version
    ));
    for p in &r.determining_policies {
        let owner = match v.owners.get(p) {
            Some(Some(o)) => format!("owner {o}"),
            Some(None) => "no owner declared".to_owned(),
            None => "Arbiter's own rule".to_owned(),
        };
        out.push(format!("  determining: {p} ({owner})"));
    }
    match &v.governance {
        None => out.push(
            "  governance:  none recorded (the version was not activated through the governed \
             registry)"
                .to_owned(),
        ),
        Some(g) => {
            out.push(format!(
                "  governance:  proposed by {} at {} ({})",
                g["author"].as_str().unwrap_or_default(),
                g["proposed_at"].as_str().unwrap_or_default(),
                g["message"].as_str().unwrap_or_default()
            ));
            for a in g["approvals"].as_array().into_iter().flatten() {
                out.push(format!(
                    "               approved by {} at {}",
                    a["approver"].as_str().unwrap_or_default(),
                    a["at"].as_str().unwrap_or_default()
                ));
            }
            out.push(format!(
                "               {} by {} at {}; enforced from record {} ({})",
                g["activation"]["kind"].as_str().unwrap_or_default(),
                g["activation"]["by"].as_str().unwrap_or_default(),
                g["activation"]["at"].as_str().unwrap_or_default(),
                g["record_index"],
                g["recorded_at"].as_str().unwrap_or_default()
            ));
        }
    }
    out.join("\n")
}
