//! A partition detached and kept (pg_partman's retention by default) is counted beside the refreshes, not in
//! its DETACH's transaction (migration 17): what the DETACH leaves, and every way the kept table can be touched
//! before it is counted (a write, an ATTACH back, a DROP, a rebuild's snapshot, a recount), each ending equal to
//! the old SQL with the month subtracted once.

use crate::common::assert_rollups_match_definition;
use crate::partitions::{apply, day, partitioned_db, refresh_and_check, Op};
use coworking_analytics::db::deltas;
use coworking_analytics::db::verify::Scope;
use coworking_analytics::refresh::{self, rebuild, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::{PgConnection, RunQueryDsl};

pub(crate) fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "({sql})::int8"
    )))
    .get_result(conn)
    .unwrap()
}

/// Change rows counted from tokens_d1, markers waiting, and the kept table's BEFORE trigger.
fn state(conn: &mut PgConnection) -> (i64, i64, i64) {
    (
        count(
            conn,
            "SELECT count(*) FROM rollup_changes WHERE source = 'partition tokens_d1 detached'",
        ),
        count(conn, "SELECT count(*) FROM rollup_detached"),
        count(
            conn,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'rollup_count_detached'",
        ),
    )
}

/// The capture triggers on tokens_d1.
fn capture_triggers(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tokens_d1'::regclass AND tgname LIKE 'rollup_capture%'",
    )
}

/// Day 1 with three tokens of two users, refreshed.
fn with_rows_on_day_1() -> (crate::common::TestDb, PgConnection) {
    let (db, mut conn) = partitioned_db();
    refresh_and_check(&mut conn);
    for op in [
        Op::Partition(1, 1, true),
        Op::Parent(2, 1, true),
        Op::Parent(2, 1, false),
        Op::Parent(3, 2, true),
        Op::Refresh,
    ] {
        apply(&mut conn, &op);
    }
    (db, conn)
}

const DETACH: &str = "ALTER TABLE tokens DETACH PARTITION tokens_d1";

#[test]
fn a_kept_detached_partition_is_a_marker_until_counted_beside_the_refreshes() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    // The DETACH counted nothing: a marker and the kept table's trigger, and its capture triggers are gone.
    assert_eq!(state(&mut conn), (0, 1, 1));
    assert_eq!(capture_triggers(&mut conn), 0);
    // The replicas are told their data is not complete since then, and the worker to count it.
    let horizon = deltas::horizon(&mut conn, 0).unwrap();
    assert!(horizon.oldest_pending.is_some(), "{horizon:?}");
    assert!(deltas::check(&mut conn).unwrap().detached);
    let dry = refresh::dry_run(&mut conn, Mode::Incremental).unwrap();
    assert!(
        dry.contains("partition tokens_d1 detached at ") && dry.contains("still counted"),
        "{dry}"
    );
    // Counted beside (what the worker's background thread does), in a transaction of its own.
    let counted = rebuild::count_detached(&mut conn, None).unwrap();
    assert_eq!(counted, vec!["partition tokens_d1 detached".to_string()]);
    // One row per quarter hour with check-ins (2) and one per user (2), and the trigger gone with the marker.
    assert_eq!(state(&mut conn), (4, 0, 0));
    assert!(deltas::horizon(&mut conn, 0)
        .unwrap()
        .oldest_pending
        .is_some());
    refresh_and_check(&mut conn);
    assert!(deltas::horizon(&mut conn, 0)
        .unwrap()
        .oldest_pending
        .is_none());
    // The one-shot `refresh` counts a waiting table itself.
    conn.batch_execute("ALTER TABLE tokens DETACH PARTITION tokens_d2")
        .unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) FROM rollup_detached"), 1);
    refresh_and_check(&mut conn);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM rollup_detached"), 0);
}

#[test]
fn a_write_to_the_kept_table_counts_it_first() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    // The DELETE's transaction counted the table as detached (the trigger stays, doing nothing from now on).
    conn.batch_execute("DELETE FROM tokens_d1 WHERE user_id = 2")
        .unwrap();
    assert_eq!(state(&mut conn), (4, 0, 1));
    conn.batch_execute(&format!(
        "INSERT INTO tokens_d1 (user_id, token, created_at, used_at) VALUES (4, '1', '{0} 08:00', '{0} 08:01'); \
         TRUNCATE tokens_d1",
        day(1)
    ))
    .unwrap();
    assert_eq!(state(&mut conn), (4, 0, 1));
    refresh_and_check(&mut conn);
}

#[test]
fn a_truncate_of_the_kept_table_counts_it_first() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(&format!("{DETACH}; TRUNCATE tokens_d1"))
        .unwrap();
    assert_eq!(state(&mut conn), (4, 0, 1));
    refresh_and_check(&mut conn);
}

#[test]
fn attached_back_before_it_was_counted_costs_nothing() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    conn.batch_execute(&format!(
        "ALTER TABLE tokens ATTACH PARTITION tokens_d1 FOR VALUES FROM ('{0}') TO ('{0}'::date + 1)",
        day(1)
    ))
    .unwrap();
    // Its rows never left the rollups: no marker, no trigger, no change rows either way; its capture triggers,
    // dropped by the DETACH (from PostgreSQL 16 on, they would keep it from becoming a partition again), are back.
    assert_eq!(state(&mut conn), (0, 0, 0));
    assert_eq!(capture_triggers(&mut conn), 4);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM rollup_changes"), 0);
    // And writes to it count again, through the parent and naming it.
    apply(&mut conn, &Op::Parent(4, 1, true));
    apply(&mut conn, &Op::DeletePartition(1, 1));
    refresh_and_check(&mut conn);
}

#[test]
fn a_drop_counts_the_kept_table_while_its_rows_can_still_be_read() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    conn.batch_execute("DROP TABLE tokens_d1").unwrap();
    assert_eq!(state(&mut conn), (4, 0, 0));
    refresh_and_check(&mut conn);
    // Detached and dropped in one transaction (pg_partman with retention_keep_table = false): counted there.
    conn.batch_execute(
        "BEGIN; ALTER TABLE tokens DETACH PARTITION tokens_d2; DROP TABLE tokens_d2; COMMIT",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM rollup_changes WHERE source = 'partition tokens_d2 detached'"
        ),
        2
    );
    refresh_and_check(&mut conn);
}

#[test]
fn a_rebuild_whose_snapshot_holds_a_waiting_table_subtracts_it_once() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    // The stage itself does not count the table: its snapshot sees the marker.
    let rebuilt = rebuild::stage(&mut conn, rebuild::Why::Asked, "t", None).unwrap();
    let rebuild::Rebuilt::Staged { staged, .. } = rebuilt else {
        panic!("{rebuilt:?}");
    };
    assert_eq!(staged.repaired, 0, "{staged:?}");
    assert_eq!(state(&mut conn), (0, 1, 1));
    refresh_and_check(&mut conn);
}

#[test]
fn a_recount_counts_a_waiting_table_first_and_repairs_nothing() {
    let (_db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    let outcome = refresh::run_drained(
        &mut conn,
        Mode::Verify(Scope::Days {
            from: chrono::NaiveDate::from_ymd_opt(2023, 2, 6).unwrap(),
            to: chrono::NaiveDate::from_ymd_opt(2023, 2, 8).unwrap(),
        }),
        "t",
        None,
    )
    .unwrap();
    let Outcome::Completed(report) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(report.repairs.is_empty(), "{:?}", report.repairs);
    assert_eq!(state(&mut conn).1, 0);
    assert_rollups_match_definition(&mut conn);
}

/// The service's own worker counts a waiting table on its background thread, and its runs apply the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_background_thread_counts_a_waiting_table() {
    let (db, mut conn) = with_rows_on_day_1();
    let app = crate::common::TestApp::new(&db.url).start().await;
    let first = crate::common::wait_for_run(&app, 0).await;
    conn.batch_execute(DETACH).unwrap();
    let mut settled = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if count(
            &mut conn,
            "SELECT (SELECT count(*) FROM rollup_detached) + (SELECT count(*) FROM rollup_changes)",
        ) == 0
        {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "the detached table was not counted and applied within 10 s"
    );
    assert_rollups_match_definition(&mut conn);
    let latest = count(
        &mut conn,
        "SELECT max(id) FROM refresh_runs WHERE outcome = 'success'",
    );
    assert!(latest > first);
    while app.cache.run_id() < latest {
        crate::common::wait_for_run(&app, app.cache.run_id()).await;
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
}

/// The hourly self-check sample would count a waiting table under the writer lock (seconds at a chain's size):
/// it waits for the next hour instead, and the table stays for the background thread.
#[test]
fn the_self_check_sample_is_deferred_while_a_table_waits() {
    use coworking_analytics::metrics::Metrics;
    use std::sync::Arc;
    let (db, mut conn) = with_rows_on_day_1();
    let runner = refresh::Runner::new(
        coworking_analytics::db::pool(
            &db.url,
            2,
            std::time::Duration::from_secs(30),
            coworking_analytics::db::PoolMode::Session,
        ),
        refresh::Caller::Worker,
        Arc::new(Metrics::local()),
        "t".into(),
        coworking_analytics::logging::discard(),
    );
    conn.batch_execute(DETACH).unwrap();
    let outcome = runner.verify_sample().unwrap();
    assert!(
        matches!(&outcome, Outcome::Unchanged),
        "a plain run with nothing captured: {outcome:?}"
    );
    assert_eq!(state(&mut conn), (0, 1, 1));
    // Once it is counted, the sample runs again.
    rebuild::count_detached(&mut conn, None).unwrap();
    let outcome = runner.verify_sample().unwrap();
    let Outcome::Completed(report) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(matches!(report.mode, Mode::Verify(_)), "{:?}", report.mode);
    assert_rollups_match_definition(&mut conn);
}

/// An ATTACH back while the table is being counted waits for the count, then counts the rows back in.
#[test]
fn an_attach_back_during_the_count_waits_for_it_and_adds_the_rows_back() {
    let (db, mut conn) = with_rows_on_day_1();
    conn.batch_execute(DETACH).unwrap();
    conn.batch_execute("BEGIN; SELECT rollup_count_detached(true)")
        .unwrap();
    let url = db.url.clone();
    let attach = std::thread::spawn(move || {
        let mut other = coworking_analytics::db::connect(&url).unwrap();
        other
            .batch_execute(&format!(
                "ALTER TABLE tokens ATTACH PARTITION tokens_d1 FOR VALUES FROM ('{0}') TO ('{0}'::date + 1)",
                day(1)
            ))
            .unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !attach.is_finished(),
        "the ATTACH did not wait for the count"
    );
    conn.batch_execute("COMMIT").unwrap();
    attach.join().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM rollup_changes WHERE source = 'partition tokens_d1 attached'"
        ),
        4
    );
    refresh_and_check(&mut conn);
}

/// What `deltas::horizon` reports as the oldest pending moment, computed the plain way.
fn oldest_pending_plainly(conn: &mut PgConnection) -> Option<chrono::DateTime<chrono::Utc>> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
    >(
        "least((SELECT min(recorded_at) FROM rollup_changes), (SELECT min(marked_at) FROM rollup_detached))",
    ))
    .get_result(conn)
    .unwrap()
}

/// Asserts the horizon's oldest pending moment is the plain one, and something; returns it.
fn horizon_is_plain(conn: &mut PgConnection) -> chrono::DateTime<chrono::Utc> {
    let h = deltas::horizon(conn, 0).unwrap().oldest_pending;
    assert_eq!(h, oldest_pending_plainly(conn));
    h.expect("something pending")
}

/// Starts counting the waiting tables in `counting` (not committed), records a check-in of `user` on day 0, and
/// returns the horizon's oldest pending moment then (asserted plain); commits the count.
fn during_a_count(
    conn: &mut PgConnection,
    counting: &mut PgConnection,
    user: u8,
) -> chrono::DateTime<chrono::Utc> {
    counting
        .batch_execute("BEGIN; SELECT rollup_count_detached(false)")
        .unwrap();
    apply(conn, &Op::Parent(user, 0, true));
    let during = horizon_is_plain(conn);
    counting.batch_execute("COMMIT").unwrap();
    during
}

#[test]
fn the_horizon_is_the_oldest_change_or_marker_also_while_a_count_is_in_progress() {
    let (db, mut conn) = with_rows_on_day_1();
    let marked_at = |conn: &mut PgConnection| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
            "(SELECT marked_at FROM rollup_detached)",
        ))
        .get_result::<chrono::DateTime<chrono::Utc>>(conn)
        .unwrap()
    };
    // A check-in still pending, recorded before the DETACH: it is the oldest.
    apply(&mut conn, &Op::Parent(1, 2, true));
    conn.batch_execute(DETACH).unwrap();
    let oldest = horizon_is_plain(&mut conn);
    assert!(oldest < marked_at(&mut conn));
    // A count in progress in another session (its rows not committed), and a check-in after the marker.
    let mut counting = db.conn();
    assert_eq!(during_a_count(&mut conn, &mut counting, 2), oldest);
    assert_eq!(horizon_is_plain(&mut conn), oldest);
    refresh_and_check(&mut conn);
    assert_eq!(deltas::horizon(&mut conn, 0).unwrap().oldest_pending, None);
    // Nothing pending, then a DETACH: the marker is the oldest, before, during and after a count in progress.
    conn.batch_execute("ALTER TABLE tokens DETACH PARTITION tokens_d2")
        .unwrap();
    let marker = marked_at(&mut conn);
    assert_eq!(horizon_is_plain(&mut conn), marker);
    assert_eq!(during_a_count(&mut conn, &mut counting, 3), marker);
    horizon_is_plain(&mut conn);
    refresh_and_check(&mut conn);
    assert_eq!(deltas::horizon(&mut conn, 0).unwrap().oldest_pending, None);
    assert_rollups_match_definition(&mut conn);
}
