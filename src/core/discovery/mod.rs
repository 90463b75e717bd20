//! Devices that come and go (B15): patterns, USB selectors and groups,
//! scanned into a set of devices with stable IDs. Knows nothing of gRPC:
//! the health monitor's workers call [`scan`] (it reads directories and
//! sysfs, so it may block on a hung filesystem), and the resource state
//! merges the result into its [`DeviceSet`].
//!
//! IDs are derived from what a device *is*, never from the order it was
//! found in or from which other devices are present: the matched host
//! path for a pattern, the member paths for a group, the serial (with the
//! port when the serial is not unique) for USB. So a device keeps its ID
//! across daemon restarts, reloads and re-plugs, a kubelet checkpoint made
//! before a restart still names the same devices, and an ID never moves
//! to another device. [`id`] builds them, in one place.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::core::health;
use crate::core::sensitive;
use crate::text::shown;
pub use leaf::{look_again, single_rule, Leaf};
pub use pair::pairs_by_captures;
use pair::{pair, paired, usb_paired, Paired};

pub mod id;
mod leaf;
mod pair;
mod set;
#[cfg(test)]
mod tests;
mod usb;

use super::glob::Component;
use super::resource::{
    Discovery, Grant, MatchKind, PathRule, Perm, Source, Subsystem, UsbSelector,
};
/// Pairs a group's matches, leaving out the optional members nothing
/// matched (generic-device-plugin's `optional`: the group's devices exist
/// without them); a member with matches counts whether optional or not.
fn pair_present(
    rules: &[PathRule],
    mut matches: Vec<Vec<Match>>,
    problems: &mut std::collections::BTreeSet<String>,
) -> Vec<Paired> {
    let absent = |i: usize| rules[i].optional && matches[i].is_empty();
    if !(0..rules.len()).any(absent) {
        return pair(rules, &matches, problems);
    }
    let keep: Vec<usize> = (0..rules.len()).filter(|&i| !absent(i)).collect();
    if keep.is_empty() {
        return Vec::new();
    }
    let kept_rules: Vec<PathRule> = keep.iter().map(|&i| rules[i].clone()).collect();
    let kept: Vec<Vec<Match>> = keep
        .iter()
        .map(|&i| std::mem::take(&mut matches[i]))
        .collect();
    pair(&kept_rules, &kept, problems)
}

pub use set::{entry_size, DeviceSet, Lookup, Merged, StillConfigured};
pub use usb::{scan_usb, UsbDevice, UsbNode, UsbScan};

pub use id::MAX_ID_LEN;

impl Discovery {
    /// Whether this config could produce a device with these paths: the
    /// paths matched, as text, against its rules (no I/O). After a
    /// reload, a device it does not describe is no longer configured,
    /// rather than vanished.
    pub fn describes(&self, grants: &[Grant]) -> bool {
        self.groups.iter().any(|g| match &g.source {
            Source::Usb { .. } => grants.iter().all(|gr| gr.host.starts_with("/dev/")),
            Source::Paths(rules) => {
                // In order; an optional member may be left out.
                let mut grants = grants.iter().peekable();
                for r in rules {
                    match grants.peek() {
                        Some(gr) if r.could_match(&gr.host) => {
                            grants.next();
                        }
                        _ if r.optional => {}
                        _ => return false,
                    }
                }
                grants.next().is_none()
            }
        })
    }
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

/// One device a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its ID (slot suffixes come on top, see [`id`]).
    pub id: String,
    pub grants: Vec<Grant>,
    /// The same device listed this many times (`count`, `numDevices`):
    /// slots are not materialised, the list and Allocate derive them.
    pub slots: u32,
    /// For a device paired by position (generic-device-plugin's files
    /// whose members' wildcards differ in number): per grant, whether that
    /// path may belong to no other device. `None`: paired by what the
    /// members are, which never shares a path by accident.
    pub exclusive: Option<Vec<bool>>,
}

impl Found {
    /// A device of one slot, paired by what it is.
    pub fn new(id: &str, grants: Vec<Grant>) -> Found {
        Found {
            id: id.to_string(),
            grants,
            slots: 1,
            exclusive: None,
        }
    }
}

/// What one scan found: devices sorted by ID, and the problems met on the
/// way (a sensitive match skipped, an unreadable directory), for the log.
#[derive(Debug, Default)]
pub struct Scan {
    pub devices: Vec<Found>,
    pub problems: BTreeSet<String>,
}

/// What a resource's scans remember between them.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// USB serials (with vendor and product) seen on two devices at once:
    /// from then on each such device is told apart by its port, and the
    /// serial alone never names a device again, so an ID never moves from
    /// one device to its clone.
    pub repeating_serials: BTreeSet<(u16, u16, String)>,
}

/// What a scan tells its caller as it goes.
pub trait Hooks {
    /// A directory is about to be read: watch it first.
    fn watch(&mut self, dir: &Path);
    /// The scan is moving (called every [`PROGRESS_EVERY`] entries read), so
    /// a long scan is told from a hung one.
    fn progress(&mut self) {}
    /// A directory where a single pattern's matches live (see [`Leaf`]).
    fn leaf(&mut self, _leaf: Leaf) {}
}

impl<F: FnMut(&Path)> Hooks for F {
    fn watch(&mut self, dir: &Path) {
        self(dir)
    }
}

/// How many directory entries a scan reads between two signs of progress.
pub const PROGRESS_EVERY: usize = 256;

/// Passes each directory to the caller's hooks once per scan.
struct Once<'a> {
    seen: HashSet<PathBuf>,
    hooks: &'a mut dyn Hooks,
}

impl Hooks for Once<'_> {
    fn watch(&mut self, dir: &Path) {
        if self.seen.insert(dir.to_path_buf()) {
            self.hooks.watch(dir);
        }
    }
    fn progress(&mut self) {
        self.hooks.progress();
    }
    fn leaf(&mut self, leaf: Leaf) {
        self.hooks.leaf(leaf);
    }
}

/// Scans every group of `d` under `host_root`. `watch` is called with each
/// directory looked into, *before* it is read, so that whatever changes
/// there after the read is an inotify event. Never follows a symlink out
/// of the host root: links resolve as the host would see them. The mount
/// table is read once per scan, when `require_mount_point` needs it.
pub fn scan(
    host_root: &Path,
    d: &Discovery,
    allow_sensitive: bool,
    require_mount_point: bool,
    memory: &mut Memory,
    hooks: &mut dyn Hooks,
) -> Scan {
    let mut out = Scan::default();
    let mut hooks = Once {
        seen: HashSet::new(),
        hooks,
    };
    let mounts = mount_table(require_mount_point);
    let opts = Filter {
        host_root,
        allow_sensitive,
        require_mount_point,
        mounts: mounts.as_ref(),
    };
    // The first group that produced each key.
    let mut first_group: HashMap<String, usize> = HashMap::new();
    let mut usb_devices: Option<Vec<UsbDevice>> = None;
    for (gi, group) in d.groups.iter().enumerate() {
        let keyed: Vec<Paired> = match &group.source {
            Source::Paths(rules) => {
                // What the wildcards matched matters only where two
                // members with wildcards must be paired.
                let captures = rules.iter().filter(|r| r.wildcards() > 0).count() > 1;
                let leaves = single_rule(d).is_some();
                let matches: Vec<Vec<Match>> = rules
                    .iter()
                    .map(|r| walk(&opts, r, captures, leaves, &mut hooks, &mut out.problems))
                    .collect();
                pair_present(rules, matches, &mut out.problems)
            }
            Source::Usb { selectors, nodes } => {
                let what = UsbScan {
                    nodes: usb_nodes_wanted(d),
                    allow_sensitive,
                };
                let all = usb_devices.get_or_insert_with(|| {
                    scan_usb(
                        host_root,
                        what,
                        &mut |p: &Path| hooks.watch(p),
                        &mut out.problems,
                    )
                });
                usb_paired(all, selectors, nodes, memory)
            }
        };
        for p in keyed {
            let mut suffix = p.suffix;
            if d.groups.len() > 1 {
                let first = *first_group.entry(p.key.clone()).or_insert(gi);
                if first != gi {
                    suffix.group = Some(gi + 1);
                }
            }
            out.devices.push(Found {
                id: id::device_id(&p.key, &suffix, group.count),
                grants: p.grants,
                slots: group.count,
                exclusive: p.exclusive,
            });
        }
    }
    // IDs may repeat only in a hash collision, which the merge resolves
    // whatever the order among equals.
    out.devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Whether any USB group asks for nodes other than `/dev/bus/usb`: only
/// then are the devices' interfaces walked.
fn usb_nodes_wanted(d: &Discovery) -> bool {
    d.groups.iter().any(|g| match &g.source {
        Source::Usb { nodes, .. } => nodes.iter().any(|n| n.subsystem != Subsystem::Usb),
        Source::Paths(_) => false,
    })
}

/// The mount table, read when mount points are asked for.
fn mount_table(require_mount_point: bool) -> Option<health::MountTable> {
    require_mount_point.then(health::MountTable::read).flatten()
}

struct Filter<'a> {
    host_root: &'a Path,
    allow_sensitive: bool,
    require_mount_point: bool,
    /// The mount table, read once for the whole scan.
    mounts: Option<&'a health::MountTable>,
}

/// One existing match of a path rule.
#[derive(Clone, Debug)]
struct Match {
    pub(super) host: String,
    pub(super) node: bool,
    /// What the rule's wildcards matched, in order: what pairs it with the
    /// other members of its group.
    pub(super) captures: Vec<String>,
}

/// A directory reached while walking a pattern.
struct At {
    /// As written (through any symlinks), as the kubelet will see it.
    host: String,
    /// Where it really is, under the host root.
    real: PathBuf,
    /// A symlink was met on the way: matches must be resolved.
    linked: bool,
    /// What the wildcards on the way matched.
    captures: Vec<String>,
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

/// The names in one directory that a component matches, with their type
/// from the directory entry (or `lstat` for a literal).
fn names_in(
    at: &At,
    comp: &Component,
    hooks: &mut dyn Hooks,
    problems: &mut BTreeSet<String>,
) -> Vec<(String, fs::FileType)> {
    match comp {
        Component::Literal(name) => match fs::symlink_metadata(at.real.join(name)) {
            Ok(m) => vec![(name.clone(), m.file_type())],
            Err(_) => Vec::new(),
        },
        Component::Glob(g) => match fs::read_dir(&at.real) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .enumerate()
                .filter_map(|(i, e)| {
                    if i % PROGRESS_EVERY == PROGRESS_EVERY - 1 {
                        hooks.progress();
                    }
                    let name = e.file_name();
                    let Some(name) = name.to_str() else {
                        problems.insert(format!(
                            "skipped a name that is not UTF-8 in {}",
                            shown(&join_host(&at.host, ""))
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
                let dir = if at.host.is_empty() { "/" } else { &at.host };
                problems.insert(format!("cannot read {}: {e}", shown(dir)));
                Vec::new()
            }
        },
    }
}

/// Whether a match must be skipped as sensitive (B16): the path as
/// written, or what it resolves to.
fn sensitive_hit(host: &str, real_host: &str) -> Option<(String, sensitive::Category)> {
    sensitive::classify(host)
        .map(|c| (host.to_string(), c))
        .or_else(|| {
            (!real_host.is_empty())
                .then(|| sensitive::classify(real_host).map(|c| (real_host.to_string(), c)))
                .flatten()
        })
}

/// What one directory entry is to a rule.
enum Step {
    Skip,
    /// A directory to walk into (not at the last component).
    Dir(At),
    Hit(Match),
}

/// Looks at the entry `name` (of type `ft`, from the directory entry or
/// `lstat`) of the directory `at`, at component `comp` of `rule`.
#[allow(clippy::too_many_arguments)]
fn entry(
    f: &Filter<'_>,
    rule: &PathRule,
    comp: &Component,
    at: &At,
    (name, ft): (String, fs::FileType),
    last: bool,
    captures: bool,
    hooks: &mut dyn Hooks,
    problems: &mut BTreeSet<String>,
) -> Step {
    let host = join_host(&at.host, &name);
    // Where it really is: resolved through links; else joined only when
    // needed (a directory to walk, a mount point).
    let (real, real_host, linked, ft) = if ft.is_symlink() || at.linked {
        let Some((real, real_host)) = resolve(f, &host) else {
            return Step::Skip;
        };
        if let Some(parent) = real.parent() {
            hooks.watch(parent);
        }
        let Ok(m) = fs::metadata(&real) else {
            return Step::Skip;
        };
        (Some(real), real_host, true, m.file_type())
    } else {
        (None, String::new(), false, ft)
    };
    let mut caps = Vec::new();
    if captures {
        caps = at.captures.clone();
        caps.extend(comp.captures(&name).unwrap_or_default());
    }
    if !last {
        if !ft.is_dir() {
            return Step::Skip;
        }
        return Step::Dir(At {
            host,
            real: real.unwrap_or_else(|| at.real.join(&name)),
            linked,
            captures: caps,
        });
    }
    let Some(node) = rule.kind.accepts(ft) else {
        return Step::Skip;
    };
    if !f.allow_sensitive {
        if let Some((what, category)) = sensitive_hit(&host, &real_host) {
            problems.insert(format!(
                "skipped {}: {} is {category}; set allowSensitivePath to serve it",
                shown(&host),
                shown(&what)
            ));
            return Step::Skip;
        }
    }
    if f.require_mount_point {
        let real = real.unwrap_or_else(|| at.real.join(&name));
        if !health::is_mount_point_in(&real, f.host_root, f.mounts) {
            return Step::Skip;
        }
    }
    Step::Hit(Match {
        host,
        node,
        captures: caps,
    })
}

/// Every existing match of one rule, sorted by host path. With `leaves`,
/// each directory the last component is matched in (reached without a
/// symlink) is told to `hooks`, so a later event there can be looked at
/// alone ([`look_again`]).
fn walk(
    f: &Filter<'_>,
    rule: &PathRule,
    captures: bool,
    leaves: bool,
    hooks: &mut dyn Hooks,
    problems: &mut BTreeSet<String>,
) -> Vec<Match> {
    let mut level = vec![At {
        host: String::new(),
        real: f.host_root.to_path_buf(),
        linked: false,
        captures: Vec::new(),
    }];
    let n = rule.components.len();
    let mut out = Vec::new();
    for (i, comp) in rule.components.iter().enumerate() {
        let last = i + 1 == n;
        let mut next = Vec::new();
        for at in &level {
            hooks.watch(&at.real);
            if last && leaves && !at.linked {
                hooks.leaf(Leaf {
                    real: at.real.clone(),
                    host: at.host.clone(),
                });
            }
            for named in names_in(at, comp, hooks, problems) {
                match entry(f, rule, comp, at, named, last, captures, hooks, problems) {
                    Step::Skip => {}
                    Step::Dir(d) => next.push(d),
                    Step::Hit(m) => out.push(m),
                }
            }
        }
        level = next;
        if level.is_empty() {
            break;
        }
    }
    // Host paths are unique: an unstable sort is exact, and moves less.
    out.sort_unstable_by(|a, b| a.host.cmp(&b.host));
    out
}

impl PathRule {
    /// Whether the host path `host` has the rule's shape (text only).
    pub fn could_match(&self, host: &str) -> bool {
        let parts: Vec<&str> = host.split('/').filter(|p| !p.is_empty()).collect();
        parts.len() == self.components.len()
            && parts
                .iter()
                .zip(&self.components)
                .all(|(p, c)| c.matches(p))
    }

    /// How many wildcards the rule has: 0 for a fixed path.
    pub fn wildcards(&self) -> usize {
        self.components.iter().map(Component::wildcards).sum()
    }
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
