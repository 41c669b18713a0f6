//! Changes the benchmarks make to a data set: check-ins spread over its last week (`refresh`, `scale`), and
//! pg_partman's maintenance detaching the oldest month, then that month attached again (`freshness`, `scale`).
//! Included by each benchmark with `#[path]`.

/// Runs pg_partman's maintenance with one more month made ahead (`premake` + 1, so that it creates a partition
/// in every run) and a retention that takes exactly the oldest partition of `public.tokens`;
/// returns that partition's name and bounds, to attach it again after the phase (see [`reattach`]).
pub fn partman_maintenance(conn: &mut diesel::PgConnection) -> (String, String, String) {
    use diesel::connection::SimpleConnection;
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Oldest {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        start: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        end: String,
    }
    let oldest: Oldest = diesel::sql_query(
        "SELECT p.partition_tablename AS name, i.child_start_time::timestamp::text AS start, \
           i.child_end_time::timestamp::text AS end \
         FROM partman.show_partitions('public.tokens') p, \
           LATERAL partman.show_partition_info(p.partition_schemaname || '.' || p.partition_tablename, \
             NULL, 'public.tokens') i LIMIT 1",
    )
    .get_result(conn)
    .unwrap();
    conn.batch_execute(&format!(
        "UPDATE partman.part_config SET retention_keep_table = true, premake = premake + 1, \
           retention = (date_trunc('second', now() - '{}'::timestamptz) - interval '1 day')::text \
         WHERE parent_table = 'public.tokens'; \
         SELECT partman.run_maintenance('public.tokens'); \
         UPDATE partman.part_config SET retention = NULL WHERE parent_table = 'public.tokens'",
        oldest.end
    ))
    .unwrap();
    (oldest.name, oldest.start, oldest.end)
}

/// Attaches a partition that [`partman_maintenance`] detached (its rows come back as change rows), so that the
/// data set is the same for the next run.
pub fn reattach(conn: &mut diesel::PgConnection, (name, start, end): &(String, String, String)) {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(&format!(
        "ALTER TABLE tokens ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')"
    ))
    .unwrap();
}

/// `n` changed tokens over the last 7 days of the data: half new tokens, half late check-ins, in 100-row statements.
pub fn make_changes(conn: &mut diesel::PgConnection, n: usize, users: u32, end: &str, salt: usize) {
    use diesel::connection::SimpleConnection;
    for batch in 0..(n / 2).div_ceil(100) {
        conn.batch_execute(&format!(
            "INSERT INTO tokens (user_id, token, created_at, used_at) \
             SELECT 1 + (({batch} * 100 + g) * 7919 + {salt} * 104729) % {users}, '424242', ts, CASE WHEN g % 2 = 0 THEN ts + interval '2 min' END \
             FROM generate_series(1, 100) g, LATERAL (SELECT '{end}'::timestamp - (g % 7 + 1) * interval '1 day' \
                  + (g * 37 % 600) * interval '1 minute' AS ts) t"
        ))
        .unwrap();
        conn.batch_execute(&format!(
            "UPDATE tokens SET used_at = created_at + interval '1 day' WHERE id IN ( \
               SELECT id FROM tokens WHERE used_at IS NULL AND created_at >= '{end}'::timestamp - interval '7 days' \
               ORDER BY id OFFSET {} LIMIT 100)",
            (batch * 100 + salt) % 5000
        ))
        .unwrap();
    }
}
