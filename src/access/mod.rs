//! Who may read what: the credentials a request carries (an API key, or an OIDC token from the chain's
//! identity provider) and the scopes they grant. [`Access`] turns an `Authorization` header into a
//! [`Principal`] or a [`Denied`]; `http::guard` decides which scope a route needs and answers 401/403.
//!
//! - Scopes: `reports` (daily usage, occupancy, the dashboard page), `members` (`user_visits`: member data),
//!   `metrics` (`/metrics`), and for tokens only `self` (the member's own entry of `user_visits`).
//! - With neither `API_KEYS_FILE` nor `JWT_ISSUER` set, access is open (the old service's behaviour) and
//!   `serve` says so in one WARN at start-up.
//! - A credential never reaches a log line or an error message: the messages here say what was wrong, not what
//!   was sent.

pub mod jwks;
pub mod jwt;
pub mod keys;
mod principal;
pub mod reload;
pub mod setup;

pub use principal::{Denied, Principal, Scope, Scopes};

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The credentials this service accepts; open when it has none.
pub struct Access {
    /// The current keys file (swapped whole by [`reload::watch_keys`]); `None`: no `API_KEYS_FILE`.
    pub keys: Option<Arc<ArcSwap<keys::KeySet>>>,
    pub tokens: Option<Arc<jwt::Verifier>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("keys", &self.keys.as_ref().map(|k| k.load().len()))
            .field("tokens", &self.tokens.is_some())
            .finish()
    }
}

impl Access {
    /// No credentials configured: every request is answered.
    pub fn open() -> Self {
        Access {
            keys: None,
            tokens: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_none() && self.tokens.is_none()
    }

    /// The holder of the credential in `authorization` (the request's `Authorization` values).
    pub async fn identify(&self, authorization: &[&[u8]]) -> Result<Arc<Principal>, Denied> {
        let unauth = |m: &str| Denied::Unauthenticated(m.to_owned());
        let secret = match authorization {
            [] => return Err(Denied::NoCredential),
            [one] => credential(one).ok_or_else(|| {
                unauth("the Authorization header is malformed; send Bearer <key or token> or Basic")
            })?,
            _ => return Err(unauth("send one Authorization header, not several")),
        };
        if secret.starts_with(keys::PREFIX) {
            let found = self
                .keys
                .as_ref()
                .and_then(|k| k.load().find(&secret).cloned());
            return found.ok_or_else(|| unauth("unknown API key"));
        }
        match &self.tokens {
            Some(verifier) => verifier.verify(&secret).await,
            None => Err(unauth("unknown API key")),
        }
    }
}

/// The secret of an `Authorization` value: a Bearer credential, or the password of Basic (any user name).
fn credential(value: &[u8]) -> Option<String> {
    use base64::Engine;
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        let (_, password) = pair.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_owned());
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_carry_the_secret() {
        assert_eq!(credential(b"Bearer cwa_x").as_deref(), Some("cwa_x"));
        assert_eq!(credential(b"bearer  cwa_x ").as_deref(), Some("cwa_x"));
        // "anyone:cwa_x"
        assert_eq!(
            credential(b"Basic YW55b25lOmN3YV94").as_deref(),
            Some("cwa_x")
        );
        assert_eq!(credential(b"Basic !!"), None);
        assert_eq!(credential(b"Digest x"), None);
        assert_eq!(credential(b"Bearer"), None);
    }

    #[tokio::test]
    async fn a_key_is_known_by_its_hash_and_several_headers_are_refused() {
        let made = keys::new_key("k", keys::parse_scopes("reports").unwrap()).unwrap();
        let set = keys::KeySet::parse(&made.line).unwrap();
        let access = Access {
            keys: Some(Arc::new(ArcSwap::from_pointee(set))),
            tokens: None,
        };
        let bearer = format!("Bearer {}", made.key);
        let who = access.identify(&[bearer.as_bytes()]).await.unwrap();
        assert!(who.scopes.has(Scope::Reports));
        // The last hex digit changed (to '1' when it is '0': a fixed '0' made the key right one time in 16).
        let last = if made.key.ends_with('0') { '1' } else { '0' };
        let wrong = format!("Bearer {}{last}", &made.key[..made.key.len() - 1]);
        assert!(access.identify(&[wrong.as_bytes()]).await.is_err());
        assert!(access.identify(&[]).await.is_err());
        let two = [bearer.as_bytes(), bearer.as_bytes()];
        assert!(access.identify(&two).await.is_err());
    }
}
