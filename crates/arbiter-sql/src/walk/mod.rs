//! The walk over a statement's parse tree.
//!
//! Statements, `FROM` items, column references and function calls have rules of their own
//! here; every other node is walked through all of its children (the `children` module lists
//! them for every node type), so no part of a tree goes unvisited. Nested statements are
//! recognised by their node type wherever they occur, so a `DELETE` inside a `WITH`, an
//! `EXPLAIN`, a `PREPARE` or a `CREATE RULE` is treated as a `DELETE`.
//!
//! The parts: this module holds the walker, what it records and how it descends; the rules
//! are in `dispatch` (which rule each node type gets: statements, flags, DDL, function
//! calls), `query` (`SELECT`, `WITH`, `INTO`), `from` (`FROM` items and joins, the names a
//! query level makes visible), `write` (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `RETURNING`,
//! `COPY`) and `columns` (which table a column reference reads).

use pg_query::protobuf::{self, Node};
use pg_query::{NodeEnum, NodeRef};

use crate::{
    Access, Analysis, AnalyzeError, Flag, ParserSettings, ReferenceRole, StatementInfo,
    StatementKind, TableAccess, TableReference, children,
};

mod columns;
mod dispatch;
mod from;
mod query;
mod write;

use dispatch::is_ddl;

/// The deepest nesting of nodes the walk follows before it gives up with
/// [`AnalyzeError::TooDeep`]. The walk recurses once per level; the parse trees pg_query
/// hands out are far shallower (it refuses to decode past 100 nested messages), so this
/// bound only matters if that limit is ever lifted.
const MAX_DEPTH: usize = 256;

pub(crate) fn analyze(sql: &str, settings: ParserSettings) -> Result<Analysis, AnalyzeError> {
    let options = settings.parser_options();
    let parsed = pg_query::parse(sql, options).map_err(parse_error)?;
    let fingerprint = pg_query::fingerprint(sql, options, 0)
        .map_err(parse_error)?
        .hex;
    let raw_statements = &parsed.protobuf.stmts;
    let multi = raw_statements.len() > 1;
    let mut statements = Vec::with_capacity(raw_statements.len());
    for raw in raw_statements {
        let text = statement_text(sql, raw)?;
        let Some(top) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            return Err(AnalyzeError::Internal(
                "a statement without a parse tree".into(),
            ));
        };
        let top = top.to_ref();
        let mut walker = Walker::default();
        if multi {
            walker.flag(Flag::MultiStatement);
        }
        walker.walk(top)?;
        statements.push(walker.finish(top, text));
    }
    Ok(Analysis {
        statements,
        fingerprint,
    })
}

fn parse_error(error: pg_query::Error) -> AnalyzeError {
    match error {
        pg_query::Error::Parse(message) => AnalyzeError::Parse(message),
        pg_query::Error::Conversion(_) => {
            AnalyzeError::Parse("the text contains a NUL byte".into())
        }
        // prost refuses messages nested more than 100 deep.
        pg_query::Error::Decode(e) if e.to_string().contains("recursion limit") => {
            AnalyzeError::TooDeep
        }
        other => AnalyzeError::Internal(other.to_string()),
    }
}

/// The statement's own text: its byte range in the input (a length of 0 means "to the end").
fn statement_text(sql: &str, raw: &protobuf::RawStmt) -> Result<String, AnalyzeError> {
    let range = usize::try_from(raw.stmt_location).ok().and_then(|start| {
        let end = if raw.stmt_len == 0 {
            sql.len()
        } else {
            start.checked_add(usize::try_from(raw.stmt_len).ok()?)?
        };
        sql.get(start..end)
    });
    match range {
        Some(text) => Ok(text.trim().to_string()),
        None => Err(AnalyzeError::Internal(format!(
            "statement location {}+{} outside the text",
            raw.stmt_location, raw.stmt_len
        ))),
    }
}

/// A table as the text names it: schema (if written) and name.
type TableKey = (Option<String>, String);

fn table_key(rv: &protobuf::RangeVar) -> TableKey {
    let schema = (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone());
    (schema, rv.relname.clone())
}

/// The operations a statement performs, weakest first; the strongest is its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
}

impl Op {
    fn kind(self) -> StatementKind {
        match self {
            Op::Select => StatementKind::Select,
            Op::Insert => StatementKind::Insert,
            Op::Update => StatementKind::Update,
            Op::Delete => StatementKind::Delete,
            Op::Ddl => StatementKind::Ddl,
        }
    }
}

/// Something a query level can refer to by name: a `FROM` item, a write target, a join alias.
#[derive(Debug, Clone)]
struct Item {
    /// The name references use: the alias, else the table's (or function's) name; `None`
    /// for an item that cannot be named.
    name: Option<String>,
    /// The schema, for a table named without alias (matches `schema.table.column`).
    schema: Option<String>,
    /// The tables whose columns the item exposes: one for a table, none for a subquery, a
    /// CTE or a function, those of both sides for a join alias.
    tables: Vec<TableKey>,
    /// The alias renames columns, so names used through it say nothing of the table's own
    /// column names.
    renamed: bool,
    /// The tables a locking clause (`FOR UPDATE`, …) naming this item locks: the table, or
    /// every table a subquery uses (PostgreSQL applies the clause inside it), those of both
    /// sides for a join alias; none for a CTE or a function.
    locks: Vec<TableKey>,
}

impl Item {
    fn derived(name: Option<String>) -> Item {
        Item {
            name,
            schema: None,
            tables: Vec::new(),
            renamed: false,
            locks: Vec::new(),
        }
    }
}

/// The items one query level makes visible.
#[derive(Debug, Default)]
struct Scope {
    items: Vec<Item>,
}

/// One part of a column reference.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Name(&'a str),
    Star,
}

#[derive(Debug, Default)]
struct Walker {
    tables: Vec<TableAccess>,
    functions: Vec<String>,
    flags: Vec<Flag>,
    strongest: Option<Op>,
    /// Query levels, innermost last.
    scopes: Vec<Scope>,
    /// Names of the CTEs visible at this point.
    ctes: Vec<String>,
    depth: usize,
    /// The access recorded for a table met outside a query's `FROM` or a write target (in
    /// DDL, `LOCK`, `TRUNCATE`, maintenance statements); `None` means read.
    default_access: Option<Access>,
    references: Vec<TableReference>,
}

type Walked = Result<(), AnalyzeError>;

impl Walker {
    fn finish(mut self, top: NodeRef<'_>, text: String) -> StatementInfo {
        // "*" already says every column.
        for table in &mut self.tables {
            if table.columns.iter().any(|c| c == "*") {
                table.columns = vec!["*".to_string()];
            }
        }
        let name = children::name(top);
        let kind = match top {
            NodeRef::SelectStmt(_)
            | NodeRef::InsertStmt(_)
            | NodeRef::UpdateStmt(_)
            | NodeRef::DeleteStmt(_)
            | NodeRef::MergeStmt(_)
            | NodeRef::ExplainStmt(_)
            | NodeRef::PrepareStmt(_)
            | NodeRef::DeclareCursorStmt(_)
            | NodeRef::CopyStmt(_)
            | NodeRef::TruncateStmt(_) => self
                .strongest
                .map_or_else(|| StatementKind::Other(name.into()), Op::kind),
            _ if is_ddl(name) => StatementKind::Ddl,
            _ => StatementKind::Other(name.into()),
        };
        StatementInfo {
            kind,
            tables: self.tables,
            functions: self.functions,
            flags: self.flags,
            references: self.references,
            inserted: match top {
                NodeRef::InsertStmt(s) => write::inserted_constants(s),
                _ => Vec::new(),
            },
            text,
        }
    }

    // --- what is recorded ---

    fn flag(&mut self, flag: Flag) {
        if !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
    }

    fn note(&mut self, op: Op) {
        self.strongest = Some(self.strongest.map_or(op, |s| s.max(op)));
    }

    /// Records `access` to `table`, adding `columns` to the entry's column list.
    fn record(&mut self, table: &TableKey, access: Access, columns: &[String]) {
        let index = match self
            .tables
            .iter()
            .position(|t| t.access == access && t.name == table.1 && t.schema == table.0)
        {
            Some(index) => index,
            None => {
                self.tables.push(TableAccess {
                    schema: table.0.clone(),
                    name: table.1.clone(),
                    access,
                    columns: Vec::new(),
                });
                self.tables.len() - 1
            }
        };
        let entry = &mut self.tables[index];
        for column in columns {
            if !entry.columns.contains(column) {
                entry.columns.push(column.clone());
            }
        }
    }

    /// Notes where the text names a table, and in what role.
    fn reference(&mut self, rv: &protobuf::RangeVar, role: ReferenceRole) {
        let (schema, name) = table_key(rv);
        self.references.push(TableReference {
            schema,
            name,
            location: rv.location,
            role,
        });
    }

    fn read_columns(&mut self, reads: Vec<(TableKey, String)>) {
        for (table, column) in reads {
            self.record(&table, Access::Read, std::slice::from_ref(&column));
        }
    }

    fn default_access(&self) -> Access {
        self.default_access.unwrap_or(Access::Read)
    }

    // --- the walk ---

    fn walk(&mut self, node: NodeRef<'_>) -> Walked {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(AnalyzeError::TooDeep);
        }
        let walked = self.dispatch(node);
        self.depth -= 1;
        walked
    }

    fn walk_node(&mut self, node: &Node) -> Walked {
        match &node.node {
            Some(n) => self.walk(n.to_ref()),
            None => Ok(()),
        }
    }

    fn walk_opt(&mut self, node: Option<&Node>) -> Walked {
        node.map_or(Ok(()), |n| self.walk_node(n))
    }

    fn walk_list(&mut self, nodes: &[Node]) -> Walked {
        nodes.iter().try_for_each(|n| self.walk_node(n))
    }

    fn walk_children(&mut self, node: NodeRef<'_>) -> Walked {
        let mut kids = Vec::new();
        children::children(node, &mut kids);
        kids.into_iter().try_for_each(|kid| self.walk(kid))
    }

    /// Walks `node`'s children recording tables met there with `access`.
    fn walk_children_with(&mut self, access: Access, node: NodeRef<'_>) -> Walked {
        let saved = self.default_access.replace(access);
        let walked = self.walk_children(node);
        self.default_access = saved;
        walked
    }
}

/// The `String` values of a list of nodes (names, column lists).
fn strings(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// `NOT NOT … NOT true`, built directly: deeper than any tree pg_query decodes.
    fn nested_not(depth: usize) -> Node {
        let mut node = Node {
            node: Some(NodeEnum::AConst(protobuf::AConst::default())),
        };
        for _ in 0..depth {
            node = Node {
                node: Some(NodeEnum::BoolExpr(Box::new(protobuf::BoolExpr {
                    boolop: protobuf::BoolExprType::NotExpr as i32,
                    args: vec![node],
                    ..Default::default()
                }))),
            };
        }
        node
    }

    #[test]
    fn the_walk_bounds_its_depth() {
        // On a small stack, to show the bound keeps the walk well inside one.
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(|| {
                let deep = nested_not(MAX_DEPTH + 10);
                let mut walker = Walker::default();
                let walked = walker.walk(deep.node.as_ref().unwrap().to_ref());
                assert_eq!(walked, Err(AnalyzeError::TooDeep));

                let shallow = nested_not(MAX_DEPTH - 10);
                let mut walker = Walker::default();
                assert_eq!(walker.walk(shallow.node.as_ref().unwrap().to_ref()), Ok(()));
                // Dropping a deep tree recurses too; keep these inside the thread.
                drop((deep, shallow));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
