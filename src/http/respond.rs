//! The small responses every handler builds: plain text, JSON, and the JSON error body
//! `{"error":"<code>","message":"<text>"}` with its status.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::report::{Body, Representation};

type Resp = Response<Body>;

/// A plain-text answer that no cache keeps (the probes).
pub fn text(status: StatusCode, body: &str) -> Resp {
    let mut resp = Response::new(Body::from(Bytes::from(body.to_owned())));
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
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

/// A JSON response: `value` serialised, with its status and `Content-Type`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut resp = Response::new(Body::from(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `rep` as a response: a `304` without content when the client's validator matched, else its body with
/// `Content-Type` and `Content-Encoding`; its `ETag` either way.
pub fn representation(rep: Representation, not_modified: bool) -> Resp {
    let mut resp = if not_modified {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(rep.body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(rep.media.content_type()),
        );
        if rep.gzipped {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    if let Ok(v) = HeaderValue::from_str(&rep.etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}
