//! Any request that parses is evaluated against the quickstart and a schema-less policy set:
//! evaluation is total (never panics) and fails closed.
#![no_main]

use std::sync::OnceLock;

use arbiter_policy::{Policies, SourceFile};
use arbiter_types::json::parse_bounded;
use arbiter_types::{EvaluationRequest, JsonLimits};
use libfuzzer_sys::fuzz_target;

fn sets() -> &'static [Policies] {
    static SETS: OnceLock<Vec<Policies>> = OnceLock::new();
    SETS.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let quickstart = Policies::load_dir(&root.join("examples/quickstart")).ok();
        let bench = Policies::load_dir(&root.join("bench/fixtures/bench-cedar")).ok();
        let loose = Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: r#"permit(principal, action, resource) when { context.n + 1 > 0 && principal.tags.contains("x") };
                         forbid(principal, action, resource) when { resource.level > 9223372036854775806 + 1 };"#.into(),
            }],
            None,
            None,
        )
        .ok();
        [quickstart, bench, loose].into_iter().flatten().collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(map) = parse_bounded(data, JsonLimits { max_bytes: 64 * 1024, max_depth: 16 }) else { return };
    let Ok(req) = EvaluationRequest::from_json(map) else { return };
    for p in sets() {
        let e = p.evaluate(&req);
        // Fail closed: an evaluation with errors is never an allow.
        assert!(e.errors.is_empty() || !e.outcome.is_allow());
    }
});
