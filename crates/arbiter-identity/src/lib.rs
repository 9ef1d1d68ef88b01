//! Who is calling: Arbiter's own credentials, what an unknown credential
//! looks like, and which sources call LLM provider APIs without being
//! registered.
//!
//! - [`keys`]: the format of Arbiter's secrets (agent API keys `arb_`, admin
//!   tokens `arbadm_`, PEP tokens `arbpep_`): issuing, strict parsing with an
//!   offline checksum, hashing for storage and constant-time verification;
//! - [`shape`]: [`classify`] names the kind of an unrecognised credential
//!   (an OpenAI key, a JWT, a mistyped Arbiter key, ...) and [`fingerprint`]
//!   gives it a stable keyed identifier, so denials can be correlated without
//!   ever logging the credential;
//! - [`discover`]: scans web/proxy access logs for clients calling LLM
//!   provider APIs, for `arbiter discover`.
//!
//! Pure and synchronous: no async runtime, no database, no other Arbiter
//! crate. The only I/O is reading a caller-supplied reader or file.

pub mod discover;
mod hmac;
pub mod keys;
pub mod shape;

pub use discover::{
    HostList, HostListError, LogFormat, ScanReport, Usage, render_json, render_text,
    scan_access_log, unregistered,
};
pub use keys::{
    IssuedSecret, KeyError, KeyFormatError, PresentedSecret, SecretKind, hash, issue, parse, verify,
};
pub use shape::{FingerprintKey, classify, fingerprint};
