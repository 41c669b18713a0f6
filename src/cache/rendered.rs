//! A small body rendered whole (the dashboard page): the identity bytes, their gzip encoding, strong ETags for
//! both. The two reports are kept in chunks instead ([`super::chunked`]).

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use sha2::{Digest, Sha256};
use std::io::Write;

/// Bodies up to this size are never compressed: the gzip header and trailer would eat most of the gain.
pub const MIN_COMPRESS_BYTES: usize = 1024;

/// One encoded representation and its validator.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: Bytes,
    /// Quoted strong entity tag.
    pub etag: String,
}

/// A rendered response body with its strong validator and its gzip form.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    /// Quoted strong entity tag derived from the body bytes, so every replica agrees on it.
    pub etag: String,
    /// The gzip-encoded body (`None` when the body is too small to be worth it).
    pub gzip: Option<Encoded>,
}

/// The unquoted tag of some bytes: the first 128 bits of their SHA-256, in hex.
pub fn tag_of(bytes: &[u8]) -> String {
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
    /// Renders, tags and compresses `body` once, here.
    pub fn new(body: Vec<u8>) -> Self {
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
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

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
        assert!(
            Rendered::new(b"{}\n".to_vec()).gzip.is_none(),
            "tiny bodies are not compressed"
        );
    }
}
