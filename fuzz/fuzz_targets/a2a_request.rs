//! Any bytes as an A2A request from an agent: the strict JSON-RPC parse and the reading of
//! the method's parameters never panic; a request the gateway accepts has no member spelled
//! with `_` outside the free-form values, and what it forwards (its own encoding) parses back
//! to the same request.
#![no_main]

use arbiter_a2a::wire::{Method, read};
use arbiter_pep::jsonrpc::{FrameLimits, Message, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits {
        max_bytes: 64 * 1024,
        max_depth: 16,
    };
    let Ok(Message::Request { id, method, params }) = parse(data, limits) else {
        return;
    };
    let Ok(kind) = Method::parse(&method) else {
        return;
    };
    let Ok(request) = read(kind, params.as_ref()) else {
        return;
    };
    assert_eq!(request.method, kind);
    let forwarded = Message::Request { id, method, params };
    let again = parse(
        &forwarded.to_bytes(),
        FrameLimits {
            max_bytes: usize::MAX,
            max_depth: 16,
        },
    )
    .expect("the gateway's own encoding must parse");
    assert_eq!(again, forwarded);
});
