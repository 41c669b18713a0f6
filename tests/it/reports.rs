//! Report semantics on hand-made data with the edge cases, and the exact bytes of both bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::{add_token, add_user, migrated_db};
use coworking_analytics::cache::{CacheWriter, Snapshot};
use coworking_analytics::db::queries;
use coworking_analytics::refresh::{self, Mode, Outcome};
use diesel::connection::SimpleConnection;

/// A full run, loaded by a new replica's cache writer (the follower's path).
fn refresh_and_render(conn: &mut diesel::PgConnection) -> std::sync::Arc<Snapshot> {
    let outcome = refresh::run(conn, Mode::Full, "test").unwrap();
    assert!(matches!(outcome, Outcome::Completed(_)), "{outcome:?}");
    let mut writer = CacheWriter::new();
    writer.sync_from(conn).unwrap();
    writer.cache().current().expect("a successful run")
}

use crate::common::assert_rollups_match_definition;

#[test]
fn edge_cases_give_the_old_services_numbers_and_bytes() {
    let db = migrated_db();
    let mut conn = db.conn();
    add_user(&mut conn, 1, "2023-01-20 03:23:39.757813");
    add_user(&mut conn, 2, "2023-02-01 09:00:00"); // zero microseconds
    add_user(&mut conn, 10, "2023-02-02 10:00:00.5"); // id 10 sorts after 2 numerically
    add_user(&mut conn, 3, "2023-02-03 00:00:00.000001"); // no tokens: absent from user visits
                                                          // The last microsecond of a day and the first of the next belong to different days.
    add_token(
        &mut conn,
        1,
        "2023-02-07 23:59:59.999999",
        Some("2023-02-08 00:00:10"),
    );
    add_token(
        &mut conn,
        1,
        "2023-02-08 00:00:00",
        Some("2023-02-08 00:01:00"),
    );
    add_token(&mut conn, 1, "2023-02-08 10:00:00", None); // never used: a visit, not a check-in
    add_token(
        &mut conn,
        2,
        "2023-02-07 12:00:00",
        Some("2023-02-09 12:05:00"),
    ); // used on another day
    add_token(&mut conn, 10, "2023-02-09 08:00:00", None); // the only token of 02-09 is unused: no such day

    let snap = refresh_and_render(&mut conn);
    assert_rollups_match_definition(&mut conn);
    assert_eq!(
        std::str::from_utf8(&snap.data.daily_usage.whole(false).body.to_vec()).unwrap(),
        "{\"2023-02-07\":2,\"2023-02-08\":1}\n"
    );
    assert_eq!(
        std::str::from_utf8(&snap.data.user_visits.whole(false).body.to_vec()).unwrap(),
        concat!(
            "{\"1\":{\"joined_at\":\"2023-01-20 03:23:39.757813\",\"visits\":3},",
            "\"2\":{\"joined_at\":\"2023-02-01 09:00:00\",\"visits\":1},",
            "\"10\":{\"joined_at\":\"2023-02-02 10:00:00.500000\",\"visits\":1}}\n"
        )
    );
}

#[test]
fn empty_tables_give_empty_objects() {
    let db = migrated_db();
    let mut conn = db.conn();
    let snap = refresh_and_render(&mut conn);
    assert_eq!(
        &snap.data.daily_usage.whole(false).body.to_vec()[..],
        b"{}\n"
    );
    assert_eq!(
        &snap.data.user_visits.whole(false).body.to_vec()[..],
        b"{}\n"
    );
}

#[test]
fn a_user_row_that_is_gone_is_reported_with_null_joined_at() {
    // The old service LEFT JOINs users: a token whose user row is missing still counts, with joined_at null.
    let db = migrated_db();
    let mut conn = db.conn();
    conn.batch_execute("ALTER TABLE tokens DROP CONSTRAINT tokens_users_id_fk")
        .unwrap();
    add_token(
        &mut conn,
        7,
        "2023-03-01 10:00:00",
        Some("2023-03-01 10:05:00"),
    );
    let snap = refresh_and_render(&mut conn);
    assert_rollups_match_definition(&mut conn);
    assert_eq!(
        &snap.data.user_visits.whole(false).body.to_vec()[..],
        b"{\"7\":{\"joined_at\":null,\"visits\":1}}\n"
    );
}

#[test]
fn seeded_data_matches_the_definition_and_bodies_are_json() {
    let db = migrated_db();
    let mut conn = db.conn();
    let params = coworking_analytics::seed::SeedParams {
        tokens: 20_000,
        users: 500,
        ..coworking_analytics::seed::DEMO_PARAMS
    };
    coworking_analytics::seed::load(&mut conn, params).unwrap();
    let snap = refresh_and_render(&mut conn);
    assert_rollups_match_definition(&mut conn);
    let daily: serde_json::Value =
        serde_json::from_slice(&snap.data.daily_usage.whole(false).body.to_vec()).unwrap();
    let total: i64 = daily
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    let used: i64 = coworking_analytics::db::definitions::definition_daily_usage(&mut conn)
        .unwrap()
        .iter()
        .map(|d| d.checkins)
        .sum();
    assert_eq!(total, used);
    assert_eq!(
        common::total_visits(&snap.data.user_visits.whole(false).body.to_vec()),
        20_000
    );
}

#[test]
fn a_refresh_records_its_run() {
    let db = migrated_db();
    let mut conn = db.conn();
    add_user(&mut conn, 1, "2023-01-01 00:00:00");
    add_token(
        &mut conn,
        1,
        "2023-02-01 10:00:00",
        Some("2023-02-01 10:01:00"),
    );
    add_token(&mut conn, 1, "2023-02-02 10:00:00", None);
    let Outcome::Completed(report) = refresh::run(&mut conn, Mode::Full, "host-a").unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            report.counts.days,
            report.counts.users,
            report.counts.rows_read
        ),
        (1, 1, 2)
    );
    let latest = queries::latest_success(&mut conn).unwrap().unwrap();
    assert_eq!(latest.id, report.run_id);
}

/// The scripts get the old SQL from the binary (`definition`, the one place it is written): run as printed, it
/// gives the rows the tests' definitions give, for the old queries and a zone's weeks and occupancy.
#[test]
fn the_definition_subcommand_prints_the_sql_the_tests_compare_with() {
    use coworking_analytics::db::definitions;
    use diesel::RunQueryDsl;
    let db = migrated_db();
    let mut conn = db.conn();
    coworking_analytics::seed::load(&mut conn, coworking_analytics::seed::DEMO_PARAMS).unwrap();
    let printed = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coworking-analytics"))
            .arg("definition")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Each printed query, wrapped to name its columns, ordered as the definitions are.
    let days: Vec<coworking_analytics::report::DayRow> = diesel::sql_query(format!(
        "SELECT date AS day, count AS checkins FROM ({}) q ORDER BY 1",
        printed(&["daily-usage"]).trim()
    ))
    .load(&mut conn)
    .unwrap();
    assert_eq!(
        days,
        definitions::definition_daily_usage(&mut conn).unwrap()
    );
    assert!(!days.is_empty());
    let users: Vec<coworking_analytics::report::UserRow> = diesel::sql_query(format!(
        "SELECT user_id, joined_at, count AS visits FROM ({}) q ORDER BY 1",
        printed(&["user-visits"]).trim()
    ))
    .load(&mut conn)
    .unwrap();
    assert_eq!(
        users,
        definitions::definition_user_visits(&mut conn).unwrap()
    );
    let weeks: Vec<coworking_analytics::report::DayRow> = diesel::sql_query(
        printed(&["periods", "--zone", "America/New_York", "--period", "week"]).trim(),
    )
    .load(&mut conn)
    .unwrap();
    assert_eq!(
        weeks,
        definitions::definition_periods(&mut conn, "UTC", "America/New_York", "week", None, None)
            .unwrap()
    );
    // Every check-in lands in one weekday x hour cell.
    let occupancy = printed(&["occupancy", "--zone", "Europe/Berlin"]);
    let cells: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT sum(n)::int8 FROM ({}) q)",
        occupancy.trim()
    )))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(cells, days.iter().map(|d| d.checkins).sum::<i64>());
    let grid =
        definitions::definition_occupancy(&mut conn, "UTC", "Europe/Berlin", None, None).unwrap();
    assert_eq!(cells, grid.iter().flatten().sum::<i64>());
}
