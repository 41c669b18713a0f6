//! Least privilege: the service runs under the role of `db/03_app_role.sql`, which reads the base tables and
//! writes only the service's own tables; the application that writes tokens needs no right on the analytics
//! tables (the capture triggers are SECURITY DEFINER).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::{
    add_one_checkin, add_token, assert_rollups_match_definition, migrated_db, request,
    total_visits, wait_for_run, TestApp,
};
use coworking_analytics::db::{self, MigratePolicy};
use coworking_analytics::refresh::{self, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const APP_ROLE_SQL: &str = include_str!("../../db/03_app_role.sql");

/// `url` with the user replaced (the test cluster trusts local roles without a password).
fn as_user(url: &str, user: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}user={user}")
    } else {
        format!("{url} user={user}")
    }
}

fn denied(conn: &mut PgConnection, sql: &str) {
    let err = conn.batch_execute(sql).unwrap_err().to_string();
    assert!(
        err.contains("permission denied") || err.contains("must be owner"),
        "{sql}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_under_the_app_role_which_cannot_touch_anything_else() {
    let db = migrated_db();
    let mut owner = db.conn();
    add_one_checkin(&mut owner);
    owner.batch_execute(APP_ROLE_SQL).unwrap();
    // Twice: the script is re-runnable.
    owner.batch_execute(APP_ROLE_SQL).unwrap();
    let app_url = as_user(&db.url, "coworking_app");

    let mut app = db::connect(&app_url).unwrap();
    denied(
        &mut app,
        "INSERT INTO users (first_name, last_name) VALUES ('a', 'b')",
    );
    denied(&mut app, "UPDATE tokens SET used_at = NULL");
    denied(&mut app, "DELETE FROM tokens");
    denied(&mut app, "CREATE TABLE sneaky (id int)");
    denied(&mut app, "DROP TABLE daily_usage_rollup");
    // Applying migrations is not possible under this role; checking them is.
    db::prepare_schema(&mut app, MigratePolicy::Check).unwrap();

    let service = TestApp::new(&app_url)
        .with(|c| c.db_migrate = coworking_analytics::db::MigratePolicy::Check)
        .start()
        .await;
    wait_for_run(&service, 0).await;
    let body = request(service.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(body.status, 200);
    assert_eq!(body.text(), "{\"2023-02-01\":1}\n");
    // The direct runs below must be the only writer: a running service is notified of the members' writes and
    // would take the writer lock first (the direct run then reports `Skipped`, or `Unchanged` after it).
    service.shutdown(std::time::Duration::from_secs(5)).await;

    // The member-facing application: may write tokens, nothing else.
    owner
        .batch_execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'members_app') THEN \
             CREATE ROLE members_app LOGIN; END IF; END $$; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON tokens TO members_app; \
             GRANT USAGE ON SEQUENCE tokens_id_seq TO members_app;",
        )
        .unwrap();
    let mut members = db::connect(&as_user(&db.url, "members_app")).unwrap();
    denied(&mut members, "SELECT * FROM rollup_changes");
    // The owner's helpers of the partition events are not callable by other roles (functions are PUBLIC
    // unless revoked): they would put capture triggers on, or count change rows from, any table as the owner.
    for role in [&mut members, &mut app] {
        denied(role, "SELECT rollup_capture_member('users')");
        denied(role, "SELECT rollup_partition_rows('users', 1, 'x')");
    }
    add_token(
        &mut members,
        1,
        "2023-02-02 09:00:00",
        Some("2023-02-02 09:05:00"),
    );
    members
        .batch_execute("UPDATE tokens SET used_at = now() WHERE used_at IS NULL")
        .unwrap();

    // Incremental, range and full refreshes all work under the app role.
    for mode in [
        Mode::Incremental,
        Mode::Range {
            from: chrono::NaiveDate::from_ymd_opt(2023, 2, 1).unwrap(),
            to: chrono::NaiveDate::from_ymd_opt(2023, 2, 2).unwrap(),
        },
        Mode::Full,
    ] {
        let out = refresh::run(&mut app, mode, "app-role").unwrap();
        assert!(matches!(out, Outcome::Completed(_)), "{mode:?}: {out:?}");
        assert_rollups_match_definition(&mut owner);
    }
    // A service started again under the app role serves what the direct runs wrote.
    let service = TestApp::new(&app_url)
        .with(|c| c.db_migrate = coworking_analytics::db::MigratePolicy::Check)
        .start()
        .await;
    wait_for_run(&service, 0).await;
    let visits = request(service.addr, "GET", "/api/reports/user_visits", &[]).await;
    assert_eq!(total_visits(visits.text().as_bytes()), 2);
    service.shutdown(std::time::Duration::from_secs(5)).await;
}

#[test]
fn check_mode_names_the_pending_migrations_and_never_creates_anything() {
    let db = common::empty_db();
    let mut conn = db.conn();
    let err = db::prepare_schema(&mut conn, MigratePolicy::Check)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pending: 20261126000001"), "{err}");
    assert!(err.contains("coworking-analytics migrate"), "{err}");
    let tables: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(tables, 0);
}
