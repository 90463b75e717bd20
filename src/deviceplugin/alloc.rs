//! What Allocate and GetPreferredAllocation answer (B7, B8), and the device
//! list: pure functions of the config and the request, so they can be
//! fuzzed without a server and never block on I/O.

use std::collections::BTreeSet;

use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, DeviceSpec,
    ListAndWatchResponse, Mount, PreferredAllocationRequest, PreferredAllocationResponse,
};
use crate::core::discovery::{DeviceSet, Lookup};
use crate::core::given::Told;
use crate::core::resource::{Placer, Resource};
use crate::kubelet::MAX_MESSAGE_BYTES;
use protobuf::Message;

use crate::kubelet::{HEALTHY, UNHEALTHY};

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

/// Why an Allocate call is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// IDs we never issued, in container request `container`: a few shown,
    /// each cut short (they come from the client), and how many in all.
    UnknownIds {
        resource: String,
        container: usize,
        shown: Vec<String>,
        total: usize,
        num_devices: u32,
    },
    /// The answer would exceed the kubelet's message limit.
    TooLarge { resource: String, bytes: usize },
    /// Two of the devices asked for would put different host paths at one
    /// container path (a fixed `mountPath` on a pattern or group member).
    SamePath {
        resource: String,
        container: usize,
        container_path: String,
        hosts: [String; 2],
    },
    /// IDs that running pods hold through DRA (claims prepared before the
    /// node moved to the device plugin): a few shown, and how many in all.
    HeldElsewhere {
        resource: String,
        container: usize,
        shown: Vec<String>,
        total: usize,
    },
    /// IDs of a resource whose devices come and go that are not listed
    /// (never were, or removed) or have vanished: a few shown, each with
    /// why, and how many in all.
    Gone {
        resource: String,
        container: usize,
        shown: Vec<String>,
        total: usize,
        present: usize,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownIds {
                resource,
                container,
                shown,
                total,
                num_devices,
            } => {
                write!(
                    f,
                    "{resource}: unknown device IDs in container request {container}: "
                )?;
                write_shown(f, shown, *total)?;
                write!(f, " (known IDs are \"0\"..\"{}\")", num_devices - 1)
            }
            Refusal::Gone {
                resource,
                container,
                shown,
                total,
                present,
            } => {
                write!(
                    f,
                    "{resource}: device IDs not available in container request {container}: "
                )?;
                write_shown(f, shown, *total)?;
                write!(f, " (devices present now: {present})")
            }
            Refusal::HeldElsewhere {
                resource,
                container,
                shown,
                total,
            } => {
                write!(
                    f,
                    "{resource}: in container request {container}, device IDs held by running \
                     pods through DRA (claims prepared before this node moved to the device \
                     plugin): "
                )?;
                write_shown(f, shown, *total)?;
                f.write_str("; they are given again once those pods end")
            }
            Refusal::SamePath {
                resource,
                container,
                container_path,
                hosts,
            } => write!(
                f,
                "{resource}: in container request {container}, the devices asked for would put both \
                 {} and {} at the container path {container_path}; ask for one device per container, \
                 or give the config a mountPath that differs per device",
                hosts[0], hosts[1]
            ),
            Refusal::TooLarge { resource, bytes } => write!(
                f,
                "{resource}: the Allocate answer would be {bytes} bytes, over the kubelet's \
                 limit of {MAX_MESSAGE_BYTES} bytes"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// The IDs shown, and how many more there were.
fn write_shown(
    f: &mut std::fmt::Formatter<'_>,
    shown: &[String],
    total: usize,
) -> std::fmt::Result {
    f.write_str(&shown.join(", "))?;
    if total > shown.len() {
        write!(f, ", and {} more", total - shown.len())?;
    }
    Ok(())
}

/// A client-sent ID as it may appear in a message: quoted, cut short.
pub fn show_id(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// One container's answer: the mount or device node, and the envs.
pub fn container_response(r: &Resource) -> ContainerAllocateResponse {
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
    c
}

/// Builds the Allocate answer (B7), or the refusal: unknown IDs
/// (INVALID_ARGUMENT naming them) or an answer over the kubelet's limit.
///
/// # Errors
///
/// A [`Refusal`].
pub fn allocate(r: &Resource, req: &AllocateRequest) -> Result<AllocateResponse, Refusal> {
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
            return Err(Refusal::UnknownIds {
                resource: r.resource_name.clone(),
                container: i,
                shown: unknown.iter().take(SHOWN).map(|s| show_id(s)).collect(),
                total: unknown.len(),
                num_devices: r.num_devices,
            });
        }
        let mut c = container_response(r);
        let mut ids: Vec<u32> = creq
            .devices_ids
            .iter()
            .filter_map(|id| known_id(id, r.num_devices))
            .collect();
        ids.sort_unstable();
        let mut told = Told::default();
        for id in ids {
            told.device(&id.to_string());
        }
        told.path(&r.mount_path, &r.host_path);
        c.envs.extend(told.envs(&r.resource_name));
        resp.container_responses.push(c);
    }
    within_limit(r, resp)
}

/// The answer, or the refusal when it exceeds the kubelet's message limit.
fn within_limit(r: &Resource, resp: AllocateResponse) -> Result<AllocateResponse, Refusal> {
    let bytes = resp.compute_size() as usize;
    if bytes > MAX_MESSAGE_BYTES {
        return Err(Refusal::TooLarge {
            resource: r.resource_name.clone(),
            bytes,
        });
    }
    Ok(resp)
}

/// The Allocate answer for a resource whose devices come and go: each ID
/// maps to exactly that device's paths (one DeviceSpec or Mount per path,
/// each container path once), plus the envs, read from the device set.
///
/// # Errors
///
/// A [`Refusal`]: IDs unknown or vanished (INVALID_ARGUMENT naming them),
/// or an answer over the kubelet's limit.
pub fn allocate_found(
    r: &Resource,
    req: &AllocateRequest,
    set: &DeviceSet,
) -> Result<AllocateResponse, Refusal> {
    const SHOWN: usize = 10;
    let mut resp = AllocateResponse::new();
    for (i, creq) in req.container_requests.iter().enumerate() {
        let mut c = ContainerAllocateResponse::new();
        let mut bad: Vec<String> = Vec::new();
        let mut total_bad = 0usize;
        // Container path → host path: a slot twice is one path once; two
        // host paths at one container path is refused, never one dropped.
        let mut paths: std::collections::BTreeMap<String, Box<str>> = Default::default();
        let mut clash: Option<(String, String, String)> = None;
        let mut placer = Placer::default();
        let mut told = Told::default();
        // Sorted, so numbered paths go to the same devices whatever
        // order the kubelet lists them in.
        let mut ids: Vec<&str> = creq.devices_ids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        for id in ids {
            let grants = match set.lookup(id) {
                Lookup::Present(g) => g,
                other => {
                    total_bad += 1;
                    if bad.len() < SHOWN {
                        let why = if matches!(other, Lookup::Vanished) {
                            "vanished"
                        } else {
                            "unknown"
                        };
                        bad.push(format!("{} ({why})", show_id(id)));
                    }
                    continue;
                }
            };
            told.device(id);
            for g in grants.iter() {
                let at = placer.place(g);
                match paths.get(&at) {
                    Some(host) if *host == g.host => continue,
                    Some(host) => {
                        clash.get_or_insert_with(|| {
                            (at.clone(), host.to_string(), g.host.to_string())
                        });
                        continue;
                    }
                    None => {
                        paths.insert(at.clone(), g.host.clone());
                    }
                }
                told.path(&at, &g.host);
                if g.device {
                    let mut d = DeviceSpec::new();
                    d.container_path = at;
                    d.host_path = g.host.to_string();
                    d.permissions = g.permissions.letters();
                    c.devices.push(d);
                } else {
                    let mut m = Mount::new();
                    m.container_path = at;
                    m.host_path = g.host.to_string();
                    m.read_only = g.read_only;
                    c.mounts.push(m);
                }
            }
        }
        if total_bad > 0 {
            return Err(Refusal::Gone {
                resource: r.resource_name.clone(),
                container: i,
                shown: bad,
                total: total_bad,
                present: set.present(),
            });
        }
        if let Some((at, first, second)) = clash {
            return Err(Refusal::SamePath {
                resource: r.resource_name.clone(),
                container: i,
                container_path: show_id(&at),
                hosts: [show_id(&first), show_id(&second)],
            });
        }
        c.envs = r.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        c.envs.extend(told.envs(&r.resource_name));
        resp.container_responses.push(c);
    }
    within_limit(r, resp)
}

/// A ListAndWatch answer from a device set's list.
pub fn found_list(devices: &[(std::borrow::Cow<'_, str>, &'static str)]) -> ListAndWatchResponse {
    let mut resp = ListAndWatchResponse::new();
    resp.devices.reserve(devices.len());
    for (id, health) in devices {
        let mut d = Device::new();
        d.ID = id.to_string();
        d.health = (*health).to_string();
        resp.devices.push(d);
    }
    resp
}

/// The options the plugin gives the kubelet (B8): none, except while
/// devices are held through DRA (a node moved back from it, B19). Then
/// GetPreferredAllocation is advertised: those devices are listed (the
/// scheduler counts the pods that hold them) and the kubelet is steered
/// away from them. The kubelet reads the options when it connects.
pub fn options(handing_over: bool) -> DevicePluginOptions {
    let mut o = DevicePluginOptions::new();
    o.get_preferred_allocation_available = handing_over;
    o
}

/// The first IDs asked for in `req` that are in `held`, per container
/// request: a refusal naming them.
pub fn check_held(
    resource: &str,
    req: &AllocateRequest,
    held: &BTreeSet<String>,
) -> Result<(), Refusal> {
    if held.is_empty() {
        return Ok(());
    }
    for (container, c) in req.container_requests.iter().enumerate() {
        let ids: Vec<&String> = c
            .devices_ids
            .iter()
            .filter(|id| held.contains(*id))
            .collect();
        if !ids.is_empty() {
            return Err(Refusal::HeldElsewhere {
                resource: resource.to_string(),
                container,
                shown: ids.iter().take(10).map(|id| show_id(id)).collect(),
                total: ids.len(),
            });
        }
    }
    Ok(())
}

/// A valid preferred allocation (B8): must-include IDs first, then the
/// lowest available IDs that are not `held` (through DRA), up to the
/// requested size.
pub fn preferred(
    req: &PreferredAllocationRequest,
    held: &BTreeSet<String>,
) -> PreferredAllocationResponse {
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
            .filter(|id| !seen.contains(*id) && !held.contains(*id))
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
            preferred(&req, &BTreeSet::new()).container_responses[0].deviceIDs,
            ["7", "1", "2"]
        );
        // Devices held through DRA are never preferred (a must-include one
        // is the kubelet's own, kept).
        let held: BTreeSet<String> = ["1", "7"].map(String::from).into();
        assert_eq!(
            preferred(&req, &held).container_responses[0].deviceIDs,
            ["7", "2", "3"]
        );
    }

    #[test]
    fn allocate_refuses_ids_held_through_dra() {
        let mut req = AllocateRequest::new();
        for ids in [vec!["0"], vec!["1", "2", "3"]] {
            let mut c = ContainerAllocateRequest::new();
            c.devices_ids = ids.into_iter().map(String::from).collect();
            req.container_requests.push(c);
        }
        assert!(check_held("example.com/x", &req, &BTreeSet::new()).is_ok());
        let held: BTreeSet<String> = ["2", "3", "9"].map(String::from).into();
        let e = check_held("example.com/x", &req, &held).unwrap_err();
        assert_eq!(
            e.to_string(),
            "example.com/x: in container request 1, device IDs held by running pods through DRA \
             (claims prepared before this node moved to the device plugin): \"2\", \"3\"; they \
             are given again once those pods end"
        );
    }

    #[test]
    fn allocate_lists_unknown_ids_and_caps_the_message() {
        let r = crate::core::config::parse(
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
        let msg = allocate(&r, &req).unwrap_err().to_string();
        assert!(msg.contains("\"2\", \"3\""), "{msg}");
        assert!(msg.contains("and 88 more"), "{msg}");
    }

    /// The config refuses a fixed path whose answer would not fit the
    /// kubelet's limit, from a size it computes by hand (the core has no
    /// encoder): it must be exactly what this front sends.
    #[test]
    fn the_configs_answer_size_is_the_encoded_size() {
        let long = "x".repeat(200);
        let huge = "y".repeat(20_000);
        let mut cases = 0;
        for kind in ["", "type: CharDevice", "type: Directory"] {
            for vm in [
                "",
                "volumeMount: {readOnly: true}",
                "volumeMount: {mountPath: /c, readOnly: false}",
                "permissions: rwm",
            ] {
                for (envs, n) in [
                    ("", 100),
                    ("envs: {A: b}", 1),
                    ("envs: {A: '', B: c}", 10),
                    ("envs: {L: LONG, H: HUGE}", 1001),
                ] {
                    let envs = envs.replace("LONG", &long).replace("HUGE", &huge);
                    let envs = format!("{envs}\nnumDevices: {n}");
                    let text = format!(
                        "resourceName: example.com/x\nhostPath: {{path: /dev/{long}, {kind}}}\n{vm}\n{envs}\n"
                    );
                    let Ok(loaded) =
                        crate::core::config::parse(&text, "c", std::path::Path::new("/d"))
                    else {
                        continue;
                    };
                    let r = &loaded.config.resources[0];
                    let mut req = AllocateRequest::new();
                    let mut c = ContainerAllocateRequest::new();
                    c.devices_ids = (0..r.num_devices).rev().map(|i| i.to_string()).collect();
                    req.container_requests.push(c);
                    let resp = allocate(r, &req).unwrap();
                    assert_eq!(
                        crate::core::config::allocate_answer_size(r),
                        resp.compute_size() as usize,
                        "{text}"
                    );
                    cases += 1;
                }
            }
        }
        assert!(cases >= 24, "only {cases} configs parsed");
    }
}
