//! Files read again when they change, without a restart: the keys file (here) and the TLS certificate and key
//! (`http::tls`). Kubernetes updates a mounted Secret by swapping a symlink, so inotify on the path misses it;
//! polling the content every second is cheap (a few small files) and sees every kind of update. A version that
//! does not parse is refused with an ERROR naming what is wrong, and the last good one stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use slog::{error, info, Logger};
use tokio::sync::watch;

use super::keys::{FileError, KeySet};

/// How often watched files are read again (a change takes effect within this and a read).
pub const EVERY: Duration = Duration::from_secs(1);

/// Why a keys file could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} {source}")]
    Malformed { path: String, source: FileError },
}

/// Reads and parses the keys file.
pub fn load_keys(path: &Path) -> Result<(KeySet, Vec<u8>), KeysError> {
    let bytes = std::fs::read(path).map_err(|source| KeysError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let set =
        KeySet::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| KeysError::Malformed {
            path: path.display().to_string(),
            source,
        })?;
    Ok((set, bytes))
}

/// The contents of some files as last seen, to tell when any of them changed.
#[derive(Debug)]
pub struct Watched {
    paths: Vec<PathBuf>,
    seen: Vec<Vec<u8>>,
}

impl Watched {
    pub fn new(paths: Vec<PathBuf>, seen: Vec<Vec<u8>>) -> Self {
        Watched { paths, seen }
    }

    /// The files' contents when any of them changed since the last call that returned them (a file that cannot be
    /// read counts as unchanged: a Secret being swapped is briefly absent).
    pub fn changed(&mut self) -> Option<Vec<Vec<u8>>> {
        let now: Vec<Vec<u8>> = self
            .paths
            .iter()
            .map(std::fs::read)
            .collect::<Result<_, _>>()
            .ok()?;
        if now == self.seen {
            return None;
        }
        self.seen.clone_from(&now);
        Some(now)
    }
}

/// Hands `apply` the files' contents each time any of them changes (read every [`EVERY`]), until shutdown.
pub async fn on_change(
    mut watched: Watched,
    mut shutdown: watch::Receiver<bool>,
    mut apply: impl FnMut(Vec<Vec<u8>>),
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Some(contents) = watched.changed() {
            apply(contents);
        }
    }
}

/// Reads `path` again every [`EVERY`] and swaps a changed, well-formed keys file into `keys`; stops at shutdown.
pub async fn watch_keys(
    path: PathBuf,
    seen: Vec<u8>,
    keys: Arc<ArcSwap<KeySet>>,
    log: Logger,
    shutdown: watch::Receiver<bool>,
) {
    let watched = Watched::new(vec![path.clone()], vec![seen]);
    on_change(watched, shutdown, |contents| {
        match KeySet::parse(&String::from_utf8_lossy(&contents.concat())) {
            Ok(set) => {
                info!(log, "API keys file reloaded"; "path" => %path.display(), "keys" => set.len());
                keys.store(Arc::new(set));
            }
            Err(e) => {
                error!(log, "API keys file refused; the last good version stays in use";
                       "path" => %path.display(), "line" => e.line, "error" => %e.reason);
            }
        }
    })
    .await;
}
