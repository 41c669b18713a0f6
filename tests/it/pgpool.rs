//! pgpool-II (Debian's `pgpool2`, 4.3) in front of a private server. It never completes a `COPY FROM STDIN` sent
//! with the extended query protocol (how diesel sends it), so `seed` through it used to wait forever; it now
//! inserts in batches there, and loads exactly the rows COPY loads directly. The service works through it too.

use crate::faults::{all_serve_the_database, ENV};
use crate::process::Service;
use coworking_analytics::config::with_dbname;
use coworking_analytics::db;
use coworking_analytics::pgtemp::{spawn_tied, TempPostgres};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// pgpool-II on a free loopback port in raw mode, its one backend the server's socket; stops when dropped.
struct Pgpool {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    _tied: std::sync::mpsc::Sender<()>,
}

impl Pgpool {
    fn start(pg: &TempPostgres) -> Pgpool {
        let port = crate::common::free_port();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("pgpool.conf");
        std::fs::write(
            &conf,
            format!(
                "backend_clustering_mode = 'raw'\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
                 unix_socket_directories = '{d}'\npcp_listen_addresses = ''\npcp_port = {}\n\
                 pcp_socket_dir = '{d}'\nbackend_hostname0 = '{}'\nbackend_port0 = {}\nbackend_weight0 = 1\n\
                 backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'\nenable_pool_hba = off\n\
                 num_init_children = 16\nmax_pool = 2\nlogdir = '{d}'\npid_file_name = '{d}/pgpool.pid'\n\
                 sr_check_period = 0\nhealth_check_period = 0\nload_balance_mode = off\n",
                crate::common::free_port(),
                pg.dir().display(),
                pg.port()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pcp.conf"), "").unwrap();
        let program = ["/usr/sbin/pgpool", "pgpool"]
            .into_iter()
            .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
            .unwrap();
        let mut cmd = Command::new(program);
        cmd.args(["-n", "-f"])
            .arg(&conf)
            .arg("-F")
            .arg(dir.path().join("pcp.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (child, tied) = spawn_tied(cmd).expect("pgpool (Debian: apt-get install pgpool2)");
        let pool = Pgpool {
            port,
            child,
            _dir: dir,
            _tied: tied,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while db::connect(&pool.url("postgres")).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgpool did not accept connections"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pool
    }

    fn url(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }
}

impl Drop for Pgpool {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
    }
}

/// `coworking-analytics seed` on `url`, killed (and failed) if it takes over 60 s.
fn seed(url: &str) {
    let mut child = Command::new(BIN)
        .args(["seed", "--users", "2000", "--tokens", "25000"])
        .env("DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("seed on {url} hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn contents(url: &str) -> (String, String) {
    let mut conn = db::connect(url).unwrap();
    let text = |conn: &mut PgConnection, sql: &str| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(sql))
            .get_result::<String>(conn)
            .unwrap()
    };
    (
        text(&mut conn, "(SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u)"),
        text(
            &mut conn,
            "(SELECT md5(string_agg((user_id, token, created_at, used_at)::text, ',' ORDER BY id)) FROM tokens)",
        ),
    )
}

#[test]
fn seed_through_pgpool_loads_what_copy_loads_and_the_service_serves_it() {
    let pg = TempPostgres::start().unwrap();
    let mut admin = db::connect(&pg.url("postgres")).unwrap();
    for name in ["direct", "pooled"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
    }
    let pool = Pgpool::start(&pg);
    seed(&with_dbname(&pg.url("postgres"), "direct"));
    seed(&pool.url("pooled"));
    let direct = contents(&with_dbname(&pg.url("postgres"), "direct"));
    assert_eq!(
        contents(&with_dbname(&pg.url("postgres"), "pooled")),
        direct
    );
    let replica = Service::start(&pool.url("pooled"), ENV);
    all_serve_the_database(
        &[&replica],
        &with_dbname(&pg.url("postgres"), "pooled"),
        Duration::from_secs(60),
    );
}
