//! `arbiter a2a card …`: the agent cards the A2A gateway pinned, and changed cards awaiting
//! approval.
//!
//! The gateway pins the first card an agent serves and refuses every call while the agent
//! serves a different one (`arbiter_a2a::card`). The pins live in the store's tool pins
//! (server `a2a:<name>`, tool `agent-card`), so these commands are the card-shaped view of
//! `arbiter mcp pins` / `approve-tool` / `unpin`: `show` puts the pinned and the pending card
//! side by side with what changed (skills, security schemes, URLs, the rest), and `approve`
//! takes the exact hash that was reviewed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;

use arbiter_a2a::card::{PIN_SERVER_PREFIX, PIN_TOOL, pin_server};
use arbiter_pdp::identity::now_us;
use arbiter_store::ToolPin;
use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::mcp::StoreArgs;

/// `arbiter a2a card …`
#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// List the pinned agent cards and the changed cards awaiting approval (exit code 4 when
    /// one awaits approval).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's pinned card and, if it changed, the pending card and what changed.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// The agent, as the gateway names it (its `--name`).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Approve an agent's changed card: it becomes the pinned card and the gateway serves it
    /// again.
    Approve {
        #[command(flatten)]
        store: StoreArgs,
        /// The agent, as the gateway names it (its `--name`).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The hash of the pending card you reviewed (`arbiter a2a card show`); refused if the
        /// pending card is another one.
        #[arg(long, value_name = "sha256:…")]
        hash: String,
    },
    /// Forget an agent's card pin: the next card the gateway fetches is pinned on first use.
    Unpin {
        #[command(flatten)]
        store: StoreArgs,
        /// The agent, as the gateway names it (its `--name`).
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

pub fn run(cmd: CardCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CardCommand::List { store, json } => list(&store, json),
        CardCommand::Show { store, name, json } => show(&store, &name, json),
        CardCommand::Approve { store, name, hash } => approve(&store, &name, &hash),
        CardCommand::Unpin { store, name } => unpin(&store, &name),
    }
}

/// The agent name of a card pin, or `None` for a pin that is not a card pin.
fn agent_name(pin: &ToolPin) -> Option<&str> {
    if pin.tool != PIN_TOOL {
        return None;
    }
    pin.server.strip_prefix(PIN_SERVER_PREFIX)
}

fn state(pin: &ToolPin) -> &'static str {
    if pin.is_changed() {
        "changed"
    } else {
        "pinned"
    }
}

fn parse_definition(definition: Option<&str>) -> Value {
    definition
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .unwrap_or(Value::Null)
}

fn list(store_args: &StoreArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::agent::open_store(&store_args.data)?;
    let pins: Vec<ToolPin> = store
        .list_tool_pins(None)?
        .into_iter()
        .filter(|p| agent_name(p).is_some())
        .collect();
    let mut out = std::io::stdout().lock();
    if as_json {
        let all: Vec<Value> = pins
            .iter()
            .map(|p| {
                json!({
                    "name": agent_name(p),
                    "state": state(p),
                    "hash": p.hash,
                    "pinned_at": arbiter_log::format_rfc3339_us(p.pinned_at_us),
                    "pinned_by": p.pinned_by,
                    "pending_hash": p.observed_hash.as_ref().filter(|_| p.is_changed()),
                    "pending_since": p.observed_at_us.filter(|_| p.is_changed()).map(arbiter_log::format_rfc3339_us),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    } else if pins.is_empty() {
        writeln!(out, "no agent card pins")?;
    } else {
        writeln!(out, "{:<24} {:<8} HASH", "NAME", "STATE")?;
        let data = arbiter_pep::shell_word(&store_args.data.to_string_lossy());
        for p in &pins {
            let name = agent_name(p).unwrap_or_default();
            writeln!(out, "{name:<24} {:<8} {}", state(p), p.hash)?;
            if let Some(h) = p.observed_hash.as_ref().filter(|_| p.is_changed()) {
                writeln!(
                    out,
                    "{:<24} {:<8} {h}  (review: arbiter a2a card show --data {data} --name {n}; \
                     approve: arbiter a2a card approve --data {data} --name {n} --hash {h})",
                    "",
                    "pending",
                    n = arbiter_pep::shell_word(name),
                )?;
            }
        }
    }
    Ok(if pins.iter().any(ToolPin::is_changed) {
        ExitCode::from(super::agent::EXIT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}

fn show(store_args: &StoreArgs, name: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = super::agent::open_store(&store_args.data)?;
    let Some(pin) = store.tool_pin(&pin_server(name), PIN_TOOL)? else {
        anyhow::bail!(
            "no agent card is pinned for `{name}` (the gateway pins it on its first call)"
        );
    };
    let pinned = parse_definition(pin.definition.as_deref());
    let pending = pin
        .is_changed()
        .then(|| parse_definition(pin.observed_definition.as_deref()));
    let diff = pending
        .as_ref()
        .map(|pending| CardDiff::of(&pinned, pending));
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "name": name,
            "state": state(&pin),
            "hash": pin.hash,
            "pinned_at": arbiter_log::format_rfc3339_us(pin.pinned_at_us),
            "pinned_by": pin.pinned_by,
            "card": pinned,
            "pending_hash": pin.observed_hash.as_ref().filter(|_| pin.is_changed()),
            "pending_since": pin.observed_at_us.filter(|_| pin.is_changed()).map(arbiter_log::format_rfc3339_us),
            "pending_card": pending,
            "changes": diff.as_ref().map(CardDiff::to_json),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "agent card of `{name}`")?;
    writeln!(
        out,
        "pinned:  {} (by {}, {})",
        pin.hash,
        pin.pinned_by,
        arbiter_log::format_rfc3339_us(pin.pinned_at_us)
    )?;
    writeln!(out, "{}", serde_json::to_string_pretty(&pinned)?)?;
    if let (Some(pending), Some(diff)) = (&pending, &diff) {
        let hash = pin.observed_hash.as_deref().unwrap_or_default();
        writeln!(
            out,
            "\npending: {hash} (since {}; refused until approved)",
            pin.observed_at_us
                .map(arbiter_log::format_rfc3339_us)
                .unwrap_or_default()
        )?;
        writeln!(out, "{}", serde_json::to_string_pretty(pending)?)?;
        writeln!(out, "\nchanges from the pinned card to the pending one:")?;
        write!(out, "{}", diff.render())?;
        writeln!(
            out,
            "\napprove: arbiter a2a card approve --data {} --name {} --hash {hash}",
            arbiter_pep::shell_word(&store_args.data.to_string_lossy()),
            arbiter_pep::shell_word(name)
        )?;
    } else {
        writeln!(out, "\nno change pending")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn approve(store_args: &StoreArgs, name: &str, hash: &str) -> anyhow::Result<ExitCode> {
    let store = super::agent::open_store(&store_args.data)?;
    let pin = store.approve_tool(
        &pin_server(name),
        PIN_TOOL,
        Some(hash),
        &super::agent::cli_actor(),
        now_us(),
    )?;
    crate::out::print(&format!(
        "approved the agent card of `{name}`: its pinned card is now {} (the gateway serves it \
         from its next call)",
        pin.hash
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn unpin(store_args: &StoreArgs, name: &str) -> anyhow::Result<ExitCode> {
    let store = super::agent::open_store(&store_args.data)?;
    store.unpin_tool(
        &pin_server(name),
        PIN_TOOL,
        &super::agent::cli_actor(),
        now_us(),
    )?;
    crate::out::print(&format!(
        "unpinned the agent card of `{name}`: the next card the gateway fetches is pinned on \
         first use"
    ))?;
    Ok(ExitCode::SUCCESS)
}

// ---- what changed between two cards ---------------------------------------------------------

/// One value that differs: absent before (`old` `None`), absent after, or changed.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    path: String,
    old: Option<Value>,
    new: Option<Value>,
}

/// What differs between a pinned card and a pending one, grouped for review.
#[derive(Debug, Default, PartialEq)]
struct CardDiff {
    skills_added: Vec<(String, Value)>,
    skills_removed: Vec<(String, Value)>,
    skills_changed: Vec<(String, Vec<Change>)>,
    schemes_added: Vec<(String, Value)>,
    schemes_removed: Vec<String>,
    schemes_changed: Vec<(String, Vec<Change>)>,
    /// Values whose member name ends in `url`/`Url` (interfaces, provider, documentation, …).
    urls: Vec<Change>,
    /// Everything else, but signatures.
    other: Vec<Change>,
    signatures_changed: bool,
}

/// Members diffed on their own rather than leaf by leaf.
const SEPARATE: [&str; 3] = ["skills", "securitySchemes", "signatures"];

impl CardDiff {
    fn of(old: &Value, new: &Value) -> CardDiff {
        let mut diff = CardDiff::default();

        let skills = |card: &Value| -> BTreeMap<String, Value> {
            card["skills"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s.get("id")?.as_str()?.to_owned(), s.clone())))
                .collect()
        };
        let (old_skills, new_skills) = (skills(old), skills(new));
        for (id, skill) in &new_skills {
            match old_skills.get(id) {
                None => diff.skills_added.push((id.clone(), skill.clone())),
                Some(before) if before != skill => diff
                    .skills_changed
                    .push((id.clone(), leaf_changes(before, skill))),
                Some(_) => {}
            }
        }
        for (id, skill) in &old_skills {
            if !new_skills.contains_key(id) {
                diff.skills_removed.push((id.clone(), skill.clone()));
            }
        }

        let schemes = |card: &Value| {
            card["securitySchemes"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let (old_schemes, new_schemes) = (schemes(old), schemes(new));
        for (name, scheme) in &new_schemes {
            match old_schemes.get(name) {
                None => diff.schemes_added.push((name.clone(), scheme.clone())),
                Some(before) if before != scheme => diff
                    .schemes_changed
                    .push((name.clone(), leaf_changes(before, scheme))),
                Some(_) => {}
            }
        }
        for name in old_schemes.keys() {
            if !new_schemes.contains_key(name) {
                diff.schemes_removed.push(name.clone());
            }
        }

        let rest = |card: &Value| -> Value {
            let mut card = card.as_object().cloned().unwrap_or_default();
            for member in SEPARATE {
                card.remove(member);
            }
            Value::Object(card)
        };
        for change in leaf_changes(&rest(old), &rest(new)) {
            if is_url_path(&change.path) {
                diff.urls.push(change);
            } else {
                diff.other.push(change);
            }
        }
        diff.signatures_changed = old.get("signatures") != new.get("signatures");
        diff
    }

    fn is_empty(&self) -> bool {
        *self == CardDiff::default()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut section = |title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                out.push_str(&format!("  {title}:\n"));
                for line in lines {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        };
        let mut skills = Vec::new();
        for (id, skill) in &self.skills_added {
            skills.push(format!("+ {id}{}", skill_summary(skill)));
        }
        for (id, skill) in &self.skills_removed {
            skills.push(format!("- {id}{}", skill_summary(skill)));
        }
        for (id, changes) in &self.skills_changed {
            skills.push(format!("~ {id}:"));
            skills.extend(changes.iter().map(|c| format!("    {}", render_change(c))));
        }
        section("skills", skills);
        let mut schemes = Vec::new();
        for (name, scheme) in &self.schemes_added {
            schemes.push(format!("+ {name}: {}", short(scheme)));
        }
        for name in &self.schemes_removed {
            schemes.push(format!("- {name}"));
        }
        for (name, changes) in &self.schemes_changed {
            schemes.push(format!("~ {name}:"));
            schemes.extend(changes.iter().map(|c| format!("    {}", render_change(c))));
        }
        section("security schemes", schemes);
        section("URLs", self.urls.iter().map(render_change).collect());
        section("other", self.other.iter().map(render_change).collect());
        if self.signatures_changed {
            section("signatures", vec!["~ changed".to_owned()]);
        }
        if self.is_empty() {
            out.push_str("  (none)\n");
        }
        out
    }

    fn to_json(&self) -> Value {
        let changes = |list: &[Change]| -> Vec<Value> {
            list.iter()
                .map(|c| json!({"path": c.path, "old": c.old, "new": c.new}))
                .collect()
        };
        let named = |list: &[(String, Vec<Change>)]| -> Map<String, Value> {
            list.iter()
                .map(|(name, c)| (name.clone(), Value::Array(changes(c))))
                .collect()
        };
        json!({
            "skills": {
                "added": self.skills_added.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                "removed": self.skills_removed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                "changed": named(&self.skills_changed),
            },
            "security_schemes": {
                "added": self.schemes_added.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "removed": self.schemes_removed,
                "changed": named(&self.schemes_changed),
            },
            "urls": changes(&self.urls),
            "other": changes(&self.other),
            "signatures_changed": self.signatures_changed,
        })
    }
}

/// Whether the last member name of `path` ends in `url` (any case): `supportedInterfaces[0].url`,
/// `provider.url`, `documentationUrl`, …
fn is_url_path(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    let last = last.split('[').next().unwrap_or(last);
    last.to_ascii_lowercase().ends_with("url")
}

/// Every leaf (scalar, empty array or object) of `v` by path.
fn leaves(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(members) if !members.is_empty() => {
            for (k, v) in members {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {
            out.insert(path, v.clone());
        }
    }
}

fn leaf_changes(old: &Value, new: &Value) -> Vec<Change> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(old, String::new(), &mut a);
    leaves(new, String::new(), &mut b);
    let mut out = Vec::new();
    for (path, before) in &a {
        match b.get(path) {
            Some(after) if after == before => {}
            after => out.push(Change {
                path: path.clone(),
                old: Some(before.clone()),
                new: after.cloned(),
            }),
        }
    }
    for (path, after) in &b {
        if !a.contains_key(path) {
            out.push(Change {
                path: path.clone(),
                old: None,
                new: Some(after.clone()),
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

fn render_change(c: &Change) -> String {
    match (&c.old, &c.new) {
        (None, Some(new)) => format!("+ {}: {}", c.path, short(new)),
        (Some(old), None) => format!("- {}: {}", c.path, short(old)),
        (Some(old), Some(new)) => format!("~ {}: {} → {}", c.path, short(old), short(new)),
        (None, None) => format!("? {}", c.path),
    }
}

fn skill_summary(skill: &Value) -> String {
    let mut out = String::new();
    if let Some(name) = skill["name"].as_str() {
        out.push_str(&format!(" {}", short(&Value::String(name.to_owned()))));
    }
    if let Some(tags) = skill["tags"].as_array().filter(|t| !t.is_empty()) {
        out.push_str(&format!(" {}", short(&Value::Array(tags.clone()))));
    }
    out
}

/// Compact JSON, cut at 120 characters.
fn short(v: &Value) -> String {
    const MAX: usize = 120;
    let text = v.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn card() -> Value {
        json!({
            "name": "Agent",
            "version": "1.0.0",
            "supportedInterfaces": [{"url": "http://a:1/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "provider": {"url": "https://p", "organization": "o"},
            "capabilities": {"streaming": true},
            "securitySchemes": {
                "bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}},
                "old": {"mtlsSecurityScheme": {}}
            },
            "skills": [
                {"id": "summarize", "name": "Summarize", "tags": ["text"]},
                {"id": "delete_records", "name": "Delete records", "tags": ["admin"]}
            ],
            "signatures": [{"protected": "a", "signature": "b"}]
        })
    }

    #[test]
    fn diff_groups_skills_schemes_urls_and_the_rest() {
        let old = card();
        let mut new = card();
        new["version"] = json!("1.0.1");
        new["supportedInterfaces"][0]["url"] = json!("http://elsewhere:1/");
        new["capabilities"]["streaming"] = json!(false);
        new["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["bearerFormat"] = json!("JWT");
        new["securitySchemes"]
            .as_object_mut()
            .unwrap()
            .remove("old");
        new["securitySchemes"]["key"] = json!({"apiKeySecurityScheme": {"name": "X"}});
        new["skills"][0]["name"] = json!("Summarise");
        new["skills"].as_array_mut().unwrap().remove(1);
        new["skills"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "export_data", "name": "Export data", "tags": ["extra"]}));
        new["signatures"][0]["signature"] = json!("c");

        let diff = CardDiff::of(&old, &new);
        assert_eq!(
            diff.skills_added
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["export_data"]
        );
        assert_eq!(diff.skills_removed[0].0, "delete_records");
        assert_eq!(diff.skills_changed[0].0, "summarize");
        assert_eq!(diff.schemes_added[0].0, "key");
        assert_eq!(diff.schemes_removed, ["old"]);
        assert_eq!(diff.schemes_changed[0].0, "bearer");
        assert_eq!(diff.urls.len(), 1);
        assert_eq!(diff.urls[0].path, "supportedInterfaces[0].url");
        assert_eq!(
            diff.other
                .iter()
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>(),
            ["capabilities.streaming", "version"]
        );
        assert!(diff.signatures_changed);

        let text = diff.render();
        for line in [
            "  skills:\n",
            "    + export_data \"Export data\" [\"extra\"]\n",
            "    - delete_records \"Delete records\" [\"admin\"]\n",
            "    ~ summarize:\n",
            "        ~ name: \"Summarize\" → \"Summarise\"\n",
            "  security schemes:\n",
            "    + key: {\"apiKeySecurityScheme\":{\"name\":\"X\"}}\n",
            "    - old\n",
            "        + httpAuthSecurityScheme.bearerFormat: \"JWT\"\n",
            "  URLs:\n",
            "    ~ supportedInterfaces[0].url: \"http://a:1/\" → \"http://elsewhere:1/\"\n",
            "    ~ capabilities.streaming: true → false\n",
            "    ~ version: \"1.0.0\" → \"1.0.1\"\n",
            "  signatures:\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let json = diff.to_json();
        assert_eq!(json["skills"]["added"], json!(["export_data"]));
        assert_eq!(json["urls"][0]["new"], "http://elsewhere:1/");
    }

    #[test]
    fn identical_cards_have_no_changes() {
        let diff = CardDiff::of(&card(), &card());
        assert!(diff.is_empty());
        assert_eq!(diff.render(), "  (none)\n");
    }

    #[test]
    fn url_paths_are_recognised_by_their_last_member() {
        for p in [
            "url",
            "supportedInterfaces[0].url",
            "provider.url",
            "documentationUrl",
            "additionalInterfaces[1].url",
        ] {
            assert!(is_url_path(p), "{p}");
        }
        for p in ["urls.count", "version", "capabilities.streaming"] {
            assert!(!is_url_path(p), "{p}");
        }
    }

    #[test]
    fn only_card_pins_are_card_pins() {
        let pin = |server: &str, tool: &str| ToolPin {
            server: server.to_owned(),
            tool: tool.to_owned(),
            hash: String::new(),
            definition: None,
            pinned_at_us: 0,
            pinned_by: String::new(),
            observed_hash: None,
            observed_definition: None,
            observed_at_us: None,
        };
        assert_eq!(agent_name(&pin("a2a:billing", PIN_TOOL)), Some("billing"));
        assert_eq!(agent_name(&pin("fs", PIN_TOOL)), None);
        assert_eq!(agent_name(&pin("a2a:billing", "read_file")), None);
    }
}
