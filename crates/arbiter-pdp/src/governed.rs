//! Governed policy versions: what `arbiter policy propose` stores, how a governed decision
//! point loads the active version from the store and follows activations, and how two
//! versions differ. The rules of the process (two-person approval, passing tests, rollback)
//! are kept by the store (`arbiter_store::policy_versions`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbiter_policy::{LoadErrors, Policies, run_tests, test_suite_of};
use arbiter_store::{
    Actor, NewPolicyVersion, PolicyActivation, PolicyFile, PolicyVersion, PolicyVersionState,
    Store, StoreError,
};
use serde_json::{Value, json};

use crate::Pdp;

/// Why a version could not be proposed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum GovernedError {
    /// The directory does not load (each error is `file:line: …`).
    #[error("the policies do not load:\n{0}")]
    Load(LoadErrors),
    /// Policies without `@owner`, as `id (file:line)`.
    #[error(
        "every policy needs an owner in governed mode; add `@owner(\"team-or-person\")` to: {}",
        .0.join(", ")
    )]
    NoOwner(Vec<String>),
    #[error(
        "`{0}` is not part of a policy version: give `*.cedar`, `schema.cedarschema`, \
         `entities.json` and `tests/*.json` files"
    )]
    UnknownFile(String),
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The stored files do not hash to the version they are stored under.
    #[error(
        "the stored files of policy version {stored} load as version {loaded}: the store was \
         altered; refusing to enforce it"
    )]
    Tampered { stored: String, loaded: String },
    #[error(
        "no policy version is active: propose, approve and activate one (`arbiter policy propose DIR`)"
    )]
    NoneActive,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A proposed version and what its tests said.
#[derive(Debug)]
pub struct Candidate {
    pub new: NewPolicyVersion,
    pub policies: Policies,
    /// One line per test case that failed or was malformed.
    pub failures: Vec<String>,
}

/// Reads policy directory `dir` as a candidate version by `author`: it must load, every
/// policy must have an `@owner`, and its tests (`tests/*.json`) are run (a candidate whose
/// tests fail can be stored, never activated). Its files are the policies, the schema, the
/// entities and the test files.
pub fn candidate(dir: &Path, author: &str, message: &str) -> Result<Candidate, GovernedError> {
    let mut files: Vec<PolicyFile> = Policies::source_files(dir)
        .map_err(GovernedError::Load)?
        .into_iter()
        .map(|(path, text)| PolicyFile {
            path: slash_path(&path),
            text,
        })
        .collect();
    files.extend(test_files(dir)?);
    candidate_of(files, author, message)
}

/// [`candidate`] from a policy directory's files given in memory (the admin API's
/// proposals): `*.cedar`, `schema.cedarschema`, `entities.json` and `tests/*.json`, by path
/// relative to the directory. Other files are refused: a version holds what it is made of.
pub fn candidate_of(
    files: Vec<PolicyFile>,
    author: &str,
    message: &str,
) -> Result<Candidate, GovernedError> {
    for f in &files {
        let p = f.path.as_str();
        let known = p == arbiter_policy::SCHEMA_FILE
            || p == arbiter_policy::ENTITIES_FILE
            || (p.ends_with(".cedar") && !p.starts_with("tests/"))
            || (p.starts_with("tests/") && p.ends_with(".json") && p.matches('/').count() == 1);
        if !known {
            return Err(GovernedError::UnknownFile(f.path.clone()));
        }
    }
    let (tests, sources): (Vec<&PolicyFile>, Vec<&PolicyFile>) =
        files.iter().partition(|f| f.path.starts_with("tests/"));
    let pairs = |fs: &[&PolicyFile]| -> Vec<(PathBuf, String)> {
        fs.iter()
            .map(|f| (PathBuf::from(&f.path), f.text.clone()))
            .collect()
    };
    let policies = Policies::from_files(pairs(&sources)).map_err(GovernedError::Load)?;
    let lacking: Vec<String> = policies
        .owners()
        .into_iter()
        .filter(|(_, owner)| owner.is_none())
        .map(|(id, _)| match policies.policy(&id) {
            Some(m) => format!("`{id}` ({}:{})", m.file.display(), m.line),
            None => format!("`{id}`"),
        })
        .collect();
    if !lacking.is_empty() {
        return Err(GovernedError::NoOwner(lacking));
    }
    let suite = test_suite_of(&pairs(&tests));
    let results = run_tests(&policies, &suite.cases);
    let mut failures: Vec<String> = suite.errors.iter().map(ToString::to_string).collect();
    for r in &results {
        if let Some(why) = &r.failure {
            failures.push(format!(
                "{} ({}): {why}",
                r.case.name,
                r.case.file.display()
            ));
        }
    }
    let passed = results.iter().filter(|r| r.failure.is_none()).count();
    let owners = policies
        .owners()
        .into_iter()
        .filter_map(|(id, owner)| Some((id, owner?)))
        .collect();
    Ok(Candidate {
        new: NewPolicyVersion {
            version: policies.version().to_owned(),
            author: author.to_owned(),
            message: message.to_owned(),
            files,
            owners,
            tests_passed: u64::try_from(passed).unwrap_or(u64::MAX),
            tests_failed: u64::try_from(failures.len()).unwrap_or(u64::MAX),
        },
        policies,
        failures,
    })
}

fn slash_path(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The `tests/*.json` files of `dir`, sorted.
fn test_files(dir: &Path) -> Result<Vec<PolicyFile>, GovernedError> {
    let tests = dir.join(arbiter_policy::TESTS_DIR);
    if !tests.is_dir() {
        return Ok(Vec::new());
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| GovernedError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map_err(|source| GovernedError::Read {
            path: tests.clone(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(PolicyFile {
                path: format!(
                    "{}/{}",
                    arbiter_policy::TESTS_DIR,
                    p.file_name().unwrap_or_default().to_string_lossy()
                ),
                text: read(&p)?,
            })
        })
        .collect()
}

/// Loads a stored version, checking that its files still hash to it.
pub fn load(v: &PolicyVersion) -> Result<Policies, GovernedError> {
    let files = v
        .files
        .iter()
        .map(|f| (PathBuf::from(&f.path), f.text.clone()))
        .collect();
    let policies = Policies::from_files(files).map_err(GovernedError::Load)?;
    if policies.version() != v.version {
        return Err(GovernedError::Tampered {
            stored: v.version.clone(),
            loaded: policies.version().to_owned(),
        });
    }
    Ok(policies)
}

/// The stored version that `version` names (its hash, or a unique prefix of at least 8 hex
/// digits).
pub fn stored(store: &dyn Store, version: &str) -> Result<PolicyVersion, StoreError> {
    let full = store.resolve_policy_version(version)?;
    store.policy_version(&full)?.ok_or(StoreError::NotFound {
        what: "policy version",
        id: full,
    })
}

/// [`stored`], loaded (its files checked against its hash).
pub fn load_stored(store: &dyn Store, version: &str) -> Result<Policies, GovernedError> {
    load(&stored(store, version)?)
}

/// The active version in `store`, loaded.
pub fn load_active(store: &dyn Store) -> Result<Policies, GovernedError> {
    Ok(active(store)?.policies)
}

/// A version about to be enforced: its policies, the stored version and its activation.
#[derive(Debug)]
pub struct Enforced {
    pub policies: Policies,
    pub version: PolicyVersion,
    pub activation: PolicyActivation,
}

/// The active version in `store`, loaded, with its activation.
pub fn active(store: &dyn Store) -> Result<Enforced, GovernedError> {
    let activation = store
        .policy_activations(1)?
        .into_iter()
        .next()
        .ok_or(GovernedError::NoneActive)?;
    let version = stored(store, &activation.version)?;
    Ok(Enforced {
        policies: load(&version)?,
        version,
        activation,
    })
}

/// The enforcement point of the record a governed node writes in its decision log when it
/// starts enforcing a version: who proposed, approved and activated it, so that every
/// decision the version makes is preceded, in the same tamper-evident log, by the evidence of
/// its governance (`arbiter evidence`).
pub const ACTIVATION_ENFORCEMENT_POINT: &str = "arbiter:policy";
/// The action of that record.
pub const ACTIVATION_ACTION: &str = "arbiter:enforce-policy-version";
/// Its determining policy: not a policy's verdict, so replay and shadow leave it out.
pub const ACTIVATION_POLICY: &str = "arbiter:governance";

/// The activation record of `e` (see [`ACTIVATION_ENFORCEMENT_POINT`]).
pub fn activation_record(e: &Enforced) -> arbiter_log::DecisionRecord {
    let v = &e.version;
    let a = &e.activation;
    let approvers: Vec<&str> = v.approvals.iter().map(|p| p.approver.as_str()).collect();
    let context = json!({
        "version": v.version,
        "author": v.author,
        "message": v.message,
        "proposed_at": time(v.proposed_us),
        "tests": {"passed": v.tests_passed, "failed": v.tests_failed},
        "approvals": v.approvals.iter()
            .map(|p| json!({"approver": p.approver, "at": time(p.at_us)}))
            .collect::<Vec<_>>(),
        "owners": v.owners,
        "activation": {"seq": a.seq, "kind": a.kind, "by": a.by, "at": time(a.at_us)},
    });
    arbiter_log::DecisionRecord {
        decision_id: uuid::Uuid::now_v7().hyphenated().to_string(),
        subject: arbiter_log::SubjectRef {
            kind: "Admin".to_owned(),
            id: a.by.clone(),
            agent_id: None,
            credential_id: None,
        },
        action: ACTIVATION_ACTION.to_owned(),
        resource: arbiter_log::EntityRef {
            kind: "PolicyVersion".to_owned(),
            id: v.version.clone(),
        },
        context_digest: arbiter_log::context_digest(&context).unwrap_or_default(),
        context,
        outcome: arbiter_log::Outcome::Allow,
        determining_policies: vec![ACTIVATION_POLICY.to_owned()],
        reason_admin: format!(
            "enforcing policy version {} ({} by {}): proposed by {}, approved by {}",
            v.version,
            a.kind.as_str(),
            a.by,
            v.author,
            if approvers.is_empty() {
                "nobody".to_owned()
            } else {
                approvers.join(", ")
            }
        ),
        policy_version: v.version.clone(),
        engine: "cedar".to_owned(),
        engine_version: crate::recorder::ENGINE_VERSION.to_owned(),
        enforcement_point: ACTIVATION_ENFORCEMENT_POINT.to_owned(),
        ..arbiter_log::DecisionRecord::default()
    }
}

/// Starts enforcing `e`: its activation record is made durable in the decision log first (when
/// there is one), then the version is installed. When the record cannot be written the version
/// is not installed (the log has failed, so every decision is denied anyway).
pub async fn enforce(pdp: &Pdp, e: Enforced) -> Result<(), String> {
    if pdp.snapshot().version() == e.version.version {
        return Ok(());
    }
    if let Some(recorder) = pdp.recorder() {
        let written = recorder.submit(activation_record(&e)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(format!(
                    "cannot record the activation of {} in the decision log: {err}",
                    e.version.version
                ));
            }
            Err(_) => return Err("the decision log stopped".to_owned()),
        }
    }
    pdp.install(e.policies);
    Ok(())
}

/// Activates the version `version` names as `by`, once its stored files are checked to load
/// as it: a version whose files no longer hash to it is never made active.
pub fn activate(
    store: &dyn Store,
    version: &str,
    by: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<PolicyActivation, GovernedError> {
    let v = stored(store, version)?;
    load(&v)?;
    Ok(store.activate_policy_version(&v.version, by, actor, now_us)?)
}

/// Evaluates the version `version` names in shadow from now on, once its stored files are
/// checked to load as it; returns its full hash.
pub fn start_shadow(
    store: &dyn Store,
    version: &str,
    actor: &Actor,
    now_us: i64,
) -> Result<String, GovernedError> {
    let v = stored(store, version)?;
    load(&v)?;
    store.set_policy_shadow(Some(&v.version), actor, now_us)?;
    Ok(v.version)
}

/// How often [`follow`] looks at the store's change counter.
const GENERATION_TICK: Duration = Duration::from_millis(50);

/// Follows the registry in `store`: installs the active version in `pdp` when it changed (when
/// `governed`), and starts or stops the shadow version (`arbiter policy shadow`). It looks as
/// soon as the store's change counter moves (an activation is an audited change; on a shared
/// PostgreSQL store the counter follows every node's changes within milliseconds), and every
/// `every` regardless. A version that cannot be loaded is not installed (the current one keeps
/// serving, the error is logged once and kept for `/readyz`). Runs until the task is dropped.
pub async fn follow(pdp: Arc<Pdp>, store: Arc<dyn Store>, every: Duration, governed: bool) {
    let mut failed: Option<String> = None;
    let mut shadow_failed: Option<String> = None;
    let mut seen = store.generation_now().ok().flatten();
    let mut last_check = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(GENERATION_TICK.min(every)).await;
        let now = store.generation_now().ok().flatten();
        let moved = now.is_some() && now != seen;
        if !moved && last_check.elapsed() < every {
            continue;
        }
        seen = now;
        last_check = tokio::time::Instant::now();
        let current = pdp.snapshot().version().to_owned();
        let shadowing = pdp.shadow_version();
        let store2 = Arc::clone(&store);
        let next = tokio::task::spawn_blocking(move || {
            let store = store2.as_ref();
            let active = (|| -> Result<Option<Enforced>, GovernedError> {
                if !governed {
                    return Ok(None);
                }
                match store.policy_activations(1)?.into_iter().next() {
                    Some(a) if a.version != current => Ok(Some(active(store)?)),
                    _ => Ok(None),
                }
            })();
            // `None`: unchanged; `Some(None)`: stopped.
            let shadow = (|| -> Result<Option<Option<Policies>>, GovernedError> {
                Ok(match store.policy_shadow()? {
                    None if shadowing.is_none() => None,
                    None => Some(None),
                    Some(v) if Some(&v) == shadowing.as_ref() => None,
                    Some(v) => Some(Some(load_stored(store, &v)?)),
                })
            })();
            (active, shadow)
        })
        .await;
        let Ok((active, shadow)) = next else {
            tracing::error!("the policy version check panicked");
            continue;
        };
        let active = match active {
            Ok(Some(next)) => enforce(&pdp, next).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        match active {
            Ok(()) => failed = None,
            Err(text) => {
                if failed.as_deref() != Some(text.as_str()) && pdp.note_reload_error(&text) {
                    tracing::error!(error = %text, "cannot install the active policy version; the current one keeps serving");
                }
                failed = Some(text);
            }
        }
        match shadow {
            Ok(Some(s)) => {
                shadow_failed = None;
                pdp.set_shadow(s);
            }
            Ok(None) => {}
            Err(e) => {
                let text = e.to_string();
                if shadow_failed.as_deref() != Some(text.as_str()) {
                    tracing::error!(error = %text, "cannot load the shadow policy version; no shadow evaluation until it loads");
                }
                shadow_failed = Some(text);
            }
        }
    }
}

/// How two versions' policies differ, by policy id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// In the new version only: id → text.
    pub added: BTreeMap<String, String>,
    /// In the old version only: id → text.
    pub removed: BTreeMap<String, String>,
    /// In both, with different text: id → (old, new).
    pub changed: BTreeMap<String, (String, String)>,
    /// Whether the schema or the entities differ (files `schema.cedarschema`,
    /// `entities.json`).
    pub schema_changed: bool,
    pub entities_changed: bool,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The difference from version `old` to version `new`.
pub fn diff(old: &PolicyVersion, new: &PolicyVersion) -> Result<PolicyDiff, GovernedError> {
    let (a, b) = (load(old)?, load(new)?);
    let (ta, tb) = (a.policy_texts(), b.policy_texts());
    let mut d = PolicyDiff::default();
    for (id, text) in tb {
        match ta.get(id) {
            None => {
                d.added.insert(id.clone(), text.clone());
            }
            Some(before) if before != text => {
                d.changed.insert(id.clone(), (before.clone(), text.clone()));
            }
            Some(_) => {}
        }
    }
    for (id, text) in ta {
        if !tb.contains_key(id) {
            d.removed.insert(id.clone(), text.clone());
        }
    }
    let file = |v: &PolicyVersion, name: &str| {
        v.files
            .iter()
            .find(|f| f.path == name)
            .map(|f| f.text.trim().to_owned())
    };
    d.schema_changed =
        file(old, arbiter_policy::SCHEMA_FILE) != file(new, arbiter_policy::SCHEMA_FILE);
    d.entities_changed =
        file(old, arbiter_policy::ENTITIES_FILE) != file(new, arbiter_policy::ENTITIES_FILE);
    Ok(d)
}

// ---- how versions are shown ----

/// Whether `v` may be activated now: not rejected, tests passed, enough approvals.
pub fn ready(v: &PolicyVersion, required: u32) -> bool {
    v.state == PolicyVersionState::Proposed
        && v.tests_failed == 0
        && u32::try_from(v.approvals.len()).unwrap_or(u32::MAX) >= required
}

/// Where a version stands, in a word.
pub fn standing(
    v: &PolicyVersion,
    required: u32,
    active: Option<&PolicyActivation>,
) -> &'static str {
    if active.is_some_and(|a| a.version == v.version) {
        "active"
    } else if v.state == PolicyVersionState::Rejected {
        "rejected"
    } else if v.tests_failed > 0 {
        "tests-failed"
    } else if ready(v, required) {
        "approved"
    } else {
        "proposed"
    }
}

/// A time as RFC 3339 (UTC).
pub fn time(us: i64) -> String {
    arbiter_log::format_rfc3339_us(us)
}

/// A version as the CLI's `--json` and the admin API show it (files by path only).
pub fn version_json(v: &PolicyVersion, required: u32, active: Option<&PolicyActivation>) -> Value {
    json!({
        "version": v.version,
        "standing": standing(v, required, active),
        "author": v.author,
        "message": v.message,
        "proposed_at": time(v.proposed_us),
        "owners": v.owners,
        "tests": {"passed": v.tests_passed, "failed": v.tests_failed},
        "approvals": v.approvals.iter().map(|a| json!({"approver": a.approver, "at": time(a.at_us)})).collect::<Vec<_>>(),
        "approvals_required": required,
        "rejected": v.rejected_by.as_ref().map(|by| json!({
            "by": by,
            "at": v.rejected_us.map(time),
            "reason": v.rejected_reason,
        })),
        "files": v.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
    })
}

/// An activation as the CLI's `--json` and the admin API show it.
pub fn activation_json(a: &PolicyActivation) -> Value {
    json!({"seq": a.seq, "version": a.version, "kind": a.kind, "by": a.by, "at": time(a.at_us)})
}

/// A diff as the CLI's `--json` and the admin API show it.
pub fn diff_json(old: &PolicyVersion, new: &PolicyVersion, d: &PolicyDiff) -> Value {
    json!({
        "from": old.version,
        "to": new.version,
        "added": d.added,
        "removed": d.removed,
        "changed": d
            .changed
            .iter()
            .map(|(id, (o, n))| (id.clone(), json!({"old": o, "new": n})))
            .collect::<serde_json::Map<_, _>>(),
        "schema_changed": d.schema_changed,
        "entities_changed": d.entities_changed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use arbiter_store::{Actor, SqliteStore};

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const OWNED: &str = "@id(\"a\")\n@owner(\"team-a\")\npermit (principal, action == Action::\"read\", resource);\n";

    #[test]
    fn a_candidate_holds_its_files_owners_and_test_results() {
        let dir = dir_with(&[
            ("a.cedar", OWNED),
            (
                "nested/b.cedar",
                "@id(\"b\")\n@owner(\"team-b\")\nforbid (principal, action == Action::\"delete\", resource);\n",
            ),
            (
                "tests/t.json",
                r#"[{"name": "reads", "request": {"subject": {"type": "Agent", "id": "x"}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d"}}, "expect": "deny"}]"#,
            ),
            ("notes.txt", "not part of the version"),
        ]);
        let c = candidate(dir.path(), "alice", "first").unwrap();
        let paths: Vec<&str> = c.new.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.cedar", "nested/b.cedar", "tests/t.json"]);
        assert_eq!(c.new.owners["a"], "team-a");
        assert_eq!(c.new.owners["b"], "team-b");
        assert_eq!((c.new.tests_passed, c.new.tests_failed), (0, 1));
        assert!(
            c.failures[0].contains("expected deny, got allow"),
            "{:?}",
            c.failures
        );
        assert_eq!(
            c.new.version,
            Policies::load_dir(dir.path()).unwrap().version()
        );
    }

    #[test]
    fn policies_without_owners_are_named_with_their_place() {
        let dir = dir_with(&[(
            "a.cedar",
            "@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"b\")\n@owner(\"  \")\npermit (principal, action, resource);\n",
        )]);
        // An empty owner is a load error at its line.
        let e = candidate(dir.path(), "alice", "m").unwrap_err().to_string();
        assert!(
            e.contains("a.cedar:4") && e.contains("`@owner` must name"),
            "{e}"
        );
        let dir = dir_with(&[(
            "a.cedar",
            "@id(\"a\")\npermit (principal, action, resource);\n",
        )]);
        let e = candidate(dir.path(), "alice", "m").unwrap_err().to_string();
        assert!(e.contains("`a` (a.cedar:1)"), "{e}");
    }

    /// The stored files are checked against the version they are stored under: an altered
    /// registry is refused, not enforced.
    #[test]
    fn altered_stored_files_are_refused() {
        let dir = dir_with(&[("a.cedar", OWNED)]);
        let c = candidate(dir.path(), "alice", "first").unwrap();
        let store = SqliteStore::open_in_memory().unwrap();
        let mut v = store
            .propose_policy_version(&c.new, &Actor::cli("t"), 1)
            .unwrap();
        assert_eq!(load(&v).unwrap().version(), c.new.version);
        v.files[0].text = v.files[0].text.replace("read", "delete");
        let e = load(&v).unwrap_err();
        assert!(matches!(e, GovernedError::Tampered { .. }), "{e}");
        assert!(e.to_string().contains("refusing to enforce it"), "{e}");
        assert!(matches!(
            load_active(&store),
            Err(GovernedError::NoneActive)
        ));
    }

    #[test]
    fn a_diff_names_policies_by_id() {
        let store = SqliteStore::open_in_memory().unwrap();
        let stored = |files: &[(&str, &str)]| {
            let dir = dir_with(files);
            let c = candidate(dir.path(), "alice", "m").unwrap();
            store
                .propose_policy_version(&c.new, &Actor::cli("t"), 1)
                .unwrap()
        };
        let old = stored(&[(
            "a.cedar",
            "@id(\"kept\")\n@owner(\"t\")\npermit (principal, action == Action::\"read\", resource);\n@id(\"gone\")\n@owner(\"t\")\npermit (principal, action == Action::\"list\", resource);\n@id(\"edited\")\n@owner(\"t\")\npermit (principal, action == Action::\"write\", resource);\n",
        )]);
        // The same policies in another file layout, one edited, one removed, one added.
        let new = stored(&[
            (
                "x.cedar",
                "@id(\"kept\")\n@owner(\"t\")\npermit (principal, action == Action::\"read\", resource);\n",
            ),
            (
                "y.cedar",
                "@id(\"edited\")\n@owner(\"t\")\nforbid (principal, action == Action::\"write\", resource);\n@id(\"new\")\n@owner(\"t\")\npermit (principal, action == Action::\"tag\", resource);\n",
            ),
        ]);
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.added.keys().collect::<Vec<_>>(), ["new"]);
        assert_eq!(d.removed.keys().collect::<Vec<_>>(), ["gone"]);
        assert_eq!(d.changed.keys().collect::<Vec<_>>(), ["edited"]);
        assert!(
            d.changed["edited"]
                .1
                .starts_with("@id(\"edited\")\n@owner(\"t\")\nforbid")
        );
        assert!(!d.schema_changed && !d.entities_changed);
        assert!(diff(&old, &old).unwrap().is_empty());
    }
}
