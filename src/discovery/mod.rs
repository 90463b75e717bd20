//! Devices that come and go (B15): patterns, USB selectors and groups,
//! scanned into a set of devices with stable IDs. Knows nothing of gRPC:
//! the health monitor's workers call [`scan`] (it reads directories and
//! sysfs, so it may block on a hung filesystem), and the resource state
//! merges the result into its [`DeviceSet`].
//!
//! IDs are derived from what a device *is*, never from the order it was
//! found in: the matched host path for a pattern, the member paths for a
//! group, the serial (else the sysfs port path) for USB. So a device keeps
//! its ID across daemon restarts, reloads and re-plugs, and a kubelet
//! checkpoint made before a restart still names the same devices.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::health;
use crate::sensitive;

pub mod glob;
mod set;
#[cfg(test)]
mod tests;
mod usb;

pub use glob::Component;
pub use set::{DeviceSet, Lookup, Merged};
pub use usb::{scan_usb, UsbDevice};

/// The longest device ID handed out; the API's text asks for at most 63.
pub const MAX_ID_LEN: usize = 63;

/// How a resource finds its devices at runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    pub groups: Vec<Group>,
    /// How long a vanished device stays listed (Unhealthy) before it goes.
    pub remove_after: Duration,
}

/// One way of finding devices; a resource's devices are the union of its
/// groups'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub source: Source,
    /// Slots per device: the same device listed this many times.
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Paths handed out together; the i-th (sorted) matches of each form
    /// the i-th device. One rule is the plain pattern case.
    Paths(Vec<PathRule>),
    /// Each USB device matching any selector is one device.
    Usb {
        selectors: Vec<UsbSelector>,
        permissions: Perm,
    },
}

/// One path of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// The normalised pattern (or literal path) as written.
    pub pattern: String,
    pub components: Vec<Component>,
    pub kind: MatchKind,
    /// Where it appears in the container; `None`: at the matched path.
    pub mount_path: Option<String>,
    pub read_only: bool,
    pub permissions: Perm,
    /// How many devices of the group may share one match of this path.
    pub limit: u32,
}

/// What a match must be, and how it is handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// Any kind: a device node becomes a DeviceSpec, anything else a Mount.
    Any,
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
    /// generic-device-plugin's `Device`: a char or block device node.
    AnyDevice,
    /// generic-device-plugin's `Mount`: any kind, always bind-mounted.
    Mount,
}

impl MatchKind {
    /// Whether a file of type `ft` is a match, and if so whether it is
    /// handed out as a device node.
    fn accepts(self, ft: fs::FileType) -> Option<bool> {
        let node = ft.is_char_device() || ft.is_block_device();
        let ok = match self {
            MatchKind::Any | MatchKind::Mount => true,
            MatchKind::Directory => ft.is_dir(),
            MatchKind::File => ft.is_file(),
            MatchKind::Socket => ft.is_socket(),
            MatchKind::CharDevice => ft.is_char_device(),
            MatchKind::BlockDevice => ft.is_block_device(),
            MatchKind::AnyDevice => node,
        };
        ok.then_some(node && self != MatchKind::Mount)
    }

    pub fn describe(self) -> &'static str {
        match self {
            MatchKind::Any => "any kind",
            MatchKind::Directory => "Directory",
            MatchKind::File => "File",
            MatchKind::Socket => "Socket",
            MatchKind::CharDevice => "CharDevice",
            MatchKind::BlockDevice => "BlockDevice",
            MatchKind::AnyDevice => "a device node",
            MatchKind::Mount => "any kind, mounted",
        }
    }
}

/// cgroup device permissions as bits: read, write, mknod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Perm(pub u8);

impl Perm {
    pub const R: u8 = 1;
    pub const W: u8 = 2;
    pub const M: u8 = 4;

    /// From letters already validated to be `r`, `w`, `m`.
    pub fn from_letters(s: &str) -> Perm {
        let mut p = 0;
        for c in s.chars() {
            p |= match c {
                'r' => Perm::R,
                'w' => Perm::W,
                'm' => Perm::M,
                _ => 0,
            };
        }
        Perm(p)
    }

    pub fn letters(self) -> String {
        let mut s = String::new();
        for (bit, c) in [(Perm::R, 'r'), (Perm::W, 'w'), (Perm::M, 'm')] {
            if self.0 & bit != 0 {
                s.push(c);
            }
        }
        s
    }
}

/// A USB selector: vendor and product ids, and optionally the serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbSelector {
    pub vendor: u16,
    pub product: u16,
    pub serial: Option<String>,
}

impl UsbSelector {
    pub fn matches(&self, d: &UsbDevice) -> bool {
        d.vendor == self.vendor
            && d.product == self.product
            && self
                .serial
                .as_ref()
                .is_none_or(|s| d.serial.as_deref() == Some(s))
    }
}

/// One path handed to a container for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The host path as the kubelet sees it (no host root).
    pub host: Box<str>,
    /// The container path, when it differs from `host`.
    pub container: Option<Box<str>>,
    /// A DeviceSpec (else a Mount).
    pub device: bool,
    pub read_only: bool,
    pub permissions: Perm,
}

impl Grant {
    /// A device node handed out at its own path.
    pub fn node(host: &str, permissions: Perm) -> Grant {
        Grant {
            host: host.into(),
            container: None,
            device: true,
            read_only: false,
            permissions,
        }
    }

    pub fn container_path(&self) -> &str {
        self.container.as_deref().unwrap_or(&self.host)
    }
}

/// What one scan found: devices by ID (each with its paths), and the
/// problems met on the way (a sensitive match skipped, an unreadable
/// directory), for the log.
#[derive(Debug, Default)]
pub struct Scan {
    pub devices: Vec<(String, Vec<Grant>)>,
    pub problems: BTreeSet<String>,
}

/// Scans every group of `d` under `host_root`. `watch` is called with each
/// directory looked into, *before* it is read, so that whatever changes
/// there after the read is an inotify event. Never follows a symlink out
/// of the host root: links resolve as the host would see them.
pub fn scan(
    host_root: &Path,
    d: &Discovery,
    allow_sensitive: bool,
    require_mount_point: bool,
    watch: &mut dyn FnMut(&Path),
) -> Scan {
    let mut out = Scan::default();
    let mut seen_dirs: HashSet<PathBuf> = HashSet::new();
    let mut watch_once = |p: &Path| {
        if seen_dirs.insert(p.to_path_buf()) {
            watch(p);
        }
    };
    let opts = Filter {
        host_root,
        allow_sensitive,
        require_mount_point,
    };
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut usb_devices: Option<Vec<UsbDevice>> = None;
    for group in &d.groups {
        let keyed: Vec<(String, Vec<Grant>)> = match &group.source {
            Source::Paths(rules) => {
                let matches: Vec<Vec<Match>> = rules
                    .iter()
                    .map(|r| walk(&opts, r, &mut watch_once, &mut out.problems))
                    .collect();
                zip(rules, &matches)
            }
            Source::Usb {
                selectors,
                permissions,
            } => {
                let all = usb_devices
                    .get_or_insert_with(|| scan_usb(host_root, &mut watch_once, &mut out.problems));
                all.iter()
                    .filter(|u| selectors.iter().any(|s| s.matches(u)))
                    .map(|u| (u.key(), vec![Grant::node(&u.node, *permissions)]))
                    .collect()
            }
        };
        for (key, grants) in keyed {
            // The same key twice (a path reused through `limit`, two
            // groups matching one path): later ones get a counter.
            let n = used.entry(key.clone()).or_insert(0);
            *n += 1;
            let key = if *n == 1 { key } else { format!("{key}@{n}") };
            for slot in 0..group.count {
                let k = if group.count == 1 {
                    key.clone()
                } else {
                    format!("{key}#{slot}")
                };
                out.devices.push((device_id(&k), grants.clone()));
            }
        }
    }
    out.devices.sort_by(|a, b| a.0.cmp(&b.0));
    out.devices.dedup_by(|a, b| a.0 == b.0);
    out
}

/// The kubelet-facing ID for a device key: the key itself when it is at
/// most [`MAX_ID_LEN`] bytes of plain characters, else its tail with a
/// 64-bit FNV-1a hash of the whole key (so distinct keys stay distinct,
/// and the same key always gives the same ID).
pub fn device_id(key: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-/:,+#@~".contains(c);
    if key.len() <= MAX_ID_LEN && key.chars().all(plain) {
        return key.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let clean: Vec<char> = key
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    let keep = MAX_ID_LEN - 17;
    let tail: String = clean[clean.len().saturating_sub(keep)..].iter().collect();
    format!("{tail}~{h:016x}")
}

struct Filter<'a> {
    host_root: &'a Path,
    allow_sensitive: bool,
    require_mount_point: bool,
}

/// One existing match of a path rule.
#[derive(Clone, Debug)]
struct Match {
    host: String,
    node: bool,
}

/// A directory reached while walking a pattern.
struct At {
    /// As written (through any symlinks), as the kubelet will see it.
    host: String,
    /// Where it really is, under the host root.
    real: PathBuf,
    /// A symlink was met on the way: matches must be resolved.
    linked: bool,
}

fn join_host(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Where a host path really is under the host root, following symlinks
/// as the host would; `None` when it cannot be resolved.
fn resolve(f: &Filter<'_>, host: &str) -> Option<(PathBuf, String)> {
    let r = health::resolve(f.host_root, host).ok()?;
    Some((r.full(f.host_root), r.host_path()))
}

/// Every existing match of one rule, sorted by host path.
fn walk(
    f: &Filter<'_>,
    rule: &PathRule,
    watch: &mut dyn FnMut(&Path),
    problems: &mut BTreeSet<String>,
) -> Vec<Match> {
    let mut level = vec![At {
        host: String::new(),
        real: f.host_root.to_path_buf(),
        linked: false,
    }];
    let n = rule.components.len();
    let mut out = Vec::new();
    for (i, comp) in rule.components.iter().enumerate() {
        let last = i + 1 == n;
        let mut next = Vec::new();
        for at in &level {
            watch(&at.real);
            // (name, file type from the directory entry or lstat)
            let names: Vec<(String, fs::FileType)> = match comp {
                Component::Literal(name) => match fs::symlink_metadata(at.real.join(name)) {
                    Ok(m) => vec![(name.clone(), m.file_type())],
                    Err(_) => Vec::new(),
                },
                Component::Glob(g) => match fs::read_dir(&at.real) {
                    Ok(rd) => rd
                        .filter_map(Result::ok)
                        .filter_map(|e| {
                            let name = e.file_name();
                            let Some(name) = name.to_str() else {
                                problems.insert(format!(
                                    "skipped a name that is not UTF-8 in {}",
                                    join_host(&at.host, "")
                                ));
                                return None;
                            };
                            if !g.matches(name) {
                                return None;
                            }
                            let ft = e.file_type().ok()?;
                            Some((name.to_string(), ft))
                        })
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => {
                        problems.insert(format!(
                            "cannot read {}: {e}",
                            if at.host.is_empty() { "/" } else { &at.host }
                        ));
                        Vec::new()
                    }
                },
            };
            for (name, ft) in names {
                let host = join_host(&at.host, &name);
                let (real, real_host, linked, ft) = if ft.is_symlink() || at.linked {
                    let Some((real, real_host)) = resolve(f, &host) else {
                        continue;
                    };
                    if let Some(parent) = real.parent() {
                        watch(parent);
                    }
                    let Ok(m) = fs::metadata(&real) else {
                        continue;
                    };
                    (real, real_host, true, m.file_type())
                } else {
                    (at.real.join(&name), String::new(), false, ft)
                };
                if !last {
                    if ft.is_dir() {
                        next.push(At { host, real, linked });
                    }
                    continue;
                }
                let Some(node) = rule.kind.accepts(ft) else {
                    continue;
                };
                if !f.allow_sensitive {
                    let hit = sensitive::classify(&host)
                        .map(|c| (host.clone(), c))
                        .or_else(|| {
                            (!real_host.is_empty())
                                .then(|| {
                                    sensitive::classify(&real_host).map(|c| (real_host.clone(), c))
                                })
                                .flatten()
                        });
                    if let Some((what, category)) = hit {
                        problems.insert(format!(
                            "skipped {host}: {what} is {category}; set allowSensitivePath to serve it"
                        ));
                        continue;
                    }
                }
                if f.require_mount_point && !health::is_mount_point(&real, f.host_root) {
                    continue;
                }
                out.push(Match { host, node });
            }
        }
        level = next;
        if level.is_empty() {
            break;
        }
    }
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

/// Zips the rules' sorted matches into devices, as generic-device-plugin
/// does: each rule's matches repeated `limit` times; as many devices as the
/// most matches of any rule, capped by the shortest repeated list.
fn zip(rules: &[PathRule], matches: &[Vec<Match>]) -> Vec<(String, Vec<Grant>)> {
    let natural = matches.iter().map(Vec::len).max().unwrap_or(0);
    let reusable = matches
        .iter()
        .zip(rules)
        .map(|(m, r)| m.len().saturating_mul(r.limit as usize))
        .min()
        .unwrap_or(0);
    let length = natural.min(reusable);
    let mut out = Vec::with_capacity(length);
    for k in 0..length {
        let mut grants = Vec::with_capacity(rules.len());
        let mut key = String::new();
        for (rule, m) in rules.iter().zip(matches) {
            let hit = &m[k % m.len()];
            if !key.is_empty() {
                key.push(',');
            }
            key.push_str(&hit.host);
            grants.push(Grant {
                host: hit.host.clone().into_boxed_str(),
                container: rule
                    .mount_path
                    .as_ref()
                    .filter(|p| **p != hit.host)
                    .map(|p| p.clone().into_boxed_str()),
                device: hit.node,
                read_only: rule.read_only,
                permissions: rule.permissions,
            });
        }
        out.push((key, grants));
    }
    out
}

/// The directories a rule's matches can appear in, for the admission
/// policy and messages: the pattern's literal prefix.
pub fn literal_prefix(rule: &PathRule) -> String {
    let mut s = String::new();
    for c in &rule.components {
        match c {
            Component::Literal(l) => {
                s.push('/');
                s.push_str(l);
            }
            Component::Glob(_) => break,
        }
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}
