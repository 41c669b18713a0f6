//! The identity provider's keys: where they are (a URL or a file), how a JWKS document becomes the signing
//! keys [`super::jwt::Verifier`] checks tokens with, and how long a fetched document may be kept.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A JWKS document larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the issuer's keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(hyper::Uri),
    File(PathBuf),
}

impl JwksSource {
    /// `https://...` or `http://...`, else a file path.
    pub fn parse(s: &str) -> Result<JwksSource, String> {
        if s.starts_with("https://") || s.starts_with("http://") {
            return s
                .parse()
                .map(JwksSource::Url)
                .map_err(|e| format!("not a URL: {e}"));
        }
        if s.contains("://") {
            return Err("only https:// and http:// URLs, or a file path".into());
        }
        Ok(JwksSource::File(PathBuf::from(s)))
    }
}

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read the JWKS file: {0}")]
    File(#[from] std::io::Error),
    #[error("cannot fetch the JWKS: {0}")]
    Http(String),
    #[error("the JWKS is not a JSON key set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the JWKS holds no RS256 or ES256 signing key")]
    NoKeys,
}

/// `max-age` of a `Cache-Control` value.
pub fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.eq_ignore_ascii_case("max-age")
            .then(|| v.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

/// The RS256 and ES256 signing keys of a JWKS document (other keys are skipped, not refused).
pub fn parse_jwks(
    bytes: &[u8],
) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, FetchError> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(bytes)?;
    let keys: Vec<_> = set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(p))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((jwk.common.key_id.clone(), alg, key))
        })
        .collect();
    if keys.is_empty() {
        return Err(FetchError::NoKeys);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_max_age() {
        assert!(matches!(
            JwksSource::parse("https://idp/keys"),
            Ok(JwksSource::Url(_))
        ));
        assert!(matches!(
            JwksSource::parse("/etc/jwks.json"),
            Ok(JwksSource::File(_))
        ));
        assert!(JwksSource::parse("ftp://x").is_err());
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-cache"), None);
    }
}
