//! Any bytes as an MCP message from an agent or a server: the strict JSON-RPC parse never
//! panics; whatever it accepts re-serializes to a message that parses back to the same value
//! (the gateway forwards only its own encoding), and the arguments of an accepted tools/call
//! convert to Cedar values without panicking.
#![no_main]

use arbiter_mcp::jsonrpc::{FrameLimits, Message, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits {
        max_bytes: 64 * 1024,
        max_depth: 16,
    };
    let Ok(message) = parse(data, limits) else {
        return;
    };
    let bytes = message.to_bytes();
    assert!(!bytes.contains(&b'\n'), "a frame must stay on one line");
    let again = parse(&bytes, FrameLimits { max_bytes: usize::MAX, max_depth: 16 })
        .expect("the gateway's own encoding must parse");
    assert_eq!(again, message);
    if let Message::Request { params: Some(p), .. } = &message
        && let Some(args) = p.get("arguments").and_then(|a| a.as_object())
    {
        let _ = arbiter_mcp::values::cedar_record(args);
    }
});
