//! The self-check: recount days, quarter hours and users from the base tables, compare with the rollups, and repair what drifted,
//! inside the refresh's transaction. Drift comes only from writes the triggers did not see (made with
//! `session_replication_role = replica`, a restore, a bug); `refresh --verify` checks everything or a range of
//! days, and the worker checks a rotating sample in the background (`VERIFY_SCHEDULE`).

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Integer, Nullable, Text};

/// What a verification looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every day and every user.
    All,
    /// The days in a range and the users with a token created in it (`refresh --verify --from --to`).
    Days { from: NaiveDate, to: NaiveDate },
    /// The days in a range and, separately, the users whose id is `bucket` modulo `buckets` (the background
    /// sample: the users of a few days are most of the members, and recounting them reads most of the table).
    Sample {
        from: NaiveDate,
        to: NaiveDate,
        bucket: i32,
        buckets: i32,
    },
}

/// One repaired count.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Repair {
    /// `day`, `quarter` (a quarter-hour bucket) or `user`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// The day (`YYYY-MM-DD`), the bucket's start (`YYYY-MM-DD HH:MM`) or the user id.
    #[diesel(sql_type = Text)]
    pub key: String,
    /// What the rollup held.
    #[diesel(sql_type = BigInt)]
    pub was: i64,
    /// What the base tables say (and the rollup now holds).
    #[diesel(sql_type = BigInt)]
    pub now: i64,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.kind == "user" {
            "visits"
        } else {
            "check-ins"
        };
        write!(
            f,
            "{} {}: {what} {} -> {}",
            self.kind, self.key, self.was, self.now
        )
    }
}

/// What was verified, and what had to be repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub days: i64,
    pub users: i64,
    pub repairs: Vec<Repair>,
}

#[derive(QueryableByName)]
struct Checked {
    #[diesel(sql_type = BigInt)]
    days: i64,
    #[diesel(sql_type = BigInt)]
    users: i64,
}

/// Recounts `scope`, repairs every count (and `joined_at`) that differs, and returns what it did. Runs inside the
/// caller's transaction, after the captured changes were applied.
pub fn verify_and_repair(conn: &mut PgConnection, scope: Scope) -> QueryResult<Verified> {
    let (from, to, bucket, buckets) = match scope {
        Scope::All => (None, None, None, None),
        Scope::Days { from, to } => (Some(from), Some(to), None, None),
        Scope::Sample {
            from,
            to,
            bucket,
            buckets,
        } => (Some(from), Some(to), Some(bucket), Some(buckets.max(1))),
    };
    conn.batch_execute("SET LOCAL jit = off")?;
    diesel::sql_query(
        "CREATE TEMP TABLE verify_days ON COMMIT DROP AS \
         SELECT coalesce(t.day, r.day) AS day, coalesce(r.checkins, 0)::int8 AS was, \
                coalesce(t.n, 0)::int8 AS now \
         FROM (SELECT created_at::date AS day, count(*) AS n FROM tokens \
               WHERE used_at IS NOT NULL \
                 AND ($1::date IS NULL OR (created_at >= $1::date AND created_at < $2::date + 1)) \
               GROUP BY 1) t \
         FULL JOIN (SELECT day, checkins FROM daily_usage_rollup \
                    WHERE $1::date IS NULL OR day BETWEEN $1::date AND $2::date) r ON r.day = t.day",
    )
    .bind::<Nullable<Date>, _>(from)
    .bind::<Nullable<Date>, _>(to)
    .execute(conn)?;
    diesel::sql_query(
        "CREATE TEMP TABLE verify_quarters ON COMMIT DROP AS \
         SELECT coalesce(t.bucket, r.bucket) AS bucket, coalesce(r.checkins, 0)::int8 AS was, \
                coalesce(t.n, 0)::int8 AS now \
         FROM (SELECT date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01') AS bucket, count(*) AS n \
               FROM tokens WHERE used_at IS NOT NULL \
                 AND ($1::date IS NULL OR (created_at >= $1::date AND created_at < $2::date + 1)) \
               GROUP BY 1) t \
         FULL JOIN (SELECT bucket, checkins FROM checkin_quarters_rollup \
                    WHERE $1::date IS NULL OR (bucket >= $1::date AND bucket < $2::date + 1)) r \
           ON r.bucket = t.bucket",
    )
    .bind::<Nullable<Date>, _>(from)
    .bind::<Nullable<Date>, _>(to)
    .execute(conn)?;
    diesel::sql_query(
        "CREATE TEMP TABLE verify_users ON COMMIT DROP AS \
         WITH scope AS ( \
           SELECT DISTINCT user_id FROM tokens \
           WHERE $1::date IS NOT NULL AND $4::int IS NULL \
             AND created_at >= $1::date AND created_at < $2::date + 1 \
           UNION SELECT user_id FROM user_visits_rollup WHERE user_id % $4::int = $3::int \
           UNION SELECT id FROM users WHERE id % $4::int = $3::int \
         ), counted AS ( \
           SELECT user_id, count(*) AS n FROM tokens \
           WHERE $1::date IS NULL OR user_id = ANY (ARRAY(SELECT user_id FROM scope)) GROUP BY user_id \
         ), rolled AS ( \
           SELECT user_id, visits, joined_at FROM user_visits_rollup \
           WHERE $1::date IS NULL OR user_id = ANY (ARRAY(SELECT user_id FROM scope)) \
         ) \
         SELECT coalesce(c.user_id, r.user_id) AS user_id, coalesce(r.visits, 0)::int8 AS was, \
                coalesce(c.n, 0)::int8 AS now, r.joined_at AS was_joined_at, \
                (SELECT u.joined_at FROM users u WHERE u.id = coalesce(c.user_id, r.user_id)) AS joined_at \
         FROM counted c FULL JOIN rolled r ON r.user_id = c.user_id",
    )
    .bind::<Nullable<Date>, _>(from)
    .bind::<Nullable<Date>, _>(to)
    .bind::<Nullable<Integer>, _>(bucket)
    .bind::<Nullable<Integer>, _>(buckets)
    .execute(conn)?;
    let checked: Checked = diesel::sql_query(
        "SELECT (SELECT count(*) FROM verify_days)::int8 AS days, \
                (SELECT count(*) FROM verify_users)::int8 AS users",
    )
    .get_result(conn)?;
    conn.batch_execute(
        "DELETE FROM verify_days WHERE was = now; \
         DELETE FROM verify_quarters WHERE was = now; \
         DELETE FROM checkin_quarters_rollup WHERE bucket = ANY (ARRAY(SELECT bucket FROM verify_quarters)); \
         INSERT INTO checkin_quarters_rollup (bucket, checkins) SELECT bucket, now FROM verify_quarters WHERE now > 0; \
         DELETE FROM verify_users WHERE was = now AND (now = 0 OR was_joined_at IS NOT DISTINCT FROM joined_at); \
         DELETE FROM daily_usage_rollup WHERE day = ANY (ARRAY(SELECT day FROM verify_days)); \
         INSERT INTO daily_usage_rollup (day, checkins) SELECT day, now FROM verify_days WHERE now > 0; \
         DELETE FROM user_visits_rollup WHERE user_id = ANY (ARRAY(SELECT user_id FROM verify_users)); \
         INSERT INTO user_visits_rollup (user_id, joined_at, visits) \
           SELECT user_id, joined_at, now FROM verify_users WHERE now > 0",
    )?;
    let repairs = diesel::sql_query(
        "SELECT 'day' AS kind, day::text AS key, was, now FROM verify_days \
         UNION ALL SELECT 'quarter', to_char(bucket, 'YYYY-MM-DD HH24:MI'), was, now FROM verify_quarters \
         UNION ALL SELECT 'user', user_id::text, was, now FROM verify_users \
         ORDER BY 1, 2",
    )
    .load(conn)?;
    Ok(Verified {
        days: checked.days,
        users: checked.users,
        repairs,
    })
}

#[derive(QueryableByName)]
struct Bounds {
    #[diesel(sql_type = Nullable<Date>)]
    lo: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Date>)]
    hi: Option<NaiveDate>,
}

/// The first and the last day with any token (the range the background sample rotates over).
pub fn token_day_bounds(conn: &mut PgConnection) -> QueryResult<Option<(NaiveDate, NaiveDate)>> {
    let b: Bounds = diesel::sql_query(
        "SELECT (SELECT min(created_at) FROM tokens)::date AS lo, \
                (SELECT max(created_at) FROM tokens)::date AS hi",
    )
    .get_result(conn)?;
    Ok(b.lo.zip(b.hi))
}
