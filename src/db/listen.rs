//! The follower's notification stream: one asynchronous connection (tokio-postgres, outside the diesel pool)
//! that runs `LISTEN` on the refresh channel and forwards every notification as it arrives.
//!
//! diesel's connection can only be polled for notifications, so this one connection uses tokio-postgres, which
//! delivers them as the socket becomes readable. tokio-postgres parses neither libpq's verifying `sslmode`s nor
//! its certificate files, so they are taken out of the string ([`split_tls`]) and applied here as libpq applies
//! them: `verify-full` checks the chain against `sslrootcert` (a bundle of several CAs, as RDS ships; `system`:
//! the system's roots; default `~/.postgresql/root.crt`) and the host name, `verify-ca` the chain only,
//! `require` with a root certificate file is `verify-ca` (libpq's rule), without one it encrypts without
//! checking; `sslcert`/`sslkey` send a client certificate. What libpq would check and this cannot (`sslcrl`,
//! ...) is refused, never skipped.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::config::{redact, split_tls, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot set up TLS for the listening connection: {0}")]
    Tls(#[from] native_tls::Error),
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Settings(String),
    #[error("cannot listen for notifications ({target}): {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A connection listening on one channel. Dropping it closes the connection.
pub struct Listener {
    /// Kept to keep the connection open (tokio-postgres closes it when the client goes).
    _client: tokio_postgres::Client,
    task: JoinHandle<()>,
    /// One `()` per notification received.
    pub notifications: mpsc::UnboundedReceiver<()>,
}

impl Listener {
    /// Whether the connection is gone (closed by the server, a network error): make a new one.
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects with `conn` (a libpq URI or keyword/value string) and `LISTEN`s on `channel`.
pub async fn listen(conn: &str, channel: &str) -> Result<Listener, ListenError> {
    let connect_error = |source| ListenError::Connect {
        target: redact(conn),
        source,
    };
    let (rest, settings) = split_tls(conn);
    let (mode, tls) = connector(&settings)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(connect_error)?;
    config.ssl_mode(mode);
    let tls = postgres_native_tls::MakeTlsConnector::new(tls);
    let (client, mut connection) = config.connect(tls).await.map_err(connect_error)?;
    let (tx, notifications) = mpsc::unbounded_channel();
    // The connection does its I/O only while polled: this task polls it for the connection's whole life and
    // ends when the connection does (or when the Listener is dropped and aborts it).
    let task = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    // A channel name is an identifier of ours (a constant), never input.
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(connect_error)?;
    Ok(Listener {
        _client: client,
        task,
        notifications,
    })
}

/// The TLS connector for libpq's settings, and the `sslmode` tokio-postgres gets.
fn connector(
    s: &TlsSettings,
) -> Result<(tokio_postgres::config::SslMode, native_tls::TlsConnector), ListenError> {
    use tokio_postgres::config::SslMode;
    if !s.unsupported.is_empty() {
        return Err(ListenError::Settings(format!(
            "the listening connection does not support {} (the pool does): remove it or set DB_LISTEN_URL",
            s.unsupported.join(", ")
        )));
    }
    let mode = s.mode.as_deref().unwrap_or("prefer");
    let home_root = || {
        std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".postgresql/root.crt"))
            .filter(|p| p.exists())
            .map(|p| p.to_string_lossy().into_owned())
    };
    let (tls_mode, verify, hostnames) = match mode {
        "disable" => (SslMode::Disable, false, false),
        "allow" | "prefer" => (SslMode::Prefer, false, false),
        // libpq: with a root certificate file, require behaves as verify-ca.
        "require" => (SslMode::Require, s.rootcert.is_some() || home_root().is_some(), false),
        "verify-ca" => (SslMode::Require, true, false),
        "verify-full" => (SslMode::Require, true, true),
        other => {
            return Err(ListenError::Settings(format!(
                "invalid sslmode {other:?}: one of disable, allow, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    let mut b = native_tls::TlsConnector::builder();
    if verify {
        match s.rootcert.clone().or_else(home_root).as_deref() {
            Some("system") => {}
            Some(path) => {
                let pem = read("the root certificate file (sslrootcert)", path)?;
                let roots = native_tls::Certificate::stack_from_pem(&pem)?;
                if roots.is_empty() {
                    return Err(ListenError::Settings(format!(
                        "sslrootcert {path} holds no certificate"
                    )));
                }
                b.disable_built_in_roots(true);
                for root in roots {
                    b.add_root_certificate(root);
                }
            }
            None => {
                return Err(ListenError::Settings(format!(
                    "sslmode={mode} needs a root certificate: set sslrootcert (a file, or system); \
                     ~/.postgresql/root.crt does not exist"
                )))
            }
        }
        b.danger_accept_invalid_hostnames(!hostnames);
    } else {
        b.danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => {
            let cert = read("the client certificate (sslcert)", cert)?;
            let key_pem = read("the client key (sslkey)", key)?;
            // native-tls takes PKCS#8 only; libpq also takes PKCS#1 (RSA) and SEC1 (EC) keys.
            let key_pem = openssl::pkey::PKey::private_key_from_pem(&key_pem)
                .and_then(|k| k.private_key_to_pem_pkcs8())
                .map_err(|e| {
                    ListenError::Settings(format!("sslkey {key} is not a PEM private key: {e}"))
                })?;
            b.identity(native_tls::Identity::from_pkcs8(&cert, &key_pem)?);
        }
        (None, None) => {}
        _ => {
            return Err(ListenError::Settings(
                "sslcert and sslkey go together: set both or neither".into(),
            ))
        }
    }
    Ok((tls_mode, b.build()?))
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, ListenError> {
    std::fs::read(path).map_err(|source| ListenError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

/// `e` and its causes, joined: tokio-postgres puts the reason of a failed TLS handshake in the source.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
