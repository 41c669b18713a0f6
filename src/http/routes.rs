//! Routing and handlers. Every handler answers from memory: the report endpoints from the cache snapshot, the
//! probes from the snapshot's age. No request touches the database.
//!
//! Errors are JSON bodies `{"error":"<code>","message":"<text>"}` with the matching status.

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Rendered, ReportCache, Snapshot};
use crate::metrics::Metrics;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub cache: Arc<ReportCache>,
    pub metrics: Arc<Metrics>,
    /// Readiness fails when the served data is older than this.
    pub readiness_max_age: Duration,
}

type Resp = Response<Full<Bytes>>;

/// The routes and the methods each allows.
const ROUTES: &[(&str, &str)] = &[
    ("/api/reports/daily_usage", "GET, HEAD"),
    ("/api/reports/user_visits", "GET, HEAD"),
    ("/health_check", "GET, HEAD"),
    ("/readiness_check", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
];

/// The route label of a path for metrics (unknown paths share one label, so they cannot blow up cardinality).
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("other", |(p, _)| p)
}

/// Answers one request.
pub fn handle<B>(state: &AppState, req: Request<B>) -> Resp {
    let path = req.uri().path();
    let Some(&(route, allow)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no such endpoint: {path}"),
        );
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {route}; use {allow}", req.method()),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return resp;
    }
    // Nothing here takes a body: refuse one rather than leave it unread on a keep-alive connection.
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        let mut resp = error(
            StatusCode::BAD_REQUEST,
            "body_not_allowed",
            &format!("{} {route} takes no request body", req.method()),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    match route {
        "/health_check" => text(StatusCode::OK, "ok"),
        "/readiness_check" => readiness(state),
        "/metrics" => prometheus(state),
        "/api/reports/daily_usage" => report(state, &req, |s| &s.data.daily_usage),
        _ => report(state, &req, |s| &s.data.user_visits),
    }
}

/// 200 once a snapshot no older than the ceiling is loaded; otherwise 503 and why.
fn readiness(state: &AppState) -> Resp {
    match state.cache.current() {
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no successful refresh loaded yet",
        ),
        Some(snap) => {
            let age = snap.age(Utc::now());
            if age > state.readiness_max_age {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "not ready: data is {}s old, older than READINESS_MAX_AGE ({}s)",
                        age.as_secs(),
                        state.readiness_max_age.as_secs()
                    ),
                )
            } else {
                text(StatusCode::OK, "ok")
            }
        }
    }
}

fn prometheus(state: &AppState) -> Resp {
    if let Some(snap) = state.cache.current() {
        state.metrics.set_data_age(snap.age(Utc::now()));
    }
    let mut resp = Response::new(Full::new(Bytes::from(state.metrics.encode())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

fn report<B>(state: &AppState, req: &Request<B>, pick: fn(&Snapshot) -> &Rendered) -> Resp {
    let Some(snap) = state.cache.current() else {
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the reports have not been computed yet; retry shortly",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    };
    let rendered = pick(&snap);
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &rendered.etag));
    let mut resp = if not_modified {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(rendered.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rendered.etag) {
        headers.insert(header::ETAG, v);
    }
    let last_modified = snap
        .computed_at
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    headers.insert(
        "x-data-age-seconds",
        HeaderValue::from(snap.age(Utc::now()).as_secs()),
    );
    headers.insert("x-refresh-run-id", HeaderValue::from(snap.run_id));
    resp
}

/// `If-None-Match` uses the weak comparison (RFC 9110 13.1.2): `W/` prefixes are ignored; `*` matches.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

fn text(status: StatusCode, body: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON error body.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
