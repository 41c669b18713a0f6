//! Incremental refresh under load: writers and refreshers running at the same time end equal to a full recompute,
//! and a large bulk load asks for one rebuild after which capture resumes. The operations and the check are the
//! property test's (`incremental.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::migrated_db;
use crate::incremental::{apply, day, op, refresh_and_check, sha_seed, Op};
use coworking_analytics::refresh::{self, rebuild, Mode, Outcome, RefreshError};
use diesel::connection::SimpleConnection;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

#[test]
fn concurrent_writers_and_refreshers_end_equal_to_a_full_recompute() {
    let db = migrated_db();
    refresh_and_check(&mut db.conn(), Mode::Incremental);
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                let mut conn = coworking_analytics::db::connect(&url).unwrap();
                let mut runner = proptest::test_runner::TestRunner::new_with_rng(
                    ProptestConfig::default(),
                    proptest::test_runner::TestRng::from_seed(
                        proptest::test_runner::RngAlgorithm::ChaCha,
                        &sha_seed(&format!("writer{w}")),
                    ),
                );
                let ops = prop::collection::vec(op(), 150)
                    .new_tree(&mut runner)
                    .unwrap()
                    .current();
                for op in ops.iter().filter(|o| {
                    !matches!(
                        o,
                        Op::Refresh | Op::Range(..) | Op::DeleteUser(_) | Op::Slice
                    )
                }) {
                    // Writers on different connections can deadlock on the same rows: the losing statement rolls back
                    // and changes nothing, so it is simply skipped.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        apply(&mut conn, op)
                    }));
                }
            })
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writers also truncate, bulk-load and stage rebuilds; one refresher recounts a range of days now and then
    // (a recount that a rebuild's snapshot must not miss).
    let refreshers: Vec<_> = (0..2)
        .map(|r| {
            let (url, done) = (db.url.clone(), std::sync::Arc::clone(&done));
            std::thread::spawn(move || {
                // One refresher takes backlogs a slice of 3 rows at a time, between the other's runs.
                refresh::set_thread_slice_keys((r == 0).then_some(3));
                let mut conn = coworking_analytics::db::connect(&url).unwrap();
                let (mut ran, mut skipped, mut overtaken) = (0, 0, 0);
                for turn in 0.. {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mode = if r == 1 && turn % 5 == 4 {
                        Mode::Range {
                            from: day(0),
                            to: day(1),
                        }
                    } else {
                        Mode::Incremental
                    };
                    match refresh::run(&mut conn, mode, "concurrent") {
                        Ok(Outcome::Completed(_)) => ran += 1,
                        Ok(Outcome::Skipped) => skipped += 1,
                        Ok(Outcome::Unchanged) => {}
                        // A run that recounts marks `rollup_rebuild_state`, which every staged rebuild's commit also
                        // updates: here three writers stage rebuilds back to back, and a run can be overtaken on
                        // all of its attempts (seen once in CI). It rolled back whole, like any failed run; the next
                        // turn catches up, as the worker's next check does.
                        Err(RefreshError::Database {
                            source:
                                diesel::result::Error::DatabaseError(
                                    diesel::result::DatabaseErrorKind::SerializationFailure,
                                    _,
                                ),
                            ..
                        }) => overtaken += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (ran, skipped, overtaken)
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let ran: i32 = refreshers.into_iter().map(|r| r.join().unwrap().0).sum();
    assert!(ran > 1, "refreshes ran while writers wrote");
    refresh_and_check(&mut db.conn(), Mode::Incremental);
}

#[test]
fn a_large_seed_asks_for_one_full_rebuild_and_capture_resumes() {
    let db = migrated_db();
    let mut conn = db.conn();
    refresh_and_check(&mut conn, Mode::Incremental);
    let params = coworking_analytics::seed::SeedParams {
        tokens: 100_000,
        users: 300,
        ..coworking_analytics::seed::DEMO_PARAMS
    };
    coworking_analytics::seed::load(&mut conn, params).unwrap();
    let (Outcome::Completed(run), Some(rebuild::Rebuilt::Staged { staged, .. })) =
        refresh::settle(&mut conn, Mode::Incremental, "t", None).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (run.mode, staged.requests),
        (Mode::Incremental, vec!["bulk load".to_owned()]),
        "the bulk load asked for a rebuild, which the next run applied"
    );
    common::assert_rollups_match_definition(&mut conn);
    conn.batch_execute(
        "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES (1, 'x', now(), now())",
    )
    .unwrap();
    let Outcome::Completed(run) = refresh::run(&mut conn, Mode::Incremental, "t").unwrap() else {
        panic!()
    };
    assert_eq!(
        (run.mode, run.counts.users),
        (Mode::Incremental, 1),
        "the insert trigger is back on"
    );
    common::assert_rollups_match_definition(&mut conn);
}
