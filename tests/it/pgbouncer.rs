//! PgBouncer 1.18 (Debian's) in front of a private server: in transaction pooling mode, `migrate`, three `serve`
//! replicas and the CronJob's `refresh` run at the same time through it while tokens are written; every replica
//! then serves the old SQL's bytes, and no refresh failed. Session pooling mode keeps working.

use crate::common::{add_token, add_user, TestApp};
use coworking_analytics::config::Config;
use coworking_analytics::db::{self, PoolMode};
use coworking_analytics::pgtemp::{spawn_tied, TempPostgres};
use coworking_analytics::report;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// A PgBouncer on a free loopback port, pooling every database of `pg`; stops when dropped.
struct Bouncer {
    port: u16,
    child: Child,
    _tied: std::sync::mpsc::Sender<()>,
}

impl Bouncer {
    fn start(pg: &TempPostgres, pool_mode: &str) -> Bouncer {
        let port = crate::common::free_port();
        let dir = pg.dir();
        let ini = dir.join(format!("pgbouncer-{port}.ini"));
        let users = dir.join("pgbouncer-users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={dir} port=5432\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
                 pool_mode = {pool_mode}\nmax_client_conn = 500\ndefault_pool_size = 6\n\
                 logfile = {dir}/pgbouncer-{port}.log\n",
                dir = dir.display(),
                users = users.display()
            ),
        )
        .unwrap();
        let mut cmd = pg.command_as_server_user("pgbouncer");
        cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null());
        let (child, tied) = spawn_tied(cmd).expect("pgbouncer (Debian: apt-get install pgbouncer)");
        let bouncer = Bouncer {
            port,
            child,
            _tied: tied,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while db::connect(&bouncer.url("postgres")).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not accept connections"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bouncer
    }

    fn url(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(args: &[&str], url: &str, mode: &str) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("DATABASE_URL", url)
        .env("DB_POOL_MODE", mode)
        .output()
        .unwrap()
}

/// A small deterministic generator (no dependency on test order).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Writes and refreshes through `bouncer` with `replicas` replicas in `mode`; checks the outcome.
async fn run_through(pool_mode: &str, mode: PoolMode, replicas: usize) {
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
        .unwrap();
    db::connect(&pg.url("postgres"))
        .unwrap()
        .batch_execute("CREATE DATABASE bounced")
        .unwrap();
    let bouncer = Bouncer::start(&pg, pool_mode);
    let url = bouncer.url("bounced");
    let mode_arg = match mode {
        PoolMode::Session => "session",
        PoolMode::Transaction => "transaction",
    };
    let out = command(&["migrate"], &url, mode_arg);
    assert!(out.status.success(), "migrate through pgbouncer: {out:?}");
    let mut direct = db::connect(&pg.url("bounced")).unwrap();
    for id in 1..=20 {
        add_user(&mut direct, id, "2023-01-01 00:00:00");
    }
    let mut apps = Vec::new();
    for _ in 0..replicas {
        let change = move |c: &mut Config| {
            c.db_pool_mode = mode;
            c.db_pool_size = 2;
            c.refresh_schedule = "* * * * * *".parse().unwrap();
            c.follow_poll_interval = Duration::from_secs(1);
        };
        apps.push(TestApp::new(&url).with(change).start().await);
    }
    // Writes while the replicas refresh every second, and the CronJob's command runs beside them.
    let mut rng = Lcg(7);
    let mut commands = Vec::new();
    for round in 0..30 {
        let user = 1 + rng.next(20) as i32;
        let day = 1 + rng.next(27);
        let used = (rng.next(3) > 0).then(|| format!("2023-02-{day:02} 12:00:00"));
        add_token(
            &mut direct,
            user,
            &format!("2023-02-{day:02} 10:00:00"),
            used.as_deref(),
        );
        if round % 7 == 3 {
            direct
                .batch_execute("DELETE FROM tokens WHERE id = (SELECT min(id) FROM tokens)")
                .unwrap();
        }
        if round % 10 == 0 {
            let url = url.clone();
            commands.push(std::thread::spawn(move || {
                command(&["refresh"], &url, mode_arg)
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in commands {
        let out = c.join().unwrap();
        assert!(out.status.success(), "refresh through pgbouncer: {out:?}");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(!log.contains("refresh failed"), "{log}");
    }
    let out = command(&["refresh"], &url, mode_arg);
    assert!(out.status.success(), "{out:?}");
    // Every replica serves the old SQL's bytes of the final data.
    let want_days = report::render_daily_usage(
        &coworking_analytics::db::definitions::definition_daily_usage(&mut direct).unwrap(),
    );
    let want_users = report::render_user_visits(
        &coworking_analytics::db::definitions::definition_user_visits(&mut direct).unwrap(),
    );
    for app in &apps {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let days =
                crate::common::request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
            let users =
                crate::common::request(app.addr, "GET", "/api/reports/user_visits", &[]).await;
            if days.body == want_days && users.body == want_users {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica does not serve the final data: {}",
                days.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            app.metrics.refreshes("failure"),
            0,
            "a replica's refresh failed"
        );
        assert!(app.metrics.refreshes("success") + app.metrics.refreshes("skipped") > 0);
    }
    let failed: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM refresh_runs WHERE outcome = 'failure')",
    ))
    .get_result(&mut direct)
    .unwrap();
    assert_eq!(failed, 0, "failed refreshes in the history");
    for app in apps {
        app.shutdown(Duration::from_secs(5)).await;
    }
    drop(direct);
    drop(bouncer);
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_and_the_cronjob_through_pgbouncer_in_transaction_mode() {
    run_through("transaction", PoolMode::Transaction, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_and_the_cronjob_through_pgbouncer_in_session_mode() {
    run_through("session", PoolMode::Session, 1).await;
}
