//! The follower's notification stream: one asynchronous connection (tokio-postgres, outside the diesel pool)
//! that runs `LISTEN` on the refresh channel and forwards every notification as it arrives.
//!
//! diesel's connection can only be polled for notifications, so this one connection uses tokio-postgres, which
//! delivers them as the socket becomes readable. TLS follows libpq's `sslmode`: `disable`, `prefer` (the
//! default) and `require` (encrypted, certificate not verified, as libpq does without a root certificate);
//! libpq-only keywords (`verify-full`, `sslrootcert`, ...) make the connection fail, and the follower then
//! polls.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::config::redact;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot set up TLS for the listening connection: {0}")]
    Tls(#[from] native_tls::Error),
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
    let tls = native_tls::TlsConnector::builder()
        // libpq's sslmode=require: encrypt, but without a root certificate, do not verify the server's.
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()?;
    let tls = postgres_native_tls::MakeTlsConnector::new(tls);
    let (client, mut connection) = tokio_postgres::connect(conn, tls)
        .await
        .map_err(connect_error)?;
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
