//! A large backlog of change rows is applied a slice per run (`db::slice`): each run moves whole days and whole
//! users, those a live write touched first, so a check-in recorded behind a rebuild's difference reaches the
//! rollups in the next run, and no count is ever part of a change. The property tests of `incremental` run with
//! a slice budget of 2 as well.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{self, migrated_db};
use coworking_analytics::db::load::rollup_contents;
use coworking_analytics::refresh::{self, rebuild, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::{PgConnection, RunQueryDsl};
use std::collections::BTreeMap;

fn days(conn: &mut PgConnection) -> BTreeMap<String, i64> {
    let (days, _) = rollup_contents(conn).unwrap();
    days.into_iter()
        .map(|d| (d.day.to_string(), d.checkins))
        .collect()
}

fn users(conn: &mut PgConnection) -> BTreeMap<i32, i64> {
    let (_, users) = rollup_contents(conn).unwrap();
    users.into_iter().map(|u| (u.user_id, u.visits)).collect()
}

/// Members 1..=`members`, and `per_day` check-ins on each of `days`, member `1 + i % members`, seven minutes apart.
fn members_checking_in(conn: &mut PgConnection, members: i32, per_day: i32, days: &[&str]) {
    let days: Vec<String> = days.iter().map(|d| format!("('{d}'::timestamp)")).collect();
    conn.batch_execute(&format!(
        "INSERT INTO users (id, first_name, last_name, joined_at) \
           SELECT i, 'F', 'L', '2024-01-01' FROM generate_series(1, {members}) i; \
         INSERT INTO tokens (user_id, token, created_at, used_at) \
           SELECT 1 + i % {members}, 't', d + make_interval(mins => i * 7), d + make_interval(mins => i * 7) \
           FROM generate_series(0, {per_day} - 1) i, (VALUES {}) v(d)",
        days.join(", ")
    ))
    .unwrap();
}

/// One incremental run; whether it says a backlog is left. The last slice can take all that was left and still
/// say so: the run after it finds nothing.
fn slice_step(conn: &mut PgConnection) -> bool {
    match refresh::run_in(conn, Mode::Incremental, "t", None).unwrap() {
        Outcome::Completed(run) => run.more,
        Outcome::Unchanged => false,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_checkin_behind_a_large_difference_goes_in_the_next_run_and_the_rest_follows_whole() {
    let db = migrated_db();
    let mut conn = db.conn();
    // Five members, check-ins on three days (members 1-4: ten a day each).
    conn.batch_execute(
        "INSERT INTO users (id, first_name, last_name, joined_at) \
           SELECT i, 'F', 'L', '2024-01-01' FROM generate_series(1, 5) i; \
         INSERT INTO tokens (user_id, token, created_at, used_at) \
           SELECT 1 + i % 4, 't', d + make_interval(mins => i * 7), d + make_interval(mins => i * 7) \
           FROM generate_series(0, 39) i, (VALUES ('2024-03-01'::timestamp), ('2024-03-02'), ('2024-03-03')) v(d)",
    )
    .unwrap();
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    // The oldest day goes behind the triggers' back (as a dropped partition would), and a rebuild stages the
    // difference: one day, its quarter hours and four members.
    common::behind_the_triggers(
        &mut conn,
        "DELETE FROM tokens WHERE created_at < '2024-03-02'",
    );
    let rebuilt = rebuild::stage(&mut conn, rebuild::Why::Asked, "t", None).unwrap();
    assert!(
        matches!(rebuilt, rebuild::Rebuilt::Staged { .. }),
        "{rebuilt:?}"
    );
    // Then a check-in of member 5 on the newest day.
    conn.batch_execute(
        "INSERT INTO tokens (user_id, token, created_at, used_at) \
         VALUES (5, 'n', '2024-03-03 12:00', '2024-03-03 12:00')",
    )
    .unwrap();
    let (days_before, users_before) = (days(&mut conn), users(&mut conn));

    refresh::set_thread_slice_keys(Some(1));
    let Outcome::Completed(run) = refresh::run_in(&mut conn, Mode::Incremental, "t", None).unwrap()
    else {
        panic!("the run did nothing")
    };
    assert!(run.more, "a slice was taken and the rest left");
    let (days_after, users_after) = (days(&mut conn), users(&mut conn));
    assert_eq!(
        days_after["2024-03-03"],
        days_before["2024-03-03"] + 1,
        "the check-in's day went first"
    );
    assert_eq!(users_after.get(&5), Some(&1), "and its member");
    // Besides the live keys, the first key of each kind in the backlog (budget 1): the difference's one day,
    // whole (all its check-ins gone), and member 1, whole; members 2-4 wait, whole.
    assert_eq!(days_before.get("2024-03-01"), Some(&40));
    assert_eq!(days_after.get("2024-03-01"), None, "the day went whole");
    assert_eq!(users_after[&1], 20, "member 1 went whole");
    for u in 2..=4 {
        assert_eq!(users_after[&u], users_before[&u], "member {u} waits, whole");
    }

    // The next runs apply the rest, each key whole: every count is either the one before or the final one.
    let mut runs = 1;
    loop {
        let Outcome::Completed(run) =
            refresh::run_in(&mut conn, Mode::Incremental, "t", None).unwrap()
        else {
            panic!("a run with a backlog did nothing")
        };
        runs += 1;
        let u = users(&mut conn);
        for id in 1..=4 {
            assert!(u.get(&id) == users_before.get(&id) || u.get(&id) == Some(&20));
        }
        if !run.more {
            break;
        }
    }
    refresh::set_thread_slice_keys(None);
    assert_eq!(runs, 4, "one backlog member per run: {runs} runs");
    common::assert_rollups_match_definition(&mut conn);
}

/// The slices go on from where the previous one ended rather than from the lowest key (whose deleted rows a
/// scan from the start would read through), and wrap around: a backlog that arrives below that point is taken
/// when they do, and the rollups end equal to the definition.
#[test]
fn slices_go_on_from_the_last_key_and_wrap_around_to_a_newer_backlog() {
    let db = migrated_db();
    let mut conn = db.conn();
    members_checking_in(&mut conn, 6, 60, &["2024-03-01", "2024-03-02"]);
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    common::behind_the_triggers(
        &mut conn,
        "DELETE FROM tokens WHERE created_at < '2024-03-02'",
    );
    rebuild::stage(&mut conn, rebuild::Why::Asked, "t", None).unwrap();
    let before = users(&mut conn);
    refresh::set_thread_slice_keys(Some(2));
    assert!(slice_step(&mut conn));
    let after_one = users(&mut conn);
    let moved: Vec<i32> = (1..=6).filter(|u| after_one[u] != before[u]).collect();
    assert_eq!(moved, [1, 2], "the first slice takes the lowest members");
    // A newer difference for member 1 (below where the slices are), then the next slice.
    common::behind_the_triggers(
        &mut conn,
        "DELETE FROM tokens WHERE user_id = 1 AND created_at >= '2024-03-02'",
    );
    rebuild::stage(&mut conn, rebuild::Why::Asked, "t", None).unwrap();
    assert!(slice_step(&mut conn));
    let after_two = users(&mut conn);
    let moved: Vec<i32> = (1..=6)
        .filter(|u| after_two.get(u) != after_one.get(u))
        .collect();
    assert_eq!(moved, [3, 4], "the next slice goes on after member 2");
    let mut runs = 2;
    while slice_step(&mut conn) {
        runs += 1;
        assert!(runs < 10, "the slices never ended");
    }
    refresh::set_thread_slice_keys(None);
    assert_eq!(
        users(&mut conn).get(&1),
        None,
        "member 1's newer difference was taken on wrapping"
    );
    common::assert_rollups_match_definition(&mut conn);
}

/// A backlog that arrives while the statistics take `rollup_changes` for empty (autovacuum saw the queue drained)
/// gets the table analysed by the first slicing run: with one row assumed, the planner joined a slice against the
/// whole backlog in a nested loop (two minutes per run at a month of 10M check-ins).
#[test]
fn the_first_slice_of_a_backlog_the_statistics_missed_analyses_the_change_rows() {
    let db = migrated_db();
    let mut conn = db.conn();
    members_checking_in(&mut conn, 50, 500, &["2024-03-01"]);
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    conn.batch_execute("VACUUM ANALYZE rollup_changes").unwrap();
    let reltuples = |conn: &mut PgConnection| -> f64 {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Double>(
            "(SELECT reltuples::float8 FROM pg_class WHERE oid = 'rollup_changes'::regclass)",
        ))
        .get_result(conn)
        .unwrap()
    };
    assert!(
        reltuples(&mut conn) < 1.0,
        "the drained queue is analysed as empty"
    );
    // Fifty members' check-ins go behind the triggers' back, and a rebuild stages the difference.
    common::behind_the_triggers(&mut conn, "DELETE FROM tokens");
    rebuild::stage(&mut conn, rebuild::Why::Asked, "t", None).unwrap();
    let pending: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM rollup_changes)",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert!(pending > 10, "{pending} change rows");
    refresh::set_thread_slice_keys(Some(5));
    let outcome = refresh::run_in(&mut conn, Mode::Incremental, "t", None).unwrap();
    refresh::set_thread_slice_keys(None);
    assert!(
        matches!(outcome, Outcome::Completed(ref r) if r.more),
        "{outcome:?}"
    );
    let seen = reltuples(&mut conn);
    assert!(
        seen >= pending as f64 * 0.5,
        "the run analysed the backlog: {seen} rows estimated of {pending}"
    );
}

/// The slices' cursor does not depend on the session's date format: a day cursor written under one `DateStyle`
/// is read under another (as a pooled connection may be) and the slices go on, ending equal to the definition.
#[test]
fn the_slice_cursor_survives_a_change_of_date_style() {
    let db = migrated_db();
    let mut conn = db.conn();
    members_checking_in(
        &mut conn,
        3,
        9,
        &["2024-03-13", "2024-03-14", "2024-03-15", "2024-03-16"],
    );
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    common::behind_the_triggers(
        &mut conn,
        "DELETE FROM tokens WHERE created_at < '2024-03-16'",
    );
    rebuild::stage(&mut conn, rebuild::Why::Asked, "t", None).unwrap();
    refresh::set_thread_slice_keys(Some(1));
    conn.batch_execute("SET DateStyle = 'SQL, MDY'").unwrap();
    assert!(slice_step(&mut conn), "the first slice leaves the rest");
    conn.batch_execute("SET DateStyle = 'SQL, DMY'").unwrap();
    let mut runs = 1;
    while slice_step(&mut conn) {
        runs += 1;
        assert!(runs < 10, "the slices never ended");
    }
    refresh::set_thread_slice_keys(None);
    conn.batch_execute("SET DateStyle = 'ISO, MDY'").unwrap();
    assert_eq!(days(&mut conn).len(), 1, "only the last day is left");
    common::assert_rollups_match_definition(&mut conn);
}
