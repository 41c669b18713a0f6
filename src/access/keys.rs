//! API keys: how one is made (`keys new`), the keys file that holds only a hash of each, and the lookup of a
//! presented key.
//!
//! A key is `cwa_` and 64 hex digits (256 random bits); the prefix lets secret scanners find a leaked one. The
//! file (`API_KEYS_FILE`, a Kubernetes Secret) has one key per line, `NAME SCOPES sha256:HEX`, with `#` comments
//! and blank lines allowed: the key's name (for the audit log), its scopes (comma separated) and the SHA-256 of
//! the whole key. A 256-bit random key needs no slow password hash: nobody can search its space, and the lookup
//! stays a hash and a map probe.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use super::principal::{Principal, Scope, Scopes};

/// What every key starts with.
pub const PREFIX: &str = "cwa_";

/// Why a keys file was refused: the line (from 1) and what is wrong with it; never the line's text, which holds a
/// hash at most, but may hold a key pasted by mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct FileError {
    pub line: usize,
    pub reason: String,
}

/// The keys of one version of the file, by the hash of the key.
#[derive(Debug, Default)]
pub struct KeySet {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The holder of `key`, if the file lists it.
    pub fn find(&self, key: &str) -> Option<&Arc<Principal>> {
        self.by_hash.get(&digest(key))
    }

    /// Parses the text of a keys file.
    pub fn parse(text: &str) -> Result<KeySet, FileError> {
        let mut by_hash = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: &str| FileError {
                line,
                reason: reason.to_owned(),
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [name, scopes, hash] = fields[..] else {
                return Err(err("expected NAME SCOPES sha256:HEX"));
            };
            if name.starts_with(PREFIX) || hash.starts_with(PREFIX) || scopes.starts_with(PREFIX) {
                return Err(err(
                    "this line holds a key itself; the file takes only its hash (coworking-analytics keys new prints the line)",
                ));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
            {
                return Err(err("a name may hold letters, digits and . _ - @"));
            }
            let scopes = parse_scopes(scopes).map_err(|e| err(&e))?;
            let hash = parse_hash(hash)
                .ok_or_else(|| err("the hash must be sha256: and 64 hex digits"))?;
            let who = Principal {
                name: name.into(),
                scopes,
                member: None,
            };
            if by_hash.insert(hash, Arc::new(who)).is_some() {
                return Err(err("the same key is listed twice"));
            }
        }
        Ok(KeySet { by_hash })
    }
}

/// A comma-separated list of the scopes a key may have.
pub fn parse_scopes(list: &str) -> Result<Scopes, String> {
    let mut scopes = Scopes::default();
    for s in list.split(',').map(str::trim) {
        match Scope::parse(s) {
            Some(Scope::SelfMember) | None => {
                return Err(format!(
                    "unknown scope {:?}; a key takes reports, members and metrics",
                    s.chars().take(32).collect::<String>()
                ))
            }
            Some(scope) => scopes.insert(scope),
        }
    }
    Ok(scopes)
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A new key and its line for the keys file.
#[derive(Debug)]
pub struct NewKey {
    pub key: String,
    pub line: String,
}

/// Makes a key for `name` with `scopes` (from the operating system's random source).
pub fn new_key(name: &str, scopes: Scopes) -> Result<NewKey, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err("--name may hold letters, digits and . _ - @".into());
    }
    if scopes.is_empty() {
        return Err("--scopes names at least one of reports, members, metrics".into());
    }
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "no random bytes from the system".to_owned())?;
    let key = format!("{PREFIX}{}", hex(&secret));
    let line = format!("{name} {} sha256:{}", scopes, hex(&digest(&key)));
    Ok(NewKey { key, line })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_found_by_its_line_and_no_other_key_is() {
        let scopes = parse_scopes("reports,members").unwrap();
        let made = new_key("ci-bot", scopes).unwrap();
        assert!(
            made.key.starts_with("cwa_") && made.key.len() == 4 + 64,
            "{}",
            made.key
        );
        assert!(
            !made.line.contains(&made.key[4..]),
            "the line holds the key"
        );
        let set = KeySet::parse(&format!("# keys\n\n{}  # the CI\n", made.line)).unwrap();
        let who = set.find(&made.key).unwrap();
        assert_eq!(&*who.name, "ci-bot");
        assert!(who.scopes.has(Scope::Members) && !who.scopes.has(Scope::Metrics));
        let other = new_key("ci-bot", scopes).unwrap();
        assert_ne!(other.key, made.key);
        assert!(set.find(&other.key).is_none());
    }

    #[test]
    fn a_malformed_line_is_named_and_a_pasted_key_refused() {
        let good = new_key("a", parse_scopes("metrics").unwrap()).unwrap();
        let text = format!("{}\nb reports sha256:12\n", good.line);
        assert_eq!(KeySet::parse(&text).unwrap_err().line, 2);
        let err = KeySet::parse(&format!("x reports {}", good.key)).unwrap_err();
        assert!(err.reason.contains("holds a key"), "{err}");
        assert!(!err.to_string().contains(&good.key));
        assert_eq!(
            KeySet::parse("x admin sha256:00").unwrap_err().reason,
            "unknown scope \"admin\"; a key takes reports, members and metrics"
        );
        assert_eq!(
            KeySet::parse(&format!("{}\n{}", good.line, good.line))
                .unwrap_err()
                .line,
            2
        );
    }
}
