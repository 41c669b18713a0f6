//! CORS over real sockets (#23), over HTTP/1.1 and h2c: preflights answered for an allowed origin only, and
//! answers (a refusal without a key included) marked for it and varying on `Origin`. Keys and scopes: `access.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::access::{data, new_key};
use crate::access_support::call;
use crate::common::{migrated_db, wait_for_run, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_marks_answers_for_allowed_origins_only() {
    let db = migrated_db();
    data(&db);
    let dir = tempfile::tempdir().unwrap();
    let (key, line) = new_key("web", "reports");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{line}\n")).unwrap();
    let service = TestApp::new(&db.url)
        .with(|c| {
            c.access.api_keys_file = Some(keys.clone());
            c.access.cors_allowed_origins = Some(coworking_analytics::config::Origins(vec![
                "https://members.example".into(),
            ]));
        })
        .start()
        .await;
    wait_for_run(&service, 0).await;
    let path = "/api/reports/daily_usage";
    for h2 in [false, true] {
        let pre = call(
            service.addr,
            h2,
            "OPTIONS",
            path,
            &[
                ("origin", "https://members.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
        )
        .await;
        assert_eq!(pre.status, 204);
        assert_eq!(
            pre.all("access-control-allow-origin"),
            ["https://members.example"]
        );
        assert_eq!(pre.all("access-control-allow-methods"), ["GET, HEAD"]);
        assert_eq!(pre.all("access-control-allow-headers"), ["Authorization"]);
        let other = call(
            service.addr,
            h2,
            "OPTIONS",
            path,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
        assert!(other.headers.get("access-control-allow-origin").is_none());
        let get = call(
            service.addr,
            h2,
            "GET",
            path,
            &[
                ("origin", "https://members.example"),
                ("authorization", &format!("Bearer {key}")),
            ],
        )
        .await;
        assert_eq!(get.status, 200);
        assert_eq!(
            get.all("access-control-allow-origin"),
            ["https://members.example"]
        );
        assert!(get.all("vary").iter().any(|v| v.contains("Origin")));
        assert_eq!(
            get.all("cache-control"),
            ["private, no-cache"],
            "no shared cache keeps an answer behind a credential"
        );
        let refused = call(
            service.addr,
            h2,
            "GET",
            path,
            &[("origin", "https://members.example")],
        )
        .await;
        assert_eq!(refused.status, 401);
        assert_eq!(
            refused.all("access-control-allow-origin"),
            ["https://members.example"],
            "the app can read why"
        );
    }
}
