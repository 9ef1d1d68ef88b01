//! A real PostgreSQL for the SQL guard's tests: `ARBITER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), used as its administrator through `psql`.

use std::process::Command;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The administrator's URL: `$ARBITER_TEST_POSTGRES_URL`, else the local default.
pub fn postgres_url() -> String {
    std::env::var("ARBITER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.into())
}

/// The administrator's URL for database `database` of the same server.
pub fn postgres_url_for(database: &str) -> String {
    let url = postgres_url();
    let (server, _) = split(&url);
    format!("{server}/{database}")
}

/// The database the administrator's URL names (where databases are created and dropped from).
fn maintenance_database() -> String {
    split(&postgres_url()).1.to_owned()
}

fn split(url: &str) -> (&str, &str) {
    url.rsplit_once('/')
        .unwrap_or_else(|| panic!("ARBITER_TEST_POSTGRES_URL `{url}` names no database"))
}

/// Runs `sql` with psql as the administrator, straight to the server (not through any guard),
/// stopping at the first error; returns the unaligned, tuples-only output. Panics naming the
/// server when it fails.
pub fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(postgres_url_for(database))
        .args(["-c", sql])
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql (is the PostgreSQL client installed?): {e}"));
    assert!(
        out.status.success(),
        "cannot run `{sql}` on PostgreSQL at {} (is it running?): {}",
        postgres_url(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh database for one test, `<prefix>_<process id>` (dropped first if a crashed run left
/// it), dropped with everything connected to it when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates the database; `prefix` must be a plain SQL identifier.
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", std::process::id());
        let admin = maintenance_database();
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        Self { name }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The administrator's URL for it.
    pub fn url(&self) -> String {
        postgres_url_for(&self.name)
    }

    /// [`psql`] on this database.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Not `psql`: a failure here must not panic while a failed test is unwinding.
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d"])
            .arg(postgres_url_for(&maintenance_database()))
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_another_database_of_the_same_server() {
        assert_eq!(
            split("postgres://u:p@h:5/admin"),
            ("postgres://u:p@h:5", "admin")
        );
    }
}
