//! A node among others sharing one store (`serve --store postgres://…`): it registers its node
//! id, its log's public key and its URL, publishes its latest signed checkpoint, and finds the
//! decisions other nodes made.
//!
//! Nodes ask each other for a decision with a request signed by their log key (headers
//! [`PEER_NODE`], [`PEER_TIME`], [`PEER_SIGNATURE`]): the asked node checks the signature
//! against the key the asker registered in the store, the time against its own clock
//! ([`MAX_SKEW_MS`]), and answers from its own log only — a peer request is never passed on.
//! No operator token ever leaves the node it was presented to.

use std::sync::Arc;
use std::time::Duration;

use arbiter_pdp::Pdp;
use arbiter_store::{NewNode, Node};
use axum::http::HeaderMap;
use serde_json::Value;

/// The asking node's id.
pub const PEER_NODE: &str = "arbiter-node";
/// When it asked, Unix milliseconds.
pub const PEER_TIME: &str = "arbiter-node-time";
/// Its log key's signature over the request (see [`peer_message`]).
pub const PEER_SIGNATURE: &str = "arbiter-node-signature";
/// How far a peer's clock may be from ours.
pub const MAX_SKEW_MS: i64 = 30_000;
/// How long a node waits for another's answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node publishes its latest checkpoint to the store.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// What a peer request signs.
const PURPOSE: &str = "peer-request";

/// The signed bytes of a peer request.
fn peer_message(method: &str, path: &str, node: &str, time_ms: i64) -> Vec<u8> {
    format!("{method}\n{path}\n{node}\n{time_ms}").into_bytes()
}

fn now_ms() -> i64 {
    arbiter_pdp::identity::now_us() / 1_000
}

/// Registers this node in the shared store: its node id, its log's key, and `url`, where the
/// other nodes reach it. Blocking.
pub fn join(pdp: &Pdp, url: Option<String>) -> Result<Node, String> {
    let recorder = pdp
        .recorder()
        .ok_or("a node of a fleet needs its decision log")?;
    let identity = pdp.identity().ok_or("a node of a fleet needs a registry")?;
    identity
        .store()
        .register_node(
            &NewNode {
                id: recorder.node_id().to_owned(),
                public_key: recorder.log().public_key().to_hex(),
                url,
            },
            &arbiter_store::Actor::system("serve"),
            arbiter_pdp::identity::now_us(),
        )
        .map_err(|e| e.to_string())
}

/// Publishes the node's latest checkpoint to the store every [`PUBLISH_EVERY`] when it grew
/// (and once at the start), so an auditor can tell a log that lost records from one that
/// never had them.
pub fn spawn_publisher(pdp: Arc<Pdp>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut published = None;
        loop {
            let pdp2 = pdp.clone();
            let done = tokio::task::spawn_blocking(move || publish(&pdp2, published)).await;
            match done {
                Ok(Ok(size)) => published = size.or(published),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot publish the latest checkpoint to the store; retrying")
                }
                Err(_) => tracing::error!("publishing the latest checkpoint panicked"),
            }
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
    })
}

/// Publishes the latest checkpoint if it is larger than `published`; returns its size.
fn publish(pdp: &Pdp, published: Option<u64>) -> Result<Option<u64>, String> {
    let (Some(recorder), Some(identity)) = (pdp.recorder(), pdp.identity()) else {
        return Ok(None);
    };
    let Some(cp) = recorder.log().latest_checkpoint() else {
        return Ok(None);
    };
    if published.is_some_and(|p| p >= cp.tree_size) {
        return Ok(None);
    }
    let json = String::from_utf8(cp.to_canonical_json()).map_err(|e| e.to_string())?;
    identity
        .store()
        .publish_node_checkpoint(
            recorder.node_id(),
            cp.tree_size,
            &json,
            arbiter_pdp::identity::now_us(),
        )
        .map_err(|e| e.to_string())?;
    Ok(Some(cp.tree_size))
}

/// Whether a request comes from another node: `Ok(None)` without peer headers,
/// `Ok(Some(node id))` when its signature and time check out, `Err(why)` otherwise.
pub async fn peer(
    pdp: &Arc<Pdp>,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Option<String>, String> {
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let (node, time, signature) = match (get(PEER_NODE), get(PEER_TIME), get(PEER_SIGNATURE)) {
        (None, None, None) => return Ok(None),
        (Some(n), Some(t), Some(s)) => (n.to_owned(), t, s.to_owned()),
        _ => {
            return Err(format!(
                "a peer request needs `{PEER_NODE}`, `{PEER_TIME}` and `{PEER_SIGNATURE}`"
            ));
        }
    };
    let time_ms: i64 = time
        .parse()
        .map_err(|_| format!("`{PEER_TIME}` is not a number of milliseconds"))?;
    if (now_ms() - time_ms).abs() > MAX_SKEW_MS {
        return Err(format!(
            "`{PEER_TIME}` is more than {} s from this node's clock",
            MAX_SKEW_MS / 1000
        ));
    }
    let Some(identity) = pdp.identity().cloned() else {
        return Err("this node has no registry to check peers against".to_owned());
    };
    let id = node.clone();
    let registered = tokio::task::spawn_blocking(move || identity.store().node(&id))
        .await
        .map_err(|_| "the peer check panicked".to_owned())?
        .map_err(|e| format!("cannot check the peer: {e}"))?
        .ok_or_else(|| format!("`{node}` is not a registered node"))?;
    let key = arbiter_log::PublicKey::from_hex(&registered.public_key)
        .map_err(|e| format!("the registered key of `{node}` is unusable: {e}"))?;
    key.verify_node_message(
        PURPOSE,
        &peer_message(method, path, &node, time_ms),
        &signature,
    )
    .map_err(|_| format!("the signature of `{node}` does not verify"))?;
    Ok(Some(node))
}

/// What the other nodes said about a decision.
#[derive(Debug)]
pub enum Elsewhere {
    /// Node `node` holds it: its answer.
    Found { node: Node, body: Value },
    /// No node that answered holds it; `unreachable` did not answer.
    NotFound {
        asked: usize,
        unreachable: Vec<String>,
    },
}

/// Asks every other registered node with a URL for `GET path` (a decision of theirs), signed
/// with this node's key; the first that has it answers. Blocking.
pub fn ask_others(pdp: &Pdp, path: &str) -> Result<Elsewhere, String> {
    let (Some(recorder), Some(identity)) = (pdp.recorder(), pdp.identity()) else {
        return Err("this node has no decision log or registry".to_owned());
    };
    let me = recorder.node_id().to_owned();
    let nodes = identity
        .store()
        .nodes()
        .map_err(|e| format!("cannot list the fleet's nodes: {e}"))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PEER_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("arbiter/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut asked = 0;
    let mut unreachable = Vec::new();
    for node in nodes.into_iter().filter(|n| n.id != me) {
        let Some(base) = node.url.clone() else {
            unreachable.push(format!("{} (no URL registered)", node.id));
            continue;
        };
        asked += 1;
        let time_ms = now_ms();
        let signature = recorder
            .log()
            .sign_node_message(PURPOSE, &peer_message("GET", path, &me, time_ms));
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let answer = agent
            .get(&url)
            .header(PEER_NODE, &me)
            .header(PEER_TIME, time_ms.to_string())
            .header(PEER_SIGNATURE, &signature)
            .call();
        let mut response = match answer {
            Ok(r) => r,
            Err(e) => {
                unreachable.push(format!("{} ({e})", node.id));
                continue;
            }
        };
        match response.status().as_u16() {
            200 => {
                let text = response
                    .body_mut()
                    .with_config()
                    .limit(4 * 1024 * 1024)
                    .read_to_string()
                    .map_err(|e| format!("cannot read the answer of `{}`: {e}", node.id))?;
                let body: Value = serde_json::from_str(&text).map_err(|e| {
                    format!("`{}` answered something that is not JSON: {e}", node.id)
                })?;
                return Ok(Elsewhere::Found { node, body });
            }
            404 => {}
            status => unreachable.push(format!("{} (HTTP {status})", node.id)),
        }
    }
    Ok(Elsewhere::NotFound { asked, unreachable })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_peer_signature_covers_method_path_node_and_time() {
        let key = arbiter_log::KeyPair::from_seed(&[7; 32]);
        let msg = peer_message("GET", "/v1/decisions/x", "node-a", 1_000);
        let sig = key.sign_node_message(PURPOSE, &msg);
        let public = key.public_key();
        assert!(public.verify_node_message(PURPOSE, &msg, &sig).is_ok());
        for other in [
            peer_message("GET", "/v1/decisions/y", "node-a", 1_000),
            peer_message("GET", "/v1/decisions/x", "node-b", 1_000),
            peer_message("GET", "/v1/decisions/x", "node-a", 1_001),
        ] {
            assert!(public.verify_node_message(PURPOSE, &other, &sig).is_err());
        }
        // Not a checkpoint signature, nor one of another purpose.
        assert!(public.verify_hex(&msg, &sig).is_err());
        assert!(public.verify_node_message("other", &msg, &sig).is_err());
    }
}
