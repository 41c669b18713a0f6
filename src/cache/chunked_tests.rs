//! Unit tests of the chunked bodies: the reference format, patches equal rebuilds, gzip decodes.
#![allow(clippy::unwrap_used)]

use super::*;

fn concat(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}
use std::io::Read;

#[derive(Debug, Clone, PartialEq)]
struct E(i64, i64);
impl Entry for E {
    fn key(&self) -> i64 {
        self.0
    }
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("\"{}\":{}", self.0, self.1).as_bytes());
    }
    fn parse(text: &[u8]) -> Option<Self> {
        let (k, v) = std::str::from_utf8(text).ok()?.split_once("\":")?;
        Some(E(k.strip_prefix('"')?.parse().ok()?, v.parse().ok()?))
    }
    fn parse_key(text: &[u8]) -> Option<i64> {
        Self::parse(text).map(|e| e.0)
    }
}

fn reference(rows: &[E]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.render(&mut out);
    }
    out.extend_from_slice(b"}\n");
    out
}

fn gunzip(parts: &[Bytes]) -> Vec<u8> {
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&concat(parts)[..])
        .read_to_end(&mut back)
        .unwrap();
    back
}

#[test]
fn bodies_match_the_reference_and_patches_match_a_rebuild() {
    let rows: Vec<E> = (0..3000).map(|i| E(i * 3, i % 17)).collect();
    let c = Chunked::build(rows.clone(), 4);
    assert_eq!(concat(&c.identity_parts()), reference(&rows));
    assert_eq!(c.body_len() as usize, reference(&rows).len());
    let gz = c.gzip_parts().unwrap();
    assert_eq!(concat(&gz).len() as u64, c.gzip_len());
    assert_eq!(gunzip(&gz), reference(&rows));

    // Change, add and remove entries, including whole chunks and the first one.
    let changes = vec![
        (0, None),
        (1, None),
        (3, None),
        (4, Some(E(4, 99))),
        (30, Some(E(30, 1))),
        (30, Some(E(30, 2))),
        (9001, Some(E(9001, 5))),
        (5000, None),
    ];
    let mut expected: std::collections::BTreeMap<i64, E> =
        rows.iter().map(|r| (r.0, r.clone())).collect();
    for (k, v) in &changes {
        match v {
            Some(v) => expected.insert(*k, v.clone()),
            None => expected.remove(k),
        };
    }
    let expected: Vec<E> = expected.into_values().collect();
    let patched = c.patch(changes);
    let rebuilt = Chunked::build(expected.clone(), 4);
    assert_eq!(concat(&patched.identity_parts()), reference(&expected));
    assert_eq!(
        concat(&patched.gzip_parts().unwrap()),
        concat(&rebuilt.gzip_parts().unwrap())
    );
    assert_eq!(gunzip(&patched.gzip_parts().unwrap()), reference(&expected));
    assert_eq!(
        (patched.etag.clone(), patched.len()),
        (rebuilt.etag.clone(), rebuilt.len())
    );
    assert_ne!(patched.etag, c.etag);
    assert_eq!(patched.get(30), Some(E(30, 2)));
    assert_eq!(patched.get(3), None);
}

#[test]
fn empty_and_tiny_reports() {
    let c = Chunked::<E>::build(Vec::new(), 4);
    assert_eq!(concat(&c.identity_parts()), b"{}\n");
    assert!(c.gzip_parts().is_none() && c.is_empty());
    let c = c.patch(vec![(7, Some(E(7, 1)))]).patch(vec![(7, None)]);
    assert_eq!(concat(&c.identity_parts()), b"{}\n");
    assert_eq!(c.etag, Chunked::<E>::build(Vec::new(), 4).etag);
}

#[test]
fn subsets_keep_the_format() {
    let c = Chunked::build((0..100).map(|i| E(i, i)).collect(), 3);
    assert_eq!(
        &c.range(5, 7, "x").0.body.to_vec()[..],
        b"{\"5\":5,\"6\":6,\"7\":7}\n"
    );
    assert_eq!(
        &c.keys(&[2, 50, 500], "y").0.body.to_vec()[..],
        b"{\"2\":2,\"50\":50}\n"
    );
    assert_eq!(c.keys(&[500], "y").1, 0);
    assert_ne!(c.range(5, 7, "x").0.etag, c.range(5, 7, "z").0.etag);
}
