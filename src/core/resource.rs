//! What a resource is, as the config defines it: the one vocabulary every
//! part of the program shares. The config parser produces these values;
//! health checks, discovery, the monitor and both fronts read them. Plain
//! data and pure questions about it: no I/O, no gRPC.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use super::glob::Component;

/// A `hostPath.type` value (PROTOCOL.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: any kind of file is accepted.
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    pub(crate) const ALL: [HostPathType; 8] = [
        HostPathType::Unset,
        HostPathType::DirectoryOrCreate,
        HostPathType::Directory,
        HostPathType::FileOrCreate,
        HostPathType::File,
        HostPathType::Socket,
        HostPathType::CharDevice,
        HostPathType::BlockDevice,
    ];

    /// The exact Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostPathType::Unset => "",
            HostPathType::DirectoryOrCreate => "DirectoryOrCreate",
            HostPathType::Directory => "Directory",
            HostPathType::FileOrCreate => "FileOrCreate",
            HostPathType::File => "File",
            HostPathType::Socket => "Socket",
            HostPathType::CharDevice => "CharDevice",
            HostPathType::BlockDevice => "BlockDevice",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<HostPathType> {
        HostPathType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Char and block devices are handed to the runtime as `DeviceSpec`s
    /// (cgroup device access), everything else as bind mounts.
    /// DirectoryOrCreate and FileOrCreate: created when missing (B1, B6).
    pub fn creates(self) -> bool {
        matches!(
            self,
            HostPathType::DirectoryOrCreate | HostPathType::FileOrCreate
        )
    }

    pub fn is_device(self) -> bool {
        matches!(self, HostPathType::CharDevice | HostPathType::BlockDevice)
    }
}

impl fmt::Display for HostPathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPathType::Unset => f.write_str("any kind"),
            t => f.write_str(t.as_str()),
        }
    }
}

/// The kubelet API a resource is served through (B18): never both on one
/// node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    /// The device-plugin API (`limits:` requests, Allocate): the default.
    #[default]
    DevicePlugin,
    /// Dynamic Resource Allocation: ResourceSlices, claims, CDI.
    Dra,
}

impl Api {
    /// The config spelling (`api:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Api::DevicePlugin => "devicePlugin",
            Api::Dra => "dra",
        }
    }

    pub fn parse(s: &str) -> Option<Api> {
        [Api::DevicePlugin, Api::Dra]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// One validated resource: everything the daemon needs to serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Extended resource name, e.g. `hostpath-device.k8s.io/sample`.
    pub resource_name: String,
    /// Socket file name inside the device-plugin (or plugins-registry) dir.
    pub socket_name: String,
    /// Number of devices advertised; IDs are `"0"`..`"N-1"` as in the original.
    pub num_devices: u32,
    /// Normalised absolute host path, as the kubelet sees it (no host root).
    pub host_path: String,
    pub path_type: HostPathType,
    /// Where the path appears in the container.
    pub mount_path: String,
    pub read_only: bool,
    /// cgroup device permissions (`rwm` letters); used for devices only.
    pub permissions: String,
    pub envs: BTreeMap<String, String>,
    /// Healthy only while `host_path` is a mount point.
    pub require_mount_point: bool,
    pub health_check_interval: Duration,
    pub allow_sensitive_path: bool,
    /// Devices found at runtime (patterns, `usb`, `group`, Form C): then
    /// `num_devices` is the slots per device, `host_path` the first
    /// pattern (for messages), and the fields above describe nothing else.
    pub discovery: Option<Discovery>,
    /// Which kubelet API serves it (`api:`, or the daemon's `--api`).
    pub api: Api,
    /// Read from a generic-device-plugin file (Form C): its metrics also
    /// carry that project's series, so its dashboards keep working.
    pub from_generic_device_plugin: bool,
}

impl Resource {
    pub fn is_dynamic(&self) -> bool {
        self.discovery.is_some()
    }

    /// Whether a mount appearing or going at the host path `mount_point`
    /// can change whether this resource's path (or a match of its
    /// pattern) is a mount point: it is that path, or above it.
    pub fn concerns_mount_point(&self, mount_point: &str) -> bool {
        let parts: Vec<&str> = mount_point.split('/').filter(|p| !p.is_empty()).collect();
        let leads_to = |components: &[Component]| {
            parts.len() <= components.len()
                && parts.iter().zip(components).all(|(p, c)| c.matches(p))
        };
        match &self.discovery {
            None => {
                let path: Vec<&str> = self
                    .host_path
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .collect();
                path.starts_with(&parts)
            }
            Some(d) => d.groups.iter().any(|g| match &g.source {
                Source::Paths(rules) => rules.iter().any(|r| leads_to(&r.components)),
                Source::Usb { .. } => false,
            }),
        }
    }
}

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
    /// Paths handed out together: the matches whose wildcards matched the
    /// same text form one device (or, where the members' wildcards differ
    /// in number, only in generic-device-plugin's files, the i-th sorted
    /// matches). One rule is the plain pattern case.
    Paths(Vec<PathRule>),
    /// Each USB device matching any selector is one device, handed out as
    /// the nodes its rules choose (B20).
    Usb {
        selectors: Vec<UsbSelector>,
        /// Which of the device's nodes it is given as, in order: by default
        /// its `/dev/bus/usb` node alone.
        nodes: Vec<NodeRule>,
    },
}

/// The kernel subsystems a USB device's nodes belong to (sysfs
/// `subsystem` links, B20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subsystem {
    /// The raw libusb node, `/dev/bus/usb/BBB/DDD`.
    Usb,
    /// Serial ports: `ttyUSB*` (usb-serial), `ttyACM*` (CDC-ACM).
    Tty,
    /// Cameras and capture devices: `video*`, `media*` is not one.
    Video4linux,
    /// Keyboards, mice, game pads: `input/event*`, `input/js*`, `input/mouse*`.
    Input,
    Hidraw,
    /// ALSA: `snd/controlC*`, `snd/pcmC*`, `snd/midiC*`.
    Sound,
}

impl Subsystem {
    pub const ALL: [Subsystem; 6] = [
        Subsystem::Usb,
        Subsystem::Tty,
        Subsystem::Video4linux,
        Subsystem::Input,
        Subsystem::Hidraw,
        Subsystem::Sound,
    ];

    /// The kernel's name, as its sysfs `subsystem` link ends.
    pub fn as_str(self) -> &'static str {
        match self {
            Subsystem::Usb => "usb",
            Subsystem::Tty => "tty",
            Subsystem::Video4linux => "video4linux",
            Subsystem::Input => "input",
            Subsystem::Hidraw => "hidraw",
            Subsystem::Sound => "sound",
        }
    }

    pub fn parse(s: &str) -> Option<Subsystem> {
        Subsystem::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Which nodes of a USB device a rule hands out, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRule {
    pub subsystem: Subsystem,
    /// Only nodes whose name (the last part of the kernel's `DEVNAME`)
    /// this matches, e.g. `event*`: as written, and compiled.
    pub name: Option<(String, Component)>,
    /// Where they appear in the container (see [`Grant::container`]);
    /// `None`: at the host path.
    pub mount_path: Option<String>,
    pub permissions: Perm,
}

impl NodeRule {
    /// The raw `/dev/bus/usb` node at its own path: a `usb` selector's
    /// default.
    pub fn raw(permissions: Perm) -> NodeRule {
        NodeRule {
            subsystem: Subsystem::Usb,
            name: None,
            mount_path: None,
            permissions,
        }
    }
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
    /// generic-device-plugin's `optional`: when nothing matches, the
    /// group's devices exist without this member (it is not handed out).
    pub optional: bool,
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
    /// Where the `/dev/bus/usb` node of a device this selector matched
    /// appears in the container (generic-device-plugin's `mountPath`),
    /// unless the node rule says.
    pub mount_path: Option<String>,
}

/// One path handed to a container for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The host path as the kubelet sees it (no host root).
    pub host: Box<str>,
    /// The container path, when it differs from `host`: a fixed path, a
    /// numbered one (`{n}`, see [`Placer`]), or a directory (ending in
    /// `/`: the host node keeps its name inside it).
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

    /// The container path of a grant whose path is fixed (no `{n}`).
    pub fn container_path(&self) -> Cow<'_, str> {
        match self.container.as_deref() {
            None => Cow::Borrowed(&self.host),
            Some(dir) if dir.ends_with('/') => Cow::Owned(in_dir(dir, &self.host)),
            Some(p) => Cow::Borrowed(p),
        }
    }
}

/// The placeholder of a numbered container path.
pub const NUMBER: &str = "{n}";

/// `host`'s last component inside the directory `dir` (which ends in `/`).
fn in_dir(dir: &str, host: &str) -> String {
    let name = host.rsplit('/').next().unwrap_or(host);
    format!("{dir}{name}")
}

/// Places the grants one container (or one claim) is given: a numbered
/// path (`/dev/video{n}`) takes `0`, `1`, … in the order grants come, per
/// pattern; a host path met twice under one pattern (a device's slots, a
/// member shared by a group's devices) gets the same path again.
#[derive(Debug, Default)]
pub struct Placer {
    next: HashMap<Box<str>, u32>,
    given: HashMap<(Box<str>, Box<str>), String>,
}

impl Placer {
    pub fn place(&mut self, g: &Grant) -> String {
        let Some(t) = g.container.as_deref().filter(|t| t.contains(NUMBER)) else {
            return g.container_path().into_owned();
        };
        let key = (Box::from(t), g.host.clone());
        if let Some(p) = self.given.get(&key) {
            return p.clone();
        }
        let n = self.next.entry(key.0.clone()).or_insert(0);
        let p = t.replacen(NUMBER, &n.to_string(), 1);
        *n += 1;
        self.given.insert(key, p.clone());
        p
    }
}
