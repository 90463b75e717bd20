//! Which host paths are sensitive (B16): handing them to a pod gives it the
//! node, its secrets or the cluster. A rule of categories, not a list of
//! exact strings, applied to the configured path and, at runtime, to what
//! it resolves to. A resource opts in with `allowSensitivePath: true`.

use std::fmt;

/// Why a path is sensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// `/proc` and `/sys`, and everything under them: `/proc/1/root` is the
    /// host's whole root, `/proc/sysrq-trigger` reboots it.
    KernelInterface,
    /// State and sockets of the kubelet, etcd, a container runtime or a
    /// Kubernetes distribution, and the host's service managers' sockets.
    ClusterState,
    /// Credentials and cluster secrets.
    Credentials,
    /// A system directory itself (`/`, `/etc`, `/usr`, `/var`…).
    SystemDirectory,
    /// `/dev/mem`, `/dev/kmem`, `/dev/port`: the machine's raw memory and I/O.
    RawMemory,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::KernelInterface => "a kernel interface under /proc or /sys",
            Category::ClusterState => {
                "the state or socket of the kubelet, etcd, a container runtime or a host service"
            }
            Category::Credentials => "credentials or cluster secrets",
            Category::SystemDirectory => "a system directory",
            Category::RawMemory => "a raw memory or I/O port device",
        })
    }
}

/// Trees (the path and everything under it) of cluster and runtime state.
/// `/var/run/...` is checked as `/run/...` (the one is a link to the other).
const CLUSTER_TREES: &[&str] = &[
    // kubelet and Kubernetes
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/log/pods",
    "/var/log/containers",
    // etcd
    "/var/lib/etcd",
    "/etc/etcd",
    // containerd
    "/var/lib/containerd",
    "/run/containerd",
    "/etc/containerd",
    "/opt/containerd",
    // CRI-O, podman, buildah
    "/var/lib/crio",
    "/run/crio",
    "/etc/crio",
    "/var/lib/containers",
    "/run/containers",
    "/etc/containers",
    // Docker and cri-dockerd
    "/var/lib/docker",
    "/run/docker",
    "/run/docker.sock",
    "/etc/docker",
    "/var/lib/cri-dockerd",
    "/run/cri-dockerd.sock",
    // k3s and RKE2
    "/var/lib/rancher",
    "/run/k3s",
    "/etc/rancher",
    // k0s
    "/var/lib/k0s",
    "/run/k0s",
    "/etc/k0s",
    // MicroK8s
    "/var/snap/microk8s",
    "/snap/microk8s",
    // CNI
    "/etc/cni",
    "/opt/cni",
    "/var/lib/cni",
    // host service managers
    "/run/systemd",
    "/run/dbus",
    "/run/podman",
];

const CREDENTIAL_TREES: &[&str] = &[
    "/etc/kubernetes",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/ssh",
    "/root",
    "/etc/sudoers",
];

const SYSTEM_DIRECTORIES: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
    "/mnt", "/opt", "/run", "/sbin", "/snap", "/srv", "/tmp", "/usr", "/var",
];

/// Directories whose direct children are system directories too.
const SYSTEM_PARENTS: &[&str] = &["/usr", "/var"];

const RAW_MEMORY: &[&str] = &["/dev/mem", "/dev/kmem", "/dev/port"];

/// Every path the rule names, and whether what is under it counts too,
/// for testing whether a pattern could reach one.
pub fn roots() -> Vec<(&'static str, bool)> {
    let mut v = vec![("/proc", true), ("/sys", true), ("/etc/sudoers.d", true)];
    for list in [CLUSTER_TREES, CREDENTIAL_TREES] {
        v.extend(list.iter().map(|p| (*p, true)));
    }
    for list in [SYSTEM_DIRECTORIES, RAW_MEMORY] {
        v.extend(list.iter().map(|p| (*p, false)));
    }
    v
}

fn in_tree(path: &str, tree: &str) -> bool {
    path == tree
        || path
            .strip_prefix(tree)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `path` (with `/run` spelt so) leads to a login session's
/// service sockets: `/run/user` and each user's directory (they hold
/// them), a session bus (`bus`), a user's systemd manager (`systemd/…`),
/// and all of root's (uid 0), whose manager runs anything as root.
fn user_session(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/run/user") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return false;
    };
    let (user, inside) = rest.split_once('/').unwrap_or((rest, ""));
    user == "0"
        || inside.is_empty()
        || inside.starts_with("bus")
        || in_tree(&format!("/{inside}"), "/systemd")
}

/// The category that makes a normalised absolute path sensitive, or `None`.
pub fn classify(path: &str) -> Option<Category> {
    let path = match path.strip_prefix("/var/run") {
        Some("") => "/run",
        Some(rest) if rest.starts_with('/') => return classify(&format!("/run{rest}")),
        _ => path,
    };
    if in_tree(path, "/proc") || in_tree(path, "/sys") {
        return Some(Category::KernelInterface);
    }
    if RAW_MEMORY.contains(&path) {
        return Some(Category::RawMemory);
    }
    if CREDENTIAL_TREES.iter().any(|t| in_tree(path, t))
        || path
            .strip_prefix("/etc/sudoers")
            .is_some_and(|rest| !rest.contains('/') || rest.starts_with(".d"))
    {
        return Some(Category::Credentials);
    }
    if CLUSTER_TREES.iter().any(|t| in_tree(path, t)) || user_session(path) {
        return Some(Category::ClusterState);
    }
    let is_system_child = SYSTEM_PARENTS.iter().any(|p| {
        path.strip_prefix(p)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    });
    if SYSTEM_DIRECTORIES.contains(&path) || is_system_child {
        return Some(Category::SystemDirectory);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    #[test]
    fn the_issue_list_is_caught_by_category() {
        for (p, c) in [
            ("/proc/1/root", KernelInterface),
            ("/proc/sysrq-trigger", KernelInterface),
            ("/proc", KernelInterface),
            ("/sys/fs/cgroup", KernelInterface),
            ("/sys", KernelInterface),
            ("/etc/kubernetes/pki", Credentials),
            ("/etc/shadow", Credentials),
            ("/etc/gshadow", Credentials),
            ("/etc/sudoers", Credentials),
            ("/etc/sudoers.d/90-cloud", Credentials),
            ("/etc/ssh/ssh_host_ed25519_key", Credentials),
            ("/root/.ssh", Credentials),
            ("/root", Credentials),
            ("/var/lib/etcd", ClusterState),
            ("/var/lib/containerd", ClusterState),
            ("/var/lib/docker", ClusterState),
            ("/var/lib/rancher/k3s", ClusterState),
            ("/var/lib/rancher/rke2/server", ClusterState),
            ("/var/lib/k0s", ClusterState),
            ("/var/snap/microk8s/common", ClusterState),
            ("/var/lib/crio", ClusterState),
            ("/run/k3s/containerd/containerd.sock", ClusterState),
            ("/run/cri-dockerd.sock", ClusterState),
            ("/run/systemd/private", ClusterState),
            ("/run/user/0/bus", ClusterState),
            ("/run/user/0/systemd/private", ClusterState),
            ("/run/user/0/anything", ClusterState),
            ("/run/user/1000/bus", ClusterState),
            ("/run/user/1000/systemd/private", ClusterState),
            ("/run/user/1000", ClusterState),
            ("/run/user", ClusterState),
            ("/var/run/user/0/bus", ClusterState),
            ("/var/run/dbus/system_bus_socket", ClusterState),
            ("/var/run/docker.sock", ClusterState),
            ("/run/containerd/containerd.sock", ClusterState),
            ("/var/lib/kubelet/pods", ClusterState),
            ("/", SystemDirectory),
            ("/etc", SystemDirectory),
            ("/usr", SystemDirectory),
            ("/usr/bin", SystemDirectory),
            ("/boot", SystemDirectory),
            ("/dev", SystemDirectory),
            ("/var", SystemDirectory),
            ("/var/lib", SystemDirectory),
            ("/run", SystemDirectory),
            ("/var/run", SystemDirectory),
            ("/dev/mem", RawMemory),
            ("/dev/kmem", RawMemory),
            ("/dev/port", RawMemory),
        ] {
            assert_eq!(classify(p), Some(c), "{p}");
        }
    }

    #[test]
    fn ordinary_paths_stay_allowed() {
        for p in [
            "/dev/kvm",
            "/dev/ttyUSB0",
            "/dev/bus/usb/001/002",
            "/srv/data",
            "/mnt/disk1",
            "/data",
            "/sample",
            "/etc2",
            "/sys2",
            "/proc2",
            "/var/lib/kubelet2",
            "/var/lib/mydata",
            "/var/log/myapp",
            "/etc/myapp.conf",
            "/etc/sudoersx/y",
            "/home/user/data",
            "/opt/app/models",
            "/rootfs",
            "/run/user/1000/pulse/native",
            "/run/user2",
        ] {
            assert_eq!(classify(p), None, "{p}");
        }
    }
}
