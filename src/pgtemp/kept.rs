//! A cluster in a directory the caller names, kept between runs: the 100M-check-in benchmark's data set takes
//! most of an hour to seed and is made once. The first start runs initdb; later starts reuse the data. Stopping
//! it (or dropping it) shuts the server down and leaves the directory.

use super::{find_bin_dir, io, server_user, PgTempError, TempPostgres, PORT};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

impl TempPostgres {
    /// Starts the cluster in `dir` (made with initdb if `dir/data` holds none), with `settings` as more `-c`
    /// settings (e.g. `shared_buffers=1GB`). Returns it and whether it was new (empty).
    pub fn start_kept(dir: &Path, settings: &[&str]) -> Result<(Self, bool), PgTempError> {
        let bin = find_bin_dir().ok_or(PgTempError::NoBinaries)?;
        let user = server_user()?;
        std::fs::create_dir_all(dir).map_err(io("creating the cluster directory"))?;
        let root = dir
            .canonicalize()
            .map_err(io("resolving the cluster directory"))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting permissions"))?;
        if let Some(u) = &user {
            nix::unistd::chown(&root, Some(u.uid), Some(u.gid))
                .map_err(|e| io("chown of the cluster directory")(e.into()))?;
        }
        let mut me = TempPostgres {
            root,
            bin: bin.clone(),
            user: user.clone(),
            child: None,
            keeper: None,
            durable: false,
            port: PORT,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            hba: Vec::new(),
            files: Vec::new(),
            kept: true,
        };
        if me.root.join("data/PG_VERSION").is_file() {
            me.launch()?;
            Ok((me, false))
        } else {
            Ok((Self::init(me, &bin, &user)?, true))
        }
    }
}
