//! The kubelet's device-plugin protocol: its names and constants, in one
//! place (PROTOCOL.md §1.4, §3). Everything else refers to these.

/// The kubelet's registration socket, inside the device-plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The device manager's checkpoint, beside the sockets; never touched.
pub const CHECKPOINT_FILE: &str = "kubelet_internal_checkpoint";
/// The only device-plugin API version there is.
pub const API_VERSION: &str = "v1beta1";
/// The only health word the kubelet counts as healthy.
pub const HEALTHY: &str = "Healthy";
/// What unhealthy devices report (any other word would do for the kubelet).
pub const UNHEALTHY: &str = "Unhealthy";
/// Where the kubelet's device manager looks, whatever `--root-dir` says.
pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The plugin watcher's directory.
pub const DEFAULT_PLUGINS_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// `PluginInfo.type` for device plugins (plugin-watcher registration).
pub const DEVICE_PLUGIN_TYPE: &str = "DevicePlugin";
/// The kubelet rejects any single gRPC message larger than this (gRPC-Go's
/// default receive limit, PROTOCOL.md §3.4).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The longest DNS label (a device name, a namespace).
pub const MAX_LABEL: usize = 63;
/// The longest DNS subdomain (a node, a driver, a pool name).
pub const MAX_SUBDOMAIN: usize = 253;

/// A DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS subdomain: labels joined by `.`, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN && s.split('.').all(is_dns_label)
}
