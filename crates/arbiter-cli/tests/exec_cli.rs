//! `arbiter exec`, the command guard, with real programs: allowed commands run and keep their
//! output, exit codes and signals; denied ones never start; every failure is fail closed;
//! decisions are recorded under `exec:<host>` with the agent's credential and the environment's
//! names but never its values. Local mode (in-process decision point) and remote mode (a served
//! one) both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arbiter_testkit::{Arbiter, Scratch, Served, approval_id, decision_id, http, run_ok, text};
use serde_json::Value;

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

const POLICIES: &str = r#"
@id("git-allowed")
permit (principal is Agent, action == Action::"exec", resource == Command::"git");

@id("git-no-push")
@reason("agents never push")
@agent_reason("pushing is not allowed for agents")
forbid (principal, action == Action::"exec", resource == Command::"git")
when { context.subcommand like "push*" || context.argv.contains("push") };

@id("kubectl-read")
permit (principal is Agent, action == Action::"exec", resource == Command::"kubectl")
when { context.subcommand like "get*" };

@id("kubectl-no-delete")
@agent_reason("deleting cluster resources is not allowed for agents")
forbid (principal, action == Action::"exec", resource == Command::"kubectl")
when { context.subcommand like "delete*" };

@id("tools")
permit (principal is Agent, action == Action::"exec", resource)
when { ["sh", "yes", "no-such-program-arbiter-test", "not-executable"].contains(resource.program) };

@id("sh-keeps-library-path")
permit (principal is Agent, action == Action::"exec_keep_env", resource == Command::"sh")
when { context.variable == "LD_LIBRARY_PATH" };
"#;

const KUBECTL: &str = "#!/bin/sh\n\
echo \"kubectl stub: $*\"\n\
if [ -n \"$KUBECTL_MARKER\" ]; then touch \"$KUBECTL_MARKER\"; fi\n\
exit 3\n";

fn arbiter() -> Command {
    let mut c = ARBITER.command();
    // Loader variables the test runner itself sets (cargo sets `LD_LIBRARY_PATH`): the tests
    // that are about them set their own.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("LD_") || k.starts_with("DYLD_") {
            c.env_remove(&*k);
        }
    }
    c
}

/// A policy directory, a data directory with agent `coder` and its key, a stub `kubectl`.
struct Env {
    tmp: Scratch,
    key: String,
    key_id: String,
}

impl Env {
    fn new() -> Self {
        let tmp = Scratch::new();
        tmp.write("policies/exec.cedar", POLICIES);
        let kubectl = tmp.write("bin/kubectl", KUBECTL);
        tmp.write("bin/not-executable", "#!/bin/sh\ntrue\n");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let issued = ARBITER.agent_with_key(&tmp.data(), "coder", "dev@example.com", &[]);
        Self {
            key: issued.key,
            key_id: issued.id,
            tmp,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.join(p)
    }

    fn data(&self) -> PathBuf {
        self.tmp.data()
    }

    /// `arbiter exec --policies … --data … -- cmd` with the agent's key.
    fn local(&self, cmd: &[&str]) -> Command {
        let mut c = arbiter();
        c.arg("exec")
            .arg("--policies")
            .arg(self.path("policies"))
            .arg("--data")
            .arg(self.data())
            .arg("--")
            .args(cmd)
            .env("ARBITER_AGENT_KEY", &self.key);
        c
    }

    fn remote(&self, port: u16, cmd: &[&str]) -> Command {
        let mut c = arbiter();
        c.args(["exec", "--pdp", &format!("http://127.0.0.1:{port}"), "--"])
            .args(cmd)
            .env("ARBITER_AGENT_KEY", &self.key);
        c
    }

    fn kubectl(&self) -> String {
        self.path("bin/kubectl").to_str().unwrap().to_owned()
    }

    /// Every record in the decision log, as JSON.
    fn records(&self) -> Vec<Value> {
        ARBITER.records(&self.data())
    }

    fn record(&self, decision_id: &str) -> Value {
        ARBITER.record(&self.data(), decision_id)
    }
}

fn git(dir: &Path, args: &[&str]) -> Output {
    run_ok(
        Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("LC_ALL", "C"),
    )
}

/// A repository with one commit and an empty bare remote `origin`.
fn repo(env: &Env) -> (PathBuf, PathBuf) {
    let work = env.path("repo");
    let remote = env.path("remote.git");
    std::fs::create_dir(&work).unwrap();
    git(env.tmp.path(), &["init", "--bare", "-q", "remote.git"]);
    git(&work, &["init", "-q"]);
    git(&work, &["commit", "-q", "--allow-empty", "-m", "first"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    (work, remote)
}

fn remote_refs(remote: &Path) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(remote)
        .args(["for-each-ref"])
        .output()
        .unwrap();
    text(&out.stdout)
}

// ---- local mode -------------------------------------------------------------------------

#[test]
fn local_allowed_git_status_runs_and_prints() {
    let env = Env::new();
    let (work, _) = repo(&env);
    let out = env
        .local(&["git", "status"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("On branch main"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(text(&out.stderr), "");
    // Recorded as an allow under exec:<host>, attributed to the key.
    let records = env.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["outcome"], "allow");
    assert_eq!(r["action"], "exec");
    assert_eq!(r["subject"]["agent_id"], "coder");
    assert_eq!(r["subject"]["credential_id"], env.key_id.as_str());
    assert!(
        r["enforcement_point"]
            .as_str()
            .unwrap()
            .starts_with("exec:"),
        "{r}"
    );
    assert_eq!(r["context"]["subcommand"], "status");
    assert_eq!(
        r["context"]["cwd"],
        work.canonicalize().unwrap().to_str().unwrap()
    );
}

#[test]
fn local_denied_git_push_never_runs() {
    let env = Env::new();
    let (work, remote) = repo(&env);
    let out = env
        .local(&["git", "push", "origin", "HEAD:main"])
        .current_dir(&work)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.starts_with(
            "arbiter exec: denied by Arbiter: pushing is not allowed for agents (decision "
        ),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout), "");
    assert_eq!(remote_refs(&remote), "", "git push ran");
    let id = decision_id(&stderr);
    let r = env.record(&id);
    assert_eq!(r["outcome"], "deny");
    assert_eq!(
        r["determining_policies"],
        serde_json::json!(["git-no-push"])
    );
    assert_eq!(r["context"]["subcommand"], "push origin HEAD:main");
    // The same push, run directly, does reach the remote: the check above is meaningful.
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    assert!(remote_refs(&remote).contains("refs/heads/main"));
}

#[test]
fn local_kubectl_stub_denied_and_allowed_with_its_exit_code() {
    let env = Env::new();
    let marker = env.path("kubectl-ran");
    let out = env
        .local(&[&env.kubectl(), "delete", "pod", "web", "-n", "prod"])
        .env("KUBECTL_MARKER", &marker)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.contains(
            "denied by Arbiter: deleting cluster resources is not allowed for agents (decision "
        ),
        "{stderr}"
    );
    assert!(!marker.exists(), "kubectl ran");

    // Allowed, found on PATH: its output and its exit code (3) pass through.
    let path = format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = env
        .local(&["kubectl", "get", "pods", "-n", "prod"])
        .env("PATH", &path)
        .env("KUBECTL_MARKER", &marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "kubectl stub: get pods -n prod\n");
    assert!(marker.exists());
    let allowed = env
        .records()
        .into_iter()
        .find(|r| r["outcome"] == "allow")
        .unwrap();
    assert_eq!(allowed["resource"]["id"], "kubectl");
    assert_eq!(allowed["context"]["subcommand"], "get pods");
    assert_eq!(allowed["context"]["flags"], serde_json::json!(["-n"]));
    assert_eq!(
        allowed["context"]["argv"],
        serde_json::json!(["get", "pods", "-n", "prod"])
    );
}

#[test]
fn local_signals_pass_through() {
    let env = Env::new();
    let out = env.local(&["sh", "-c", "kill -TERM $$"]).output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(15),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), None);

    // A program writing to a closed pipe dies of SIGPIPE, as it would when run directly.
    let mut child = env
        .local(&["yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"y\ny\n");
    drop(stdout);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(13), "{status:?}");
}

#[test]
fn local_missing_key_is_refused_before_asking() {
    let env = Env::new();
    let marker = env.path("ran");
    let out = env
        .local(&["sh", "-c", &format!("touch {}", marker.display())])
        .env_remove("ARBITER_AGENT_KEY")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.starts_with("arbiter exec: denied by Arbiter: ARBITER_AGENT_KEY is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("not running sh (fail closed)"), "{stderr}");
    assert!(!marker.exists());
    // An empty value is no key either.
    let out = env
        .local(&["sh", "-c", &format!("touch {}", marker.display())])
        .env("ARBITER_AGENT_KEY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    assert!(!marker.exists());
}

#[test]
fn local_revoked_and_unknown_keys_are_denied_and_recorded() {
    let env = Env::new();
    let marker = env.path("ran");
    let touch = format!("touch {}", marker.display());
    assert_eq!(
        env.local(&["sh", "-c", "true"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    run_ok(
        arbiter()
            .args([
                "agent",
                "key",
                "revoke",
                "coder",
                &env.key_id,
                "--reason",
                "leaked",
            ])
            .arg("--data")
            .arg(env.data()),
    );
    let out = env.local(&["sh", "-c", &touch]).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.contains("denied by Arbiter: the credential was not accepted (decision "),
        "{stderr}"
    );
    assert!(!marker.exists());
    let r = env.record(&decision_id(&stderr));
    assert_eq!(r["outcome"], "deny");
    assert_eq!(r["subject"]["credential_id"], env.key_id.as_str());
    assert!(
        r["reason_admin"].as_str().unwrap().contains("revoked"),
        "{r}"
    );
    // A key Arbiter never issued: denied the same way.
    let out = env
        .local(&["sh", "-c", &touch])
        .env("ARBITER_AGENT_KEY", "not-a-key")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(!marker.exists());
    // The key is not passed on to the program it guards.
    let env2 = Env::new();
    let out = env2
        .local(&["sh", "-c", "echo \"key=${ARBITER_AGENT_KEY:-unset}\""])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "key=unset\n");
}

#[test]
fn local_not_found_and_not_executable_after_an_allow() {
    let env = Env::new();
    let out = env
        .local(&["no-such-program-arbiter-test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("allowed, but cannot run"));
    let out = env
        .local(&[env.path("bin/not-executable").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("allowed, but cannot run"));
}

#[test]
fn usage_errors_and_non_utf8_arguments_fail_closed() {
    let env = Env::new();
    let marker = env.path("ran");
    let touch = format!("touch {}", marker.display());
    let run = |c: &mut Command| {
        let out = c.env("ARBITER_AGENT_KEY", &env.key).output().unwrap();
        (out.status.code(), text(&out.stderr))
    };
    // Neither mode.
    let (code, stderr) = run(arbiter().args(["exec", "--", "sh", "-c", &touch]));
    assert_eq!(code, Some(125), "{stderr}");
    assert!(
        stderr.contains("--pdp") && stderr.contains("--policies"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("not running sh (fail closed)\n"),
        "{stderr}"
    );
    // Both modes.
    let (code, stderr) = run(arbiter()
        .args(["exec", "--pdp", "http://127.0.0.1:1", "--policies"])
        .arg(env.path("policies"))
        .args(["--", "sh", "-c", &touch]));
    assert_eq!(code, Some(125), "{stderr}");
    assert!(stderr.contains("not both"), "{stderr}");
    // No program; an unknown option.
    let (code, stderr) = run(arbiter().args(["exec", "--pdp", "http://127.0.0.1:1"]));
    assert_eq!(code, Some(125), "{stderr}");
    assert!(stderr.contains("no program given"), "{stderr}");
    let (code, stderr) = run(arbiter().args(["exec", "--bogus", "--", "sh", "-c", &touch]));
    assert_eq!(code, Some(125), "{stderr}");
    assert!(stderr.contains("unknown option `--bogus`"), "{stderr}");
    // Errors of the argument parser itself: 125 too, never the program's exit code 2.
    let (code, stderr) =
        run(arbiter().args(["exec", "--timeout-ms", "x", "--", "sh", "-c", &touch]));
    assert_eq!(code, Some(125), "{stderr}");
    assert!(stderr.contains("--timeout-ms"), "{stderr}");
    // Policies that do not load.
    let (code, stderr) = run(arbiter()
        .args(["exec", "--policies"])
        .arg(env.path("nowhere"))
        .arg("--data")
        .arg(env.data())
        .args(["--", "sh", "-c", &touch]));
    assert_eq!(code, Some(125), "{stderr}");
    assert!(!marker.exists());
    // An argument a policy cannot see.
    use std::os::unix::ffi::OsStrExt;
    let out = env
        .local(&["sh", "-c", &touch])
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("argument 3 is not valid UTF-8"), "{stderr}");
    assert!(!marker.exists());
    // The program's own options after the program are its own.
    let out = env
        .local(&["sh", "-c", "echo $0 $1", "--help", "-x"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "--help -x\n", "{}", text(&out.stderr));
}

#[test]
fn local_concurrent_guards_keep_the_log_sound() {
    let env = Env::new();
    let children: Vec<Child> = (0..8)
        .map(|i| {
            env.local(&["sh", "-c", &format!("exit {i}")])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(i32::try_from(i).unwrap()),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(env.records().len(), 8);
    run_ok(arbiter().args(["log", "verify", "--data"]).arg(env.data()));
}

/// With the vocabulary as schema, the guard's requests validate: allows and forbids work as
/// written (a request that did not conform would be a deny "could not be evaluated").
#[test]
fn local_requests_conform_to_the_vocabulary_schema() {
    let env = Env::new();
    let dir = env.path("schema-policies");
    std::fs::create_dir(&dir).unwrap();
    let schema = run_ok(arbiter().args(["policy", "schema"])).stdout;
    std::fs::write(dir.join("schema.cedarschema"), schema).unwrap();
    std::fs::write(
        dir.join("exec.cedar"),
        r#"
@id("kubectl-read")
permit (principal is Agent, action == Action::"exec", resource == Command::"kubectl")
when { context has subcommand && context.subcommand like "get*" &&
       context has env && context has cwd && context has flags && context has flag_values &&
       resource.program == "kubectl" && principal has owner && principal.owner == "dev@example.com" };

@id("kubectl-no-delete")
@agent_reason("deleting cluster resources is not allowed for agents")
forbid (principal, action == Action::"exec", resource == Command::"kubectl")
when { context has argv && context.argv.contains("delete") };
"#,
    )
    .unwrap();
    run_ok(arbiter().args(["policy", "validate"]).arg(&dir));
    let run = |args: &[&str]| {
        let mut cmd = arbiter();
        cmd.arg("exec")
            .arg("--policies")
            .arg(&dir)
            .arg("--data")
            .arg(env.data())
            .arg("--")
            .arg(env.kubectl())
            .args(args)
            .env("ARBITER_AGENT_KEY", &env.key);
        cmd.output().unwrap()
    };
    let out = run(&["get", "pods", "--namespace=prod"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = run(&["-n", "prod", "delete", "pod", "web"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("deleting cluster resources"), "{stderr}");
}

/// The `git-read` example of docs/exec.md, as written there, with the vocabulary as schema:
/// plain read-only subcommands run; the ways `git status`/`log` run programs or write files
/// (configuration from flags or the environment, `--output`) are denied.
#[test]
fn docs_git_example_refuses_config_injection_and_output_files() {
    let env = Env::new();
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/exec.md"))
            .unwrap();
    let start = docs
        .find("@id(\"git-read\")")
        .expect("the git example in docs/exec.md");
    let end = start + docs[start..].find("```").unwrap();
    let dir = env.path("git-policies");
    std::fs::create_dir(&dir).unwrap();
    let schema = run_ok(arbiter().args(["policy", "schema"])).stdout;
    std::fs::write(dir.join("schema.cedarschema"), schema).unwrap();
    std::fs::write(dir.join("git.cedar"), &docs[start..end]).unwrap();
    run_ok(arbiter().args(["policy", "validate"]).arg(&dir));
    let git = env.path("bin/git");
    std::fs::write(&git, "#!/bin/sh\necho \"git stub: $*\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str], extra_env: &[(&str, &str)]| {
        let mut cmd = arbiter();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", env.path(""))
            .env("LC_ALL", "C")
            .env("ARBITER_AGENT_KEY", &env.key)
            .envs(extra_env.iter().copied())
            .arg("exec")
            .arg("--policies")
            .arg(&dir)
            .arg("--data")
            .arg(env.data())
            .arg("--")
            .arg(&git)
            .args(args);
        cmd.output().unwrap()
    };
    for args in [
        &["status"][..],
        &["log", "--oneline", "-n", "5"],
        &["--no-pager", "diff"],
    ] {
        let out = run(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("git stub:"));
    }
    for (args, extra) in [
        (
            &["-c", "core.fsmonitor=touch /tmp/pwned", "status"][..],
            &[][..],
        ),
        (
            &["--config-env=core.fsmonitor=EVIL", "status"],
            &[("EVIL", "sh")],
        ),
        (&["log", "--output=/tmp/arbiter-git-output"], &[]),
        (&["-C", "/etc", "status"], &[]),
        (
            &["status"],
            &[
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "core.fsmonitor"),
                ("GIT_CONFIG_VALUE_0", "sh"),
            ],
        ),
        (
            &["status"],
            &[("GIT_CONFIG_PARAMETERS", "'core.fsmonitor'='sh'")],
        ),
        (&["log"], &[("GIT_PAGER", "sh -c id")]),
    ] {
        let out = run(args, extra);
        assert_eq!(
            out.status.code(),
            Some(126),
            "{args:?} {extra:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).is_empty(), "{args:?}: git ran");
    }
}

/// Prints the loader variables the program got.
const SHOW_LOADER_ENV: &str = "echo \"lib=${LD_LIBRARY_PATH-unset} bind=${LD_BIND_NOW-unset} \
     dyld=${DYLD_INSERT_LIBRARIES-unset}\"";

/// Runs `sh` through the guard with three loader variables, only one of which a policy lets
/// the program keep; checks what it got and that each was decided.
fn loader_variables_need_a_policy(env: &Env, mut cmd: Command) {
    let out = cmd
        .env("LD_LIBRARY_PATH", "/nonexistent-arbiter-test")
        .env("LD_BIND_NOW", "1")
        .env("DYLD_INSERT_LIBRARIES", "/tmp/x.dylib")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        "lib=/nonexistent-arbiter-test bind=unset dyld=unset\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("removed LD_BIND_NOW from the program's environment"),
        "{stderr}"
    );
    assert!(
        stderr.contains("removed DYLD_INSERT_LIBRARIES from the program's environment"),
        "{stderr}"
    );
    let records = env.records();
    let keep: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "exec_keep_env")
        .collect();
    assert_eq!(keep.len(), 3, "{records:#?}");
    let exec = records
        .iter()
        .find(|r| r["action"] == "exec")
        .expect("the exec decision");
    let names = exec["context"]["env"].as_array().unwrap();
    assert!(
        !names.iter().any(|n| n.as_str().unwrap().starts_with("LD_")),
        "loader variables are decided apart: {names:?}"
    );
    assert!(keep.iter().all(|r| r["resource"]["id"] == "sh"));
    let kept: Vec<&str> = keep
        .iter()
        .filter(|r| r["outcome"] == "allow")
        .map(|r| r["context"]["variable"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["LD_LIBRARY_PATH"]);
}

#[test]
fn local_loader_variables_are_removed_unless_a_policy_keeps_them() {
    let env = Env::new();
    let cmd = env.local(&["sh", "-c", SHOW_LOADER_ENV]);
    loader_variables_need_a_policy(&env, cmd);
}

#[test]
fn remote_loader_variables_are_removed_unless_a_policy_keeps_them() {
    let env = Env::new();
    let served = serve(&env);
    let port = served.port;
    let cmd = env.remote(port, &["sh", "-c", SHOW_LOADER_ENV]);
    loader_variables_need_a_policy(&env, cmd);
}

// ---- remote mode ------------------------------------------------------------------------

/// `arbiter serve` on the environment's policies and data, ready.
fn serve(env: &Env) -> Served {
    ARBITER.serve(&env.path("policies"), &env.data(), &[])
}

#[test]
fn remote_allowed_and_denied_are_recorded_under_exec() {
    let env = Env::new();
    let served = serve(&env);
    let port = served.port;
    let marker = env.path("kubectl-ran");

    let out = env
        .remote(port, &[&env.kubectl(), "get", "pods", "--namespace=prod"])
        .env("MY_TOKEN", "supersecret123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "kubectl stub: get pods --namespace=prod\n"
    );

    let out = env
        .remote(port, &[&env.kubectl(), "delete", "pod", "web"])
        .env("MY_TOKEN", "supersecret123")
        .env("KUBECTL_MARKER", &marker)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.starts_with(
            "arbiter exec: denied by Arbiter: deleting cluster resources is not allowed for agents (decision "
        ),
        "{stderr}"
    );
    assert!(!marker.exists(), "kubectl ran");
    let denied_id = decision_id(&stderr);

    let log = run_ok(arbiter().args(["log", "query", "--data"]).arg(env.data()));
    let raw = text(&log.stdout);
    assert!(
        !raw.contains("supersecret123"),
        "an environment value reached the log"
    );
    assert!(!raw.contains(&env.key), "the key reached the log");
    let records: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{raw}");
    for r in &records {
        assert!(
            r["enforcement_point"]
                .as_str()
                .unwrap()
                .starts_with("exec:"),
            "{r}"
        );
        assert_eq!(r["subject"]["credential_id"], env.key_id.as_str());
        assert_eq!(r["subject"]["agent_id"], "coder");
        assert_eq!(r["resource"]["id"], "kubectl");
        let names = r["context"]["env"].as_array().unwrap();
        assert!(names.iter().any(|n| n == "MY_TOKEN"), "{r}");
        assert!(!names.iter().any(|n| n == "ARBITER_AGENT_KEY"), "{r}");
    }
    assert_eq!(records[0]["outcome"], "allow");
    assert_eq!(records[0]["context"]["subcommand"], "get pods");
    assert_eq!(
        records[0]["context"]["flag_values"],
        serde_json::json!(["--namespace=prod"])
    );
    assert_eq!(records[1]["decision_id"], denied_id.as_str());
    assert_eq!(records[1]["context"]["subcommand"], "delete pod web");

    // The same record through the API, with an auditor token.
    let token: Value = serde_json::from_slice(
        &run_ok(
            arbiter()
                .args([
                    "admin", "token", "create", "--name", "soc", "--role", "auditor", "--json",
                ])
                .arg("--data")
                .arg(env.data()),
        )
        .stdout,
    )
    .unwrap();
    let token = token["token"].as_str().unwrap();
    let reply = http(
        port,
        "GET",
        format!("/v1/decisions/{denied_id}"),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert!(
        reply.body.contains("\"enforcement_point\":\"exec:"),
        "{}",
        reply.raw
    );

    // A revoked key is denied by the served decision point on the next request.
    run_ok(
        arbiter()
            .args(["agent", "key", "revoke", "coder", &env.key_id])
            .arg("--data")
            .arg(env.data()),
    );
    let out = env
        .remote(port, &[&env.kubectl(), "get", "pods"])
        .env("KUBECTL_MARKER", &marker)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.contains("the credential was not accepted"),
        "{stderr}"
    );
    assert!(!marker.exists());
}

#[test]
fn remote_git_status_and_push() {
    let env = Env::new();
    let (work, remote) = repo(&env);
    let served = serve(&env);
    let port = served.port;
    let out = env
        .remote(port, &["git", "status", "--short", "--branch"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "## main\n");
    let out = env
        .remote(port, &["git", "-c", "x.y=z", "push", "origin", "HEAD:main"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(remote_refs(&remote), "");
}

#[test]
fn remote_unreachable_decision_point_fails_closed() {
    let env = Env::new();
    let marker = env.path("ran");
    let closed = arbiter_testkit::ClosedPort::new();
    let out = env
        .remote(
            closed.addr().port(),
            &["sh", "-c", &format!("touch {}", marker.display())],
        )
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    assert!(
        stderr.ends_with("; not running sh (fail closed)\n"),
        "{stderr}"
    );
    assert!(!marker.exists());
}

/// A one-connection HTTP server that answers `reply` (or nothing, when `None`, holding the
/// connection open until the client hangs up) and hands back the request it got.
fn fake_pdp(reply: Option<&'static str>) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let t = String::from_utf8_lossy(&got).to_lowercase();
            if let Some(end) = t.find("\r\n\r\n") {
                let len = t
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        match reply {
            Some(body) => {
                let _ = s.write_all(body.as_bytes());
            }
            None => {
                // A decision point that never answers: the client must give up on its own.
                let _ = s.set_read_timeout(None);
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    (port, handle)
}

#[test]
fn remote_request_shape_and_bad_answers_fail_closed() {
    let env = Env::new();
    let marker = env.path("ran");
    let touch = format!("touch {}", marker.display());
    let answer = |status: &str, body: &str| -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            answer("200 OK", r#"{"decision": "true"}"#),
            "without a boolean `decision`",
        ),
        (answer("200 OK", "allow"), "not JSON"),
        (
            answer(
                "503 Service Unavailable",
                r#"{"decision": false, "error": {"code": "decision_log_unavailable", "message": "disk full"}}"#,
            ),
            "answered 503: decision_log_unavailable: disk full",
        ),
        (answer("401 Unauthorized", "{}"), "answered 401"),
    ];
    for (reply, expected) in cases {
        let reply: &'static str = Box::leak(reply.into_boxed_str());
        let (port, server) = fake_pdp(Some(reply));
        let out = env.remote(port, &["sh", "-c", &touch]).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(!marker.exists());
        let request = server.join().unwrap();
        let lower = request.to_lowercase();
        assert!(
            request.starts_with("POST /access/v1/evaluations HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("Bearer {}", env.key)),
            "{request}"
        );
        assert!(
            lower.contains("content-type: application/json"),
            "{request}"
        );
        assert!(
            lower.contains("x-arbiter-enforcement-point: exec:"),
            "{request}"
        );
        let batch: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(batch["evaluations"].as_array().map(Vec::len), Some(1));
        let body = &batch["evaluations"][0];
        assert!(body.get("subject").is_none());
        assert_eq!(body["action"]["name"], "exec");
        assert_eq!(body["resource"]["type"], "Command");
        assert_eq!(body["resource"]["properties"]["program"], "sh");
        // `-c` is a leading flag, so the command string starts the subcommand.
        assert_eq!(body["context"]["subcommand"], touch.as_str());
        assert_eq!(body["context"]["argv"], serde_json::json!(["-c", touch]));
        assert_eq!(body["context"]["flags"], serde_json::json!(["-c"]));
    }
    // Slow: no answer within --timeout-ms.
    let (port, _server) = fake_pdp(None);
    let started = Instant::now();
    let out = env
        .remote(port, &["sh", "-c", &touch])
        .env("ARBITER_EXEC_TIMEOUT_MS", "300")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("did not answer within 300 ms"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!marker.exists());
}

/// A rate limit and a session label reach `arbiter exec`: exit 126 with the reason and when
/// the limit resets; the session comes from `ARBITER_SESSION`; a malformed one is refused
/// before asking.
#[test]
fn local_limits_and_session_labels_surface_as_exit_126() {
    let env = Env::new();
    env.tmp.write(
        "policies/runtime.cedar",
        r#"
@id("date-twice")
@limit("2/hour")
permit (principal is Agent, action == Action::"exec", resource == Command::"date");

@id("curl-is-untrusted")
@session_label("untrusted_input")
permit (principal is Agent, action == Action::"exec", resource == Command::"true");

@id("deploy-needs-approval")
@require_approval
permit (principal is Agent, action == Action::"exec", resource == Command::"env");

@id("no-rm-after-untrusted")
@agent_reason("no deletions after untrusted input in this session")
forbid (principal, action == Action::"exec", resource == Command::"sh")
when { context.session.labels.contains("untrusted_input") };
"#,
    );
    let run = |cmd: &[&str], session: Option<&str>| {
        let mut c = env.local(cmd);
        match session {
            Some(s) => c.env("ARBITER_SESSION", s),
            None => c.env_remove("ARBITER_SESSION"),
        };
        let out = c.output().unwrap();
        (out.status.code(), text(&out.stderr))
    };
    assert_eq!(run(&["date"], None).0, Some(0));
    assert_eq!(run(&["date"], Some("s1")).0, Some(0));
    let (code, stderr) = run(&["date"], Some("s2"));
    assert_eq!(code, Some(126), "{stderr}");
    assert!(
        stderr.contains("denied by Arbiter: rate limit reached; retry in"),
        "{stderr}"
    );
    assert!(stderr.contains("(decision "), "{stderr}");

    assert_eq!(run(&["sh", "-c", "exit 0"], Some("s1")).0, Some(0));
    assert_eq!(run(&["true"], Some("s1")).0, Some(0));
    let (code, stderr) = run(&["sh", "-c", "exit 0"], Some("s1"));
    assert_eq!(code, Some(126), "{stderr}");
    assert!(
        stderr.contains("no deletions after untrusted input"),
        "{stderr}"
    );
    assert_eq!(run(&["sh", "-c", "exit 0"], Some("s2")).0, Some(0));

    // A command that needs a person's approval: exit 126 naming the approval; approved,
    // the identical command runs once.
    let (code, stderr) = run(&["env", "-0"], None);
    assert_eq!(code, Some(126), "{stderr}");
    assert!(
        stderr.contains("approval required: approval apr_"),
        "{stderr}"
    );
    ARBITER.approve(&env.data(), &approval_id(&stderr), "ops@example.com");
    assert_eq!(run(&["env", "-0"], None).0, Some(0));
    assert_eq!(run(&["env", "-0"], None).0, Some(126));

    let (code, stderr) = run(&["date"], Some("two words"));
    assert_eq!(code, Some(126), "{stderr}");
    assert!(stderr.contains("ARBITER_SESSION must be"), "{stderr}");
}
