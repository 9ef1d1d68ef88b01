#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arbiter_sql::{
    Access, Analysis, AnalyzeError, Flag, ParserSettings, StatementInfo, StatementKind, analyze,
    analyze_with,
};
use proptest::prelude::*;
use serde_json::Value;

fn one(sql: &str) -> StatementInfo {
    let analysis = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(analysis.statements.len(), 1, "{sql}: {analysis:#?}");
    let statement = analysis.statements.into_iter().next().unwrap();
    cross_check(sql, std::slice::from_ref(&statement));
    statement
}

fn all(sql: &str) -> Analysis {
    let analysis = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    cross_check(sql, &analysis.statements);
    analysis
}

/// The columns recorded for `name` with `access`; panics when there is no such entry.
fn columns(s: &StatementInfo, name: &str, access: Access) -> Vec<String> {
    s.access(name, access)
        .unwrap_or_else(|| panic!("no {access:?} of {name} in {s:#?}"))
        .columns
        .clone()
}

fn accesses(s: &StatementInfo) -> Vec<(String, Access)> {
    s.tables
        .iter()
        .map(|t| (t.qualified_name(), t.access))
        .collect()
}

/// Everything pg_query's own helpers and a scan of the serialized tree find must be in the
/// analysis: every function called, and every relation named that is not a CTE.
fn cross_check(sql: &str, statements: &[StatementInfo]) {
    let parsed = pg_query::parse(sql, 0).unwrap();
    let tables: Vec<String> = statements
        .iter()
        .flat_map(|s| s.tables.iter().map(|t| t.qualified_name()))
        .collect();
    let functions: Vec<&String> = statements.iter().flat_map(|s| &s.functions).collect();
    for table in parsed.tables() {
        if !parsed.cte_names.contains(&table) {
            assert!(
                tables.contains(&table),
                "{sql}: pg_query sees table {table}"
            );
        }
    }
    for function in parsed.call_functions() {
        assert!(
            functions.iter().any(|f| **f == function),
            "{sql}: pg_query sees function {function}"
        );
    }
    let tree = serde_json::to_value(&parsed.protobuf).unwrap();
    let mut found = Found::default();
    scan(&tree, &mut found);
    for function in &found.functions {
        assert!(
            functions.contains(&function),
            "{sql}: the tree calls {function}"
        );
    }
    for (schema, name) in &found.relations {
        let qualified = if schema.is_empty() {
            name.clone()
        } else {
            format!("{schema}.{name}")
        };
        assert!(
            tables.contains(&qualified) || (schema.is_empty() && found.ctes.contains(name)),
            "{sql}: the tree names relation {qualified}"
        );
    }
}

#[derive(Default)]
struct Found {
    functions: Vec<String>,
    relations: Vec<(String, String)>,
    ctes: Vec<String>,
}

/// Finds function calls, relations and CTE names anywhere in a serialized parse tree, by the
/// shape of their fields, typed fields included.
fn scan(value: &Value, found: &mut Found) {
    match value {
        Value::Object(map) => {
            if map.contains_key("funcname") && map.contains_key("agg_star") {
                let parts: Vec<&str> = map["funcname"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["node"]["String"]["sval"].as_str().unwrap())
                    .collect();
                found.functions.push(parts.join("."));
            }
            if map.contains_key("relname") && map.contains_key("relpersistence") {
                found.relations.push((
                    map["schemaname"].as_str().unwrap().to_string(),
                    map["relname"].as_str().unwrap().to_string(),
                ));
            }
            if let Some(Value::String(name)) = map.get("ctename") {
                found.ctes.push(name.clone());
            }
            if let Some(Value::Array(locked)) = map.get("locked_rels") {
                // FOR UPDATE OF names FROM items, which the tree holds as relations.
                for rel in locked {
                    if let Some(name) = rel["node"]["RangeVar"]["relname"].as_str() {
                        found.ctes.push(name.to_string());
                    }
                }
            }
            map.values().for_each(|v| scan(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| scan(v, found)),
        _ => {}
    }
}

// --- the bypass corpus ---

#[test]
fn a_second_statement_is_its_own_statement() {
    let analysis = all("SELECT 1; DROP TABLE t");
    assert!(analysis.is_multi_statement());
    let [select, drop] = analysis.statements.as_slice() else {
        panic!("{analysis:#?}")
    };
    assert_eq!(select.kind, StatementKind::Select);
    assert_eq!(select.text, "SELECT 1");
    assert!(select.tables.is_empty());
    assert_eq!(drop.kind, StatementKind::Ddl);
    assert_eq!(drop.text, "DROP TABLE t");
    assert_eq!(accesses(drop), [("t".to_string(), Access::Ddl)]);
    for statement in &analysis.statements {
        assert!(statement.has_flag(Flag::MultiStatement));
    }
    assert!(!one("SELECT 1;").has_flag(Flag::MultiStatement));
}

#[test]
fn a_delete_inside_with_makes_the_statement_a_delete() {
    let s = one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
    assert_eq!(s.kind, StatementKind::Delete);
    assert!(s.has_flag(Flag::DataModifyingCte));
    assert!(s.access("t", Access::Delete).is_some());
    assert_eq!(columns(&s, "t", Access::Read), ["*"]);
    // d is the CTE, not a table
    assert!(s.tables.iter().all(|t| t.name == "t"));

    let s = one("WITH u AS (UPDATE t SET a = 1 RETURNING id) INSERT INTO log SELECT id FROM u");
    assert_eq!(s.kind, StatementKind::Update);
    assert!(s.has_flag(Flag::DataModifyingCte));
    assert_eq!(columns(&s, "t", Access::Update), ["a"]);
    assert!(s.access("log", Access::Insert).is_some());
}

#[test]
fn functions_in_where_are_reported_and_classified() {
    let s = one("SELECT * FROM t WHERE pg_terminate_backend(pid) IS NOT NULL");
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(s.functions, ["pg_terminate_backend"]);
    assert!(s.has_flag(Flag::DangerousFunction));
    assert!(s.calls_dangerous_function());

    let s = one("SELECT * FROM t WHERE pg_terminate_backend(1)");
    assert!(s.has_flag(Flag::DangerousFunction));

    let s = one("SELECT lower(name), count(*) FROM t GROUP BY 1");
    assert_eq!(s.functions, ["lower", "count"]);
    assert!(!s.has_flag(Flag::DangerousFunction));
}

#[test]
fn explain_analyze_executes_what_it_explains() {
    let s = one("EXPLAIN ANALYZE DELETE FROM t");
    assert_eq!(s.kind, StatementKind::Delete);
    assert!(s.has_flag(Flag::Explain));
    assert!(s.has_flag(Flag::ExplainAnalyze));
    assert!(s.access("t", Access::Delete).is_some());

    for sql in [
        "EXPLAIN (ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE true, FORMAT JSON) DELETE FROM t",
        "EXPLAIN (ANALYZE on) DELETE FROM t",
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
        "EXPLAIN ANALYZE VERBOSE DELETE FROM t",
    ] {
        assert!(one(sql).has_flag(Flag::ExplainAnalyze), "{sql}");
    }

    // Plain EXPLAIN does not execute, but reports what the statement would touch.
    for sql in [
        "EXPLAIN DELETE FROM t",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t",
    ] {
        let s = one(sql);
        assert!(s.has_flag(Flag::Explain), "{sql}");
        assert!(!s.has_flag(Flag::ExplainAnalyze), "{sql}");
        assert_eq!(s.kind, StatementKind::Delete, "{sql}");
        assert!(s.access("t", Access::Delete).is_some(), "{sql}");
    }
}

#[test]
fn copy_reports_direction_programs_and_files() {
    let s = one("COPY t TO PROGRAM 'id'");
    assert!(s.has_flag(Flag::CopyProgram));
    assert!(!s.has_flag(Flag::CopyFile));
    assert_eq!(s.kind, StatementKind::Select);
    assert!(s.access("t", Access::CopyTo).is_some());

    let s = one("COPY t (a, b) FROM PROGRAM 'curl http://x'");
    assert!(s.has_flag(Flag::CopyProgram));
    assert_eq!(s.kind, StatementKind::Insert);
    assert_eq!(columns(&s, "t", Access::CopyFrom), ["a", "b"]);

    let s = one("COPY t FROM '/etc/passwd'");
    assert!(s.has_flag(Flag::CopyFile));
    assert!(s.access("t", Access::CopyFrom).is_some());

    let s = one("COPY t TO STDOUT WITH (FORMAT csv)");
    assert!(!s.has_flag(Flag::CopyFile) && !s.has_flag(Flag::CopyProgram));

    let s = one("COPY (SELECT a FROM secret) TO '/tmp/out'");
    assert!(s.has_flag(Flag::CopyFile));
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(columns(&s, "secret", Access::Read), ["a"]);

    let s = one("COPY (DELETE FROM t RETURNING *) TO STDOUT");
    assert_eq!(s.kind, StatementKind::Delete);
}

#[test]
fn a_do_block_is_flagged_and_not_looked_into() {
    let s = one("DO $$ BEGIN DELETE FROM t; END $$");
    assert_eq!(s.kind, StatementKind::Other("DoStmt".into()));
    assert!(s.has_flag(Flag::DoBlock));
    assert!(s.tables.is_empty());
    assert!(one("DO LANGUAGE plpgsql 'BEGIN NULL; END'").has_flag(Flag::DoBlock));
}

#[test]
fn prepare_reports_its_body_and_execute_is_flagged() {
    let analysis = all("PREPARE p AS DELETE FROM t; EXECUTE p");
    let [prepare, execute] = analysis.statements.as_slice() else {
        panic!("{analysis:#?}")
    };
    assert_eq!(prepare.kind, StatementKind::Delete);
    assert!(prepare.has_flag(Flag::SqlPrepare));
    assert!(prepare.access("t", Access::Delete).is_some());
    assert_eq!(prepare.text, "PREPARE p AS DELETE FROM t");
    assert_eq!(execute.kind, StatementKind::Other("ExecuteStmt".into()));
    assert!(execute.has_flag(Flag::SqlExecute));
    assert!(execute.tables.is_empty());

    let s = one("EXECUTE p((SELECT max(a) FROM t), pg_sleep(1))");
    assert!(s.has_flag(Flag::SqlExecute));
    assert!(s.has_flag(Flag::DangerousFunction));
    assert!(s.access("t", Access::Read).is_some());

    let s = one("EXPLAIN EXECUTE p");
    assert_eq!(s.kind, StatementKind::Other("ExplainStmt".into()));
    assert!(s.has_flag(Flag::SqlExecute));
}

#[test]
fn comments_hide_nothing_and_nest() {
    let s = one("SELECT 1 /* /* */ DROP TABLE t */");
    assert_eq!(s.kind, StatementKind::Select);
    assert!(s.tables.is_empty());

    let s = one("SELECT 1 -- ; DROP TABLE t\n");
    assert_eq!(s.kind, StatementKind::Select);
    assert!(s.tables.is_empty());

    // an unclosed nested comment is an error, not a shorter comment
    assert!(matches!(
        analyze("SELECT 1 /* /* */ ; DROP TABLE t"),
        Err(AnalyzeError::Parse(_))
    ));

    let analysis = all("/* SELECT */ DELETE FROM t /* ; */ ; -- DROP\n SELECT 2");
    assert_eq!(analysis.statements.len(), 2);
    assert_eq!(analysis.statements[0].kind, StatementKind::Delete);
}

#[test]
fn quoting_hides_keywords() {
    for sql in [
        "SELECT $x$DROP TABLE t$x$",
        "SELECT $$; DROP TABLE t; $$",
        "SELECT 'x''; DROP TABLE t; --'",
        "SELECT E'\\'; DROP TABLE t; --'",
        "SELECT \"; DROP TABLE t; --\" FROM u",
    ] {
        let analysis = all(sql);
        assert_eq!(analysis.statements.len(), 1, "{sql}");
        let s = &analysis.statements[0];
        assert_eq!(s.kind, StatementKind::Select, "{sql}");
        assert!(s.tables.iter().all(|t| t.name != "t"), "{sql}");
    }
}

#[test]
fn string_lexing_follows_the_server_setting() {
    // With standard_conforming_strings off, a backslash escapes the quote, so the string runs
    // on and the dollar quote no longer hides the DROP.
    let sql = "SELECT 'a\\' , $$ ' ; DROP TABLE t; -- $$";
    let standard = analyze(sql).unwrap();
    assert_eq!(standard.statements.len(), 1);
    let legacy = analyze_with(
        sql,
        ParserSettings {
            standard_conforming_strings: false,
        },
    )
    .unwrap();
    assert_eq!(legacy.statements.len(), 2);
    assert_eq!(legacy.statements[1].kind, StatementKind::Ddl);
    assert!(legacy.statements[1].access("t", Access::Ddl).is_some());
}

#[test]
fn unicode_escapes_are_decoded() {
    let s = one("SELECT * FROM U&\"\\0074\"");
    assert_eq!(accesses(&s), [("t".to_string(), Access::Read)]);

    let s = one("SELECT * FROM U&\"d\\0061t\\+000061\"");
    assert_eq!(s.tables[0].name, "data");

    let s = one("SELECT * FROM U&\"!0074\" UESCAPE '!'");
    assert_eq!(s.tables[0].name, "t");

    let s = one("SELECT U&\"\\0061\" FROM U&\"\\0053\"");
    assert_eq!(s.tables[0].name, "S");
    assert_eq!(columns(&s, "S", Access::Read), ["a"]);

    let s = one("SELECT U&'\\0041'");
    assert!(s.tables.is_empty());

    let s = one("SELECT * FROM public.\"Ünïcödé\"");
    assert_eq!(s.tables[0].name, "Ünïcödé");
}

#[test]
fn set_config_and_set_are_flagged() {
    let s = one("SELECT set_config('search_path', 'evil', false)");
    assert_eq!(s.functions, ["set_config"]);
    assert!(s.has_flag(Flag::SetConfig));
    assert!(s.has_flag(Flag::DangerousFunction));
    assert!(!s.has_flag(Flag::RoleChange));

    let s = one("SELECT pg_catalog.set_config('role', 'admin', false)");
    assert!(s.has_flag(Flag::SetConfig) && s.has_flag(Flag::RoleChange));
    let s = one("SELECT set_config(name, 'x', false) FROM settings");
    assert!(s.has_flag(Flag::RoleChange), "a computed name may be role");

    for sql in [
        "SET search_path = evil",
        "SET LOCAL work_mem = '1GB'",
        "RESET ALL",
    ] {
        let s = one(sql);
        assert!(s.has_flag(Flag::SetConfig), "{sql}");
        assert!(!s.has_flag(Flag::RoleChange), "{sql}");
        assert_eq!(s.kind, StatementKind::Other("VariableSetStmt".into()));
    }
    for sql in [
        "SET ROLE admin",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres",
    ] {
        assert!(one(sql).has_flag(Flag::RoleChange), "{sql}");
    }
    let s = one("ALTER SYSTEM SET shared_preload_libraries = 'evil'");
    assert_eq!(s.kind, StatementKind::Ddl);
    assert!(s.has_flag(Flag::SetConfig));
    assert!(one("ALTER ROLE bob SET search_path = evil").has_flag(Flag::SetConfig));
}

#[test]
fn schema_qualified_and_quoted_names() {
    let s = one("SELECT a, \"Weird\".\"Name\".b FROM public.t, \"Weird\".\"Name\"");
    let public_t = s.tables.iter().find(|t| t.name == "t").unwrap();
    assert_eq!(public_t.schema.as_deref(), Some("public"));
    assert_eq!(public_t.qualified_name(), "public.t");
    let weird = s.tables.iter().find(|t| t.name == "Name").unwrap();
    assert_eq!(weird.schema.as_deref(), Some("Weird"));
    assert_eq!(weird.columns, ["a", "b"]);
    // `a` could come from either table
    assert_eq!(public_t.columns, ["a"]);

    let s = one("SELECT public.t.a FROM public.t");
    assert_eq!(columns(&s, "t", Access::Read), ["a"]);
    let s = one("SELECT * FROM MyTable, \"MyTable\"");
    let names: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["mytable", "MyTable"]);
}

#[test]
fn joins_attribute_columns_through_aliases() {
    let s = one(
        "SELECT u.name, o.total FROM users u JOIN orders AS o ON o.user_id = u.id \
         WHERE u.active ORDER BY o.created_at",
    );
    assert_eq!(columns(&s, "users", Access::Read), ["id", "name", "active"]);
    assert_eq!(
        columns(&s, "orders", Access::Read),
        ["user_id", "total", "created_at"]
    );

    // An unqualified column could be either table's.
    let s = one("SELECT status FROM users u JOIN orders o ON o.user_id = u.id");
    assert!(columns(&s, "users", Access::Read).contains(&"status".to_string()));
    assert!(columns(&s, "orders", Access::Read).contains(&"status".to_string()));

    // One table: exact.
    let s = one("SELECT a, b FROM t WHERE c > 1 ORDER BY d");
    assert_eq!(columns(&s, "t", Access::Read), ["a", "b", "c", "d"]);

    // * and t.*
    let s = one("SELECT t.*, u.x FROM t, u");
    assert_eq!(columns(&s, "t", Access::Read), ["*"]);
    assert_eq!(columns(&s, "u", Access::Read), ["x"]);

    // USING columns belong to both sides; NATURAL to unknown ones.
    let s = one("SELECT t.a FROM t JOIN u USING (id)");
    assert_eq!(columns(&s, "t", Access::Read), ["id", "a"]);
    assert_eq!(columns(&s, "u", Access::Read), ["id"]);
    let s = one("SELECT t.a FROM t NATURAL JOIN u");
    assert_eq!(columns(&s, "u", Access::Read), ["*"]);

    // An aliased join hides its members; its columns could be either's.
    let s = one("SELECT j.c FROM (t JOIN u ON t.id = u.id) AS j");
    assert_eq!(columns(&s, "t", Access::Read), ["id", "c"]);
    assert_eq!(columns(&s, "u", Access::Read), ["id", "c"]);

    // Column aliases rename columns: names through them say nothing of the table's.
    let s = one("SELECT x.a FROM t AS x(a, b)");
    assert_eq!(columns(&s, "t", Access::Read), ["*"]);

    // A whole-row reference reads every column.
    for sql in [
        "SELECT row_to_json(t) FROM t",
        "SELECT t FROM t",
        "SELECT x FROM t x",
    ] {
        assert_eq!(columns(&one(sql), "t", Access::Read), ["*"], "{sql}");
    }

    // A composite column's field is that column.
    let s = one("SELECT (c).f, d.g FROM t");
    assert_eq!(columns(&s, "t", Access::Read), ["c", "d"]);

    // ORDER BY an output alias is not a column of t.
    let s = one("SELECT a AS x FROM t ORDER BY x");
    assert_eq!(columns(&s, "t", Access::Read), ["a"]);

    // No column named: unknown, so every column.
    let s = one("SELECT count(*) FROM t");
    assert!(columns(&s, "t", Access::Read).is_empty());
}

#[test]
fn subqueries_anywhere_are_walked() {
    let s = one("SELECT (SELECT max(v) FROM a) AS m, t.x FROM t \
         JOIN LATERAL (SELECT * FROM b WHERE b.tid = t.id) lb ON true \
         LEFT JOIN (SELECT id FROM c) sc ON sc.id = t.id \
         WHERE t.id IN (SELECT tid FROM d) AND EXISTS (SELECT 1 FROM e WHERE e.k = t.k) \
         AND t.y = ANY (ARRAY(SELECT y FROM f)) \
         GROUP BY t.x HAVING count(*) > (SELECT count(*) FROM g) \
         ORDER BY (SELECT min(z) FROM h)");
    for table in ["t", "a", "b", "c", "d", "e", "f", "g", "h"] {
        assert!(s.access(table, Access::Read).is_some(), "{table}: {s:#?}");
    }
    assert_eq!(s.functions, ["max", "count", "min"]);
    assert_eq!(columns(&s, "b", Access::Read), ["*"]);
    assert!(columns(&s, "t", Access::Read).contains(&"k".to_string()));

    // set operations
    let s = one(
        "SELECT a FROM t UNION SELECT b FROM u EXCEPT (SELECT c FROM v INTERSECT SELECT d FROM w) ORDER BY 1",
    );
    for table in ["t", "u", "v", "w"] {
        assert!(s.access(table, Access::Read).is_some(), "{table}");
    }

    // functions in FROM, VALUES, TABLESAMPLE, ROWS FROM
    let s = one("SELECT * FROM pg_ls_dir('.') f, (VALUES (pg_sleep(1))) v, \
         t TABLESAMPLE SYSTEM (random() * 10), ROWS FROM (generate_series(1, 2)) g");
    assert_eq!(
        s.functions,
        ["pg_ls_dir", "pg_sleep", "random", "generate_series"]
    );
    assert!(s.access("t", Access::Read).is_some());
}

#[test]
fn a_correlated_name_is_attributed_outwards_too() {
    // `secret` may be a column of t, reached from inside the subquery on u.
    let s = one("SELECT id, (SELECT secret FROM u LIMIT 1) FROM t");
    assert!(columns(&s, "t", Access::Read).contains(&"secret".to_string()));
    assert_eq!(columns(&s, "u", Access::Read), ["secret"]);
    // qualified names are exact
    let s = one("SELECT t.id, (SELECT u.secret FROM u LIMIT 1) FROM t");
    assert_eq!(columns(&s, "t", Access::Read), ["id"]);
}

#[test]
fn ctes_shadow_tables_only_where_visible() {
    let s = one("WITH t AS (SELECT a FROM base) SELECT a FROM t, public.t");
    assert_eq!(
        accesses(&s),
        [
            ("base".to_string(), Access::Read),
            ("public.t".to_string(), Access::Read),
        ]
    );
    // a CTE name is not visible before its definition, nor outside its statement
    let s = one("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a");
    assert!(s.access("b", Access::Read).is_some());
    let s = one("SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) x, t");
    assert!(s.access("t", Access::Read).is_some());
    // recursive
    let s = one(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r",
    );
    assert!(s.tables.is_empty());
    // a write target is never a CTE
    let s = one("WITH t AS (SELECT 1) DELETE FROM t");
    assert!(s.access("t", Access::Delete).is_some());
}

#[test]
fn insert_on_conflict_do_update_inserts_and_updates() {
    let s = one("INSERT INTO t AS x (id, n) VALUES (1, 2) \
         ON CONFLICT (id) DO UPDATE SET n = x.n + excluded.n WHERE x.locked IS NOT TRUE");
    assert_eq!(s.kind, StatementKind::Update);
    assert_eq!(columns(&s, "t", Access::Insert), ["id", "n"]);
    assert_eq!(columns(&s, "t", Access::Update), ["n"]);
    assert_eq!(columns(&s, "t", Access::Read), ["id", "n", "locked"]);

    let s = one("INSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING");
    assert_eq!(s.kind, StatementKind::Insert);
    assert!(s.access("t", Access::Update).is_none());

    let s = one("INSERT INTO t SELECT * FROM u WHERE u.ok RETURNING id");
    assert_eq!(s.kind, StatementKind::Insert);
    assert!(columns(&s, "t", Access::Insert).is_empty());
    assert_eq!(columns(&s, "u", Access::Read), ["*"]);
    assert_eq!(columns(&s, "t", Access::Read), ["id"]);

    let s = one("INSERT INTO t (a) VALUES ((SELECT secret FROM s)), (pg_read_file('/etc/passwd'))");
    assert!(s.access("s", Access::Read).is_some());
    assert!(s.has_flag(Flag::DangerousFunction));
}

#[test]
fn update_and_delete_read_what_their_expressions_use() {
    let s = one("UPDATE t SET a = u.b, c = c + 1 FROM u WHERE t.id = u.id RETURNING t.*");
    assert_eq!(s.kind, StatementKind::Update);
    assert_eq!(columns(&s, "t", Access::Update), ["a", "c"]);
    assert_eq!(columns(&s, "t", Access::Read), ["*"]);
    assert_eq!(columns(&s, "u", Access::Read), ["b", "c", "id"]);

    let s = one("UPDATE t SET a = 1");
    assert_eq!(accesses(&s), [("t".to_string(), Access::Update)]);

    let s = one("UPDATE t SET (a, b) = (SELECT x, y FROM u WHERE u.id = t.id) WHERE t.k = 1");
    assert_eq!(columns(&s, "t", Access::Update), ["a", "b"]);
    assert!(s.access("u", Access::Read).is_some());

    let s = one("DELETE FROM t USING u WHERE t.id = u.id AND u.flag RETURNING t.id");
    assert_eq!(s.kind, StatementKind::Delete);
    assert!(columns(&s, "t", Access::Delete).is_empty());
    assert_eq!(columns(&s, "t", Access::Read), ["id"]);
    assert_eq!(columns(&s, "u", Access::Read), ["id", "flag"]);

    let s = one("DELETE FROM t WHERE CURRENT OF c");
    assert!(s.has_flag(Flag::Cursor));
    let s = one("DELETE FROM t");
    assert_eq!(accesses(&s), [("t".to_string(), Access::Delete)]);
}

#[test]
fn merge_reports_each_action() {
    let s = one("MERGE INTO t USING s ON t.id = s.id \
         WHEN MATCHED AND s.del THEN DELETE \
         WHEN MATCHED THEN UPDATE SET v = s.v \
         WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)");
    assert_eq!(s.kind, StatementKind::Delete);
    assert!(s.access("t", Access::Delete).is_some());
    assert_eq!(columns(&s, "t", Access::Update), ["v"]);
    assert_eq!(columns(&s, "t", Access::Insert), ["id", "v"]);
    assert_eq!(columns(&s, "s", Access::Read), ["id", "del", "v"]);

    let s = one(
        "MERGE INTO t USING (SELECT * FROM src WHERE pg_sleep(0) IS NULL) s ON t.id = s.id \
         WHEN NOT MATCHED THEN INSERT VALUES (s.id) WHEN MATCHED THEN DO NOTHING",
    );
    assert_eq!(s.kind, StatementKind::Insert);
    assert!(s.access("src", Access::Read).is_some());
    assert!(s.has_flag(Flag::DangerousFunction));
}

#[test]
fn create_table_as_and_select_into_create_and_fill() {
    for sql in [
        "CREATE TABLE n AS SELECT a, b FROM t",
        "SELECT a, b INTO n FROM t",
        "CREATE MATERIALIZED VIEW n AS SELECT a, b FROM t",
    ] {
        let s = one(sql);
        assert_eq!(s.kind, StatementKind::Ddl, "{sql}");
        assert!(s.access("n", Access::Ddl).is_some(), "{sql}");
        assert!(s.access("n", Access::Insert).is_some(), "{sql}");
        assert_eq!(columns(&s, "t", Access::Read), ["a", "b"], "{sql}");
    }
    let s = one("CREATE TABLE n AS SELECT * FROM t WITH NO DATA");
    assert!(s.access("n", Access::Insert).is_none());

    let s = one("CREATE VIEW v AS SELECT a, pg_read_file('x') FROM t");
    assert_eq!(s.kind, StatementKind::Ddl);
    assert!(s.access("v", Access::Ddl).is_some());
    assert_eq!(columns(&s, "t", Access::Read), ["a"]);
    assert!(s.has_flag(Flag::DangerousFunction));
}

/// SQL, kind, accesses in order, flags in any order.
type Case = (
    &'static str,
    StatementKind,
    &'static [(&'static str, Access)],
    &'static [Flag],
);

#[test]
fn utility_and_ddl_statements() {
    let cases: &[Case] = &[
        (
            "TRUNCATE t, s.u CASCADE",
            StatementKind::Delete,
            &[("t", Access::Truncate), ("s.u", Access::Truncate)],
            &[Flag::Cascade],
        ),
        (
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
            StatementKind::Other("LockStmt".into()),
            &[("t", Access::Lock)],
            &[],
        ),
        (
            "VACUUM FULL t",
            StatementKind::Other("VacuumStmt".into()),
            &[("t", Access::Maintenance)],
            &[],
        ),
        (
            "CLUSTER t USING t_pkey",
            StatementKind::Other("ClusterStmt".into()),
            &[("t", Access::Maintenance)],
            &[],
        ),
        (
            "REINDEX TABLE t",
            StatementKind::Other("ReindexStmt".into()),
            &[("t", Access::Maintenance)],
            &[],
        ),
        (
            "REFRESH MATERIALIZED VIEW mv",
            StatementKind::Other("RefreshMatViewStmt".into()),
            &[("mv", Access::Maintenance)],
            &[],
        ),
        (
            "GRANT SELECT ON t TO bob",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[Flag::Privileges],
        ),
        (
            "REVOKE ALL ON t FROM bob CASCADE",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[Flag::Privileges, Flag::Cascade],
        ),
        (
            "GRANT admin TO bob",
            StatementKind::Ddl,
            &[],
            &[Flag::Privileges],
        ),
        (
            "CREATE ROLE evil SUPERUSER",
            StatementKind::Ddl,
            &[],
            &[Flag::Privileges],
        ),
        (
            "ALTER TABLE t OWNER TO bob",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[Flag::Privileges],
        ),
        (
            "ALTER TABLE t DROP COLUMN c CASCADE",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[Flag::Cascade],
        ),
        (
            "ALTER TABLE t RENAME TO u",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[],
        ),
        (
            "DROP TABLE a, s.b CASCADE",
            StatementKind::Ddl,
            &[("a", Access::Ddl), ("s.b", Access::Ddl)],
            &[Flag::Cascade],
        ),
        (
            "DROP VIEW IF EXISTS v",
            StatementKind::Ddl,
            &[("v", Access::Ddl)],
            &[],
        ),
        ("DROP FUNCTION f(int)", StatementKind::Ddl, &[], &[]),
        (
            "CREATE INDEX i ON t (lower(a))",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[],
        ),
        (
            "CREATE TABLE c (id int REFERENCES p (id), LIKE tmpl)",
            StatementKind::Ddl,
            &[
                ("c", Access::Ddl),
                ("p", Access::Ddl),
                ("tmpl", Access::Ddl),
            ],
            &[],
        ),
        (
            "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            StatementKind::Ddl,
            &[("t", Access::Ddl)],
            &[],
        ),
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u",
            StatementKind::Ddl,
            &[("t", Access::Ddl), ("u", Access::Delete)],
            &[],
        ),
        (
            "CREATE FUNCTION f() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM secret; END",
            StatementKind::Ddl,
            &[("secret", Access::Read)],
            &[],
        ),
        (
            "CREATE SCHEMA s CREATE TABLE s1 (a int)",
            StatementKind::Ddl,
            &[("s1", Access::Ddl)],
            &[],
        ),
        ("COMMENT ON TABLE t IS 'x'", StatementKind::Ddl, &[], &[]),
        ("CREATE EXTENSION dblink", StatementKind::Ddl, &[], &[]),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            StatementKind::Other("TransactionStmt".into()),
            &[],
            &[Flag::Transaction],
        ),
        (
            "ROLLBACK TO SAVEPOINT s",
            StatementKind::Other("TransactionStmt".into()),
            &[],
            &[Flag::Transaction],
        ),
        (
            "LISTEN ch",
            StatementKind::Other("ListenStmt".into()),
            &[],
            &[Flag::Listen],
        ),
        (
            "UNLISTEN *",
            StatementKind::Other("UnlistenStmt".into()),
            &[],
            &[Flag::Listen],
        ),
        (
            "NOTIFY ch, 'x'",
            StatementKind::Other("NotifyStmt".into()),
            &[],
            &[Flag::Notify],
        ),
        (
            "SELECT pg_notify('ch', 'x')",
            StatementKind::Select,
            &[],
            &[Flag::DangerousFunction, Flag::Notify],
        ),
        (
            "LOAD 'evil'",
            StatementKind::Other("LoadStmt".into()),
            &[],
            &[Flag::Load],
        ),
        (
            "CALL p(1, (SELECT x FROM t))",
            StatementKind::Other("CallStmt".into()),
            &[("t", Access::Read)],
            &[Flag::Call],
        ),
        (
            "DECLARE c CURSOR FOR SELECT * FROM t",
            StatementKind::Select,
            &[("t", Access::Read)],
            &[Flag::Cursor],
        ),
        (
            "FETCH 10 FROM c",
            StatementKind::Other("FetchStmt".into()),
            &[],
            &[Flag::Cursor],
        ),
        (
            "CLOSE c",
            StatementKind::Other("ClosePortalStmt".into()),
            &[],
            &[Flag::Cursor],
        ),
        (
            "SELECT * FROM t JOIN u ON t.id = u.id FOR UPDATE OF t",
            StatementKind::Select,
            &[
                ("t", Access::Read),
                ("u", Access::Read),
                ("t", Access::Lock),
            ],
            &[Flag::RowLock],
        ),
        (
            "SELECT * FROM t FOR SHARE",
            StatementKind::Select,
            &[("t", Access::Read), ("t", Access::Lock)],
            &[Flag::RowLock],
        ),
        (
            "SHOW search_path",
            StatementKind::Other("VariableShowStmt".into()),
            &[],
            &[],
        ),
        (
            "DISCARD ALL",
            StatementKind::Other("DiscardStmt".into()),
            &[],
            &[],
        ),
        (
            "CHECKPOINT",
            StatementKind::Other("CheckPointStmt".into()),
            &[],
            &[],
        ),
        (
            "DEALLOCATE ALL",
            StatementKind::Other("DeallocateStmt".into()),
            &[],
            &[],
        ),
        (
            "TABLE t",
            StatementKind::Select,
            &[("t", Access::Read)],
            &[],
        ),
        (
            "VALUES (1, pg_sleep(1))",
            StatementKind::Select,
            &[],
            &[Flag::DangerousFunction],
        ),
    ];
    for (sql, kind, tables, flags) in cases {
        let s = one(sql);
        assert_eq!(&s.kind, kind, "{sql}");
        let expected: Vec<(String, Access)> =
            tables.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        assert_eq!(accesses(&s), expected, "{sql}");
        let mut found = s.flags.clone();
        found.sort();
        let mut expected = flags.to_vec();
        expected.sort();
        assert_eq!(found, expected, "{sql}");
    }
}

#[test]
fn function_names_keep_schema_and_quoted_case() {
    let s = one("SELECT \"MyFunc\"(1), PG_CATALOG.PG_SLEEP(0), public.foo(), Lower('X')");
    assert_eq!(
        s.functions,
        ["MyFunc", "pg_catalog.pg_sleep", "public.foo", "lower"]
    );
    assert!(s.has_flag(Flag::DangerousFunction));
    // SQL-standard syntax calls pg_catalog functions
    let s = one("SELECT extract(year FROM now()), substring('abc' FROM 2)");
    assert_eq!(
        s.functions,
        ["pg_catalog.extract", "now", "pg_catalog.substring"]
    );
    // aggregates, windows, filters and ordered-set arguments are walked
    let s = one(
        "SELECT sum(a) FILTER (WHERE pg_sleep(0) IS NULL) OVER (PARTITION BY lower(b) ORDER BY upper(c)), \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(d)) FROM t",
    );
    assert_eq!(
        s.functions,
        [
            "sum",
            "pg_sleep",
            "lower",
            "upper",
            "percentile_cont",
            "abs"
        ]
    );
}

#[test]
fn statement_text_is_cut_from_the_input() {
    let analysis = all("  SELECT 'é' ;\n\n-- note\nSELECT 2;  /* c */ SELECT 3  ");
    let texts: Vec<&str> = analysis
        .statements
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    // from the first token to the last: comments before a statement are not part of it
    assert_eq!(texts, ["SELECT 'é'", "SELECT 2", "SELECT 3"]);
}

#[test]
fn empty_text_has_no_statement() {
    for sql in ["", "   ", ";", ";;", "-- nothing", "/* nothing */"] {
        let analysis = analyze(sql).unwrap();
        assert!(analysis.statements.is_empty(), "{sql:?}");
        assert!(!analysis.is_multi_statement());
    }
}

#[test]
fn fingerprints_ignore_constants_and_formatting() {
    let a = analyze("SELECT * FROM t WHERE id = 1").unwrap();
    let b = analyze("select *\n  from t where ID = 42 -- hi").unwrap();
    let c = analyze("SELECT * FROM u WHERE id = 1").unwrap();
    assert_eq!(a.fingerprint.len(), 16);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(a.fingerprint, c.fingerprint);
}

#[test]
fn text_that_does_not_parse_is_an_error() {
    for sql in [
        "SELEC 1",
        "SELECT * FROM",
        "SELECT 1; DROP",
        "SELECT 'unterminated",
        "SELECT $$unterminated",
        "SELECT 1 /* unterminated",
        "SELECT \"unterminated",
        "SELECT U&\"\\d800\"",
    ] {
        assert!(
            matches!(analyze(sql), Err(AnalyzeError::Parse(_))),
            "{sql}: {:?}",
            analyze(sql)
        );
    }
    assert!(matches!(
        analyze("SELECT 1\0; DROP TABLE t"),
        Err(AnalyzeError::Parse(_))
    ));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let n = 10_000;
    let inputs = [
        format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n)),
        format!("SELECT {}", vec!["1"; 100_000].join("+")),
        format!("SELECT {}true", "NOT ".repeat(n)),
        format!("SELECT {}1{}", "ARRAY[".repeat(n), "]".repeat(n)),
        format!("SELECT {}1{}", "f(".repeat(n), ")".repeat(n)),
        format!("SELECT 1{}", "::int".repeat(n)),
        vec!["SELECT 1"; n].join(" UNION "),
        format!(
            "SELECT * FROM t0 {}",
            (1..n)
                .map(|i| format!("JOIN t{i} ON true"))
                .collect::<String>()
        ),
    ];
    // Also on a thread with a small stack: the parser sizes its guard to the stack it has.
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            for sql in &inputs {
                let result = analyze(sql);
                assert!(
                    matches!(result, Err(AnalyzeError::Parse(_) | AnalyzeError::TooDeep)),
                    "{}…: {result:?}",
                    &sql[..40]
                );
            }
        })
        .unwrap();
    handle.join().unwrap();
    // Moderate nesting is fine.
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(10), ")".repeat(10));
    assert!(analyze(&sql).is_ok());
}

#[test]
fn a_long_flat_statement_is_fine() {
    let sql = format!(
        "SELECT * FROM t WHERE {}",
        (0..5_000)
            .map(|i| format!("a = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    let s = one(&sql);
    assert_eq!(columns(&s, "t", Access::Read), ["*"]);
    let sql = format!(
        "SELECT * FROM t WHERE a IN ({})",
        vec!["1"; 20_000].join(",")
    );
    assert!(analyze(&sql).is_ok());
}

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "INSERT",
    "INTO",
    "UPDATE",
    "DELETE",
    "FROM",
    "WHERE",
    "SET",
    "VALUES",
    "WITH",
    "AS",
    "(",
    ")",
    ",",
    ";",
    "*",
    "t",
    "u",
    "\"Q\"",
    "public.",
    "a",
    "b",
    "=",
    "1",
    "'x'",
    "$$",
    "$q$",
    "/*",
    "*/",
    "--",
    "\n",
    "JOIN",
    "ON",
    "USING",
    "UNION",
    "EXPLAIN",
    "ANALYZE",
    "COPY",
    "TO",
    "PROGRAM",
    "DO",
    "PREPARE",
    "EXECUTE",
    "RETURNING",
    "MERGE",
    "WHEN",
    "MATCHED",
    "THEN",
    "DROP",
    "TABLE",
    "CREATE",
    "f(",
    "LATERAL",
    "EXISTS",
    "IN",
    "U&\"",
    "\\",
    "E'",
    "ORDER BY",
    "GROUP BY",
    "HAVING",
    "LIMIT",
    "FOR UPDATE",
    "ON CONFLICT",
    "DO UPDATE",
    "NOTHING",
    "TRUNCATE",
    "CALL",
    "::int",
    "[",
    "]",
    "ARRAY",
    " ",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_text_never_panics(sql in ".{0,200}") {
        let _ = analyze(&sql);
    }

    #[test]
    fn sql_like_text_never_panics(parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)) {
        let sql = parts.join(" ");
        if let Ok(analysis) = analyze(&sql) {
            cross_check(&sql, &analysis.statements);
        }
    }
}

/// Random valid queries: nested subqueries, joins, CTEs and functions.
fn query() -> impl Strategy<Value = String> {
    let table = prop::sample::select(&["t", "u", "public.v", "\"W\"", "s.x"][..]);
    let leaf = (
        table.clone(),
        prop::sample::select(&["a", "b", "*", "f(a)", "pg_sleep(0)", "1"][..]),
    )
        .prop_map(|(t, e)| format!("SELECT {e} FROM {t}"));
    leaf.prop_recursive(4, 32, 3, move |inner| {
        let table = prop::sample::select(&["t", "u", "public.v", "s.x"][..]);
        prop_oneof![
            (inner.clone(), table.clone())
                .prop_map(|(q, t)| format!("SELECT q.a, {t}.b FROM ({q}) q JOIN {t} ON q.a = {t}.a")),
            (inner.clone(), table.clone())
                .prop_map(|(q, t)| format!("SELECT a FROM {t} WHERE a IN ({q}) OR EXISTS ({q})")),
            (inner.clone(), table.clone())
                .prop_map(|(q, t)| format!("SELECT (SELECT a FROM ({q}) y LIMIT 1), lower(b) FROM {t} GROUP BY 1, 2 HAVING count(*) > 1")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) UNION ALL ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("WITH c AS ({a}) SELECT * FROM c, LATERAL ({b}) l")),
            (inner.clone(), table.clone())
                .prop_map(|(q, t)| format!("SELECT * FROM {t} WHERE a = ANY (ARRAY({q})) ORDER BY (SELECT 1 FROM ({q}) z LIMIT 1)")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    let table = prop::sample::select(&["t", "u", "public.v", "s.x"][..]);
    prop_oneof![
        query(),
        (query(), table.clone()).prop_map(|(q, t)| format!("INSERT INTO {t} (a) SELECT a FROM ({q}) i ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *")),
        (query(), table.clone()).prop_map(|(q, t)| format!("UPDATE {t} SET a = (SELECT count(*) FROM ({q}) n) FROM u WHERE {t}.a = u.a")),
        (query(), table.clone()).prop_map(|(q, t)| format!("WITH d AS (DELETE FROM {t} WHERE a IN ({q}) RETURNING *) SELECT * FROM d")),
        (query(), table.clone()).prop_map(|(q, t)| format!("MERGE INTO {t} USING ({q}) m ON {t}.a = m.a WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT (a) VALUES (m.a)")),
        query().prop_map(|q| format!("EXPLAIN ANALYZE {q}")),
        query().prop_map(|q| format!("CREATE VIEW vv AS {q}")),
        query().prop_map(|q| format!("COPY ({q}) TO STDOUT")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn generated_statements_are_fully_accounted_for(sql in statement()) {
        match analyze(&sql) {
            Ok(analysis) => cross_check(&sql, &analysis.statements),
            // Deep generated nesting may pass the decoder's limit; that must be the only failure.
            Err(AnalyzeError::TooDeep) => {}
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// The (action, table) questions the guard asks for `sql`.
fn questions(sql: &str) -> Vec<(String, String)> {
    let analysis = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    arbiter_sql::proxy::asks_for(&analysis, "db")
        .into_iter()
        .map(|a| (a.action.to_owned(), a.resource.id))
        .collect()
}

/// `SELECT … FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE` takes row locks, which stall
/// every writer of those rows: it needs `update` on each locked table (all of the query
/// level's tables, or those named in `OF`), not only `select`.
#[test]
fn row_locks_need_update_on_the_locked_tables() {
    let update = |t: &str| ("update".to_owned(), format!("db.public.{t}"));
    let select = |t: &str| ("select".to_owned(), format!("db.public.{t}"));
    for strength in ["UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE"] {
        for (sql, locked, not_locked) in [
            (
                format!("SELECT * FROM t FOR {strength}"),
                &["t"][..],
                &[][..],
            ),
            (
                format!("SELECT * FROM t JOIN u ON t.id = u.id FOR {strength}"),
                &["t", "u"],
                &[],
            ),
            (
                format!("SELECT * FROM t JOIN u ON t.id = u.id FOR {strength} OF u"),
                &["u"],
                &["t"],
            ),
            (
                format!("SELECT * FROM t x, u FOR {strength} OF x NOWAIT"),
                &["t"],
                &["u"],
            ),
            (
                format!("SELECT * FROM (SELECT * FROM t) s FOR {strength}"),
                &["t"],
                &[],
            ),
            (
                format!("SELECT id FROM u WHERE id IN (SELECT id FROM t FOR {strength})"),
                &["t"],
                &["u"],
            ),
            (
                format!("WITH c AS (SELECT * FROM t FOR {strength} SKIP LOCKED) SELECT * FROM c"),
                &["t"],
                &[],
            ),
            (
                format!("DECLARE k CURSOR FOR SELECT * FROM t FOR {strength}"),
                &["t"],
                &[],
            ),
        ] {
            let asked = questions(&sql);
            for t in locked {
                assert!(asked.contains(&update(t)), "{sql}: {asked:?}");
                assert!(asked.contains(&select(t)), "{sql}: {asked:?}");
            }
            for t in not_locked {
                assert!(!asked.contains(&update(t)), "{sql}: {asked:?}");
            }
        }
    }
    // Without a locking clause a read is only a `select`; `LOCK` stays `ddl`.
    assert_eq!(questions("SELECT * FROM t"), [select("t")]);
    assert_eq!(
        questions("LOCK TABLE t IN ACCESS EXCLUSIVE MODE"),
        [("ddl".to_owned(), "db.public.t".to_owned())]
    );
}

/// The `totals` of the insert question for `sql`, summing `amount` and `qty`.
fn totals(sql: &str) -> Option<Value> {
    let analysis = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let summed = ["amount".to_owned(), "qty".to_owned()];
    let asks = arbiter_sql::proxy::asks_summing(&analysis, "db", &summed);
    let inserts: Vec<_> = asks.iter().filter(|a| a.action == "insert").collect();
    assert!(inserts.len() <= 1, "{sql}: {asks:#?}");
    inserts
        .first()
        .and_then(|a| a.context.get("totals").cloned())
}

/// Budgets over inserted values add up exactly what a plain `INSERT … VALUES` writes, and
/// nothing when the statement could write more than its text tells (so a budget denies).
#[test]
fn an_insert_of_numbers_is_totalled_for_budgets() {
    let total = |sql: &str| totals(sql).unwrap_or(Value::Null);
    assert_eq!(
        total("INSERT INTO refunds (customer, amount) VALUES (1, 120.50), (2, 30), (3, 0.25)"),
        serde_json::json!({"amount": "150.75"})
    );
    assert_eq!(
        total("insert into refunds (amount, qty, note) values (10, 2, 'x')"),
        serde_json::json!({"amount": "10", "qty": "2"})
    );
    // Only the summed columns, and only when every row gives a non-negative number.
    for sql in [
        "INSERT INTO refunds (customer, note) VALUES (1, 'x')",
        "INSERT INTO refunds (amount) VALUES (10), ($1)",
        "INSERT INTO refunds (amount) VALUES (10), (DEFAULT)",
        "INSERT INTO refunds (amount) VALUES ('900')",
        "INSERT INTO refunds (amount) VALUES (900::numeric)",
        "INSERT INTO refunds (amount) VALUES (-900)",
        "INSERT INTO refunds (amount) VALUES (1e3)",
        "INSERT INTO refunds (amount) VALUES (100 + 800)",
        "INSERT INTO refunds (amount) VALUES (0.0000001)",
        "INSERT INTO refunds (amount) VALUES ((SELECT max(amount) FROM refunds))",
        // No column list: which value is the amount is not in the text.
        "INSERT INTO refunds VALUES (1, 900)",
        "INSERT INTO refunds (amount) SELECT amount FROM refunds",
        "INSERT INTO refunds (amount) VALUES (1) UNION ALL SELECT 900",
        "INSERT INTO refunds (amount) VALUES (1), (900) LIMIT 1",
        // A data-modifying CTE could insert more than the VALUES list says.
        "WITH more AS (INSERT INTO refunds (amount) VALUES (900) RETURNING 1) \
         INSERT INTO refunds (amount) VALUES (1)",
        "UPDATE refunds SET amount = 900",
    ] {
        assert_eq!(totals(sql), None, "{sql}");
    }
    // Each statement of a text is its own question, with its own total.
    let analysis =
        analyze("INSERT INTO refunds (amount) VALUES (5); INSERT INTO refunds (amount) VALUES (7)")
            .unwrap();
    let per_statement: Vec<Value> =
        arbiter_sql::proxy::asks_summing(&analysis, "db", &["amount".to_owned()])
            .into_iter()
            .filter(|a| a.action == "insert")
            .map(|a| a.context["totals"].clone())
            .collect();
    assert_eq!(
        per_statement,
        vec![
            serde_json::json!({"amount": "5"}),
            serde_json::json!({"amount": "7"})
        ]
    );
}
