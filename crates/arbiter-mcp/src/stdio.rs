//! The stdio transport: `arbiter mcp stdio -- CMD ARGS…`.
//!
//! The gateway is the MCP client's server process. It spawns the real server with piped
//! stdin/stdout (its stderr is the gateway's), reads newline-delimited JSON-RPC frames from
//! both sides, and writes only what the [`Session`] routes. The agent's credential
//! (`ARBITER_AGENT_KEY`) is removed from the server's environment.

use std::collections::HashMap;
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::jsonrpc::{FrameLimits, Id, Message};
use crate::session::{Gateway, Route, Session, Upstream};
use arbiter_pep::BoxFuture;

/// The environment variable holding the agent's credential.
pub const KEY_ENV: &str = "ARBITER_AGENT_KEY";

/// How a stdio session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The client closed its input; the server's exit code when it had one.
    ClientClosed(Option<i32>),
    /// The server exited (or closed its output) first.
    ServerExited(Option<i32>),
}

/// A frame read from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Line(Vec<u8>),
    /// A line longer than the limit (discarded up to its end).
    TooLong(usize),
    Eof,
}

/// Reads one newline-terminated frame of at most `max` bytes (the newline and a preceding
/// carriage return are not part of it). Empty lines are skipped. Memory use is bounded by
/// `max` whatever the peer sends.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Frame> {
    let mut line = Vec::new();
    let mut overflow = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if overflow > 0 {
                Frame::TooLong(overflow)
            } else if line.is_empty() {
                Frame::Eof
            } else {
                Frame::Line(line)
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if overflow > 0 || line.len() + chunk.len() > max {
            overflow = overflow.saturating_add(line.len() + chunk.len());
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            if overflow > 0 {
                return Ok(Frame::TooLong(overflow));
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            return Ok(Frame::Line(line));
        }
    }
}

type Waiters = Arc<Mutex<HashMap<Id, oneshot::Sender<Message>>>>;

/// The gateway's own requests to the server, over the server's stdin.
struct StdioUpstream {
    to_server: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
}

impl Upstream for StdioUpstream {
    fn request(&self, message: Message) -> BoxFuture<'_, Result<Message, String>> {
        Box::pin(async move {
            let Some(id) = message.id().cloned() else {
                return Err("the gateway's request has no id".to_owned());
            };
            let (tx, rx) = oneshot::channel();
            self.waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, tx);
            self.to_server
                .send(message.to_bytes())
                .await
                .map_err(|_| "the MCP server is gone".to_owned())?;
            rx.await.map_err(|_| "the MCP server is gone".to_owned())
        })
    }
}

/// Why the stdio gateway could not start its server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no MCP server command given (put it after `--`)")]
    NoCommand,
    #[error("cannot start the MCP server `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the MCP server's stdin/stdout could not be piped")]
    Pipes,
}

/// Runs one session: the client on `client_in`/`client_out`, the server spawned from
/// `command`. Returns when either side is done.
pub async fn run<I, O>(
    gateway: Arc<Gateway>,
    credential: Option<String>,
    session: Option<String>,
    command: &[OsString],
    client_in: I,
    client_out: O,
) -> Result<Ended, StartError>
where
    I: tokio::io::AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let Some((program, args)) = command.split_first() else {
        return Err(StartError::NoCommand);
    };
    let mut child = Command::new(program)
        .args(args)
        .env_remove(KEY_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| StartError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
    let (Some(server_in), Some(server_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(StartError::Pipes);
    };
    let limits = gateway.config().limits;
    let max = limits.max_bytes;

    let (to_server, server_rx) = mpsc::channel::<Vec<u8>>(64);
    let (to_client, client_rx) = mpsc::channel::<Vec<u8>>(64);
    let server_writer = tokio::spawn(write_frames(server_in, server_rx));
    let client_writer = tokio::spawn(write_frames(client_out, client_rx));

    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let upstream = Arc::new(StdioUpstream {
        to_server: to_server.clone(),
        waiters: Arc::clone(&waiters),
    });
    let session = Arc::new(Session::new(
        Arc::clone(&gateway),
        session.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        credential,
        upstream,
    ));
    tracing::info!(session = %session.id(), server = %gateway.config().server_name, "MCP session started");

    // Server → client.
    let server_pump = {
        let session = Arc::clone(&session);
        let to_server = to_server.clone();
        let to_client = to_client.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, server_out);
            loop {
                let routes = match read_frame(&mut reader, max).await {
                    Ok(Frame::Line(bytes)) => {
                        if internal_answer(&waiters, &bytes, limits) {
                            continue;
                        }
                        session.from_server(&bytes).await
                    }
                    Ok(Frame::TooLong(n)) => session.fail_pending(&format!(
                        "the MCP server sent a message of {n} bytes, more than the limit of {max}"
                    )),
                    Ok(Frame::Eof) | Err(_) => break,
                };
                if deliver(routes, &to_server, &to_client).await.is_err() {
                    break;
                }
            }
            waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            let routes = session.fail_pending("the MCP server exited before answering");
            let _ = deliver(routes, &to_server, &to_client).await;
        })
    };

    // Client → server.
    let client_pump = {
        let session = Arc::clone(&session);
        let to_server = to_server.clone();
        let to_client = to_client.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, client_in);
            loop {
                let routes = match read_frame(&mut reader, max).await {
                    Ok(Frame::Line(bytes)) => session.from_client(&bytes).await,
                    Ok(Frame::TooLong(n)) => vec![Route::Client(Message::error(
                        None,
                        crate::jsonrpc::code::INVALID_REQUEST,
                        format!("the message is {n} bytes, more than the limit of {max} bytes"),
                        None,
                    ))],
                    Ok(Frame::Eof) | Err(_) => break,
                };
                if deliver(routes, &to_server, &to_client).await.is_err() {
                    break;
                }
            }
        })
    };
    drop(to_server);
    drop(to_client);

    let mut client_pump = client_pump;
    let mut server_pump = server_pump;
    let client_closed = tokio::select! {
        _ = &mut client_pump => true,
        _ = &mut server_pump => false,
    };
    if client_closed {
        // Let the server answer what it was asked (bounded), then close its input so that it
        // exits.
        let idle = async {
            while !session.pending_ids().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), idle).await;
    } else {
        client_pump.abort();
        let _ = client_pump.await;
    }
    // Dropping the writer closes the server's stdin.
    server_writer.abort();
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(s)) => s.code(),
        _ => {
            let _ = child.kill().await;
            None
        }
    };
    if client_closed {
        server_pump.abort();
        let _ = server_pump.await;
    }
    drop(session);
    // Every sender is gone: the client's writer flushes what is left and ends.
    let _ = client_writer.await;
    Ok(if client_closed {
        Ended::ClientClosed(status)
    } else {
        Ended::ServerExited(status)
    })
}

/// An answer to one of the gateway's own requests, handed to its waiter.
fn internal_answer(waiters: &Waiters, bytes: &[u8], limits: FrameLimits) -> bool {
    let mut w = waiters.lock().unwrap_or_else(PoisonError::into_inner);
    if w.is_empty() {
        return false;
    }
    let Ok(message) = crate::jsonrpc::parse(bytes, limits) else {
        return false;
    };
    let id = match &message {
        Message::Result { id, .. } | Message::Error { id: Some(id), .. } => id,
        _ => return false,
    };
    match w.remove(id) {
        Some(tx) => {
            let _ = tx.send(message);
            true
        }
        None => false,
    }
}

async fn deliver(
    routes: Vec<Route>,
    to_server: &mpsc::Sender<Vec<u8>>,
    to_client: &mpsc::Sender<Vec<u8>>,
) -> Result<(), ()> {
    for route in routes {
        let sent = match route {
            Route::Server(m) => to_server.send(m.to_bytes()).await,
            Route::Client(m) => to_client.send(m.to_bytes()).await,
        };
        sent.map_err(|_| ())?;
    }
    Ok(())
}

async fn write_frames<W: AsyncWrite + Unpin>(mut out: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(mut frame) = rx.recv().await {
        frame.push(b'\n');
        if out.write_all(&frame).await.is_err() || out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        loop {
            let f = read_frame(&mut r, max).await.unwrap();
            if f == Frame::Eof {
                return out;
            }
            out.push(f);
        }
    }

    #[tokio::test]
    async fn frames_are_lines_bounded_in_size() {
        let got = frames(b"{\"a\":1}\r\n\n  \nabcdefghijklmnop\n{}", 8).await;
        assert_eq!(
            got,
            vec![
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::TooLong(16),
                Frame::Line(b"{}".to_vec()),
            ]
        );
    }
}
