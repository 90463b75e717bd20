//! Names the DRA API asks for, derived from what the core knows, and the
//! names it sends back, checked before they go anywhere.
//!
//! A device name is a DNS label (lower-case alphanumerics and `-`, at most
//! 63, PROTOCOL.md §6.3) derived from the device's ID alone, so the same
//! device has the same name across restarts, reloads and re-plugs. An ID
//! that already is a label is kept; any other is made readable (lower
//! case, `-` for the rest) and given 16 hex digits of SHA-256 of the ID.
//! A kept ID never ends in the shape of that suffix (such an ID is hashed
//! too), so no ID can take another's name: two IDs share one only through
//! a 64-bit SHA-256 collision.
//!
//! A pool is one resource on one node: `<node>/<resource>`, a sequence of
//! DNS subdomains separated by `/` of at most 253 characters, with the same
//! fallback when the resource name is not one (upper case, `_`).

use crate::core::discovery::id::sha256;

pub use crate::kubelet::{is_dns_label, is_dns_subdomain, MAX_LABEL, MAX_SUBDOMAIN};
/// Hex digits of the hash in a derived name.
const HASH_HEX: usize = 16;

/// 16 hex digits of `text`'s SHA-256: the hash in every derived name.
pub(crate) fn hash_hex(text: &str) -> String {
    sha256(text.as_bytes())[..HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` ends like a derived name: `-` and 16 lower-case hex digits.
fn has_hash_shape(s: &str) -> bool {
    s.len() > HASH_HEX
        && s.as_bytes()[s.len() - HASH_HEX - 1] == b'-'
        && s[s.len() - HASH_HEX..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// `text` lower-cased, every run of other characters one `-`, trimmed of
/// `-`, cut to `max` (never ending in `-`).
fn readable(text: &str, max: usize, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        if keep(c) {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    while out.ends_with(['-', '.', '/']) {
        out.pop();
    }
    out
}

/// The DRA device name of the device (or slot) with ID `id`.
pub fn device_name(id: &str) -> String {
    if is_dns_label(id) && !has_hash_shape(id) {
        return id.to_string();
    }
    let head = readable(id, MAX_LABEL - HASH_HEX - 1, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit()
    });
    let head = if head.is_empty() { "d" } else { &head };
    format!("{head}-{}", hash_hex(id))
}

/// A pool name: DNS subdomains separated by `/`, at most 253.
pub fn is_pool_name(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN && s.split('/').all(is_dns_subdomain)
}

/// The pool of resource `resource` on node `node`.
pub fn pool_name(node: &str, resource: &str) -> String {
    let plain = format!("{node}/{resource}");
    if is_pool_name(&plain) && !has_hash_shape(&plain) {
        return plain;
    }
    let hash = hash_hex(resource);
    let room = MAX_SUBDOMAIN.saturating_sub(node.len() + 1 + HASH_HEX + 1);
    let head = readable(resource, room, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '/'
    });
    // Every label starts and ends with an alphanumeric, and leaves room
    // for the hash on the last one.
    let segments: Vec<String> = head
        .split('/')
        .map(|seg| {
            seg.split('.')
                .map(|l| l.trim_matches('-'))
                .map(|l| &l[..l.len().min(MAX_LABEL - HASH_HEX - 1)])
                .map(|l| l.trim_end_matches('-'))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(".")
        })
        .filter(|seg| !seg.is_empty())
        .collect();
    let derived = format!("{node}/{}-{hash}", segments.join("/"));
    if !segments.is_empty() && is_pool_name(&derived) {
        derived
    } else {
        format!("{node}/r-{hash}")
    }
}

/// A claim UID from the kubelet: the API server's UUIDs, lower-case hex
/// and `-`, so it can be part of a file name as it is.
pub fn is_claim_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 36
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c) || c == b'-')
        && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "tty0", "a-b", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a/b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("hostpath-device.k8s.io"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_pool_name("node-a/hostpath-device.k8s.io/sample"));
        assert!(!is_pool_name("node-a//x"));
    }

    #[test]
    fn device_names_are_labels_stable_and_never_shared() {
        let ids = [
            "0",
            "99",
            "tty0",
            "/dev/ttyUSB0",
            "/dev/ttyusb0",
            "/DEV/TTYUSB0",
            "10c4:ea60:A50285BI",
            "10c4:ea60:A50285BI@1-1.2",
            "/dev/snd/pcmC0D0c,/dev/snd/controlC0#3",
            "..",
            "~",
            &"x".repeat(63),
            "a_b~30331c1caa0062e1",
        ];
        let mut seen = HashMap::new();
        for id in ids {
            let n = device_name(id);
            assert!(is_dns_label(&n), "{id} -> {n}");
            assert_eq!(n, device_name(id), "stable");
            if let Some(other) = seen.insert(n.clone(), id) {
                panic!("{id} and {other} share {n}");
            }
        }
        assert_eq!(device_name("tty0"), "tty0");
        assert!(device_name("/dev/ttyUSB0").starts_with("dev-ttyusb0-"));
    }

    /// A file named like another device's derived name cannot take it: a
    /// kept ID never has the hash's shape.
    #[test]
    fn a_forged_label_never_takes_a_derived_name() {
        let victim = device_name("/dev/ttyUSB0");
        assert_ne!(victim, "/dev/ttyUSB0");
        assert!(has_hash_shape(&victim));
        let forged = device_name(&victim);
        assert_ne!(forged, victim);
        assert!(is_dns_label(&forged));
    }

    #[test]
    fn pool_names_are_per_node_and_per_resource() {
        assert_eq!(
            pool_name("node-a", "hostpath-device.k8s.io/sample"),
            "node-a/hostpath-device.k8s.io/sample"
        );
        let odd = pool_name("node-a", "example.com/Big_Disk");
        assert!(is_pool_name(&odd), "{odd}");
        assert!(odd.starts_with("node-a/example.com/big-disk-"), "{odd}");
        assert_ne!(odd, pool_name("node-a", "example.com/big_disk"));
        assert_ne!(odd, pool_name("node-b", "example.com/Big_Disk"));
        let node = [&"n".repeat(60)[..]; 3].join(".");
        for resource in [
            format!("example.com/{}", "y".repeat(63)),
            "example.com/Y".into(),
        ] {
            let long = pool_name(&node, &resource);
            assert!(is_pool_name(&long), "{long}");
            assert!(long.starts_with(&format!("{node}/")), "{long}");
        }
    }

    #[test]
    fn claim_uids_are_checked_before_they_name_a_file() {
        assert!(is_claim_uid("0a1b2c3d-4e5f-6789-abcd-ef0123456789"));
        for bad in ["", "../x", "a/b", "A", "-x", "a b", &"a".repeat(37)] {
            assert!(!is_claim_uid(bad), "{bad}");
        }
    }
}
