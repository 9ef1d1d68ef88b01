//! `FROM` items: tables (or CTEs), subqueries, functions, samples and joins, and the names
//! each makes visible to its query level.

use pg_query::protobuf::{self, Node};
use pg_query::{NodeEnum, NodeRef};

use crate::{Access, AnalyzeError, ReferenceRole};

use super::columns::{attribute, star};
use super::{Item, MAX_DEPTH, TableKey, Walked, Walker, strings, table_key};

impl Walker {
    pub(super) fn range_item(&mut self, node: &Node) -> Walked {
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
    pub(super) fn target_item(rv: &protobuf::RangeVar) -> Item {
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
