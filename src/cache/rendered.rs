//! One report, rendered once per data version into everything a request may ask for: the identity body, its
//! gzip encoding, strong ETags for both, and the byte range of every top-level entry so a filtered response is
//! a copy of slices, not a re-render.
//!
//! Both report bodies are a flat JSON object `{e1,e2,...}\n` whose entries are in key order (days ascending,
//! user ids numeric), so a filter picks entries by index and the result is again exactly the old format.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{write::GzEncoder, Compression};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::ops::Range;

/// Bodies up to this size are never compressed: the gzip header and trailer would eat most of the gain.
pub const MIN_COMPRESS_BYTES: usize = 1024;

/// One encoded representation and its validator.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: Bytes,
    /// Quoted strong entity tag.
    pub etag: String,
}

/// A rendered response body with its strong validator, its gzip form and its entry index.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    /// Quoted strong entity tag derived from the body bytes, so every replica agrees on it.
    pub etag: String,
    /// The gzip-encoded body (`None` when the body is too small to be worth it).
    pub gzip: Option<Encoded>,
    /// Byte range of each top-level entry of `body` (without the separating commas).
    entries: Vec<Range<u32>>,
}

/// The unquoted tag of some bytes: the first 128 bits of their SHA-256, in hex.
fn tag_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// gzip at the default level. Compressing into a `Vec` cannot fail; `None` only if it somehow did.
pub fn gzip(body: &[u8], level: Compression) -> Option<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), level);
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

impl Rendered {
    /// A body that is not indexed for filtering (the dashboard page).
    pub fn new(body: Vec<u8>) -> Self {
        Self::indexed(body, Vec::new())
    }

    /// A report body with the byte range of each entry; compresses it once, here.
    pub fn indexed(body: Vec<u8>, entries: Vec<Range<u32>>) -> Self {
        let tag = tag_of(&body);
        let gzip = (body.len() > MIN_COMPRESS_BYTES)
            .then(|| gzip(&body, Compression::default()))
            .flatten()
            .map(|gz| Encoded {
                body: Bytes::from(gz),
                etag: format!("\"{tag}-gzip\""),
            });
        Rendered {
            body: Bytes::from(body),
            etag: format!("\"{tag}\""),
            gzip,
            entries,
        }
    }

    /// Number of indexed entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The body made of the entries at `indices` (ascending), in the report's format. `filter` is the canonical
    /// spelling of the filter; the ETag derives from this report's tag and it, so it changes with either.
    pub fn subset(&self, indices: impl IntoIterator<Item = usize>, filter: &str) -> Encoded {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(b'{');
        for (n, i) in indices.into_iter().enumerate() {
            let Some(r) = self.entries.get(i) else {
                continue;
            };
            if n > 0 {
                out.put_u8(b',');
            }
            out.put_slice(&self.body[r.start as usize..r.end as usize]);
        }
        out.put_slice(b"}\n");
        let base = self.etag.trim_matches('"');
        Encoded {
            body: out.freeze(),
            etag: format!("\"{base}-{}\"", &tag_of(filter.as_bytes())[..12]),
        }
    }
}

/// Records entry ranges while a body is written: call [`Indexer::start`] before an entry and
/// [`Indexer::end`] after it.
#[derive(Debug, Default)]
pub struct Indexer {
    start: u32,
    pub entries: Vec<Range<u32>>,
}

impl Indexer {
    pub fn with_capacity(n: usize) -> Self {
        Indexer {
            start: 0,
            entries: Vec::with_capacity(n),
        }
    }

    pub fn start(&mut self, at: usize) {
        self.start = u32::try_from(at).unwrap_or(u32::MAX);
    }

    pub fn end(&mut self, at: usize) {
        self.entries
            .push(self.start..u32::try_from(at).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Rendered {
        let body = br#"{"a":1,"bb":22,"ccc":333}
"#
        .to_vec();
        Rendered::indexed(body, vec![1..6, 7..14, 15..24])
    }

    #[test]
    fn subsets_keep_the_format() {
        let r = sample();
        assert_eq!(&r.subset([0, 2], "x").body[..], b"{\"a\":1,\"ccc\":333}\n");
        assert_eq!(&r.subset([1], "x").body[..], b"{\"bb\":22}\n");
        assert_eq!(&r.subset([], "x").body[..], b"{}\n");
        assert_eq!(r.subset(0..3, "x").body, r.body);
        assert_ne!(r.subset([1], "x").etag, r.subset([1], "y").etag);
        assert!(r.subset([1], "x").etag.starts_with(&r.etag[..33]));
    }

    #[test]
    fn gzip_round_trips_and_has_its_own_tag() {
        let body: Vec<u8> = format!("{{{}}}\n", "\"k\":1,".repeat(500)).into_bytes();
        let r = Rendered::new(body.clone());
        let gz = r.gzip.as_ref().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz.body[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
        assert_ne!(gz.etag, r.etag);
        assert!(sample().gzip.is_none(), "tiny bodies are not compressed");
    }
}
