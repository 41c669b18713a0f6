//! Routing and the small handlers. Every handler answers from memory: the reports and the dashboard page from the
//! cache snapshot ([`super::reports`]), the probes from the snapshot's age, `/openapi.json` from the binary. No
//! request touches the database.
//!
//! Errors are JSON bodies `{"error":"<code>","message":"<text>"}` with the matching status.

use bytes::Bytes;
use chrono::Utc;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::caching::{accepts_gzip, accepts_openmetrics, list};
use super::guard::Grant;
use super::reports;
use super::respond::{error, representation, text};
use super::state::AppState;
use crate::access::Scope;
use crate::cache::rendered::Encodings;
use crate::report::{Body, Kind, Media};

type Resp = Response<Body>;

/// Every endpoint. [`handle`] matches it exhaustively: a new route does not compile until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Dashboard,
    DailyUsage,
    UserVisits,
    Occupancy,
    Health,
    Readiness,
    Metrics,
    OpenApi,
}

impl Route {
    pub const ALL: [Route; 8] = [
        Route::Dashboard,
        Route::DailyUsage,
        Route::UserVisits,
        Route::Occupancy,
        Route::Health,
        Route::Readiness,
        Route::Metrics,
        Route::OpenApi,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Route::Dashboard => "/",
            Route::DailyUsage => "/api/reports/daily_usage",
            Route::UserVisits => "/api/reports/user_visits",
            Route::Occupancy => "/api/reports/occupancy",
            Route::Health => "/health_check",
            Route::Readiness => "/readiness_check",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
        }
    }

    /// The methods the route allows (every route is read-only).
    pub fn allow(self) -> &'static str {
        "GET, HEAD"
    }

    /// The scope a request needs when access is guarded (`None`: public, as the kubelet's probes must be).
    pub fn scope(self) -> Option<Scope> {
        match self {
            Route::Health | Route::Readiness | Route::OpenApi => None,
            Route::Dashboard | Route::DailyUsage | Route::Occupancy => Some(Scope::Reports),
            Route::UserVisits => Some(Scope::Members),
            Route::Metrics => Some(Scope::Metrics),
        }
    }

    pub fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }
}

/// The OpenAPI 3 description of every route, served as is.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The route label of a path for metrics (unknown paths share one label, so they cannot blow up cardinality).
/// Answers one request that `grant` let in.
pub fn handle<B>(state: &AppState, req: Request<B>, grant: &Grant) -> Resp {
    let path = req.uri().path();
    let Some(route) = Route::from_path(path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no such endpoint: {path}"),
        );
    };
    let (path, allow) = (route.path(), route.allow());
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {path}; use {allow}", req.method()),
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
            &format!("{} {path} takes no request body", req.method()),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    match route {
        Route::Health => text(StatusCode::OK, "ok"),
        Route::Readiness => readiness(state),
        Route::Metrics => prometheus(state, &req),
        Route::OpenApi => openapi(&req),
        Route::Dashboard => reports::serve(state, &req, Kind::Dashboard),
        Route::DailyUsage => reports::serve(state, &req, Kind::DailyUsage),
        Route::UserVisits => match grant.only_member {
            None => reports::serve(state, &req, Kind::UserVisits),
            Some(member) => reports::serve_member(state, &req, member),
        },
        Route::Occupancy => reports::serve(state, &req, Kind::Occupancy),
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
            let age = state.cache.age(&snap, Utc::now());
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

/// `/metrics`: OpenMetrics when the client asks for it (`Accept: application/openmetrics-text`, as Prometheus
/// does when it may), else the Prometheus text format 0.0.4 (`text/plain`, what older scrapers and promtool read).
fn prometheus<B>(state: &AppState, req: &Request<B>) -> Resp {
    if let Some(snap) = state.cache.current() {
        state
            .metrics
            .set_data_age(state.cache.age(&snap, Utc::now()));
    }
    let openmetrics = accepts_openmetrics(&list(req.headers(), header::ACCEPT));
    let (body, content_type) = if openmetrics {
        (
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            state.metrics.encode_text_004(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut resp = Response::new(Body::from(Bytes::from(body)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    // Every scrape must see the values of its moment: no cache may keep them (RFC 9111 5.2.2.5).
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The OpenAPI document, tagged and gzipped once (it changes only with the binary).
static OPENAPI_BODIES: std::sync::LazyLock<Encodings> =
    std::sync::LazyLock::new(|| Encodings::new(OPENAPI.as_bytes().to_vec(), Media::Json));

/// `/openapi.json`: a strong ETag (304 on a match), gzip when accepted, revalidated on each use.
fn openapi<B>(req: &Request<B>) -> Resp {
    let chosen = OPENAPI_BODIES.pick(accepts_gzip(&list(req.headers(), header::ACCEPT_ENCODING)));
    let unchanged = req.headers().contains_key(header::IF_NONE_MATCH)
        && reports::etag_matches(&list(req.headers(), header::IF_NONE_MATCH), &chosen.etag);
    let mut resp = representation(chosen, unchanged);
    let headers = resp.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
