//! SQL of loading data in bulk (`seed`, the demo): the users id sequence, and suspending the insert capture for
//! a large load (one full rebuild instead of a change row per token).

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;

#[derive(QueryableByName)]
struct MaxId {
    #[diesel(sql_type = Integer)]
    max_id: i32,
}

/// The highest user id (0 when there are none).
pub fn max_user_id(conn: &mut PgConnection) -> QueryResult<i32> {
    let row: MaxId =
        diesel::sql_query("SELECT coalesce(max(id), 0) AS max_id FROM users").get_result(conn)?;
    Ok(row.max_id)
}

/// Moves the users id sequence past ids inserted explicitly.
pub fn sync_users_id_sequence(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT coalesce(max(id), 1) FROM users))")
        .execute(conn)?;
    Ok(())
}

/// Inside the caller's transaction, before a large load into `tokens`: disables the insert change-capture trigger
/// and records one full-rebuild change instead. Needs ownership of `tokens`; returns false (capture stays on)
/// when that is not possible.
pub fn suspend_token_capture(conn: &mut PgConnection) -> bool {
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        conn.batch_execute(
            "ALTER TABLE tokens DISABLE TRIGGER rollup_capture_insert; \
             INSERT INTO rollup_changes (full_rebuild, source) VALUES (true, 'bulk load')",
        )
    })
    .is_ok()
}

/// Re-enables what [`suspend_token_capture`] disabled (same transaction).
pub fn resume_token_capture(conn: &mut PgConnection) -> QueryResult<()> {
    conn.batch_execute("ALTER TABLE tokens ENABLE TRIGGER rollup_capture_insert")
}

/// Drops and creates database `name` (an identifier chosen by the program, not user input).
#[cfg(feature = "dev-tools")]
pub fn recreate_database(conn: &mut PgConnection, name: &str) -> QueryResult<()> {
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
}

/// Whether the connection goes through pgpool-II, which answers `SHOW pool_version` itself (PostgreSQL refuses
/// it). pgpool-II (4.3) never completes a `COPY FROM STDIN` sent with the extended query protocol, which is how
/// diesel sends it: the load then waits forever, so `seed` inserts in batches instead.
pub fn behind_pgpool(conn: &mut PgConnection) -> bool {
    conn.batch_execute("SHOW pool_version").is_ok()
}
