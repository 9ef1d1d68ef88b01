//! Per-statement cost of the SQL guard's own work, in process: the analysis (PostgreSQL's
//! parser through pg_query, the tree walk, the fingerprint), the questions asked, the row
//! filter (Cedar partial evaluation and its translation) beside a plain evaluation of the same
//! request, and the rewrite that applies it. Measured interleaved, rounds of each in turn, so
//! that machine noise hits all alike; prints the median per operation.
//!
//! Run: `cargo bench -p arbiter-sql --bench statement`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use arbiter_policy::{Policies, Rows, SourceFile};
use arbiter_sql::proxy::asks_for;
use arbiter_sql::rewrite::{Narrowing, narrow};
use arbiter_sql::{ParserSettings, analyze};
use arbiter_types::{Action, Entity, EvaluationRequest, RowFilter};

const PGBENCH: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const JOIN: &str = "WITH recent AS (SELECT * FROM orders WHERE total > 100) \
    SELECT o.id, c.name FROM recent o JOIN customers c ON c.id = o.customer \
    WHERE c.id IN (SELECT customer FROM orders) ORDER BY o.id";

fn request(kind: &str, id: &str) -> EvaluationRequest {
    EvaluationRequest {
        subject: Entity {
            kind: "Agent".into(),
            id: "bot".into(),
            properties: serde_json::json!({"tenant": "acme"}).as_object().cloned(),
        },
        action: Action {
            name: "select".into(),
            properties: None,
        },
        resource: Entity {
            kind: kind.into(),
            id: id.into(),
            properties: None,
        },
        context: serde_json::Map::new(),
    }
}

fn main() {
    let policies = Policies::from_sources(
        &[SourceFile {
            path: "p.cedar".into(),
            text: r#"
            permit (principal is Agent, action == Action::"select", resource is Table)
            when { resource.name == "customers" };
            permit (principal is Agent, action == Action::"select",
                    resource is Row in Table::"shop.public.orders")
            when { principal has tenant && resource.tenant == principal.tenant };
            "#
            .into(),
        }],
        None,
        None,
    )
    .unwrap();
    let table = request("Table", "shop.public.orders");
    let Rows::Some(part) = policies.rows(&table).unwrap() else {
        panic!("no rows")
    };
    let narrowing = [Narrowing {
        schema: "public".into(),
        name: "orders".into(),
        filter: RowFilter { parts: vec![part] },
    }];
    let join = analyze(JOIN).unwrap();

    type Op<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let ops: Vec<Op> = vec![
        (
            "analyze: pgbench -S select",
            Box::new(|| {
                black_box(analyze(black_box(PGBENCH)).unwrap());
            }),
        ),
        (
            "analyze: CTE, join, subquery",
            Box::new(|| {
                black_box(analyze(black_box(JOIN)).unwrap());
            }),
        ),
        (
            "questions (asks_for): CTE, join, subquery",
            Box::new(|| {
                black_box(asks_for(black_box(&join), "shop"));
            }),
        ),
        (
            "evaluate: the table as a whole",
            Box::new(|| {
                black_box(policies.evaluate(black_box(&table)));
            }),
        ),
        (
            "row filter: partial evaluation + translation",
            Box::new(|| {
                black_box(policies.rows(black_box(&table)).unwrap());
            }),
        ),
        (
            "narrow: CTE, join, subquery (2 references)",
            Box::new(|| {
                black_box(narrow(JOIN, ParserSettings::default(), &join, &narrowing).unwrap());
            }),
        ),
    ];
    const ROUNDS: usize = 15;
    const PER_ROUND: usize = 400;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    for (_, op) in &ops {
        for _ in 0..50 {
            op();
        }
    }
    for _ in 0..ROUNDS {
        for (i, (_, op)) in ops.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                op();
            }
            samples[i].push(start.elapsed().as_secs_f64() * 1e6 / PER_ROUND as f64);
        }
    }
    println!("{:<48} {:>12}", "operation", "median µs");
    for ((name, _), s) in ops.iter().zip(&mut samples) {
        s.sort_by(f64::total_cmp);
        println!("{:<48} {:>12.2}", name, s[s.len() / 2]);
    }
}
