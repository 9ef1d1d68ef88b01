//! `arbiter sql proxy` end to end: the `arbiter` binary in front of a real PostgreSQL
//! (`ARBITER_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! driven with psql (simple query protocol), a raw extended-protocol client and pgbench.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arbiter_sql::wire::{self, Message};
use arbiter_testkit::{Arbiter, PATIENCE, Running, TestDb, decision_ids, free_port, wait_until};
use serde_json::Value;

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn arbiter() -> Command {
    let mut c = ARBITER.command();
    c.env("ARBITER_LOG", "warn");
    c
}

/// A fresh database with a table `t` of three rows and a sequence `s`, dropped at the end.
fn test_db(tag: &str) -> TestDb {
    let db = TestDb::create(&format!("arbiter_sql_{tag}"));
    db.psql(
        "CREATE TABLE t (id int PRIMARY KEY, name text, secret text); \
         INSERT INTO t VALUES (1, 'a', 's1'), (2, 'b', 's2'), (3, 'c', 's3'); \
         CREATE SEQUENCE s",
    );
    db
}

/// `arbiter sql proxy`, killed when dropped.
struct Proxy {
    process: Running,
    port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(db: &TestDb, policies: &str, agents: &[&str]) -> (Proxy, Vec<String>) {
    start_with(&db.url(), db.name(), policies, agents)
}

fn start_with(
    upstream: &str,
    db_name: &str,
    policies: &str,
    agents: &[&str],
) -> (Proxy, Vec<String>) {
    let agents: Vec<(&str, &str)> = agents.iter().map(|a| (*a, "{}")).collect();
    start_agents(upstream, db_name, policies, &agents)
}

/// Registers `agents` (id, attributes) and starts the proxy.
fn start_agents(
    upstream: &str,
    db_name: &str,
    policies: &str,
    agents: &[(&str, &str)],
) -> (Proxy, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = agents
        .iter()
        .map(|(a, attributes)| register_with(&data, a, attributes))
        .collect();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("sql.cedar"), policies.replace("DB", db_name)).unwrap();
    let source = [
        "--policies".into(),
        pol.into_os_string(),
        "--data".into(),
        data.clone().into_os_string(),
    ];
    (launch(dir, data, upstream, &source), keys)
}

/// Starts `arbiter sql proxy --upstream UPSTREAM` with `source` (where its decisions come
/// from) on a free port, and waits until it listens.
fn launch(
    dir: tempfile::TempDir,
    data: PathBuf,
    upstream: &str,
    source: &[std::ffi::OsString],
) -> Proxy {
    let port = free_port();
    let mut process = Running::spawn(
        "arbiter sql proxy",
        arbiter()
            .args(["sql", "proxy", "--upstream", upstream])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(source),
    );
    process.wait_for_port(port);
    Proxy {
        process,
        port,
        data,
        _dir: dir,
    }
}

/// psql through the proxy: each `-c` is one simple query. Returns (status ok, stdout, stderr).
fn psql(proxy: &Proxy, db: &TestDb, agent: &str, key: &str, commands: &[&str]) -> (String, String) {
    let mut c = Command::new("psql");
    c.args(["-X", "-A", "-t", "-q", "-v", "VERBOSITY=verbose"])
        .arg(format!(
            "host=127.0.0.1 port={} user={agent} password={key} dbname={} sslmode=disable",
            proxy.port,
            db.name()
        ))
        .env("LC_ALL", "C")
        .env_remove("PGPASSWORD");
    for cmd in commands {
        c.args(["-c", cmd]);
    }
    let out = c.output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Kills the proxy, then reads its decision log.
fn records(proxy: &mut Proxy) -> Vec<Value> {
    proxy.process.kill();
    ARBITER.records(&proxy.data)
}

const READER: &str = r#"
permit (principal == Agent::"reader", action == Action::"select", resource is Table)
when { resource.database == "DB" };
"#;

const BYPASSES: &[&str] = &[
    "DELETE FROM t",
    "SELECT 1; DROP TABLE t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "SELECT pg_terminate_backend(1)",
    "EXPLAIN ANALYZE DELETE FROM t",
    "COPY t TO PROGRAM 'id'",
    "DO $$ BEGIN DELETE FROM t; END $$",
    "PREPARE p AS SELECT * FROM t",
    "EXECUTE p",
    "SET ROLE postgres",
    "SELECT set_config('search_path', 'x', false)",
    "COPY t FROM '/etc/passwd'",
    "DROP TABLE t",
];

#[test]
fn read_only_agent_reads_and_the_bypass_corpus_is_denied() {
    let db = test_db("ro");
    let (mut proxy, keys) = start(&db, READER, &["reader"]);
    let key = &keys[0];

    // Allowed reads give what a direct query gives.
    for q in [
        "SELECT id, name FROM t ORDER BY id",
        "SELECT count(*), max(secret) FROM public.t",
        "SELECT 1",
        "SELECT now() IS NOT NULL",
    ] {
        let (out, err) = psql(&proxy, &db, "reader", key, &[q]);
        assert!(err.is_empty(), "{q}: {err}");
        assert_eq!(out, db.psql(q), "{q}");
    }

    // Every bypass: 42501 with a decision id, and the session stays usable after it.
    let mut denied = Vec::new();
    for q in BYPASSES {
        let (out, err) = psql(&proxy, &db, "reader", key, &[q, "SELECT count(*) FROM t"]);
        assert!(
            err.contains("ERROR:  42501: denied by Arbiter:"),
            "{q}: {err}"
        );
        let ids = decision_ids(&err);
        assert_eq!(ids.len(), 1, "{q}: {err}");
        denied.push(ids[0].clone());
        assert_eq!(
            out, "3\n",
            "{q}: the session is not usable after the denial: {err}"
        );
    }
    assert_eq!(db.psql("SELECT count(*) FROM t"), "3\n");

    // Records, under sql:<db>.
    let recs = records(&mut proxy);
    for id in &denied {
        let rec = recs
            .iter()
            .find(|r| r["decision_id"] == *id.as_str())
            .unwrap_or_else(|| panic!("decision {id} is not in the log"));
        assert_eq!(rec["enforcement_point"], format!("sql:{}", db.name()));
        assert_eq!(rec["outcome"], "deny");
        assert_eq!(rec["subject"]["id"], "reader");
    }
    let read = recs
        .iter()
        .find(|r| {
            r["outcome"] == "allow" && r["resource"]["id"] == format!("{}.public.t", db.name())
        })
        .expect("the allowed read is recorded");
    assert_eq!(read["action"], "select");
    assert_eq!(read["context"]["statement_kind"], "select");
}

#[test]
fn a_wrong_key_is_denied_and_nothing_reaches_the_database() {
    let db = test_db("key");
    let (proxy, keys) = start(&db, READER, &["reader", "writer"]);
    // A key Arbiter does not know: refused at login, before the database is asked anything.
    let (out, err) = psql(
        &proxy,
        &db,
        "reader",
        "arb_wrong",
        &["SELECT nextval('s')", "SELECT 1"],
    );
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(
            "FATAL:  agent \"reader\" was not let in: denied: the credential was not accepted"
        ),
        "{err}"
    );
    // Another agent's key under this agent's name: refused too.
    let (out, err) = psql(&proxy, &db, "reader", &keys[1], &["SELECT 1"]);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("FATAL:  the credential is not agent \"reader\"'s"),
        "{err}"
    );
    // nextval was never run.
    assert_eq!(db.psql("SELECT last_value, is_called FROM s"), "1|f\n");
}

// ---- a raw extended-protocol client ------------------------------------------------------

struct Raw {
    s: TcpStream,
    key: Vec<u8>,
}

impl Raw {
    fn connect(port: u16, db: &str, user: &str, key: &str) -> Self {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&wire::startup_packet(&[("user", user), ("database", db)]))
            .unwrap();
        let mut raw = Self { s, key: Vec::new() };
        let m = raw.read();
        assert_eq!((m.tag, m.body.as_slice()), (b'R', &3i32.to_be_bytes()[..]));
        let mut body = Vec::new();
        wire::put_cstr(&mut body, key);
        raw.send(b'p', body);
        let ms = raw.until_ready();
        assert!(ms.iter().any(|m| m.tag == b'K'), "no backend key");
        raw.key = ms
            .iter()
            .find(|m| m.tag == b'K')
            .map(|m| m.body.clone())
            .unwrap_or_default();
        raw
    }

    fn send(&mut self, tag: u8, body: Vec<u8>) {
        self.s.write_all(&Message::new(tag, body).encode()).unwrap();
    }

    fn read(&mut self) -> Message {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.s.read_exact(&mut body).unwrap();
        Message::new(head[0], body)
    }

    fn until_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let m = self.read();
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    fn parse_bind_execute(&mut self, sql: &str) {
        let mut p = Vec::new();
        wire::put_cstr(&mut p, "");
        wire::put_cstr(&mut p, sql);
        p.extend_from_slice(&0i16.to_be_bytes());
        self.send(b'P', p);
        let mut b = vec![0u8, 0u8];
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        self.send(b'B', b);
        let mut e = vec![0u8];
        e.extend_from_slice(&0i32.to_be_bytes());
        self.send(b'E', e);
    }

    fn sync(&mut self) -> Vec<Message> {
        self.send(b'S', Vec::new());
        self.until_ready()
    }
}

fn tags(ms: &[Message]) -> String {
    ms.iter().map(|m| m.tag as char).collect()
}

fn error_of(ms: &[Message]) -> Vec<(u8, String)> {
    ms.iter()
        .find(|m| m.tag == b'E')
        .map(|m| wire::error_fields(&m.body))
        .unwrap_or_default()
}

fn data_rows(ms: &[Message]) -> Vec<String> {
    ms.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            // One column: count, length, value.
            String::from_utf8(m.body[6..].to_vec()).unwrap()
        })
        .collect()
}

#[test]
fn the_extended_protocol_is_decided_at_parse() {
    let db = test_db("ext");
    let (proxy, keys) = start(&db, READER, &["reader"]);
    let mut raw = Raw::connect(proxy.port, db.name(), "reader", &keys[0]);

    raw.parse_bind_execute("SELECT count(*) FROM t");
    let ms = raw.sync();
    assert_eq!(tags(&ms), "12DCZ");
    assert_eq!(data_rows(&ms), ["3"]);

    for q in BYPASSES.iter().filter(|q| !q.contains(';')) {
        raw.parse_bind_execute(q);
        let ms = raw.sync();
        assert_eq!(tags(&ms), "EZ", "{q}");
        let fields = error_of(&ms);
        assert!(fields.contains(&(b'C', "42501".into())), "{q}: {fields:?}");
        assert!(
            fields.iter().any(|(f, m)| *f == b'M'
                && m.contains("denied by Arbiter")
                && m.contains("(decision ")),
            "{q}: {fields:?}"
        );
    }

    // Pipelined: the allowed statement's answers come first, then the denial, then one
    // ReadyForQuery; the rest of the batch is discarded.
    raw.parse_bind_execute("SELECT count(*) FROM t");
    raw.parse_bind_execute("DELETE FROM t");
    raw.parse_bind_execute("SELECT 1");
    let ms = raw.sync();
    assert_eq!(tags(&ms), "12DCEZ");

    // Still usable; a simple query on the same connection too.
    let mut q = Vec::new();
    wire::put_cstr(&mut q, "SELECT count(*) FROM t");
    raw.send(b'Q', q);
    let ms = raw.until_ready();
    assert_eq!(data_rows(&ms), ["3"]);
    let mut q = Vec::new();
    wire::put_cstr(&mut q, "DELETE FROM t");
    raw.send(b'Q', q);
    let ms = raw.until_ready();
    assert_eq!(tags(&ms), "EZ");
    assert_eq!(ms[1].body, b"I");
    raw.send(b'X', Vec::new());
    assert_eq!(db.psql("SELECT count(*) FROM t"), "3\n");
}

#[test]
fn tls_is_refused_and_unsupported_startups_are_refused() {
    let db = test_db("startup");
    let (proxy, _keys) = start(&db, READER, &["reader"]);
    // SSLRequest: 'N'.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = 8i32.to_be_bytes().to_vec();
    req.extend_from_slice(&wire::SSL_REQUEST.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    assert_eq!(&n, b"N");
    // A replication connection is refused.
    s.write_all(&wire::startup_packet(&[
        ("user", "reader"),
        ("database", db.name()),
        ("replication", "database"),
    ]))
    .unwrap();
    let mut raw = Raw { s, key: Vec::new() };
    let m = raw.read();
    assert_eq!(m.tag, b'E');
    assert!(
        wire::error_fields(&m.body)
            .iter()
            .any(|(_, v)| v.contains("replication"))
    );
    // GSSENCRequest: 'N'; then protocol 2.0 is refused with an ErrorResponse.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = 8i32.to_be_bytes().to_vec();
    req.extend_from_slice(&wire::GSSENC_REQUEST.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    assert_eq!(&n, b"N");
    let mut v2 = 9i32.to_be_bytes().to_vec();
    v2.extend_from_slice(&0x0002_0000i32.to_be_bytes());
    v2.push(0);
    s.write_all(&v2).unwrap();
    let mut raw = Raw { s, key: Vec::new() };
    let m = raw.read();
    assert_eq!(m.tag, b'E');
    assert!(wire::error_fields(&m.body).contains(&(b'C', "0A000".into())));
}

#[test]
fn a_cancel_request_reaches_the_database() {
    let db = test_db("cancel");
    let (proxy, keys) = start(&db, READER, &["reader"]);
    let mut raw = Raw::connect(proxy.port, db.name(), "reader", &keys[0]);
    assert_eq!(raw.key.len(), 8);
    let mut q = Vec::new();
    wire::put_cstr(
        &mut q,
        "SELECT count(*) FROM generate_series(1, 2000000000) AS g, t",
    );
    raw.send(b'Q', q);
    wait_until("the query runs in the database", PATIENCE, || {
        db.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' \
             AND query LIKE '%generate_series(1, 2000000000)%' AND pid <> pg_backend_pid()",
            db.name()
        )) != "0\n"
    });
    let mut cancel = 16i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&wire::CANCEL_REQUEST.to_be_bytes());
    cancel.extend_from_slice(&raw.key);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    c.write_all(&cancel).unwrap();
    drop(c);
    let ms = raw.until_ready();
    assert!(
        error_of(&ms).contains(&(b'C', "57014".into())),
        "{:?}",
        error_of(&ms)
    );
}

#[test]
fn the_questions_asked_for_a_statement() {
    use arbiter_sql::proxy::asks_for;
    let a = arbiter_sql::analyze("SELECT t.name FROM shop.t JOIN u ON u.id = t.id").unwrap();
    let asks = asks_for(&a, "db");
    let ids: Vec<(&str, &str)> = asks
        .iter()
        .map(|a| (a.action, a.resource.id.as_str()))
        .collect();
    assert_eq!(ids, [("select", "db.shop.t"), ("select", "db.public.u")]);
    assert_eq!(asks[0].resource.kind, "Table");
    assert_eq!(
        asks[0].resource.properties.as_ref().unwrap()["schema"],
        "shop"
    );
    assert_eq!(asks[0].context["statement_kind"], "select");
    let fingerprint = asks[0].context["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);
    // Rows can be narrowed for reads of the tables, not for the pseudo-tables.
    assert!(asks.iter().all(|a| a.rows));
    assert_eq!(
        asks[0].context["columns"],
        serde_json::json!(["id", "name"])
    );

    let a = arbiter_sql::analyze("SELECT pg_terminate_backend(1)").unwrap();
    let ids: Vec<String> = asks_for(&a, "db")
        .iter()
        .map(|a| format!("{} {}", a.action, a.resource.id))
        .collect();
    assert_eq!(
        ids,
        [
            "select db.arbiter.no_table",
            "ddl db.arbiter.function:pg_terminate_backend"
        ]
    );

    let a = arbiter_sql::analyze("SELECT 1; DROP TABLE t").unwrap();
    let ids: Vec<String> = asks_for(&a, "db")
        .iter()
        .map(|a| format!("{} {}", a.action, a.resource.id))
        .collect();
    assert_eq!(
        ids,
        [
            "select db.arbiter.no_table",
            "ddl db.arbiter.multi_statement",
            "ddl db.public.t"
        ]
    );
}

#[test]
fn upstream_urls() {
    use arbiter_sql::proxy::Upstream;
    let u = Upstream::parse("postgres://app:p%40ss@db.internal:6543/shop").unwrap();
    assert_eq!(
        (
            u.user.as_str(),
            u.password.as_deref(),
            u.host.as_str(),
            u.port,
            u.database.as_str()
        ),
        ("app", Some("p@ss"), "db.internal", 6543, "shop")
    );
    let u = Upstream::parse("postgresql://postgres@127.0.0.1/x").unwrap();
    assert_eq!((u.port, u.password), (5432, None));
    for bad in [
        "mysql://a@b/c",
        "postgres://b/c",
        "postgres://a@b",
        "postgres://a@b:x/c",
        "postgres://a@b/c?sslmode=require",
    ] {
        assert!(Upstream::parse(bad).is_err(), "{bad}");
    }
}

const WRITER: &str = r#"
permit (principal == Agent::"writer", action in [Action::"select", Action::"insert", Action::"update"], resource is Table)
when { resource.database == "DB" && resource.schema != "arbiter" };
permit (principal == Agent::"writer", action == Action::"select", resource is Table)
when { resource.database == "DB" && resource.name == "no_table" };
forbid (principal, action == Action::"update", resource is Table)
when { context has columns && context.columns.contains("secret") };
"#;

fn simple(raw: &mut Raw, sql: &str) -> Vec<Message> {
    let mut q = Vec::new();
    wire::put_cstr(&mut q, sql);
    raw.send(b'Q', q);
    raw.until_ready()
}

#[test]
fn a_writer_in_a_transaction_keeps_its_transaction_across_a_denial() {
    let db = test_db("tx");
    let (proxy, keys) = start(&db, WRITER, &["writer"]);
    let mut raw = Raw::connect(proxy.port, db.name(), "writer", &keys[0]);

    let ms = simple(&mut raw, "BEGIN");
    assert_eq!(ms.last().unwrap().body, b"T", "{}", tags(&ms));
    let ms = simple(&mut raw, "INSERT INTO t (id, name) VALUES (4, 'd')");
    assert_eq!(tags(&ms), "CZ");
    // Denied: the transaction is untouched (the database never saw the statement).
    let ms = simple(&mut raw, "UPDATE t SET secret = 'x' WHERE id = 1");
    assert_eq!(tags(&ms), "EZ");
    assert_eq!(ms[1].body, b"T");
    let ms = simple(&mut raw, "DELETE FROM t WHERE id = 4");
    assert_eq!(tags(&ms), "EZ");
    assert_eq!(ms[1].body, b"T");
    let ms = simple(&mut raw, "UPDATE t SET name = 'z' WHERE id = 1");
    assert_eq!(tags(&ms), "CZ");
    // A cursor: declared (decided as the query it runs), fetched, closed.
    let ms = simple(
        &mut raw,
        "DECLARE c CURSOR FOR SELECT id FROM t ORDER BY id",
    );
    assert_eq!(tags(&ms), "CZ");
    let ms = simple(&mut raw, "FETCH 2 FROM c");
    assert_eq!(data_rows(&ms), ["1", "2"]);
    let ms = simple(&mut raw, "CLOSE c");
    assert_eq!(tags(&ms), "CZ");
    let ms = simple(&mut raw, "COMMIT");
    assert_eq!(ms.last().unwrap().body, b"I");
    raw.send(b'X', Vec::new());

    assert_eq!(
        db.psql("SELECT id, name, secret FROM t ORDER BY id"),
        "1|z|s1\n2|b|s2\n3|c|s3\n4|d|\n"
    );
}

#[test]
fn an_oversized_message_is_refused_with_a_protocol_error() {
    let db = test_db("size");
    let (proxy, keys) = start(&db, READER, &["reader"]);
    let mut raw = Raw::connect(proxy.port, db.name(), "reader", &keys[0]);
    // A query claiming 2 GiB: refused before any of it is read.
    raw.s.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).unwrap();
    let m = raw.read();
    assert_eq!(m.tag, b'E');
    let fields = wire::error_fields(&m.body);
    assert!(fields.contains(&(b'C', "08P01".into())), "{fields:?}");
    assert!(fields.contains(&(b'S', "FATAL".into())), "{fields:?}");
    // An unknown message type too.
    let mut raw = Raw::connect(proxy.port, db.name(), "reader", &keys[0]);
    raw.send(b'?', Vec::new());
    let m = raw.read();
    assert!(wire::error_fields(&m.body).contains(&(b'C', "08P01".into())));
}

/// A fake database that asks for authentication `method` (3: cleartext password, 10:
/// SCRAM-SHA-256; it reports the password or `bad proof` and accepts).
fn fake_database(method: i32) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Raw { s, key: Vec::new() };
        let mut len = [0u8; 4];
        raw.s.read_exact(&mut len).unwrap();
        let mut startup = vec![0u8; i32::from_be_bytes(len) as usize - 4];
        raw.s.read_exact(&mut startup).unwrap();
        let mut ask = method.to_be_bytes().to_vec();
        if method == 10 {
            ask.extend_from_slice(b"SCRAM-SHA-256\0\0");
        }
        raw.send(b'R', ask);
        match method {
            3 => {
                let p = raw.read();
                assert_eq!(p.tag, b'p');
                tx.send(String::from_utf8(p.body[..p.body.len() - 1].to_vec()).unwrap())
                    .unwrap();
            }
            10 => {
                // The server side, checked with the client's own computation (the crypto
                // is checked against RFC 7677's example in the unit tests).
                let first = raw.read();
                let text = String::from_utf8(first.body).unwrap();
                let (mechanism, data) = text.split_once('\0').unwrap();
                assert_eq!(mechanism, "SCRAM-SHA-256");
                let client_first = &data[4..];
                let nonce = client_first.strip_prefix("n,,n=,r=").unwrap();
                let server_first = format!("r={nonce}srv,s=c2FsdA==,i=4096");
                let mut expected = arbiter_sql::scram::Scram::new("", "s@cret", nonce);
                let want = expected.client_final(&server_first).unwrap();
                let mut cont = 11i32.to_be_bytes().to_vec();
                cont.extend_from_slice(server_first.as_bytes());
                raw.send(b'R', cont);
                let last = raw.read();
                let ok = String::from_utf8(last.body).unwrap() == want;
                tx.send(if ok {
                    "s@cret".into()
                } else {
                    "bad proof".into()
                })
                .unwrap();
                if !ok {
                    return;
                }
                let mut fin = 12i32.to_be_bytes().to_vec();
                fin.extend_from_slice(expected.expected_server_final().unwrap().as_bytes());
                raw.send(b'R', fin);
            }
            _ => return,
        }
        raw.send(b'R', 0i32.to_be_bytes().to_vec());
        let mut status = Vec::new();
        wire::put_cstr(&mut status, "server_version");
        wire::put_cstr(&mut status, "15.0");
        raw.send(b'S', status);
        raw.send(b'K', [0, 0, 0, 7, 0, 0, 0, 9].to_vec());
        raw.send(b'Z', b"I".to_vec());
        // Stays logged in until the proxy hangs up.
        let _ = raw.s.set_read_timeout(None);
        let mut rest = [0u8; 512];
        while matches!(raw.s.read(&mut rest), Ok(n) if n > 0) {}
    });
    (port, rx)
}

#[test]
fn the_proxy_logs_in_to_the_database_with_a_cleartext_password() {
    let (port, sent) = fake_database(3);
    let (proxy, keys) = start_with(
        &format!("postgres://app:s%40cret@127.0.0.1:{port}/fake"),
        "fake",
        READER,
        &["reader"],
    );
    let raw = Raw::connect(proxy.port, "fake", "reader", &keys[0]);
    assert_eq!(sent.recv().unwrap(), "s@cret");
    // The client gets the proxy's own backend key, not the database's.
    assert_ne!(raw.key, [0, 0, 0, 7, 0, 0, 0, 9]);
}

#[test]
fn the_proxy_logs_in_to_the_database_with_scram_sha_256() {
    let (port, sent) = fake_database(10);
    let (proxy, keys) = start_with(
        &format!("postgres://app:s%40cret@127.0.0.1:{port}/fake"),
        "fake",
        READER,
        &["reader"],
    );
    let raw = Raw::connect(proxy.port, "fake", "reader", &keys[0]);
    assert_eq!(sent.recv().unwrap(), "s@cret");
    assert_eq!(raw.key.len(), 8);
}

#[test]
fn md5_towards_the_database_is_refused_with_a_clear_error() {
    let (port, _sent) = fake_database(5);
    let (proxy, keys) = start_with(
        &format!("postgres://app:pw@127.0.0.1:{port}/fake"),
        "fake",
        READER,
        &["reader"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&wire::startup_packet(&[
        ("user", "reader"),
        ("database", "fake"),
    ]))
    .unwrap();
    let mut raw = Raw { s, key: Vec::new() };
    assert_eq!(raw.read().tag, b'R');
    let mut body = Vec::new();
    wire::put_cstr(&mut body, &keys[0]);
    raw.send(b'p', body);
    let m = raw.read();
    assert_eq!(m.tag, b'E');
    let fields = wire::error_fields(&m.body);
    assert!(
        fields.iter().any(|(f, v)| *f == b'M' && v.contains("MD5")),
        "{fields:?}"
    );
}

// --- Row filters ---

/// Two tenants' orders and customers; `owner` is the user an order belongs to.
fn tenant_tables(db: &TestDb) {
    db.psql("CREATE TABLE customers (id int PRIMARY KEY, tenant text, name text); \
         INSERT INTO customers VALUES (1, 'a', 'ada'), (2, 'b', 'bob'), (3, 'a', 'alan'); \
         CREATE TABLE orders (id int PRIMARY KEY, tenant text, owner text, customer int, total int); \
         INSERT INTO orders VALUES (10, 'a', 'alice', 1, 100), (11, 'b', 'bruno', 2, 110), \
           (12, 'a', 'alice', 3, 120), (13, 'a', 'amir', 1, 130), (14, NULL, 'alice', 1, 140), \
           (15, 'b', 'alice', 2, 150)",
    );
}

const TENANT_ROWS: &str = r#"
@id("tenant-reads")
permit (principal is Agent, action == Action::"select", resource is Row)
when { (resource in Table::"DB.public.orders" || resource in Table::"DB.public.customers")
       && principal has tenant && resource.tenant == principal.tenant };
@id("tenant-writes")
permit (principal is Agent, action in [Action::"update", Action::"delete"],
        resource is Row in Table::"DB.public.orders")
when { principal has tenant && resource.tenant == principal.tenant };
@id("no-big-orders")
forbid (principal, action == Action::"delete", resource is Row)
when { resource has total && resource.total >= 130 };
@id("constants")
permit (principal, action == Action::"select", resource == Table::"DB.arbiter.no_table");
"#;

/// Registers `agent` with `attributes` in `data`; returns its key.
fn register_with(data: &Path, agent: &str, attributes: &str) -> String {
    ARBITER
        .agent_with_key(data, agent, "platform", &["--attributes", attributes])
        .key
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
fn row_filters_narrow_every_read_and_write_to_the_agents_tenant() {
    let db = test_db("rows");
    tenant_tables(&db);
    let (mut proxy, keys) = start_agents(
        &db.url(),
        db.name(),
        TENANT_ROWS,
        &[
            ("tenant-a-bot", r#"{"tenant": "a"}"#),
            ("untenanted-bot", "{}"),
        ],
    );
    let (key_a, key_none) = (keys[0].clone(), keys[1].clone());
    let q = |sql: &str| psql(&proxy, &db, "tenant-a-bot", &key_a, &[sql]);

    // Directly, a join, subqueries, CTEs, a set operation, a lateral subquery: tenant a only
    // (the row with no tenant is not theirs either).
    let cases: &[(&str, &[&str])] = &[
        ("SELECT id FROM orders ORDER BY id", &["10", "12", "13"]),
        ("SELECT count(*) FROM orders", &["3"]),
        (
            "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer ORDER BY o.id",
            &["10|ada", "12|alan", "13|ada"],
        ),
        (
            "SELECT c.name FROM customers c LEFT JOIN orders ON orders.customer = c.id \
             GROUP BY c.name ORDER BY c.name",
            &["ada", "alan"],
        ),
        (
            "SELECT name FROM customers WHERE id IN (SELECT customer FROM orders WHERE total > 0) ORDER BY name",
            &["ada", "alan"],
        ),
        (
            "SELECT count(*) FROM (SELECT * FROM public.orders) s",
            &["3"],
        ),
        (
            "WITH mine AS (SELECT id, total FROM orders) SELECT sum(total) FROM mine",
            &["350"],
        ),
        (
            "SELECT id FROM orders WHERE tenant = 'b' UNION ALL SELECT id FROM customers ORDER BY 1",
            &["1", "3"],
        ),
        (
            "SELECT c.id, x.n FROM customers c, LATERAL (SELECT count(*) AS n FROM orders o WHERE o.customer = c.id) x ORDER BY c.id",
            &["1|2", "3|1"],
        ),
        ("SELECT 1 + 1", &["2"]),
    ];
    for (sql, want) in cases {
        let (out, err) = q(sql);
        assert_eq!(lines(&out), *want, "{sql}: {err}");
    }

    // Writes reach the tenant's rows only; the forbid keeps big orders from deletion.
    let (_, err) = q("UPDATE orders SET total = total + 1");
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        lines(&db.psql("SELECT id, total FROM orders ORDER BY id")),
        ["10|101", "11|110", "12|121", "13|131", "14|140", "15|150"]
    );
    let (_, err) = q("DELETE FROM orders");
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        lines(&db.psql("SELECT id FROM orders ORDER BY id")),
        ["11", "13", "14", "15"]
    );

    // What cannot be narrowed is denied, and says why.
    for (sql, why) in [
        (
            "UPDATE orders SET tenant = 'b'",
            "reads the column `tenant`",
        ),
        // Uses of the table that rows cannot be narrowed in are decided for the whole table.
        ("COPY orders TO STDOUT", "not permitted"),
        (
            "INSERT INTO orders VALUES (20, 'a', 'x', 1, 1)",
            "not permitted",
        ),
        ("TRUNCATE orders", "not permitted"),
    ] {
        let (out, err) = q(sql);
        assert!(out.is_empty(), "{sql}: {out}");
        assert!(err.contains("42501") && err.contains(why), "{sql}: {err}");
    }

    // An agent with no tenant gets no rows: denied, not an empty answer.
    let (out, err) = psql(
        &proxy,
        &db,
        "untenanted-bot",
        &key_none,
        &["SELECT id FROM orders"],
    );
    assert!(out.is_empty() && err.contains("42501"), "{out} {err}");

    // The extended protocol narrows at Parse too, and keeps the parameters.
    let mut raw = Raw::connect(proxy.port, db.name(), "tenant-a-bot", &key_a);
    let mut p = Vec::new();
    wire::put_cstr(&mut p, "by_total");
    wire::put_cstr(
        &mut p,
        "SELECT id::text FROM orders WHERE total > $1 ORDER BY id",
    );
    p.extend_from_slice(&1i16.to_be_bytes());
    p.extend_from_slice(&23i32.to_be_bytes());
    raw.send(b'P', p);
    let mut b = Vec::new();
    wire::put_cstr(&mut b, "");
    wire::put_cstr(&mut b, "by_total");
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(b"0");
    b.extend_from_slice(&0i16.to_be_bytes());
    raw.send(b'B', b);
    let mut e = vec![0u8];
    e.extend_from_slice(&0i32.to_be_bytes());
    raw.send(b'E', e);
    let ms = raw.sync();
    assert_eq!(tags(&ms), "12DCZ", "{:?}", error_of(&ms));
    assert_eq!(data_rows(&ms), ["13"]);
    raw.send(b'X', Vec::new());

    // The records: allowed for rows, with the filter and the row policies.
    let recs = records(&mut proxy);
    let narrowed: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            r["reason_admin"]
                .as_str()
                .unwrap_or("")
                .contains("allowed for the rows where")
        })
        .collect();
    assert!(!narrowed.is_empty(), "no narrowed decision recorded");
    for r in &narrowed {
        assert_eq!(r["outcome"], "allow", "{r}");
        let policies = r["determining_policies"].to_string();
        assert!(policies.contains("tenant-"), "{r}");
    }
}

/// An EdDSA token from a test issuer: `sub` the user, `act.sub` the agent.
fn delegated_token(dir: &Path, agent: &str, user: &str) -> PathBuf {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let jwks = serde_json::json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA",
        "x": b64.encode(key.verifying_key().as_bytes()),
    }]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    let issuers = serde_json::json!({"issuers": [{
        "issuer": "https://idp.test", "audiences": ["arbiter"],
        "jwks_file": dir.join("jwks.json"),
    }]});
    std::fs::write(dir.join("issuers.json"), issuers.to_string()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64.encode(r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#);
    let payload = b64.encode(
        serde_json::json!({
            "iss": "https://idp.test", "aud": "arbiter", "sub": user,
            "act": {"sub": agent}, "iat": now, "exp": now + 600,
        })
        .to_string(),
    );
    let signing_input = format!("{header}.{payload}");
    let signature = b64.encode(key.sign(signing_input.as_bytes()).to_bytes());
    let token = dir.join(format!("{user}.jwt"));
    std::fs::write(&token, format!("{signing_input}.{signature}")).unwrap();
    token
}

#[test]
fn an_agent_acting_for_a_user_sees_only_that_users_rows() {
    let db = test_db("userrows");
    tenant_tables(&db);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ARBITER.agent_with_key(&data, "helper", "platform", &[]);
    let alice = std::fs::read_to_string(delegated_token(dir.path(), "helper", "alice")).unwrap();
    let bruno = std::fs::read_to_string(delegated_token(dir.path(), "helper", "bruno")).unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    // The agent may read the tables; each user only their own orders.
    std::fs::write(
        pol.join("sql.cedar"),
        r#"
        @id("helper-reads")
        permit (principal == Agent::"helper", action == Action::"select", resource is Table)
        when { resource.database == "DB" };
        @id("own-orders")
        permit (principal is User, action == Action::"select", resource is Row in Table::"DB.public.orders")
        when { resource.owner == principal };
        "#
        .replace("DB", db.name()),
    )
    .unwrap();
    let source = [
        "--policies".into(),
        pol.into_os_string(),
        "--data".into(),
        data.clone().into_os_string(),
        "--jwt-issuers".into(),
        dir.path().join("issuers.json").into_os_string(),
    ];
    let proxy = launch(dir, data, &db.url(), &source);
    let (out, err) = psql(
        &proxy,
        &db,
        "helper",
        &alice,
        &["SELECT id FROM orders ORDER BY id"],
    );
    assert_eq!(lines(&out), ["10", "12", "14", "15"], "{err}");
    let (out, err) = psql(
        &proxy,
        &db,
        "helper",
        &bruno,
        &["WITH o AS (SELECT * FROM orders) SELECT id FROM o WHERE total > 0 ORDER BY 1"],
    );
    assert_eq!(lines(&out), ["11"], "{err}");
    // Customers carry no row policy for users: the user is not permitted there at all.
    let (out, err) = psql(
        &proxy,
        &db,
        "helper",
        &alice,
        &["SELECT count(*) FROM customers"],
    );
    assert!(out.is_empty() && err.contains("42501"), "{out} {err}");
}

#[test]
fn a_prepared_statement_is_decided_again_when_the_policies_change() {
    let db = test_db("reprep");
    let (proxy, keys) = start(&db, READER, &["reader"]);
    let policy_file = proxy.data.parent().unwrap().join("policies/sql.cedar");
    let mut raw = Raw::connect(proxy.port, db.name(), "reader", &keys[0]);
    let parse = |raw: &mut Raw, name: &str, sql: &str| {
        let mut p = Vec::new();
        wire::put_cstr(&mut p, name);
        wire::put_cstr(&mut p, sql);
        p.extend_from_slice(&0i16.to_be_bytes());
        raw.send(b'P', p);
    };
    let bind_execute = |raw: &mut Raw, name: &str| {
        let mut b = Vec::new();
        wire::put_cstr(&mut b, "");
        wire::put_cstr(&mut b, name);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        raw.send(b'B', b);
        let mut e = vec![0u8];
        e.extend_from_slice(&0i32.to_be_bytes());
        raw.send(b'E', e);
    };
    parse(&mut raw, "count_t", "SELECT count(*) FROM t");
    bind_execute(&mut raw, "count_t");
    let ms = raw.sync();
    assert_eq!(
        (tags(&ms).as_str(), data_rows(&ms)),
        ("12DCZ", vec!["3".to_owned()])
    );

    // The policies stop allowing reads of t; once the new version is live, the statement
    // prepared under the old one is refused at Bind.
    std::fs::write(
        &policy_file,
        READER.replace("DB", db.name()).replace(
            "resource.database ==",
            "resource.name == \"other\" && resource.database ==",
        ),
    )
    .unwrap();
    wait_until("the new policies go live", PATIENCE, || {
        parse(&mut raw, "", "SELECT count(*) FROM t");
        tags(&raw.sync()) == "EZ"
    });
    bind_execute(&mut raw, "count_t");
    let ms = raw.sync();
    assert_eq!(tags(&ms), "EZ");
    let fields = error_of(&ms);
    assert!(fields.contains(&(b'C', "42501".into())), "{fields:?}");

    // Allowed again: the same prepared statement runs.
    std::fs::write(&policy_file, READER.replace("DB", db.name())).unwrap();
    wait_until("the restored policies go live", PATIENCE, || {
        bind_execute(&mut raw, "count_t");
        let ms = raw.sync();
        let live = tags(&ms) == "2DCZ";
        if live {
            assert_eq!(data_rows(&ms), ["3"]);
        }
        live
    });
    raw.send(b'X', Vec::new());
}

#[test]
fn pgbench_runs_through_the_guard_in_every_query_mode() {
    let db = test_db("pgbench");
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(db.url())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let (proxy, keys) = start(&db, READER, &["reader"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = Command::new("pgbench")
            .args(["-S", "-n", "-t", "100", "-c", "2", "-M", mode])
            .arg(format!(
                "host=127.0.0.1 port={} user=reader dbname={} sslmode=disable",
                proxy.port,
                db.name()
            ))
            .env("PGPASSWORD", &keys[0])
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stdout}{stderr}");
        assert!(
            stdout.contains("number of transactions actually processed: 200/200")
                && stdout.contains("number of failed transactions: 0"),
            "{mode}: {stdout}{stderr}"
        );
    }
}

#[test]
fn row_filters_come_from_a_remote_decision_point_too() {
    let db = test_db("remoterows");
    tenant_tables(&db);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = register_with(&data, "tenant-a-bot", r#"{"tenant": "a"}"#);
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("sql.cedar"), TENANT_ROWS.replace("DB", db.name())).unwrap();
    let served = ARBITER.serve(&pol, &data, &[]);
    let source = ["--pdp".into(), served.url().into()];
    let proxy = launch(dir, data, &db.url(), &source);
    let q = |sql: &str| psql(&proxy, &db, "tenant-a-bot", &key, &[sql]);
    let (out, err) =
        q("SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer ORDER BY o.id");
    assert_eq!(lines(&out), ["10|ada", "12|alan", "13|ada"], "{err}");
    let (out, err) = q("UPDATE orders SET tenant = 'b'");
    assert!(
        out.is_empty() && err.contains("reads the column `tenant`"),
        "{out} {err}"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM orders WHERE tenant = 'b'"),
        "2\n"
    );
    // The decision point recorded an allow for some rows before the guard found it could not
    // narrow the statement; the guard reported that back, so the log also holds the deny it
    // answered, naming the allow.
    let ids = decision_ids(&err);
    assert_eq!(ids.len(), 1, "{err}");
    drop(served);
    let recs = ARBITER.records(&proxy.data);
    let deny = recs
        .iter()
        .find(|r| r["decision_id"].as_str() == Some(ids[0].as_str()))
        .unwrap_or_else(|| panic!("the answered decision {} is not in {recs:?}", ids[0]));
    assert_eq!(deny["outcome"], "deny", "{deny}");
    let admin = deny["reason_admin"].as_str().unwrap();
    let allowed = recs
        .iter()
        .find(|r| r["outcome"] == "allow" && r["action"] == "update")
        .expect("the decision point's allow for some rows");
    let allowed_id = allowed["decision_id"].as_str().unwrap();
    assert!(
        admin.contains(&format!("could not apply the allow `{allowed_id}`")),
        "{admin}"
    );
}

#[test]
fn a_forbid_on_rows_narrows_a_table_allowed_as_a_whole() {
    let db = test_db("rowforbid");
    let policies = format!(
        "{READER}\n{}",
        r#"
        @id("no-s2")
        forbid (principal, action == Action::"select", resource is Row in Table::"DB.public.t")
        when { resource.secret == "s2" };
        "#
    );
    let (proxy, keys) = start(&db, &policies, &["reader"]);
    let (out, err) = psql(
        &proxy,
        &db,
        "reader",
        &keys[0],
        &[
            "SELECT id FROM t ORDER BY id",
            "SELECT count(*) FROM t t1 JOIN t t2 USING (id)",
        ],
    );
    assert_eq!(lines(&out), ["1", "3", "2"], "{err}");

    // Every row forbidden: a deny naming the forbid, not an empty answer.
    let all = format!(
        "{READER}\n{}",
        r#"
        @id("no-t-rows")
        forbid (principal, action == Action::"select", resource is Row in Table::"DB.public.t");
        "#
    );
    let (proxy, keys) = start(&db, &all, &["reader"]);
    let (out, err) = psql(&proxy, &db, "reader", &keys[0], &["SELECT id FROM t"]);
    assert!(out.is_empty() && err.contains("42501"), "{out} {err}");
}

/// The SQL a row filter becomes selects exactly the rows Cedar itself allows, on rows with
/// NULLs (absent attributes) and values of every kind the policies compare: each row is also
/// a `Row` entity evaluated by the engine, and the two answers must agree row by row.
#[test]
fn row_filter_sql_agrees_with_cedar_row_by_row() {
    use arbiter_policy::{Policies, Rows, SourceFile};
    use arbiter_types::{Action, Entity, EvaluationRequest, RowFilter};

    let db = test_db("semantics");
    db.psql(
        "CREATE TABLE r (id int PRIMARY KEY, tenant text, n bigint, flag boolean, tags text[])",
    );
    let tenants = [None, Some("a"), Some("b"), Some("xa"), Some("c")];
    let ns = [
        None,
        Some(-1i64),
        Some(0),
        Some(2),
        Some(3),
        Some(4),
        Some(7),
    ];
    let flags = [None, Some(true), Some(false)];
    let mut inserts = Vec::new();
    let mut entities = Vec::new();
    let mut id = 0;
    for t in tenants {
        for n in ns {
            for f in flags {
                id += 1;
                let tags = if id % 3 == 0 {
                    Some(vec!["vip"])
                } else if id % 3 == 1 {
                    Some(vec![])
                } else {
                    None
                };
                let sql_text = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
                inserts.push(format!(
                    "({id}, {}, {}, {}, {})",
                    sql_text(t.map(|t| format!("'{t}'"))),
                    sql_text(n.map(|n| n.to_string())),
                    sql_text(f.map(|f| f.to_string())),
                    sql_text(tags.as_ref().map(|v| {
                        format!(
                            "ARRAY[{}]::text[]",
                            v.iter()
                                .map(|s| format!("'{s}'"))
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    }))
                ));
                let mut attrs = serde_json::Map::new();
                if let Some(t) = t {
                    attrs.insert("tenant".into(), t.into());
                }
                if let Some(n) = n {
                    attrs.insert("n".into(), n.into());
                }
                if let Some(f) = f {
                    attrs.insert("flag".into(), f.into());
                }
                if let Some(v) = &tags {
                    attrs.insert("tags".into(), serde_json::json!(v));
                }
                entities.push(serde_json::json!({
                    "uid": {"type": "Row", "id": format!("r{id}")},
                    "attrs": attrs,
                    "parents": [{"type": "Table", "id": "db.public.r"}],
                }));
            }
        }
    }
    db.psql(&format!("INSERT INTO r VALUES {}", inserts.join(", ")));
    let policies = Policies::from_sources(
        &[SourceFile {
            path: "rows.cedar".into(),
            text: r#"
            @id("p-tenant")
            permit (principal, action == Action::"select", resource is Row in Table::"db.public.r")
            when { resource.tenant == principal.tenant && resource.n > 2 };
            @id("p-flag")
            permit (principal, action == Action::"select", resource is Row in Table::"db.public.r")
            when { resource has flag && resource.flag || resource.n == 7 };
            @id("p-set")
            permit (principal, action == Action::"select", resource is Row in Table::"db.public.r")
            when { ["a", "c"].contains(resource.tenant) && !(resource.n < 0) && resource.tags.contains("vip") };
            @id("f-like")
            forbid (principal, action == Action::"select", resource is Row in Table::"db.public.r")
            when { resource.tenant like "x*" };
            @id("f-if")
            forbid (principal, action == Action::"select", resource is Row in Table::"db.public.r")
            when { if resource has n then resource.n * 2 == 8 else false };
            "#
            .into(),
        }],
        None,
        Some(&serde_json::Value::Array(entities).to_string()),
    )
    .unwrap();
    let request = |resource: Entity| EvaluationRequest {
        subject: Entity {
            kind: "Agent".into(),
            id: "bot".into(),
            properties: serde_json::json!({"tenant": "b"}).as_object().cloned(),
        },
        action: Action {
            name: "select".into(),
            properties: None,
        },
        resource,
        context: serde_json::Map::new(),
    };
    // Cedar, row by row.
    let mut cedar: Vec<String> = Vec::new();
    for i in 1..=id {
        let e = policies.evaluate(&request(Entity {
            kind: "Row".into(),
            id: format!("r{i}"),
            properties: None,
        }));
        if e.outcome.is_allow() {
            cedar.push(i.to_string());
        }
    }
    // The filter, as SQL.
    let Rows::Some(part) = policies
        .rows(&request(Entity {
            kind: "Table".into(),
            id: "db.public.r".into(),
            properties: None,
        }))
        .unwrap()
    else {
        panic!("no row filter")
    };
    let predicate = arbiter_sql::rewrite::predicate(&RowFilter { parts: vec![part] }, "r").unwrap();
    let sql = db.psql(&format!("SELECT id FROM r WHERE {predicate} ORDER BY id"));
    assert!(
        cedar.len() > 5 && cedar.len() < id as usize - 5,
        "{cedar:?}"
    );
    assert_eq!(lines(&sql), cedar, "{predicate}");
}

// --- Issue 14: row-filtered writes, honest records, row locks, filters that never hold ---

/// Tickets of two tenants, and notes on them.
fn ticket_tables(db: &TestDb) {
    db.psql(
        "CREATE TABLE tickets (id int PRIMARY KEY, tenant text, body text, prio int); \
         INSERT INTO tickets VALUES (1, 'acme', 'a', 1), (2, 'acme', 'b', 2), \
           (3, 'other', 'c', 3), (4, 'other', 'd', 4), (5, 'acme', 'e', 5); \
         CREATE TABLE notes (id int PRIMARY KEY, ticket int, txt text); \
         INSERT INTO notes VALUES (1, 2, 'n'), (2, 3, 'n'), (3, 5, 'm')",
    );
}

/// `update`/`delete` of acme's tickets only; reads as `reads` says.
fn ticket_policies(reads: &str) -> String {
    format!(
        r#"
@id("acme-writes")
permit (principal, action in [Action::"update", Action::"delete"],
        resource is Row in Table::"DB.public.tickets")
when {{ resource.tenant == "acme" }};
// (Every table a statement touches is asked with the statement's kind: an UPDATE that reads
// notes asks `update` on them.)
@id("notes")
permit (principal, action in [Action::"select", Action::"update", Action::"delete"],
        resource == Table::"DB.public.notes");
{reads}
"#
    )
}

const TICKET_READS_ROWS: &str = r#"
@id("acme-reads")
permit (principal, action == Action::"select", resource is Row in Table::"DB.public.tickets")
when { resource.tenant == "acme" };
"#;

const TICKET_READS_TABLE: &str = r#"
@id("all-reads")
permit (principal, action == Action::"select", resource == Table::"DB.public.tickets");
"#;

/// Regression (issue 14): every row-filtered `UPDATE`/`DELETE` with a `WHERE` was denied
/// "the narrowed statement does not print back faithfully" (the filter was grafted as a
/// nested `AND`). With `WHERE`, aliases, `RETURNING`, subqueries in `WHERE` and `SET`, and
/// `USING`/`FROM` joins, they now change exactly the allowed rows.
#[test]
fn row_filtered_writes_with_a_where_change_exactly_the_allowed_rows() {
    for reads in [TICKET_READS_ROWS, TICKET_READS_TABLE] {
        let db = test_db("rowwrites");
        ticket_tables(&db);
        let (proxy, keys) = start(&db, &ticket_policies(reads), &["writer"]);
        let q = |sql: &str| psql(&proxy, &db, "writer", &keys[0], &[sql]);
        let state = || lines(&db.psql("SELECT id, body, prio FROM tickets ORDER BY id")).join(" ");
        let steps: &[(&str, &[&str], &str)] = &[
            (
                "UPDATE tickets SET body = 'x' WHERE id = 2",
                &[],
                "1|a|1 2|x|2 3|c|3 4|d|4 5|e|5",
            ),
            // Another tenant's row: nothing changes.
            (
                "UPDATE tickets SET body = 'y' WHERE id = 3",
                &[],
                "1|a|1 2|x|2 3|c|3 4|d|4 5|e|5",
            ),
            (
                "UPDATE tickets AS t SET body = 'z' WHERE t.prio > 1 RETURNING t.id",
                &["2", "5"],
                "1|a|1 2|z|2 3|c|3 4|d|4 5|z|5",
            ),
            // Subqueries in SET and WHERE read the allowed rows only (max prio 5, not 4+).
            (
                "UPDATE tickets SET prio = (SELECT max(prio) + 10 FROM tickets WHERE tenant <> 'acme' OR prio < 3) \
                 WHERE id IN (SELECT ticket FROM notes)",
                &[],
                "1|a|1 2|z|12 3|c|3 4|d|4 5|z|12",
            ),
            (
                "UPDATE tickets SET body = n.txt FROM notes n WHERE n.ticket = tickets.id RETURNING tickets.id",
                &["2", "5"],
                "1|a|1 2|n|12 3|c|3 4|d|4 5|m|12",
            ),
            (
                "DELETE FROM tickets USING notes n WHERE n.ticket = tickets.id AND n.txt = 'n' RETURNING tickets.id",
                &["2"],
                "1|a|1 3|c|3 4|d|4 5|m|12",
            ),
            (
                "DELETE FROM tickets WHERE id = 4",
                &[],
                "1|a|1 3|c|3 4|d|4 5|m|12",
            ),
            (
                "DELETE FROM tickets t WHERE t.body = 'a' OR t.id = 3 OR (t.prio > 3 AND t.prio < 5)",
                &[],
                "3|c|3 4|d|4 5|m|12",
            ),
            (
                "WITH gone AS (DELETE FROM tickets WHERE id IN (3, 5) RETURNING id) SELECT id FROM gone",
                &["5"],
                "3|c|3 4|d|4",
            ),
        ];
        for (sql, out_want, after) in steps {
            let (out, err) = q(sql);
            assert!(!err.contains("ERROR"), "{sql}: {err}");
            let mut got = lines(&out);
            got.sort_unstable();
            assert_eq!(got, *out_want, "{sql}: {err}");
            assert_eq!(state(), *after, "after {sql}");
        }
    }
}

/// Regression (issue 14): an allow for some rows that the guard could not apply was answered
/// as a deny while its record said `allow`. The record is the answer.
#[test]
fn a_write_that_cannot_be_narrowed_is_recorded_as_the_deny_it_is_answered() {
    let db = test_db("honest");
    ticket_tables(&db);
    let (mut proxy, keys) = start(&db, &ticket_policies(TICKET_READS_ROWS), &["writer"]);
    let (out, err) = psql(
        &proxy,
        &db,
        "writer",
        &keys[0],
        &["UPDATE tickets SET tenant = 'other' WHERE id = 1"],
    );
    assert!(out.is_empty() && err.contains("42501"), "{out} {err}");
    assert!(err.contains("reads the column `tenant`"), "{err}");
    let ids = decision_ids(&err);
    assert_eq!(ids.len(), 1, "{err}");
    assert_eq!(db.psql("SELECT tenant FROM tickets WHERE id = 1"), "acme\n");
    let recs = records(&mut proxy);
    let rec = recs
        .iter()
        .find(|r| r["decision_id"].as_str() == Some(ids[0].as_str()))
        .unwrap_or_else(|| panic!("no record {} in {recs:?}", ids[0]));
    assert_eq!(rec["outcome"], "deny", "{rec}");
    let admin = rec["reason_admin"].as_str().unwrap();
    assert!(admin.contains("reads the column `tenant`"), "{rec}");
    // Every record of an allow is of a statement that ran.
    for r in &recs {
        if r["outcome"] == "allow" {
            assert_ne!(r["action"], "update", "{r}");
        }
    }
}

/// `SELECT … FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE` takes row locks: an agent allowed
/// only `select` is denied them; one allowed `update` too takes them, on its rows only.
#[test]
fn row_locks_need_update_on_the_locked_tables() {
    let db = test_db("rowlocks");
    let (proxy, keys) = start(&db, READER, &["reader"]);
    for strength in ["UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE"] {
        for sql in [
            format!("SELECT * FROM t FOR {strength}"),
            format!("SELECT id FROM t WHERE id IN (SELECT id FROM t FOR {strength})"),
            format!("SELECT * FROM t x FOR {strength} OF x SKIP LOCKED"),
        ] {
            let (out, err) = psql(&proxy, &db, "reader", &keys[0], &[&sql]);
            assert!(
                out.is_empty() && err.contains("42501"),
                "{sql}: {out} {err}"
            );
        }
    }
    let (out, err) = psql(
        &proxy,
        &db,
        "reader",
        &keys[0],
        &["SELECT id FROM t ORDER BY id"],
    );
    assert_eq!(lines(&out), ["1", "2", "3"], "{err}");

    // With `update` on the rows, the lock is taken on the allowed rows only.
    ticket_tables(&db);
    let (proxy, keys) = start(&db, &ticket_policies(TICKET_READS_ROWS), &["writer"]);
    let (out, err) = psql(
        &proxy,
        &db,
        "writer",
        &keys[0],
        &["SELECT id FROM tickets WHERE id IN (1, 3) ORDER BY id FOR UPDATE"],
    );
    assert_eq!(lines(&out), ["1"], "{err}");
    // Locking notes too needs `update` on them, which this agent has.
    let (out, err) = psql(
        &proxy,
        &db,
        "writer",
        &keys[0],
        &["SELECT t.id FROM tickets t JOIN notes n ON n.ticket = t.id ORDER BY 1 FOR SHARE"],
    );
    assert_eq!(lines(&out), ["2", "5"], "{err}");
    let (out, err) = psql(
        &proxy,
        &db,
        "writer",
        &keys[0],
        &["SELECT t.id FROM tickets t JOIN notes n ON n.ticket = t.id ORDER BY 1 FOR SHARE OF t"],
    );
    assert_eq!(lines(&out), ["2", "5"], "{err}");
}

/// A row permit whose condition can never hold (Cedar keeps `x && false`) used to answer an
/// empty result, which an agent reads as "there are no rows". It is a deny with a reason,
/// whatever the order of the conditions.
#[test]
fn a_row_filter_that_can_never_hold_is_a_deny_not_an_empty_answer() {
    let db = test_db("neverrows");
    ticket_tables(&db);
    for condition in [
        r#"resource.tenant == "acme" && ["id", "body"].containsAll(context.columns)"#,
        r#"["id", "body"].containsAll(context.columns) && resource.tenant == "acme""#,
        r#"resource.tenant == "acme" && (resource.prio > 0 && ["id", "body"].containsAll(context.columns))"#,
        r#"if ["id", "body"].containsAll(context.columns) then resource.tenant == "acme" else false"#,
        r#"if resource.tenant == "acme" then ["id", "body"].containsAll(context.columns) else false"#,
    ] {
        let policies = format!(
            r#"
@id("narrow-reads")
permit (principal, action == Action::"select", resource is Row in Table::"DB.public.tickets")
when {{ {condition} }};
"#
        );
        let (mut proxy, keys) = start(&db, &policies, &["reader"]);
        let (out, err) = psql(
            &proxy,
            &db,
            "reader",
            &keys[0],
            &["SELECT id FROM tickets ORDER BY id"],
        );
        assert_eq!(lines(&out), ["1", "2", "5"], "{condition}: {err}");
        let (out, err) = psql(
            &proxy,
            &db,
            "reader",
            &keys[0],
            &["SELECT id, prio FROM tickets"],
        );
        assert!(out.is_empty(), "{condition}: {out}");
        assert!(err.contains("42501"), "{condition}: {err}");
        let id = decision_ids(&err).pop().unwrap();
        let recs = records(&mut proxy);
        let rec = recs
            .iter()
            .find(|r| r["decision_id"] == id.as_str())
            .unwrap();
        assert_eq!(rec["outcome"], "deny", "{rec}");
    }
    // Where Cedar keeps the condition (`x && false`), the record names the policy and why.
    let policies = r#"
@id("narrow-reads")
permit (principal, action == Action::"select", resource is Row in Table::"DB.public.tickets")
when { resource.tenant == "acme" && ["id", "body"].containsAll(context.columns) };
"#;
    let (mut proxy, keys) = start(&db, policies, &["reader"]);
    let (_, err) = psql(
        &proxy,
        &db,
        "reader",
        &keys[0],
        &["SELECT prio FROM tickets"],
    );
    assert!(err.contains("allow no row"), "{err}");
    let id = decision_ids(&err).pop().unwrap();
    let recs = records(&mut proxy);
    let rec = recs
        .iter()
        .find(|r| r["decision_id"] == id.as_str())
        .unwrap();
    let admin = rec["reason_admin"].as_str().unwrap();
    assert!(
        admin.contains("`narrow-reads`") && admin.contains("can never hold"),
        "{rec}"
    );
}

const TRIFECTA: &str = r#"
@id("read-customers")
@session_label("private_data")
permit (principal == Agent::"bot", action == Action::"select", resource == Table::"DB.public.customers");

@id("read-t")
@limit("2/minute")
permit (principal == Agent::"bot", action == Action::"select", resource == Table::"DB.public.t");

@id("untrusted-tool")
@session_label("untrusted_input")
permit (principal == Agent::"bot", action == Action::"call_tool", resource is Tool)
when { resource.name == "get-sum" };

@id("send-tool")
permit (principal == Agent::"bot", action == Action::"call_tool", resource is Tool)
when { resource.name == "echo" };

@id("list-tools")
permit (principal == Agent::"bot", action == Action::"list_tools", resource is Tool);

@id("refund-budget")
@budget("totals.amount: 1000/day")
permit (principal == Agent::"bot", action == Action::"insert", resource == Table::"DB.public.refunds");

@id("deletes-need-approval")
@require_approval
permit (principal == Agent::"bot", action == Action::"delete", resource == Table::"DB.public.t");

@id("lethal-trifecta")
@agent_reason("nothing may be sent out after reading private data and untrusted input")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "echo"
       && context.session.labels.containsAll(["private_data", "untrusted_input"]) };
"#;

/// The "lethal trifecta" across enforcement points: a SQL read (private data) and an MCP
/// call (untrusted input) in one session, named by the agent's launcher, make an MCP send a
/// deny; a rate limit on a table is answered with SQLSTATE 53400.
#[test]
fn session_labels_span_the_sql_guard_and_the_mcp_gateway() {
    let db = test_db("trifecta");
    db.psql(
        "CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'ada'); \
         CREATE TABLE refunds (customer int, amount numeric(10, 2))",
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = register_with(&data, "bot", "{}");
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("runtime.cedar"), TRIFECTA.replace("DB", db.name())).unwrap();
    let served = ARBITER.serve(&pol, &data, &[]);
    let proxy = launch(
        tempfile::tempdir().unwrap(),
        data.clone(),
        &db.url(),
        &[
            "--pdp".into(),
            served.url().into(),
            "--sum".into(),
            "amount".into(),
        ],
    );
    let sql = |session: &str, statement: &str| {
        let out = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "VERBOSITY=verbose",
                "-c",
                statement,
            ])
            .arg(format!(
                "host=127.0.0.1 port={} user=bot password={key} dbname={} sslmode=disable",
                proxy.port,
                db.name()
            ))
            .env("LC_ALL", "C")
            .env("PGOPTIONS", format!("-c arbiter.session={session}"))
            .output()
            .unwrap();
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let pins = dir.path().join("pins");
    let mcp = |session: &str, steps: Value| -> Value {
        let script = serde_json::json!({
            "transport": "stdio",
            "command": ARBITER.path(),
            "args": ["mcp", "stdio", "--server-name", "everything", "--pdp", served.url(),
                     "--data", pins, "--", arbiter_testkit::npm_bin("mcp-server-everything"), "stdio"],
            "env": {"ARBITER_AGENT_KEY": key, "ARBITER_LOG": "warn", "ARBITER_SESSION": session},
            "steps": steps,
        });
        let out = arbiter_testkit::run_with_input(
            Command::new(arbiter_testkit::python())
                .arg(arbiter_testkit::workspace_root().join("tests/mcp/client.py"))
                .arg("-"),
            script.to_string().as_bytes(),
        );
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("client.py: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        report["results"].clone()
    };
    let text = |r: &Value| {
        r["value"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // Untrusted input over MCP, then sending is still fine.
    let r = mcp(
        "trip",
        serde_json::json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "get-sum", "arguments": {"a": 1, "b": 2}},
            {"op": "call_tool", "name": "echo", "arguments": {"message": "ok"}},
        ]),
    );
    assert!(text(&r[1]).contains('3'), "{}", r[1]);
    assert_ne!(r[2]["value"]["isError"], true, "{}", r[2]);
    // Private data over SQL, in the same session.
    let (out, err) = sql("trip", "SELECT name FROM customers");
    assert_eq!(out.trim(), "ada", "{err}");
    // Now a send is the lethal trifecta: denied, in that session only.
    let r = mcp(
        "trip",
        serde_json::json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "leak"}}]),
    );
    assert_eq!(r[0]["value"]["isError"], true, "{}", r[0]);
    assert!(text(&r[0]).contains("nothing may be sent out"), "{}", r[0]);
    let r = mcp(
        "elsewhere",
        serde_json::json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "ok"}}]),
    );
    assert_ne!(r[0]["value"]["isError"], true, "{}", r[0]);

    // A budget of 1,000 a day over the refunds' amounts, summed exactly over the rows of each
    // insert; the insert that would pass it is SQLSTATE 53400 and writes nothing.
    let (_, err) = sql(
        "x",
        "INSERT INTO refunds (customer, amount) VALUES (1, 600)",
    );
    assert!(!err.contains("ERROR"), "{err}");
    let (_, err) = sql(
        "y",
        "INSERT INTO refunds (customer, amount) VALUES (1, 300.25), (2, 99.75)",
    );
    assert!(!err.contains("ERROR"), "{err}");
    let (_, err) = sql(
        "x",
        "INSERT INTO refunds (customer, amount) VALUES (3, 0.01)",
    );
    assert!(
        err.contains("53400") && err.contains("budget exceeded: 0 of 1000 left"),
        "{err}"
    );
    // An amount the guard cannot add up (a string, an expression, no column list) is a
    // deny, not a free refund.
    for statement in [
        "INSERT INTO refunds (customer, amount) VALUES (3, '0')",
        "INSERT INTO refunds (customer, amount) VALUES (3, 1 - 1)",
        "INSERT INTO refunds VALUES (3, 0)",
    ] {
        let (_, err) = sql("x", statement);
        assert!(
            err.contains("`totals.amount` must be a non-negative number"),
            "{statement}: {err}"
        );
    }
    assert_eq!(
        db.psql("SELECT count(*), sum(amount) FROM refunds"),
        "3|1000.00\n"
    );

    // A limit of two reads a minute on `t`: the third is SQLSTATE 53400 with the reason.
    for _ in 0..2 {
        let (out, err) = sql("x", "SELECT count(*) FROM t");
        assert_eq!(out.trim(), "3", "{err}");
    }
    let (out, err) = sql("x", "SELECT count(*) FROM t");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("53400") && err.contains("rate limit reached; retry in"),
        "{err}"
    );
    // A delete that needs a person's approval: the error names it; approved, the identical
    // statement runs once, and the same statement again waits for a new approval.
    let (out, err) = sql("x", "DELETE FROM t WHERE id = 3");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("approval required: approval apr_"), "{err}");
    ARBITER.approve(
        &data,
        &arbiter_testkit::approval_id(&err),
        "dba@example.com",
    );
    let (_, err) = sql("y", "DELETE FROM t WHERE id = 2");
    assert!(
        err.contains("approval required"),
        "another statement is not approved: {err}"
    );
    let (_, err) = sql("y", "DELETE FROM t WHERE id = 3");
    let listed = arbiter()
        .args(["approval", "list", "--state", "all", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !err.contains("ERROR"),
        "{err}\n{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    assert_eq!(db.psql("SELECT count(*) FROM t"), "2\n");
    let (_, err) = sql("y", "DELETE FROM t WHERE id = 3");
    assert!(err.contains("approval required"), "{err}");
    // A session id that is not one is refused at startup.
    let (_, err) = sql("bad\u{7f}id", "SELECT 1");
    assert!(err.contains("arbiter.session"), "{err}");
    drop(proxy);
    drop(served);
    let recs = ARBITER.records(&data);
    let read = recs
        .iter()
        .find(|r| {
            r["action"] == "select"
                && r["outcome"] == "allow"
                && r["resource"]["id"]
                    .as_str()
                    .unwrap()
                    .ends_with(".customers")
        })
        .expect("the SQL read is recorded");
    assert_eq!(read["context"]["session_effects"]["session"], "trip");
    assert_eq!(
        read["context"]["session_effects"]["labels"],
        serde_json::json!(["private_data"])
    );
}

// ---- reads sent ahead of their records ---------------------------------------------------

const READS_AND_INSERTS: &str = r#"
permit (principal == Agent::"bot", action in [Action::"select", Action::"insert"], resource is Table)
when { resource.database == "DB" };
"#;

/// The guard in this process, on an embedded decision point whose decision log fails when
/// `fault` says so; stops when dropped.
struct InProcess {
    port: u16,
    key: String,
    data: PathBuf,
    fault: arbiter_log::FaultSwitch,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Starts the guard on `runtime` in front of `db`, deciding with `decider`; its port.
fn serve_in(
    runtime: &tokio::runtime::Runtime,
    db: &TestDb,
    decider: impl arbiter_pep::Decider + 'static,
    configure: impl FnOnce(&mut arbiter_sql::proxy::ProxyConfig),
) -> u16 {
    let mut config = arbiter_sql::proxy::ProxyConfig::new(
        arbiter_sql::proxy::Upstream::parse(&db.url()).unwrap(),
    );
    configure(&mut config);
    let proxy = arbiter_sql::proxy::Proxy::new(config, std::sync::Arc::new(decider));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(proxy.serve(listener));
    port
}

fn in_process(db: &TestDb, strict_order: bool) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = register_with(&data, "bot", "{}");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("p.cedar"),
        READS_AND_INSERTS.replace("DB", db.name()),
    )
    .unwrap();
    let fault = arbiter_log::FaultSwitch::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let pdp = arbiter_pdp::local::open_local(arbiter_pdp::local::LocalConfig {
        policies,
        data: data.clone(),
        jwt_issuers: None,
        recorder: arbiter_pdp::RecorderSettings {
            fault: Some(fault.hook()),
            ..arbiter_pdp::RecorderSettings::default()
        },
        store: None,
    })
    .unwrap();
    let decider =
        arbiter_pep::LocalDecider::new(std::sync::Arc::new(pdp), format!("sql:{}", db.name()));
    let port = serve_in(&runtime, db, decider, |c| c.strict_order = strict_order);
    InProcess {
        port,
        key,
        data,
        fault,
        _runtime: runtime,
        _dir: dir,
    }
}

#[test]
fn a_read_sent_ahead_gives_its_rows_only_with_a_durable_record() {
    let db = test_db("ahead");
    for strict_order in [false, true] {
        db.psql("DELETE FROM t WHERE id > 3");
        let guard = in_process(&db, strict_order);
        let mut raw = Raw::connect(guard.port, db.name(), "bot", &guard.key);
        let ms = simple(&mut raw, "SELECT id FROM t ORDER BY id");
        assert_eq!(data_rows(&ms), ["1", "2", "3"], "{}", tags(&ms));

        // The log fails at its next write: the read's rows never reach the agent.
        guard
            .fault
            .fail_next_write
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ms = simple(&mut raw, "SELECT name FROM t ORDER BY id");
        assert_eq!(tags(&ms), "EZ", "strict_order={strict_order}");
        let error = error_of(&ms);
        assert!(
            error
                .iter()
                .any(|(k, v)| *k == b'M' && v.contains("could not be recorded")),
            "{error:?}"
        );
        // The log stays failed: a write is refused before the database sees it.
        let ms = simple(&mut raw, "INSERT INTO t (id, name) VALUES (9, 'x')");
        assert_eq!(tags(&ms), "EZ", "strict_order={strict_order}");
        raw.send(b'X', Vec::new());
        assert_eq!(db.psql("SELECT count(*) FROM t WHERE id = 9"), "0\n");

        // Every answer the agent received has its record; the failed ones have none.
        drop(guard._runtime);
        let records = ARBITER.records(&guard.data);
        let reads: Vec<&Value> = records.iter().filter(|r| r["action"] == "select").collect();
        assert_eq!(reads.len(), 1, "{records:?}");
        assert_eq!(reads[0]["outcome"], "allow");
    }
}

/// A decision point that allows everything and reports its records durable only after
/// `delay`, or never (`fail`).
#[derive(Debug)]
struct SlowRecords {
    delay: Duration,
    fail: bool,
}

impl arbiter_pep::Decider for SlowRecords {
    fn decide<'a>(
        &'a self,
        _credential: Option<&'a str>,
        asks: Vec<arbiter_pep::Ask>,
    ) -> arbiter_pep::BoxFuture<'a, Result<Vec<arbiter_pep::Verdict>, arbiter_pep::DecideError>>
    {
        let verdicts = asks
            .iter()
            .map(|_| arbiter_pep::Verdict {
                allow: true,
                decision_id: Some("d-1".into()),
                ..arbiter_pep::Verdict::default()
            })
            .collect();
        Box::pin(async move { Ok(verdicts) })
    }

    fn decide_ahead<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<arbiter_pep::Ask>,
        _settle: arbiter_pep::Settle<'a>,
    ) -> arbiter_pep::BoxFuture<'a, Result<arbiter_pep::Ahead, arbiter_pep::DecideError>> {
        let (delay, fail) = (self.delay, self.fail);
        Box::pin(async move {
            let verdicts = self.decide(credential, asks).await?;
            let durable: arbiter_pep::Durable = Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(arbiter_pep::Verdict::refused("the record failed"));
                }
                Ok(())
            });
            Ok((verdicts, Some(durable)))
        })
    }

    fn authenticate<'a>(
        &'a self,
        _credential: &'a str,
    ) -> arbiter_pep::BoxFuture<'a, Result<Option<String>, arbiter_pep::AuthError>> {
        Box::pin(async { Ok(Some("bot".to_owned())) })
    }
}

#[test]
fn a_read_sent_ahead_is_held_until_its_record_is_durable() {
    let db = test_db("held");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = |decider: SlowRecords, timeout: Duration| {
        let port = serve_in(&runtime, &db, decider, |c| c.decision_timeout = timeout);
        Raw::connect(port, db.name(), "bot", "k")
    };
    let delay = Duration::from_millis(400);
    let mut raw = start(SlowRecords { delay, fail: false }, PATIENCE);
    let began = std::time::Instant::now();
    let ms = simple(&mut raw, "SELECT id FROM t ORDER BY id");
    assert!(
        began.elapsed() >= delay,
        "rows came before the record was durable"
    );
    assert_eq!(data_rows(&ms), ["1", "2", "3"]);
    // Not a plain read (it locks rows): decided in the strict order, nothing to hold.
    let ms = simple(&mut raw, "SELECT id FROM t ORDER BY id FOR UPDATE");
    assert_eq!(data_rows(&ms), ["1", "2", "3"]);
    // Pipelined: each answer waits for its own record, and they come in order.
    for sql in [
        "SELECT id FROM t WHERE id = 1",
        "SELECT id FROM t WHERE id = 2 FOR UPDATE",
        "SELECT id FROM t WHERE id = 3",
    ] {
        let mut q = Vec::new();
        wire::put_cstr(&mut q, sql);
        raw.send(b'Q', q);
    }
    let rows: Vec<Vec<String>> = (0..3).map(|_| data_rows(&raw.until_ready())).collect();
    assert_eq!(rows, [["1"], ["2"], ["3"]]);

    let mut raw = start(SlowRecords { delay, fail: true }, PATIENCE);
    let ms = simple(&mut raw, "SELECT id FROM t ORDER BY id");
    assert_eq!(tags(&ms), "EZ");
    // A record that is not durable within the decision deadline: the rows are discarded.
    let mut raw = start(
        SlowRecords {
            delay: Duration::from_secs(30),
            fail: false,
        },
        Duration::from_millis(200),
    );
    let ms = simple(&mut raw, "SELECT id FROM t ORDER BY id");
    assert_eq!(tags(&ms), "EZ");
    assert!(
        error_of(&ms)
            .iter()
            .any(|(k, v)| *k == b'M' && v.contains("in time")),
        "{:?}",
        error_of(&ms)
    );
}
