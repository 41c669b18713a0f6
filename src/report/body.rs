//! The one response body type: one buffer, or a report's chunks written in order without being joined. Its exact
//! length is known up front (hyper sends `Content-Length`), and hyper hands the queued chunks to the socket in one
//! vectored write. A [`Representation`] is a body with what `http` needs to send it: its validator, its encoding,
//! its media type, and the link to the next page.

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body of reference-counted parts (cloning a body copies no bytes).
#[derive(Debug, Clone, Default)]
pub struct Body {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Body {
    /// A body of these parts, in order.
    pub fn parts(parts: Vec<Bytes>) -> Self {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        Body {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
            remaining,
        }
    }
}

impl Body {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Its bytes in one buffer (a copy: for compressing a small body, and for the tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.remaining).unwrap_or(0));
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out
    }
}

/// What a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Csv,
    Html,
}

impl Media {
    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Media::Json => "application/json",
            Media::Csv => "text/csv; charset=utf-8; header=present",
            Media::Html => "text/html; charset=utf-8",
        }
    }
}

/// One representation of a report for one request: the body, its strong or weak validator, whether it is
/// gzipped, its media type, and `Link: <...>; rel="next"` of a page that has a next one.
#[derive(Debug, Clone)]
pub struct Representation {
    pub body: Body,
    /// Quoted entity tag (`W/` prefixed when weak).
    pub etag: String,
    pub gzipped: bool,
    pub media: Media,
    pub next: Option<String>,
}

impl Representation {
    /// An identity-encoded JSON representation of `body`.
    pub fn json(body: impl Into<Body>, etag: String) -> Self {
        Representation {
            body: body.into(),
            etag,
            gzipped: false,
            media: Media::Json,
            next: None,
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::parts(vec![b])
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.pop_front();
        if let Some(p) = &next {
            self.remaining -= p.len() as u64;
        }
        Poll::Ready(next.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn parts_come_out_in_order_with_an_exact_length() {
        let body = Body::parts(vec![
            Bytes::from_static(b"{"),
            Bytes::new(),
            Bytes::from_static(b"\"a\":1"),
            Bytes::from_static(b"}\n"),
        ]);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(8));
        assert_eq!(
            &body.collect().await.unwrap().to_bytes()[..],
            b"{\"a\":1}\n"
        );
    }
}
