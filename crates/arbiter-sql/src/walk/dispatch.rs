//! Which rule each node type gets: statements and clauses with rules of their own go to
//! them, statements that only need a flag or an access noted get it here, function calls are
//! recorded, and every other node is walked through all of its children.

use pg_query::protobuf::{self, Node, a_const};
use pg_query::{NodeEnum, NodeRef};

use crate::{Access, Flag, ReferenceRole, children, is_dangerous_function};

use super::{Op, TableKey, Walked, Walker, strings, table_key};

impl Walker {
    /// Walks `node` by the rule of its node type.
    pub(super) fn dispatch(&mut self, node: NodeRef<'_>) -> Walked {
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
pub(super) fn is_ddl(name: &str) -> bool {
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
