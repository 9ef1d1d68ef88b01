//! Verification of external agent tokens.
//!
//! Agents reach Arbiter with JWTs minted by identity providers that Arbiter does not run.
//! This crate decides, for a token and a time, whether one of the configured issuers
//! signed it for us and it is still valid, and if so which agent it names and for which
//! user that agent acts (RFC 8693 delegation). It is strict on purpose: one encoding of
//! each token, no duplicate JSON members, asymmetric algorithms only, keys only from
//! configuration, and every failure is a refusal.
//!
//! The verification path is synchronous and takes the time as a parameter; the only I/O
//! is reading key sets (from files, or from URLs with a bounded HTTP client) when a
//! [`Verifier`] is built and, rate-limited, when a token names an unknown key.
//! [`Verifier::verify_cached`] never does that I/O: it says when the answer needs a fetch,
//! so that an async caller verifies on its own thread and moves only that case to a thread
//! that may block.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::SystemTime;
//! let issuers = arbiter_jwt::load_issuers(std::path::Path::new("/etc/arbiter/issuers.json"))?;
//! let verifier = arbiter_jwt::Verifier::new(issuers)?;
//! let token = verifier.verify("eyJ...", SystemTime::now())?;
//! println!("agent {} acting for {:?}", token.agent_id, token.on_behalf_of);
//! # Ok(()) }
//! ```

mod alg;
mod b64;
mod config;
mod error;
mod fetch;
mod json;
mod jwk;
mod verifier;

pub use alg::{Algorithm, ParseAlgorithmError};
pub use b64::decode as decode_base64url;
pub use config::{
    DEFAULT_AGENT_CLAIM, DEFAULT_LEEWAY, IssuerConfig, JwksSource, MAX_CONFIG_BYTES, MAX_LEEWAY,
    load_issuers, parse_issuers,
};
pub use error::{ConfigError, JwtError};
pub use fetch::{FETCH_TIMEOUT, MAX_JWKS_BYTES};
pub use json::MAX_DEPTH as MAX_JSON_DEPTH;
pub use jwk::{JwkError, MAX_KEYS, MAX_KID_LEN, MAX_RSA_BITS, MIN_RSA_BITS, PublicJwk};
pub use verifier::{
    MAX_ACT_DEPTH, MAX_ID_BYTES, MAX_TOKEN_BYTES, NeedsFetch, REFETCH_INTERVAL, VerifiedToken,
    Verifier,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn verifier_is_send_and_sync() {
        assert_send_sync::<Verifier>();
        assert_send_sync::<VerifiedToken>();
        assert_send_sync::<JwtError>();
    }
}
