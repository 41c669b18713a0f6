//! OIDC tokens: RS256 and ES256 JWTs verified against the identity provider's keys (its JWKS), with `iss`,
//! `aud`, `exp` and `nbf` checked ([`LEEWAY`] either way). `alg: none` and the HMAC algorithms are refused
//! before any key is looked at (an HMAC "signed" with a public key is the classic forgery).
//!
//! Concurrency state:
//! - `keyring` is swapped whole when the JWKS is fetched: by [`Verifier::keep_fresh`] (a task: at start-up, then
//!   before the keys' `max-age` runs out), and by a request that names an unknown `kid` (at most once a
//!   [`UNKNOWN_KID_REFETCH`], the first one at once: an identity provider that rotated its keys is followed
//!   without a restart, and a flood of made-up `kid`s cannot turn into a flood of fetches).
//! - `verified` remembers the tokens already verified, until they expire, so a client that sends the same
//!   token with every request pays for one signature check (a few tens of microseconds) once. It is bounded:
//!   full, it is emptied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use slog::{error, info, Logger};
use tokio::sync::watch;

use super::jwks::{max_age, parse_jwks, FetchError, JwksSource, MAX_JWKS_BYTES};
use super::principal::{Denied, Principal, Scope, Scopes};

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: u64 = 30;
/// An unknown `kid` fetches the keys again at most this often.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(60);
/// Verified tokens remembered at most.
const REMEMBERED: usize = 10_000;
/// What a token must say, and where its keys are.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    /// The claim holding a member's id, for tokens with the `self` scope.
    pub member_claim: String,
}

/// A verified token's holder and its `exp`.
type Remembered = (Arc<Principal>, u64);

struct Keyring {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Verifies tokens of one issuer.
pub struct Verifier {
    settings: JwtSettings,
    keyring: ArcSwap<Keyring>,
    fetching: tokio::sync::Mutex<Option<Instant>>,
    verified: RwLock<HashMap<Box<str>, Remembered>>,
    fetches: Mutex<u64>,
    client: Option<Client>,
    log: Logger,
}

impl Verifier {
    pub fn new(settings: JwtSettings, log: Logger) -> Self {
        let client = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .ok()
            .map(|b| {
                let connector = b.https_or_http().enable_http1().build();
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector)
            });
        Verifier {
            settings,
            keyring: ArcSwap::from_pointee(Keyring { keys: Vec::new() }),
            fetching: tokio::sync::Mutex::new(None),
            verified: RwLock::new(HashMap::new()),
            fetches: Mutex::new(0),
            client,
            log,
        }
    }

    /// How many times the keys were fetched (for the tests and the logs).
    pub fn fetches(&self) -> u64 {
        self.fetches.lock().map(|n| *n).unwrap_or(0)
    }

    /// The holder of `token`, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, Denied> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Ok(seen) = self.verified.read() {
            if let Some((who, exp)) = seen.get(token) {
                if now <= exp + LEEWAY {
                    return Ok(Arc::clone(who));
                }
            }
        }
        let unauth = |m: &str| Denied::Unauthenticated(m.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauth("the token is malformed (neither a known API key nor a JWT)"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(unauth(
                "the token's algorithm is not accepted; RS256 and ES256 are",
            ));
        }
        let key = match self.key_for(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                self.refetch_for_unknown_kid().await;
                self.key_for(header.kid.as_deref(), header.alg)
                    .ok_or_else(|| {
                        unauth("the token is signed by a key the issuer does not publish")
                    })?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                unauth(match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet (nbf)",
                    K::InvalidIssuer => "the token is from another issuer",
                    K::InvalidAudience => "the token is for another audience",
                    K::InvalidSignature => "the token's signature does not verify",
                    K::MissingRequiredClaim(_) => "the token lacks exp, iss or aud",
                    _ => "the token is malformed",
                })
            })?;
        let claims = &data.claims;
        let who = Arc::new(principal(claims, &self.settings.member_claim));
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(now);
        if let Ok(mut seen) = self.verified.write() {
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            seen.insert(token.into(), (Arc::clone(&who), exp));
        }
        Ok(who)
    }

    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let ring = self.keyring.load();
        ring.keys
            .iter()
            .find(|(k, a, _)| *a == alg && (kid.is_none() || k.as_deref() == kid))
            .map(|(_, _, key)| key.clone())
    }

    /// Fetches the keys once for an unknown `kid`, unless that was done within [`UNKNOWN_KID_REFETCH`].
    async fn refetch_for_unknown_kid(&self) {
        let mut last = self.fetching.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            error!(self.log, "fetching the issuer's keys failed"; "error" => %e);
        }
    }

    /// Fetches the JWKS and swaps it in; returns how long the issuer says it stays valid.
    pub async fn fetch(&self) -> Result<Option<Duration>, FetchError> {
        if let Ok(mut n) = self.fetches.lock() {
            *n += 1;
        }
        let (bytes, max_age) = match &self.settings.jwks {
            JwksSource::File(path) => (tokio::fs::read(path).await?, None),
            JwksSource::Url(uri) => self.get(uri).await?,
        };
        let keys = parse_jwks(&bytes)?;
        info!(self.log, "issuer keys loaded"; "keys" => keys.len());
        self.keyring.store(Arc::new(Keyring { keys }));
        Ok(max_age)
    }

    async fn get(&self, uri: &hyper::Uri) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        use http_body_util::BodyExt;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| FetchError::Http("no TLS root certificates on this system".into()))?;
        let call = async {
            let resp = client
                .get(uri.clone())
                .await
                .map_err(|e| FetchError::Http(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(FetchError::Http(format!("status {}", resp.status())));
            }
            let max_age = resp
                .headers()
                .get(hyper::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .and_then(max_age);
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::Http(e.to_string()))?;
            Ok((body.to_bytes().to_vec(), max_age))
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| FetchError::Http("no answer within 10 s".into()))?
    }

    /// Fetches the keys at start-up and again before they expire (half their `max-age`, between a minute and an
    /// hour; ten minutes when the issuer says nothing), retrying a failure within a minute; stops at shutdown.
    pub async fn keep_fresh(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let wait = match self.fetch().await {
                Ok(max_age) => {
                    failures = 0;
                    max_age
                        .map_or(Duration::from_secs(600), |a| a / 2)
                        .clamp(Duration::from_secs(60), Duration::from_secs(3600))
                }
                Err(e) => {
                    failures += 1;
                    error!(self.log, "fetching the issuer's keys failed; tokens are refused until they load";
                           "error" => %e, "attempt" => failures);
                    Duration::from_secs(u64::from(failures.min(12)) * 5)
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The principal of verified claims: `sub`, the scopes of `scope` (space separated) or `scp` (a list or a
/// string), and the member id of `member_claim` (a number or a numeric string).
fn principal(claims: &serde_json::Value, member_claim: &str) -> Principal {
    let mut scopes = Scopes::default();
    let mut add = |s: &str| {
        if let Some(scope) = Scope::parse(s) {
            scopes.insert(scope);
        }
    };
    match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(s)), _) | (None, Some(serde_json::Value::String(s))) => {
            s.split_whitespace().for_each(&mut add);
        }
        (None, Some(serde_json::Value::Array(list))) => {
            list.iter().filter_map(|v| v.as_str()).for_each(&mut add);
        }
        _ => {}
    }
    let member = claims.get(member_claim).and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or("(no sub)");
    Principal {
        name: sub.into(),
        scopes,
        member,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_the_member_come_from_either_spelling() {
        let p = principal(
            &serde_json::json!({"sub":"a","scope":"reports self x","member_id":"42"}),
            "member_id",
        );
        assert!(p.scopes.has(Scope::Reports) && p.scopes.has(Scope::SelfMember));
        assert!(!p.scopes.has(Scope::Members));
        assert_eq!(p.member, Some(42));
        let p = principal(&serde_json::json!({"scp":["members"],"mid":7}), "mid");
        assert!(p.scopes.has(Scope::Members));
        assert_eq!((p.member, &*p.name), (Some(7), "(no sub)"));
        assert_eq!(
            principal(&serde_json::json!({"member_id":"x"}), "member_id").member,
            None
        );
    }
}
