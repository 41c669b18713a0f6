//! The words of access control that every part of `access` shares: a scope, a set of them, who a credential
//! belongs to, and why a request is refused.

use std::fmt;
use std::sync::Arc;

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
