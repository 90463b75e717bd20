//! Keeps one pool's ResourceSlices on the API server equal to what the
//! pool offers: reads the node's slices of this driver, then creates,
//! updates or deletes only what differs. Equal means equal in what we set
//! (driver, node, pool, devices and their attributes), so a field the API
//! server fills in never causes a write: at rest, one list and no write.
//!
//! Slice names are derived from the driver, node and pool (and the slice's
//! index), not generated: a create whose answer was lost is found again
//! by name, never duplicated. Every slice carries an ownerReference to the
//! Node, so slices go with their node.

use serde_json::{json, Value};

use super::names::hash_hex;
use super::slices::{slice_specs, Published};
use crate::kube::{Client, KubeError};

/// The slices API (`resource.k8s.io/v1`).
pub const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";

/// Who owns our slices: the Node object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    pub name: String,
    pub uid: String,
}

/// Reads the Node's UID (for the ownerReference).
///
/// # Errors
///
/// The API server's answer, or a Node without a UID.
pub fn node_ref(client: &Client, node: &str) -> Result<NodeRef, KubeError> {
    let what = format!("get node {node}");
    let v = client.get(&format!("/api/v1/nodes/{node}"), &what)?;
    let uid = v["metadata"]["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| KubeError::Malformed {
            what: what.clone(),
            error: "no metadata.uid".into(),
        })?;
    Ok(NodeRef {
        name: node.to_string(),
        uid: uid.to_string(),
    })
}

/// The name of slice `index` of `pool`: a DNS subdomain of fixed length.
pub fn slice_name(driver: &str, node: &str, pool: &str, index: usize) -> String {
    let h = hash_hex(&format!("{driver}\n{node}\n{pool}"));
    format!("hostpath-{h}-{index}")
}

/// The part of a slice we set, for comparison.
fn ours(spec: &Value) -> Value {
    let devices: Vec<Value> = spec["devices"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| json!({ "name": d["name"], "attributes": d["attributes"] }))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "driver": spec["driver"],
        "nodeName": spec["nodeName"],
        "pool": spec["pool"],
        "devices": devices,
    })
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// The pool's generation now.
    pub generation: i64,
}

impl Synced {
    pub fn writes(&self) -> usize {
        self.created + self.updated + self.deleted
    }
}

/// The slices of this node and driver, as the API server has them.
///
/// # Errors
///
/// The list's error.
pub fn list_slices(client: &Client, driver: &str, node: &str) -> Result<Vec<Value>, KubeError> {
    let path = format!("{SLICES}?fieldSelector=spec.nodeName%3D{node}%2Cspec.driver%3D{driver}");
    let v = client.get(&path, &format!("list the ResourceSlices of node {node}"))?;
    match v["items"].as_array() {
        Some(items) => Ok(items.clone()),
        None => Err(KubeError::Malformed {
            what: "list ResourceSlices".into(),
            error: "no items".into(),
        }),
    }
}

/// Makes `pool`'s slices on the server say `devices`, given the node's
/// slices `existing` (from [`list_slices`]). When anything is written the
/// generation goes one past both the highest found and `published`, the
/// highest this process wrote (slices wiped by a kubelet start must not
/// come back at a generation some client has already seen).
///
/// # Errors
///
/// The first failed write; the next sync starts again from a list.
pub fn sync_pool(
    client: &Client,
    driver: &str,
    node: &NodeRef,
    pool: &str,
    devices: &[Published],
    existing: &[Value],
    published: i64,
) -> Result<Synced, KubeError> {
    let mine: Vec<&Value> = existing
        .iter()
        .filter(|s| s["spec"]["pool"]["name"] == pool && s["spec"]["driver"] == driver)
        .collect();
    let current_generation = mine
        .iter()
        .filter_map(|s| s["spec"]["pool"]["generation"].as_i64())
        .max()
        .unwrap_or(0);
    let by_name = |name: &str| mine.iter().find(|s| s["metadata"]["name"] == name).copied();
    let mut specs = slice_specs(driver, &node.name, pool, current_generation, devices);
    let names: Vec<String> = (0..specs.len())
        .map(|i| slice_name(driver, &node.name, pool, i))
        .collect();
    // Unchanged at the current generation: nothing to write.
    let equal = current_generation > 0
        && specs.len() == mine.len()
        && specs
            .iter()
            .zip(&names)
            .all(|(spec, name)| by_name(name).is_some_and(|s| ours(&s["spec"]) == ours(spec)));
    if equal {
        return Ok(Synced {
            generation: current_generation,
            ..Synced::default()
        });
    }
    let generation = current_generation.max(published) + 1;
    for spec in &mut specs {
        spec["pool"]["generation"] = json!(generation);
    }
    let mut done = Synced {
        generation,
        ..Synced::default()
    };
    for (spec, name) in specs.into_iter().zip(&names) {
        let mut body = json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {
                "name": name,
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": node.name,
                    "uid": node.uid, "controller": true,
                }],
            },
            "spec": spec,
        });
        match by_name(name) {
            Some(old) => {
                body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                client.request(
                    "PUT",
                    &format!("{SLICES}/{name}"),
                    Some(&body),
                    &format!("update ResourceSlice {name}"),
                )?;
                done.updated += 1;
            }
            None => {
                client.request(
                    "POST",
                    SLICES,
                    Some(&body),
                    &format!("create ResourceSlice {name}"),
                )?;
                done.created += 1;
            }
        }
    }
    for old in &mine {
        let name = old["metadata"]["name"].as_str().unwrap_or("");
        if !names.iter().any(|n| n == name) && delete_slice(client, old)? {
            done.deleted += 1;
        }
    }
    Ok(done)
}

/// Deletes `slice` (as listed) if it is still that object: a UID
/// precondition, so a slice someone re-created meanwhile stays. `false`
/// when it was already gone.
///
/// # Errors
///
/// The request's error, but for 404.
pub fn delete_slice(client: &Client, slice: &Value) -> Result<bool, KubeError> {
    let Some(name) = slice["metadata"]["name"].as_str() else {
        return Ok(false);
    };
    let pre = json!({ "preconditions": { "uid": slice["metadata"]["uid"] } });
    match client.request(
        "DELETE",
        &format!("{SLICES}/{name}"),
        Some(&pre),
        &format!("delete ResourceSlice {name}"),
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_are_stable_subdomains_per_pool() {
        let a = slice_name("d.example.com", "node-a", "node-a/example.com/x", 0);
        assert_eq!(
            a,
            slice_name("d.example.com", "node-a", "node-a/example.com/x", 0)
        );
        assert_ne!(
            a,
            slice_name("d.example.com", "node-b", "node-b/example.com/x", 0)
        );
        assert_ne!(
            a,
            slice_name("d.example.com", "node-a", "node-a/example.com/x", 1)
        );
        assert!(super::super::names::is_dns_subdomain(&a), "{a}");
    }

    #[test]
    fn comparison_ignores_what_the_server_fills_in() {
        let spec = json!({"driver": "d", "nodeName": "n", "pool": {"name": "p", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "0", "attributes": {"id": {"string": "0"}}}]});
        let mut served = spec.clone();
        served["perDeviceNodeSelection"] = json!(false);
        served["devices"][0]["capacity"] = json!({});
        assert_eq!(ours(&spec), ours(&served));
        served["devices"][0]["attributes"]["id"] = json!({"string": "1"});
        assert_ne!(ours(&spec), ours(&served));
    }
}
