//! Column references: which tables of the query levels in scope a `ColumnRef` reads, and
//! which columns.

use pg_query::NodeEnum;
use pg_query::protobuf;

use super::{Field, Item, TableKey, Walker};

impl Walker {
    pub(super) fn column_ref(&mut self, c: &protobuf::ColumnRef) {
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
pub(super) fn attribute(item: &Item, column: &str, reads: &mut Vec<(TableKey, String)>) {
    if item.renamed {
        star(item, reads);
    } else {
        for table in &item.tables {
            reads.push((table.clone(), column.to_string()));
        }
    }
}

/// Every column of `item`'s tables.
pub(super) fn star(item: &Item, reads: &mut Vec<(TableKey, String)>) {
    for table in &item.tables {
        reads.push((table.clone(), "*".to_string()));
    }
}

pub(super) fn fields(c: &protobuf::ColumnRef) -> Vec<Option<Field<'_>>> {
    c.fields
        .iter()
        .map(|f| match &f.node {
            Some(NodeEnum::String(s)) => Some(Field::Name(s.sval.as_str())),
            Some(NodeEnum::AStar(_)) => Some(Field::Star),
            _ => None,
        })
        .collect()
}
