//! Invariant checks shared by the fuzz targets (`fuzz/`) and the corpus
//! replay in `make test`: each takes arbitrary bytes, runs the real code on
//! them, and panics if an invariant breaks. Found crashes go into
//! `fuzz/corpus/<target>/` and so stay fixed.

use std::collections::BTreeSet;
use std::path::Path;

use protobuf::Message;

use crate::api::v1beta1::{AllocateRequest, PreferredAllocationRequest};
use crate::core::config::{self, MAX_MESSAGE_BYTES};
use crate::core::resource::{HostPathType, Resource};
use crate::deviceplugin::alloc;
use crate::policy;

/// Longest error message an RPC may return, whatever the request.
const MAX_ERROR_MESSAGE: usize = 4096;

/// Config text: parse and validate; a valid config satisfies every rule,
/// an invalid one explains itself.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(
        text,
        "fuzz.yaml",
        Path::new("/var/lib/kubelet/device-plugins"),
    ) {
        Ok(loaded) => {
            assert!(!loaded.config.resources.is_empty());
            let mut names = BTreeSet::new();
            for r in &loaded.config.resources {
                assert!(config::validate_extended_resource_name(&r.resource_name).is_ok());
                assert_eq!(
                    config::normalize_path(&r.host_path).as_deref(),
                    Ok(r.host_path.as_str())
                );
                assert_eq!(
                    config::normalize_path(&r.mount_path).as_deref(),
                    Ok(r.mount_path.as_str())
                );
                assert!(r.num_devices >= 1);
                assert!(
                    config::list_and_watch_size(u64::from(r.num_devices), 9) <= MAX_MESSAGE_BYTES
                );
                assert!(!r.socket_name.contains('/') && !r.socket_name.starts_with('.'));
                assert!(r.allow_sensitive_path || config::sensitive_rule(&r.host_path).is_none());
                assert!(
                    names.insert(r.resource_name.clone()),
                    "duplicate resource accepted"
                );
                let _ = r.to_string();
            }
            let _ = policy::render(&loaded.config, "fuzz.yaml");
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            assert!(e.problems.iter().all(|p| !p.message.is_empty()));
            let _ = e.to_string();
        }
    }
}

fn resource(selector: u8) -> Resource {
    let path_type = if selector & 1 == 1 {
        HostPathType::CharDevice
    } else {
        HostPathType::Directory
    };
    Resource {
        resource_name: "example.com/fuzz".into(),
        socket_name: "example.com-fuzz.sock".into(),
        num_devices: u32::from(selector >> 1) + 1,
        host_path: "/dev/fuzz".into(),
        path_type,
        mount_path: "/fuzz".into(),
        read_only: false,
        permissions: "rw".into(),
        envs: [("K".to_string(), "V".to_string())].into(),
        require_mount_point: false,
        health_check_interval: std::time::Duration::from_secs(10),
        allow_sensitive_path: false,
        discovery: None,
        api: Default::default(),
        from_generic_device_plugin: false,
    }
}

/// Allocate for a resource whose devices come and go: a set of two
/// present devices (one of two paths) and one vanished. Every ID answered
/// is present, each container path appears once, and a refusal is bounded.
fn allocate_found(r: &Resource, req: &AllocateRequest) {
    use crate::core::discovery::{DeviceSet, Found};
    use crate::core::resource::{Grant, Perm};
    let grant = |h: &str| Grant::node(h, Perm::from_letters("rw"));
    let mut set = DeviceSet::default();
    let now = std::time::Instant::now();
    let keep = std::time::Duration::from_secs(60);
    set.merge(
        vec![
            Found::new("/dev/a", vec![grant("/dev/a")]),
            Found::new("/dev/b", vec![grant("/dev/b"), grant("/dev/a")]),
            Found::new("/dev/c", vec![grant("/dev/c")]),
        ],
        now,
        keep,
    );
    set.merge(
        vec![
            Found::new("/dev/a", vec![grant("/dev/a")]),
            Found::new("/dev/b", vec![grant("/dev/b"), grant("/dev/a")]),
        ],
        now,
        keep,
    );
    match alloc::allocate_found(r, req, &set) {
        Ok(resp) => {
            assert_eq!(resp.container_responses.len(), req.container_requests.len());
            for (c, creq) in resp.container_responses.iter().zip(&req.container_requests) {
                assert!(creq.devices_ids.iter().all(|id| set.grants(id).is_some()));
                let mut paths: Vec<&str> = c
                    .devices
                    .iter()
                    .map(|d| d.container_path.as_str())
                    .collect();
                let n = paths.len();
                paths.sort_unstable();
                paths.dedup();
                assert_eq!(paths.len(), n, "a container path twice");
            }
        }
        Err(refusal) => assert_bounded(&refusal),
    }
}

/// A refusal's message stays bounded, whatever the request.
fn assert_bounded(refusal: &alloc::Refusal) {
    let msg = refusal.to_string();
    assert!(
        msg.len() <= MAX_ERROR_MESSAGE,
        "error message of {} bytes",
        msg.len()
    );
}

/// A glob component and a name, split at the first NUL: compiling never
/// panics, a component without glob characters or escapes is a literal of
/// itself, matching and the RE2 translation never panic, and a literal
/// matches exactly itself.
pub fn glob(data: &[u8]) {
    use crate::core::glob::{component, has_glob, Component};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pat, name) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(c) = component(pat) else {
        assert!(pat.contains('[') || pat.ends_with('\\'));
        return;
    };
    if !has_glob(pat) && !pat.contains('\\') {
        assert_eq!(c, Component::Literal(pat.to_string()));
    }
    let m = c.matches(name);
    if let Component::Literal(l) = &c {
        assert_eq!(m, l == name);
    }
    if pat == "*" {
        assert!(m);
    }
    let _ = c.to_regex();
}

/// An Allocate request as the kubelet (or anyone) could send it: one
/// answer per container, or a bounded INVALID_ARGUMENT message.
pub fn allocate(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(req) = AllocateRequest::parse_from_bytes(rest) else {
        return;
    };
    let r = resource(selector);
    if selector & 0x80 != 0 {
        return allocate_found(&r, &req);
    }
    match alloc::allocate(&r, &req) {
        Ok(resp) => {
            assert_eq!(resp.container_responses.len(), req.container_requests.len());
            let ids_env = &crate::core::given::env_names(&r.resource_name)[0];
            for (c, creq) in resp.container_responses.iter().zip(&req.container_requests) {
                assert_eq!(c.mounts.len() + c.devices.len(), 1);
                assert_eq!(c.envs.len(), r.envs.len() + 3);
                // The list names exactly the IDs asked for, in order.
                let mut ids: Vec<u32> = creq
                    .devices_ids
                    .iter()
                    .filter_map(|id| alloc::known_id(id, r.num_devices))
                    .collect();
                ids.sort_unstable();
                let listed: Vec<String> = ids.iter().map(u32::to_string).collect();
                assert_eq!(c.envs[ids_env], listed.join(" "));
            }
            for creq in &req.container_requests {
                assert!(creq
                    .devices_ids
                    .iter()
                    .all(|id| alloc::known_id(id, r.num_devices).is_some()));
            }
        }
        Err(refusal) => assert_bounded(&refusal),
    }
}

/// A GetPreferredAllocation request: one answer per container, never more
/// IDs than asked for, no duplicates, only IDs that were offered.
pub fn preferred(data: &[u8]) {
    let Ok(req) = PreferredAllocationRequest::parse_from_bytes(data) else {
        return;
    };
    // The first container's available IDs, held through DRA: never chosen
    // unless the kubelet must include one.
    let held: BTreeSet<String> = req
        .container_requests
        .first()
        .map(|c| c.available_deviceIDs.iter().cloned().collect())
        .unwrap_or_default();
    let resp = alloc::preferred(&req, &held);
    assert_eq!(resp.container_responses.len(), req.container_requests.len());
    for (creq, c) in req.container_requests.iter().zip(&resp.container_responses) {
        let size = usize::try_from(creq.allocation_size.max(0)).unwrap_or(0);
        assert!(c.deviceIDs.len() <= size);
        let unique: BTreeSet<&String> = c.deviceIDs.iter().collect();
        assert_eq!(unique.len(), c.deviceIDs.len(), "duplicate IDs");
        assert!(c
            .deviceIDs
            .iter()
            .all(|id| creq.available_deviceIDs.contains(id)
                || creq.must_include_deviceIDs.contains(id)));
        assert!(c
            .deviceIDs
            .iter()
            .all(|id| !held.contains(id) || creq.must_include_deviceIDs.contains(id)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_unknown_id_gives_a_bounded_message() {
        use protobuf::Message;
        let mut req = crate::api::v1beta1::AllocateRequest::new();
        let mut c = crate::api::v1beta1::ContainerAllocateRequest::new();
        c.devices_ids = vec!["9".repeat(1 << 20)];
        req.container_requests.push(c);
        let mut bytes = vec![0u8];
        bytes.extend(req.write_to_bytes().unwrap());
        super::allocate(&bytes);
    }
}
