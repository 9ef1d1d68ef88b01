//! The pure decision function: an AuthZEN request and a policy snapshot in, an evaluation out.
//!
//! Arbiter's semantics differ from plain Cedar in one place that matters: **any evaluation
//! error is a deny**. Cedar skips a policy whose condition errors, so an erroring `forbid`
//! silently stops forbidding; here an error anywhere — in a policy, in the request's entities
//! or context, in schema conformance — makes the outcome a deny that names the error. This is
//! the only place where that rule lives.
//!
//! Mapping (verbatim): AuthZEN `type` → Cedar entity type, `id` → entity id, `properties` →
//! attributes merged over the stored entity (the request wins), `action.name` →
//! `Action::"name"`, `context` → the Cedar context, `action.properties` → `context.action`.
//! Who may assert which properties is settled before this, by the decision point
//! (`arbiter_pdp`: an `Agent` subject's come only from the registry or the stored entities;
//! an agent asking for itself cannot set the resource's, which it finds in
//! `context.asserted`); see `docs/identity.md`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use arbiter_types::{Entity, EvaluationRequest, Outcome};
use cedar_policy::{
    AuthorizationError, Context, Decision as CedarDecision, Effect, Entities, EntityId,
    EntityTypeName, EntityUid, PolicyId, Request, RequestValidationError,
};
use serde_json::{Map, Value, json};

use crate::RequestError;
use crate::convert::{entity_ref, to_restricted};
use crate::load::Policies;

/// The result of evaluating one request, before the PDP stamps an id on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// Sorted policy ids that determined the outcome.
    pub determining_policies: Vec<String>,
    pub reason_admin: String,
    pub reason_user: String,
    pub errors: Vec<String>,
}

/// User-safe reason for a deny caused by an evaluation error.
pub const USER_REASON_ERROR: &str = "denied: the request could not be evaluated";
/// User-safe reason when no policy permits the request.
pub const USER_REASON_NOT_PERMITTED: &str = "not permitted";
/// User-safe reason when a forbid without `@agent_reason` matched.
pub const USER_REASON_FORBIDDEN: &str = "denied by policy";

impl Evaluation {
    fn input_error(message: String) -> Self {
        Self {
            outcome: Outcome::Deny,
            determining_policies: Vec::new(),
            reason_admin: format!("denied: the request cannot be evaluated: {message}"),
            reason_user: "denied: the request is not valid for this policy set".to_owned(),
            errors: vec![message],
        }
    }
}

/// A request translated into Cedar terms, ready to be authorized.
struct Prepared {
    request: Request,
    overrides: Vec<cedar_policy::Entity>,
}

impl Policies {
    /// Evaluates `req` against this snapshot. Total: never panics, never errors; every
    /// failure is a deny carrying the error.
    pub fn evaluate(&self, req: &EvaluationRequest) -> Evaluation {
        let prepared = match self.prepare(req) {
            Ok(p) => p,
            Err(message) => return Evaluation::input_error(message),
        };
        let merged;
        let entities: &Entities = if prepared.overrides.is_empty() {
            &self.entities
        } else {
            merged = match self
                .entities
                .clone()
                .upsert_entities(prepared.overrides, self.schema.as_ref())
            {
                Ok(e) => e,
                Err(e) => return Evaluation::input_error(error_chain(&e)),
            };
            &merged
        };
        let response = self
            .authorizer
            .is_authorized(&prepared.request, &self.set, entities);
        self.interpret(req, &response)
    }

    fn interpret(&self, req: &EvaluationRequest, response: &cedar_policy::Response) -> Evaluation {
        let diagnostics = response.diagnostics();
        let mut errors: Vec<(String, String)> = diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(pe) => {
                    (pe.policy_id().to_string(), pe.inner().to_string())
                }
            })
            .collect();
        if !errors.is_empty() {
            errors.sort();
            let mut determining: Vec<String> = errors.iter().map(|(id, _)| id.clone()).collect();
            determining.dedup();
            let detail: Vec<String> = errors
                .iter()
                .map(|(id, msg)| format!("`{id}`: {msg}"))
                .collect();
            return Evaluation {
                outcome: Outcome::Deny,
                determining_policies: determining,
                reason_admin: format!(
                    "denied because a policy failed to evaluate: {}",
                    detail.join("; ")
                ),
                reason_user: USER_REASON_ERROR.to_owned(),
                errors: detail,
            };
        }
        let mut determining: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        determining.sort();
        match response.decision() {
            CedarDecision::Allow => Evaluation {
                outcome: Outcome::Allow,
                reason_admin: format!("allowed by {}", self.describe(&determining)),
                reason_user: "allowed".to_owned(),
                determining_policies: determining,
                errors: Vec::new(),
            },
            CedarDecision::Deny if determining.is_empty() => Evaluation {
                outcome: Outcome::Deny,
                determining_policies: determining,
                reason_admin: format!(
                    "no policy permits `{}` for `{}` on `{}`",
                    req.action.name,
                    display_uid(&req.subject),
                    display_uid(&req.resource)
                ),
                reason_user: USER_REASON_NOT_PERMITTED.to_owned(),
                errors: Vec::new(),
            },
            CedarDecision::Deny => {
                let reason_user = determining
                    .iter()
                    .filter_map(|id| self.meta.get(&PolicyId::new(id)))
                    .find_map(|m| match m.effect {
                        Effect::Forbid => m.agent_reason.clone(),
                        Effect::Permit => None,
                    })
                    .unwrap_or_else(|| USER_REASON_FORBIDDEN.to_owned());
                Evaluation {
                    outcome: Outcome::Deny,
                    reason_admin: format!("denied by {}", self.describe(&determining)),
                    reason_user,
                    determining_policies: determining,
                    errors: Vec::new(),
                }
            }
        }
    }

    /// "`p1` (its @reason); `p2`"
    fn describe(&self, ids: &[String]) -> String {
        let parts: Vec<String> = ids
            .iter()
            .map(|id| {
                match self
                    .meta
                    .get(&PolicyId::new(id))
                    .and_then(|m| m.reason.as_deref())
                {
                    Some(reason) => format!("`{id}` ({reason})"),
                    None => format!("`{id}`"),
                }
            })
            .collect();
        parts.join("; ")
    }

    pub(crate) fn type_name(&self, kind: &str, field: &str) -> Result<EntityTypeName, String> {
        if let Some(t) = self.type_names.get(kind) {
            return Ok(t.clone());
        }
        EntityTypeName::from_str(kind)
            .map_err(|_| format!("`{field}.type`: `{kind}` is not a valid Cedar entity type name"))
    }

    fn prepare(&self, req: &EvaluationRequest) -> Result<Prepared, String> {
        let resource = EntityUid::from_type_name_and_id(
            self.type_name(&req.resource.kind, "resource")?,
            EntityId::new(&req.resource.id),
        );
        let (principal, action, context, mut overrides) = self.parts(req)?;
        let same = req.subject.kind == req.resource.kind && req.subject.id == req.resource.id;
        // Same entity as subject and resource: the subject's view wins once, not twice.
        if (!same || overrides.is_empty())
            && let Some(e) = self.request_entity(&req.resource, &resource, "resource")?
        {
            overrides.push(e);
        }
        let request = Request::new(principal, action, resource, context, self.schema.as_ref())
            .map_err(|e| match e {
                // Cedar shows only the start of the context: name the attribute at fault.
                RequestValidationError::InvalidContext(_) => self
                    .explain_context(req)
                    .unwrap_or_else(|| format!("`context`: {}", error_chain(&e))),
                e => error_chain(&e),
            })?;
        Ok(Prepared { request, overrides })
    }

    /// Checks that `req` is valid for this snapshot's schema — its types, its context, the
    /// properties it gives its entities — as evaluating it would, without evaluating it.
    /// The error says what is wrong (the attribute at fault, where it can be named).
    pub fn check_request(&self, req: &EvaluationRequest) -> Result<(), RequestError> {
        let prepared = self.prepare(req).map_err(RequestError::Invalid)?;
        if !prepared.overrides.is_empty() {
            self.entities
                .clone()
                .upsert_entities(prepared.overrides, self.schema.as_ref())
                .map_err(|e| RequestError::Invalid(error_chain(&e)))?;
        }
        Ok(())
    }

    /// Which attribute of the request's context does not match the schema, if one can be
    /// named.
    fn explain_context(&self, req: &EvaluationRequest) -> Option<String> {
        let mut ctx = req.context.clone();
        if let Some(props) = &req.action.properties {
            ctx.insert("action".to_owned(), Value::Object(props.clone()));
        }
        self.context_shapes.explain(&req.action.name, &ctx)
    }

    /// Everything of a request but its resource, in Cedar terms: the principal, the action,
    /// the context, and the subject's entity when the request brings its properties.
    pub(crate) fn parts(
        &self,
        req: &EvaluationRequest,
    ) -> Result<(EntityUid, EntityUid, Context, Vec<cedar_policy::Entity>), String> {
        let principal = EntityUid::from_type_name_and_id(
            self.type_name(&req.subject.kind, "subject")?,
            EntityId::new(&req.subject.id),
        );
        let action =
            EntityUid::from_type_name_and_id(action_type()?, EntityId::new(&req.action.name));
        let overrides: Vec<cedar_policy::Entity> = self
            .request_entity(&req.subject, &principal, "subject")?
            .into_iter()
            .collect();

        let context = match (&req.action.properties, req.context.is_empty()) {
            (None, true) => Context::empty(),
            (action_props, _) => {
                let mut ctx: Map<String, Value> = req.context.clone();
                if let Some(props) = action_props {
                    ctx.insert("action".to_owned(), Value::Object(props.clone()));
                }
                match &self.schema {
                    Some(schema) => {
                        Context::from_json_value(Value::Object(ctx), Some((schema, &action)))
                            .map_err(|e| {
                                self.explain_context(req)
                                    .unwrap_or_else(|| format!("`context`: {}", error_chain(&e)))
                            })?
                    }
                    None => {
                        let pairs = ctx
                            .iter()
                            .map(|(k, v)| {
                                Ok((k.clone(), to_restricted(v, &format!("context.{k}"))?))
                            })
                            .collect::<Result<Vec<_>, String>>()?;
                        Context::from_pairs(pairs)
                            .map_err(|e| format!("`context`: {}", error_chain(&e)))?
                    }
                }
            }
        };
        Ok((principal, action, context, overrides))
    }

    /// The entity to put in front of the stored one, when the request brings properties.
    fn request_entity(
        &self,
        e: &Entity,
        uid: &EntityUid,
        field: &str,
    ) -> Result<Option<cedar_policy::Entity>, String> {
        let Some(props) = e.properties.as_ref().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let stored = self.entity_json.get(&(e.kind.clone(), e.id.clone()));
        if self.schema.is_none() {
            // Fast path: convert straight to Cedar values (see `convert`).
            let mut attrs = HashMap::new();
            if let Some(Value::Object(stored_attrs)) = stored.and_then(|s| s.get("attrs")) {
                for (k, v) in stored_attrs {
                    if !props.contains_key(k) {
                        attrs.insert(k.clone(), to_restricted(v, &format!("{field}.{k}"))?);
                    }
                }
            }
            for (k, v) in props {
                attrs.insert(
                    k.clone(),
                    to_restricted(v, &format!("{field}.properties.{k}"))?,
                );
            }
            let parents = match stored.and_then(|s| s.get("parents")) {
                Some(Value::Array(parents)) => parents
                    .iter()
                    .map(|p| {
                        entity_ref(p.get("__entity").unwrap_or(p), &format!("{field}.parents"))
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
                _ => HashSet::new(),
            };
            return cedar_policy::Entity::new(uid.clone(), attrs, parents)
                .map(Some)
                .map_err(|err| format!("`{field}.properties`: {}", error_chain(&err)));
        }
        let json = match stored {
            Some(stored) => {
                let mut merged = stored.clone();
                if let Some(Value::Object(attrs)) = merged.get_mut("attrs") {
                    for (k, v) in props {
                        attrs.insert(k.clone(), v.clone());
                    }
                } else if let Value::Object(obj) = &mut merged {
                    obj.insert("attrs".to_owned(), Value::Object(props.clone()));
                }
                merged
            }
            None => json!({
                "uid": {"type": e.kind, "id": e.id},
                "attrs": props,
                "parents": [],
            }),
        };
        cedar_policy::Entity::from_json_value(json, self.schema.as_ref())
            .map(Some)
            .map_err(|err| format!("`{field}.properties`: {}", error_chain(&err)))
    }
}

fn action_type() -> Result<EntityTypeName, String> {
    static ACTION: std::sync::OnceLock<Option<EntityTypeName>> = std::sync::OnceLock::new();
    ACTION
        .get_or_init(|| EntityTypeName::from_str("Action").ok())
        .clone()
        .ok_or_else(|| "the `Action` entity type name failed to parse".to_owned())
}

fn display_uid(e: &Entity) -> String {
    format!("{}::{:?}", e.kind, e.id)
}

/// An error and its causes, joined; Cedar puts the detail in the source chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::load::SourceFile;
    use arbiter_types::Action;

    fn policies(text: &str) -> Policies {
        Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: text.into(),
            }],
            None,
            None,
        )
        .unwrap()
    }

    fn req(action: &str, props: Option<Value>) -> EvaluationRequest {
        EvaluationRequest {
            subject: Entity {
                kind: "User".into(),
                id: "alice".into(),
                properties: props.and_then(|p| p.as_object().cloned()),
            },
            action: Action {
                name: action.into(),
                properties: None,
            },
            resource: Entity {
                kind: "Doc".into(),
                id: "d1".into(),
                properties: None,
            },
            context: Map::new(),
        }
    }

    /// Plain Cedar skips a forbid whose condition errors, so the permit wins; Arbiter denies.
    #[test]
    fn erroring_forbid_denies_integer_overflow() {
        let p = policies(
            r#"@id("allow-all") permit(principal, action, resource);
               @id("overflowing-forbid") forbid(principal, action, resource)
               when { 9223372036854775807 + 1 > 0 };"#,
        );
        let plain = cedar_policy::Authorizer::new().is_authorized(
            &p.prepare(&req("read", None)).unwrap().request,
            p.cedar_policies(),
            p.cedar_entities(),
        );
        assert_eq!(plain.decision(), CedarDecision::Allow, "plain Cedar allows");
        let e = p.evaluate(&req("read", None));
        assert_eq!(e.outcome, Outcome::Deny);
        assert_eq!(e.determining_policies, vec!["overflowing-forbid"]);
        assert!(e.reason_admin.contains("overflow"), "{}", e.reason_admin);
        assert_eq!(e.reason_user, USER_REASON_ERROR);
    }

    #[test]
    fn erroring_permit_denies_too() {
        let p = policies(
            r#"@id("a") permit(principal, action, resource);
               @id("b") permit(principal, action, resource) when { principal.missing == 1 };"#,
        );
        assert_eq!(p.evaluate(&req("read", None)).outcome, Outcome::Deny);
    }

    #[test]
    fn default_deny_and_forbid_wins() {
        let p = policies(
            r#"@id("read") @reason("readers read") permit(principal, action == Action::"read", resource);
               @id("no-d1") @agent_reason("d1 is locked") forbid(principal, action, resource == Doc::"d1") when { context has locked };"#,
        );
        let allow = p.evaluate(&req("read", None));
        assert_eq!(allow.outcome, Outcome::Allow);
        assert_eq!(allow.determining_policies, vec!["read"]);
        assert_eq!(allow.reason_admin, "allowed by `read` (readers read)");
        let none = p.evaluate(&req("write", None));
        assert_eq!(none.outcome, Outcome::Deny);
        assert!(none.determining_policies.is_empty());
        assert_eq!(none.reason_user, USER_REASON_NOT_PERMITTED);
        let mut locked = req("read", None);
        locked.context.insert("locked".into(), json!(true));
        let denied = p.evaluate(&locked);
        assert_eq!(denied.outcome, Outcome::Deny);
        assert_eq!(denied.determining_policies, vec!["no-d1"]);
        assert_eq!(denied.reason_user, "d1 is locked");
    }

    #[test]
    fn properties_become_attributes_and_action_properties_are_context_action() {
        let p = policies(
            r#"permit(principal, action, resource) when {
                 principal.roles.contains("reader") && context.action.method == "GET"
               };"#,
        );
        let mut r = req("read", Some(json!({"roles": ["reader"]})));
        r.action.properties = Some(json!({"method": "GET"}).as_object().cloned().unwrap());
        assert_eq!(p.evaluate(&r).outcome, Outcome::Allow);
        r.action.properties = Some(json!({"method": "POST"}).as_object().cloned().unwrap());
        assert_eq!(p.evaluate(&r).outcome, Outcome::Deny);
    }

    #[test]
    fn request_properties_win_over_stored_attributes() {
        let p = Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: r#"permit(principal, action, resource) when { principal.level > 2 && principal in Group::"g" };"#.into(),
            }],
            None,
            Some(r#"[{"uid": {"type": "User", "id": "alice"}, "attrs": {"level": 1, "name": "A"}, "parents": [{"type": "Group", "id": "g"}]}]"#),
        )
        .unwrap();
        assert_eq!(p.evaluate(&req("read", None)).outcome, Outcome::Deny);
        assert_eq!(
            p.evaluate(&req("read", Some(json!({"level": 5})))).outcome,
            Outcome::Allow,
            "merged attrs keep stored parents"
        );
    }

    #[test]
    fn bad_type_names_deny_with_a_named_field() {
        let p = policies("permit(principal, action, resource);");
        let mut r = req("read", None);
        r.subject.kind = "not a type".into();
        let e = p.evaluate(&r);
        assert_eq!(e.outcome, Outcome::Deny);
        assert!(e.errors[0].contains("`subject.type`"), "{:?}", e.errors);
    }

    #[test]
    fn schema_violations_deny() {
        let p = Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool);"#.into(),
            }],
            Some(crate::VOCABULARY),
            None,
        )
        .unwrap();
        let mut r = req("call_tool", None);
        r.subject.kind = "Agent".into();
        r.resource = Entity {
            kind: "Tool".into(),
            id: "fs/read".into(),
            properties: Some(
                json!({"server": "fs", "name": "read"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
        };
        assert_eq!(p.evaluate(&r).outcome, Outcome::Allow);
        r.resource.properties = Some(
            json!({"server": 3, "name": "read"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let e = p.evaluate(&r);
        assert_eq!(e.outcome, Outcome::Deny);
        assert!(
            e.errors[0].starts_with("`resource.properties`"),
            "{:?}",
            e.errors
        );
        r.action.name = "fly".into();
        assert_eq!(p.evaluate(&r).outcome, Outcome::Deny);
    }

    /// A context the schema does not allow is a deny whose reason names the attribute at
    /// fault, wherever it is; `check_request` gives the same reason without evaluating.
    #[test]
    fn an_invalid_context_is_denied_naming_the_attribute() {
        let schema = crate::VOCABULARY.replace(
            "    \"session_id\"?: String,\n    \"tool_pin\"?: {",
            "    \"session_id\"?: String,\n    \"arguments\"?: { \"path\"?: String },\n    \"tool_pin\"?: {",
        );
        assert_ne!(schema, crate::VOCABULARY);
        let p = Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool);"#.into(),
            }],
            Some(&schema),
            None,
        )
        .unwrap();
        let call = |context: Value| {
            let mut r = req("call_tool", None);
            r.subject.kind = "Agent".into();
            r.resource = Entity {
                kind: "Tool".into(),
                id: "fs/read".into(),
                properties: None,
            };
            r.context = context.as_object().cloned().unwrap();
            r
        };
        let ok = call(json!({"arguments": {"path": "/srv/a"}}));
        assert_eq!(p.evaluate(&ok).outcome, Outcome::Allow);
        assert_eq!(p.check_request(&ok), Ok(()));
        for (context, named) in [
            // A value of the wrong type: Cedar's own error names no attribute.
            (
                json!({"arguments": {"path": 5}}),
                "`context.arguments.path` must be a string, not a whole number, as the schema \
                 declares it for action `call_tool`",
            ),
            // An undeclared attribute inside a record: Cedar's names it, not where it is.
            (
                json!({"arguments": {"path": "/srv/a", "encoding": "latin1"}}),
                "`context.arguments.encoding` is not declared in the schema (for action \
                 `call_tool`)",
            ),
            (
                json!({"tool_pin": {"hash": "sha256:00"}}),
                "`context.tool_pin.pinned` is missing: the schema requires it (for action \
                 `call_tool`)",
            ),
        ] {
            let r = call(context);
            let e = p.evaluate(&r);
            assert_eq!(e.outcome, Outcome::Deny);
            assert_eq!(
                e.reason_admin,
                format!("denied: the request cannot be evaluated: {named}")
            );
            assert_eq!(e.errors, [named]);
            assert_eq!(
                p.check_request(&r),
                Err(RequestError::Invalid(named.to_owned()))
            );
        }
        // Not about the context: Cedar's message, which names what is wrong.
        let mut r = ok.clone();
        r.resource.kind = "Table".into();
        assert_eq!(
            p.check_request(&r),
            Err(RequestError::Invalid(
                "resource type `Table` is not valid for `Action::\"call_tool\"`".to_owned()
            ))
        );
    }
}
