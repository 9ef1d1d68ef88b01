//! The PostgreSQL guard: a protocol v3 proxy that decides every statement an agent sends
//! before the database sees it.
//!
//! The agent connects with its agent id as user name and its Arbiter credential as password
//! (asked in clear text: run the proxy on a trusted network or loopback, TLS is refused).
//! The credential is checked at startup where the decision point can tell
//! ([`Decider::authenticate`]) and presented with every decision, so a refused credential
//! reaches nothing. The proxy connects to the database with its own configured credentials.
//!
//! Every simple query (`Q`) and every `Parse` (`P`) is analyzed ([`crate::analyze`]) and
//! decided (see [`asks_for`]); a denied statement is answered with SQLSTATE 42501 and the
//! session stays usable. Denials are delivered in order with the database's own answers: the
//! proxy sends the database a `Sync` in place of the denied message and puts its
//! `ErrorResponse` just before the `ReadyForQuery` that answers it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_pep::{Ask, Decider, Settle, Verdict, decide_within};
use arbiter_types::Entity;
use serde_json::{Map, json};
use tokio::io::{AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::rewrite::Narrowing;
use crate::scram::Scram;
use crate::wire::{self, Message, Reader, WireError};
use crate::{Analysis, Flag, ParserSettings, StatementKind, analyze};

/// Where and as whom the proxy connects to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl Upstream {
    /// Reads `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (also `postgresql://`; no query
    /// string; `%XX` escapes are decoded in user and password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("the upstream URL must start with postgres://")?;
        if rest.contains('?') {
            return Err("the upstream URL takes no query string".into());
        }
        let (userinfo, hostpart) = rest
            .rsplit_once('@')
            .ok_or("the upstream URL must name a user: postgres://USER@HOST:PORT/DB")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(userinfo)?, None),
        };
        let (hostport, database) = hostpart
            .split_once('/')
            .ok_or("the upstream URL must name a database: postgres://USER@HOST:PORT/DB")?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{p}` is not a port number"))?,
            ),
            None => (hostport, 5432),
        };
        if user.is_empty() || host.is_empty() || database.is_empty() {
            return Err("the upstream URL needs a user, a host and a database".into());
        }
        Ok(Self {
            user,
            password,
            host: host.to_owned(),
            port,
            database: percent_decode(database)?,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the upstream URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the upstream URL is not UTF-8".to_owned())
}

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstream: Upstream,
    /// The database's name in policies (`Table::"<database>.<schema>.<table>"`).
    pub database_name: String,
    /// Largest message accepted from either side, in bytes.
    pub max_message_bytes: usize,
    /// Time allowed for the decisions of one message; past it the statement is denied.
    pub decision_timeout: Duration,
}

impl ProxyConfig {
    pub fn new(upstream: Upstream) -> Self {
        Self {
            database_name: upstream.database.clone(),
            upstream,
            max_message_bytes: 64 << 20,
            decision_timeout: Duration::from_secs(5),
        }
    }
}

/// A running proxy: its settings, decision source and the cancel keys it handed out.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    decider: Arc<dyn Decider>,
    /// Client-visible backend key → the database's.
    keys: Mutex<HashMap<(i32, i32), (i32, i32)>>,
    /// Analyses of recently seen texts, by exact text (see [`Proxy::analysis_of`]).
    analyses: Mutex<HashMap<String, Arc<Analysis>>>,
}

/// Texts longer than this are analyzed every time.
const MAX_CACHED_TEXT: usize = 8 * 1024;
/// Analyses kept; when full, the cache starts over.
const MAX_CACHED_ANALYSES: usize = 4096;

/// What an allowed statement becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `None`: send it as it is; `Some(text)`: send `text`, the statement narrowed to the rows
    /// the policies allow (see [`crate::rewrite`]).
    pub narrowed: Option<String>,
    /// The policy version that allowed it, when the decision point says.
    pub policy_version: Option<String>,
}

/// Most prepared statements a session may hold (the proxy keeps each one's text).
const MAX_PREPARED: usize = 10_000;

/// A statement prepared with `Parse`, as decided.
#[derive(Debug, Clone)]
struct Prepared {
    sql: String,
    narrowed: Option<String>,
    policy_version: Option<String>,
}

/// Why a statement is refused, as shown to the agent (in the words every enforcement point
/// uses), sent as an `insufficient_privilege` error.
pub use arbiter_pep::Denial;

trait ErrorBody {
    fn error_body(&self) -> Vec<u8>;
}

impl ErrorBody for Denial {
    fn error_body(&self) -> Vec<u8> {
        wire::error_body("ERROR", "42501", &self.to_string())
    }
}

impl Proxy {
    pub fn new(config: ProxyConfig, decider: Arc<dyn Decider>) -> Arc<Self> {
        Arc::new(Self {
            config,
            decider,
            keys: Mutex::new(HashMap::new()),
            analyses: Mutex::new(HashMap::new()),
        })
    }

    /// The analysis of `sql`, from the cache when this exact text was analyzed before.
    ///
    /// The cache is keyed by the text itself, never by pg_query's fingerprint: the
    /// fingerprint leaves out constants (which the analysis reads, e.g. `set_config`'s
    /// setting name), the relation name behind an alias (`FROM secrets s` and `FROM open s`
    /// share one), schema names, and digit runs in relation names, so statements on
    /// different tables share a fingerprint and a cache keyed by it would decide one as the
    /// other.
    pub fn analysis_of(&self, sql: &str) -> Result<Arc<Analysis>, crate::AnalyzeError> {
        let cacheable = sql.len() <= MAX_CACHED_TEXT;
        if cacheable && let Some(hit) = self.analyses.lock().ok().and_then(|c| c.get(sql).cloned())
        {
            return Ok(hit);
        }
        let analysis = Arc::new(analyze(sql)?);
        if cacheable && let Ok(mut cache) = self.analyses.lock() {
            if cache.len() >= MAX_CACHED_ANALYSES {
                cache.clear();
            }
            cache.insert(sql.to_owned(), Arc::clone(&analysis));
        }
        Ok(analysis)
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let proxy = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = proxy.session(stream).await {
                    tracing::debug!(%peer, error = %e, "sql session ended with an error");
                }
            });
        }
    }

    /// Decides the SQL text `sql` for the holder of `credential`.
    pub async fn check(&self, credential: &str, sql: &str) -> Result<Allowed, Denial> {
        let analysis = self
            .analysis_of(sql)
            .map_err(|_| Denial::new("the statement cannot be analyzed", None))?;
        let asks = asks_for(&analysis, &self.config.database_name);
        if asks.is_empty() {
            return Ok(Allowed::default());
        }
        let tables: Vec<Option<(String, String)>> = asks
            .iter()
            .map(|a| {
                let props = a.resource.properties.as_ref()?;
                let field = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                Some((field("schema")?, field("name")?))
            })
            .collect();
        // The statement is narrowed before the decisions are final (and, with an embedded
        // decision point, before they are recorded): an allow for rows that cannot be applied
        // is a deny, in the answer and in the record alike.
        let mut narrowed: Option<String> = None;
        let slot = &mut narrowed;
        let (sql_ref, analysis_ref, tables_ref) = (sql, &*analysis, &tables);
        let settle: Settle<'_> = Box::new(move |verdicts: &[Verdict]| {
            if verdicts.len() != tables_ref.len() || verdicts.iter().any(|v| !v.allow) {
                // Denied anyway, or answered wrong (denied below).
                return Ok(());
            }
            let narrowings = narrowings_of(verdicts, tables_ref);
            if narrowings.is_empty() {
                return Ok(());
            }
            let text = crate::rewrite::narrow(
                sql_ref,
                ParserSettings::default(),
                analysis_ref,
                &narrowings,
            )?;
            *slot = Some(text);
            Ok(())
        });
        let decided = decide_within(
            self.decider.as_ref(),
            self.config.decision_timeout,
            Some(credential),
            asks,
            Some(settle),
        )
        .await;
        let verdicts = match decided {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "no decision could be taken; the statement is denied");
                let reason = if e.is_timeout() {
                    "no decision was taken in time"
                } else {
                    "no decision could be taken"
                };
                return Err(Denial::new(reason, None));
            }
        };
        let policy_version = verdicts.iter().find_map(|v| v.policy_version.clone());
        let mut narrowed_by = None;
        for v in &verdicts {
            if !v.allow {
                return Err(v.denial());
            }
            if v.rows.is_some() && narrowed_by.is_none() {
                narrowed_by = Some(v.decision_id.clone());
            }
        }
        match (narrowed_by, narrowed) {
            (None, _) => Ok(Allowed {
                narrowed: None,
                policy_version,
            }),
            (Some(_), Some(text)) => Ok(Allowed {
                narrowed: Some(text),
                policy_version,
            }),
            // Allowed for some rows, and not narrowed: never sent as it is.
            (Some(decision_id), None) => Err(Denial::new(
                "the statement could not be narrowed to the allowed rows",
                decision_id,
            )),
        }
    }

    /// Before `Bind` uses the prepared statement `name`: if the policies changed since it
    /// was decided, decides its text again. It may still run only if it is still allowed
    /// and narrowed exactly as when it was prepared (the database holds the prepared form).
    async fn recheck(
        &self,
        credential: &str,
        name: &str,
        prepared: &mut HashMap<String, Prepared>,
    ) -> Result<(), Denial> {
        let Some(p) = prepared.get_mut(name) else {
            return Ok(());
        };
        let now = self.decider.policy_version();
        if now.is_none() || now == p.policy_version {
            return Ok(());
        }
        let again = self.check(credential, &p.sql).await?;
        if again.narrowed != p.narrowed {
            return Err(Denial::new(
                "the policies changed since this statement was prepared, and \
                         now allow other rows of its tables; prepare it again",
                None,
            ));
        }
        p.policy_version = again.policy_version;
        Ok(())
    }

    async fn session(self: Arc<Self>, client: TcpStream) -> Result<(), WireError> {
        let _ = client.set_nodelay(true);
        let mut client = BufReader::new(client);
        // The startup phase: TLS and GSS encryption are refused, cancels are passed on.
        let params = loop {
            let Some(packet) = wire::read_startup(&mut client).await? else {
                return Ok(());
            };
            let mut r = Reader::new(&packet);
            match r.i32()? {
                wire::SSL_REQUEST | wire::GSSENC_REQUEST => {
                    client.get_mut().write_all(b"N").await?;
                }
                wire::CANCEL_REQUEST => {
                    let pid = r.i32()?;
                    let secret = r.i32()?;
                    self.cancel(pid, secret).await;
                    return Ok(());
                }
                wire::PROTOCOL_3_0 => break wire::startup_params(r.rest())?,
                other => {
                    return fatal(
                        client.get_mut(),
                        "0A000",
                        &format!("unsupported frontend protocol {other:#x}: only 3.0 is served"),
                    )
                    .await;
                }
            }
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(agent) = param("user").filter(|u| !u.is_empty()) else {
            return fatal(
                client.get_mut(),
                "28000",
                "no user name (the agent id) was given",
            )
            .await;
        };
        if param("replication").is_some_and(|v| !v.eq_ignore_ascii_case("false")) {
            return fatal(
                client.get_mut(),
                "28000",
                "replication connections are not served by Arbiter",
            )
            .await;
        }
        if let Some(db) = param("database")
            && db != self.config.upstream.database
            && db != self.config.database_name
        {
            return fatal(
                client.get_mut(),
                "3D000",
                &format!(
                    "this Arbiter proxy serves database \"{}\"",
                    self.config.database_name
                ),
            )
            .await;
        }
        let agent = agent.to_owned();
        let application_name = param("application_name").unwrap_or("").to_owned();

        // The agent's credential: cleartext password.
        wire::write_message(client.get_mut(), b'R', &3i32.to_be_bytes()).await?;
        client.get_mut().flush().await?;
        let credential = match wire::read_message(&mut client, wire::MAX_STARTUP_BYTES).await? {
            Some(Message { tag: b'p', body }) => Reader::new(&body).cstr()?.to_owned(),
            _ => return Ok(()),
        };
        if credential.is_empty() {
            return fatal(client.get_mut(), "28P01", "no credential was given").await;
        }
        // The credential is checked now where the decision point can tell (it is presented
        // with every decision anyway), and must be the named agent's.
        let checked = tokio::time::timeout(
            self.config.decision_timeout,
            self.decider.authenticate(&credential),
        )
        .await;
        match checked {
            Ok(Ok(Some(id))) if id != agent => {
                return fatal(
                    client.get_mut(),
                    "28000",
                    &format!("the credential is not agent \"{agent}\"'s"),
                )
                .await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => {
                return fatal(
                    client.get_mut(),
                    "28P01",
                    &format!("agent \"{agent}\" was not let in: {reason}"),
                )
                .await;
            }
            Err(_) => {
                return fatal(
                    client.get_mut(),
                    "28000",
                    "the credential could not be checked in time",
                )
                .await;
            }
        }

        // The database.
        let (upstream, startup) = match self.connect_upstream(&application_name).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to the database");
                return fatal(client.get_mut(), "08006", &e).await;
            }
        };
        let client_key = (random_i32(), random_i32());
        if let Some(key) = startup.key
            && let Ok(mut keys) = self.keys.lock()
        {
            keys.insert(client_key, key);
        }
        let mut hello = Message::new(b'R', 0i32.to_be_bytes().to_vec()).encode();
        for m in &startup.params {
            hello.extend_from_slice(&m.encode());
        }
        let mut key = client_key.0.to_be_bytes().to_vec();
        key.extend_from_slice(&client_key.1.to_be_bytes());
        hello.extend_from_slice(&Message::new(b'K', key).encode());
        hello.extend_from_slice(&Message::new(b'Z', vec![startup.status]).encode());
        client.get_mut().write_all(&hello).await?;
        tracing::debug!(agent = %agent, "sql session started");

        let result = self.relay(client, upstream, &credential).await;
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&client_key);
        }
        result
    }

    /// Relays the session: client messages are decided here, the database's answers are
    /// passed back by a second task that inserts denials before their `ReadyForQuery`.
    async fn relay(
        &self,
        client: BufReader<TcpStream>,
        upstream: BufReader<TcpStream>,
        credential: &str,
    ) -> Result<(), WireError> {
        let max = self.config.max_message_bytes;
        let (client_read, client_write) = client.into_inner().into_split();
        let (upstream_read, mut upstream_write) = upstream.into_inner().into_split();
        let mut client_read = BufReader::new(client_read);
        // One entry per `ReadyForQuery` expected: the denial to put before it, if any.
        let pending: Arc<Mutex<VecDeque<Option<Vec<u8>>>>> = Arc::default();
        let writer = Arc::new(tokio::sync::Mutex::new(BufWriter::new(client_write)));
        let answers = tokio::spawn(pass_answers(
            BufReader::new(upstream_read),
            Arc::clone(&writer),
            Arc::clone(&pending),
            max,
        ));
        let push = |denial: Option<Vec<u8>>| {
            if let Ok(mut p) = pending.lock() {
                p.push_back(denial);
            }
        };
        // After a denied `Parse` or `Bind`: messages are dropped until `Sync`.
        let mut discarding: Option<Vec<u8>> = None;
        // Statements prepared with `Parse`, by name ("" is the unnamed one).
        let mut prepared: HashMap<String, Prepared> = HashMap::new();
        let outcome: Result<(), WireError> = async {
            loop {
                let message = match wire::read_message(&mut client_read, max).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                };
                match message.tag {
                    // After a denied `Parse` everything up to `Sync` is discarded, as PostgreSQL
                    // does after an error.
                    b'Q' | b'F' if discarding.is_some() => {}
                    b'Q' => {
                        let sql = Reader::new(&message.body).cstr()?.to_owned();
                        match self.check(credential, &sql).await.map(|a| a.narrowed) {
                            Ok(None) => {
                                push(None);
                                upstream_write.write_all(&message.encode()).await?;
                            }
                            Ok(Some(narrowed)) => {
                                push(None);
                                let mut body = Vec::with_capacity(narrowed.len() + 1);
                                wire::put_cstr(&mut body, &narrowed);
                                upstream_write
                                    .write_all(&Message::new(b'Q', body).encode())
                                    .await?;
                            }
                            Err(denial) => {
                                push(Some(denial.error_body()));
                                upstream_write.write_all(&sync()).await?;
                            }
                        }
                    }
                    b'P' => {
                        if discarding.is_some() {
                            continue;
                        }
                        let mut r = Reader::new(&message.body);
                        let name = r.cstr()?.to_owned();
                        let sql = r.cstr()?.to_owned();
                        let types = r.rest().to_vec();
                        if prepared.len() >= MAX_PREPARED && !prepared.contains_key(&name) {
                            let denial = Denial::new(&format!(
                                    "this session holds {MAX_PREPARED} prepared statements; close some first"
                                ), None);
                            discarding = Some(denial.error_body());
                            continue;
                        }
                        match self.check(credential, &sql).await {
                            Ok(allowed) => {
                                match &allowed.narrowed {
                                    None => upstream_write.write_all(&message.encode()).await?,
                                    Some(narrowed) => {
                                        let mut body =
                                            Vec::with_capacity(narrowed.len() + types.len() + 8);
                                        wire::put_cstr(&mut body, &name);
                                        wire::put_cstr(&mut body, narrowed);
                                        body.extend_from_slice(&types);
                                        upstream_write
                                            .write_all(&Message::new(b'P', body).encode())
                                            .await?;
                                    }
                                }
                                prepared.insert(
                                    name,
                                    Prepared {
                                        sql,
                                        narrowed: allowed.narrowed,
                                        policy_version: allowed.policy_version,
                                    },
                                );
                            }
                            Err(denial) => discarding = Some(denial.error_body()),
                        }
                    }
                    b'S' => {
                        push(discarding.take());
                        upstream_write.write_all(&message.encode()).await?;
                    }
                    b'F' => {
                        // A function call by object id would bypass the analysis.
                        let denial = Denial::new("function calls by object id are not allowed", None);
                        push(Some(denial.error_body()));
                        upstream_write.write_all(&sync()).await?;
                    }
                    b'B' => {
                        if discarding.is_some() {
                            continue;
                        }
                        let mut r = Reader::new(&message.body);
                        let _portal = r.cstr()?;
                        let statement = r.cstr()?.to_owned();
                        match self.recheck(credential, &statement, &mut prepared).await {
                            Ok(()) => upstream_write.write_all(&message.encode()).await?,
                            Err(denial) => discarding = Some(denial.error_body()),
                        }
                    }
                    b'C' => {
                        if discarding.is_none() {
                            let mut r = Reader::new(&message.body);
                            if r.u8()? == b'S' {
                                prepared.remove(r.cstr()?);
                            }
                            upstream_write.write_all(&message.encode()).await?;
                        }
                    }
                    b'D' | b'E' | b'H' | b'd' | b'c' | b'f' => {
                        if discarding.is_none() {
                            upstream_write.write_all(&message.encode()).await?;
                        }
                    }
                    b'X' => {
                        let _ = upstream_write.write_all(&message.encode()).await;
                        return Ok(());
                    }
                    _ => return Err(WireError::Malformed("unexpected message from the client")),
                }
            }
        }
        .await;
        let _ = upstream_write.shutdown().await;
        answers.abort();
        let _ = answers.await;
        if let Err(e @ (WireError::Length(..) | WireError::Malformed(_))) = &outcome {
            // Tell the client why before closing.
            let mut w = writer.lock().await;
            let body = wire::error_body("FATAL", "08P01", &format!("protocol violation: {e}"));
            let _ = wire::write_message(&mut *w, b'E', &body).await;
            let _ = w.flush().await;
        }
        outcome
    }

    async fn connect_upstream(
        &self,
        application_name: &str,
    ) -> Result<(BufReader<TcpStream>, Startup), String> {
        let up = &self.config.upstream;
        let stream = TcpStream::connect((up.host.as_str(), up.port))
            .await
            .map_err(|e| format!("the database cannot be reached: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut stream = BufReader::new(stream);
        let mut params = vec![
            ("user", up.user.as_str()),
            ("database", up.database.as_str()),
            ("client_encoding", "UTF8"),
        ];
        if !application_name.is_empty() {
            params.push(("application_name", application_name));
        }
        let io = |e: std::io::Error| format!("the database connection failed: {e}");
        stream
            .get_mut()
            .write_all(&wire::startup_packet(&params))
            .await
            .map_err(io)?;
        let mut scram: Option<Scram> = None;
        let mut startup = Startup {
            params: Vec::new(),
            key: None,
            status: b'I',
        };
        loop {
            let m = wire::read_message(&mut stream, self.config.max_message_bytes)
                .await
                .map_err(|e| format!("the database connection failed: {e}"))?
                .ok_or("the database closed the connection during startup")?;
            match m.tag {
                b'R' => {
                    let code = Reader::new(&m.body).i32().map_err(|e| e.to_string())?;
                    match code {
                        0 => {}
                        3 => {
                            let password = up.password.as_deref().ok_or(
                                "the database asks for a password and the upstream URL has none",
                            )?;
                            let mut body = Vec::new();
                            wire::put_cstr(&mut body, password);
                            wire::write_message(stream.get_mut(), b'p', &body)
                                .await
                                .map_err(io)?;
                        }
                        5 => return Err("the database asks for MD5 password authentication, which the proxy does not implement: use SCRAM-SHA-256, password or trust".into()),
                        10 => {
                            let mechanisms = &m.body[4..];
                            if !mechanisms
                                .split(|&b| b == 0)
                                .any(|name| name == b"SCRAM-SHA-256")
                            {
                                return Err("the database offers no SASL mechanism the proxy implements (SCRAM-SHA-256 without channel binding)".into());
                            }
                            let password = up.password.as_deref().ok_or(
                                "the database asks for a password and the upstream URL has none",
                            )?;
                            let exchange =
                                scram.insert(Scram::new("", password, &Scram::random_nonce()));
                            let first = exchange.client_first();
                            let mut body = Vec::new();
                            wire::put_cstr(&mut body, "SCRAM-SHA-256");
                            body.extend_from_slice(
                                &i32::try_from(first.len()).unwrap_or(0).to_be_bytes(),
                            );
                            body.extend_from_slice(first.as_bytes());
                            wire::write_message(stream.get_mut(), b'p', &body)
                                .await
                                .map_err(io)?;
                        }
                        11 | 12 => {
                            let exchange = scram
                                .as_mut()
                                .ok_or("the database's SASL messages are out of order")?;
                            let data = std::str::from_utf8(&m.body[4..])
                                .map_err(|_| "the database's SASL message is not UTF-8")?;
                            if code == 11 {
                                let last = exchange.client_final(data)?;
                                wire::write_message(stream.get_mut(), b'p', last.as_bytes())
                                    .await
                                    .map_err(io)?;
                            } else {
                                exchange.verify_final(data)?;
                            }
                        }
                        other => return Err(format!("the database asks for authentication method {other}, which the proxy does not implement")),
                    }
                }
                b'S' => startup.params.push(m),
                b'K' => {
                    let mut r = Reader::new(&m.body);
                    let pid = r.i32().map_err(|e| e.to_string())?;
                    let secret = r.i32().map_err(|e| e.to_string())?;
                    startup.key = Some((pid, secret));
                }
                b'Z' => {
                    startup.status = m.body.first().copied().unwrap_or(b'I');
                    return Ok((stream, startup));
                }
                b'E' => {
                    let message = wire::error_fields(&m.body)
                        .into_iter()
                        .find(|(f, _)| *f == b'M')
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    return Err(format!("the database refused the connection: {message}"));
                }
                b'N' => {}
                _ => return Err("unexpected message from the database during startup".into()),
            }
        }
    }

    async fn cancel(&self, pid: i32, secret: i32) {
        let key = self
            .keys
            .lock()
            .ok()
            .and_then(|k| k.get(&(pid, secret)).copied());
        let Some((pid, secret)) = key else { return };
        let up = &self.config.upstream;
        if let Ok(mut s) = TcpStream::connect((up.host.as_str(), up.port)).await {
            let mut packet = 16i32.to_be_bytes().to_vec();
            packet.extend_from_slice(&wire::CANCEL_REQUEST.to_be_bytes());
            packet.extend_from_slice(&pid.to_be_bytes());
            packet.extend_from_slice(&secret.to_be_bytes());
            let _ = s.write_all(&packet).await;
        }
    }
}

#[derive(Debug)]
struct Startup {
    params: Vec<Message>,
    key: Option<(i32, i32)>,
    status: u8,
}

fn sync() -> Vec<u8> {
    Message::new(b'S', Vec::new()).encode()
}

fn random_i32() -> i32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    i32::from_be_bytes(b)
}

async fn fatal(client: &mut TcpStream, code: &str, message: &str) -> Result<(), WireError> {
    wire::write_message(client, b'E', &wire::error_body("FATAL", code, message)).await?;
    client.flush().await?;
    Ok(())
}

/// Passes the database's messages to the client, putting each pending denial before the
/// `ReadyForQuery` it belongs to (unless the database already reported an error in that
/// round, after which it skipped the rest of it anyway).
async fn pass_answers(
    mut upstream: BufReader<tokio::net::tcp::OwnedReadHalf>,
    client: Arc<tokio::sync::Mutex<BufWriter<tokio::net::tcp::OwnedWriteHalf>>>,
    pending: Arc<Mutex<VecDeque<Option<Vec<u8>>>>>,
    max: usize,
) -> Result<(), WireError> {
    let mut errored = false;
    while let Some(m) = wire::read_message(&mut upstream, max).await? {
        let mut client = client.lock().await;
        match m.tag {
            b'E' => errored = true,
            b'Z' => {
                let denial = pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.pop_front())
                    .flatten();
                if let Some(body) = denial
                    && !errored
                {
                    wire::write_message(&mut *client, b'E', &body).await?;
                }
                errored = false;
            }
            _ => {}
        }
        wire::write_message(&mut *client, m.tag, &m.body).await?;
        if upstream.buffer().is_empty() {
            client.flush().await?;
        }
    }
    let mut client = client.lock().await;
    client.flush().await?;
    let _ = client.shutdown().await;
    Ok(())
}

/// Statement kinds decided as `select`.
const SESSION_KINDS: &[&str] = &[
    "TransactionStmt",
    "FetchStmt",
    "ClosePortalStmt",
    "VariableShowStmt",
    "DeallocateStmt",
    "DiscardStmt",
];

/// The action a statement kind is decided as.
fn action_of(kind: &StatementKind) -> &'static str {
    match kind {
        StatementKind::Select => "select",
        StatementKind::Insert => "insert",
        StatementKind::Update => "update",
        StatementKind::Delete => "delete",
        StatementKind::Ddl => "ddl",
        // Session housekeeping that reads nothing a `select` would not: transaction control,
        // fetching from or closing a cursor (decided when it was declared), `SHOW`,
        // `DEALLOCATE`, `DISCARD`.
        StatementKind::Other(n) if SESSION_KINDS.contains(&n.as_str()) => "select",
        StatementKind::Other(_) => "ddl",
    }
}

fn kind_name(kind: &StatementKind) -> String {
    match kind {
        StatementKind::Other(n) => n.clone(),
        k => action_of(k).to_owned(),
    }
}

/// Features asked about on their own, as action `ddl` on `Table::"<db>.arbiter.<feature>"`.
const FEATURES: &[(Flag, &str)] = &[
    (Flag::MultiStatement, "multi_statement"),
    (Flag::DoBlock, "do_block"),
    (Flag::Call, "call"),
    (Flag::CopyProgram, "copy_program"),
    (Flag::CopyFile, "copy_file"),
    (Flag::SqlPrepare, "prepare"),
    (Flag::SqlExecute, "execute"),
    (Flag::ExplainAnalyze, "explain_analyze"),
    (Flag::SetConfig, "set_config"),
    (Flag::RoleChange, "role_change"),
    (Flag::Load, "load"),
];

/// The schema of the pseudo-tables that stand for features and table-less statements.
pub const PSEUDO_SCHEMA: &str = "arbiter";

fn table(db: &str, schema: &str, name: &str) -> Entity {
    let mut props = Map::new();
    props.insert("database".into(), json!(db));
    props.insert("schema".into(), json!(schema));
    props.insert("name".into(), json!(name));
    Entity {
        kind: "Table".into(),
        id: format!("{db}.{schema}.{name}"),
        properties: Some(props),
    }
}

/// The questions asked for a piece of SQL, all of which must be allowed:
///
/// - each table a statement touches: action = the statement's kind (`select`, `insert`,
///   `update`, `delete`, `ddl`; other kinds are `ddl`, except transaction control, `FETCH`,
///   `CLOSE`, `SHOW`, `DEALLOCATE` and `DISCARD`, which are `select`); the tables a
///   `SELECT … FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE` locks are asked `update` as well,
///   resource `Table::"<db>.<schema>.<table>"` (schema `public` when not written), context
///   `columns`, `functions`, `statement_kind`;
/// - a statement that touches no table: the same on `Table::"<db>.arbiter.no_table"`;
/// - each feature used (several statements in one text, `DO`, `CALL`, `COPY … PROGRAM` or
///   file, SQL `PREPARE`/`EXECUTE`, `EXPLAIN ANALYZE`, configuration and role changes,
///   `LOAD`): action `ddl` on `Table::"<db>.arbiter.<feature>"`;
/// - each dangerous function ([`crate::is_dangerous_function`]): action `ddl` on
///   `Table::"<db>.arbiter.function:<name>"`.
///
/// So these are denied unless a policy permits them explicitly.
pub fn asks_for(analysis: &Analysis, db: &str) -> Vec<Ask> {
    let mut asks = Vec::new();
    let mut features: Vec<&str> = Vec::new();
    for s in &analysis.statements {
        let action = action_of(&s.kind);
        let mut context = Map::new();
        context.insert("functions".into(), json!(s.functions));
        context.insert("statement_kind".into(), json!(kind_name(&s.kind)));
        context.insert("fingerprint".into(), json!(analysis.fingerprint));
        if s.tables.is_empty() {
            let mut c = context.clone();
            c.insert("columns".into(), json!([]));
            asks.push(Ask {
                action,
                resource: table(db, PSEUDO_SCHEMA, "no_table"),
                context: c,
                rows: false,
            });
        }
        for t in &s.tables {
            let mut c = context.clone();
            c.insert("columns".into(), json!(t.columns));
            // `SELECT … FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE` locks the rows it
            // reads, which stalls every writer of them: the locked tables need `update`.
            let action = if t.access == crate::Access::Lock && s.has_flag(Flag::RowLock) {
                "update"
            } else {
                action
            };
            asks.push(Ask {
                action,
                resource: table(db, t.schema.as_deref().unwrap_or("public"), &t.name),
                context: c,
                // Reads, updates and deletes can be narrowed to rows (see `crate::rewrite`)
                // where every reference to the table can be.
                rows: matches!(action, "select" | "update" | "delete") && narrowable(s, t),
            });
        }
        for (flag, name) in FEATURES {
            if s.has_flag(*flag) && !features.contains(name) {
                features.push(name);
                asks.push(Ask {
                    action: "ddl",
                    resource: table(db, PSEUDO_SCHEMA, name),
                    context: context.clone(),
                    rows: false,
                });
            }
        }
        for f in &s.functions {
            if crate::is_dangerous_function(f) {
                asks.push(Ask {
                    action: "ddl",
                    resource: table(db, PSEUDO_SCHEMA, &format!("function:{f}")),
                    context: context.clone(),
                    rows: false,
                });
            }
        }
    }
    asks
}

/// The tables of allowed verdicts that carry a row filter, and their filters (a table asked
/// twice, e.g. read and written, gets both filters).
fn narrowings_of(verdicts: &[Verdict], tables: &[Option<(String, String)>]) -> Vec<Narrowing> {
    let mut narrowings: Vec<Narrowing> = Vec::new();
    for (v, table) in verdicts.iter().zip(tables) {
        let (Some(filter), Some((schema, name))) = (&v.rows, table) else {
            continue;
        };
        match narrowings
            .iter_mut()
            .find(|n| &n.schema == schema && &n.name == name)
        {
            Some(n) => n.filter.parts.extend(filter.parts.iter().cloned()),
            None => narrowings.push(Narrowing {
                schema: schema.clone(),
                name: name.clone(),
                filter: filter.clone(),
            }),
        }
    }
    narrowings
}

/// Whether every place `s` names table `t` is one a row filter can be applied at.
fn narrowable(s: &crate::StatementInfo, t: &crate::TableAccess) -> bool {
    let mut refs = s
        .references
        .iter()
        .filter(|r| r.name == t.name && r.schema == t.schema)
        .peekable();
    refs.peek().is_some() && refs.all(|r| r.role != crate::ReferenceRole::Other)
}

/// Binds `listen` and serves until the listener fails.
pub async fn run(proxy: Arc<Proxy>, listen: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(proxy.serve(listener));
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Takes no decision: these tests look at the analysis cache only.
    #[derive(Debug)]
    struct NoDecisions;

    impl Decider for NoDecisions {
        fn decide<'a>(
            &'a self,
            _credential: Option<&'a str>,
            _asks: Vec<Ask>,
        ) -> arbiter_pep::BoxFuture<'a, Result<Vec<Verdict>, arbiter_pep::DecideError>> {
            Box::pin(async {
                Err(arbiter_pep::DecideError::Internal(
                    "no decisions in this test".to_owned(),
                ))
            })
        }
    }

    #[test]
    fn analyses_are_cached_by_exact_text_only() {
        let upstream = Upstream::parse("postgres://u@127.0.0.1/db").unwrap();
        let proxy = Proxy::new(ProxyConfig::new(upstream), Arc::new(NoDecisions));
        let a = proxy.analysis_of("SELECT * FROM open o").unwrap();
        let b = proxy.analysis_of("SELECT * FROM open o").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Same fingerprint (the relation name behind an alias is not part of it), other table.
        let c = proxy.analysis_of("SELECT * FROM secrets o").unwrap();
        assert_eq!(a.fingerprint, c.fingerprint);
        assert_eq!(c.statements[0].tables[0].name, "secrets");
        // Long texts are not kept; errors are not kept.
        let long = format!("SELECT 1 {}", " ".repeat(MAX_CACHED_TEXT));
        let d = proxy.analysis_of(&long).unwrap();
        assert!(!Arc::ptr_eq(&d, &proxy.analysis_of(&long).unwrap()));
        assert!(proxy.analysis_of("SELEC").is_err());
    }
}
