//! A partitioned `tokens`: what changed in its partition tree since the last refresh, and the capture triggers on
//! every member (see `migrations/*_partitioned_tokens` for why both are needed). An unpartitioned `tokens` has no
//! members, and all of this finds nothing.

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

/// What the partition tree's changes ask of the refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionChanges {
    /// Why everything must be rebuilt (a partition went, or one appeared whose range cannot be read).
    pub rebuild: Option<String>,
    /// The days of partitions that appeared: recount them, and the users with tokens created in them.
    pub ranges: Vec<(NaiveDate, NaiveDate)>,
    /// The partitions that appeared, for the run's log and the dry run.
    pub appeared: Vec<String>,
}

#[derive(QueryableByName)]
struct Change {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    change: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Date>)]
    first_day: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Date>)]
    last_day: Option<NaiveDate>,
}

/// Compares the partition tree with the one the last refresh recorded. Read-only.
pub fn changes(conn: &mut PgConnection) -> QueryResult<PartitionChanges> {
    let rows: Vec<Change> = diesel::sql_query(
        "WITH appeared AS (SELECT relid, name, bound FROM rollup_partition_tree \
                           EXCEPT SELECT relid, name, bound FROM rollup_partitions), \
              went AS (SELECT relid, name, bound FROM rollup_partitions \
                       EXCEPT SELECT relid, name, bound FROM rollup_partition_tree), \
              ranged AS (SELECT name, regexp_match(bound, $re$^FOR VALUES FROM \\('([^']*)'\\) TO \\('([^']*)'\\)$$re$) AS m \
                         FROM appeared) \
         SELECT name, 'appeared' AS change, (m[1]::timestamp)::date AS first_day, \
                (m[2]::timestamp - interval '1 microsecond')::date AS last_day FROM ranged \
         UNION ALL SELECT name, 'went', NULL, NULL FROM went \
         ORDER BY 2, 1",
    )
    .load(conn)?;
    let mut out = PartitionChanges::default();
    for row in rows {
        match (row.change.as_str(), row.first_day, row.last_day) {
            ("went", ..) => {
                out.rebuild.get_or_insert_with(|| {
                    format!("partition {} was detached, dropped or changed", row.name)
                });
            }
            (_, Some(first), Some(last)) => {
                out.ranges.push((first, last.max(first)));
                out.appeared.push(row.name);
            }
            _ => {
                out.rebuild.get_or_insert_with(|| {
                    format!(
                        "partition {} appeared with a range that is not one of days",
                        row.name
                    )
                });
            }
        }
    }
    Ok(out)
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
