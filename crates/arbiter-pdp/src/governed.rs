//! Governed policy versions: what `arbiter policy propose` stores, how a governed decision
//! point loads the active version from the store and follows activations, and how two
//! versions differ. The rules of the process (two-person approval, passing tests, rollback)
//! are kept by the store (`arbiter_store::policy_versions`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbiter_policy::{LoadErrors, Policies, load_test_suite, run_tests};
use arbiter_store::{NewPolicyVersion, PolicyFile, PolicyVersion, Store, StoreError};

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
    let sources = Policies::source_files(dir).map_err(GovernedError::Load)?;
    let policies = Policies::from_files(sources.clone()).map_err(GovernedError::Load)?;
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
    let suite = load_test_suite(dir);
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
    let mut files: Vec<PolicyFile> = sources
        .into_iter()
        .map(|(path, text)| PolicyFile {
            path: slash_path(&path),
            text,
        })
        .collect();
    files.extend(test_files(dir)?);
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

/// The active version in `store`, loaded.
pub fn load_active(store: &dyn Store) -> Result<Policies, GovernedError> {
    let active = store
        .policy_activations(1)?
        .into_iter()
        .next()
        .ok_or(GovernedError::NoneActive)?;
    let v = store.policy_version(&active.version)?.ok_or_else(|| {
        StoreError::Corrupt(format!("active version {} is missing", active.version))
    })?;
    load(&v)
}

/// Follows activations in `store`: every `every`, installs the active version in `pdp` when
/// it changed. A version that cannot be loaded is not installed (the current one keeps
/// serving, the error is logged once and kept for `/readyz`). Runs until the task is dropped.
pub async fn follow(pdp: Arc<Pdp>, store: Arc<dyn Store>, every: Duration) {
    let mut failed: Option<String> = None;
    loop {
        tokio::time::sleep(every).await;
        let current = pdp.snapshot().version().to_owned();
        let store2 = Arc::clone(&store);
        let next = tokio::task::spawn_blocking(move || {
            let active = store2.policy_activations(1)?.into_iter().next();
            match active {
                Some(a) if a.version != current => {
                    let v = store2.policy_version(&a.version)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("active version {} is missing", a.version))
                    })?;
                    load(&v).map(Some)
                }
                _ => Ok(None),
            }
        })
        .await;
        match next {
            Ok(Ok(Some(policies))) => {
                failed = None;
                pdp.install(policies);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                let text = e.to_string();
                if failed.as_deref() != Some(text.as_str()) && pdp.note_reload_error(&text) {
                    tracing::error!(error = %text, "cannot install the active policy version; the current one keeps serving");
                }
                failed = Some(text);
            }
            Err(e) => tracing::error!(error = %e, "the policy version check panicked"),
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
