//! What Allocate and GetPreferredAllocation answer (B7, B8), and the device
//! list: pure functions of the config and the request, so they can be
//! fuzzed without a server and never block on I/O.

use std::collections::BTreeSet;

use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DeviceSpec, ListAndWatchResponse, Mount,
    PreferredAllocationRequest, PreferredAllocationResponse,
};
use crate::config::Resource;

pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";
/// The only device-plugin API version there is.
pub const API_VERSION: &str = "v1beta1";

/// The full device list: IDs `"0"`..`"n-1"`, all with the same health.
pub fn build_list(n: u32, healthy: bool) -> ListAndWatchResponse {
    let health = if healthy { HEALTHY } else { UNHEALTHY };
    let mut resp = ListAndWatchResponse::new();
    resp.devices.reserve(n as usize);
    for i in 0..n {
        let mut d = Device::new();
        d.ID = i.to_string();
        d.health = health.to_string();
        resp.devices.push(d);
    }
    resp
}

/// Parses a device ID we issued: the canonical decimal form of `0..n`.
pub fn known_id(id: &str, n: u32) -> Option<u32> {
    let v: u32 = id.parse().ok()?;
    (v < n && v.to_string() == id).then_some(v)
}

/// Builds the Allocate answer (B7), or the INVALID_ARGUMENT message naming
/// unknown IDs.
pub fn allocate(r: &Resource, req: &AllocateRequest) -> Result<AllocateResponse, String> {
    let mut resp = AllocateResponse::new();
    for (i, creq) in req.container_requests.iter().enumerate() {
        let unknown: Vec<&str> = creq
            .devices_ids
            .iter()
            .filter(|id| known_id(id, r.num_devices).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            const SHOWN: usize = 10;
            // IDs come from the client: show a few, each cut short, so the
            // answer stays small whatever was sent.
            let mut names: Vec<String> = unknown
                .iter()
                .take(SHOWN)
                .map(|s| match s.char_indices().nth(32) {
                    Some((cut, _)) => format!("{:?}…", &s[..cut]),
                    None => format!("{s:?}"),
                })
                .collect();
            if unknown.len() > SHOWN {
                names.push(format!("and {} more", unknown.len() - SHOWN));
            }
            return Err(format!(
                "{}: unknown device IDs in container request {i}: {} (known IDs are \"0\"..\"{}\")",
                r.resource_name,
                names.join(", "),
                r.num_devices - 1
            ));
        }
        let mut c = ContainerAllocateResponse::new();
        if r.path_type.is_device() {
            let mut d = DeviceSpec::new();
            d.container_path = r.mount_path.clone();
            d.host_path = r.host_path.clone();
            d.permissions = r.permissions.clone();
            c.devices.push(d);
        } else {
            let mut m = Mount::new();
            m.container_path = r.mount_path.clone();
            m.host_path = r.host_path.clone();
            m.read_only = r.read_only;
            c.mounts.push(m);
        }
        c.envs = r.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        resp.container_responses.push(c);
    }
    Ok(resp)
}

/// A valid preferred allocation (B8): must-include IDs first, then the
/// lowest available IDs, up to the requested size.
pub fn preferred(req: &PreferredAllocationRequest) -> PreferredAllocationResponse {
    let mut resp = PreferredAllocationResponse::new();
    for creq in &req.container_requests {
        let size = usize::try_from(creq.allocation_size.max(0)).unwrap_or(0);
        let mut chosen: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for id in &creq.must_include_deviceIDs {
            if chosen.len() < size && seen.insert(id.clone()) {
                chosen.push(id.clone());
            }
        }
        let mut available: Vec<&String> = creq
            .available_deviceIDs
            .iter()
            .filter(|id| !seen.contains(*id))
            .collect();
        // Numeric order for our IDs, text order for anything else.
        available.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        });
        for id in available {
            if chosen.len() >= size {
                break;
            }
            if seen.insert(id.clone()) {
                chosen.push(id.clone());
            }
        }
        let mut c = ContainerPreferredAllocationResponse::new();
        c.deviceIDs = chosen;
        resp.container_responses.push(c);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1beta1::{ContainerAllocateRequest, ContainerPreferredAllocationRequest};

    #[test]
    fn known_ids_are_canonical() {
        assert_eq!(known_id("0", 3), Some(0));
        assert_eq!(known_id("2", 3), Some(2));
        assert_eq!(known_id("3", 3), None);
        assert_eq!(known_id("01", 3), None);
        assert_eq!(known_id("+1", 3), None);
        assert_eq!(known_id("", 3), None);
    }

    #[test]
    fn preferred_puts_must_include_first_then_lowest() {
        let mut req = PreferredAllocationRequest::new();
        let mut c = ContainerPreferredAllocationRequest::new();
        c.available_deviceIDs = ["10", "3", "2", "7", "1"].map(String::from).to_vec();
        c.must_include_deviceIDs = vec!["7".into()];
        c.allocation_size = 3;
        req.container_requests.push(c);
        assert_eq!(
            preferred(&req).container_responses[0].deviceIDs,
            ["7", "1", "2"]
        );
    }

    #[test]
    fn allocate_lists_unknown_ids_and_caps_the_message() {
        let r = crate::config::parse(
            "resourceName: example.com/x\nhostPath: {path: /x}\nnumDevices: 2\n",
            "c",
            std::path::Path::new("/d"),
        )
        .unwrap()
        .config
        .resources
        .remove(0);
        let mut req = AllocateRequest::new();
        let mut c = ContainerAllocateRequest::new();
        c.devices_ids = (0..100).map(|i| i.to_string()).collect();
        req.container_requests.push(c);
        let msg = allocate(&r, &req).unwrap_err();
        assert!(msg.contains("\"2\", \"3\""), "{msg}");
        assert!(msg.contains("and 88 more"), "{msg}");
    }
}
