//! Any bytes through the AuthZEN intake: size/depth checks, JSON, and every request parser.
#![no_main]

use arbiter_types::json::parse_bounded;
use arbiter_types::{EvaluationRequest, EvaluationsRequest, JsonLimits, SearchKind, SearchRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = JsonLimits { max_bytes: 64 * 1024, max_depth: 32 };
    let Ok(map) = parse_bounded(data, limits) else { return };
    let _ = EvaluationRequest::from_json(map.clone());
    if let Ok(batch) = EvaluationsRequest::from_json(map.clone()) {
        for item in batch.items.into_iter().flatten().flatten() {
            let _ = item.with_defaults(&batch.defaults).complete();
        }
    }
    for kind in [SearchKind::Subject, SearchKind::Resource, SearchKind::Action] {
        let _ = SearchRequest::from_json(kind, map.clone());
    }
});
