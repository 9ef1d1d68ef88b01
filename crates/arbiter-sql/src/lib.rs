//! Statement analysis for Arbiter's PostgreSQL guard.
//!
//! [`analyze`] parses SQL text with PostgreSQL's own parser (libpg_query, through the
//! `pg_query` crate) and walks the whole parse tree of every statement to report what the
//! statement would do: which tables it touches and how ([`TableAccess`]), which columns it
//! references where that can be told from the text, which functions it calls, and which
//! features worth a policy decision it uses ([`Flag`]). The guard authorizes each statement
//! from this report; text that does not parse is an error, and the guard denies it.
//!
//! ```
//! use arbiter_sql::{analyze, Access, Flag, StatementKind};
//!
//! let analysis = analyze("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").unwrap();
//! let statement = &analysis.statements[0];
//! assert_eq!(statement.kind, StatementKind::Delete);
//! assert!(statement.has_flag(Flag::DataModifyingCte));
//! assert!(statement.access("t", Access::Delete).is_some());
//! ```
//!
//! The analysis is syntactic: it knows no catalog. It cannot tell which columns a table
//! has, what a view or function does, or what `search_path` resolves a name to; where the
//! text leaves a question open it reports the broader answer (see [`TableAccess::columns`]
//! and the README for the limits).

mod children;
mod functions;
pub mod proxy;
pub mod rewrite;
pub mod scram;
mod walk;
pub mod wire;

pub use functions::{DANGEROUS_FUNCTION_PREFIXES, DANGEROUS_FUNCTIONS, is_dangerous_function};

/// What [`analyze`] found in a piece of SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// One entry per statement, in the order of the text. Empty when the text holds no
    /// statement (only whitespace, comments or semicolons), which PostgreSQL answers with an
    /// empty-query response.
    pub statements: Vec<StatementInfo>,
    /// pg_query's fingerprint of the whole text (16 hex digits): the same for texts that
    /// differ only in constants, whitespace, comments or the case of keywords, so it can key
    /// decisions and logs by query shape.
    pub fingerprint: String,
}

impl Analysis {
    /// Whether the text holds more than one statement (each then carries
    /// [`Flag::MultiStatement`]).
    pub fn is_multi_statement(&self) -> bool {
        self.statements.len() > 1
    }

    /// Whether any statement carries `flag`.
    pub fn has_flag(&self, flag: Flag) -> bool {
        self.statements.iter().any(|s| s.has_flag(flag))
    }
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// The statement's effective kind: see [`StatementKind`].
    pub kind: StatementKind,
    /// Every table (or other relation: view, sequence, index, materialized view) the statement
    /// touches, once per distinct schema, name and access, in the order first seen. A table
    /// read and written appears twice, once per access.
    pub tables: Vec<TableAccess>,
    /// Every function called anywhere in the statement, once each, in the order first seen:
    /// names as the parser gives them (unquoted identifiers folded to lower case, quoted ones
    /// kept as written), schema-qualified when written so and joined with `.`. Functions the
    /// parser inserts for SQL-standard syntax carry its `pg_catalog.` prefix
    /// (`EXTRACT(... FROM x)` is `pg_catalog.extract`). Operators, casts and functions called
    /// by views, triggers, defaults or other functions are not seen.
    pub functions: Vec<String>,
    /// Features used by the statement, once each, in the order first seen.
    pub flags: Vec<Flag>,
    /// Every place the text names a table (by its parse-tree node, a `RangeVar`), in the
    /// order met: what a rewrite must cover to narrow a table's rows. Tables named other than
    /// by a `RangeVar` (`DROP TABLE`'s list) are in [`StatementInfo::tables`] only.
    pub references: Vec<TableReference>,
    /// The statement's own text, cut from the input at the parser's location and length:
    /// from its first token to its last, without the terminating semicolon (comments inside
    /// it are kept).
    pub text: String,
    /// For a plain `INSERT INTO t (columns) VALUES (…), …`: the numeric constants it gives
    /// each column, row by row (see [`InsertedColumn`]). Empty for every other statement.
    pub inserted: Vec<InsertedColumn>,
}

/// The numeric constants an `INSERT … VALUES` gives one column, one per row, as written
/// (`12`, `12.50`, `-3`): what a budget over inserted values adds up.
///
/// Only a statement whose rows are all known from its text has them: a top-level `INSERT`
/// with a column list and a plain `VALUES` list, without `WITH` (a data-modifying CTE could
/// insert more), `ORDER BY`, `LIMIT` or `OFFSET`. A column is left out when any row gives it
/// anything but a number: an expression, a parameter (`$1`), `DEFAULT`, a string, a cast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertedColumn {
    pub column: String,
    pub values: Vec<String>,
}

impl StatementInfo {
    /// Whether the statement carries `flag`.
    pub fn has_flag(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    /// The entry for table `name` (matched without regard to schema) with `access`, if any.
    pub fn access(&self, name: &str, access: Access) -> Option<&TableAccess> {
        self.tables
            .iter()
            .find(|t| t.name == name && t.access == access)
    }

    /// Whether the statement calls a function that [`is_dangerous_function`] lists.
    pub fn calls_dangerous_function(&self) -> bool {
        self.has_flag(Flag::DangerousFunction)
    }
}

/// One place a statement names a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReference {
    pub schema: Option<String>,
    pub name: String,
    /// The byte offset of the name in the analyzed text (the parser's `location`).
    pub location: i32,
    pub role: ReferenceRole,
}

/// What a table reference is to its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceRole {
    /// An item of a `FROM` (or `USING`, or a `MERGE` source): rows are read from it, and a
    /// subquery can stand in its place.
    From,
    /// The table an `UPDATE` or `DELETE` changes: its `WHERE` decides which rows.
    Target,
    /// Anything else: an `INSERT`, `MERGE` or `COPY` target, a sampled table, a table in
    /// DDL, `LOCK`, `TRUNCATE` or maintenance.
    Other,
}

/// The effective kind of a statement.
///
/// For a query or data-modifying statement it is the strongest operation the statement
/// performs anywhere, in the order `Select < Insert < Update < Delete < Ddl`: a `SELECT` whose
/// `WITH` holds a `DELETE` is a `Delete`, `INSERT … ON CONFLICT DO UPDATE` is an `Update`,
/// `MERGE` is its strongest action. Statements that wrap another statement take the kind of
/// what they wrap: `EXPLAIN` (with or without `ANALYZE`; the flags tell them apart),
/// `PREPARE … AS`, `DECLARE … CURSOR FOR`, and `COPY (query)`. `COPY table FROM` is an
/// `Insert`, `COPY table TO` a `Select`, `TRUNCATE` a `Delete`, and `SELECT … INTO` a `Ddl`
/// (it creates a table).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// Reads only.
    Select,
    /// Inserts rows (and reads at most).
    Insert,
    /// Updates rows (and inserts or reads at most).
    Update,
    /// Deletes rows (and updates, inserts or reads at most).
    Delete,
    /// Changes the schema, objects or privileges: `CREATE`, `ALTER`, `DROP`, `GRANT`,
    /// `REVOKE`, `COMMENT`, `SECURITY LABEL`, `CREATE TABLE AS`, `SELECT INTO`, `ALTER SYSTEM`,
    /// and the like.
    Ddl,
    /// Any other statement, named by its parse-tree node as pg_query spells it:
    /// `VariableSetStmt` (`SET`), `TransactionStmt`, `CallStmt`, `DoStmt`, `ExecuteStmt`,
    /// `LockStmt`, `VacuumStmt`, `ExplainStmt` (explaining `EXECUTE`), …
    Other(String),
}

/// One table touched by a statement, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableAccess {
    /// The schema, when the statement names one.
    pub schema: Option<String>,
    /// The table's name (decoded: unquoted identifiers folded to lower case, quoted ones as
    /// written, Unicode escapes resolved).
    pub name: String,
    /// What the statement does to the table.
    pub access: Access,
    /// The columns involved, where the text tells:
    ///
    /// - [`Access::Read`]: columns referenced in expressions (select list, `WHERE`, `JOIN`,
    ///   `GROUP BY`, `HAVING`, `ORDER BY`, windows, `RETURNING`, `SET` right-hand sides, …);
    ///   `"*"` when every column is read (`*`, `t.*`, a whole-row reference such as
    ///   `row_to_json(t)`, a `NATURAL` join, or a reference through a column-renaming alias).
    /// - [`Access::Insert`]: the insert column list; [`Access::Update`]: the columns assigned.
    /// - [`Access::CopyFrom`], [`Access::CopyTo`], [`Access::Maintenance`]: the column list
    ///   written in the statement.
    ///
    /// A list holding `"*"` holds nothing else. Empty means no column list was determined:
    /// read it as "every column" (for example
    /// `SELECT count(*) FROM t`, `INSERT` without a column list, `DELETE`).
    ///
    /// An unqualified column name is attributed to every table it could belong to: every
    /// table in scope at that point, including those of enclosing queries (a correlated
    /// subquery can reach them). This over-reports, never under-reports; qualifying columns
    /// (`t.a`) gives exact lists.
    pub columns: Vec<String>,
}

impl TableAccess {
    /// `schema.name`, or `name` when no schema was written.
    pub fn qualified_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// How a statement touches a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Reads rows: `FROM`/`JOIN`/`USING` items, subqueries, `RETURNING`, and columns of a
    /// write target referenced in its `WHERE` or `SET` expressions.
    Read,
    /// Inserts rows (`INSERT`, `MERGE … INSERT`, filling a table made by `CREATE TABLE AS` or
    /// `SELECT INTO`).
    Insert,
    /// Updates rows (`UPDATE`, `ON CONFLICT DO UPDATE`, `MERGE … UPDATE`).
    Update,
    /// Deletes rows (`DELETE`, `MERGE … DELETE`).
    Delete,
    /// Empties the table (`TRUNCATE`).
    Truncate,
    /// Loads rows into the table (`COPY table FROM`).
    CopyFrom,
    /// Exports the table's rows (`COPY table TO`).
    CopyTo,
    /// Takes an explicit lock: `LOCK TABLE`, or row locks of `SELECT … FOR UPDATE/SHARE`.
    Lock,
    /// Maintenance: `VACUUM`, `ANALYZE`, `CLUSTER`, `REINDEX`, `REFRESH MATERIALIZED VIEW`.
    Maintenance,
    /// Creates, alters, drops or otherwise changes the object's definition or privileges, or
    /// names it in such a statement (`CREATE TABLE`, `ALTER TABLE`, `DROP TABLE`, `GRANT`,
    /// `CREATE INDEX`, a foreign key's referenced table, a trigger's table, …).
    Ddl,
}

/// Features of a statement that a policy may want to decide on by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// The text holds more than one statement; set on each of them.
    MultiStatement,
    /// A `WITH` query holds `INSERT`, `UPDATE`, `DELETE` or `MERGE`.
    DataModifyingCte,
    /// `DO`: an anonymous code block; its body is not analyzed.
    DoBlock,
    /// `CALL`: runs a procedure, whose body is not analyzed.
    Call,
    /// `COPY … TO PROGRAM` / `FROM PROGRAM`: runs a shell command on the database server.
    CopyProgram,
    /// `COPY … TO` / `FROM` a file on the database server.
    CopyFile,
    /// `PREPARE name AS …`; the prepared statement is analyzed and reported.
    SqlPrepare,
    /// `EXECUTE name`: runs a statement prepared earlier, unknown here.
    SqlExecute,
    /// `EXPLAIN` of any form.
    Explain,
    /// `EXPLAIN ANALYZE`: the explained statement is executed.
    ExplainAnalyze,
    /// A cursor: `DECLARE`, `FETCH`, `MOVE`, `CLOSE`, or `WHERE CURRENT OF`.
    Cursor,
    /// Transaction control: `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `PREPARE TRANSACTION`, …
    Transaction,
    /// Changes run-time configuration: `SET`, `RESET`, `set_config()`, `ALTER SYSTEM`,
    /// `ALTER ROLE/DATABASE … SET`.
    SetConfig,
    /// Changes the session's identity: `SET ROLE`, `SET SESSION AUTHORIZATION`, and their
    /// `RESET`s.
    RoleChange,
    /// Changes roles, privileges or ownership: `GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES`,
    /// `CREATE/ALTER/DROP ROLE`, `ALTER … OWNER TO`, `REASSIGN OWNED`, `DROP OWNED`.
    Privileges,
    /// `LISTEN` or `UNLISTEN`.
    Listen,
    /// `NOTIFY` or `pg_notify()`.
    Notify,
    /// `SELECT … FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE`: row locks (also reported
    /// as [`Access::Lock`] on the locked tables).
    RowLock,
    /// `CASCADE` on `DROP`, `TRUNCATE`, `ALTER TABLE … DROP`, `REVOKE` or `DROP OWNED`: the
    /// statement also affects objects it does not name.
    Cascade,
    /// `LOAD`: loads a shared library into the server process.
    Load,
    /// Calls a function listed by [`is_dangerous_function`].
    DangerousFunction,
}

/// Why [`analyze`] could not analyze a text. Every error means: deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    /// PostgreSQL's parser rejected the text (syntax error, NUL byte, input nested beyond
    /// the parser's own stack-depth limit, …).
    #[error("SQL does not parse: {0}")]
    Parse(String),
    /// The parse tree is nested deeper than the analysis follows.
    #[error("SQL is nested too deeply to analyze")]
    TooDeep,
    /// The parser library failed in an unexpected way.
    #[error("SQL analysis failed: {0}")]
    Internal(String),
}

/// How the server the SQL goes to lexes string literals.
///
/// The analysis must split and read the text exactly as that server will: with
/// `standard_conforming_strings` off, a backslash escapes a quote inside `'…'`, so the same
/// text can end a string, and begin a new statement, at a different place. PostgreSQL has it
/// on by default; a guard should read the server's value from its `ParameterStatus` messages
/// and deny statements that change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserSettings {
    /// The server's `standard_conforming_strings` setting.
    pub standard_conforming_strings: bool,
}

impl Default for ParserSettings {
    fn default() -> Self {
        ParserSettings {
            standard_conforming_strings: true,
        }
    }
}

impl ParserSettings {
    fn parser_options(self) -> pg_query::ParserOptions {
        if self.standard_conforming_strings {
            pg_query::ParserOptions::DEFAULT
        } else {
            pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
        }
    }
}

/// Parses `sql` (one or more statements) and reports what each statement does, lexing as
/// PostgreSQL does by default ([`ParserSettings::default`]).
///
/// Any failure is an error, never a partial result: text that does not parse, a tree nested
/// deeper than the analysis follows (see [`AnalyzeError`]), or a failure inside the parser
/// library. The parser guards its own stack, and so does the analysis.
pub fn analyze(sql: &str) -> Result<Analysis, AnalyzeError> {
    analyze_with(sql, ParserSettings::default())
}

/// [`analyze`] for a server whose string lexing is described by `settings`.
pub fn analyze_with(sql: &str, settings: ParserSettings) -> Result<Analysis, AnalyzeError> {
    // The parser library and the walk report failures as errors; a panic would be a bug, and
    // is turned into an error too, so that a guard built on this fails closed.
    std::panic::catch_unwind(|| walk::analyze(sql, settings))
        .unwrap_or_else(|_| Err(AnalyzeError::Internal("the analysis panicked".into())))
}
