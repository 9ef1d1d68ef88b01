//! Row filters applied to SQL: every reference to a filtered table is made to read only the
//! rows its filter allows.
//!
//! - A table read in a `FROM` (or `USING`, a join, a `MERGE` source; in any subquery, CTE or
//!   set operation) is replaced by `(SELECT * FROM <table> WHERE <filter>) AS <its alias or
//!   name>`, so every column reference through it keeps its meaning.
//! - The table an `UPDATE` or `DELETE` changes gets `<filter> AND (<its WHERE>)`.
//! - Any other use of a filtered table (an `INSERT`, `MERGE` or `COPY` target, `TABLESAMPLE`,
//!   `TRUNCATE`, `LOCK`, DDL) cannot be narrowed, and the statement is refused; so is an
//!   `UPDATE` that assigns a column its filter reads (it could move a row out of its filter).
//!
//! The filter is rendered as SQL text from the [`RowFilter`] (values are literals produced
//! here from the policies, identifiers are quoted), parsed with PostgreSQL's parser, grafted
//! into the statement's parse tree, and the whole tree is printed back with the parser's
//! deparser. Nothing of the agent's text is concatenated: its statement is only ever parsed.
//! The rewrite counts what it replaced against the analysis' references, and refuses if they
//! differ.
//!
//! The SQL keeps Cedar's semantics exactly: reading a `NULL` column is an error, as reading an
//! absent attribute is in Cedar, and errors are `NULL` all the way up (`&&`, `||` and `if` are
//! rendered with `CASE`, which short-circuits as Cedar does). A row passes when no permit or
//! forbid of a part is `NULL` (Arbiter denies on any evaluation error), some permit is true,
//! and every forbid is false.

use std::collections::HashMap;

use arbiter_types::rows::{ArithOp, CmpOp, LikePart};
use arbiter_types::{RowExpr, RowFilter, RowPolicies};
use pg_query::NodeEnum;
use pg_query::protobuf::{self, Node};

use crate::{Analysis, ParserSettings, ReferenceRole, StatementKind, children};

/// A table and the rows of it a statement may touch.
#[derive(Debug, Clone)]
pub struct Narrowing {
    /// The schema as policies name it (`public` when the text names none).
    pub schema: String,
    pub name: String,
    pub filter: RowFilter,
}

/// Longest identifier PostgreSQL keeps (longer ones are truncated, which could merge names).
const MAX_IDENTIFIER: usize = 63;

/// `sql` (as analyzed in `analysis`) rewritten so that each table in `narrowings` is read and
/// changed only where its filter allows. `Err` says why the statement cannot be narrowed.
pub fn narrow(
    sql: &str,
    settings: ParserSettings,
    analysis: &Analysis,
    narrowings: &[Narrowing],
) -> Result<String, String> {
    let find = |schema: &Option<String>, name: &str| {
        narrowings
            .iter()
            .position(|n| n.name == name && n.schema == schema.as_deref().unwrap_or("public"))
    };
    let mut from: HashMap<i32, usize> = HashMap::new();
    let mut target: HashMap<i32, usize> = HashMap::new();
    let mut referenced = vec![false; narrowings.len()];
    for statement in &analysis.statements {
        for r in &statement.references {
            let Some(i) = find(&r.schema, &r.name) else {
                continue;
            };
            referenced[i] = true;
            let label = format!("{}.{}", narrowings[i].schema, narrowings[i].name);
            match r.role {
                ReferenceRole::From => {
                    from.insert(r.location, i);
                }
                ReferenceRole::Target => {
                    target.insert(r.location, i);
                }
                ReferenceRole::Other => {
                    return Err(format!(
                        "only some rows of `{label}` are allowed, and this statement uses the table where rows cannot be narrowed (only reads, UPDATE and DELETE can be)"
                    ));
                }
            }
        }
        // An UPDATE must not move a row out of its filter.
        if statement.kind == StatementKind::Update {
            for t in &statement.tables {
                if t.access != crate::Access::Update {
                    continue;
                }
                let Some(i) = find(&t.schema, &t.name) else {
                    continue;
                };
                let guarded = narrowings[i].filter.columns();
                if let Some(c) = t.columns.iter().find(|c| guarded.contains(c)) {
                    return Err(format!(
                        "only some rows of `{}.{}` are allowed, and their filter reads the column `{c}` this statement assigns",
                        narrowings[i].schema, narrowings[i].name
                    ));
                }
            }
        }
    }
    let listed = |n: &Narrowing| {
        analysis.statements.iter().any(|s| {
            s.tables
                .iter()
                .any(|t| t.name == n.name && t.schema.as_deref().unwrap_or("public") == n.schema)
        })
    };
    if let Some(i) = (0..narrowings.len()).find(|&i| !referenced[i] && listed(&narrowings[i])) {
        return Err(format!(
            "only some rows of `{}.{}` are allowed, and the statement names the table where they cannot be narrowed",
            narrowings[i].schema, narrowings[i].name
        ));
    }

    let mut parsed = pg_query::parse(sql, settings.parser_options())
        .map_err(|e| format!("the statement does not parse: {e}"))?
        .protobuf;
    let mut state = State {
        narrowings,
        settings,
        from: &from,
        target: &target,
        done: 0,
        error: None,
    };
    for raw in &mut parsed.stmts {
        if let Some(stmt) = raw.stmt.as_deref_mut() {
            state.visit(stmt, 0);
        }
    }
    if let Some(e) = state.error {
        return Err(e);
    }
    if state.done != from.len() + target.len() {
        return Err(format!(
            "the statement could not be narrowed to the allowed rows ({} of {} table references rewritten)",
            state.done,
            from.len() + target.len()
        ));
    }
    let printed = pg_query::deparse(&parsed, pg_query::DeparseOptions::default())
        .map_err(|e| format!("the narrowed statement cannot be printed: {e}"))?;
    // The printed text must read back as what was printed: parsing it and printing it again
    // gives the same text, so the database runs the tree built here.
    let again = pg_query::parse(&printed, settings.parser_options())
        .and_then(|p| pg_query::deparse(&p.protobuf, pg_query::DeparseOptions::default()));
    match again {
        Ok(text) if text == printed => Ok(printed),
        _ => Err("the narrowed statement does not print back faithfully".into()),
    }
}

struct State<'a> {
    narrowings: &'a [Narrowing],
    settings: ParserSettings,
    from: &'a HashMap<i32, usize>,
    target: &'a HashMap<i32, usize>,
    done: usize,
    error: Option<String>,
}

/// Deeper than the analysis goes; past it the rewrite fails (closed).
const MAX_DEPTH: usize = 1024;

impl State<'_> {
    fn visit(&mut self, node: &mut Node, depth: usize) {
        if self.error.is_some() {
            return;
        }
        if depth > MAX_DEPTH {
            self.error = Some("the statement is nested too deeply to narrow".into());
            return;
        }
        match &mut node.node {
            Some(NodeEnum::RangeVar(rv)) => {
                if let Some(&i) = self.from.get(&rv.location) {
                    match self.subselect(rv, i) {
                        Ok(replacement) => {
                            *node = replacement;
                            self.done += 1;
                        }
                        Err(e) => self.error = Some(e),
                    }
                }
                // A table name holds nothing to visit.
                return;
            }
            Some(NodeEnum::UpdateStmt(u)) => {
                let location = u.relation.as_ref().map(|r| (r.location, qualifier(r)));
                if let Some((loc, q)) = location
                    && let Some(&i) = self.target.get(&loc)
                {
                    match self.restrict(u.where_clause.take(), &q, i) {
                        Ok(w) => {
                            u.where_clause = Some(Box::new(w));
                            self.done += 1;
                        }
                        Err(e) => self.error = Some(e),
                    }
                }
            }
            Some(NodeEnum::DeleteStmt(d)) => {
                let location = d.relation.as_ref().map(|r| (r.location, qualifier(r)));
                if let Some((loc, q)) = location
                    && let Some(&i) = self.target.get(&loc)
                {
                    match self.restrict(d.where_clause.take(), &q, i) {
                        Ok(w) => {
                            d.where_clause = Some(Box::new(w));
                            self.done += 1;
                        }
                        Err(e) => self.error = Some(e),
                    }
                }
            }
            _ => {}
        }
        if let Some(e) = node.node.as_mut() {
            children::children_mut(e, &mut |c| self.visit(c, depth + 1));
        }
    }

    /// `(SELECT * FROM <rv> WHERE <filter>) AS <alias or name>`.
    fn subselect(&self, rv: &protobuf::RangeVar, i: usize) -> Result<Node, String> {
        let predicate = predicate(&self.narrowings[i].filter, &rv.relname).map_err(|e| e.0)?;
        let mut select = self.parse_select(&format!("SELECT * FROM x WHERE {predicate}"))?;
        let mut table = rv.clone();
        table.alias = None;
        table.location = -1;
        select.from_clause = vec![Node {
            node: Some(NodeEnum::RangeVar(table)),
        }];
        let alias = rv.alias.clone().unwrap_or_else(|| protobuf::Alias {
            aliasname: rv.relname.clone(),
            colnames: Vec::new(),
        });
        Ok(Node {
            node: Some(NodeEnum::RangeSubselect(Box::new(
                protobuf::RangeSubselect {
                    lateral: false,
                    subquery: Some(Box::new(Node {
                        node: Some(NodeEnum::SelectStmt(Box::new(select))),
                    })),
                    alias: Some(alias),
                },
            ))),
        })
    }

    /// `<filter> AND (<where>)`, the filter's columns qualified with `q`.
    fn restrict(&self, existing: Option<Box<Node>>, q: &str, i: usize) -> Result<Node, String> {
        let predicate = predicate(&self.narrowings[i].filter, q).map_err(|e| e.0)?;
        let select = self.parse_select(&format!("SELECT 1 WHERE {predicate}"))?;
        let filter = select
            .where_clause
            .ok_or("the row filter did not parse as a condition")?;
        let Some(w) = existing else {
            return Ok(*filter);
        };
        // Built as the parser builds `<filter> AND (<where>)`: it flattens a chain of `AND`s
        // on the left into one list (the filter of several parts is such a chain). A nested
        // `AND` on the left would be printed in parentheses, and read back flat, so the text
        // would not print back the same.
        let and = protobuf::BoolExprType::AndExpr as i32;
        Ok(match filter.node {
            Some(NodeEnum::BoolExpr(mut b)) if b.boolop == and => {
                b.args.push(*w);
                Node {
                    node: Some(NodeEnum::BoolExpr(b)),
                }
            }
            other => Node {
                node: Some(NodeEnum::BoolExpr(Box::new(protobuf::BoolExpr {
                    xpr: None,
                    boolop: and,
                    args: vec![Node { node: other }, *w],
                    location: -1,
                }))),
            },
        })
    }

    fn parse_select(&self, sql: &str) -> Result<protobuf::SelectStmt, String> {
        let parsed = pg_query::parse(sql, self.settings.parser_options())
            .map_err(|e| format!("the row filter does not parse as SQL: {e}"))?;
        let mut stmts = parsed.protobuf.stmts;
        match stmts.pop().and_then(|raw| raw.stmt).and_then(|n| n.node) {
            Some(NodeEnum::SelectStmt(s)) if stmts.is_empty() => Ok(*s),
            _ => Err("the row filter did not parse as one condition".into()),
        }
    }
}

/// The name a statement's target is referred to by.
fn qualifier(rv: &protobuf::RangeVar) -> String {
    rv.alias
        .as_ref()
        .map_or_else(|| rv.relname.clone(), |a| a.aliasname.clone())
}

/// A row filter that cannot be written as SQL (the message says why; the statement is then
/// denied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PredicateError(pub String);

/// The filter as a SQL condition on the row, its columns qualified with `q`.
pub fn predicate(filter: &RowFilter, q: &str) -> Result<String, PredicateError> {
    if filter.parts.is_empty() {
        return Err(PredicateError("an empty row filter".into()));
    }
    let parts = filter
        .parts
        .iter()
        .map(|p| part(p, q))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PredicateError)?;
    Ok(parts.join(" AND "))
}

fn part(p: &RowPolicies, q: &str) -> Result<String, String> {
    // A filter no row can pass would answer "no rows", which reads as "there are none": the
    // decision point denies such a statement, and a filter that says so anyway is refused.
    if !p.permits.iter().any(|(_, e)| e.may_hold()) {
        return Err(format!(
            "the policies allow no row of the table for {}",
            p.principal
        ));
    }
    let mut terms = Vec::new();
    let permits = p
        .permits
        .iter()
        .map(|(_, e)| sql(e, q))
        .collect::<Result<Vec<_>, _>>()?;
    if let [only] = permits.as_slice() {
        terms.push(format!("({only}) IS TRUE"));
    } else {
        // No permit may error; then one must hold.
        for s in &permits {
            terms.push(format!("({s}) IS NOT NULL"));
        }
        terms.push(format!("({})", permits.join(" OR ")));
    }
    for (_, f) in &p.forbids {
        // Neither holding nor erroring.
        terms.push(format!("({}) IS FALSE", sql(f, q)?));
    }
    Ok(format!("({})", terms.join(" AND ")))
}

fn identifier(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') || name.len() > MAX_IDENTIFIER {
        return Err(format!("`{}` cannot be a column name", name.escape_debug()));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

fn string(s: &str) -> Result<String, String> {
    if s.contains('\0') {
        return Err("a string with a NUL character".into());
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

fn sql(e: &RowExpr, q: &str) -> Result<String, String> {
    let column = |c: &str| Ok::<_, String>(format!("{}.{}", identifier(q)?, identifier(c)?));
    Ok(match e {
        RowExpr::Bool(true) => "TRUE".into(),
        RowExpr::Bool(false) => "FALSE".into(),
        RowExpr::Long(n) if *n < 0 => format!("({n})"),
        RowExpr::Long(n) => n.to_string(),
        RowExpr::Str(s) => string(s)?,
        RowExpr::Column(c) => column(c)?,
        RowExpr::Has(c) => format!("({} IS NOT NULL)", column(c)?),
        RowExpr::Not(a) => format!("(NOT ({}))", sql(a, q)?),
        RowExpr::Neg(a) => format!("(- ({}))", sql(a, q)?),
        RowExpr::And(a, b) => format!(
            "(CASE ({}) WHEN TRUE THEN ({}) WHEN FALSE THEN FALSE END)",
            sql(a, q)?,
            sql(b, q)?
        ),
        RowExpr::Or(a, b) => format!(
            "(CASE ({}) WHEN TRUE THEN TRUE WHEN FALSE THEN ({}) END)",
            sql(a, q)?,
            sql(b, q)?
        ),
        RowExpr::If(c, t, f) => format!(
            "(CASE ({}) WHEN TRUE THEN ({}) WHEN FALSE THEN ({}) END)",
            sql(c, q)?,
            sql(t, q)?,
            sql(f, q)?
        ),
        RowExpr::Cmp(op, a, b) => {
            let op = match op {
                CmpOp::Eq => "=",
                CmpOp::Ne => "<>",
                CmpOp::Lt => "<",
                CmpOp::Le => "<=",
                CmpOp::Gt => ">",
                CmpOp::Ge => ">=",
            };
            format!("(({}) {op} ({}))", sql(a, q)?, sql(b, q)?)
        }
        RowExpr::Arith(op, a, b) => {
            let op = match op {
                ArithOp::Add => "+",
                ArithOp::Sub => "-",
                ArithOp::Mul => "*",
            };
            format!("(({}) {op} ({}))", sql(a, q)?, sql(b, q)?)
        }
        RowExpr::Like(a, pattern) => {
            let mut p = String::new();
            for part in pattern {
                match part {
                    LikePart::Any => p.push('%'),
                    LikePart::Char(c @ ('%' | '_' | '\\')) => {
                        p.push('\\');
                        p.push(*c);
                    }
                    LikePart::Char(c) => p.push(*c),
                }
            }
            format!(
                "(({}) LIKE {} ESCAPE {})",
                sql(a, q)?,
                string(&p)?,
                string("\\")?
            )
        }
        RowExpr::OneOf(a, values) if values.is_empty() => {
            format!(
                "(CASE WHEN ({}) IS NULL THEN NULL ELSE FALSE END)",
                sql(a, q)?
            )
        }
        RowExpr::OneOf(a, values) => {
            let values = values
                .iter()
                .map(|v| sql(v, q))
                .collect::<Result<Vec<_>, _>>()?;
            format!("(({}) IN ({}))", sql(a, q)?, values.join(", "))
        }
        RowExpr::Holds(c, v) => format!("(({}) = ANY ({}))", sql(v, q)?, column(c)?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::analyze;

    fn tenant(table: &str) -> Narrowing {
        Narrowing {
            schema: "public".into(),
            name: table.into(),
            filter: RowFilter {
                parts: vec![RowPolicies {
                    principal: "Agent::\"bot\"".into(),
                    permits: vec![(
                        "p".into(),
                        RowExpr::Cmp(
                            CmpOp::Eq,
                            Box::new(RowExpr::Column("tenant".into())),
                            Box::new(RowExpr::Str("a'cme".into())),
                        ),
                    )],
                    forbids: Vec::new(),
                }],
            },
        }
    }

    fn run(sql: &str) -> Result<String, String> {
        let analysis = analyze(sql).unwrap();
        narrow(
            sql,
            ParserSettings::default(),
            &analysis,
            &[tenant("orders")],
        )
    }

    #[test]
    fn reads_are_replaced_by_a_filtered_subquery() {
        let out = run("SELECT o.id FROM orders o JOIN items i ON i.order_id = o.id").unwrap();
        assert_eq!(
            out,
            "SELECT o.id FROM (SELECT * FROM orders WHERE orders.tenant = 'a''cme' IS TRUE) o JOIN items i ON i.order_id = o.id"
        );
        let out = run("WITH x AS (SELECT * FROM public.orders) SELECT * FROM x WHERE id IN (SELECT id FROM orders)").unwrap();
        assert_eq!(out.matches("IS TRUE").count(), 2, "{out}");
        assert!(out.contains("FROM public.orders WHERE"), "{out}");
        // A CTE named like the table is not the table.
        let out = run("WITH orders AS (SELECT 1 AS id) SELECT * FROM orders").unwrap();
        assert!(!out.contains("IS TRUE"), "{out}");
    }

    #[test]
    fn updates_and_deletes_get_the_filter_in_their_where() {
        let out = run("DELETE FROM orders WHERE id = 1").unwrap();
        assert_eq!(
            out,
            "DELETE FROM orders WHERE orders.tenant = 'a''cme' IS TRUE AND id = 1"
        );
        let out = run("UPDATE orders AS o SET total = 0").unwrap();
        assert_eq!(
            out,
            "UPDATE orders o SET total = 0 WHERE o.tenant = 'a''cme' IS TRUE"
        );
        let err = run("UPDATE orders SET tenant = 'other'").unwrap_err();
        assert!(err.contains("`tenant`"), "{err}");
    }

    #[test]
    fn uses_that_cannot_be_narrowed_are_refused() {
        for sql in [
            "INSERT INTO orders VALUES (1)",
            "COPY orders TO STDOUT",
            "TRUNCATE orders",
            "SELECT * FROM orders TABLESAMPLE SYSTEM (10)",
            "MERGE INTO orders o USING items i ON o.id = i.id WHEN MATCHED THEN DELETE",
        ] {
            let err = run(sql).unwrap_err();
            assert!(err.contains("only some rows"), "{sql}: {err}");
        }
    }

    #[test]
    fn cedar_semantics_in_sql() {
        let filter = RowFilter {
            parts: vec![RowPolicies {
                principal: "Agent::\"bot\"".into(),
                permits: vec![
                    (
                        "a".into(),
                        RowExpr::And(
                            Box::new(RowExpr::Has("x".into())),
                            Box::new(RowExpr::Like(
                                Box::new(RowExpr::Column("x".into())),
                                vec![LikePart::Char('%'), LikePart::Any],
                            )),
                        ),
                    ),
                    (
                        "b".into(),
                        RowExpr::OneOf(
                            Box::new(RowExpr::Column("r".into())),
                            vec![RowExpr::Long(-1), RowExpr::Str("w".into())],
                        ),
                    ),
                ],
                forbids: vec![(
                    "f".into(),
                    RowExpr::Holds("tags".into(), Box::new(RowExpr::Str("secret".into()))),
                )],
            }],
        };
        assert_eq!(
            predicate(&filter, "t").unwrap(),
            r#"(((CASE (("t"."x" IS NOT NULL)) WHEN TRUE THEN ((("t"."x") LIKE '\%%' ESCAPE '\')) WHEN FALSE THEN FALSE END)) IS NOT NULL AND ((("t"."r") IN ((-1), 'w'))) IS NOT NULL AND ((CASE (("t"."x" IS NOT NULL)) WHEN TRUE THEN ((("t"."x") LIKE '\%%' ESCAPE '\')) WHEN FALSE THEN FALSE END) OR (("t"."r") IN ((-1), 'w'))) AND ((('secret') = ANY ("t"."tags"))) IS FALSE)"#
        );
        assert!(predicate(&RowFilter::default(), "t").is_err());
        let bad = RowFilter {
            parts: vec![RowPolicies {
                principal: String::new(),
                permits: vec![("p".into(), RowExpr::Column("a\0b".into()))],
                forbids: Vec::new(),
            }],
        };
        assert!(predicate(&bad, "t").is_err());
    }

    /// Every place a narrowed table is read or changed gets the filter exactly once, and the
    /// result analyzes to the same statements.
    #[test]
    fn each_reference_gets_the_filter_once() {
        for sql in [
            "SELECT * FROM orders",
            "SELECT * FROM orders a, orders b WHERE a.id = b.id",
            "SELECT * FROM orders JOIN (SELECT * FROM orders) x USING (id)",
            "WITH a AS (SELECT * FROM orders), b AS (SELECT * FROM a) SELECT * FROM b, orders",
            "WITH RECURSIVE r AS (SELECT id FROM orders UNION ALL SELECT r.id FROM r JOIN orders o ON o.id = r.id) SELECT * FROM r",
            "SELECT (SELECT count(*) FROM orders), EXISTS (SELECT 1 FROM public.orders)",
            "SELECT * FROM items WHERE order_id IN (SELECT id FROM orders) OR order_id = ANY (SELECT id FROM orders)",
            "SELECT id FROM orders UNION SELECT id FROM orders EXCEPT SELECT id FROM orders",
            "SELECT * FROM items i, LATERAL (SELECT * FROM orders o WHERE o.id = i.order_id) x",
            "DELETE FROM orders o USING orders p WHERE o.id = p.id RETURNING o.*",
            "UPDATE orders SET total = 0 FROM orders src WHERE src.id = orders.id",
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
            "EXPLAIN SELECT * FROM orders",
            "DECLARE c CURSOR FOR SELECT * FROM orders",
            "SELECT * FROM ONLY orders FOR UPDATE",
            "SELECT * FROM orders AS o(a, b, c)",
            "INSERT INTO items SELECT * FROM orders",
            "SELECT 1; SELECT * FROM orders; DELETE FROM orders",
        ] {
            let analysis = analyze(sql).unwrap();
            let out = narrow(
                sql,
                ParserSettings::default(),
                &analysis,
                &[tenant("orders")],
            )
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let places = analysis
                .statements
                .iter()
                .flat_map(|s| &s.references)
                .filter(|r| r.name == "orders" && r.role != ReferenceRole::Other)
                .count();
            assert_eq!(out.matches("'a''cme'").count(), places, "{sql} => {out}");
            let again = analyze(&out).unwrap();
            assert_eq!(again.statements.len(), analysis.statements.len(), "{out}");
            for (a, b) in again.statements.iter().zip(&analysis.statements) {
                assert_eq!(a.kind, b.kind, "{out}");
            }
        }
    }

    fn eq(column: &str, value: &str) -> RowExpr {
        RowExpr::Cmp(
            CmpOp::Eq,
            Box::new(RowExpr::Column(column.into())),
            Box::new(RowExpr::Str(value.into())),
        )
    }

    /// Filters of every shape: one permit; a permit and a forbid; two principals' parts (an
    /// `UPDATE` with a `WHERE` is asked `update` and `select`, so it has two).
    fn shapes() -> Vec<RowFilter> {
        let part = |permits: Vec<(String, RowExpr)>, forbids: Vec<(String, RowExpr)>| RowPolicies {
            principal: "Agent::\"bot\"".into(),
            permits,
            forbids,
        };
        let tenant = || ("p".to_owned(), eq("tenant", "acme"));
        vec![
            RowFilter {
                parts: vec![part(vec![tenant()], Vec::new())],
            },
            RowFilter {
                parts: vec![part(
                    vec![tenant(), ("q".into(), eq("owner", "bot"))],
                    vec![("f".into(), eq("state", "closed"))],
                )],
            },
            RowFilter {
                parts: vec![
                    part(vec![tenant()], Vec::new()),
                    part(vec![tenant()], vec![("f".into(), eq("state", "closed"))]),
                ],
            },
        ]
    }

    /// Regression: a filter of several parts added to a `WHERE` was built as a nested `AND`,
    /// which the deparser prints in parentheses and the parser reads back flat, so every
    /// row-filtered `UPDATE`/`DELETE` with a `WHERE` was refused ("does not print back
    /// faithfully").
    #[test]
    fn writes_with_a_where_are_narrowed_whatever_the_filter() {
        for sql in [
            "UPDATE orders SET body = 'x' WHERE id = 2",
            "DELETE FROM orders WHERE id = 2",
            "DELETE FROM orders WHERE id = 2 AND total > 1 OR id = 3",
            "UPDATE orders AS o SET body = 'x' WHERE o.id = 2 RETURNING o.id, o.body",
            "UPDATE orders o SET total = (SELECT max(total) FROM orders) WHERE o.id IN (SELECT id FROM orders WHERE total > 0)",
            "UPDATE orders SET total = 0 FROM items i WHERE i.order_id = orders.id AND NOT (i.id = 2 OR i.id = 3) RETURNING *",
            "DELETE FROM orders USING items WHERE items.order_id = orders.id RETURNING orders.*",
            "DELETE FROM orders o USING orders p WHERE o.id = p.id AND (p.total > 5 AND p.total < 9)",
            "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d",
            "UPDATE orders SET (body, total) = (SELECT 'y', 1) WHERE EXISTS (SELECT 1 FROM orders x WHERE x.id = orders.id)",
            "DELETE FROM ONLY public.orders WHERE id = 4",
        ] {
            for filter in shapes() {
                let analysis = analyze(sql).unwrap();
                let narrowing = Narrowing {
                    schema: "public".into(),
                    name: "orders".into(),
                    filter,
                };
                let out = narrow(sql, ParserSettings::default(), &analysis, &[narrowing])
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                assert!(out.contains("'acme'"), "{sql} => {out}");
            }
        }
    }

    /// A filter no row can pass is refused, never sent as "no rows".
    #[test]
    fn a_filter_that_can_never_hold_is_refused() {
        for never in [
            RowExpr::And(
                Box::new(eq("tenant", "acme")),
                Box::new(RowExpr::Bool(false)),
            ),
            RowExpr::And(
                Box::new(RowExpr::Bool(false)),
                Box::new(eq("tenant", "acme")),
            ),
            RowExpr::Bool(false),
        ] {
            let filter = RowFilter {
                parts: vec![RowPolicies {
                    principal: "Agent::\"bot\"".into(),
                    permits: vec![("p".into(), never)],
                    forbids: Vec::new(),
                }],
            };
            let err = predicate(&filter, "t").unwrap_err();
            assert!(err.0.contains("no row"), "{err}");
        }
    }
}
