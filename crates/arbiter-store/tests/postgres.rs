#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The identity store on a real PostgreSQL (`ARBITER_TEST_POSTGRES_URL`): the store's contract
//! (`contract`), and what only a shared database has — the change feed between handles,
//! failing closed when the database is lost, migrations racing, foreign databases refused.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_store::{PgOptions, PgStore, Store, StoreError};
use arbiter_testkit::{Relay, TestDb};

mod contract;

use contract::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Options for tests: a short reconcile period and grace, so that losing the database shows
/// quickly.
fn options() -> PgOptions {
    PgOptions {
        reconcile: Duration::from_millis(100),
        grace: Duration::from_millis(600),
        ..PgOptions::default()
    }
}

/// A fresh database of its own (dropped at the end), and a store on it.
struct Fixture {
    store: PgStore,
    url: String,
    db: TestDb,
}

impl std::ops::Deref for Fixture {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

impl Fixture {
    fn other(&self) -> Box<dyn Store> {
        Box::new(PgStore::open(&self.url, &options()).unwrap())
    }

    fn opener(&self) -> impl Fn() -> Box<dyn Store> + Send + 'static {
        let url = self.url.clone();
        move || Box::new(PgStore::open(&url, &options()).unwrap()) as Box<dyn Store>
    }
}

fn fresh_db() -> TestDb {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    TestDb::create(&format!("arbiter_store_t{n}"))
}

fn store() -> Fixture {
    let db = fresh_db();
    let url = db.url();
    Fixture {
        store: PgStore::open(&url, &options()).unwrap(),
        url,
        db,
    }
}

/// Waits until `f` holds, up to `limit`; returns how long it took.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn a_change_on_one_handle_reaches_the_others_change_feed_at_once() {
    let fx = store();
    let node_b = fx.other();
    let node_c = fx.other();
    let mut took = Vec::new();
    for i in 0..20 {
        let before = node_b.generation_now().unwrap().unwrap();
        fx.register_agent(&new_agent(&format!("bot-{i}")), &admin(), T0)
            .unwrap();
        for node in [&node_b, &node_c] {
            let t = until(Duration::from_secs(1), || {
                node.generation_now().unwrap() != Some(before)
            })
            .unwrap_or_else(|| panic!("change {i} not seen within 1 s"));
            took.push(t);
        }
        // The feed settles on what the database says (one transaction may notify twice:
        // the agent and its audit event).
        let db = node_b.generation().unwrap();
        until(Duration::from_secs(1), || {
            node_b.generation_now().unwrap() == Some(db)
        })
        .expect("the feed settles on the database's counter");
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100 - 1];
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // Bookkeeping moves nothing a cache holds.
    let g = node_b.generation().unwrap();
    fx.touch_agents(&[("bot-1".to_owned(), T0 + 5)]).unwrap();
    assert_eq!(node_b.generation().unwrap(), g);
}

#[test]
fn a_change_made_by_another_program_is_seen_too() {
    let fx = store();
    fx.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    let before = fx.generation_now().unwrap();
    fx.db
        .psql("UPDATE agents SET status = 'suspended' WHERE id = 'bot'");
    until(Duration::from_secs(1), || {
        fx.generation_now().unwrap() != before
    })
    .expect("a change by psql is seen within 1 s");
}

#[test]
fn a_node_that_loses_its_database_fails_closed_after_its_grace_and_recovers() {
    let db = fresh_db();
    let url = db.url();
    let relay = Relay::to_postgres(&url);
    let via_relay = relay.url();
    let node = PgStore::open(&via_relay, &options()).unwrap();
    node.register_agent(&new_agent("bot"), &admin(), T0)
        .unwrap();
    assert!(node.generation_now().unwrap().is_some());
    assert!(node.health().up);

    relay.cut();
    // Within the grace it still answers from what it knows ...
    assert!(node.generation_now().is_ok());
    // ... then it says it cannot confirm, and every check fails closed.
    until(Duration::from_secs(3), || node.generation_now().is_err())
        .expect("generation_now fails once the grace has run out");
    let err = node.generation_now().unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("grace"), "{err}");
    assert!(node.generation().is_err(), "a blocking read fails too");
    assert!(node.agent("bot").is_err());
    let health = node.health();
    assert!(!health.up);
    assert_eq!(health.backend, "postgres");
    assert!(health.problem.is_some());
    assert!(
        !err.to_string().contains("password"),
        "no secrets in messages: {err}"
    );

    relay.restore();
    until(Duration::from_secs(5), || node.generation_now().is_ok()).expect("the feed reconnects");
    assert!(node.health().up);
    // The connections for reads and writes reconnect too.
    until(Duration::from_secs(5), || node.agent("bot").is_ok()).expect("reads work again");
    node.register_agent(&new_agent("bot-2"), &admin(), T0)
        .unwrap();
    assert_eq!(node.verify_audit().unwrap(), 2);
}

#[test]
fn nodes_starting_together_migrate_once() {
    let db = fresh_db();
    let url = db.url();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || PgStore::open(&url, &options()).map(drop))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(
        db.psql("SELECT version FROM arbiter_store_schema").trim(),
        arbiter_store::pg_schema::current_version().to_string()
    );
}

#[test]
fn a_database_of_another_application_or_a_newer_arbiter_is_refused() {
    let db = fresh_db();
    db.psql("CREATE TABLE invoices (id int)");
    let err = PgStore::open(&db.url(), &options()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(
        err.to_string().contains("not an Arbiter identity store"),
        "{err}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM invoices").trim(), "0");

    let fx = store();
    fx.db.psql("UPDATE arbiter_store_schema SET version = 99");
    let err = PgStore::open(&fx.url, &options()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_bad_url_or_an_unreachable_server_is_a_clear_error() {
    let err = PgStore::open("postgres://u@127.0.0.1:1/x?sslmode=bogus", &options()).unwrap_err();
    assert!(err.to_string().contains("store URL"), "{err}");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = PgStore::open(
        &format!("postgres://u:hunter2@127.0.0.1:{port}/x"),
        &options(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}/x")), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
}

#[test]
fn the_audit_trail_cannot_be_edited_in_place() {
    let fx = store();
    fx.register_agent(&new_agent("bot"), &admin(), T0).unwrap();
    for sql in [
        "UPDATE audit_events SET actor_id = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &fx.url,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("append-only"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(fx.verify_audit().unwrap(), 1);
}
