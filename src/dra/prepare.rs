//! NodePrepareResources and NodeUnprepareResources, one claim at a time
//! (PROTOCOL.md §6.1, §6.3): read the claim from the API server, keep the
//! allocation results of our driver, find each device among what its pool
//! offers now, write the claim's CDI spec, answer the CDI IDs. Unprepare
//! removes the spec by UID alone, so it works after a daemon restart and
//! after the claim left the API server.
//!
//! Everything the kubelet or the API server sends is checked before it is
//! used: names and UIDs before they become part of a URL or a file name,
//! the allocation's shape before it is trusted.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::cdi::{edits, lowest_version, CdiDevice, CdiDir, Spec};
use super::names::{is_claim_uid, is_dns_label, is_dns_subdomain};
use super::slices::{offered, Published};
use crate::core::resource::{Grant, Placer};
use crate::core::state::ResourceState;
use crate::kube::Client;
use crate::text::shown;

/// Results per claim the API allows.
pub const MAX_RESULTS: usize = 32;

/// One resource served through DRA: its pool on this node.
#[derive(Clone)]
pub struct Pool {
    pub name: String,
    pub state: Arc<ResourceState>,
}

/// A claim as the kubelet names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One allocation result of our driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// The request, without a subrequest suffix.
    pub request: String,
    pub pool: String,
    pub device: String,
}

/// One device of a prepared claim, as the kubelet is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedDevice {
    pub request: String,
    pub pool: String,
    pub device: String,
    pub cdi_id: String,
}

/// Shortens and escapes a value from outside for an error message.
fn quoted(s: &str) -> String {
    shown(&s.chars().take(80).collect::<String>())
}

/// Checks the claim's names before they go into a URL path or a file name.
///
/// # Errors
///
/// Which of the three is not what the API server would have produced.
pub fn check_ref(c: &ClaimRef) -> Result<(), String> {
    if !is_claim_uid(&c.uid) {
        return Err(format!("claim UID {} is not a UID", quoted(&c.uid)));
    }
    if !is_dns_label(&c.namespace) {
        return Err(format!(
            "claim namespace {} is not a namespace name",
            quoted(&c.namespace)
        ));
    }
    if !is_dns_subdomain(&c.name) {
        return Err(format!(
            "claim name {} is not a claim name",
            quoted(&c.name)
        ));
    }
    Ok(())
}

/// The API path of a claim (names checked by [`check_ref`]).
pub fn claim_path(c: &ClaimRef) -> String {
    format!(
        "/apis/resource.k8s.io/v1/namespaces/{}/resourceclaims/{}",
        c.namespace, c.name
    )
}

/// The results of `claim` (the API server's object) that belong to
/// `driver`, after checking that it is the claim the kubelet meant and
/// that it is allocated.
///
/// # Errors
///
/// A different UID, no allocation, or results that are not well-formed.
pub fn allocated(claim: &Value, want: &ClaimRef, driver: &str) -> Result<Vec<Allocated>, String> {
    let uid = claim["metadata"]["uid"].as_str().unwrap_or("");
    if uid != want.uid {
        return Err(format!(
            "claim {}/{} has UID {} on the API server, not {} (deleted and created again?)",
            want.namespace,
            want.name,
            quoted(uid),
            want.uid
        ));
    }
    let allocation = &claim["status"]["allocation"];
    if !allocation.is_object() {
        return Err(format!(
            "claim {}/{} is not allocated",
            want.namespace, want.name
        ));
    }
    let results = match &allocation["devices"]["results"] {
        Value::Array(r) => r.as_slice(),
        Value::Null => &[],
        _ => return Err("status.allocation.devices.results is not a list".into()),
    };
    if results.len() > MAX_RESULTS {
        return Err(format!(
            "status.allocation.devices.results has {} entries, more than the API's {MAX_RESULTS}",
            results.len()
        ));
    }
    let mut out = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if r["driver"].as_str() != Some(driver) {
            continue;
        }
        let field = |k: &str| -> Result<String, String> {
            match r[k].as_str() {
                Some(s) if !s.is_empty() && s.len() <= 253 => Ok(s.to_string()),
                _ => Err(format!(
                    "status.allocation.devices.results[{i}].{k} is missing or not a name"
                )),
            }
        };
        let request = field("request")?;
        // A subrequest `main/alt` is reported under its request `main`.
        let request = request.split('/').next().unwrap_or_default().to_string();
        out.push(Allocated {
            request,
            pool: field("pool")?,
            device: field("device")?,
        });
    }
    Ok(out)
}

/// The CDI spec for `devices` of claim `uid`, found among what `pools`
/// offer now, and the answer for the kubelet.
///
/// # Errors
///
/// A device this node does not offer now (not one of our pools, missing or
/// unhealthy), or two devices that would land at one container path.
pub fn plan(
    devices: &[Allocated],
    uid: &str,
    pools: &[Pool],
    cdi: &CdiDir,
) -> Result<(Spec, Vec<PreparedDevice>), String> {
    let mut spec = Spec {
        cdi_version: "",
        kind: cdi.kind.clone(),
        devices: Vec::new(),
    };
    let mut answer = Vec::new();
    // Container path → the device that put something there.
    let mut at: BTreeMap<String, String> = BTreeMap::new();
    // Numbered container paths count across the claim.
    let mut placer = Placer::default();
    type Offered = (Vec<Published>, Vec<(String, String)>);
    let mut offers: BTreeMap<&str, Offered> = BTreeMap::new();
    for a in devices {
        let Some(pool) = pools.iter().find(|p| p.name == a.pool) else {
            return Err(format!(
                "pool {} is not served by this node's driver",
                quoted(&a.pool)
            ));
        };
        // Each pool's offer is listed once per claim, however many of its
        // devices the claim holds.
        let (offered, envs) = offers.entry(pool.name.as_str()).or_insert_with(|| {
            pool.state.with_offer(|r, offer, held| {
                let envs = r.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (offered(r, offer, held), envs)
            })
        });
        let found = offered
            .iter()
            .find(|p| p.name == a.device)
            .map(|p| (p.grants.clone(), envs.clone()));
        let Some((grants, envs)) = found else {
            return Err(format!(
                "device {} of pool {} is not offered on this node now (missing or unhealthy)",
                quoted(&a.device),
                a.pool
            ));
        };
        let grants: Vec<Grant> = grants
            .iter()
            .map(|g| {
                let path = placer.place(g);
                Grant {
                    container: (*path != *g.host).then(|| path.into()),
                    ..g.clone()
                }
            })
            .collect();
        for g in &grants {
            let path = g.container_path().into_owned();
            if let Some(other) = at.insert(path.clone(), a.device.clone()) {
                return Err(format!(
                    "devices {other} and {} would both be at {path} in the container",
                    a.device
                ));
            }
        }
        let name = format!("{uid}-{}", a.device);
        answer.push(PreparedDevice {
            request: a.request.clone(),
            pool: a.pool.clone(),
            device: a.device.clone(),
            cdi_id: cdi.device_id(&name),
        });
        spec.devices.push(CdiDevice {
            name,
            container_edits: edits(&grants, &envs),
        });
    }
    spec.cdi_version = lowest_version(&spec.devices);
    Ok((spec, answer))
}

/// Prepares one claim: read it, plan it, write its spec.
///
/// # Errors
///
/// What went wrong, for the kubelet (which retries) and the log.
pub fn prepare(
    client: &Client,
    driver: &str,
    pools: &[Pool],
    cdi: &CdiDir,
    c: &ClaimRef,
) -> Result<Vec<PreparedDevice>, String> {
    check_ref(c)?;
    let what = format!("get ResourceClaim {}/{}", c.namespace, c.name);
    let claim = client
        .get(&claim_path(c), &what)
        .map_err(|e| e.to_string())?;
    let mine = allocated(&claim, c, driver)?;
    let (spec, answer) = plan(&mine, &c.uid, pools, cdi)?;
    if answer.is_empty() {
        // Nothing of ours: no spec (unprepare finds none, which is fine).
        return Ok(answer);
    }
    cdi.write(&c.uid, &spec).map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Unprepares one claim: its spec goes, whether or not there was one.
///
/// # Errors
///
/// A bad UID, or a spec that could not be removed.
pub fn unprepare(cdi: &CdiDir, uid: &str) -> Result<bool, String> {
    cdi.remove(uid).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    fn claim_ref() -> ClaimRef {
        ClaimRef {
            namespace: "default".into(),
            name: "c1".into(),
            uid: UID.into(),
        }
    }

    #[test]
    fn names_are_checked_before_they_become_a_path() {
        assert!(check_ref(&claim_ref()).is_ok());
        for (ns, name, uid, want) in [
            ("default", "c1", "../../etc", "claim UID"),
            ("default", "c1", "", "claim UID"),
            ("../x", "c1", UID, "namespace"),
            ("default", "a/b", UID, "claim name"),
            ("default", "x?watch=1", UID, "claim name"),
            ("Default", "c1", UID, "namespace"),
        ] {
            let c = ClaimRef {
                namespace: ns.into(),
                name: name.into(),
                uid: uid.into(),
            };
            let e = check_ref(&c).unwrap_err();
            assert!(e.contains(want), "{ns} {name} {uid}: {e}");
        }
        assert_eq!(
            claim_path(&claim_ref()),
            "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c1"
        );
    }

    #[test]
    fn only_our_drivers_results_of_the_right_claim() {
        let claim = json!({
            "metadata": {"uid": UID},
            "status": {"allocation": {"devices": {"results": [
                {"request": "r1", "driver": "hostpath-device.k8s.io", "pool": "n/p", "device": "0"},
                {"request": "r2", "driver": "gpu.example.com", "pool": "n/g", "device": "gpu-0"},
                {"request": "r3/alt", "driver": "hostpath-device.k8s.io", "pool": "n/p", "device": "1"},
            ]}}}
        });
        let got = allocated(&claim, &claim_ref(), "hostpath-device.k8s.io").unwrap();
        assert_eq!(
            got,
            [
                Allocated {
                    request: "r1".into(),
                    pool: "n/p".into(),
                    device: "0".into()
                },
                Allocated {
                    request: "r3".into(),
                    pool: "n/p".into(),
                    device: "1".into()
                },
            ]
        );
        let mut other = claim.clone();
        other["metadata"]["uid"] = json!("ffffffff-4e5f-6789-abcd-ef0123456789");
        assert!(allocated(&other, &claim_ref(), "hostpath-device.k8s.io")
            .unwrap_err()
            .contains("not 0a1b2c3d"));
        let unallocated = json!({"metadata": {"uid": UID}, "status": {}});
        assert!(allocated(&unallocated, &claim_ref(), "d")
            .unwrap_err()
            .contains("not allocated"));
        let mut bad = claim.clone();
        bad["status"]["allocation"]["devices"]["results"][0]["device"] = json!(7);
        assert!(allocated(&bad, &claim_ref(), "hostpath-device.k8s.io")
            .unwrap_err()
            .contains("results[0].device"));
        let mut many = claim;
        many["status"]["allocation"]["devices"]["results"] = json!(vec![json!({}); 33]);
        assert!(allocated(&many, &claim_ref(), "d")
            .unwrap_err()
            .contains("more than the API's 32"));
    }
}
