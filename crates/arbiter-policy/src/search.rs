//! AuthZEN search: which subjects, resources or actions a request would permit.
//!
//! Candidates are what the snapshot knows: stored entities of the searched type plus any entity
//! of that type named in the request; actions come from the schema, or from the policies when
//! there is no schema. Each candidate is decided by the same [`Policies::evaluate`], so search
//! can never disagree with evaluation.

use std::collections::BTreeSet;

use arbiter_types::{Action, Entity, EvaluationRequest, SearchKind, SearchRequest};
use serde_json::{Value, json};

use crate::load::Policies;

impl Policies {
    /// All permitted results of a search, in a stable order (by id, or by action name).
    pub fn search(&self, req: &SearchRequest) -> Vec<Value> {
        match req.kind {
            SearchKind::Subject => self
                .entity_candidates(&req.subject.kind, &[&req.resource])
                .into_iter()
                .filter(|id| {
                    let subject = Entity {
                        id: id.clone(),
                        ..req.subject.clone()
                    };
                    self.permits(subject, req.action.clone(), req.resource.clone(), req)
                })
                .map(|id| json!({"type": req.subject.kind, "id": id}))
                .collect(),
            SearchKind::Resource => self
                .entity_candidates(&req.resource.kind, &[&req.subject])
                .into_iter()
                .filter(|id| {
                    let resource = Entity {
                        id: id.clone(),
                        ..req.resource.clone()
                    };
                    self.permits(req.subject.clone(), req.action.clone(), resource, req)
                })
                .map(|id| json!({"type": req.resource.kind, "id": id}))
                .collect(),
            SearchKind::Action => self
                .actions
                .iter()
                .filter(|name| {
                    let action = Action {
                        name: (*name).clone(),
                        properties: None,
                    };
                    self.permits(req.subject.clone(), Some(action), req.resource.clone(), req)
                })
                .map(|name| json!({"name": name}))
                .collect(),
        }
    }

    fn entity_candidates(&self, kind: &str, request_entities: &[&Entity]) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self.entity_index.get(kind).cloned().unwrap_or_default();
        for e in request_entities {
            if e.kind == kind && !e.id.is_empty() {
                ids.insert(e.id.clone());
            }
        }
        ids
    }

    fn permits(
        &self,
        subject: Entity,
        action: Option<Action>,
        resource: Entity,
        req: &SearchRequest,
    ) -> bool {
        let Some(action) = action else { return false };
        self.evaluate(&EvaluationRequest {
            subject,
            action,
            resource,
            context: req.context.clone(),
        })
        .outcome
        .is_allow()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::load::SourceFile;
    use arbiter_types::Page;
    use serde_json::Map;

    #[test]
    fn search_uses_stored_and_request_entities() {
        let p = Policies::from_sources(
            &[SourceFile {
                path: "p.cedar".into(),
                text: r#"permit(principal, action == Action::"read", resource) when { principal.level > 1 };
                         permit(principal, action == Action::"list", resource);"#
                    .into(),
            }],
            None,
            Some(r#"[{"uid":{"type":"User","id":"b"},"attrs":{"level":2},"parents":[]},
                     {"uid":{"type":"User","id":"a"},"attrs":{"level":1},"parents":[]},
                     {"uid":{"type":"User","id":"c"},"attrs":{"level":3},"parents":[]}]"#),
        )
        .unwrap();
        let entity = |kind: &str, id: &str| Entity {
            kind: kind.into(),
            id: id.into(),
            properties: None,
        };
        let subjects = p.search(&SearchRequest {
            kind: SearchKind::Subject,
            subject: entity("User", ""),
            action: Some(Action {
                name: "read".into(),
                properties: None,
            }),
            resource: entity("Doc", "d"),
            context: Map::new(),
            page: Page::default(),
        });
        assert_eq!(
            subjects,
            vec![
                json!({"type":"User","id":"b"}),
                json!({"type":"User","id":"c"})
            ]
        );
        let actions = p.search(&SearchRequest {
            kind: SearchKind::Action,
            subject: entity("User", "a"),
            action: None,
            resource: entity("Doc", "d"),
            context: Map::new(),
            page: Page::default(),
        });
        assert_eq!(actions, vec![json!({"name": "list"})]);
        let unknown = p.search(&SearchRequest {
            kind: SearchKind::Resource,
            subject: entity("User", "c"),
            action: Some(Action {
                name: "read".into(),
                properties: None,
            }),
            resource: entity("Nope", ""),
            context: Map::new(),
            page: Page::default(),
        });
        assert!(unknown.is_empty());
    }
}
