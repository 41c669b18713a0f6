//! Hostile clients on real sockets: trickled headers, idle keep-alive, oversized heads, a connection flood,
//! bodies on GET, malformed HTTP. After each, the server must still answer normally.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::{add_one_checkin, migrated_db, parse_response, request, wait_for_run, TestApp};
use coworking_analytics::config::Config;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF or `limit`; returns the bytes and whether the peer closed.
async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

async fn still_serves(addr: SocketAddr) {
    let resp = request(addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "{\"2023-02-01\":1}\n");
}

async fn app(
    change: impl FnOnce(&mut Config),
) -> (common::TestDb, coworking_analytics::app::Service) {
    let db = migrated_db();
    add_one_checkin(&mut db.conn());
    let service = TestApp::new(&db.url).with(change).start().await;
    wait_for_run(&service, 0).await;
    (db, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let (_db, service) = app(|c| c.http.http_header_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(service.addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /api/reports/daily_usage HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa"
    {
        if s.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    if !closed {
        let (_, eof) = read_until_close(&mut s, Duration::from_secs(3)).await;
        closed = eof;
    }
    assert!(
        closed,
        "connection still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    still_serves(service.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_db, service) = app(|c| c.http.http_idle_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(service.addr).await.unwrap();
    s.write_all(b"GET /health_check HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (bytes, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        bytes.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(closed, "idle connection kept open for 5 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
    still_serves(service.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() {
    let (_db, service) = app(|c| c.http.http_max_header_bytes = 8192).await;
    let mut s = TcpStream::connect(service.addr).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let req = format!("GET /health_check HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await; // the server may close before reading it all
    let (bytes, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    if !bytes.is_empty() {
        assert_eq!(parse_response(&bytes).status, 431);
    }
    still_serves(service.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_a_json_503_and_capacity_returns() {
    let (_db, service) = app(|c| c.http.http_max_connections = 2).await;
    let a = TcpStream::connect(service.addr).await.unwrap();
    let b = TcpStream::connect(service.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = TcpStream::connect(service.addr).await.unwrap();
    c.write_all(b"GET /health_check HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_until_close(&mut c, Duration::from_secs(5)).await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["error"], "too_many_connections");
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serves(service.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_on_get_is_refused_with_json() {
    let (_db, service) = app(|_| {}).await;
    let mut s = TcpStream::connect(service.addr).await.unwrap();
    s.write_all(
        b"GET /api/reports/daily_usage HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let (bytes, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let resp = parse_response(&bytes);
    assert_eq!(resp.status, 400);
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["error"], "body_not_allowed");
    still_serves(service.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_is_answered_400_or_closed() {
    let (_db, service) = app(|_| {}).await;
    let garbage: [&[u8]; 6] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health_check HTTP/1.1\r\nHost x\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"GET /health_check HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /health_check HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n",
    ];
    for raw in garbage {
        let mut s = TcpStream::connect(service.addr).await.unwrap();
        let _ = s.write_all(raw).await;
        let (bytes, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "{raw:?}: connection left open");
        if !bytes.is_empty() {
            let status = parse_response(&bytes).status;
            assert!((400..500).contains(&status), "{raw:?}: {status}");
        }
    }
    still_serves(service.addr).await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port_with_the_same_limits() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (_db, service) = app(|c| c.http.http_max_header_bytes = 8192).await;
    let stream = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an h2c handshake");
    tokio::spawn(conn);
    let get = |path: &str, extra: Option<String>| {
        let mut req = hyper::Request::get(format!("http://test{path}"));
        if let Some(v) = extra {
            req = req.header("x-big", v);
        }
        req.body(Empty::<bytes::Bytes>::new()).unwrap()
    };
    let resp = sender
        .send_request(get("/api/reports/daily_usage", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"2023-02-01\":1}\n");
    // A header list over the limit is refused (a 431, or the stream reset), never served.
    let big = "x".repeat(20_000);
    match sender
        .send_request(get("/api/reports/daily_usage", Some(big)))
        .await
    {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // HTTP/1.1 on the same port still works.
    still_serves(service.addr).await;
    service.shutdown(Duration::from_secs(5)).await;
}
