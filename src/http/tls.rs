//! HTTPS on the service's port (`TLS_CERT_FILE`, `TLS_KEY_FILE`): rustls on aws-lc, HTTP/1.1 and HTTP/2 by
//! ALPN. The certificate is read again when its files change (cert-manager renews it), without a restart: the
//! resolver hands each new handshake the current certificate, and open connections keep the one they began
//! with. A renewed pair that does not parse or does not match is refused with an ERROR; the last good one
//! stays in use.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use slog::{error, info, Logger};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::access::reload::{on_change, Watched};

/// Why a certificate or key was refused; says which variable's file is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE: {0}")]
    Cert(String),
    #[error("TLS_KEY_FILE: {0}")]
    Key(String),
}

impl TlsError {
    pub fn variable(&self) -> &'static str {
        match self {
            TlsError::Cert(_) => "TLS_CERT_FILE",
            TlsError::Key(_) => "TLS_KEY_FILE",
        }
    }

    /// What is wrong, without the variable's name.
    pub fn reason(&self) -> &str {
        match self {
            TlsError::Cert(r) | TlsError::Key(r) => r,
        }
    }
}

/// The certificate files and what they held when last read.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The current certificate, swapped whole on renewal.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A certificate chain and its key from PEM text, checked to belong together.
pub fn certified(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Cert("holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Key(format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::Key("does not match the certificate of TLS_CERT_FILE".into())
        }
        other => TlsError::Key(format!("unusable: {other}")),
    })
}

/// Reads both files.
fn read(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert = std::fs::read(&files.cert)
        .map_err(|e| TlsError::Cert(format!("cannot read {}: {e}", files.cert.display())))?;
    let key = std::fs::read(&files.key)
        .map_err(|e| TlsError::Key(format!("cannot read {}: {e}", files.key.display())))?;
    Ok((cert, key))
}

/// A TLS endpoint: the acceptor for new connections, and the task that keeps its certificate current.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: TlsFiles,
    seen: Vec<Vec<u8>>,
}

impl Tls {
    /// Loads the certificate (an error names the variable whose file is at fault).
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let (cert, key) = read(&files)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(certified(&cert, &key)?)));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Cert(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files,
            seen: vec![cert, key],
        })
    }

    /// Reads the files again every second and swaps in a renewed, well-formed pair; stops at shutdown.
    pub async fn keep_current(
        files: TlsFiles,
        seen: Vec<Vec<u8>>,
        current: Arc<impl Swap>,
        log: Logger,
        shutdown: watch::Receiver<bool>,
    ) {
        let watched = Watched::new(vec![files.cert.clone(), files.key.clone()], seen);
        on_change(watched, shutdown, |contents| {
            match certified(&contents[0], &contents[1]) {
                Ok(ck) => {
                    current.swap_in(ck);
                    info!(log, "TLS certificate reloaded"; "cert" => %files.cert.display());
                }
                // A renewal writes the two files one after the other: a mismatch may last one read.
                Err(e) => error!(log, "TLS certificate refused; the last good one stays in use";
                                 "error" => %e),
            }
        })
        .await;
    }

    /// Splits off what the reload task needs.
    pub fn reloader(&self) -> (TlsFiles, Vec<Vec<u8>>, Arc<impl Swap>) {
        (
            self.files.clone(),
            self.seen.clone(),
            Arc::clone(&self.current),
        )
    }
}

/// Something holding a certificate that can be replaced.
pub trait Swap: Send + Sync + 'static {
    fn swap_in(&self, ck: CertifiedKey);
}

impl Swap for Current {
    fn swap_in(&self, ck: CertifiedKey) {
        self.0.store(Arc::new(ck));
    }
}
