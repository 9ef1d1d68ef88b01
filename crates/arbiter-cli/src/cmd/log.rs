//! `arbiter log …`: verify, prove and read the decision log.
//!
//! Every subcommand here is read-only: it reads segments and checkpoints
//! directly and never opens a log writer, so it is safe to run while
//! `arbiter serve` writes to the same data directory.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use arbiter_log::record::format_rfc3339_us;
use arbiter_log::{
    Checkpoint, DecisionRecord, Follower, InclusionProofBundle, LogError, Outcome, ProblemKind,
    PublicKey, RecordFilter,
};
use clap::{Args, Subcommand, ValueEnum};

use crate::out::print;

/// Exit code for a log or proof that does not verify.
pub const EXIT_VERIFY_FAILED: u8 = 3;

/// Where the data directory is.
#[derive(Debug, Args)]
pub struct DataArg {
    /// Data directory of `arbiter serve`; the log is in DIR/log.
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,
}

impl DataArg {
    fn log_dir(&self) -> PathBuf {
        self.data.join("log")
    }

    /// The log directory, which must exist.
    fn existing_log_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.log_dir();
        if !dir.is_dir() {
            anyhow::bail!(
                "no decision log at `{}` (is --data / ARBITER_DATA the data directory of `arbiter serve`?)",
                dir.display()
            );
        }
        Ok(dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Verify the whole log: every record, the Merkle tree and every checkpoint signature.
    ///
    /// Exit 0 if the log is sound, 3 if it is not (naming the first bad record and what is wrong
    /// with it, including records no checkpoint covers beyond the unsigned tail a crash can
    /// leave), 1 if it cannot be read. Operator overrides recorded in the log (`serve
    /// --accept-log-damage`) are listed as warnings. Safe to run while the server is writing.
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// The trusted public key: a file or 64 hex characters (see `arbiter log pubkey`).
        /// Default: DIR/log/log-signing.pub, which only proves the log is self-consistent.
        #[arg(long, value_name = "FILE|HEX")]
        pubkey: Option<String>,
        /// Records that may follow the latest checkpoint (the unsigned tail a crash can leave):
        /// the server's `--checkpoint-every-records`.
        #[arg(long, value_name = "N", default_value_t = arbiter_log::DEFAULT_CHECKPOINT_EVERY_RECORDS)]
        checkpoint_every_records: u64,
        /// Also require the log to agree with what this witness cosigned (repeatable; a file or
        /// 64 hex characters, see `arbiter witness pubkey`): its latest cosigned checkpoint
        /// found in DIR/log/cosignatures.log (and from `--witness`) must be a checkpoint of
        /// these records, with at most `--unwitnessed-records` records after it. Detects
        /// records rewritten or removed after a witness saw them even when the local
        /// checkpoints were regenerated.
        #[arg(long = "witness-key", value_name = "FILE|HEX")]
        witness_keys: Vec<String>,
        /// Ask this witness (repeatable; its base URL) for the latest checkpoint it holds of
        /// this log, so that a log rolled back to an earlier state, with its cosignatures, is
        /// detected too. Needs `--witness-key`.
        #[arg(long = "witness", value_name = "URL", requires = "witness_keys")]
        witness_urls: Vec<String>,
        /// Records that may follow the latest witnessed checkpoint (a live log's lag behind
        /// its witnesses; `serve` sends its final checkpoint when it stops).
        #[arg(long, value_name = "N", default_value_t = arbiter_log::witness::DEFAULT_UNWITNESSED_RECORDS)]
        unwitnessed_records: u64,
        /// Print the verification report as JSON.
        #[arg(long)]
        json: bool,
        /// Verify every node of the fleet registered in the shared store (`--store`): each
        /// node's log, in the data directory given with `--node-data`, against the key the node
        /// registered (not the one in its directory), and against the latest checkpoint it
        /// published to the store (a log that lost records it had signed fails). Every
        /// registered node must be given. Prints one line per node and the totals.
        #[arg(long, conflicts_with_all = ["pubkey", "witness_keys"])]
        fleet: bool,
        /// With `--fleet`: the data directory of a node (repeatable; matched to the registered
        /// nodes by their log's key).
        #[arg(long = "node-data", value_name = "DIR", requires = "fleet")]
        node_data: Vec<PathBuf>,
    },
    /// Print an inclusion proof for one decision (JSON), to check later with `check-proof`.
    ///
    /// The proof is against the latest signed checkpoint; a decision newer than that cannot be
    /// proved yet: retry after the next checkpoint (written every second by default).
    Prove {
        /// The decision id (`decision_id` in the AuthZEN response context).
        decision_id: String,
        #[command(flatten)]
        data: DataArg,
        /// Write the proof to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof offline: the checkpoint signature, the record's leaf hash and
    /// its audit path. Exit 0 if it holds, 3 if not.
    CheckProof {
        /// Proof file written by `arbiter log prove`.
        file: PathBuf,
        /// The trusted public key: a file or 64 hex characters.
        #[arg(long, value_name = "FILE|HEX")]
        pubkey: String,
    },
    /// Print the latest signed checkpoint (JSON). Save it to check later that the log only grew.
    Checkpoint {
        #[command(flatten)]
        data: DataArg,
    },
    /// Prove that the log only grew between two saved checkpoints (nothing changed or removed).
    ///
    /// Computes the RFC 9162 consistency proof from the log and checks it and both signatures.
    /// Exit 0 if consistent, 3 if not.
    Consistency {
        /// File with the older checkpoint JSON (from `arbiter log checkpoint`).
        old: PathBuf,
        /// File with the newer checkpoint JSON.
        new: PathBuf,
        #[command(flatten)]
        data: DataArg,
        /// The trusted public key: a file or 64 hex characters. Default: DIR/log/log-signing.pub.
        #[arg(long, value_name = "FILE|HEX")]
        pubkey: Option<String>,
    },
    /// Print the last records as JSON lines; with -f, keep printing new ones.
    Tail {
        /// Keep running and print records as they are written (polls every 200 ms).
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last records to print first.
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
        lines: usize,
        #[command(flatten)]
        data: DataArg,
    },
    /// Print the records that match every given filter, oldest first: a table on a terminal,
    /// JSON lines (the records as stored) otherwise or with --json.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many records: the most recent ones that match.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// Export every record as JSON lines, either as stored or as OCSF events.
    Export {
        /// `jsonl`: the records as stored; `ocsf`: one OCSF API Activity event per record
        /// (mapping in docs/decision-log.md).
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        #[command(flatten)]
        data: DataArg,
    },
    /// Move the oldest sealed segments out of the data directory, to an archive directory.
    ///
    /// Moves every sealed segment whose records are all older than `--before` (oldest first),
    /// with its index file and the tiles of its records, and records the move in
    /// DIR/log/archived.log. Checkpoints, seals and the upper tiles stay, so the server still
    /// proves newer records. While the archive is reachable at the path recorded, `verify`,
    /// `prove`, `query`, `export` and the server read archived records from it; without it the
    /// server starts and serves everything else. Stop `arbiter serve` first.
    Archive {
        /// Move segments whose last record is older than this: RFC 3339, Unix seconds, or a
        /// time ago such as `30d`.
        #[arg(long, value_name = "TIME", value_parser = time_arg)]
        before: i64,
        /// The archive directory (created if missing; outside the data directory). Later
        /// archives may use the same directory or another.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
    /// Print the log's Ed25519 public key (hex).
    Pubkey {
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    Allow,
    Deny,
    #[value(name = "require_approval", alias = "require-approval")]
    RequireApproval,
}

impl From<OutcomeArg> for Outcome {
    fn from(o: OutcomeArg) -> Outcome {
        match o {
            OutcomeArg::Allow => Outcome::Allow,
            OutcomeArg::Deny => Outcome::Deny,
            OutcomeArg::RequireApproval => Outcome::RequireApproval,
        }
    }
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// The agent: `subject.agent_id`, or `subject.id` for records without one.
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// The action, e.g. `fs:read`.
    #[arg(long, value_name = "NAME")]
    pub action: Option<String>,
    /// The outcome.
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// The resource: its id, or `TYPE::ID`.
    #[arg(long, value_name = "ID|TYPE::ID")]
    pub resource: Option<String>,
    /// Only records at or after this time: RFC 3339 (2025-01-02T03:04:05Z), Unix seconds, or
    /// a time ago (`90s`, `15m`, `1h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub since: Option<i64>,
    /// Only records before this time: RFC 3339, Unix seconds or a time ago.
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub until: Option<i64>,
    /// The policy version (`policy_version` in the record).
    #[arg(long, value_name = "V")]
    pub policy_version: Option<String>,
}

impl FilterArgs {
    fn to_filter(&self) -> RecordFilter {
        RecordFilter {
            agent: self.agent.clone(),
            action: self.action.clone(),
            outcome: self.outcome.map(Outcome::from),
            resource: self.resource.clone(),
            since_us: self.since,
            until_us: self.until,
            policy_version: self.policy_version.clone(),
            ..RecordFilter::default()
        }
    }
}

pub fn run(cmd: LogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCommand::Verify {
            checkpoint_every_records,
            json,
            fleet: true,
            node_data,
            ..
        } => verify_fleet(&node_data, checkpoint_every_records, json),
        LogCommand::Verify {
            data,
            pubkey,
            checkpoint_every_records,
            witness_keys,
            witness_urls,
            unwitnessed_records,
            json,
            ..
        } => verify(
            &data,
            pubkey.as_deref(),
            checkpoint_every_records,
            &Witnessed {
                keys: witness_keys,
                urls: witness_urls,
                lag: unwitnessed_records,
            },
            json,
        ),
        LogCommand::Prove {
            decision_id,
            data,
            out,
        } => prove(&data, &decision_id, out.as_deref()),
        LogCommand::CheckProof { file, pubkey } => check_proof(&file, &pubkey),
        LogCommand::Checkpoint { data } => checkpoint(&data),
        LogCommand::Consistency {
            old,
            new,
            data,
            pubkey,
        } => consistency(&data, &old, &new, pubkey.as_deref()),
        LogCommand::Tail {
            follow,
            lines,
            data,
        } => tail(&data, lines, follow),
        LogCommand::Query {
            filter,
            limit,
            json,
            data,
        } => query(&data, &filter.to_filter(), limit, json),
        LogCommand::Export { format, data } => export(&data, format),
        LogCommand::Archive { before, to, data } => archive(&data, before, &to),
        LogCommand::Pubkey { data } => {
            let path = data.log_dir().join("log-signing.pub");
            let key = PublicKey::from_file(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the log's public key under `{}`: {e}",
                    data.data.display()
                )
            })?;
            print(&key.to_hex())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fail(msg: &str) -> anyhow::Result<ExitCode> {
    eprintln!("{msg}");
    Ok(ExitCode::from(EXIT_VERIFY_FAILED))
}

/// A key given as 64 hex characters, or a file holding them (as `arbiter log pubkey` prints)
/// or holding the JSON of `GET /v1/log/pubkey` (`{"public_key": "<hex>", …}`).
pub(crate) fn load_key(arg: &str) -> anyhow::Result<PublicKey> {
    let t = arg.trim();
    let path = Path::new(arg);
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) && !path.exists() {
        return PublicKey::from_hex(t).map_err(|e| anyhow::anyhow!("invalid public key: {e}"));
    }
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the public key file `{arg}` (give a file or 64 hex characters)")
    })?;
    let hex = if text.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("`{arg}` is not valid JSON"))?;
        v["public_key"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("`{arg}` has no `public_key` member"))?
            .to_string()
    } else {
        text
    };
    PublicKey::from_hex(&hex).map_err(|e| anyhow::anyhow!("`{arg}` is not a public key: {e}"))
}

/// The key from `--pubkey`, else the one in the log directory, with a note.
fn key_or_local(arg: Option<&str>, dir: &Path) -> anyhow::Result<PublicKey> {
    match arg {
        Some(a) => load_key(a),
        None => {
            let path = dir.join("log-signing.pub");
            let key = PublicKey::from_file(&path)
                .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
            eprintln!("{}", local_key_note(&path));
            Ok(key)
        }
    }
}

fn local_key_note(path: &Path) -> String {
    format!(
        "note: checking signatures with `{}`, which only proves the log is self-consistent \
         (whoever can rewrite the log can rewrite that file); pass --pubkey with a copy of \
         `arbiter log pubkey` kept elsewhere for a stronger check",
        path.display()
    )
}

fn kind_name(k: ProblemKind) -> &'static str {
    match k {
        ProblemKind::Modified => "modified",
        ProblemKind::Missing => "missing",
        ProblemKind::Reordered => "reordered",
        ProblemKind::Truncated => "truncated behind a checkpoint",
        ProblemKind::BadSignature => "bad signature",
        ProblemKind::Fork => "fork",
        ProblemKind::BadFraming => "bad framing",
        ProblemKind::NonMonotonicTime => "non-monotonic time",
        ProblemKind::Uncovered => "not covered by a checkpoint",
        ProblemKind::DamagedIndex => "damaged tile or index file",
    }
}

/// The witnesses `log verify` checks the log against.
struct Witnessed {
    keys: Vec<String>,
    urls: Vec<String>,
    /// Records allowed after the latest witnessed checkpoint.
    lag: u64,
}

/// One node's verification in `log verify --fleet`.
#[derive(Debug)]
struct NodeVerified {
    node_id: String,
    data: Option<PathBuf>,
    records: u64,
    checkpoints: u64,
    root: Option<String>,
    published_checkpoint_size: Option<u64>,
    problem: Option<String>,
}

fn verify_fleet(node_data: &[PathBuf], window: u64, json: bool) -> anyhow::Result<ExitCode> {
    let location = crate::cmd::store::shared().ok_or_else(|| {
        anyhow::anyhow!(
            "`--fleet` verifies the nodes registered in the fleet's store: give `--store URL`"
        )
    })?;
    let store = location
        .open()
        .with_context(|| format!("cannot open the store at {}", location.describe()))?;
    let nodes = store.nodes()?;
    anyhow::ensure!(
        !nodes.is_empty(),
        "no node is registered in the store at {} (nodes register when `arbiter serve --store` starts)",
        location.describe()
    );
    // Each directory's log, by the key in it (which only finds it: the registered key judges).
    let mut given: Vec<(PathBuf, Option<String>)> = Vec::new();
    for data in node_data {
        let dir = data.join("log");
        anyhow::ensure!(dir.is_dir(), "no decision log at `{}`", dir.display());
        let key = PublicKey::from_file(&dir.join("log-signing.pub"))
            .ok()
            .map(|k| k.to_hex());
        given.push((data.clone(), key));
    }
    let mut out = Vec::new();
    for node in &nodes {
        let mut v = NodeVerified {
            node_id: node.id.clone(),
            data: None,
            records: 0,
            checkpoints: 0,
            root: None,
            published_checkpoint_size: node.checkpoint_size,
            problem: None,
        };
        let Some((data, _)) = given
            .iter()
            .find(|(_, k)| k.as_deref() == Some(node.public_key.as_str()))
        else {
            v.problem = Some(format!(
                "not verified: no `--node-data` directory holds the log of this node (key {}…)",
                &node.public_key[..16]
            ));
            out.push(v);
            continue;
        };
        v.data = Some(data.clone());
        v.problem = verify_node(node, &data.join("log"), window, &mut v).err();
        out.push(v);
    }
    for (data, key) in &given {
        if !nodes
            .iter()
            .any(|n| Some(n.public_key.as_str()) == key.as_deref())
        {
            out.push(NodeVerified {
                node_id: String::new(),
                data: Some(data.clone()),
                records: 0,
                checkpoints: 0,
                root: None,
                published_checkpoint_size: None,
                problem: Some(
                    "this log's key is not the key of any node registered in the store".to_owned(),
                ),
            });
        }
    }
    let failed = out.iter().filter(|v| v.problem.is_some()).count();
    let records: u64 = out.iter().map(|v| v.records).sum();
    if json {
        let nodes: Vec<serde_json::Value> = out
            .iter()
            .map(|v| {
                serde_json::json!({
                    "node_id": v.node_id,
                    "data": v.data.as_ref().map(|d| d.display().to_string()),
                    "records": v.records,
                    "checkpoints": v.checkpoints,
                    "root": v.root,
                    "published_checkpoint_size": v.published_checkpoint_size,
                    "problem": v.problem,
                })
            })
            .collect();
        print(&serde_json::to_string_pretty(&serde_json::json!({
            "ok": failed == 0,
            "nodes": nodes,
            "records": records,
        }))?)?;
    } else {
        for v in &out {
            let name = if v.node_id.is_empty() {
                "(unregistered)"
            } else {
                &v.node_id
            };
            match &v.problem {
                None => print(&format!(
                    "node {name} ok: {} records, {} checkpoints, root {}{}",
                    v.records,
                    v.checkpoints,
                    v.root.as_deref().unwrap_or(""),
                    v.published_checkpoint_size
                        .map(|s| format!(", contains its published checkpoint of {s} records"))
                        .unwrap_or_default()
                ))?,
                Some(p) => eprintln!("node {name} FAILED: {p}"),
            }
        }
    }
    if failed == 0 {
        if !json {
            print(&format!(
                "fleet ok: {} node(s), {records} records, signatures checked against the registered keys",
                out.len()
            ))?;
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "fleet verification FAILED: {failed} of {} node(s) (see above)",
            out.len()
        );
        Ok(ExitCode::from(EXIT_VERIFY_FAILED))
    }
}

/// Verifies one node's log against its registered key and its published checkpoint.
fn verify_node(
    node: &arbiter_store::Node,
    dir: &Path,
    window: u64,
    v: &mut NodeVerified,
) -> Result<(), String> {
    let key = PublicKey::from_hex(&node.public_key)
        .map_err(|e| format!("the registered key is unusable: {e}"))?;
    let report = arbiter_log::verify_dir_with(
        dir,
        Some(&key),
        None,
        &arbiter_log::VerifyOptions { window },
    )
    .map_err(|e| format!("cannot read the log: {e}"))?;
    v.records = report.records;
    v.checkpoints = report.checkpoints;
    v.root = Some(report.root.clone());
    if let Some(p) = &report.problem {
        let at = p
            .index
            .map_or_else(|| "a checkpoint".to_owned(), |i| format!("record {i}"));
        return Err(format!("at {at}: {}: {}", kind_name(p.kind), p.detail));
    }
    if let Some(text) = &node.checkpoint {
        let cp = arbiter_log::Checkpoint::from_json(text.as_bytes())
            .map_err(|e| format!("the checkpoint it published is unreadable: {e}"))?;
        cp.verify(&key).map_err(|_| {
            "the checkpoint it published is not signed by its registered key".to_owned()
        })?;
        if cp.node_id != node.id {
            return Err(format!(
                "the checkpoint it published names node `{}`",
                cp.node_id
            ));
        }
        arbiter_log::consistency_dir(dir, &cp, &cp).map_err(|e| {
            format!(
                "the log does not hold the checkpoint of {} records the node published: records \
                 it had signed were removed or rewritten ({e})",
                cp.tree_size
            )
        })?;
    }
    Ok(())
}

fn verify(
    data: &DataArg,
    pubkey: Option<&str>,
    window: u64,
    witnessed: &Witnessed,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let witness_keys = witnessed
        .keys
        .iter()
        .map(|k| load_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = match pubkey {
        Some(a) => Some(load_key(a)?),
        None => {
            let path = dir.join("log-signing.pub");
            if path.exists() {
                eprintln!("{}", local_key_note(&path));
            } else {
                eprintln!(
                    "warning: no public key given and no `{}`: checkpoint signatures will NOT be checked",
                    path.display()
                );
            }
            None
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying {bar:40} {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let report = arbiter_log::verify_dir_with(
        &dir,
        key.as_ref(),
        Some(&progress),
        &arbiter_log::VerifyOptions { window },
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = report.map_err(|e| anyhow::anyhow!("cannot read the log: {e}"))?;
    // Witnesses: only for a log that verified by itself.
    let findings = if witness_keys.is_empty() || !report.is_ok() {
        Vec::new()
    } else {
        let log_key = match &key {
            Some(k) => *k,
            None => PublicKey::from_file(&dir.join("log-signing.pub"))
                .map_err(|e| anyhow::anyhow!("cannot read the log's public key: {e}"))?,
        };
        let fetched = witnessed
            .urls
            .iter()
            .map(|u| fetch_witnessed(u, &log_key, &witness_keys))
            .collect::<anyhow::Result<Vec<_>>>()?;
        arbiter_log::witness::check_witnessed(
            &dir,
            &log_key,
            &witness_keys,
            &fetched,
            witnessed.lag,
        )
        .map_err(|e| anyhow::anyhow!("cannot check the log against its witnesses: {e}"))?
    };
    if json {
        let mut value = serde_json::to_value(&report)?;
        if !witness_keys.is_empty() {
            value["witnesses"] = serde_json::to_value(&findings)?;
        }
        print(&serde_json::to_string_pretty(&value)?)?;
    }
    let sigs = if report.signatures_checked {
        "signatures checked"
    } else if report.checkpoints == 0 {
        "no checkpoint, so no signature checked"
    } else {
        "signatures NOT checked"
    };
    for o in &report.overrides {
        eprintln!(
            "warning: record {} ({}): the operator accepted log damage when opening the log: {}; \
             reason: {}. Records before it are covered only by checkpoints signed after the damage",
            o.index,
            format_rfc3339_us(o.ts_us),
            o.problem,
            o.reason
        );
    }
    match &report.problem {
        None => {
            if !json {
                let mut line = format!(
                    "log ok: {} records, {} checkpoints, root {}, {sigs}",
                    report.records, report.checkpoints, report.root
                );
                if !report.overrides.is_empty() {
                    line.push_str(&format!(
                        ", {} operator override(s) of log damage (see the warnings)",
                        report.overrides.len()
                    ));
                }
                if report.torn_tail_bytes > 0 {
                    line.push_str(&format!(
                        " ({} bytes of an incomplete final write ignored)",
                        report.torn_tail_bytes
                    ));
                }
                print(&line)?;
            }
            let mut witnessed_ok = true;
            for f in &findings {
                match &f.problem {
                    None => {
                        if !json {
                            print(&format!(
                                "witness {} ok: cosigned size {} at {}, {} record(s) after it",
                                f.witness,
                                f.witnessed_size.unwrap_or(0),
                                f.cosigned_at.map_or_else(String::new, |t| {
                                    format_rfc3339_us(i64::try_from(t).unwrap_or(0) * 1_000_000)
                                }),
                                f.unwitnessed_records
                            ))?;
                        }
                    }
                    Some(p) => {
                        witnessed_ok = false;
                        eprintln!("witness {} verification FAILED: {p}", f.witness);
                    }
                }
            }
            if witnessed_ok {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(EXIT_VERIFY_FAILED))
            }
        }
        Some(p) => {
            let at = match p.index {
                Some(i) => format!("record {i}"),
                None => "a checkpoint".to_string(),
            };
            fail(&format!(
                "log verification FAILED at {at}: {}: {} ({} records verified before it; {} checkpoints read, {sigs})",
                kind_name(p.kind),
                p.detail,
                report.records,
                report.checkpoints
            ))
        }
    }
}

/// The latest checkpoint of this log that the witness at `url` holds, cosigned by one of
/// `witnesses` (anything else is an error: an answer that does not verify proves nothing).
fn fetch_witnessed(
    url: &str,
    log_key: &PublicKey,
    witnesses: &[PublicKey],
) -> anyhow::Result<arbiter_log::witness::CosignedCheckpoint> {
    let url = format!(
        "{}/checkpoint/{}",
        url.trim_end_matches('/'),
        log_key.key_id()
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach the witness at `{url}`"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .with_context(|| format!("cannot read the answer of `{url}`"))?;
    if status != 200 {
        anyhow::bail!("the witness at `{url}` answered {status}: {}", text.trim());
    }
    let held: arbiter_log::witness::CosignedCheckpoint = serde_json::from_str(&text)
        .with_context(|| format!("`{url}` did not answer a cosigned checkpoint"))?;
    held.checkpoint
        .verify(log_key)
        .with_context(|| format!("the checkpoint `{url}` holds is not signed by the log's key"))?;
    if !witnesses.iter().any(|w| held.cosigned_by(w).is_some()) {
        anyhow::bail!("the checkpoint `{url}` answered is not cosigned by any --witness-key");
    }
    Ok(held)
}

fn prove(data: &DataArg, decision_id: &str, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let bundle = match arbiter_log::prove_dir(&dir, decision_id) {
        Ok(b) => b,
        Err(e @ LogError::NotFound(_)) => anyhow::bail!("{e} in `{}`", dir.display()),
        Err(e @ LogError::NotYetCheckpointed { .. }) => {
            anyhow::bail!("decision `{decision_id}`: {e}")
        }
        Err(e) => return Err(anyhow::anyhow!("cannot prove `{decision_id}`: {e}")),
    };
    let text = serde_json::to_string_pretty(&bundle)? + "\n";
    match out {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            eprintln!(
                "wrote the proof for record {} (log size {}) to `{}`",
                bundle.leaf_index,
                bundle.tree_size,
                path.display()
            );
        }
        None => print(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn check_proof(file: &Path, pubkey: &str) -> anyhow::Result<ExitCode> {
    let key = load_key(pubkey)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let bundle: InclusionProofBundle = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return fail(&format!(
                "proof INVALID: `{}` is not an inclusion proof bundle: {e}",
                file.display()
            ));
        }
    };
    match arbiter_log::check_proof(&bundle, Some(&key)) {
        Ok(()) => {
            let id = bundle.record["decision_id"].as_str().unwrap_or("?");
            print(&format!(
                "proof ok: decision {id} is record {} of a log of size {} signed at {} (node {}, key {})",
                bundle.leaf_index,
                bundle.tree_size,
                format_rfc3339_us(bundle.checkpoint.ts_us),
                bundle.checkpoint.node_id,
                bundle.checkpoint.key_id
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(&format!("proof INVALID: {e}")),
    }
}

fn archive(data: &DataArg, before: i64, to: &Path) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let r = arbiter_log::archive::archive(&dir, before, to)
        .map_err(|e| anyhow::anyhow!("cannot archive the decision log: {e}"))?;
    if r.first == r.end {
        println!(
            "nothing to archive: no sealed segment of `{}` ends before {} (records from {} on stay)",
            dir.display(),
            arbiter_log::format_rfc3339_us(before),
            r.first
        );
    } else {
        println!(
            "archived records {} to {} ({} segments, {:.1} MiB) to `{}`",
            r.first,
            r.end - 1,
            r.segments,
            r.bytes as f64 / 1_048_576.0,
            r.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn checkpoint(data: &DataArg) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let cp = arbiter_log::latest_checkpoint(&dir)
        .map_err(|e| anyhow::anyhow!("cannot read the checkpoints: {e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the log in `{}` has no checkpoint yet (the server writes one every second by default)",
                dir.display()
            )
        })?;
    print(&serde_json::to_string_pretty(&cp)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads checkpoint JSON from a file: the checkpoint itself, or an object
/// with a `checkpoint` member.
fn read_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if let Ok(cp) = Checkpoint::from_json(&bytes) {
        return Ok(cp);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("`{}` is not JSON", path.display()))?;
    let inner = v
        .get("checkpoint")
        .ok_or_else(|| anyhow::anyhow!("`{}` does not hold a checkpoint", path.display()))?;
    serde_json::from_value(inner.clone())
        .with_context(|| format!("`{}` does not hold a valid checkpoint", path.display()))
}

fn consistency(
    data: &DataArg,
    old: &Path,
    new: &Path,
    pubkey: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let old_cp = read_checkpoint(old)?;
    let new_cp = read_checkpoint(new)?;
    let key = key_or_local(pubkey, &dir)?;
    if old_cp.tree_size > new_cp.tree_size {
        anyhow::bail!(
            "the old checkpoint `{}` (size {}) is larger than the new one `{}` (size {}): swap them",
            old.display(),
            old_cp.tree_size,
            new.display(),
            new_cp.tree_size
        );
    }
    let proof = match arbiter_log::consistency_dir(&dir, &old_cp, &new_cp) {
        Ok(p) => p,
        Err(
            e @ (LogError::CheckpointMismatch { .. } | LogError::TruncatedBehindCheckpoint { .. }),
        ) => {
            return fail(&format!(
                "NOT consistent: the log in `{}` does not match the checkpoints: {e}",
                dir.display()
            ));
        }
        Err(e) => return Err(anyhow::anyhow!("cannot compute the consistency proof: {e}")),
    };
    match arbiter_log::check_consistency(&old_cp, &new_cp, &proof, &key) {
        Ok(()) => {
            print(&format!(
                "consistency ok: the log only grew from size {} to {} (root {} -> {})",
                old_cp.tree_size, new_cp.tree_size, old_cp.root_hash, new_cp.root_hash
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(&format!("NOT consistent: {e}")),
    }
}

/// Writes one record as a JSON line (its canonical, stored form).
fn write_record(w: &mut impl Write, r: &DecisionRecord) -> anyhow::Result<()> {
    let bytes = r.canonical_bytes()?;
    w.write_all(&bytes)?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Runs `f` over every record in order, stopping at the first write error.
fn for_each_record(
    follower: &mut Follower,
    mut f: impl FnMut(u64, DecisionRecord) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut err: Option<anyhow::Error> = None;
    follower
        .poll(&mut |i, r| match f(i, r) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                err = Some(e);
                ControlFlow::Break(())
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot read the log: {e}"))?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn tail(data: &DataArg, lines: usize, follow: bool) -> anyhow::Result<ExitCode> {
    let dir = if follow {
        data.log_dir()
    } else {
        data.existing_log_dir()?
    };
    let mut follower = Follower::new(&dir);
    let mut last: std::collections::VecDeque<DecisionRecord> =
        std::collections::VecDeque::with_capacity(lines.min(10_000));
    for_each_record(&mut follower, |_, r| {
        if lines > 0 {
            if last.len() == lines {
                last.pop_front();
            }
            last.push_back(r);
        }
        Ok(())
    })?;
    let stdout = std::io::stdout();
    {
        let mut w = std::io::BufWriter::new(stdout.lock());
        for r in &last {
            write_record(&mut w, r)?;
        }
        w.flush()?;
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut w = std::io::BufWriter::new(stdout.lock());
        for_each_record(&mut follower, |_, r| write_record(&mut w, &r))?;
        w.flush()?;
    }
}

/// A time for `--since`/`--until`: what [`arbiter_log::parse_time`] reads, or a time ago
/// (`90s`, `15m`, `1h`, `7d`).
pub(crate) fn time_arg(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let unit = match t.as_bytes().last() {
        Some(b's') => Some(1),
        Some(b'm') => Some(60),
        Some(b'h') => Some(3_600),
        Some(b'd') => Some(86_400),
        _ => None,
    };
    let digits = &t[..t.len().saturating_sub(1)];
    match unit {
        Some(unit) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let ago = digits
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_mul(unit))
                .and_then(|secs| secs.checked_mul(1_000_000))
                .ok_or_else(|| format!("`{t}` is too long ago"))?;
            Ok(arbiter_pdp::identity::now_us().saturating_sub(ago))
        }
        _ => arbiter_log::parse_time(t)
            .map_err(|e| format!("{e}, or a time ago such as `15m`, `1h`, `7d`")),
    }
}

fn query(
    data: &DataArg,
    filter: &RecordFilter,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let table = !json && std::io::stdout().is_terminal();
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    let emit = |w: &mut std::io::BufWriter<std::io::StdoutLock<'_>>,
                r: &DecisionRecord|
     -> anyhow::Result<()> {
        if table {
            writeln!(w, "{}", table_row(r))?;
            Ok(())
        } else {
            write_record(w, r)
        }
    };
    if table {
        writeln!(w, "{}", table_header())?;
    }
    match limit {
        None => for_each_record(&mut Follower::new(&dir), |_, r| {
            if filter.matches(&r) {
                emit(&mut w, &r)?;
            }
            Ok(())
        })?,
        Some(n) => {
            // Keep only the last `n` matches, then print them oldest first.
            let mut last: std::collections::VecDeque<DecisionRecord> =
                std::collections::VecDeque::with_capacity(n.min(4096));
            for_each_record(&mut Follower::new(&dir), |_, r| {
                if n > 0 && filter.matches(&r) {
                    if last.len() == n {
                        last.pop_front();
                    }
                    last.push_back(r);
                }
                Ok(())
            })?;
            for r in &last {
                emit(&mut w, r)?;
            }
        }
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn table_header() -> String {
    format!(
        "{:<19}  {:<16} {:<20} {:<15} {:<36} {:<37} REASON",
        "TIME (UTC)", "OUTCOME", "AGENT", "ACTION", "RESOURCE", "DECISION"
    )
}

/// One record as a table row: fixed-width columns, the admin reason last (cut to 80
/// characters); control characters in any field are shown as `?`.
fn table_row(r: &DecisionRecord) -> String {
    let clean = arbiter_types::text::terminal_cell;
    let time = format_rfc3339_us(r.ts_us);
    let time = time.get(..19).unwrap_or(&time);
    let agent = r.subject.agent_id.as_deref().unwrap_or(&r.subject.id);
    let resource = format!("{}::{}", r.resource.kind, r.resource.id);
    format!(
        "{time:<19}  {:<16} {:<20} {:<15} {:<36} {:<37} {}",
        r.outcome.as_str(),
        clean(agent, 20),
        clean(&r.action, 15),
        clean(&resource, 36),
        clean(&r.decision_id, 37),
        clean(&r.reason_admin, 80),
    )
}

fn export(data: &DataArg, format: ExportFormat) -> anyhow::Result<ExitCode> {
    let dir = data.existing_log_dir()?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for_each_record(&mut Follower::new(&dir), |_, r| match format {
        ExportFormat::Jsonl => write_record(&mut w, &r),
        ExportFormat::Ocsf => {
            let mut line = serde_json::to_vec(&arbiter_log::ocsf::to_ocsf(&r))?;
            line.push(b'\n');
            w.write_all(&line)?;
            Ok(())
        }
    })?;
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}
