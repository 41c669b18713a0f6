//! One refresh runner: the one-shot `refresh` (the CronJob) and the worker of `serve` log each outcome with the
//! same message and the same fields (but `task`), because both go through `refresh::Runner`. Both are the real
//! binary, on the same database, in the three outcomes.

use crate::common::{free_port, migrated_db, TestDb};
use coworking_analytics::refresh::WRITER_LOCK_KEY;
use diesel::connection::SimpleConnection;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// The JSON log lines of one `refresh` run.
fn refresh_lines(db: &TestDb, extra: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .arg("refresh")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The first log line of `serve` whose message starts with "refresh " (its start-up refresh), then stops it.
fn serve_refresh_line(db: &TestDb, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("APP_PORT", free_port().to_string())
        .env("REFRESH_SCHEDULE", "0 0 0 1 1 *")
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if v["message"].as_str().is_some_and(is_outcome) => break Some(v),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found.expect("serve logged the outcome of its start-up refresh within 30 s")
}

fn is_outcome(message: &str) -> bool {
    message.starts_with("refresh succeeded")
        || message.starts_with("refresh skipped")
        || message.starts_with("refresh failed")
}

fn outcome(lines: &[serde_json::Value]) -> serde_json::Value {
    lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(is_outcome))
        .cloned()
        .unwrap_or_else(|| panic!("no outcome line in {lines:?}"))
}

/// The line's message and field names (without the ones that differ by nature: time, task).
fn shape(line: &serde_json::Value) -> (String, BTreeSet<String>) {
    let fields = line
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !["time", "task"].contains(&k.as_str()))
        .cloned()
        .collect();
    (line["message"].as_str().unwrap().to_owned(), fields)
}

fn assert_same_shape(command: &serde_json::Value, worker: &serde_json::Value, message: &str) {
    assert_eq!(shape(command), shape(worker), "{command}\n{worker}");
    assert!(shape(command).0.starts_with(message), "{command}");
    assert_eq!(command["task"], "refresh", "{command}");
    assert_eq!(worker["task"], "worker", "{worker}");
}

#[test]
fn the_command_and_the_worker_log_a_success_alike() {
    let db = migrated_db();
    let command = outcome(&refresh_lines(&db, &[]));
    // Something for the worker's start-up refresh to do (a run that finds nothing logs only at DEBUG).
    crate::common::add_one_checkin(&mut db.conn());
    let worker = serve_refresh_line(&db, &[]);
    assert_same_shape(&command, &worker, "refresh succeeded");
    assert!(command["rows_written"].is_number(), "{command}");
}

#[test]
fn the_command_and_the_worker_log_a_skip_alike() {
    let db = migrated_db();
    let mut holder = db.conn();
    holder.batch_execute("BEGIN").unwrap();
    coworking_analytics::db::writer::advisory_xact_lock(&mut holder, WRITER_LOCK_KEY).unwrap();
    let command = outcome(&refresh_lines(&db, &[]));
    let worker = serve_refresh_line(&db, &[]);
    assert_same_shape(&command, &worker, "refresh skipped");
    holder.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn the_command_and_the_worker_log_a_failure_alike() {
    let db = migrated_db();
    // The writer lease is locked away: the refresh's lease update waits until the statement timeout fails it.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE refresh_writer IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let slow = [("DB_STATEMENT_TIMEOUT", "1s")];
    let command = outcome(&refresh_lines(&db, &slow));
    let worker = serve_refresh_line(&db, &slow);
    assert_same_shape(&command, &worker, "refresh failed");
    assert!(
        command["error"]
            .as_str()
            .unwrap()
            .contains("statement timeout"),
        "{command}"
    );
    holder.batch_execute("ROLLBACK").unwrap();
}
