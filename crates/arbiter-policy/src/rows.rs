//! Row filters derived from the policies: Cedar partial evaluation with the row as the unknown
//! resource.
//!
//! A table's rows are the entity type [`ROW_TYPE`], children of their `Table`. The row
//! policies are those whose scope names that type (`resource is Row`, `resource is Row in
//! Table::"…"`); no other policy takes part, so a policy written for tables never becomes a
//! condition on columns. Asked "which rows of `Table::"shop.public.orders"` may this principal
//! `select`?", the request is evaluated with everything known but the resource, which is an
//! unknown `Row`. Row policies that cannot apply to a row of that table fall away; each
//! remaining permit and forbid leaves a residual
//! condition on the row, which is translated into a [`RowExpr`] over its columns
//! (`resource.tenant` is the column `tenant`, `resource in Table::"…"` is decided from the
//! table being read). A residual that the expression language cannot state makes the whole
//! answer an error (the caller denies): a filter is never widened or guessed.

use std::collections::HashSet;
use std::str::FromStr;

use arbiter_types::rows::{ArithOp, CmpOp, LikePart};
use arbiter_types::{EvaluationRequest, RowExpr, RowPolicies};
use cedar_policy::{Effect, EntityId, EntityTypeName, EntityUid, Request};
use serde_json::Value;

use crate::engine::error_chain;
use crate::load::Policies;
use crate::{RequestError, RowsError};

/// The entity type of a table's row.
pub const ROW_TYPE: &str = "Row";

/// What the policies allow of a table's rows for one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// No row: no permit can hold for any row (there is none, or each one's condition is
    /// `false` or an error whatever the row, as `x && false`), or a forbid holds for every
    /// row.
    None,
    /// The rows where the conditions allow.
    Some(RowPolicies),
}

impl Policies {
    /// Whether some row policy (see [`Policies::rows`]) is a `forbid`. When none is, a table
    /// allowed as a whole needs no row filter.
    pub fn may_forbid_rows(&self) -> bool {
        self.row_forbids
    }

    /// Which rows of `req.resource` (a `Table`) `req.subject` may act on with `req.action`,
    /// from the policies that apply to the table's [`ROW_TYPE`] entities. The request's own
    /// evaluation on the table as a whole is the caller's business; this looks at rows only.
    ///
    /// `Err` when the answer cannot be stated as a row filter: an evaluation error, or a
    /// residual condition outside what [`RowExpr`] expresses (the message names the policy).
    pub fn rows(&self, req: &EvaluationRequest) -> Result<Rows, RowsError> {
        let part = self.row_policies(req)?;
        let forbid_all = part.forbids.iter().any(|(_, c)| *c == RowExpr::Bool(true));
        if forbid_all || !part.permits.iter().any(|(_, c)| c.may_hold()) {
            return Ok(Rows::None);
        }
        Ok(Rows::Some(part))
    }

    /// The residual permits and forbids on the rows of `req.resource` (see [`Policies::rows`]),
    /// whatever they allow: conditions that are `false` for every row are left out.
    pub fn row_policies(&self, req: &EvaluationRequest) -> Result<RowPolicies, RowsError> {
        let invalid = |problem: String| RowsError::Request(RequestError::Invalid(problem));
        let (principal, action, context, overrides) = self.parts(req).map_err(invalid)?;
        let row_type = EntityTypeName::from_str(ROW_TYPE)
            .map_err(|_| invalid("the `Row` entity type name failed to parse".to_owned()))?;
        let table = EntityUid::from_type_name_and_id(
            self.type_name(&req.resource.kind, "resource")
                .map_err(invalid)?,
            EntityId::new(&req.resource.id),
        );
        let builder = Request::builder()
            .principal(principal.clone())
            .action(action)
            .unknown_resource_with_type(row_type)
            .context(context);
        let request = match &self.schema {
            Some(schema) => builder
                .schema(schema)
                .build()
                .map_err(|e| invalid(error_chain(&e)))?,
            None => builder.build(),
        };
        let merged;
        let entities = if overrides.is_empty() {
            &self.entities
        } else {
            merged = self
                .entities
                .clone()
                .upsert_entities(overrides, self.schema.as_ref())
                .map_err(|e| invalid(error_chain(&e)))?;
            &merged
        };
        let response = self
            .authorizer
            .is_authorized_partial(&request, &self.set, entities);
        let errored: Vec<String> = response
            .definitely_errored()
            .map(ToString::to_string)
            .collect();
        if !errored.is_empty() {
            return Err(RowsError::Evaluation { policies: errored });
        }
        // The table and everything it is in: what `resource in …` of a row can be true of.
        let mut containers: HashSet<(String, String)> = HashSet::new();
        containers.insert((req.resource.kind.clone(), req.resource.id.clone()));
        if let Some(ancestors) = entities.ancestors(&table) {
            for a in ancestors {
                containers.insert((a.type_name().to_string(), a.id().unescaped().to_owned()));
            }
        }
        let translate = Translate {
            containers: &containers,
        };
        let mut part = RowPolicies {
            principal: principal.to_string(),
            ..RowPolicies::default()
        };
        for policy in response.all_residuals() {
            if !self.row_scoped.contains(policy.id()) {
                continue;
            }
            let id = policy.id().to_string();
            let json = policy.to_json().map_err(|e| RowsError::NotExpressible {
                policy: id.clone(),
                problem: format!("its residual cannot be read: {e}"),
            })?;
            let condition =
                translate
                    .policy(&json)
                    .map_err(|problem| RowsError::NotExpressible {
                        policy: id.clone(),
                        problem,
                    })?;
            if condition == RowExpr::Bool(false) {
                continue;
            }
            match policy.effect() {
                Effect::Permit => part.permits.push((id, condition)),
                Effect::Forbid => part.forbids.push((id, condition)),
            }
        }
        part.permits.sort_by(|a, b| a.0.cmp(&b.0));
        part.forbids.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(part)
    }
}

struct Translate<'a> {
    /// `Type::"id"` of the table and its ancestors.
    containers: &'a HashSet<(String, String)>,
}

type Translated = Result<RowExpr, String>;

/// The operand of a unary operator, the two of a binary one (Cedar's JSON policy format).
fn arg(v: &Value) -> Result<&Value, String> {
    v.get("arg")
        .ok_or_else(|| "a malformed residual".to_owned())
}

fn sides(v: &Value) -> Result<(&Value, &Value), String> {
    match (v.get("left"), v.get("right")) {
        (Some(l), Some(r)) => Ok((l, r)),
        _ => Err("a malformed residual".into()),
    }
}

/// Whether an expression is the unknown row.
fn is_unknown(e: &Value) -> bool {
    e.get("unknown").is_some()
}

fn entity_of(v: &Value) -> Option<(String, String)> {
    let e = v.get("__entity").unwrap_or(v);
    Some((
        e.get("type")?.as_str()?.to_owned(),
        e.get("id")?.as_str()?.to_owned(),
    ))
}

impl Translate<'_> {
    /// A residual policy's condition (Cedar's JSON form): its scope for the resource
    /// (principal and action are known, so their constraints were decided) and its
    /// `when`/`unless` clauses.
    fn policy(&self, p: &Value) -> Translated {
        let op = |field: &str| {
            p.get(field)
                .and_then(|c| c.get("op"))
                .and_then(Value::as_str)
        };
        if op("principal") != Some("All") || op("action") != Some("All") {
            return Err("a principal or action constraint was left undecided".into());
        }
        let resource = p.get("resource").unwrap_or(&Value::Null);
        let mut condition = match op("resource") {
            Some("All") => RowExpr::Bool(true),
            Some("==") => RowExpr::Bool(false),
            Some("in") => RowExpr::Bool(self.scope_in(resource)?),
            Some("is") => {
                let row = resource.get("entity_type").and_then(Value::as_str) == Some(ROW_TYPE);
                let within = match resource.get("in") {
                    Some(container) => self.scope_in(container)?,
                    None => true,
                };
                RowExpr::Bool(row && within)
            }
            _ => return Err("an unreadable resource constraint".into()),
        };
        let conditions = p
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or("a residual without conditions")?;
        for clause in conditions {
            let body = clause.get("body").ok_or("a condition without a body")?;
            let c = match clause.get("kind").and_then(Value::as_str) {
                Some("when") => self.expr(body)?,
                Some("unless") => not(self.expr(body)?),
                _ => return Err("a condition of unknown kind".into()),
            };
            condition = and(condition, c);
        }
        Ok(condition)
    }

    /// `{"entity": …}` or `{"entities": [ … ]}` of a scope constraint.
    fn scope_in(&self, c: &Value) -> Result<bool, String> {
        if let Some(e) = c.get("entity") {
            return Ok(self.contains(e));
        }
        if let Some(Value::Array(list)) = c.get("entities") {
            return Ok(list.iter().any(|e| self.contains(e)));
        }
        Err("a template slot or an unreadable `in` constraint".into())
    }

    fn contains(&self, e: &Value) -> bool {
        entity_of(e).is_some_and(|uid| self.containers.contains(&uid))
    }

    fn expr(&self, e: &Value) -> Translated {
        let Some((op, v)) = e.as_object().and_then(|o| o.iter().next()) else {
            return Err("a malformed residual".into());
        };
        match op.as_str() {
            "Value" => literal(v),
            "Var" => Err(format!("`{v}` was left undecided")),
            "unknown" => Err("the row itself is used as a value".into()),
            "." => {
                let attr = v.get("attr").and_then(Value::as_str).unwrap_or_default();
                match v.get("left") {
                    Some(l) if is_unknown(l) => Ok(RowExpr::Column(attr.to_owned())),
                    _ => Err(format!(
                        "`.{attr}` of something other than the row (only the row's own columns can be read)"
                    )),
                }
            }
            "has" => {
                let attr = v.get("attr").and_then(Value::as_str).unwrap_or_default();
                match v.get("left") {
                    Some(l) if is_unknown(l) => Ok(RowExpr::Has(attr.to_owned())),
                    _ => Err("`has` on something other than the row".into()),
                }
            }
            "!" => Ok(not(self.expr(arg(v)?)?)),
            "neg" => Ok(match self.expr(arg(v)?)? {
                RowExpr::Long(n) => match n.checked_neg() {
                    Some(m) => RowExpr::Long(m),
                    None => RowExpr::Neg(Box::new(RowExpr::Long(n))),
                },
                other => RowExpr::Neg(Box::new(other)),
            }),
            "==" => self.cmp(CmpOp::Eq, v),
            "!=" => self.cmp(CmpOp::Ne, v),
            "<" => self.cmp(CmpOp::Lt, v),
            "<=" => self.cmp(CmpOp::Le, v),
            ">" => self.cmp(CmpOp::Gt, v),
            ">=" => self.cmp(CmpOp::Ge, v),
            "&&" => {
                let (l, r) = sides(v)?;
                let l = self.expr(l)?;
                if l == RowExpr::Bool(false) {
                    return Ok(l);
                }
                Ok(and(l, self.expr(r)?))
            }
            "||" => {
                let (l, r) = sides(v)?;
                let l = self.expr(l)?;
                if l == RowExpr::Bool(true) {
                    return Ok(l);
                }
                Ok(or(l, self.expr(r)?))
            }
            "+" => self.arith(ArithOp::Add, v),
            "-" => self.arith(ArithOp::Sub, v),
            "*" => self.arith(ArithOp::Mul, v),
            "in" => {
                let (l, r) = sides(v)?;
                if !is_unknown(l) {
                    return Err("`in` on something other than the row".into());
                }
                Ok(RowExpr::Bool(self.row_in(r)?))
            }
            "is" => {
                let left = v.get("left").ok_or("a malformed residual")?;
                if !is_unknown(left) {
                    return Err("`is` on something other than the row".into());
                }
                let mut holds = v.get("entity_type").and_then(Value::as_str) == Some(ROW_TYPE);
                if let Some(container) = v.get("in") {
                    holds = holds && self.row_in(container)?;
                }
                Ok(RowExpr::Bool(holds))
            }
            "contains" => {
                let (l, r) = sides(v)?;
                if let Some(Value::Array(items)) = l.get("Set") {
                    let values = items
                        .iter()
                        .map(|i| match i.get("Value") {
                            Some(v) => literal(v),
                            None => Err("a set of other than constants".to_owned()),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok(RowExpr::OneOf(Box::new(self.expr(r)?), values));
                }
                match l.get(".") {
                    Some(get) if get.get("left").is_some_and(is_unknown) => {
                        let attr = get.get("attr").and_then(Value::as_str).unwrap_or_default();
                        Ok(RowExpr::Holds(attr.to_owned(), Box::new(self.expr(r)?)))
                    }
                    _ => {
                        Err("`.contains` on something other than a constant set or a column".into())
                    }
                }
            }
            "like" => {
                let left = v.get("left").ok_or("a malformed residual")?;
                let pattern = v
                    .get("pattern")
                    .and_then(Value::as_array)
                    .ok_or("a `like` without a pattern")?;
                let mut parts = Vec::new();
                for p in pattern {
                    match p {
                        Value::String(w) if w == "Wildcard" => parts.push(LikePart::Any),
                        _ => match p.get("Literal").and_then(Value::as_str) {
                            Some(text) => parts.extend(text.chars().map(LikePart::Char)),
                            None => return Err("an unreadable `like` pattern".into()),
                        },
                    }
                }
                Ok(RowExpr::Like(Box::new(self.expr(left)?), parts))
            }
            "if-then-else" => {
                let part = |name: &str| v.get(name).ok_or("a malformed `if`");
                match self.expr(part("if")?)? {
                    RowExpr::Bool(true) => self.expr(part("then")?),
                    RowExpr::Bool(false) => self.expr(part("else")?),
                    c => Ok(RowExpr::If(
                        Box::new(c),
                        Box::new(self.expr(part("then")?)?),
                        Box::new(self.expr(part("else")?)?),
                    )),
                }
            }
            "Set" => Err("a set used other than with `.contains`".into()),
            "Record" => Err("a record".into()),
            other => Err(format!("the operation `{other}`")),
        }
    }

    fn cmp(&self, op: CmpOp, v: &Value) -> Translated {
        let (l, r) = sides(v)?;
        // The row compared as an entity: a row is equal to no named entity.
        if is_unknown(l) || is_unknown(r) {
            return match op {
                CmpOp::Eq => Ok(RowExpr::Bool(false)),
                CmpOp::Ne => Ok(RowExpr::Bool(true)),
                _ => Err("the row compared with `<`/`>`".into()),
            };
        }
        Ok(RowExpr::Cmp(
            op,
            Box::new(self.expr(l)?),
            Box::new(self.expr(r)?),
        ))
    }

    fn arith(&self, op: ArithOp, v: &Value) -> Translated {
        let (l, r) = sides(v)?;
        Ok(RowExpr::Arith(
            op,
            Box::new(self.expr(l)?),
            Box::new(self.expr(r)?),
        ))
    }

    /// `<row> in <container>`: whether the table is (in) it.
    fn row_in(&self, container: &Value) -> Result<bool, String> {
        if let Some(v) = container.get("Value") {
            return match v {
                Value::Array(items) => Ok(items.iter().any(|i| self.contains(i))),
                v if entity_of(v).is_some() => Ok(self.contains(v)),
                _ => Err("`in` something other than an entity".into()),
            };
        }
        if let Some(Value::Array(items)) = container.get("Set") {
            let mut any = false;
            for item in items {
                match item.get("Value") {
                    Some(v) if entity_of(v).is_some() => any |= self.contains(v),
                    _ => return Err("`in` a set of other than entities".into()),
                }
            }
            return Ok(any);
        }
        Err("`in` something other than an entity".into())
    }
}

fn literal(v: &Value) -> Translated {
    match v {
        Value::Bool(b) => Ok(RowExpr::Bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(RowExpr::Long)
            .ok_or_else(|| "a number that is not a Long".to_owned()),
        Value::String(s) => Ok(RowExpr::Str(s.clone())),
        Value::Object(_) => match entity_of(v) {
            Some((_, id)) => Ok(RowExpr::Str(id)),
            None => Err("a literal of an unsupported kind".into()),
        },
        _ => Err("a literal of an unsupported kind".into()),
    }
}

/// `a && b` with Cedar's short circuit: `false && x` is false, `true && x` is `x`, `x && true`
/// is `x` (for a boolean `x`; anything else errors in both forms). `x && false` stays: an
/// error in `x` is an error.
fn and(a: RowExpr, b: RowExpr) -> RowExpr {
    match (a, b) {
        (RowExpr::Bool(false), _) => RowExpr::Bool(false),
        (RowExpr::Bool(true), b) => b,
        (a, RowExpr::Bool(true)) => a,
        (a, b) => RowExpr::And(Box::new(a), Box::new(b)),
    }
}

fn or(a: RowExpr, b: RowExpr) -> RowExpr {
    match (a, b) {
        (RowExpr::Bool(true), _) => RowExpr::Bool(true),
        (RowExpr::Bool(false), b) => b,
        (a, RowExpr::Bool(false)) => a,
        (a, b) => RowExpr::Or(Box::new(a), Box::new(b)),
    }
}

fn not(a: RowExpr) -> RowExpr {
    match a {
        RowExpr::Bool(b) => RowExpr::Bool(!b),
        a => RowExpr::Not(Box::new(a)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use arbiter_types::{Action, Entity};
    use serde_json::{Map, json};

    fn policies(src: &str, entities: Option<&str>) -> Policies {
        Policies::from_sources(
            &[crate::SourceFile {
                path: "p.cedar".into(),
                text: src.into(),
            }],
            None,
            entities,
        )
        .unwrap()
    }

    fn req(agent_props: serde_json::Value, action: &str, table: &str) -> EvaluationRequest {
        EvaluationRequest {
            subject: Entity {
                kind: "Agent".into(),
                id: "bot".into(),
                properties: agent_props.as_object().cloned(),
            },
            action: Action {
                name: action.into(),
                properties: None,
            },
            resource: Entity {
                kind: "Table".into(),
                id: table.into(),
                properties: None,
            },
            context: Map::new(),
        }
    }

    const TENANT: &str = r#"
        @id("tenant-rows")
        permit (principal is Agent, action == Action::"select",
                resource is Row in Table::"shop.public.orders")
        when { resource.tenant == principal.tenant };
        @id("other-table")
        permit (principal, action == Action::"select", resource is Row in Table::"shop.public.other")
        when { resource.x == 1 };
        @id("tables")
        permit (principal, action == Action::"select", resource is Table)
        when { resource.name == "open" };
        @id("no-archived")
        forbid (principal, action, resource is Row) when { resource has archived && resource.archived };
    "#;

    #[test]
    fn a_tenant_policy_becomes_a_condition_on_the_tenant_column() {
        let p = policies(TENANT, None);
        let rows = p
            .rows(&req(
                json!({"tenant": "acme"}),
                "select",
                "shop.public.orders",
            ))
            .unwrap();
        let Rows::Some(part) = rows else {
            panic!("{rows:?}")
        };
        assert_eq!(part.principal, "Agent::\"bot\"");
        assert_eq!(part.permits.len(), 1, "{part:?}");
        assert_eq!(part.permits[0].0, "tenant-rows");
        assert_eq!(
            part.permits[0].1.to_string(),
            r#"(resource["tenant"] == "acme")"#
        );
        assert_eq!(part.forbids.len(), 1);
        assert_eq!(
            part.forbids[0].1.to_string(),
            r#"((resource has "archived") && resource["archived"])"#
        );
    }

    /// Cedar keeps `x && false` as a residual (an error in `x` would be an error): a permit
    /// whose condition can never hold allows no row, whatever the order of its conditions.
    #[test]
    fn a_permit_that_can_never_hold_allows_no_rows_in_any_order() {
        for condition in [
            r#"resource.tenant == "acme" && ["id", "email"].containsAll(context.columns)"#,
            r#"["id", "email"].containsAll(context.columns) && resource.tenant == "acme""#,
            r#"resource.tenant == "acme" && (resource.tenant != "x" && ["id"].containsAll(context.columns))"#,
            r#"if ["id", "email"].containsAll(context.columns) then resource.tenant == "acme" else false"#,
            r#"if resource.tenant == "acme" then ["id"].containsAll(context.columns) else false"#,
            r#"!(resource.tenant == "acme" || !["id"].containsAll(context.columns))"#,
        ] {
            let p = policies(
                &format!(
                    r#"@id("narrow") permit (principal, action == Action::"select", resource is Row in Table::"shop.public.orders") when {{ {condition} }};"#
                ),
                None,
            );
            let mut r = req(json!({}), "select", "shop.public.orders");
            r.context.insert("columns".into(), json!(["id", "ssn"]));
            assert_eq!(p.rows(&r).unwrap(), Rows::None, "{condition}");
            r.context.insert("columns".into(), json!(["id"]));
            assert!(matches!(p.rows(&r).unwrap(), Rows::Some(_)), "{condition}");
        }
    }

    #[test]
    fn no_permit_for_the_table_means_no_rows() {
        let p = policies(TENANT, None);
        let rows = p
            .rows(&req(
                json!({"tenant": "acme"}),
                "select",
                "shop.public.none",
            ))
            .unwrap();
        assert_eq!(rows, Rows::None);
        let rows = p
            .rows(&req(
                json!({"tenant": "acme"}),
                "delete",
                "shop.public.orders",
            ))
            .unwrap();
        assert_eq!(rows, Rows::None);
    }

    #[test]
    fn tables_in_a_group_and_sets_and_patterns() {
        let p = policies(
            r#"
            @id("group")
            permit (principal, action == Action::"select", resource is Row in Table::"tenant-tables")
            when { ["a", "b"].contains(resource.region) && resource.name like "x*y" && resource.tags.contains("t") && (if principal.level > 2 then resource.level <= principal.level + 1 else false) };
            "#,
            Some(
                r#"[{"uid": {"type": "Table", "id": "shop.public.orders"}, "attrs": {}, "parents": [{"type": "Table", "id": "tenant-tables"}]},
                    {"uid": {"type": "Table", "id": "tenant-tables"}, "attrs": {}, "parents": []}]"#,
            ),
        );
        let Rows::Some(part) = p
            .rows(&req(json!({"level": 3}), "select", "shop.public.orders"))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            part.permits[0].1.to_string(),
            r#"(((["a", "b"].contains(resource["region"]) && (resource["name"] like "x*y")) && resource["tags"].contains("t")) && (resource["level"] <= 4))"#
        );
        // A table outside the group.
        assert_eq!(
            p.rows(&req(json!({"level": 3}), "select", "shop.public.x"))
                .unwrap(),
            Rows::None
        );
    }

    #[test]
    fn what_cannot_be_a_row_filter_is_an_error_naming_the_policy() {
        let p = policies(
            r#"
            @id("nested")
            permit (principal, action == Action::"select", resource is Row)
            when { resource.owner.name == "x" };
            "#,
            None,
        );
        let err = p
            .rows(&req(json!({}), "select", "shop.public.orders"))
            .unwrap_err();
        assert!(
            matches!(&err, RowsError::NotExpressible { policy, .. } if policy == "nested"),
            "{err}"
        );
    }

    #[test]
    fn only_policies_scoped_to_rows_take_part() {
        let p = policies(
            r#"
            @id("tables") permit (principal, action, resource) when { resource.database == "shop" };
            @id("no-secrets") forbid (principal, action, resource) when { resource.name == "secrets" };
            "#,
            None,
        );
        assert!(!p.may_forbid_rows());
        assert_eq!(
            p.rows(&req(json!({}), "select", "other.public.t")).unwrap(),
            Rows::None
        );
        let part = p
            .row_policies(&req(json!({}), "select", "other.public.t"))
            .unwrap();
        assert!(
            part.permits.is_empty() && part.forbids.is_empty(),
            "{part:?}"
        );
    }

    #[test]
    fn a_forbid_on_every_row_means_no_rows() {
        let p = policies(
            r#"
            @id("p") permit (principal, action, resource is Row) when { resource.a == 1 };
            @id("f") forbid (principal, action, resource is Row in Table::"shop.public.orders");
            "#,
            None,
        );
        assert_eq!(
            p.rows(&req(json!({}), "select", "shop.public.orders"))
                .unwrap(),
            Rows::None
        );
        assert!(matches!(
            p.rows(&req(json!({}), "select", "shop.public.t")).unwrap(),
            Rows::Some(_)
        ));
    }

    #[test]
    fn row_policies_validate_and_evaluate_against_the_vocabulary() {
        let schema = crate::VOCABULARY.replace(
            "entity Row in [Table];",
            r#"entity Row in [Table] = { "tenant"?: String };"#,
        );
        let p = Policies::from_sources(
            &[crate::SourceFile {
                path: "p.cedar".into(),
                text: r#"
                @id("rows")
                permit (principal is Agent, action == Action::"select",
                        resource is Row in Table::"shop.public.orders")
                when { principal has tenant && resource has tenant && resource.tenant == principal.tenant };
                "#
                .into(),
            }],
            Some(&schema),
            None,
        )
        .unwrap();
        let Rows::Some(part) = p
            .rows(&req(
                json!({"tenant": "acme"}),
                "select",
                "shop.public.orders",
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            part.permits[0].1.to_string(),
            r#"((resource has "tenant") && (resource["tenant"] == "acme"))"#
        );
        // An undeclared column is a validation error at load time.
        let err = Policies::from_sources(
            &[crate::SourceFile {
                path: "p.cedar".into(),
                text: r#"permit (principal, action == Action::"select", resource is Row) when { resource.owner == "x" };"#.into(),
            }],
            Some(&schema),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("owner"), "{err}");
    }
}
