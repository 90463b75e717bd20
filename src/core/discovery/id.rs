//! Device IDs, derived in this one place (B15). An ID is a *base* that
//! names what the device is (a matched path, a group's member paths, a USB
//! device's vendor, product and serial), then structural suffixes:
//!
//! ```text
//! ID     = base [ "@" port ] [ "@g" group ] [ "#" slot ]
//! base   = key, when it is short and made of PLAIN characters only
//!        | tail "~" 16 hex digits of SHA-256(key), otherwise
//! ```
//!
//! `@`, `#` and `~` are never PLAIN, so a key can never take the shape of
//! a derived ID: a file named `a_b~30331c1caa0062e1` or `ttyUSB0@2` is
//! itself hashed. Parsing an ID back is unambiguous (the last `#` starts
//! the slot), so slots need not be stored: a device with 50,000 slots
//! costs one entry. The hash is SHA-256 rather than a fast hash because
//! file names and USB serials are chosen by whoever plugs or creates them:
//! forging a name whose ID equals another device's would take a 2^64
//! search.

/// The longest ID handed out, suffixes included; the API's text asks for
/// at most 63 bytes.
pub const MAX_ID_LEN: usize = 63;

/// Characters a key may keep in its ID as they are.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-/:,+".contains(c)
}

/// The suffixes a device's IDs carry after its base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suffix {
    /// The USB port path, for a device whose serial is not unique.
    pub port: Option<String>,
    /// The group number (1-based) when an earlier group of the same
    /// resource produced the same key.
    pub group: Option<usize>,
}

impl Suffix {
    fn text(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.port {
            s.push('@');
            s.push_str(p);
        }
        if let Some(g) = self.group {
            s.push_str(&format!("@g{g}"));
        }
        s
    }
}

/// Whether a USB port name is the kernel's shape (`1-1.2`, `usb3`), safe
/// to show in an ID as it is.
pub fn plain_port(port: &str) -> bool {
    let rest = port.strip_prefix("usb").unwrap_or(port);
    !rest.is_empty()
        && rest.len() <= 24
        && rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == '.')
}

/// The digits of the largest slot number of a device with `slots` slots,
/// plus its `#` (0 for a single slot, which has no suffix).
pub fn slot_suffix_len(slots: u32) -> usize {
    if slots <= 1 {
        0
    } else {
        1 + (slots - 1).to_string().len()
    }
}

/// The ID of a device: `key` encoded to leave room for its suffixes and
/// for the longest slot suffix of `slots`, so every slot's ID is at most
/// [`MAX_ID_LEN`] bytes.
pub fn device_id(key: &str, suffix: &Suffix, slots: u32) -> String {
    let tail = suffix.text();
    let budget = MAX_ID_LEN
        .saturating_sub(tail.len())
        .saturating_sub(slot_suffix_len(slots));
    let mut id = encode(key, budget);
    id.push_str(&tail);
    id
}

/// The base: `key` itself when it is at most `budget` plain bytes, else
/// its tail (non-plain characters as `_`) with a hash of the whole key.
fn encode(key: &str, budget: usize) -> String {
    if key.len() <= budget && key.chars().all(plain) {
        return key.to_string();
    }
    let digest = sha256(key.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let keep = budget.saturating_sub(hash.len() + 1);
    let clean: Vec<char> = key
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    let tail: String = clean[clean.len().saturating_sub(keep)..].iter().collect();
    format!("{tail}~{hash}")
}

/// The ID of slot `slot` of a device whose ID is `id`.
pub fn slot_id(id: &str, slot: u32, slots: u32) -> std::borrow::Cow<'_, str> {
    if slots <= 1 {
        std::borrow::Cow::Borrowed(id)
    } else {
        std::borrow::Cow::Owned(format!("{id}#{slot}"))
    }
}

/// The slot numbers of a device with `slots` slots in the order of their
/// IDs as text (`0`, `1`, `10`, `100`, …, `11`, …, `2`…), so a list cut at
/// 4 MiB is exactly the IDs that sort first. No plain character sorts
/// before `#`, so a device's slots sort between it and the next device.
pub fn slots_in_id_order(slots: u32) -> impl Iterator<Item = u32> {
    let mut next = Some(0u32);
    std::iter::from_fn(move || {
        let cur = next?;
        next = if slots <= 1 {
            None
        } else if cur == 0 {
            Some(1).filter(|&one| one < slots)
        } else if u64::from(cur) * 10 < u64::from(slots) {
            Some(cur * 10)
        } else {
            let mut c = cur;
            loop {
                if c % 10 != 9 && c + 1 < slots {
                    break Some(c + 1);
                }
                c /= 10;
                if c == 0 {
                    break None;
                }
            }
        };
        Some(cur)
    })
}

/// Splits an ID into its device ID and slot: `("x", Some(3))` for `x#3`
/// (the slot in canonical decimal only), `("x", None)` for `x`. `None`
/// when the slot part is malformed.
pub fn split_slot(id: &str) -> Option<(&str, Option<u32>)> {
    match id.rsplit_once('#') {
        None => Some((id, None)),
        Some((base, n)) => {
            let slot: u32 = n.parse().ok()?;
            (slot.to_string() == n).then_some((base, Some(slot)))
        }
    }
}

/// SHA-256 (FIPS 180-4) of `data`: a few lines here rather than a crate
/// and its dependency tree, for one hash of a short key per new device.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn a_plain_key_never_takes_the_shape_of_a_derived_id() {
        let none = Suffix::default();
        let hashed = device_id("/srv/x/a{b", &none, 1);
        assert!(hashed.contains('~'), "{hashed}");
        // The name an attacker would create to look like that hash.
        let forged = format!("/srv/x/{}", hashed.rsplit('/').next().unwrap());
        let forged_id = device_id(&forged, &none, 1);
        assert_ne!(forged_id, hashed);
        assert!(forged_id.contains('~'), "a `~` in a name is hashed too");
        for name in ["/dev/ttyUSB0@2", "/dev/ttyUSB0@g2", "/dev/fuse#1"] {
            let id = device_id(name, &none, 1);
            assert!(id.contains('~'), "{name} gave {id}");
            assert_ne!(id, name);
        }
        let port = Suffix {
            port: Some("1-2".into()),
            group: None,
        };
        assert_eq!(
            device_id("usb:0403:6001:A5", &port, 1),
            "usb:0403:6001:A5@1-2"
        );
        assert_eq!(device_id("/dev/ttyUSB0", &none, 1), "/dev/ttyUSB0");
    }

    #[test]
    fn every_slot_id_fits_and_parses_back() {
        let long = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0";
        for slots in [1, 2, 10, 53_773] {
            let id = device_id(long, &Suffix::default(), slots);
            let last = slot_id(&id, slots - 1, slots);
            assert!(last.len() <= MAX_ID_LEN, "{last}");
            assert_eq!(
                split_slot(&last),
                Some((id.as_str(), (slots > 1).then(|| slots - 1)))
            );
        }
        assert_eq!(device_id("/dev/fuse", &Suffix::default(), 3), "/dev/fuse");
        assert_eq!(slot_id("/dev/fuse", 2, 3), "/dev/fuse#2");
        assert_eq!(split_slot("/dev/fuse#02"), None, "not canonical");
        assert_eq!(split_slot("/dev/fuse#x"), None);
    }

    #[test]
    fn slots_come_in_the_order_of_their_ids() {
        for n in [1u32, 2, 9, 10, 11, 99, 100, 101, 1000, 2345] {
            let order: Vec<u32> = slots_in_id_order(n).collect();
            let mut want: Vec<u32> = (0..n).collect();
            want.sort_by_key(|s| s.to_string());
            assert_eq!(order, want, "{n}");
        }
    }

    #[test]
    fn ports_of_the_kernels_shape_only() {
        assert!(plain_port("1-1.2"));
        assert!(plain_port("usb3"));
        assert!(!plain_port("1-1:1.0"));
        assert!(!plain_port("x@1"));
        assert!(!plain_port(""));
    }
}
