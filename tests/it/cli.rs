//! The binary as an operator runs it: configuration errors, `refresh` exit codes, secrets kept out of output,
//! JSON log lines, `seed` determinism and the checked-in demo data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::migrated_db;
use diesel::connection::SimpleConnection;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn configuration_errors_exit_2_with_one_line_naming_the_variable() {
    let base = [("DB_USERNAME", "u"), ("DB_PASSWORD", "p")];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "DB_USERNAME"),
        (vec![("DB_USERNAME", "u")], "DB_PASSWORD"),
        (vec![base[0], base[1], ("APP_PORT", "http")], "APP_PORT"),
        (vec![base[0], base[1], ("APP_PORT", "70000")], "APP_PORT"),
        (vec![base[0], base[1], ("DB_PORT", "-1")], "DB_PORT"),
        (
            vec![base[0], base[1], ("REFRESH_SCHEDULE", "*/5 * * * *")],
            "REFRESH_SCHEDULE",
        ),
        (
            vec![base[0], base[1], ("READINESS_MAX_AGE", "soon")],
            "READINESS_MAX_AGE",
        ),
        (
            vec![base[0], base[1], ("READINESS_MAX_AGE", "0")],
            "READINESS_MAX_AGE",
        ),
        (vec![base[0], base[1], ("LOG_LEVEL", "loud")], "LOG_LEVEL"),
        (
            vec![base[0], base[1], ("DATA_TIMEZONE", "Mars/Olympus")],
            "DATA_TIMEZONE",
        ),
        (
            vec![base[0], base[1], ("REPORT_TIMEZONE", "+05:45")],
            "REPORT_TIMEZONE",
        ),
        (
            vec![base[0], base[1], ("DB_POOL_SIZE", "0")],
            "DB_POOL_SIZE",
        ),
        (
            vec![base[0], base[1], ("SHUTDOWN_TIMEOUT", "x")],
            "SHUTDOWN_TIMEOUT",
        ),
    ];
    for (env, var) in cases {
        for cmd in ["serve", "refresh"] {
            let out = run(&[cmd], &env);
            assert_eq!(out.status.code(), Some(2), "{cmd} {env:?}");
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains(var), "{env:?}: {err}");
        }
    }
}

#[test]
fn refresh_exits_0_on_success_and_logs_json_lines() {
    let db = migrated_db();
    let out = run(&["refresh"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &lines {
        assert!(
            l["time"].is_string() && l["level"].is_string() && l["message"].is_string(),
            "{l}"
        );
    }
    let done = lines
        .iter()
        .find(|l| l["message"] == "refresh succeeded")
        .expect("outcome logged");
    assert!(
        done["rows_read"].is_number() && done["duration_ms"].is_number(),
        "{done}"
    );
}

#[test]
fn refresh_exits_non_zero_on_failure_without_leaking_the_password() {
    let secret = "s3cr3t-P@ss:w/rd";
    let out = run(
        &["refresh"],
        &[
            ("DB_USERNAME", "app"),
            ("DB_PASSWORD", secret),
            ("DB_HOST", "127.0.0.1"),
            ("DB_PORT", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("command failed"), "{all}");
    assert!(!all.contains(secret) && !all.contains("s3cr3t"), "{all}");
    let url = format!("postgres://app:{secret}@127.0.0.1:1/postgres");
    let out = run(&["refresh"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!all.contains("s3cr3t"), "{all}");
}

#[test]
fn a_password_with_special_characters_works_and_a_wrong_one_is_refused() {
    // The test cluster makes members of `password_login` authenticate with scram-sha-256.
    let db = migrated_db();
    let password = r#"p@ss w:o/rd'"\;%#="#;
    let role = "odd_user";
    {
        let mut admin = common::db_admin();
        let quoted = password.replace('\'', "''");
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'password_login') \
                 THEN CREATE ROLE password_login; END IF; END $$; \
                 DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{quoted}' IN ROLE password_login"
            ))
            .unwrap();
    }
    let conninfo: String = db.url.clone();
    let host = conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .unwrap()
        .to_owned();
    let port = conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap_or("5432")
        .to_owned();
    let env = |pw: &'static str| {
        vec![
            ("DB_USERNAME", role.to_owned()),
            ("DB_PASSWORD", pw.to_owned()),
            ("DB_HOST", host.clone()),
            ("DB_PORT", port.clone()),
            ("DB_NAME", db.name.clone()),
        ]
    };
    let owned = env(r#"p@ss w:o/rd'"\;%#="#);
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(&["refresh"], &pairs);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let owned = env("wrong");
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(&["refresh"], &pairs);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a wrong password must fail: the test would prove nothing otherwise"
    );
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("password authentication failed"), "{all}");
}

#[test]
fn seed_sql_is_deterministic_and_is_the_checked_in_demo_data() {
    let p = coworking_analytics::seed::DEMO_PARAMS;
    let args = [
        "seed",
        "--format",
        "sql",
        "--users",
        &p.users.to_string(),
        "--tokens",
        &p.tokens.to_string(),
        "--days",
        &p.days.to_string(),
        "--end",
        &p.end.to_string(),
        "--seed",
        &p.seed.to_string(),
    ];
    let a = run(&args, &[]);
    assert_eq!(a.status.code(), Some(0));
    let b = run(&args, &[]);
    assert_eq!(a.stdout, b.stdout);
    let checked_in =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/db/02_demo_data.sql")).unwrap();
    assert!(
        a.stdout == checked_in,
        "db/02_demo_data.sql differs from `seed --format sql` output: regenerate it"
    );
    let other = run(&["seed", "--format", "sql", "--seed", "7"], &[]);
    assert_ne!(other.stdout, a.stdout);
}

#[test]
fn seed_loads_into_the_database_and_the_demo_sql_loads_with_psql_semantics() {
    let db = migrated_db();
    let out = run(
        &["seed", "--users", "50", "--tokens", "5000", "--days", "14"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut conn = db.conn();
    let days = coworking_analytics::db::definitions::definition_user_visits(&mut conn).unwrap();
    assert_eq!(days.iter().map(|u| u.visits).sum::<i64>(), 5000);
    let demo = common::empty_db();
    let mut conn = demo.conn();
    conn.batch_execute(coworking_analytics::demo::INIT_TABLES_SQL)
        .unwrap();
    conn.batch_execute(coworking_analytics::demo::DEMO_DATA_SQL)
        .unwrap();
    let users = coworking_analytics::db::definitions::definition_user_visits(&mut conn).unwrap();
    assert_eq!(users.iter().map(|u| u.visits).sum::<i64>(), 4000);
}

#[test]
fn refresh_refuses_a_reversed_or_half_range_as_a_usage_error() {
    // Checked before the configuration is read: no database variable is set.
    let reversed = run(
        &["refresh", "--from", "2026-10-07", "--to", "2026-10-01"],
        &[],
    );
    assert_eq!(reversed.status.code(), Some(2));
    assert!(
        stderr(&reversed).contains("--from 2026-10-07 is after --to 2026-10-01"),
        "{}",
        stderr(&reversed)
    );
    let half = run(&["refresh", "--from", "2026-10-07"], &[]);
    assert_eq!(half.status.code(), Some(2));
    assert!(stderr(&half).contains("--to"), "{}", stderr(&half));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "refresh", "migrate", "seed", "demo"] {
        let out = run(&[sub, "--help"], &[]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{sub}"
        );
    }
}

#[test]
fn demo_without_postgres_binaries_says_what_to_install() {
    let out = run(&["demo"], &[("PG_BIN_DIR", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("apt-get install postgresql"), "{all}");
}

#[test]
fn demo_serves_the_demo_data_and_stops_on_sigint() {
    use std::io::{Read, Write};
    let port = common::free_port();
    let mut child = Command::new(BIN)
        .arg("demo")
        .env("APP_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut ready = false;
    for _ in 0..300 {
        if get("/readiness_check").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "demo became ready");
    let body = get("/api/reports/user_visits").unwrap();
    let json = body.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        common::total_visits(json.as_bytes()),
        4000,
        "the demo data set has 4000 tokens"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("http://127.0.0.1:"), "prints the URLs: {out}");
    let dir = out
        .lines()
        .find_map(|l| l.split("host=").nth(1))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        !std::path::Path::new(&dir).exists(),
        "the private cluster's directory {dir} is removed"
    );
}

#[test]
fn help_lists_every_variable_with_its_default_and_never_a_secret_value() {
    let vars = run(&["variables"], &[]);
    assert_eq!(vars.status.code(), Some(0));
    let vars = String::from_utf8(vars.stdout).unwrap();
    assert!(vars.lines().count() >= 23, "{vars}");
    let secrets = [
        ("DB_PASSWORD", "hunter2"),
        ("DATABASE_URL", "postgres://u:hunter3@h/d"),
    ];
    for cmd in ["serve", "refresh"] {
        let help = run(&[cmd, "--help"], &secrets);
        assert_eq!(help.status.code(), Some(0));
        let help = String::from_utf8(help.stdout).unwrap();
        for var in vars.lines() {
            assert!(
                help.contains(&format!("[env: {var}")),
                "{cmd} --help lacks {var}"
            );
        }
        assert!(help.contains("[default: \"*/30 * * * * *\"]"), "{help}");
        assert!(!help.contains("hunter"), "{help}");
    }
}

#[test]
fn an_empty_variable_means_the_default_but_an_empty_password_is_a_password() {
    let db = migrated_db();
    let out = run(
        &["refresh"],
        &[
            ("DATABASE_URL", &db.url),
            ("DB_POOL_SIZE", ""),
            ("LOG_LEVEL", ""),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(
        &["refresh"],
        &[("DB_USERNAME", "u"), ("DB_PASSWORD", ""), ("DB_PORT", "1")],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a connection failure, not a missing variable: {}",
        stderr(&out)
    );
    let out = run(&["refresh"], &[("DB_USERNAME", ""), ("DB_PASSWORD", "p")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("DB_USERNAME is required"),
        "{}",
        stderr(&out)
    );
}
