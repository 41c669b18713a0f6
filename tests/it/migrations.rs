//! Migrations: up, down and redo on an empty database; adoption of a database made by the old `db/` scripts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{empty_db, migrated_db};
use coworking_analytics::db;
use coworking_analytics::demo::INIT_TABLES_SQL;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// The one object the migrations add to a base table (besides the change-capture triggers): an index that
/// lets a refresh recompute one day without scanning all tokens.
const ADDED_INDEX: &str = "tokens_created_at_used_at_index";

/// A table's columns, constraints and indexes, without the index the migrations add.
fn describe_base(conn: &mut PgConnection, table: &str) -> Vec<String> {
    describe(conn, table)
        .into_iter()
        .filter(|l| !l.contains(ADDED_INDEX))
        .collect()
}

/// A textual description of a table's columns, constraints and indexes, for exact comparison.
fn describe(conn: &mut PgConnection, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT format('col %s %s %s %s', column_name, data_type || coalesce('(' || character_maximum_length || ')', ''), \
                is_nullable, coalesce(column_default, '-')) AS line \
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}' \
         UNION ALL SELECT format('con %s %s', conname, pg_get_constraintdef(oid)) FROM pg_constraint \
           WHERE conrelid = 'public.{table}'::regclass \
         UNION ALL SELECT format('idx %s', indexdef) FROM pg_indexes WHERE schemaname = 'public' AND tablename = '{table}' \
         ORDER BY 1"
    );
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
}

fn tables(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT tablename AS line FROM pg_tables WHERE schemaname = 'public' \
         AND tablename <> '__diesel_schema_migrations' ORDER BY 1",
    )
    .load::<Line>(conn)
    .unwrap()
    .into_iter()
    .map(|l| l.line)
    .collect()
}

#[test]
fn up_creates_the_base_tables_exactly_as_the_old_scripts() {
    let old = empty_db();
    old.conn().batch_execute(INIT_TABLES_SQL).unwrap();
    let new = empty_db();
    let mut conn = new.conn();
    db::migrate(&mut conn).unwrap();
    for table in ["users", "tokens"] {
        assert_eq!(
            describe_base(&mut conn, table),
            describe(&mut old.conn(), table),
            "table {table}"
        );
    }
    assert_eq!(
        tables(&mut conn),
        [
            "analytics_base_tables_created",
            "checkin_quarters_rollup",
            "daily_usage_rollup",
            "refresh_runs",
            "refresh_writer",
            "rollup_changes",
            "rollup_deltas",
            "rollup_detached",
            "rollup_partitions",
            "rollup_rebuild_state",
            "tokens",
            "user_visits_rollup",
            "users"
        ]
    );
}

#[test]
fn down_removes_everything_it_created_and_redo_works() {
    let dbx = empty_db();
    let mut conn = dbx.conn();
    db::migrate(&mut conn).unwrap();
    db::revert_all(&mut conn).unwrap();
    assert!(tables(&mut conn).is_empty(), "{:?}", tables(&mut conn));
    // Redo: up again after down.
    let applied = db::migrate(&mut conn).unwrap();
    let folders = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied.len(), folders);
    assert!(
        db::migrate(&mut conn).unwrap().is_empty(),
        "a second run applies nothing"
    );
}

#[test]
fn an_existing_database_is_adopted_unchanged_and_survives_down() {
    let dbx = empty_db();
    let mut conn = dbx.conn();
    conn.batch_execute(INIT_TABLES_SQL).unwrap();
    conn.batch_execute(
        "INSERT INTO users (first_name, last_name, joined_at) VALUES ('A', 'B', '2023-01-20 03:23:39.757813');
         INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ('1', '902912', '2023-02-10 13:32:58.224409', NULL);",
    )
    .unwrap();
    let before: Vec<Vec<String>> = ["users", "tokens"]
        .iter()
        .map(|t| describe(&mut conn, t))
        .collect();
    db::migrate(&mut conn).unwrap();
    let after: Vec<Vec<String>> = ["users", "tokens"]
        .iter()
        .map(|t| describe_base(&mut conn, t))
        .collect();
    assert_eq!(before, after);
    db::revert_all(&mut conn).unwrap();
    let reverted: Vec<Vec<String>> = ["users", "tokens"]
        .iter()
        .map(|t| describe(&mut conn, t))
        .collect();
    assert_eq!(before, reverted, "down restores the adopted tables exactly");
    assert_eq!(tables(&mut conn), ["tokens", "users"]);
    let n: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM tokens)",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(n, 1, "adopted data is kept");
}

#[test]
fn a_partial_base_schema_is_refused() {
    let dbx = empty_db();
    let mut conn = dbx.conn();
    conn.batch_execute("CREATE TABLE users (id SERIAL PRIMARY KEY)")
        .unwrap();
    let err = db::migrate(&mut conn).unwrap_err().to_string();
    assert!(err.contains("only one of the base tables"), "{err}");
}

#[test]
fn src_schema_rs_is_what_diesel_print_schema_generates_from_the_migrations() {
    // `scripts/test` installs the diesel CLI into target/tools/diesel and points DIESEL_CLI at it.
    let cli = std::env::var("DIESEL_CLI").unwrap_or_else(|_| "diesel".into());
    let dbx = migrated_db();
    let out = std::process::Command::new(&cli)
        .args(["print-schema", "--database-url", &as_uri(&dbx.url)])
        .current_dir(env!("CARGO_MANIFEST_DIR")) // diesel.toml: the table filter and derives
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the diesel CLI `{cli}` ({e}): run scripts/test, or set DIESEL_CLI")
        });
    assert!(
        out.status.success(),
        "diesel print-schema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked_in = include_str!("../../src/schema.rs");
    assert!(
        String::from_utf8_lossy(&out.stdout) == checked_in,
        "src/schema.rs is stale; regenerate it with `diesel print-schema > src/schema.rs` on a migrated database"
    );
}

/// The diesel CLI takes only `postgres://` URIs; the test cluster's address is a key=value connection string.
fn as_uri(conninfo: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    if conninfo.starts_with("postgres") {
        return conninfo.to_owned();
    }
    let enc = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
    let (mut userinfo, mut dbname, mut params) = (String::new(), String::new(), Vec::new());
    let mut password = None;
    for (key, value) in conninfo
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('\'')))
    {
        match key {
            "user" => userinfo = enc(value),
            "password" => password = Some(enc(value)),
            "dbname" => dbname = enc(value), // the last one wins, as in libpq
            _ => params.push(format!("{key}={}", enc(value))),
        }
    }
    if let Some(p) = password {
        userinfo = format!("{userinfo}:{p}");
    }
    format!("postgres://{userinfo}@/{dbname}?{}", params.join("&"))
}
