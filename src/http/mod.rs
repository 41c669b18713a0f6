//! The HTTP server (hyper 1.x): accepts connections, hands each request to [`routes::handle`], and shuts down
//! gracefully. One port speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c, as some load balancers and meshes
//! talk to pods): hyper-util's auto builder tells them apart by the connection preface.
//!
//! Per connection (see [`Limits`]): headers must arrive within `header_read_timeout` (hyper's timer), a
//! connection with no bytes moving for `idle_timeout` is closed (a keep-alive client that went quiet, or a
//! reader that stopped reading), request heads are capped at `max_header_bytes` (hyper answers 431 on HTTP/1.1;
//! HTTP/2 advertises it as `SETTINGS_MAX_HEADER_LIST_SIZE` and refuses larger header lists), and at most
//! `max_connections` are open at once: the next one gets a 503 JSON answer and is closed.
//!
//! Concurrency state: each connection runs in its own task in `tasks` (a `JoinSet`), holding a semaphore permit
//! and a clone of the shutdown receiver. On shutdown the accept loop stops, each task asks hyper to finish the
//! in-flight request and close, and [`serve`] waits for the set to empty, aborting what is left at the deadline.

pub mod caching;
pub mod guard;
pub mod reports;
pub mod respond;
pub mod routes;
pub mod state;
mod streams;
pub mod tls;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use slog::{info, warn, Logger};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use state::AppState;

/// Protection against slow, idle and greedy clients (declared with the rest of the configuration).
pub use crate::config::HttpLimits as Limits;

/// Answer to a connection over the limit (written raw: the connection is never handed to hyper).
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
retry-after: 1\r\ncontent-length: 82\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"connection limit reached; retry later\"}";

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` turns true, then drains open connections
/// for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
    log: Logger,
) {
    let permits = Arc::new(Semaphore::new(limits.http_max_connections));
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let mut stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Usually EMFILE under a connection flood: back off briefly instead of spinning.
                warn!(log, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tasks.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (state, rx, tls) = (Arc::clone(&state), shutdown.clone(), tls.clone());
        tasks.spawn(async move {
            match tls {
                None => connection(stream, state, rx, limits).await,
                // The handshake gets the time a request head gets; a client that fails it is simply closed.
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.http_header_timeout, acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        connection(stream, state, rx, limits).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => info!(log, "http connections drained"),
        Err(_) => {
            warn!(log, "http drain deadline passed; closing remaining connections"; "open" => tasks.len());
            tasks.shutdown().await;
        }
    }
}

/// One connection, from the first byte (after the TLS handshake) to close.
async fn connection<S>(
    stream: S,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let epoch = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: stream,
        epoch,
        activity: Arc::clone(&activity),
    });
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move {
            let started = std::time::Instant::now();
            let route = routes::Route::from_path(req.uri().path());
            let head = req.method() == hyper::Method::HEAD;
            let mut resp = match route {
                None => routes::handle(&state, req, &guard::Grant::open()),
                Some(route) => admitted(&state, route, req).await,
            };
            state.metrics.record_http(
                route.map_or("other", routes::Route::path),
                resp.status().as_u16(),
                started.elapsed(),
            );
            if head {
                without_content(&mut resp);
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(streams::FirstPollInline);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout)
        .max_buf_size(limits.http_max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.http_max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // A stream may queue up to 4 MiB of a report's frames (shared parts, not copies), so the connection task
        // writes a large body out without waking the stream's task for every 400 KiB (hyper's default).
        .max_send_buf_size(4 * 1024 * 1024);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut hard_deadline: Option<Instant> = None;
    loop {
        let last = epoch + Duration::from_millis(activity.load(Ordering::Relaxed));
        let wake = hard_deadline.unwrap_or(last + limits.http_idle_timeout);
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if hard_deadline.is_some() {
                    return; // a reader that never took its response: drop the connection
                }
                let last = epoch + Duration::from_millis(activity.load(Ordering::Relaxed));
                if Instant::now() >= last + limits.http_idle_timeout {
                    // Idle: close between requests, or give a stalled response one more period.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    hard_deadline = Some(Instant::now() + limits.http_idle_timeout);
                }
            }
        }
    }
}

/// A request for a known route: a CORS preflight, or let in (or refused) by the guard, then answered; CORS
/// headers on whatever it gets, and the audit line for member data.
async fn admitted(
    state: &AppState,
    route: routes::Route,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<crate::report::Body> {
    if let Some(resp) = guard::preflight(state, &req) {
        return resp;
    }
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let mut resp = match guard::admit(state, route.scope(), &req).await {
        Ok(grant) => {
            let query = req.uri().query().map(str::to_owned);
            let resp = routes::handle(state, req, &grant);
            if route == routes::Route::UserVisits {
                guard::audit(state, &grant, route.path(), query.as_deref(), resp.status());
            }
            resp
        }
        Err(resp) => resp,
    };
    guard::allow_origin(state, origin.as_ref(), &mut resp);
    resp
}

/// A HEAD response: the GET response's header fields, `Content-Length` included, and no content (RFC 9110 9.3.2;
/// RFC 9113 8.1.1 makes content in it a protocol error on HTTP/2, where hyper does not drop it as on HTTP/1.1).
fn without_content(resp: &mut hyper::Response<crate::report::Body>) {
    let len = resp.body().len();
    let bodiless = resp.status() == hyper::StatusCode::NOT_MODIFIED
        || resp.status() == hyper::StatusCode::NO_CONTENT;
    if !bodiless && !resp.headers().contains_key(hyper::header::CONTENT_LENGTH) {
        resp.headers_mut().insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(len),
        );
    }
    *resp.body_mut() = crate::report::Body::default();
}

/// The socket, noting when bytes last moved in either direction (milliseconds since `epoch`).
struct Tracked<S> {
    inner: S,
    epoch: Instant,
    activity: Arc<AtomicU64>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }
    // Vectored writes must be forwarded: without them hyper falls back to its "flatten" strategy and copies
    // every response body into a per-connection buffer (64 readers of a 6 MB report were 400 MB of RSS).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_busy_answer_declares_its_body_length() {
        let text = std::str::from_utf8(super::BUSY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.lines()
                .any(|l| l == format!("content-length: {}", body.len())),
            "{text}"
        );
    }

    /// hyper copies every body into a per-connection buffer unless the IO says it takes vectored writes.
    #[tokio::test]
    async fn the_tracked_socket_keeps_vectored_writes() {
        use tokio::io::AsyncWrite;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(inner.is_write_vectored(), "the plain socket does");
        let tracked = super::Tracked {
            inner,
            epoch: tokio::time::Instant::now(),
            activity: std::sync::Arc::default(),
        };
        assert!(tracked.is_write_vectored());
    }
}
