//! Access control over real sockets (#23): API keys and their scopes on every endpoint over HTTP/1.1 and h2c,
//! the keys file rotated while requests run, the 401/403 answers, the audit trail, open access by default.
//! CORS: `cors.rs`; tokens: `tokens.rs`; TLS: `https.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::access_support::{call, Captured};
use crate::common::{add_token, add_user, migrated_db, wait_for_run, TestApp, TestDb};
use coworking_analytics::http::routes::Route;
use std::path::Path;
use std::time::{Duration, Instant};

/// A key made by the binary's own `keys new`: (key, line for the file).
pub fn new_key(name: &str, scopes: &str) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coworking-analytics"))
        .args(["keys", "new", "--name", name, "--scopes", scopes])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find(|l| l.starts_with("cwa_"))
        .unwrap()
        .to_owned();
    let line = text
        .lines()
        .find(|l| l.contains("sha256:"))
        .unwrap()
        .to_owned();
    assert!(!line.contains(&key[4..]), "the file line holds the key");
    (key, line)
}

/// Replaces a file the way Kubernetes updates a mounted Secret: a new file renamed over the old one.
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub(crate) fn data(db: &TestDb) {
    let mut conn = db.conn();
    add_user(&mut conn, 2, "2023-01-02 00:00:00");
    add_user(&mut conn, 3, "2023-01-03 00:00:00");
    add_token(
        &mut conn,
        2,
        "2023-02-03 10:00:00",
        Some("2023-02-03 10:01:00"),
    );
    add_token(
        &mut conn,
        3,
        "2023-02-04 10:00:00",
        Some("2023-02-04 10:01:00"),
    );
}

fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{key}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_credential_by_its_scope_over_http1_and_h2c() {
    let db = migrated_db();
    data(&db);
    let dir = tempfile::tempdir().unwrap();
    let (rep, rep_line) = new_key("reporting", "reports");
    let (mem, mem_line) = new_key("members-app", "members");
    let (met, met_line) = new_key("prometheus", "metrics");
    let keys = dir.path().join("keys");
    std::fs::write(
        &keys,
        format!("# test keys\n{rep_line}\n{mem_line}\n{met_line}\n"),
    )
    .unwrap();
    let log = Captured::default();
    let (logger, guard) = log.logger();
    let service = TestApp::new(&db.url)
        .with(|c| c.access.api_keys_file = Some(keys.clone()))
        .start_logged(logger)
        .await;
    wait_for_run(&service, 0).await;
    let unknown = format!("cwa_{}", "0".repeat(64));
    let mut member_reads = 0;
    for h2 in [false, true] {
        for route in Route::ALL {
            let path = route.path();
            let public = matches!(route, Route::Health | Route::Readiness | Route::OpenApi);
            let none = call(service.addr, h2, "GET", path, &[]).await;
            let wrong = call(
                service.addr,
                h2,
                "GET",
                path,
                &[("authorization", &format!("Bearer {unknown}"))],
            )
            .await;
            let malformed = call(
                service.addr,
                h2,
                "GET",
                path,
                &[("authorization", "Bearer")],
            )
            .await;
            if public {
                assert_eq!(
                    (none.status, wrong.status, malformed.status),
                    (200, 200, 200),
                    "{path}"
                );
                continue;
            }
            for refused in [&none, &wrong, &malformed] {
                assert_eq!(refused.status, 401, "{path} h2={h2}");
                assert_eq!(refused.json()["error"], "unauthorized");
                let challenges = refused.all("www-authenticate");
                assert!(
                    challenges
                        .iter()
                        .any(|c| c.starts_with("Bearer realm=\"coworking-analytics\"")),
                    "{challenges:?}"
                );
                assert!(
                    challenges
                        .iter()
                        .any(|c| c.starts_with("Basic realm=\"coworking-analytics\"")),
                    "{challenges:?}"
                );
            }
            assert!(
                !none.all("www-authenticate")[0].contains("error="),
                "no error code without a credential"
            );
            let needed = match route {
                Route::UserVisits => "members",
                Route::Metrics => "metrics",
                _ => "reports",
            };
            for (key, scope) in [(&rep, "reports"), (&mem, "members"), (&met, "metrics")] {
                for header in [format!("Bearer {key}"), basic(key)] {
                    let a =
                        call(service.addr, h2, "GET", path, &[("authorization", &header)]).await;
                    if scope == needed {
                        assert_eq!(a.status, 200, "{path} with {scope}");
                        member_reads += usize::from(route == Route::UserVisits);
                    } else {
                        assert_eq!(a.status, 403, "{path} with {scope}");
                        let message = a.json()["message"].as_str().unwrap().to_owned();
                        assert!(message.contains(needed), "{message}");
                    }
                }
            }
        }
    }
    // A CSV page of member data, and a member's entry, are member data too.
    let a = call(
        service.addr,
        false,
        "GET",
        "/api/reports/user_visits?format=csv&limit=1",
        &[("authorization", &format!("Bearer {rep}"))],
    )
    .await;
    assert_eq!(a.status, 403);
    let a = call(
        service.addr,
        true,
        "GET",
        "/api/reports/user_visits?user_id=2",
        &[("authorization", &format!("Bearer {mem}"))],
    )
    .await;
    assert_eq!(a.status, 200);
    member_reads += 1;
    assert!(service.shutdown(Duration::from_secs(5)).await);
    drop(guard);
    let text = log.text();
    for key in [&rep, &mem, &met, &unknown] {
        assert!(!text.contains(key.as_str()), "a key reached the log");
    }
    let audit: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["audit"] == true)
        .collect();
    assert_eq!(
        audit.len(),
        member_reads,
        "one audit line per answered member-data request"
    );
    assert!(audit
        .iter()
        .all(|v| v["who"] == "members-app" && v["status"] == 200));
    assert!(audit.iter().any(|v| v["filter"] == "user_id=2"));
    assert!(!text.contains("access is open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_keys_file_takes_effect_within_5_s_and_a_malformed_one_keeps_the_last_good() {
    let db = migrated_db();
    data(&db);
    let dir = tempfile::tempdir().unwrap();
    let (old, old_line) = new_key("old", "reports");
    let (new, new_line) = new_key("new", "reports");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{old_line}\n")).unwrap();
    let log = Captured::default();
    let (logger, guard) = log.logger();
    let service = TestApp::new(&db.url)
        .with(|c| c.access.api_keys_file = Some(keys.clone()))
        .start_logged(logger)
        .await;
    wait_for_run(&service, 0).await;
    let status = |key: String| {
        let addr = service.addr;
        async move {
            call(
                addr,
                false,
                "GET",
                "/api/reports/daily_usage",
                &[("authorization", &format!("Bearer {key}"))],
            )
            .await
            .status
        }
    };
    assert_eq!(status(old.clone()).await, 200);
    assert_eq!(status(new.clone()).await, 401);
    // Rotation while requests run: the new key in, the old one out, in one rewrite.
    replace(&keys, &format!("# rotated\n{new_line}\n"));
    let rotated = Instant::now();
    let (mut new_in, mut old_out) = (None, None);
    while new_in.is_none() || old_out.is_none() {
        if new_in.is_none() && status(new.clone()).await == 200 {
            new_in = Some(rotated.elapsed());
        }
        if old_out.is_none() && status(old.clone()).await == 401 {
            old_out = Some(rotated.elapsed());
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(5),
            "not in effect within 5 s: new {new_in:?}, old out {old_out:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A malformed version: ERROR naming the line, and the last good file stays.
    replace(&keys, &format!("{new_line}\nbroken line here\n"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(new.clone()).await, 200);
    assert_eq!(status(old.clone()).await, 401);
    assert!(service.shutdown(Duration::from_secs(5)).await);
    drop(guard);
    let text = log.text();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("API keys file refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    assert!(
        refused[0].contains("\"level\":\"ERROR\"") && refused[0].contains("\"line\":2"),
        "{}",
        refused[0]
    );
    assert!(!text.contains(&old) && !text.contains(&new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_default_with_one_warning_and_an_audit_line_per_member_read() {
    let db = migrated_db();
    data(&db);
    let log = Captured::default();
    let (logger, guard) = log.logger();
    let service = TestApp::new(&db.url).start_logged(logger).await;
    wait_for_run(&service, 0).await;
    for route in Route::ALL {
        let a = call(service.addr, false, "GET", route.path(), &[]).await;
        assert_eq!(a.status, 200, "{}", route.path());
        assert!(a.headers.get("access-control-allow-origin").is_none());
    }
    let a = call(
        service.addr,
        false,
        "OPTIONS",
        "/api/reports/daily_usage",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(a.status, 405, "no CORS unless configured");
    assert!(service.shutdown(Duration::from_secs(5)).await);
    drop(guard);
    let text = log.text();
    assert_eq!(text.matches("access is open").count(), 1, "{text}");
    assert!(text
        .lines()
        .any(|l| l.contains("access is open") && l.contains("\"level\":\"WARN")));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"audit\":true"))
            .count(),
        1
    );
}

#[test]
fn the_openapi_document_declares_the_schemes_and_the_refusals_of_every_guarded_route() {
    let doc: serde_json::Value =
        serde_json::from_str(coworking_analytics::http::routes::OPENAPI).unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        (
            schemes["bearer"]["scheme"].as_str(),
            schemes["basic"]["scheme"].as_str()
        ),
        (Some("bearer"), Some("basic"))
    );
    for route in Route::ALL {
        let op = &doc["paths"][route.path()]["get"];
        match route.scope() {
            Some(scope) => {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"bearer": []}, {"basic": []}]),
                    "{}",
                    route.path()
                );
                assert!(
                    op["responses"]["401"].is_object() && op["responses"]["403"].is_object(),
                    "{}",
                    route.path()
                );
                assert!(
                    op["description"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("`{}`", scope.name())),
                    "{}",
                    route.path()
                );
            }
            None => assert_eq!(op["security"], serde_json::json!([]), "{}", route.path()),
        }
    }
}
