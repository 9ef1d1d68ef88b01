//! Data-modifying statements: `INSERT` (with `ON CONFLICT`), `UPDATE`, `DELETE`, `MERGE`,
//! their `RETURNING`, and `COPY`.

use pg_query::protobuf::{self, Node};
use pg_query::{NodeEnum, NodeRef};

use crate::{Access, AnalyzeError, Flag, InsertedColumn, ReferenceRole};

use super::columns::attribute;
use super::{Item, Op, Scope, TableKey, Walked, Walker, strings, table_key};

impl Walker {
    pub(super) fn insert(&mut self, s: &protobuf::InsertStmt) -> Walked {
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

    pub(super) fn update(&mut self, s: &protobuf::UpdateStmt) -> Walked {
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

    pub(super) fn delete(&mut self, s: &protobuf::DeleteStmt) -> Walked {
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

    pub(super) fn merge(&mut self, s: &protobuf::MergeStmt) -> Walked {
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

    pub(super) fn copy(&mut self, c: &protobuf::CopyStmt) -> Walked {
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
}

/// The numeric constants a plain `INSERT INTO t (columns) VALUES …` gives each column (see
/// [`InsertedColumn`] for what "plain" means).
pub(super) fn inserted_constants(s: &protobuf::InsertStmt) -> Vec<InsertedColumn> {
    let Some(NodeEnum::SelectStmt(values)) = s.select_stmt.as_ref().and_then(|n| n.node.as_ref())
    else {
        return Vec::new();
    };
    let plain = s.with_clause.is_none()
        && values.with_clause.is_none()
        && values.larg.is_none()
        && values.sort_clause.is_empty()
        && values.limit_count.is_none()
        && values.limit_offset.is_none()
        && !values.values_lists.is_empty();
    if !plain {
        return Vec::new();
    }
    let rows: Vec<&[Node]> = values
        .values_lists
        .iter()
        .filter_map(|row| match &row.node {
            Some(NodeEnum::List(l)) => Some(l.items.as_slice()),
            _ => None,
        })
        .collect();
    if rows.len() != values.values_lists.len() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, col) in s.cols.iter().enumerate() {
        // `SET col[1] = …`-style indirection writes part of a value: not a plain number.
        let Some(NodeEnum::ResTarget(t)) = &col.node else {
            continue;
        };
        if t.name.is_empty() || !t.indirection.is_empty() {
            continue;
        }
        let numbers: Option<Vec<String>> = rows
            .iter()
            .map(|row| row.get(i).and_then(numeric_constant))
            .collect();
        if let Some(values) = numbers {
            out.push(InsertedColumn {
                column: t.name.clone(),
                values,
            });
        }
    }
    out
}

/// The text of a numeric constant (`12`, `-3`, `12.50`, `1e3`), `None` for anything else.
fn numeric_constant(node: &Node) -> Option<String> {
    use protobuf::a_const::Val;
    match &node.node {
        Some(NodeEnum::AConst(c)) if !c.isnull => match &c.val {
            Some(Val::Ival(i)) => Some(i.ival.to_string()),
            Some(Val::Fval(f)) => Some(f.fval.clone()),
            _ => None,
        },
        _ => None,
    }
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
