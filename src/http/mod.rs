//! The HTTP server (hyper 1.x, HTTP/1.1): accepts connections, hands each request to [`routes::handle`], and
//! shuts down gracefully.
//!
//! Shutdown: when the shutdown signal flips, the accept loop stops, every open connection is told to finish its
//! in-flight request and close (hyper-util's `GracefulShutdown`), and [`serve`] returns once they have or when
//! the drain deadline passes.

pub mod routes;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use slog::{info, warn, Logger};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use routes::AppState;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` turns true, then drains open connections for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    log: Logger,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE under a connection flood: back off briefly instead of spinning.
                warn!(log, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service = service_fn(move |req| {
            let state = Arc::clone(&state);
            async move {
                let started = std::time::Instant::now();
                let route = routes::route_label(req.uri().path());
                let resp = routes::handle(&state, req);
                state
                    .metrics
                    .record_http(route, resp.status().as_u16(), started.elapsed());
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => info!(log, "http connections drained"),
        _ = tokio::time::sleep(drain) => warn!(log, "http drain deadline passed; closing remaining connections"),
    }
}
