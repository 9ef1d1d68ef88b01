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
pub mod load;
pub mod rows;
pub mod search;
pub mod testing;

pub use derive::{ASSERTED_CONTEXT_KEY, derived_attributes};
pub use diagnostic::{LoadErrors, SourceError};
pub use engine::Evaluation;
pub use load::{ENTITIES_FILE, Policies, PolicyMeta, SCHEMA_FILE, SourceFile, TESTS_DIR};
pub use rows::{ROW_TYPE, Rows};
pub use testing::{TestCase, TestResult, TestSuite, load_test_suite, load_tests, run_tests};

/// The built-in agent vocabulary, a Cedar schema (see `docs/vocabulary.md`).
pub const VOCABULARY: &str = include_str!("vocabulary.cedarschema");

/// The Cedar engine version Arbiter evaluates with.
pub const ENGINE: &str = "cedar";
