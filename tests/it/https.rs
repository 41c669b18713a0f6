//! The service's own port over TLS (#23 point 6), with a CA the test makes (openssl): HTTP/1.1 and HTTP/2 by
//! ALPN with the credentials checked as over plain HTTP; a certificate renewed while a client keeps its
//! connection open; start-up refused (exit 2, the variable named) for a missing file or a key that does not match.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::access::new_key;
use crate::common::{migrated_db, wait_for_run, TestApp};
use crate::tls::{certificates, leaf};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client trusting the test's CA, offering `alpn`.
fn client(dir: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("test-ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection offering `alpn` (a browser offers h2 and http/1.1).
async fn connect_offering(addr: std::net::SocketAddr, dir: &Path, alpn: &[&[u8]]) -> Tls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    client(dir, alpn).connect(name, tcp).await.unwrap()
}

async fn connect(addr: std::net::SocketAddr, dir: &Path) -> Tls {
    connect_offering(addr, dir, &[b"h2", b"http/1.1"]).await
}

fn get(path: &str, key: Option<&str>) -> hyper::Request<Empty<bytes::Bytes>> {
    let mut req = hyper::Request::get(format!("https://127.0.0.1{path}"));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    req.body(Empty::new()).unwrap()
}

/// A second server certificate from the same CA, with a new key (a renewal).
fn renew(dir: &Path) {
    leaf(
        dir,
        "renewed",
        "localhost",
        Some("subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_h2_and_http1_by_alpn_and_a_renewed_certificate_keeps_open_connections() {
    let db = migrated_db();
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (key, line) = new_key("tls-client", "reports");
    std::fs::write(dir.path().join("keys"), format!("{line}\n")).unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(dir.path().join("server.crt"), &cert_file).unwrap();
    std::fs::copy(dir.path().join("server.key"), &key_file).unwrap();
    let keys = dir.path().join("keys");
    let service = TestApp::new(&db.url)
        .with(|c| {
            c.access.api_keys_file = Some(keys);
            c.access.tls_cert_file = Some(cert_file.clone());
            c.access.tls_key_file = Some(key_file.clone());
        })
        .start()
        .await;
    wait_for_run(&service, 0).await;

    // HTTP/2 by ALPN; the connection stays open across the renewal.
    let tls = connect(service.addr, dir.path()).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let first_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = h2
        .send_request(get("/api/reports/daily_usage", Some(&key)))
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, hyper::Version::HTTP_2)
    );
    assert_eq!(
        h2.send_request(get("/api/reports/daily_usage", None))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h2.send_request(get("/health_check", None))
            .await
            .unwrap()
            .status(),
        200
    );

    // HTTP/1.1 for a client that offers only it.
    {
        let tls = connect_offering(service.addr, dir.path(), &[b"http/1.1"]).await;
        let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = h1
            .send_request(get("/api/reports/daily_usage", Some(&key)))
            .await
            .unwrap();
        assert_eq!(
            (resp.status().as_u16(), resp.version()),
            (200, hyper::Version::HTTP_11)
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"{"));
    }

    // cert-manager renews: key and certificate replaced; new handshakes get the new one within seconds.
    renew(dir.path());
    for (from, to) in [("renewed.key", &key_file), ("renewed.crt", &cert_file)] {
        let tmp = to.with_extension("new");
        std::fs::copy(dir.path().join(from), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    let renewed = CertificateDer::from_pem_file(dir.path().join("renewed.crt"))
        .unwrap()
        .to_vec();
    assert_ne!(renewed, first_cert);
    let started = Instant::now();
    loop {
        let tls = connect(service.addr, dir.path()).await;
        if tls.get_ref().1.peer_certificates().unwrap()[0].as_ref() == renewed.as_slice() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the renewed certificate was not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the renewal still answers.
    let resp = h2
        .send_request(get("/api/reports/daily_usage", Some(&key)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(service.shutdown(Duration::from_secs(5)).await);
}

#[test]
fn a_missing_certificate_or_a_key_of_another_certificate_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let d = dir.path();
    for (cert, key, var) in [
        (d.join("absent.crt"), d.join("server.key"), "TLS_CERT_FILE"),
        (d.join("server.crt"), d.join("absent.key"), "TLS_KEY_FILE"),
        (d.join("server.crt"), d.join("client.key"), "TLS_KEY_FILE"),
        (d.join("server.key"), d.join("server.key"), "TLS_CERT_FILE"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coworking-analytics"))
            .arg("serve")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("TLS_CERT_FILE", &cert)
            .env("TLS_KEY_FILE", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.starts_with(&format!("configuration error: {var}")),
            "{stderr}"
        );
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }
}
