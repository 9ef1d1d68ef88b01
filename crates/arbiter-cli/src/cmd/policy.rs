//! `arbiter policy validate|test|init|schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use arbiter_policy::{Policies, VOCABULARY, load_test_suite, run_tests};
use arbiter_types::{EvaluationRequest, EvaluationsRequest};
use serde_json::Value;

use crate::cli::PolicyCommand;
use crate::out::{EXIT_ERROR, EXIT_OK, print};

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir, requests } => validate(&dir, &requests),
        PolicyCommand::Test { dir } => test(&dir),
        PolicyCommand::Init { dir } => init(&dir),
        PolicyCommand::Schema => {
            print(VOCABULARY)?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Governed(cmd) => crate::cmd::governance::run(cmd),
    }
}

fn load(dir: &Path) -> anyhow::Result<Policies> {
    Policies::load_dir(dir).map_err(|e| {
        // Each diagnostic is `file:line:column: error: …` already; the summary is the error.
        eprintln!("{e}");
        anyhow::anyhow!("{} error(s) in `{}`", e.0.len(), dir.display())
    })
}

fn validate(dir: &Path, requests: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let p = load(dir)?;
    let mut report = format!(
        "ok: {} policies{}, version {}",
        p.len(),
        if p.has_schema() {
            ", validated against schema.cedarschema"
        } else {
            " (no schema: not type-checked)"
        },
        p.version()
    );
    if !requests.is_empty() && !p.has_schema() {
        report.push_str("\nno schema: the requests are checked for their form only");
    }
    let mut invalid = 0;
    for file in requests {
        for (label, checked) in sample_requests(file) {
            match checked.and_then(|req| {
                arbiter_policy::delegation::validate(&p, &req).map_err(|e| e.to_string())
            }) {
                Ok(()) => report.push_str(&format!("\n{label}: valid")),
                Err(why) => {
                    invalid += 1;
                    report.push_str(&format!("\n{label}: invalid: {why}"));
                }
            }
        }
    }
    print(&report)?;
    Ok(ExitCode::from(if invalid == 0 {
        EXIT_OK
    } else {
        EXIT_ERROR
    }))
}

/// The requests of a `--request` file, each labelled for the report (`FILE`, or `FILE[i]`
/// when the file holds several): one AuthZEN evaluation request, a JSON array of them, or an
/// AuthZEN batch (`{"evaluations": [...]}` with defaults).
fn sample_requests(file: &Path) -> Vec<(String, Result<EvaluationRequest, String>)> {
    let name = file.display().to_string();
    let value = std::fs::read(file)
        .map_err(|e| format!("cannot read the file: {e}"))
        .and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("not JSON: {e}"))
        });
    let one = |v: Value| match v {
        Value::Object(map) => EvaluationRequest::from_json(map).map_err(|e| e.to_string()),
        _ => Err("not an AuthZEN evaluation request (a JSON object)".to_owned()),
    };
    match value {
        Err(e) => vec![(name, Err(e))],
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{name}[{i}]"), one(v)))
            .collect(),
        Ok(Value::Object(map)) if map.contains_key("evaluations") => {
            match EvaluationsRequest::from_json(map) {
                Err(e) => vec![(name, Err(e.to_string()))],
                Ok(batch) => match batch.items {
                    None => vec![(name, batch.defaults.complete().map_err(|e| e.to_string()))],
                    Some(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| {
                            let req = item
                                .and_then(|it| it.with_defaults(&batch.defaults).complete())
                                .map_err(|e| e.to_string());
                            (format!("{name}[{i}]"), req)
                        })
                        .collect(),
                },
            }
        }
        Ok(v) => vec![(name, one(v))],
    }
}

fn test(dir: &Path) -> anyhow::Result<ExitCode> {
    let p = load(dir)?;
    // A malformed case is reported and counted as failed; the others still run.
    let suite = load_test_suite(dir);
    if suite.cases.is_empty() && suite.errors.is_empty() {
        bail!("no test cases under `{}`", dir.join("tests").display());
    }
    let results = run_tests(&p, &suite.cases);
    let mut failed = 0;
    let mut report = String::new();
    for e in &suite.errors {
        report.push_str(&format!("{e}\n"));
    }
    for r in &results {
        match &r.failure {
            None => report.push_str(&format!(
                "ok    {} ({})\n",
                r.case.name,
                r.case.file.display()
            )),
            Some(why) => {
                failed += 1;
                report.push_str(&format!(
                    "FAIL  {} ({}): {why}\n",
                    r.case.name,
                    r.case.file.display()
                ));
            }
        }
    }
    let malformed = suite.errors.len();
    report.push_str(&format!(
        "policy tests: {} passed, {} failed{} (version {})",
        results.len() - failed,
        failed,
        if malformed == 0 {
            String::new()
        } else {
            format!(", {malformed} malformed")
        },
        p.version()
    ));
    print(&report)?;
    Ok(ExitCode::from(if failed == 0 && malformed == 0 {
        EXIT_OK
    } else {
        EXIT_ERROR
    }))
}

/// The quickstart example doubles as the scaffold, so the two cannot drift apart.
const SCAFFOLD: [(&str, &str); 4] = [
    (
        "policies.cedar",
        include_str!("../../../../examples/quickstart/policies.cedar"),
    ),
    (
        "entities.json",
        include_str!("../../../../examples/quickstart/entities.json"),
    ),
    (
        "tests/quickstart.json",
        include_str!("../../../../examples/quickstart/tests/quickstart.json"),
    ),
    ("schema.cedarschema", VOCABULARY),
];

fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read `{}`", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "`{}` already exists and is not empty; choose a new directory",
                dir.display()
            );
        }
    }
    for (name, content) in SCAFFOLD {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let p = load(dir)?;
    print(&format!(
        "created `{d}` with {} policies (version {}).\nnext: arbiter policy test {d}\n      arbiter serve --policies {d}",
        p.len(),
        p.version(),
        d = dir.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
