//! The walk over a statement's parse tree.
//!
//! Statements, `FROM` items, column references and function calls have rules of their own
//! here; every other node is walked through all of its children (`children.rs` lists them for
//! every node type), so no part of a tree goes unvisited. Nested statements are recognised by
//! their node type wherever they occur, so a `DELETE` inside a `WITH`, an `EXPLAIN`, a
//! `PREPARE` or a `CREATE RULE` is treated as a `DELETE`.

use pg_query::protobuf::{self, Node, a_const};
use pg_query::{NodeEnum, NodeRef};

use crate::{
    Access, Analysis, AnalyzeError, Flag, ParserSettings, ReferenceRole, StatementInfo,
    StatementKind, TableAccess, TableReference, children, is_dangerous_function,
};

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

    fn dispatch(&mut self, node: NodeRef<'_>) -> Walked {
        match node {
            NodeRef::SelectStmt(s) => self.select(s),
            NodeRef::InsertStmt(s) => self.insert(s),
            NodeRef::UpdateStmt(s) => self.update(s),
            NodeRef::DeleteStmt(s) => self.delete(s),
            NodeRef::MergeStmt(s) => self.merge(s),
            NodeRef::RangeVar(rv) => {
                let access = self.default_access();
                self.record(&table_key(rv), access, &[]);
                self.reference(rv, ReferenceRole::Other);
                Ok(())
            }
            NodeRef::ColumnRef(c) => {
                self.column_ref(c);
                Ok(())
            }
            NodeRef::FuncCall(f) => {
                self.function(f);
                self.walk_children(node)
            }
            NodeRef::IntoClause(into) => self.new_table(into),
            NodeRef::CopyStmt(c) => self.copy(c),
            NodeRef::ExplainStmt(e) => {
                self.flag(Flag::Explain);
                if explain_analyzes(&e.options) {
                    self.flag(Flag::ExplainAnalyze);
                }
                self.walk_children(node)
            }
            NodeRef::PrepareStmt(_) => {
                self.flag(Flag::SqlPrepare);
                self.walk_children(node)
            }
            NodeRef::ExecuteStmt(_) => {
                self.flag(Flag::SqlExecute);
                self.walk_children(node)
            }
            NodeRef::DeclareCursorStmt(_)
            | NodeRef::FetchStmt(_)
            | NodeRef::ClosePortalStmt(_)
            | NodeRef::CurrentOfExpr(_) => {
                self.flag(Flag::Cursor);
                self.walk_children(node)
            }
            NodeRef::DoStmt(_) => {
                self.flag(Flag::DoBlock);
                self.walk_children(node)
            }
            NodeRef::CallStmt(_) => {
                self.flag(Flag::Call);
                self.walk_children(node)
            }
            NodeRef::VariableSetStmt(v) => {
                self.flag(Flag::SetConfig);
                if is_role_setting(&v.name) {
                    self.flag(Flag::RoleChange);
                }
                self.walk_children(node)
            }
            NodeRef::TransactionStmt(_) => {
                self.flag(Flag::Transaction);
                self.walk_children(node)
            }
            NodeRef::ListenStmt(_) | NodeRef::UnlistenStmt(_) => {
                self.flag(Flag::Listen);
                self.walk_children(node)
            }
            NodeRef::NotifyStmt(_) => {
                self.flag(Flag::Notify);
                self.walk_children(node)
            }
            NodeRef::LoadStmt(_) => {
                self.flag(Flag::Load);
                self.walk_children(node)
            }
            NodeRef::LockStmt(_) => self.walk_children_with(Access::Lock, node),
            NodeRef::TruncateStmt(t) => {
                self.note(Op::Delete);
                self.cascade(t.behavior);
                self.walk_children_with(Access::Truncate, node)
            }
            NodeRef::VacuumStmt(_)
            | NodeRef::ClusterStmt(_)
            | NodeRef::ReindexStmt(_)
            | NodeRef::RefreshMatViewStmt(_) => self.walk_children_with(Access::Maintenance, node),
            NodeRef::VacuumRelation(v) => {
                if let Some(rv) = &v.relation {
                    let access = self.default_access();
                    self.reference(rv, ReferenceRole::Other);
                    self.record(&table_key(rv), access, &strings(&v.va_cols));
                }
                Ok(())
            }
            NodeRef::DropStmt(d) => {
                self.cascade(d.behavior);
                if drops_relations(d.remove_type) {
                    for object in &d.objects {
                        if let Some(table) = dotted_name(object) {
                            self.record(&table, Access::Ddl, &[]);
                        }
                    }
                }
                self.ddl(node)
            }
            NodeRef::GrantStmt(g) => {
                self.cascade(g.behavior);
                self.flag(Flag::Privileges);
                self.ddl(node)
            }
            NodeRef::DropOwnedStmt(d) => {
                self.cascade(d.behavior);
                self.flag(Flag::Privileges);
                self.ddl(node)
            }
            NodeRef::GrantRoleStmt(_)
            | NodeRef::AlterDefaultPrivilegesStmt(_)
            | NodeRef::CreateRoleStmt(_)
            | NodeRef::AlterRoleStmt(_)
            | NodeRef::DropRoleStmt(_)
            | NodeRef::AlterOwnerStmt(_)
            | NodeRef::ReassignOwnedStmt(_) => {
                self.flag(Flag::Privileges);
                self.ddl(node)
            }
            NodeRef::AlterSystemStmt(_)
            | NodeRef::AlterRoleSetStmt(_)
            | NodeRef::AlterDatabaseSetStmt(_) => {
                self.flag(Flag::SetConfig);
                self.ddl(node)
            }
            NodeRef::AlterTableCmd(cmd) => {
                self.cascade(cmd.behavior);
                if cmd.subtype == protobuf::AlterTableType::AtChangeOwner as i32 {
                    self.flag(Flag::Privileges);
                }
                self.walk_children(node)
            }
            _ if is_ddl(children::name(node)) => self.ddl(node),
            _ => self.walk_children(node),
        }
    }

    fn ddl(&mut self, node: NodeRef<'_>) -> Walked {
        self.note(Op::Ddl);
        self.walk_children_with(Access::Ddl, node)
    }

    fn cascade(&mut self, behavior: i32) {
        if behavior == protobuf::DropBehavior::DropCascade as i32 {
            self.flag(Flag::Cascade);
        }
    }

    // --- functions ---

    fn function(&mut self, f: &protobuf::FuncCall) {
        let name = strings(&f.funcname).join(".");
        let last = name.rsplit('.').next().unwrap_or(&name);
        if is_dangerous_function(&name) {
            self.flag(Flag::DangerousFunction);
        }
        if last.eq_ignore_ascii_case("set_config") {
            self.flag(Flag::SetConfig);
            // set_config('role', …) is SET ROLE; a name that is not a constant may be too.
            match f.args.first().and_then(string_constant) {
                Some(setting) if !is_role_setting(setting) => {}
                _ => self.flag(Flag::RoleChange),
            }
        }
        if last.eq_ignore_ascii_case("pg_notify") {
            self.flag(Flag::Notify);
        }
        if !self.functions.contains(&name) {
            self.functions.push(name);
        }
    }

    // --- queries ---

    fn select(&mut self, s: &protobuf::SelectStmt) -> Walked {
        self.note(Op::Select);
        let visible_ctes = self.ctes.len();
        if let Some(with) = &s.with_clause {
            self.with_clause(with)?;
        }
        if let Some(into) = &s.into_clause {
            self.new_table(into)?;
        }
        if s.larg.is_some() || s.rarg.is_some() {
            // A set operation: each side is a query of its own; ORDER BY and LIMIT see only
            // the combined output.
            if let Some(left) = &s.larg {
                self.walk(NodeRef::SelectStmt(left))?;
            }
            if let Some(right) = &s.rarg {
                self.walk(NodeRef::SelectStmt(right))?;
            }
            self.scopes.push(Scope {
                items: vec![Item::derived(None)],
            });
            self.walk_list(&s.sort_clause)?;
            self.walk_opt(s.limit_offset.as_deref())?;
            self.walk_opt(s.limit_count.as_deref())?;
            self.walk_list(&s.locking_clause)?;
            self.scopes.pop();
        } else {
            self.scopes.push(Scope::default());
            for item in &s.from_clause {
                self.range_item(item)?;
            }
            let outputs: Vec<&str> = s
                .target_list
                .iter()
                .filter_map(|n| match &n.node {
                    Some(NodeEnum::ResTarget(t)) if !t.name.is_empty() => Some(t.name.as_str()),
                    _ => None,
                })
                .collect();
            self.walk_list(&s.target_list)?;
            self.walk_opt(s.where_clause.as_deref())?;
            self.walk_list(&s.group_clause)?;
            self.walk_opt(s.having_clause.as_deref())?;
            self.walk_list(&s.window_clause)?;
            self.walk_list(&s.values_lists)?;
            self.order_by(&s.distinct_clause, &outputs)?;
            self.order_by(&s.sort_clause, &outputs)?;
            self.walk_opt(s.limit_offset.as_deref())?;
            self.walk_opt(s.limit_count.as_deref())?;
            for clause in &s.locking_clause {
                match &clause.node {
                    Some(NodeEnum::LockingClause(lock)) => self.row_lock(lock),
                    _ => self.walk_node(clause)?,
                }
            }
            self.scopes.pop();
        }
        self.ctes.truncate(visible_ctes);
        Ok(())
    }

    /// `ORDER BY` and `DISTINCT ON` entries; a bare name there means an output column of that
    /// name before any input column, so it is no column reference of a table.
    fn order_by(&mut self, entries: &[Node], outputs: &[&str]) -> Walked {
        for entry in entries {
            let expr = match &entry.node {
                Some(NodeEnum::SortBy(sort)) => sort.node.as_deref(),
                _ => Some(entry),
            };
            if let Some(Some(NodeEnum::ColumnRef(c))) = expr.map(|e| &e.node)
                && let [Some(Field::Name(name))] = fields(c).as_slice()
                && outputs.contains(name)
            {
                continue;
            }
            self.walk_node(entry)?;
        }
        Ok(())
    }

    fn row_lock(&mut self, lock: &protobuf::LockingClause) {
        self.flag(Flag::RowLock);
        let names: Vec<&str> = lock
            .locked_rels
            .iter()
            .filter_map(|n| match &n.node {
                Some(NodeEnum::RangeVar(rv)) => Some(rv.relname.as_str()),
                _ => None,
            })
            .collect();
        let mut locked = Vec::new();
        if let Some(scope) = self.scopes.last() {
            for item in &scope.items {
                let named = item.name.as_deref().is_some_and(|n| names.contains(&n));
                if names.is_empty() || named || lock.locked_rels.len() != names.len() {
                    locked.extend(item.locks.iter().cloned());
                }
            }
        }
        for table in locked {
            self.record(&table, Access::Lock, &[]);
        }
    }

    fn with_clause(&mut self, with: &protobuf::WithClause) -> Walked {
        let ctes = with.ctes.iter().filter_map(|n| match &n.node {
            Some(NodeEnum::CommonTableExpr(c)) => Some(c),
            _ => None,
        });
        if with.recursive {
            // WITH RECURSIVE: every name is visible in every body, its own included.
            for cte in ctes.clone() {
                self.ctes.push(cte.ctename.clone());
            }
        }
        for cte in ctes {
            if let Some(query) = &cte.ctequery {
                if matches!(
                    query.node,
                    Some(
                        NodeEnum::InsertStmt(_)
                            | NodeEnum::UpdateStmt(_)
                            | NodeEnum::DeleteStmt(_)
                            | NodeEnum::MergeStmt(_)
                    )
                ) {
                    self.flag(Flag::DataModifyingCte);
                }
                self.walk_node(query)?;
            }
            if let Some(search) = &cte.search_clause {
                self.walk(NodeRef::CtesearchClause(search))?;
            }
            if let Some(cycle) = &cte.cycle_clause {
                self.walk(NodeRef::CtecycleClause(cycle))?;
            }
            if !with.recursive {
                self.ctes.push(cte.ctename.clone());
            }
        }
        // Anything else in the list (there is nothing else in a valid tree).
        for node in &with.ctes {
            if !matches!(node.node, Some(NodeEnum::CommonTableExpr(_))) {
                self.walk_node(node)?;
            }
        }
        Ok(())
    }

    /// The `INTO` of `CREATE TABLE … AS`, `SELECT … INTO`, `CREATE MATERIALIZED VIEW`.
    fn new_table(&mut self, into: &protobuf::IntoClause) -> Walked {
        self.note(Op::Ddl);
        if let Some(rel) = &into.rel {
            let table = table_key(rel);
            self.reference(rel, ReferenceRole::Other);
            self.record(&table, Access::Ddl, &[]);
            if !into.skip_data {
                self.record(&table, Access::Insert, &strings(&into.col_names));
            }
        }
        self.walk_list(&into.options)?;
        if let Some(query) = &into.view_query {
            self.walk(NodeRef::Query(query))?;
        }
        Ok(())
    }

    // --- FROM items ---

    fn range_item(&mut self, node: &Node) -> Walked {
        let Some(n) = &node.node else { return Ok(()) };
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(AnalyzeError::TooDeep);
        }
        let walked = self.range_item_ref(n.to_ref());
        self.depth -= 1;
        walked
    }

    fn range_item_ref(&mut self, node: NodeRef<'_>) -> Walked {
        match node {
            NodeRef::RangeVar(rv) => {
                let item = self.range_var_item(rv);
                self.push_item(item);
            }
            NodeRef::RangeSubselect(sub) => {
                let seen = self.references.len();
                self.walk_opt(sub.subquery.as_deref())?;
                let mut item = Item::derived(alias_name(sub.alias.as_ref()));
                for r in &self.references[seen..] {
                    let table = (r.schema.clone(), r.name.clone());
                    if !item.locks.contains(&table) {
                        item.locks.push(table);
                    }
                }
                self.push_item(item);
            }
            NodeRef::RangeFunction(f) => {
                self.walk_children(node)?;
                let name = alias_name(f.alias.as_ref()).or_else(|| first_function_name(f));
                self.push_item(Item::derived(name));
            }
            NodeRef::RangeTableSample(sample) => {
                let seen = self.references.len();
                if let Some(relation) = &sample.relation {
                    self.range_item(relation)?;
                }
                // A sampled table cannot be replaced by a subquery.
                for r in &mut self.references[seen..] {
                    r.role = ReferenceRole::Other;
                }
                self.walk_list(&sample.method)?;
                self.walk_list(&sample.args)?;
                self.walk_opt(sample.repeatable.as_deref())?;
            }
            NodeRef::JoinExpr(join) => self.join(join)?,
            NodeRef::RangeTableFunc(f) => {
                self.walk_children(node)?;
                self.push_item(Item::derived(alias_name(f.alias.as_ref())));
            }
            NodeRef::JsonTable(t) => {
                self.walk_children(node)?;
                self.push_item(Item::derived(alias_name(t.alias.as_ref())));
            }
            _ => {
                self.walk(node)?;
                self.push_item(Item::derived(None));
            }
        }
        Ok(())
    }

    fn range_var_item(&mut self, rv: &protobuf::RangeVar) -> Item {
        let name = alias_name(rv.alias.as_ref()).unwrap_or_else(|| rv.relname.clone());
        let renamed = rv.alias.as_ref().is_some_and(|a| !a.colnames.is_empty());
        if rv.schemaname.is_empty() && self.ctes.contains(&rv.relname) {
            return Item {
                renamed,
                ..Item::derived(Some(name))
            };
        }
        let table = table_key(rv);
        self.record(&table, Access::Read, &[]);
        self.reference(rv, ReferenceRole::From);
        Item {
            name: Some(name),
            schema: if rv.alias.is_none() {
                table.0.clone()
            } else {
                None
            },
            tables: vec![table.clone()],
            renamed,
            locks: vec![table],
        }
    }

    /// The item a write target makes visible (no CTE lookup: targets are always tables).
    fn target_item(rv: &protobuf::RangeVar) -> Item {
        let table = table_key(rv);
        Item {
            name: Some(alias_name(rv.alias.as_ref()).unwrap_or_else(|| rv.relname.clone())),
            schema: if rv.alias.is_none() {
                table.0.clone()
            } else {
                None
            },
            tables: vec![table.clone()],
            renamed: false,
            locks: vec![table],
        }
    }

    fn push_item(&mut self, item: Item) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.items.push(item);
        }
    }

    fn scope_len(&self) -> usize {
        self.scopes.last().map_or(0, |s| s.items.len())
    }

    fn join(&mut self, join: &protobuf::JoinExpr) -> Walked {
        let start = self.scope_len();
        if let Some(left) = &join.larg {
            self.range_item(left)?;
        }
        if let Some(right) = &join.rarg {
            self.range_item(right)?;
        }
        let members: Vec<Item> = self
            .scopes
            .last()
            .map(|s| s.items.get(start..).unwrap_or_default().to_vec())
            .unwrap_or_default();
        // USING (a, b) and NATURAL compare columns of both sides.
        let mut reads = Vec::new();
        for column in strings(&join.using_clause) {
            for item in &members {
                attribute(item, &column, &mut reads);
            }
        }
        if join.is_natural {
            for item in &members {
                star(item, &mut reads);
            }
        }
        self.read_columns(reads);
        self.walk_opt(join.quals.as_deref())?;
        let tables: Vec<TableKey> = members.iter().flat_map(|i| i.tables.clone()).collect();
        let locks: Vec<TableKey> = members.iter().flat_map(|i| i.locks.clone()).collect();
        if let Some(alias) = &join.alias {
            // An aliased join hides the names inside it.
            if let Some(scope) = self.scopes.last_mut() {
                scope.items.truncate(start);
            }
            self.push_item(Item {
                name: Some(alias.aliasname.clone()),
                schema: None,
                tables: tables.clone(),
                renamed: !alias.colnames.is_empty(),
                locks: locks.clone(),
            });
        }
        if let Some(alias) = &join.join_using_alias {
            self.push_item(Item {
                name: Some(alias.aliasname.clone()),
                schema: None,
                tables,
                renamed: false,
                locks,
            });
        }
        Ok(())
    }

    // --- data-modifying statements ---

    fn insert(&mut self, s: &protobuf::InsertStmt) -> Walked {
        self.note(Op::Insert);
        let visible_ctes = self.ctes.len();
        if let Some(with) = &s.with_clause {
            self.with_clause(with)?;
        }
        if let Some(rel) = &s.relation {
            let table = table_key(rel);
            self.reference(rel, ReferenceRole::Other);
            self.record(&table, Access::Insert, &target_names(&s.cols));
            self.walk_list(&s.cols)?;
            // The VALUES or SELECT part does not see the target.
            self.walk_opt(s.select_stmt.as_deref())?;
            let target = Self::target_item(rel);
            if let Some(conflict) = &s.on_conflict_clause {
                self.on_conflict(conflict, &table, &target)?;
            }
            if let Some(returning) = &s.returning_clause {
                self.returning(returning, vec![target])?;
            }
        } else {
            self.walk_opt(s.select_stmt.as_deref())?;
        }
        self.ctes.truncate(visible_ctes);
        Ok(())
    }

    fn on_conflict(
        &mut self,
        conflict: &protobuf::OnConflictClause,
        table: &TableKey,
        target: &Item,
    ) -> Walked {
        let update = conflict.action == protobuf::OnConflictAction::OnconflictUpdate as i32;
        if update {
            self.note(Op::Update);
            self.record(table, Access::Update, &target_names(&conflict.target_list));
        }
        self.scopes.push(Scope {
            items: vec![target.clone(), Item::derived(Some("excluded".into()))],
        });
        if let Some(infer) = &conflict.infer {
            if update {
                // DO UPDATE reads the conflicting row, found through these columns.
                let mut reads = Vec::new();
                for elem in &infer.index_elems {
                    if let Some(NodeEnum::IndexElem(e)) = &elem.node
                        && !e.name.is_empty()
                    {
                        attribute(target, &e.name, &mut reads);
                    }
                }
                self.read_columns(reads);
            }
            self.walk(NodeRef::InferClause(infer))?;
        }
        self.walk_list(&conflict.target_list)?;
        self.walk_opt(conflict.where_clause.as_deref())?;
        self.scopes.pop();
        Ok(())
    }

    fn update(&mut self, s: &protobuf::UpdateStmt) -> Walked {
        self.note(Op::Update);
        let visible_ctes = self.ctes.len();
        if let Some(with) = &s.with_clause {
            self.with_clause(with)?;
        }
        let mut scope = Scope::default();
        if let Some(rel) = &s.relation {
            self.reference(rel, ReferenceRole::Target);
            self.record(
                &table_key(rel),
                Access::Update,
                &target_names(&s.target_list),
            );
            scope.items.push(Self::target_item(rel));
        }
        self.scopes.push(scope);
        for item in &s.from_clause {
            self.range_item(item)?;
        }
        self.walk_list(&s.target_list)?;
        self.walk_opt(s.where_clause.as_deref())?;
        if let Some(returning) = &s.returning_clause {
            let items = self
                .scopes
                .last()
                .map(|s| s.items.clone())
                .unwrap_or_default();
            self.returning(returning, items)?;
        }
        self.scopes.pop();
        self.ctes.truncate(visible_ctes);
        Ok(())
    }

    fn delete(&mut self, s: &protobuf::DeleteStmt) -> Walked {
        self.note(Op::Delete);
        let visible_ctes = self.ctes.len();
        if let Some(with) = &s.with_clause {
            self.with_clause(with)?;
        }
        let mut scope = Scope::default();
        if let Some(rel) = &s.relation {
            self.reference(rel, ReferenceRole::Target);
            self.record(&table_key(rel), Access::Delete, &[]);
            scope.items.push(Self::target_item(rel));
        }
        self.scopes.push(scope);
        for item in &s.using_clause {
            self.range_item(item)?;
        }
        self.walk_opt(s.where_clause.as_deref())?;
        if let Some(returning) = &s.returning_clause {
            let items = self
                .scopes
                .last()
                .map(|s| s.items.clone())
                .unwrap_or_default();
            self.returning(returning, items)?;
        }
        self.scopes.pop();
        self.ctes.truncate(visible_ctes);
        Ok(())
    }

    fn merge(&mut self, s: &protobuf::MergeStmt) -> Walked {
        self.note(Op::Select);
        let visible_ctes = self.ctes.len();
        if let Some(with) = &s.with_clause {
            self.with_clause(with)?;
        }
        let table = s.relation.as_ref().map(table_key);
        let mut scope = Scope::default();
        if let Some(rel) = &s.relation {
            self.reference(rel, ReferenceRole::Other);
            scope.items.push(Self::target_item(rel));
        }
        self.scopes.push(scope);
        if let Some(source) = &s.source_relation {
            self.range_item(source)?;
        }
        self.walk_opt(s.join_condition.as_deref())?;
        for clause in &s.merge_when_clauses {
            let Some(NodeEnum::MergeWhenClause(when)) = &clause.node else {
                self.walk_node(clause)?;
                continue;
            };
            let (op, access) = match protobuf::CmdType::try_from(when.command_type) {
                Ok(protobuf::CmdType::CmdUpdate) => (Op::Update, Some(Access::Update)),
                Ok(protobuf::CmdType::CmdInsert) => (Op::Insert, Some(Access::Insert)),
                Ok(protobuf::CmdType::CmdDelete) => (Op::Delete, Some(Access::Delete)),
                Ok(protobuf::CmdType::CmdNothing) => (Op::Select, None),
                _ => {
                    return Err(AnalyzeError::Internal(format!(
                        "MERGE action of unknown type {}",
                        when.command_type
                    )));
                }
            };
            self.note(op);
            if let (Some(table), Some(access)) = (&table, access) {
                let columns = if access == Access::Delete {
                    Vec::new()
                } else {
                    target_names(&when.target_list)
                };
                self.record(table, access, &columns);
            }
            self.walk_opt(when.condition.as_deref())?;
            self.walk_list(&when.target_list)?;
            self.walk_list(&when.values)?;
        }
        if let Some(returning) = &s.returning_clause {
            let items = self
                .scopes
                .last()
                .map(|s| s.items.clone())
                .unwrap_or_default();
            self.returning(returning, items)?;
        }
        self.scopes.pop();
        self.ctes.truncate(visible_ctes);
        Ok(())
    }

    /// `RETURNING`: sees the statement's items, and the target's old and new rows.
    fn returning(&mut self, returning: &protobuf::ReturningClause, items: Vec<Item>) -> Walked {
        let mut old = "old".to_string();
        let mut new = "new".to_string();
        for option in &returning.options {
            if let Some(NodeEnum::ReturningOption(o)) = &option.node {
                if o.option == protobuf::ReturningOptionKind::ReturningOptionOld as i32 {
                    old.clone_from(&o.value);
                } else if o.option == protobuf::ReturningOptionKind::ReturningOptionNew as i32 {
                    new.clone_from(&o.value);
                }
            }
        }
        let mut scope = Scope { items };
        if let Some(target) = scope.items.first().cloned() {
            for name in [old, new] {
                scope.items.push(Item {
                    name: Some(name),
                    schema: None,
                    ..target.clone()
                });
            }
        }
        self.scopes.push(scope);
        self.walk_list(&returning.exprs)?;
        self.scopes.pop();
        Ok(())
    }

    fn copy(&mut self, c: &protobuf::CopyStmt) -> Walked {
        if let Some(rel) = &c.relation {
            self.reference(rel, ReferenceRole::Other);
            let columns = strings(&c.attlist);
            if c.is_from {
                self.note(Op::Insert);
                self.record(&table_key(rel), Access::CopyFrom, &columns);
            } else {
                self.note(Op::Select);
                self.record(&table_key(rel), Access::CopyTo, &columns);
            }
        }
        if c.is_program {
            self.flag(Flag::CopyProgram);
        } else if !c.filename.is_empty() {
            self.flag(Flag::CopyFile);
        }
        self.walk_opt(c.query.as_deref())?;
        self.walk_list(&c.options)?;
        // The WHERE of COPY FROM filters incoming rows; it reads no table.
        self.walk_opt(c.where_clause.as_deref())
    }

    // --- columns ---

    fn column_ref(&mut self, c: &protobuf::ColumnRef) {
        let fields = fields(c);
        let mut reads = Vec::new();
        match fields.as_slice() {
            [Some(Field::Star)] => {
                if let Some(scope) = self.scopes.last() {
                    for item in &scope.items {
                        star(item, &mut reads);
                    }
                }
            }
            [Some(Field::Name(column))] => self.unqualified(column, &mut reads),
            [Some(Field::Name(table)), Some(last)] => {
                self.qualified(None, table, *last, &mut reads)
            }
            [
                Some(Field::Name(schema)),
                Some(Field::Name(table)),
                Some(last),
            ]
            | [
                Some(Field::Name(_)),
                Some(Field::Name(schema)),
                Some(Field::Name(table)),
                Some(last),
            ] => self.qualified(Some(schema), table, *last, &mut reads),
            _ => {
                // No valid reference looks like this; count it as reading everything in scope.
                for scope in &self.scopes {
                    for item in &scope.items {
                        star(item, &mut reads);
                    }
                }
            }
        }
        self.read_columns(reads);
    }

    /// A bare name: a column of any item in scope (PostgreSQL looks in the innermost query
    /// level first and then outwards, and without a catalog it cannot be told which item
    /// has it), or a whole-row reference to an item of that name.
    fn unqualified(&self, column: &str, reads: &mut Vec<(TableKey, String)>) {
        for scope in &self.scopes {
            for item in &scope.items {
                if item.name.as_deref() == Some(column) {
                    star(item, reads);
                }
                attribute(item, column, reads);
            }
        }
    }

    /// `table.column`, `table.*`, `schema.table.column`, …: the innermost item of that name.
    /// A qualifier that names no item is a composite column (`column.field`), or a row PostgreSQL
    /// supplies (`excluded`, `new`, `old`), taken as a bare column name to be safe.
    fn qualified(
        &self,
        schema: Option<&str>,
        table: &str,
        last: Field<'_>,
        reads: &mut Vec<(TableKey, String)>,
    ) {
        let found = self.scopes.iter().rev().find_map(|scope| {
            scope.items.iter().find(|item| {
                item.name.as_deref() == Some(table)
                    && match (schema, &item.schema) {
                        (None, _) | (Some(_), None) => true,
                        (Some(wanted), Some(written)) => wanted == written,
                    }
            })
        });
        match (found, last) {
            (Some(item), Field::Star) => star(item, reads),
            (Some(item), Field::Name(column)) => attribute(item, column, reads),
            (None, _) => match schema {
                // schema.table.column that matches nothing: table.column.field
                Some(schema) => self.qualified(None, schema, Field::Name(table), reads),
                None => self.unqualified(table, reads),
            },
        }
    }
}

/// `column` of `item`: a column of each of its tables, or every column when the item
/// renames columns.
fn attribute(item: &Item, column: &str, reads: &mut Vec<(TableKey, String)>) {
    if item.renamed {
        star(item, reads);
    } else {
        for table in &item.tables {
            reads.push((table.clone(), column.to_string()));
        }
    }
}

/// Every column of `item`'s tables.
fn star(item: &Item, reads: &mut Vec<(TableKey, String)>) {
    for table in &item.tables {
        reads.push((table.clone(), "*".to_string()));
    }
}

fn fields(c: &protobuf::ColumnRef) -> Vec<Option<Field<'_>>> {
    c.fields
        .iter()
        .map(|f| match &f.node {
            Some(NodeEnum::String(s)) => Some(Field::Name(s.sval.as_str())),
            Some(NodeEnum::AStar(_)) => Some(Field::Star),
            _ => None,
        })
        .collect()
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

/// The column names of an INSERT column list or an UPDATE SET list.
fn target_names(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::ResTarget(t)) if !t.name.is_empty() => Some(t.name.clone()),
            _ => None,
        })
        .collect()
}

/// A relation named by a list of strings (`DROP TABLE s.t`): schema and name.
fn dotted_name(node: &Node) -> Option<TableKey> {
    let Some(NodeEnum::List(list)) = &node.node else {
        return None;
    };
    let mut parts = strings(&list.items);
    let name = parts.pop()?;
    Some((parts.pop(), name))
}

fn alias_name(alias: Option<&protobuf::Alias>) -> Option<String> {
    alias.map(|a| a.aliasname.clone())
}

/// The name an unaliased function in FROM is referred to by.
fn first_function_name(f: &protobuf::RangeFunction) -> Option<String> {
    let Some(NodeEnum::List(list)) = f.functions.first()?.node.as_ref() else {
        return None;
    };
    let Some(NodeEnum::FuncCall(call)) = list.items.first()?.node.as_ref() else {
        return None;
    };
    strings(&call.funcname).pop()
}

/// A string constant: `'role'`.
fn string_constant(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.as_str()),
            _ => None,
        },
        _ => None,
    }
}

fn is_role_setting(name: &str) -> bool {
    name.eq_ignore_ascii_case("role") || name.eq_ignore_ascii_case("session_authorization")
}

/// Whether EXPLAIN's options ask for ANALYZE (`ANALYZE`, `(ANALYZE)`, `(ANALYZE true)`, …);
/// anything but a clear false counts.
fn explain_analyzes(options: &[Node]) -> bool {
    options.iter().any(|option| match &option.node {
        Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze") => {
            match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                None => true,
                Some(NodeEnum::Boolean(b)) => b.boolval,
                Some(NodeEnum::Integer(i)) => i.ival != 0,
                Some(NodeEnum::String(s)) => !["false", "off", "no", "0"]
                    .iter()
                    .any(|f| s.sval.eq_ignore_ascii_case(f)),
                Some(_) => true,
            }
        }
        _ => false,
    })
}

/// Whether `DROP` of this object type drops relations (tables, views, …).
fn drops_relations(object_type: i32) -> bool {
    use protobuf::ObjectType as T;
    [
        T::ObjectTable,
        T::ObjectView,
        T::ObjectMatview,
        T::ObjectIndex,
        T::ObjectSequence,
        T::ObjectForeignTable,
    ]
    .iter()
    .any(|t| *t as i32 == object_type)
}

/// Whether a statement node changes the schema, objects or privileges.
pub(crate) fn is_ddl(name: &str) -> bool {
    let prefixed = ["Create", "Alter", "Drop", "Define"]
        .iter()
        .any(|p| name.starts_with(p));
    (prefixed && name.ends_with("Stmt"))
        || matches!(
            name,
            "GrantStmt"
                | "GrantRoleStmt"
                | "CommentStmt"
                | "SecLabelStmt"
                | "RenameStmt"
                | "ReassignOwnedStmt"
                | "RuleStmt"
                | "ViewStmt"
                | "IndexStmt"
                | "CompositeTypeStmt"
                | "ImportForeignSchemaStmt"
        )
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
