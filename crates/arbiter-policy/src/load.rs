//! Loading a policy directory into an immutable, versioned [`Policies`] snapshot.
//!
//! A directory holds `*.cedar` files (in subdirectories too, except `tests/`), an optional
//! `schema.cedarschema`, an optional `entities.json` and an optional `tests/` folder. Loading
//! either yields a complete snapshot — parsed, validated against the schema when there is one,
//! with stable policy ids and a content-hash version — or every error found, each pointing at
//! a file, line and column.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Effect, Entities, EntityTypeName, EntityUid, PolicyId, PolicySet,
    PrincipalConstraint, ResourceConstraint, Schema, ValidationMode, Validator,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostic::{LoadErrors, SourceError};

/// The schema file name inside a policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
/// The entities file name inside a policy directory.
pub const ENTITIES_FILE: &str = "entities.json";
/// The test folder name inside a policy directory.
pub const TESTS_DIR: &str = "tests";

/// What Arbiter knows about one policy beyond Cedar's view of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMeta {
    pub effect: Effect,
    /// Where the policy starts, relative to the policy directory.
    pub file: PathBuf,
    pub line: usize,
    /// `@reason("…")`: shown to administrators.
    pub reason: Option<String>,
    /// `@agent_reason("…")`: shown to the agent when this policy denies.
    pub agent_reason: Option<String>,
    /// `@owner("…")`: the team or person answerable for the policy (required in governed
    /// mode).
    pub owner: Option<String>,
    /// `@session_label`, `@limit`, `@budget` (see [`crate::runtime`]).
    pub runtime: crate::runtime::RuntimeRules,
}

/// One policy file's text, as loaded (kept for hashing and for `policy show`-style output).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// An immutable, validated policy set with everything evaluation needs.
///
/// INVARIANT: every policy in `set` has an entry in `meta`, ids are unique, `version` is the
/// content hash of exactly this set, schema and entities.
#[derive(Debug)]
pub struct Policies {
    pub(crate) set: PolicySet,
    pub(crate) schema: Option<Schema>,
    /// The schema's context declarations, to say which attribute of an invalid context is at
    /// fault.
    pub(crate) context_shapes: crate::explain::ContextShapes,
    pub(crate) entities: Entities,
    /// Stored entities as JSON (`uid`, `attrs`, `parents`), keyed by (type, id), so that
    /// request properties can be merged over them.
    pub(crate) entity_json: HashMap<(String, String), Value>,
    /// Ids of stored entities by type, sorted: the candidates of a search.
    pub(crate) entity_index: BTreeMap<String, BTreeSet<String>>,
    /// Action names: from the schema, or named by the policies when there is no schema.
    pub(crate) actions: Vec<String>,
    pub(crate) meta: HashMap<PolicyId, PolicyMeta>,
    pub(crate) authorizer: Authorizer,
    pub(crate) type_names: HashMap<String, EntityTypeName>,
    /// The row policies: those whose scope names the `Row` type (`resource is Row`, `is Row
    /// in …`, `== Row::"…"`). Only they take part in row filters.
    pub(crate) row_scoped: HashSet<PolicyId>,
    /// Whether a row policy is a `forbid`: then even a table allowed as a whole is read
    /// through a row filter.
    pub(crate) row_forbids: bool,
    /// The permits with runtime annotations (see [`crate::runtime`]), by id.
    runtime: HashMap<String, crate::runtime::RuntimeRules>,
    /// Whether some policy reads `context.session`.
    reads_session: bool,
    /// Whether some policy may read the session's call counts (`calls`, `calls_last_minute`,
    /// `calls_last_hour`).
    reads_session_calls: bool,
    version: String,
    /// Each policy's text, by id (what the version hashes).
    texts: std::collections::BTreeMap<String, String>,
    root: Option<PathBuf>,
}

impl Policies {
    /// Loads and validates a policy directory.
    pub fn load_dir(dir: &Path) -> Result<Self, LoadErrors> {
        let mut p = Self::from_files(read_dir(dir)?)?;
        p.root = Some(dir.to_path_buf());
        Ok(p)
    }

    /// The files of a policy directory, as [`Policies::load_dir`] reads them: the `*.cedar`
    /// files, the schema and the entities, by path relative to `dir`, sorted.
    pub fn source_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, LoadErrors> {
        read_dir(dir)
    }

    /// Builds a snapshot from a policy directory's files given in memory (paths relative to
    /// the directory, as [`Policies::source_files`] gives them; files under `tests/` and
    /// files that are neither `*.cedar`, the schema nor the entities are left out). The same
    /// files give the same version as [`Policies::load_dir`].
    pub fn from_files(files: Vec<(PathBuf, String)>) -> Result<Self, LoadErrors> {
        let mut policy_files = Vec::new();
        let mut schema_src = None;
        let mut entities_src = None;
        for (rel, text) in files {
            if rel == Path::new(SCHEMA_FILE) {
                schema_src = Some(text);
            } else if rel == Path::new(ENTITIES_FILE) {
                entities_src = Some(text);
            } else if rel.extension().is_some_and(|e| e == "cedar") && !rel.starts_with(TESTS_DIR) {
                policy_files.push(SourceFile { path: rel, text });
            }
        }
        Self::from_sources(
            &policy_files,
            schema_src.as_deref(),
            entities_src.as_deref(),
        )
    }

    /// Builds a snapshot from in-memory sources (file paths are used for ids and errors).
    pub fn from_sources(
        files: &[SourceFile],
        schema_src: Option<&str>,
        entities_src: Option<&str>,
    ) -> Result<Self, LoadErrors> {
        let mut errors = Vec::new();

        let schema = match schema_src {
            None => None,
            Some(src) => match Schema::from_cedarschema_str(src) {
                Ok((schema, _warnings)) => Some(schema),
                Err(e) => {
                    errors.push(
                        SourceError::from_diagnostic(Path::new(SCHEMA_FILE), src, &e).with_help(
                            "see `arbiter policy schema` for the built-in agent vocabulary",
                        ),
                    );
                    None
                }
            },
        };

        let mut set = PolicySet::new();
        let mut meta: HashMap<PolicyId, PolicyMeta> = HashMap::new();
        let mut hashed: Vec<(String, String)> = Vec::new();
        let mut file_of: HashMap<PolicyId, usize> = HashMap::new();
        for (file_index, file) in files.iter().enumerate() {
            let parsed = match PolicySet::from_str(&file.text) {
                Ok(p) => p,
                Err(e) => {
                    for diag in e.iter() {
                        errors.push(SourceError::from_diagnostic(&file.path, &file.text, diag));
                    }
                    continue;
                }
            };
            if let Some(t) = parsed.templates().next() {
                let offset = t
                    .to_cedar()
                    .get(..)
                    .and_then(|text| file.text.find(text))
                    .unwrap_or(0);
                errors.push(
                    SourceError::in_file(&file.path, "policy templates are not supported")
                        .at_offset(&file.text, offset)
                        .with_help("write a static policy: replace `?principal`/`?resource` with an entity or a condition"),
                );
                continue;
            }
            // Policies come back in arbitrary order; locate each in the text to order them
            // and to give it a line number.
            // Cedar numbers the policies of a file `policy0`, `policy1`, … in source order.
            let mut ordered: Vec<_> = parsed.policies().collect();
            ordered.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            let mut located = Vec::new();
            let mut cursor = 0;
            for policy in ordered {
                let text = policy.to_cedar().unwrap_or_default();
                let offset = file
                    .text
                    .get(cursor..)
                    .and_then(|rest| rest.find(&text))
                    .map_or(cursor, |i| cursor + i);
                cursor = offset + text.len();
                located.push((offset, policy.clone(), text));
            }
            for (offset, policy, text) in located {
                let (line, _) = crate::diagnostic::line_col(&file.text, offset);
                let id = match policy.annotation("id") {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => format!("{}:{line}", file.path.display()),
                };
                let pid = PolicyId::new(&id);
                if let Some(existing) = meta.get(&pid) {
                    errors.push(
                        SourceError::in_file(
                            &file.path,
                            format!(
                                "policy id `{id}` is already used at {}:{}",
                                existing.file.display(),
                                existing.line
                            ),
                        )
                        .at_offset(&file.text, offset)
                        .with_help("give each policy a unique `@id(\"…\")`"),
                    );
                    continue;
                }
                let runtime = match crate::runtime::parse_rules(
                    |name| policy.annotation(name),
                    policy.effect() == Effect::Permit,
                ) {
                    Ok(r) => r,
                    Err(message) => {
                        errors.push(
                            SourceError::in_file(&file.path, message).at_offset(&file.text, offset),
                        );
                        continue;
                    }
                };
                let owner = match policy.annotation("owner").map(str::trim) {
                    None => None,
                    Some(o)
                        if !o.is_empty() && o.len() <= 256 && !o.chars().any(char::is_control) =>
                    {
                        Some(o.to_owned())
                    }
                    Some(_) => {
                        errors.push(
                            SourceError::in_file(
                                &file.path,
                                "`@owner` must name the team or person answerable for the policy (1 to 256 characters)",
                            )
                            .at_offset(&file.text, offset),
                        );
                        continue;
                    }
                };
                let renamed = policy.new_id(pid.clone());
                if let Err(e) = set.add(renamed) {
                    errors.push(
                        SourceError::in_file(&file.path, e.to_string())
                            .at_offset(&file.text, offset),
                    );
                    continue;
                }
                meta.insert(
                    pid.clone(),
                    PolicyMeta {
                        effect: policy.effect(),
                        file: file.path.clone(),
                        line,
                        reason: policy.annotation("reason").map(str::to_owned),
                        agent_reason: policy.annotation("agent_reason").map(str::to_owned),
                        owner,
                        runtime,
                    },
                );
                file_of.insert(pid, file_index);
                hashed.push((id, text.trim().to_owned()));
            }
        }

        if let Some(schema) = &schema {
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            for e in result.validation_errors() {
                let (path, src) = file_of
                    .get(e.policy_id())
                    .and_then(|&i| files.get(i))
                    .map_or((PathBuf::from("?"), ""), |f| {
                        (f.path.clone(), f.text.as_str())
                    });
                errors.push(
                    SourceError::from_diagnostic(&path, src, e)
                        .with_help("the policy does not match `schema.cedarschema`; fix the policy or extend the schema"),
                );
            }
        }

        let (entities, entity_json) = match entities_src {
            None => (Entities::empty(), Vec::new()),
            Some(src) => match load_entities(src, schema.as_ref()) {
                Ok(x) => x,
                Err(e) => {
                    errors.push(e);
                    (Entities::empty(), Vec::new())
                }
            },
        };

        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }

        let entities = match &schema {
            // The schema's action entities (and their groups) join the stored entities.
            Some(schema) => match schema
                .action_entities()
                .map_err(|e| e.to_string())
                .and_then(|actions| {
                    entities
                        .add_entities(actions.iter().cloned(), Some(schema))
                        .map_err(|e| e.to_string())
                }) {
                Ok(e) => e,
                Err(e) => {
                    return Err(LoadErrors(vec![SourceError::in_file(SCHEMA_FILE, e)]));
                }
            },
            None => entities,
        };

        let mut entity_index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut by_uid = HashMap::new();
        for (kind, id, json) in entity_json {
            entity_index
                .entry(kind.clone())
                .or_default()
                .insert(id.clone());
            by_uid.insert((kind, id), json);
        }

        let actions = match &schema {
            Some(schema) => {
                let mut names: Vec<String> = schema
                    .actions()
                    .map(|a| a.id().unescaped().to_owned())
                    .collect();
                names.sort();
                names.dedup();
                names
            }
            None => {
                let mut names = BTreeSet::new();
                for p in set.policies() {
                    let uids: Vec<EntityUid> = match p.action_constraint() {
                        ActionConstraint::Any => Vec::new(),
                        ActionConstraint::Eq(uid) => vec![uid],
                        ActionConstraint::In(uids) => uids,
                    };
                    for uid in uids {
                        names.insert(uid.id().unescaped().to_owned());
                    }
                }
                names.into_iter().collect()
            }
        };

        let mut type_names = HashMap::new();
        if let Some(schema) = &schema {
            for t in schema.entity_types() {
                type_names.insert(t.to_string(), t.clone());
            }
        }
        let row_scoped: HashSet<PolicyId> = set
            .policies()
            .filter(|p| match p.resource_constraint() {
                ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => {
                    t.to_string() == crate::ROW_TYPE
                }
                ResourceConstraint::Eq(u) => u.type_name().to_string() == crate::ROW_TYPE,
                ResourceConstraint::Any | ResourceConstraint::In(_) => false,
            })
            .map(|p| p.id().clone())
            .collect();
        let row_forbids = set
            .policies()
            .any(|p| p.effect() == cedar_policy::Effect::Forbid && row_scoped.contains(p.id()));
        // Types named in policy scopes: parsed once here rather than per request.
        for p in set.policies() {
            let mut names = Vec::new();
            match p.principal_constraint() {
                PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => names.push(t),
                PrincipalConstraint::Eq(u) | PrincipalConstraint::In(u) => {
                    names.push(u.type_name().clone())
                }
                PrincipalConstraint::Any => {}
            }
            match p.resource_constraint() {
                ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => names.push(t),
                ResourceConstraint::Eq(u) | ResourceConstraint::In(u) => {
                    names.push(u.type_name().clone())
                }
                ResourceConstraint::Any => {}
            }
            for t in names {
                type_names.insert(t.to_string(), t);
            }
        }
        for kind in entity_index.keys() {
            if let Ok(t) = EntityTypeName::from_str(kind) {
                type_names.insert(kind.clone(), t);
            }
        }

        let reads_session = hashed.iter().any(|(_, text)| reads_session(text));
        let reads_session_calls =
            reads_session && hashed.iter().any(|(_, text)| reads_session_calls(text));
        let runtime = meta
            .iter()
            .filter(|(_, m)| !m.runtime.is_empty())
            .map(|(id, m)| (id.to_string(), m.runtime.clone()))
            .collect();
        let version = content_version(&mut hashed, schema_src, entities_src);
        let texts = hashed.into_iter().collect();
        let context_shapes = match (&schema, schema_src) {
            (Some(_), Some(src)) => crate::explain::ContextShapes::from_cedarschema(src),
            _ => crate::explain::ContextShapes::default(),
        };
        Ok(Self {
            set,
            schema,
            context_shapes,
            entities,
            entity_json: by_uid,
            entity_index,
            actions,
            meta,
            authorizer: Authorizer::new(),
            type_names,
            row_scoped,
            row_forbids,
            runtime,
            reads_session,
            reads_session_calls,
            version,
            texts,
            root: None,
        })
    }

    /// The runtime annotations of policy `id` (see [`crate::runtime`]), when it has any.
    pub fn runtime_rules(&self, id: &str) -> Option<&crate::runtime::RuntimeRules> {
        self.runtime.get(id)
    }

    /// Whether some permit has runtime annotations.
    pub fn has_runtime_rules(&self) -> bool {
        !self.runtime.is_empty()
    }

    /// Whether some permit asks for a human approval (`@require_approval`).
    pub fn has_approval_rules(&self) -> bool {
        self.runtime.values().any(|r| r.approval.is_some())
    }

    /// Whether some policy reads `context.session` (the decision point then adds it to every
    /// request).
    pub fn reads_session(&self) -> bool {
        self.reads_session
    }

    /// Whether some policy may read the session's call counts (`context.session.calls`,
    /// `calls_last_minute`, `calls_last_hour`): an over-approximation from the policy texts,
    /// never missing one that does.
    pub fn reads_session_calls(&self) -> bool {
        self.reads_session_calls
    }

    /// The content hash of this policy set: `sha256:<hex>`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Each policy's text (as hashed into the version), by id.
    pub fn policy_texts(&self) -> &std::collections::BTreeMap<String, String> {
        &self.texts
    }

    /// Each policy's `@owner`, by id (`None` where a policy declares none).
    pub fn owners(&self) -> std::collections::BTreeMap<String, Option<String>> {
        self.meta
            .iter()
            .map(|(id, m)| (id.to_string(), m.owner.clone()))
            .collect()
    }

    /// The directory this snapshot was loaded from, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// Action names known to this snapshot (schema actions, or those the policies name).
    pub fn actions(&self) -> &[String] {
        &self.actions
    }

    /// Metadata of a policy by id.
    pub fn policy(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(&PolicyId::new(id))
    }

    /// Policy ids, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.meta.keys().map(ToString::to_string).collect();
        ids.sort();
        ids
    }

    /// The underlying Cedar policy set (for benchmarks and embedding).
    pub fn cedar_policies(&self) -> &PolicySet {
        &self.set
    }

    /// The stored entities (for benchmarks and embedding).
    pub fn cedar_entities(&self) -> &Entities {
        &self.entities
    }

    /// The attributes `entities.json` gives `kind::"id"`, as written there (`None` when it
    /// does not declare the entity; an empty map when it declares it without attributes).
    pub fn stored_attributes(
        &self,
        kind: &str,
        id: &str,
    ) -> Option<serde_json::Map<String, Value>> {
        let stored = self.entity_json.get(&(kind.to_owned(), id.to_owned()))?;
        Some(
            stored
                .get("attrs")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// Whether the stored entities (`entities.json`) declare `kind::"id"`.
    pub fn has_entity(&self, kind: &str, id: &str) -> bool {
        let Ok(kind) = cedar_policy::EntityTypeName::from_str(kind) else {
            return false;
        };
        let uid =
            cedar_policy::EntityUid::from_type_name_and_id(kind, cedar_policy::EntityId::new(id));
        self.entities.get(&uid).is_some()
    }

    /// The schema, when the directory has one.
    pub fn cedar_schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    /// An empty snapshot: every request is denied (no policy permits anything).
    pub fn empty() -> Self {
        // An empty source list cannot fail to load.
        match Self::from_sources(&[], None, None) {
            Ok(p) => p,
            Err(_) => Self {
                set: PolicySet::new(),
                schema: None,
                context_shapes: crate::explain::ContextShapes::default(),
                entities: Entities::empty(),
                entity_json: HashMap::new(),
                entity_index: BTreeMap::new(),
                actions: Vec::new(),
                meta: HashMap::new(),
                authorizer: Authorizer::new(),
                type_names: HashMap::new(),
                row_scoped: HashSet::new(),
                row_forbids: false,
                runtime: HashMap::new(),
                reads_session: false,
                reads_session_calls: false,
                version: content_version(&mut Vec::new(), None, None),
                texts: std::collections::BTreeMap::new(),
                root: None,
            },
        }
    }
}

/// Hashes a canonical form of the set: policies sorted by id (so file order does not
/// matter), then the schema text and the entities as canonical JSON.
fn content_version(
    policies: &mut [(String, String)],
    schema_src: Option<&str>,
    entities_src: Option<&str>,
) -> String {
    policies.sort();
    let mut h = Sha256::new();
    h.update(b"arbiter-policy-set/v1\n");
    for (id, text) in policies.iter() {
        h.update(b"policy\0");
        h.update(id.as_bytes());
        h.update(b"\0");
        h.update(text.as_bytes());
        h.update(b"\0");
    }
    if let Some(schema) = schema_src {
        h.update(b"schema\0");
        h.update(schema.trim().as_bytes());
        h.update(b"\0");
    }
    if let Some(entities) = entities_src {
        h.update(b"entities\0");
        // Canonical JSON when it parses (it always does by now), so formatting is irrelevant.
        match serde_json::from_str::<Value>(entities) {
            Ok(v) => h.update(canonical_json(&v).as_bytes()),
            Err(_) => h.update(entities.as_bytes()),
        }
        h.update(b"\0");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// JSON with object keys sorted and no insignificant whitespace.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        map.get(k).map_or_else(String::new, canonical_json)
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Reads every file of interest under `dir`, sorted by relative path.
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, LoadErrors> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        LoadErrors(vec![SourceError::in_file(
            dir,
            format!("cannot read the policy directory: {e}"),
        )])
    })?;
    if !meta.is_dir() {
        return Err(LoadErrors(vec![
            SourceError::in_file(dir, "is not a directory")
                .with_help("pass the directory that holds your `*.cedar` files"),
        ]));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs = dir.join(&rel_dir);
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) => {
                errors.push(SourceError::in_file(&rel_dir, format!("cannot read: {e}")));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if name_str.starts_with('.') {
                continue;
            }
            let rel = rel_dir.join(&name);
            let Ok(ft) = entry.file_type() else { continue };
            let is_dir = ft.is_dir() || (ft.is_symlink() && entry.path().is_dir());
            if is_dir {
                if !(rel_dir.as_os_str().is_empty() && name_str == TESTS_DIR) {
                    stack.push(rel);
                }
                continue;
            }
            let top = rel_dir.as_os_str().is_empty();
            let wanted = rel.extension().is_some_and(|e| e == "cedar")
                || (top && (name_str == SCHEMA_FILE || name_str == ENTITIES_FILE));
            if !wanted {
                continue;
            }
            match std::fs::read_to_string(entry.path()) {
                Ok(text) => out.push((rel, text)),
                Err(e) => errors.push(SourceError::in_file(&rel, format!("cannot read: {e}"))),
            }
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

type EntityRows = Vec<(String, String, Value)>;

/// Parses `entities.json` with Cedar (schema-checked when there is a schema) and keeps each
/// entity's JSON for merging request properties over it.
fn load_entities(
    src: &str,
    schema: Option<&Schema>,
) -> Result<(Entities, EntityRows), SourceError> {
    let file = Path::new(ENTITIES_FILE);
    let value: Value = serde_json::from_str(src).map_err(|e| {
        SourceError {
            file: file.to_path_buf(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: format!("invalid JSON: {e}"),
            help: Some("the file holds a JSON array of Cedar entities: [{\"uid\": {\"type\": \"User\", \"id\": \"alice\"}, \"attrs\": {}, \"parents\": []}]".into()),
        }
    })?;
    let Value::Array(items) = &value else {
        return Err(SourceError::in_file(
            file,
            "must be a JSON array of entities",
        ));
    };
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let uid = item.get("uid").map(|u| u.get("__entity").unwrap_or(u));
        let kind = uid.and_then(|u| u.get("type")).and_then(Value::as_str);
        let id = uid.and_then(|u| u.get("id")).and_then(Value::as_str);
        match (kind, id) {
            (Some(kind), Some(id)) => rows.push((kind.to_owned(), id.to_owned(), item.clone())),
            _ => {
                return Err(SourceError::in_file(
                    file,
                    format!("entity [{i}] has no `uid` with a string `type` and `id`"),
                ));
            }
        }
    }
    let entities = Entities::from_json_value(value, schema).map_err(|e| {
        SourceError::from_diagnostic(file, src, &e).with_help(
            "entities must follow Cedar's JSON entity format and, when there is one, the schema",
        )
    })?;
    Ok((entities, rows))
}

/// Whether a policy's text reads `context.session` (`.session` or `["session"]` not followed
/// by more of a name). Errs towards yes: a yes only adds the member to requests.
/// Whether `text` names a call count of the session: `calls`, `calls_last_minute` or
/// `calls_last_hour`.
fn reads_session_calls(text: &str) -> bool {
    ["calls", "calls_last_minute", "calls_last_hour"]
        .iter()
        .any(|name| names_attribute(text, name))
}

fn reads_session(text: &str) -> bool {
    names_attribute(text, "session")
}

/// Whether `text` names attribute `name`: `.name` (not a longer identifier) or `"name"`.
fn names_attribute(text: &str, name: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(name).any(|(at, _)| {
        let before = &text[..at];
        let after = &text[at + name.len()..];
        (before.ends_with('.') && !ident(after.chars().next()))
            || (before.ends_with('"') && after.starts_with('"'))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn src(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn version_ignores_file_order_but_not_content() {
        let a = src("a.cedar", "@id(\"a\") permit(principal, action, resource);");
        let b = src("b.cedar", "@id(\"b\") forbid(principal, action, resource);");
        let v1 = Policies::from_sources(&[a.clone(), b.clone()], None, None).unwrap();
        let v2 = Policies::from_sources(&[b.clone(), a.clone()], None, None).unwrap();
        assert_eq!(v1.version(), v2.version());
        // The same policies split differently across files: ids are annotations, so same version.
        let joined = src("all.cedar", &format!("{}\n{}", a.text, b.text));
        let v3 = Policies::from_sources(&[joined], None, None).unwrap();
        assert_eq!(v1.version(), v3.version());
        let changed = src(
            "b.cedar",
            "@id(\"b\") forbid(principal, action, resource) when { false };",
        );
        let v4 = Policies::from_sources(&[a, changed], None, None).unwrap();
        assert_ne!(v1.version(), v4.version());
        assert!(v1.version().starts_with("sha256:"));
    }

    #[test]
    fn ids_default_to_file_and_line() {
        let p = Policies::from_sources(
            &[src(
                "x/y.cedar",
                "permit(principal, action, resource);\n\nforbid(principal, action, resource);",
            )],
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.policy_ids(), vec!["x/y.cedar:1", "x/y.cedar:3"]);
    }

    #[test]
    fn parse_errors_name_file_line_and_column() {
        let err = Policies::from_sources(
            &[src(
                "bad.cedar",
                "permit(principal, action, resource);\npermit(principal, action resource);",
            )],
            None,
            None,
        )
        .unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.file, PathBuf::from("bad.cedar"));
        assert_eq!(e.line, Some(2));
        assert!(e.column.is_some());
        assert!(err.to_string().starts_with("bad.cedar:2:"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let err = Policies::from_sources(
            &[
                src("a.cedar", "@id(\"p\") permit(principal, action, resource);"),
                src("b.cedar", "@id(\"p\") permit(principal, action, resource);"),
            ],
            None,
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("policy id `p` is already used at a.cedar:1"),
            "{err}"
        );
    }

    #[test]
    fn templates_are_refused() {
        let err = Policies::from_sources(
            &[src(
                "t.cedar",
                "permit(principal == ?principal, action, resource);",
            )],
            None,
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("templates are not supported"),
            "{err}"
        );
    }

    #[test]
    fn validation_errors_point_into_the_policy_file() {
        let schema = crate::VOCABULARY;
        let err = Policies::from_sources(
            &[src(
                "p.cedar",
                "permit(principal is Agent, action == Action::\"call_tool\", resource)\nwhen { resource.nmae == \"x\" };",
            )],
            Some(schema),
            None,
        )
        .unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.file, PathBuf::from("p.cedar"));
        assert_eq!(e.line, Some(2), "{err}");
    }

    #[test]
    fn actions_come_from_schema_or_policies() {
        let p = Policies::from_sources(
            &[src(
                "p.cedar",
                "permit(principal, action in [Action::\"b\", Action::\"a\"], resource);",
            )],
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.actions(), ["a", "b"]);
        let p = Policies::from_sources(&[], Some(crate::VOCABULARY), None).unwrap();
        assert!(p.actions().iter().any(|a| a == "call_tool"));
    }

    #[test]
    fn call_counts_are_read_when_named_as_an_attribute_or_a_string() {
        for text in [
            "when { context.session.calls > 3 }",
            "when { context.session.calls_last_minute >= 2 }",
            "when { context.session[\"calls_last_hour\"] > 1 }",
        ] {
            assert!(reads_session_calls(text), "{text}");
        }
        for text in [
            "when { context.session.labels.contains(\"x\") }",
            "when { context.recalls > 1 }",
            "when { context.calls_made > 1 }",
        ] {
            assert!(!reads_session_calls(text), "{text}");
        }
    }
}
