//! What a replica reports when the database's history is not the one its snapshot came from (a failover that
//! lost transactions, a restore of an earlier backup): each run's random stamp tells (migration 11), and
//! [`super::CacheWriter::sync_from`] loads everything again when the held run is gone or is another run.

/// How the database's history differs from the one a replica served: the run it held is missing (a restore to an
/// earlier point, a promoted standby that lost the tail, another database behind the same address) or is another
/// run under the same id (reissued by the sequence on the new history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    /// The run the replica served, and its stamp.
    pub held_run: i64,
    pub held_stamp: i64,
    /// The stamp of the database's run under that id, if it has one.
    pub found_stamp: Option<i64>,
    /// The run now served: the database's newest successful run (`None`: it has none, nothing is served).
    pub now_serving: Option<i64>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.found_stamp {
            None => write!(
                f,
                "the database has no run {} (its newest is {}): it lost transactions (a failover, a restore of \
                 an earlier backup) or is another database",
                self.held_run,
                self.now_serving.map_or("none".to_string(), |r| r.to_string())
            )?,
            Some(found) => write!(
                f,
                "the database's run {} is another run (stamp {found:016x}, served {:016x}): a failover or a \
                 restore reissued the id",
                self.held_run, self.held_stamp
            )?,
        }
        match self.now_serving {
            Some(r) => write!(f, "; now serving run {r}, loaded from the database"),
            None => write!(
                f,
                "; the database holds no successful run: nothing is served until one commits"
            ),
        }
    }
}
