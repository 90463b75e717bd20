//! What a resource is, as the config defines it: the one vocabulary every
//! part of the program shares. The config parser produces these values;
//! health checks, discovery, the monitor and both fronts read them. Plain
//! data and pure questions about it: no I/O, no gRPC.

use std::collections::BTreeMap;
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
