//! Scale benchmark (`scripts/bench-scale`, i.e. `cargo bench --bench scale -- [--tokens N] [--users M]
//! [--dir D] [--prepare-only]`): a chain's size, 100M check-ins and 1M members by default (#25 point 5).
//!
//! The data set is made once and kept in `D` (default `target/bench-scale/<tokens>-<users>`): the old schema's
//! `users`, a `tokens` partitioned by month under pg_partman (made before the first `migrate`, as a chain that
//! partitions has it), `migrate`, then the real `seed` command (730 days), `VACUUM ANALYZE` and the first
//! refresh; it prints the time of each and the disk used. Later runs start the same cluster again and skip all
//! of that (a run that stopped half-way is noticed, and the set is made again).
//!
//! Then, in the same run:
//! - a full rebuild: an operator's `refresh --full` (its own process) with nothing else running;
//! - an incremental refresh after 1,000 and after 10,000 changed tokens (medians of 3), and the self-check's
//!   hourly sample (median of 3);
//! - three `serve` replicas of this build with the default settings, each started alone: its cold start (process
//!   start -> first snapshot served), and at the end its peak RSS (VmHWM);
//! - write -> served on the slowest replica (p50/p99/max) at 20 and at 200 check-ins a second, then at 20 a second
//!   while pg_partman's maintenance runs with a retention that detaches the oldest month (its rows recorded by
//!   the event trigger and applied a slice per run), and while an operator's `refresh --full` runs;
//! - the detached month attached again (its rows come back), so that the next run finds the same data set.
//!
//! Not a test: it asserts nothing; it prints each figure beside its target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "live.rs"]
#[allow(dead_code, reason = "each benchmark uses part of what they share")]
mod live;

#[path = "changes.rs"]
mod changes;

use changes::make_changes;
use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;
use live::phase::{landed, write_phase, During, Phase};
use live::{bin, db_counter, rss_mib, start_replica, DAY};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Server settings for a data set of this size (the private server's defaults are a test's).
const SETTINGS: &[&str] = &[
    "shared_buffers=1GB",
    "max_wal_size=16GB",
    "checkpoint_timeout=30min",
    "maintenance_work_mem=512MB",
];

/// The seed's 730 days end on 2026-11-01: the first month of tokens is November 2024.
const FIRST_MONTH: &str = "2024-11-01";

/// The old schema (db/01_init_tables.sql) with `tokens` partitioned by month under pg_partman.
fn base_schema() -> String {
    format!(
        "CREATE TABLE users (id SERIAL CONSTRAINT users_pk PRIMARY KEY, first_name VARCHAR(50) NOT NULL, \
           last_name VARCHAR(50) NOT NULL, joined_at TIMESTAMP NOT NULL, is_active BOOLEAN NOT NULL DEFAULT true); \
         CREATE INDEX users_is_active_index ON users (is_active); \
         CREATE TABLE tokens (id SERIAL, user_id INTEGER NOT NULL CONSTRAINT tokens_users_id_fk REFERENCES users, \
           token VARCHAR(6) NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT now(), used_at TIMESTAMP, \
           PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at); \
         CREATE INDEX tokens_user_id_token_used_at_index ON tokens (user_id, token, used_at); \
         CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman; \
         SELECT partman.create_parent('public.tokens', 'created_at', 'native', 'monthly', \
           p_premake := 3, p_start_partition := '{FIRST_MONTH}')"
    )
}

fn run(cmd: &mut Command, what: &str) -> f64 {
    let t = Instant::now();
    let status = cmd.status().unwrap();
    assert!(status.success(), "{what} failed: {status}");
    t.elapsed().as_secs_f64()
}

fn cli(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("DATABASE_URL", url)
        .env("METRICS_SINK", "none")
        .env("LOG_LEVEL", "warning");
    cmd
}

fn du_gib(dir: &Path) -> f64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().unwrap();
    let bytes: f64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(f64::NAN);
    bytes / f64::from(1u32 << 30)
}

/// Whether the data set in this cluster was made to the end (the last step writes `bench_scale`).
fn made(url: &str) -> bool {
    let mut conn = db::connect(url).unwrap();
    db_counter(
        &mut conn,
        "(SELECT count(*) FROM pg_tables WHERE tablename = 'bench_scale')",
    ) == 1
}

/// Makes the data set: schema, `migrate`, `seed`, `VACUUM ANALYZE`, the first refresh.
fn prepare(url: &str, dir: &Path, tokens: u64, users: u32) {
    let mut conn = db::connect(url).unwrap();
    conn.batch_execute(&base_schema())
        .expect("pg_partman (apt-get install postgresql-15-partman)");
    db::migrate(&mut conn).unwrap();
    println!("seeding {tokens} tokens, {users} users with `seed` ...");
    let (t, u) = (tokens.to_string(), users.to_string());
    let seeded = run(
        &mut cli(
            url,
            &["seed", "--users", &u, "--tokens", &t, "--days", "730"],
        ),
        "seed",
    );
    let t0 = Instant::now();
    conn.batch_execute("VACUUM ANALYZE").unwrap();
    let vacuumed = t0.elapsed().as_secs_f64();
    let refreshed = run(&mut cli(url, &["refresh"]), "the first refresh");
    conn.batch_execute(&format!(
        "CREATE TABLE bench_scale AS SELECT {tokens}::int8 AS tokens, {users} AS users, \
           {seeded}::float8 AS seed_secs, {vacuumed}::float8 AS vacuum_secs, {refreshed}::float8 AS refresh_secs, \
           now() AS made_at"
    ))
    .unwrap();
    println!(
        "made the data set: seed {seeded:.0} s, VACUUM ANALYZE {vacuumed:.0} s, first refresh {refreshed:.0} s; \
         {:.1} GiB on disk",
        du_gib(dir)
    );
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Incremental refreshes after `n` changed tokens, and the self-check's sample: medians of 3, in ms.
fn refresh_costs(url: &str, users: u32, salt: usize) {
    use coworking_analytics::db::verify::token_day_bounds;
    use coworking_analytics::refresh::sample::sample_window;
    let mut conn = db::connect(url).unwrap();
    for (i, n) in [1_000usize, 10_000].into_iter().enumerate() {
        let runs = (0..3)
            .map(|r| {
                make_changes(&mut conn, n, users, DAY, salt + i * 10 + r);
                let t = Instant::now();
                let outcome = refresh::run(&mut conn, Mode::Incremental, "bench").unwrap();
                assert!(matches!(outcome, Outcome::Completed(_)), "skipped");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        println!(
            "incremental after {n:>6} changes: {:.0} ms (median of 3)",
            median(runs)
        );
    }
    let (lo, hi) = token_day_bounds(&mut conn).unwrap().expect("tokens");
    let runs = (0..3)
        .map(|step| {
            let t = Instant::now();
            refresh::run(
                &mut conn,
                Mode::Verify(sample_window(lo, hi, step)),
                "bench",
            )
            .unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    println!(
        "self-check, the hourly sample: {:.0} ms (median of 3)",
        median(runs)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

fn print_phase(what: &str, p: &Phase, max_target: Option<f64>) {
    println!(
        "| {what} | {:.0} | {:.0} ({} <= 500) | {:.0}{} |{}",
        p.p50,
        p.p99,
        verdict(p.p99 <= 500.0),
        p.max,
        max_target.map_or(String::new(), |m| format!(
            " ({} <= {m:.0})",
            verdict(p.max <= m)
        )),
        if p.missing > 0 {
            format!(" {} writes never seen", p.missing)
        } else {
            String::new()
        }
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).cloned()
    };
    let tokens: u64 = value("--tokens").map_or(100_000_000, |v| v.parse().expect("--tokens N"));
    let users: u32 = value("--users").map_or(1_000_000, |v| v.parse().expect("--users M"));
    let dir = value("--dir").map_or_else(
        || PathBuf::from(format!("target/bench-scale/{tokens}-{users}")),
        PathBuf::from,
    );
    println!(
        "# Scale: {tokens} tokens, {users} members, monthly partitions (pg_partman), in {}",
        dir.display()
    );
    let (mut pg, fresh) = TempPostgres::start_kept(&dir, SETTINGS).unwrap();
    if !fresh && !made(&pg.url("postgres")) {
        println!(
            "the data set in {} was not finished: making it again",
            dir.display()
        );
        pg.stop();
        std::fs::remove_dir_all(&dir).unwrap();
        pg = TempPostgres::start_kept(&dir, SETTINGS).unwrap().0;
    }
    let url = pg.url("postgres");
    if !made(&url) {
        prepare(&url, &dir, tokens, users);
    } else {
        println!("reusing the data set ({:.1} GiB on disk)", du_gib(&dir));
    }
    if args.iter().any(|a| a == "--prepare-only") {
        return;
    }
    let mut conn = db::connect(&url).unwrap();
    let salt = db_counter(&mut conn, "(SELECT count(*) FROM refresh_runs)") as usize;
    if value("--only").is_none() {
        let full = run(&mut cli(&url, &["refresh", "--full"]), "refresh --full");
        println!("full rebuild (`refresh --full`, alone): {full:.1} s");
        refresh_costs(&url, users, salt);
    }

    let mut replicas = Vec::new();
    for i in 1..=3 {
        let (r, took) = start_replica(&url).await;
        println!(
            "replica {i}: cold start (first snapshot served) {:.2} s ({} <= 5 s)",
            took.as_secs_f64(),
            verdict(took.as_secs_f64() <= 5.0)
        );
        replicas.push(r);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rows = Vec::new();
    for (what, rate, secs, during, max) in [
        ("20 check-ins/s", 20, 20, During::Nothing, None),
        ("200 check-ins/s", 200, 20, During::Nothing, None),
        (
            "20/s, pg_partman's maintenance",
            20,
            60,
            During::Partman,
            Some(1000.0),
        ),
        (
            "20/s, an operator's `refresh --full`",
            20,
            90,
            During::FullRefresh,
            Some(1000.0),
        ),
    ] {
        // `--only WORD`: only the phases whose name holds WORD (e.g. `--only partman`).
        if value("--only").is_some_and(|w| !what.contains(w.as_str())) {
            continue;
        }
        println!("### {what} for {secs} s");
        let phase = write_phase(&url, &replicas, rate, secs, users, during).await;
        if let Some(part) = &phase.detached {
            let t = Instant::now();
            changes::reattach(&mut conn, part);
            landed(&mut conn, "partition").await;
            println!(
                "  attached {} again; its rows landed after {:.1} s",
                part.0,
                t.elapsed().as_secs_f64()
            );
        }
        rows.push((what, phase, max));
    }
    println!("\n| phase | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
    for (what, phase, max) in &rows {
        print_phase(what, phase, *max);
    }
    for (i, r) in replicas.iter().enumerate() {
        let (rss, peak) = rss_mib(r.child.id());
        println!(
            "replica {}: RSS {rss:.0} MiB, peak {peak:.0} MiB ({} <= 160)",
            i + 1,
            verdict(peak <= 160.0)
        );
    }
    // The attached month's rows land before the replicas stop, so that the next run starts from no backlog.
    let t = Instant::now();
    while db_counter(
        &mut conn,
        "(SELECT count(*) FROM (SELECT 1 FROM rollup_changes LIMIT 1) x)",
    ) > 0
        && t.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(replicas);
    let n: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM tokens)",
    ))
    .get_result(&mut conn)
    .unwrap();
    println!("tokens now: {n}");
}
