//! `arbiter exec`: the command guard.
//!
//! `arbiter exec [--pdp URL | --policies DIR --data DIR] -- PROGRAM ARGS…` asks the decision
//! point whether the agent whose credential is in `ARBITER_AGENT_KEY` may run PROGRAM with
//! ARGS (action `exec` on `Command::"<program name>"`, with the parsed command line in the
//! context), and only on an allow replaces itself with the program, so that the program's exit
//! status and signals reach the caller unchanged. Every failure on the way is a refusal: the
//! program does not run (fail closed).
//!
//! Exit codes: [`EXIT_DENIED`] (126) when the decision is a deny or the request was refused
//! before it could be asked, [`EXIT_FAILED`] (125) when the guard itself failed (bad usage,
//! decision point unreachable, slow or answering nonsense, a decision that could not be
//! recorded), [`EXIT_NOT_FOUND`] (127) when an allowed program does not exist, and otherwise
//! the program's own status.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arbiter_pdp::local::{LocalConfig, open_local};
use arbiter_pdp::{RecorderSettings, Source};
use arbiter_types::{Action, Entity, EvaluationRequest};
use clap::Args;
use serde_json::{Map, Value, json};

/// The decision is a deny, or the request was refused before it could be asked; also an
/// allowed program that is not executable (as in a shell).
pub const EXIT_DENIED: u8 = 126;
/// The guard itself failed (usage, decision point, policies, decision log): the program did
/// not run.
pub const EXIT_FAILED: u8 = 125;
/// The program was allowed but not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// The environment variable holding the agent's credential. It is removed from the program's
/// environment.
pub const KEY_ENV: &str = "ARBITER_AGENT_KEY";

/// The action that decides whether the program may keep a dynamic-loader variable.
pub const KEEP_ENV_ACTION: &str = "exec_keep_env";

/// Whether `name` is a dynamic-loader variable (`LD_*` on Linux and the BSDs, `DYLD_*` on
/// macOS). These make any program load code the agent chose (`LD_PRELOAD`,
/// `LD_LIBRARY_PATH`, `DYLD_INSERT_LIBRARIES`, …), so the program gets one only when a policy
/// allows it by name ([`KEEP_ENV_ACTION`]).
pub(crate) fn is_loader_variable(name: &str) -> bool {
    name.starts_with("LD_") || name.starts_with("DYLD_")
}

/// Largest decision point answer read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

const EXIT_CODES_HELP: &str = "\
The agent's credential (an Arbiter key `arb_…` or a token) is read from ARBITER_AGENT_KEY and
removed from the program's environment. The policy sees action `exec` on
`Command::\"<program name>\"` (the base name of PROGRAM) and, in the context, `argv`,
`subcommand`, `flags`, `flag_values`, `cwd` and `env` (variable names only). Dynamic-loader
variables (`LD_*`, `DYLD_*`) are removed from the program's environment unless a policy allows
action `exec_keep_env` for that variable (`context.variable`). See docs/exec.md.

Exit codes:
  126   denied by policy, or refused before asking (no ARBITER_AGENT_KEY, an argument that
        is not UTF-8); also an allowed program that is not executable
  125   arbiter exec failed, so the program did not run (fail closed): bad usage, decision
        point unreachable, slow (--timeout-ms) or answering without a decision, policies or
        data that do not load, a decision that could not be recorded
  127   the program was allowed but not found
  other the program's own status: on an allow arbiter exec becomes the program, so its exit
        code and signals pass through unchanged

Examples:
  ARBITER_AGENT_KEY=arb_… arbiter exec --pdp http://127.0.0.1:8180 -- git status
  arbiter exec --policies policies --data arbiter-data -- kubectl get pods -n prod";

/// Arguments of `arbiter exec`.
#[derive(Debug, Args)]
#[command(
    override_usage = "arbiter exec [--pdp URL | --policies DIR [--data DIR]] [--timeout-ms MS] -- PROGRAM [ARGS]...",
    after_help = "Exit codes: 126 denied, 125 arbiter exec failed (the program did not run), 127 \
                  program not found; otherwise the program's own. More with '--help'.",
    after_long_help = EXIT_CODES_HELP
)]
pub struct ExecArgs {
    /// Ask this decision point (a running `arbiter serve`), e.g. `http://127.0.0.1:8180`.
    /// Exclusive with `--policies`.
    #[arg(long, env = "ARBITER_PDP", value_name = "URL")]
    pub pdp: Option<String>,

    /// Decide in this process with the policies in DIR, recording in `--data` (which must not
    /// be in use by a running `arbiter serve`: use `--pdp` then). Exclusive with `--pdp`.
    #[arg(long, env = "ARBITER_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,

    /// Data directory for local decisions: the agent registry and the decision log.
    #[arg(
        long,
        env = "ARBITER_DATA",
        value_name = "DIR",
        default_value = "arbiter-data"
    )]
    pub data: PathBuf,

    /// External token issuers whose JWTs are accepted as agent credentials (local mode; the
    /// same file as `arbiter serve --jwt-issuers`).
    #[arg(long, env = "ARBITER_JWT_ISSUERS", value_name = "FILE")]
    pub jwt_issuers: Option<PathBuf>,

    /// Time allowed to reach a decision, in milliseconds: the whole exchange with `--pdp`, or
    /// waiting for another local `arbiter exec` to finish with the decision log.
    #[arg(
        long,
        env = "ARBITER_EXEC_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 5000
    )]
    pub timeout_ms: u64,

    /// The program and its arguments (put them after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "PROGRAM [ARGS]"
    )]
    pub command: Vec<OsString>,
}

/// Why the program is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// The guard failed: exit 125.
    Failed(String),
    /// Refused before a decision could be asked: exit 126.
    Refused(String),
    /// The decision point said no: exit 126.
    Denied(Verdict),
}

/// A decision, as the guard needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    allow: bool,
    decision_id: Option<String>,
    reason_user: Option<String>,
}

/// Where decisions come from.
#[derive(Debug)]
enum Mode<'a> {
    Remote { url: &'a str },
    Local { policies: &'a Path },
}

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let program_display = args
        .command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    match guard(&args) {
        Ok(allowed) => {
            for removed in &allowed.removed {
                eprintln!(
                    "arbiter exec: removed {} from the program's environment: {}",
                    removed.variable,
                    deny_message(&removed.verdict)
                        .strip_prefix("denied: ")
                        .unwrap_or("not permitted")
                );
            }
            let removed: Vec<&str> = allowed
                .removed
                .iter()
                .map(|r| r.variable.as_str())
                .collect();
            Ok(exec_program(&args.command, &removed, &program_display))
        }
        Err(stop) => {
            let (code, message) = match stop {
                Stop::Failed(what) => (
                    EXIT_FAILED,
                    format!("{what}; not running {program_display} (fail closed)"),
                ),
                Stop::Refused(why) => (
                    EXIT_DENIED,
                    format!("denied: {why}; not running {program_display} (fail closed)"),
                ),
                Stop::Denied(v) => (EXIT_DENIED, deny_message(&v)),
            };
            eprintln!("arbiter exec: {message}");
            Ok(ExitCode::from(code))
        }
    }
}

fn deny_message(v: &Verdict) -> String {
    let reason = v
        .reason_user
        .as_deref()
        .map(|r| r.strip_prefix("denied: ").unwrap_or(r))
        .filter(|r| !r.is_empty())
        .unwrap_or("not permitted");
    match &v.decision_id {
        Some(id) => format!("denied: {reason} (decision {id})"),
        None => format!("denied: {reason}"),
    }
}

/// What an allow lets through.
#[derive(Debug, Default)]
struct Allowed {
    /// Loader variables the program does not get, and why.
    removed: Vec<Removed>,
}

#[derive(Debug)]
struct Removed {
    variable: String,
    verdict: Verdict,
}

/// Decides; `Ok` means the program may run (without the loader variables it lists).
fn guard(args: &ExecArgs) -> Result<Allowed, Stop> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(Stop::Failed(
            "no program given: usage is `arbiter exec [--pdp URL | --policies DIR] -- PROGRAM \
             [ARGS]...`"
                .to_owned(),
        ));
    };
    if program.is_empty() {
        return Err(Stop::Failed("the program name is empty".to_owned()));
    }
    if program.as_encoded_bytes().first() == Some(&b'-') {
        return Err(Stop::Failed(format!(
            "unknown option `{}` (options go before `--`, the program after it; a program name \
             cannot start with `-`)",
            program.to_string_lossy()
        )));
    }
    let mode = mode(args)?;
    if args.timeout_ms == 0 {
        return Err(Stop::Failed("`--timeout-ms` must be at least 1".to_owned()));
    }
    let CommandRequest {
        name,
        body: request,
        loader,
    } = build_request(program, rest)?;
    let key = match std::env::var(KEY_ENV) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            return Err(Stop::Refused(format!(
                "{KEY_ENV} is not set: the agent's key or token is needed to ask whether it may \
                 run `{name}`"
            )));
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Stop::Refused(format!("{KEY_ENV} is not valid UTF-8")));
        }
    };
    let point = enforcement_point();
    let timeout = Duration::from_millis(args.timeout_ms);
    let questions = questions(&request, &loader);
    let mut verdicts = match mode {
        Mode::Remote { url } => decide_remote(url, timeout, &key, &point, &questions)?,
        Mode::Local { policies } => decide_local(
            policies,
            &args.data,
            args.jwt_issuers.as_deref(),
            timeout,
            &key,
            &point,
            &questions,
        )?,
    }
    .into_iter();
    let (Some(verdict), n) = (verdicts.next(), verdicts.len()) else {
        return Err(Stop::Failed("no decision was taken".to_owned()));
    };
    if n != loader.len() {
        return Err(Stop::Failed(format!(
            "{} decisions for {} questions",
            n + 1,
            loader.len() + 1
        )));
    }
    if !verdict.allow {
        return Err(Stop::Denied(verdict));
    }
    Ok(Allowed {
        removed: loader
            .into_iter()
            .zip(verdicts)
            .filter(|(_, v)| !v.allow)
            .map(|(variable, verdict)| Removed { variable, verdict })
            .collect(),
    })
}

/// The questions for one command: may it run, and may it keep each loader variable (asked
/// only when there are any).
fn questions(request: &Map<String, Value>, loader: &[String]) -> Vec<Map<String, Value>> {
    let mut out = vec![request.clone()];
    for variable in loader {
        let mut q = request.clone();
        q.insert("action".into(), json!({"name": KEEP_ENV_ACTION}));
        if let Some(Value::Object(ctx)) = q.get_mut("context") {
            ctx.insert("variable".into(), json!(variable));
        }
        out.push(q);
    }
    out
}

fn mode(args: &ExecArgs) -> Result<Mode<'_>, Stop> {
    let pdp = args.pdp.as_deref().filter(|u| !u.is_empty());
    let policies = args
        .policies
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty());
    match (pdp, policies) {
        (Some(_), Some(_)) => Err(Stop::Failed(
            "give either --pdp URL (ARBITER_PDP) or --policies DIR (ARBITER_POLICIES), not both"
                .to_owned(),
        )),
        (None, None) => Err(Stop::Failed(
            "no decision point: give --pdp URL (ARBITER_PDP) to ask a running `arbiter serve`, \
             or --policies DIR (ARBITER_POLICIES) with --data DIR (ARBITER_DATA) to decide in \
             this process"
                .to_owned(),
        )),
        (Some(url), None) => Ok(Mode::Remote { url }),
        (None, Some(policies)) => Ok(Mode::Local { policies }),
    }
}

/// The program's name as policies see it: the last component of PROGRAM.
fn program_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// What the guard asks about one command line.
#[derive(Debug)]
struct CommandRequest {
    /// The program name policies see.
    name: String,
    /// The `exec` evaluation request (no subject: the decision point binds it to the
    /// credential's agent).
    body: Map<String, Value>,
    /// The loader variables in the environment: left out of `env`, each decided on its own.
    loader: Vec<String>,
}

/// The evaluation request for running `program` with `rest`.
fn build_request(program: &OsStr, rest: &[OsString]) -> Result<CommandRequest, Stop> {
    let program = program.to_str().ok_or_else(|| {
        Stop::Refused("the program path is not valid UTF-8, which a policy cannot see".to_owned())
    })?;
    let name = program_name(program);
    if name.is_empty() || name == "." || name == ".." {
        return Err(Stop::Failed(format!("`{program}` does not name a program")));
    }
    let mut argv = Vec::with_capacity(rest.len());
    for (i, a) in rest.iter().enumerate() {
        let a = a.to_str().ok_or_else(|| {
            Stop::Refused(format!(
                "argument {} is not valid UTF-8, which a policy cannot see",
                i + 1
            ))
        })?;
        argv.push(a.to_owned());
    }
    let parsed = parse_argv(&argv);
    let cwd = std::env::current_dir()
        .map_err(|e| Stop::Failed(format!("cannot read the working directory: {e}")))?;
    let cwd = cwd
        .to_str()
        .ok_or_else(|| Stop::Refused("the working directory is not valid UTF-8".to_owned()))?
        .to_owned();
    let mut env = Vec::new();
    for (k, _) in std::env::vars_os() {
        if k == KEY_ENV {
            continue;
        }
        let k = k.into_string().map_err(|k| {
            Stop::Refused(format!(
                "the name of environment variable `{}` is not valid UTF-8",
                k.to_string_lossy()
            ))
        })?;
        env.push(k);
    }
    env.sort();
    env.dedup();
    let (loader, env): (Vec<String>, Vec<String>) =
        env.into_iter().partition(|k| is_loader_variable(k));
    let mut context = Map::new();
    context.insert("argv".into(), json!(argv));
    context.insert("subcommand".into(), json!(parsed.subcommand));
    context.insert("flags".into(), json!(parsed.flags));
    context.insert("flag_values".into(), json!(parsed.flag_values));
    context.insert("cwd".into(), json!(cwd));
    context.insert("env".into(), json!(env));
    let mut body = Map::new();
    body.insert("action".into(), json!({"name": "exec"}));
    body.insert(
        "resource".into(),
        json!({"type": "Command", "id": name, "properties": {"program": name}}),
    );
    body.insert("context".into(), Value::Object(context));
    Ok(CommandRequest {
        name: name.to_owned(),
        body,
        loader,
    })
}

/// What a command line says, without knowing the program's option syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ParsedArgs {
    /// The leading non-flag arguments, space-separated (`delete pod web`); empty when none.
    pub subcommand: String,
    /// Flag names as given (`--force`, `-n`, `-rf`); for `--name=value` the name part.
    pub flags: Vec<String>,
    /// Flags given with `=`: `--namespace=prod` as given.
    pub flag_values: Vec<String>,
}

/// Parses the arguments after the program.
///
/// - A *flag* is an argument that starts with `-` and is neither `-` (conventionally standard
///   input, an operand) nor `--`. Its name is the part before the first `=`.
/// - Only `--name=value` (or `-n=value`) forms populate `flag_values`. Without a spec of the
///   program's options it cannot be known whether a separate word after a flag (`-n prod`) is
///   its value, so no separate word is ever consumed as a value: such a word is an operand.
/// - The *subcommand* is the first run of operands: flags before it are skipped (and a word
///   that follows such a flag starts the subcommand, e.g. `-n prod delete pod` gives
///   `prod delete pod`), and the first flag after it has started ends it.
/// - A lone `--` ends flag parsing: everything after it is an operand; it ends the subcommand
///   too, and operands after it never join the subcommand.
pub(crate) fn parse_argv(args: &[String]) -> ParsedArgs {
    let mut words: Vec<&str> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    let mut flag_values: Vec<String> = Vec::new();
    let mut subcommand_done = false;
    for a in args {
        if a == "--" {
            break;
        }
        if a.len() > 1 && a.starts_with('-') {
            if !words.is_empty() {
                subcommand_done = true;
            }
            let name = match a.split_once('=') {
                Some((name, _)) => {
                    push_unique(&mut flag_values, a);
                    name
                }
                None => a.as_str(),
            };
            push_unique(&mut flags, name);
        } else if !subcommand_done {
            words.push(a);
        }
    }
    ParsedArgs {
        subcommand: words.join(" "),
        flags,
        flag_values,
    }
}

fn push_unique(set: &mut Vec<String>, item: &str) {
    if !set.iter().any(|s| s == item) {
        set.push(item.to_owned());
    }
}

/// `exec:<host>`, the enforcement point decisions are recorded under.
fn enforcement_point() -> String {
    format!("exec:{}", host_name())
}

/// The host name (from `/etc/hostname`, the kernel, or `uname -n`), reduced to
/// `[A-Za-z0-9._-]`; `localhost` when there is none.
fn host_name() -> String {
    let from_files = ["/etc/hostname", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| sanitize_host(&h))
        .find(|h| !h.is_empty());
    if let Some(h) = from_files {
        return h;
    }
    std::process::Command::new("uname")
        .arg("-n")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| sanitize_host(&String::from_utf8_lossy(&o.stdout)))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn sanitize_host(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(128)
        .collect()
}

/// Asks a running decision point over the AuthZEN API.
fn decide_remote(
    url: &str,
    timeout: Duration,
    key: &str,
    point: &str,
    questions: &[Map<String, Value>],
) -> Result<Vec<Verdict>, Stop> {
    // One question goes to the evaluation endpoint, several to the batch endpoint (each item
    // complete, no defaults), answered in order.
    let (endpoint, payload) = match questions {
        [one] => (
            format!("{}/access/v1/evaluation", url.trim_end_matches('/')),
            Value::Object(one.clone()).to_string(),
        ),
        many => (
            format!("{}/access/v1/evaluations", url.trim_end_matches('/')),
            json!({ "evaluations": many }).to_string(),
        ),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("arbiter-exec/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let failed = |what: String| Stop::Failed(format!("the decision point at {url} {what}"));
    let mut response = agent
        .post(&endpoint)
        .header("authorization", &format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("x-arbiter-enforcement-point", point)
        .send(payload.as_bytes())
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => {
                failed(format!("did not answer within {} ms", timeout.as_millis()))
            }
            e => failed(format!("cannot be reached: {e}")),
        })?;
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => {
                failed(format!("did not answer within {} ms", timeout.as_millis()))
            }
            e => failed(format!("sent an answer that cannot be read: {e}")),
        })?;
    let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status != ureq::http::StatusCode::OK {
        let detail = answer
            .as_ref()
            .and_then(|a| a.get("error"))
            .and_then(|e| {
                let message = e.get("message")?.as_str()?;
                Some(match e.get("code").and_then(Value::as_str) {
                    Some(code) => format!(": {code}: {message}"),
                    None => format!(": {message}"),
                })
            })
            .unwrap_or_default();
        return Err(failed(format!("answered {status}{detail}")));
    }
    let answer =
        answer.ok_or_else(|| failed("answered with a body that is not JSON".to_owned()))?;
    let answers = match questions {
        [_] => vec![&answer],
        _ => answer
            .get("evaluations")
            .and_then(Value::as_array)
            .filter(|a| a.len() == questions.len())
            .ok_or_else(|| {
                failed(format!(
                    "answered without `evaluations` for the {} questions",
                    questions.len()
                ))
            })?
            .iter()
            .collect(),
    };
    answers
        .into_iter()
        .map(|a| {
            verdict_of(a).ok_or_else(|| failed("answered without a boolean `decision`".to_owned()))
        })
        .collect()
}

/// Reads an AuthZEN decision: `decision` must be a boolean.
fn verdict_of(answer: &Value) -> Option<Verdict> {
    let a = arbiter_types::AnswerSummary::read(answer)?;
    Some(Verdict {
        allow: a.allow,
        decision_id: a.decision_id,
        reason_user: a.reason_user,
    })
}

/// Decides in this process, exactly as `arbiter serve` would, and records the decision in the
/// data directory's log before answering.
fn decide_local(
    policies: &Path,
    data: &Path,
    jwt_issuers: Option<&Path>,
    timeout: Duration,
    key: &str,
    point: &str,
    questions: &[Map<String, Value>],
) -> Result<Vec<Verdict>, Stop> {
    let failed = Stop::Failed;
    if !data.is_dir() {
        return Err(failed(format!(
            "the data directory `{}` does not exist (register the agent and issue its key there \
             first, or give --data)",
            data.display()
        )));
    }
    // One writer at a time: concurrent local guards on this data directory take turns.
    let _lock = lock_data_dir(data, timeout)?;
    let pdp = open_local(LocalConfig {
        policies: policies.to_path_buf(),
        data: data.to_path_buf(),
        jwt_issuers: jwt_issuers.map(Path::to_path_buf),
        recorder: RecorderSettings::default(),
    })
    .map_err(failed)?;
    let Some(identity) = pdp.identity().cloned() else {
        return Err(failed("the agent registry is not open".to_owned()));
    };
    let snapshot = pdp.snapshot();
    let source = Source {
        address: "local",
        enforcement_point: point,
    };
    let requests = questions.iter().map(|q| request_for("", q)).collect();
    let decided = pdp.decide_for_agent(&snapshot, Some(key), &source, requests);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
    let recorded: Vec<_> = runtime.block_on(async {
        let mut out = Vec::with_capacity(decided.len());
        for d in decided {
            out.push(
                pdp.record(d.request.as_ref(), d.decision, point, Some(&d.attribution))
                    .await,
            );
        }
        out
    });
    drop(runtime);
    if let Err(e) = identity.flush() {
        eprintln!("arbiter exec: warning: cannot write the credential's last-used time: {e}");
    }
    if let Some(recorder) = pdp.recorder()
        && let Err(e) = recorder.log().shutdown()
    {
        eprintln!("arbiter exec: warning: the decision log did not close cleanly: {e}");
    }
    recorded
        .into_iter()
        .map(|r| {
            let decision = r.map_err(|u| failed(u.error))?;
            Ok(Verdict {
                allow: decision.outcome.is_allow(),
                decision_id: Some(decision.id.as_str().to_owned()),
                reason_user: Some(decision.reason_user),
            })
        })
        .collect()
}

/// The request with `Agent::"<agent>"` as its subject.
fn request_for(agent: &str, body: &Map<String, Value>) -> EvaluationRequest {
    let context = body
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let resource = body.get("resource");
    let id = resource
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let properties = resource
        .and_then(|r| r.get("properties"))
        .and_then(Value::as_object)
        .cloned();
    EvaluationRequest {
        subject: Entity {
            kind: arbiter_pdp::delegation::AGENT_TYPE.to_owned(),
            id: agent.to_owned(),
            properties: None,
        },
        action: Action {
            name: body
                .get("action")
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("exec")
                .to_owned(),
            properties: None,
        },
        resource: Entity {
            kind: "Command".to_owned(),
            id,
            properties,
        },
        context,
    }
}

/// Takes `<data>/exec.lock`, waiting at most `timeout` for another local guard to finish.
fn lock_data_dir(data: &Path, timeout: Duration) -> Result<File, Stop> {
    let path = data.join("exec.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Stop::Failed(format!("cannot open `{}`: {e}", path.display())))?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Stop::Failed(format!(
                    "another `arbiter exec` held `{}` for more than {} ms",
                    path.display(),
                    timeout.as_millis()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Stop::Failed(format!(
                    "cannot lock `{}`: {e}",
                    path.display()
                )));
            }
        }
    }
}

/// Replaces this process with the program; returns only if that fails.
fn exec_program(command: &[OsString], remove: &[&str], display: &str) -> ExitCode {
    let Some((program, rest)) = command.split_first() else {
        return ExitCode::from(EXIT_FAILED);
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest).env_remove(KEY_ENV);
    for variable in remove {
        cmd.env_remove(variable);
    }
    let error = cmd.exec();
    let code = if error.kind() == std::io::ErrorKind::NotFound {
        EXIT_NOT_FOUND
    } else {
        EXIT_DENIED
    };
    eprintln!("arbiter exec: allowed, but cannot run {display}: {error}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(line: &str) -> ParsedArgs {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse_argv(&args)
    }

    #[test]
    fn subcommand_is_the_leading_operands() {
        let p = parse("delete pod web -n prod");
        assert_eq!(p.subcommand, "delete pod web");
        assert_eq!(p.flags, ["-n"]);
        assert!(p.flag_values.is_empty());
        assert_eq!(parse("status").subcommand, "status");
        assert_eq!(parse("").subcommand, "");
        assert_eq!(parse("push origin main").subcommand, "push origin main");
    }

    #[test]
    fn a_separate_word_after_a_flag_is_never_a_value() {
        // After the subcommand started: the word is an operand outside the subcommand.
        let p = parse("get pods -n prod web");
        assert_eq!(p.subcommand, "get pods");
        assert_eq!(p.flags, ["-n"]);
        assert!(p.flag_values.is_empty());
        // Before it: leading flags are skipped, and the word starts the subcommand.
        let p = parse("-n prod delete pod web");
        assert_eq!(p.subcommand, "prod delete pod web");
        assert_eq!(p.flags, ["-n"]);
        let p = parse("--no-pager push --force");
        assert_eq!(p.subcommand, "push");
        assert_eq!(p.flags, ["--no-pager", "--force"]);
    }

    #[test]
    fn equals_forms_give_flag_values() {
        let p = parse("--namespace=prod delete pod --grace-period=0 --force -o=json");
        assert_eq!(p.subcommand, "delete pod");
        assert_eq!(p.flags, ["--namespace", "--grace-period", "--force", "-o"]);
        assert_eq!(
            p.flag_values,
            ["--namespace=prod", "--grace-period=0", "-o=json"]
        );
        // The value part may itself hold `=`.
        let p = parse("run --env=A=B");
        assert_eq!(p.flags, ["--env"]);
        assert_eq!(p.flag_values, ["--env=A=B"]);
    }

    #[test]
    fn flags_are_as_given_and_deduplicated() {
        let p = parse("rm -rf -v -v --force --force=yes dir");
        assert_eq!(p.flags, ["-rf", "-v", "--force"]);
        assert_eq!(p.flag_values, ["--force=yes"]);
        assert_eq!(p.subcommand, "rm");
    }

    #[test]
    fn a_lone_dash_is_an_operand() {
        let p = parse("apply -f -");
        assert_eq!(p.subcommand, "apply");
        assert_eq!(p.flags, ["-f"]);
        assert_eq!(parse("- x").subcommand, "- x");
    }

    #[test]
    fn double_dash_ends_flag_parsing_and_the_subcommand() {
        let p = parse("exec web -- rm -rf /");
        assert_eq!(p.subcommand, "exec web");
        assert!(p.flags.is_empty(), "{:?}", p.flags);
        let p = parse("checkout --quiet -- --force=x");
        assert_eq!(p.flags, ["--quiet"]);
        assert!(p.flag_values.is_empty());
        // Operands after `--` never join the subcommand.
        assert_eq!(parse("-- push").subcommand, "");
        assert_eq!(parse("-v -- push").subcommand, "");
    }

    #[test]
    fn program_names_are_base_names() {
        assert_eq!(program_name("/usr/bin/git"), "git");
        assert_eq!(program_name("git"), "git");
        assert_eq!(program_name("./bin/kubectl"), "kubectl");
        assert_eq!(program_name("dir/"), "");
    }

    #[test]
    fn host_names_are_sanitized() {
        assert_eq!(sanitize_host("web-1.example.com\n"), "web-1.example.com");
        assert_eq!(sanitize_host("bad host/€:1"), "badhost1");
        assert_eq!(sanitize_host(" \n"), "");
        assert_eq!(sanitize_host(&"a".repeat(300)).len(), 128);
        let point = enforcement_point();
        assert!(point.starts_with("exec:") && point.len() > 5, "{point}");
    }

    #[test]
    fn answers_without_a_boolean_decision_are_refused() {
        assert_eq!(verdict_of(&json!({"decision": "true"})), None);
        assert_eq!(verdict_of(&json!({"context": {}})), None);
        assert_eq!(verdict_of(&json!([true])), None);
        let v = verdict_of(&json!({
            "decision": false,
            "context": {"decision_id": "d1", "reason_user": {"en": "denied: no pushing"}},
        }))
        .unwrap();
        assert!(!v.allow);
        assert_eq!(deny_message(&v), "denied: no pushing (decision d1)");
        let v = verdict_of(&json!({"decision": true})).unwrap();
        assert!(v.allow && v.decision_id.is_none());
    }

    #[test]
    fn requests_follow_the_vocabulary() {
        let CommandRequest { name, body, .. } = build_request(
            OsStr::new("/usr/local/bin/kubectl"),
            &["delete", "pod", "web", "--namespace=prod"].map(OsString::from),
        )
        .unwrap();
        assert_eq!(name, "kubectl");
        assert_eq!(
            body["resource"],
            json!({"type": "Command", "id": "kubectl", "properties": {"program": "kubectl"}})
        );
        assert_eq!(body["action"], json!({"name": "exec"}));
        assert!(!body.contains_key("subject"));
        let ctx = &body["context"];
        assert_eq!(ctx["subcommand"], "delete pod web");
        assert_eq!(ctx["flag_values"], json!(["--namespace=prod"]));
        assert_eq!(ctx["argv"].as_array().unwrap().len(), 4);
        assert!(ctx["cwd"].is_string());
        assert!(!ctx["env"].as_array().unwrap().iter().any(|n| n == KEY_ENV));
        let req = request_for("bot", &body);
        assert_eq!(req.subject.id, "bot");
        assert_eq!(req.resource.id, "kubectl");
        assert_eq!(req.action.name, "exec");
    }

    #[test]
    fn loader_variables_are_asked_about_one_by_one() {
        for (name, loader) in [
            ("LD_PRELOAD", true),
            ("LD_LIBRARY_PATH", true),
            ("DYLD_INSERT_LIBRARIES", true),
            ("LD", false),
            ("OLD_PRELOAD", false),
            ("PATH", false),
        ] {
            assert_eq!(is_loader_variable(name), loader, "{name}");
        }
        let request = json!({
            "action": {"name": "exec"},
            "resource": {"type": "Command", "id": "make"},
            "context": {"env": ["PATH"]},
        });
        let request = request.as_object().unwrap();
        assert_eq!(questions(request, &[]).len(), 1);
        let q = questions(request, &["LD_PRELOAD".to_owned()]);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0], *request);
        assert_eq!(q[1]["action"], json!({"name": KEEP_ENV_ACTION}));
        assert_eq!(q[1]["context"]["variable"], "LD_PRELOAD");
        assert_eq!(request_for("bot", &q[1]).action.name, KEEP_ENV_ACTION);
    }

    #[test]
    fn non_utf8_arguments_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'a', 0xff]);
        match build_request(OsStr::new("git"), &[OsString::from("log"), bad]) {
            Err(Stop::Refused(why)) => assert!(why.contains("argument 2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
