//! The real binary as a child process, as production runs it: `serve` on a free port with its output collected,
//! for the tests of outages and faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{self, parse_response, RawResponse};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

pub fn get(port: u16, path: &str) -> Option<RawResponse> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(parse_response(&raw))
}

pub struct Service {
    pub child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// `coworking-analytics serve` on `url` and a free port, with `env` set; its output lines are collected.
    pub fn start(url: &str, env: &[(&str, &str)]) -> Service {
        let port = common::free_port();
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("APP_PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Service { child, port, lines }
    }

    pub fn wait_status(&mut self, path: &str, status: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the service exited: {:?}",
                self.log()
            );
            if get(self.port, path).is_some_and(|r| r.status == status) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{path} never answered {status}; log: {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self, level: &str, message: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.contains(&format!("\"level\":\"{level}\"")) && l.contains(message))
            .count()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
