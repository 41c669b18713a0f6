//! The response body: one buffer, or a report's chunks written in order without being joined. Its exact length
//! is known up front (hyper sends `Content-Length`), and hyper hands the queued chunks to the socket in one
//! vectored write.

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body of reference-counted parts (cloning a part copies no bytes).
#[derive(Debug, Default)]
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
