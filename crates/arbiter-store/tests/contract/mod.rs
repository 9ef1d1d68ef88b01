//! The store's contract, run against every backend: each test binary that includes this
//! module provides `store()`, a fresh store (`Deref<Target = dyn Store>`), whose `other()`
//! opens a second handle on the same data (another process) and `opener()` a function that
//! does so from another thread.

use arbiter_store::{
    Actor, Agent, AgentFilter, AgentPatch, AgentStatus, CredentialFilter, CredentialKind,
    DiscoveredKind, Environment, GENESIS_HASH, MAX_DISCOVERED_SOURCES, NewAgent, NewCredential,
    PinCheck, Sighting, Store, StoreError, ToolPin,
};
use serde_json::{Map, json};

use super::store;

pub(crate) const T0: i64 = 1_750_000_000_000_000;
pub(crate) const SECOND: i64 = 1_000_000;

pub(crate) fn admin() -> Actor {
    Actor::cli("ops")
}

pub(crate) fn new_agent(id: &str) -> NewAgent {
    NewAgent {
        id: id.to_owned(),
        name: format!("{id} name"),
        owner: "team-support".to_owned(),
        purpose: "answers tickets".to_owned(),
        environment: Environment::Prod,
        attributes: Map::new(),
    }
}

pub(crate) fn agent_key(id: &str, agent: &str) -> NewCredential {
    NewCredential {
        id: id.to_owned(),
        kind: CredentialKind::AgentKey,
        agent_id: Some(agent.to_owned()),
        name: "primary".to_owned(),
        role: None,
        hash: format!("sha256:{}", "ab".repeat(32)),
        expires_at_us: None,
    }
}

pub(crate) fn admin_token(id: &str, role: &str) -> NewCredential {
    NewCredential {
        id: id.to_owned(),
        kind: CredentialKind::AdminToken,
        agent_id: None,
        name: "ops laptop".to_owned(),
        role: Some(role.to_owned()),
        hash: format!("sha256:{}", "cd".repeat(32)),
        expires_at_us: None,
    }
}

pub(crate) fn pep_token(id: &str) -> NewCredential {
    NewCredential {
        id: id.to_owned(),
        kind: CredentialKind::PepToken,
        agent_id: None,
        name: "gateway".to_owned(),
        role: None,
        hash: format!("sha256:{}", "ef".repeat(32)),
        expires_at_us: None,
    }
}

pub(crate) fn sighting(kind: DiscoveredKind, key: &str, source: &str, at_us: i64) -> Sighting {
    Sighting {
        kind,
        key: key.to_owned(),
        shape: "openai-api-key".to_owned(),
        source: source.to_owned(),
        enforcement_point: "gateway-1".to_owned(),
        at_us,
    }
}

pub(crate) fn ids(agents: &[Agent]) -> Vec<&str> {
    agents.iter().map(|a| a.id.as_str()).collect()
}

pub(crate) fn actions(store: &dyn Store) -> Vec<String> {
    store
        .list_audit(None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[test]
fn register_get_and_list_agents_with_filters() {
    let s = store();
    let mut attrs = Map::new();
    attrs.insert("tier".to_owned(), json!("gold"));
    attrs.insert("limits".to_owned(), json!({"rps": 5, "ratio": 0.25}));
    let registered = s
        .register_agent(
            &NewAgent {
                attributes: attrs.clone(),
                ..new_agent("support-bot")
            },
            &admin(),
            T0,
        )
        .unwrap();
    assert_eq!(registered.status, AgentStatus::Active);
    assert_eq!(registered.created_us, T0);
    assert_eq!(registered.updated_us, T0);
    assert_eq!(registered.last_seen_us, None);
    assert_eq!(registered.attributes, attrs);
    assert_eq!(s.agent("support-bot").unwrap(), Some(registered));
    assert_eq!(s.agent("nobody").unwrap(), None);

    s.register_agent(
        &NewAgent {
            environment: Environment::Dev,
            owner: "team-data".to_owned(),
            ..new_agent("etl.nightly")
        },
        &admin(),
        T0,
    )
    .unwrap();
    s.register_agent(&new_agent("a-first"), &admin(), T0)
        .unwrap();
    s.set_agent_status("a-first", AgentStatus::Suspended, &admin(), T0 + 1)
        .unwrap();

    let all = s.list_agents(&AgentFilter::default()).unwrap();
    assert_eq!(ids(&all), ["a-first", "etl.nightly", "support-bot"]);

    let prod = s
        .list_agents(&AgentFilter {
            environment: Some(Environment::Prod),
            ..AgentFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&prod), ["a-first", "support-bot"]);

    let active_prod = s
        .list_agents(&AgentFilter {
            status: Some(AgentStatus::Active),
            environment: Some(Environment::Prod),
            owner: None,
        })
        .unwrap();
    assert_eq!(ids(&active_prod), ["support-bot"]);

    let data = s
        .list_agents(&AgentFilter {
            owner: Some("team-data".to_owned()),
            ..AgentFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&data), ["etl.nightly"]);
}

#[test]
fn registering_an_existing_id_is_a_conflict() {
    let s = store();
    s.register_agent(&new_agent("support-bot"), &admin(), T0)
        .unwrap();
    let err = s
        .register_agent(&new_agent("support-bot"), &admin(), T0)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "agent", .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "agent `support-bot` already exists");
    assert_eq!(actions(&*s), ["agent.register"]);
}

#[test]
fn agent_fields_are_validated_with_clear_errors() {
    let s = store();
    for (id, needle) in [
        ("", "must not be empty"),
        ("Support", "must start with a lowercase letter or a digit"),
        ("-bot", "must start with"),
        ("bot/1", "contains `/`"),
        ("bot 1", "contains ` `"),
    ] {
        let err = s.register_agent(&new_agent(id), &admin(), T0).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    field: "agent id",
                    ..
                }
            ),
            "{id}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{id}: {err}");
    }
    let long = "a".repeat(64);
    let err = s
        .register_agent(&new_agent(&long), &admin(), T0)
        .unwrap_err();
    assert!(err.to_string().contains("longer than 63"), "{err}");
    s.register_agent(&new_agent(&"a".repeat(63)), &admin(), T0)
        .unwrap();

    let err = s
        .register_agent(
            &NewAgent {
                owner: "  ".to_owned(),
                ..new_agent("x")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid owner: must not be empty");

    let err = s
        .register_agent(
            &NewAgent {
                name: String::new(),
                ..new_agent("x")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid name: must not be empty");

    let err = s
        .register_agent(
            &NewAgent {
                name: "two\nlines".to_owned(),
                ..new_agent("x")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "name", .. }),
        "{err:?}"
    );

    let bad_actor = Actor {
        kind: "robot".to_owned(),
        id: "r2".to_owned(),
    };
    let err = s
        .register_agent(&new_agent("x"), &bad_actor, T0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "actor kind",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.agent("x").unwrap(), None);

    assert!("prod".parse::<Environment>().is_ok());
    let err = "production".parse::<Environment>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid environment: `production` is not one of dev, staging, prod"
    );
}

#[test]
fn update_agent_changes_set_fields_and_records_before_and_after() {
    let s = store();
    s.register_agent(&new_agent("support-bot"), &admin(), T0)
        .unwrap();
    let mut attrs = Map::new();
    attrs.insert("tier".to_owned(), json!("gold"));
    let updated = s
        .update_agent(
            "support-bot",
            &AgentPatch {
                owner: Some("team-cx".to_owned()),
                environment: Some(Environment::Staging),
                attributes: Some(attrs.clone()),
                ..AgentPatch::default()
            },
            &admin(),
            T0 + SECOND,
        )
        .unwrap();
    assert_eq!(updated.owner, "team-cx");
    assert_eq!(updated.environment, Environment::Staging);
    assert_eq!(updated.attributes, attrs);
    assert_eq!(updated.name, "support-bot name");
    assert_eq!(updated.created_us, T0);
    assert_eq!(updated.updated_us, T0 + SECOND);
    assert_eq!(s.agent("support-bot").unwrap(), Some(updated));

    let events = s.list_audit(None, 10).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.action, "agent.update");
    assert_eq!(last.target, "support-bot");
    assert_eq!(
        last.detail,
        json!({
            "before": {"owner": "team-support", "environment": "prod", "attributes": {}},
            "after": {"owner": "team-cx", "environment": "staging", "attributes": {"tier": "gold"}},
        })
    );

    // A patch that changes nothing writes nothing.
    let same = s
        .update_agent(
            "support-bot",
            &AgentPatch {
                owner: Some("team-cx".to_owned()),
                ..AgentPatch::default()
            },
            &admin(),
            T0 + 2 * SECOND,
        )
        .unwrap();
    assert_eq!(same.updated_us, T0 + SECOND);
    assert_eq!(s.list_audit(None, 10).unwrap().len(), 2);

    let err = s
        .update_agent("support-bot", &AgentPatch::default(), &admin(), T0)
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid agent update: no field to change");

    let err = s
        .update_agent(
            "ghost",
            &AgentPatch {
                name: Some("x".to_owned()),
                ..AgentPatch::default()
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `ghost` not found");
}

#[test]
fn status_transitions_and_retired_is_terminal() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    let a = s
        .set_agent_status("bot", AgentStatus::Suspended, &admin(), T0 + 1)
        .unwrap();
    assert_eq!(a.status, AgentStatus::Suspended);
    assert_eq!(a.updated_us, T0 + 1);
    let err = s
        .set_agent_status("bot", AgentStatus::Suspended, &admin(), T0 + 2)
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `bot` is already suspended");
    s.set_agent_status("bot", AgentStatus::Active, &admin(), T0 + 3)
        .unwrap();
    s.set_agent_status("bot", AgentStatus::Retired, &admin(), T0 + 4)
        .unwrap();

    for target in [AgentStatus::Active, AgentStatus::Suspended] {
        let err = s
            .set_agent_status("bot", target, &admin(), T0 + 5)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidState { what: "agent", .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "agent `bot` is retired and cannot become {target}"
            )),
            "{err}"
        );
    }
    let err = s
        .set_agent_status("bot", AgentStatus::Retired, &admin(), T0 + 5)
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `bot` is already retired");
    let err = s
        .update_agent(
            "bot",
            &AgentPatch {
                name: Some("again".to_owned()),
                ..AgentPatch::default()
            },
            &admin(),
            T0 + 5,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    assert_eq!(
        s.agent("bot").unwrap().unwrap().status,
        AgentStatus::Retired
    );

    let err = s
        .set_agent_status("ghost", AgentStatus::Suspended, &admin(), T0)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "agent", .. }),
        "{err:?}"
    );

    assert_eq!(
        actions(&*s),
        [
            "agent.register",
            "agent.suspend",
            "agent.activate",
            "agent.retire"
        ]
    );
    let events = s.list_audit(None, 10).unwrap();
    assert_eq!(events[3].detail, json!({"from": "active", "to": "retired"}));
}

#[test]
fn touch_agents_keeps_the_latest_time_and_is_not_audited() {
    let s = store();
    s.register_agent(&new_agent("a"), &admin(), T0).unwrap();
    s.register_agent(&new_agent("b"), &admin(), T0).unwrap();
    let changed = s
        .touch_agents(&[
            ("a".to_owned(), T0 + 10),
            ("b".to_owned(), T0 + 5),
            ("ghost".to_owned(), T0 + 5),
            ("a".to_owned(), T0 + 7),
        ])
        .unwrap();
    assert_eq!(changed, 2);
    assert_eq!(s.agent("a").unwrap().unwrap().last_seen_us, Some(T0 + 10));
    assert_eq!(s.agent("b").unwrap().unwrap().last_seen_us, Some(T0 + 5));
    assert_eq!(s.touch_agents(&[("a".to_owned(), T0 + 1)]).unwrap(), 0);
    assert_eq!(s.agent("a").unwrap().unwrap().last_seen_us, Some(T0 + 10));
    assert_eq!(s.agent("a").unwrap().unwrap().updated_us, T0);
    assert_eq!(s.touch_agents(&[]).unwrap(), 0);
    assert_eq!(actions(&*s), ["agent.register", "agent.register"]);
}

#[test]
fn insert_look_up_and_list_credentials() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    s.register_agent(&new_agent("other"), &admin(), T0).unwrap();

    let key = s
        .insert_credential(
            &NewCredential {
                expires_at_us: Some(T0 + 3600 * SECOND),
                ..agent_key("key_1", "bot")
            },
            &admin(),
            T0,
        )
        .unwrap();
    assert_eq!(key.kind, CredentialKind::AgentKey);
    assert_eq!(key.agent_id.as_deref(), Some("bot"));
    assert_eq!(key.created_us, T0);
    assert_eq!(key.expires_at_us, Some(T0 + 3600 * SECOND));
    assert!(key.is_usable_at(T0));
    assert!(!key.is_usable_at(T0 + 3600 * SECOND));
    assert_eq!(s.credential("key_1").unwrap(), Some(key));
    assert_eq!(s.credential("key_none").unwrap(), None);

    s.insert_credential(&agent_key("key_2", "other"), &admin(), T0 + 1)
        .unwrap();
    s.insert_credential(&admin_token("adm_1", "auditor"), &admin(), T0 + 2)
        .unwrap();
    s.insert_credential(&pep_token("pep_1"), &admin(), T0 + 3)
        .unwrap();

    let err = s
        .insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
        .unwrap_err();
    assert_eq!(err.to_string(), "credential `key_1` already exists");

    let all = s.list_credentials(&CredentialFilter::default()).unwrap();
    let all_ids: Vec<_> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(all_ids, ["key_1", "key_2", "adm_1", "pep_1"]);
    let of_bot = s
        .list_credentials(&CredentialFilter {
            agent_id: Some("bot".to_owned()),
            ..CredentialFilter::default()
        })
        .unwrap();
    assert_eq!(of_bot.len(), 1);
    let tokens = s
        .list_credentials(&CredentialFilter {
            kind: Some(CredentialKind::AdminToken),
            ..CredentialFilter::default()
        })
        .unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].role.as_deref(), Some("auditor"));

    assert_eq!(
        actions(&*s),
        [
            "agent.register",
            "agent.register",
            "key.issue",
            "key.issue",
            "token.create",
            "token.create"
        ]
    );
}

#[test]
fn credential_inputs_are_validated() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();

    let err = s
        .insert_credential(&agent_key("key_1", "ghost"), &admin(), T0)
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `ghost` not found");

    let err = s
        .insert_credential(
            &NewCredential {
                agent_id: None,
                ..agent_key("key_1", "bot")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "agent id",
                ..
            }
        ),
        "{err:?}"
    );

    let err = s
        .insert_credential(
            &NewCredential {
                role: None,
                ..admin_token("adm", "auditor")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid role: an admin token needs a role: administrator or auditor"
    );
    let err = s
        .insert_credential(&admin_token("adm", "root"), &admin(), T0)
        .unwrap_err();
    assert!(err.to_string().contains("`root` is not one of"), "{err}");
    let err = s
        .insert_credential(
            &NewCredential {
                role: Some("auditor".to_owned()),
                ..pep_token("pep")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "role", .. }),
        "{err:?}"
    );
    let err = s
        .insert_credential(
            &NewCredential {
                agent_id: Some("bot".to_owned()),
                ..pep_token("pep")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "agent id",
                ..
            }
        ),
        "{err:?}"
    );

    let err = s
        .insert_credential(&agent_key("key 1", "bot"), &admin(), T0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "credential id",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s
        .insert_credential(
            &NewCredential {
                hash: String::new(),
                ..agent_key("key_1", "bot")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "credential hash",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s
        .insert_credential(
            &NewCredential {
                expires_at_us: Some(T0),
                ..agent_key("key_1", "bot")
            },
            &admin(),
            T0,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid expiry: must be in the future");

    s.set_agent_status("bot", AgentStatus::Retired, &admin(), T0)
        .unwrap();
    let err = s
        .insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent `bot` is retired and cannot be given new credentials"
    );
    assert!(
        s.list_credentials(&CredentialFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rotation_clamps_the_old_expiry_and_links_the_replacement() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    s.insert_credential(&agent_key("key_a", "bot"), &admin(), T0)
        .unwrap();

    // No expiry before: the old key gets the grace deadline.
    let grace = T0 + 60 * SECOND;
    let (old, new) = s
        .rotate_credential("key_a", &agent_key("key_b", "bot"), grace, &admin(), T0 + 1)
        .unwrap();
    assert_eq!(old.expires_at_us, Some(grace));
    assert_eq!(old.replaced_by.as_deref(), Some("key_b"));
    assert_eq!(new.id, "key_b");
    assert_eq!(new.created_us, T0 + 1);
    assert_eq!(new.replaced_by, None);
    assert_eq!(s.credential("key_a").unwrap(), Some(old));

    // An old key that expires sooner keeps its earlier expiry.
    s.insert_credential(
        &NewCredential {
            expires_at_us: Some(T0 + 10 * SECOND),
            ..agent_key("key_c", "bot")
        },
        &admin(),
        T0,
    )
    .unwrap();
    let (old, _) = s
        .rotate_credential(
            "key_c",
            &agent_key("key_d", "bot"),
            T0 + 3600 * SECOND,
            &admin(),
            T0 + 2,
        )
        .unwrap();
    assert_eq!(old.expires_at_us, Some(T0 + 10 * SECOND));

    // Rotating twice is refused, and so is rotating a revoked key.
    let err = s
        .rotate_credential("key_a", &agent_key("key_e", "bot"), grace, &admin(), T0 + 3)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "credential `key_a` was already rotated (replaced by `key_b`)"
    );
    s.revoke_credential("key_b", "leaked", &admin(), T0 + 4)
        .unwrap();
    let err = s
        .rotate_credential("key_b", &agent_key("key_e", "bot"), grace, &admin(), T0 + 5)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidState {
                what: "credential",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "credential `key_b` is revoked and cannot be rotated"
    );
    assert_eq!(s.credential("key_e").unwrap(), None);

    // Kind, agent and role stay the same across a rotation.
    s.register_agent(&new_agent("other"), &admin(), T0).unwrap();
    let err = s
        .rotate_credential(
            "key_d",
            &agent_key("key_e", "other"),
            grace,
            &admin(),
            T0 + 6,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "agent id",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s
        .rotate_credential("key_d", &pep_token("key_e"), grace, &admin(), T0 + 6)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "credential kind",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s
        .rotate_credential("key_d", &agent_key("key_a", "bot"), grace, &admin(), T0 + 6)
        .unwrap_err();
    assert_eq!(err.to_string(), "credential `key_a` already exists");
    let err = s
        .rotate_credential(
            "key_zz",
            &agent_key("key_e", "bot"),
            grace,
            &admin(),
            T0 + 6,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "credential `key_zz` not found");
    // A failed rotation leaves the old key untouched.
    assert_eq!(s.credential("key_d").unwrap().unwrap().replaced_by, None);

    s.insert_credential(&admin_token("adm_a", "administrator"), &admin(), T0)
        .unwrap();
    let (old, new) = s
        .rotate_credential(
            "adm_a",
            &admin_token("adm_b", "administrator"),
            T0 + 7,
            &admin(),
            T0 + 7,
        )
        .unwrap();
    assert_eq!(old.expires_at_us, Some(T0 + 7));
    assert!(!old.is_usable_at(T0 + 7));
    assert_eq!(new.role.as_deref(), Some("administrator"));

    let events = s.list_audit(None, 100).unwrap();
    let rotations: Vec<_> = events
        .iter()
        .filter(|e| e.action.ends_with(".rotate"))
        .map(|e| {
            (
                e.action.as_str(),
                e.target.as_str(),
                e.detail["new_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rotations,
        [
            ("key.rotate", "key_a", json!("key_b")),
            ("key.rotate", "key_c", json!("key_d")),
            ("token.rotate", "adm_a", json!("adm_b")),
        ]
    );
}

#[test]
fn revoke_one_and_revoke_all_of_an_agent() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    s.register_agent(&new_agent("other"), &admin(), T0).unwrap();
    for id in ["key_1", "key_2", "key_3"] {
        s.insert_credential(&agent_key(id, "bot"), &admin(), T0)
            .unwrap();
    }
    s.insert_credential(&agent_key("key_o", "other"), &admin(), T0)
        .unwrap();

    let revoked = s
        .revoke_credential("key_1", "rotated out", &admin(), T0 + 1)
        .unwrap();
    assert_eq!(revoked.revoked_at_us, Some(T0 + 1));
    assert_eq!(revoked.revoked_reason.as_deref(), Some("rotated out"));
    assert!(!revoked.is_usable_at(T0 + 1));
    let err = s
        .revoke_credential("key_1", "again", &admin(), T0 + 2)
        .unwrap_err();
    assert_eq!(err.to_string(), "credential `key_1` is already revoked");
    let err = s
        .revoke_credential("key_x", "x", &admin(), T0 + 2)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    let live = CredentialFilter {
        agent_id: Some("bot".to_owned()),
        ..CredentialFilter::default()
    };
    assert_eq!(s.list_credentials(&live).unwrap().len(), 2);
    assert_eq!(
        s.list_credentials(&CredentialFilter {
            include_revoked: true,
            ..live.clone()
        })
        .unwrap()
        .len(),
        3
    );

    let before = s.list_audit(None, 100).unwrap().len();
    let n = s
        .revoke_agent_credentials("bot", "agent compromised", &admin(), T0 + 3)
        .unwrap();
    assert_eq!(n, 2);
    assert!(s.list_credentials(&live).unwrap().is_empty());
    assert_eq!(
        s.credential("key_1")
            .unwrap()
            .unwrap()
            .revoked_reason
            .as_deref(),
        Some("rotated out"),
        "an earlier revocation keeps its time and reason"
    );
    assert_eq!(s.credential("key_o").unwrap().unwrap().revoked_at_us, None);
    let events = s.list_audit(None, 100).unwrap();
    let new_events: Vec<_> = events[before..]
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        new_events,
        [("key.revoke", "key_2"), ("key.revoke", "key_3")]
    );
    assert_eq!(
        s.revoke_agent_credentials("bot", "again", &admin(), T0 + 4)
            .unwrap(),
        0
    );
    let err = s
        .revoke_agent_credentials("ghost", "x", &admin(), T0)
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `ghost` not found");

    s.insert_credential(&pep_token("pep_1"), &admin(), T0)
        .unwrap();
    s.revoke_credential("pep_1", "gateway retired", &admin(), T0 + 5)
        .unwrap();
    assert_eq!(
        actions(&*s).last().map(String::as_str),
        Some("token.revoke")
    );
}

#[test]
fn touch_credentials_batch_keeps_the_latest_use() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    s.insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
        .unwrap();
    s.insert_credential(&pep_token("pep_1"), &admin(), T0)
        .unwrap();
    let audit_before = s.list_audit(None, 100).unwrap().len();
    let changed = s
        .touch_credentials(&[
            ("key_1".to_owned(), T0 + 9),
            ("pep_1".to_owned(), T0 + 3),
            ("key_1".to_owned(), T0 + 4),
            ("key_none".to_owned(), T0 + 4),
        ])
        .unwrap();
    assert_eq!(changed, 2);
    assert_eq!(
        s.credential("key_1").unwrap().unwrap().last_used_us,
        Some(T0 + 9)
    );
    assert_eq!(
        s.credential("pep_1").unwrap().unwrap().last_used_us,
        Some(T0 + 3)
    );
    assert_eq!(s.list_audit(None, 100).unwrap().len(), audit_before);
}

#[test]
fn sightings_upsert_count_and_merge() {
    let s = store();
    let report = s
        .record_sightings(&[
            sighting(DiscoveredKind::Credential, "fp_aaa", "10.0.0.1", T0 + 5),
            sighting(DiscoveredKind::Credential, "fp_aaa", "10.0.0.2", T0 + 2),
            sighting(DiscoveredKind::AgentId, "fp_aaa", "10.0.0.1", T0),
            Sighting {
                enforcement_point: "gateway-2".to_owned(),
                ..sighting(DiscoveredKind::Credential, "fp_aaa", "10.0.0.1", T0 + 7)
            },
        ])
        .unwrap();
    assert_eq!((report.inserted, report.updated, report.dropped), (2, 2, 0));

    let list = s.list_discovered(false).unwrap();
    assert_eq!(list.len(), 2);
    let cred = &list[0];
    assert_eq!(cred.kind, DiscoveredKind::Credential);
    assert_eq!(cred.key, "fp_aaa");
    assert_eq!(cred.count, 3);
    assert_eq!(cred.first_seen_us, T0 + 2);
    assert_eq!(cred.last_seen_us, T0 + 7);
    assert_eq!(cred.sources, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(cred.enforcement_points, ["gateway-2", "gateway-1"]);
    assert_eq!(cred.adopted_as, None);
    assert_eq!(list[1].kind, DiscoveredKind::AgentId);
    assert_eq!(list[1].count, 1);
    assert_eq!(s.discovered(cred.id).unwrap().as_ref(), Some(cred));
    assert_eq!(s.discovered(9999).unwrap(), None);

    // Ordered by last seen, most recent first.
    s.record_sightings(&[sighting(
        DiscoveredKind::AgentId,
        "fp_aaa",
        "10.0.0.9",
        T0 + 100,
    )])
    .unwrap();
    let list = s.list_discovered(false).unwrap();
    assert_eq!(list[0].kind, DiscoveredKind::AgentId);
    assert_eq!(list[0].sources, ["10.0.0.9", "10.0.0.1"]);

    // Empty keys are dropped, long texts are cut.
    let report = s
        .record_sightings(&[
            sighting(DiscoveredKind::AgentId, "", "10.0.0.1", T0),
            sighting(
                DiscoveredKind::AgentId,
                &"x".repeat(5000),
                &"s".repeat(500),
                T0,
            ),
        ])
        .unwrap();
    assert_eq!((report.inserted, report.dropped), (1, 1));
    let long = s
        .list_discovered(false)
        .unwrap()
        .into_iter()
        .find(|d| d.key.starts_with('x'))
        .unwrap();
    assert_eq!(long.key.len(), 256);
    assert_eq!(long.sources[0].len(), 128);
    assert!(
        s.list_audit(None, 10).unwrap().is_empty(),
        "sightings are not audited"
    );
}

#[test]
fn sighting_sources_are_capped_keeping_the_most_recent() {
    let s = store();
    let batch: Vec<_> = (0..40)
        .map(|i| {
            sighting(
                DiscoveredKind::Credential,
                "fp_x",
                &format!("10.0.1.{i}"),
                T0 + i,
            )
        })
        .collect();
    s.record_sightings(&batch).unwrap();
    let found = &s.list_discovered(false).unwrap()[0];
    assert_eq!(found.count, 40);
    assert_eq!(found.sources.len(), MAX_DISCOVERED_SOURCES);
    let expected: Vec<String> = (24..40).rev().map(|i| format!("10.0.1.{i}")).collect();
    assert_eq!(found.sources, expected);
    assert_eq!(found.enforcement_points, ["gateway-1"]);
}

#[test]
fn adoption_is_audited_and_hides_the_identity_by_default() {
    let s = store();
    s.register_agent(&new_agent("support-bot"), &admin(), T0)
        .unwrap();
    s.record_sightings(&[
        sighting(DiscoveredKind::AgentId, "support-bot-2", "10.0.0.1", T0),
        sighting(DiscoveredKind::Credential, "fp_b", "10.0.0.1", T0),
    ])
    .unwrap();
    let target = s
        .list_discovered(false)
        .unwrap()
        .into_iter()
        .find(|d| d.key == "support-bot-2")
        .unwrap();

    let err = s
        .mark_adopted(target.id, "ghost", &admin(), T0 + 1)
        .unwrap_err();
    assert_eq!(err.to_string(), "agent `ghost` not found");
    let err = s
        .mark_adopted(424_242, "support-bot", &admin(), T0 + 1)
        .unwrap_err();
    assert_eq!(err.to_string(), "discovered identity `424242` not found");

    let adopted = s
        .mark_adopted(target.id, "support-bot", &admin(), T0 + 1)
        .unwrap();
    assert_eq!(adopted.adopted_as.as_deref(), Some("support-bot"));
    let err = s
        .mark_adopted(target.id, "support-bot", &admin(), T0 + 2)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");

    let visible: Vec<_> = s
        .list_discovered(false)
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(visible, ["fp_b"]);
    assert_eq!(s.list_discovered(true).unwrap().len(), 2);

    let event = s.list_audit(None, 10).unwrap().pop().unwrap();
    assert_eq!(event.action, "discovered.adopt");
    assert_eq!(event.target, target.id.to_string());
    assert_eq!(event.detail["agent_id"], json!("support-bot"));
    assert_eq!(event.detail["key"], json!("support-bot-2"));

    // Sightings of an adopted key keep counting.
    s.record_sightings(&[sighting(
        DiscoveredKind::AgentId,
        "support-bot-2",
        "10.0.0.3",
        T0 + 9,
    )])
    .unwrap();
    assert_eq!(s.discovered(target.id).unwrap().unwrap().count, 2);
}

#[test]
fn generation_changes_after_every_administrative_change() {
    let s = store();
    let mut last = s.generation().unwrap();
    let mut step = |label: &str, s: &dyn Store| {
        let now = s.generation().unwrap();
        assert_ne!(now, last, "generation unchanged after {label}");
        last = now;
    };
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    step("register", &*s);
    s.update_agent(
        "bot",
        &AgentPatch {
            purpose: Some("new".to_owned()),
            ..AgentPatch::default()
        },
        &admin(),
        T0,
    )
    .unwrap();
    step("update", &*s);
    s.set_agent_status("bot", AgentStatus::Suspended, &admin(), T0)
        .unwrap();
    step("status", &*s);
    s.insert_credential(&agent_key("key_1", "bot"), &admin(), T0)
        .unwrap();
    step("insert credential", &*s);
    s.rotate_credential("key_1", &agent_key("key_2", "bot"), T0 + 5, &admin(), T0)
        .unwrap();
    step("rotate", &*s);
    s.revoke_credential("key_2", "x", &admin(), T0).unwrap();
    step("revoke", &*s);
    s.revoke_agent_credentials("bot", "x", &admin(), T0)
        .unwrap();
    step("revoke all", &*s);
    s.record_sightings(&[sighting(DiscoveredKind::AgentId, "bot-2", "10.0.0.1", T0)])
        .unwrap();
    let id = s.list_discovered(false).unwrap()[0].id;
    let before_adopt = s.generation().unwrap();
    s.mark_adopted(id, "bot", &admin(), T0).unwrap();
    assert_ne!(s.generation().unwrap(), before_adopt);

    // Reads and failed changes leave it alone.
    let g = s.generation().unwrap();
    s.list_agents(&AgentFilter::default()).unwrap();
    s.agent("bot").unwrap();
    let _ = s
        .register_agent(&new_agent("bot"), &admin(), T0)
        .unwrap_err();
    assert_eq!(s.generation().unwrap(), g);
}

#[test]
fn every_change_is_audited_in_a_verifiable_chain_without_secrets() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    s.insert_credential(
        &agent_key("key_1", "bot"),
        &Actor::admin_token("adm_7"),
        T0 + 1,
    )
    .unwrap();
    s.rotate_credential(
        "key_1",
        &agent_key("key_2", "bot"),
        T0 + 9,
        &admin(),
        T0 + 2,
    )
    .unwrap();
    s.revoke_credential("key_2", "leaked", &admin(), T0 + 3)
        .unwrap();
    s.set_agent_status(
        "bot",
        AgentStatus::Suspended,
        &Actor::system("lifecycle"),
        T0 + 4,
    )
    .unwrap();

    let events = s.list_audit(None, 100).unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[0].prev_hash, GENESIS_HASH);
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert!(
        events
            .iter()
            .all(|e| e.hash.starts_with("sha256:") && e.hash.len() == 71)
    );
    assert_eq!(events[1].actor_kind, "admin_token");
    assert_eq!(events[1].actor_id, "adm_7");
    assert_eq!(events[1].at_us, T0 + 1);
    assert_eq!(events[4].actor_kind, "system");
    assert_eq!(events[3].detail["reason"], json!("leaked"));

    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&"ab".repeat(32)),
        "a credential hash leaked into the audit trail"
    );

    assert_eq!(s.verify_audit().unwrap(), 5);
    assert_eq!(s.audit_head().unwrap(), Some((5, events[4].hash.clone())));

    let page: Vec<u64> = s
        .list_audit(Some(2), 2)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, [3, 4]);
    assert!(s.list_audit(Some(5), 10).unwrap().is_empty());

    let empty = store();
    assert_eq!(empty.verify_audit().unwrap(), 0);
    assert_eq!(empty.audit_head().unwrap(), None);
}

#[test]
fn verify_audit_spans_batches() {
    let s = store();
    s.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    for i in 0..1100_i64 {
        let purpose = format!("purpose {i}");
        s.update_agent(
            "bot",
            &AgentPatch {
                purpose: Some(purpose),
                ..AgentPatch::default()
            },
            &admin(),
            T0 + i,
        )
        .unwrap();
    }
    assert_eq!(s.verify_audit().unwrap(), 1101);
}

#[test]
fn concurrent_handles_on_one_file_keep_one_chain() {
    let fx = store();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let open = fx.opener();
            std::thread::spawn(move || {
                let s = open();
                for i in 0..15 {
                    s.register_agent(&new_agent(&format!("t{t}-bot-{i}")), &admin(), T0 + i)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = fx.other();
    assert_eq!(s.list_agents(&AgentFilter::default()).unwrap().len(), 45);
    assert_eq!(s.verify_audit().unwrap(), 45);
}

/// A well-formed definition hash built from one hex digit pair.
pub(crate) fn h(pair: &str) -> String {
    format!("sha256:{}", pair.repeat(32))
}

/// A tool definition's JSON text, distinct per `description`.
pub(crate) fn def(description: &str) -> String {
    json!({"name": "read_file", "description": description, "inputSchema": {"type": "object"}})
        .to_string()
}

pub(crate) fn head(s: &dyn Store) -> Option<(u64, String)> {
    s.audit_head().unwrap()
}

pub(crate) fn changed(pinned: &str) -> PinCheck {
    PinCheck::Changed {
        pinned_hash: pinned.to_owned(),
    }
}

#[test]
fn first_use_pins_and_the_same_definition_matches_without_writing() {
    let s = store();
    assert_eq!(s.tool_pin("fs", "read_file").unwrap(), None);
    assert_eq!(
        s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
            .unwrap(),
        PinCheck::Pinned
    );
    let pin = s.tool_pin("fs", "read_file").unwrap().unwrap();
    assert_eq!(
        pin,
        ToolPin {
            server: "fs".to_owned(),
            tool: "read_file".to_owned(),
            hash: h("a1"),
            definition: Some(def("v1")),
            pinned_at_us: T0,
            pinned_by: ToolPin::FIRST_USE.to_owned(),
            observed_hash: None,
            observed_definition: None,
            observed_at_us: None,
        }
    );
    assert!(!pin.is_changed());
    let events = s.list_audit(None, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, "tool.pinned");
    assert_eq!(events[0].actor_kind, "system");
    assert_eq!(events[0].actor_id, "first-use");
    assert_eq!(events[0].target, "fs/read_file");
    assert_eq!(events[0].detail["hash"], json!(h("a1")));
    assert_eq!(events[0].detail["source"], json!("first-use"));

    // Matching is read-only: neither the audit trail nor the data version moves.
    let before = head(&*s);
    let generation = s.generation().unwrap();
    for i in 1..5 {
        assert_eq!(
            s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0 + i)
                .unwrap(),
            PinCheck::Matches
        );
    }
    assert_eq!(head(&*s), before);
    assert_eq!(s.generation().unwrap(), generation);
    assert_eq!(s.tool_pin("fs", "read_file").unwrap(), Some(pin));

    // The same tool name on another server is another pin.
    assert_eq!(
        s.check_tool("git", "read_file", &h("b2"), &def("git"), T0)
            .unwrap(),
        PinCheck::Pinned
    );
    assert_eq!(
        s.check_tool("fs", "write_file", &h("c3"), &def("w"), T0)
            .unwrap(),
        PinCheck::Pinned
    );
    let listed: Vec<(String, String)> = s
        .list_tool_pins(None)
        .unwrap()
        .into_iter()
        .map(|p| (p.server, p.tool))
        .collect();
    assert_eq!(
        listed,
        [
            ("fs".to_owned(), "read_file".to_owned()),
            ("fs".to_owned(), "write_file".to_owned()),
            ("git".to_owned(), "read_file".to_owned()),
        ]
    );
    assert_eq!(s.list_tool_pins(Some("git")).unwrap().len(), 1);
    assert!(s.list_tool_pins(Some("nope")).unwrap().is_empty());
    assert_eq!(s.verify_audit().unwrap(), 3);
}

#[test]
fn a_changed_definition_stays_changed_and_is_audited_once() {
    let s = store();
    s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
        .unwrap();
    assert_eq!(
        s.check_tool("fs", "read_file", &h("b2"), &def("evil"), T0 + SECOND)
            .unwrap(),
        changed(&h("a1"))
    );
    let pin = s.tool_pin("fs", "read_file").unwrap().unwrap();
    assert!(pin.is_changed());
    assert_eq!(pin.hash, h("a1"));
    assert_eq!(pin.definition, Some(def("v1")));
    assert_eq!(pin.observed_hash, Some(h("b2")));
    assert_eq!(pin.observed_definition, Some(def("evil")));
    assert_eq!(pin.observed_at_us, Some(T0 + SECOND));
    assert_eq!(actions(&*s), ["tool.pinned", "tool.changed"]);
    let event = &s.list_audit(Some(1), 1).unwrap()[0];
    assert_eq!(event.detail["pinned_hash"], json!(h("a1")));
    assert_eq!(event.detail["observed_hash"], json!(h("b2")));
    assert!(
        !event.detail.to_string().contains("evil"),
        "definitions stay out of the audit trail"
    );

    // Re-listing the same changed definition writes nothing more.
    let before = head(&*s);
    for i in 2..6 {
        assert_eq!(
            s.check_tool("fs", "read_file", &h("b2"), &def("evil"), T0 + i * SECOND)
                .unwrap(),
            changed(&h("a1"))
        );
    }
    assert_eq!(head(&*s), before);
    assert_eq!(
        s.tool_pin("fs", "read_file")
            .unwrap()
            .unwrap()
            .observed_at_us,
        Some(T0 + SECOND)
    );

    // Going back to the pinned definition matches (and writes nothing).
    assert_eq!(
        s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0 + 7 * SECOND)
            .unwrap(),
        PinCheck::Matches
    );
    assert_eq!(head(&*s), before);

    // A third definition replaces the pending one, audited again.
    assert_eq!(
        s.check_tool("fs", "read_file", &h("c3"), &def("v3"), T0 + 8 * SECOND)
            .unwrap(),
        changed(&h("a1"))
    );
    let pin = s.tool_pin("fs", "read_file").unwrap().unwrap();
    assert_eq!(pin.observed_hash, Some(h("c3")));
    assert_eq!(pin.observed_definition, Some(def("v3")));
    assert_eq!(pin.observed_at_us, Some(T0 + 8 * SECOND));
    assert_eq!(
        actions(&*s),
        ["tool.pinned", "tool.changed", "tool.changed"]
    );
    assert_eq!(
        s.list_audit(Some(2), 1).unwrap()[0].detail["previous_observed_hash"],
        json!(h("b2"))
    );
    assert_eq!(s.verify_audit().unwrap(), 3);
}

#[test]
fn approving_makes_the_pending_definition_the_pinned_one() {
    let s = store();
    s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
        .unwrap();
    s.check_tool("fs", "read_file", &h("b2"), &def("v2"), T0 + 1)
        .unwrap();

    // The expected hash must be the pending one, and the error says which it is.
    let err = s
        .approve_tool("fs", "read_file", Some(&h("c3")), &admin(), T0 + 2)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("fs/read_file"), "{text}");
    assert!(
        text.contains(&format!("pending definition {}", h("b2"))),
        "{text}"
    );
    assert!(text.contains(&h("c3")), "{text}");
    // Nor is the pinned hash what is pending.
    assert!(
        s.approve_tool("fs", "read_file", Some(&h("a1")), &admin(), T0 + 2)
            .is_err()
    );
    assert!(s.tool_pin("fs", "read_file").unwrap().unwrap().is_changed());
    assert_eq!(actions(&*s), ["tool.pinned", "tool.changed"]);

    let approved = s
        .approve_tool(
            "fs",
            "read_file",
            Some(&h("b2")),
            &Actor::cli("alice"),
            T0 + 3,
        )
        .unwrap();
    assert_eq!(approved.hash, h("b2"));
    assert_eq!(approved.definition, Some(def("v2")));
    assert_eq!(approved.pinned_at_us, T0 + 3);
    assert_eq!(approved.pinned_by, "cli:alice");
    assert_eq!(approved.observed_hash, None);
    assert_eq!(approved.observed_definition, None);
    assert_eq!(approved.observed_at_us, None);
    assert!(!approved.is_changed());
    assert_eq!(s.tool_pin("fs", "read_file").unwrap(), Some(approved));

    let event = s.list_audit(Some(2), 1).unwrap().remove(0);
    assert_eq!(event.action, "tool.approved");
    assert_eq!(event.actor_kind, "cli");
    assert_eq!(event.actor_id, "alice");
    assert_eq!(event.detail["previous_hash"], json!(h("a1")));
    assert_eq!(event.detail["hash"], json!(h("b2")));

    assert_eq!(
        s.check_tool("fs", "read_file", &h("b2"), &def("v2"), T0 + 4)
            .unwrap(),
        PinCheck::Matches
    );
    assert_eq!(
        s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0 + 5)
            .unwrap(),
        changed(&h("b2"))
    );

    // Without an expected hash, whatever is pending is approved.
    let approved = s
        .approve_tool(
            "fs",
            "read_file",
            None,
            &Actor::admin_token("tok_7"),
            T0 + 6,
        )
        .unwrap();
    assert_eq!(approved.hash, h("a1"));
    assert_eq!(approved.pinned_by, "admin_token:tok_7");
    assert_eq!(s.verify_audit().unwrap(), 5);
}

#[test]
fn approving_needs_a_pin_with_a_pending_change() {
    let s = store();
    let err = s
        .approve_tool("fs", "read_file", None, &admin(), T0)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "tool pin `fs/read_file` not found");

    s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
        .unwrap();
    let err = s
        .approve_tool("fs", "read_file", None, &admin(), T0)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no pending change to approve"),
        "{err}"
    );
    let err = s
        .approve_tool("fs", "read_file", Some(&h("a1")), &admin(), T0)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");

    // A malformed expected hash is an input error, an empty actor too.
    let err = s
        .approve_tool("fs", "read_file", Some("sha256:abc"), &admin(), T0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "expected hash",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        s.approve_tool("fs", "read_file", None, &Actor::cli(""), T0)
            .is_err()
    );
    assert_eq!(actions(&*s), ["tool.pinned"]);
}

#[test]
fn pins_from_a_lock_file() {
    let s = store();
    let lock = vec![
        ("read_file".to_owned(), h("a1")),
        ("write_file".to_owned(), h("b2")),
    ];
    assert_eq!(
        s.pin_tools("fs", &lock, &Actor::cli("alice"), T0).unwrap(),
        2
    );
    let pin = s.tool_pin("fs", "read_file").unwrap().unwrap();
    assert_eq!(pin.hash, h("a1"));
    assert_eq!(pin.definition, None);
    assert_eq!(pin.pinned_by, "cli:alice");
    assert_eq!(pin.pinned_at_us, T0);
    assert_eq!(actions(&*s), ["tool.pinned", "tool.pinned"]);
    let event = s.list_audit(None, 1).unwrap().remove(0);
    assert_eq!(event.target, "fs/read_file");
    assert_eq!(event.detail["source"], json!("lock"));
    assert_eq!(event.detail["previous_hash"], json!(null));

    // Re-applying the same lock changes nothing and writes no event.
    let before = head(&*s);
    assert_eq!(s.pin_tools("fs", &lock, &admin(), T0 + 1).unwrap(), 0);
    assert_eq!(head(&*s), before);
    assert_eq!(
        s.tool_pin("fs", "read_file").unwrap().unwrap().pinned_by,
        "cli:alice"
    );

    // The gateway then matches the locked hash and flags any other.
    assert_eq!(
        s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0 + 2)
            .unwrap(),
        PinCheck::Matches
    );
    assert_eq!(
        s.tool_pin("fs", "read_file").unwrap().unwrap().definition,
        None,
        "matching does not write"
    );
    assert_eq!(
        s.check_tool("fs", "write_file", &h("c3"), &def("w3"), T0 + 2)
            .unwrap(),
        changed(&h("b2"))
    );

    // A new lock naming the pending hash takes its definition over; one
    // naming another hash leaves the pending change pending.
    s.check_tool("fs", "read_file", &h("d4"), &def("v4"), T0 + 3)
        .unwrap();
    let lock = vec![
        ("write_file".to_owned(), h("c3")),
        ("read_file".to_owned(), h("e5")),
        ("delete_file".to_owned(), h("f6")),
    ];
    assert_eq!(s.pin_tools("fs", &lock, &admin(), T0 + 4).unwrap(), 3);
    let write = s.tool_pin("fs", "write_file").unwrap().unwrap();
    assert_eq!(write.hash, h("c3"));
    assert_eq!(write.definition, Some(def("w3")));
    assert_eq!(write.observed_hash, None);
    assert!(!write.is_changed());
    let read = s.tool_pin("fs", "read_file").unwrap().unwrap();
    assert_eq!(read.hash, h("e5"));
    assert_eq!(read.definition, None);
    assert_eq!(read.pinned_by, "cli:ops");
    assert_eq!(read.observed_hash, Some(h("d4")));
    assert!(read.is_changed());
    let moved = s.list_audit(None, usize::MAX).unwrap();
    let moved = moved
        .iter()
        .find(|e| e.target == "fs/read_file" && e.at_us == T0 + 4)
        .unwrap();
    assert_eq!(moved.detail["previous_hash"], json!(h("a1")));
    assert_eq!(moved.detail["hash"], json!(h("e5")));
    assert_eq!(s.list_tool_pins(Some("fs")).unwrap().len(), 3);

    // An empty lock does nothing.
    assert_eq!(s.pin_tools("fs", &[], &admin(), T0 + 5).unwrap(), 0);
    // 2 pinned from the first lock, 2 changes seen, 3 moved by the second lock.
    assert_eq!(s.verify_audit().unwrap(), 7);
}

#[test]
fn unpinning_lets_the_next_sighting_pin_again() {
    let s = store();
    let err = s.unpin_tool("fs", "read_file", &admin(), T0).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    s.check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
        .unwrap();
    s.check_tool("fs", "read_file", &h("b2"), &def("v2"), T0 + 1)
        .unwrap();
    s.unpin_tool("fs", "read_file", &admin(), T0 + 2).unwrap();
    assert_eq!(s.tool_pin("fs", "read_file").unwrap(), None);
    let event = s.list_audit(Some(2), 1).unwrap().remove(0);
    assert_eq!(event.action, "tool.unpinned");
    assert_eq!(event.actor_id, "ops");
    assert_eq!(event.detail["hash"], json!(h("a1")));
    assert_eq!(event.detail["pending_hash"], json!(h("b2")));

    assert_eq!(
        s.check_tool("fs", "read_file", &h("b2"), &def("v2"), T0 + 3)
            .unwrap(),
        PinCheck::Pinned
    );
    assert_eq!(
        actions(&*s),
        [
            "tool.pinned",
            "tool.changed",
            "tool.unpinned",
            "tool.pinned"
        ]
    );
    assert_eq!(s.verify_audit().unwrap(), 4);
}

#[test]
fn an_approval_from_another_process_reaches_a_running_gateway() {
    let gateway = store();
    let cli = gateway.other();

    assert_eq!(
        gateway
            .check_tool("fs", "read_file", &h("a1"), &def("v1"), T0)
            .unwrap(),
        PinCheck::Pinned
    );
    assert_eq!(
        gateway
            .check_tool("fs", "read_file", &h("b2"), &def("v2"), T0 + 1)
            .unwrap(),
        changed(&h("a1"))
    );
    let pending = cli.tool_pin("fs", "read_file").unwrap().unwrap();
    assert_eq!(pending.observed_hash, Some(h("b2")));

    cli.approve_tool(
        "fs",
        "read_file",
        Some(&h("b2")),
        &Actor::cli("alice"),
        T0 + 2,
    )
    .unwrap();
    assert_eq!(
        gateway
            .check_tool("fs", "read_file", &h("b2"), &def("v2"), T0 + 3)
            .unwrap(),
        PinCheck::Matches
    );
    assert_eq!(
        gateway
            .check_tool("fs", "read_file", &h("a1"), &def("v1"), T0 + 4)
            .unwrap(),
        changed(&h("b2"))
    );

    cli.unpin_tool("fs", "read_file", &admin(), T0 + 5).unwrap();
    assert_eq!(gateway.tool_pin("fs", "read_file").unwrap(), None);
    assert_eq!(gateway.verify_audit().unwrap(), 5);
    assert_eq!(cli.audit_head().unwrap(), gateway.audit_head().unwrap());
}

#[test]
fn concurrent_first_use_agrees_on_one_pin() {
    let fx = store();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let open = fx.opener();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let s = open();
                barrier.wait();
                let mut outcomes = Vec::new();
                for i in 0..10 {
                    // Every "process" announces the same definitions.
                    let tool = format!("tool-{i}");
                    outcomes.push(
                        s.check_tool("fs", &tool, &h("a1"), &def("v1"), T0 + t)
                            .unwrap(),
                    );
                }
                outcomes
            })
        })
        .collect();
    let mut pinned = 0;
    for t in threads {
        for outcome in t.join().unwrap() {
            match outcome {
                PinCheck::Pinned => pinned += 1,
                PinCheck::Matches => {}
                PinCheck::Changed { .. } => panic!("same definition reported as changed"),
            }
        }
    }
    assert_eq!(pinned, 10, "each tool is pinned exactly once");
    let s = fx.other();
    assert_eq!(s.list_tool_pins(Some("fs")).unwrap().len(), 10);
    assert_eq!(s.verify_audit().unwrap(), 10);
}

pub(crate) fn candidate(
    version_byte: &str,
    author: &str,
    failed: u64,
) -> arbiter_store::NewPolicyVersion {
    arbiter_store::NewPolicyVersion {
        version: format!("sha256:{}", version_byte.repeat(32)),
        author: author.to_owned(),
        message: format!("version {version_byte}"),
        files: vec![arbiter_store::PolicyFile {
            path: "policies.cedar".to_owned(),
            text: "@id(\"p\")\n@owner(\"team\")\npermit (principal, action, resource);\n".into(),
        }],
        owners: [("p".to_owned(), "team".to_owned())].into(),
        tests_passed: 3,
        tests_failed: failed,
    }
}

/// The governed process, kept by the store whatever the caller: the author cannot approve,
/// activation needs passing tests and enough approvals, a rejected version goes nowhere, a
/// rollback goes back one version, every step is audited and nothing is deleted.
#[test]
fn policy_versions_are_governed() {
    let fx = super::store();
    let store: &dyn Store = &*fx;
    let ops = admin();
    let a = candidate("aa", "alice", 0);
    let v = store.propose_policy_version(&a, &ops, T0).unwrap();
    assert_eq!(v.state, arbiter_store::PolicyVersionState::Proposed);
    assert_eq!(v.owners["p"], "team");
    assert!(matches!(
        store.propose_policy_version(&a, &ops, T0 + 1),
        Err(StoreError::Conflict { .. })
    ));
    // Nothing is active yet, and an unapproved version cannot become active.
    assert!(store.policy_activations(10).unwrap().is_empty());
    let e = store
        .activate_policy_version(&a.version, "alice", &ops, T0 + 2)
        .unwrap_err();
    assert!(e.to_string().contains("has 0 of the 1 approval(s)"), "{e}");
    // The author may not approve their own version (whatever the case of the name).
    let e = store
        .approve_policy_version(&a.version, " Alice ", &ops, T0 + 3)
        .unwrap_err();
    assert!(e.to_string().contains("may not approve it"), "{e}");
    store
        .approve_policy_version(&a.version, "bob", &ops, T0 + 4)
        .unwrap();
    let e = store
        .approve_policy_version(&a.version, "BOB", &ops, T0 + 5)
        .unwrap_err();
    assert!(e.to_string().contains("already approved by"), "{e}");
    let first = store
        .activate_policy_version(&a.version, "alice", &ops, T0 + 6)
        .unwrap();
    assert_eq!(first.version, a.version);
    assert!(
        store
            .activate_policy_version(&a.version, "alice", &ops, T0 + 7)
            .unwrap_err()
            .to_string()
            .contains("already active")
    );
    // The active version cannot be rejected; a rollback needs an earlier version.
    assert!(
        store
            .reject_policy_version(&a.version, "carol", "no", &ops, T0 + 8)
            .unwrap_err()
            .to_string()
            .contains("is the active version")
    );
    assert!(
        store
            .rollback_policy_version("alice", &ops, T0 + 9)
            .unwrap_err()
            .to_string()
            .contains("nothing to roll back to")
    );

    // Two approvals required now; a version whose tests fail never activates.
    store
        .set_required_policy_approvals(2, &ops, T0 + 10)
        .unwrap();
    assert!(
        store
            .set_required_policy_approvals(0, &ops, T0 + 10)
            .is_err()
    );
    let failing = candidate("bb", "alice", 1);
    store
        .propose_policy_version(&failing, &ops, T0 + 11)
        .unwrap();
    for who in ["bob", "carol"] {
        store
            .approve_policy_version(&failing.version, who, &ops, T0 + 12)
            .unwrap();
    }
    let e = store
        .activate_policy_version(&failing.version, "bob", &ops, T0 + 13)
        .unwrap_err();
    assert!(e.to_string().contains("failed 1 of its 4 tests"), "{e}");

    let b = candidate("cc", "bob", 0);
    store.propose_policy_version(&b, &ops, T0 + 14).unwrap();
    store
        .approve_policy_version(&b.version, "alice", &ops, T0 + 15)
        .unwrap();
    assert!(
        store
            .activate_policy_version(&b.version, "bob", &ops, T0 + 16)
            .unwrap_err()
            .to_string()
            .contains("has 1 of the 2")
    );
    store
        .approve_policy_version(&b.version, "carol", &ops, T0 + 17)
        .unwrap();
    store
        .activate_policy_version(&b.version, "bob", &ops, T0 + 18)
        .unwrap();
    // Rollback: back to `a`, recorded as an activation of its own.
    let back = store
        .rollback_policy_version("carol", &ops, T0 + 19)
        .unwrap();
    assert_eq!(back.version, a.version);
    assert_eq!(back.kind, arbiter_store::ActivationKind::Rollback);
    let history: Vec<String> = store
        .policy_activations(10)
        .unwrap()
        .into_iter()
        .map(|a| a.version)
        .collect();
    assert_eq!(
        history,
        [a.version.clone(), b.version.clone(), a.version.clone()]
    );

    // Rejected: terminal.
    store
        .reject_policy_version(&failing.version, "carol", "tests fail", &ops, T0 + 20)
        .unwrap();
    assert!(
        store
            .approve_policy_version(&failing.version, "dave", &ops, T0 + 21)
            .unwrap_err()
            .to_string()
            .contains("was rejected")
    );

    // Prefixes name one version; too short or ambiguous is an error.
    assert_eq!(store.resolve_policy_version("cccccccc").unwrap(), b.version);
    assert_eq!(store.resolve_policy_version(&b.version).unwrap(), b.version);
    assert!(store.resolve_policy_version("ccc").is_err());
    assert!(matches!(
        store.resolve_policy_version("dddddddd"),
        Err(StoreError::NotFound { .. })
    ));
    // Bad input is refused, naming the field.
    let mut bad = candidate("dd", "alice", 0);
    bad.files[0].path = "../etc/passwd".into();
    assert!(
        store
            .propose_policy_version(&bad, &ops, T0)
            .unwrap_err()
            .to_string()
            .contains("not a relative path")
    );
    bad = candidate("dd", "alice", 0);
    bad.version = "sha256:XYZ".into();
    assert!(store.propose_policy_version(&bad, &ops, T0).is_err());

    // Every step is in the audit trail, which verifies.
    let actions: Vec<String> = store
        .list_audit(None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("policy."))
        .collect();
    for step in [
        "policy.proposed",
        "policy.approved",
        "policy.activated",
        "policy.required_approvals",
        "policy.rolled_back",
        "policy.rejected",
    ] {
        assert!(actions.iter().any(|a| a == step), "{step}: {actions:?}");
    }
    store.verify_audit().unwrap();
    // Reopened (another process), the same history.
    let again = fx.other();
    assert_eq!(again.list_policy_versions(10).unwrap().len(), 3);
    assert_eq!(again.required_policy_approvals().unwrap(), 2);
}

// ------------------------------------------------------------- counters

fn charge<'a>(key: &'a str, amount: i64, decision: &'a str) -> arbiter_store::NewCharge<'a> {
    arbiter_store::NewCharge {
        key,
        amount,
        max: 3,
        window_us: 60 * SECOND,
        decision_id: decision,
    }
}

#[test]
fn a_counter_charges_up_to_its_maximum_and_says_when_it_frees() {
    use arbiter_store::ChargeOutcome;
    let s = store();
    for (i, d) in ["d1", "d2", "d3"].iter().enumerate() {
        let at = T0 + i64::try_from(i).unwrap() * SECOND;
        assert_eq!(
            s.charge(&charge("limit:bot:p", 1, d), at).unwrap(),
            ChargeOutcome::Charged
        );
    }
    // Full: the oldest charge (T0) frees a place at T0 + 60 s.
    assert_eq!(
        s.charge(&charge("limit:bot:p", 1, "d4"), T0 + 10 * SECOND)
            .unwrap(),
        ChargeOutcome::Refused {
            spent: 3,
            frees_in_us: Some(50 * SECOND)
        }
    );
    // Another key is another counter.
    assert_eq!(
        s.charge(&charge("limit:other:p", 1, "d5"), T0).unwrap(),
        ChargeOutcome::Charged
    );
    // More than the maximum on its own never fits.
    assert_eq!(
        s.charge(&charge("budget:bot:p", 4, "d6"), T0).unwrap(),
        ChargeOutcome::Refused {
            spent: 0,
            frees_in_us: None
        }
    );
    // A decision that could not be recorded gives its charge back.
    assert_eq!(s.uncharge("d3").unwrap(), 1);
    assert_eq!(
        s.charge(&charge("limit:bot:p", 1, "d7"), T0 + 11 * SECOND)
            .unwrap(),
        ChargeOutcome::Charged
    );
    // Once the window has passed, the counter is empty again.
    assert_eq!(
        s.charge(&charge("limit:bot:p", 1, "d8"), T0 + 200 * SECOND)
            .unwrap(),
        ChargeOutcome::Charged
    );
    // Counters are not administrative changes.
    assert!(actions(&*s).is_empty());
    // Bad input is refused by name.
    let mut bad = charge("", 1, "d9");
    assert!(
        s.charge(&bad, T0)
            .unwrap_err()
            .to_string()
            .contains("charge key")
    );
    bad.key = "k";
    bad.amount = -1;
    assert!(
        s.charge(&bad, T0)
            .unwrap_err()
            .to_string()
            .contains("negative")
    );
    bad.amount = 1;
    bad.window_us = 0;
    assert!(
        s.charge(&bad, T0)
            .unwrap_err()
            .to_string()
            .contains("window")
    );
}

#[test]
fn racing_handles_never_charge_past_the_maximum() {
    use arbiter_store::ChargeOutcome;
    let fx = store();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let open = fx.opener();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let s = open();
                barrier.wait();
                (0..10)
                    .filter(|i| {
                        let id = format!("t{t}-{i}");
                        let c = arbiter_store::NewCharge {
                            key: "limit:bot:refunds",
                            amount: 1,
                            max: 7,
                            window_us: 3_600 * SECOND,
                            decision_id: &id,
                        };
                        s.charge(&c, T0 + i).unwrap() == ChargeOutcome::Charged
                    })
                    .count()
            })
        })
        .collect();
    let charged: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(charged, 7, "exactly the maximum, whoever charged");
}

// ------------------------------------------------------------- nodes

#[test]
fn a_node_registers_once_with_its_key_and_publishes_checkpoints_forward() {
    use arbiter_store::NewNode;
    let s = store();
    let node = |key: &str, url: Option<&str>| NewNode {
        id: "node-a".to_owned(),
        public_key: key.repeat(32),
        url: url.map(str::to_owned),
    };
    let system = Actor::system("serve");
    let n = s
        .register_node(&node("ab", Some("http://10.0.0.1:8180")), &system, T0)
        .unwrap();
    assert_eq!(n.checkpoint, None);
    // Up again, elsewhere: the URL follows, audited; the same place is not audited again.
    s.register_node(&node("ab", Some("http://10.0.0.2:8180")), &system, T0 + 1)
        .unwrap();
    s.register_node(&node("ab", Some("http://10.0.0.2:8180")), &system, T0 + 2)
        .unwrap();
    assert_eq!(actions(&*s), ["node.register", "node.update"]);
    // Another key under the same id is refused, naming the key it has.
    let err = s
        .register_node(&node("cd", None), &system, T0 + 3)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err}");
    assert!(err.to_string().contains("abababab"), "{err}");
    // Checkpoints only move forward.
    s.publish_node_checkpoint("node-a", 10, "{\"size\":10}", T0 + 4)
        .unwrap();
    s.publish_node_checkpoint("node-a", 5, "{\"size\":5}", T0 + 5)
        .unwrap();
    let n = s.node("node-a").unwrap().unwrap();
    assert_eq!(
        (n.checkpoint.as_deref(), n.checkpoint_size),
        (Some("{\"size\":10}"), Some(10))
    );
    assert_eq!(n.url.as_deref(), Some("http://10.0.0.2:8180"));
    assert!(matches!(
        s.publish_node_checkpoint("node-b", 1, "{}", T0),
        Err(StoreError::NotFound { .. })
    ));
    // Inputs are checked.
    let mut bad = node("ab", Some("ftp://x"));
    assert!(
        s.register_node(&bad, &system, T0)
            .unwrap_err()
            .to_string()
            .contains("node URL")
    );
    bad.public_key = "XY".repeat(32);
    assert!(
        s.register_node(&bad, &system, T0)
            .unwrap_err()
            .to_string()
            .contains("public key")
    );
    bad.id = String::new();
    assert!(
        s.register_node(&bad, &system, T0)
            .unwrap_err()
            .to_string()
            .contains("node id")
    );
    assert_eq!(s.nodes().unwrap().len(), 1);
    s.verify_audit().unwrap();
}

// ------------------------------------------------------------- session labels

#[test]
fn session_labels_are_shared_renewed_and_taken_back() {
    let s = store();
    let labels = |v: &[&str]| v.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    s.add_session_labels("bot", "s1", &labels(&["untrusted_input"]), "d1", T0)
        .unwrap();
    s.add_session_labels(
        "bot",
        "s1",
        &labels(&["private_data", "untrusted_input"]),
        "d2",
        T0 + SECOND,
    )
    .unwrap();
    assert_eq!(
        s.session_labels("bot", "s1", T0 - 1).unwrap(),
        ["private_data", "untrusted_input"]
    );
    // Another session, another agent: nothing.
    assert!(s.session_labels("bot", "s2", 0).unwrap().is_empty());
    assert!(s.session_labels("other", "s1", 0).unwrap().is_empty());
    // Adding renews every label of the session: idle since T0 + 1 s.
    assert_eq!(s.session_labels("bot", "s1", T0 + SECOND).unwrap().len(), 0);
    assert_eq!(
        s.session_labels("bot", "s1", T0 + SECOND - 1)
            .unwrap()
            .len(),
        2
    );
    // A decision that did not stand takes back only what it added first.
    assert_eq!(s.forget_session_effects("d2").unwrap(), 1);
    assert_eq!(
        s.session_labels("bot", "s1", 0).unwrap(),
        ["untrusted_input"]
    );
    // Not administrative changes; bad input is named.
    assert!(actions(&*s).is_empty());
    assert!(
        s.add_session_labels("bot", "", &labels(&["x"]), "d3", T0)
            .unwrap_err()
            .to_string()
            .contains("session id")
    );
}

#[test]
fn session_calls_are_counted_by_window_and_taken_back() {
    let s = store();
    let since = |now: i64| now - 86_400 * SECOND;
    let counts = |key: &str, now: i64| s.session_calls("bot", "s1", key, since(now), now).unwrap();
    for (i, d) in ["d1", "d2", "d3"].iter().enumerate() {
        let at = T0 + i64::try_from(i).unwrap() * 30 * SECOND;
        s.add_session_call("bot", "s1", "k1", d, since(at), at)
            .unwrap();
    }
    s.add_session_call("bot", "s1", "k2", "d4", since(T0), T0)
        .unwrap();
    // At T0 + 70 s: four calls in the session; of k1, two in the last minute, three in the hour.
    let c = counts("k1", T0 + 70 * SECOND);
    assert_eq!((c.calls, c.last_minute, c.last_hour), (4, 2, 3));
    assert_eq!(counts("k2", T0 + 70 * SECOND).last_hour, 1);
    // Another session counts nothing.
    let other = s
        .session_calls("bot", "s2", "k1", 0, T0 + 70 * SECOND)
        .unwrap();
    assert_eq!((other.calls, other.last_hour), (0, 0));
    // Past the hour the window is empty; the session's total stays while it is active.
    let c = counts("k1", T0 + 2 * 3_600 * SECOND);
    assert_eq!((c.calls, c.last_minute, c.last_hour), (4, 0, 0));
    // A session idle past `since` starts over.
    assert_eq!(
        s.session_calls("bot", "s1", "k1", T0 + 61 * SECOND, T0 + 70 * SECOND)
            .unwrap()
            .calls,
        0
    );
    // A decision that did not stand takes its call back.
    assert_eq!(s.forget_session_effects("d3").unwrap(), 1);
    let c = counts("k1", T0 + 70 * SECOND);
    assert_eq!((c.calls, c.last_minute, c.last_hour), (3, 1, 2));
    assert!(actions(&*s).is_empty());
}
