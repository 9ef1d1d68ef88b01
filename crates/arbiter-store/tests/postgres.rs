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

// ---- TLS ----

/// The store URL of `db` with `params` added to its query.
fn with_params(db: &TestDb, params: &str) -> String {
    let url = db.url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// The store URL of `db`, connecting to `localhost` rather than `127.0.0.1`.
fn by_name(url: &str) -> String {
    assert!(
        url.contains("@127.0.0.1:"),
        "these tests expect ARBITER_TEST_POSTGRES_URL on 127.0.0.1: {url}"
    );
    url.replacen("@127.0.0.1:", "@localhost:", 1)
}

/// The server's certificate (`ssl_cert_file`), a trust anchor for the checks of `verify-ca`
/// and `verify-full`: it is self-signed.
fn server_certificate(db: &TestDb) -> std::path::PathBuf {
    assert_eq!(
        db.psql("SHOW ssl").trim(),
        "on",
        "the server must offer TLS"
    );
    let file = std::path::PathBuf::from(db.psql("SHOW ssl_cert_file").trim());
    if file.is_absolute() {
        file
    } else {
        std::path::PathBuf::from(db.psql("SHOW data_directory").trim()).join(file)
    }
}

/// `(backends, encrypted ones)` of the store's connections to `db`, as the server sees them
/// (read from another connection, which is left out).
fn encrypted_backends(db: &TestDb) -> (u32, u32) {
    let out = db.psql(&format!(
        "SELECT count(*), count(*) FILTER (WHERE ssl) \
         FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = '{}' AND application_name = 'arbiter' AND pid <> pg_backend_pid()",
        db.name()
    ));
    let (all, tls) = out.trim().split_once('|').unwrap();
    (all.parse().unwrap(), tls.parse().unwrap())
}

/// Opens a store on `url` and uses a connection of each kind: the writer, a reader, a keyed
/// writer (the listener is opened with the store).
fn open_and_use(url: &str) -> PgStore {
    let store = PgStore::open(url, &options()).unwrap();
    store
        .register_agent(&new_agent("bot"), &admin(), T0)
        .unwrap();
    assert!(store.agent("bot").unwrap().is_some());
    store.generation().unwrap();
    store
}

#[test]
fn sslmode_require_encrypts_every_connection_reconnections_included() {
    let db = fresh_db();
    let store = open_and_use(&with_params(&db, "sslmode=require"));
    let (all, tls) = encrypted_backends(&db);
    assert!(all >= 3, "the writer, the listener and a reader: {all}");
    assert_eq!(tls, all, "every backend of the store is encrypted");

    // Every connection is cut; those that come back are encrypted too.
    db.psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name()
    ));
    until(Duration::from_secs(5), || {
        store.agent("bot").is_ok()
            && store
                .register_agent(
                    &new_agent(&format!("bot-{}", NEXT.fetch_add(1, Ordering::SeqCst))),
                    &admin(),
                    T0,
                )
                .is_ok()
    })
    .expect("the store reconnects");
    until(Duration::from_secs(5), || encrypted_backends(&db).0 >= 3)
        .expect("the listener reconnects");
    let (all, tls) = encrypted_backends(&db);
    assert_eq!(tls, all, "reconnections are encrypted: {tls} of {all}");
}

#[test]
fn sslmode_disable_leaves_every_connection_in_the_clear() {
    let db = fresh_db();
    let _store = open_and_use(&with_params(&db, "sslmode=disable"));
    let (all, tls) = encrypted_backends(&db);
    assert!(all >= 3, "{all}");
    assert_eq!(tls, 0, "no backend of the store is encrypted");
}

#[test]
fn verify_full_opens_for_the_name_the_certificate_holds_and_refuses_another() {
    let db = fresh_db();
    let cert = server_certificate(&db);
    let params = format!("sslmode=verify-full&sslrootcert={}", cert.display());
    let _store = open_and_use(&by_name(&with_params(&db, &params)));
    let (all, tls) = encrypted_backends(&db);
    assert_eq!(tls, all, "{tls} of {all}");

    // The certificate names `localhost`, not `127.0.0.1`.
    let err = PgStore::open(&with_params(&db, &params), &options()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
    assert!(text.contains("host name does not match"), "{text}");
    assert!(text.contains("\"127.0.0.1\""), "{text}");
}

#[test]
fn verify_ca_checks_the_chain_and_not_the_name() {
    let db = fresh_db();
    let cert = server_certificate(&db);
    let _store = open_and_use(&with_params(
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", cert.display()),
    ));
    let (all, tls) = encrypted_backends(&db);
    assert_eq!(tls, all, "{tls} of {all}");

    // A root certificate that did not sign the server's.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=other", "-keyout"])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in ["verify-ca", "verify-full", "require"] {
        let url = by_name(&with_params(
            &db,
            &format!("sslmode={mode}&sslrootcert={}", other.display()),
        ));
        let err = PgStore::open(&url, &options()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
        assert!(
            text.contains(&format!(
                "the server's certificate is not signed by a certificate of sslrootcert `{}`",
                other.display()
            )),
            "{mode}: {text}"
        );
    }
}

#[test]
fn bad_tls_settings_are_named_without_the_password() {
    let db = fresh_db();
    let base = db
        .url()
        .replacen("postgres://postgres@", "postgres://postgres:secret-pw@", 1);
    assert!(base.contains("secret-pw"), "{base}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            "sslmode=verify_full".to_owned(),
            "unknown sslmode `verify_full`",
        ),
        // Client certificates are not supported: refused, not ignored.
        ("sslcert=/client.pem".to_owned(), "unknown option `sslcert`"),
        (
            "sslmode=verify-full".to_owned(),
            "sslmode `verify-full` checks the server's certificate against sslrootcert, which is \
             missing",
        ),
        (
            format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            "cannot read sslrootcert",
        ),
    ];
    for (params, expected) in cases {
        let url = format!("{base}?{params}");
        let err = PgStore::open(&url, &options()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Invalid { .. }), "{text}");
        assert!(text.contains(expected), "{params}: {text}");
        assert!(!text.contains("secret-pw"), "the password leaked: {text}");
    }
    // The URL's form is checked before anything is read.
    let err = arbiter_store::Location::parse_url(&format!("{base}?sslmode=verify-ca"), options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("sslrootcert"), "{err}");
    assert!(!err.contains("secret-pw"), "{err}");
    // Nothing was connected.
    assert_eq!(encrypted_backends(&db).0, 0);
}

/// A PostgreSQL server of one test's own, asking for a SCRAM password over TCP (the shared
/// test server trusts every local connection, so it never authenticates one), stopped when
/// dropped.
struct PasswordServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PasswordServer {
    const PASSWORD: &str = "secret-pw";

    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs in /usr/lib/postgresql/<version>/bin")
            .map(|e| e.unwrap().path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("initdb in /usr/lib/postgresql/<version>/bin");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self { dir, bin, port };
        std::fs::write(server.dir.path().join("pw"), Self::PASSWORD).unwrap();
        server.give_to_server(server.dir.path());
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                &server.dir.path().join("pw").display().to_string(),
            ],
        );
        server.certificate(&["-newkey", "rsa:2048", "-sha256"]);
        let settings = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
            server.dir.path().display()
        );
        let log = server.dir.path().join("log").display().to_string();
        server.run(
            "pg_ctl",
            &[
                "-D",
                &server.data(),
                "-l",
                &log,
                "-o",
                &settings,
                "-w",
                "start",
            ],
        );
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-h"])
            .arg(server.dir.path())
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-c", "CREATE DATABASE arbiter"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of the server's programs, as the `postgres` user when this is root (the server
    /// refuses to run as root).
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let out = if root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn give_to_server(&self, path: &std::path::Path) {
        if root() {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }

    /// A new self-signed certificate for `localhost`, made with the `openssl req` key options
    /// `key` (the algorithm, and the hash the certificate is signed with).
    fn certificate(&self, key: &[&str]) {
        let data = std::path::Path::new(&self.data()).to_owned();
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .args(key)
            .arg("-keyout")
            .arg(data.join("server.key"))
            .arg("-out")
            .arg(data.join("server.crt"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in ["server.key", "server.crt"] {
            self.give_to_server(&data.join(file));
        }
        let mut mode = std::fs::metadata(data.join("server.key"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o600);
        std::fs::set_permissions(data.join("server.key"), mode).unwrap();
    }

    /// Serves a new certificate (made as [`PasswordServer::certificate`] makes it).
    fn serve_certificate(&self, key: &[&str]) {
        self.certificate(key);
        // With the log file again: otherwise the server writes to, and holds open, this
        // program's pipe.
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-m",
                "fast",
                "restart",
            ],
        );
    }

    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres:{}@localhost:{}/arbiter?{params}",
            Self::PASSWORD,
            self.port
        )
    }
}

impl Drop for PasswordServer {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&program).args(args).output()
        };
    }
}

fn root() -> bool {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn scram_over_tls_binds_the_password_exchange_to_the_servers_certificate() {
    let server = PasswordServer::start();
    // `channel_binding=require`: the client refuses SCRAM without channel binding, and the
    // server refuses a binding that is not its certificate's hash, so opening proves both.
    let cases: [(&[&str], bool); 3] = [
        (&["-newkey", "rsa:2048", "-sha256"], true),
        // Hashed with SHA-384 (RFC 5929: the hash of the certificate's signature).
        (
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-sha384",
            ],
            true,
        ),
        // Ed25519 names no hash: PostgreSQL cannot bind to it, and neither does the store.
        (&["-newkey", "ed25519"], false),
    ];
    for (i, (key, binds)) in cases.into_iter().enumerate() {
        if i > 0 {
            server.serve_certificate(key);
        }
        let bound = PgStore::open(
            &server.url("sslmode=require&channel_binding=require"),
            &options(),
        );
        match (bound, binds) {
            (Ok(store), true) => {
                store
                    .register_agent(&new_agent(&format!("bot-{i}")), &admin(), T0)
                    .unwrap();
            }
            (Err(e), false) => {
                assert!(e.to_string().contains("channel binding"), "{key:?}: {e}");
            }
            (Ok(_), false) => panic!("{key:?}: bound to a certificate that names no hash"),
            (Err(e), true) => panic!("{key:?}: {e}"),
        }
        // Without requiring it, SCRAM authenticates either way.
        let store = PgStore::open(&server.url("sslmode=require"), &options()).unwrap();
        assert!(store.health().up, "{key:?}");
        // And a wrong password is refused, so the password was checked.
        let wrong = server
            .url("sslmode=require")
            .replace(PasswordServer::PASSWORD, "wrong-pw");
        let err = PgStore::open(&wrong, &options()).unwrap_err().to_string();
        assert!(err.contains("password authentication failed"), "{err}");
    }
}
