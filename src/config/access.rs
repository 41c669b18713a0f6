//! Who may read what, and how the port is protected: API keys, OIDC tokens, TLS, CORS. With neither
//! `API_KEYS_FILE` nor `JWT_ISSUER`, access is open (the old service's behaviour; `serve` warns at start-up).

use clap::Args;
use std::path::PathBuf;

use super::values::ValueError;
use super::ConfigError;

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Access")]
pub struct AccessConfig {
    /// API keys: one `NAME SCOPES sha256:HEX` line per key (`coworking-analytics keys new` prints it), read again
    /// within seconds when it changes. Set, every endpoint but the probes and /openapi.json needs a credential.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// The identity provider whose tokens (RS256, ES256) are accepted: the `iss` they must carry.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` tokens must carry (required with JWT_ISSUER).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The issuer's keys: an https:// or http:// URL of its JWKS, or a file path (required with JWT_ISSUER).
    #[arg(long, env = "JWT_JWKS_URL", value_parser = jwks_location)]
    pub jwt_jwks_url: Option<String>,
    /// The claim holding a member's id in tokens with the `self` scope (a number or a numeric string).
    #[arg(long, env = "JWT_MEMBER_CLAIM", default_value = "member_id")]
    pub jwt_member_claim: String,
    /// A PEM certificate (a chain allowed): the port speaks HTTPS (HTTP/1.1 and HTTP/2 by ALPN). Read again when
    /// it changes, without dropping connections.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Origins (scheme://host[:port], comma separated) whose web apps may call the API from a browser.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_parser = origins)]
    pub cors_allowed_origins: Option<Origins>,
}

/// The origins CORS allows, exactly as browsers send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub Vec<String>);

/// The OIDC settings, all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oidc {
    pub issuer: String,
    pub audience: String,
    pub jwks: String,
    pub member_claim: String,
}

impl AccessConfig {
    /// `JWT_ISSUER` with its audience and keys; a missing companion is named.
    pub fn oidc(&self) -> Result<Option<Oidc>, ConfigError> {
        let hint = " when JWT_ISSUER is set";
        match (&self.jwt_issuer, &self.jwt_audience, &self.jwt_jwks_url) {
            (None, None, None) => Ok(None),
            (None, ..) => Err(ConfigError::Missing {
                var: "JWT_ISSUER",
                hint: " when JWT_AUDIENCE or JWT_JWKS_URL is set",
            }),
            (Some(_), None, _) => Err(ConfigError::Missing {
                var: "JWT_AUDIENCE",
                hint,
            }),
            (Some(_), _, None) => Err(ConfigError::Missing {
                var: "JWT_JWKS_URL",
                hint,
            }),
            (Some(i), Some(a), Some(j)) => Ok(Some(Oidc {
                issuer: i.clone(),
                audience: a.clone(),
                jwks: j.clone(),
                member_claim: self.jwt_member_claim.clone(),
            })),
        }
    }

    /// The certificate and key files, both or neither.
    pub fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (Some(_), None) => Err(ConfigError::Missing {
                var: "TLS_KEY_FILE",
                hint: " when TLS_CERT_FILE is set",
            }),
            (None, Some(_)) => Err(ConfigError::Missing {
                var: "TLS_CERT_FILE",
                hint: " when TLS_KEY_FILE is set",
            }),
        }
    }
}

fn jwks_location(value: &str) -> Result<String, ValueError> {
    let v = value.trim();
    if v.contains("://") && !v.starts_with("https://") && !v.starts_with("http://") {
        return Err(ValueError::new(format!(
            "expected an https:// or http:// URL or a file path, got {value:?}"
        )));
    }
    Ok(v.to_owned())
}

fn origins(value: &str) -> Result<Origins, ValueError> {
    let mut out = Vec::new();
    for o in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| {
            !r.is_empty() && !r.contains('/') && !r.contains('?') && !r.contains('#')
        });
        if !ok {
            return Err(ValueError::new(format!(
                "expected origins such as https://members.example.com (scheme, host, optional port; no path), got {o:?}"
            )));
        }
        out.push(o.to_owned());
    }
    Ok(Origins(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_companion_is_named() {
        let mut c = AccessConfig {
            jwt_issuer: Some("https://idp".into()),
            ..AccessConfig::default()
        };
        assert_eq!(c.oidc().unwrap_err().variable(), "JWT_AUDIENCE");
        c.jwt_audience = Some("a".into());
        assert_eq!(c.oidc().unwrap_err().variable(), "JWT_JWKS_URL");
        c.tls_cert_file = Some("c.pem".into());
        assert_eq!(c.tls_files().unwrap_err().variable(), "TLS_KEY_FILE");
        assert!(origins("https://a.example, http://localhost:3000").is_ok());
        assert!(origins("https://a.example/app").is_err());
        assert!(jwks_location("ftp://x").is_err());
    }
}
