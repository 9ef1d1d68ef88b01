//! `arbiter policy propose|approve|reject|activate|rollback|history|show|diff|require-approvals`:
//! governed policy versions, kept in the data directory's registry (see docs/governance.md).
//!
//! Changes are made as an administrator: the admin token in `ARBITER_ADMIN_TOKEN` says who
//! (its name is the author or approver) and is checked against the registry. Reading needs
//! no token (whoever can read the data directory can read the registry).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use arbiter_pdp::compare::Claim;
use arbiter_pdp::governed;
use arbiter_pdp::identity::{Identity, IdentitySettings, now_us};
use arbiter_store::{Actor, PolicyActivation};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cmd::agent::DataArg;
use crate::out::{EXIT_ERROR, EXIT_OK, print};

/// Which recorded decisions a command reads.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Window {
    /// Only decisions at or after this time: RFC 3339, Unix seconds, or a time ago (`15m`,
    /// `1h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = crate::cmd::log::time_arg)]
    since: Option<i64>,
    /// Only decisions before this time.
    #[arg(long, value_name = "TIME", value_parser = crate::cmd::log::time_arg)]
    until: Option<i64>,
}

impl Window {
    fn contains(self, ts_us: i64) -> bool {
        self.since.is_none_or(|s| ts_us >= s) && self.until.is_none_or(|u| ts_us < u)
    }
}

/// The environment variable holding an administrator's token for governed changes.
pub const ADMIN_TOKEN_ENV: &str = "ARBITER_ADMIN_TOKEN";

#[derive(Debug, Subcommand)]
pub enum GovernCommand {
    /// Store the policies in DIR as a candidate version, after running its tests (a version
    /// whose tests fail is stored but can never be activated). Every policy needs an
    /// `@owner`. As the administrator whose token is in ARBITER_ADMIN_TOKEN (the author).
    Propose {
        /// Policy directory.
        dir: PathBuf,
        /// What the change is and why.
        #[arg(long, short)]
        message: String,
        /// Print only the version, for scripts: `V=$(arbiter policy propose DIR -m … --quiet)`
        /// (the exit status still says whether its tests passed).
        #[arg(long, short)]
        quiet: bool,
        /// Refuse the proposal (exit 4, nothing stored) unless an SMT solver proves it allows
        /// nothing the active version denies (`arbiter policy compare --narrows`).
        #[arg(long)]
        must_narrow: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// Approve a version, as an administrator other than its author.
    Approve {
        /// The version (`sha256:…`, or at least its first 8 hex digits).
        #[arg(id = "policy_version", value_name = "VERSION")]
        version: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Reject a version: it can then never be approved or activated.
    Reject {
        /// The version (`sha256:…`, or at least its first 8 hex digits).
        #[arg(id = "policy_version", value_name = "VERSION")]
        version: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Make a version the active one: it must have passed its tests and have the approvals
    /// required. A governed `arbiter serve` enforces it within a second, without a restart.
    Activate {
        /// The version (`sha256:…`, or at least its first 8 hex digits).
        #[arg(id = "policy_version", value_name = "VERSION")]
        version: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Make the version that was active before the current one active again.
    Rollback {
        #[command(flatten)]
        data: DataArg,
    },
    /// The versions, newest first, and the activations.
    History {
        /// At most this many versions.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        data: DataArg,
    },
    /// One version: author, message, owners, tests, approvals, activations, files.
    Show {
        /// The version (`sha256:…`, or at least its first 8 hex digits).
        #[arg(id = "policy_version", value_name = "VERSION")]
        version: String,
        /// Print the files' text too.
        #[arg(long)]
        files: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// What changed from version A to version B, by policy id: added, removed, changed, with
    /// the text. Exit 0 when nothing differs, 1 otherwise.
    Diff {
        /// The old version.
        a: String,
        /// The new version.
        b: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Re-evaluate recorded decisions against a candidate (a stored version, or a policy
    /// directory) and list every one whose verdict it changes: allow→deny, deny→allow, or an
    /// approval gained or lost. Exit 0 when nothing changes, 4 otherwise (a CI gate).
    Replay {
        /// The candidate: a stored version (`sha256:…` or at least 8 hex digits), or a policy
        /// directory.
        candidate: String,
        #[command(flatten)]
        window: Window,
        #[command(flatten)]
        data: DataArg,
    },
    /// Prove with an SMT solver (cvc5) that NEW allows nothing OLD denies (`--narrows`, the
    /// default) or that both decide every request alike (`--equivalent`), or print a request
    /// that shows otherwise, confirmed by evaluating it on both. OLD and NEW are stored
    /// versions or policy directories; NEW needs a schema (the proof covers every request and
    /// every entity data it allows). Exit 0 proved, 4 counterexample, 1 error.
    Compare {
        /// The version before the change (a stored version or a policy directory).
        old: String,
        /// The version after it.
        new: String,
        /// Prove that NEW only narrows OLD (the default).
        #[arg(long, conflicts_with = "equivalent")]
        narrows: bool,
        /// Prove that NEW and OLD allow exactly the same requests.
        #[arg(long)]
        equivalent: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// Evaluate a stored version in shadow beside the active one on live traffic (`stop` to
    /// stop): enforcement follows the active version; each decision's record keeps the shadow
    /// verdict, and every `arbiter serve` on this data directory picks it up within a second.
    Shadow {
        /// The version (`sha256:…` or at least 8 hex digits), or `stop`.
        #[arg(id = "shadow_version", value_name = "VERSION|stop")]
        version: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// How the shadow version's verdicts compared with the enforced ones, from the decision
    /// log: counts by change, per shadow version, with example decisions.
    ShadowReport {
        #[command(flatten)]
        window: Window,
        #[command(flatten)]
        data: DataArg,
    },
    /// Set how many administrators other than the author must approve a version before it
    /// can be activated (1 to 16; default 1).
    RequireApprovals {
        /// The number of approvals.
        count: u32,
        #[command(flatten)]
        data: DataArg,
    },
}

/// An administrator, from the token in [`ADMIN_TOKEN_ENV`]: who they are (the token's name)
/// and the actor their changes are audited as.
struct Administrator {
    name: String,
    actor: Actor,
}

fn administrator(identity: &Identity) -> anyhow::Result<Administrator> {
    let token = std::env::var(ADMIN_TOKEN_ENV).map_err(|_| {
        anyhow::anyhow!(
            "governed changes are made as an administrator: put an administrator token in \
             {ADMIN_TOKEN_ENV} (`arbiter admin token create --name YOU --role administrator`)"
        )
    })?;
    let caller = identity
        .authenticate_admin(Some(token.trim()), now_us())
        .map_err(|_| {
            anyhow::anyhow!("the token in {ADMIN_TOKEN_ENV} is not a valid admin token")
        })?;
    if caller.role != "administrator" {
        bail!(
            "the token in {ADMIN_TOKEN_ENV} has the `{}` role; governed changes need an \
             administrator's",
            caller.role
        );
    }
    let name = arbiter_pdp::admin::token_holder(identity.store().as_ref(), &caller)?;
    Ok(Administrator {
        name,
        actor: Actor::admin_token(caller.credential_id),
    })
}

fn open(data: &Path) -> anyhow::Result<Identity> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory `{}`", data.display()))?;
    Identity::open(
        data,
        IdentitySettings {
            store: crate::cmd::store::shared(),
            ..IdentitySettings::default()
        },
    )
    .with_context(|| format!("cannot open the registry in `{}`", data.display()))
}

pub fn run(cmd: GovernCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GovernCommand::Propose {
            dir,
            message,
            quiet,
            must_narrow,
            data,
        } => propose(&dir, &message, quiet, must_narrow, &data.data),
        GovernCommand::Compare {
            old,
            new,
            narrows: _,
            equivalent,
            data,
        } => {
            let claim = if equivalent {
                Claim::Equivalent
            } else {
                Claim::Narrows
            };
            let old = candidate_policies(&data.data, &old)?;
            let new = candidate_policies(&data.data, &new)?;
            let c = prove(&old, &new, claim)?;
            if data.json {
                print(&serde_json::to_string_pretty(&json!({
                    "old": old.version(),
                    "new": new.version(),
                    "comparison": c,
                }))?)?;
            } else {
                print(&comparison_text(&old, &new, &c))?;
            }
            Ok(ExitCode::from(if c.holds { EXIT_OK } else { EXIT_CHANGES }))
        }
        GovernCommand::Approve { version, data } => {
            let id = open(&data.data)?;
            let admin = administrator(&id)?;
            let store = id.store();
            let version = store.resolve_policy_version(&version)?;
            let v = store.approve_policy_version(&version, &admin.name, &admin.actor, now_us())?;
            let required = store.required_policy_approvals()?;
            print(&format!(
                "approved {} as {} ({} of {} approval(s){})",
                v.version,
                admin.name,
                v.approvals.len(),
                required,
                if governed::ready(&v, required) {
                    "; it can be activated: `arbiter policy activate`"
                } else {
                    ""
                }
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        GovernCommand::Reject {
            version,
            reason,
            data,
        } => {
            let id = open(&data.data)?;
            let admin = administrator(&id)?;
            let store = id.store();
            let version = store.resolve_policy_version(&version)?;
            store.reject_policy_version(&version, &admin.name, &reason, &admin.actor, now_us())?;
            print(&format!("rejected {version} as {}", admin.name))?;
            Ok(ExitCode::SUCCESS)
        }
        GovernCommand::Activate { version, data } => {
            let id = open(&data.data)?;
            let admin = administrator(&id)?;
            let a = governed::activate(
                id.store().as_ref(),
                &version,
                &admin.name,
                &admin.actor,
                now_us(),
            )?;
            print(&format!(
                "activated {} as {} (activation {})",
                a.version, admin.name, a.seq
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        GovernCommand::Rollback { data } => {
            let id = open(&data.data)?;
            let admin = administrator(&id)?;
            let a = id
                .store()
                .rollback_policy_version(&admin.name, &admin.actor, now_us())?;
            print(&format!(
                "rolled back to {} as {} (activation {})",
                a.version, admin.name, a.seq
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        GovernCommand::History { limit, data } => history(&data.data, limit, data.json),
        GovernCommand::Show {
            version,
            files,
            data,
        } => show(&data.data, &version, files, data.json),
        GovernCommand::Diff { a, b, data } => diff(&data.data, &a, &b, data.json),
        GovernCommand::Replay {
            candidate,
            window,
            data,
        } => replay(&data.data, &candidate, window, data.json),
        GovernCommand::Shadow { version, data } => {
            let id = open(&data.data)?;
            let admin = administrator(&id)?;
            let store = id.store();
            if version == "stop" {
                store.set_policy_shadow(None, &admin.actor, now_us())?;
                print("shadow evaluation stopped")?;
            } else {
                let full =
                    governed::start_shadow(store.as_ref(), &version, &admin.actor, now_us())?;
                print(&format!(
                    "evaluating {full} in shadow from now on (`arbiter policy shadow-report`; \
                     `arbiter policy shadow stop` to stop)"
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        GovernCommand::ShadowReport { window, data } => {
            shadow_report(&data.data, window, data.json)
        }
        GovernCommand::RequireApprovals { count, data } => {
            let id = open(&data.data)?;
            let admin = administrator(&id)?;
            id.store()
                .set_required_policy_approvals(count, &admin.actor, now_us())?;
            print(&format!(
                "a policy version now needs {count} approval(s) from administrators other than \
                 its author"
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn propose(
    dir: &Path,
    message: &str,
    quiet: bool,
    must_narrow: bool,
    data: &Path,
) -> anyhow::Result<ExitCode> {
    let id = open(data)?;
    let admin = administrator(&id)?;
    let c = governed::candidate(dir, &admin.name, message)?;
    if must_narrow {
        let active = match governed::active(id.store().as_ref()) {
            Ok(a) => a,
            Err(governed::GovernedError::NoneActive) => bail!(
                "--must-narrow: no version is active, so there is nothing to narrow (propose \
                 the first version without it)"
            ),
            Err(e) => return Err(e.into()),
        };
        let proof = prove(&active.policies, &c.policies, Claim::Narrows)?;
        if !proof.holds {
            eprintln!("{}", comparison_text(&active.policies, &c.policies, &proof));
            eprintln!("not proposed: --must-narrow, and it widens the active version");
            return Ok(ExitCode::from(EXIT_CHANGES));
        }
        if !quiet {
            eprintln!(
                "proved: it narrows the active version {} ({} request shapes)",
                short(active.policies.version()),
                proof.request_shapes
            );
        }
    }
    let v = match id
        .store()
        .propose_policy_version(&c.new, &admin.actor, now_us())
    {
        Err(arbiter_store::StoreError::Conflict { id: version, .. }) => bail!(
            "policy version {version} was proposed before: the same policies, schema and \
             entities (tests are not part of a version); `arbiter policy show {}`",
            short(&version)
        ),
        other => other?,
    };
    let status = ExitCode::from(if c.failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    });
    if quiet {
        print(&v.version)?;
        return Ok(status);
    }
    let mut report = format!(
        "proposed {} by {} ({} policies, {} files; tests: {} passed, {} failed)",
        v.version,
        v.author,
        c.policies.len(),
        v.files.len(),
        v.tests_passed,
        v.tests_failed
    );
    for f in &c.failures {
        report.push_str(&format!("\nFAIL  {f}"));
    }
    if c.failures.is_empty() {
        report.push_str(&format!(
            "\nnext: another administrator approves it (`arbiter policy approve {}`)",
            short(&v.version)
        ));
    } else {
        report.push_str("\nits tests fail: it is stored, and can never be activated");
    }
    print(&report)?;
    Ok(status)
}

/// The first 12 hex digits of a version: enough to name it on the command line.
fn short(version: &str) -> &str {
    version
        .strip_prefix("sha256:")
        .and_then(|h| h.get(..12))
        .unwrap_or(version)
}

fn history(data: &Path, limit: usize, as_json: bool) -> anyhow::Result<ExitCode> {
    let id = open(data)?;
    let store = id.store();
    let versions = store.list_policy_versions(limit)?;
    let activations = store.policy_activations(limit)?;
    let required = store.required_policy_approvals()?;
    let active = activations.first();
    if as_json {
        print(&serde_json::to_string_pretty(&json!({
            "active": active.map(|a| a.version.as_str()),
            "approvals_required": required,
            "versions": versions.iter().map(|v| governed::version_json(v, required, active)).collect::<Vec<_>>(),
            "activations": activations.iter().map(governed::activation_json).collect::<Vec<_>>(),
        }))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        print("no policy versions yet: `arbiter policy propose DIR --message …`")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:<14}  {:<12}  {:<27}  {:<16}  {:<9}  MESSAGE\n",
        "VERSION", "STANDING", "PROPOSED", "AUTHOR", "APPROVALS"
    );
    for v in &versions {
        out.push_str(&format!(
            "{:<14}  {:<12}  {:<27}  {:<16}  {:<9}  {}\n",
            short(&v.version),
            governed::standing(v, required, active),
            governed::time(v.proposed_us),
            v.author,
            format!("{}/{}", v.approvals.len(), required),
            v.message.lines().next().unwrap_or_default()
        ));
    }
    out.push_str("\nACTIVATIONS (newest first)\n");
    for a in &activations {
        out.push_str(&format!(
            "{:>4}  {:<14}  {:<8}  {:<27}  {}\n",
            a.seq,
            short(&a.version),
            a.kind,
            governed::time(a.at_us),
            a.by
        ));
    }
    print(out.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

fn show(data: &Path, version: &str, files: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let id = open(data)?;
    let store = id.store();
    let v = governed::stored(store.as_ref(), version)?;
    let required = store.required_policy_approvals()?;
    let activations: Vec<PolicyActivation> = store.policy_activations(usize::MAX)?;
    let active = activations.first();
    let mine: Vec<&PolicyActivation> = activations
        .iter()
        .filter(|a| a.version == v.version)
        .collect();
    if as_json {
        let mut j = governed::version_json(&v, required, active);
        j["activations"] = json!(
            mine.iter()
                .map(|a| governed::activation_json(a))
                .collect::<Vec<_>>()
        );
        if files {
            j["files"] = json!(v.files);
        }
        print(&serde_json::to_string_pretty(&j)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "version   {}\nstanding  {}\nauthor    {}\nproposed  {}\nmessage   {}\ntests     {} passed, {} failed\n",
        v.version,
        governed::standing(&v, required, active),
        v.author,
        governed::time(v.proposed_us),
        v.message,
        v.tests_passed,
        v.tests_failed
    );
    out.push_str(&format!(
        "approvals {} of {} required\n",
        v.approvals.len(),
        required
    ));
    for a in &v.approvals {
        out.push_str(&format!(
            "          {} at {}\n",
            a.approver,
            governed::time(a.at_us)
        ));
    }
    if let Some(by) = &v.rejected_by {
        out.push_str(&format!(
            "rejected  by {by} at {}: {}\n",
            v.rejected_us.map(governed::time).unwrap_or_default(),
            v.rejected_reason.as_deref().unwrap_or_default()
        ));
    }
    out.push_str("owners\n");
    for (policy, owner) in &v.owners {
        out.push_str(&format!("          {policy}: {owner}\n"));
    }
    out.push_str("activations\n");
    for a in &mine {
        out.push_str(&format!(
            "          {} #{} at {} by {}\n",
            a.kind,
            a.seq,
            governed::time(a.at_us),
            a.by
        ));
    }
    out.push_str("files\n");
    for f in &v.files {
        if files {
            out.push_str(&format!("--- {}\n{}\n", f.path, f.text.trim_end()));
        } else {
            out.push_str(&format!("          {} ({} bytes)\n", f.path, f.text.len()));
        }
    }
    print(out.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

fn diff(data: &Path, a: &str, b: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let id = open(data)?;
    let store = id.store();
    let (old, new) = (
        governed::stored(store.as_ref(), a)?,
        governed::stored(store.as_ref(), b)?,
    );
    let d = governed::diff(&old, &new)?;
    if as_json {
        print(&serde_json::to_string_pretty(&governed::diff_json(
            &old, &new, &d,
        ))?)?;
    } else {
        let mut out = format!("from {}\nto   {}\n", old.version, new.version);
        for (id, text) in &d.added {
            out.push_str(&format!("\nadded `{id}`:\n{}\n", indent(text, "+ ")));
        }
        for (id, text) in &d.removed {
            out.push_str(&format!("\nremoved `{id}`:\n{}\n", indent(text, "- ")));
        }
        for (id, (o, n)) in &d.changed {
            out.push_str(&format!(
                "\nchanged `{id}`:\n{}\n{}\n",
                indent(o, "- "),
                indent(n, "+ ")
            ));
        }
        if d.schema_changed {
            out.push_str("\nthe schema changed\n");
        }
        if d.entities_changed {
            out.push_str("\nthe entities changed\n");
        }
        if d.is_empty() {
            out.push_str("\nno difference in policies, schema or entities\n");
        }
        print(out.trim_end())?;
    }
    Ok(ExitCode::from(if d.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }))
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Exit status of `replay` when the candidate changes some verdict.
const EXIT_CHANGES: u8 = 4;

/// A policy directory, or else a stored version (`sha256:…` or at least 8 hex digits).
fn candidate_policies(data: &Path, candidate: &str) -> anyhow::Result<arbiter_policy::Policies> {
    let dir = Path::new(candidate);
    if dir.is_dir() {
        arbiter_policy::Policies::load_dir(dir).map_err(|e| {
            eprintln!("{e}");
            anyhow::anyhow!("{} error(s) in `{}`", e.0.len(), dir.display())
        })
    } else {
        let id = open(data)?;
        Ok(governed::load_stored(id.store().as_ref(), candidate)?)
    }
}

/// Runs a comparison with the SMT solver.
fn prove(
    old: &arbiter_policy::Policies,
    new: &arbiter_policy::Policies,
    claim: Claim,
) -> anyhow::Result<arbiter_pdp::compare::Comparison> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(arbiter_pdp::compare::compare(old, new, claim))?)
}

/// A comparison as text.
fn comparison_text(
    old: &arbiter_policy::Policies,
    new: &arbiter_policy::Policies,
    c: &arbiter_pdp::compare::Comparison,
) -> String {
    let (o, n) = (short(old.version()), short(new.version()));
    let Some(x) = &c.counterexample else {
        return match c.claim {
            Claim::Narrows => format!(
                "proved: {n} narrows {o}: it allows nothing {o} denies ({} request shapes, cvc5)",
                c.request_shapes
            ),
            Claim::Equivalent => format!(
                "proved: {n} and {o} are equivalent: they allow exactly the same requests ({} \
                 request shapes, cvc5)",
                c.request_shapes
            ),
        };
    };
    let (claim, what) = match (c.claim, x.direction) {
        (Claim::Narrows, _) => ("narrows", format!("{n} allows a request {o} denies")),
        (_, "allowed_by_new") => (
            "is equivalent to",
            format!("{n} allows a request {o} denies"),
        ),
        _ => (
            "is equivalent to",
            format!("{n} denies a request {o} allows"),
        ),
    };
    let by = |p: &[String]| {
        if p.is_empty() {
            String::new()
        } else {
            format!(" (by {})", p.join(", "))
        }
    };
    // The action entities are the schema's; the others are what the request needs.
    let entities: Vec<&Value> = x
        .entities
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["uid"]["type"]
                .as_str()
                .is_none_or(|t| !t.ends_with("Action"))
        })
        .collect();
    format!(
        "NOT proved that {n} {claim} {o}: {what}, confirmed by evaluating it:\n  principal {}\n  \
         action    {}\n  resource  {}\n  context   {}\n  entities  {}\n  {o}: {}{}\n  {n}: {}{}",
        x.principal,
        x.action,
        x.resource,
        x.context,
        Value::from(entities.into_iter().cloned().collect::<Vec<_>>()),
        x.old,
        by(&x.old_policies),
        x.new,
        by(&x.new_policies)
    )
}

fn replay(data: &Path, candidate: &str, window: Window, as_json: bool) -> anyhow::Result<ExitCode> {
    let policies = candidate_policies(data, candidate)?;
    let log = data.join("log");
    if !log.is_dir() {
        bail!("no decision log in `{}`", data.display());
    }
    let started = std::time::Instant::now();
    let report = arbiter_pdp::replay::replay_dir(&policies, &log, window.since, window.until)
        .map_err(|e| anyhow::anyhow!("the decision log cannot be read to the end: {e}"))?;
    let took = started.elapsed();
    let status = if report.flips.is_empty() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    };
    if as_json {
        print(&serde_json::to_string_pretty(
            &report.to_json(policies.version()),
        )?)?;
        return Ok(ExitCode::from(status));
    }
    let mut out = String::new();
    for f in &report.flips {
        out.push_str(&format!(
            "{:<12} {}  {} {} {} ({}){}\n    recorded {} by [{}]; candidate {} by [{}]: {}\n",
            f.change.as_str(),
            f.decision_id,
            f.subject,
            f.action,
            f.resource,
            f.enforcement_point,
            if f.approximate { " (approximate)" } else { "" },
            f.recorded.as_str(),
            f.recorded_policies.join(", "),
            f.candidate.as_str(),
            f.candidate_policies.join(", "),
            f.candidate_reason
        ));
    }
    for (id, why) in &report.unreadable {
        out.push_str(&format!("not replayed {id}: {why}\n"));
    }
    out.push_str(&format!(
        "replay of {} against {}: {} decisions read, {} replayed ({} approximate), {} decided \
         outside the policies and {} narrowed to rows skipped; {} allow->deny, {} deny->allow, \
         {} approval changes ({:.2} s)",
        data.join("log").display(),
        policies.version(),
        report.considered,
        report.replayed,
        report.approximate,
        report.skipped_runtime,
        report.skipped_rows,
        report
            .flips
            .iter()
            .filter(|f| f.change == arbiter_pdp::replay::Change::AllowToDeny)
            .count(),
        report
            .flips
            .iter()
            .filter(|f| f.change == arbiter_pdp::replay::Change::DenyToAllow)
            .count(),
        report
            .flips
            .iter()
            .filter(|f| f.change == arbiter_pdp::replay::Change::Approval)
            .count(),
        took.as_secs_f64()
    ));
    print(&out)?;
    Ok(ExitCode::from(status))
}

/// Example decisions kept per shadow version and change in a shadow report.
const SHADOW_EXAMPLES: usize = 5;

fn shadow_report(data: &Path, window: Window, as_json: bool) -> anyhow::Result<ExitCode> {
    use std::collections::BTreeMap;
    let log = data.join("log");
    if !log.is_dir() {
        bail!("no decision log in `{}`", data.display());
    }
    #[derive(Default)]
    struct Tally {
        evaluated: u64,
        counts: BTreeMap<String, u64>,
        examples: BTreeMap<String, Vec<Value>>,
    }
    let mut by_version: BTreeMap<String, Tally> = BTreeMap::new();
    for item in arbiter_log::read_records(&log)? {
        let (_, r) = item?;
        if !window.contains(r.ts_us) {
            continue;
        }
        let Some(shadow) = r.context.get(arbiter_pdp::replay::SHADOW_KEY) else {
            continue;
        };
        let version = shadow["version"].as_str().unwrap_or("?").to_owned();
        let change = shadow["change"].as_str().unwrap_or("same").to_owned();
        let t = by_version.entry(version).or_default();
        t.evaluated += 1;
        *t.counts.entry(change.clone()).or_default() += 1;
        if change != "same" {
            let ex = t.examples.entry(change).or_default();
            if ex.len() < SHADOW_EXAMPLES {
                ex.push(json!({
                    "decision_id": r.decision_id,
                    "time": governed::time(r.ts_us),
                    "subject": format!("{}::\"{}\"", r.subject.kind, r.subject.id),
                    "action": r.action,
                    "resource": format!("{}::\"{}\"", r.resource.kind, r.resource.id),
                    "enforced": r.outcome.as_str(),
                    "shadow": shadow["outcome"],
                    "shadow_policies": shadow["determining_policies"],
                }));
            }
        }
    }
    if as_json {
        let versions: serde_json::Map<String, Value> = by_version
            .into_iter()
            .map(|(v, t)| {
                (
                    v,
                    json!({"evaluated": t.evaluated, "changes": t.counts, "examples": t.examples}),
                )
            })
            .collect();
        print(&serde_json::to_string_pretty(
            &json!({ "shadow_versions": versions }),
        )?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if by_version.is_empty() {
        print("no decision in the log was evaluated in shadow (`arbiter policy shadow VERSION`)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for (v, t) in &by_version {
        out.push_str(&format!(
            "shadow {v}: {} decisions evaluated\n",
            t.evaluated
        ));
        for (change, n) in &t.counts {
            out.push_str(&format!("  {change:<13} {n}\n"));
        }
        for (change, ex) in &t.examples {
            for e in ex {
                out.push_str(&format!(
                    "  e.g. {change}: {} {} {} {} (enforced {}, shadow {})\n",
                    e["decision_id"].as_str().unwrap_or_default(),
                    e["subject"].as_str().unwrap_or_default(),
                    e["action"].as_str().unwrap_or_default(),
                    e["resource"].as_str().unwrap_or_default(),
                    e["enforced"].as_str().unwrap_or_default(),
                    e["shadow"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    print(out.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
