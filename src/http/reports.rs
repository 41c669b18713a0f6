//! Serving the cached reports and the dashboard over HTTP: the query's parameters and what the client accepts,
//! the representation the snapshot answers with ([`crate::cache::Snapshot::answer`]), then validation (304) and
//! the headers (`ETag`, `Last-Modified`, `Cache-Control`, `Vary`, `Link`, the data's age).
//!
//! Cost per request: an `Arc` clone of the snapshot, and for the unfiltered bodies a reference-counted copy of
//! bytes rendered and gzipped once per refresh; what the other requests cost is said in the cache's `answer`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::caching::{accepts_csv, accepts_gzip, list};
use super::respond::{error, json, representation};
use super::state::AppState;
use crate::access::Denied;
use crate::cache::Ask;
use crate::report::{params, Body, Kind, QueryError};

type Resp = Response<Body>;

pub fn serve<B>(state: &AppState, req: &Request<B>, report: Kind) -> Resp {
    serve_for(state, req, report, None)
}

/// `user_visits` for a member token: that member's entry alone (the request names no one, or exactly them).
pub fn serve_member<B>(state: &AppState, req: &Request<B>, member: i32) -> Resp {
    serve_for(state, req, Kind::UserVisits, Some(member))
}

fn serve_for<B>(state: &AppState, req: &Request<B>, report: Kind, member: Option<i32>) -> Resp {
    let Some(snap) = state.cache.current() else {
        // Before the first load: a JSON error for the reports, a page that reloads itself for a browser.
        let mut resp = if report == Kind::Dashboard {
            let mut r = Response::new(Body::from(Bytes::from_static(
                crate::dashboard::not_ready_page().as_bytes(),
            )));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            page_headers(r.headers_mut());
            r
        } else {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the reports have not been computed yet; retry shortly",
            )
        };
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    };
    let mut params = match params::parse(report, req.uri().query()) {
        Ok(p) => p,
        Err(e) => return bad_parameter(&e),
    };
    if let Some(member) = member {
        let others = params.users.ids.iter().any(|id| *id != member);
        if others || params.page.is_some() {
            return super::guard::denied(&Denied::NotOwnEntry(member));
        }
        params.users.ids.insert(member);
    }
    let now = Utc::now();
    let runs = state.cache.recent_runs();
    let chosen = snap.answer(&Ask {
        kind: report,
        params: &params,
        gzip_ok: accepts_gzip(&list(req.headers(), header::ACCEPT_ENCODING)),
        csv_wanted: accepts_csv(&list(req.headers(), header::ACCEPT)),
        zones: state.zones,
        runs: &runs,
        age_secs: state.cache.age(&snap, now).as_secs(),
    });
    // The representation changes with the data; the dashboard page also shows the run, so it changes with it.
    let last_modified = match report {
        Kind::Dashboard => snap.computed_at,
        _ => snap.data.changed_at,
    };
    let not_modified = not_modified(req.headers(), &chosen.etag, last_modified);
    let next = chosen.next.clone();
    let mut resp = representation(chosen, not_modified);
    let headers = resp.headers_mut();
    // The reports come in JSON or CSV by `Accept`, each plain or gzipped; the page only in HTML.
    let vary = match report {
        Kind::Dashboard => "Accept-Encoding",
        _ => "Accept, Accept-Encoding",
    };
    headers.insert(header::VARY, HeaderValue::from_static(vary));
    if let Some(v) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, v);
    }
    // On the schedule, what counts is the run the data comes from: one that started at or after the newest tick
    // is that tick's, and nothing changes the data before the next tick's run. (A sync that found nothing pending
    // says less: a change committed just after it is still taken up by the tick's run, a moment later.)
    let complete = snap.started_at;
    // Behind a credential, only the client's own cache may keep an answer (no shared cache may hand it on).
    let cache_control = if state.access.is_open() {
        state.cache_policy.header(now, complete)
    } else {
        HeaderValue::from_static("private, no-cache")
    };
    headers.insert(header::CACHE_CONTROL, cache_control);
    let last_modified = last_modified
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    headers.insert(
        "x-data-age-seconds",
        HeaderValue::from(state.cache.age(&snap, now).as_secs()),
    );
    headers.insert("x-refresh-run-id", HeaderValue::from(snap.run_id));
    if report == Kind::Dashboard {
        page_headers(headers);
    }
    resp
}

/// The dashboard's pages need nothing from anywhere: say so, so a browser refuses any request it might try.
fn page_headers(headers: &mut hyper::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// A 400 naming the parameter.
fn bad_parameter(e: &QueryError) -> Resp {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({
            "error": "invalid_parameter",
            "parameter": e.param,
            "message": e.to_string(),
        }),
    )
}

/// `If-None-Match` uses the weak comparison (RFC 9110 13.1.2): `W/` prefixes are ignored; `*` matches.
/// RFC 9110 13.2.2: `If-None-Match` decides when present; otherwise `If-Modified-Since` answers 304 when the
/// representation has not changed since that date (HTTP dates have whole seconds; an unparsable one is ignored).
pub fn not_modified(headers: &hyper::HeaderMap, etag: &str, changed_at: DateTime<Utc>) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // Every `If-None-Match` line, as one list (RFC 9110 5.3).
    if headers.contains_key(header::IF_NONE_MATCH) {
        return etag_matches(&list(headers, header::IF_NONE_MATCH), etag);
    }
    text(header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| changed_at.timestamp() <= DateTime::<Utc>::from(since).timestamp())
}

pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        let weak = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_owned();
        candidate == "*" || weak(candidate) == weak(etag)
    })
}
