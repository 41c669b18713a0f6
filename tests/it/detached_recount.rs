//! A recount from the base tables while a detached partition waits to be counted (migrations 17 and 18): a delta
//! that would make a count negative (after writes made with the triggers off) recounts it from `tokens`, which no
//! longer holds the kept table. The recount adds the waiting table's rows back, so that the change rows counted
//! from it later subtract them once: the rollups end equal to the old SQL. Without migration 18 a member with 5
//! visits was served 2, a day with 7 check-ins 1 and a quarter hour with 7 1, until the hourly self-check.

use crate::common::assert_rollups_match_definition;
use crate::detached::count;
use crate::partitions::{day, partitioned_db, refresh_and_check};
use coworking_analytics::refresh::{self, rebuild, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::PgConnection;

/// `n` tokens of `user` on day `d`, used, at `time`, through the parent; `behind`: with the triggers off.
fn tokens(conn: &mut PgConnection, user: u8, d: u8, n: u32, time: &str, behind: bool) {
    let insert = format!(
        "INSERT INTO tokens (user_id, token, created_at, used_at) \
         SELECT {user}, 'x', '{day} {time}', '{day} {time}' FROM generate_series(1, {n})",
        day = day(d)
    );
    let sql = if behind {
        format!("BEGIN; SET LOCAL session_replication_role = replica; {insert}; COMMIT")
    } else {
        insert
    };
    conn.batch_execute(&sql).unwrap();
}

/// One plain incremental run, as the worker's are (`run_in`): it does not count a waiting table itself (the
/// one-shot `refresh`, and `refresh::run`, count it first).
fn incremental_run(conn: &mut PgConnection) {
    let outcome = refresh::run_in(conn, Mode::Incremental, "t", None).unwrap();
    assert!(matches!(outcome, Outcome::Completed(_)), "{outcome:?}");
}

#[test]
fn a_recount_while_a_detached_table_waits_subtracts_its_rows_once() {
    let (_db, mut conn) = partitioned_db();
    refresh_and_check(&mut conn);
    // Member 2: 3 check-ins on day 1 (the partition that will leave) and 5 on day 0. Day 1 also has member 3's 3.
    tokens(&mut conn, 2, 1, 3, "10:00", false);
    tokens(&mut conn, 3, 1, 3, "10:05", false);
    tokens(&mut conn, 2, 0, 5, "09:00", false);
    refresh_and_check(&mut conn);
    // Writes the triggers did not see: 9 more for member 2 on day 2, unknown to the rollups.
    tokens(&mut conn, 2, 2, 9, "08:00", true);
    // Day 1 leaves and is kept: a marker waits, the rollups still hold its 6 check-ins.
    conn.batch_execute(
        "ALTER TABLE tokens DETACH PARTITION tokens_d1; ALTER TABLE tokens_d1 RENAME TO kept_d1; \
         CREATE TABLE tokens_d1 PARTITION OF tokens FOR VALUES FROM ('2023-02-07') TO ('2023-02-08')",
    )
    .unwrap();
    // The same for the new day 1: 15 check-ins behind the triggers.
    tokens(&mut conn, 4, 1, 15, "12:00", true);
    // Captured: the 9 and the 15 deleted, and 7 new ones on day 1 at 10:00, the quarter hour of kept_d1's 6.
    // Member 2 (8 - 9), day 1 (6 - 15 + 7) and its quarter hour 12:00 (0 - 15) would go negative: they are
    // recounted from `tokens`, while kept_d1 waits. Without adding kept_d1 back, member 2 ends at 5 - 3, day 1 at
    // 7 - 6 and 10:00 at 7 - 6 once kept_d1's change rows are applied: none negative, so nothing repairs them.
    conn.batch_execute(
        "DELETE FROM tokens WHERE created_at >= '2023-02-08' AND user_id = 2; \
         DELETE FROM tokens WHERE user_id = 4",
    )
    .unwrap();
    tokens(&mut conn, 1, 1, 7, "10:00", false);
    incremental_run(&mut conn);
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM rollup_detached"),
        1,
        "the run left the table waiting"
    );
    // Now the waiting table is counted (as the worker's background thread does) and its rows applied.
    let counted = rebuild::count_detached(&mut conn, None).unwrap();
    assert_eq!(counted, vec!["partition tokens_d1 detached".to_string()]);
    incremental_run(&mut conn);
    assert_rollups_match_definition(&mut conn);
}
