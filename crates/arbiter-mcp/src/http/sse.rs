//! The server's event streams: read with [`SseParser`] (bounded memory), and [`Relay`] passes
//! each event through the session to the client, answering a request the stream leaves
//! unanswered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use tokio::sync::mpsc;

use crate::jsonrpc::{self, FrameLimits, Id, Message, code};
use crate::session::{Route, Session};

use super::sessions::StreamGuard;
use super::upstream::Link;
use super::{Proxy, error_chain, is_answer_to};
use arbiter_pep::http::ChannelBody;
use arbiter_pep::sse::{SseEvent, SseParser};

/// SSE events buffered towards one client.
const STREAM_BUFFER: usize = 16;

impl Proxy {
    /// A relay of a server stream on `session`; `pending` is the client request the stream
    /// answers (none for a standalone stream).
    pub(super) fn relay(
        &self,
        session: &Arc<Session>,
        link: &Arc<Link>,
        pending: Option<Id>,
    ) -> Relay {
        Relay {
            session: Arc::clone(session),
            link: Arc::clone(link),
            limits: self.limits(),
            pending,
            answered: false,
            stop: self.stop.clone(),
        }
    }
}

/// Passes a server's SSE stream to the client, event by event, through the session.
pub(super) struct Relay {
    session: Arc<Session>,
    link: Arc<Link>,
    limits: FrameLimits,
    /// The client request this stream answers (none for a standalone stream).
    pending: Option<Id>,
    answered: bool,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Relay {
    /// Relays `body` in a task; `idle` bounds the wait for each piece of the stream.
    pub(super) fn spawn(
        mut self,
        mut body: Incoming,
        idle: Option<Duration>,
        guard: Option<StreamGuard>,
    ) -> Body {
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        tokio::spawn(async move {
            let _guard = guard;
            let mut parser = SseParser::new(self.limits.max_bytes, "the MCP server");
            // Whether the server gave event ids (the client may then resume the stream).
            let mut resumable = false;
            let mut stop = self.stop.clone();
            let ended: Result<(), String> = loop {
                let next = async {
                    match idle {
                        Some(t) => tokio::time::timeout(t, body.frame()).await.map_err(|_| ()),
                        None => Ok(body.frame().await),
                    }
                };
                let frame = tokio::select! {
                    () = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                    f = next => f,
                };
                let chunk = match frame {
                    Err(()) => {
                        break Err("the MCP server's stream went quiet for too long".to_owned());
                    }
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(e))) => {
                        break Err(format!(
                            "the MCP server's stream broke: {}",
                            error_chain(&e)
                        ));
                    }
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                };
                let events = match parser.push(&chunk) {
                    Ok(e) => e,
                    Err(e) => break Err(e),
                };
                let mut failed = None;
                for event in events {
                    resumable |= event.id.is_some();
                    match self.event(event).await {
                        Ok(text) if text.is_empty() => {}
                        Ok(text) => {
                            if tx.send(Bytes::from(text)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break Err(e);
                }
            };
            if let Err(e) = &ended {
                tracing::warn!(session = %self.session.id(), error = %e, "an event stream of the MCP server ended early");
            }
            // A request left unanswered is answered with an error, unless the client can
            // resume the stream and get the answer.
            if let Some(id) = self.pending.clone()
                && !self.answered
                && (ended.is_err() || !resumable)
            {
                let why = ended
                    .err()
                    .unwrap_or_else(|| "the MCP server ended its stream without answering".into());
                let error = Message::error(Some(id), code::INTERNAL_ERROR, why, None);
                let routes = self.session.server_message(error).await;
                for route in routes {
                    if let Route::Client(m) = route {
                        let _ = tx.send(Bytes::from(sse_event(None, &m))).await;
                    }
                }
            }
        });
        Body::new(ChannelBody(rx))
    }

    /// The SSE text for one event of the server (empty: nothing to send).
    async fn event(&mut self, event: SseEvent) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if let Some(retry) = event.retry {
            out.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
        }
        let data = event
            .data
            .filter(|d| !d.iter().all(u8::is_ascii_whitespace));
        let mut messages = Vec::new();
        if let Some(data) = data {
            match jsonrpc::parse(&data, self.limits) {
                Ok(m) => {
                    for route in self.session.server_message(m).await {
                        match route {
                            Route::Client(m) => messages.push(m),
                            Route::Server(m) => self.link.post_detached(m),
                        }
                    }
                }
                Err(e) => {
                    let why = format!("the MCP server sent a malformed message ({})", e.message);
                    if self.pending.is_some() {
                        return Err(why);
                    }
                    tracing::warn!(session = %self.session.id(), error = %why, "dropped an event of the MCP server");
                }
            }
        }
        if messages.is_empty() {
            // Nothing to deliver; the id still marks the client's place in the stream.
            if let Some(id) = &event.id {
                out.extend_from_slice(format!("id: {id}\ndata: \n\n").as_bytes());
            }
            return Ok(out);
        }
        let n = messages.len();
        for (i, m) in messages.iter().enumerate() {
            if self.pending.as_ref().is_some_and(|p| is_answer_to(m, p)) {
                self.answered = true;
            }
            let id = if i + 1 == n {
                event.id.as_deref()
            } else {
                None
            };
            out.extend_from_slice(&sse_event(id, m));
        }
        Ok(out)
    }
}

fn sse_event(id: Option<&str>, message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"event: message\n");
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    // Compact JSON: no newline inside.
    out.extend_from_slice(&message.to_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::http::test_support::msg;

    #[test]
    fn relayed_events_keep_their_id() {
        let m = msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        let text = String::from_utf8(sse_event(Some("e7"), &m)).unwrap();
        assert_eq!(
            text,
            "event: message\nid: e7\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
        );
        let back = SseParser::new(1024, "the MCP server")
            .push(text.as_bytes())
            .unwrap();
        assert_eq!(back[0].id.as_deref(), Some("e7"));
        assert_eq!(back[0].data.as_deref(), Some(&m.to_bytes()[..]));
    }
}
