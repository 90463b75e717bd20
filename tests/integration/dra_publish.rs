//! A pool's ResourceSlices kept equal to what it offers, against the fake
//! API server on a real socket: created, left alone at rest (no write),
//! updated with the generation bumped, split at 128 and shrunk, repaired
//! after someone else edits or deletes them, caught up after an outage.

use std::path::Path;
use std::sync::atomic::Ordering;

use k8s_hostpath_device_plugin::core::config;
use k8s_hostpath_device_plugin::core::resource::Resource;
use k8s_hostpath_device_plugin::core::state::Offer;
use k8s_hostpath_device_plugin::dra::publish::{list_slices, node_ref, sync_pool, NodeRef, Synced};
use k8s_hostpath_device_plugin::dra::slices::{published, Published};
use k8s_hostpath_device_plugin::kube::{Auth, Client, KubeConfig};

use k8s_hostpath_device_plugin::sim::fakeapi::FakeApi;

const DRIVER: &str = "hostpath-device.k8s.io";
const POOL: &str = "node-a/example.com/data";

fn resource() -> Resource {
    config::parse(
        "resourceName: example.com/data\nhostPath: {path: /data, type: Directory}\n",
        "c",
        Path::new("/d"),
    )
    .unwrap()
    .config
    .resources
    .remove(0)
}

fn client(api: &FakeApi) -> Client {
    Client::new(&KubeConfig {
        server: api.url(),
        ca: None,
        auth: Auth::Token("t".into()),
        source: "test".into(),
    })
    .unwrap()
}

fn sync(c: &Client, node: &NodeRef, devices: &[Published]) -> Synced {
    let existing = list_slices(c, DRIVER, &node.name).unwrap();
    let highest = LAST.with(|l| l.get());
    let s = sync_pool(c, DRIVER, node, POOL, devices, &existing, highest).unwrap();
    LAST.with(|l| l.set(s.generation.max(highest)));
    s
}

thread_local! {
    /// The highest generation this "process" wrote, as the daemon keeps it.
    static LAST: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn device_names(api: &FakeApi) -> Vec<String> {
    let mut names: Vec<String> = api
        .pool(POOL)
        .iter()
        .flat_map(|s| s["spec"]["devices"].as_array().unwrap().clone())
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn slices_follow_the_pool_and_nothing_is_written_at_rest() {
    let api = FakeApi::start();
    api.store
        .lock()
        .unwrap()
        .nodes
        .insert("node-a".into(), "node-uid".into());
    let c = client(&api);
    let node = node_ref(&c, "node-a").unwrap();
    assert_eq!(node.uid, "node-uid");
    let r = resource();

    let s = sync(&c, &node, &published(&r, Offer::Fixed(3)));
    assert_eq!((s.created, s.generation), (1, 1));
    let slice = &api.pool(POOL)[0];
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "node-uid");
    assert_eq!(slice["spec"]["nodeName"], "node-a");
    assert_eq!(device_names(&api), ["0", "1", "2"]);

    // At rest: a list, no write, however often.
    let before = api.writes();
    for _ in 0..5 {
        assert_eq!(sync(&c, &node, &published(&r, Offer::Fixed(3))).writes(), 0);
    }
    assert_eq!(api.writes(), before);

    // Unhealthy: nothing offered, an empty pool at a new generation.
    let s = sync(&c, &node, &published(&r, Offer::Nothing));
    assert_eq!((s.updated, s.generation), (1, 2));
    assert!(device_names(&api).is_empty());

    // 300 devices: three slices, every one at the same new generation.
    let s = sync(&c, &node, &published(&r, Offer::Fixed(300)));
    assert_eq!((s.updated, s.created, s.generation), (1, 2, 3));
    let pool = api.pool(POOL);
    assert_eq!(pool.len(), 3);
    for sl in &pool {
        assert_eq!(sl["spec"]["pool"]["generation"], 3);
        assert_eq!(sl["spec"]["pool"]["resourceSliceCount"], 3);
    }
    assert_eq!(device_names(&api).len(), 300);

    // Back to 2: the extra slices go.
    let s = sync(&c, &node, &published(&r, Offer::Fixed(2)));
    assert_eq!((s.updated, s.deleted, s.generation), (1, 2, 4));
    assert_eq!(device_names(&api), ["0", "1"]);
}

#[test]
fn foreign_edits_and_deletes_are_repaired_and_an_outage_caught_up() {
    let api = FakeApi::start();
    api.store
        .lock()
        .unwrap()
        .nodes
        .insert("node-a".into(), "u".into());
    let c = client(&api);
    let node = node_ref(&c, "node-a").unwrap();
    let r = resource();
    sync(&c, &node, &published(&r, Offer::Fixed(2)));

    // Someone edits our slice: the next sync puts it back.
    {
        let mut s = api.store.lock().unwrap();
        let slice = s.slices.values_mut().next().unwrap();
        slice["spec"]["devices"] = serde_json::json!([{"name": "forged", "attributes": {}}]);
    }
    let s = sync(&c, &node, &published(&r, Offer::Fixed(2)));
    assert_eq!(s.updated, 1);
    assert_eq!(device_names(&api), ["0", "1"]);

    // Someone deletes it (as a starting kubelet does): re-created, with a
    // generation past any seen.
    let before = sync(&c, &node, &published(&r, Offer::Fixed(2))).generation;
    api.store.lock().unwrap().slices.clear();
    let s = sync(&c, &node, &published(&r, Offer::Fixed(2)));
    assert_eq!(s.created, 1);
    assert!(s.generation > before, "{} after {before}", s.generation);
    assert_eq!(device_names(&api), ["0", "1"]);

    // Down: an error, nothing changed; back: caught up in one sync.
    api.down.store(true, Ordering::SeqCst);
    assert!(list_slices(&c, DRIVER, "node-a").is_err());
    api.down.store(false, Ordering::SeqCst);
    let s = sync(&c, &node, &published(&r, Offer::Fixed(5)));
    assert_eq!(s.updated, 1);
    assert_eq!(device_names(&api).len(), 5);

    // Other drivers' and other nodes' slices are never touched.
    {
        let mut s = api.store.lock().unwrap();
        s.slices.insert(
            "other".into(),
            serde_json::json!({"metadata": {"name": "other", "uid": "x", "resourceVersion": "1"},
                "spec": {"driver": "gpu.example.com", "nodeName": "node-a",
                         "pool": {"name": POOL, "generation": 9}, "devices": []}}),
        );
    }
    assert_eq!(sync(&c, &node, &published(&r, Offer::Fixed(5))).writes(), 0);
    assert!(api.store.lock().unwrap().slices.contains_key("other"));
}
