//! Console sessions: sign-in with an admin token, a session cookie, a CSRF token, and the
//! cookie's use in place of `Authorization: Bearer` on the admin API.
//!
//! Sessions live in this process's memory only (a restart signs everyone out), keyed by the
//! SHA-256 of the cookie value; the raw cookie value and the admin token are never kept.
//! A session ends at its absolute expiry (8 h, or the token's own expiry if sooner), after
//! 30 minutes without a request, at logout, or at the first request after the admin token
//! that opened it was revoked or expired (the token's credential record is read again on
//! every request made with the cookie).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use arbiter_pdp::identity::AdminCaller;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "arbiter_console";
/// The header carrying the CSRF token on every state change made with the cookie.
pub const CSRF_HEADER: &str = "x-arbiter-csrf";
/// Absolute lifetime of a session.
pub const ABSOLUTE_US: i64 = 8 * 3600 * 1_000_000;
/// A session unused this long ends.
pub const IDLE_US: i64 = 30 * 60 * 1_000_000;
/// Most sessions held at once; the oldest is evicted beyond.
pub const MAX_SESSIONS: usize = 1024;

/// One signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin token's credential id.
    pub credential_id: String,
    /// The token's name.
    pub name: String,
    /// `administrator` or `auditor`.
    pub role: String,
    /// The CSRF token (not a secret from the signed-in browser; compared in constant time).
    pub csrf: String,
    pub created_us: i64,
    /// Absolute expiry: 8 h after sign-in, or the token's expiry if sooner.
    pub expires_us: i64,
    pub last_us: i64,
}

impl Session {
    pub fn admin(&self) -> AdminCaller {
        AdminCaller {
            credential_id: self.credential_id.clone(),
            role: self.role.clone(),
        }
    }

    /// Whether `presented` (the `X-Arbiter-CSRF` value) is this session's CSRF token.
    pub fn csrf_matches(&self, presented: &[u8]) -> bool {
        let want = self.csrf.as_bytes();
        want.len() == presented.len() && bool::from(want.ct_eq(presented))
    }
}

/// The lookup key of a cookie value.
pub type Key = [u8; 32];

pub fn key_of(cookie_value: &str) -> Key {
    Sha256::digest(cookie_value.as_bytes()).into()
}

/// 32 random bytes, base64url without padding (43 characters).
pub fn random_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<Key, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Session>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session; returns the cookie value (shown once, to the browser) and the
    /// session.
    pub fn open(
        &self,
        credential_id: String,
        name: String,
        role: String,
        token_expires_us: Option<i64>,
        now_us: i64,
    ) -> Result<(String, Session), getrandom::Error> {
        let cookie = random_token()?;
        let csrf = random_token()?;
        let absolute = now_us.saturating_add(ABSOLUTE_US);
        let session = Session {
            credential_id,
            name,
            role,
            csrf,
            created_us: now_us,
            expires_us: token_expires_us.map_or(absolute, |t| t.min(absolute)),
            last_us: now_us,
        };
        let mut map = self.lock();
        map.retain(|_, s| live(s, now_us));
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.created_us)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(key_of(&cookie), session.clone());
        Ok((cookie, session))
    }

    /// The live session of `key`, marked used at `now_us` when `touch`; an expired one is
    /// removed.
    pub fn get(&self, key: &Key, now_us: i64, touch: bool) -> Option<Session> {
        let mut map = self.lock();
        let session = map.get_mut(key)?;
        if !live(session, now_us) {
            map.remove(key);
            return None;
        }
        if touch {
            session.last_us = session.last_us.max(now_us);
        }
        Some(session.clone())
    }

    /// Ends the session of `key`.
    pub fn end(&self, key: &Key) -> bool {
        self.lock().remove(key).is_some()
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live(s: &Session, now_us: i64) -> bool {
    now_us < s.expires_us && now_us.saturating_sub(s.last_us) < IDLE_US
}

/// The value of the console cookie among the request's `Cookie` headers: a 43-character
/// base64url value, else `None` (anything else is ignored, never an error).
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    for header in headers.get_all(axum::http::header::COOKIE).iter().take(16) {
        let Ok(text) = header.to_str() else {
            continue;
        };
        for pair in text.split(';').take(64) {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() == COOKIE {
                let value = value.trim();
                if value.len() == 43
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Some(value.to_owned());
                }
            }
        }
    }
    None
}

/// A token bucket per client address for failed sign-ins: `CAPACITY` failures at once, then
/// one more every `REFILL_US`. A client whose bucket is empty is answered 429 before its
/// token is even looked at.
#[derive(Debug, Default)]
pub struct Throttle {
    map: Mutex<HashMap<String, (f64, i64)>>,
}

impl Throttle {
    pub const CAPACITY: f64 = 10.0;
    pub const REFILL_US: i64 = 6_000_000;
    const MAX_CLIENTS: usize = 10_000;

    fn level(tokens: f64, at_us: i64, now_us: i64) -> f64 {
        let refilled = now_us.saturating_sub(at_us).max(0) as f64 / Self::REFILL_US as f64;
        (tokens + refilled).min(Self::CAPACITY)
    }

    /// `Err(seconds to wait)` when `client` may not try now.
    pub fn check(&self, client: &str, now_us: i64) -> Result<(), u64> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(client) {
            Some(&(tokens, at)) if Self::level(tokens, at, now_us) < 1.0 => {
                let missing = 1.0 - Self::level(tokens, at, now_us);
                Err(((missing * Self::REFILL_US as f64) / 1e6).ceil().max(1.0) as u64)
            }
            _ => Ok(()),
        }
    }

    /// Charges one failed sign-in to `client`.
    pub fn failed(&self, client: &str, now_us: i64) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::MAX_CLIENTS && !map.contains_key(client) {
            map.retain(|_, &mut (t, at)| Self::level(t, at, now_us) < Self::CAPACITY);
            if map.len() >= Self::MAX_CLIENTS {
                // Still full of clients that are failing: forget the one that failed longest
                // ago rather than grow.
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
        }
        let (tokens, at) = map.get(client).copied().unwrap_or((Self::CAPACITY, now_us));
        let level = Self::level(tokens, at, now_us);
        map.insert(client.to_owned(), ((level - 1.0).max(0.0), now_us));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn sessions_expire_idle_and_absolute_and_are_bounded() {
        let s = Sessions::default();
        let (cookie, session) = s
            .open("tok".into(), "n".into(), "administrator".into(), None, 0)
            .unwrap();
        assert_eq!(cookie.len(), 43);
        assert_eq!(session.expires_us, ABSOLUTE_US);
        let k = key_of(&cookie);
        assert!(s.get(&k, IDLE_US - 1, true).is_some());
        assert!(s.get(&k, 2 * IDLE_US - 2, true).is_some());
        assert!(s.get(&k, 4 * IDLE_US, true).is_none());
        assert!(s.is_empty());
        // Absolute expiry, even when used all the time; the token's own expiry first.
        let (cookie, session) = s
            .open("tok".into(), "n".into(), "auditor".into(), Some(1000), 0)
            .unwrap();
        assert_eq!(session.expires_us, 1000);
        assert!(s.get(&key_of(&cookie), 1000, true).is_none());
        for i in 0..(MAX_SESSIONS as i64 + 5) {
            s.open("t".into(), "n".into(), "auditor".into(), None, i)
                .unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }

    #[test]
    fn csrf_compare_and_cookie_parsing() {
        let s = Sessions::default();
        let (cookie, session) = s
            .open("tok".into(), "n".into(), "administrator".into(), None, 0)
            .unwrap();
        assert!(session.csrf_matches(session.csrf.as_bytes()));
        assert!(!session.csrf_matches(b"nope"));
        assert!(!session.csrf_matches(b""));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("a=b; {COOKIE}={cookie}; c=d").parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some(cookie.as_str()));
        h.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=short").parse().unwrap(),
        );
        assert_eq!(cookie_value(&h), None);
    }

    #[test]
    fn throttle_refuses_after_capacity_and_refills() {
        let t = Throttle::default();
        for _ in 0..10 {
            assert!(t.check("1.2.3.4", 0).is_ok());
            t.failed("1.2.3.4", 0);
        }
        assert!(t.check("1.2.3.4", 0).is_err());
        assert!(t.check("5.6.7.8", 0).is_ok());
        assert!(t.check("1.2.3.4", Throttle::REFILL_US).is_ok());
    }
}
