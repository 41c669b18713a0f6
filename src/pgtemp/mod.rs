//! A private, throw-away PostgreSQL server for `demo` and the tests, run from the machine's own server binaries.
//!
//! The cluster lives in a fresh directory under the system temp dir and listens only on a Unix socket inside
//! it (no TCP port to collide with). PostgreSQL refuses to run as root, so when we are root the server runs as
//! the `postgres` OS user (or `nobody`). The server process is our child and gets SIGQUIT if the thread that
//! started it dies, so a crashed test run leaves no server behind; [`TempPostgres::stop`] (or drop) shuts it
//! down and removes the directory. Directories left by killed runs are swept on the next start. A benchmark's
//! large data set lives in a directory it names instead, kept between runs ([`kept`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod faults;
mod kept;
mod os;

pub use os::spawn_tied;
use os::{as_user, sweep_stale, DIR_PREFIX};

pub use faults::TlsFiles;

const PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin, $PG_BIN_DIR or PATH; \
         install them with: apt-get install postgresql"
    )]
    NoBinaries,
    #[error(
        "running as root but no unprivileged user (postgres or nobody) exists to run PostgreSQL"
    )]
    NoUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("PostgreSQL did not accept connections within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgTempError {
    let what = what.into();
    move |source| PgTempError::Io { what, source }
}

/// A running private server.
#[derive(Debug)]
pub struct TempPostgres {
    root: PathBuf,
    bin: PathBuf,
    user: Option<nix::unistd::User>,
    child: Option<Child>,
    /// Dropping this ends the keeper thread (see [`spawn_tied`]).
    keeper: Option<std::sync::mpsc::Sender<()>>,
    /// Commits wait for the disk (`fsync`, `synchronous_commit`, `full_page_writes` at their defaults).
    durable: bool,
    /// The port: of the socket file, and of TCP when [`Self::settings`] listen on an address.
    port: u16,
    /// More `-c` settings, after the defaults (a TLS server listens on loopback TCP).
    settings: Vec<String>,
    /// pg_hba.conf lines put before the defaults, and files written into the data directory before the start
    /// (server certificate and key, owner-only), by [`faults`].
    hba: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    /// A cluster in a directory the caller named ([`kept`]): stopping it leaves the directory.
    kept: bool,
}

/// Finds `initdb` and `postgres`: `$PG_BIN_DIR`, the newest `/usr/lib/postgresql/<major>/bin`, then `PATH`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_bins = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from) {
        return has_bins(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse::<u32>().ok()?,
                e.path().join("bin"),
            ))
        })
        .filter(|(_, d)| has_bins(d))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_bins(d))
}

/// The OS user to run the server as, when we are root.
fn server_user() -> Result<Option<nix::unistd::User>, PgTempError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some(user));
        }
    }
    Err(PgTempError::NoUser)
}

impl TempPostgres {
    /// Creates and starts a cluster; returns once it accepts connections. Durability is off (no fsync, no
    /// waiting for the WAL at commit): test data is thrown away, and tests run several times faster.
    pub fn start() -> Result<Self, PgTempError> {
        Self::start_with(false)
    }

    /// Like [`TempPostgres::start`], with durable commits as a production server makes them (benchmarks of
    /// write latency).
    pub fn start_durable() -> Result<Self, PgTempError> {
        Self::start_with(true)
    }

    /// A hot standby of this server: a base backup taken with `pg_basebackup -R` (streaming replication from
    /// this server's socket), started on a socket of its own. It follows the primary and refuses writes.
    pub fn start_standby(&self) -> Result<Self, PgTempError> {
        let mut me = Self::empty(self.durable)?;
        self.pg_basebackup(&me.root.join("data"), &["-R"])?;
        me.launch()?;
        Ok(me)
    }

    fn start_with(durable: bool) -> Result<Self, PgTempError> {
        let me = Self::empty(durable)?;
        let (bin, user) = (me.bin.clone(), me.user.clone());
        Self::init(me, &bin, &user)
    }

    /// A fresh directory for a cluster, owned by the user the server will run as; no server yet.
    fn empty(durable: bool) -> Result<Self, PgTempError> {
        let bin = find_bin_dir().ok_or(PgTempError::NoBinaries)?;
        let user = server_user()?;
        sweep_stale();
        let root = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(io("creating the cluster directory"))?
            .keep();
        let me = TempPostgres {
            root,
            bin: bin.clone(),
            user: user.clone(),
            child: None,
            keeper: None,
            durable,
            port: PORT,
            settings: Vec::new(),
            hba: Vec::new(),
            files: Vec::new(),
            kept: false,
        };
        std::fs::set_permissions(&me.root, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting permissions"))?;
        if let Some(u) = &user {
            nix::unistd::chown(&me.root, Some(u.uid), Some(u.gid))
                .map_err(|e| io("chown of the cluster directory")(e.into()))?;
        }
        Ok(me)
    }

    /// Runs initdb in `me`'s directory and starts the server.
    fn init(
        mut me: Self,
        bin: &Path,
        user: &Option<nix::unistd::User>,
    ) -> Result<Self, PgTempError> {
        let user = user.clone();
        let data = me.root.join("data");
        let out = as_user(Command::new(bin.join("initdb")), &user)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            return Err(PgTempError::Initdb(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        // Members of the role `password_login` must log in with their password (tests of password handling);
        // everyone else is trusted, over the private socket only.
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).map_err(io("reading pg_hba.conf"))?;
        let extra: String = me.hba.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(
            &hba,
            format!("local all +password_login scram-sha-256\n{extra}{rules}"),
        )
        .map_err(io("writing pg_hba.conf"))?;
        for (name, content) in &me.files {
            let path = data.join(name);
            std::fs::write(&path, content).map_err(io(format!("writing {name}")))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io("setting permissions"))?;
            if let Some(u) = &user {
                nix::unistd::chown(&path, Some(u.uid), Some(u.gid))
                    .map_err(|e| io(format!("chown of {name}"))(e.into()))?;
            }
        }
        me.launch()?;
        Ok(me)
    }

    /// Starts the server on the existing data directory; returns once it accepts connections.
    fn launch(&mut self) -> Result<(), PgTempError> {
        let (bin, user, data) = (self.bin.clone(), self.user.clone(), self.root.join("data"));
        let me = self;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(me.root.join("server.log"))
            .map_err(io("creating server.log"))?;
        if let Some(u) = &user {
            let _ = nix::unistd::chown(&me.root.join("server.log"), Some(u.uid), Some(u.gid));
        }
        let mut cmd = as_user(Command::new(bin.join("postgres")), &user);
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&me.root)
            .arg("-p")
            .arg(me.port.to_string());
        let fast = [
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ];
        let fast: &[&str] = if me.durable { &[] } else { &fast };
        let defaults = [
            "listen_addresses=",
            "max_connections=200",
            "shared_buffers=128MB",
        ];
        let all = defaults.iter().chain(fast).map(|s| s.to_string());
        for setting in all.chain(me.settings.iter().cloned()) {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("server.log"))?)
            .stderr(log);
        let (child, keeper) = spawn_tied(cmd).map_err(io("starting postgres"))?;
        me.child = Some(child);
        me.keeper = Some(keeper);
        me.wait_ready(Duration::from_secs(30))
    }

    /// Stops the server (fast shutdown) and keeps its data, as a database outage would; [`Self::resume`] starts
    /// it again on the same socket.
    pub fn pause(&mut self) {
        self.stop_server();
    }

    /// Starts the server again after [`Self::pause`].
    pub fn resume(&mut self) -> Result<(), PgTempError> {
        self.launch()
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), PgTempError> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if crate::db::connect(&self.url("postgres")).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        Err(PgTempError::NotReady(limit, log))
    }

    /// A libpq connection string for database `dbname` as the superuser `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.root.display(),
            self.port
        )
    }

    /// `program` as a command that runs as the server's OS user (the tests start PgBouncer this way: it refuses
    /// to run as root, as PostgreSQL does).
    pub fn command_as_server_user(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        as_user(Command::new(program), &self.user)
    }

    /// The port of its socket (and of TCP, for a TLS server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the socket, the data and the server log.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Fast shutdown (clients disconnected, transactions rolled back), then removes the directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop_server();
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.keeper.take();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}
