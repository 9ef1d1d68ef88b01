//! Any bytes as a decision-log record payload: decoding never panics, and whatever decodes
//! re-encodes to exactly the same bytes (canonical form is unique).
#![no_main]

use arbiter_log::DecisionRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = DecisionRecord::from_canonical_bytes(data) {
        let again = record.canonical_bytes().expect("a decoded record re-encodes");
        assert_eq!(again, data, "decoded bytes must be canonical");
    }
});
