//! What production databases do to the service, done to a private server by the tests: a crash (`pg_ctl stop -m
//! immediate`), the promotion of a standby, a restore of an earlier base backup, and a server that requires
//! TLS on loopback TCP with certificates the test made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{as_user, io, PgTempError, TempPostgres};

/// The files of a TLS server: its certificate chain and key (PEM), and the CA whose client certificates it
/// accepts for the `cert` login of the role `certuser`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub server_cert: Vec<u8>,
    pub server_key: Vec<u8>,
    pub client_ca: Vec<u8>,
}

impl TempPostgres {
    /// A server listening on 127.0.0.1:`port` (and its socket) with `ssl=on`: TCP connections must use TLS, are
    /// trusted, except the role `certuser`, which logs in with a client certificate signed by `client_ca`.
    pub fn start_tls(port: u16, tls: &TlsFiles) -> Result<Self, PgTempError> {
        let mut me = Self::empty(false)?;
        me.port = port;
        me.settings = [
            "listen_addresses=127.0.0.1",
            "ssl=on",
            "ssl_cert_file=server.crt",
            "ssl_key_file=server.key",
            "ssl_ca_file=client_ca.crt",
        ]
        .map(String::from)
        .to_vec();
        me.hba = [
            "hostssl all certuser 127.0.0.1/32 cert",
            "hostssl all all 127.0.0.1/32 trust",
            "hostnossl all all 127.0.0.1/32 reject",
        ]
        .map(String::from)
        .to_vec();
        me.files = vec![
            ("server.crt".into(), tls.server_cert.clone()),
            ("server.key".into(), tls.server_key.clone()),
            ("client_ca.crt".into(), tls.client_ca.clone()),
        ];
        let (bin, user) = (me.bin.clone(), me.user.clone());
        Self::init(me, &bin, &user)
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: SIGQUIT, no checkpoint, clients cut off);
    /// what it had not sent to a standby is lost to it. [`Self::resume`] starts it again (crash recovery).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            let _ = child.wait();
        }
        self.keeper.take();
    }

    /// Promotes this standby to a primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), PgTempError> {
        let out = self
            .pg_ctl()
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(self.root.join("data"))
            .output()
            .map_err(io("running pg_ctl promote"))?;
        if !out.status.success() {
            return Err(PgTempError::Initdb(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(mut c) = crate::db::connect(&self.url("postgres")) {
                use diesel::RunQueryDsl;
                let in_recovery = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "pg_is_in_recovery()",
                ))
                .get_result::<bool>(&mut c);
                if in_recovery == Ok(false) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(PgTempError::NotReady(
            Duration::from_secs(30),
            "promotion".into(),
        ))
    }

    /// A base backup of this server as it is now (`pg_basebackup -X stream`, no standby settings): a restore of it
    /// starts as a primary at this point, with the same system identifier and timeline.
    pub fn base_backup(&self) -> Result<PathBuf, PgTempError> {
        let dir = self.root.join(format!(
            "backup-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        self.pg_basebackup(&dir, &["-c", "fast"])?;
        Ok(dir)
    }

    /// Stops the server, replaces its data directory with `backup` (from [`Self::base_backup`]) and starts it:
    /// an operator's restore of an earlier backup onto the same address.
    pub fn restore(&mut self, backup: &Path) -> Result<(), PgTempError> {
        self.stop_server();
        let data = self.root.join("data");
        std::fs::remove_dir_all(&data).map_err(io("removing the data directory"))?;
        std::fs::rename(backup, &data).map_err(io("moving the backup in place"))?;
        self.launch()
    }

    /// Waits until `standby` has replayed everything this primary has written so far.
    pub fn wait_replayed_by(&self, standby: &TempPostgres) -> Result<(), PgTempError> {
        use diesel::RunQueryDsl;
        let text = |url: &str, sql: &str| -> Option<String> {
            let mut c = crate::db::connect(url).ok()?;
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(sql))
                .get_result(&mut c)
                .ok()
        };
        let lsn = text(&self.url("postgres"), "pg_current_wal_lsn()::text").unwrap_or_default();
        let check = format!("(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::text");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if text(&standby.url("postgres"), &check).as_deref() == Some("true") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(PgTempError::NotReady(
            Duration::from_secs(30),
            format!("replay of {lsn}"),
        ))
    }

    /// `pg_basebackup -X stream` of this server into `into`, with `extra` options (`-R`: a standby's settings).
    pub(super) fn pg_basebackup(&self, into: &Path, extra: &[&str]) -> Result<(), PgTempError> {
        let out = as_user(Command::new(self.bin.join("pg_basebackup")), &self.user)
            .arg("-D")
            .arg(into)
            .args(["-X", "stream", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-h")
            .arg(&self.root)
            .args(extra)
            .output()
            .map_err(io("running pg_basebackup"))?;
        if !out.status.success() {
            return Err(PgTempError::Initdb(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(())
    }

    fn pg_ctl(&self) -> Command {
        as_user(Command::new(self.bin.join("pg_ctl")), &self.user)
    }
}
