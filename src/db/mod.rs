//! The database boundary: every SQL statement the service runs outside of `migrations/` is in this module. This
//! file has the r2d2 connection pool with its per-transaction settings and the embedded migrations; [`queries`]
//! the reads and the refresh's bookkeeping; [`incremental`] the incremental refresh (a large backlog a [`slice`] per run); [`deltas`] the delta log the
//! replicas patch from; [`load`] the whole rollups; [`bulk`] bulk loading; [`listen`] the follower's `LISTEN` connection; [`verify`] the
//! self-check; [`writer`] the locks, the writer's lease and limits; [`definitions`] (dev tools only) the SQL definitions the reports are tested against.
//!
//! Diesel is synchronous: callers on the async runtime run these functions inside `spawn_blocking`.

pub mod bulk;
#[cfg(feature = "dev-tools")]
pub mod definitions;
pub mod deltas;
pub mod incremental;
pub mod listen;
pub mod load;
pub mod partitions;
pub mod queries;
pub mod rebuild;
pub mod slice;
pub mod verify;
pub mod writer;

use diesel::connection::{CacheSize, SimpleConnection};
use diesel::migration::MigrationSource;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

use crate::config::redact;
pub use crate::config::{MigratePolicy, PoolMode};

/// The SQL migrations under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory-lock key that serialises migrations across replicas starting at once ("coworkin" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x636f_776f_726b_696e;

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgPooled = PooledConnection<ConnectionManager<PgConnection>>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "the schema is behind this binary (pending: {}) and DB_MIGRATE=check; run `coworking-analytics migrate` \
         as the owner role",
        pending.join(",")
    )]
    SchemaBehind { pending: Vec<String> },
}

/// Sets up every new pooled connection for the pooling mode: per-session limits so a stuck statement cannot
/// hold the worker forever (session mode), or no session state and no named statements (transaction mode).
#[derive(Debug)]
struct SessionSettings {
    statement_timeout: Duration,
    mode: PoolMode,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        match self.mode {
            PoolMode::Session => conn
                .batch_execute(&writer::session_settings_sql(self.statement_timeout))
                .map_err(diesel::r2d2::Error::QueryError),
            PoolMode::Transaction => {
                conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                Ok(())
            }
        }
    }
}

/// Builds the pool without connecting: connections are opened on demand, so the service starts (and serves its
/// health check) while the database is still down.
pub fn pool(conn: &str, size: u32, statement_timeout: Duration, mode: PoolMode) -> PgPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5))
        .test_on_check_out(true)
        .connection_customizer(Box::new(SessionSettings {
            statement_timeout,
            mode,
        }))
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(ConnectionManager::new(conn))
}

/// Opens one connection outside the pool (the one-shot commands, the tests).
pub fn connect(conn: &str) -> Result<PgConnection, DbError> {
    connect_in(conn, PoolMode::Session)
}

/// [`connect`] for the pooling mode: in transaction mode, without named prepared statements.
pub fn connect_in(conn: &str, mode: PoolMode) -> Result<PgConnection, DbError> {
    let mut c = PgConnection::establish(conn)
        .map_err(|e| DbError::Connect(scrub_connection_error(e, conn)))?;
    if mode == PoolMode::Transaction {
        c.set_prepared_statement_cache_size(CacheSize::Disabled);
    }
    Ok(c)
}

/// libpq errors do not normally contain the password, but make sure of it.
fn scrub_connection_error(err: diesel::ConnectionError, conn: &str) -> diesel::ConnectionError {
    match err {
        diesel::ConnectionError::BadConnection(msg) if !conn.is_empty() => {
            let msg = msg.replace(conn, &redact(conn));
            diesel::ConnectionError::BadConnection(msg)
        }
        other => other,
    }
}

/// Brings the schema to this binary's version ([`MigratePolicy::Apply`]) or checks that it is there
/// ([`MigratePolicy::Check`]). Returns the versions applied.
pub fn prepare_schema(
    conn: &mut PgConnection,
    policy: MigratePolicy,
) -> Result<Vec<String>, DbError> {
    match policy {
        MigratePolicy::Apply => migrate(conn),
        MigratePolicy::Check => {
            let applied = queries::applied_migrations(conn)?;
            let pending: Vec<String> = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
                .map_err(DbError::Migration)?
                .iter()
                .map(|m| m.name().version().to_string())
                .filter(|v| !applied.contains(v))
                .collect();
            if pending.is_empty() {
                Ok(Vec::new())
            } else {
                Err(DbError::SchemaBehind { pending })
            }
        }
    }
}

/// Runs the pending migrations in one transaction, holding a transaction-scoped advisory lock so that replicas
/// starting together migrate one after the other. Returns the versions applied.
pub fn migrate(conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        writer::advisory_xact_lock(conn, MIGRATION_LOCK_KEY)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(DbError::Migration)?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
}

#[cfg(feature = "dev-tools")]
/// Reverts every migration (tests of `down.sql`).
pub fn revert_all(conn: &mut PgConnection) -> Result<(), DbError> {
    conn.revert_all_migrations(MIGRATIONS)
        .map_err(DbError::Migration)?;
    Ok(())
}
