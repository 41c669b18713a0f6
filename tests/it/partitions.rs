//! A `tokens` table partitioned by range on `created_at`, made before the first `migrate` (as a chain that
//! partitions by hand or with pg_partman would have it): after any sequence of writes, whichever table they name
//! (the parent, a partition, a partition created or attached later), TRUNCATE of a partition, DETACH and DROP of
//! one, the next refresh leaves the rollups equal to the old SQL. Property test, plus one with pg_partman.

use crate::common::{assert_rollups_match_definition, empty_db, TestDb};
use coworking_analytics::db;
use coworking_analytics::refresh::{self, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::{PgConnection, RunQueryDsl};
use proptest::prelude::*;

/// The old schema's users (four of them) and a `tokens` partitioned by range on `created_at`, with no partition.
const PARTITIONED_BASE: &str = "CREATE TABLE users (id SERIAL CONSTRAINT users_pk PRIMARY KEY, \
    first_name VARCHAR(50) NOT NULL, last_name VARCHAR(50) NOT NULL, joined_at TIMESTAMP NOT NULL, \
    is_active BOOLEAN NOT NULL DEFAULT true); \
  CREATE TABLE tokens (id SERIAL, user_id INTEGER NOT NULL REFERENCES users, token VARCHAR(6) NOT NULL, \
    created_at TIMESTAMP NOT NULL DEFAULT now(), used_at TIMESTAMP, PRIMARY KEY (id, created_at)) \
    PARTITION BY RANGE (created_at); \
  INSERT INTO users (id, first_name, last_name, joined_at) SELECT i, 'F', 'L', '2023-01-01' FROM generate_series(1, 4) i";

/// Three daily partitions of 2023-02-06..08, made before the first migrate.
pub(crate) fn partitioned_db() -> (TestDb, PgConnection) {
    let db = empty_db();
    let mut conn = db.conn();
    conn.batch_execute(PARTITIONED_BASE).unwrap();
    conn.batch_execute(
        "CREATE TABLE tokens_d0 PARTITION OF tokens FOR VALUES FROM ('2023-02-06') TO ('2023-02-07'); \
         CREATE TABLE tokens_d1 PARTITION OF tokens FOR VALUES FROM ('2023-02-07') TO ('2023-02-08'); \
         CREATE TABLE tokens_d2 PARTITION OF tokens FOR VALUES FROM ('2023-02-08') TO ('2023-02-09')",
    )
    .unwrap();
    db::migrate(&mut conn).unwrap();
    (db, conn)
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Insert through the parent: (user, day, used).
    Parent(u8, u8, bool),
    /// Insert naming the day's partition.
    Partition(u8, u8, bool),
    /// Mark the day's unused tokens used, naming the partition.
    UsePartition(u8),
    /// Delete a user's tokens from the day's partition.
    DeletePartition(u8, u8),
    /// Move tokens to another day through the parent (rows change partition).
    Move(u8, u8),
    Truncate(u8),
    /// DETACH and DROP the day's partition (what retention does).
    DetachDrop(u8),
    /// DETACH the day's partition and keep it under another name (pg_partman's default retention), to be counted
    /// beside the refreshes (migration 17).
    DetachKeep(u8),
    /// Delete a user's tokens from every kept table (a write before or after it is counted).
    DeleteKept(u8),
    /// Make the day's partition again if it is gone: empty, or attached with rows already in it.
    Recreate(u8, bool),
    Refresh,
}

fn op() -> impl Strategy<Value = Op> {
    let u = 1u8..=4;
    let d = 0u8..3;
    prop_oneof![
        3 => (u.clone(), d.clone(), any::<bool>()).prop_map(|(u, d, x)| Op::Parent(u, d, x)),
        3 => (u.clone(), d.clone(), any::<bool>()).prop_map(|(u, d, x)| Op::Partition(u, d, x)),
        1 => d.clone().prop_map(Op::UsePartition),
        1 => (u, d.clone()).prop_map(|(u, d)| Op::DeletePartition(u, d)),
        1 => (d.clone(), d.clone()).prop_map(|(a, b)| Op::Move(a, b)),
        1 => d.clone().prop_map(Op::Truncate),
        1 => d.clone().prop_map(Op::DetachDrop),
        1 => d.clone().prop_map(Op::DetachKeep),
        1 => (1u8..=4).prop_map(Op::DeleteKept),
        2 => (d, any::<bool>()).prop_map(|(d, x)| Op::Recreate(d, x)),
        2 => Just(Op::Refresh),
    ]
}

pub(crate) fn day(d: u8) -> String {
    format!("2023-02-{:02}", 6 + d)
}

fn exists(conn: &mut PgConnection, d: u8) -> bool {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "to_regclass('tokens_d{d}') IS NOT NULL"
    )))
    .get_result(conn)
    .unwrap()
}

fn used(d: u8, x: bool) -> String {
    if x {
        format!("'{} 12:00'", day(d))
    } else {
        "NULL".into()
    }
}

pub(crate) fn apply(conn: &mut PgConnection, op: &Op) {
    match *op {
        Op::Parent(u, d, x) | Op::Partition(u, d, x) if !exists(conn, d) => {
            let _ = (u, x); // no partition for that day: the write has nowhere to go
        }
        Op::Parent(u, d, x) => conn
            .batch_execute(&format!(
                "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({u}, '1', '{} 10:00', {})",
                day(d),
                used(d, x)
            ))
            .unwrap(),
        Op::Partition(u, d, x) => conn
            .batch_execute(&format!(
                "INSERT INTO tokens_d{d} (user_id, token, created_at, used_at) VALUES ({u}, '1', '{} 11:00', {})",
                day(d),
                used(d, x)
            ))
            .unwrap(),
        Op::UsePartition(d) if exists(conn, d) => conn
            .batch_execute(&format!(
                "UPDATE tokens_d{d} SET used_at = created_at + interval '1 hour' WHERE used_at IS NULL"
            ))
            .unwrap(),
        Op::DeletePartition(u, d) if exists(conn, d) => conn
            .batch_execute(&format!("DELETE FROM tokens_d{d} WHERE user_id = {u}"))
            .unwrap(),
        Op::Move(a, b) if exists(conn, a) && exists(conn, b) => conn
            .batch_execute(&format!(
                "UPDATE tokens SET created_at = created_at + interval '{} days' \
                 WHERE created_at >= '{}' AND created_at < '{}'::date + 1",
                i32::from(b) - i32::from(a),
                day(a),
                day(a)
            ))
            .unwrap(),
        Op::Truncate(d) if exists(conn, d) => {
            conn.batch_execute(&format!("TRUNCATE tokens_d{d}")).unwrap()
        }
        Op::DetachDrop(d) if exists(conn, d) => conn
            .batch_execute(&format!(
                "ALTER TABLE tokens DETACH PARTITION tokens_d{d}; DROP TABLE tokens_d{d}"
            ))
            .unwrap(),
        Op::DetachKeep(d) if exists(conn, d) => conn
            .batch_execute(&format!(
                "ALTER TABLE tokens DETACH PARTITION tokens_d{d}; \
                 DO $$ BEGIN EXECUTE format('ALTER TABLE tokens_d{d} RENAME TO kept_%s', \
                   'tokens_d{d}'::regclass::oid); END $$"
            ))
            .unwrap(),
        Op::DeleteKept(u) => conn
            .batch_execute(&format!(
                "DO $$ DECLARE t text; BEGIN \
                   FOR t IN SELECT relname FROM pg_class WHERE relname LIKE 'kept\\_%' AND relkind = 'r' LOOP \
                     EXECUTE format('DELETE FROM %I WHERE user_id = {u}', t); \
                   END LOOP; END $$"
            ))
            .unwrap(),
        Op::Recreate(d, with_rows) if !exists(conn, d) => {
            let bounds = format!("FROM ('{}') TO ('{}'::date + 1)", day(d), day(d));
            if with_rows {
                conn.batch_execute(&format!(
                    "CREATE TABLE tokens_d{d} (LIKE tokens INCLUDING DEFAULTS); \
                     INSERT INTO tokens_d{d} (user_id, token, created_at, used_at) \
                       VALUES (1, '1', '{0} 09:00', '{0} 09:30'), (2, '1', '{0} 09:10', NULL); \
                     ALTER TABLE tokens ATTACH PARTITION tokens_d{d} FOR VALUES {bounds}",
                    day(d)
                ))
                .unwrap()
            } else {
                conn.batch_execute(&format!(
                    "CREATE TABLE tokens_d{d} PARTITION OF tokens FOR VALUES {bounds}"
                ))
                .unwrap()
            }
        }
        Op::Refresh => refresh_and_check(conn),
        _ => {}
    }
}

pub(crate) fn refresh_and_check(conn: &mut PgConnection) {
    let outcome = refresh::run(conn, Mode::Incremental, "test").unwrap();
    // Unchanged: nothing was captured and the partition tree is as recorded.
    assert!(
        matches!(outcome, Outcome::Completed(_) | Outcome::Unchanged),
        "{outcome:?}"
    );
    assert_rollups_match_definition(conn);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn any_writes_to_a_partitioned_tokens_end_equal_to_the_old_sql(ops in prop::collection::vec(op(), 1..20)) {
        let (_db, mut conn) = partitioned_db();
        refresh_and_check(&mut conn);
        for op in &ops {
            apply(&mut conn, op);
        }
        refresh_and_check(&mut conn);
    }
}

#[test]
fn partition_events_cost_their_rows_and_only_a_dropped_attached_partition_rebuilds() {
    let (_db, mut conn) = partitioned_db();
    refresh_and_check(&mut conn);
    apply(&mut conn, &Op::Partition(1, 1, true));
    apply(&mut conn, &Op::Parent(2, 1, false));
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(dry.contains("tokens insert: 2 change rows"), "{dry}");
    refresh_and_check(&mut conn);
    // DETACH then DROP (what pg_partman's retention does): the rows it takes away, as change rows.
    apply(&mut conn, &Op::DetachDrop(1));
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(
        dry.contains("partition tokens_d1 detached: 3 change rows"),
        "{dry}"
    );
    // One row per key (migration 14): a quarter hour's check-ins, or a user's tokens, never both in one row, so
    // a detached month is a few thousand quarter-hour rows and one row per member, and a run can slice them.
    let mixed: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM rollup_changes WHERE source LIKE 'partition %' \
          AND day IS NOT NULL AND user_id IS NOT NULL)",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(mixed, 0);
    assert!(!dry.contains("rebuild"), "{dry}");
    refresh_and_check(&mut conn);
    // An empty new partition costs nothing.
    apply(&mut conn, &Op::Recreate(1, false));
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(dry.contains("nothing pending"), "{dry}");
    refresh_and_check(&mut conn);
    // ATTACH with rows: its rows.
    apply(&mut conn, &Op::DetachDrop(1));
    refresh_and_check(&mut conn);
    apply(&mut conn, &Op::Recreate(1, true));
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(
        dry.contains("partition tokens_d1 attached: 3 change rows"),
        "{dry}"
    );
    assert!(!dry.contains("rebuild"), "{dry}");
    // The attached partition got the capture triggers at once: a write naming it is captured.
    apply(&mut conn, &Op::Partition(3, 1, true));
    assert!(refresh::dry_run(&mut conn, Mode::Incremental)
        .unwrap()
        .contains("tokens insert: 1 change rows"));
    refresh_and_check(&mut conn);
    // A DROP of an attached partition leaves no rows to read: the tree comparison rebuilds, as before.
    conn.batch_execute("DROP TABLE tokens_d2").unwrap();
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(
        dry.contains("partition tokens_d2 was detached, dropped or changed"),
        "{dry}"
    );
    refresh_and_check(&mut conn);
}

/// Where `migrate` may not create event triggers (a role that is not a superuser), the tree comparison is the
/// fallback: any partition change rebuilds, and the numbers stay right.
#[test]
fn without_the_event_trigger_a_partition_change_rebuilds() {
    let (_db, mut conn) = partitioned_db();
    conn.batch_execute("DROP EVENT TRIGGER rollup_partition_events")
        .unwrap();
    refresh_and_check(&mut conn);
    apply(&mut conn, &Op::Parent(1, 1, true));
    refresh_and_check(&mut conn);
    apply(&mut conn, &Op::DetachDrop(1));
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(
        dry.contains("partition tokens_d1 was detached, dropped or changed"),
        "{dry}"
    );
    refresh_and_check(&mut conn);
    apply(&mut conn, &Op::Recreate(1, true));
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(
        dry.contains("would request a rebuild, partition tokens_d1 appeared"),
        "{dry}"
    );
    refresh_and_check(&mut conn);
}

/// A pg_partman set (Debian's postgresql-15-partman): monthly partitions (47 of them up to now) made ahead by its maintenance, and its
/// retention dropping old ones.
#[test]
fn a_pg_partman_set_with_premade_partitions_and_retention_stays_equal_to_the_old_sql() {
    let db = empty_db();
    let mut conn = db.conn();
    conn.batch_execute(PARTITIONED_BASE).unwrap();
    conn.batch_execute(
        "CREATE SCHEMA partman; \
         CREATE EXTENSION pg_partman SCHEMA partman",
    )
    .expect("pg_partman (Debian: apt-get install postgresql-15-partman; scripts/test installs it)");
    conn.batch_execute(
        "SELECT partman.create_parent('public.tokens', 'created_at', 'native', 'monthly', \
           p_premake := 3, p_start_partition := '2023-02-06')",
    )
    .unwrap();
    db::migrate(&mut conn).unwrap();
    refresh_and_check(&mut conn);
    conn.batch_execute(
        "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES \
           (1, '1', '2023-02-06 10:00', '2023-02-06 10:05'), (2, '1', '2023-02-07 10:00', NULL), \
           (3, '1', '2023-02-08 10:00', '2023-02-08 11:00'); \
         INSERT INTO tokens_p2023_02 (user_id, token, created_at, used_at) \
           VALUES (4, '1', '2023-02-07 12:00', '2023-02-07 12:30')",
    )
    .unwrap();
    refresh_and_check(&mut conn);
    // Maintenance makes partitions ahead of now; retention drops the ones older than a week, rows and all.
    // ... while check-ins arrive (into today's partition, which the maintenance makes first).
    conn.batch_execute("SELECT partman.run_maintenance('public.tokens')")
        .unwrap();
    let url = db.url.clone();
    let writer = std::thread::spawn(move || {
        let mut c = coworking_analytics::db::connect(&url).unwrap();
        for i in 0..200 {
            c.batch_execute(&format!(
                "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({}, '1', now(), now())",
                i % 4 + 1
            ))
            .unwrap();
        }
    });
    // Retention set to detach (retention_keep_table: pg_partman 4 drops an attached partition without detaching it
    // otherwise, and a DROP leaves no rows to count), then the kept tables dropped, as a cleanup job would.
    conn.batch_execute(
        "UPDATE partman.part_config SET retention = '7 days', retention_keep_table = true \
         WHERE parent_table = 'public.tokens'; \
         SELECT partman.run_maintenance('public.tokens'); \
         DO $$ DECLARE t text; BEGIN \
           FOR t IN SELECT relname FROM pg_class WHERE relname LIKE 'tokens_p2023%' AND relkind = 'r' AND NOT relispartition LOOP \
             EXECUTE format('DROP TABLE %I', t); \
           END LOOP; END $$",
    )
    .unwrap();
    writer.join().unwrap();
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    // Retention detached the old partitions, rows and all: their rows, not a rebuild.
    assert!(
        dry.contains("partition tokens_p2023_02 detached: 7 change rows"),
        "{dry}"
    );
    assert!(!dry.contains("rebuild"), "{dry}");
    refresh_and_check(&mut conn);
    // A write into a partition the maintenance made is captured.
    conn.batch_execute(
        "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES (1, '1', now(), now())",
    )
    .unwrap();
    refresh_and_check(&mut conn);
}

/// Found by the property test (on PostgreSQL 16): a partition attached with rows that an update then moves to
/// another partition before the next refresh leaves nothing to recount where it was attached.
#[test]
fn rows_attached_and_moved_away_before_the_refresh_are_counted() {
    let (_db, mut conn) = partitioned_db();
    for op in [
        Op::DetachDrop(0),
        Op::Refresh,
        Op::Recreate(0, true),
        Op::Move(0, 1),
        Op::Refresh,
    ] {
        apply(&mut conn, &op);
    }
}
