//! Metrics formats: EMF lines as the specification requires, the Prometheus endpoint, and the CloudWatch
//! dashboard and alarm files (against moto).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{migrated_db, request, wait_for_run, TestApp};
use crate::metrics_support::*;
use std::io::BufRead;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    let app = TestApp::new(&db.url).start().await;
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
    // The default is the Prometheus text format 0.0.4, which promtool reads and lints cleanly.
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(text.contains("# HELP coworking_refreshes_total "), "{text}");
    assert!(
        text.contains("# TYPE coworking_refreshes_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    let (ok, lint) = promtool(&text);
    assert!(ok && lint.is_empty(), "promtool on 0.0.4: {lint}\n{text}");
    for accept in ["text/plain", "*/*", "text/plain;version=0.0.4"] {
        let r = request(app.addr, "GET", "/metrics", &[("Accept", accept)]).await;
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
            "{accept}"
        );
    }
    // OpenMetrics when asked for, as Prometheus asks.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let r = request(app.addr, "GET", "/metrics", &[("Accept", accept)]).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert_eq!(r.header("vary"), Some("Accept"));
    let open = r.text();
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    assert!(
        open.contains("# TYPE coworking_refreshes counter"),
        "{open}"
    );
    // promtool reads only 0.0.4: on OpenMetrics it parses every sample and reports exactly the known difference,
    // counters' HELP under the name without `_total`, and nothing else.
    let (_, lint) = promtool(&open);
    assert!(!lint.is_empty());
    for line in lint.lines() {
        assert!(
            line.contains("_total no help text"),
            "promtool on OpenMetrics: {line}"
        );
    }
    app.shutdown(Duration::from_secs(5)).await;
}

/// `promtool check metrics` on `text`: whether it passed, and what it reported.
fn promtool(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child =
        std::process::Command::new(std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into()))
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian: apt-get install prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report.trim().to_owned())
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
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.starts_with("alarm-") && f.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
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
            .set_statistic(a["Statistic"].as_str().map(Into::into))
            .set_extended_statistic(a["ExtendedStatistic"].as_str().map(Into::into))
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
    assert_eq!(alarms.metric_alarms().len(), files.len());
}
