//! Metrics: CloudWatch through a real emulator (moto's server on loopback), the protocol pin, failure isolation
//! (closed port, a server that never answers), EMF lines, and the Prometheus endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
use common::{migrated_db, request, spawn_app, wait_for_run};
use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// moto's server for this test process: `MOTO_ENDPOINT` if set, else started from `MOTO_SERVER`,
/// `target/tools/moto/bin/moto_server` (where scripts/test installs it) or PATH.
fn moto() -> &'static str {
    /// The server process and the keeper that ties its life to ours.
    type Tied = (Child, std::sync::mpsc::Sender<()>);
    static MOTO: OnceLock<(String, Option<Tied>)> = OnceLock::new();
    &MOTO
        .get_or_init(|| {
            if let Ok(url) = std::env::var("MOTO_ENDPOINT") {
                return (url, None);
            }
            let candidates = [
                std::env::var("MOTO_SERVER").unwrap_or_default(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/moto/bin/moto_server").to_owned(),
                "moto_server".to_owned(),
            ];
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut cmd = None;
            for c in candidates.iter().filter(|c| !c.is_empty()) {
                if Command::new(c).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
                    let mut command = Command::new(c);
                    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
                    cmd = Some(command);
                    break;
                }
            }
            let cmd = cmd.expect("moto_server not found: run scripts/test (it installs moto[server]) or set MOTO_SERVER");
            let tied = coworking_analytics::pgtemp::spawn_tied(cmd).unwrap();
            let url = format!("http://127.0.0.1:{port}");
            for _ in 0..300 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (url, Some(tied));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("moto_server did not start on {url}");
        })
        .0
}

fn client(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

/// Runs `serve` as its own process (AWS settings are per process) on a free port.
fn serve(db_url: &str, endpoint: &str, extra: &[(&str, &str)]) -> (Served, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("APP_PORT", port.to_string())
        .env("METRICS_SINK", "cloudwatch")
        .env("METRICS_FLUSH_INTERVAL", "1s")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    (Served(cmd.spawn().unwrap()), port)
}

/// A GET on a fresh connection; empty when the server is not (yet) listening.
fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let mut out = String::new();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_ok()
    {
        let _ = s.read_to_string(&mut out);
    }
    out
}

/// A `serve` process that is stopped (SIGTERM) when the guard is dropped, also when a test fails.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// The value of an un-labelled or labelled sample in a Prometheus exposition.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn stop(served: Served) {
    drop(served);
}

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
    let stat = |name: &'static str| {
        let cw = cw.clone();
        let env_name = env_name.clone();
        async move {
            let now = std::time::SystemTime::now();
            let out = cw
                .get_metric_statistics()
                .namespace("CoworkingAnalytics")
                .metric_name(name)
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("Environment")
                        .value(env_name)
                        .build(),
                )
                .start_time((now - Duration::from_secs(600)).into())
                .end_time((now + Duration::from_secs(60)).into())
                .period(60)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
                .send()
                .await
                .unwrap();
            let points = out.datapoints().to_vec();
            (
                points.iter().filter_map(|p| p.sum()).sum::<f64>(),
                points
                    .iter()
                    .filter_map(|p| p.maximum())
                    .fold(0.0, f64::max),
            )
        }
    };
    assert_eq!(
        stat("RefreshFailures").await.0,
        0.0,
        "a successful refresh publishes 0 failures"
    );
    assert_eq!(
        stat("RefreshRowsRead").await.1,
        2.0,
        "the first (full) refresh read both tokens"
    );
    assert_eq!(stat("CheckinsLatestDay").await.1, 1.0);
    let metrics = get(port, "/metrics");
    assert_eq!(
        sample(&metrics, "coworking_metrics_dropped_total"),
        0.0,
        "{metrics}"
    );
    stop(child);
}

#[test]
fn an_unreachable_cloudwatch_drops_datums_but_delays_nothing() {
    // A closed port, and a server that accepts and never answers.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    for endpoint in [
        format!("http://127.0.0.1:{closed}"),
        format!("http://127.0.0.1:{silent_port}"),
    ] {
        let db = migrated_db();
        let (child, port) = serve(&db.url, &endpoint, &[("REFRESH_SCHEDULE", "* * * * * *")]);
        wait_until("readiness", || {
            get(port, "/readiness_check").starts_with("HTTP/1.1 200")
        });
        let refreshes = |m: &str| sample(m, "coworking_refreshes_total{outcome=\"success\"}");
        let before = refreshes(&get(port, "/metrics"));
        // Refreshes keep their one-second schedule and requests are answered while publishing fails or hangs.
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
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the silent server was really called"
    );
}

#[test]
fn emf_lines_follow_the_specification() {
    let db = migrated_db();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut served = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("APP_PORT", port.to_string())
        .env("METRICS_SINK", "emf")
        .env("METRICS_FLUSH_INTERVAL", "1s")
        .env("METRICS_ENVIRONMENT", "emf-test")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = served.stdout.take().unwrap();
    let child = Served(served);
    let lines = std::thread::spawn(move || {
        let mut emf = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&line).expect("every stdout line is one JSON object");
            if v.get("_aws").is_some() {
                emf.push(v);
            }
        }
        emf
    });
    wait_until("readiness", || {
        get(port, "/readiness_check").starts_with("HTTP/1.1 200")
    });
    std::thread::sleep(Duration::from_millis(2500));
    stop(child);
    let emf = lines.join().unwrap();
    assert!(emf.len() >= 6, "{emf:?}");
    for v in &emf {
        // https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].is_i64(), "Timestamp: epoch milliseconds");
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for d in directives {
            assert_eq!(d["Namespace"], "CoworkingAnalytics");
            for set in d["Dimensions"].as_array().unwrap() {
                for key in set.as_array().unwrap() {
                    assert!(
                        v[key.as_str().unwrap()].is_string(),
                        "dimension {key} is a top-level string"
                    );
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap();
                assert!(v[name].is_number(), "metric {name} is a top-level number");
                let unit = m["Unit"].as_str().unwrap();
                assert!(["Count", "Milliseconds", "Seconds"].contains(&unit));
            }
        }
        assert_eq!(v["Environment"], "emf-test");
    }
}

#[tokio::test]
async fn prometheus_exposes_refreshes_and_http_requests() {
    let db = migrated_db();
    let app = spawn_app(&db.url, &[]).await;
    wait_for_run(&app, 0).await;
    request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    request(app.addr, "GET", "/nope", &[]).await;
    let r = request(app.addr, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_eq!(
        sample(&text, "coworking_refreshes_total{outcome=\"success\"}"),
        1.0,
        "{text}"
    );
    assert!(
        text.contains(
            "coworking_http_requests_total{route=\"/api/reports/daily_usage\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("coworking_http_requests_total{route=\"other\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("coworking_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/api/reports/daily_usage\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("coworking_data_age_seconds"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dashboard_and_alarm_files_use_published_metrics_and_apply() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cloudwatch");
    let published: Vec<&str> = coworking_analytics::metrics::PUBLISHED
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let cw = client(moto());
    let body = std::fs::read_to_string(format!("{dir}/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&body).unwrap();
    for w in dashboard["widgets"].as_array().unwrap() {
        for m in w["properties"]["metrics"].as_array().unwrap() {
            let row = m.as_array().unwrap();
            if row[0] == "..." {
                continue; // "the same metric as the row above", with other options
            }
            let name = row[1].as_str().unwrap();
            assert!(
                name == "." || published.contains(&name),
                "dashboard names unknown metric {name}"
            );
            assert!(matches!(
                row[0].as_str().unwrap(),
                "CoworkingAnalytics" | "."
            ));
        }
    }
    cw.put_dashboard()
        .dashboard_name("coworking-analytics")
        .dashboard_body(body)
        .send()
        .await
        .unwrap();
    for file in ["alarm-stale-data.json", "alarm-refresh-failures.json"] {
        let a: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap())
                .unwrap();
        let name = a["MetricName"].as_str().unwrap();
        let unit = coworking_analytics::metrics::PUBLISHED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, u)| u.as_str());
        assert_eq!(
            unit,
            a["Unit"].as_str(),
            "{file}: a published metric, with its unit"
        );
        assert_eq!(a["Namespace"], "CoworkingAnalytics");
        let d = &a["Dimensions"][0];
        cw.put_metric_alarm()
            .alarm_name(a["AlarmName"].as_str().unwrap())
            .namespace("CoworkingAnalytics")
            .metric_name(name)
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name(d["Name"].as_str().unwrap())
                    .value(d["Value"].as_str().unwrap())
                    .build(),
            )
            .statistic(a["Statistic"].as_str().unwrap().into())
            .period(a["Period"].as_i64().unwrap() as i32)
            .evaluation_periods(a["EvaluationPeriods"].as_i64().unwrap() as i32)
            .threshold(a["Threshold"].as_f64().unwrap())
            .comparison_operator(a["ComparisonOperator"].as_str().unwrap().into())
            .treat_missing_data(a["TreatMissingData"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    }
    let stale: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/alarm-stale-data.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        stale["TreatMissingData"], "breaching",
        "a dead service must page, not look healthy"
    );
    let alarms = cw
        .describe_alarms()
        .alarm_name_prefix("coworking-analytics-")
        .send()
        .await
        .unwrap();
    assert_eq!(alarms.metric_alarms().len(), 2);
}
