//! [`PgStore`]: the [`Store`](crate::Store) on a PostgreSQL database shared by a fleet of
//! nodes.
//!
//! The same rules as the embedded store ([`crate::backend`]), run on PostgreSQL:
//!
//! - **Transactions.** A write takes a transaction-scoped advisory lock first, so writers of
//!   every node take turns exactly as SQLite's `BEGIN IMMEDIATE` makes processes take turns on
//!   one file: the audit chain stays one chain, an approval is used once fleet-wide, a pin is
//!   agreed once. A read runs in one `REPEATABLE READ READ ONLY` snapshot.
//! - **Change feed.** Every change a cache must see moves the `generation` counter (triggers,
//!   as in SQLite) and notifies channel [`CHANNEL`] with the new value. A listener connection
//!   per node follows the notifications and reads the counter every
//!   [`PgOptions::reconcile`] to catch any it missed, so [`Store::generation_now`] answers from
//!   memory: a change made on one node is seen by every node within milliseconds.
//! - **Losing the database.** The listener confirms the database every
//!   [`PgOptions::reconcile`]. Past [`PgOptions::grace`] without a confirmation,
//!   [`Store::generation_now`] and [`Store::generation`] fail with
//!   [`StoreError::Unavailable`], so credentials a node cannot confirm are denied, and
//!   [`Store::health`] says why. Reconnection is automatic.
//! - **Threads.** Each connection lives on its own thread and runs the statements sent to it,
//!   so a call may come from any thread, an async runtime's included (it blocks that thread
//!   for the round trip, as an SQLite call blocks for the disk).
//! - **TLS.** `sslmode` and `sslrootcert` of the URL, as libpq reads them ([`crate::pg_tls`]);
//!   every connection of a store, reconnections included, is made by one `Connector`.
//!
//! [`Store::generation_now`]: crate::Store::generation_now
//! [`Store::generation`]: crate::Store::generation
//! [`Store::health`]: crate::Store::health

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, Statement};

use crate::backend::Backend;
use crate::db::{self, Cell, Db, DbError, Ran, Val};
use crate::pg_tls::{self, MakeRustls, TlsOptions};
use crate::{Health, StoreError, pg_schema};

/// The `LISTEN` channel that carries the change counter.
pub const CHANNEL: &str = "arbiter_store";

/// The advisory lock key writers take (`"ARBS"`), in every transaction that writes.
const WRITE_LOCK: i64 = 0x4152_4253;

/// The class of the advisory locks of [`PgStore::write_keyed`] (the two-key form, so they never
/// meet [`WRITE_LOCK`]).
const KEYED_LOCKS: i32 = 0x4152_4b43;

/// The advisory lock of a counter key: the first four bytes of its SHA-256.
fn key_lock(key: &str) -> i32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Settings of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How often the listener confirms the database and rereads the counter.
    pub reconcile: Duration,
    /// How long a node keeps answering from what it knows after it last confirmed the
    /// database; past it, credential checks fail closed.
    pub grace: Duration,
    /// Connections for reads (besides one for writes and one for the change feed).
    pub readers: usize,
    /// Connections for counter charges (`@limit`, `@budget`), opened on first use: charges to
    /// different counters run on different ones in parallel.
    pub keyed_writers: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            reconcile: Duration::from_millis(500),
            grace: Duration::from_secs(5),
            readers: 2,
            keyed_writers: 4,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The identity store on a PostgreSQL database.
pub struct PgStore {
    writer: Mutex<Conn>,
    /// Writes under a key's own lock ([`PgStore::write_keyed`]), so they do not queue behind
    /// the other writes of this node.
    writers_for_keys: Vec<Mutex<Conn>>,
    readers: Vec<Mutex<Conn>>,
    next_reader: AtomicU64,
    feed: Arc<Feed>,
    /// Where, without the password (for messages).
    display: String,
    grace: Duration,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.display)
            .finish_non_exhaustive()
    }
}

/// What the listener knows.
#[derive(Debug)]
struct Feed {
    generation: AtomicU64,
    /// When the database was last confirmed (`Instant` of the store's start + this many µs).
    confirmed_us: AtomicU64,
    start: Instant,
    problem: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Feed {
    fn confirm(&self, generation: u64) {
        self.generation.store(generation, Ordering::SeqCst);
        let now = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.confirmed_us.store(now, Ordering::SeqCst);
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn fail(&self, problem: String) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem);
    }

    fn age(&self) -> Duration {
        let confirmed = Duration::from_micros(self.confirmed_us.load(Ordering::SeqCst));
        self.start.elapsed().saturating_sub(confirmed)
    }

    fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, the
    /// `libpq` URL and key-value forms, with libpq's `sslmode` and `sslrootcert`), brings its
    /// schema up to date, and starts following its changes.
    ///
    /// A database holding tables that are not an Arbiter store, or an Arbiter store of a
    /// newer schema, is refused and left untouched.
    pub fn open(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        // Connecting runs a runtime of its own: on a thread of its own too, so that a caller on
        // an async runtime may open a store.
        thread::scope(|scope| {
            thread::Builder::new()
                .name("arbiter-store-open".into())
                .spawn_scoped(scope, || Self::open_here(url, options))
                .map_err(|e| StoreError::Unavailable(format!("cannot start a thread: {e}")))?
                .join()
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "opening the store panicked".to_owned(),
                    ))
                })
        })
    }

    fn open_here(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let connector = Connector::new(url, options)?;
        let display = connector.display.clone();
        connector.warn_if_unverified();
        let mut first = Session::connect(&connector)?;
        pg_schema::migrate(&mut first.client)?;
        let writer = Conn::spawn(connector.clone(), Some(first))?;
        // Connected on first use: a node that never charges a counter opens none.
        let writers_for_keys = (0..options.keyed_writers.max(1))
            .map(|_| Conn::spawn(connector.clone(), None).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let readers = (0..options.readers.max(1))
            .map(|_| Conn::spawn(connector.clone(), None).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let feed = Arc::new(Feed {
            generation: AtomicU64::new(0),
            confirmed_us: AtomicU64::new(0),
            start: Instant::now(),
            problem: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let mut listener = Session::connect(&connector)?;
        listener
            .client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| pg_error(&e))?;
        feed.confirm(read_counter(&mut listener.client)?);
        {
            let feed = Arc::clone(&feed);
            let reconcile = options.reconcile;
            thread::Builder::new()
                .name("arbiter-store-feed".into())
                .spawn(move || follow(listener, &connector, &feed, reconcile))
                .map_err(|e| StoreError::Unavailable(format!("cannot start a thread: {e}")))?;
        }
        Ok(Self {
            writer: Mutex::new(writer),
            writers_for_keys,
            readers,
            next_reader: AtomicU64::new(0),
            feed,
            display,
            grace: options.grace,
        })
    }

    /// The database, without its password.
    pub fn database(&self) -> &str {
        &self.display
    }

    fn reader(&self) -> MutexGuard<'_, Conn> {
        for r in &self.readers {
            if let Ok(conn) = r.try_lock() {
                return conn;
            }
        }
        let n = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let i = usize::try_from(n % self.readers.len() as u64).unwrap_or(0);
        self.readers[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` between `begin` and `COMMIT` on `conn` (`ROLLBACK` when it fails).
    fn transaction<T>(
        conn: &Conn,
        begin: &'static str,
        f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A connection found closed at `BEGIN` has done nothing yet: the next call reconnects,
        // so one retry costs nothing and hides a database restart from the caller.
        match conn.simple(begin) {
            Ok(()) => {}
            Err(StoreError::Unavailable(_)) => conn.simple(begin)?,
            Err(e) => return Err(e),
        }
        let out = f(conn);
        match out {
            Ok(v) => {
                conn.simple("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                // A failed rollback leaves a broken connection, which the next call replaces.
                let _ = conn.simple("ROLLBACK");
                Err(e)
            }
        }
    }

    fn unavailable(&self) -> Option<StoreError> {
        let age = self.feed.age();
        (age > self.grace).then(|| {
            let why = self
                .feed
                .problem()
                .unwrap_or_else(|| "no answer from the database".to_owned());
            StoreError::Unavailable(format!(
                "PostgreSQL at {} not confirmed for {} ms (grace {} ms): {why}",
                self.display,
                age.as_millis(),
                self.grace.as_millis()
            ))
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.feed.stop.store(true, Ordering::SeqCst);
    }
}

impl Backend for PgStore {
    const SHARED: bool = true;

    fn read<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.reader();
        Self::transaction(&conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)
    }

    fn write<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        Self::transaction(&conn, "BEGIN", |db| {
            db.run(
                "SELECT pg_advisory_xact_lock(?1)",
                db::params![WRITE_LOCK],
                false,
            )?;
            f(db)
        })
    }

    /// A transaction holding an advisory lock of its own key: charges to different counters
    /// do not wait for each other, or for the other writes.
    fn write_keyed<T>(
        &self,
        key: &str,
        f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lock = key_lock(key);
        // One connection per key (by its lock): the same key always waits on the same
        // connection first, different keys mostly on different ones.
        let i = usize::try_from(lock.unsigned_abs()).unwrap_or(0) % self.writers_for_keys.len();
        let conn = self.writers_for_keys[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Self::transaction(&conn, "BEGIN", |db| {
            db.run(
                "SELECT pg_advisory_xact_lock(?1, ?2)",
                db::params![KEYED_LOCKS, lock],
                false,
            )?;
            f(db)
        })
    }

    /// The counter read from the database; fails while the database is unreachable.
    fn counter(&self) -> Result<u64, StoreError> {
        let conn = self.reader();
        let rows = conn.run("SELECT value FROM generation WHERE id = 1", &[], true)?;
        match rows {
            Ran::Rows(rows) => match rows.first().and_then(|r| r.first()) {
                Some(Cell::Int(v)) => Ok(v.cast_unsigned()),
                _ => Err(StoreError::Corrupt(
                    "the generation counter is missing".to_owned(),
                )),
            },
            Ran::Changed(_) => Err(StoreError::Corrupt(
                "the generation counter is missing".to_owned(),
            )),
        }
    }

    /// What the change feed last saw, while it is confirmed within the grace period.
    fn counter_now(&self) -> Result<Option<u64>, StoreError> {
        match self.unavailable() {
            Some(e) => Err(e),
            None => Ok(Some(self.feed.generation.load(Ordering::SeqCst))),
        }
    }

    fn backend_health(&self) -> Health {
        let age = self.feed.age();
        let up = age <= self.grace;
        Health {
            backend: "postgres",
            up,
            confirmed_ms_ago: Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            problem: self
                .feed
                .problem()
                .or_else(|| (!up).then(|| format!("not confirmed for {} ms", age.as_millis()))),
        }
    }
}

/// The listener: follows notifications, rereads the counter every `reconcile`, reconnects.
fn follow(mut session: Session, connector: &Connector, feed: &Feed, reconcile: Duration) {
    let place = connector.display.as_str();
    let mut last_read = Instant::now();
    loop {
        if feed.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut broken = None;
        {
            let mut notes = session.client.notifications();
            let mut iter = notes.timeout_iter(reconcile);
            loop {
                match iter.next() {
                    Ok(Some(note)) => {
                        if let Ok(g) = note.payload().parse::<i64>() {
                            feed.confirm(g.cast_unsigned());
                        }
                        if last_read.elapsed() >= reconcile {
                            break;
                        }
                    }
                    Err(e) => {
                        broken = Some(pg_error(&e).to_string());
                        break;
                    }
                    Ok(None) => break,
                }
            }
        }
        if broken.is_none() {
            match read_counter(&mut session.client) {
                Ok(g) => {
                    feed.confirm(g);
                    last_read = Instant::now();
                    continue;
                }
                Err(e) => broken = Some(e.to_string()),
            }
        }
        let problem = broken.unwrap_or_default();
        tracing::warn!(database = %place, %problem, "lost the identity store's change feed; reconnecting");
        feed.fail(problem);
        // Reconnect, every `reconcile`, until it works or the store is dropped.
        loop {
            if feed.stop.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(reconcile);
            match Session::connect(connector).and_then(|mut s| {
                s.client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .map_err(|e| pg_error(&e))?;
                let g = read_counter(&mut s.client)?;
                Ok((s, g))
            }) {
                Ok((s, g)) => {
                    tracing::info!(database = %place, "the identity store's change feed is back");
                    session = s;
                    feed.confirm(g);
                    last_read = Instant::now();
                    break;
                }
                Err(e) => feed.fail(e.to_string()),
            }
        }
    }
}

fn read_counter(client: &mut Client) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT value FROM generation WHERE id = 1", &[])
        .map_err(|e| pg_error(&e))?;
    let v: i64 = row
        .try_get(0)
        .map_err(|e| StoreError::Corrupt(format!("the generation counter: {e}")))?;
    Ok(v.cast_unsigned())
}

/// `postgres://host:port/database` of a URL, never its user or password.
pub fn describe_url(url: &str) -> String {
    match Config::from_str(&pg_tls::without_tls(url)) {
        Ok(c) => format!("postgres://{}", describe(&c)),
        Err(_) => "an unparseable PostgreSQL URL".to_owned(),
    }
}

/// `host:port/database` of a configuration, never its password.
fn describe(config: &Config) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// A PostgreSQL error as the store reports it: the server's message and code, or what
/// failed on the way; never the URL or a password.
pub(crate) fn pg_error(e: &postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Postgres(format!("{} ({})", db.message(), db.code().code()));
    }
    StoreError::Unavailable(format!("PostgreSQL: {e}"))
}

/// An error and its causes, `error: cause: cause`: the client's own message says only what
/// failed (`error performing TLS handshake`), its causes say why.
fn with_causes(e: &postgres::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn db_error(e: &postgres::Error) -> DbError {
    match e.as_db_error() {
        Some(d) if *d.code() == postgres::error::SqlState::UNIQUE_VIOLATION => {
            DbError::Unique(d.message().to_owned())
        }
        Some(d) => DbError::Postgres(format!("{} ({})", d.message(), d.code().code())),
        None => DbError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

// ---- how connections are made ----

/// How every connection of a store is made: the server, the client's settings and TLS, the
/// same for the first session, the listener, the writers, the readers and every reconnection.
#[derive(Clone)]
struct Connector {
    config: Config,
    tls: MakeRustls,
    tls_options: TlsOptions,
    /// Where, without the password (for messages).
    display: String,
}

impl Connector {
    /// Reads the URL and the root certificates it names.
    fn new(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let (rest, tls_options) = pg_tls::parse(url)?;
        let mut config = Config::from_str(&rest).map_err(|e| {
            StoreError::invalid(
                "store URL",
                format!("not a PostgreSQL URL: {}", with_causes(&e)),
            )
        })?;
        tls_options.apply(&mut config);
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("arbiter");
        }
        let display = describe(&config);
        Ok(Self {
            tls: tls_options.connector()?,
            config,
            tls_options,
            display,
        })
    }

    /// One warning when whoever sits between this node and a server on another machine could
    /// read or pose as it.
    fn warn_if_unverified(&self) {
        if let Some(warning) = self.tls_options.warning(&self.config) {
            tracing::warn!(
                database = %self.display,
                sslmode = self.tls_options.mode_name(),
                "{warning}"
            );
        }
    }
}

/// A plain client connection to the database at `url`, made as the store makes its own (the
/// same URL forms, `sslmode` / `sslrootcert`, TLS on rustls, `options.connect_timeout`), with
/// `application_name` set: for reading another database's state, such as `pg_stat_activity`
/// for `arbiter gap --postgres`. Errors name the database without its password.
pub fn connect_client(
    url: &str,
    options: &PgOptions,
    application_name: &str,
) -> Result<Client, StoreError> {
    let mut connector = Connector::new(url, options)?;
    connector.config.application_name(application_name);
    connector.warn_if_unverified();
    Ok(Session::connect(&connector)?.client)
}

// ---- one connection on its own thread ----

/// A connection and the statements prepared on it.
struct Session {
    client: Client,
    prepared: HashMap<String, Statement>,
}

impl Session {
    fn connect(connector: &Connector) -> Result<Self, StoreError> {
        let client = connector
            .config
            .connect(connector.tls.clone())
            .map_err(|e| {
                let why = match e.as_db_error() {
                    Some(d) => d.message().to_owned(),
                    None => with_causes(&e),
                };
                let hint = connector
                    .tls_options
                    .explain(&e)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                StoreError::Unavailable(format!(
                    "cannot connect to PostgreSQL at {}: {why}{hint}",
                    connector.display
                ))
            })?;
        Ok(Self {
            client,
            prepared: HashMap::new(),
        })
    }

    fn run(&mut self, sql: &str, params: &[PgVal], rows: bool) -> Result<Ran, DbError> {
        let stmt = match self.prepared.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s =
                    self.client
                        .prepare(&db::to_postgres(sql))
                        .map_err(|e| match db_error(&e) {
                            // A statement PostgreSQL refuses to prepare is a bug here: name it.
                            DbError::Postgres(m) => DbError::Postgres(format!(
                                "{m}, preparing `{}`",
                                sql.split_whitespace().collect::<Vec<_>>().join(" ")
                            )),
                            other => other,
                        })?;
                if self.prepared.len() >= 256 {
                    self.prepared.clear();
                }
                self.prepared.insert(sql.to_owned(), s.clone());
                s
            }
        };
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        if !rows {
            let n = self
                .client
                .execute(&stmt, &refs)
                .map_err(|e| db_error(&e))?;
            return Ok(Ran::Changed(usize::try_from(n).unwrap_or(usize::MAX)));
        }
        let found = self.client.query(&stmt, &refs).map_err(|e| db_error(&e))?;
        let mut out = Vec::with_capacity(found.len());
        for row in &found {
            let mut cells = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                cells.push(cell(row, i, column.type_())?);
            }
            out.push(cells);
        }
        Ok(Ran::Rows(out))
    }
}

fn cell(row: &postgres::Row, i: usize, ty: &Type) -> Result<Cell, DbError> {
    let bad = |e: postgres::Error| DbError::Postgres(format!("column {i}: {e}"));
    Ok(match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, Cell::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, Cell::Text),
        _ => {
            return Err(DbError::Type {
                column: i,
                expected: "an integer or text",
                found: "another PostgreSQL type",
            });
        }
    })
}

/// A parameter, owned so that it can cross to the connection's thread.
#[derive(Debug, Clone)]
enum PgVal {
    Null,
    Int(i64),
    Text(String),
}

impl From<&Val<'_>> for PgVal {
    fn from(v: &Val<'_>) -> Self {
        match v {
            Val::Null => Self::Null,
            Val::Int(i) => Self::Int(*i),
            Val::Text(t) => Self::Text(t.to_string()),
        }
    }
}

impl ToSql for PgVal {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(format!("an integer given for a {ty} parameter").into()),
            },
            Self::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(&Type::TEXT, out)
                }
                _ => Err(format!("text given for a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Work for a connection's thread: its session, or why there is none.
type Job = Box<dyn FnOnce(Result<&mut Session, &str>) + Send>;

/// A connection owned by its own thread; statements are sent to it.
struct Conn {
    jobs: mpsc::Sender<Job>,
}

impl Conn {
    fn spawn(connector: Connector, first: Option<Session>) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("arbiter-store-pg".into())
            .spawn(move || {
                let mut session = first;
                let mut why = String::new();
                while let Ok(job) = rx.recv() {
                    if session.as_ref().is_some_and(|s| s.client.is_closed()) {
                        session = None;
                    }
                    if session.is_none() {
                        match Session::connect(&connector) {
                            Ok(s) => session = Some(s),
                            Err(e) => why = e.to_string(),
                        }
                    }
                    match session.as_mut() {
                        Some(s) => job(Ok(s)),
                        None => job(Err(&why)),
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start a thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the connection's thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Session) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let stopped = || DbError::Unavailable("the connection's thread stopped".to_owned());
        let sent = self
            .jobs
            .send(Box::new(move |session: Result<&mut Session, &str>| {
                let out = match session {
                    Ok(s) => job(s),
                    Err(why) => Err(DbError::Unavailable(why.to_owned())),
                };
                let _ = tx.send(out);
            }));
        if sent.is_err() {
            return Err(stopped());
        }
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    fn simple(&self, sql: &'static str) -> Result<(), StoreError> {
        self.call(move |s| {
            s.client.batch_execute(sql).map_err(|e| db_error(&e))?;
            Ok(())
        })
        .map_err(StoreError::from)
    }
}

impl Db for Conn {
    fn run(&self, sql: &str, params: &[Val<'_>], rows: bool) -> Result<Ran, DbError> {
        let sql = sql.to_owned();
        let params: Vec<PgVal> = params.iter().map(PgVal::from).collect();
        self.call(move |s| s.run(&sql, &params, rows))
    }
}
