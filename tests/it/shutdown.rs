//! Shutdown of the real binary by a real signal, with a slow response in flight and a refresh in progress: the
//! response completes, the refresh commits, the process exits 0 before SHUTDOWN_TIMEOUT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::{assert_rollups_match_definition, migrated_db};
use crate::metrics_support::Served;
use coworking_analytics::seed::{self, SeedParams};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "({sql})"
    )))
    .get_result(conn)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_slow_response_and_the_running_refresh_then_exits_0() {
    let db = migrated_db();
    let mut conn = db.conn();
    // A user-visits body of several MB, so a client that reads slowly keeps the response in flight.
    let params = SeedParams {
        users: 100_000,
        tokens: 100_000,
        ..seed::DEMO_PARAMS
    };
    seed::load(&mut conn, params).unwrap();
    let port = common::free_port();
    let mut served = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("APP_PORT", port.to_string())
        .env("REFRESH_SCHEDULE", "* * * * * *")
        .env("SHUTDOWN_TIMEOUT", "10s")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The log is read as it comes, so a full pipe never blocks the service; the guard stops the service if the
    // test fails half-way.
    let stdout = served.stdout.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        use std::io::Read;
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut log);
        log
    });
    let mut child = Served(served);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ready = Instant::now();
    loop {
        let r = tokio::net::TcpStream::connect(addr).await;
        if let Ok(mut s) = r {
            s.write_all(b"GET /readiness_check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut b = Vec::new();
            let _ = s.read_to_end(&mut b).await;
            if b.starts_with(b"HTTP/1.1 200") {
                break;
            }
        }
        assert!(ready.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A refresh that will be in progress when the signal comes: the rollup table locked, then new check-ins, so
    // the writer waits inside its transaction. (Locked first: the worker checks for changes every 100 ms, and
    // with the check-ins first it could commit before the lock was taken; CI saw that once.)
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE daily_usage_rollup IN EXCLUSIVE MODE")
        .unwrap();
    conn.batch_execute(
        "INSERT INTO tokens (user_id, token, created_at, used_at) \
         SELECT id, '000000', '2026-11-01 09:00', '2026-11-01 09:05' FROM users LIMIT 10",
    )
    .unwrap();
    let waiting = Instant::now();
    while count(
        &mut conn,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
    ) == 0
    {
        assert!(waiting.elapsed() < Duration::from_secs(10), "refresh never blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs_before = count(
        &mut conn,
        "SELECT count(*) FROM refresh_runs WHERE outcome = 'success'",
    );

    // The slow client: a small receive buffer, and it does not read yet.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(b"GET /api/reports/user_visits HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // New connections are refused soon after the signal.
    let refused = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            refused.elapsed() < Duration::from_secs(5),
            "still accepting 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the refresh go on, then read the response slowly to its end.
    holder.batch_execute("COMMIT").unwrap();
    let mut body = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = slow.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let raw = common::parse_response(&body);
    assert_eq!(raw.status, 200);
    let length: usize = raw.header("content-length").unwrap().parse().unwrap();
    assert_eq!(raw.body.len(), length, "the in-flight response was cut");
    assert!(
        length > 1_000_000,
        "body of {length} bytes is too small to be slow"
    );

    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(12),
            "no exit within SHUTDOWN_TIMEOUT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    let log = log.join().unwrap();
    assert!(
        log.contains("shutting down") || log.contains("shutdown"),
        "{log}"
    );
    let runs_after = count(
        &mut conn,
        "SELECT count(*) FROM refresh_runs WHERE outcome = 'success'",
    );
    assert!(
        runs_after > runs_before,
        "the refresh in progress committed"
    );
    assert_rollups_match_definition(&mut conn);
}
