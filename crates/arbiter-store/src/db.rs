//! The SQL the store's logic speaks, over either backend.
//!
//! The modules that hold the store's rules (agents, credentials, pins, approvals, policy
//! versions, the audit chain) are written once, against [`Db`]: a statement with numbered
//! parameters (`?1`, `?2`, …), values that are integers, text or NULL, rows read back by column
//! index. [`SqliteStore`](crate::SqliteStore) runs them on a `rusqlite` connection;
//! [`PgStore`](crate::PgStore) rewrites the parameters to PostgreSQL's `$1` and runs them on its
//! connection. The dialect is the common subset of both (`ON CONFLICT`, `CAST(… AS BIGINT)`,
//! no `GLOB`, no JSON functions).
//!
//! The surface mirrors `rusqlite`'s (`prepare_cached`, `query_row`, `query_map`, `optional`,
//! `params!`), so the rules read as plain SQL code.

use std::borrow::Cow;

/// A parameter value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Int(i64),
    Text(Cow<'a, str>),
}

/// A column value read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl Cell {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Int(_) => "an integer",
            Self::Text(_) => "text",
        }
    }
}

/// What running a statement gave.
#[derive(Debug)]
pub(crate) enum Ran {
    /// Rows changed (a statement without rows asked for).
    Changed(usize),
    /// The rows it returned.
    Rows(Vec<Vec<Cell>>),
}

/// An error of the SQL layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A statement that must return a row returned none.
    #[error("a row the store expected is missing")]
    NoRows,
    /// A column held a value of another type than the code reads.
    #[error("column {column} holds {found}, not {expected}")]
    Type {
        column: usize,
        expected: &'static str,
        found: &'static str,
    },
    /// A column held a value the code cannot interpret.
    #[error("column {column} holds a value that is {problem}")]
    Invalid { column: usize, problem: String },
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed, or could not be reached.
    #[error("{0}")]
    Postgres(String),
    /// The database cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A unique constraint refused the row (the store turns it into `Conflict`).
    #[error("a unique constraint refused the row: {0}")]
    Unique(String),
}

pub(crate) type Result<T, E = DbError> = std::result::Result<T, E>;

/// A connection (or transaction) statements run on.
pub(crate) trait Db {
    /// Runs `sql` with `params`; returns its rows when `rows`, else the rows changed.
    fn run(&self, sql: &str, params: &[Val<'_>], rows: bool) -> Result<Ran>;
}

impl dyn Db + '_ {
    /// A statement to run (once or many times).
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        Ok(Stmt {
            db: self,
            sql: sql.to_owned(),
        })
    }
}

/// A statement bound to a connection.
pub(crate) struct Stmt<'s> {
    db: &'s dyn Db,
    sql: String,
}

impl Stmt<'_> {
    /// Runs it without rows; returns the rows changed.
    pub(crate) fn execute(&mut self, params: &[Val<'_>]) -> Result<usize> {
        match self.db.run(&self.sql, params, false)? {
            Ran::Changed(n) => Ok(n),
            Ran::Rows(rows) => Ok(rows.len()),
        }
    }

    fn rows(&self, params: &[Val<'_>]) -> Result<Vec<Vec<Cell>>> {
        match self.db.run(&self.sql, params, true)? {
            Ran::Rows(rows) => Ok(rows),
            Ran::Changed(_) => Ok(Vec::new()),
        }
    }

    /// The first row, mapped; [`DbError::NoRows`] without one.
    pub(crate) fn query_row<T>(
        &mut self,
        params: &[Val<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let rows = self.rows(params)?;
        let first = rows.first().ok_or(DbError::NoRows)?;
        f(&Row { cells: first })
    }

    /// Every row, mapped.
    pub(crate) fn query_map<T>(
        &mut self,
        params: &[Val<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.rows(params)?;
        let mapped: Vec<Result<T>> = rows.iter().map(|cells| f(&Row { cells })).collect();
        Ok(mapped.into_iter())
    }
}

/// One row read back.
#[derive(Debug)]
pub(crate) struct Row<'r> {
    cells: &'r [Cell],
}

impl Row<'_> {
    /// Column `index` as a `T`.
    pub(crate) fn get<I: RowIndex, T: FromCell>(&self, index: I) -> Result<T> {
        let column = index.index();
        let cell = self.cells.get(column).unwrap_or(&Cell::Null);
        T::from_cell(cell).ok_or(DbError::Type {
            column,
            expected: T::EXPECTED,
            found: cell.kind(),
        })
    }
}

/// A column index (a `usize`; a trait so that `row.get(0)` infers it, as in `rusqlite`).
pub(crate) trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// A Rust type a column reads into.
pub(crate) trait FromCell: Sized {
    const EXPECTED: &'static str;
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl FromCell for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromCell for String {
    const EXPECTED: &'static str = "text";
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromCell for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Int(0) => Some(false),
            Cell::Int(1) => Some(true),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// `Ok(None)` for [`DbError::NoRows`], as `rusqlite`'s `OptionalExtension`.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A Rust value a parameter is bound from.
pub(crate) trait ToVal {
    fn to_val(&self) -> Val<'_>;
}

impl ToVal for str {
    fn to_val(&self) -> Val<'_> {
        Val::Text(Cow::Borrowed(self))
    }
}

impl ToVal for String {
    fn to_val(&self) -> Val<'_> {
        Val::Text(Cow::Borrowed(self))
    }
}

impl ToVal for i64 {
    fn to_val(&self) -> Val<'_> {
        Val::Int(*self)
    }
}

impl ToVal for i32 {
    fn to_val(&self) -> Val<'_> {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for u32 {
    fn to_val(&self) -> Val<'_> {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for usize {
    fn to_val(&self) -> Val<'_> {
        // Only limits and counts are bound from a usize; past i64 they mean "no limit".
        Val::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToVal for bool {
    fn to_val(&self) -> Val<'_> {
        Val::Int(i64::from(*self))
    }
}

impl<T: ToVal + ?Sized> ToVal for &T {
    fn to_val(&self) -> Val<'_> {
        (**self).to_val()
    }
}

impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> Val<'_> {
        self.as_ref().map_or(Val::Null, ToVal::to_val)
    }
}

/// Parameters for a statement: `params![a, b]`.
macro_rules! params {
    () => {
        &[] as &[$crate::db::Val<'_>]
    };
    ($($x:expr),+ $(,)?) => {
        &[$($crate::db::ToVal::to_val(&$x)),+] as &[$crate::db::Val<'_>]
    };
}
pub(crate) use params;

/// `sql` with SQLite's `?N` parameters written as PostgreSQL's `$N`. The store's statements
/// hold no `?` in string literals, so every `?` followed by digits is a parameter.
pub(crate) fn to_postgres(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

// ---- SQLite ----

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Val::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

impl Db for rusqlite::Connection {
    fn run(&self, sql: &str, params: &[Val<'_>], rows: bool) -> Result<Ran> {
        let mut stmt = self.prepare_cached(sql)?;
        if !rows {
            return Ok(Ran::Changed(
                stmt.execute(rusqlite::params_from_iter(params))?,
            ));
        }
        let columns = stmt.column_count();
        let mut out = Vec::new();
        let mut found = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = found.next()? {
            let mut cells = Vec::with_capacity(columns);
            for i in 0..columns {
                use rusqlite::types::ValueRef;
                cells.push(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Text(t) => Cell::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    i,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })?
                            .to_owned(),
                    ),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(DbError::Type {
                            column: i,
                            expected: "an integer or text",
                            found: "a real or a blob",
                        });
                    }
                });
            }
            out.push(cells);
        }
        Ok(Ran::Rows(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn parameters_are_renumbered_for_postgres() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND (?2 IS NULL OR c = ?12)"),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c = $12)"
        );
        assert!(matches!(to_postgres("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn rows_read_back_typed_and_name_a_mismatch() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db: &dyn Db = &conn;
        let (n, s, none): (i64, String, Option<i64>) = db
            .prepare_cached("SELECT ?1, ?2, NULL")
            .unwrap()
            .query_row(params![7_i64, "x"], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((n, s.as_str(), none), (7, "x", None));
        let err = db
            .prepare_cached("SELECT 'text'")
            .unwrap()
            .query_row(params![], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(err.to_string().contains("column 0 holds text"), "{err}");
        assert!(matches!(
            db.prepare_cached("SELECT 1 WHERE 0")
                .unwrap()
                .query_row(params![], |r| r.get::<_, i64>(0))
                .optional(),
            Ok(None)
        ));
    }
}
