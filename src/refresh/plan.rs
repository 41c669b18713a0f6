//! `refresh --dry-run`: what the next run would do, and why, from a read-only snapshot.

use diesel::pg::PgConnection;

use super::Mode;
use crate::db::{incremental, partitions, queries, verify};

/// What the next incremental refresh would do, and why (`refresh --dry-run`).
pub fn dry_run(conn: &mut PgConnection, mode: Mode) -> diesel::QueryResult<String> {
    use std::fmt::Write;
    conn.build_transaction().repeatable_read().read_only().run(|conn| {
        let mut out = String::new();
        let first_run = queries::latest_success(conn)?.is_none();
        let pending = incremental::pending_by_source(conn)?;
        if first_run {
            let _ = writeln!(out, "would rebuild everything under the writer lock: no successful refresh has run yet");
            return Ok(out);
        }
        let beside = "recount everything from a snapshot beside the refreshes, without the writer lock, and \
                      commit the difference for the next run to apply";
        if let Some(why) = partitions::changes(conn)? {
            let _ = writeln!(out, "would request a rebuild, {why}: then {beside}");
        }
        let requested = pending.iter().any(|p| p.full_rebuild);
        let detached = partitions::detached(conn)?;
        let _ = match (mode, requested) {
            (Mode::Full, _) => writeln!(out, "would {beside} (--full), after:"),
            (Mode::Verify(verify::Scope::All), _) => writeln!(out, "would {beside}, listing what differed (--verify), after:"),
            (_, true) => writeln!(out, "a rebuild is requested (a table was truncated or bulk-loaded, or a partition \
                                         dropped): would {beside}, after:"),
            (Mode::Verify(verify::Scope::Sample { from, to, bucket, buckets }), _) => writeln!(
                out,
                "would recount every day from {from} to {to} and the users whose id is {bucket} modulo {buckets}, \
                 and repair any drift, after:"
            ),
            (Mode::Verify(verify::Scope::Days { from, to }), _) => writeln!(
                out,
                "would recount every day from {from} to {to} and every user with a token created then, and repair \
                 any drift, after:"
            ),
            (Mode::Range { from, to }, _) => writeln!(
                out,
                "would recompute every day from {from} to {to} and every user with a token created then, plus:"
            ),
            (Mode::Incremental, _) if pending.is_empty() && detached.is_empty() => writeln!(out, "nothing pending: would change nothing"),
            (Mode::Incremental, _) => writeln!(out, "would apply the pending changes:"),
        };
        for (source, at) in detached {
            let _ = writeln!(
                out,
                "  {source} at {}: its rows are still counted in the rollups, and are counted as change rows \
                 beside the refreshes",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        for p in &pending {
            let _ = writeln!(
                out,
                "  {}: {} change rows naming {} days and {} users",
                p.source, p.rows, p.days, p.users
            );
        }
        let days = incremental::pending_days(conn)?;
        if !days.is_empty() {
            let shown: Vec<String> = days.iter().take(31).map(|d| d.to_string()).collect();
            let more = if days.len() > 31 { format!(" and {} more", days.len() - 31) } else { String::new() };
            let _ = writeln!(out, "days to update: {}{more}", shown.join(", "));
        }
        let users = incremental::pending_users(conn)?;
        if users > 0 {
            let _ = writeln!(out, "users to update: {users}");
        }
        Ok(out)
    })
}
