//! Proofs about a policy change, with an SMT solver: that a new version allows nothing the old
//! one denies (it *narrows*), or that the two decide every request alike (*equivalent*), or a
//! concrete request that shows otherwise.
//!
//! The policies are translated to SMT with the Cedar symbolic compiler (`cedar-policy-symcc`)
//! and decided by cvc5, one request shape (principal type, action, resource type) of the schema
//! at a time. The claim is over every request of that shape and every entity store the schema
//! allows, so it holds whatever the registry or the enforcement points later say of subjects
//! and resources. A counterexample is checked by evaluating it with Cedar on both versions
//! before it is reported: a model the evaluator does not confirm is an error, never a verdict.
//!
//! What the proof covers is the Cedar policies. Arbiter's runtime rules (`@require_approval`,
//! limits, budgets, session labels) and a delegating user's own evaluation are not part of it.

use arbiter_policy::Policies;
use cedar_policy::{Authorizer, Decision, PolicySet, RequestEnv};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicySet, Env};
use serde::Serialize;

/// What to prove of NEW against OLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// NEW allows nothing OLD denies.
    Narrows,
    /// NEW and OLD allow exactly the same requests.
    Equivalent,
}

/// A request on which the versions differ, confirmed by evaluating it.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// `allowed_by_new` (a widening) or `allowed_by_old` (NEW denies what OLD allowed).
    pub direction: &'static str,
    /// The principal, action and resource (`Type::"id"`).
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// The context, in Cedar syntax.
    pub context: String,
    /// The entities the request is evaluated with (Cedar's JSON entity format).
    pub entities: serde_json::Value,
    /// OLD's and NEW's decisions on it, by evaluation.
    pub old: &'static str,
    pub new: &'static str,
    /// The policies that determined NEW's and OLD's decisions.
    pub new_policies: Vec<String>,
    pub old_policies: Vec<String>,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub claim: Claim,
    /// Whether the claim holds for every request shape of the schema.
    pub holds: bool,
    /// Request shapes proved.
    pub request_shapes: usize,
    /// The first counterexample found, when the claim does not hold.
    pub counterexample: Option<Counterexample>,
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A version has no schema, or they differ.
    #[error("{0}")]
    Schema(String),
    /// cvc5 could not be started.
    #[error(
        "cannot start the SMT solver cvc5 ({0}): install it (Debian: `apt-get install cvc5`) or \
         set CVC5 to its path"
    )]
    SolverMissing(String),
    /// The symbolic compiler or the solver failed.
    #[error("the proof failed for {shape}: {reason}")]
    Proof {
        /// The request shape.
        shape: String,
        /// What failed.
        reason: String,
    },
}

fn shape_of(env: &RequestEnv) -> String {
    format!("{} {} {}", env.principal(), env.action(), env.resource())
}

/// Proves `claim` of `new` against `old`, over the requests NEW's schema allows (OLD must
/// type-check against it too).
pub async fn compare(
    old: &Policies,
    new: &Policies,
    claim: Claim,
) -> Result<Comparison, CompareError> {
    let Some(schema) = new.cedar_schema() else {
        return Err(CompareError::Schema(
            "NEW needs a schema (`schema.cedarschema`): a proof is about the requests the schema \
             allows"
                .to_owned(),
        ));
    };
    let solver = LocalSolver::cvc5().map_err(|e| CompareError::SolverMissing(e.to_string()))?;
    let mut symcc =
        CedarSymCompiler::new(solver).map_err(|e| CompareError::SolverMissing(e.to_string()))?;
    let mut shapes = 0;
    for env in schema.request_envs() {
        shapes += 1;
        let proof = |reason: String| CompareError::Proof {
            shape: shape_of(&env),
            reason,
        };
        let compiled = |set: &PolicySet, which: &str| {
            CompiledPolicySet::compile(set, &env, schema)
                .map_err(|e| proof(format!("{which} does not compile: {e}")))
        };
        let old_c = compiled(old.cedar_policies(), "OLD")?;
        let new_c = compiled(new.cedar_policies(), "NEW")?;
        // NEW ⇒ OLD (whatever NEW allows, OLD allows); for equivalence also OLD ⇒ NEW.
        let mut checks = vec![(&new_c, &old_c, "allowed_by_new")];
        if claim == Claim::Equivalent {
            checks.push((&old_c, &new_c, "allowed_by_old"));
        }
        for (stronger, weaker, direction) in checks {
            let found = symcc
                .check_implies_with_counterexample_opt(stronger, weaker)
                .await
                .map_err(|e| proof(e.to_string()))?;
            if let Some(found) = found {
                let c = confirm(&found, old, new, direction).map_err(proof)?;
                return Ok(Comparison {
                    claim,
                    holds: false,
                    request_shapes: shapes,
                    counterexample: Some(c),
                });
            }
        }
    }
    Ok(Comparison {
        claim,
        holds: true,
        request_shapes: shapes,
        counterexample: None,
    })
}

/// Evaluates the solver's counterexample on both versions: it must be decided as the
/// direction says, or the model is not trusted.
fn confirm(
    found: &Env,
    old: &Policies,
    new: &Policies,
    direction: &'static str,
) -> Result<Counterexample, String> {
    let authorizer = Authorizer::new();
    let old_r = authorizer.is_authorized(&found.request, old.cedar_policies(), &found.entities);
    let new_r = authorizer.is_authorized(&found.request, new.cedar_policies(), &found.entities);
    let expected = if direction == "allowed_by_new" {
        (Decision::Deny, Decision::Allow)
    } else {
        (Decision::Allow, Decision::Deny)
    };
    if (old_r.decision(), new_r.decision()) != expected {
        return Err(format!(
            "the solver's counterexample does not evaluate as it claims (OLD {:?}, NEW {:?}); no \
             verdict",
            old_r.decision(),
            new_r.decision()
        ));
    }
    let word = |d: Decision| {
        if d == Decision::Allow {
            "allow"
        } else {
            "deny"
        }
    };
    let uid = |u: Option<&cedar_policy::EntityUid>| u.map(ToString::to_string).unwrap_or_default();
    let context = found
        .request
        .context()
        .map_or_else(|| "{}".to_owned(), ToString::to_string);
    let reasons = |r: &cedar_policy::Response| {
        let mut v: Vec<String> = r.diagnostics().reason().map(ToString::to_string).collect();
        v.sort();
        v
    };
    Ok(Counterexample {
        direction,
        principal: uid(found.request.principal()),
        action: uid(found.request.action()),
        resource: uid(found.request.resource()),
        context,
        entities: found.entities.to_json_value().unwrap_or_default(),
        old: word(old_r.decision()),
        new: word(new_r.decision()),
        new_policies: reasons(&new_r),
        old_policies: reasons(&old_r),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::path::PathBuf;
    use std::str::FromStr;

    use cedar_policy::{Context, Entities, EntityUid, Request};

    use super::*;

    const SCHEMA: &str = r#"
entity Team;
entity Agent in [Team];
entity Doc = { public: Bool, team: Team };
action read appliesTo { principal: Agent, resource: Doc };
action write appliesTo { principal: Agent, resource: Doc };
"#;
    const OLD: &str = r#"
@id("public-or-own-team")
permit (principal, action == Action::"read", resource)
when { resource.public || principal in resource.team };
@id("no-writes")
forbid (principal, action == Action::"write", resource);
"#;
    /// Public documents only: narrower.
    const NARROWER: &str = r#"
@id("public-only")
permit (principal, action == Action::"read", resource)
when { resource.public };
"#;
    /// Every document: wider.
    const WIDER: &str = r#"
@id("every-doc")
permit (principal, action == Action::"read", resource);
"#;

    fn version(policies: &str) -> Policies {
        Policies::from_files(vec![
            (PathBuf::from("schema.cedarschema"), SCHEMA.to_owned()),
            (PathBuf::from("policies.cedar"), policies.to_owned()),
        ])
        .unwrap()
    }

    fn run(old: &str, new: &str, claim: Claim) -> Comparison {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(compare(&version(old), &version(new), claim))
            .unwrap()
    }

    /// Evaluates a reported counterexample from its printed parts alone, with policy sets
    /// parsed afresh from the text (not the ones the comparison used).
    fn decide(policies: &str, c: &Counterexample) -> Decision {
        let set = PolicySet::from_str(policies).unwrap();
        let entities = Entities::from_json_value(c.entities.clone(), None).unwrap();
        let request = Request::new(
            EntityUid::from_str(&c.principal).unwrap(),
            EntityUid::from_str(&c.action).unwrap(),
            EntityUid::from_str(&c.resource).unwrap(),
            Context::empty(),
            None,
        )
        .unwrap();
        Authorizer::new()
            .is_authorized(&request, &set, &entities)
            .decision()
    }

    #[test]
    fn a_narrowing_is_proved_and_a_widening_has_a_real_counterexample() {
        let proved = run(OLD, NARROWER, Claim::Narrows);
        assert!(proved.holds && proved.counterexample.is_none());
        assert_eq!(proved.request_shapes, 2);
        // Narrower is not equivalent: OLD allows a team's private document.
        let not_equal = run(OLD, NARROWER, Claim::Equivalent);
        let c = not_equal.counterexample.unwrap();
        assert_eq!(c.direction, "allowed_by_old");
        assert_eq!((c.old, c.new), ("allow", "deny"));
        assert_eq!(decide(OLD, &c), Decision::Allow);
        assert_eq!(decide(NARROWER, &c), Decision::Deny);
        // Wider: a request NEW allows and OLD denies, and it really is.
        let widened = run(OLD, WIDER, Claim::Narrows);
        assert!(!widened.holds);
        let c = widened.counterexample.unwrap();
        assert_eq!(c.direction, "allowed_by_new");
        assert_eq!(c.action, r#"Action::"read""#);
        assert_eq!(c.new_policies, ["every-doc"]);
        assert_eq!(decide(OLD, &c), Decision::Deny);
        assert_eq!(decide(WIDER, &c), Decision::Allow);
        assert!(run(OLD, OLD, Claim::Equivalent).holds);
    }

    #[test]
    fn no_schema_no_proof() {
        let bare =
            Policies::from_files(vec![(PathBuf::from("p.cedar"), WIDER.to_owned())]).unwrap();
        let e = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(compare(&version(OLD), &bare, Claim::Narrows))
            .unwrap_err();
        assert!(matches!(e, CompareError::Schema(_)), "{e}");
    }
}
