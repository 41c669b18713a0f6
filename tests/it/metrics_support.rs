//! Shared by the metrics tests (tests/it/metrics.rs, tests/it/metrics_formats.rs): moto's CloudWatch server on loopback,
//! a CloudWatch client for it, and the service binary run against it.
#![allow(dead_code)]

use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// moto's server for this test process: `MOTO_ENDPOINT` if set, else started from `MOTO_SERVER`,
/// `target/tools/moto/bin/moto_server` (where scripts/test installs it) or PATH.
pub fn moto() -> &'static str {
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

pub fn client(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

/// Runs `serve` as its own process (AWS settings are per process) on a free port.
pub fn serve(db_url: &str, endpoint: &str, extra: &[(&str, &str)]) -> (Served, u16) {
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
pub fn get(port: u16, path: &str) -> String {
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
pub struct Served(pub Child);

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
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn stop(served: Served) {
    drop(served);
}

/// Sum and maximum of one metric of the environment `env` over the last ten minutes, read back with the API.
pub async fn stat(cw: &aws_sdk_cloudwatch::Client, env: &str, name: &str) -> (f64, f64) {
    let now = std::time::SystemTime::now();
    let out = cw
        .get_metric_statistics()
        .namespace("CoworkingAnalytics")
        .metric_name(name)
        .dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name("Environment")
                .value(env)
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
