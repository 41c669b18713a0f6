//! The one response body type: one buffer, or a report's chunks written in order without being joined. Its exact
//! length is known up front (hyper sends `Content-Length`). The body goes out in frames of up to [`FRAME_BYTES`],
//! each a [`Frame`] of several parts ([`Parts`], a `Buf` over shared buffers, never copied): HTTP/1.1 writes them
//! with one vectored write, HTTP/2 cuts them into DATA frames as large as the peer allows (one DATA frame per
//! chunk made a 1.7 kB body 17 frames, and HTTP/2 cost 2-4x the CPU of HTTP/1.1). A [`Representation`] is a body with what `http` needs to send it: its validator, its encoding,
//! its media type, and the link to the next page.

use bytes::{Buf, BufMut, Bytes};
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

/// Most bytes handed to hyper in one frame (HTTP/2 cuts it into DATA frames of the peer's maximum size).
pub const FRAME_BYTES: usize = 256 * 1024;

/// A part shorter than this is copied together with its small neighbours (see [`SmallRun`]).
pub const SMALL_PART: usize = 1024;

/// Most bytes of small parts copied into one buffer: HTTP/2's default (and usual) largest DATA frame.
const SMALL_RUN_BYTES: usize = 16 * 1024;

/// Consecutive small parts waiting to become one buffer. A gzipped report is many parts of a few hundred bytes
/// (one per chunk); handed over as they are, one 3 kB body was 26 slices, more than one vectored write takes
/// (HTTP/2 writes at most 16 of a DATA frame's), so each response cost two writes. Copying them is bounded by the
/// bytes in parts under [`SMALL_PART`]: parts of 1 kB and more are never copied.
#[derive(Default)]
struct SmallRun {
    parts: Vec<Bytes>,
    len: usize,
}

impl SmallRun {
    fn push(&mut self, part: Bytes, frame: &mut Parts) {
        if self.len + part.len() > SMALL_RUN_BYTES {
            self.end(frame);
        }
        self.len += part.len();
        self.parts.push(part);
    }

    /// The run, as one buffer (or its only part, uncopied), onto the end of `frame`.
    fn end(&mut self, frame: &mut Parts) {
        match self.parts.len() {
            0 => {}
            1 => frame.push(self.parts.remove(0)),
            _ => {
                let mut joined = bytes::BytesMut::with_capacity(self.len);
                for p in self.parts.drain(..) {
                    joined.extend_from_slice(&p);
                }
                frame.push(joined.freeze());
            }
        }
        self.len = 0;
    }
}

/// Consecutive parts of a body as one `Buf`: read in order, written vectored, never joined.
#[derive(Debug, Default)]
pub struct Parts {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Parts {
    fn push(&mut self, part: Bytes) {
        self.remaining += part.len();
        self.parts.push_back(part);
    }
}

impl Buf for Parts {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |p| &p[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // One whole part: hand it over without a copy.
        match self.parts.front() {
            Some(front) if front.len() == len => {
                self.remaining -= len;
                self.parts.pop_front().unwrap_or_default()
            }
            _ => {
                let mut out = bytes::BytesMut::with_capacity(len);
                out.put(self.take(len));
                out.freeze()
            }
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Parts;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Parts>, Infallible>>> {
        let mut frame = Parts::default();
        let mut run = SmallRun::default();
        while let Some(p) = self.parts.front() {
            if frame.remaining + run.len + p.len() > FRAME_BYTES
                && !(frame.parts.is_empty() && run.parts.is_empty())
            {
                break;
            }
            let Some(p) = self.parts.pop_front() else {
                break;
            };
            if p.len() < SMALL_PART {
                run.push(p, &mut frame);
            } else {
                run.end(&mut frame);
                frame.push(p);
            }
        }
        run.end(&mut frame);
        if frame.parts.is_empty() {
            return Poll::Ready(None);
        }
        self.remaining -= frame.remaining as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
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

    #[tokio::test]
    async fn small_parts_travel_together_and_large_ones_alone() {
        let small = |n: usize| Bytes::from(vec![b'a'; n]);
        let large = small(FRAME_BYTES - 100);
        let mut body = Body::parts(vec![
            small(10),
            small(20),
            large.clone(),
            small(SMALL_PART),
            small(5),
            small(200),
        ]);
        let mut frames = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        let sizes: Vec<Vec<usize>> = frames
            .iter()
            .map(|f| f.parts.iter().map(Bytes::len).collect())
            .collect();
        // The two small parts became one buffer; the large one went alone and uncopied; the 1 kB part is not
        // small, and the two small ones after it are joined.
        assert_eq!(
            sizes,
            vec![vec![30, FRAME_BYTES - 100], vec![SMALL_PART, 205]]
        );
        assert_eq!(frames[0].parts[1].as_ptr(), large.as_ptr());
    }

    #[tokio::test]
    async fn many_tiny_parts_become_few_buffers_of_the_same_bytes() {
        let parts: Vec<Bytes> = (0..3000u32).map(|i| Bytes::from(format!("{i},"))).collect();
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        let mut body = Body::parts(parts);
        let mut got = Vec::new();
        let mut buffers = 0;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.parts.iter().all(|p| p.len() <= SMALL_RUN_BYTES));
            buffers += data.parts.len();
            got.extend(data.parts.iter().flat_map(|p| p.to_vec()));
        }
        assert_eq!(got, whole);
        assert_eq!(buffers, whole.len().div_ceil(SMALL_RUN_BYTES));
    }

    #[test]
    fn parts_read_as_one_buffer() {
        let mut p = Parts {
            parts: [&b"ab"[..], b"cde", b"f"]
                .into_iter()
                .map(Bytes::from_static)
                .collect(),
            remaining: 6,
        };
        let mut slices = [std::io::IoSlice::new(&[]); 4];
        assert_eq!(p.chunks_vectored(&mut slices), 3);
        p.advance(3);
        assert_eq!((p.chunk(), p.remaining()), (&b"de"[..], 3));
        assert_eq!(&p.copy_to_bytes(2)[..], b"de");
        assert_eq!(&p.copy_to_bytes(1)[..], b"f");
        assert_eq!(p.remaining(), 0);
    }
}
