//! Connection strings: libpq keyword quoting, password redaction for logs and errors, and swapping the
//! database name (URL or keyword form).

/// Quotes a value for a libpq keyword/value connection string.
pub(super) fn conninfo_quote(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

/// Replaces any password in a libpq connection string (URI or keyword/value form) with `***`.
pub fn redact(conn: &str) -> String {
    if let Some(rest) = conn
        .strip_prefix("postgres://")
        .or_else(|| conn.strip_prefix("postgresql://"))
    {
        let scheme = &conn[..conn.len() - rest.len()];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{user}:***{}", &authority[at..])
                } else {
                    authority.to_owned()
                }
            }
            None => authority.to_owned(),
        };
        let tail = redact_query_password(tail);
        return format!("{scheme}{authority}{tail}");
    }
    redact_keyword_password(conn)
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| {
            if p.to_ascii_lowercase().starts_with("password=") {
                "password=***".to_owned()
            } else {
                p.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

/// Keyword/value form: `password=secret`, `password = 'se cret'`, with `\'` escapes inside quotes.
fn redact_keyword_password(conn: &str) -> String {
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    while let Some(pos) = find_keyword(rest, "password") {
        out.push_str(&rest[..pos]);
        let after = rest[pos + "password".len()..].trim_start();
        let Some(value) = after.strip_prefix('=') else {
            out.push_str("password");
            rest = &rest[pos + "password".len()..];
            continue;
        };
        let value = value.trim_start();
        out.push_str("password=***");
        rest = skip_value(value);
    }
    out.push_str(rest);
    out
}

fn find_keyword(haystack: &str, keyword: &str) -> Option<usize> {
    let lower = haystack.to_ascii_lowercase();
    let mut start = 0;
    while let Some(found) = lower[start..].find(keyword) {
        let pos = start + found;
        let boundary = pos == 0 || lower.as_bytes()[pos - 1].is_ascii_whitespace();
        if boundary {
            return Some(pos);
        }
        start = pos + keyword.len();
    }
    None
}

fn skip_value(value: &str) -> &str {
    if let Some(quoted) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return &quoted[i + 1..],
                _ => {}
            }
        }
        ""
    } else {
        let end = value.find(char::is_whitespace).unwrap_or(value.len());
        &value[end..]
    }
}

/// Returns `conn` pointing at database `name` instead (used by tests and the demo).
pub fn with_dbname(conn: &str, name: &str) -> String {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let scheme_len = conn.find("://").map_or(0, |i| i + 3);
        let (head, rest) = conn.split_at(scheme_len);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let query = tail
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        format!("{head}{authority}/{name}{query}")
    } else {
        format!("{conn} dbname={}", conninfo_quote(name))
    }
}

/// libpq's TLS settings of a connection string, which the follower's tokio-postgres connection does not parse
/// itself: taken out of the string by [`split_tls`] and applied by `db::listen`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode` as written (libpq's default, `prefer`, when absent).
    pub mode: Option<String>,
    pub rootcert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Settings libpq has and the listener does not (`sslcrl`, `sslpassword`, ...): the listener refuses to
    /// connect rather than connect with less checking than the pool.
    pub unsupported: Vec<String>,
}

/// TLS keywords libpq knows; also read from `PGSSL*` variables when the string does not set them, as libpq does.
const TLS_KEYS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
];
/// libpq keywords that change nothing for the listening connection (tokio-postgres refuses unknown ones).
const IGNORED_KEYS: &[&str] = &["fallback_application_name", "gssencmode", "client_encoding"];

/// Splits `conn` into the string without libpq's TLS keywords (and with the keywords tokio-postgres does not
/// know and that do not matter to a listener removed) and the TLS settings (from the string, else from
/// `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`).
pub fn split_tls(conn: &str) -> (String, TlsSettings) {
    let mut tls = TlsSettings::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => tls.mode = Some(value),
        "sslrootcert" => tls.rootcert = Some(value),
        "sslcert" => tls.cert = Some(value),
        "sslkey" => tls.key = Some(value),
        // sslsni=1 and sslcompression=0 are what the listener does anyway.
        "sslsni" if value == "1" => {}
        "sslcompression" if value == "0" => {}
        other => tls.unsupported.push(other.to_owned()),
    };
    let is_dropped = |k: &str| TLS_KEYS.contains(&k) || IGNORED_KEYS.contains(&k);
    let rest = if let Some((head, query)) = uri_query(conn) {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let k = percent_decode(k);
                if !is_dropped(&k) {
                    return true;
                }
                if TLS_KEYS.contains(&k.as_str()) {
                    take(&k, percent_decode(v));
                }
                false
            })
            .collect();
        if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        }
    } else {
        let mut out = Vec::new();
        for (k, raw, value) in keyword_pairs(conn) {
            if !is_dropped(&k) {
                out.push(raw);
            } else if TLS_KEYS.contains(&k.as_str()) {
                take(&k, value);
            }
        }
        out.join(" ")
    };
    for (field, var) in [
        (&mut tls.mode, "PGSSLMODE"),
        (&mut tls.rootcert, "PGSSLROOTCERT"),
        (&mut tls.cert, "PGSSLCERT"),
        (&mut tls.key, "PGSSLKEY"),
    ] {
        if field.is_none() {
            *field = std::env::var(var).ok().filter(|v| !v.is_empty());
        }
    }
    (rest, tls)
}

/// A URI's part before `?` and its query, if `conn` is a URI with one.
fn uri_query(conn: &str) -> Option<(&str, &str)> {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        Some(conn.split_once('?').unwrap_or((conn, "")))
    } else {
        None
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The `key = value` pairs of a keyword/value string: the key (lower case), the pair's text as written, and the
/// value unquoted.
fn keyword_pairs(conn: &str) -> Vec<(String, String, String)> {
    let mut pairs = Vec::new();
    let mut rest = conn.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_ascii_lowercase();
        let after_key = rest[key_end..].trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            // Not a pair: keep the word as it is (tokio-postgres will say what is wrong with it).
            pairs.push((key, rest[..key_end].to_owned(), String::new()));
            rest = after_key;
            continue;
        };
        let value = value.trim_start();
        let after = skip_value(value);
        let written = &value[..value.len() - after.len()];
        let unquoted = match written
            .strip_prefix('\'')
            .and_then(|w| w.strip_suffix('\''))
        {
            Some(inner) => inner.replace("\\'", "'").replace("\\\\", "\\"),
            None => written.to_owned(),
        };
        let raw = &rest[..rest.len() - after.len()];
        pairs.push((key, raw.to_owned(), unquoted));
        rest = after.trim_start();
    }
    pairs
}
