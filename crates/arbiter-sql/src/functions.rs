//! Functions an agent should not call unless a policy explicitly allows it.

/// Functions denied by default, matched by exact name (see [`is_dangerous_function`]).
///
/// Table-level authorization cannot see what these do, because they act outside the tables a
/// statement names:
///
/// - **Other sessions and the server process**: `pg_terminate_backend` and
///   `pg_cancel_backend` end or interrupt other sessions; `pg_signal_backend` is their common
///   core; `pg_reload_conf`, `pg_rotate_logfile`, `pg_promote`,
///   `pg_log_backend_memory_contexts` and `pg_log_standby_snapshot` act on the server.
/// - **Configuration**: `set_config` changes settings like `SET` does (`search_path` can
///   redirect every later unqualified name); `pg_show_all_file_settings`,
///   `pg_hba_file_rules` and `pg_ident_file_mappings` reveal the server's configuration
///   files, `pg_current_logfile` its log file paths.
/// - **Server files**: `pg_stat_file` (with the `pg_read_`, `pg_ls_` and `pg_file_`
///   prefixes below) reads, lists or writes files on the database server.
/// - **Write-ahead log, backups, replication**: `pg_switch_wal` (and its old name
///   `pg_switch_xlog`), `pg_create_restore_point`, `pg_backup_start`/`pg_backup_stop` (and
///   `pg_start_backup`/`pg_stop_backup`), `pg_wal_replay_pause`/`pg_wal_replay_resume`, and
///   the replication-slot functions: a logical slot streams every change to every table,
///   past any table-level check, and a forgotten slot makes the server keep WAL until its
///   disk fills.
/// - **Sequences**: `setval` moves a sequence anywhere, from what looks like a read; set
///   backwards, it makes the application's next inserts collide. (`nextval` is not listed:
///   it only moves forwards, gaps are normal, and inserts call it routinely.)
/// - **SQL in a string**: `ts_stat` and `ts_rewrite` run a query given as text, which this
///   analysis cannot see (also the `*_to_xml` prefixes below).
/// - **Notifications**: `pg_notify` signals other sessions, like `NOTIFY`.
/// - **Catalog internals**: `pg_import_system_collations`, `pg_nextoid`.
pub const DANGEROUS_FUNCTIONS: &[&str] = &[
    // other sessions and the server process
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_log_backend_memory_contexts",
    "pg_log_standby_snapshot",
    // configuration
    "set_config",
    "pg_show_all_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_current_logfile",
    // server files
    "pg_stat_file",
    "pg_logdir_ls",
    // write-ahead log, backups, replication
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_sync_replication_slots",
    // sequences
    "setval",
    // SQL in a string
    "ts_stat",
    "ts_rewrite",
    // notifications
    "pg_notify",
    // catalog internals
    "pg_import_system_collations",
    "pg_nextoid",
];

/// Name prefixes denied by default: every function whose name starts with one of these.
///
/// - `pg_read_` (`pg_read_file`, `pg_read_binary_file`), `pg_ls_` (`pg_ls_dir`,
///   `pg_ls_logdir`, `pg_ls_waldir`, `pg_ls_tmpdir`, …) and `pg_file_` (adminpack's
///   `pg_file_write`, `pg_file_rename`, `pg_file_unlink`, …): files on the database server.
/// - `lo_`, `loread`, `lowrite`: large objects. `lo_import` and `lo_export` read and write
///   server files; the others read and change large-object data that no table names, so no
///   table-level policy covers them.
/// - `dblink`: connections to other databases, and SQL run there.
/// - `pg_sleep` (`pg_sleep`, `pg_sleep_for`, `pg_sleep_until`): holds a connection and its
///   locks for as long as asked.
/// - `pg_advisory_` and `pg_try_advisory_`: advisory locks, held until released or the
///   session ends; taking the ones an application coordinates with stalls it.
/// - `pg_stat_reset` and `pg_stat_statements_reset`: erase the statistics monitoring relies
///   on.
/// - `pg_logical_` and `pg_replication_origin_`: read changes from, write to, or steer
///   logical replication.
/// - `query_to_xml`, `table_to_xml`, `cursor_to_xml`, `schema_to_xml`, `database_to_xml`
///   (with their `_and_xmlschema` and `xmlschema` forms): run a query given as text, or read
///   whole tables, schemas or the database by name, none of which the statement's own
///   tables show.
/// - `binary_upgrade_`: catalog surgery meant for `pg_upgrade` only.
pub const DANGEROUS_FUNCTION_PREFIXES: &[&str] = &[
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "lo_",
    "loread",
    "lowrite",
    "dblink",
    "pg_sleep",
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_stat_reset",
    "pg_stat_statements_reset",
    "pg_logical_",
    "pg_replication_origin_",
    "query_to_xml",
    "table_to_xml",
    "cursor_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "binary_upgrade_",
];

/// Whether a function should be denied unless a policy explicitly allows it.
///
/// `name` is a function name as [`StatementInfo::functions`](crate::StatementInfo::functions)
/// reports it, schema-qualified or not. The match is on the last dotted part, without regard
/// to ASCII case, against [`DANGEROUS_FUNCTIONS`] and [`DANGEROUS_FUNCTION_PREFIXES`]. The
/// schema is ignored on purpose: `pg_catalog.pg_sleep` is `pg_sleep`, and a function of a
/// listed name in another schema is suspect enough to deny by default. Case is ignored too:
/// a quoted name that differs from a listed one only in case names no built-in function, so
/// treating it as listed denies nothing legitimate.
///
/// The list covers PostgreSQL's built-in functions and the widely installed `dblink` and
/// `adminpack` extensions. It cannot know user-defined functions: a `SECURITY DEFINER`
/// function can do anything its owner can, so a policy should allow functions by name
/// rather than only deny these.
pub fn is_dangerous_function(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    DANGEROUS_FUNCTIONS.contains(&last.as_str())
        || DANGEROUS_FUNCTION_PREFIXES
            .iter()
            .any(|prefix| last.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_functions_match_whatever_the_schema_or_case() {
        assert!(is_dangerous_function("pg_terminate_backend"));
        assert!(is_dangerous_function("pg_catalog.pg_terminate_backend"));
        assert!(is_dangerous_function("PG_SLEEP"));
        assert!(is_dangerous_function("pg_sleep_for"));
        assert!(is_dangerous_function("pg_read_binary_file"));
        assert!(is_dangerous_function("lo_export"));
        assert!(is_dangerous_function("public.dblink_exec"));
        assert!(is_dangerous_function("query_to_xml_and_xmlschema"));
        assert!(is_dangerous_function("set_config"));
    }

    #[test]
    fn ordinary_functions_do_not_match() {
        for name in [
            "count",
            "lower",
            "log",
            "now",
            "pg_catalog.extract",
            "current_setting",
            "coalesce",
            "length",
            "pg_backend_pid",
            "pg_catalog.substring",
            "nextval",
            "",
        ] {
            assert!(!is_dangerous_function(name), "{name}");
        }
    }
}
