//! Any bytes as SQL from an agent: the analysis never panics, and whatever it accepts is
//! narrowed (a row filter on every table a row filter could apply to) without panicking; a
//! narrowed statement parses, analyzes, and carries the filter exactly once per place the
//! original named a narrowed table.
#![no_main]

use arbiter_sql::proxy::asks_for;
use arbiter_sql::rewrite::{Narrowing, narrow};
use arbiter_sql::{ParserSettings, ReferenceRole, analyze};
use arbiter_types::rows::CmpOp;
use arbiter_types::{RowExpr, RowFilter, RowPolicies};
use libfuzzer_sys::fuzz_target;

const MARK: &str = "ⓐⓡⓑ";

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if sql.len() > 16 * 1024 {
        return;
    }
    let Ok(analysis) = analyze(sql) else {
        return;
    };
    let filter = RowFilter {
        parts: vec![RowPolicies {
            principal: "Agent::\"fuzz\"".into(),
            permits: vec![(
                "p".into(),
                RowExpr::Cmp(
                    CmpOp::Eq,
                    Box::new(RowExpr::Column("tenant".into())),
                    Box::new(RowExpr::Str(MARK.into())),
                ),
            )],
            forbids: Vec::new(),
        }],
    };
    let mut narrowings: Vec<Narrowing> = Vec::new();
    for ask in asks_for(&analysis, "db").into_iter().filter(|a| a.rows) {
        let props = ask.resource.properties.unwrap_or_default();
        let field = |k: &str| props.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let (schema, name) = (field("schema"), field("name"));
        if !narrowings.iter().any(|n| n.schema == schema && n.name == name) {
            narrowings.push(Narrowing {
                schema,
                name,
                filter: filter.clone(),
            });
        }
    }
    if narrowings.is_empty() {
        return;
    }
    let Ok(out) = narrow(sql, ParserSettings::default(), &analysis, &narrowings) else {
        return;
    };
    let again = analyze(&out).expect("a narrowed statement must analyze");
    assert_eq!(again.statements.len(), analysis.statements.len(), "{sql} => {out}");
    if !sql.contains(MARK) {
        let places = analysis
            .statements
            .iter()
            .flat_map(|s| &s.references)
            .filter(|r| {
                r.role != ReferenceRole::Other
                    && narrowings.iter().any(|n| {
                        n.name == r.name && n.schema == r.schema.as_deref().unwrap_or("public")
                    })
            })
            .count();
        assert_eq!(out.matches(MARK).count(), places, "{sql} => {out}");
    }
});
