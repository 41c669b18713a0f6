//! Access control at the door: which scope each route needs, the 401 and 403 answers, CORS, and the audit line
//! of every answered request for member data. The credentials themselves are checked by [`crate::access`].
//!
//! - Open (no `API_KEYS_FILE`, no `JWT_ISSUER`): every request passes, as in the old service.
//! - Guarded: the probes and `/openapi.json` stay public (kubelet probes carry no credential); the rest needs a
//!   credential with the route's scope. A member token (`self`) reads only its own entry of `user_visits`.
//! - 401: `WWW-Authenticate` offers Bearer (API clients) and Basic (a browser's login prompt: the key is the
//!   password, any user name). 403 names the missing scope.

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use slog::info;
use std::sync::Arc;

use super::respond::error;
use super::state::AppState;
use crate::access::{Denied, Principal, Scope};
use crate::report::Body;

type Resp = Response<Body>;

/// The realm of the challenges.
pub const REALM: &str = "coworking-analytics";

/// What a request may see, once let in.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Who sent it (`None`: access is open, or the route is public).
    pub who: Option<Arc<Principal>>,
    /// A member token's own id: `user_visits` answers only that entry.
    pub only_member: Option<i32>,
}

impl Grant {
    /// Everything, as with open access.
    pub fn open() -> Grant {
        Grant::default()
    }
}

/// Lets a request for a route that needs `needed` (`None`: public) in, or answers 401/403.
pub async fn admit<B>(
    state: &AppState,
    needed: Option<Scope>,
    req: &Request<B>,
) -> Result<Grant, Resp> {
    let Some(needed) = needed else {
        return Ok(Grant::open());
    };
    if state.access.is_open() {
        return Ok(Grant::open());
    }
    let values: Vec<&[u8]> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let who = state
        .access
        .identify(&values)
        .await
        .map_err(|d| denied(&d))?;
    if who.scopes.has(needed) {
        return Ok(Grant {
            who: Some(who),
            only_member: None,
        });
    }
    if needed == Scope::Members && who.scopes.has(Scope::SelfMember) {
        if let Some(member) = who.member {
            return Ok(Grant {
                who: Some(who),
                only_member: Some(member),
            });
        }
    }
    Err(denied(&Denied::Forbidden(needed)))
}

/// The answer to a refused request.
pub fn denied(why: &Denied) -> Resp {
    match why {
        Denied::NoCredential | Denied::Unauthenticated(_) => {
            let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", &why.to_string());
            let h = resp.headers_mut();
            // RFC 6750 3.1: no error code when the request carried no credential at all.
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(if *why == Denied::NoCredential {
                    "Bearer realm=\"coworking-analytics\""
                } else {
                    "Bearer realm=\"coworking-analytics\", error=\"invalid_token\""
                }),
            );
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"coworking-analytics\", charset=\"UTF-8\""),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Denied::Forbidden(_) | Denied::NotOwnEntry(_) => {
            let mut resp = error(StatusCode::FORBIDDEN, "forbidden", &why.to_string());
            if let Denied::Forbidden(scope) = why {
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.name()
                )) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
    }
}

/// Logs an answered request for member data: who, the path and filter, the status (the audit trail).
pub fn audit(state: &AppState, grant: &Grant, path: &str, query: Option<&str>, status: StatusCode) {
    let who = grant.who.as_ref().map_or_else(
        || "anonymous (open access)".to_owned(),
        |w| w.name.to_string(),
    );
    info!(state.audit, "member data read";
          "audit" => true, "who" => who, "path" => path,
          "filter" => redacted(query.unwrap_or("")), "status" => status.as_u16());
}

/// A query string with anything that looks like an API key cut out (a client that put its key in the URL by
/// mistake gets a 400, and the audit line must not keep the key).
fn redacted(query: &str) -> std::borrow::Cow<'_, str> {
    if !query.contains(crate::access::keys::PREFIX) {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(at) = rest.find(crate::access::keys::PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str("cwa_[redacted]");
        let tail = &rest[at + crate::access::keys::PREFIX.len()..];
        let end = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A CORS preflight from an allowed origin: which methods and headers the real request may use.
pub fn preflight<B>(state: &AppState, req: &Request<B>) -> Option<Resp> {
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        || state.cors.0.is_empty()
    {
        return None;
    }
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if allow_origin(state, req.headers().get(header::ORIGIN), &mut resp) {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    Some(resp)
}

/// Adds `Access-Control-Allow-Origin` when the request's `Origin` is allowed; says whether it was.
pub fn allow_origin(state: &AppState, origin: Option<&HeaderValue>, resp: &mut Resp) -> bool {
    if state.cors.0.is_empty() {
        return false;
    }
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        return false;
    };
    if !state
        .cors
        .0
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
    {
        return false;
    }
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag, Link, Last-Modified, X-Data-Age-Seconds"),
    );
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_in_the_query_string_is_cut_out_of_the_audit_line() {
        let key = format!("cwa_{}", "ab12".repeat(16));
        let q = format!("user_id=1&key={key}&x={key}");
        assert_eq!(
            super::redacted(&q),
            "user_id=1&key=cwa_[redacted]&x=cwa_[redacted]"
        );
        assert_eq!(super::redacted("user_id=1,2"), "user_id=1,2");
    }
}
