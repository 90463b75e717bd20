//! What a container is told of the devices it was given (B20): three
//! environment variables per resource, named after it, listing the device
//! IDs, the container paths and the host paths. For a pattern or a USB
//! resource this is the only way an app learns which of several matching
//! devices it holds.
//!
//! For `example.com/zigbee`:
//!
//! ```text
//! EXAMPLE_COM_ZIGBEE_IDS=usb:10c4:ea60:0001
//! EXAMPLE_COM_ZIGBEE_PATHS=/dev/zigbee
//! EXAMPLE_COM_ZIGBEE_HOST_PATHS=/dev/ttyUSB0
//! ```
//!
//! Values are lists separated by single spaces: IDs in the order the
//! devices were placed (sorted), paths each once, in the same order, the
//! k-th container path and the k-th host path being one grant. IDs never
//! hold a space (a key with one is hashed, see `discovery::id`); in a path, a space, `\` and control characters are
//! written `\xHH`, so a list always splits on spaces.

use std::fmt::Write;

/// The three variables' name suffixes.
pub const SUFFIXES: [&str; 3] = ["_IDS", "_PATHS", "_HOST_PATHS"];

/// The variables' common prefix for a resource: its name upper-cased,
/// every character other than a letter or digit written `_`, and `_`
/// first if it would start with a digit.
pub fn env_prefix(resource_name: &str) -> String {
    let mut p: String = resource_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if p.starts_with(|c: char| c.is_ascii_digit()) {
        p.insert(0, '_');
    }
    p
}

/// The three variable names of a resource.
pub fn env_names(resource_name: &str) -> [String; 3] {
    let p = env_prefix(resource_name);
    SUFFIXES.map(|s| format!("{p}{s}"))
}

/// A path as a list item: space, `\` and control characters as `\xHH`.
pub fn item(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == ' ' || c == '\\' || c.is_control() {
            // Control characters of more than one byte (U+0080…U+009F)
            // are written by their code point, which is what they are.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The lists for one container, built as its devices are placed.
#[derive(Debug, Default)]
pub struct Told {
    ids: String,
    paths: String,
    hosts: String,
}

impl Told {
    pub fn device(&mut self, id: &str) {
        push(&mut self.ids, id);
    }

    /// A grant placed at `container` (each container path once).
    pub fn path(&mut self, container: &str, host: &str) {
        push(&mut self.paths, &item(container));
        push(&mut self.hosts, &item(host));
    }

    /// The variables, named for `resource_name`.
    pub fn envs(self, resource_name: &str) -> [(String, String); 3] {
        let [a, b, c] = env_names(resource_name);
        [(a, self.ids), (b, self.paths), (c, self.hosts)]
    }
}

fn push(list: &mut String, s: &str) {
    if !list.is_empty() {
        list.push(' ');
    }
    list.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_resource_and_never_start_with_a_digit() {
        assert_eq!(
            env_names("example.com/zigbee"),
            [
                "EXAMPLE_COM_ZIGBEE_IDS",
                "EXAMPLE_COM_ZIGBEE_PATHS",
                "EXAMPLE_COM_ZIGBEE_HOST_PATHS"
            ]
        );
        assert_eq!(
            env_prefix("hostpath-device.k8s.io/sample"),
            "HOSTPATH_DEVICE_K8S_IO_SAMPLE"
        );
        assert_eq!(env_prefix("1x.io/a.b"), "_1X_IO_A_B");
    }

    #[test]
    fn lists_split_on_spaces_whatever_the_paths_hold() {
        let mut t = Told::default();
        t.device("usb:10c4:ea60:0001");
        t.device("/dev/a,/dev/b");
        t.path("/dev/my cam", "/dev/x\\y");
        t.path("/dev/video1", "/dev/v\n\u{85}");
        let [(_, ids), (_, paths), (_, hosts)] = t.envs("a.io/b");
        assert_eq!(ids, "usb:10c4:ea60:0001 /dev/a,/dev/b");
        assert_eq!(paths, r"/dev/my\x20cam /dev/video1");
        assert_eq!(hosts, r"/dev/x\x5cy /dev/v\x0a\x85");
    }
}
