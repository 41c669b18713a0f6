//! One chunk of a report body ([`super::chunked`]): a key range's entries rendered, compressed on their own and
//! checksummed, once; and the raw-deflate block every compressed part is made of.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};

use crate::report::Entry;

/// Raw deflate of `data`, ended by a sync flush: byte-aligned, not final, independent of anything before it.
pub(super) fn deflate_block(data: &[u8], level: Compression) -> Vec<u8> {
    let mut c = Compress::new(level, false);
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let read = usize::try_from(c.total_in()).unwrap_or(data.len());
        match c.compress_vec(&data[read.min(data.len())..], &mut out, FlushCompress::Sync) {
            // The flush is complete once input is consumed and the output was not filled to the brim.
            Ok(Status::Ok | Status::BufError)
                if c.total_in() as usize == data.len() && out.len() < out.capacity() =>
            {
                return out
            }
            Ok(_) => {}
            // Compressing in memory does not fail; an empty block would only make the body shorter, and the
            // CRC check of every client would then reject it, so this is visible if it ever happens.
            Err(_) => return out,
        }
    }
}

/// `v` without spare capacity (a compressor's output buffer is sized for the worst case).
fn shrunk(mut v: Vec<u8>) -> Vec<u8> {
    v.shrink_to_fit();
    v
}

/// One key range of a report: text, entry offsets, compressed form, checksums. Immutable. The rows are not kept
/// (at 1M users they would be 24 MB beside the 62 MB of text): a patch parses the few chunks it rebuilds.
#[derive(Debug)]
pub struct Chunk<E> {
    /// `key >> shift` of every row.
    pub(super) no: i64,
    _rows: std::marker::PhantomData<E>,
    /// `,` followed by the entries joined by commas (the first chunk of a body is served without the comma).
    pub(super) text: Bytes,
    /// Offset in `text` of each entry (just after its comma).
    pub(super) starts: Vec<u32>,
    /// Raw deflate of the entries without the leading comma.
    pub(super) deflated: Bytes,
    /// CRC-32 of `text` and of `text[1..]`.
    pub(super) crc_comma: crc32fast::Hasher,
    pub(super) crc_bare: crc32fast::Hasher,
    pub(super) digest: [u8; 16],
}

impl<E: Entry> Chunk<E> {
    pub(super) fn build(no: i64, rows: Vec<E>, level: Compression) -> Self {
        let mut text = Vec::with_capacity(rows.len() * 64 + 1);
        let mut starts = Vec::with_capacity(rows.len());
        for row in &rows {
            text.push(b',');
            starts.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
            row.render(&mut text);
        }
        let mut crc_bare = crc32fast::Hasher::new();
        crc_bare.update(&text[1..]);
        let mut crc_comma = crc32fast::Hasher::new();
        crc_comma.update(b",");
        crc_comma.combine(&crc_bare);
        let digest = Sha256::digest(&text[1..]);
        Chunk {
            no,
            deflated: Bytes::from(shrunk(deflate_block(&text[1..], level))),
            digest: digest[..16].try_into().unwrap_or([0; 16]),
            text: Bytes::from(shrunk(text)),
            starts,
            _rows: std::marker::PhantomData,
            crc_comma,
            crc_bare,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.starts.len()
    }

    // Invariant: every entry was written by `E::render`, whose inverse `E::parse_key` is (tested in
    // src/report.rs and by every patch test).
    #[expect(clippy::expect_used)]
    fn key_at(&self, i: usize) -> i64 {
        E::parse_key(self.entry(i)).expect("a rendered entry has a key")
    }

    /// The number of leading entries whose key satisfies `pred` (which must be true, then false).
    pub(super) fn partition_point(&self, pred: impl Fn(i64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(self.key_at(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The index of the entry with this key.
    pub(super) fn find(&self, key: i64) -> Option<usize> {
        let i = self.partition_point(|k| k < key);
        (i < self.len() && self.key_at(i) == key).then_some(i)
    }

    /// The rows, parsed back from the text.
    // Invariant: as in `key_at`, for `E::parse`.
    #[expect(clippy::expect_used)]
    pub(super) fn rows(&self) -> Vec<E> {
        (0..self.len())
            .map(|i| E::parse(self.entry(i)).expect("a rendered entry parses"))
            .collect()
    }

    /// Entry `i`'s text.
    pub(super) fn entry(&self, i: usize) -> &[u8] {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.text.len(), |&next| next as usize - 1);
        &self.text[start..end]
    }
}
