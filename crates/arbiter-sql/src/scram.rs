//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding, as the
//! proxy uses it to log in to the database. Passwords are used as given (no SASLprep), which
//! is exact for ASCII passwords.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// Most iterations accepted from a server (PostgreSQL's default is 4096).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Why a SCRAM exchange with the database failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The server-first message lacks its nonce, salt or iteration count.
    #[error("the database's SCRAM challenge is malformed")]
    Challenge,
    /// The server's nonce does not extend the proxy's.
    #[error("the database's SCRAM nonce does not extend the proxy's")]
    Nonce,
    /// An iteration count of 0 or above the bound.
    #[error("the database asks for {0} SCRAM iterations")]
    Iterations(u32),
    /// The server-final message came before the client-final one.
    #[error("the SCRAM exchange is out of order")]
    OutOfOrder,
    /// The server-final message holds no signature.
    #[error("the database's SCRAM answer is malformed or an error")]
    Answer,
    /// The database does not know the password.
    #[error("the database's SCRAM signature is wrong")]
    Signature,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut k0 = [0u8; 64];
    if key.len() > 64 {
        k0[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k0[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k0.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k0.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// One SCRAM-SHA-256 exchange.
#[derive(Debug)]
pub struct Scram {
    password: String,
    nonce: String,
    first_bare: String,
    server_signature: Option<[u8; 32]>,
}

impl Scram {
    /// `nonce`: printable ASCII without `,`.
    pub fn new(user: &str, password: &str, nonce: &str) -> Self {
        Self {
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            first_bare: format!(
                "n={},r={nonce}",
                user.replace('=', "=3D").replace(',', "=2C")
            ),
            server_signature: None,
        }
    }

    /// A fresh random nonce.
    pub fn random_nonce() -> String {
        let mut b = [0u8; 18];
        let _ = getrandom::fill(&mut b);
        STANDARD.encode(b)
    }

    /// The client-first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The client-final message answering `server_first`.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let bad = || ScramError::Challenge;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(STANDARD.decode(v).map_err(|_| bad())?),
                Some(("i=", v)) => iterations = Some(v.parse::<u32>().map_err(|_| bad())?),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(bad());
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::Iterations(iterations));
        }
        let salted = hi(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        let server_key = hmac(&salted, &[b"Server Key"]);
        self.server_signature = Some(hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// The server-final message a server knowing the password answers, once
    /// [`Scram::client_final`] has run.
    pub fn expected_server_final(&self) -> Option<String> {
        self.server_signature
            .map(|s| format!("v={}", STANDARD.encode(s)))
    }

    /// Checks the server-final message: the database proves it knows the password too.
    pub fn verify_final(&self, server_final: &str) -> Result<(), ScramError> {
        let expected = self.server_signature.ok_or(ScramError::OutOfOrder)?;
        let given = server_final
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or(ScramError::Answer)?;
        if given != expected {
            return Err(ScramError::Signature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn rfc7677_example() {
        let mut s = Scram::new("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = s
            .client_final(
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(s.verify_final("v=AAAA").is_err());
        assert!(s.verify_final("e=invalid-proof").is_err());
    }

    #[test]
    fn bad_challenges_are_refused() {
        let mut s = Scram::new("", "pw", "abc");
        for bad in [
            "r=xyz,s=AAAA,i=4096",
            "r=abc,s=AAAA,i=4096",
            "r=abcd,s=!!,i=4096",
            "r=abcd,s=AAAA,i=0",
            "r=abcd,s=AAAA",
        ] {
            assert!(s.client_final(bad).is_err(), "{bad}");
        }
    }
}
