//! Metrics to CloudWatch through a real emulator (moto's server on loopback): the protocol pin, what a refresh
//! publishes, and failure isolation (a closed port, a server that never answers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::migrated_db;
use crate::metrics_support::*;
use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

#[tokio::test]
async fn the_sdk_still_speaks_the_query_protocol() {
    // A bare HTTP server records what the SDK sends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
        (
            head.to_ascii_lowercase(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    });
    let _ = client(&format!("http://{addr}"))
        .put_metric_data()
        .namespace("Probe")
        .send()
        .await;
    let (head, body) = server.join().unwrap();
    assert!(
        head.contains("content-type: application/x-www-form-urlencoded") && body.contains("Action=PutMetricData"),
        "aws-sdk-cloudwatch no longer speaks the awsQuery protocol (headers: {head}): moto cannot answer the new \
         protocol (getmoto/moto#9195); keep aws-sdk-cloudwatch pinned to =1.99.0 in Cargo.toml"
    );
}

#[tokio::test]
async fn a_refresh_publishes_its_metrics_to_cloudwatch() {
    let db = migrated_db();
    {
        let mut conn = db.conn();
        common::add_one_checkin(&mut conn);
        common::add_token(&mut conn, 1, "2023-02-02 10:00:00", None);
    }
    let env_name = format!("test-{}", db.name);
    let (child, port) = serve(&db.url, moto(), &[("METRICS_ENVIRONMENT", &env_name)]);
    let cw = client(moto());
    let dim = aws_sdk_cloudwatch::types::DimensionFilter::builder()
        .name("Environment")
        .value(&env_name)
        .build();
    let mut names = Vec::new();
    for _ in 0..100 {
        let listed = cw
            .list_metrics()
            .namespace("CoworkingAnalytics")
            .dimensions(dim.clone())
            .send()
            .await
            .unwrap();
        names = listed
            .metrics()
            .iter()
            .filter_map(|m| m.metric_name().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        if names.len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for expected in [
        "RefreshDuration",
        "RefreshRowsRead",
        "RefreshDaysRecomputed",
        "RefreshUsersRecomputed",
        "RefreshFailures",
        "RefreshLockSkipped",
        "DataAgeSeconds",
        "CheckinsLatestDay",
        "ActiveUsers7d",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        stat(&cw, &env_name, "RefreshFailures").await.0,
        0.0,
        "a successful refresh publishes 0 failures"
    );
    assert_eq!(
        stat(&cw, &env_name, "RefreshRowsRead").await.1,
        2.0,
        "the first (full) refresh read both tokens"
    );
    assert_eq!(stat(&cw, &env_name, "CheckinsLatestDay").await.1, 1.0);
    let metrics = get(port, "/metrics");
    assert_eq!(
        sample(&metrics, "coworking_metrics_dropped_total"),
        0.0,
        "{metrics}"
    );
    stop(child);
}

/// With CloudWatch at `endpoint` failing or hanging, refreshes keep their one-second schedule, requests are
/// answered, and the datums that could not be delivered are counted as dropped.
fn publishing_failures_delay_nothing(endpoint: &str) {
    let db = migrated_db();
    let (child, port) = serve(&db.url, endpoint, &[("REFRESH_SCHEDULE", "* * * * * *")]);
    wait_until("readiness", || {
        get(port, "/readiness_check").starts_with("HTTP/1.1 200")
    });
    let refreshes = |m: &str| sample(m, "coworking_refreshes_total{outcome=\"success\"}");
    let before = refreshes(&get(port, "/metrics"));
    wait_until("three more refreshes", || {
        refreshes(&get(port, "/metrics")) >= before + 3.0
    });
    for _ in 0..20 {
        assert!(get(port, "/api/reports/daily_usage").starts_with("HTTP/1.1 200"));
    }
    wait_until("datums counted as dropped", || {
        sample(&get(port, "/metrics"), "coworking_metrics_dropped_total") > 0.0
    });
    stop(child);
}

#[test]
fn a_closed_cloudwatch_port_drops_datums_but_delays_nothing() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    publishing_failures_delay_nothing(&format!("http://127.0.0.1:{closed}"));
}

#[test]
fn a_cloudwatch_that_never_answers_drops_datums_but_delays_nothing() {
    // A server that accepts and never answers: every call runs into its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s); // never read, never answer
        }
    });
    publishing_failures_delay_nothing(&format!("http://127.0.0.1:{silent_port}"));
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the silent server was really called"
    );
}

#[tokio::test]
async fn the_refresh_command_publishes_its_run_and_exits_on_time_without_cloudwatch() {
    let db = migrated_db();
    {
        let mut conn = db.conn();
        common::add_one_checkin(&mut conn);
        common::add_token(&mut conn, 1, "2023-02-02 10:00:00", None);
    }
    let env_name = format!("cron-{}", db.name);
    let refresh = |endpoint: &str| {
        std::process::Command::new(BIN)
            .arg("refresh")
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("METRICS_SINK", "cloudwatch")
            .env("METRICS_ENVIRONMENT", &env_name)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    };
    // A CronJob run: the same per-refresh metrics as the worker's, delivered before the process exits.
    let out = refresh(moto());
    assert!(out.status.success(), "{out:?}");
    let cw = client(moto());
    assert_eq!(stat(&cw, &env_name, "RefreshFailures").await.0, 0.0);
    assert_eq!(stat(&cw, &env_name, "RefreshLockSkipped").await.0, 0.0);
    assert_eq!(
        stat(&cw, &env_name, "RefreshRowsRead").await.1,
        2.0,
        "the first (full) refresh read both tokens"
    );
    assert_eq!(stat(&cw, &env_name, "RefreshDaysRecomputed").await.1, 1.0);
    assert_eq!(stat(&cw, &env_name, "RefreshUsersRecomputed").await.1, 1.0);
    assert!(stat(&cw, &env_name, "RefreshDuration").await.1 > 0.0);
    assert_eq!(stat(&cw, &env_name, "CheckinsLatestDay").await.1, 1.0);

    // CloudWatch unreachable: the refresh still succeeds, exits 0, and says what it could not deliver.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    common::add_token(&mut db.conn(), 1, "2023-02-03 10:00:00", None);
    let out = refresh(&format!("http://127.0.0.1:{closed}"));
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("\"refresh succeeded\""), "{log}");
    assert!(log.contains("metrics not delivered before exit"), "{log}");

    // CloudWatch accepts the connection and never answers: the delivery wait is cut at the command's budget
    // (10 s for the whole run, measured by the command itself from its start and reported in the log line).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().flatten().collect();
        drop(held);
    });
    let out = refresh(&format!("http://127.0.0.1:{silent_port}"));
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "metrics not delivered before exit")
        .unwrap_or_else(|| panic!("{log}"));
    let waited = line["waited_ms"].as_u64().unwrap();
    assert!(
        waited < 10_000,
        "the whole run stays in its 10 s budget: {line}"
    );
}
