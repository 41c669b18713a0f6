//! Refresh benchmark (`scripts/bench-refresh`, i.e. `cargo bench --bench refresh -- [TOKENS ...]`).
//!
//! For each size it starts a private PostgreSQL, seeds that many tokens with `seed` (100 tokens per user, over
//! two years), and prints, all measured in the same run so the ratios hold on a noisy machine:
//! - the two raw report queries run in psql (`\timing`), a full refresh under the lock (the first run's), and a
//!   rebuild beside the live path (`refresh --full`: the recount without the lock, then the run applying it), and
//!   their ratios;
//! - an incremental refresh after 1,000 and after 10,000 changed tokens (half inserts, half late check-ins,
//!   spread over the last 7 days), as a fraction of the full refresh;
//! - a bulk insert (100,000 rows in one statement) and 2,000 single-row autocommit inserts (the application's
//!   own write), with the change-capture trigger and with it disabled (foreign-key checks stay on in both), in
//!   alternating rounds, and the overhead; then the same on a second server whose commits are durable (fsync
//!   on), as in production.
//!
//! Each figure is the median of several runs. Not a test: it asserts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "changes.rs"]
#[allow(dead_code, reason = "each benchmark uses part of what they share")]
mod changes;

use changes::make_changes;
use coworking_analytics::config::with_dbname;
use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, rebuild, Mode, Outcome};
use coworking_analytics::seed::{self, SeedParams};
use diesel::connection::SimpleConnection;
use diesel::PgConnection;
use std::time::{Duration, Instant};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// Server-side time of one statement as psql's `\timing` reports it.
fn psql_time(url: &str, sql: &str) -> Duration {
    let out = std::process::Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-o",
            "/dev/null",
            "-c",
            "\\timing on",
            "-c",
            sql,
        ])
        .output()
        .expect("psql (Debian: postgresql-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Time: "))
        .unwrap_or_else(|| panic!("no timing: {text}"));
    let value: f64 = line[6..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Duration::from_secs_f64(value / 1000.0)
}

fn full_refresh(conn: &mut PgConnection) {
    assert!(matches!(
        refresh::run(conn, Mode::Full, "bench").unwrap(),
        Outcome::Completed(_)
    ));
}

fn incremental(conn: &mut PgConnection) -> (Duration, i64, i64) {
    let t = Instant::now();
    let Outcome::Completed(r) = refresh::run(conn, Mode::Incremental, "bench").unwrap() else {
        panic!("skipped")
    };
    (t.elapsed(), r.counts.days, r.counts.users)
}

/// Single-row inserts per timed run.
const SINGLE_ROW_INSERTS: usize = 2000;

/// One timed insert run, made the way the application writes: autocommit statements (one bulk statement, or
/// `SINGLE_ROW_INSERTS` single-row ones), each its own transaction and commit. Returns the time, then removes
/// the rows it added (untimed) so that every run starts from the same table.
fn insert_run(conn: &mut PgConnection, triggers: bool, bulk: bool) -> Duration {
    let pending: i64 = scalar(conn, "SELECT count(*) FROM rollup_changes");
    assert_eq!(pending, 0, "the insert benchmark needs no pending changes");
    let max_id: i64 = scalar(conn, "SELECT coalesce(max(id), 0)::bigint FROM tokens");
    if !triggers {
        // Only the change-capture trigger is disabled; the foreign-key check stays on in both runs.
        conn.batch_execute("ALTER TABLE tokens DISABLE TRIGGER rollup_capture_insert")
            .unwrap();
    }
    let t = Instant::now();
    if bulk {
        conn.batch_execute(
            "INSERT INTO tokens (user_id, token, created_at, used_at) SELECT 1 + g % 1000, '1', \
             '2026-10-01'::timestamp + g * interval '1 second', CASE WHEN g % 2 = 0 THEN now() END \
             FROM generate_series(1, 100000) g",
        )
        .unwrap();
    } else {
        for i in 0..SINGLE_ROW_INSERTS {
            conn.batch_execute(&format!(
                "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({}, '1', now(), now())",
                1 + i % 1000
            ))
            .unwrap();
        }
    }
    let elapsed = t.elapsed();
    // Put the table back: the added rows go without recording a change, and so do the change rows the run
    // recorded (there were none before it), then VACUUM so the next run finds no dead rows.
    conn.batch_execute(&format!(
        "ALTER TABLE tokens ENABLE TRIGGER rollup_capture_insert; \
         ALTER TABLE tokens DISABLE TRIGGER rollup_capture_delete; \
         DELETE FROM tokens WHERE id > {max_id}; \
         ALTER TABLE tokens ENABLE TRIGGER rollup_capture_delete; \
         DELETE FROM rollup_changes"
    ))
    .unwrap();
    // A statement of its own: VACUUM cannot run in the implicit transaction of a multi-statement string.
    conn.batch_execute("VACUUM tokens, rollup_changes").unwrap();
    elapsed
}

fn scalar(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    use diesel::RunQueryDsl;
    diesel::sql_query(format!("SELECT ({sql}) AS v"))
        .get_result::<Row>(conn)
        .unwrap()
        .v
}

/// `rounds` pairs of runs, without and with the trigger, back to back; the order alternates round by round.
/// Returns the median times and the median of the per-round ratios: a pair shares the machine's state of the
/// moment, so its ratio is steadier than a ratio of medians on a noisy machine.
fn insert_cost(conn: &mut PgConnection, bulk: bool, rounds: usize) -> (Duration, Duration, f64) {
    let (mut without, mut with, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let mut pair = [Duration::ZERO; 2];
        for triggers in [r % 2 == 0, r % 2 == 1] {
            pair[usize::from(triggers)] = insert_run(conn, triggers, bulk);
        }
        without.push(pair[0]);
        with.push(pair[1]);
        ratios.push(pair[1].as_secs_f64() / pair[0].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    (median(without), median(with), ratios[ratios.len() / 2])
}

fn bench(pg: &TempPostgres, tokens: u64, inserts: bool) {
    let name = format!("bench_{tokens}");
    db::connect(&pg.url("postgres"))
        .unwrap()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let url = with_dbname(&pg.url("postgres"), &name);
    let mut conn = db::connect(&url).unwrap();
    db::migrate(&mut conn).unwrap();
    let users = (tokens / 100).max(1) as u32;
    let params = SeedParams {
        users,
        tokens,
        days: 730,
        ..seed::DEMO_PARAMS
    };
    let t = Instant::now();
    seed::load(&mut conn, params).unwrap();
    println!(
        "\n## {tokens} tokens, {users} users, 730 days (seeded in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    conn.batch_execute("VACUUM ANALYZE").unwrap();
    full_refresh(&mut conn); // first run: also consumes the seed's captured changes
    conn.batch_execute("VACUUM ANALYZE").unwrap();

    let daily = "SELECT DATE(created_at), COUNT(*) FROM tokens WHERE used_at IS NOT NULL GROUP BY DATE(created_at)";
    let visits = "SELECT t.user_id, u.joined_at, COUNT(*) FROM tokens t LEFT JOIN users u ON u.id = t.user_id \
                  GROUP BY t.user_id, u.joined_at";
    let raw = median(
        (0..5)
            .map(|_| psql_time(&url, daily) + psql_time(&url, visits))
            .collect(),
    );
    let full = time(5, || full_refresh(&mut conn));
    println!("raw report queries in psql (both): {}", ms(raw));
    println!(
        "full refresh under the lock:       {}   ratio to raw queries: {:.2}x (the first run only)",
        ms(full),
        full.as_secs_f64() / raw.as_secs_f64()
    );
    // What `refresh --full`, a TRUNCATE or a dropped partition costs now: the rebuild beside the live path (no
    // writer lock), then the run that applies its difference (under the lock: what the live path waits for).
    let mut applying = Vec::new();
    let beside = time(5, || {
        let staged = rebuild::stage(&mut conn, rebuild::Why::Asked, "bench", None).unwrap();
        assert!(
            matches!(staged, rebuild::Rebuilt::Staged { .. }),
            "{staged:?}"
        );
        let t = Instant::now();
        refresh::run(&mut conn, Mode::Incremental, "bench").unwrap();
        applying.push(t.elapsed());
    });
    println!(
        "rebuild beside the live path:      {}   ratio to raw queries: {:.2}x (target <= 1.0x); the run applying it \
         (under the lock): {}",
        ms(beside),
        beside.as_secs_f64() / raw.as_secs_f64(),
        ms(median(applying))
    );

    let end = params.end.to_string();
    for (i, n) in [1_000usize, 10_000].into_iter().enumerate() {
        let mut runs = Vec::new();
        let mut sizes = (0, 0);
        for r in 0..3 {
            make_changes(&mut conn, n, users, &end, i * 10 + r);
            let (d, days, us) = incremental(&mut conn);
            runs.push(d);
            sizes = (days, us);
        }
        let inc = median(runs);
        println!(
            "incremental after {n:>6} changes:   {}   = {:.2}% of full (recomputed {} days, {} users)",
            ms(inc),
            100.0 * inc.as_secs_f64() / full.as_secs_f64(),
            sizes.0,
            sizes.1
        );
    }
    verify_cost(&mut conn, full);
    if inserts {
        insert_overhead(&url);
    }
}

/// The self-check: the worker's background sample (7 days and their users) and a whole `refresh --verify`,
/// each as a fraction of a full refresh.
fn verify_cost(conn: &mut PgConnection, full: Duration) {
    use coworking_analytics::db::verify::{token_day_bounds, Scope};
    use coworking_analytics::refresh::sample::sample_window;
    let (lo, hi) = token_day_bounds(conn).unwrap().expect("tokens");
    let mut step = 0;
    let sample = time(5, || {
        let scope = sample_window(lo, hi, step);
        step += 1;
        refresh::run(conn, Mode::Verify(scope), "bench").unwrap();
    });
    let all = time(3, || {
        refresh::run(conn, Mode::Verify(Scope::All), "bench").unwrap();
    });
    println!(
        "verify, background sample (7 days): {}   = {:.2}% of full; whole tables: {} = {:.2}x full",
        ms(sample),
        100.0 * sample.as_secs_f64() / full.as_secs_f64(),
        ms(all),
        all.as_secs_f64() / full.as_secs_f64()
    );
}

/// The change-capture trigger's cost on inserts. They come from a connection of their own, as the application's
/// writers do: the benchmark's main connection has run refreshes (temp tables, a temp schema, cached plans),
/// which is not what a writer's session looks like.
fn insert_overhead(url: &str) {
    let mut writer = db::connect(url).unwrap();
    for (label, bulk, statements, rounds) in [
        ("bulk insert of 100,000 rows (1 statement)", true, 1, 7),
        (
            "2,000 single-row autocommit inserts      ",
            false,
            SINGLE_ROW_INSERTS,
            15,
        ),
    ] {
        let (without, with, ratio) = insert_cost(&mut writer, bulk, rounds);
        println!(
            "{label}: {} with the trigger, {} without   overhead {:+.1}% (median of {rounds} paired rounds) \
             = {:.1} us per statement (target < 20%)",
            ms(with),
            ms(without),
            100.0 * (ratio - 1.0),
            (ratio - 1.0) * without.as_secs_f64() * 1e6 / statements as f64
        );
    }
}

/// The same insert figures on a server that makes commits durable (fsync on), as a production database does:
/// the benchmark's own server skips the disk, which makes every statement cheaper and the trigger's share larger.
fn durable_insert_overhead(tokens: u64) {
    let pg = TempPostgres::start_durable().expect("a private PostgreSQL");
    let url = pg.url("postgres");
    let mut conn = db::connect(&url).unwrap();
    db::migrate(&mut conn).unwrap();
    let params = SeedParams {
        users: (tokens / 100).max(1000) as u32,
        tokens,
        days: 730,
        ..seed::DEMO_PARAMS
    };
    seed::load(&mut conn, params).unwrap();
    full_refresh(&mut conn);
    conn.batch_execute("VACUUM ANALYZE").unwrap();
    println!("\n## durable commits (fsync on, synchronous_commit on), {tokens} tokens");
    insert_overhead(&url);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --no-inserts: only the refresh and verification figures (the trigger-cost rounds take minutes).
    let inserts = !args.iter().any(|a| a == "--no-inserts");
    let sizes: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 10_000_000]
    } else {
        sizes
    };
    let pg = TempPostgres::start().expect("a private PostgreSQL");
    println!("# refresh benchmark (private PostgreSQL, fsync off; figures are medians)");
    for &n in &sizes {
        bench(&pg, n, inserts);
    }
    drop(pg);
    if inserts {
        durable_insert_overhead(sizes[0].min(1_000_000));
    }
}
