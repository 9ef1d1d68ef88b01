//! What the proxy asks the decision point about a piece of SQL ([`asks_for`]), and how the
//! verdicts become an allow, a statement narrowed to the allowed rows, or a denial
//! ([`Proxy::check`]).

use arbiter_pep::{Ask, Durable, Settle, Verdict, decide_ahead_within, decide_within};
use arbiter_types::Entity;
use serde_json::{Map, json};

use crate::rewrite::Narrowing;
use crate::{Analysis, Flag, ParserSettings, StatementKind};

use super::session::Peer;
use super::{Allowed, Denial, Proxy};

impl Proxy {
    /// Decides the SQL text `sql` for `peer` (its credential, in its session).
    pub async fn check(&self, peer: &Peer, sql: &str) -> Result<Allowed, Denial> {
        self.check_ahead(peer, sql, false).await.map(|(a, _)| a)
    }

    /// [`Proxy::check`], and when `ahead` is set and the statement is a plain read
    /// ([`reads_only`]), the answer may come before the decision's record is durable, with
    /// the wait for it: the statement may then be sent at once, but its results must be
    /// withheld from the agent until that wait succeeds (and discarded if it fails).
    pub async fn check_ahead(
        &self,
        peer: &Peer,
        sql: &str,
        ahead: bool,
    ) -> Result<(Allowed, Option<Durable>), Denial> {
        let analysis = self
            .analysis_of(sql)
            .map_err(|_| Denial::new("the statement cannot be analyzed", None))?;
        let ahead = ahead && reads_only(&analysis);
        // The exact text (the fingerprint leaves constants out): what an approval is bound to.
        let digest = statement_digest(sql);
        let asks: Vec<Ask> = asks_summing(
            &analysis,
            &self.config.database_name,
            &self.config.summed_columns,
        )
        .into_iter()
        .map(|mut a| {
            a.context
                .insert("statement_digest".into(), json!(digest.as_str()));
            a.in_session(Some(&peer.session))
        })
        .collect();
        if asks.is_empty() {
            return Ok((Allowed::default(), None));
        }
        let tables: Vec<Option<(String, String)>> = asks
            .iter()
            .map(|a| {
                let props = a.resource.properties.as_ref()?;
                let field = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                Some((field("schema")?, field("name")?))
            })
            .collect();
        // The statement is narrowed before the decisions are final (and, with an embedded
        // decision point, before they are recorded): an allow for rows that cannot be applied
        // is a deny, in the answer and in the record alike.
        let mut narrowed: Option<String> = None;
        let slot = &mut narrowed;
        let (sql_ref, analysis_ref, tables_ref) = (sql, &*analysis, &tables);
        let settle: Settle<'_> = Box::new(move |verdicts: &[Verdict]| {
            if verdicts.len() != tables_ref.len() || verdicts.iter().any(|v| !v.allow) {
                // Denied anyway, or answered wrong (denied below).
                return Ok(());
            }
            let narrowings = narrowings_of(verdicts, tables_ref);
            if narrowings.is_empty() {
                return Ok(());
            }
            let text = crate::rewrite::narrow(
                sql_ref,
                ParserSettings::default(),
                analysis_ref,
                &narrowings,
            )?;
            *slot = Some(text);
            Ok(())
        });
        let decided = if ahead {
            decide_ahead_within(
                self.decider.as_ref(),
                self.config.decision_timeout,
                Some(&peer.credential),
                asks,
                settle,
            )
            .await
        } else {
            decide_within(
                self.decider.as_ref(),
                self.config.decision_timeout,
                Some(&peer.credential),
                asks,
                Some(settle),
            )
            .await
            .map(|v| (v, None))
        };
        let (verdicts, durable) = match decided {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "no decision could be taken; the statement is denied");
                let reason = if e.is_timeout() {
                    "no decision was taken in time"
                } else {
                    "no decision could be taken"
                };
                return Err(Denial::new(reason, None));
            }
        };
        let policy_version = verdicts.iter().find_map(|v| v.policy_version.clone());
        let mut narrowed_by = None;
        for v in &verdicts {
            if !v.allow {
                return Err(v.denial());
            }
            if v.rows.is_some() && narrowed_by.is_none() {
                narrowed_by = Some(v.decision_id.clone());
            }
        }
        match (narrowed_by, narrowed) {
            (None, _) => Ok((
                Allowed {
                    narrowed: None,
                    policy_version,
                },
                durable,
            )),
            (Some(_), Some(text)) => Ok((
                Allowed {
                    narrowed: Some(text),
                    policy_version,
                },
                durable,
            )),
            // Allowed for some rows, and not narrowed: never sent as it is.
            (Some(decision_id), None) => Err(Denial::new(
                "the statement could not be narrowed to the allowed rows",
                decision_id,
            )),
        }
    }
}

/// Folds `other`'s columns into `into` (sorted, once each); `into` may be narrowed to rows
/// only if both may.
fn merge_columns(into: &mut Ask, other: &Ask) {
    let mut columns: Vec<String> = [&into.context, &other.context]
        .iter()
        .filter_map(|c| c.get("columns").and_then(|v| v.as_array()))
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    columns.sort();
    columns.dedup();
    into.context.insert("columns".into(), json!(columns));
    into.rows = into.rows && other.rows;
}

/// Functions a plain read may call and still go ahead of its record (see [`reads_only`]):
/// built-in functions that read nothing but their arguments and change nothing.
const READ_AHEAD_FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "bool_and",
    "bool_or",
    "ceil",
    "char_length",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "date_part",
    "date_trunc",
    "floor",
    "greatest",
    "least",
    "left",
    "length",
    "lower",
    "ltrim",
    "max",
    "min",
    "mod",
    "now",
    "pg_catalog.date_part",
    "pg_catalog.extract",
    "pg_catalog.position",
    "pg_catalog.substring",
    "pg_catalog.trim",
    "position",
    "replace",
    "right",
    "round",
    "rtrim",
    "split_part",
    "string_agg",
    "substr",
    "substring",
    "sum",
    "to_char",
    "trim",
    "trunc",
    "upper",
];

/// Whether `analysis` is a plain read that cannot change anything: one `SELECT` with no
/// feature flag (no locking clause, `INTO`, cursor, data-modifying `WITH`, configuration
/// change), reading tables only, calling only [`READ_AHEAD_FUNCTIONS`]. Such a statement may
/// be sent to the database before its decision's record is durable, its results held back
/// until it is (`arbiter sql proxy`, unless `--strict-order`). Anything else waits for its
/// record before it is sent. (The analysis cannot see inside views: a view that calls a
/// function with effects runs it when read; `--strict-order` keeps such a database in the
/// strict order.)
pub fn reads_only(analysis: &Analysis) -> bool {
    let [statement] = analysis.statements.as_slice() else {
        return false;
    };
    statement.kind == StatementKind::Select
        && statement.flags.is_empty()
        && statement.inserted.is_empty()
        && statement
            .tables
            .iter()
            .all(|t| t.access == crate::Access::Read)
        && statement
            .functions
            .iter()
            .all(|f| READ_AHEAD_FUNCTIONS.contains(&f.as_str()))
}

/// `sha256:<hex>` of a statement's text.
fn statement_digest(sql: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let hash = Sha256::digest(sql.as_bytes());
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Statement kinds decided as `select`.
const SESSION_KINDS: &[&str] = &[
    "TransactionStmt",
    "FetchStmt",
    "ClosePortalStmt",
    "VariableShowStmt",
    "DeallocateStmt",
    "DiscardStmt",
];

/// The action a statement kind is decided as.
fn action_of(kind: &StatementKind) -> &'static str {
    match kind {
        StatementKind::Select => "select",
        StatementKind::Insert => "insert",
        StatementKind::Update => "update",
        StatementKind::Delete => "delete",
        StatementKind::Ddl => "ddl",
        // Session housekeeping that reads nothing a `select` would not: transaction control,
        // fetching from or closing a cursor (decided when it was declared), `SHOW`,
        // `DEALLOCATE`, `DISCARD`.
        StatementKind::Other(n) if SESSION_KINDS.contains(&n.as_str()) => "select",
        StatementKind::Other(_) => "ddl",
    }
}

fn kind_name(kind: &StatementKind) -> String {
    match kind {
        StatementKind::Other(n) => n.clone(),
        k => action_of(k).to_owned(),
    }
}

/// Features asked about on their own, as action `ddl` on `Table::"<db>.arbiter.<feature>"`.
const FEATURES: &[(Flag, &str)] = &[
    (Flag::MultiStatement, "multi_statement"),
    (Flag::DoBlock, "do_block"),
    (Flag::Call, "call"),
    (Flag::CopyProgram, "copy_program"),
    (Flag::CopyFile, "copy_file"),
    (Flag::SqlPrepare, "prepare"),
    (Flag::SqlExecute, "execute"),
    (Flag::ExplainAnalyze, "explain_analyze"),
    (Flag::SetConfig, "set_config"),
    (Flag::RoleChange, "role_change"),
    (Flag::Load, "load"),
];

/// The schema of the pseudo-tables that stand for features and table-less statements.
pub const PSEUDO_SCHEMA: &str = "arbiter";

fn table(db: &str, schema: &str, name: &str) -> Entity {
    let mut props = Map::new();
    props.insert("database".into(), json!(db));
    props.insert("schema".into(), json!(schema));
    props.insert("name".into(), json!(name));
    Entity {
        kind: "Table".into(),
        id: format!("{db}.{schema}.{name}"),
        properties: Some(props),
    }
}

/// The questions asked for a piece of SQL, all of which must be allowed:
///
/// - each table a statement touches: action = the statement's kind (`select`, `insert`,
///   `update`, `delete`, `ddl`; other kinds are `ddl`, except transaction control, `FETCH`,
///   `CLOSE`, `SHOW`, `DEALLOCATE` and `DISCARD`, which are `select`); the tables a
///   `SELECT … FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE` locks are asked `update` as well,
///   resource `Table::"<db>.<schema>.<table>"` (schema `public` when not written), context
///   `columns`, `functions`, `statement_kind`;
/// - a statement that touches no table: the same on `Table::"<db>.arbiter.no_table"`;
/// - each feature used (several statements in one text, `DO`, `CALL`, `COPY … PROGRAM` or
///   file, SQL `PREPARE`/`EXECUTE`, `EXPLAIN ANALYZE`, configuration and role changes,
///   `LOAD`): action `ddl` on `Table::"<db>.arbiter.<feature>"`;
/// - each dangerous function ([`crate::is_dangerous_function`]): action `ddl` on
///   `Table::"<db>.arbiter.function:<name>"`.
///
/// So these are denied unless a policy permits them explicitly.
pub fn asks_for(analysis: &Analysis, db: &str) -> Vec<Ask> {
    asks_summing(analysis, db, &[])
}

/// [`asks_for`], and for a plain `INSERT … VALUES` (see [`crate::InsertedColumn`]) the
/// `insert` question's context gets `totals`: for each of the `summed` columns the statement
/// gives a non-negative number in every row, their exact sum as decimal text
/// (`{"amount": "1250.5"}`). A column given anything else is left out, so a budget over it
/// finds no amount and denies.
pub fn asks_summing(analysis: &Analysis, db: &str, summed: &[String]) -> Vec<Ask> {
    let mut asks = Vec::new();
    let mut features: Vec<&str> = Vec::new();
    for s in &analysis.statements {
        let first = asks.len();
        let action = action_of(&s.kind);
        let mut context = Map::new();
        context.insert("functions".into(), json!(s.functions));
        context.insert("statement_kind".into(), json!(kind_name(&s.kind)));
        context.insert("fingerprint".into(), json!(analysis.fingerprint));
        if s.tables.is_empty() {
            let mut c = context.clone();
            c.insert("columns".into(), json!([]));
            asks.push(Ask {
                action,
                resource: table(db, PSEUDO_SCHEMA, "no_table"),
                context: c,
                rows: false,
                session: None,
            });
        }
        for t in &s.tables {
            let mut c = context.clone();
            c.insert("columns".into(), json!(t.columns));
            if t.access == crate::Access::Insert && !summed.is_empty() {
                let totals = totals_of(&s.inserted, summed);
                if !totals.is_empty() {
                    c.insert("totals".into(), serde_json::Value::Object(totals));
                }
            }
            // `SELECT … FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE` locks the rows it
            // reads, which stalls every writer of them: the locked tables need `update`.
            let action = if t.access == crate::Access::Lock && s.has_flag(Flag::RowLock) {
                "update"
            } else {
                action
            };
            let ask = Ask {
                action,
                resource: table(db, t.schema.as_deref().unwrap_or("public"), &t.name),
                context: c,
                // Reads, updates and deletes can be narrowed to rows (see `crate::rewrite`)
                // where every reference to the table can be.
                rows: matches!(action, "select" | "update" | "delete") && narrowable(s, t),
                session: None,
            };
            // One question per table and action of a statement (`DELETE FROM t WHERE …`
            // writes `t` and reads it): its columns are all the columns any of them names.
            match asks[first..]
                .iter_mut()
                .find(|a: &&mut Ask| a.action == ask.action && a.resource.id == ask.resource.id)
            {
                Some(same) => merge_columns(same, &ask),
                None => asks.push(ask),
            }
        }
        for (flag, name) in FEATURES {
            if s.has_flag(*flag) && !features.contains(name) {
                features.push(name);
                asks.push(Ask {
                    action: "ddl",
                    resource: table(db, PSEUDO_SCHEMA, name),
                    context: context.clone(),
                    rows: false,
                    session: None,
                });
            }
        }
        for f in &s.functions {
            if crate::is_dangerous_function(f) {
                asks.push(Ask {
                    action: "ddl",
                    resource: table(db, PSEUDO_SCHEMA, &format!("function:{f}")),
                    context: context.clone(),
                    rows: false,
                    session: None,
                });
            }
        }
    }
    asks
}

/// The sums of the `summed` columns of an insert's rows (see [`asks_summing`]).
fn totals_of(
    inserted: &[crate::InsertedColumn],
    summed: &[String],
) -> Map<String, serde_json::Value> {
    use arbiter_policy::runtime::Amount;
    inserted
        .iter()
        .filter(|c| summed.contains(&c.column))
        .filter_map(|c| {
            let sum = c.values.iter().try_fold(Amount::default(), |sum, v| {
                Some(sum.saturating_add(Amount::parse(v)?))
            })?;
            Some((c.column.clone(), json!(sum.to_string())))
        })
        .collect()
}

/// The tables of allowed verdicts that carry a row filter, and their filters (a table asked
/// twice, e.g. read and written, gets both filters).
fn narrowings_of(verdicts: &[Verdict], tables: &[Option<(String, String)>]) -> Vec<Narrowing> {
    let mut narrowings: Vec<Narrowing> = Vec::new();
    for (v, table) in verdicts.iter().zip(tables) {
        let (Some(filter), Some((schema, name))) = (&v.rows, table) else {
            continue;
        };
        match narrowings
            .iter_mut()
            .find(|n| &n.schema == schema && &n.name == name)
        {
            Some(n) => n.filter.parts.extend(filter.parts.iter().cloned()),
            None => narrowings.push(Narrowing {
                schema: schema.clone(),
                name: name.clone(),
                filter: filter.clone(),
            }),
        }
    }
    narrowings
}

/// Whether every place `s` names table `t` is one a row filter can be applied at.
fn narrowable(s: &crate::StatementInfo, t: &crate::TableAccess) -> bool {
    let mut refs = s
        .references
        .iter()
        .filter(|r| r.name == t.name && r.schema == t.schema)
        .peekable();
    refs.peek().is_some() && refs.all(|r| r.role != crate::ReferenceRole::Other)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::reads_only;

    #[test]
    fn only_plain_reads_go_ahead_of_their_records() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT count(*), lower(name) FROM t JOIN u ON u.id = t.id GROUP BY 2",
            "WITH r AS (SELECT * FROM t) SELECT * FROM r",
            "SELECT 1",
        ] {
            assert!(reads_only(&crate::analyze(sql).unwrap()), "{sql}");
        }
        for sql in [
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT nextval('s')",
            "SELECT f(id) FROM t",
            "SELECT pg_advisory_lock(1)",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT * INTO copy FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT 1; SELECT 2",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "BEGIN",
            "DECLARE c CURSOR FOR SELECT * FROM t",
            "EXPLAIN SELECT * FROM t",
            "SHOW search_path",
            "SELECT * FROM dblink('x', 'DELETE FROM t') AS r(a int)",
        ] {
            assert!(!reads_only(&crate::analyze(sql).unwrap()), "{sql}");
        }
    }
}
