//! A partitioned `tokens`: whether its partition tree changed since the last refresh, and the capture triggers on
//! every member (see `migrations/*_partitioned_tokens` for why both are needed). An unpartitioned `tokens` has no
//! members, and all of this finds nothing.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

/// Why the partition tree's changes ask the refresh to rebuild everything, if they do.
///
/// Every change rebuilds: a partition that went took its rows without a trigger, and one that appeared may have
/// brought rows in (ATTACH) that were moved or deleted again before this refresh, leaving no trace in the
/// partition to recount. A rebuild is one full refresh per partition made (pg_partman makes one per interval).
pub fn changes(conn: &mut PgConnection) -> QueryResult<Option<String>> {
    let rows: Vec<Change> = diesel::sql_query(
        "SELECT name, 'appeared' AS change FROM ( \
           SELECT relid, name, bound FROM rollup_partition_tree \
           EXCEPT SELECT relid, name, bound FROM rollup_partitions) a \
         UNION ALL SELECT name, 'was detached, dropped or changed' FROM ( \
           SELECT relid, name, bound FROM rollup_partitions \
           EXCEPT SELECT relid, name, bound FROM rollup_partition_tree) w \
         ORDER BY 2, 1",
    )
    .load(conn)?;
    Ok(rows
        .first()
        .map(|r| format!("partition {} {}", r.name, r.change)))
}

#[derive(QueryableByName)]
struct Change {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    change: String,
}

/// Records the partition tree as the refresh leaves it (inside the refresh's transaction).
pub fn record(conn: &mut PgConnection) -> QueryResult<()> {
    conn.batch_execute(
        "DELETE FROM rollup_partitions; \
         INSERT INTO rollup_partitions SELECT relid, name, bound FROM rollup_partition_tree",
    )
}

#[derive(QueryableByName)]
struct Member {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Puts the capture triggers on every member of the tree that lacks them (in a transaction of its own, committed
/// before the refresh's snapshot: a write after it is captured, one before it is in the snapshot and recounted).
/// Returns the members still without them (this role may not add triggers there: run `migrate` as the owner).
pub fn install_triggers(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    let rows: Vec<Member> =
        diesel::sql_query("SELECT m AS name FROM rollup_capture_partitions() m").load(conn)?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Counts the kept tables detached from the tree whose rows are not counted yet (migration 17) as change rows,
/// in the caller's transaction; returns their sources (`partition <name> detached`). `wait`: wait for a table
/// another session is counting (a run about to recount from the base tables must), else skip it.
pub fn count_detached(conn: &mut PgConnection, wait: bool) -> QueryResult<Vec<String>> {
    let rows: Vec<Member> = diesel::sql_query("SELECT s AS name FROM rollup_count_detached($1) s")
        .bind::<diesel::sql_types::Bool, _>(wait)
        .load(conn)?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// The detached tables waiting to be counted, oldest first, with when each left the tree.
pub fn detached(
    conn: &mut PgConnection,
) -> QueryResult<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
    #[derive(QueryableByName)]
    struct Marker {
        #[diesel(sql_type = Text)]
        source: String,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        marked_at: chrono::DateTime<chrono::Utc>,
    }
    let rows: Vec<Marker> = diesel::sql_query(
        "SELECT source, marked_at FROM rollup_detached ORDER BY marked_at, relid",
    )
    .load(conn)?;
    Ok(rows.into_iter().map(|m| (m.source, m.marked_at)).collect())
}
