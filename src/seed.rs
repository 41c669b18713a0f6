//! Deterministic synthetic data: members and their tokens with a realistic shape (busier weekdays and office
//! hours, a few regulars and many occasional visitors, about 55 % of tokens used a few minutes after creation).
//!
//! The same parameters always give the same rows, whether they are written as SQL (`db/02_demo_data.sql` is
//! produced this way) or loaded straight into a database with COPY (a million tokens in seconds).

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Weekday};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{IsTerminal, Write};

use crate::db::queries;
use crate::schema::{tokens, users};

/// From this many tokens on, `load` suspends per-statement change capture and asks for one full rebuild.
const BULK_LOAD_TOKENS: u64 = 100_000;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedParams {
    pub users: u32,
    pub tokens: u64,
    /// Tokens are created over the `days` days before `end` (exclusive).
    pub days: u32,
    pub end: NaiveDate,
    pub seed: u64,
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera",
    "Wen", "Yara", "Zoe",
];
const LAST: &[&str] = &[
    "Abbott",
    "Brooks",
    "Castro",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Patel",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
];

/// A generated member (ids are 1-based positions; the loader offsets them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedUser {
    pub index: u32,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub joined_at: NaiveDateTime,
}

/// A generated token of member `user_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedToken {
    pub user_index: u32,
    pub token: String,
    pub created_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

fn start_of(params: &SeedParams) -> NaiveDateTime {
    (params.end - Duration::days(i64::from(params.days)))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
}

/// The members, in id order.
pub fn users(params: SeedParams) -> impl Iterator<Item = SeedUser> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let first_token_day = start_of(&params);
    (1..=params.users).map(move |index| {
        // Members joined up to six months before the first token day; one in fifty at a whole second.
        let before = Duration::seconds(rng.random_range(0..180 * 86_400));
        let micros = if rng.random_ratio(1, 50) {
            0
        } else {
            rng.random_range(1..1_000_000)
        };
        SeedUser {
            index,
            first_name: FIRST[rng.random_range(0..FIRST.len())],
            last_name: LAST[rng.random_range(0..LAST.len())],
            joined_at: first_token_day - before + Duration::microseconds(micros),
        }
    })
}

/// The tokens, in creation order within each generated batch (not globally sorted, like real traffic).
pub fn tokens(params: SeedParams) -> impl Iterator<Item = SeedToken> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0x746f_6b65_6e73);
    let start = start_of(&params);
    let days = params.days.max(1);
    let users = params.users.max(1);
    (0..params.tokens).map(move |_| {
        // Weekdays are about three times as busy as weekends: redraw a weekend day two times out of three.
        let mut day = rng.random_range(0..days);
        let weekend = |d: u32| {
            matches!(
                (start + Duration::days(i64::from(d))).weekday(),
                Weekday::Sat | Weekday::Sun
            )
        };
        if weekend(day) && rng.random_ratio(2, 3) {
            day = rng.random_range(0..days);
        }
        // Office hours: 07:00-20:00, peaking around midday (sum of two uniforms).
        let minute_of_day = 7 * 60 + (rng.random_range(0..390) + rng.random_range(0..390));
        let created_at = start
            + Duration::days(i64::from(day))
            + Duration::minutes(i64::from(minute_of_day))
            + Duration::seconds(rng.random_range(0..60))
            + Duration::microseconds(rng.random_range(0..1_000_000));
        // A few regulars make many visits: squaring a uniform skews the choice towards low indexes.
        let u: f64 = rng.random();
        let user_index = 1 + ((u * u * f64::from(users)) as u32).min(users - 1);
        let used_at = rng
            .random_ratio(55, 100)
            .then(|| created_at + Duration::seconds(rng.random_range(60..600)));
        SeedToken {
            user_index,
            token: format!("{:06}", rng.random_range(0..1_000_000)),
            created_at,
            used_at,
        }
    })
}

fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Writes the data as psql-loadable SQL (into empty tables: user ids are 1..=users).
pub fn write_sql(params: SeedParams, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "-- Demo data generated by: coworking-analytics seed --format sql --users {} --tokens {} --days {} --end {} --seed {}",
        params.users, params.tokens, params.days, params.end, params.seed
    )?;
    writeln!(
        out,
        "-- Load after 01_init_tables.sql into empty tables.\nBEGIN;"
    )?;
    let users: Vec<SeedUser> = users(params).collect();
    for chunk in users.chunks(500) {
        writeln!(
            out,
            "INSERT INTO users (id, first_name, last_name, joined_at) VALUES"
        )?;
        for (i, u) in chunk.iter().enumerate() {
            let sep = if i + 1 == chunk.len() { ";" } else { "," };
            writeln!(
                out,
                "({}, '{}', '{}', '{}'){sep}",
                u.index,
                u.first_name,
                u.last_name,
                ts(u.joined_at)
            )?;
        }
    }
    writeln!(out, "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT coalesce(max(id), 1) FROM users));")?;
    let tokens: Vec<SeedToken> = tokens(params).collect();
    for chunk in tokens.chunks(500) {
        writeln!(
            out,
            "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES"
        )?;
        for (i, t) in chunk.iter().enumerate() {
            let sep = if i + 1 == chunk.len() { ";" } else { "," };
            let used = t
                .used_at
                .map_or("NULL".to_owned(), |u| format!("'{}'", ts(u)));
            writeln!(
                out,
                "({}, '{}', '{}', {used}){sep}",
                t.user_index,
                t.token,
                ts(t.created_at)
            )?;
        }
    }
    writeln!(out, "COMMIT;")
}

fn io_error(e: std::io::Error) -> diesel::result::Error {
    diesel::result::Error::SerializationError(Box::new(e))
}

/// Loads the data into the database with COPY, after any users already there. Shows progress on a terminal.
/// Returns (users, tokens) inserted.
pub fn load(conn: &mut PgConnection, params: SeedParams) -> QueryResult<(usize, usize)> {
    if crate::db::bulk::behind_pgpool(conn) {
        return load_by_inserts(conn, params);
    }
    conn.transaction(|conn| {
        let offset = queries::max_user_id(conn)?;
        let n_users = diesel::copy_from(users::table)
            .from_raw_data(
                (
                    users::id,
                    users::first_name,
                    users::last_name,
                    users::joined_at,
                ),
                |w| {
                    for u in users(params) {
                        writeln!(
                            w,
                            "{}\t{}\t{}\t{}",
                            offset + u.index as i32,
                            u.first_name,
                            u.last_name,
                            ts(u.joined_at)
                        )
                        .map_err(io_error)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                },
            )
            .execute(conn)?;
        queries::sync_users_id_sequence(conn)?;
        // A large load would record a change row per (day, user) pair: record one full rebuild instead.
        let suspended = params.tokens >= BULK_LOAD_TOKENS && queries::suspend_token_capture(conn);
        let progress = std::io::stderr().is_terminal() && params.tokens >= 100_000;
        let n_tokens = diesel::copy_from(tokens::table)
            .from_raw_data(
                (
                    tokens::user_id,
                    tokens::token,
                    tokens::created_at,
                    tokens::used_at,
                ),
                |w| {
                    let step = (params.tokens / 100).max(1);
                    for (i, t) in tokens(params).enumerate() {
                        let used = t.used_at.map_or("\\N".to_owned(), ts);
                        let user_id = offset + t.user_index as i32;
                        writeln!(w, "{user_id}\t{}\t{}\t{used}", t.token, ts(t.created_at))
                            .map_err(io_error)?;
                        if progress && (i as u64).is_multiple_of(step) {
                            eprint!("\rseeding tokens: {:>3}%", (i as u64) * 100 / params.tokens);
                        }
                    }
                    if progress {
                        eprintln!("\rseeding tokens: 100%");
                    }
                    Ok::<_, diesel::result::Error>(())
                },
            )
            .execute(conn)?;
        if suspended {
            queries::resume_token_capture(conn)?;
        }
        Ok((n_users, n_tokens))
    })
}

/// Rows per INSERT when COPY cannot be used (4 parameters a row, under PostgreSQL's 65,535).
const INSERT_BATCH: usize = 10_000;

/// [`load`] through pgpool-II, with multi-row INSERTs in one transaction (the same rows, fewer per second).
fn load_by_inserts(conn: &mut PgConnection, params: SeedParams) -> QueryResult<(usize, usize)> {
    conn.transaction(|conn| {
        let offset = queries::max_user_id(conn)?;
        let mut n_users = 0;
        let mut batch = Vec::with_capacity(INSERT_BATCH);
        let mut users = users(params).peekable();
        while users.peek().is_some() {
            batch.clear();
            batch.extend(users.by_ref().take(INSERT_BATCH).map(|u| {
                (
                    users::id.eq(offset + u.index as i32),
                    users::first_name.eq(u.first_name),
                    users::last_name.eq(u.last_name),
                    users::joined_at.eq(u.joined_at),
                )
            }));
            n_users += diesel::insert_into(users::table)
                .values(&batch)
                .execute(conn)?;
        }
        queries::sync_users_id_sequence(conn)?;
        let suspended = params.tokens >= BULK_LOAD_TOKENS && queries::suspend_token_capture(conn);
        let mut n_tokens = 0;
        let mut batch = Vec::with_capacity(INSERT_BATCH);
        let mut tokens = tokens(params).peekable();
        while tokens.peek().is_some() {
            batch.clear();
            batch.extend(tokens.by_ref().take(INSERT_BATCH).map(|t| {
                (
                    tokens::user_id.eq(offset + t.user_index as i32),
                    tokens::token.eq(t.token),
                    tokens::created_at.eq(t.created_at),
                    tokens::used_at.eq(t.used_at),
                )
            }));
            n_tokens += diesel::insert_into(tokens::table)
                .values(&batch)
                .execute(conn)?;
        }
        if suspended {
            queries::resume_token_capture(conn)?;
        }
        Ok((n_users, n_tokens))
    })
}

/// The parameters of the checked-in demo data, `db/02_demo_data.sql`.
pub const DEMO_PARAMS: SeedParams = SeedParams {
    users: 300,
    tokens: 4_000,
    days: 28,
    end: match NaiveDate::from_ymd_opt(2026, 11, 2) {
        Some(d) => d,
        None => NaiveDate::MIN,
    },
    seed: 42,
};
