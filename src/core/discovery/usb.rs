//! USB devices from sysfs: `<host-root>/sys/bus/usb/devices/*` with their
//! `idVendor`, `idProduct`, `serial`, `busnum` and `devnum` attributes.
//! sysfs sends no inotify events, so the watched directories are the
//! `/dev/bus/usb` tree, where a node appears and goes with each device; a
//! device is listed only once its node exists.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

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

/// Every USB device whose node exists, sorted by port. Watches the
/// `/dev/bus/usb` tree (and the directories leading to it) first.
pub fn scan_usb(
    host_root: &Path,
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
        let present = fs::metadata(super::health::inspect_path(host_root, &node))
            .is_ok_and(|m| m.file_type().is_char_device());
        if !present {
            continue;
        }
        let serial = attr(&path, "serial").filter(|s| !s.is_empty());
        out.push(UsbDevice {
            port,
            vendor,
            product,
            serial,
            node,
        });
    }
    out.sort_by(|a, b| a.port.cmp(&b.port));
    out
}
