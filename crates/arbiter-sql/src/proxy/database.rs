//! The proxy's own connection to the database: the startup packet, authentication with the
//! configured credentials (cleartext password or SCRAM-SHA-256), and cancel requests passed
//! on with the database's own backend key.

use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::scram::Scram;
use crate::wire::{self, Message, Reader};

use super::Proxy;

/// The `application_name` the guard gives its own connections to the database, alone or
/// followed by `/` and the agent's own `application_name`, so that `pg_stat_activity` tells
/// them from connections that bypass the guard (`arbiter gap --postgres`, which must agree:
/// `arbiter_gap::postgres::GUARD_APPLICATION_NAME`). A label, not a proof.
pub const GUARD_APPLICATION_NAME: &str = "arbiter-sql";

/// The `application_name` of the guard's connection for an agent that gave `client`: at most
/// 63 bytes (PostgreSQL keeps no more), cut at a character boundary, the marker first.
pub fn upstream_application_name(client: &str) -> String {
    if client.is_empty() {
        return GUARD_APPLICATION_NAME.to_owned();
    }
    let mut name = format!("{GUARD_APPLICATION_NAME}/");
    for c in client.chars() {
        if name.len() + c.len_utf8() > 63 {
            break;
        }
        name.push(c);
    }
    name
}

impl Proxy {
    pub(super) async fn connect_upstream(
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
        let application_name = upstream_application_name(application_name);
        params.push(("application_name", application_name.as_str()));
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
                                let last = exchange.client_final(data).map_err(|e| e.to_string())?;
                                wire::write_message(stream.get_mut(), b'p', last.as_bytes())
                                    .await
                                    .map_err(io)?;
                            } else {
                                exchange.verify_final(data).map_err(|e| e.to_string())?;
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

    pub(super) async fn cancel(&self, pid: i32, secret: i32) {
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

/// What the database said during startup: its parameters, its backend key and its
/// transaction status.
#[derive(Debug)]
pub(super) struct Startup {
    pub(super) params: Vec<Message>,
    pub(super) key: Option<(i32, i32)>,
    pub(super) status: u8,
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn the_guard_marks_its_connections_within_postgres_length_limit() {
        assert_eq!(upstream_application_name(""), "arbiter-sql");
        assert_eq!(upstream_application_name("psql"), "arbiter-sql/psql");
        let long = upstream_application_name(&"é".repeat(100));
        assert!(long.len() <= 63 && long.starts_with("arbiter-sql/é"));
    }
}
