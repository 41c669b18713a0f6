//! Verified TLS, as managed databases recommend: a server with `ssl=on` and certificates from a CA the test makes
//! (openssl). A reader replica on `sslmode=verify-full` with a bundle of several CAs (as RDS ships) listens and
//! is notified (its poll is a minute, so only a notification explains a fast update); so is one logging in with
//! a client certificate. A wrong host name and a wrong CA are refused with errors that say so, by the pool, the
//! listener and the `refresh` command alike, and no password appears in any output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::free_port;
use crate::faults::{all_serve_the_database, check_ins, seeded};
use crate::process::{get, Service};
use coworking_analytics::db::{self, listen};
use coworking_analytics::pgtemp::{TempPostgres, TlsFiles};
use coworking_analytics::refresh::{self, Mode};
use diesel::connection::SimpleConnection;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cr3t-PW-never-shown";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate for `cn` (with the extensions `ext`, e.g. subjectAltName) signed by test-ca, as NAME.crt and
/// NAME.key in `dir`.
pub fn leaf(dir: &Path, name: &str, cn: &str, ext: Option<&str>) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let mut args = vec![
        "x509",
        "-req",
        "-days",
        "2",
        "-CA",
        "test-ca.crt",
        "-CAkey",
        "test-ca.key",
        "-CAcreateserial",
    ];
    let ext_file = dir.join(format!("{name}.ext"));
    if let Some(ext) = ext {
        std::fs::write(&ext_file, ext).unwrap();
        args.extend(["-extfile", ext_file.to_str().unwrap()]);
    }
    let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
    args.extend(["-in", &csr, "-out", &crt]);
    openssl(dir, &args);
}

/// A CA, a server certificate for 127.0.0.1 and localhost, a client certificate for `certuser`, another CA, and
/// a bundle of both CAs (the right one second).
pub fn certificates(dir: &Path) {
    let ca = |name: &str| {
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            ]
            .iter()
            .copied()
            .chain([
                &*format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ])
            .collect::<Vec<_>>(),
        );
    };
    ca("test-ca");
    ca("other-ca");
    leaf(
        dir,
        "server",
        "localhost",
        Some("subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
    );
    leaf(dir, "client", "certuser", None);
    let bundle = [
        std::fs::read(dir.join("other-ca.crt")).unwrap(),
        std::fs::read(dir.join("test-ca.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    for key in ["client.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

struct Setup {
    server: TempPostgres,
    certs: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let certs = tempfile::tempdir().unwrap();
        certificates(certs.path());
        let read = |n: &str| std::fs::read(certs.path().join(n)).unwrap();
        let files = TlsFiles {
            server_cert: read("server.crt"),
            server_key: read("server.key"),
            client_ca: read("test-ca.crt"),
        };
        let server = TempPostgres::start_tls(free_port(), &files).unwrap();
        seeded(&server.url("postgres"));
        db::connect(&server.url("postgres"))
            .unwrap()
            .batch_execute(&format!(
                "CREATE ROLE certuser LOGIN SUPERUSER; ALTER ROLE postgres PASSWORD '{PASSWORD}'"
            ))
            .unwrap();
        Setup { server, certs }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    fn url(&self, user_host: &str, params: &str) -> String {
        format!(
            "postgresql://{user_host}:{}/postgres?{params}",
            self.server.port()
        )
    }
}

/// A reader replica (it never refreshes: only the notification of our refresh can update it before its
/// minute-long poll) on `url` serves a check-in refreshed on the server within 3 s, and says it listens.
fn notified(setup: &Setup, url: &str, from: i32) {
    let reader = Service::start(url, &[("WORKER", "off"), ("FOLLOW_POLL_INTERVAL", "60s")]);
    let socket = setup.server.url("postgres");
    all_serve_the_database(&[&reader], &socket, Duration::from_secs(30));
    let started = Instant::now();
    while reader.count("INFO", "listening for refresh notifications") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never listened: {:#?}",
            reader.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = get(reader.port, "/metrics").unwrap().text();
    assert!(
        metrics.contains("coworking_follower_listening 1"),
        "{metrics}"
    );
    check_ins(&socket, from, 3);
    refresh::run(
        &mut db::connect(&socket).unwrap(),
        Mode::Incremental,
        "test",
    )
    .unwrap();
    let (took, _) = all_serve_the_database(&[&reader], &socket, Duration::from_secs(3));
    eprintln!("verified TLS: a refresh reached the reader in {took:?}");
    let metrics = get(reader.port, "/metrics").unwrap().text();
    let served = metrics
        .lines()
        .find_map(|l| l.strip_prefix("coworking_commit_to_served_seconds_count "))
        .unwrap_or_else(|| panic!("no commit -> served histogram: {metrics}"));
    assert_eq!(served, "1", "one run taken up since the start: {metrics}");
    assert!(
        reader.log().iter().all(|l| !l.contains(PASSWORD)),
        "a password in the log"
    );
    assert_eq!(
        reader.count("WARNING", "cannot listen"),
        0,
        "{:#?}",
        reader.log()
    );
}

#[test]
fn verify_full_with_a_ca_bundle_and_client_certificates_listen_and_are_notified() {
    let setup = Setup::new();
    let bundle = setup.file("bundle.pem");
    let verify_full = setup.url(
        &format!("postgres:{PASSWORD}@127.0.0.1"),
        &format!("sslmode=verify-full&sslrootcert={}", bundle.display()),
    );
    notified(&setup, &verify_full, 0);
    let client_cert = setup.url(
        "certuser@localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            bundle.display(),
            setup.file("client.crt").display(),
            setup.file("client.key").display()
        ),
    );
    notified(&setup, &client_cert, 100);
}

#[tokio::test]
async fn a_wrong_host_name_or_a_wrong_ca_is_refused_with_a_clear_error() {
    let setup = tokio::task::spawn_blocking(Setup::new).await.unwrap();
    let port = setup.server.port();
    let root = |f: &str| setup.file(f).display().to_string();
    let cases = [
        (
            format!(
                "host=wrong.example hostaddr=127.0.0.1 port={port} user=postgres password={PASSWORD} \
                 dbname=postgres sslmode=verify-full sslrootcert={}",
                root("bundle.pem")
            ),
            "wrong.example",
        ),
        (
            setup.url(
                &format!("postgres:{PASSWORD}@127.0.0.1"),
                &format!("sslmode=verify-full&sslrootcert={}", root("other-ca.crt")),
            ),
            "certificate verify failed",
        ),
    ];
    // verify-ca checks the chain only: the same wrong host name is accepted, as libpq accepts it.
    let verify_ca = format!(
        "host=wrong.example hostaddr=127.0.0.1 port={port} user=postgres password={PASSWORD} \
         dbname=postgres sslmode=verify-ca sslrootcert={}",
        root("bundle.pem")
    );
    listen::listen(&verify_ca, "x")
        .await
        .expect("verify-ca with the right CA listens");
    for (url, says) in &cases {
        let e = listen::listen(url, "x")
            .await
            .err()
            .expect("the listener must refuse");
        let text = listen::describe(&e);
        assert!(
            text.contains("certificate verify failed"),
            "listener: {text}"
        );
        assert!(!text.contains(PASSWORD), "listener: {text}");
        let out = Command::new(env!("CARGO_BIN_EXE_coworking-analytics"))
            .arg("refresh")
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success());
        assert!(
            stderr.contains(says) || stderr.contains("certificate"),
            "refresh: {stderr}"
        );
        assert!(!stderr.contains(PASSWORD), "refresh: {stderr}");
    }
}
