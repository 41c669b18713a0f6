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
