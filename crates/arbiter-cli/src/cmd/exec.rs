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
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arbiter_pep::{Ask, Denial, Source, SourceArgs, SourceConfig, Usage, Verdict, decide_within};
use arbiter_types::Entity;
use clap::Args;
use serde_json::{Map, json};

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
    #[command(flatten)]
    pub source: SourceArgs,

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
                    removed.verdict.denial().reason
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
                    format!(
                        "{}; not running {program_display} (fail closed)",
                        Denial::new(&why, None)
                    ),
                ),
                Stop::Denied(v) => (EXIT_DENIED, deny_message(&v)),
            };
            eprintln!("arbiter exec: {message}");
            Ok(ExitCode::from(code))
        }
    }
}

fn deny_message(v: &Verdict) -> String {
    v.denial().to_string()
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
    let source = args.source.config();
    source.check().map_err(|e| Stop::Failed(e.to_string()))?;
    if args.timeout_ms == 0 {
        return Err(Stop::Failed("`--timeout-ms` must be at least 1".to_owned()));
    }
    let CommandRequest {
        name,
        ask: request,
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
    let asks = questions(&request, &loader);
    let mut verdicts = decide(&source, timeout, &key, point, asks)?.into_iter();
    let Some(verdict) = verdicts.next() else {
        return Err(Stop::Failed("no decision was taken".to_owned()));
    };
    if verdict.unrecorded {
        return Err(Stop::Failed(format!(
            "the decision could not be recorded ({})",
            verdict.denial()
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
fn questions(request: &Ask, loader: &[String]) -> Vec<Ask> {
    let mut out = vec![request.clone()];
    for variable in loader {
        let mut q = request.clone();
        q.action = KEEP_ENV_ACTION;
        q.context.insert("variable".into(), json!(variable));
        out.push(q);
    }
    out
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
    /// The `exec` question (the decision point binds it to the credential's agent).
    ask: Ask,
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
    let mut properties = Map::new();
    properties.insert("program".into(), json!(name));
    let ask = Ask {
        context,
        ..Ask::new(
            "exec",
            Entity {
                kind: "Command".into(),
                id: name.to_owned(),
                properties: Some(properties),
            },
        )
    };
    Ok(CommandRequest {
        name: name.to_owned(),
        ask,
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

/// Asks the decision source: a running decision point, or one opened in this process for
/// this decision (recording it in the data directory's log before answering; concurrent local
/// guards on one data directory take turns).
fn decide(
    source: &SourceConfig,
    timeout: Duration,
    key: &str,
    point: String,
    asks: Vec<Ask>,
) -> Result<Vec<Verdict>, Stop> {
    let failed = |e: &dyn std::fmt::Display| Stop::Failed(e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&format!("cannot start the async runtime: {e}")))?;
    let _lock = match &source.policies {
        Some(_) if source.data.is_dir() => Some(lock_data_dir(&source.data, timeout)?),
        _ => None,
    };
    let opened = Source::open(source, point, timeout, Usage::Once).map_err(|e| failed(&e))?;
    let verdicts = runtime.block_on(decide_within(
        opened.decider.as_ref(),
        // A local decision waits for the log; the remote exchange has its own timeout.
        timeout.saturating_add(Duration::from_secs(5)),
        Some(key),
        asks,
        None,
    ));
    for problem in opened.close() {
        eprintln!("arbiter exec: warning: {problem}");
    }
    drop(runtime);
    verdicts.map_err(|e| failed(&e))
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
    fn denials_read_as_everywhere() {
        let v = Verdict {
            decision_id: Some("d1".into()),
            reason_user: "denied: no pushing".into(),
            ..Verdict::default()
        };
        assert_eq!(
            deny_message(&v),
            "denied by Arbiter: no pushing (decision d1)"
        );
    }

    #[test]
    fn requests_follow_the_vocabulary() {
        let CommandRequest { name, ask, .. } = build_request(
            OsStr::new("/usr/local/bin/kubectl"),
            &["delete", "pod", "web", "--namespace=prod"].map(OsString::from),
        )
        .unwrap();
        assert_eq!(name, "kubectl");
        assert_eq!(
            json!(ask.resource),
            json!({"type": "Command", "id": "kubectl", "properties": {"program": "kubectl"}})
        );
        assert_eq!(ask.action, "exec");
        let ctx = &ask.context;
        assert_eq!(ctx["subcommand"], "delete pod web");
        assert_eq!(ctx["flag_values"], json!(["--namespace=prod"]));
        assert_eq!(ctx["argv"].as_array().unwrap().len(), 4);
        assert!(ctx["cwd"].is_string());
        assert!(!ctx["env"].as_array().unwrap().iter().any(|n| n == KEY_ENV));
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
        let mut request = Ask::new(
            "exec",
            Entity {
                kind: "Command".into(),
                id: "make".into(),
                properties: None,
            },
        );
        request.context.insert("env".into(), json!(["PATH"]));
        assert_eq!(questions(&request, &[]).len(), 1);
        let q = questions(&request, &["LD_PRELOAD".to_owned()]);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0], request);
        assert_eq!(q[1].action, KEEP_ENV_ACTION);
        assert_eq!(q[1].context["variable"], "LD_PRELOAD");
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
