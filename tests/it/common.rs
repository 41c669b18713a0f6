//! Test harness: a real PostgreSQL for every test process, and a fresh database per test cloned from a migrated
//! template (the crates.io pattern).
//!
//! With `TEST_DATABASE_URL` set (a superuser or CREATEDB role), tests use that server; otherwise the first test
//! starts a private cluster with the project's own [`TempPostgres`], which dies with the test process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use coworking_analytics::config::{with_dbname, Config, DatabaseTarget, Secret};
use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use diesel::connection::SimpleConnection;
use diesel::{PgConnection, RunQueryDsl};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The raw HTTP/1.1 client, where most tests reach it.
pub use crate::raw_http::{parse_response, request, RawResponse};

struct Cluster {
    admin_url: String,
    template: String,
    _server: Option<TempPostgres>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let (admin_url, server) = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let pg = TempPostgres::start().expect("start a private PostgreSQL for the tests");
                (pg.url("postgres"), Some(pg))
            }
        };
        let template = format!("coworking_tmpl_{}", std::process::id());
        let mut admin = db::connect(&admin_url).expect("connect to the test server");
        // scripts/check-pg-versions says which major it started (PG_BIN_DIR): make sure that is what runs.
        if let Ok(major) = std::env::var("EXPECT_PG_MAJOR") {
            let version: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
                "current_setting('server_version_num')::int",
            ))
            .get_result(&mut admin)
            .unwrap();
            assert_eq!(
                (version / 10_000).to_string(),
                major,
                "server_version_num {version}"
            );
        }
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {template}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {template}"))
            .unwrap();
        {
            let mut conn = db::connect(&with_dbname(&admin_url, &template)).unwrap();
            db::migrate(&mut conn).expect("migrate the template database");
        }
        Cluster {
            admin_url,
            template,
            _server: server,
        }
    })
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn conn(&self) -> PgConnection {
        db::connect(&self.url).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = db::connect(&cluster().admin_url) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn new_name() -> String {
    format!(
        "coworking_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh database with every migration applied (base tables, rollups, run history), no data.
pub fn migrated_db() -> TestDb {
    let c = cluster();
    let name = new_name();
    let mut admin = db::connect(&c.admin_url).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {}", c.template))
        .unwrap();
    TestDb {
        url: with_dbname(&c.admin_url, &name),
        name,
    }
}

/// A fresh, empty database (no migrations).
pub fn empty_db() -> TestDb {
    let c = cluster();
    let name = new_name();
    let mut admin = db::connect(&c.admin_url).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    TestDb {
        url: with_dbname(&c.admin_url, &name),
        name,
    }
}

/// The admin connection string of the test server (for tests that manage roles).
pub fn admin_url() -> String {
    cluster().admin_url.clone()
}

/// Inserts a user with an explicit id and joined_at; returns the id.
pub fn add_user(conn: &mut PgConnection, id: i32, joined_at: &str) -> i32 {
    conn.batch_execute(&format!(
        "INSERT INTO users (id, first_name, last_name, joined_at) VALUES ({id}, 'F{id}', 'L{id}', '{joined_at}')"
    ))
    .unwrap();
    id
}

/// Inserts a token; `used_at` is SQL (`NULL` or a quoted timestamp).
pub fn add_token(conn: &mut PgConnection, user_id: i32, created_at: &str, used_at: Option<&str>) {
    let used = used_at.map_or("NULL".to_owned(), |u| format!("'{u}'"));
    conn.batch_execute(&format!(
        "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({user_id}, '123456', '{created_at}', {used})"
    ))
    .unwrap();
}

/// Builds the whole service (HTTP on an ephemeral loopback port, worker, follower, migrations) against a test
/// database, configured through the typed [`Config`] (the zero2prod `spawn_app`, as a builder).
pub struct TestApp {
    database: DatabaseTarget,
    config: Config,
}

impl TestApp {
    /// Every setting at its default, but a schedule that does not fire during a test: only the start-up refresh
    /// runs unless a test asks otherwise.
    pub fn new(db_url: &str) -> Self {
        let mut config = Config::defaults();
        config.refresh_schedule = "0 0 0 1 1 *".parse().unwrap();
        TestApp {
            database: DatabaseTarget::Url(Secret::new(db_url)),
            config,
        }
    }

    /// Changes settings before the start.
    pub fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    pub async fn start(self) -> coworking_analytics::app::Service {
        self.start_logged(coworking_analytics::logging::discard())
            .await
    }

    /// [`TestApp::start`] with the service's log going to `log`.
    pub async fn start_logged(self, log: slog::Logger) -> coworking_analytics::app::Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        coworking_analytics::app::start(&self.config, &self.database, listener, log).unwrap()
    }
}

/// Waits until the service's cache holds a run newer than `after`.
pub async fn wait_for_run(service: &coworking_analytics::app::Service, after: i64) -> i64 {
    for _ in 0..200 {
        let id = service.cache.run_id();
        if id > after {
            return id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no refresh newer than run {after} was loaded within 10 s");
}

/// A connection to the server's maintenance database as the admin.
pub fn db_admin() -> PgConnection {
    db::connect(&cluster().admin_url).unwrap()
}

/// Asserts that the rollup tables equal the old service's queries run on the base tables now.
pub fn assert_rollups_match_definition(conn: &mut PgConnection) {
    let (days, users) = coworking_analytics::db::load::rollup_contents(conn).unwrap();
    assert_eq!(
        days,
        coworking_analytics::db::definitions::definition_daily_usage(conn).unwrap(),
        "daily usage"
    );
    assert_eq!(
        users,
        coworking_analytics::db::definitions::definition_user_visits(conn).unwrap(),
        "user visits"
    );
    assert_eq!(
        coworking_analytics::db::load::quarter_contents(conn).unwrap(),
        coworking_analytics::db::definitions::definition_quarters(conn).unwrap(),
        "quarter hours"
    );
}

/// The sum of `visits` over a user-visits body.
pub fn total_visits(body: &[u8]) -> i64 {
    let visits: serde_json::Value = serde_json::from_slice(body).unwrap();
    visits
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["visits"].as_i64().unwrap())
        .sum()
}

/// A gzip body decoded by flate2 (which checks the CRC-32 and the length in the trailer).
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// How many rows the run history has.
pub fn run_rows(conn: &mut PgConnection) -> i64 {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM refresh_runs)",
    ))
    .get_result(conn)
    .unwrap()
}

/// User 1 with one check-in on 2023-02-01 (daily usage `{"2023-02-01":1}`).
pub fn add_one_checkin(conn: &mut PgConnection) {
    add_user(conn, 1, "2023-01-01 00:00:00");
    add_token(conn, 1, "2023-02-01 10:00:00", Some("2023-02-01 10:01:00"));
}

/// A TCP port free on loopback right now (for a child process that binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls the router in-process (no socket) and returns status, content-encoding and the decoded body.
pub fn route(
    state: &coworking_analytics::http::AppState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Vec<u8>) {
    let (status, headers, body) = route_full(state, uri, headers);
    let enc = headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, enc, body)
}

/// [`route`] with every response header.
pub fn route_full(
    state: &coworking_analytics::http::AppState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, Vec<u8>) {
    let mut req = hyper::Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = coworking_analytics::http::routes::handle(
        state,
        req.body(()).unwrap(),
        &coworking_analytics::http::guard::Grant::open(),
    );
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = futures_body(body);
    let gzipped = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    (
        status,
        parts.headers,
        if gzipped { gunzip(&body) } else { body },
    )
}

/// The bytes of a response body.
pub fn futures_body(body: coworking_analytics::report::Body) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(http_body_util::BodyExt::collect(body))
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// The HTTP handlers' state over `cache` with these zones (`DATA_TIMEZONE`, `REPORT_TIMEZONE`), for calling the
/// router in-process.
pub fn app_state(
    cache: &std::sync::Arc<coworking_analytics::cache::ReportCache>,
    data: &str,
    report: Option<&str>,
) -> coworking_analytics::http::AppState {
    use coworking_analytics::metrics::{Metrics, Publisher};
    coworking_analytics::http::AppState {
        cache: std::sync::Arc::clone(cache),
        metrics: std::sync::Arc::new(Metrics::new(Publisher::disabled())),
        readiness_max_age: std::time::Duration::from_secs(60),
        cache_policy: coworking_analytics::http::caching::CachePolicy::new(None, None),
        zones: coworking_analytics::report::Zones {
            data: data.parse().unwrap(),
            report: report.map(|z| z.parse().unwrap()),
        },
        access: std::sync::Arc::new(coworking_analytics::access::Access::open()),
        cors: Default::default(),
        audit: slog::Logger::root(slog::Discard, slog::o!()),
    }
}

/// Runs `sql` with the capture triggers off (`session_replication_role = replica`), as a restore or a bulk load
/// does: the rollups do not hear of it.
pub fn behind_the_triggers(conn: &mut PgConnection, sql: &str) {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(&format!(
        "BEGIN; SET LOCAL session_replication_role = replica; {sql}; COMMIT"
    ))
    .unwrap();
}
