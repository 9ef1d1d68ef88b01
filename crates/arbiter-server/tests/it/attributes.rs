//! Who may assert what (issue 14, "forged attributes"): an agent's attributes come only from
//! the registry or the policy entities; an agent asking for itself cannot change the
//! attributes of the resource it asks about; search authenticates as evaluation does; the
//! administrators' details of a decision go to PEPs only.

use arbiter_pdp::IdentitySettings;
use arbiter_server::ServerConfig;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::identity::Fixture;
use crate::support::{example, policy_dir, post, state_for};

/// Agents with the role `admin` may read; nobody else may. No schema.
const ROLE_POLICIES: &str = r#"
@id("admins-read")
permit (principal is Agent, action == Action::"read", resource)
when { principal has roles && principal.roles.contains("admin") };

@id("tenant-acme-reads")
permit (principal is Agent, action == Action::"read", resource)
when { principal has tenant && principal.tenant == "acme" };
"#;

/// An agent declared only in the policy entities, with no roles.
const ROLE_ENTITIES: &str = r#"[
  {"uid": {"type": "Agent", "id": "declared-bot"}, "attrs": {"status": "active"}, "parents": []}
]"#;

fn read_doc(subject: Value) -> Value {
    json!({
        "subject": subject,
        "action": {"name": "read"},
        "resource": {"type": "Doc", "id": "d1"},
    })
}

fn allowed(r: &crate::support::Reply) -> bool {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["decision"].as_bool().unwrap()
}

/// Was: a PEP token or an anonymous caller asserting `roles` on a registered agent that has
/// none got them merged in (only the registry's own keys were overwritten), and
/// `principal.roles` allowed.
#[tokio::test]
async fn asserted_properties_of_a_registered_agent_never_reach_the_policy() {
    let dir = policy_dir(&[("p.cedar", ROLE_POLICIES), ("entities.json", ROLE_ENTITIES)]);
    let f = Fixture::new(dir.path());
    let own_key = f.agent_with_key("plain-bot", json!({})).await;
    let pep = f.pep_token("gateway").await;
    let forged = [
        json!({"roles": ["admin"]}),
        json!({"tenant": "acme"}),
        json!({"roles": ["admin"], "status": "active"}),
    ];
    for props in &forged {
        let body = read_doc(json!({"type": "Agent", "id": "plain-bot", "properties": props}));
        for (who, token) in [
            ("anonymous", None),
            ("pep", Some(pep.as_str())),
            ("the agent itself", Some(own_key.as_str())),
        ] {
            let (allow, user, admin) = f.decision(&f.evaluate(token, &body).await);
            assert!(!allow, "{who} asserting {props}");
            assert_eq!(user, arbiter_pdp::identity::USER_REASON_AGENT_ATTRIBUTES);
            let first = props.as_object().unwrap().keys().next().unwrap();
            assert!(admin.contains(&format!("`{first}`")), "{who}: {admin}");
        }
        // Batch items too.
        let batch = json!({"evaluations": [read_doc(
            json!({"type": "Agent", "id": "plain-bot", "properties": props}),
        )]});
        let got = f
            .send("POST", "/access/v1/evaluations", Some(&pep), Some(&batch))
            .await
            .json();
        assert_eq!(got["evaluations"][0]["decision"], false, "{got}");
    }
    // An agent declared only in the policy entities: the same.
    let body = read_doc(
        json!({"type": "Agent", "id": "declared-bot", "properties": {"roles": ["admin"]}}),
    );
    assert!(!allowed(&f.evaluate(None, &body).await));
    assert!(!allowed(&f.evaluate(Some(&pep), &body).await));
    // Without asserted properties, the registry decides: plain-bot has no roles.
    let plain = read_doc(json!({"type": "Agent", "id": "plain-bot"}));
    assert!(!allowed(&f.evaluate(Some(&pep), &plain).await));
    // And a registered admin is allowed, by its registry attributes.
    f.agent_with_key("admin-bot", json!({"roles": ["admin"]}))
        .await;
    let admin = read_doc(json!({"type": "Agent", "id": "admin-bot"}));
    assert!(allowed(&f.evaluate(Some(&pep), &admin).await));
    assert!(allowed(&f.evaluate(None, &admin).await));
}

/// Was: an asserted `status: "active"` un-suspended an agent declared suspended in
/// `entities.json` (the request's properties won over the stored attributes).
#[tokio::test]
async fn asserted_status_does_not_unsuspend_an_agent_declared_in_the_entities() {
    let body = json!({
        "subject": {"type": "Agent", "id": "old-bot", "properties": {"status": "active"}},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/read_ticket"},
    });
    // With an identity store: anonymous and PEP callers.
    let f = Fixture::new(&example("quickstart"));
    let pep = f.pep_token("gateway").await;
    assert!(!allowed(&f.evaluate(None, &body).await));
    assert!(!allowed(&f.evaluate(Some(&pep), &body).await));
    // Without one (no registry at all).
    let state = state_for(&example("quickstart"));
    let got = post(&state, "/access/v1/evaluation", &body).await;
    assert!(!allowed(&got));
    // old-bot without assertions is denied as suspended; support-bot is allowed.
    let mut plain = body.clone();
    plain["subject"] = json!({"type": "Agent", "id": "old-bot"});
    assert!(!allowed(
        &post(&state, "/access/v1/evaluation", &plain).await
    ));
    plain["subject"] = json!({"type": "Agent", "id": "support-bot"});
    assert!(allowed(
        &post(&state, "/access/v1/evaluation", &plain).await
    ));
}

/// Was: with its own key, an agent asked about `Tool::"helpdesk/delete_ticket"` with
/// `properties: {name: "read_ticket"}`, the request's properties won over the stored ones, and
/// the forbid keyed on `resource.name` no longer applied.
#[tokio::test]
async fn an_agent_cannot_rewrite_the_resource_it_asks_about() {
    let f = Fixture::new(&example("quickstart"));
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let forged = json!({
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/delete_ticket",
                     "properties": {"server": "helpdesk", "name": "read_ticket"}},
    });
    let (allow, _, admin) = f.decision(&f.evaluate(Some(&key), &forged).await);
    assert!(!allow, "{admin}");
    assert!(admin.contains("no-delete-or-export"), "{admin}");
    // What it asserted (beyond what agrees with the stored entity) is kept, under
    // `context.asserted`, in the record.
    let last = f.records().pop().unwrap();
    assert_eq!(
        last.context["asserted"],
        json!({"name": "read_ticket"}),
        "{}",
        last.context
    );
    // The same answered over a batch.
    let batch = json!({"evaluations": [forged.clone()]});
    let got = f
        .send("POST", "/access/v1/evaluations", Some(&key), Some(&batch))
        .await
        .json();
    assert_eq!(got["evaluations"][0]["decision"], false, "{got}");
    // An agent may not set `context.asserted` itself.
    let mut preset = json!({
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/read_ticket"},
        "context": {"asserted": {"name": "read_ticket"}},
    });
    let (allow, _, admin) = f.decision(&f.evaluate(Some(&key), &preset).await);
    assert!(!allow);
    assert!(admin.contains("`context.asserted`"), "{admin}");
    // Its honest requests still work, with or without properties.
    preset["context"] = json!({});
    assert!(allowed(&f.evaluate(Some(&key), &preset).await));
    preset["resource"]["properties"] = json!({"server": "helpdesk", "name": "read_ticket"});
    assert!(allowed(&f.evaluate(Some(&key), &preset).await));
    // A PEP token's holder may assert the request's entity attributes (its gateway knows
    // them): that is unchanged.
    let pep = f.pep_token("gateway").await;
    let mut pep_req = forged.clone();
    pep_req["subject"] = json!({"type": "Agent", "id": "support-bot"});
    assert!(allowed(&f.evaluate(Some(&pep), &pep_req).await));
}

/// Resources not declared in the entities: an agent's assertions do not count either; the
/// attributes are derived from the id.
#[tokio::test]
async fn an_agent_cannot_rename_a_resource_the_entities_do_not_declare() {
    let dir = policy_dir(&[(
        "p.cedar",
        r#"
        @id("tools") permit (principal is Agent, action == Action::"call_tool", resource is Tool);
        @id("no-drop") forbid (principal, action, resource is Tool) when { resource.name == "drop" };
        @id("no-db") forbid (principal, action, resource is Tool) when { resource.server == "prod-db" };
        @id("no-rm") forbid (principal, action == Action::"exec", resource is Command)
            when { resource.program == "rm" };
        @id("exec") permit (principal is Agent, action == Action::"exec", resource is Command);
        @id("flagged") forbid (principal, action, resource)
            when { context has asserted && context.asserted has flag && context.asserted.flag };
        "#,
    )]);
    let f = Fixture::new(dir.path());
    let key = f.agent_with_key("bot", json!({})).await;
    let ask = |kind: &str, id: &str, action: &str, props: Value| json!({"action": {"name": action}, "resource": {"type": kind, "id": id, "properties": props}});
    for (kind, id, action, props) in [
        (
            "Tool",
            "db/drop",
            "call_tool",
            json!({"server": "db", "name": "select"}),
        ),
        (
            "Tool",
            "prod-db/select",
            "call_tool",
            json!({"server": "dev-db", "name": "select"}),
        ),
        ("Command", "rm", "exec", json!({"program": "ls"})),
    ] {
        let body = ask(kind, id, action, props.clone());
        assert!(
            !allowed(&f.evaluate(Some(&key), &body).await),
            "{kind} {id} {props}"
        );
    }
    // Honest ones are allowed; a policy may read what the agent asserted, by its name.
    assert!(allowed(
        &f.evaluate(
            Some(&key),
            &ask("Tool", "db/select", "call_tool", json!({}))
        )
        .await
    ));
    assert!(!allowed(
        &f.evaluate(
            Some(&key),
            &ask("Tool", "db/select", "call_tool", json!({"flag": true}))
        )
        .await
    ));
}

async fn search(
    f: &Fixture,
    kind: &str,
    token: Option<&str>,
    body: &Value,
) -> crate::support::Reply {
    f.send(
        "POST",
        &format!("/access/v1/search/{kind}"),
        token,
        Some(body),
    )
    .await
}

fn ids(r: &crate::support::Reply) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().or(v["name"].as_str()).unwrap().to_owned())
        .collect()
}

/// Was: under `--require-auth` the search endpoints answered 200 without a credential, and an
/// agent key could search another agent's permissions.
#[tokio::test]
async fn search_authenticates_exactly_as_evaluation_does() {
    let config = ServerConfig {
        require_authentication: true,
        ..ServerConfig::default()
    };
    let f = Fixture::with(&example("quickstart"), config, IdentitySettings::default());
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let other = f
        .agent_with_key("other-bot", json!({"roles": ["support"]}))
        .await;
    let pep = f.pep_token("gateway").await;
    let subject_search = json!({
        "subject": {"type": "Agent"},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/read_ticket"},
    });
    let resource_search = json!({
        "subject": {"type": "Agent", "id": "support-bot"},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool"},
    });
    let action_search = json!({
        "subject": {"type": "Agent", "id": "support-bot"},
        "resource": {"type": "Tool", "id": "helpdesk/read_ticket"},
    });
    let searches = [
        ("subject", &subject_search),
        ("resource", &resource_search),
        ("action", &action_search),
    ];
    // No credential: 401, as for an evaluation.
    for (kind, body) in searches {
        let got = search(&f, kind, None, body).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{kind}");
        assert_eq!(got.json()["error"]["code"], "unauthenticated");
    }
    // A refused credential (unknown, revoked, an admin token): 401.
    let bogus = "arb_AAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB000000";
    for token in [bogus, f.admin.as_str()] {
        for (kind, body) in searches {
            let got = search(&f, kind, Some(token), body).await;
            assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{kind} {token}");
        }
    }
    // An agent searches only for itself.
    assert_eq!(
        ids(&search(&f, "resource", Some(&key), &resource_search).await),
        ["helpdesk/read_ticket"]
    );
    assert_eq!(
        ids(&search(&f, "action", Some(&key), &action_search).await),
        ["call_tool"]
    );
    let mut implicit = resource_search.clone();
    implicit.as_object_mut().unwrap().remove("subject");
    assert_eq!(
        ids(&search(&f, "resource", Some(&key), &implicit).await),
        ["helpdesk/read_ticket"]
    );
    for (kind, body) in [("resource", &resource_search), ("action", &action_search)] {
        let got = search(&f, kind, Some(&other), body).await;
        assert_eq!(
            got.status,
            StatusCode::FORBIDDEN,
            "{kind}: another agent's permissions"
        );
    }
    let got = search(&f, "subject", Some(&key), &subject_search).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    // An agent cannot widen its search by asserting attributes of the resource.
    let forged = json!({
        "subject": {"type": "Agent", "id": "support-bot"},
        "resource": {"type": "Tool", "id": "helpdesk/delete_ticket",
                     "properties": {"server": "helpdesk", "name": "read_ticket"}},
    });
    assert!(ids(&search(&f, "action", Some(&key), &forged).await).is_empty());
    // A PEP token searches for anyone, as it evaluates for anyone.
    assert_eq!(
        ids(&search(&f, "subject", Some(&pep), &subject_search).await),
        ["support-bot"]
    );
    assert_eq!(
        ids(&search(&f, "resource", Some(&pep), &resource_search).await),
        ["helpdesk/read_ticket"]
    );
    // But not with asserted attributes of an agent.
    let mut asserted = resource_search.clone();
    asserted["subject"]["properties"] = json!({"roles": ["support"]});
    let got = search(&f, "resource", Some(&pep), &asserted).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`roles`")
    );
    let mut asserted = subject_search.clone();
    asserted["subject"]["properties"] = json!({"status": "active"});
    let got = search(&f, "subject", Some(&pep), &asserted).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
}

/// A search binds an `Agent` subject to the registry as an evaluation does: its registry
/// attributes count, a suspended agent finds nothing.
#[tokio::test]
async fn search_uses_the_registry_attributes_of_an_agent() {
    let f = Fixture::new(&example("quickstart"));
    f.agent_with_key("reg-bot", json!({"roles": ["support"]}))
        .await;
    let body = json!({
        "subject": {"type": "Agent", "id": "reg-bot"},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool"},
    });
    assert_eq!(
        ids(&search(&f, "resource", None, &body).await),
        ["helpdesk/read_ticket"]
    );
    f.admin("POST", "/v1/agents/reg-bot/suspend", None).await;
    let got = search(&f, "resource", None, &body).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
}

fn has_admin_details(v: &Value) -> bool {
    let c = &v["context"];
    c.get("reason_admin").is_some() || c.get("determining_policies").is_some()
}

/// Was: `reason_admin` (policy ids, registry and credential details) went to every caller.
#[tokio::test]
async fn admin_reasons_go_only_to_pep_callers_unless_configured() {
    let f = Fixture::with(
        &example("quickstart"),
        ServerConfig::default(),
        IdentitySettings::default(),
    );
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let pep = f.pep_token("gateway").await;
    let delete = json!({
        "subject": {"type": "Agent", "id": "support-bot"},
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "helpdesk/delete_ticket"},
    });
    for (who, token) in [
        ("agent", Some(key.as_str())),
        ("anonymous", None),
        (
            "refused",
            Some("arb_AAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB000000"),
        ),
    ] {
        let got = f.evaluate(token, &delete).await.json();
        assert_eq!(got["decision"], false);
        assert!(!has_admin_details(&got), "{who}: {got}");
        assert!(got["context"].get("errors").is_none(), "{who}: {got}");
        assert!(got["context"]["reason_user"]["en"].is_string(), "{who}");
        assert!(got["context"]["decision_id"].is_string(), "{who}");
        let batch = json!({"evaluations": [delete.clone()]});
        let got = f
            .send("POST", "/access/v1/evaluations", token, Some(&batch))
            .await
            .json();
        assert!(!has_admin_details(&got["evaluations"][0]), "{who}: {got}");
    }
    let got = f.evaluate(Some(&pep), &delete).await.json();
    assert_eq!(
        got["context"]["determining_policies"],
        json!(["no-delete-or-export"])
    );
    assert!(got["context"]["reason_admin"]["en"].is_string());
    // The decision log keeps every detail whoever asked.
    assert!(f.records().iter().all(|r| !r.reason_admin.is_empty()));

    let config = ServerConfig {
        admin_reasons_for_all_callers: true,
        ..ServerConfig::default()
    };
    let f = Fixture::with(&example("quickstart"), config, IdentitySettings::default());
    let key = f
        .agent_with_key("support-bot", json!({"roles": ["support"]}))
        .await;
    let got = f.evaluate(Some(&key), &delete).await.json();
    assert!(has_admin_details(&got), "{got}");
}
