//! A small glob matcher for host paths, one path component at a time:
//! `*` (any run of characters), `?` (one character), `[…]` (a class, with
//! ranges and `!` or `^` to negate) and `\` to take the next character
//! literally. `*` never crosses a `/` and, as in Go's `filepath.Match`
//! (which generic-device-plugin uses), matches names starting with `.`.
//!
//! Written here rather than taken from the `glob` crate because the daemon
//! needs the pieces, not a directory walk: which components are literal
//! (where to start and what to watch), whether a pattern *could* match a
//! sensitive path, and a translation to RE2 for the admission policy.

use std::fmt;

/// One token of a component pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `[…]`: inclusive ranges, negated or not.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One path component: a literal name or a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    Literal(String),
    Glob(Glob),
}

/// A compiled pattern for one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<Tok>,
}

/// A malformed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError(pub String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` holds an unescaped glob character (`*`, `?`, `[`).
pub fn has_glob(s: &str) -> bool {
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if matches!(c, '*' | '?' | '[') {
            return true;
        }
    }
    false
}

/// A path without glob characters, its escapes undone: `/mnt/disk\[1]`
/// is the path `/mnt/disk[1]`.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Compiles one component. A component without glob characters (escapes
/// removed) is a literal.
///
/// # Errors
///
/// An unclosed `[`, an empty class or a trailing `\`.
pub fn component(s: &str) -> Result<Component, GlobError> {
    let toks = tokens(s)?;
    if toks.iter().all(|t| matches!(t, Tok::Lit(_))) {
        return Ok(Component::Literal(
            toks.iter()
                .map(|t| match t {
                    Tok::Lit(c) => *c,
                    _ => unreachable!(),
                })
                .collect(),
        ));
    }
    Ok(Component::Glob(Glob { toks }))
}

/// Compiles an absolute, normalised path pattern into its components.
///
/// # Errors
///
/// The first malformed component, named.
pub fn path(p: &str) -> Result<Vec<Component>, GlobError> {
    p.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| component(c).map_err(|e| GlobError(format!("component `{c}`: {e}"))))
        .collect()
}

fn tokens(s: &str) -> Result<Vec<Tok>, GlobError> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(n) => out.push(Tok::Lit(n)),
                None => return Err(GlobError("ends with a lone `\\`".into())),
            },
            '*' => {
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
            }
            '?' => out.push(Tok::One),
            '[' => {
                let negated = matches!(it.peek(), Some('!' | '^'));
                if negated {
                    it.next();
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                let mut first = true;
                while let Some(c) = it.next() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        it.next()
                            .ok_or_else(|| GlobError("ends with a lone `\\`".into()))?
                    } else {
                        c
                    };
                    let mut hi = lo;
                    if it.peek() == Some(&'-') {
                        let mut look = it.clone();
                        look.next();
                        if let Some(&h) = look.peek() {
                            if h != ']' {
                                it.next();
                                let h = it.next().unwrap_or(h);
                                hi = if h == '\\' {
                                    it.next()
                                        .ok_or_else(|| GlobError("ends with a lone `\\`".into()))?
                                } else {
                                    h
                                };
                                if hi < lo {
                                    return Err(GlobError(format!(
                                        "the range `{lo}-{hi}` runs backwards"
                                    )));
                                }
                            }
                        }
                    }
                    ranges.push((lo, hi));
                }
                if !closed {
                    return Err(GlobError("has a `[` without its closing `]`".into()));
                }
                out.push(Tok::Class { negated, ranges });
            }
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

fn tok_matches(t: &Tok, c: char) -> bool {
    match t {
        Tok::Lit(l) => *l == c,
        Tok::One => true,
        Tok::Star => false,
        Tok::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
    }
}

impl Glob {
    /// Whether the whole of `name` matches. Walks the name in place (byte
    /// offsets on character boundaries): no allocation per name, which a
    /// scan of 100,000 entries would pay 100,000 times.
    pub fn matches(&self, name: &str) -> bool {
        let at = |n: usize| name[n..].chars().next();
        let (mut p, mut n) = (0usize, 0usize);
        // The last `*` seen and the name offset it was tried at.
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = at(n) {
            match self.toks.get(p) {
                Some(Tok::Star) => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(t) if tok_matches(t, c) => {
                    p += 1;
                    n += c.len_utf8();
                }
                _ => match star {
                    Some((sp, sn)) => {
                        let skipped = at(sn).map_or(1, char::len_utf8);
                        p = sp + 1;
                        n = sn + skipped;
                        star = Some((sp, n));
                    }
                    None => return false,
                },
            }
        }
        self.toks[p..].iter().all(|t| *t == Tok::Star)
    }

    /// How many wildcards (`*`, `?`, `[…]`) the pattern has.
    pub fn wildcards(&self) -> usize {
        self.toks
            .iter()
            .filter(|t| !matches!(t, Tok::Lit(_)))
            .count()
    }

    /// The text each wildcard matched in `name`, in order, or `None` when
    /// `name` does not match. A `*` takes the shortest text that lets the
    /// rest match, so the result is a function of the name, and the name
    /// can be rebuilt from it: two names never give the same captures.
    pub fn captures(&self, name: &str) -> Option<Vec<String>> {
        let name: Vec<char> = name.chars().collect();
        let width = name.len() + 1;
        // States (token, position) known to fail: each is tried once.
        let mut failed = vec![false; (self.toks.len() + 1) * width];
        let mut out = Vec::with_capacity(self.wildcards());
        self.capture_from(&name, 0, 0, &mut failed, &mut out)
            .then_some(out)
    }

    fn capture_from(
        &self,
        name: &[char],
        p: usize,
        n: usize,
        failed: &mut [bool],
        out: &mut Vec<String>,
    ) -> bool {
        let state = p * (name.len() + 1) + n;
        if failed[state] {
            return false;
        }
        let ok = match self.toks.get(p) {
            None => n == name.len(),
            Some(Tok::Lit(c)) => {
                n < name.len()
                    && name[n] == *c
                    && self.capture_from(name, p + 1, n + 1, failed, out)
            }
            Some(Tok::Star) => (n..=name.len()).any(|k| {
                out.push(name[n..k].iter().collect());
                let ok = self.capture_from(name, p + 1, k, failed, out);
                if !ok {
                    out.pop();
                }
                ok
            }),
            Some(t) => {
                n < name.len() && tok_matches(t, name[n]) && {
                    out.push(name[n].to_string());
                    let ok = self.capture_from(name, p + 1, n + 1, failed, out);
                    if !ok {
                        out.pop();
                    }
                    ok
                }
            }
        };
        if !ok {
            failed[state] = true;
        }
        ok
    }

    /// Whether some name starting with `prefix` matches: the tokens that
    /// can follow `prefix` exist (every class here admits some character).
    pub fn could_start_with(&self, prefix: &str) -> bool {
        let mut states = vec![0usize];
        for c in prefix.chars() {
            let mut next = Vec::new();
            for &p in &states {
                match self.toks.get(p) {
                    Some(Tok::Star) => {
                        next.push(p);
                        if let Some(t) = self.toks.get(p + 1) {
                            if *t != Tok::Star && tok_matches(t, c) {
                                next.push(p + 2);
                            }
                        }
                    }
                    Some(t) if tok_matches(t, c) => next.push(p + 1),
                    _ => {}
                }
            }
            next.sort_unstable();
            next.dedup();
            if next.is_empty() {
                return false;
            }
            states = next;
        }
        true
    }

    /// The pattern as an RE2 fragment for one component (`[^/]` for `?`).
    pub fn to_regex(&self) -> String {
        let mut out = String::new();
        for t in &self.toks {
            match t {
                Tok::Lit(c) => push_escaped(&mut out, *c),
                Tok::One => out.push_str("[^/]"),
                Tok::Star => out.push_str("[^/]*"),
                Tok::Class { negated, ranges } => {
                    out.push('[');
                    if *negated {
                        out.push_str("^/");
                    }
                    for (lo, hi) in ranges {
                        push_class_char(&mut out, *lo);
                        if hi != lo {
                            out.push('-');
                            push_class_char(&mut out, *hi);
                        }
                    }
                    out.push(']');
                }
            }
        }
        out
    }
}

impl Component {
    /// Whether the component matches the name `name`.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Component::Literal(l) => l == name,
            Component::Glob(g) => g.matches(name),
        }
    }

    /// How many wildcards it has (0 for a literal).
    pub fn wildcards(&self) -> usize {
        match self {
            Component::Literal(_) => 0,
            Component::Glob(g) => g.wildcards(),
        }
    }

    /// What its wildcards matched in `name` (empty for a literal that
    /// matches), or `None`.
    pub fn captures(&self, name: &str) -> Option<Vec<String>> {
        match self {
            Component::Literal(l) => (l == name).then(Vec::new),
            Component::Glob(g) => g.captures(name),
        }
    }

    /// Whether it could match some name starting with `prefix`.
    pub fn could_start_with(&self, prefix: &str) -> bool {
        match self {
            Component::Literal(l) => l.starts_with(prefix),
            Component::Glob(g) => g.could_start_with(prefix),
        }
    }

    /// The component as an RE2 fragment.
    pub fn to_regex(&self) -> String {
        match self {
            Component::Literal(l) => {
                let mut out = String::with_capacity(l.len());
                l.chars().for_each(|c| push_escaped(&mut out, c));
                out
            }
            Component::Glob(g) => g.to_regex(),
        }
    }
}

/// RE2 escape for a literal character; `"` as `\x22` (the CEL string
/// delimiter the policy uses).
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
            out.push('\\');
            out.push(c);
        }
        '"' => out.push_str(r"\x22"),
        c => out.push(c),
    }
}

fn push_class_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else if c == '"' {
        out.push_str(r"\x22");
    } else if c.is_ascii() {
        out.push('\\');
        out.push(c);
    } else {
        out.push(c);
    }
}

/// Whether a path pattern could match `target` (or, with `subtree`,
/// something under it; `target` normalised and absolute): every component
/// of `target` must be matchable by the pattern's component at the same
/// depth, and the pattern exactly as deep (at least as deep for a
/// subtree). A `/` never comes from a wildcard.
pub fn could_reach(pattern: &[Component], target: &str, subtree: bool) -> bool {
    let parts: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    let deep_enough = if subtree {
        pattern.len() >= parts.len()
    } else {
        pattern.len() == parts.len()
    };
    deep_enough && parts.iter().zip(pattern).all(|(name, c)| c.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        match component(s).unwrap() {
            Component::Glob(g) => g,
            Component::Literal(l) => panic!("{s} compiled to the literal {l}"),
        }
    }

    #[test]
    fn wildcards_match_whole_names() {
        assert!(g("ttyUSB*").matches("ttyUSB0"));
        assert!(g("ttyUSB*").matches("ttyUSB"));
        assert!(!g("ttyUSB*").matches("ttyACM0"));
        assert!(g("*").matches(".hidden"));
        assert!(g("video?").matches("video1"));
        assert!(!g("video?").matches("video10"));
        assert!(g("*D0c").matches("pcmC0D0c"));
        assert!(g("a*b*c").matches("axxbyyc"));
        assert!(!g("a*b*c").matches("axxbyy"));
        assert!(g("a**").matches("a"));
        assert!(g("caf?").matches("café"), "one character, not one byte");
        assert!(g("*é*").matches("xxéyy"));
        assert!(!g("caf??").matches("café"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(g("pcmC[0-9]D0c").matches("pcmC3D0c"));
        assert!(!g("pcmC[0-9]D0c").matches("pcmCxD0c"));
        assert!(g("x[!0-9]").matches("xa"));
        assert!(!g("x[^0-9]").matches("x5"));
        assert!(g("[]a]").matches("]"));
        assert!(g("[a-]").matches("-"));
        assert!(g(r"\**").matches("*x"));
        assert!(!g(r"\**").matches("x"));
        assert_eq!(
            component(r"a\[b\]").unwrap(),
            Component::Literal("a[b]".into())
        );
        assert!(component("a[b").is_err());
        assert!(component("a\\").is_err());
        assert!(component("[z-a]").is_err());
    }

    #[test]
    fn glob_characters_are_found_unless_escaped() {
        assert!(has_glob("/dev/ttyUSB*"));
        assert!(has_glob("/dev/snd/pcmC[0-9]D0c"));
        assert!(!has_glob("/dev/kvm"));
        assert!(!has_glob(r"/data/\*"));
    }

    #[test]
    fn reaching_sensitive_places() {
        let p = path("/dev/*").unwrap();
        assert!(could_reach(&p, "/dev/mem", false));
        assert!(
            !could_reach(&p, "/dev", false),
            "a match of /dev/* is never /dev itself"
        );
        assert!(!could_reach(&p, "/", false));
        assert!(!could_reach(&path("/dev/tty*").unwrap(), "/dev/mem", false));
        assert!(could_reach(&path("/*/*").unwrap(), "/proc", true));
        assert!(could_reach(&path("/[p]roc/1").unwrap(), "/proc", true));
        assert!(!could_reach(&path("/[p]roc/1").unwrap(), "/proc", false));
        assert!(!could_reach(
            &path("/dev/serial/by-id/*").unwrap(),
            "/dev/mem",
            false
        ));
    }

    #[test]
    fn captures_name_what_each_wildcard_matched() {
        assert_eq!(g("pcmC*D0c").captures("pcmC1D0c"), Some(vec!["1".into()]));
        assert_eq!(g("controlC*").captures("controlC1"), Some(vec!["1".into()]));
        assert_eq!(
            g("a?[0-9]*").captures("ax7yz"),
            Some(vec!["x".into(), "7".into(), "yz".into()])
        );
        assert_eq!(g("a*b").captures("aXbYb"), Some(vec!["XbY".into()]));
        assert_eq!(g("a*").captures("b"), None);
        assert_eq!(g("pcmC*D0c").wildcards(), 1);
        // Many stars on a long name that does not match: each state once.
        let many = g("*a*a*a*a*a*a*a*a*a*a*b");
        assert_eq!(many.captures(&"a".repeat(200)), None);
    }

    #[test]
    fn whether_a_name_with_a_prefix_could_match() {
        assert!(g("sudoers[!.]*").could_start_with("sudoers"));
        assert!(g("sud*").could_start_with("sudoers"));
        assert!(g("*").could_start_with("sudoers"));
        assert!(!g("x*").could_start_with("sudoers"));
        assert!(g("s?doers").could_start_with("sudoers"));
        assert!(!g("s?doer").could_start_with("sudoers"));
    }

    #[test]
    fn regex_translation() {
        assert_eq!(g("ttyUSB*").to_regex(), "ttyUSB[^/]*");
        assert_eq!(g("a?[!.]").to_regex(), r"a[^/][^/\.]");
        assert_eq!(g("C[0-9]").to_regex(), "C[0-9]");
        assert_eq!(Component::Literal("a.b\"".into()).to_regex(), r"a\.b\x22");
    }
}
