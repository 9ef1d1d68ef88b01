//! Policy tests: cases kept beside the policies, run by `arbiter policy test`.
//!
//! A policy directory's `tests/` folder holds `*.json` files, each a JSON array of cases (or
//! one case object). A case is an AuthZEN request, the expected outcome and, optionally, the
//! exact determining policies:
//!
//! ```json
//! [{"name": "agent reads a ticket",
//!   "request": {"subject": {…}, "action": {…}, "resource": {…}, "context": {…}},
//!   "expect": "allow",
//!   "determining_policies": ["read-tickets"]}]
//! ```

use std::path::{Path, PathBuf};

use arbiter_types::{EvaluationRequest, JsonLimits, Outcome, json::parse_bounded};
use serde_json::Value;

use crate::diagnostic::{LoadErrors, SourceError};
use crate::engine::Evaluation;
use crate::load::{Policies, TESTS_DIR};

/// One test case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub file: PathBuf,
    pub name: String,
    pub request: EvaluationRequest,
    pub expect: Outcome,
    pub determining_policies: Option<Vec<String>>,
}

/// The result of running one case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub case: TestCase,
    pub got: Evaluation,
    /// `None` when the case passed; otherwise what differed.
    pub failure: Option<String>,
}

/// The cases under `dir/tests/` that could be read, and what could not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestSuite {
    /// Every well-formed case, sorted by file then position.
    pub cases: Vec<TestCase>,
    /// One entry per file that could not be read or parsed, and per malformed case. A
    /// malformed case does not stop the others from running.
    pub errors: Vec<SourceError>,
}

/// Loads every case under `dir/tests/`, sorted by file then position; fails if any file or
/// case is malformed (see [`load_test_suite`] to run the rest all the same).
pub fn load_tests(dir: &Path) -> Result<Vec<TestCase>, LoadErrors> {
    let suite = load_test_suite(dir);
    if suite.errors.is_empty() {
        Ok(suite.cases)
    } else {
        Err(LoadErrors(suite.errors))
    }
}

/// Loads what can be loaded under `dir/tests/`: the well-formed cases, and an error for each
/// file or case that is not.
pub fn load_test_suite(dir: &Path) -> TestSuite {
    let tests_dir = dir.join(TESTS_DIR);
    let mut suite = TestSuite::default();
    if !tests_dir.is_dir() {
        return suite;
    }
    let entries = match std::fs::read_dir(&tests_dir) {
        Ok(entries) => entries,
        Err(e) => {
            suite.errors.push(SourceError::in_file(
                &tests_dir,
                format!("cannot read: {e}"),
            ));
            return suite;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut read = Vec::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => read.push((rel, text)),
            Err(e) => suite
                .errors
                .push(SourceError::in_file(&rel, format!("cannot read: {e}"))),
        }
    }
    let mut parsed = test_suite_of(&read);
    suite.errors.append(&mut parsed.errors);
    parsed.errors = suite.errors;
    parsed
}

/// The test suite in test files given in memory (paths relative to the policy directory,
/// e.g. `tests/cases.json`, in the order to run them).
pub fn test_suite_of(files: &[(PathBuf, String)]) -> TestSuite {
    let mut suite = TestSuite::default();
    for (rel, text) in files {
        let (mut cases, mut errors) = parse_cases_lenient(rel, text);
        suite.cases.append(&mut cases);
        suite.errors.append(&mut errors);
    }
    suite
}

/// Parses one test file.
pub fn parse_cases(file: &Path, text: &str) -> Result<Vec<TestCase>, Vec<SourceError>> {
    let (cases, errors) = parse_cases_lenient(file, text);
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

/// Parses one test file: the well-formed cases, and an error per malformed one (or one for
/// the whole file when it is not a JSON array or object).
fn parse_cases_lenient(file: &Path, text: &str) -> (Vec<TestCase>, Vec<SourceError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let error = SourceError {
                file: file.to_path_buf(),
                line: Some(e.line()),
                column: Some(e.column()),
                message: format!("invalid JSON: {e}"),
                help: None,
            };
            return (Vec::new(), vec![error]);
        }
    };
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            let error = SourceError::in_file(file, "must be a JSON array of test cases");
            return (Vec::new(), vec![error]);
        }
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match parse_case(file, i, item) {
            Ok(c) => cases.push(c),
            Err(e) => errors.push(e),
        }
    }
    (cases, errors)
}

fn parse_case(file: &Path, i: usize, item: Value) -> Result<TestCase, SourceError> {
    let err = |msg: String| {
        SourceError::in_file(file, format!("case [{i}]: {msg}"))
            .with_help("a case is {\"name\": …, \"request\": {AuthZEN request}, \"expect\": \"allow\" | \"deny\", \"determining_policies\": [optional ids]}")
    };
    let Value::Object(mut obj) = item else {
        return Err(err("must be an object".into()));
    };
    let name = match obj.remove("name") {
        Some(Value::String(s)) => s,
        None => format!("case {i}"),
        Some(_) => return Err(err("`name` must be a string".into())),
    };
    let request = match obj.remove("request") {
        Some(r) => {
            let bytes = serde_json::to_vec(&r).map_err(|e| err(e.to_string()))?;
            let map = parse_bounded(&bytes, JsonLimits::default())
                .map_err(|e| err(format!("`request`: {e}")))?;
            EvaluationRequest::from_json(map)
                .map_err(|e| err(format!("`request.{}` {}", e.field, e.problem)))?
        }
        None => return Err(err("`request` is missing".into())),
    };
    let expect = match obj.remove("expect") {
        Some(Value::String(s)) if s == "allow" => Outcome::Allow,
        Some(Value::String(s)) if s == "deny" => Outcome::Deny,
        Some(Value::Bool(true)) => Outcome::Allow,
        Some(Value::Bool(false)) => Outcome::Deny,
        _ => return Err(err("`expect` must be \"allow\" or \"deny\"".into())),
    };
    let determining_policies = match obj.remove("determining_policies") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => Some(
            ids.into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(err("`determining_policies` must hold strings".into())),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(err("`determining_policies` must be an array".into())),
    };
    Ok(TestCase {
        file: file.to_path_buf(),
        name,
        request,
        expect,
        determining_policies,
    })
}

/// Runs cases against a snapshot.
pub fn run_tests(policies: &Policies, cases: &[TestCase]) -> Vec<TestResult> {
    cases
        .iter()
        .map(|case| {
            // The same semantics as the decision point, delegation intersection included.
            let (got, _) = crate::delegation::evaluate(policies, &case.request);
            let mut problems = Vec::new();
            if got.outcome != case.expect {
                problems.push(format!(
                    "expected {}, got {} ({})",
                    case.expect.as_str(),
                    got.outcome.as_str(),
                    got.reason_admin
                ));
            }
            if let Some(expected) = &case.determining_policies {
                let mut expected = expected.clone();
                expected.sort();
                if expected != got.determining_policies {
                    problems.push(format!(
                        "expected determining policies {:?}, got {:?}",
                        expected, got.determining_policies
                    ));
                }
            }
            TestResult {
                case: case.clone(),
                got,
                failure: if problems.is_empty() {
                    None
                } else {
                    Some(problems.join("; "))
                },
            }
        })
        .collect()
}
