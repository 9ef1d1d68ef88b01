//! What `arbiter exec` asks about a command line: the `exec` question (the program's base
//! name, the parsed command line, the working directory and the environment's variable names),
//! one `exec_keep_env` question per dynamic-loader variable, and the enforcement point
//! (`exec:<host>`) decisions are recorded under.

use std::ffi::{OsStr, OsString};

use arbiter_pep::Ask;
use arbiter_types::Entity;
use serde_json::{Map, json};

use super::{KEEP_ENV_ACTION, KEY_ENV, Stop, is_loader_variable};

/// The questions for one command: may it run, and may it keep each loader variable (asked
/// only when there are any).
pub(super) fn questions(request: &Ask, loader: &[String]) -> Vec<Ask> {
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
pub(super) struct CommandRequest {
    /// The program name policies see.
    pub(super) name: String,
    /// The `exec` question (the decision point binds it to the credential's agent).
    pub(super) ask: Ask,
    /// The loader variables in the environment: left out of `env`, each decided on its own.
    pub(super) loader: Vec<String>,
}

/// The evaluation request for running `program` with `rest`.
pub(super) fn build_request(program: &OsStr, rest: &[OsString]) -> Result<CommandRequest, Stop> {
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
pub(super) struct ParsedArgs {
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
pub(super) fn parse_argv(args: &[String]) -> ParsedArgs {
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
pub(super) fn enforcement_point() -> String {
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
