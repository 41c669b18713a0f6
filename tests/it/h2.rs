//! HTTP/2 as other implementations speak it (#24): nghttp2's `nghttp` (Debian `nghttp2-client`) over h2c with prior
//! knowledge asks every route, a 404 and a 405 with GET and HEAD. No answer may be a protocol error, and a HEAD
//! answer has the GET answer's header fields (`content-length` included) and no DATA frame (RFC 9113 8.1.1: content
//! in a HEAD response is malformed; `nghttp` resets the stream for it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{add_one_checkin, migrated_db, wait_for_run, TestApp};
use std::time::Duration;

/// `nghttp -nv` of one request (the data discarded): whether it went without a protocol error, and the first
/// 4,000 characters of what it printed.
fn nghttp(port: u16, method: &str, path: &str, headers: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new("nghttp");
    cmd.args(["-n", "-v", "-t", "10", "-H", &format!(":method: {method}")]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("nghttp runs (Debian `nghttp2-client`; scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A protocol error, a reset stream or a request nghttp gave up on (GOAWAY's NO_ERROR is fine).
    let broken = [
        "PROTOCOL_ERROR",
        "RST_STREAM",
        "[ERROR]",
        "not processed",
        "INTERNAL_ERROR",
    ]
    .iter()
    .any(|e| text.contains(e));
    (
        out.status.success() && !broken,
        text.chars().take(4000).collect(),
    )
}

/// The response header fields nghttp printed (`recv (stream_id=N) name: value`), without `date`.
fn fields(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once("recv (stream_id=")?.1.split_once(") "))
        .map(|(_, f)| f.to_owned())
        .filter(|f| !f.starts_with("date:"))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_finds_no_protocol_error_and_head_has_no_content_on_any_route() {
    let db = migrated_db();
    add_one_checkin(&mut db.conn());
    let app = TestApp::new(&db.url).start().await;
    wait_for_run(&app, 0).await;
    let port = app.addr.port();
    let paths = [
        "/",
        "/api/reports/daily_usage",
        "/api/reports/daily_usage?granularity=week&tz=America/New_York",
        "/api/reports/user_visits",
        "/api/reports/user_visits?limit=1",
        "/api/reports/occupancy",
        "/health_check",
        "/readiness_check",
        "/metrics",
        "/openapi.json",
        "/nope",
        "/api/reports/daily_usage?from=nonsense",
    ];
    tokio::task::spawn_blocking(move || {
        for path in paths {
            for encoding in [None, Some("accept-encoding: gzip")] {
                let extra: Vec<&str> = encoding.into_iter().collect();
                let (ok, get) = nghttp(port, "GET", path, &extra);
                assert!(ok, "GET {path}: {get}");
                let (ok, head) = nghttp(port, "HEAD", path, &extra);
                assert!(ok, "HEAD {path}: {head}");
                assert!(
                    !head.contains("recv DATA frame"),
                    "HEAD {path} sent content: {head}"
                );
                // The same fields, but for what changes by the moment (the metrics' values, the page's age).
                if !matches!(path, "/" | "/metrics") {
                    assert_eq!(fields(&head), fields(&get), "HEAD {path}");
                }
                assert!(
                    path == "/nope"
                        || fields(&head)
                            .iter()
                            .any(|f| f.starts_with("content-length:")),
                    "HEAD {path}: {head}"
                );
            }
            let (ok, delete) = nghttp(port, "DELETE", path, &[]);
            assert!(ok, "DELETE {path}: {delete}");
            let (_, head) = nghttp(port, "HEAD", path, &[]);
            assert!(!head.contains("recv DATA frame"), "HEAD {path}: {head}");
        }
    })
    .await
    .unwrap();
    app.shutdown(Duration::from_secs(5)).await;
}
