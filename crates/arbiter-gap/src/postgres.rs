//! PostgreSQL: who is connected to the database right now without going through the SQL
//! guard.
//!
//! `pg_stat_activity` lists every client backend with its role, database, client address and
//! `application_name`. The guard (`arbiter sql proxy`) names its own upstream connections
//! [`GUARD_APPLICATION_NAME`] (alone, or followed by `/` and the agent's own
//! `application_name`), so every other client connection is access that only the role's
//! grants control: coarse, for the agent whose `systems` declaration names that role.
//!
//! The name is a label, not a proof: a client connecting directly can claim it. The gap map
//! finds forgotten direct access; it does not catch a client hiding on purpose (for that,
//! give the agent's role no direct `LOGIN` path: see docs/gap.md).
//!
//! The role of the DSN needs `pg_read_all_stats` (or `pg_monitor`, or to be a superuser) to
//! see other roles' connections in full; without it a warning says so.

use std::collections::{BTreeMap, BTreeSet};

use arbiter_store::PgOptions;

use crate::error::GapError;
use crate::model::{Finding, FindingSource, State};

/// The `application_name` of the SQL guard's upstream connections (see
/// `arbiter_sql::proxy::GUARD_APPLICATION_NAME`, which must stay equal to this).
pub const GUARD_APPLICATION_NAME: &str = "arbiter-sql";

/// The `application_name` of the gap map's own connection.
pub const GAP_APPLICATION_NAME: &str = "arbiter-gap";

/// Whether a connection's `application_name` is the guard's.
pub fn is_guard(application_name: &str) -> bool {
    application_name == GUARD_APPLICATION_NAME
        || application_name
            .strip_prefix(GUARD_APPLICATION_NAME)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Arbiter's own connections that are not an agent's access: the registry of `--store`
/// (`arbiter`) and the gap map itself.
fn is_arbiter_itself(application_name: &str) -> bool {
    application_name == "arbiter" || application_name == GAP_APPLICATION_NAME
}

/// Direct access by one role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectAccess {
    /// The database role.
    pub role: String,
    /// The databases it is connected to.
    pub databases: BTreeSet<String>,
    /// Client addresses (`local` for a Unix socket).
    pub clients: BTreeSet<String>,
    /// The `application_name`s its connections give.
    pub applications: BTreeSet<String>,
    /// How many connections.
    pub connections: u64,
}

/// What one database showed.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// The DSN without its password (`postgres://host:port/db`).
    pub display: String,
    /// Direct (not through the guard) access, by role.
    pub direct: Vec<DirectAccess>,
    /// Connections through the guard.
    pub through_guard: u64,
    /// Problems that did not stop the reading.
    pub warnings: Vec<String>,
}

/// Most roles and addresses listed.
const MAX_LISTED: usize = 16;

/// One connection row of `pg_stat_activity`, as read.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `usename`.
    pub role: String,
    /// `datname`.
    pub database: String,
    /// `application_name` (empty when unset).
    pub application_name: String,
    /// The client address, `local` for a Unix socket.
    pub client: String,
    /// How many connections share these four values.
    pub count: u64,
}

/// Reads `pg_stat_activity` of the server at `dsn`.
pub fn read_activity(dsn: &str) -> Result<Activity, GapError> {
    let display = arbiter_store::describe_postgres_url(dsn);
    let fail = |why: String| GapError::Postgres {
        dsn: display.clone(),
        why,
    };
    let options = PgOptions {
        connect_timeout: std::time::Duration::from_secs(10),
        ..PgOptions::default()
    };
    let mut client = arbiter_store::connect_client(dsn, &options, GAP_APPLICATION_NAME)
        .map_err(|e| fail(e.to_string()))?;
    let query = |e: postgres::Error| match e.as_db_error() {
        Some(d) => fail(format!("{} ({})", d.message(), d.code().code())),
        None => fail(e.to_string()),
    };
    let privileged: bool = client
        .query_one(
            "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
             OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .map_err(query)?
        .try_get(0)
        .unwrap_or(false);
    let rows = client
        .query(
            "SELECT usename::text, datname::text, COALESCE(application_name, '')::text, \
                    COALESCE(host(client_addr), 'local')::text, count(*)::int8 \
             FROM pg_stat_activity \
             WHERE (backend_type = 'client backend' OR backend_type IS NULL) \
               AND usename IS NOT NULL AND datname IS NOT NULL AND pid <> pg_backend_pid() \
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT 10000",
            &[],
        )
        .map_err(query)?;
    let mut connections = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |i: usize| row.try_get::<_, String>(i).unwrap_or_default();
        connections.push(Connection {
            role: get(0),
            database: get(1),
            application_name: get(2),
            client: get(3),
            count: u64::try_from(row.try_get::<_, i64>(4).unwrap_or(0)).unwrap_or(0),
        });
    }
    let _ = client.close();
    let mut activity = classify(&display, &connections);
    if !privileged {
        activity.warnings.push(format!(
            "PostgreSQL at {display}: the role of the DSN lacks `pg_read_all_stats`, so other \
             roles' client addresses are hidden (grant it `pg_monitor` or `pg_read_all_stats`)"
        ));
    }
    Ok(activity)
}

/// Sorts connections into the guard's and direct access by role.
pub fn classify(display: &str, connections: &[Connection]) -> Activity {
    let mut by_role: BTreeMap<String, DirectAccess> = BTreeMap::new();
    let mut through_guard = 0;
    for c in connections {
        if is_guard(&c.application_name) {
            through_guard += c.count;
            continue;
        }
        if is_arbiter_itself(&c.application_name) {
            continue;
        }
        let access = by_role
            .entry(c.role.clone())
            .or_insert_with(|| DirectAccess {
                role: c.role.clone(),
                ..DirectAccess::default()
            });
        access.connections += c.count;
        if access.databases.len() < MAX_LISTED {
            access.databases.insert(c.database.clone());
        }
        if access.clients.len() < MAX_LISTED {
            access.clients.insert(c.client.clone());
        }
        if !c.application_name.is_empty() && access.applications.len() < MAX_LISTED {
            access.applications.insert(c.application_name.clone());
        }
    }
    Activity {
        display: display.to_owned(),
        direct: by_role.into_values().collect(),
        through_guard,
        warnings: Vec::new(),
    }
}

/// The coarse finding of a role's direct access.
pub(crate) fn finding(display: &str, access: &DirectAccess, pdp_url: &str) -> Finding {
    let sw = arbiter_pep::shell_word;
    let clean = |s: &str| crate::declared::printable(s);
    let list = |set: &BTreeSet<String>| set.iter().map(|s| clean(s)).collect::<Vec<_>>().join(", ");
    let role = clean(&access.role);
    let apps = if access.applications.is_empty() {
        String::new()
    } else {
        format!(" (application_name: {})", list(&access.applications))
    };
    let hostport = display
        .strip_prefix("postgres://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("HOST:PORT");
    let database = access
        .databases
        .iter()
        .next()
        .map_or("DB".to_owned(), |d| d.clone());
    let upstream = format!("postgres://{}@{hostport}/{database}", access.role);
    Finding {
        state: State::Coarse,
        source: FindingSource::Postgres,
        r#where: display.to_owned(),
        system: access.role.clone(),
        detail: format!(
            "{} connection(s) as role `{role}` to {} from {}{apps} do not come through the SQL \
             guard: their statements are limited only by the role's grants",
            access.connections,
            list(&access.databases),
            list(&access.clients),
        ),
        next_step: format!(
            "route role {role} through the guard: arbiter sql proxy --upstream {} --listen \
             127.0.0.1:6432 --pdp {}, connect the agent to the proxy, and revoke the role's \
             direct access",
            sw(&upstream),
            sw(pdp_url)
        ),
    }
}
