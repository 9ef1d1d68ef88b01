//! Whatever a client sends, the server answers with 200, 400 or 413 — never a 500 or a panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{call, example, post_json, state_for};

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("subject"),
        Just("action"),
        Just("resource"),
        Just("context"),
        Just("type"),
        Just("id"),
        Just("name"),
        Just("properties"),
        Just("evaluations"),
        Just("options"),
        Just("page"),
        Just("evaluations_semantic"),
        Just("limit"),
        Just("token"),
        Just("__entity"),
        Just("__extn"),
        Just("fn"),
        Just("arg"),
        Just("x"),
    ]
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("Agent"),
            Just("Tool"),
            Just("call_tool"),
            Just("support-bot"),
            Just("helpdesk/read_ticket"),
            Just("execute_all"),
            Just("deny_on_first_deny"),
            Just("ip"),
            Just("decimal"),
            Just("::"),
            Just("A::B")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]
    #[test]
    fn any_json_body_gets_a_clean_answer(body in arb_json(), endpoint in 0usize..5) {
        let path = ["/access/v1/evaluation", "/access/v1/evaluations", "/access/v1/search/subject", "/access/v1/search/resource", "/access/v1/search/action"][endpoint];
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = state_for(&example("quickstart"));
        let reply = rt.block_on(call(&state, post_json(path, body.to_string())));
        prop_assert!(matches!(reply.status.as_u16(), 200 | 400 | 413), "{} -> {}", body, reply.status);
        let parsed: Value = serde_json::from_slice(&reply.body).unwrap();
        if reply.status == 200 {
            prop_assert!(parsed.get("decision").is_some() || parsed.get("evaluations").is_some() || parsed.get("results").is_some());
        } else {
            prop_assert!(parsed["error"]["code"].is_string());
        }
    }

    #[test]
    fn any_bytes_get_a_clean_answer(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = state_for(&example("quickstart"));
        let reply = rt.block_on(call(&state, post_json("/access/v1/evaluation", bytes)));
        prop_assert!(matches!(reply.status.as_u16(), 200 | 400 | 413));
    }
}
