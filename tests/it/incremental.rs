//! Incremental refresh equals a full recompute after any sequence of writes (property test). Along the way a
//! replica follows every refresh by applying the delta log, and must serve exactly the bytes (identity and gzip)
//! of a replica that loads from scratch, which equal the old SQL's report. Writers and refreshers at the same
//! time, and a large bulk load: `writers.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::migrated_db;
use coworking_analytics::cache::{CacheWriter, ReportCache, Synced};
use coworking_analytics::refresh::{self, rebuild, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::PgConnection;
use proptest::prelude::*;
use std::cell::RefCell;

/// Times that sit on both sides of midnight, so day boundaries are exercised.
const TIMES: [&str; 3] = ["00:00:00", "12:00:00", "23:59:59.999999"];

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// One INSERT statement with several tokens: (user 1..=4, day 0..3, time index, used).
    Insert(Vec<(u8, u8, u8, bool)>),
    /// Set used_at on the n-th unused token (a late check-in).
    LateCheckin(u8),
    /// Clear used_at on the n-th used token.
    UndoCheckin(u8),
    /// Move the n-th token to another user and day.
    Move(u8, u8, u8, u8),
    /// Delete the tokens whose id % m == r (one statement, possibly many rows).
    Delete(u8, u8),
    /// Change a user's joined_at (micros 0 exercises the short format).
    Joined(u8, u32),
    /// Delete a user and its tokens in one transaction.
    DeleteUser(u8),
    Refresh,
    Range(u8, u8),
    /// `TRUNCATE tokens`: no row is captured, a rebuild is requested.
    Truncate,
    /// A check-in written with the triggers off (as `seed`'s bulk load does), and a rebuild requested for it.
    Bulk(u8, u8, u8),
    /// A rebuild computed and committed as change rows (`refresh --full` without its applying run): the next
    /// operations run before anything applies it.
    Stage,
    /// One incremental run and no more: with a small slice budget, a slice of the backlog (`db::slice`), which
    /// the follower patches like any run.
    Slice,
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((1u8..=4, 0u8..3, 0u8..3, any::<bool>()), 1..6).prop_map(Op::Insert),
        2 => any::<u8>().prop_map(Op::LateCheckin),
        1 => any::<u8>().prop_map(Op::UndoCheckin),
        2 => (any::<u8>(), 1u8..=4, 0u8..3, 0u8..3).prop_map(|(a, b, c, d)| Op::Move(a, b, c, d)),
        1 => (2u8..5, 0u8..5).prop_map(|(m, r)| Op::Delete(m, r % m)),
        1 => (1u8..=4, prop_oneof![Just(0u32), 1u32..999_999]).prop_map(|(u, m)| Op::Joined(u, m)),
        1 => (1u8..=4).prop_map(Op::DeleteUser),
        3 => Just(Op::Refresh),
        1 => (0u8..3, 0u8..3).prop_map(|(a, b)| Op::Range(a.min(b), a.max(b))),
        1 => Just(Op::Stage),
        1 => (1u8..=4, 0u8..3, 0u8..3).prop_map(|(u, d, t)| Op::Bulk(u, d, t)),
        1 => Just(Op::Truncate),
        2 => Just(Op::Slice),
    ]
}

/// Day `d` of the test: 40 days apart, so that the days fall in different chunks of the daily-usage body.
pub(crate) fn day(d: u8) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2023, 2, 6).unwrap() + chrono::Days::new(40 * u64::from(d))
}

fn ts(d: u8, time: u8) -> String {
    format!("{} {}", day(d), TIMES[usize::from(time % 3)])
}

/// User `u`'s id: 100 apart, so that the users fall in two chunks of the user-visits body.
fn uid(u: u8) -> u32 {
    u32::from(u) * 100
}

fn ensure_user(conn: &mut PgConnection, user: u8) {
    conn.batch_execute(&format!(
        "INSERT INTO users (id, first_name, last_name, joined_at) VALUES ({}, 'F', 'L', '2023-01-0{user} 08:00:00.5') \
         ON CONFLICT (id) DO NOTHING",
        uid(user)
    ))
    .unwrap();
}

fn nth_token(filter: &str, n: u8) -> String {
    format!(
        "(SELECT id FROM tokens WHERE {filter} ORDER BY id \
         OFFSET {n} % greatest((SELECT count(*) FROM tokens WHERE {filter}), 1) LIMIT 1)"
    )
}

pub(crate) fn apply(conn: &mut PgConnection, op: &Op) {
    match op {
        Op::Insert(rows) => {
            for (u, ..) in rows {
                ensure_user(conn, *u);
            }
            let values: Vec<String> = rows
                .iter()
                .map(|(u, d, t, used)| {
                    let created = ts(*d, *t);
                    let used = if *used { format!("'{created}'::timestamp + interval '5 minutes'") } else { "NULL".into() };
                    format!("({}, '123456', '{created}', {used})", uid(*u))
                })
                .collect();
            conn.batch_execute(&format!(
                "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES {}",
                values.join(",")
            ))
            .unwrap();
        }
        Op::LateCheckin(n) => conn
            .batch_execute(&format!(
                "UPDATE tokens SET used_at = created_at + interval '3 days' WHERE id = {}",
                nth_token("used_at IS NULL", *n)
            ))
            .unwrap(),
        Op::UndoCheckin(n) => conn
            .batch_execute(&format!("UPDATE tokens SET used_at = NULL WHERE id = {}", nth_token("used_at IS NOT NULL", *n)))
            .unwrap(),
        Op::Move(n, u, d, t) => {
            ensure_user(conn, *u);
            conn.batch_execute(&format!(
                "UPDATE tokens SET user_id = {}, created_at = '{}' WHERE id = {}",
                uid(*u),
                ts(*d, *t),
                nth_token("true", *n)
            ))
            .unwrap()
        }
        Op::Delete(m, r) => conn.batch_execute(&format!("DELETE FROM tokens WHERE id % {m} = {r}")).unwrap(),
        Op::Joined(u, micros) => conn
            .batch_execute(&format!(
                "UPDATE users SET joined_at = '2023-01-15 10:00:00'::timestamp + interval '{micros} microseconds' WHERE id = {}",
                uid(*u)
            ))
            .unwrap(),
        Op::DeleteUser(u) => conn
            .batch_execute(&format!(
                "BEGIN; DELETE FROM tokens WHERE user_id = {0}; DELETE FROM users WHERE id = {0}; COMMIT;",
                uid(*u)
            ))
            .unwrap(),
        Op::Refresh => refresh_and_check(conn, Mode::Incremental),
        Op::Range(a, b) => refresh_and_check(conn, Mode::Range { from: day(*a), to: day(*b) }),
        Op::Truncate => conn.batch_execute("TRUNCATE tokens").unwrap(),
        Op::Bulk(u, d, t) => {
            ensure_user(conn, *u);
            common::behind_the_triggers(
                conn,
                &format!(
                    "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({}, 'b', '{}', '{}')",
                    uid(*u),
                    ts(*d, *t),
                    ts(*d, *t)
                ),
            );
            coworking_analytics::db::rebuild::request(conn, "bulk load").unwrap()
        }
        Op::Slice => {
            refresh::run_in(conn, Mode::Incremental, "proptest", None).unwrap();
            FOLLOWER.with(|(writer, synced)| {
                let mut writer = writer.borrow_mut();
                synced.borrow_mut().push(writer.sync_from(conn).unwrap());
                assert_same_as_scratch(writer.cache(), conn, false);
            });
        }
        Op::Stage => {
            let rebuilt = rebuild::stage(conn, rebuild::Why::Asked, "proptest", None).unwrap();
            assert!(matches!(rebuilt, rebuild::Rebuilt::Staged { .. }), "{rebuilt:?}");
        }
    }
}

thread_local! {
    /// The replica that follows every refresh of this thread's property run by the delta log, and how it synced.
    static FOLLOWER: (RefCell<CacheWriter>, RefCell<Vec<Synced>>) = (RefCell::new(CacheWriter::new()), RefCell::new(Vec::new()));
}

pub(crate) fn refresh_and_check(conn: &mut PgConnection, mode: Mode) {
    let pending = coworking_analytics::db::deltas::check(conn)
        .unwrap()
        .pending;
    let outcome = refresh::run(conn, mode, "proptest").unwrap();
    match outcome {
        Outcome::Completed(_) => {}
        // Only an incremental run with nothing captured may do nothing (and then it leaves no history row).
        Outcome::Unchanged => assert!(mode == Mode::Incremental && !pending, "{mode:?}"),
        Outcome::Skipped => panic!("{outcome:?}"),
    }
    common::assert_rollups_match_definition(conn);
    FOLLOWER.with(|(writer, synced)| {
        let mut writer = writer.borrow_mut();
        synced.borrow_mut().push(writer.sync_from(conn).unwrap());
        assert_same_reports(writer.cache(), conn);
    });
}

fn gz<E: coworking_analytics::cache::chunked::Entry>(
    c: &coworking_analytics::cache::chunked::Chunked<E>,
) -> Option<Vec<u8>> {
    Some(c.whole(true))
        .filter(|r| r.gzipped)
        .map(|r| r.body.to_vec())
}

fn concat(parts: &[bytes::Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// `follower` serves exactly what a replica loading from scratch serves, and that is the old SQL's report.
fn assert_same_reports(follower: &ReportCache, conn: &mut PgConnection) {
    assert_same_as_scratch(follower, conn, true)
}

/// `follower` serves exactly what a replica loading from scratch serves, and, when `settled` (nothing is left
/// pending), that is the old SQL's report.
fn assert_same_as_scratch(follower: &ReportCache, conn: &mut PgConnection, settled: bool) {
    use coworking_analytics::report;
    let mut scratch = CacheWriter::new();
    assert_eq!(scratch.sync_from(conn).unwrap(), Synced::Reloaded);
    let scratch = scratch.cache();
    let (a, b) = (follower.current().unwrap(), scratch.current().unwrap());
    assert_eq!(a.run_id, b.run_id);
    let (x, y) = (&a.data, &b.data);
    assert_eq!(x.data_version, y.data_version);
    assert_eq!(x.changed_at, y.changed_at);
    assert_eq!(
        concat(&x.daily_usage.identity_parts()),
        concat(&y.daily_usage.identity_parts())
    );
    assert_eq!(
        concat(&x.user_visits.identity_parts()),
        concat(&y.user_visits.identity_parts())
    );
    if settled {
        let want = report::render_daily_usage(
            &coworking_analytics::db::definitions::definition_daily_usage(conn).unwrap(),
        );
        assert_eq!(concat(&y.daily_usage.identity_parts()), want);
        let want = report::render_user_visits(
            &coworking_analytics::db::definitions::definition_user_visits(conn).unwrap(),
        );
        assert_eq!(concat(&y.user_visits.identity_parts()), want);
    }
    assert_eq!(x.daily_usage.etag, y.daily_usage.etag);
    assert_eq!(x.user_visits.etag, y.user_visits.etag);
    assert_eq!(x.user_visits.gzip_etag, y.user_visits.gzip_etag);
    assert_eq!(gz(&x.daily_usage), gz(&y.daily_usage));
    assert_eq!(gz(&x.user_visits), gz(&y.user_visits));
    if let Some(body) = gz(&x.user_visits) {
        assert_eq!(
            common::gunzip(&body),
            concat(&x.user_visits.identity_parts())
        );
    }
    assert_eq!(x.figures, y.figures);
    assert_eq!(x.quarters, y.quarters, "the patched quarter hours");
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Runs `cases()` random write sequences on one database; two of these run in parallel, one of them with a slice
/// budget of 2 rows, so that most of its runs take a slice of what is pending and leave the rest.
fn property(seed_name: &str, slice_keys: Option<i64>) {
    refresh::set_thread_slice_keys(slice_keys);
    let db = migrated_db();
    let conn = RefCell::new(db.conn());
    refresh_and_check(&mut conn.borrow_mut(), Mode::Incremental); // the first run is a full rebuild
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &sha_seed(seed_name),
        ),
    );
    runner
        .run(&prop::collection::vec(op(), 1..14), |ops| {
            let mut conn = conn.borrow_mut();
            for op in &ops {
                apply(&mut conn, op);
            }
            refresh_and_check(&mut conn, Mode::Incremental);
            Ok(())
        })
        .unwrap();
    // The follower did patch (not only reload): the test exercises the delta path.
    FOLLOWER.with(|(_, synced)| {
        let synced = synced.borrow();
        let patched = synced.iter().filter(|s| **s == Synced::Patched).count();
        let reloaded = synced.iter().filter(|s| **s == Synced::Reloaded).count();
        assert!(
            patched > synced.len() / 4,
            "patched {patched}, reloaded {reloaded} of {}",
            synced.len()
        );
    });
}

pub(crate) fn sha_seed(name: &str) -> [u8; 32] {
    let mut seed = [7u8; 32];
    for (i, b) in name.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed
}

#[test]
fn incremental_refresh_equals_full_recompute_a() {
    property("a", Some(2));
}

#[test]
fn incremental_refresh_equals_full_recompute_b() {
    property("b", None);
}
