//! Any bytes as an access log scanned for LLM API callers with the built-in host list:
//! scanning never panics or fails on an in-memory reader, and the report's counts agree.
#![no_main]

use std::sync::OnceLock;

use arbiter_identity::{HostList, LogFormat, scan_access_log};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static HOSTS: OnceLock<HostList> = OnceLock::new();
    let hosts = HOSTS.get_or_init(HostList::default);
    let report = scan_access_log(std::io::Cursor::new(data), LogFormat::Auto, hosts)
        .expect("scanning an in-memory log never fails");
    assert!(
        report.lines >= report.matched,
        "more matched requests than lines"
    );
    assert!(
        report.lines >= report.matched + report.skipped_malformed,
        "lines counted twice"
    );
    let grouped: u64 = report.usages.iter().map(|u| u.requests).sum();
    assert_eq!(
        grouped + report.overflow_requests,
        report.matched,
        "matched requests lost"
    );
});
