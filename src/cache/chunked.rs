//! A report body kept as chunks, so that a change costs what it touches, not the whole report.
//!
//! Both report bodies are `{e1,e2,...}\n`, entries in key order. The entries are grouped by key range
//! (`key >> shift`: 256 user ids, 64 days), and each non-empty group is one immutable [`Chunk`]: its
//! text, the offsets of its entries, its raw-deflate form and CRC-32, and a digest. A report is a list of
//! `Arc<Chunk>`; applying a delta rebuilds only the chunks whose keys changed and shares the others, so a
//! snapshot that patched its predecessor and one rendered from scratch hold the very same chunks.
//!
//! Serving never copies: the identity body is the vector of parts `{`, chunk texts, `}\n` (vectored writes);
//! the gzip body is a gzip header, each chunk's deflate data (compressed on its own and ended by a sync flush,
//! so it is byte-aligned and refers to nothing before it), one-byte comma blocks between chunks, a final empty
//! block, and a trailer whose CRC-32 is combined from the chunks' (`crc32_combine`, the pigz technique).
//! The validators derive from the chunk digests, so equal bytes give equal ETags on every replica.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};

use super::chunk::{deflate_block, Chunk};
use super::rendered::MIN_COMPRESS_BYTES;
pub use crate::report::Entry;
use crate::report::{Body, Representation};

/// Days per chunk of the daily-usage body (`2^DAY_SHIFT`): about 1.2 kB of text.
pub const DAY_SHIFT: u32 = 6;
/// User ids per chunk of the user-visits body (`2^USER_SHIFT`): about 15 kB of text, a fraction of a
/// millisecond to re-render and recompress when one of its members checks in.
pub const USER_SHIFT: u32 = 8;

/// gzip header: deflate, no name, no time, unknown OS (what flate2 writes at the default level).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty block with fixed Huffman codes (after a byte-aligned flush, as pigz ends its streams).
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

static OPEN: LazyLock<Bytes> = LazyLock::new(|| Bytes::from_static(b"{"));
static CLOSE: LazyLock<Bytes> = LazyLock::new(|| Bytes::from_static(b"}\n"));
static GZ_OPEN: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(deflate_block(b"{", Compression::default())));
static GZ_COMMA: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(deflate_block(b",", Compression::default())));
static GZ_CLOSE: LazyLock<Bytes> = LazyLock::new(|| {
    let mut b = deflate_block(b"}\n", Compression::default());
    b.extend_from_slice(&FINAL_BLOCK);
    Bytes::from(b)
});

/// Builds a [`Chunked`] from rows arriving in key order (a page at a time from the database), rendering each
/// chunk as soon as its key range is complete, so the rows of at most one chunk are held.
#[derive(Debug)]
pub struct Builder<E> {
    shift: u32,
    level: Compression,
    chunks: Vec<Arc<Chunk<E>>>,
    group: Vec<E>,
}

impl<E: Entry> Builder<E> {
    pub fn new(shift: u32) -> Self {
        Builder {
            shift,
            level: Compression::default(),
            chunks: Vec::new(),
            group: Vec::new(),
        }
    }

    /// The next row (keys ascending).
    pub fn push(&mut self, row: E) {
        let no = row.key() >> self.shift;
        if self
            .group
            .first()
            .is_some_and(|g| g.key() >> self.shift != no)
        {
            self.flush();
        }
        self.group.push(row);
    }

    fn flush(&mut self) {
        if let Some(first) = self.group.first() {
            let no = first.key() >> self.shift;
            let rows = std::mem::take(&mut self.group);
            self.chunks
                .push(Arc::new(Chunk::build(no, rows, self.level)));
        }
    }

    pub fn finish(mut self) -> Chunked<E> {
        self.flush();
        Chunked::assemble(self.shift, self.level, self.chunks)
    }
}

/// A report body as chunks (see the module header). Cloning shares every chunk.
#[derive(Debug, Clone)]
pub struct Chunked<E> {
    shift: u32,
    level: Compression,
    chunks: Vec<Arc<Chunk<E>>>,
    len: usize,
    body_len: u64,
    gzip_len: u64,
    crc: u32,
    /// Quoted strong entity tags of the identity and the gzip bodies.
    pub etag: String,
    pub gzip_etag: String,
}

impl<E: Entry> Chunked<E> {
    /// The report of `rows` (sorted by key, keys distinct), in chunks of `2^shift` keys.
    pub fn build(rows: Vec<E>, shift: u32) -> Self {
        let mut b = Builder::new(shift);
        rows.into_iter().for_each(|r| b.push(r));
        b.finish()
    }

    /// A new report with `changes` applied: each `(key, Some(row))` sets that key's entry, `(key, None)` removes
    /// it. Only the chunks of changed keys are rebuilt; the result is the same as [`Chunked::build`] of the
    /// resulting rows.
    pub fn patch(&self, mut changes: Vec<(i64, Option<E>)>) -> Self {
        // The last change of a key wins (they come in commit order).
        changes.reverse();
        changes.sort_by_key(|(k, _)| *k);
        changes.dedup_by_key(|(k, _)| *k);
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        let mut old = self.chunks.iter().peekable();
        let mut changes = changes.into_iter().peekable();
        while let Some(&(key, _)) = changes.peek() {
            let no = key >> self.shift;
            while let Some(c) = old.next_if(|c| c.no < no) {
                out.push(Arc::clone(c));
            }
            let current = old.next_if(|c| c.no == no);
            let original: Vec<E> = current.map(|c| c.rows()).unwrap_or_default();
            let mut rows = original.clone();
            while let Some((k, row)) = changes.next_if(|(k, _)| *k >> self.shift == no) {
                match (rows.binary_search_by_key(&k, E::key), row) {
                    (Ok(i), Some(r)) => rows[i] = r,
                    (Ok(i), None) => {
                        rows.remove(i);
                    }
                    (Err(i), Some(r)) => rows.insert(i, r),
                    (Err(_), None) => {}
                }
            }
            match current {
                Some(c) if original == rows => out.push(Arc::clone(c)),
                _ if rows.is_empty() => {}
                _ => out.push(Arc::new(Chunk::build(no, rows, self.level))),
            }
        }
        out.extend(old.cloned());
        Self::assemble(self.shift, self.level, out)
    }

    fn assemble(shift: u32, level: Compression, chunks: Vec<Arc<Chunk<E>>>) -> Self {
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"{");
        let mut tags = Sha256::new();
        let (mut len, mut body_len, mut gzip_len) = (0, 3u64, 0u64);
        for (i, c) in chunks.iter().enumerate() {
            crc.combine(if i == 0 { &c.crc_bare } else { &c.crc_comma });
            tags.update(c.digest);
            len += c.starts.len();
            body_len += c.text.len() as u64 - u64::from(i == 0);
            gzip_len += c.deflated.len() as u64 + if i == 0 { 0 } else { GZ_COMMA.len() as u64 };
        }
        crc.update(b"}\n");
        gzip_len += (GZIP_HEADER.len() + GZ_OPEN.len() + GZ_CLOSE.len() + 8) as u64;
        let tag: String = tags.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Chunked {
            shift,
            level,
            chunks,
            len,
            body_len,
            gzip_len,
            crc: crc.finalize(),
            etag: format!("\"{tag}\""),
            gzip_etag: format!("\"{tag}-gzip\""),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length of the identity body.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Every row, in key order.
    pub fn rows(&self) -> impl Iterator<Item = E> + '_ {
        self.chunks.iter().flat_map(|c| c.rows())
    }

    /// The row with this key.
    pub fn get(&self, key: i64) -> Option<E> {
        let no = key >> self.shift;
        let c = &self.chunks[self.chunks.binary_search_by_key(&no, |c| c.no).ok()?];
        c.find(key).and_then(|i| E::parse(c.entry(i)))
    }

    /// The whole report, gzipped when `gzip` and the body is worth compressing, as the parts of its chunks.
    pub fn whole(&self, gzip: bool) -> Representation {
        match self.gzip_parts().filter(|_| gzip) {
            Some(parts) => Representation {
                gzipped: true,
                ..Representation::json(Body::parts(parts), self.gzip_etag.clone())
            },
            None => Representation::json(Body::parts(self.identity_parts()), self.etag.clone()),
        }
    }

    /// The identity body as parts to be written in order.
    pub fn identity_parts(&self) -> Vec<Bytes> {
        let mut parts = Vec::with_capacity(self.chunks.len() + 2);
        parts.push(OPEN.clone());
        for (i, c) in self.chunks.iter().enumerate() {
            parts.push(if i == 0 {
                c.text.slice(1..)
            } else {
                c.text.clone()
            });
        }
        parts.push(CLOSE.clone());
        parts
    }

    /// The gzip body as parts, or `None` when the body is too small to be worth compressing.
    pub fn gzip_parts(&self) -> Option<Vec<Bytes>> {
        if self.body_len <= MIN_COMPRESS_BYTES as u64 {
            return None;
        }
        let mut parts = Vec::with_capacity(self.chunks.len() * 2 + 4);
        parts.push(Bytes::from_static(&GZIP_HEADER));
        parts.push(GZ_OPEN.clone());
        for (i, c) in self.chunks.iter().enumerate() {
            if i > 0 {
                parts.push(GZ_COMMA.clone());
            }
            parts.push(c.deflated.clone());
        }
        parts.push(GZ_CLOSE.clone());
        let mut trailer = BytesMut::with_capacity(8);
        trailer.put_u32_le(self.crc);
        // ISIZE is the length modulo 2^32.
        trailer.put_u32_le(self.body_len as u32);
        parts.push(trailer.freeze());
        Some(parts)
    }

    /// Length of the gzip body (when [`Chunked::gzip_parts`] gives one).
    pub fn gzip_len(&self) -> u64 {
        self.gzip_len
    }

    /// The body of the entries with keys in `lo..=hi`, and how many there are.
    pub fn range(&self, lo: i64, hi: i64, filter: &str) -> (Representation, usize) {
        let picked = self.chunks.iter().flat_map(|c| {
            let a = c.partition_point(|k| k < lo);
            let b = c.partition_point(|k| k <= hi);
            (a..b.max(a)).map(move |i| c.entry(i))
        });
        self.subset(picked, filter)
    }

    /// The first `limit` entries with keys `>= lo` as a body, and the last one's key when more follow.
    pub fn page(&self, lo: i64, limit: usize, filter: &str) -> (Representation, Option<i64>) {
        let first = self.chunks.partition_point(|c| c.no < lo >> self.shift);
        let mut picked: Vec<&[u8]> = self.chunks[first..]
            .iter()
            .flat_map(|c| (c.partition_point(|k| k < lo)..c.len()).map(move |i| c.entry(i)))
            .take(limit.saturating_add(1))
            .collect();
        let more = picked.len() > limit;
        picked.truncate(limit);
        let next = picked.last().filter(|_| more).and_then(|e| E::parse_key(e));
        (self.subset(picked.into_iter(), filter).0, next)
    }

    /// The entry texts with keys in `lo..=hi`, parsed back into rows (what the CSV bodies are written from).
    pub fn rows_in(&self, lo: i64, hi: i64) -> Vec<E> {
        self.chunks
            .iter()
            .flat_map(|c| {
                let a = c.partition_point(|k| k < lo);
                let b = c.partition_point(|k| k <= hi);
                (a..b.max(a)).map(move |i| c.entry(i))
            })
            .filter_map(E::parse)
            .collect()
    }

    /// The body of the entries with these keys (ascending; absent ones skipped), and how many there are.
    pub fn keys(&self, keys: &[i64], filter: &str) -> (Representation, usize) {
        let picked = keys.iter().filter_map(|&k| {
            let no = k >> self.shift;
            let c = &self.chunks[self.chunks.binary_search_by_key(&no, |c| c.no).ok()?];
            let i = c.find(k)?;
            Some(c.entry(i))
        });
        self.subset(picked, filter)
    }

    /// A body of the given entry texts, in the report's format, with an ETag derived from this report's tag and
    /// the canonical spelling of the filter.
    fn subset<'a>(
        &self,
        entries: impl Iterator<Item = &'a [u8]>,
        filter: &str,
    ) -> (Representation, usize) {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(b'{');
        let mut n = 0;
        for e in entries {
            if n > 0 {
                out.put_u8(b',');
            }
            out.put_slice(e);
            n += 1;
        }
        out.put_slice(b"}\n");
        let base = self.etag.trim_matches('"');
        let filter_tag: String = Sha256::digest(filter.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (
            Representation::json(out.freeze(), format!("\"{base}-{filter_tag}\"")),
            n,
        )
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
