//! Row filters: which rows of a table a decision allows, when it allows only some.
//!
//! A filter is derived from the policies themselves (Cedar partial evaluation with the row as
//! the unknown resource, see `arbiter-policy`), as a small expression language over the row's
//! columns ([`RowExpr`]). Enforcement points render it in their own query language (the SQL
//! guard as a predicate, see `arbiter-sql`).
//!
//! **Semantics are Cedar's, with Arbiter's error rule.** Reading a column that is `NULL` is
//! an error, as reading an absent attribute is in Cedar; `&&`, `||` and `if` short-circuit as
//! in Cedar, so an error on their right-hand side is reached only when Cedar would reach it.
//! A row is allowed when, for every [`RowPolicies`] part, no policy errors on it, some permit
//! holds and no forbid holds. Renderers must keep this exactly (in SQL: `NULL` for an error).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator in Cedar (and, but for `!=`, in SQL).
    pub fn cedar(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// Integer arithmetic (overflow is an error, in Cedar and in SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
        }
    }
}

/// One element of a `like` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LikePart {
    Char(char),
    /// `*`: any run of characters.
    Any,
}

/// A condition on (or a value computed from) one row. Its JSON form (in a decision point's
/// answer, `context.row_filter`) is serde's externally tagged one: `{"column": "tenant"}`,
/// `{"cmp": ["eq", {"column": "tenant"}, {"str": "acme"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RowExpr {
    Bool(bool),
    Long(i64),
    /// A string; an entity reference stands for its id (`resource.owner == principal` compares
    /// the column with the principal's id).
    Str(String),
    /// The row's column of that name (`resource.<column>`).
    Column(String),
    /// `resource has <column>`: the column is not `NULL`.
    Has(String),
    Not(Box<RowExpr>),
    Neg(Box<RowExpr>),
    And(Box<RowExpr>, Box<RowExpr>),
    Or(Box<RowExpr>, Box<RowExpr>),
    If(Box<RowExpr>, Box<RowExpr>, Box<RowExpr>),
    Cmp(CmpOp, Box<RowExpr>, Box<RowExpr>),
    Arith(ArithOp, Box<RowExpr>, Box<RowExpr>),
    /// `<expr> like "<pattern>"`.
    Like(Box<RowExpr>, Vec<LikePart>),
    /// `[v1, v2, …].contains(<expr>)`: the value is one of the listed constants.
    OneOf(Box<RowExpr>, Vec<RowExpr>),
    /// `resource.<column>.contains(<value>)`: an array column holds the value.
    Holds(String, Box<RowExpr>),
}

impl RowExpr {
    /// Whether the condition can hold (be `true`) for some row. `false` when it is `false` or
    /// an error whatever the row: `false`, `x && false` (Cedar keeps the `x`, whose error
    /// would be an error), `if false then x else false`, `!(x || true)`, a number or string
    /// used as a condition. Anything whose value depends on the row may hold.
    pub fn may_hold(&self) -> bool {
        self.possible().0
    }

    /// (may be `true`, may be `false`) for some row, as a condition; anything else that may
    /// be is an error. One pass: each node is looked at once.
    fn possible(&self) -> (bool, bool) {
        match self {
            RowExpr::Bool(b) => (*b, !*b),
            // Not conditions: an error where a condition is needed.
            RowExpr::Long(_) | RowExpr::Str(_) | RowExpr::Neg(_) | RowExpr::Arith(..) => {
                (false, false)
            }
            RowExpr::Not(a) => {
                let (t, f) = a.possible();
                (f, t)
            }
            RowExpr::And(a, b) => {
                let (at, af) = a.possible();
                let (bt, bf) = b.possible();
                // `b` is reached only when `a` is true.
                (at && bt, af || (at && bf))
            }
            RowExpr::Or(a, b) => {
                let (at, af) = a.possible();
                let (bt, bf) = b.possible();
                (at || (af && bt), af && bf)
            }
            RowExpr::If(c, t, e) => {
                let (ct, cf) = c.possible();
                let (tt, tf) = t.possible();
                let (et, ef) = e.possible();
                ((ct && tt) || (cf && et), (ct && tf) || (cf && ef))
            }
            // `[].contains(x)`: false, or an error.
            RowExpr::OneOf(_, values) if values.is_empty() => (false, true),
            RowExpr::Column(_)
            | RowExpr::Has(_)
            | RowExpr::Cmp(..)
            | RowExpr::Like(..)
            | RowExpr::OneOf(..)
            | RowExpr::Holds(..) => (true, true),
        }
    }

    /// The columns the expression reads (`has` included), each once, in order.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns(&self, out: &mut Vec<String>) {
        let mut add = |c: &String| {
            if !out.contains(c) {
                out.push(c.clone());
            }
        };
        match self {
            RowExpr::Column(c) | RowExpr::Has(c) => add(c),
            RowExpr::Holds(c, e) => {
                add(c);
                e.collect_columns(out);
            }
            RowExpr::Bool(_) | RowExpr::Long(_) | RowExpr::Str(_) => {}
            RowExpr::Not(e) | RowExpr::Neg(e) | RowExpr::Like(e, _) => e.collect_columns(out),
            RowExpr::And(a, b)
            | RowExpr::Or(a, b)
            | RowExpr::Cmp(_, a, b)
            | RowExpr::Arith(_, a, b) => {
                a.collect_columns(out);
                b.collect_columns(out);
            }
            RowExpr::If(c, t, e) => {
                c.collect_columns(out);
                t.collect_columns(out);
                e.collect_columns(out);
            }
            RowExpr::OneOf(e, values) => {
                e.collect_columns(out);
                for v in values {
                    v.collect_columns(out);
                }
            }
        }
    }
}

/// Renders in Cedar's syntax, with `resource` for the row: the form kept in decision records.
impl fmt::Display for RowExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowExpr::Bool(b) => write!(f, "{b}"),
            RowExpr::Long(n) => write!(f, "{n}"),
            RowExpr::Str(s) => write!(f, "{s:?}"),
            RowExpr::Column(c) => write!(f, "resource[{c:?}]"),
            RowExpr::Has(c) => write!(f, "(resource has {c:?})"),
            RowExpr::Not(e) => write!(f, "!({e})"),
            RowExpr::Neg(e) => write!(f, "-({e})"),
            RowExpr::And(a, b) => write!(f, "({a} && {b})"),
            RowExpr::Or(a, b) => write!(f, "({a} || {b})"),
            RowExpr::If(c, t, e) => write!(f, "(if {c} then {t} else {e})"),
            RowExpr::Cmp(op, a, b) => write!(f, "({a} {} {b})", op.cedar()),
            RowExpr::Arith(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            RowExpr::Like(e, pattern) => {
                write!(f, "({e} like \"")?;
                for p in pattern {
                    match p {
                        LikePart::Any => write!(f, "*")?,
                        LikePart::Char('*') => write!(f, "\\*")?,
                        LikePart::Char(c) => write!(f, "{}", c.escape_debug())?,
                    }
                }
                write!(f, "\")")
            }
            RowExpr::OneOf(e, values) => {
                write!(f, "[")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "].contains({e})")
            }
            RowExpr::Holds(c, e) => write!(f, "resource[{c:?}].contains({e})"),
        }
    }
}

/// One principal's policies that decide on a row: the residual condition of each permit and
/// forbid that may apply, by policy id. The row is allowed by this part when no condition
/// errors on it, at least one permit holds and no forbid holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowPolicies {
    /// `Agent::"…"` or `User::"…"`: whose policies these are.
    pub principal: String,
    pub permits: Vec<(String, RowExpr)>,
    pub forbids: Vec<(String, RowExpr)>,
}

/// The rows a decision allows: those every part allows (one part per principal: the agent,
/// and the user it acts for when it acts for one).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilter {
    pub parts: Vec<RowPolicies>,
}

impl RowFilter {
    /// Every column the filter reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for part in &self.parts {
            for (_, e) in part.permits.iter().chain(&part.forbids) {
                for c in e.columns() {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// The policies the filter comes from (permits and forbids), each once, sorted.
    pub fn policies(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .parts
            .iter()
            .flat_map(|p| p.permits.iter().chain(&p.forbids).map(|(id, _)| id.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// `<principal>: (permit `p1`: cond) or …, unless (forbid `f1`: cond)`, parts joined by `; and `.
impl fmt::Display for RowFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                write!(f, "; and ")?;
            }
            write!(f, "for {}: ", part.principal)?;
            for (j, (id, e)) in part.permits.iter().enumerate() {
                if j > 0 {
                    write!(f, " or ")?;
                }
                write!(f, "`{id}` {e}")?;
            }
            for (j, (id, e)) in part.forbids.iter().enumerate() {
                write!(f, "{}", if j == 0 { ", unless " } else { " or " })?;
                write!(f, "`{id}` {e}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn display_and_columns() {
        let e = RowExpr::And(
            Box::new(RowExpr::Has("tenant".into())),
            Box::new(RowExpr::Cmp(
                CmpOp::Eq,
                Box::new(RowExpr::Column("tenant".into())),
                Box::new(RowExpr::Str("a\"b".into())),
            )),
        );
        assert_eq!(
            e.to_string(),
            r#"((resource has "tenant") && (resource["tenant"] == "a\"b"))"#
        );
        assert_eq!(e.columns(), vec!["tenant".to_string()]);
        let filter = RowFilter {
            parts: vec![RowPolicies {
                principal: "Agent::\"bot\"".into(),
                permits: vec![("p1".into(), e)],
                forbids: vec![("f1".into(), RowExpr::Column("hidden".into()))],
            }],
        };
        assert_eq!(filter.columns(), vec!["tenant", "hidden"]);
        assert_eq!(filter.policies(), vec!["f1", "p1"]);
        assert!(
            filter
                .to_string()
                .contains(", unless `f1` resource[\"hidden\"]")
        );
        let json = serde_json::to_value(&filter).unwrap();
        assert_eq!(
            json["parts"][0]["permits"][0][1]["and"][1]["cmp"][0],
            serde_json::json!("eq")
        );
        assert_eq!(serde_json::from_value::<RowFilter>(json).unwrap(), filter);
        assert!(serde_json::from_str::<RowFilter>(r#"{"parts": [], "extra": 1}"#).is_err());
    }

    /// A condition that can never be true (Cedar keeps `x && false`: `x` may error) must be
    /// told apart, whatever the order and nesting, so that it denies rather than filters
    /// every row away.
    #[test]
    fn conditions_that_can_never_hold_are_recognised_in_any_order() {
        let b = |e: RowExpr| Box::new(e);
        let tenant = || {
            RowExpr::Cmp(
                CmpOp::Eq,
                b(RowExpr::Column("tenant".into())),
                b(RowExpr::Str("acme".into())),
            )
        };
        let f = || RowExpr::Bool(false);
        let t = || RowExpr::Bool(true);
        for never in [
            f(),
            RowExpr::And(b(tenant()), b(f())),
            RowExpr::And(b(f()), b(tenant())),
            RowExpr::And(b(RowExpr::And(b(tenant()), b(f()))), b(tenant())),
            RowExpr::And(b(tenant()), b(RowExpr::And(b(tenant()), b(f())))),
            RowExpr::If(b(f()), b(tenant()), b(f())),
            RowExpr::If(b(tenant()), b(f()), b(RowExpr::And(b(tenant()), b(f())))),
            RowExpr::Not(b(RowExpr::Or(b(tenant()), b(t())))),
            RowExpr::Or(b(RowExpr::And(b(tenant()), b(f()))), b(f())),
            RowExpr::OneOf(b(RowExpr::Column("tenant".into())), Vec::new()),
            RowExpr::Long(1),
        ] {
            assert!(!never.may_hold(), "{never}");
        }
        for may in [
            t(),
            tenant(),
            RowExpr::Or(b(RowExpr::And(b(tenant()), b(f()))), b(tenant())),
            RowExpr::Or(b(tenant()), b(t())),
            RowExpr::If(b(tenant()), b(f()), b(tenant())),
            RowExpr::Not(b(RowExpr::And(b(tenant()), b(f())))),
        ] {
            assert!(may.may_hold(), "{may}");
        }
    }
}
