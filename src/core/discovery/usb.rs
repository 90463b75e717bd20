//! USB devices from sysfs: `<host-root>/sys/bus/usb/devices/*` with their
//! `idVendor`, `idProduct`, `serial`, `busnum` and `devnum` attributes,
//! and, when a resource asks for them (B20), the nodes the device brings:
//! below each of its interfaces (`1-1.2:1.0/…`), every directory with a
//! `dev` file is a device whose `uevent` says its `/dev` name and whose
//! `subsystem` link says what it is (`tty`, `video4linux`, `input`,
//! `hidraw`, `sound`). sysfs sends no inotify events, so the watched
//! directories are the `/dev/bus/usb` tree, where a node appears and goes
//! with each device, and, for those nodes, `/dev` and the directories they
//! are in; a device is listed only once its nodes exist.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::core::health;
use crate::core::resource::Subsystem;
use crate::core::sensitive;
use crate::text::shown;

/// How deep below an interface a node's directory may be (an input event
/// node is four levels down: `<hid>/input/inputN/eventM`).
const MAX_DEPTH: usize = 6;
/// How many directories one device's walk reads at most: a real device
/// has tens; a runaway tree is cut, and said so.
const MAX_DIRS: usize = 512;

/// One USB device (not an interface, whose entries have no `idVendor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbDevice {
    /// The sysfs name: the port path (`1-1.2`) or `usbN` for a root hub.
    pub port: String,
    pub vendor: u16,
    pub product: u16,
    pub serial: Option<String>,
    /// `/dev/bus/usb/BBB/DDD`, as the host sees it.
    pub node: String,
    /// Whether that node exists.
    pub raw_present: bool,
    /// Its other nodes that exist, in the kernel's order per subsystem
    /// (`video0` before `video1`, `video2` before `video10`); looked for
    /// only when asked.
    pub nodes: Vec<UsbNode>,
}

/// A node a USB device brings: its interfaces' tty, video, input, hidraw
/// or sound device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbNode {
    pub subsystem: Subsystem,
    /// `/dev/<DEVNAME>`, as the host sees it.
    pub host: String,
}

impl UsbNode {
    /// Its name: the last part of the path (`event3` of `/dev/input/event3`).
    pub fn name(&self) -> &str {
        self.host.rsplit('/').next().unwrap_or(&self.host)
    }
}

impl UsbDevice {
    /// The stable part of its ID: the serial if it has one (it follows the
    /// device from port to port), else the port path (it stays with the
    /// socket it is plugged into).
    pub fn key(&self) -> String {
        match &self.serial {
            Some(s) => format!("usb:{:04x}:{:04x}:{s}", self.vendor, self.product),
            None => format!("usb:{:04x}:{:04x}@{}", self.vendor, self.product, self.port),
        }
    }
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    let s = fs::read_to_string(dir.join(name)).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

fn hex_id(s: &str) -> Option<u16> {
    if s.len() != 4 {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// What a USB scan looks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsbScan {
    /// The nodes of the devices' interfaces too (B20).
    pub nodes: bool,
    /// Sensitive `/dev` names (B16) are kept.
    pub allow_sensitive: bool,
}

/// Every USB device whose `/dev/bus/usb` node exists (or, looking for
/// nodes, which has one of them), sorted by port. Watches the
/// `/dev/bus/usb` tree (and the directories leading to it), and for nodes
/// `/dev` and their directories, first.
pub fn scan_usb(
    host_root: &Path,
    what: UsbScan,
    watch: &mut dyn FnMut(&Path),
    problems: &mut BTreeSet<String>,
) -> Vec<UsbDevice> {
    let mut dir = host_root.to_path_buf();
    watch(&dir);
    for part in ["dev", "bus", "usb"] {
        dir.push(part);
        watch(&dir);
    }
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                watch(&e.path());
            }
        }
    }
    if what.nodes {
        watch(&host_root.join("dev"));
    }
    let sys = host_root.join("sys/bus/usb/devices");
    let entries = match fs::read_dir(&sys) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.insert(format!("cannot read /sys/bus/usb/devices: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let Some(port) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if port.contains(':') {
            continue; // an interface
        }
        let path = e.path();
        let (Some(vendor), Some(product)) = (
            attr(&path, "idVendor").as_deref().and_then(hex_id),
            attr(&path, "idProduct").as_deref().and_then(hex_id),
        ) else {
            continue;
        };
        let num = |name: &str| attr(&path, name).and_then(|s| s.trim().parse::<u16>().ok());
        let (Some(bus), Some(dev)) = (num("busnum"), num("devnum")) else {
            continue;
        };
        let node = format!("/dev/bus/usb/{bus:03}/{dev:03}");
        let raw_present = fs::metadata(health::inspect_path(host_root, &node))
            .is_ok_and(|m| m.file_type().is_char_device());
        let nodes = if what.nodes {
            interface_nodes(host_root, &path, &port, what, watch, problems)
        } else {
            Vec::new()
        };
        if !raw_present && nodes.is_empty() {
            continue;
        }
        let serial = attr(&path, "serial").filter(|s| !s.is_empty());
        out.push(UsbDevice {
            port,
            vendor,
            product,
            serial,
            node,
            raw_present,
            nodes,
        });
    }
    out.sort_by(|a, b| a.port.cmp(&b.port));
    out
}

/// The nodes below the interfaces of the device at `dir` whose `/dev`
/// entry exists and is that very device (its numbers match sysfs's
/// `dev`), sorted by subsystem and then in the kernel's order.
fn interface_nodes(
    host_root: &Path,
    dir: &Path,
    port: &str,
    what: UsbScan,
    watch: &mut dyn FnMut(&Path),
    problems: &mut BTreeSet<String>,
) -> Vec<UsbNode> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let interface = format!("{port}:");
    // Real directories only: sysfs's links (`driver`, `subsystem`, `port`)
    // lead out of the device, and a child USB device is not one of its
    // interfaces.
    let mut level: Vec<std::path::PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&interface))
                && e.file_type().is_ok_and(|t| t.is_dir())
        })
        .map(|e| e.path())
        .collect();
    let mut found = Vec::new();
    let mut read = 0usize;
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for d in level {
            read += 1;
            if read > MAX_DIRS {
                problems.insert(format!(
                    "USB device {}: more than {MAX_DIRS} directories below its interfaces; \
                     looked no further",
                    shown(port)
                ));
                return finish(found);
            }
            if let Some(n) = node_at(host_root, &d, port, what, watch, problems) {
                found.push(n);
            }
            let Ok(rd) = fs::read_dir(&d) else { continue };
            next.extend(
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        level = next;
        if level.is_empty() {
            break;
        }
    }
    finish(found)
}

fn finish(mut found: Vec<UsbNode>) -> Vec<UsbNode> {
    found.sort_by(|a, b| {
        (a.subsystem, kernel_order(&a.host)).cmp(&(b.subsystem, kernel_order(&b.host)))
    });
    found.dedup();
    found
}

/// A node name in the kernel's order: the text, then its trailing number
/// as a number.
fn kernel_order(name: &str) -> (&str, u64, &str) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (text, num) = name.split_at(name.len() - digits);
    (text, num.parse().unwrap_or(0), name)
}

/// The node of the sysfs device directory `d`, if it is one of the
/// subsystems asked for and its `/dev` entry is there.
fn node_at(
    host_root: &Path,
    d: &Path,
    port: &str,
    what: UsbScan,
    watch: &mut dyn FnMut(&Path),
    problems: &mut BTreeSet<String>,
) -> Option<UsbNode> {
    let numbers = attr(d, "dev")?;
    let link = fs::read_link(d.join("subsystem")).ok()?;
    let subsystem = Subsystem::parse(link.file_name()?.to_str()?)?;
    if subsystem == Subsystem::Usb {
        return None; // the raw node, found from busnum and devnum
    }
    let uevent = attr(d, "uevent")?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let Some(host) = dev_path(name) else {
        problems.insert(format!(
            "USB device {}: skipped a node named {:?}: not a plain name under /dev",
            shown(port),
            shown(name)
        ));
        return None;
    };
    // Watched before it is looked at: the node may come a moment after
    // its sysfs entry.
    if let Some(parent) = Path::new(&host).parent() {
        watch(&health::inspect_path(host_root, &parent.to_string_lossy()));
    }
    if !what.allow_sensitive {
        if let Some(category) = sensitive::classify(&host) {
            problems.insert(format!(
                "USB device {}: skipped {}: it is {category}; set allowSensitivePath to serve it",
                shown(port),
                shown(&host)
            ));
            return None;
        }
    }
    let (major, minor) = numbers.split_once(':')?;
    let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
    let r = health::resolve(host_root, &host).ok()?;
    let m = fs::symlink_metadata(r.full(host_root)).ok()?;
    // The name may already belong to another device (unplugged, the
    // number given again): only the very device counts.
    let same = m.file_type().is_char_device()
        && u64::from(libc::major(m.rdev())) == major
        && u64::from(libc::minor(m.rdev())) == minor;
    same.then_some(UsbNode { subsystem, host })
}

/// `/dev/<name>` for a kernel `DEVNAME`: relative, plain components only.
fn dev_path(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\0', '\\']))
        && !name.chars().any(char::is_control);
    ok.then(|| format!("/dev/{name}"))
}
