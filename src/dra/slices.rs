//! What the DRA front publishes of a resource on this node: one pool, its
//! devices (only the healthy, present ones: a device that is not there is
//! left out rather than tainted, so no scheduler or older client can pick
//! it), each with attributes a CEL selector can use, split into
//! ResourceSlices of at most 128 devices (PROTOCOL.md §6.3).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Value};

use super::names::device_name;
use crate::core::discovery::id::slot_id;
use crate::core::resource::{Grant, Resource, Source};
use crate::core::state::Offer;

/// Devices per ResourceSlice, the API's limit.
pub const MAX_PER_SLICE: usize = 128;
/// The longest string attribute value the API accepts.
pub const MAX_STRING_ATTR: usize = 64;
/// Group members given one attribute each (`member1`…), at most.
pub const MAX_MEMBER_ATTRS: usize = 8;

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    Str(String),
    Int(i64),
}

impl Attr {
    fn json(&self) -> Value {
        match self {
            Attr::Str(s) => json!({ "string": s }),
            Attr::Int(i) => json!({ "int": i }),
        }
    }
}

/// One device as published, and what preparing it hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The DRA device name (a DNS label from the ID).
    pub name: String,
    /// The core's ID (with its slot).
    pub id: String,
    pub attributes: BTreeMap<&'static str, Attr>,
    pub grants: Arc<[Grant]>,
}

/// A string attribute, only when it fits (a longer one would make the
/// whole slice invalid; `id` always fits, so a device is always named).
fn put_str(attrs: &mut BTreeMap<&'static str, Attr>, key: &'static str, v: &str) {
    if !v.is_empty() && v.chars().count() <= MAX_STRING_ATTR {
        attrs.insert(key, Attr::Str(v.to_string()));
    }
}

fn kind_of(g: &Grant) -> &'static str {
    if g.device {
        "device"
    } else {
        "mount"
    }
}

/// The attributes of a device: `resource`, `id`, `path` (the first
/// member's host path), `kind` (`device` or `mount`), `members` and
/// `member1`… for groups, and `usbVendor`, `usbProduct`, `usbSerial` for
/// USB devices.
fn attributes(r: &Resource, id: &str, grants: &[Grant]) -> BTreeMap<&'static str, Attr> {
    let mut a = BTreeMap::new();
    put_str(&mut a, "resource", &r.resource_name);
    put_str(&mut a, "id", id);
    if let Some(first) = grants.first() {
        put_str(&mut a, "path", &first.host);
        a.insert("kind", Attr::Str(kind_of(first).into()));
    }
    if grants.len() > 1 {
        a.insert("members", Attr::Int(grants.len() as i64));
        const KEYS: [&str; MAX_MEMBER_ATTRS] = [
            "member1", "member2", "member3", "member4", "member5", "member6", "member7", "member8",
        ];
        for (key, g) in KEYS.iter().zip(grants) {
            put_str(&mut a, key, &g.host);
        }
    }
    let usb = r.discovery.as_ref().is_some_and(|d| {
        d.groups
            .iter()
            .any(|g| matches!(g.source, Source::Usb { .. }))
    });
    if usb {
        // A USB ID is `vendor:product:serial[@port]` unless it was hashed.
        let base = id.split(['@', '#', '~']).next().unwrap_or("");
        let mut parts = base.splitn(3, ':');
        if let (Some(v), Some(p)) = (parts.next(), parts.next()) {
            if v.len() == 4 && p.len() == 4 {
                put_str(&mut a, "usbVendor", v);
                put_str(&mut a, "usbProduct", p);
                if let Some(serial) = parts.next().filter(|s| !s.is_empty()) {
                    put_str(&mut a, "usbSerial", serial);
                }
            }
        }
    }
    a
}

/// The devices a resource offers now, in ID order (as text).
pub fn published(r: &Resource, offer: Offer<'_>) -> Vec<Published> {
    match offer {
        Offer::Nothing => Vec::new(),
        Offer::Fixed(n) => {
            let grant: Arc<[Grant]> = Arc::new([Grant {
                host: r.host_path.as_str().into(),
                container: (r.mount_path != r.host_path).then(|| r.mount_path.as_str().into()),
                device: r.path_type.is_device(),
                read_only: r.read_only,
                permissions: crate::core::resource::Perm::from_letters(&r.permissions),
            }]);
            let mut out: Vec<Published> = (0..n)
                .map(|i| {
                    let id = i.to_string();
                    Published {
                        name: device_name(&id),
                        attributes: attributes(r, &id, &grant),
                        id,
                        grants: grant.clone(),
                    }
                })
                .collect();
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out
        }
        Offer::Found(set) => {
            let mut out = Vec::new();
            for (id, slots, grants) in set.present_devices() {
                for slot in crate::core::discovery::id::slots_in_id_order(slots) {
                    let sid = slot_id(id, slot, slots).into_owned();
                    out.push(Published {
                        name: device_name(&sid),
                        attributes: attributes(r, &sid, &grants),
                        id: sid,
                        grants: grants.clone(),
                    });
                }
            }
            out
        }
    }
}

/// What a resource offers through DRA now: [`published`], less the
/// devices a running pod holds through the device-plugin API (B19).
pub fn offered(r: &Resource, offer: Offer<'_>, held: &BTreeSet<String>) -> Vec<Published> {
    let mut out = published(r, offer);
    if !held.is_empty() {
        out.retain(|p| !held.contains(&p.id));
    }
    out
}

/// The slices of one pool: `devices` in chunks of [`MAX_PER_SLICE`] (one
/// empty slice when there are none, so the pool is known and empty), as
/// `spec` objects; the caller adds names and metadata.
pub fn slice_specs(
    driver: &str,
    node: &str,
    pool: &str,
    generation: i64,
    devices: &[Published],
) -> Vec<Value> {
    let chunks: Vec<&[Published]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(MAX_PER_SLICE).collect()
    };
    let count = chunks.len();
    chunks
        .into_iter()
        .map(|chunk| {
            let devices: Vec<Value> = chunk
                .iter()
                .map(|d| {
                    let attrs: serde_json::Map<String, Value> = d
                        .attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), v.json()))
                        .collect();
                    json!({ "name": d.name, "attributes": attrs })
                })
                .collect();
            json!({
                "driver": driver,
                "nodeName": node,
                "pool": { "name": pool, "generation": generation, "resourceSliceCount": count },
                "devices": devices,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::discovery::{DeviceSet, Found};
    use crate::core::resource::Perm;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn resource(text: &str) -> Resource {
        crate::core::config::parse(text, "c", Path::new("/d"))
            .unwrap()
            .config
            .resources
            .remove(0)
    }

    #[test]
    fn a_fixed_path_offers_its_devices_only_while_healthy() {
        let r = resource("resourceName: example.com/data\nhostPath: {path: /data, type: Directory}\nnumDevices: 3\n");
        assert!(published(&r, Offer::Nothing).is_empty());
        let p = published(&r, Offer::Fixed(3));
        let names: Vec<&str> = p.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "2"]);
        assert_eq!(
            p[0].attributes["resource"],
            Attr::Str("example.com/data".into())
        );
        assert_eq!(p[0].attributes["path"], Attr::Str("/data".into()));
        assert_eq!(p[0].attributes["kind"], Attr::Str("mount".into()));
        assert_eq!(p[2].attributes["id"], Attr::Str("2".into()));
    }

    #[test]
    fn found_devices_are_offered_when_present_with_their_attributes() {
        let r = resource(
            "resourceName: example.com/serial\nusb: [{vendor: '10c4', product: 'ea60'}]\n",
        );
        let mut set = DeviceSet::default();
        let now = Instant::now();
        let node = |id: &str, path: &str| {
            Found::new(id, vec![Grant::node(path, Perm::from_letters("rw"))])
        };
        set.merge(
            vec![
                node("10c4:ea60:A50285BI", "/dev/bus/usb/001/005"),
                node("10c4:ea60:B1", "/dev/bus/usb/001/006"),
            ],
            now,
            Duration::from_secs(60),
        );
        let p = published(&r, Offer::Found(&set));
        assert_eq!(p.len(), 2);
        let a = &p[0].attributes;
        assert_eq!(a["usbVendor"], Attr::Str("10c4".into()));
        assert_eq!(a["usbProduct"], Attr::Str("ea60".into()));
        assert_eq!(a["usbSerial"], Attr::Str("A50285BI".into()));
        assert_eq!(a["kind"], Attr::Str("device".into()));
        // One vanishes: it is no longer offered.
        set.merge(
            vec![node("10c4:ea60:B1", "/dev/bus/usb/001/006")],
            now,
            Duration::from_secs(60),
        );
        let p = published(&r, Offer::Found(&set));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].id, "10c4:ea60:B1");
    }

    #[test]
    fn strings_over_64_are_left_out_and_slices_hold_128() {
        let long = format!("/data/{}", "x".repeat(70));
        let r = resource(&format!(
            "resourceName: example.com/d\nhostPath: {{path: {long}}}\nnumDevices: 300\n"
        ));
        let p = published(&r, Offer::Fixed(300));
        assert!(!p[0].attributes.contains_key("path"));
        let specs = slice_specs("drv.example.com", "node-a", "node-a/example.com/d", 7, &p);
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0]["devices"].as_array().unwrap().len(), 128);
        assert_eq!(specs[2]["devices"].as_array().unwrap().len(), 44);
        for s in &specs {
            assert_eq!(s["pool"]["resourceSliceCount"], 3);
            assert_eq!(s["pool"]["generation"], 7);
            assert_eq!(s["nodeName"], "node-a");
        }
        let empty = slice_specs("drv.example.com", "node-a", "p", 1, &[]);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0]["devices"], json!([]));
    }
}
