//! SQL of a rebuild that does not hold the writer lock (migration 13).
//!
//! A rebuild recounts every day, quarter hour and user from the base tables in the caller's REPEATABLE READ
//! snapshot S, and compares with what the rollups will hold once the change rows pending in S are applied:
//! `rollup(S) + pending(S)`. That sum equals the truth except where something the triggers cannot see changed the
//! base tables (a `TRUNCATE`, a dropped partition, a write with the triggers off): the drift. The drift is
//! committed as ordinary change rows (source `rebuild`), so the next run applies it under the writer lock as one
//! more delta, atomically with whatever else is pending; until then the replicas keep serving the rollups, and
//! check-ins keep flowing through the live path.
//!
//! What keeps that exact, given that runs keep committing while the recount reads S:
//! - a run moves a change row into the rollups in one transaction, so `rollup + pending` of any snapshot is
//!   consistent, and runs committed after S change `rollup + pending` exactly as they change the truth;
//! - a detached partition not yet counted (migration 17) is pending too: its rows, negated, are among `pending(S)`
//!   (`rollup_detached_rows`), and counting it later turns them into change rows without changing the sum;
//! - the requests visible in S (`full_rebuild` rows) are deleted in the same transaction; later ones stay for the
//!   next rebuild;
//! - a run that recounts a count fixes that count's drift itself, so it must not also get the difference: such a
//!   run bumps `rollup_rebuild_state.recounts` ([`note_recount`]), and [`stage`] updates that row last, which fails
//!   with a serialization failure when one committed after S (the caller retries from a new snapshot).

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::verify::Repair;

/// At most this many repairs are read back (a rebuild after a `TRUNCATE` differs in every count).
const SHOWN: i64 = 1000;

/// What a rebuild found and committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staged {
    /// Days and users compared.
    pub days: i64,
    pub users: i64,
    /// Token rows read.
    pub rows_read: i64,
    /// Counts that differed (days, quarter hours, users).
    pub repaired: i64,
    /// The `rebuild` change rows that carry them (a quarter hour's row also moves its day).
    pub differences: i64,
    /// The first [`SHOWN`] of them, by kind and key.
    pub repairs: Vec<Repair>,
    /// What asked for the rebuild (the sources of the `full_rebuild` rows it took up).
    pub requests: Vec<String>,
}

/// Inserts a request for a rebuild (what no trigger could capture), e.g. a partition tree that lost a member.
pub fn request(conn: &mut PgConnection, why: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO rollup_changes (full_rebuild, source) VALUES (true, $1)")
        .bind::<Text, _>(why)
        .execute(conn)?;
    Ok(())
}

/// Whether a staged rebuild's difference is still pending, wholly or in part (applied a slice per run).
pub fn difference_pending(conn: &mut PgConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "EXISTS (SELECT 1 FROM rollup_changes WHERE source = 'rebuild')",
    ))
    .get_result(conn)
}

/// Records, in a run's transaction, that it recounted or repaired counts from the base tables.
pub fn note_recount(conn: &mut PgConnection) -> QueryResult<()> {
    conn.batch_execute("UPDATE rollup_rebuild_state SET recounts = recounts + 1 WHERE id = 1")
}

#[derive(QueryableByName)]
struct Totals {
    #[diesel(sql_type = BigInt)]
    days: i64,
    #[diesel(sql_type = BigInt)]
    users: i64,
    #[diesel(sql_type = BigInt)]
    rows_read: i64,
    #[diesel(sql_type = BigInt)]
    repaired: i64,
    #[diesel(sql_type = BigInt)]
    differences: i64,
}

#[derive(QueryableByName)]
struct Source {
    #[diesel(sql_type = Text)]
    source: String,
}

/// Recounts everything in the caller's REPEATABLE READ snapshot, commits the difference as `rebuild` change rows
/// and takes up the requests visible in it (see the module header). Holds no writer lock.
pub fn stage(conn: &mut PgConnection) -> QueryResult<Staged> {
    // Background work takes one core: with PostgreSQL's parallel workers the recount took every core of a small
    // database server (both, on the 2-core machine of the benchmarks), and the live path's runs waited for CPU.
    conn.batch_execute(
        "SET LOCAL max_parallel_workers_per_gather = 0; \
         CREATE TEMP TABLE rebuild_pending ON COMMIT DROP AS \
           SELECT day, bucket, checkins_delta, user_id, visits_delta FROM rollup_changes WHERE NOT full_rebuild \
           UNION ALL SELECT * FROM rollup_detached_rows(); \
         CREATE TEMP TABLE rebuild_truth ON COMMIT DROP AS \
           SELECT date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01') AS bucket, count(*)::int8 AS n \
           FROM tokens WHERE used_at IS NOT NULL GROUP BY 1; \
         CREATE TEMP TABLE rebuild_quarters ON COMMIT DROP AS \
           SELECT coalesce(t.bucket, r.bucket) AS bucket, coalesce(r.n, 0)::int8 AS was, coalesce(t.n, 0)::int8 AS now \
           FROM rebuild_truth t FULL JOIN ( \
             SELECT bucket, sum(n) AS n FROM ( \
               SELECT bucket, checkins AS n FROM checkin_quarters_rollup \
               UNION ALL SELECT bucket, checkins_delta FROM rebuild_pending WHERE bucket IS NOT NULL) x \
             GROUP BY bucket) r ON r.bucket = t.bucket; \
         CREATE TEMP TABLE rebuild_days ON COMMIT DROP AS \
           SELECT coalesce(t.day, r.day) AS day, coalesce(r.n, 0)::int8 AS was, coalesce(t.n, 0)::int8 AS now \
           FROM (SELECT bucket::date AS day, sum(n) AS n FROM rebuild_truth GROUP BY 1) t FULL JOIN ( \
             SELECT day, sum(n) AS n FROM ( \
               SELECT day, checkins AS n FROM daily_usage_rollup \
               UNION ALL SELECT day, checkins_delta FROM rebuild_pending WHERE day IS NOT NULL) x \
             GROUP BY day) r ON r.day = t.day; \
         CREATE TEMP TABLE rebuild_users ON COMMIT DROP AS \
           SELECT coalesce(t.user_id, r.user_id) AS user_id, coalesce(r.n, 0)::int8 AS was, \
                  coalesce(t.n, 0)::int8 AS now, \
                  (r.joined_at IS DISTINCT FROM u.joined_at AND r.rolled AND t.n > 0) AS joined_changed \
           FROM (SELECT user_id, count(*) AS n FROM tokens GROUP BY user_id) t FULL JOIN ( \
             SELECT user_id, sum(n) AS n, max(joined_at) AS joined_at, bool_or(rolled) AS rolled FROM ( \
               SELECT user_id, visits AS n, joined_at, true AS rolled FROM user_visits_rollup \
               UNION ALL SELECT user_id, visits_delta, NULL, false FROM rebuild_pending WHERE user_id IS NOT NULL) x \
             GROUP BY user_id) r ON r.user_id = t.user_id \
           LEFT JOIN users u ON u.id = t.user_id; \
         CREATE TEMP TABLE rebuild_rows ON COMMIT DROP AS \
           SELECT bucket::date AS day, bucket, now - was AS checkins_delta, NULL::integer AS user_id, \
                  0::int8 AS visits_delta FROM rebuild_quarters WHERE now <> was \
           UNION ALL \
           SELECT d.day, NULL, d.now - d.was - coalesce(q.delta, 0), NULL, 0 FROM rebuild_days d \
             LEFT JOIN (SELECT bucket::date AS day, sum(now - was) AS delta FROM rebuild_quarters \
                        WHERE now <> was GROUP BY 1) q ON q.day = d.day \
           WHERE d.now - d.was <> coalesce(q.delta, 0) \
           UNION ALL \
           SELECT NULL, NULL, 0, user_id, now - was FROM rebuild_users WHERE now <> was OR joined_changed; \
         INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source, recorded_at) \
           SELECT day, bucket, checkins_delta, user_id, visits_delta, 'rebuild', clock_timestamp() FROM rebuild_rows",
    )?;
    // A day row without a bucket (its quarter hours and its total disagree beyond the quarter rows above) makes
    // the applying run recount that day's quarter hours, which it does from its own, later snapshot.
    let requests: Vec<Source> = diesel::sql_query(
        "WITH taken AS (DELETE FROM rollup_changes WHERE full_rebuild RETURNING source) \
         SELECT DISTINCT source FROM taken ORDER BY 1",
    )
    .load(conn)?;
    let totals: Totals = diesel::sql_query(
        "SELECT (SELECT count(*) FROM rebuild_days)::int8 AS days, \
                (SELECT count(*) FROM rebuild_users)::int8 AS users, \
                (SELECT coalesce(sum(now), 0) FROM rebuild_users)::int8 AS rows_read, \
                ((SELECT count(*) FROM rebuild_days WHERE now <> was) \
                 + (SELECT count(*) FROM rebuild_quarters WHERE now <> was) \
                 + (SELECT count(*) FROM rebuild_users WHERE now <> was OR joined_changed))::int8 AS repaired, \
                (SELECT count(*) FROM rebuild_rows)::int8 AS differences",
    )
    .get_result(conn)?;
    let repairs = diesel::sql_query(
        "SELECT * FROM ( \
           SELECT 'day' AS kind, day::text AS key, was, now FROM rebuild_days WHERE now <> was \
           UNION ALL SELECT 'quarter', to_char(bucket, 'YYYY-MM-DD HH24:MI'), was, now FROM rebuild_quarters \
             WHERE now <> was \
           UNION ALL SELECT 'user', user_id::text, was, now FROM rebuild_users WHERE now <> was OR joined_changed \
         ) r ORDER BY 1, 2 LIMIT $1",
    )
    .bind::<BigInt, _>(SHOWN)
    .load(conn)?;
    // Last, so that the row lock is held only for the commit: a conflict here means a run recounted, or another
    // rebuild committed, after this snapshot was taken.
    diesel::sql_query(
        "UPDATE rollup_rebuild_state SET rebuilt_at = clock_timestamp(), rebuilt_rows = $1 WHERE id = 1",
    )
    .bind::<BigInt, _>(totals.differences)
    .execute(conn)?;
    Ok(Staged {
        days: totals.days,
        users: totals.users,
        rows_read: totals.rows_read,
        repaired: totals.repaired,
        differences: totals.differences,
        repairs,
        requests: requests.into_iter().map(|s| s.source).collect(),
    })
}
