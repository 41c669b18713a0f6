//! [`Access`] from the configuration: the keys file loaded and watched, the issuer's keys fetched and kept
//! fresh. The tasks stop at shutdown.

use std::sync::Arc;

use arc_swap::ArcSwap;
use slog::{warn, Logger};
use tokio::sync::watch;

use super::jwks::JwksSource;
use super::jwt::{JwtSettings, Verifier};
use super::reload::{load_keys, watch_keys};
use super::Access;
use crate::config::{AccessConfig, ConfigError};

/// The keys file and the OIDC settings, checked (a problem names its variable).
pub fn check(config: &AccessConfig) -> Result<(), ConfigError> {
    config.oidc()?;
    if let Some(path) = &config.api_keys_file {
        load_keys(path).map_err(|e| ConfigError::Invalid {
            var: "API_KEYS_FILE".into(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Starts what `config` asks for (call it inside the runtime); logs the one WARN of open access.
pub fn start(
    config: &AccessConfig,
    log: &Logger,
    shutdown: &watch::Receiver<bool>,
) -> Result<Access, ConfigError> {
    let keys = match &config.api_keys_file {
        None => None,
        Some(path) => {
            let (set, seen) = load_keys(path).map_err(|e| ConfigError::Invalid {
                var: "API_KEYS_FILE".into(),
                reason: e.to_string(),
            })?;
            let keys = Arc::new(ArcSwap::from_pointee(set));
            tokio::spawn(watch_keys(
                path.clone(),
                seen,
                Arc::clone(&keys),
                log.new(slog::o!("task" => "keys")),
                shutdown.clone(),
            ));
            Some(keys)
        }
    };
    let tokens = match config.oidc()? {
        None => None,
        Some(oidc) => {
            let jwks = JwksSource::parse(&oidc.jwks).map_err(|reason| ConfigError::Invalid {
                var: "JWT_JWKS_URL".into(),
                reason,
            })?;
            let verifier = Arc::new(Verifier::new(
                JwtSettings {
                    issuer: oidc.issuer,
                    audience: oidc.audience,
                    jwks,
                    member_claim: oidc.member_claim,
                },
                log.new(slog::o!("task" => "jwks")),
            ));
            tokio::spawn(Arc::clone(&verifier).keep_fresh(shutdown.clone()));
            Some(verifier)
        }
    };
    let access = Access { keys, tokens };
    if access.is_open() {
        warn!(log, "access is open: every report, member data included, is served to anyone who can reach the port; \
                    set API_KEYS_FILE or JWT_ISSUER to require a credential");
    }
    Ok(access)
}
