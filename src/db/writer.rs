//! SQL of who may write and for how long: the advisory locks (the refresh writer's, the migrations'), the
//! writer's lease row, and the limits a connection or a refresh transaction sets for itself.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};

/// The writer's limits for the current transaction only (`SET LOCAL`, so a transaction pooler allows them): the
/// server ends the session, rolling the transaction back and releasing the writer lock, once it has waited
/// `idle_limit` for the client's next statement (a frozen or cut-off writer); and the writer shows as
/// `application_name` (`coworking-analytics writer <host>`) in `pg_stat_activity` while it holds the lock.
pub fn set_writer_limits(
    conn: &mut PgConnection,
    idle_limit: std::time::Duration,
    host: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true), \
                set_config('application_name', $2, true)",
    )
    .bind::<Text, _>(idle_limit.as_millis().to_string())
    .bind::<Text, _>(format!("coworking-analytics writer {host}"))
    .execute(conn)?;
    Ok(())
}

/// Blocks until the transaction-scoped advisory lock `key` is held (released at commit or rollback).
pub fn advisory_xact_lock(conn: &mut PgConnection, key: i64) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<BigInt, _>(key)
        .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Tries the transaction-scoped advisory lock `key` without waiting.
pub fn try_advisory_xact_lock(conn: &mut PgConnection, key: i64) -> QueryResult<bool> {
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
        .bind::<BigInt, _>(key)
        .get_result(conn)?;
    Ok(row.locked)
}

/// Takes the writer's lease row (migration 4) inside the caller's REPEATABLE READ transaction. Fails with a
/// serialization failure when another writer committed after this transaction's snapshot was taken.
pub fn take_writer_lease(conn: &mut PgConnection, holder: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE refresh_writer SET holder = $1, taken_at = now() WHERE id = 1")
        .bind::<Text, _>(holder)
        .execute(conn)?;
    Ok(())
}

/// The session settings of a pooled connection (session mode): limits on a statement and on idling in a
/// transaction, and the application name shown in `pg_stat_activity`.
pub fn session_settings_sql(statement_timeout: std::time::Duration) -> String {
    let ms = statement_timeout.as_millis();
    format!(
        "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}; \
         SET application_name = 'coworking-analytics'"
    )
}

/// The same limits for the current transaction only (`SET LOCAL`): what a transaction pooler allows.
pub fn set_local_timeouts(
    conn: &mut PgConnection,
    statement_timeout: std::time::Duration,
) -> QueryResult<()> {
    let ms = statement_timeout.as_millis();
    conn.batch_execute(&format!(
        "SET LOCAL statement_timeout = {ms}; SET LOCAL idle_in_transaction_session_timeout = {ms}"
    ))
}

/// How a refresh transaction ends when its work succeeded.
#[derive(Debug)]
pub enum End<T> {
    /// Commit, and answer `T`.
    Commit(T),
    /// Roll back (there was nothing to do: not even the lease update is kept), and answer `T`.
    RollBack(T),
}

/// Runs `work` in one REPEATABLE READ transaction that it ends by value ([`End`]); an error rolls back.
pub fn repeatable_read<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> QueryResult<End<T>>,
) -> QueryResult<T> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ")?;
    match work(conn) {
        Ok(End::Commit(t)) => {
            AnsiTransactionManager::commit_transaction(conn)?;
            Ok(t)
        }
        Ok(End::RollBack(t)) => {
            AnsiTransactionManager::rollback_transaction(conn)?;
            Ok(t)
        }
        Err(e) => {
            // The error is the answer; a failed rollback (a lost session) adds nothing to it.
            let _ = AnsiTransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Runs `attempt` up to `attempts` times while it fails with a serialization failure (a REPEATABLE READ snapshot
/// that another writer's commit overtook): each try starts a new transaction, so a new snapshot.
pub fn retry_overtaken<T>(
    attempts: u32,
    mut attempt: impl FnMut() -> QueryResult<T>,
) -> QueryResult<T> {
    use diesel::result::{DatabaseErrorKind, Error};
    let mut tried = 1;
    loop {
        match attempt() {
            Err(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _))
                if tried < attempts =>
            {
                tried += 1;
            }
            other => return other,
        }
    }
}
