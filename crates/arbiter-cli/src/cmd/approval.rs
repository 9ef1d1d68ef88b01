//! `arbiter approval`: the human approvals `@require_approval` permits ask for.

use std::process::ExitCode;

use arbiter_pdp::identity::now_us;
use arbiter_store::{Approval, ApprovalState, Store};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::cmd::agent::{DataArg, cli_actor, open_store};
use crate::out::print;

#[derive(Debug, Args)]
pub struct ApprovalArgs {
    #[command(flatten)]
    pub common: DataArg,
    #[command(subcommand)]
    pub command: ApprovalCommand,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// List approvals, newest first (pending ones unless told otherwise).
    List {
        /// Which: pending (the default), approved, denied, used, or all.
        #[arg(long, value_enum, default_value_t = StateArg::Pending)]
        state: StateArg,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one approval: the request it is bound to, who may decide it, where it stands.
    Show {
        /// The approval's id (`apr_…`).
        id: String,
    },
    /// Approve a pending approval: the identical request is then allowed once.
    Approve(DecideArgs),
    /// Deny a pending approval: the identical request stays denied until it expires.
    Deny(DecideArgs),
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval's id (`apr_…`).
    pub id: String,
    /// Why (kept with the approval and in the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Who approves, as the agent registry names owners (e.g. an e-mail address); checked
    /// when the policy says only the agent's owner, or anyone but the owner, may decide.
    #[arg(long, env = "ARBITER_APPROVER", value_name = "NAME")]
    pub approver: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Pending,
    Approved,
    Denied,
    Used,
    All,
}

pub fn run(args: ApprovalArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.common.data)?;
    let json_out = args.common.json;
    let now = now_us();
    match args.command {
        ApprovalCommand::List { state, limit } => {
            let state = match state {
                StateArg::Pending => Some(ApprovalState::Pending),
                StateArg::Approved => Some(ApprovalState::Approved),
                StateArg::Denied => Some(ApprovalState::Denied),
                StateArg::Used => Some(ApprovalState::Used),
                StateArg::All => None,
            };
            let list = store.list_approvals(state, limit)?;
            if json_out {
                print(&serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                print("no approvals")?;
            } else {
                let lines: Vec<String> = list.iter().map(|a| line(a, now)).collect();
                print(&lines.join("\n"))?;
            }
        }
        ApprovalCommand::Show { id } => {
            let Some(a) = store.approval(&id)? else {
                anyhow::bail!("approval `{id}` not found");
            };
            if json_out {
                print(&serde_json::to_string_pretty(&a)?)?;
            } else {
                print(&details(&a, now))?;
            }
        }
        ApprovalCommand::Approve(d) => decide(store.as_ref(), &d, true, json_out, now)?,
        ApprovalCommand::Deny(d) => decide(store.as_ref(), &d, false, json_out, now)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(
    store: &dyn Store,
    d: &DecideArgs,
    approve: bool,
    json_out: bool,
    now: i64,
) -> anyhow::Result<()> {
    let a = store.decide_approval(&d.id, approve, &d.approver, &d.reason, &cli_actor(), now)?;
    if json_out {
        print(&serde_json::to_string_pretty(&a)?)
    } else if approve {
        print(&format!(
            "approved {}: the same request by agent `{}` is allowed once within {}",
            a.id,
            a.agent_id,
            left(a.expires_us, now)
        ))
    } else {
        print(&format!(
            "denied {}: the same request by agent `{}` stays denied for {}",
            a.id,
            a.agent_id,
            left(a.expires_us, now)
        ))
    }
}

fn line(a: &Approval, now: i64) -> String {
    format!(
        "{}  {:<8}  {}  {} on {}  (expires in {})",
        a.id,
        a.state.as_str(),
        a.agent_id,
        a.action,
        a.resource,
        left(a.expires_us, now)
    )
}

fn details(a: &Approval, now: i64) -> String {
    let who = match a.approvers {
        arbiter_store::Approvers::Any => "any approver".to_owned(),
        arbiter_store::Approvers::Owner => format!("only the agent's owner ({})", a.agent_owner),
        arbiter_store::Approvers::NotOwner => {
            format!("anyone but the agent's owner ({})", a.agent_owner)
        }
    };
    let mut out = vec![
        format!("approval   {}", a.id),
        format!("state      {}", a.state.as_str()),
        format!("agent      {} (owner {})", a.agent_id, a.agent_owner),
        format!("action     {}", a.action),
        format!("resource   {}", a.resource),
        format!("policies   {}", a.policies.join(", ")),
        format!("version    {}", a.policy_version),
        format!("decided by {who}"),
        format!("expires in {}", left(a.expires_us, now)),
        format!("asked by   decision {}", a.decision_id),
    ];
    if let Some(by) = &a.decided_by {
        out.push(format!(
            "{}   by {by}: {}",
            if a.state == ApprovalState::Denied {
                "denied "
            } else {
                "approved"
            },
            a.reason.as_deref().unwrap_or("")
        ));
    }
    if let Some(d) = &a.used_by_decision {
        out.push(format!("used by    decision {d}"));
    }
    out.push(format!(
        "request    {}",
        serde_json::to_string_pretty(&json!(a.request)).unwrap_or_default()
    ));
    out.join("\n")
}

fn left(expires_us: i64, now: i64) -> String {
    match u64::try_from((expires_us - now) / 1_000_000).unwrap_or(0) {
        0 => "expired".to_owned(),
        secs => arbiter_pdp::sessions::human(secs),
    }
}
