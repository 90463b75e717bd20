//! Text from the host (file names, USB serials) made safe to print: a
//! name can hold newlines and terminal escapes, which must neither forge
//! a log line nor reach an operator's terminal as they are.

/// `s` with every control character (and `\`) escaped Rust-style, so
/// `a\nb` prints as `a\nb` on one line and `\x1b[2J` clears nothing.
pub fn shown(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(shown("/dev/ttyUSB0"), "/dev/ttyUSB0");
        assert_eq!(shown("a\nb"), r"a\nb");
        assert_eq!(shown("x\u{1b}[2J"), r"x\u{1b}[2J");
        assert_eq!(shown(r"a\b"), r"a\\b");
        assert_eq!(shown("café\n"), r"café\n");
    }
}
