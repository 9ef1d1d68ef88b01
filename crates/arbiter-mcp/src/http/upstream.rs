//! The upstream side: [`Outbound`], how the gateway reaches the server, and [`Link`], how
//! one session's messages and the gateway's own requests reach it (with the session's
//! headers, the configured ones, and, in revision 2026-07-28, `Mcp-Method` and `Mcp-Name`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Map, Value};

use crate::jsonrpc::{self, FrameLimits, Id, Message};
use crate::session::Upstream;
use arbiter_pep::BoxFuture;

use super::body::{JSON, Kind, body_kind, read_body};
use super::headers::{
    MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, encode_header_value, mirrored_name,
};
use super::{error_chain, is_answer_to, lock};
use arbiter_pep::sse::SseParser;

/// Time allowed to end a session at the server when the gateway forgets it.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ACCEPT: &str = "application/json, text/event-stream";

/// How the gateway reaches the server.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) client: Client<HttpConnector, Full<Bytes>>,
    pub(super) uri: Uri,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) limits: FrameLimits,
    pub(super) request_timeout: Duration,
}

impl Outbound {
    /// Sends a request; the answer's headers must arrive within the request timeout.
    pub(super) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, String> {
        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Err(_) => Err(format!(
                "the MCP server did not answer within {} s",
                self.request_timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!(
                "the MCP server cannot be reached: {}",
                error_chain(&e)
            )),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// The upstream side of one [`Session`]: how its messages, and the gateway's own requests,
/// reach the server.
pub(super) struct Link {
    pub(super) out: Arc<Outbound>,
    /// The server's session id, once `initialize` was answered with one.
    pub(super) session_id: Mutex<Option<HeaderValue>>,
    /// The protocol version the client last announced.
    version: Mutex<Option<HeaderValue>>,
    /// Revision 2026-07-28: the `_meta` members every request carries (copied from the
    /// client's request onto the gateway's own); `None` before it.
    meta: Option<Map<String, Value>>,
}

impl Link {
    pub(super) fn new(
        out: &Arc<Outbound>,
        version: Option<HeaderValue>,
        meta: Option<Map<String, Value>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            out: Arc::clone(out),
            session_id: Mutex::new(None),
            version: Mutex::new(version),
            meta,
        })
    }

    pub(super) fn set_version(&self, version: Option<HeaderValue>) {
        if let Some(v) = version {
            *lock(&self.version) = Some(v);
        }
    }

    pub(super) fn stateless(&self) -> bool {
        self.meta.is_some()
    }

    /// A request to the endpoint with the session's headers and the configured ones.
    pub(super) fn request(&self, method: Method, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.out.uri.clone();
        let h = req.headers_mut();
        if let Some(id) = lock(&self.session_id).clone() {
            h.insert(MCP_SESSION_ID, id);
        }
        if let Some(v) = lock(&self.version).clone() {
            h.insert(MCP_PROTOCOL_VERSION, v);
        }
        for (name, value) in &self.out.headers {
            h.append(name.clone(), value.clone());
        }
        req
    }

    /// POSTs `message`; `client` holds the client's headers that go on with it.
    pub(super) async fn post(
        &self,
        message: &Message,
        client: HeaderMap,
    ) -> Result<hyper::Response<Incoming>, String> {
        let mut req = self.request(Method::POST, Bytes::from(message.to_bytes()));
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        h.insert(header::ACCEPT, HeaderValue::from_static(DEFAULT_ACCEPT));
        for name in client.keys() {
            h.remove(name);
        }
        h.extend(client);
        if self.stateless()
            && let Some(method) = message.method()
        {
            let method = HeaderValue::from_str(method)
                .map_err(|_| "the method cannot be sent as a header".to_owned())?;
            h.insert(MCP_METHOD, method);
            if let Some(name) = mirrored_name(message) {
                let name = HeaderValue::from_str(&encode_header_value(name))
                    .map_err(|_| "the name cannot be sent as a header".to_owned())?;
                h.insert(MCP_NAME, name);
            }
        }
        self.out.send(req).await
    }

    /// Sends a message whose answer nobody waits for (the gateway's refusal of a server
    /// request).
    pub(super) fn post_detached(self: &Arc<Self>, message: Message) {
        let link = Arc::clone(self);
        tokio::spawn(async move {
            match link.post(&message, HeaderMap::new()).await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "the MCP server refused a message of the gateway")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a message of the gateway did not reach the MCP server")
                }
            }
        });
    }

    /// Ends the session at the server (best effort).
    pub(super) fn end_detached(self: &Arc<Self>) {
        if lock(&self.session_id).is_none() {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let req = link.request(Method::DELETE, Bytes::new());
            let _ = tokio::time::timeout(DELETE_TIMEOUT, link.out.client.request(req)).await;
        });
    }

    /// Adds the client's `_meta` members (2026-07-28) to one of the gateway's own requests.
    fn with_meta(&self, message: Message) -> Message {
        let (Some(meta), Message::Request { id, method, params }) = (&self.meta, &message) else {
            return message;
        };
        let mut params = params.clone().unwrap_or_default();
        let mut own = match params.remove("_meta") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in meta {
            own.entry(k.clone()).or_insert_with(|| v.clone());
        }
        params.insert("_meta".into(), Value::Object(own));
        Message::Request {
            id: id.clone(),
            method: method.clone(),
            params: Some(params),
        }
    }

    /// The answer to request `id` in a server response (JSON, or the SSE stream up to it).
    async fn answer_of(
        &self,
        response: hyper::Response<Incoming>,
        id: &Id,
    ) -> Result<Message, String> {
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the MCP server answered HTTP {status}"));
        }
        let limits = self.out.limits;
        match body_kind(response.headers()) {
            Kind::Json => {
                let bytes = read_body(response.into_body(), limits.max_bytes)
                    .await
                    .map_err(|e| e.describe(limits.max_bytes))?;
                let message = jsonrpc::parse(&bytes, limits)
                    .map_err(|e| format!("the MCP server's answer is malformed ({})", e.message))?;
                if is_answer_to(&message, id) {
                    Ok(message)
                } else {
                    Err("the MCP server answered with another message".to_owned())
                }
            }
            Kind::EventStream => {
                let mut body = response.into_body();
                let mut parser = SseParser::new(limits.max_bytes, "the MCP server");
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| {
                        format!("the MCP server's stream broke: {}", error_chain(&e))
                    })?;
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    for event in parser.push(&data)? {
                        let Some(data) = event.data else { continue };
                        if let Ok(m) = jsonrpc::parse(&data, limits)
                            && is_answer_to(&m, id)
                        {
                            return Ok(m);
                        }
                    }
                }
                Err("the MCP server ended its stream without answering".to_owned())
            }
            Kind::Other => Err("the MCP server answered without a JSON-RPC message".to_owned()),
        }
    }
}

impl Upstream for Link {
    fn request(&self, message: Message) -> BoxFuture<'_, Result<Message, String>> {
        Box::pin(async move {
            let Some(id) = message.id().cloned() else {
                return Err("the gateway's request has no id".to_owned());
            };
            let message = self.with_meta(message);
            let response = self.post(&message, HeaderMap::new()).await?;
            self.answer_of(response, &id).await
        })
    }
}
