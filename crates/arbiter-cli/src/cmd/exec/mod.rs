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

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arbiter_pep::{Ask, Denial, Source, SourceArgs, SourceConfig, Usage, Verdict, decide_within};
use clap::Args;

mod request;

use request::{CommandRequest, build_request, enforcement_point, questions};

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
action `exec_keep_env` for that variable (`context.variable`). ARBITER_SESSION, when set by
whoever launched the agent, names the session the decision is taken in (session labels, rate
limits and budgets: docs/runtime-context.md). See docs/exec.md.

Exit codes:
  126   denied by policy (also by a rate limit or a budget), or refused before asking (no
        ARBITER_AGENT_KEY, an argument that is not UTF-8, an invalid ARBITER_SESSION); also an
        allowed program that is not executable
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
    Denied(Box<Verdict>),
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
    let source = args.source.config(crate::cmd::store::shared());
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
    // The session the agent runs in, as its launcher names it; else the agent's default.
    let session = arbiter_pep::session_from_env().map_err(|e| Stop::Refused(e.to_string()))?;
    let point = enforcement_point();
    let timeout = Duration::from_millis(args.timeout_ms);
    let asks: Vec<Ask> = questions(&request, &loader)
        .into_iter()
        .map(|a| a.in_session(session.as_deref()))
        .collect();
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
        return Err(Stop::Denied(Box::new(verdict)));
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
    #![allow(clippy::unwrap_used)]
    use super::*;

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
}
