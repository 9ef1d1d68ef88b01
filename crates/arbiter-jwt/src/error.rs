//! Errors of token verification and of configuration.
//!
//! A [`JwtError`] may be shown to the client that presented the token, so no message ever
//! contains the token, a claim value or key material: only fixed text, the names of
//! members, and algorithm names that passed a character check.

use std::path::PathBuf;

/// Why a token was refused. Every variant is a refusal: there is no partial success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is not a well-formed compact JWS with JSON object header and payload, or a
    /// claim has the wrong type or shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header `alg` is not an accepted asymmetric algorithm, not in the issuer's
    /// allow-list, or not usable with the selected key.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The `iss` claim names no configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// No key of the issuer's key set matches the token's `kid` (after a refetch, where
    /// the key set comes from a URL and a refetch was allowed).
    #[error("unknown key id")]
    UnknownKid,
    /// The signature does not verify with the selected key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future, or `iat` is in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` contains none of the issuer's configured audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim (or the header `kid`, where the key set needs it) is absent.
    #[error("missing `{0}`")]
    MissingClaim(&'static str),
    /// The issuer's key set could not be refreshed.
    #[error("key set: {0}")]
    Jwks(String),
}

impl JwtError {
    /// A stable, machine-readable code for this error, for logs and client responses.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::Jwks(_) => "jwks",
        }
    }
}

/// Why an issuer configuration or its key set was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file (issuer config or JWKS) could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The issuer config file is not valid: bad JSON, an unknown or missing field, a
    /// value of the wrong type.
    #[error("invalid issuer config `{}`: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field and position.
        message: String,
    },
    /// An issuer's settings are refused (empty audiences, leeway too large, ...).
    #[error("issuer `{issuer}`: {message}")]
    Invalid {
        /// The issuer (`iss`) the setting belongs to.
        issuer: String,
        /// What is wrong.
        message: String,
    },
    /// An issuer's key set could not be loaded or is refused.
    #[error("issuer `{issuer}`: key set: {message}")]
    Jwks {
        /// The issuer (`iss`) the key set belongs to.
        issuer: String,
        /// What is wrong.
        message: String,
    },
}
