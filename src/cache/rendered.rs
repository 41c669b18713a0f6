//! A body derived on request and kept with its data (another zone, periods, occupancy, CSV): the identity
//! representation and its gzip encoding, with strong ETags for both; and the validators and compression every
//! body shares. The two reports are kept in chunks instead ([`super::chunked`]).

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use sha2::{Digest, Sha256};
use std::io::Write;

use crate::report::{Body, Media, Representation};

/// Bodies up to this size are never compressed: the gzip header and trailer would eat most of the gain.
pub const MIN_COMPRESS_BYTES: usize = 1024;

/// A body rendered whole, in both encodings; tags derive from the bytes, so every replica agrees on them.
#[derive(Debug, Clone)]
pub struct Encodings {
    pub identity: Representation,
    /// The gzip-encoded form (`None` when the body is too small to be worth it).
    pub gzip: Option<Representation>,
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

impl Encodings {
    /// Tags and compresses `body` (of media type `media`) once, here.
    pub fn new(body: Vec<u8>, media: Media) -> Self {
        let tag = tag_of(&body);
        let gzip = (body.len() > MIN_COMPRESS_BYTES)
            .then(|| gzip(&body, Compression::default()))
            .flatten()
            .map(|gz| Representation {
                gzipped: true,
                media,
                ..Representation::json(Bytes::from(gz), format!("\"{tag}-gzip\""))
            });
        Encodings {
            identity: Representation {
                media,
                ..Representation::json(Bytes::from(body), format!("\"{tag}\""))
            },
            gzip,
        }
    }

    /// The representation for a client that accepts gzip or not.
    pub fn pick(&self, gzip_ok: bool) -> Representation {
        match (&self.gzip, gzip_ok) {
            (Some(gz), true) => gz.clone(),
            _ => self.identity.clone(),
        }
    }
}

/// `subset`, gzipped at the fastest level when the client accepts it and it is worth it (a filtered or paged
/// body, compressed per request).
pub fn compress_if_worth(subset: Representation, gzip_ok: bool) -> Representation {
    if gzip_ok && !subset.gzipped && subset.body.len() > MIN_COMPRESS_BYTES as u64 {
        if let Some(gz) = gzip(&subset.body.to_vec(), Compression::fast()) {
            return Representation {
                body: Body::from(Bytes::from(gz)),
                etag: format!("{}-gzip\"", subset.etag.trim_end_matches('"')),
                gzipped: true,
                ..subset
            };
        }
    }
    subset
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips_and_has_its_own_tag() {
        let body: Vec<u8> = format!("{{{}}}\n", "\"k\":1,".repeat(500)).into_bytes();
        let r = Encodings::new(body.clone(), Media::Json);
        let gz = r.gzip.as_ref().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz.body.to_vec()[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
        assert_ne!(gz.etag, r.identity.etag);
        assert!(
            Encodings::new(b"{}\n".to_vec(), Media::Json).gzip.is_none(),
            "tiny bodies are not compressed"
        );
    }
}
