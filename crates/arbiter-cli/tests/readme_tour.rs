//! The README's tour, run as written: the first command (`serve` on the quickstart) and every
//! code block of "A five-minute tour", in order, against the built `arbiter` binary, in a
//! temporary directory laid out like a fresh clone (the repository's `examples/`, committed to
//! a new git repository). What the README shows is what is checked, so the two cannot drift.
//!
//! How the README is read:
//!
//! - `sh` blocks run in **one** bash session (variables and functions carry from block to
//!   block, as in a terminal), one command at a time: a command is a line, with what follows
//!   until the text is a complete shell command (`bash -n`), so `\` continuations and quoted
//!   text spanning lines belong to it.
//! - The `#` lines right under a command (no blank line between) are what it prints: standard
//!   output and error together, compared line by line after trailing blanks, with `…` standing
//!   for any text. `#` lines after a blank line, and comments at the end of a line, are notes.
//! - A command whose output is not shown must succeed, unless the next command is `echo $?`
//!   (which shows its exit code).
//! - The first command (`serve`) runs in the background, as does a command ending in `&`; the
//!   session goes on once the address it listens on (`--listen`) accepts connections.
//! - A `json` block right after an `sh` block is the answer of that block's last command,
//!   compared as JSON (`…` in a string stands for any text). A `json` block with
//!   `mcpServers` is an MCP client's configuration: the MCP Python SDK's client
//!   (`tests/mcp/client.py`) starts that server, lists its tools, reads the handbook and tries
//!   `docs/internal/`, as the README describes; the next `json` block must be the tool result
//!   of that denied read.
//! - A `cedar` block whose first line names a file (`// examples/quickstart/sql.cedar`) must
//!   appear in that file as it is.
//!
//! What is substituted, for this machine, in commands and in the outputs shown alike: the
//! built binary for `cargo run --release -p arbiter-cli --` (and on `PATH`, as `cargo
//! install` would put it); free ports for 8180 (`serve` is given `--listen`) and 6432;
//! `ARBITER_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) for
//! `postgres://postgres@127.0.0.1:5432`; a database name of its own for `shop` (also in the
//! copied policies). In the MCP configuration: the clone's directory for `/path/to/arbiter`,
//! the installed reference server (`scripts/test-deps`) for `npx -y
//! @modelcontextprotocol/server-filesystem`, and the session's `$KEY` for `arb_…`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arbiter_testkit::copy_dir;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELLIPSIS: &str = "…";
/// The longest one command of the tour may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_arbiter"))
}

/// Where `scripts/test-deps` installed the MCP servers and the Python SDK.
fn test_env() -> PathBuf {
    let dir = std::env::var_os("ARBITER_TEST_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".test-env"));
    assert!(
        dir.join("venv/bin/python").exists()
            && dir
                .join("node/node_modules/.bin/mcp-server-filesystem")
                .exists(),
        "the MCP test servers and client are not installed in `{}`: run `scripts/test` (or \
         `scripts/test-deps`)",
        dir.display()
    );
    dir
}

fn postgres_url() -> String {
    std::env::var("ARBITER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until `addr` accepts connections.
fn wait_for(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Reading the README

#[derive(Debug, Clone)]
struct Block {
    lang: String,
    text: String,
    /// 1-based line of the opening fence, for messages.
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match &mut current {
            None => {
                if let Some(lang) = line.strip_prefix("```") {
                    current = Some(Block {
                        lang: lang.trim().to_owned(),
                        text: String::new(),
                        line: i + 1,
                    });
                }
            }
            Some(b) => {
                if line.trim_end() == "```" {
                    out.push(current.take().unwrap());
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "README.md: a code block is not closed");
    out
}

/// The README's first command (serving the quickstart) and the tour's blocks.
fn tour(readme: &str) -> (Block, Vec<Block>) {
    let all = blocks(readme);
    let first = all
        .iter()
        .find(|b| b.lang == "sh")
        .expect("README.md has no sh block")
        .clone();
    assert!(
        first.text.contains("serve --policies examples/quickstart"),
        "the README's first command should serve the quickstart: {}",
        first.text
    );
    let start = readme
        .find("\n## A five-minute tour")
        .expect("README.md has no tour");
    let end = readme[start..]
        .find("\n## Where to read on")
        .map_or(readme.len(), |e| start + e);
    let section = blocks(&readme[start..end]);
    assert!(section.len() > 10, "the tour has too few blocks");
    (first, section)
}

#[derive(Debug, Clone)]
struct Step {
    command: String,
    /// The output shown under the command, if any.
    expected: Option<String>,
    line: usize,
}

fn complete(shell_text: &str) -> bool {
    // `bash -n` takes a `\` at the very end as the end of the text.
    !shell_text.ends_with('\\')
        && Command::new("bash")
            .args(["-n", "-c", shell_text])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
}

/// The commands of an `sh` block, each with the output shown under it.
fn steps(block: &Block) -> Vec<Step> {
    // (command, shown lines, line)
    let mut steps: Vec<(String, Vec<String>, usize)> = Vec::new();
    let mut pending: Option<(String, usize)> = None;
    // Whether the line before was a command or its output (so a `#` line is output).
    let mut after_command = false;
    for (i, line) in block.text.lines().enumerate() {
        let at = block.line + 1 + i;
        if let Some((text, start)) = &mut pending {
            text.push('\n');
            text.push_str(line);
            if complete(text) {
                steps.push((std::mem::take(text), Vec::new(), *start));
                pending = None;
                after_command = true;
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            after_command = false;
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            if after_command {
                let shown = comment.strip_prefix(' ').unwrap_or(comment);
                steps.last_mut().unwrap().1.push(shown.to_owned());
            }
        } else if complete(line) {
            steps.push((line.to_owned(), Vec::new(), at));
            after_command = true;
        } else {
            pending = Some((line.to_owned(), at));
        }
    }
    assert!(
        pending.is_none(),
        "README.md:{}: a command is not complete",
        block.line
    );
    steps
        .into_iter()
        .map(|(command, shown, line)| Step {
            command,
            expected: (!shown.is_empty()).then(|| shown.join("\n")),
            line,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Comparing

/// Trailing blanks of each line and blank lines around the text do not count.
fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').to_owned()
}

/// Whether `text` matches `pattern` as a whole, `…` standing for any text.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split(ELLIPSIS).collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `actual` is the JSON value `expected` shows: the same members and elements, a
/// string with `…` matching as [`glob`].
fn json_matches(expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) if glob(e, a) => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            let mut ek: Vec<&String> = e.keys().collect();
            let mut ak: Vec<&String> = a.keys().collect();
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("members {ek:?} shown, {ak:?} answered"));
            }
            for (k, v) in e {
                json_matches(v, &a[k]).map_err(|m| format!("`{k}`: {m}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                json_matches(x, y).map_err(|m| format!("[{i}]: {m}"))?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{expected} shown, {actual} answered")),
    }
}

// ---------------------------------------------------------------------------------------
// Substitutions

struct Machine {
    pdp_port: u16,
    sql_port: u16,
    /// The PostgreSQL URL without its database (`postgres://user@host:port`).
    postgres: String,
    database: String,
}

impl Machine {
    fn apply(&self, text: &str) -> String {
        let text = replace_at_once(
            text,
            &[
                (
                    "cargo run --release -p arbiter-cli --",
                    bin().display().to_string(),
                ),
                ("postgres://postgres@127.0.0.1:5432", self.postgres.clone()),
                ("8180", self.pdp_port.to_string()),
                ("6432", self.sql_port.to_string()),
            ],
        );
        rename_database(&text, &self.database)
    }
}

/// Replaces every pattern in one left-to-right pass, so that text put in by one
/// replacement (a free port such as 16432) is never matched by a later pattern. Earlier
/// patterns win where two start at the same place.
fn replace_at_once(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in pairs {
            if let Some(after) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[test]
fn substitution_does_not_rewrite_what_it_put_in() {
    let text = replace_at_once(
        "--listen 127.0.0.1:8180 and port 6432",
        &[("8180", "16432".into()), ("6432", "28180".into())],
    );
    assert_eq!(text, "--listen 127.0.0.1:16432 and port 28180");
}

/// `shop` → `name` where it is a word (the database, `shop.public.orders`), but not in the
/// seed file's name `shop.sql`.
fn rename_database(text: &str, name: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices("shop") {
        let after = &text[at + 4..];
        if !word(text[..at].chars().last())
            && !word(after.chars().next())
            && !after.starts_with(".sql")
        {
            out.push_str(&text[copied..at]);
            out.push_str(name);
            copied = at + 4;
        }
    }
    out.push_str(&text[copied..]);
    out
}

// ---------------------------------------------------------------------------------------
// The clone, the shell, the servers

/// Renames the database in the copied policies and tests (`Table::"shop.public.orders"`).
fn rename_in_examples(dir: &Path, name: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rename_in_examples(&path, name);
        } else if path
            .extension()
            .is_some_and(|e| e == "cedar" || e == "json")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, rename_database(&text, name)).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Tour", "-c", "user.email=tour@example.com"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The environment of a fresh terminal: the binary on `PATH`, a home of its own.
fn clean_env(cmd: &mut Command, home: &Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin().parent().unwrap().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    cmd.env_clear()
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("HOME", home)
        .env("LC_ALL", "C");
}

/// One bash session the tour's commands are typed into.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    done: mpsc::Receiver<i32>,
    outputs: PathBuf,
    count: usize,
}

impl Shell {
    fn start(clone: &Path, home: &Path, outputs: &Path) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc"])
            .current_dir(clone)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so that whatever the tour leaves running is stopped.
            .process_group(0);
        clean_env(&mut cmd, home);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rc) = line.strip_prefix("__ARBITER_TOUR_DONE__ ")
                    && tx.send(rc.trim().parse().unwrap_or(-1)).is_err()
                {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            done,
            outputs: outputs.to_path_buf(),
            count: 0,
        }
    }

    /// Runs one command; returns its exit code and what it printed.
    fn run(&mut self, command: &str) -> (i32, String) {
        self.count += 1;
        let out = self.outputs.join(format!("{}.out", self.count));
        // `$?` is kept for the next command (`echo $?`).
        let script = format!(
            "{{ {command}\n}} >'{out}' 2>&1 </dev/null; __tour_rc=$?; printf '\\n__ARBITER_TOUR_DONE__ %s\\n' \"$__tour_rc\"; (exit $__tour_rc)\n",
            out = out.display()
        );
        self.stdin.write_all(script.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let rc = self
            .done
            .recv_timeout(COMMAND_TIMEOUT)
            .unwrap_or_else(|_| panic!("`{command}` did not finish within {COMMAND_TIMEOUT:?}"));
        (rc, std::fs::read_to_string(&out).unwrap_or_default())
    }

    /// The value of a shell variable.
    fn var(&mut self, name: &str) -> String {
        let (_, out) = self.run(&format!("printf '%s' \"${name}\""));
        out
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let pgid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Database {
    admin_url: String,
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.admin_url, "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// The address a server command listens on.
fn listen_address(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map(|w| w[1].to_owned())
        .unwrap_or_else(|| panic!("`{command}` runs in the background but says no --listen"))
}

// ---------------------------------------------------------------------------------------
// The MCP step

/// Runs the README's MCP client configuration with the SDK's client: the tools it lists,
/// the handbook read, and the denied read of `docs/internal/` (whose result is returned).
fn run_mcp_config(
    config: &Value,
    clone: &Path,
    home: &Path,
    key: &str,
    machine: &Machine,
) -> Value {
    let server = &config["mcpServers"]
        .as_object()
        .and_then(|s| s.values().next())
        .cloned()
        .expect("the MCP configuration names no server");
    assert_eq!(server["command"], "arbiter", "{server}");
    let clone_dir = clone.display().to_string();
    let mut args: Vec<String> = Vec::new();
    let given: Vec<String> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            machine
                .apply(a.as_str().unwrap())
                .replace("/path/to/arbiter", &clone_dir)
        })
        .collect();
    let mut i = 0;
    while i < given.len() {
        if given[i..].starts_with(&[
            "npx".to_owned(),
            "-y".to_owned(),
            "@modelcontextprotocol/server-filesystem".to_owned(),
        ]) {
            args.push(
                test_env()
                    .join("node/node_modules/.bin/mcp-server-filesystem")
                    .display()
                    .to_string(),
            );
            i += 3;
        } else {
            args.push(given[i].clone());
            i += 1;
        }
    }
    assert!(
        args.iter().any(|a| a == "--data"),
        "the MCP configuration must give the gateway `--data`: {args:?}"
    );
    let docs = PathBuf::from(args.last().unwrap());
    assert!(docs.is_dir(), "the filesystem server's directory: {docs:?}");
    let mut env = server["env"].as_object().cloned().unwrap_or_default();
    assert_eq!(env.get("ARBITER_AGENT_KEY"), Some(&json!("arb_…")));
    env.insert("ARBITER_AGENT_KEY".into(), json!(key));
    let script = json!({
        "transport": "stdio",
        "command": bin(),
        "args": args,
        "env": env,
        // An MCP client starts servers in a directory of its own, not in the clone.
        "cwd": home,
        "exclude_unset": true,
        "steps": [
            {"op": "list_tools"},
            {"op": "call_tool", "name": "read_text_file",
             "arguments": {"path": docs.join("handbook.md")}},
            {"op": "call_tool", "name": "read_text_file",
             "arguments": {"path": docs.join("internal/escalations.md")}},
        ],
    });
    let mut cmd = Command::new(test_env().join("venv/bin/python"));
    cmd.arg(repo().join("tests/mcp/client.py"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd, home);
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the MCP client printed no report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "the MCP session did not start: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = report["results"].as_array().unwrap();
    // "`tools/list` shows only the tools the agent may use: here `list_allowed_directories`,
    // `list_directory` and `read_text_file`".
    let mut names: Vec<&str> = results[0]["value"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list failed: {}", results[0]))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "list_allowed_directories",
            "list_directory",
            "read_text_file"
        ]
    );
    // "Reading `docs/handbook.md` works".
    let handbook = &results[1]["value"];
    assert_ne!(handbook["isError"], true, "{handbook}");
    assert!(
        handbook["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("# Support handbook")),
        "{handbook}"
    );
    results[2]["value"].clone()
}

// ---------------------------------------------------------------------------------------
// The tour

#[test]
fn the_readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let (first, tour) = tour(&readme);
    test_env();

    let base = postgres_url();
    let (postgres, admin_db) = base.rsplit_once('/').unwrap();
    let machine = Machine {
        pdp_port: free_port(),
        sql_port: free_port(),
        postgres: postgres.to_owned(),
        database: format!("arbiter_tour_{}", std::process::id()),
    };
    let reachable = Command::new("psql")
        .args(["-X", "-q", "-d", &base, "-c", "SELECT 1"])
        .output()
        .unwrap_or_else(|e| panic!("psql cannot run ({e}): the tour's SQL step needs it"));
    assert!(
        reachable.status.success(),
        "the tour's SQL step needs PostgreSQL at {base} (ARBITER_TEST_POSTGRES_URL): {}",
        String::from_utf8_lossy(&reachable.stderr)
    );
    assert!(
        !admin_db.is_empty(),
        "ARBITER_TEST_POSTGRES_URL names no database: {base}"
    );
    let _database = Database {
        admin_url: base.clone(),
        name: machine.database.clone(),
    };

    // A fresh clone: the examples, committed.
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("arbiter");
    let home = dir.path().join("home");
    let outputs = dir.path().join("outputs");
    for d in [&clone, &home, &outputs] {
        std::fs::create_dir_all(d).unwrap();
    }
    copy_dir(&repo().join("examples"), &clone.join("examples"));
    rename_in_examples(&clone.join("examples"), &machine.database);
    git(&clone, &["init", "-q"]);
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", "a fresh clone"]);

    // The first command: serve the quickstart (the tour runs beside it), on the tour's port.
    let serve = format!(
        "{} --listen 127.0.0.1:{}",
        machine.apply(first.text.trim()),
        machine.pdp_port
    );
    assert!(!first.text.contains("--listen"), "{}", first.text);
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("exec {serve}")])
        .current_dir(&clone)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap());
    clean_env(&mut cmd, &home);
    let mut serve_process = Server(cmd.spawn().unwrap());
    let addr = listen_address(&serve);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&addr).is_err() {
        if let Some(status) = serve_process.0.try_wait().unwrap() {
            panic!(
                "`{serve}` exited ({status}):\n{}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "serve did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut shell = Shell::start(&clone, &home, &outputs);
    let mut last_output: Option<(String, String)> = None;
    let mut mcp_denial: Option<Value> = None;
    let mut ran = 0;
    for block in &tour {
        let at = format!("README.md:{}", block.line);
        match block.lang.as_str() {
            "sh" => {
                let steps = steps(block);
                for (i, step) in steps.iter().enumerate() {
                    let command = machine.apply(&step.command);
                    let background = command.trim_end().ends_with('&');
                    assert!(
                        !command.trim_start().starts_with("arbiter serve"),
                        "README.md:{}: a second `serve` would clash with the tour's",
                        step.line
                    );
                    let (rc, output) = shell.run(&command);
                    ran += 1;
                    let shown_code = steps
                        .get(i + 1)
                        .is_some_and(|n| n.command.trim() == "echo $?");
                    match &step.expected {
                        Some(expected) => {
                            let expected = machine.apply(expected);
                            let (e, a) = (normalize(&expected), normalize(&output));
                            assert!(
                                glob(&e, &a),
                                "README.md:{}: `{}` printed\n{a}\n\nbut the README shows\n{e}",
                                step.line,
                                step.command
                            );
                        }
                        None => assert!(
                            rc == 0 || shown_code,
                            "README.md:{}: `{}` failed (exit {rc}):\n{output}",
                            step.line,
                            step.command
                        ),
                    }
                    if background {
                        wait_for(&listen_address(&command), &step.command);
                    }
                    last_output = Some((step.command.clone(), output));
                }
            }
            "json" => {
                let shown: Value = serde_json::from_str(&machine.apply(&block.text))
                    .unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
                if shown.get("mcpServers").is_some() {
                    let key = shell.var("KEY");
                    assert!(key.starts_with("arb_"), "{at}: no key in $KEY");
                    mcp_denial = Some(run_mcp_config(&shown, &clone, &home, &key, &machine));
                    ran += 1;
                } else if shown.get("isError").is_some() {
                    let denial = mcp_denial
                        .take()
                        .unwrap_or_else(|| panic!("{at}: a tool result, but no MCP session"));
                    json_matches(&shown, &denial).unwrap_or_else(|e| {
                        panic!(
                            "{at}: the gateway answered {denial}\nnot what the README shows: {e}"
                        )
                    });
                } else {
                    let (command, output) = last_output
                        .take()
                        .unwrap_or_else(|| panic!("{at}: an answer, but no command before it"));
                    let answer: Value = serde_json::from_str(&output).unwrap_or_else(|e| {
                        panic!("{at}: `{command}` did not answer JSON ({e}): {output}")
                    });
                    json_matches(&shown, &answer).unwrap_or_else(|e| {
                        panic!(
                            "{at}: `{command}` answered {answer}\nnot what the README shows: {e}"
                        )
                    });
                }
            }
            "cedar" => {
                let (first_line, rest) = block.text.split_once('\n').unwrap();
                let Some(file) = first_line.strip_prefix("// examples/") else {
                    continue;
                };
                let file = file.split_whitespace().next().unwrap();
                let source = std::fs::read_to_string(repo().join("examples").join(file))
                    .unwrap_or_else(|e| panic!("{at}: cannot read examples/{file}: {e}"));
                assert!(
                    source.contains(rest.trim_end()),
                    "{at}: the policies shown are not in examples/{file} as they are"
                );
            }
            _ => {}
        }
    }
    assert!(ran > 30, "only {ran} commands of the tour ran");
}

#[test]
fn the_tour_reader_splits_commands_and_outputs() {
    let block = Block {
        lang: "sh".into(),
        text: "# a note\necho a \\\n  b\n# a b\nf() { echo \\\n  'a\nb'; }\nf\n# a\n# b\n#\n# …\n\n# another note\nfalse   # a comment\necho $?\n# 1\n"
            .into(),
        line: 1,
    };
    let s = steps(&block);
    let shown: Vec<(&str, Option<&str>)> = s
        .iter()
        .map(|s| (s.command.as_str(), s.expected.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [
            ("echo a \\\n  b", Some("a b")),
            ("f() { echo \\\n  'a\nb'; }", None),
            ("f", Some("a\nb\n\n…")),
            ("false   # a comment", None),
            ("echo $?", Some("1")),
        ]
    );
    assert!(glob("{\"a\":…,\"b\":2}", "{\"a\":1,\"x\":3,\"b\":2}"));
    assert!(!glob("{\"a\":…,\"b\":2}", "{\"a\":1,\"b\":3}"));
    assert!(glob("…", ""));
    assert!(!glob("a…a", "a"));
    let shown = json!({"a": "x…", "b": [1, {"c": true}]});
    assert!(json_matches(&shown, &json!({"b": [1, {"c": true}], "a": "xyz"})).is_ok());
    assert!(json_matches(&shown, &json!({"a": "y", "b": [1, {"c": true}]})).is_err());
    assert!(json_matches(&shown, &json!({"a": "x", "b": [1, {"c": true}], "d": 1})).is_err());
    assert!(json_matches(&shown, &json!({"a": "x", "b": [1]})).is_err());
    assert_eq!(
        rename_database(
            "psql x/shop -f examples/quickstart/shop.sql; Table::\"shop.public.o\"; shopping",
            "db"
        ),
        "psql x/db -f examples/quickstart/shop.sql; Table::\"db.public.o\"; shopping"
    );
}
