//! In-process decision cost: Arbiter's `evaluate` against bare Cedar, side by side.
//!
//! Variants, measured interleaved in the same run (so machine noise hits all alike):
//! - `cedar_prebuilt`: `Authorizer::is_authorized` on a Cedar `Request` and `Entities` built
//!   before timing — the floor, and the comparison the target is stated against;
//! - `cedar_from_json`: bare Cedar including building that request and those entities from the
//!   same AuthZEN JSON with Cedar's own JSON API — what any embedder of bare Cedar pays;
//! - `arbiter_evaluate`: `Policies::evaluate` on the parsed AuthZEN request: mapping,
//!   property merge, evaluation, fail-closed checks and reasons.
//!
//! Run: `cargo bench -p arbiter-policy --bench evaluate` (prints medians and ratios).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use arbiter_policy::{Policies, SourceFile};
use arbiter_types::json::parse_bounded;
use arbiter_types::{EvaluationRequest, JsonLimits};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
};
use serde_json::{Value, json};

struct Case {
    authzen: EvaluationRequest,
    raw: Value,
    cedar: (Request, Entities),
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(kind).unwrap(), EntityId::new(id))
}

/// Bare Cedar's own way from AuthZEN JSON to a request and entities.
fn cedar_from_json(raw: &Value) -> (Request, Entities) {
    let entity = |e: &Value| {
        Entity::from_json_value(
            json!({"uid": {"type": e["type"], "id": e["id"]}, "attrs": e.get("properties").cloned().unwrap_or(json!({})), "parents": []}),
            None,
        )
        .unwrap()
    };
    let s = &raw["subject"];
    let r = &raw["resource"];
    let entities = Entities::from_entities([entity(s), entity(r)], None).unwrap();
    let request = Request::new(
        uid(s["type"].as_str().unwrap(), s["id"].as_str().unwrap()),
        uid("Action", raw["action"]["name"].as_str().unwrap()),
        uid(r["type"].as_str().unwrap(), r["id"].as_str().unwrap()),
        Context::from_json_value(raw.get("context").cloned().unwrap_or(json!({})), None).unwrap(),
        None,
    )
    .unwrap();
    (request, entities)
}

/// Median ns per operation of `f`, over `rounds` slices of about `slice` each.
fn time_slice(f: &mut dyn FnMut(), slice: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < slice {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/fixtures");
    let policies = Policies::load_dir(&root.join("bench-cedar")).unwrap();
    let cases: Vec<Case> = std::fs::read_to_string(root.join("bench-requests.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            let raw = line["request"].clone();
            let map = parse_bounded(raw.to_string().as_bytes(), JsonLimits::default()).unwrap();
            let authzen = EvaluationRequest::from_json(map).unwrap();
            let expect = line["expect"].as_bool().unwrap();
            assert_eq!(
                policies.evaluate(&authzen).outcome.is_allow(),
                expect,
                "{}",
                line["name"]
            );
            let cedar = cedar_from_json(&raw);
            Case {
                authzen,
                raw,
                cedar,
            }
        })
        .collect();
    let authorizer = Authorizer::new();
    let set = policies.cedar_policies();

    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 15 };
    let slice = Duration::from_millis(if quick { 60 } else { 200 });
    let (mut prebuilt, mut from_json, mut arbiter) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % cases.len();
        &cases[i]
    };
    for _ in 0..rounds {
        prebuilt.push(
            time_slice(
                &mut || {
                    let c = next();
                    black_box(authorizer.is_authorized(&c.cedar.0, set, &c.cedar.1));
                },
                slice,
            ) / 1.0,
        );
        from_json.push(time_slice(
            &mut || {
                let c = next();
                let (req, ents) = cedar_from_json(black_box(&c.raw));
                black_box(authorizer.is_authorized(&req, set, &ents));
            },
            slice,
        ));
        arbiter.push(time_slice(
            &mut || {
                let c = next();
                black_box(policies.evaluate(black_box(&c.authzen)));
            },
            slice,
        ));
    }
    // Stored entities (the quickstart's helpdesk policies: agents and tools live in
    // entities.json, the request names them by id): Arbiter's work beyond Cedar is the mapping
    // and the decision record.
    let qs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let read = |name: &str| std::fs::read_to_string(qs_dir.join(name)).unwrap();
    let qs = Policies::from_sources(
        &[SourceFile {
            path: "policies.cedar".into(),
            text: read("policies.cedar"),
        }],
        Some(&read("schema.cedarschema")),
        Some(&read("entities.json")),
    )
    .unwrap();
    let qs_raw: Value = serde_json::from_str(
        &std::fs::read_to_string(qs_dir.join("requests/read-ticket.json")).unwrap(),
    )
    .unwrap();
    let mut qs_raw_nocontext = qs_raw.clone();
    qs_raw_nocontext.as_object_mut().unwrap().remove("context");
    let qs_req = EvaluationRequest::from_json(
        parse_bounded(
            qs_raw_nocontext.to_string().as_bytes(),
            JsonLimits::default(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(qs.evaluate(&qs_req).outcome.is_allow());
    let qs_cedar = Request::new(
        uid("Agent", "support-bot"),
        uid("Action", "call_tool"),
        uid("Tool", "helpdesk/read_ticket"),
        Context::empty(),
        qs.cedar_schema(),
    )
    .unwrap();
    let (mut qs_bare, mut qs_arbiter) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        qs_bare.push(time_slice(
            &mut || {
                black_box(authorizer.is_authorized(
                    black_box(&qs_cedar),
                    qs.cedar_policies(),
                    qs.cedar_entities(),
                ));
            },
            slice,
        ));
        qs_arbiter.push(time_slice(
            &mut || {
                black_box(qs.evaluate(black_box(&qs_req)));
            },
            slice,
        ));
    }
    let (qb, qa) = (median(qs_bare), median(qs_arbiter));

    let (p, j, a) = (median(prebuilt), median(from_json), median(arbiter));
    println!(
        "bench fixture: bench/fixtures/bench-cedar, {} requests round-robin, {rounds} interleaved rounds",
        cases.len()
    );
    println!("cedar_prebuilt    {:>9.0} ns/decision", p);
    println!("cedar_from_json   {:>9.0} ns/decision", j);
    println!("arbiter_evaluate  {:>9.0} ns/decision", a);
    println!("ratio arbiter/cedar_prebuilt  = {:.2}", a / p);
    println!("ratio arbiter/cedar_from_json = {:.2}", a / j);
    println!();
    println!("quickstart (stored entities, schema-validated request), {rounds} interleaved rounds");
    println!("cedar_prebuilt    {:>9.0} ns/decision", qb);
    println!("arbiter_evaluate  {:>9.0} ns/decision", qa);
    println!("ratio arbiter/cedar_prebuilt  = {:.2}", qa / qb);
}
