//! The delta path end to end, over HTTP: a writer replica that patched its reports after every refresh, and a
//! reader replica started afterwards (which loads from scratch), serve the very same bytes and ETags, identity
//! and gzip; the bodies equal the old SQL's; the gzip bodies decode with flate2 and with Python's `gzip` and
//! `zlib` modules. A gap in the log (pruned rows) makes a replica reload instead of patching wrongly.

use crate::common::{self, migrated_db, request, wait_for_run, TestApp};
use coworking_analytics::config::Switch;
use coworking_analytics::report;
use coworking_analytics::seed::{self, SeedParams};
use diesel::connection::SimpleConnection;
use std::time::Duration;

const PARAMS: SeedParams = SeedParams {
    tokens: 20_000,
    users: 3_000,
    days: 400,
    ..seed::DEMO_PARAMS
};

/// Python's decoders agree with `want`: `gzip.decompress`, and a raw `zlib` stream with the gzip wrapper that
/// must end exactly at the end of the body.
fn python_decodes(gz: &[u8], want: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let (gz_path, want_path) = (dir.path().join("body.gz"), dir.path().join("body"));
    std::fs::write(&gz_path, gz).unwrap();
    std::fs::write(&want_path, want).unwrap();
    let script = "import gzip, sys, zlib\n\
        d = open(sys.argv[1], 'rb').read(); want = open(sys.argv[2], 'rb').read()\n\
        assert gzip.decompress(d) == want, 'gzip'\n\
        o = zlib.decompressobj(31); out = o.decompress(d) + o.flush()\n\
        assert out == want and o.eof and not o.unused_data, 'zlib'\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&gz_path)
        .arg(&want_path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes of every kind, spread over users (and so over chunks) and days.
fn write(conn: &mut diesel::PgConnection, i: u32) {
    let user = 1 + (i * 397) % PARAMS.users;
    let sql = match i % 5 {
        0 | 1 => format!(
            "INSERT INTO tokens (user_id, token, created_at, used_at) \
             VALUES ({user}, '000000', now() - interval '{i} days', now())"
        ),
        2 => format!("DELETE FROM tokens WHERE id = (SELECT min(id) FROM tokens WHERE user_id = {user})"),
        3 => format!("UPDATE users SET joined_at = joined_at + interval '1.5 seconds' WHERE id = {user}"),
        _ => format!(
            "UPDATE tokens SET user_id = {} WHERE id = (SELECT max(id) FROM tokens WHERE user_id = {user})",
            1 + (user * 7) % PARAMS.users
        ),
    };
    conn.batch_execute(&sql).unwrap();
}

#[tokio::test]
async fn a_replica_that_applied_every_delta_serves_the_bytes_of_one_that_loaded_from_scratch() {
    let db = migrated_db();
    seed::load(&mut db.conn(), PARAMS).unwrap();
    let writer = TestApp::new(&db.url).start().await;
    wait_for_run(&writer, 0).await;
    for i in 0..40 {
        write(&mut db.conn(), i);
        wait_for_run(&writer, writer.cache.run_id()).await;
    }
    let (patched, reloaded) = writer.cache.syncs();
    assert!(
        patched >= 35 && reloaded <= 2,
        "patched {patched}, reloaded {reloaded}"
    );

    let reader = TestApp::new(&db.url)
        .with(|c| c.worker = Switch::Off)
        .start()
        .await;
    wait_for_run(&reader, 0).await;
    assert_eq!(
        reader.cache.syncs(),
        (0, 1),
        "the new replica loads from scratch"
    );
    assert_eq!(reader.cache.run_id(), writer.cache.run_id());

    let mut conn = db.conn();
    let definitions = [
        (
            "/api/reports/daily_usage",
            report::render_daily_usage(
                &coworking_analytics::db::definitions::definition_daily_usage(&mut conn).unwrap(),
            ),
        ),
        (
            "/api/reports/user_visits",
            report::render_user_visits(
                &coworking_analytics::db::definitions::definition_user_visits(&mut conn).unwrap(),
            ),
        ),
    ];
    for (path, want) in definitions {
        let plain_w = request(writer.addr, "GET", path, &[]).await;
        let plain_r = request(reader.addr, "GET", path, &[]).await;
        assert_eq!(plain_w.body, want, "{path}");
        assert_eq!(plain_r.body, want, "{path}");
        assert_eq!(plain_w.header("etag"), plain_r.header("etag"));
        assert_eq!(
            plain_w.header("content-length"),
            Some(want.len().to_string().as_str())
        );
        let gz = [("Accept-Encoding", "gzip")];
        let gz_w = request(writer.addr, "GET", path, &gz).await;
        let gz_r = request(reader.addr, "GET", path, &gz).await;
        assert_eq!(gz_w.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(gz_w.body, gz_r.body, "{path}: the same gzip bytes");
        assert_eq!(gz_w.header("etag"), gz_r.header("etag"));
        assert_ne!(gz_w.header("etag"), plain_w.header("etag"));
        assert_eq!(common::gunzip(&gz_w.body), want, "{path}: flate2");
        python_decodes(&gz_w.body, &want);
    }
    reader.shutdown(Duration::from_secs(5)).await;
    writer.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn a_gap_in_the_delta_log_makes_a_replica_reload() {
    use coworking_analytics::cache::{CacheWriter, Synced};
    use coworking_analytics::refresh::{self, Mode};
    let db = migrated_db();
    let mut conn = db.conn();
    seed::load(&mut conn, PARAMS).unwrap();
    let mut replica = CacheWriter::new();
    let step = |conn: &mut diesel::PgConnection, i: u32| {
        write(conn, i);
        refresh::run(conn, Mode::Incremental, "t").unwrap();
    };
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    assert_eq!(replica.sync_from(&mut conn).unwrap(), Synced::Reloaded);
    step(&mut conn, 0);
    step(&mut conn, 1);
    assert_eq!(
        replica.sync_from(&mut conn).unwrap(),
        Synced::Patched,
        "two runs at once"
    );
    // Two more runs, the first of which loses its logged rows: the chain is broken, the replica reloads.
    step(&mut conn, 2);
    conn.batch_execute(
        "DELETE FROM rollup_deltas WHERE run_id = (SELECT max(run_id) FROM rollup_deltas)",
    )
    .unwrap();
    step(&mut conn, 3);
    assert_eq!(replica.sync_from(&mut conn).unwrap(), Synced::Reloaded);
    // A full rebuild logs nothing: reload too; then patching resumes.
    refresh::run(&mut conn, Mode::Full, "t").unwrap();
    assert_eq!(replica.sync_from(&mut conn).unwrap(), Synced::Reloaded);
    step(&mut conn, 4);
    assert_eq!(replica.sync_from(&mut conn).unwrap(), Synced::Patched);
    let want = report::render_user_visits(
        &coworking_analytics::db::definitions::definition_user_visits(&mut conn).unwrap(),
    );
    assert_eq!(
        replica
            .cache()
            .current()
            .unwrap()
            .data
            .user_visits
            .whole(false)
            .body
            .to_vec(),
        want
    );
}

/// The writer's own replica hears of its run three ways (the worker's wake-up, the NOTIFY, the poll), and at
/// start-up the follower is also woken once the schema is ready: the follower alone loads, one sync after the
/// other, so the reports are loaded once. Before, the worker and the follower both loaded at start-up: at 1M users
/// that was twice the memory, and the replica kept the difference (142 MiB instead of 84, scripts/bench-freshness).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_replica_loads_the_reports_once() {
    let db = migrated_db();
    seed::load(&mut db.conn(), PARAMS).unwrap();
    coworking_analytics::refresh::run(
        &mut db.conn(),
        coworking_analytics::refresh::Mode::Full,
        "t",
    )
    .unwrap();
    let app = TestApp::new(&db.url).start().await;
    let first = wait_for_run(&app, 0).await;
    // A write, its run: the worker wakes the follower, the NOTIFY arrives as well; one patch.
    write(&mut db.conn(), 0);
    wait_for_run(&app, first).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.cache.syncs(),
        (1, 1),
        "the reports were loaded or patched more than once"
    );
    app.shutdown(std::time::Duration::from_secs(5)).await;
}

/// Routine runs (successful incremental ones) are kept a day, the rest of the history 30 days; the newest
/// successful run always.
#[test]
fn routine_runs_are_kept_a_day_and_the_rest_thirty() {
    use coworking_analytics::refresh::{self, Mode};
    let db = migrated_db();
    let mut conn = db.conn();
    refresh::run(&mut conn, Mode::Full, "t").unwrap();
    conn.batch_execute(
        "INSERT INTO refresh_runs (started_at, finished_at, outcome, mode, host, error) VALUES \
           (now() - interval '2 days', now() - interval '2 days', 'success', 'incremental', 'routine-old', NULL), \
           (now() - interval '2 hours', now() - interval '2 hours', 'success', 'incremental', 'routine-new', NULL), \
           (now() - interval '2 days', now() - interval '2 days', 'success', 'full', 'full-old', NULL), \
           (now() - interval '2 days', now() - interval '2 days', 'failure', 'incremental', 'failure-old', 'x'), \
           (now() - interval '40 days', now() - interval '40 days', 'success', 'verify', 'verify-ancient', NULL)",
    )
    .unwrap();
    crate::common::add_one_checkin(&mut conn);
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    #[derive(diesel::QueryableByName)]
    struct Host {
        #[diesel(sql_type = diesel::sql_types::Text)]
        host: String,
    }
    let hosts: Vec<String> = diesel::RunQueryDsl::load::<Host>(
        diesel::sql_query("SELECT host FROM refresh_runs WHERE host <> 't' ORDER BY host"),
        &mut conn,
    )
    .unwrap()
    .into_iter()
    .map(|h| h.host)
    .collect();
    assert_eq!(hosts, ["failure-old", "full-old", "routine-new"]);
}
