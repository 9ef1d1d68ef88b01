//! One agent's connection: the startup phase (TLS refused, the agent's credential asked in
//! clear text and checked), then every client message decided in order, with the database's
//! answers passed back and each denial put before the `ReadyForQuery` it belongs to.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arbiter_pep::AuthError;
use tokio::io::{AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::TcpStream;

use crate::wire::{self, Message, Reader, WireError};

use super::{Denial, ErrorBody, Proxy};

/// Most prepared statements a session may hold (the proxy keeps each one's text).
const MAX_PREPARED: usize = 10_000;

/// A statement prepared with `Parse`, as decided.
#[derive(Debug, Clone)]
struct Prepared {
    sql: String,
    narrowed: Option<String>,
    policy_version: Option<String>,
}

/// What to do with the database's answer to one round of messages (up to its
/// `ReadyForQuery`).
enum Round {
    /// Pass it on, putting this denial before its `ReadyForQuery` when there is one.
    Pass(Option<Vec<u8>>),
    /// A read sent ahead of its decision's record: hold the answer back until the record is
    /// durable, then pass it on; if the record fails or takes too long, discard the answer and
    /// send the denial instead. The wait runs as a task of its own, so that it settles the
    /// decision even when the connection ends first.
    Hold(tokio::task::JoinHandle<Result<(), arbiter_pep::Verdict>>),
}

/// Who a connection's statements are decided for: the agent's credential and its session.
#[derive(Debug, Clone)]
pub struct Peer {
    pub credential: String,
    pub session: String,
}

/// The session named in the startup `options` (`-c arbiter.session=ID`, also
/// `--arbiter.session=ID`; `\ ` escapes a space as libpq does). Other options are left alone
/// (they are not passed to the database).
pub(crate) fn session_option(options: &str) -> Result<Option<String>, String> {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut found = None;
    let mut i = 0;
    while i < words.len() {
        let setting = match words[i].as_str() {
            "-c" => {
                i += 1;
                words.get(i).map(String::as_str)
            }
            w => w.strip_prefix("-c").or_else(|| w.strip_prefix("--")),
        };
        i += 1;
        let Some(value) = setting.and_then(|s| s.strip_prefix("arbiter.session=")) else {
            continue;
        };
        if found.is_some() {
            return Err("`arbiter.session` is given twice in the startup options".to_owned());
        }
        if !arbiter_pep::valid_session_id(value) {
            return Err(format!(
                "`arbiter.session` must be 1 to {} visible ASCII characters",
                arbiter_pep::MAX_SESSION_ID_BYTES
            ));
        }
        found = Some(value.to_owned());
    }
    Ok(found)
}

impl Proxy {
    /// Before `Bind` uses the prepared statement `name`: if the policies changed since it
    /// was decided, decides its text again. It may still run only if it is still allowed
    /// and narrowed exactly as when it was prepared (the database holds the prepared form).
    async fn recheck(
        &self,
        peer: &Peer,
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
        let again = self.check(peer, &p.sql).await?;
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

    /// Serves one client connection, from its startup packet to its end.
    pub(super) async fn session(self: Arc<Self>, client: TcpStream) -> Result<(), WireError> {
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
        // The session: `-c arbiter.session=ID` in the startup options (`PGOPTIONS`), else
        // this connection.
        let session = match session_option(param("options").unwrap_or("")) {
            Ok(Some(id)) => id,
            Ok(None) => arbiter_pep::new_session_id("sql"),
            Err(problem) => return fatal(client.get_mut(), "22023", &problem).await,
        };

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
            Ok(Err(refused)) => {
                // 28000 for a credential of the wrong kind, 28P01 for a wrong one.
                let code = match refused {
                    AuthError::NotAnAgent => "28000",
                    AuthError::NoCredential | AuthError::Refused(_) => "28P01",
                };
                return fatal(
                    client.get_mut(),
                    code,
                    &format!("agent \"{agent}\" was not let in: {refused}"),
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

        let peer = Peer {
            credential,
            session,
        };
        let result = self.relay(client, upstream, &peer).await;
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
        peer: &Peer,
    ) -> Result<(), WireError> {
        let max = self.config.max_message_bytes;
        let (client_read, client_write) = client.into_inner().into_split();
        let (upstream_read, mut upstream_write) = upstream.into_inner().into_split();
        let mut client_read = BufReader::new(client_read);
        // One entry per `ReadyForQuery` expected: the denial to put before it, if any.
        let pending: Arc<Mutex<VecDeque<Round>>> = Arc::default();
        let writer = Arc::new(tokio::sync::Mutex::new(BufWriter::new(client_write)));
        let answers = tokio::spawn(pass_answers(
            BufReader::new(upstream_read),
            Arc::clone(&writer),
            Arc::clone(&pending),
            max,
            self.config.decision_timeout,
        ));
        let push = |round: Round| {
            if let Ok(mut p) = pending.lock() {
                p.push_back(round);
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
                        let checked = self
                            .check_ahead(peer, &sql, !self.config.strict_order)
                            .await;
                        match checked {
                            Ok((allowed, durable)) => {
                                // Queued before the statement is sent, so the answer always
                                // finds it.
                                push(match durable {
                                    Some(durable) => Round::Hold(tokio::spawn(durable)),
                                    None => Round::Pass(None),
                                });
                                let Some(narrowed) = allowed.narrowed else {
                                    upstream_write.write_all(&message.encode()).await?;
                                    continue;
                                };
                                let mut body = Vec::with_capacity(narrowed.len() + 1);
                                wire::put_cstr(&mut body, &narrowed);
                                upstream_write
                                    .write_all(&Message::new(b'Q', body).encode())
                                    .await?;
                            }
                            Err(denial) => {
                                push(Round::Pass(Some(denial.error_body())));
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
                        match self.check(peer, &sql).await {
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
                        push(Round::Pass(discarding.take()));
                        upstream_write.write_all(&message.encode()).await?;
                    }
                    b'F' => {
                        // A function call by object id would bypass the analysis.
                        let denial = Denial::new("function calls by object id are not allowed", None);
                        push(Round::Pass(Some(denial.error_body())));
                        upstream_write.write_all(&sync()).await?;
                    }
                    b'B' => {
                        if discarding.is_some() {
                            continue;
                        }
                        let mut r = Reader::new(&message.body);
                        let _portal = r.cstr()?;
                        let statement = r.cstr()?.to_owned();
                        match self.recheck(peer, &statement, &mut prepared).await {
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
/// round, after which it skipped the rest of it anyway), and holding back the answer to a
/// read sent ahead of its record until the record is durable (at most `deadline`).
async fn pass_answers(
    mut upstream: BufReader<tokio::net::tcp::OwnedReadHalf>,
    client: Arc<tokio::sync::Mutex<BufWriter<tokio::net::tcp::OwnedWriteHalf>>>,
    pending: Arc<Mutex<VecDeque<Round>>>,
    max: usize,
    deadline: std::time::Duration,
) -> Result<(), WireError> {
    let mut errored = false;
    // Whether this round's entry was looked at: it is queued before the messages that start
    // the round are sent, except for an extended-protocol round answered before its `Sync`
    // (which is never held).
    let mut seen = false;
    // The denial that replaces this round's answer, when it was held and its record failed.
    let mut discard: Option<Vec<u8>> = None;
    while let Some(m) = wire::read_message(&mut upstream, max).await? {
        if !seen {
            let held = match pending.lock() {
                Ok(mut p) => match p.front_mut() {
                    Some(front) => {
                        seen = true;
                        match std::mem::replace(front, Round::Pass(None)) {
                            Round::Hold(durable) => Some(durable),
                            pass => {
                                *front = pass;
                                None
                            }
                        }
                    }
                    None => None,
                },
                // Cannot tell whether this answer must be held: end the session rather than
                // pass it.
                Err(_) => return Err(std::io::Error::other("the session's state was lost").into()),
            };
            if let Some(durable) = held {
                discard = match tokio::time::timeout(deadline, durable).await {
                    Ok(Ok(Ok(()))) => None,
                    Ok(Ok(Err(denied))) => Some(denied.denial().error_body()),
                    Ok(Err(_)) => {
                        Some(Denial::new("the decision could not be recorded", None).error_body())
                    }
                    Err(_) => {
                        tracing::warn!(
                            "a read's decision record was not durable in time; its results are discarded"
                        );
                        Some(
                            Denial::new("the decision could not be recorded in time", None)
                                .error_body(),
                        )
                    }
                };
            }
        }
        let mut client = client.lock().await;
        match m.tag {
            b'Z' => {
                let denial = match pending.lock().ok().and_then(|mut p| p.pop_front()) {
                    Some(Round::Pass(denial)) => denial,
                    _ => None,
                };
                if let Some(body) = discard.take() {
                    wire::write_message(&mut *client, b'E', &body).await?;
                } else if let Some(body) = denial
                    && !errored
                {
                    wire::write_message(&mut *client, b'E', &body).await?;
                }
                errored = false;
                seen = false;
            }
            _ if discard.is_some() => continue,
            b'E' => errored = true,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::session_option;

    #[test]
    fn the_session_comes_from_the_startup_options() {
        assert_eq!(session_option("").unwrap(), None);
        assert_eq!(session_option("-c geqo=off").unwrap(), None);
        for options in [
            "-c arbiter.session=trip",
            "-carbiter.session=trip",
            "--arbiter.session=trip",
            "-c geqo=off -c arbiter.session=trip",
        ] {
            assert_eq!(
                session_option(options).unwrap().as_deref(),
                Some("trip"),
                "{options}"
            );
        }
        // libpq's escape for a space inside a value: still not a session id.
        assert!(session_option("-c arbiter.session=a\\ b").is_err());
        assert!(session_option("-c arbiter.session=").is_err());
        assert!(session_option("-c arbiter.session=a -c arbiter.session=b").is_err());
    }
}
