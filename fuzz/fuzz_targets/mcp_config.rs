//! Any bytes as an MCP client configuration file (`arbiter gap --mcp-config`): parsing never
//! panics, and what it accepts keeps the caps and names something to run or call.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(servers) = arbiter_gap::mcp::parse(data) {
        assert!(
            servers.len() <= arbiter_gap::mcp::MAX_SERVERS,
            "more servers than the cap"
        );
        for s in &servers {
            assert!(
                s.command.is_some() || s.url.is_some(),
                "a server with nothing to run or call"
            );
            assert!(s.args.len() <= arbiter_gap::mcp::MAX_ARGS, "more arguments than the cap");
            assert!(
                s.wrapped_as.as_ref().is_none_or(|n| !n.is_empty()),
                "wrapped under an empty name"
            );
        }
    }
});
