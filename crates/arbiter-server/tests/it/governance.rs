//! Governed policy versions over the admin API: the same rules as the CLI, with the admin
//! token's holder as author and approver.

use arbiter_pdp::identity::now_us;
use arbiter_store::Actor;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::identity::Fixture;
use crate::support::example;

fn token(f: &Fixture, name: &str, role: &str) -> String {
    arbiter_pdp::admin::create_token(
        f.identity.store().as_ref(),
        &arbiter_pdp::admin::TokenSpec::Admin { role: role.into() },
        name,
        None,
        &Actor::system("tests"),
        now_us(),
    )
    .unwrap()
    .secret
    .expose()
    .to_owned()
}

fn files(policy: &str, expect: &str) -> Value {
    json!([
        {"path": "docs.cedar", "text": policy},
        {"path": "tests/docs.json", "text": json!([{
            "name": "read",
            "request": {"subject": {"type": "Agent", "id": "bot"}, "action": {"name": "read"},
                        "resource": {"type": "Doc", "id": "d"}},
            "expect": expect,
        }]).to_string()},
    ])
}

const READ: &str = "@id(\"read\")\n@owner(\"team-docs\")\npermit (principal, action == Action::\"read\", resource);\n";

#[tokio::test]
async fn policy_versions_are_governed_over_the_admin_api() {
    let f = Fixture::new(&example("quickstart"));
    let second = token(&f, "second", "administrator");
    let auditor = token(&f, "reader", "auditor");
    let f = &f;
    let propose = |body: Value| async move {
        f.send("POST", "/v1/policy/versions", Some(&f.admin), Some(&body))
            .await
    };

    // Bad proposals are refused, naming what is wrong.
    for (body, needle) in [
        (json!({"files": files(READ, "allow")}), "`message`"),
        (json!({"message": "m", "files": "x"}), "`files`"),
        (
            json!({"message": "m", "files": files(READ, "allow"), "extra": 1}),
            "`extra` is not a field",
        ),
        (
            json!({"message": "m", "files": [{"path": "notes.txt", "text": "x"}]}),
            "`notes.txt` is not part of a policy version",
        ),
        (
            json!({"message": "m", "files": [{"path": "a.cedar", "text": "@id(\"x\")\npermit (principal, action, resource);"}]}),
            "add `@owner",
        ),
        (
            json!({"message": "m", "files": [{"path": "../a.cedar", "text": READ}]}),
            "not a relative path",
        ),
    ] {
        let r = propose(body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{needle}: {}", r.json());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{needle}: {}",
            r.json()
        );
    }
    // An auditor may read, not propose.
    let r = f
        .send(
            "POST",
            "/v1/policy/versions",
            Some(&auditor),
            Some(&json!({"message": "m", "files": files(READ, "allow")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = propose(json!({"message": "read docs", "files": files(READ, "allow")})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let v1 = r.json()["version"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["author"], "tests");
    assert_eq!(r.json()["test_failures"], json!([]));
    let again = propose(json!({"message": "same", "files": files(READ, "allow")})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // Not the author, not an auditor; the second administrator approves and activates.
    let path = |v: &str, what: &str| format!("/v1/policy/versions/{v}/{what}");
    let r = f
        .send("POST", &path(&v1, "approve"), Some(&f.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not approve it")
    );
    let r = f
        .send("POST", &path(&v1, "approve"), Some(&auditor), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .send("POST", &path(&v1, "activate"), Some(&second), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json());
    let r = f
        .send("POST", &path(&v1[7..20], "approve"), Some(&second), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["standing"], "approved");
    assert_eq!(r.json()["approvals"][0]["approver"], "second");
    let r = f
        .send("POST", &path(&v1, "activate"), Some(&second), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["kind"], "activate");

    // A failing version: stored, with its failures; never activated; rejected.
    // (Tests are not part of the version: the same policies with other tests are the same
    // version, so this one changes the owner.)
    let other_owner = READ.replace("team-docs", "team-other");
    let r = propose(json!({"message": "oops", "files": files(&other_owner, "deny")})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let failing = r.json()["version"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["standing"], "tests-failed");
    assert!(
        r.json()["test_failures"][0]
            .as_str()
            .unwrap()
            .contains("expected deny")
    );
    f.send("POST", &path(&failing, "approve"), Some(&second), None)
        .await;
    let r = f
        .send("POST", &path(&failing, "activate"), Some(&second), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .send(
            "POST",
            &path(&failing, "reject"),
            Some(&second),
            Some(&json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .send(
            "POST",
            &path(&failing, "reject"),
            Some(&second),
            Some(&json!({"reason": "tests fail"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["standing"], "rejected");

    // Reading: list, show with the files' text, diff; an auditor may.
    let list = f
        .send("GET", "/v1/policy/versions", Some(&auditor), None)
        .await
        .json();
    assert_eq!(list["active"], v1.as_str());
    assert_eq!(list["versions"].as_array().unwrap().len(), 2);
    let shown = f
        .send(
            "GET",
            &format!("/v1/policy/versions/{v1}"),
            Some(&auditor),
            None,
        )
        .await
        .json();
    assert_eq!(shown["files"][0]["text"], READ);
    assert_eq!(shown["owners"]["read"], "team-docs");
    assert_eq!(shown["activations"][0]["by"], "second");
    let d = f
        .send(
            "GET",
            &format!("/v1/policy/diff?from={v1}&to={failing}"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.json()["changed"]["read"]["new"], other_owner.trim());
    assert_eq!(d.json()["added"], json!({}));
    let d = f
        .send("GET", "/v1/policy/diff?from=x", Some(&auditor), None)
        .await;
    assert_eq!(d.status, StatusCode::BAD_REQUEST);
    let missing = f
        .send(
            "GET",
            "/v1/policy/versions/abcdef0123",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let r = f.send("GET", "/v1/policy/versions", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Shadow: start (an administrator), read (an auditor), stop; a rejected version cannot.
    let r = f
        .send(
            "PUT",
            "/v1/policy/shadow",
            Some(&auditor),
            Some(&json!({"version": v1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .send(
            "PUT",
            "/v1/policy/shadow",
            Some(&f.admin),
            Some(&json!({"version": failing})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json());
    let r = f
        .send(
            "PUT",
            "/v1/policy/shadow",
            Some(&f.admin),
            Some(&json!({"version": &v1[7..20]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    let r = f
        .send("GET", "/v1/policy/shadow", Some(&auditor), None)
        .await;
    assert_eq!(r.json()["version"], v1.as_str());
    let r = f
        .send("DELETE", "/v1/policy/shadow", Some(&f.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .send("DELETE", "/v1/policy/shadow", Some(&f.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .send("GET", "/v1/policy/shadow", Some(&auditor), None)
        .await;
    assert_eq!(r.json()["version"], Value::Null);

    // Settings and rollback.
    let r = f
        .send(
            "POST",
            "/v1/policy/required-approvals",
            Some(&f.admin),
            Some(&json!({"count": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .send(
            "POST",
            "/v1/policy/required-approvals",
            Some(&f.admin),
            Some(&json!({"count": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .send("POST", "/v1/policy/rollback", Some(&f.admin), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "only one version was ever active"
    );
    f.identity.store().verify_audit().unwrap();
}

const DOC_SCHEMA: &str = "entity Agent;\nentity Doc = { public: Bool };\naction read appliesTo { principal: Agent, resource: Doc };\n";

#[tokio::test]
async fn compare_and_replay_over_the_admin_api() {
    let f = Fixture::new(&example("quickstart"));
    let auditor = token(&f, "reader", "auditor");
    let with_schema = |policy: &str| {
        json!({"message": "m", "files": [
            {"path": "schema.cedarschema", "text": DOC_SCHEMA},
            {"path": "docs.cedar", "text": policy},
        ]})
    };
    let mut versions = Vec::new();
    for policy in [
        "@id(\"all\")\n@owner(\"docs\")\npermit (principal, action, resource);\n",
        "@id(\"public\")\n@owner(\"docs\")\npermit (principal, action, resource) when { resource.public };\n",
    ] {
        let r = f
            .send(
                "POST",
                "/v1/policy/versions",
                Some(&f.admin),
                Some(&with_schema(policy)),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        versions.push(r.json()["version"].as_str().unwrap().to_owned());
    }
    let (all, public) = (&versions[0], &versions[1]);
    let compare = |q: String, token: Option<String>| {
        let f = &f;
        async move {
            f.send(
                "GET",
                &format!("/v1/policy/compare?{q}"),
                token.as_deref(),
                None,
            )
            .await
        }
    };
    let r = compare(format!("from={all}&to={public}"), Some(auditor.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["comparison"]["holds"], true);
    let r = compare(format!("from={public}&to={all}"), Some(auditor.clone())).await;
    assert_eq!(r.status, StatusCode::OK);
    let c = &r.json()["comparison"]["counterexample"];
    assert_eq!(c["direction"], "allowed_by_new", "{c}");
    assert_eq!(
        (c["old"].as_str(), c["new"].as_str()),
        (Some("deny"), Some("allow"))
    );
    let r = compare(
        format!("from={all}&to={public}&claim=equivalent"),
        Some(auditor.clone()),
    )
    .await;
    assert_eq!(r.json()["comparison"]["holds"], false);
    for q in [
        format!("from={all}&to={public}&claim=maybe"),
        format!("from={all}"),
        format!("from={all}&to={public}&extra=1"),
    ] {
        assert_eq!(
            compare(q.clone(), Some(auditor.clone())).await.status,
            StatusCode::BAD_REQUEST,
            "{q}"
        );
    }
    assert_eq!(
        compare(format!("from={all}&to={public}"), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Replay this node's recorded decisions against a stored version.
    let request: Value = serde_json::from_str(
        &std::fs::read_to_string(example("quickstart").join("requests/read-ticket.json")).unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        let r = f
            .send("POST", "/access/v1/evaluation", None, Some(&request))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = f
        .send(
            "GET",
            &format!("/v1/policy/replay?candidate={all}"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["candidate"], all.as_str());
    assert!(
        r.json()["considered"].as_u64().unwrap() >= 3,
        "{}",
        r.json()
    );
    let r = f
        .send(
            "GET",
            "/v1/policy/replay?candidate=abcdef0123",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .send(
            "GET",
            &format!("/v1/policy/replay?candidate={all}&since=yesterday"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .send(
            "GET",
            &format!("/v1/policy/replay?candidate={all}&until=1"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(r.json()["considered"], 0);
}
