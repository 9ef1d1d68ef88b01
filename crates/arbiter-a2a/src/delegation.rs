//! The chain of agents a call is made for, carried from hop to hop.
//!
//! When agent A's message reaches agent B through the gateway, the gateway adds to the
//! message's metadata (`arbiter.delegation`) an assertion it signs: "the agents in `chain`, then
//! A, called B, until `exp`". If B then calls agent C through a gateway and passes that entry
//! on in its own message's metadata, C's gateway checks it — signed by a trusted gateway key
//! (its own, or one given with `--trust-gateway-key`), not expired, naming as callee the agent
//! now calling (B) — and C's decision sees `context.chain == ["A"]`: every hop is visible to
//! policies and in the record. An assertion that does not check is a deny (it is never
//! silently dropped: a caller that claims a chain must have one).
//!
//! The assertion proves that the calls happened, not why B makes its call: B chooses to pass it
//! on. It cannot be used by anyone but the callee it names, and only until it expires.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbiter_log::{KeyPair, PublicKey};
use base64::Engine as _;
use serde_json::{Value, json};

/// How long an assertion may be passed on.
pub const VALID_FOR: Duration = Duration::from_secs(3600);
/// Longest chain carried (hops before the caller).
pub const MAX_CHAIN: usize = 16;
const PURPOSE: &str = "a2a-delegation";
const KEY_FILE: &str = "a2a-gateway.key";
const PUB_FILE: &str = "a2a-gateway.pub";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Signs and checks assertions.
#[derive(Debug)]
pub struct Delegation {
    key: KeyPair,
    trusted: Vec<PublicKey>,
}

impl Delegation {
    /// The gateway's key in `data` (`a2a-gateway.key`, created on first use), trusting its own
    /// assertions and those signed by `trusted`.
    pub fn open(data: &Path, trusted: Vec<PublicKey>) -> Result<Self, String> {
        let key = KeyPair::load_or_create_named(data, KEY_FILE, PUB_FILE)
            .map_err(|e| format!("cannot open the gateway's key in {}: {e}", data.display()))?;
        Ok(Self::with_key(key, trusted))
    }

    /// With `key`, trusting its own assertions and those signed by `trusted`.
    pub fn with_key(key: KeyPair, mut trusted: Vec<PublicKey>) -> Self {
        trusted.push(key.public_key());
        Self { key, trusted }
    }

    /// The gateway's public key (hex), for other gateways' `--trust-gateway-key`.
    pub fn public_key_hex(&self) -> String {
        self.key.public_key_hex()
    }

    /// The assertion for a call by `caller` (after `chain`) to `callee`.
    pub fn assert(&self, chain: &[String], caller: &str, callee: &str) -> String {
        let mut hops = chain.to_vec();
        hops.push(caller.to_owned());
        let body = json!({
            "chain": hops,
            "callee": callee,
            "exp": now_s() + VALID_FOR.as_secs(),
        });
        let bytes = body.to_string().into_bytes();
        let signature = self.key.sign_node_message(PURPOSE, &bytes);
        format!("v1.{}.{signature}", B64.encode(&bytes))
    }

    /// The chain `token` carries, for a call by `caller`; why it does not check otherwise.
    pub fn check(&self, token: &str, caller: &str) -> Result<Vec<String>, String> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the delegation assertion is not of the form v1.<body>.<signature>".into());
        };
        let bytes = B64
            .decode(body)
            .map_err(|_| "the delegation assertion's body is not base64url".to_owned())?;
        if !self
            .trusted
            .iter()
            .any(|k| k.verify_node_message(PURPOSE, &bytes, signature).is_ok())
        {
            return Err("the delegation assertion is not signed by a trusted gateway".into());
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| "the delegation assertion's body is not JSON".to_owned())?;
        if v["callee"].as_str() != Some(caller) {
            return Err(format!(
                "the delegation assertion was given to {}, not to the caller {caller}",
                v["callee"]
            ));
        }
        if v["exp"].as_u64().is_none_or(|exp| exp <= now_s()) {
            return Err("the delegation assertion has expired".into());
        }
        let chain: Vec<String> = v["chain"]
            .as_array()
            .ok_or("the delegation assertion names no chain")?
            .iter()
            .map(|h| h.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or("the delegation assertion's chain is not a list of agent ids")?;
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(format!(
                "the delegation assertion's chain has {} hops (1 to {MAX_CHAIN})",
                chain.len()
            ));
        }
        Ok(chain)
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_chain_goes_from_hop_to_hop() {
        let a_gateway = Delegation::with_key(KeyPair::from_seed(&[1; 32]), Vec::new());
        let token = a_gateway.assert(&[], "alice-agent", "bob-agent");
        assert_eq!(
            a_gateway.check(&token, "bob-agent").unwrap(),
            ["alice-agent"]
        );
        // Only the callee named may pass it on.
        let e = a_gateway.check(&token, "mallory").unwrap_err();
        assert!(e.contains("not to the caller mallory"), "{e}");
        // Another gateway trusts it only with the key.
        let other = Delegation::with_key(KeyPair::from_seed(&[2; 32]), Vec::new());
        assert!(
            other
                .check(&token, "bob-agent")
                .unwrap_err()
                .contains("trusted")
        );
        let trusting = Delegation::with_key(
            KeyPair::from_seed(&[2; 32]),
            vec![KeyPair::from_seed(&[1; 32]).public_key()],
        );
        let next = trusting.assert(
            &trusting.check(&token, "bob-agent").unwrap(),
            "bob-agent",
            "carol",
        );
        assert_eq!(
            trusting.check(&next, "carol").unwrap(),
            ["alice-agent", "bob-agent"]
        );
    }

    #[test]
    fn a_forged_or_mangled_assertion_is_refused() {
        let d = Delegation::with_key(KeyPair::from_seed(&[1; 32]), Vec::new());
        let token = d.assert(&[], "alice", "bob");
        let (head, signature) = token.rsplit_once('.').unwrap();
        let body = B64.encode(br#"{"chain":["root"],"callee":"bob","exp":99999999999}"#);
        let forged = format!("v1.{body}.{signature}");
        assert!(d.check(&forged, "bob").unwrap_err().contains("trusted"));
        for bad in [
            "",
            "v2.a.b",
            "v1.a",
            "v1.!!.00",
            &format!("{head}.{signature}.x"),
        ] {
            assert!(d.check(bad, "bob").is_err(), "{bad}");
        }
    }
}
