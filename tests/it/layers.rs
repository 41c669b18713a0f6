//! The code's layers (#22): no import cycle between the crate's top-level modules, nor between the files of one.
//!
//! Reads `src/` as text: every path a file names (`crate::a::b`, `super::x`, a child module's `x::`, with `{...}`
//! groups) resolved to the longest module it names. A module's facade is not a dependency: `mod x;` and
//! `pub use x::...` of its own child modules are skipped, and so are comments and each file's `#[cfg(test)]` part.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every non-test source file of the library, by module path.
fn sources() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().with_extension("");
        let mut parts: Module = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let last = parts.last().unwrap().clone();
        if last == "main" || last == "tests" || last.ends_with("_tests") {
            continue; // the binary's edge, and test modules
        }
        if last == "lib" || last == "mod" {
            parts.pop();
        }
        let text = std::fs::read_to_string(&f).unwrap();
        out.insert(parts, text);
    }
    out
}

/// The text that counts: no comments, nothing after the first `#[cfg(test)]` at column 0, no facade lines.
fn code(text: &str, children: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = line.split("//").next().unwrap_or("");
        let t = line.trim_start();
        let facade = ["mod ", "pub mod ", "pub(crate) mod "]
            .iter()
            .any(|p| t.starts_with(p))
            || ["pub use ", "pub(crate) use "].iter().any(|p| {
                t.strip_prefix(p).is_some_and(|rest| {
                    let first: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    children.contains(&first)
                })
            });
        if !facade {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn ident(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The paths that start at `rest` (just after `prefix::`): `a::b::c` or a `{...}` group of them.
fn paths(rest: &str, prefix: &Module, out: &mut Vec<Module>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    paths(group[start..i].trim_start(), prefix, out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    paths(group[start..i].trim_start(), prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let (name, after) = ident(rest);
    if name.is_empty() || name == "self" {
        out.push(prefix.clone());
        return;
    }
    let mut next = prefix.clone();
    next.push(name.to_owned());
    match after.strip_prefix("::") {
        Some(more) => paths(more, &next, out),
        None => out.push(next),
    }
}

/// The longest known module that `path` starts with.
fn resolve(path: &Module, known: &BTreeSet<Module>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| known.contains(m))
        .unwrap_or_default()
}

/// Which modules each module's code names.
fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = sources();
    let known: BTreeSet<Module> = src.keys().cloned().collect();
    let mut out = BTreeMap::new();
    for (m, text) in &src {
        let children: BTreeSet<String> = known
            .iter()
            .filter(|k| k.len() == m.len() + 1 && k.starts_with(m))
            .map(|k| k[m.len()].clone())
            .collect();
        let code = code(text, &children);
        let mut named = Vec::new();
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let boundary = i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':');
            let (word, _) = ident(&code[i..]);
            if boundary && !word.is_empty() && code[i + word.len()..].starts_with("::") {
                let rest = &code[i + word.len() + 2..];
                if word == "crate" {
                    paths(rest, &Vec::new(), &mut named);
                } else if word == "super" {
                    let mut base = m.clone();
                    base.pop();
                    let mut rest = rest;
                    while let Some(r) = rest.strip_prefix("super::") {
                        base.pop();
                        rest = r;
                    }
                    paths(rest, &base, &mut named);
                } else if word == "self" || children.contains(word) {
                    let base = if word == "self" {
                        m.clone()
                    } else {
                        [m.clone(), vec![word.to_owned()]].concat()
                    };
                    paths(rest, &base, &mut named);
                }
                i += word.len();
            } else {
                i += word.len().max(1);
            }
        }
        let targets: BTreeSet<Module> = named
            .iter()
            .map(|p| resolve(p, &known))
            .filter(|t| !t.is_empty() && t != m)
            .collect();
        out.insert(m.clone(), targets);
    }
    out
}

/// The groups of modules that reach each other (each a cycle or several), with the edges inside each group.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut groups: Vec<String> = Vec::new();
    let mut done = BTreeSet::new();
    for (n, r) in &reached {
        if done.contains(*n) || !r.contains(*n) {
            continue;
        }
        let group: BTreeSet<&String> = r
            .iter()
            .filter(|m| reached.get(m).is_some_and(|back| back.contains(*n)))
            .collect();
        for m in &group {
            done.insert((*m).clone());
            for t in graph.get(*m).into_iter().flatten() {
                if group.contains(t) {
                    groups.push(format!("{m} -> {t}"));
                }
            }
        }
        groups.push(String::new());
    }
    (!groups.is_empty()).then_some(groups)
}

/// Every cycle found: between top-level modules, and between the files of each one.
fn cycles() -> Vec<Vec<String>> {
    let edges = edges();
    let mut found = Vec::new();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, targets) in edges.iter().filter(|(m, _)| !m.is_empty()) {
        let from = m[0].clone();
        top.entry(from.clone()).or_default();
        for t in targets {
            if t[0] != from {
                top.entry(from.clone()).or_default().insert(t[0].clone());
            }
        }
    }
    found.extend(cycle(&top));
    let tops: BTreeSet<String> = edges.keys().filter_map(|m| m.first().cloned()).collect();
    for t in tops {
        let inside: BTreeMap<String, BTreeSet<String>> = edges
            .iter()
            .filter(|(m, _)| m.first() == Some(&t))
            .map(|(m, ts)| {
                let inner = ts
                    .iter()
                    .filter(|x| x[0] == t)
                    .map(|x| x.join("::"))
                    .collect();
                (m.join("::"), inner)
            })
            .collect();
        found.extend(cycle(&inside));
    }
    found
}

#[test]
fn no_import_cycle_between_modules_nor_between_the_files_of_one() {
    let found = cycles();
    assert!(
        found.is_empty(),
        "import cycles:\n{}",
        found
            .iter()
            .map(|c| c.join("\n"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_through_super_and_crate_paths() {
    // The checker itself can fail: these two fake files name each other.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut named = Vec::new();
    paths("{a::B, c::{D, e::F}}", &vec!["x".to_owned()], &mut named);
    assert_eq!(
        named,
        vec![
            vec!["x".to_owned(), "a".into(), "B".into()],
            vec!["x".to_owned(), "c".into(), "D".into()],
            vec!["x".to_owned(), "c".into(), "e".into(), "F".into()],
        ]
    );
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    assert!(cycle(&g).is_some());
    g.remove("b");
    assert!(cycle(&g).is_none());
}

/// Rust files over this many lines, in `src/`, `tests/` and `scripts/` (the house rule is "about 400"; jwt.rs once
/// crept to 405 unnoticed, and the benchmarks' live.rs to 500 and three test files past 400 while only `src/` was
/// checked).
const MAX_LINES: usize = 400;

fn long_files(root: &Path) -> Vec<(String, usize)> {
    let mut long = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let n = std::fs::read_to_string(&p).unwrap().lines().count();
                if n > MAX_LINES {
                    long.push((p.display().to_string(), n));
                }
            }
        }
    }
    long
}

#[test]
fn no_source_file_is_over_400_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let long: Vec<_> = ["src", "tests", "scripts"]
        .iter()
        .flat_map(|dir| long_files(&root.join(dir)))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_length_check_sees_a_long_file() {
    let dir = std::env::temp_dir().join(format!("layers-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("long.rs"), "//\n".repeat(MAX_LINES + 1)).unwrap();
    std::fs::write(dir.join("short.rs"), "//\n".repeat(MAX_LINES)).unwrap();
    let long = long_files(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(long.len(), 1, "{long:?}");
    assert!(long[0].0.ends_with("long.rs") && long[0].1 == MAX_LINES + 1);
}
