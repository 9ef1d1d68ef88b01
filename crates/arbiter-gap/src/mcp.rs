//! MCP client configuration files: which MCP servers a client (Claude Desktop, Cursor,
//! VS Code, any client with an `mcpServers` object) starts or calls, and which of them run
//! behind `arbiter mcp`.
//!
//! Shapes read (the first that is present):
//!
//! - `{"mcpServers": {NAME: ENTRY}}` — Claude Desktop, Cursor, most clients;
//! - `{"servers": {NAME: ENTRY}}` — VS Code's `.vscode/mcp.json`;
//! - `{"mcp": {"servers": {NAME: ENTRY}}}` — VS Code's `settings.json`;
//!
//! where ENTRY is `{"command": PROGRAM, "args": [...], "env": {...}}` (a local server) or
//! `{"url": URL}` (a remote one). An entry whose command is `arbiter` (or a path ending in
//! `/arbiter`) with arguments `mcp stdio … --server-name NAME` or `mcp http …` is wrapped:
//! its tools are decided at enforcement point `mcp:NAME`. Any other entry is coarse.
//!
//! The files are untrusted: at most [`MAX_FILE_BYTES`], strict JSON (no duplicate names,
//! nesting at most [`MAX_DEPTH`]), at most [`MAX_SERVERS`] servers; an error names the file
//! and what is wrong, never its contents. JSON with comments (VS Code allows them) is refused
//! with that said. Secrets in `env` are never kept except `ARBITER_AGENT_KEY`, used only to
//! find the agent it belongs to and never printed.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use arbiter_store::{CredentialKind, Store};
use serde_json::{Map, Value};

use crate::error::GapError;
use crate::model::{Finding, FindingSource, State};

/// Largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Most servers in one file.
pub const MAX_SERVERS: usize = 1_000;
/// Most arguments of one server.
pub const MAX_ARGS: usize = 1_000;
/// Longest command line shown in a finding.
const MAX_SHOWN: usize = 1_000;

/// A configuration file, read.
#[derive(Debug, Clone)]
pub struct McpFile {
    /// The file.
    pub path: PathBuf,
    /// Its servers, in file order.
    pub servers: Vec<McpServer>,
}

/// One server of a configuration file.
#[derive(Clone)]
pub struct McpServer {
    /// Its name in the file.
    pub name: String,
    /// The program a local server runs.
    pub command: Option<String>,
    /// Its arguments.
    pub args: Vec<String>,
    /// The URL of a remote server.
    pub url: Option<String>,
    /// The gateway's `--server-name` when the entry runs `arbiter mcp`.
    pub wrapped_as: Option<String>,
    /// `env.ARBITER_AGENT_KEY`, only to find its agent (never printed: see `Debug`).
    agent_key: Option<String>,
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("url", &self.url)
            .field("wrapped_as", &self.wrapped_as)
            .field("agent_key", &self.agent_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Reads and parses the configuration file at `path`.
pub fn read_file(path: &Path) -> Result<McpFile, GapError> {
    let fail = |why: String| GapError::McpConfig {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open it: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "larger than {MAX_FILE_BYTES} bytes; not an MCP client configuration"
        )));
    }
    let servers = parse(&bytes).map_err(fail)?;
    Ok(McpFile {
        path: path.to_path_buf(),
        servers,
    })
}

/// Parses the bytes of a configuration file; the error says what is wrong (never quoting
/// the input).
pub fn parse(bytes: &[u8]) -> Result<Vec<McpServer>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let top = arbiter_types::strict::parse_strict_object(bytes, MAX_DEPTH).map_err(|e| {
        if has_comment(bytes) {
            format!("{e} (comments are not supported: remove them, or pass a copy without them)")
        } else {
            e.to_string()
        }
    })?;
    let servers = find_servers(&top).ok_or_else(|| {
        "no `mcpServers`, `servers` or `mcp.servers` object: not an MCP client configuration"
            .to_owned()
    })?;
    let Value::Object(servers) = servers else {
        return Err("the servers must be an object of NAME: {command, args, env} or {url}".into());
    };
    if servers.len() > MAX_SERVERS {
        return Err(format!(
            "{} servers; at most {MAX_SERVERS} are read",
            servers.len()
        ));
    }
    servers
        .iter()
        .map(|(name, entry)| server(name, entry))
        .collect()
}

fn find_servers(top: &Map<String, Value>) -> Option<&Value> {
    top.get("mcpServers")
        .or_else(|| top.get("servers"))
        .or_else(|| {
            top.get("mcp")
                .and_then(Value::as_object)
                .and_then(|m| m.get("servers").or_else(|| m.get("mcpServers")))
        })
}

/// Whether `bytes` seem to hold a `//` or `/* */` comment outside strings.
fn has_comment(bytes: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut prev = 0u8;
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if prev == b'/' && (b == b'/' || b == b'*') {
            return true;
        }
        prev = b;
    }
    false
}

fn server(name: &str, entry: &Value) -> Result<McpServer, String> {
    let shown = crate::declared::printable(name);
    let Value::Object(entry) = entry else {
        return Err(format!("server `{shown}` must be an object"));
    };
    let text = |field: &str| -> Result<Option<String>, String> {
        match entry.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("server `{shown}`: `{field}` must be a string")),
        }
    };
    let command = text("command")?;
    let url = text("url")?.or(text("serverUrl")?);
    let args = match entry.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_ARGS => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("server `{shown}`: every element of `args` must be a string")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(format!("server `{shown}`: more than {MAX_ARGS} arguments"));
        }
        Some(_) => {
            return Err(format!(
                "server `{shown}`: `args` must be an array of strings"
            ));
        }
    };
    let agent_key = match entry.get("env") {
        None | Some(Value::Null) => None,
        Some(Value::Object(env)) => match env.get("ARBITER_AGENT_KEY") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => {
                return Err(format!(
                    "server `{shown}`: `env.ARBITER_AGENT_KEY` must be a string"
                ));
            }
        },
        Some(_) => return Err(format!("server `{shown}`: `env` must be an object")),
    };
    if command.is_none() && url.is_none() {
        return Err(format!("server `{shown}` has neither `command` nor `url`"));
    }
    let wrapped_as = command.as_deref().and_then(|c| wrapped_name(c, &args));
    Ok(McpServer {
        name: name.to_owned(),
        command,
        args,
        url,
        wrapped_as,
        agent_key,
    })
}

/// Whether `program` is the `arbiter` binary.
fn is_arbiter(program: &str) -> bool {
    let base = program.rsplit(['/', '\\']).next().unwrap_or(program);
    base == "arbiter" || base.eq_ignore_ascii_case("arbiter.exe")
}

/// The `--server-name` of `arbiter … mcp stdio|http … --server-name NAME`, if that is what
/// `program args` runs.
pub fn wrapped_name(program: &str, args: &[String]) -> Option<String> {
    if !is_arbiter(program) {
        return None;
    }
    // The gateway's own arguments end at `--` (what follows is the wrapped server's).
    let own = args
        .iter()
        .position(|a| a == "--")
        .map_or(args, |end| args.get(..end).unwrap_or(args));
    let at = own
        .windows(2)
        .position(|w| matches!(w, [m, t] if m == "mcp" && (t == "stdio" || t == "http")))?;
    let rest = own.get(at + 2..)?;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--server-name" {
            return it.next().filter(|n| valid_server_name(n)).cloned();
        }
        if let Some(n) = a.strip_prefix("--server-name=") {
            return valid_server_name(n).then(|| n.to_owned());
        }
    }
    None
}

/// A gateway server name: letters, digits, `.`, `_`, `-`, 1 to 128.
fn valid_server_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `name` made a valid gateway server name (other characters become `-`).
pub(crate) fn server_name_for(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("server");
    }
    out
}

/// The agent a file belongs to: the owner of the `ARBITER_AGENT_KEY` of one of its wrapped
/// servers, found as the decision point authenticates a key (its credential id from the key,
/// then the stored hash compared in constant time). `None` when no key names a registered
/// agent.
pub fn attribute(file: &McpFile, store: Option<&dyn Store>) -> Option<String> {
    let store = store?;
    file.servers
        .iter()
        .filter_map(|s| s.agent_key.as_deref())
        .find_map(|key| {
            let presented = arbiter_identity::parse(key.trim()).ok()?;
            let credential = store.credential(&presented.credential_id).ok()??;
            (credential.kind == CredentialKind::AgentKey
                && arbiter_identity::verify(&presented, &credential.hash))
            .then_some(credential.agent_id)?
        })
}

/// The coarse finding of a server that is not wrapped.
pub(crate) fn finding(path: &Path, server: &McpServer, pdp_url: &str) -> Finding {
    let name = crate::declared::printable(&server.name);
    let gateway_name = server_name_for(&server.name);
    let sw = arbiter_pep::shell_word;
    let (detail, next_step) = match (&server.command, &server.url) {
        (Some(command), _) => {
            let original: Vec<String> = std::iter::once(command)
                .chain(&server.args)
                .map(|w| sw(w))
                .collect();
            let original = cut(&original.join(" "));
            (
                format!(
                    "MCP server `{name}` runs `{original}` directly: its tools are limited only \
                     by what that process's credentials allow"
                ),
                format!(
                    "wrap this server: arbiter mcp stdio --server-name {} --pdp {} -- {original}",
                    sw(&gateway_name),
                    sw(pdp_url)
                ),
            )
        }
        (None, Some(url)) => {
            let url = cut(url);
            (
                format!(
                    "MCP server `{name}` is called at `{url}` directly: its tools are limited \
                     only by the token the client sends"
                ),
                format!(
                    "put this server behind the gateway: arbiter mcp http --server-name {} \
                     --pdp {} --upstream {} --listen 127.0.0.1:8190, and point the client at \
                     it (the entry counts as wrapped once the agent's calls are decided at \
                     mcp:{gateway_name})",
                    sw(&gateway_name),
                    sw(pdp_url),
                    sw(&url)
                ),
            )
        }
        (None, None) => (
            format!("MCP server `{name}`"),
            "wrap this server with `arbiter mcp stdio`".to_owned(),
        ),
    };
    Finding {
        state: State::Coarse,
        source: FindingSource::McpConfig,
        r#where: path.display().to_string(),
        system: server.name.clone(),
        detail,
        next_step,
    }
}

/// `s` with control characters replaced, cut to [`MAX_SHOWN`] characters.
fn cut(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}
