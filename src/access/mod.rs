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

pub mod jwt;
pub mod keys;
pub mod reload;
pub mod setup;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Reports,
    Members,
    Metrics,
    /// A member's own entry of `user_visits` (tokens with a member claim).
    SelfMember,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Reports,
        Scope::Members,
        Scope::Metrics,
        Scope::SelfMember,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Reports => "reports",
            Scope::Members => "members",
            Scope::Metrics => "metrics",
            Scope::SelfMember => "self",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn insert(&mut self, s: Scope) {
        self.0 |= s.bit();
    }
    pub fn has(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.has(*s))
            .map(Scope::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Who a credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name, or the token's subject (`key:` or `token:` in the audit log's `who`).
    pub name: Arc<str>,
    pub scopes: Scopes,
    /// The member a token with the `self` scope speaks for.
    pub member: Option<i32>,
}

/// Why a request gets no access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: the request carries no credential.
    #[error("this endpoint needs a credential: an API key or a token")]
    NoCredential,
    /// 401: a credential one that is unknown, expired or malformed.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a valid credential without the scope.
    #[error("this credential lacks the scope {}", .0.name())]
    Forbidden(Scope),
    /// 403: a member token asking for someone else's data.
    #[error("a member token reads only its own entry of user_visits (user_id={0})")]
    NotOwnEntry(i32),
}

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
        let wrong = format!("Bearer {}0", &made.key[..made.key.len() - 1]);
        assert!(access.identify(&[wrong.as_bytes()]).await.is_err());
        assert!(access.identify(&[]).await.is_err());
        let two = [bearer.as_bytes(), bearer.as_bytes()];
        assert!(access.identify(&two).await.is_err());
    }
}
