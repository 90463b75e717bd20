//! The layout says what the program is (lib.rs): no module imports one
//! that imports it back, at any folder level, and no source file grows
//! past 700 lines. Reads the source; nothing runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file under `src` defines: `core/config/mod.rs` is
/// `[core, config]`, `core/state.rs` is `[core, state]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

fn ident_at(text: &str, at: usize) -> Option<&str> {
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The first segment of each item of a `{a, b::c, d::{e}}` group at `at`.
fn group_heads(text: &str, at: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut start) = (0usize, at + 1);
    for (i, c) in text[at..].char_indices() {
        let i = at + i;
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let item = text[start..i].trim();
                if let Some(h) = ident_at(item, 0) {
                    heads.push(h.to_string());
                }
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads
}

/// Every module path a file names through `crate::` or `super::`, made
/// absolute (as far as its first segments go).
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", 0usize), ("super::", 1)] {
        let mut from = 0;
        while let Some(found) = text[from..].find(prefix) {
            let at = from + found;
            from = at + prefix.len();
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue; // `super::super::` counted from its first `super`
            }
            let mut up = base;
            let mut pos = at + prefix.len();
            while text[pos..].starts_with("super::") {
                up += 1;
                pos += "super::".len();
            }
            let root: Vec<String> = if prefix == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(up)].to_vec()
            };
            let mut heads = Vec::new();
            if text[pos..].starts_with('{') {
                heads = group_heads(text, pos);
            } else if let Some(h) = ident_at(text, pos) {
                let mut path = vec![h.to_string()];
                let mut p = pos + h.len();
                while text[p..].starts_with("::") {
                    match ident_at(text, p + 2) {
                        Some(next) => {
                            path.push(next.to_string());
                            p += 2 + next.len();
                        }
                        None => break,
                    }
                }
                let mut full = root.clone();
                full.extend(path);
                out.push(full);
            }
            for h in heads {
                let mut full = root.clone();
                full.push(h);
                out.push(full);
            }
        }
    }
    out
}

/// Whether `name` is a module directly inside the module folder `level`.
fn is_module(src: &Path, level: &[String], name: &str) -> bool {
    let mut dir = src.to_path_buf();
    dir.extend(level);
    dir.join(format!("{name}.rs")).is_file() || dir.join(name).join("mod.rs").is_file()
}

fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // A circle exists where some module reaches itself.
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![start.clone()];
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if next == start {
                    found.insert(format!("{start} -> {m} -> … -> {start}"));
                } else if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back_at_any_level() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // level ("core", "" for the crate) -> module -> modules it uses.
    let mut levels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let module = module_of(&src, f);
        if module.is_empty() {
            continue;
        }
        let text = fs::read_to_string(f).unwrap();
        // In-file unit tests may reach anywhere.
        let text = match text.find("#[cfg(test)]\nmod tests {") {
            Some(cut) => &text[..cut],
            None => &text[..],
        };
        for r in references(&module, text) {
            let k = module.iter().zip(&r).take_while(|(a, b)| a == b).count();
            if k >= module.len() || k >= r.len() {
                continue; // itself, or inside itself
            }
            let level = &module[..k];
            if is_module(&src, level, &r[k]) {
                levels
                    .entry(level.join("::"))
                    .or_default()
                    .entry(module[k].clone())
                    .or_default()
                    .insert(r[k].clone());
            }
        }
    }
    assert!(
        levels.contains_key("") && levels.contains_key("core"),
        "the scan found no imports: {levels:?}"
    );
    let mut bad = Vec::new();
    for (level, edges) in &levels {
        for c in circles(edges) {
            bad.push(format!("in `crate::{level}`: {c}"));
        }
    }
    assert!(bad.is_empty(), "import circles:\n{}", bad.join("\n"));
}

#[test]
fn the_circle_finder_finds_circles() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert!(circles(&edges).is_empty());
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(circles(&edges).len(), 3);
    let refs = references(
        &["core".into(), "state".into()],
        "use super::discovery::{DeviceSet};\nuse crate::{util, daemon::watch};\nx super::super::api\n\
         y crate::core::health::check",
    );
    assert!(refs.contains(&vec!["core".to_string(), "discovery".into()]));
    assert!(refs.contains(&vec!["util".to_string()]));
    assert!(refs.contains(&vec!["daemon".to_string()]));
    assert!(refs.contains(&vec!["api".to_string()]));
    assert!(refs.contains(&vec!["core".to_string(), "health".into(), "check".into()]));
}

#[test]
fn no_source_file_is_over_700_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}
