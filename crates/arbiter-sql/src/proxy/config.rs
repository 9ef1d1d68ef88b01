//! Where and as whom the proxy connects to the database ([`Upstream`], read from a
//! `postgres://` URL), and the proxy's settings ([`ProxyConfig`]).

use std::time::Duration;

/// Where and as whom the proxy connects to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// Why an upstream URL was refused. The message never holds the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamUrlError(String);

impl Upstream {
    /// Reads `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (also `postgresql://`; no query
    /// string; `%XX` escapes are decoded in user and password).
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        Self::parse_url(url).map_err(UpstreamUrlError)
    }

    fn parse_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("the upstream URL must start with postgres://")?;
        if rest.contains('?') {
            return Err("the upstream URL takes no query string".into());
        }
        let (userinfo, hostpart) = rest
            .rsplit_once('@')
            .ok_or("the upstream URL must name a user: postgres://USER@HOST:PORT/DB")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(userinfo)?, None),
        };
        let (hostport, database) = hostpart
            .split_once('/')
            .ok_or("the upstream URL must name a database: postgres://USER@HOST:PORT/DB")?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{p}` is not a port number"))?,
            ),
            None => (hostport, 5432),
        };
        if user.is_empty() || host.is_empty() || database.is_empty() {
            return Err("the upstream URL needs a user, a host and a database".into());
        }
        Ok(Self {
            user,
            password,
            host: host.to_owned(),
            port,
            database: percent_decode(database)?,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the upstream URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the upstream URL is not UTF-8".to_owned())
}

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstream: Upstream,
    /// The database's name in policies (`Table::"<database>.<schema>.<table>"`).
    pub database_name: String,
    /// Largest message accepted from either side, in bytes.
    pub max_message_bytes: usize,
    /// Time allowed for the decisions of one message; past it the statement is denied.
    pub decision_timeout: Duration,
    /// Columns whose inserted values are added up into the `insert` question's
    /// `context.totals`, for budgets (`--sum`).
    pub summed_columns: Vec<String>,
    /// Every statement waits for its decision's record to be durable before it is sent
    /// (`--strict-order`). Off by default: a plain read ([`super::reads_only`]) is sent as
    /// soon as it is decided and its results are held back until its record is durable.
    pub strict_order: bool,
}

impl ProxyConfig {
    pub fn new(upstream: Upstream) -> Self {
        Self {
            database_name: upstream.database.clone(),
            upstream,
            max_message_bytes: 64 << 20,
            decision_timeout: Duration::from_secs(5),
            summed_columns: Vec::new(),
            strict_order: false,
        }
    }
}
