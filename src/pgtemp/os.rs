//! The operating-system side of a private server: running a program as the server's user, tying the server's
//! life to ours, sweeping directories that killed runs left behind.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

pub(super) const DIR_PREFIX: &str = "coworking-pg-";

/// Spawns `cmd` with a parent-death signal (SIGQUIT: immediate shutdown) so the server cannot outlive us.
///
/// Linux delivers that signal when the *thread* that forked exits, not the process, so the fork happens on a
/// keeper thread that lives until the returned sender is dropped (or the process dies).
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<(Child, std::sync::mpsc::Sender<()>)> {
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child about to exec.
    #[expect(
        unsafe_code,
        reason = "pre_exec is the only way to set the child's parent-death signal"
    )]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)
                .map_err(std::io::Error::from)
        });
    }
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (child_tx, child_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || {
            let spawned = cmd.spawn();
            let ok = spawned.is_ok();
            let _ = child_tx.send(spawned);
            if ok {
                // Blocks until the owner drops the sender.
                let _ = stop_rx.recv();
            }
        })?;
    let child = child_rx
        .recv()
        .map_err(|_| std::io::Error::other("keeper thread died"))??;
    Ok((child, stop_tx))
}

pub(super) fn as_user(mut cmd: Command, user: &Option<nix::unistd::User>) -> Command {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        cmd.env("HOME", &u.dir)
            .env("USER", &u.name)
            .current_dir("/");
    }
    cmd
}

/// Removes cluster directories whose server is no longer running (left by a killed test run or demo).
pub(super) fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let pid = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        let alive = pid
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600));
        // initdb's bootstrap backends also write postmaster.pid and exit, so a dead pid alone does not mean
        // abandoned (another process may be initialising that cluster right now): only a directory whose server
        // is not running and that nobody touched for ten minutes is.
        if !alive && old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
