//! Cedar policies for Arbiter: directories, validation, versions, the built-in agent
//! vocabulary, and the pure `evaluate()` every decision goes through.
//!
//! Nothing here does network I/O or keeps time; the only file access is loading a policy
//! directory. The decision path is [`Policies::evaluate`], a total function from a request to
//! an [`Evaluation`] (and [`delegation::evaluate`] intersects an agent's evaluation with the
//! user's it acts for), so it can be tested without a server, a clock or a disk.

mod convert;
pub mod delegation;
pub mod derive;
pub mod diagnostic;
pub mod engine;
mod error;
mod explain;
pub mod load;
pub mod rows;
pub mod runtime;
pub mod search;
pub mod testing;

pub use derive::{ASSERTED_CONTEXT_KEY, derived_attributes};
pub use diagnostic::{LoadErrors, SourceError};
pub use engine::Evaluation;
pub use error::{RequestError, RowsError};
pub use load::{ENTITIES_FILE, Policies, PolicyMeta, SCHEMA_FILE, SourceFile, TESTS_DIR};
pub use rows::{ROW_TYPE, Rows};
pub use testing::{
    TestCase, TestResult, TestSuite, load_test_suite, load_tests, run_tests, test_suite_of,
};

/// The built-in agent vocabulary, a Cedar schema (see `docs/vocabulary.md`).
pub const VOCABULARY: &str = include_str!("vocabulary.cedarschema");

/// The Cedar engine version Arbiter evaluates with.
pub const ENGINE: &str = "cedar";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::Value;

    /// Whether `sup` declares everything `sub` does, the same way: every member of an object
    /// is there with a value that contains `sub`'s; everything else is equal.
    fn contains(sup: &Value, sub: &Value, path: &str) -> Result<(), String> {
        match (sup, sub) {
            (Value::Object(a), Value::Object(b)) => {
                b.iter().try_for_each(|(k, v)| match a.get(k) {
                    Some(w) => contains(w, v, &format!("{path}.{k}")),
                    None => Err(format!("{path}.{k} is missing")),
                })
            }
            _ if sup == sub => Ok(()),
            _ => Err(format!("{path} differs: {sup} instead of {sub}")),
        }
    }

    /// The quickstart's schema is the built-in vocabulary with the quickstart's own
    /// declarations added (tool arguments, route parameters, row columns): everything the
    /// vocabulary declares, it declares the same way, so it cannot drift from it.
    #[test]
    fn the_quickstart_schema_extends_the_vocabulary() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/quickstart/schema.cedarschema");
        let quickstart = std::fs::read_to_string(path).unwrap();
        let (sup, _) = cedar_policy::schema_str_to_json_with_resolved_types(&quickstart).unwrap();
        let (sub, _) =
            cedar_policy::schema_str_to_json_with_resolved_types(crate::VOCABULARY).unwrap();
        contains(&sup, &sub, "schema").unwrap_or_else(|e| {
            panic!(
                "examples/quickstart/schema.cedarschema no longer extends the vocabulary ({e}): \
                 apply the change of crates/arbiter-policy/src/vocabulary.cedarschema to it"
            )
        });
        // It does add something: the arguments of the MCP tools.
        assert!(contains(&sub, &sup, "schema").is_err());
    }
}
