//! Queries: `SELECT` (set operations, the select list, `ORDER BY` and `DISTINCT ON`, row
//! locks), `WITH` and the new table of `CREATE TABLE … AS` / `SELECT … INTO`.

use pg_query::protobuf::{self, Node};
use pg_query::{NodeEnum, NodeRef};

use crate::{Access, Flag, ReferenceRole};

use super::columns::fields;
use super::{Field, Item, Op, Scope, Walked, Walker, strings, table_key};

impl Walker {
    pub(super) fn select(&mut self, s: &protobuf::SelectStmt) -> Walked {
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

    pub(super) fn with_clause(&mut self, with: &protobuf::WithClause) -> Walked {
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
    pub(super) fn new_table(&mut self, into: &protobuf::IntoClause) -> Walked {
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
}
