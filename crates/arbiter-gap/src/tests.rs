#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use arbiter_store::{
    Actor, CredentialKind, Environment, NewAgent, NewCredential, SqliteStore, Store,
};
use serde_json::{Value, json};

use super::*;

fn store_with(agents: &[(&str, Value)]) -> SqliteStore {
    let store = SqliteStore::open_in_memory().unwrap();
    for (id, attributes) in agents {
        store
            .register_agent(
                &NewAgent {
                    id: (*id).to_owned(),
                    name: format!("{id} name"),
                    owner: "team".into(),
                    purpose: String::new(),
                    environment: Environment::Dev,
                    attributes: attributes.as_object().cloned().unwrap_or_default(),
                },
                &Actor::cli("test"),
                1,
            )
            .unwrap();
    }
    store
}

fn inputs(store: Option<&dyn Store>) -> Inputs<'_> {
    Inputs {
        log_dir: None,
        store,
        since_us: 0,
        now_us: 1_700_000_000_000_000,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn mcp_sources(path: &Path, agent: Option<&str>) -> Sources {
    Sources {
        mcp_configs: vec![McpConfigSource {
            path: path.to_path_buf(),
            agent: agent.map(str::to_owned),
        }],
        ..Sources::default()
    }
}

// ---- MCP configuration files ----

#[test]
fn claude_desktop_cursor_and_vscode_shapes_are_read() {
    let entry = json!({"fs": {"command": "npx", "args": ["-y", "server-fs", "/tmp"]}});
    for doc in [
        json!({"mcpServers": entry}),
        json!({"servers": entry}),
        json!({"mcp": {"servers": entry}}),
    ] {
        let servers = mcp::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(servers.len(), 1, "{doc}");
        assert_eq!(servers[0].name, "fs");
        assert_eq!(servers[0].command.as_deref(), Some("npx"));
        assert!(servers[0].wrapped_as.is_none());
    }
    let remote = json!({"mcpServers": {"gh": {"url": "https://mcp.example/x", "type": "http"}}});
    let servers = mcp::parse(remote.to_string().as_bytes()).unwrap();
    assert_eq!(servers[0].url.as_deref(), Some("https://mcp.example/x"));
}

#[test]
fn an_entry_running_arbiter_mcp_is_wrapped_and_names_its_server() {
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        mcp::wrapped_name(
            "arbiter",
            &args(&[
                "mcp",
                "stdio",
                "--server-name",
                "fs",
                "--pdp",
                "http://x",
                "--",
                "npx"
            ])
        ),
        Some("fs".to_owned())
    );
    assert_eq!(
        mcp::wrapped_name(
            "/usr/local/bin/arbiter",
            &args(&["--log-level", "warn", "mcp", "http", "--server-name=gh"])
        ),
        Some("gh".to_owned())
    );
    // Not the gateway: another program, another subcommand, or the name after `--`.
    assert_eq!(
        mcp::wrapped_name("npx", &args(&["mcp", "stdio", "--server-name", "fs"])),
        None
    );
    assert_eq!(
        mcp::wrapped_name("arbiter", &args(&["exec", "--", "mcp"])),
        None
    );
    assert_eq!(
        mcp::wrapped_name(
            "arbiter",
            &args(&["mcp", "stdio", "--", "x", "--server-name", "fs"])
        ),
        None
    );
    assert_eq!(
        mcp::wrapped_name(
            "not-arbiter",
            &args(&["mcp", "stdio", "--server-name", "a"])
        ),
        None
    );
}

#[test]
fn malformed_configuration_files_are_refused_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("not-json.json", "{", "invalid JSON"),
        ("array.json", "[1]", "not a JSON object"),
        ("none.json", r#"{"other": {}}"#, "no `mcpServers`"),
        (
            "dup.json",
            r#"{"mcpServers": {}, "mcpServers": {}}"#,
            "invalid JSON",
        ),
        (
            "entry.json",
            r#"{"mcpServers": {"a": 3}}"#,
            "server `a` must be an object",
        ),
        (
            "args.json",
            r#"{"mcpServers": {"a": {"command": "x", "args": [1]}}}"#,
            "`args`",
        ),
        (
            "empty.json",
            r#"{"mcpServers": {"a": {}}}"#,
            "neither `command` nor `url`",
        ),
        (
            "comments.json",
            "{\n // a comment\n \"servers\": {}}",
            "comments are not supported",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, text);
        let err = build(&mcp_sources(&path, None), &inputs(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(expected), "{name}: {err}");
    }
    let missing = dir.path().join("missing.json");
    let err = build(&mcp_sources(&missing, None), &inputs(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.json") && err.contains("cannot open"),
        "{err}"
    );
}

#[test]
fn a_configuration_file_larger_than_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!(
        r#"{{"mcpServers": {{}}, "pad": "{}"}}"#,
        "x".repeat(usize::try_from(mcp::MAX_FILE_BYTES).unwrap())
    );
    let path = write(dir.path(), "big.json", &big);
    let err = build(&mcp_sources(&path, None), &inputs(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("big.json") && err.contains("larger than"),
        "{err}"
    );
}

/// Robustness: no input makes the parser panic (deep nesting, truncations, mutations, bytes
/// that are not UTF-8), and nesting beyond the limit is refused.
#[test]
fn the_configuration_parser_never_panics_on_malformed_deep_or_huge_input() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(mcp::parse(deep.as_bytes()).is_err());
    let nested = format!("{}1{}", "{\"k\":".repeat(40), "}".repeat(40));
    let deep_obj = format!(r#"{{"mcpServers": {{"a": {{"command": "x", "env": {nested}}}}}}}"#);
    assert!(mcp::parse(deep_obj.as_bytes()).is_err());
    let seed = json!({"mcpServers": {
        "fs": {"command": "arbiter", "args": ["mcp", "stdio", "--server-name", "fs", "--", "npx"],
               "env": {"ARBITER_AGENT_KEY": "arb_x"}},
        "gh": {"url": "https://x/"}
    }})
    .to_string()
    .into_bytes();
    // Every truncation.
    for end in 0..seed.len() {
        let _ = mcp::parse(&seed[..end]);
    }
    // Deterministic pseudo-random byte mutations.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}[]\":,\\/*0123456789abcdefnulltrue \xff\xfe\x00";
    for _ in 0..20_000 {
        let mut bytes = seed.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = usize::try_from(next() % bytes.len() as u64).unwrap();
            let b = alphabet[usize::try_from(next() % alphabet.len() as u64).unwrap()];
            match next() % 3 {
                0 => bytes[at] = b,
                1 => bytes.insert(at, b),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        let _ = mcp::parse(&bytes);
    }
    // Many servers.
    let many: serde_json::Map<String, Value> = (0..=mcp::MAX_SERVERS)
        .map(|i| (format!("s{i}"), json!({"command": "x"})))
        .collect();
    let doc = json!({ "mcpServers": many }).to_string();
    assert!(mcp::parse(doc.as_bytes()).unwrap_err().contains("at most"));
}

#[test]
fn an_unwrapped_server_is_coarse_with_a_concrete_wrap_command_and_wrapping_it_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "claude.json",
        &json!({"mcpServers": {
            "files": {"command": "arbiter", "args": ["mcp", "stdio", "--server-name", "files", "--", "npx", "srv"]},
            "git hub": {"command": "npx", "args": ["-y", "@mcp/github", "it's"]}
        }})
        .to_string(),
    );
    let store = store_with(&[("support-bot", json!({}))]);
    let map = build(
        &mcp_sources(&path, Some("support-bot")),
        &inputs(Some(&store)),
    )
    .unwrap();
    let cell = map.cell("support-bot", Layer::Ai).unwrap();
    assert_eq!(cell.state, State::Coarse);
    assert_eq!(cell.wrapped, vec!["files"]);
    assert_eq!(cell.findings.len(), 1);
    let f = &cell.findings[0];
    assert_eq!(f.system, "git hub");
    assert_eq!(f.source, FindingSource::McpConfig);
    assert_eq!(
        f.next_step,
        "wrap this server: arbiter mcp stdio --server-name git-hub --pdp http://127.0.0.1:8180 \
         -- npx -y @mcp/github 'it'\\''s'"
    );
    assert_eq!(cell.next_step.as_deref(), Some(f.next_step.as_str()));
    assert!(map.has_gaps());

    // Wrapped: no longer coarse.
    write(
        dir.path(),
        "claude.json",
        &json!({"mcpServers": {
            "files": {"command": "arbiter", "args": ["mcp", "stdio", "--server-name", "files", "--", "npx", "srv"]},
        }})
        .to_string(),
    );
    let map = build(
        &mcp_sources(&path, Some("support-bot")),
        &inputs(Some(&store)),
    )
    .unwrap();
    let cell = map.cell("support-bot", Layer::Ai).unwrap();
    assert_eq!(cell.state, State::Enforced);
    assert!(cell.next_step.is_none());
    assert!(!map.has_gaps());
}

#[test]
fn a_file_is_attributed_to_the_agent_owning_the_key_of_a_wrapped_entry_else_unattributed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&[("support-bot", json!({}))]);
    let issued = arbiter_identity::issue(arbiter_identity::SecretKind::AgentKey).unwrap();
    store
        .insert_credential(
            &NewCredential {
                id: issued.credential_id.clone(),
                kind: CredentialKind::AgentKey,
                agent_id: Some("support-bot".into()),
                name: String::new(),
                role: None,
                hash: issued.hash.clone(),
                expires_at_us: None,
            },
            &Actor::cli("test"),
            1,
        )
        .unwrap();
    let doc = |key: &str| {
        json!({"mcpServers": {
            "files": {"command": "arbiter", "args": ["mcp", "stdio", "--server-name", "files"],
                      "env": {"ARBITER_AGENT_KEY": key}},
            "raw": {"command": "uvx", "args": ["srv"]}
        }})
        .to_string()
    };
    let path = write(dir.path(), "cursor.json", &doc(issued.expose()));
    let map = build(&mcp_sources(&path, None), &inputs(Some(&store))).unwrap();
    assert_eq!(
        map.cell("support-bot", Layer::Ai).unwrap().state,
        State::Coarse
    );
    let json = serde_json::to_string(&map).unwrap();
    assert!(!json.contains(issued.expose()), "the key is never printed");
    assert!(!render::table(&map).contains(issued.expose()));
    assert!(!format!("{:?}", mcp::read_file(&path).unwrap()).contains(issued.expose()));

    // A key that is not registered (well-formed, another hash): unattributed.
    let other = arbiter_identity::issue(arbiter_identity::SecretKind::AgentKey).unwrap();
    write(dir.path(), "cursor.json", &doc(other.expose()));
    let map = build(&mcp_sources(&path, None), &inputs(Some(&store))).unwrap();
    let unattributed = format!("(unattributed: {})", path.display());
    let row = map.rows.iter().find(|r| r.agent == unattributed).unwrap();
    assert!(!row.registered);
    assert_eq!(
        map.cell(&unattributed, Layer::Ai).unwrap().state,
        State::Coarse
    );
}

#[test]
fn mcp_config_source_reads_file_and_agent() {
    let s = McpConfigSource::parse("/a/b.json=support-bot").unwrap();
    assert_eq!(s.path, PathBuf::from("/a/b.json"));
    assert_eq!(s.agent.as_deref(), Some("support-bot"));
    let s = McpConfigSource::parse("/a/x=Y.json").unwrap();
    assert_eq!(s.path, PathBuf::from("/a/x=Y.json"));
    assert!(s.agent.is_none());
    assert!(McpConfigSource::parse("").is_err());
}

// ---- declared systems ----

#[test]
fn declared_systems_show_in_unknown_cells_with_a_next_step_and_bad_declarations_warn() {
    let store = store_with(&[
        (
            "support-bot",
            json!({"systems": {"ai": ["fs"], "data": ["shop", {"name": "wh", "role": "reporting"}]}}),
        ),
        (
            "bad-bot",
            json!({"systems": {"web": ["x"], "ai": "fs", "data": [{"name": "w", "extra": 1}], "agents": [3]}}),
        ),
        ("worse-bot", json!({"systems": ["ai"]})),
    ]);
    let map = build(&Sources::default(), &inputs(Some(&store))).unwrap();
    let ai = map.cell("support-bot", Layer::Ai).unwrap();
    assert_eq!(ai.state, State::Unknown);
    assert_eq!(ai.declared, vec!["fs"]);
    assert!(
        ai.next_step
            .as_deref()
            .unwrap()
            .contains("nothing observed")
    );
    assert!(
        ai.next_step
            .as_deref()
            .unwrap()
            .contains("arbiter mcp stdio")
    );
    assert_eq!(
        map.cell("support-bot", Layer::Data).unwrap().declared,
        vec!["shop", "wh"]
    );
    assert!(
        map.cell("support-bot", Layer::Agents)
            .unwrap()
            .next_step
            .is_none()
    );
    let warnings = map.warnings.join("\n");
    for expected in [
        "agent `bad-bot`: attribute `systems`: `web` is not a layer",
        "agent `bad-bot`: attribute `systems`: `ai` must be an array",
        "agent `bad-bot`: attribute `systems`: `data[0]` must be",
        "agent `bad-bot`: attribute `systems`: `agents[0]` must be a system name",
        "agent `worse-bot`: attribute `systems`: must be an object",
    ] {
        assert!(warnings.contains(expected), "{expected} in {warnings}");
    }
    assert!(!map.has_gaps());
    // Every (row, layer) pair.
    assert_eq!(map.cells.len(), map.rows.len() * Layer::ALL.len());
    assert_eq!(map.summary.unknown, 15);
}

// ---- states ----

#[test]
fn the_worst_finding_wins_and_a_cell_keeps_both_evidence_and_findings() {
    let enforced = Enforced {
        enforcement_points: vec!["mcp:fs".into()],
        decisions: 4,
        denied: 1,
        deny_rate: 0.25,
        last_seen: "2025-01-01T00:00:00Z".into(),
        policies: vec!["p".into()],
    };
    let finding = |state| Finding {
        state,
        source: FindingSource::McpConfig,
        r#where: "f".into(),
        system: "s".into(),
        detail: "d".into(),
        next_step: format!("fix {}", state.as_str()),
    };
    let cell = |enforced: Option<Enforced>, findings: Vec<Finding>| {
        decide(
            "a",
            Layer::Ai,
            Draft {
                enforced,
                findings,
                ..Draft::default()
            },
        )
    };
    assert_eq!(cell(None, vec![]).state, State::Unknown);
    assert_eq!(cell(Some(enforced.clone()), vec![]).state, State::Enforced);
    let c = cell(Some(enforced.clone()), vec![finding(State::Coarse)]);
    assert_eq!(c.state, State::Coarse);
    assert!(c.enforced.is_some() && c.findings.len() == 1);
    assert_eq!(c.next_step.as_deref(), Some("fix coarse"));
    let c = cell(
        Some(enforced),
        vec![finding(State::Coarse), finding(State::Ungoverned)],
    );
    assert_eq!(c.state, State::Ungoverned);
    assert_eq!(c.next_step.as_deref(), Some("fix ungoverned"));
    assert!(State::Ungoverned > State::Coarse && State::Coarse > State::Enforced);
    assert!(State::Enforced > State::Unknown);
}

#[test]
fn layers_follow_the_enforcement_point() {
    assert_eq!(
        Layer::of_enforcement_point("http:billing"),
        Some(Layer::Applications)
    );
    assert_eq!(
        Layer::of_enforcement_point("exec:host-1"),
        Some(Layer::Infrastructure)
    );
    assert_eq!(Layer::of_enforcement_point("sql:shop"), Some(Layer::Data));
    assert_eq!(Layer::of_enforcement_point("mcp:fs"), Some(Layer::Ai));
    assert_eq!(
        Layer::of_enforcement_point("a2a:research"),
        Some(Layer::Agents)
    );
    assert_eq!(Layer::of_enforcement_point("authzen"), None);
    assert_eq!(Layer::of_enforcement_point("arbiter:policy"), None);
}

#[test]
fn discovered_identities_without_registration_are_ungoverned_rows() {
    let store = store_with(&[]);
    store
        .record_sightings(&[arbiter_store::Sighting {
            kind: arbiter_store::DiscoveredKind::Credential,
            key: "fp_abc".into(),
            shape: "openai-key".into(),
            source: "10.0.0.7".into(),
            enforcement_point: "mcp:fs".into(),
            at_us: 5,
        }])
        .unwrap();
    let map = build(&Sources::default(), &inputs(Some(&store))).unwrap();
    let row = map.rows.iter().find(|r| r.agent == "fp_abc").unwrap();
    assert!(!row.registered && row.status.is_none());
    let cell = map.cell("fp_abc", Layer::Ai).unwrap();
    assert_eq!(cell.state, State::Ungoverned);
    assert!(
        cell.next_step
            .as_deref()
            .unwrap()
            .contains("arbiter agent adopt")
    );
    assert_eq!(
        map.cell("fp_abc", Layer::Data).unwrap().state,
        State::Unknown
    );
    // Older than the window: not in the map.
    let later = Inputs {
        since_us: 10,
        ..inputs(Some(&store))
    };
    let map = build(&Sources::default(), &later).unwrap();
    assert!(map.rows.is_empty());
}

// ---- PostgreSQL ----

#[test]
fn guard_connections_are_told_from_direct_ones() {
    assert!(postgres::is_guard("arbiter-sql"));
    assert!(postgres::is_guard("arbiter-sql/psql"));
    assert!(!postgres::is_guard("arbiter-sqlx"));
    assert!(!postgres::is_guard("psql"));
    assert!(!postgres::is_guard(""));
    let c = |role: &str, app: &str| postgres::Connection {
        role: role.into(),
        database: "shop".into(),
        application_name: app.into(),
        client: "10.0.0.1".into(),
        count: 2,
    };
    let activity = postgres::classify(
        "postgres://h:5432/shop",
        &[
            c("reporting", "psql"),
            c("reporting", "arbiter-sql/app"),
            c("app", "arbiter-sql"),
            c("postgres", "arbiter"),
        ],
    );
    assert_eq!(activity.through_guard, 4);
    assert_eq!(activity.direct.len(), 1);
    assert_eq!(activity.direct[0].role, "reporting");
    assert_eq!(activity.direct[0].connections, 2);
    let f = postgres::finding(
        "postgres://h:5432/shop",
        &activity.direct[0],
        "http://pdp:1",
    );
    assert!(f.next_step.starts_with("route role reporting through the guard: arbiter sql proxy --upstream postgres://reporting@h:5432/shop"), "{}", f.next_step);
}

#[test]
fn a_postgres_dsn_that_cannot_be_reached_is_an_error_without_its_password() {
    let sources = Sources {
        postgres: vec!["postgres://u:s3cret@127.0.0.1:1/db?connect_timeout=2".into()],
        ..Sources::default()
    };
    let err = build(&sources, &inputs(None)).unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1/db"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

// ---- access logs ----

#[test]
fn access_log_traffic_is_coarse_for_a_known_client_and_ungoverned_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "access.log",
        "10.0.0.5 - - [10/Oct/2025:13:55:36 +0000] \"POST https://api.openai.com/v1/chat/completions HTTP/1.1\" 200 512 \"-\" \"python\"\n\
         10.0.0.9 - - [10/Oct/2025:13:55:37 +0000] \"CONNECT api.anthropic.com:443 HTTP/1.1\" 200 0 \"-\" \"curl\"\n",
    );
    let store = store_with(&[("support-bot", json!({"addresses": ["10.0.0.5"]}))]);
    let sources = Sources {
        access_logs: vec![log],
        ..Sources::default()
    };
    let map = build(&sources, &inputs(Some(&store))).unwrap();
    let cell = map.cell("support-bot", Layer::Applications).unwrap();
    assert_eq!(cell.state, State::Coarse, "{map:#?}");
    assert!(cell.next_step.as_deref().unwrap().contains("forward-auth"));
    let cell = map.cell("client:10.0.0.9", Layer::Applications).unwrap();
    assert_eq!(cell.state, State::Ungoverned);
}

// ---- output ----

#[test]
fn the_json_schema_round_trips_with_its_documented_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "m.json",
        &json!({"mcpServers": {"<b>x</b>": {"command": "npx"}}}).to_string(),
    );
    let store = store_with(&[("support-bot", json!({"systems": {"ai": ["fs"]}}))]);
    let map = build(
        &mcp_sources(&path, Some("support-bot")),
        &inputs(Some(&store)),
    )
    .unwrap();
    let v = serde_json::to_value(&map).unwrap();
    assert_eq!(v["schema"], "arbiter.gap/1");
    assert_eq!(
        v["layers"],
        json!(["applications", "infrastructure", "data", "ai", "agents"])
    );
    assert_eq!(
        v["rows"][0],
        json!({"agent": "support-bot", "registered": true, "status": "active", "name": "support-bot name"})
    );
    let cell = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["layer"] == "ai")
        .unwrap();
    assert_eq!(cell["state"], "coarse");
    assert_eq!(cell["declared"], json!(["fs"]));
    assert_eq!(cell["enforced"], Value::Null);
    let f = &cell["findings"][0];
    for key in ["state", "source", "where", "system", "detail", "next_step"] {
        assert!(f.get(key).is_some(), "{key}");
    }
    assert_eq!(f["source"], "mcp-config");
    assert_eq!(
        v["summary"],
        json!({"enforced": 0, "coarse": 1, "ungoverned": 0, "unknown": 4})
    );
    assert!(v["generated_at"].as_str().unwrap().ends_with('Z'));
    let back: GapMap = serde_json::from_value(v).unwrap();
    assert_eq!(back, map);

    // HTML: one page, nothing external, every text escaped.
    let html = render::html(&map);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<b>x</b>") && html.contains("&lt;b&gt;x&lt;/b&gt;"));
    assert!(!html.contains("src=") && !html.contains("href=\"http"));
    assert!(!html.contains("<script") && !html.contains("<link"));
    // Table: readable without colour.
    let table = render::table(&map);
    assert!(
        table.contains("COARSE") && table.contains("support-bot"),
        "{table}"
    );
    assert!(table.contains("next: wrap this server"), "{table}");
}

// ---- the decision log ----

fn record(
    agent: Option<&str>,
    point: &str,
    outcome: arbiter_log::Outcome,
    ts_us: i64,
) -> arbiter_log::DecisionRecord {
    arbiter_log::DecisionRecord {
        decision_id: format!("d-{ts_us}"),
        ts_us,
        subject: arbiter_log::SubjectRef {
            kind: if agent.is_some() {
                "Agent".into()
            } else {
                "User".into()
            },
            id: agent.unwrap_or("alice").into(),
            agent_id: None,
            credential_id: None,
        },
        action: "tools/call".into(),
        enforcement_point: point.into(),
        outcome,
        determining_policies: vec![format!("p-{point}")],
        ..arbiter_log::DecisionRecord::default()
    }
}

#[test]
fn decisions_in_the_window_are_counted_per_agent_and_layer() {
    use arbiter_log::Outcome::{Allow, Deny};
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let (log, _) = arbiter_log::Log::open(&log_dir, arbiter_log::LogOptions::default()).unwrap();
    let since = 1_700_000_000_000_000;
    for r in [
        record(Some("bot"), "sql:shop", Allow, since - 1),
        record(Some("bot"), "mcp:fs", Allow, since + 1),
        record(Some("bot"), "mcp:fs", Deny, since + 2),
        record(Some("bot"), "mcp:git", Allow, since + 3),
        record(Some("bot"), "authzen", Allow, since + 4),
        record(Some("other"), "a2a:research", Allow, since + 5),
        record(None, "http:billing", Allow, since + 6),
        record(Some("unauthenticated"), "http:billing", Deny, since + 7),
    ] {
        log.append_blocking(r).unwrap();
    }
    let store = store_with(&[("bot", json!({}))]);
    let map = build(
        &Sources::default(),
        &Inputs {
            log_dir: Some(&log_dir),
            store: Some(&store),
            since_us: since,
            now_us: since + 10,
        },
    )
    .unwrap();
    let ai = map.cell("bot", Layer::Ai).unwrap();
    assert_eq!(ai.state, State::Enforced);
    let e = ai.enforced.as_ref().unwrap();
    assert_eq!(e.enforcement_points, vec!["mcp:fs", "mcp:git"]);
    assert_eq!((e.decisions, e.denied), (3, 1));
    assert!((e.deny_rate - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(e.policies, vec!["p-mcp:fs", "p-mcp:git"]);
    assert_eq!(e.last_seen, arbiter_log::format_rfc3339_us(since + 3));
    // Before the window: not counted.
    assert_eq!(map.cell("bot", Layer::Data).unwrap().state, State::Unknown);
    // An agent in the log that is not registered is a row, enforced.
    let other = map.rows.iter().find(|r| r.agent == "other").unwrap();
    assert!(!other.registered);
    assert_eq!(
        map.cell("other", Layer::Agents).unwrap().state,
        State::Enforced
    );
    // A user without an agent is no row; `authzen` is in no layer, and said so.
    assert!(map.rows.iter().all(|r| r.agent != "alice"));
    // A refused credential of no agent is no row either.
    assert!(map.rows.iter().all(|r| r.agent != "unauthenticated"));
    assert!(
        map.warnings
            .iter()
            .any(|w| w.contains("1 decision(s) refused a credential")),
        "{:?}",
        map.warnings
    );
    assert!(
        map.warnings
            .iter()
            .any(|w| w.contains("1 decision(s) of AuthZEN callers")),
        "{:?}",
        map.warnings
    );
    assert_eq!(map.summary.enforced, 2);

    // A remote server in a client configuration counts as wrapped once the agent's calls are
    // decided at `mcp:NAME`; another remote one stays coarse.
    let config = write(
        dir.path(),
        "vscode.json",
        &json!({"servers": {"git": {"type": "http", "url": "http://127.0.0.1:8190/mcp"},
                            "jira": {"url": "https://mcp.example/jira"}}})
        .to_string(),
    );
    let map = build(
        &mcp_sources(&config, Some("bot")),
        &Inputs {
            log_dir: Some(&log_dir),
            store: Some(&store),
            since_us: since,
            now_us: since + 10,
        },
    )
    .unwrap();
    let ai = map.cell("bot", Layer::Ai).unwrap();
    assert_eq!(ai.wrapped, vec!["git"]);
    assert_eq!(ai.state, State::Coarse);
    assert_eq!(ai.findings.len(), 1);
    assert_eq!(ai.findings[0].system, "jira");
    assert!(
        ai.findings[0]
            .next_step
            .contains("arbiter mcp http --server-name jira")
    );
}
