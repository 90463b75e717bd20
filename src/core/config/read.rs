//! Reading the config file safely: a regular file only, bounded size, bounded nesting.

use super::*;

/// The largest config file read (a ConfigMap holds at most 1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The deepest nesting of collections accepted before parsing (real
/// configs are 6 deep; the YAML parser's time grows with the square of it).
pub const MAX_NESTING: usize = 64;

/// Why a config file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// A FIFO, device, socket or directory: reading it could block forever.
    NotRegular(&'static str),
    TooLarge(u64),
    NotUtf8,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read config file: {e}"),
            ReadError::NotRegular(what) => {
                write!(
                    f,
                    "cannot read config file: it is {what}, not a regular file"
                )
            }
            ReadError::TooLarge(n) => write!(
                f,
                "cannot read config file: {n} bytes or more, over the {MAX_CONFIG_BYTES}-byte limit"
            ),
            ReadError::NotUtf8 => f.write_str("cannot read config file: it is not UTF-8 text"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads a config file: only a regular file (symlinks, as ConfigMaps use,
/// are followed), opened without blocking so a FIFO or device never hangs
/// the caller, and at most [`MAX_CONFIG_BYTES`].
///
/// # Errors
///
/// [`ReadError`] saying what the file is or why it cannot be read.
pub fn read_file(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ReadError::NotRegular(crate::core::health::describe(ft)));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// An upper estimate of how deeply `text` nests collections: block
/// indentation levels, compact `- ` entries on one line, and flow `[`/`{`
/// that open a node. Found before parsing, so no nesting is ever handed to
/// the YAML parser that would take it long. Returns (depth, line number).
pub fn nesting_depth(text: &str) -> (usize, usize) {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let (mut max, mut max_line) = (0usize, 0usize);
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        if flow == 0 {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let bytes = trimmed.as_bytes();
        let mut compact = 0usize;
        let mut line_flow = flow;
        let mut at_node = true;
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let next_blank = bytes.get(i + 1).is_none_or(|b| *b == b' ');
            match c {
                b'-' | b'?' if at_node && flow == 0 && next_blank => compact += 1,
                b'[' | b'{' if at_node || flow > 0 => {
                    flow += 1;
                    line_flow = line_flow.max(flow);
                    at_node = true;
                    i += 1;
                    continue;
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b',' if flow > 0 => {
                    at_node = true;
                    i += 1;
                    continue;
                }
                b':' if next_blank || flow > 0 => {
                    at_node = true;
                    i += 1;
                    continue;
                }
                b'#' if i == 0 || bytes[i - 1] == b' ' => break,
                b'"' | b'\'' if at_node => {
                    // Skip the quoted scalar (to the end of the line at most).
                    let mut j = i + 1;
                    while j < bytes.len() {
                        if bytes[j] == b'\\' && c == b'"' {
                            j += 2;
                            continue;
                        }
                        if bytes[j] == c {
                            break;
                        }
                        j += 1;
                    }
                    i = j + 1;
                    at_node = false;
                    continue;
                }
                b' ' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            if !matches!(c, b'-' | b'?') || !at_node {
                at_node = false;
            }
            i += 1;
        }
        let depth = indents.len() + compact + line_flow;
        if depth > max {
            (max, max_line) = (depth, n + 1);
        }
    }
    (max, max_line)
}
