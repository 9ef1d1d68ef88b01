//! TLS to PostgreSQL, with libpq's `sslmode` and `sslrootcert`.
//!
//! The PostgreSQL client parses `sslmode=disable|prefer|require` only and brings no TLS of its
//! own. This module takes `sslmode` and `sslrootcert` out of the store URL ([`parse`]), decides
//! what is checked ([`TlsOptions`]), and provides the client's TLS connector ([`MakeRustls`]):
//! rustls on the `ring` provider, so that building needs nothing but a Rust toolchain and a C
//! compiler.
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | not checked; with `sslrootcert`, its chain is |
//! | `require` | always | not checked; with `sslrootcert`, its chain is |
//! | `verify-ca` | always | its chain, up to a certificate of `sslrootcert` |
//! | `verify-full` | always | its chain, and that it names the host of the URL |
//!
//! `sslrootcert` is a PEM file (one or more certificates) or `system` (the Mozilla roots
//! compiled in). As in libpq, `sslrootcert=system` makes `verify-full` the default and refuses
//! any weaker mode: a public authority certifies anyone's server, so only the host name makes
//! its signature mean something.
//!
//! Even when the certificate is not checked, the handshake's signatures are: the server must
//! hold the key of the certificate it presents. That certificate also binds SCRAM
//! authentication to this TLS session (`tls-server-end-point`, RFC 5929), so a password
//! exchange cannot be relayed through another server even then.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::Socket;
use postgres::config::{Config, Host};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::StoreError;

/// libpq's `sslmode`: whether TLS is used, and what of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS, and the server's certificate chains up to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    const NAMES: &'static str = "`disable`, `prefer`, `require`, `verify-ca` or `verify-full`";

    fn parse(value: &str) -> Result<Self, StoreError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(StoreError::invalid(
                "store URL",
                format!("sslmode `allow` is not supported: use {}", Self::NAMES),
            )),
            other => Err(StoreError::invalid(
                "store URL",
                format!("unknown sslmode `{other}`: expected {}", Self::NAMES),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the certificates that may sign the server's come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The Mozilla roots compiled into this build (`sslrootcert=system`).
    System,
}

/// What checking the server's certificate amounts to, once mode and root certificate are
/// combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Any certificate, as long as the server proves it holds its key.
    Nothing,
    /// The chain, up to a root certificate; not the host name.
    Chain,
    /// The chain and the host name.
    ChainAndName,
}

/// The TLS settings of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    mode: SslMode,
    root_cert: Option<RootCert>,
}

impl TlsOptions {
    /// The settings `sslmode` and `sslrootcert` ask for (`None`: not in the URL).
    ///
    /// INVARIANT: a mode that checks the chain has a root certificate, and
    /// `sslrootcert=system` comes with `verify-full`.
    fn new(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<Self, StoreError> {
        let root_cert = match sslrootcert {
            None => None,
            Some("") => {
                return Err(StoreError::invalid(
                    "store URL",
                    "sslrootcert is empty: name a PEM file or `system`",
                ));
            }
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
        };
        let mode = match (sslmode.map(SslMode::parse).transpose()?, &root_cert) {
            (Some(mode), _) => mode,
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        };
        match (mode, &root_cert) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => Err(StoreError::invalid(
                "store URL",
                format!(
                    "sslmode `{}` checks the server's certificate against sslrootcert, which is \
                     missing: add `sslrootcert=/path/to/ca.pem` (or `sslrootcert=system` for a \
                     publicly certified server)",
                    mode.name()
                ),
            )),
            (
                SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa,
                Some(RootCert::System),
            ) => Err(StoreError::invalid(
                "store URL",
                format!(
                    "sslmode `{}` may not be used with `sslrootcert=system`: a public authority \
                     certifies servers of anyone, so only `verify-full` (the default with it) \
                     checks that the server is the one named",
                    mode.name()
                ),
            )),
            _ => Ok(Self { mode, root_cert }),
        }
    }

    /// What is checked of the server's certificate. With `sslrootcert`, `prefer` and `require`
    /// check the chain, as libpq does.
    fn check(&self) -> Check {
        match (self.mode, &self.root_cert) {
            (SslMode::VerifyFull, _) => Check::ChainAndName,
            (SslMode::VerifyCa, _) | (SslMode::Prefer | SslMode::Require, Some(_)) => Check::Chain,
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
        }
    }

    /// Whether the server is authenticated: its certificate is checked (`verify-ca`,
    /// `verify-full`, or `prefer`/`require` with `sslrootcert`). Otherwise anyone on the path to
    /// it can pose as the server.
    pub(crate) fn verified(&self) -> bool {
        match self.check() {
            Check::Chain | Check::ChainAndName => true,
            Check::Nothing => false,
        }
    }

    /// `sslmode` as given or defaulted.
    pub(crate) fn mode_name(&self) -> &'static str {
        self.mode.name()
    }

    /// What to warn of when a store opens on `config`: a server on another machine (see
    /// [`local`]) whose certificate is not checked, or reached without TLS.
    pub(crate) fn warning(&self, config: &Config) -> Option<&'static str> {
        if self.verified() || local(config) {
            return None;
        }
        Some(match self.mode {
            SslMode::Disable => {
                "the identity store's connection to PostgreSQL is not encrypted: use \
                 sslmode=verify-full with sslrootcert"
            }
            SslMode::Prefer | SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                "the identity store does not verify PostgreSQL's certificate, so a server posing \
                 as it would be trusted: use sslmode=verify-full with sslrootcert"
            }
        })
    }

    /// Applies the mode to the client's configuration: whether TLS is required (it has no
    /// notion of checking a certificate, which is [`MakeRustls`]'s part).
    pub(crate) fn apply(&self, config: &mut Config) {
        use postgres::config::SslMode as Client;
        config.ssl_mode(match self.mode {
            SslMode::Disable => Client::Disable,
            SslMode::Prefer => Client::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Client::Require,
        });
    }

    /// The TLS connector: reads `sslrootcert`, once for every connection of the store.
    pub(crate) fn connector(&self) -> Result<MakeRustls, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let check = self.check();
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }),
            Check::Chain | Check::ChainAndName => {
                let roots = match &self.root_cert {
                    Some(RootCert::File(path)) => roots_from_file(path)?,
                    Some(RootCert::System) => RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                    // Excluded by the constructor; refusing keeps it closed all the same.
                    None => {
                        return Err(StoreError::invalid(
                            "store URL",
                            "checking the server's certificate needs sslrootcert",
                        ));
                    }
                };
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            StoreError::invalid("store URL", format!("sslrootcert: {e}"))
                        })?;
                if check == Check::Chain {
                    Arc::new(ChainOnly { webpki })
                } else {
                    webpki
                }
            }
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Unavailable(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What PostgreSQL 17 asks of a client that starts with TLS (`sslnegotiation=direct`);
        // earlier servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustls {
            config: Arc::new(config),
            check_name: check == Check::ChainAndName,
        })
    }

    /// A sentence on what a failed connection has to do with these settings, if it failed on
    /// the server's certificate.
    pub(crate) fn explain(&self, e: &postgres::Error) -> Option<String> {
        let error = rustls_error(e)?;
        let rustls::Error::InvalidCertificate(cert) = error else {
            return None;
        };
        let root = match &self.root_cert {
            Some(RootCert::File(path)) => format!("sslrootcert `{}`", path.display()),
            Some(RootCert::System) => "the system's root certificates".to_owned(),
            None => "sslrootcert".to_owned(),
        };
        match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Some(format!(
                    "the host name does not match the server's certificate: sslmode `{}` \
                     connects only to a host the certificate names",
                    self.mode.name()
                ))
            }
            CertificateError::UnknownIssuer => Some(format!(
                "the server's certificate is not signed by a certificate of {root}"
            )),
            CertificateError::BadSignature => Some(format!(
                "the server's certificate chain does not verify against {root}"
            )),
            _ => None,
        }
    }
}

/// The rustls error under a client error, if the handshake failed in rustls.
fn rustls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // An I/O error hides its inner error from `source()`.
        if let Some(r) = s
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        source = s.source();
    }
    None
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, StoreError> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| {
        StoreError::invalid(
            "store URL",
            format!("cannot read sslrootcert `{shown}`: {e}"),
        )
    })?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| {
            StoreError::invalid(
                "store URL",
                format!("sslrootcert `{shown}` is not PEM: {e}"),
            )
        })?;
        roots.add(cert).map_err(|e| {
            StoreError::invalid(
                "store URL",
                format!("certificate {} of sslrootcert `{shown}`: {e}", i + 1),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(StoreError::invalid(
            "store URL",
            format!(
                "sslrootcert `{shown}` holds no certificate (expected PEM: `-----BEGIN \
                 CERTIFICATE-----`)"
            ),
        ));
    }
    Ok(roots)
}

/// Accepts any certificate, but only from a server that proves it holds the certificate's key
/// (the handshake's signatures are verified): the "no certificate check" of `prefer` and
/// `require`.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check, with the host name left out. The chain is checked before the
/// name, so a name mismatch is only reported for a chain that verified.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

// ---- the store URL ----

/// A store URL with `sslmode` and `sslrootcert` taken out: the rest, for the PostgreSQL
/// client, and their values (the last of each, as the client takes the last of a parameter).
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Splits a store URL (the URL and the key-value forms) into what the PostgreSQL client
/// parses and its TLS settings.
pub(crate) fn parse(url: &str) -> Result<(String, TlsOptions), StoreError> {
    let split = split(url);
    let tls = TlsOptions::new(split.sslmode.as_deref(), split.sslrootcert.as_deref())?;
    Ok((split.rest, tls))
}

/// The URL without its TLS settings, for messages: never fails.
pub(crate) fn without_tls(url: &str) -> String {
    split(url).rest
}

fn split(url: &str) -> Split {
    ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| url.strip_prefix(prefix).map(|r| (*prefix, r)))
        .map_or_else(|| split_key_values(url), |(p, r)| split_url(p, r))
}

/// The URL form: parameters follow the first `?` after the credentials (which end at the first
/// `@`, as the client reads them, so a password is never taken for a parameter).
fn split_url(prefix: &str, after_prefix: &str) -> Split {
    let creds = after_prefix.find('@').map_or(0, |at| at + 1);
    let Some(q) = after_prefix[creds..].find('?').map(|q| creds + q) else {
        return Split {
            rest: format!("{prefix}{after_prefix}"),
            ..Split::default()
        };
    };
    let mut out = Split::default();
    let mut kept = Vec::new();
    for pair in after_prefix[q + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match percent_decode(key).as_deref() {
            Some("sslmode") => &mut out.sslmode,
            Some("sslrootcert") => &mut out.sslrootcert,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        match percent_decode(value) {
            Some(v) => *slot = Some(v),
            // Not UTF-8: left for the client to refuse.
            None => kept.push(pair),
        }
    }
    out.rest = format!("{prefix}{}", &after_prefix[..q]);
    if !kept.is_empty() {
        out.rest.push('?');
        out.rest.push_str(&kept.join("&"));
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(0));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The key-value form (`host=h dbname=d sslmode=verify-full`), read as the client reads it:
/// values may be quoted with `'` and escape with `\`. Pairs other than the TLS settings are
/// passed on as written; text that does not read as pairs is passed on whole, for the client to
/// refuse.
fn split_key_values(s: &str) -> Split {
    let mut out = Split::default();
    let mut rest = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    let mut from = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key_end = s.len();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                key_end = i;
                break;
            }
            chars.next();
        }
        let key = &s[start..key_end];
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Split {
                rest: s.to_owned(),
                ..Split::default()
            };
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut closed = !quoted;
        while let Some((_, c)) = chars.next_if(|(_, c)| quoted || !c.is_whitespace()) {
            match c {
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(next);
                    }
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Split {
                rest: s.to_owned(),
                ..Split::default()
            };
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        match key {
            "sslmode" => out.sslmode = Some(value),
            "sslrootcert" => out.sslrootcert = Some(value),
            _ => {
                rest.push_str(&s[from..end]);
            }
        }
        from = end;
    }
    out.rest = rest;
    out
}

// ---- where the server is ----

/// Whether every connection of `config` stays on this machine (a Unix socket, `localhost`, a
/// loopback address), where no one can sit between the store and the server.
pub(crate) fn local(config: &Config) -> bool {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    if hosts.is_empty() && addrs.is_empty() {
        return false;
    }
    let host_local = |h: &Host| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    };
    // A host's `hostaddr`, when given, is where the connection goes.
    let hosts_local = hosts.iter().enumerate().all(|(i, h)| {
        addrs
            .get(i)
            .map_or_else(|| host_local(h), IpAddr::is_loopback)
    });
    hosts_local && addrs.iter().all(IpAddr::is_loopback)
}

// ---- the connector the PostgreSQL client calls ----

/// Makes the TLS connector of one connection: the same configuration for every connection of a
/// store (first session, listener, writers, readers, reconnections).
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<ClientConfig>,
    /// `verify-full`: the host must be a name or address a certificate can hold.
    check_name: bool,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustls")
            .field("check_name", &self.check_name)
            .finish_non_exhaustive()
    }
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// Called for every host, TLS or not (with `""` for a Unix socket, where the server never
    /// offers TLS), so a host a certificate cannot name fails only when TLS is tried.
    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            if self.check_name {
                format!("host `{host}` is neither a DNS name nor an IP address, so sslmode `verify-full` cannot check it")
            } else {
                format!("host `{host}` is neither a DNS name nor an IP address, as TLS needs")
            }
        });
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            name,
        })
    }
}

/// The TLS handshake of one connection.
#[derive(Debug)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: Result<ServerName<'static>, String>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let name = self
                .name
                .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A connection inside TLS.
#[derive(Debug)]
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| tls_server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

// ---- channel binding ----

/// `tls-server-end-point` (RFC 5929 §4.1) of the server's certificate: its hash with the hash
/// function of its signature algorithm, SHA-256 in place of MD5 and SHA-1. `None` when the
/// algorithm names no such hash (Ed25519, RSASSA-PSS): then PostgreSQL cannot bind either, and
/// SCRAM runs without channel binding.
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    Some(match end_point_hash(signature_algorithm(cert)?)? {
        EndPointHash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash for `tls-server-end-point` of a signature algorithm (its DER object identifier).
fn end_point_hash(oid: &[u8]) -> Option<EndPointHash> {
    // 1.2.840.113549.1.1.n: PKCS #1 RSA with a hash.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    // 1.2.840.10045.4.1 (ECDSA with SHA-1) and 1.2.840.10045.4.3.n (ECDSA with SHA-2).
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    if let Some(n) = oid.strip_prefix(RSA) {
        return match n {
            // MD5, SHA-1, SHA-256
            [4 | 5 | 11] => Some(EndPointHash::Sha256),
            [12] => Some(EndPointHash::Sha384),
            [13] => Some(EndPointHash::Sha512),
            _ => None,
        };
    }
    if oid == ECDSA_SHA1 {
        return Some(EndPointHash::Sha256);
    }
    match oid.strip_prefix(ECDSA_SHA2)? {
        [2] => Some(EndPointHash::Sha256),
        [3] => Some(EndPointHash::Sha384),
        [4] => Some(EndPointHash::Sha512),
        _ => None,
    }
}

/// The object identifier of a certificate's `signatureAlgorithm`:
/// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, … }, … }`.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, after_tbs) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der(after_tbs)? else {
        return None;
    };
    let (OID, oid, _) = der(algorithm)? else {
        return None;
    };
    Some(oid)
}

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (len, input) = input.split_at(n);
        let len = len.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, input)
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn options(url: &str) -> TlsOptions {
        parse(url).unwrap().1
    }

    fn error(url: &str) -> String {
        parse(url).unwrap_err().to_string()
    }

    #[test]
    fn without_sslmode_tls_is_preferred_and_the_certificate_unchecked() {
        let (rest, tls) = parse("postgres://u:pw@db.example:5432/arbiter").unwrap();
        assert_eq!(rest, "postgres://u:pw@db.example:5432/arbiter");
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.check(), Check::Nothing);
        assert!(!tls.verified());
    }

    #[test]
    fn the_tls_parameters_are_taken_out_and_the_others_left_as_written() {
        let (rest, tls) = parse(
            "postgresql://u@h/db?application_name=a%20b&sslmode=verify-full&connect_timeout=3\
             &sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u@h/db?application_name=a%20b&connect_timeout=3"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCert::File(PathBuf::from("/etc/ca.pem")))
        );
        assert_eq!(tls.check(), Check::ChainAndName);
        assert!(tls.verified());

        let (rest, tls) = parse("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(tls.mode, SslMode::Require);
        // The client's own parser takes what is left.
        assert!(rest.parse::<Config>().is_ok());
    }

    #[test]
    fn a_question_mark_or_parameter_in_the_password_is_not_a_parameter() {
        let (rest, tls) = parse("postgres://u:p?sslmode=disable@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://u:p?sslmode=disable@h/db");
        assert_eq!(tls.mode, SslMode::Require);
    }

    #[test]
    fn the_last_of_a_repeated_parameter_counts() {
        assert_eq!(
            options("postgres://h/db?sslmode=disable&sslmode=verify-ca&sslrootcert=/ca.pem").mode,
            SslMode::VerifyCa
        );
    }

    #[test]
    fn the_key_value_form_is_split_too() {
        let (rest, tls) = parse(
            "host=localhost  sslmode = verify-full dbname=arbiter \
             sslrootcert='/etc/my ca\\'s.pem' user=u",
        )
        .unwrap();
        assert_eq!(rest, "host=localhost dbname=arbiter user=u");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCert::File(PathBuf::from("/etc/my ca's.pem")))
        );
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_dbname(), Some("arbiter"));

        let (rest, tls) = parse("host=h sslmode=disable").unwrap();
        assert_eq!(rest, "host=h");
        assert_eq!(tls.mode, SslMode::Disable);
        // Not pairs: passed on whole, for the client to refuse.
        assert_eq!(parse("host=h sslmode").unwrap().0, "host=h sslmode");
        assert_eq!(parse("host='h").unwrap().0, "host='h");
    }

    #[test]
    fn sslrootcert_makes_prefer_and_require_check_the_chain() {
        for mode in ["prefer", "require"] {
            let tls = options(&format!(
                "postgres://h/db?sslmode={mode}&sslrootcert=/ca.pem"
            ));
            assert_eq!(tls.check(), Check::Chain, "{mode}");
            assert!(tls.verified());
        }
        assert_eq!(
            options("postgres://h/db?sslmode=verify-ca&sslrootcert=/ca.pem").check(),
            Check::Chain
        );
        assert_eq!(
            options("postgres://h/db?sslmode=disable&sslrootcert=/ca.pem").check(),
            Check::Nothing
        );
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_nothing_weaker() {
        let tls = options("postgres://h/db?sslrootcert=system");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(RootCert::System));
        assert!(tls.connector().is_ok(), "the compiled-in roots load");
        for mode in ["disable", "prefer", "require", "verify-ca"] {
            let e = error(&format!(
                "postgres://h/db?sslmode={mode}&sslrootcert=system"
            ));
            assert!(e.contains(&format!("sslmode `{mode}`")), "{e}");
            assert!(e.contains("verify-full"), "{e}");
        }
    }

    #[test]
    fn a_bad_sslmode_or_a_check_without_a_root_certificate_is_refused_by_name() {
        let e = error("postgres://u:secret-pw@h/db?sslmode=verify_full");
        assert!(e.contains("unknown sslmode `verify_full`"), "{e}");
        assert!(e.contains("verify-full"), "the modes are listed: {e}");
        assert!(!e.contains("secret-pw"), "{e}");
        let e = error("postgres://h/db?sslmode=allow");
        assert!(e.contains("`allow` is not supported"), "{e}");
        for mode in ["verify-ca", "verify-full"] {
            let e = error(&format!("postgres://h/db?sslmode={mode}"));
            assert!(e.contains("sslrootcert"), "{e}");
            assert!(e.contains(mode), "{e}");
        }
        let e = error("postgres://h/db?sslrootcert=");
        assert!(e.contains("sslrootcert is empty"), "{e}");
    }

    #[test]
    fn an_unreadable_or_empty_root_certificate_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = options(&format!(
            "postgres://h/db?sslmode=verify-full&sslrootcert={}",
            missing.display()
        ))
        .connector()
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot read sslrootcert"), "{e}");
        assert!(e.contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = options(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .connector()
        .unwrap_err()
        .to_string();
        assert!(e.contains("holds no certificate"), "{e}");
    }

    #[test]
    fn only_loopback_hosts_and_sockets_are_local() {
        let local_ = |s: &str| local(&s.parse::<Config>().unwrap());
        assert!(local_("postgres://u@localhost/db"));
        assert!(local_("postgres://u@127.0.0.1:5432/db"));
        assert!(local_("postgres://u@[::1]:5432/db"));
        assert!(local_("host=/var/run/postgresql dbname=db"));
        assert!(!local_("postgres://u@db.example/db"));
        assert!(!local_("postgres://u@10.0.0.5/db"));
        assert!(!local_("host=localhost,db.example dbname=db"));
        // Where the connection goes is the address, not the name.
        assert!(!local_("host=localhost hostaddr=10.0.0.5 dbname=db"));
        assert!(local_("host=db.example hostaddr=127.0.0.1 dbname=db"));
    }

    #[test]
    fn an_unverified_server_on_another_machine_is_warned_of() {
        let warning = |url: &str| {
            let (rest, tls) = parse(url).unwrap();
            tls.warning(&rest.parse::<Config>().unwrap())
        };
        for params in ["", "?sslmode=prefer", "?sslmode=require"] {
            let w = warning(&format!("postgres://u@db.example/db{params}")).unwrap();
            assert!(w.contains("does not verify"), "{params}: {w}");
            assert!(w.contains("sslmode=verify-full"), "{w}");
        }
        let w = warning("postgres://u@10.0.0.5/db?sslmode=disable").unwrap();
        assert!(w.contains("not encrypted"), "{w}");
        assert!(w.contains("sslmode=verify-full"), "{w}");
        for quiet in [
            "postgres://u@db.example/db?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgres://u@db.example/db?sslmode=verify-ca&sslrootcert=/ca.pem",
            "postgres://u@db.example/db?sslmode=require&sslrootcert=/ca.pem",
            "postgres://u@db.example/db?sslrootcert=system",
            "postgres://u@127.0.0.1/db?sslmode=require",
            "postgres://u@localhost/db?sslmode=disable",
            "host=/run/postgresql dbname=db",
        ] {
            assert_eq!(warning(quiet), None, "{quiet}");
        }
    }

    /// `SEQUENCE { SEQUENCE {}, SEQUENCE { OID oid }, BIT STRING {} }`: as much of a
    /// certificate as the signature algorithm needs.
    fn certificate_signed_with(oid: &[u8]) -> Vec<u8> {
        let len = u8::try_from(oid.len()).unwrap();
        let mut inner = vec![0x30, 0x00, 0x30, len + 2, 0x06, len];
        inner.extend_from_slice(oid);
        inner.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![0x30, u8::try_from(inner.len()).unwrap()];
        cert.extend(inner);
        cert
    }

    #[test]
    fn channel_binding_hashes_with_the_hash_of_the_signature() {
        use sha2::Digest;
        let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let cert = certificate_signed_with(&sha256_rsa);
        assert_eq!(signature_algorithm(&cert), Some(&sha256_rsa[..]));
        assert_eq!(
            tls_server_end_point(&cert),
            Some(sha2::Sha256::digest(&cert).to_vec())
        );
        let cases: [(&[u8], Option<EndPointHash>); 8] = [
            // SHA-1 with RSA and ECDSA: SHA-256, as RFC 5929 says.
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
                Some(EndPointHash::Sha256),
            ),
            (
                &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
                Some(EndPointHash::Sha256),
            ),
            (
                &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
                Some(EndPointHash::Sha256),
            ),
            (
                &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
                Some(EndPointHash::Sha384),
            ),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
                Some(EndPointHash::Sha512),
            ),
            // RSASSA-PSS (the hash is in its parameters) and Ed25519: no binding.
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
                None,
            ),
            (&[0x2b, 0x65, 0x70], None),
            (&[], None),
        ];
        for (oid, hash) in cases {
            assert_eq!(end_point_hash(oid), hash, "{oid:02x?}");
        }
        let ed25519 = certificate_signed_with(&[0x2b, 0x65, 0x70]);
        assert_eq!(tls_server_end_point(&ed25519), None);
    }

    #[test]
    fn a_truncated_or_malformed_certificate_has_no_channel_binding() {
        let cert = certificate_signed_with(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
        for n in 0..cert.len() {
            assert_eq!(tls_server_end_point(&cert[..n]), None, "{n} bytes");
        }
        assert_eq!(
            tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(tls_server_end_point(&[0x04, 0x00]), None);
    }
}
