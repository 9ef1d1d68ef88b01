//! `arbiter policy validate|test|init|schema`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use arbiter_policy::{Policies, VOCABULARY, load_test_suite, run_tests};

use crate::cli::PolicyCommand;
use crate::out::{EXIT_ERROR, EXIT_OK, print};

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir } => validate(&dir),
        PolicyCommand::Test { dir } => test(&dir),
        PolicyCommand::Init { dir } => init(&dir),
        PolicyCommand::Schema => {
            print(VOCABULARY)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Policies> {
    Policies::load_dir(dir).map_err(|e| {
        // Each diagnostic is `file:line:column: error: …` already; the summary is the error.
        eprintln!("{e}");
        anyhow::anyhow!("{} error(s) in `{}`", e.0.len(), dir.display())
    })
}

fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let p = load(dir)?;
    print(&format!(
        "ok: {} policies{}, version {}",
        p.len(),
        if p.has_schema() {
            ", validated against schema.cedarschema"
        } else {
            " (no schema: not type-checked)"
        },
        p.version()
    ))?;
    Ok(ExitCode::SUCCESS)
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
