//! The DRA front end to end (B18): the daemon binary against the simulated
//! DRA kubelet over the real sockets and the fake API server over real
//! HTTP. Registration, slices, prepare and unprepare (also after a restart
//! and after the claim is gone), health to a watch stream, a kubelet wipe,
//! the API server down and back, hostile names and answers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::dra::{sockets, DraKubelet};
use serde_json::{json, Value};

use crate::harness::{run, wait_until, Daemon, TestDir, WAIT};
use k8s_hostpath_device_plugin::sim::fakeapi::FakeApi;

const DRIVER: &str = "hostpath-device.k8s.io";
const UID1: &str = "11111111-2222-3333-4444-555555555555";
const UID2: &str = "22222222-2222-3333-4444-555555555555";

/// A node, its kubelet directories and a fake API server.
pub(crate) struct Node {
    pub(crate) dir: TestDir,
    pub(crate) api: FakeApi,
    pub(crate) kubelet: DraKubelet,
}

impl Node {
    pub(crate) fn new() -> Node {
        let dir = TestDir::new();
        for d in ["registry", "plugins", "cdi"] {
            fs::create_dir_all(dir.path.join(d)).unwrap();
        }
        let api = FakeApi::start();
        api.store
            .lock()
            .unwrap()
            .nodes
            .insert("node-a".into(), "node-uid-a".into());
        Node {
            dir,
            api,
            kubelet: DraKubelet::default(),
        }
    }

    pub(crate) fn sockets(&self) -> (PathBuf, PathBuf) {
        sockets(
            &self.dir.path.join("registry"),
            &self.dir.path.join("plugins"),
            DRIVER,
        )
    }

    fn cdi(&self) -> PathBuf {
        self.dir.path.join("cdi")
    }

    pub(crate) fn start(&self, config: &str, extra: &[&str]) -> Daemon {
        self.start_env(config, extra, &[], "daemon.log")
    }

    /// [`Node::start`] with environment variables and a log of its own
    /// (several daemons on this node).
    pub(crate) fn start_env(
        &self,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &str,
    ) -> Daemon {
        let cfg = self.dir.write_config(config);
        let kubeconfig = self.api.kubeconfig(&self.dir.path);
        let reg = self.dir.path.join("registry");
        let plugins = self.dir.path.join("plugins");
        let cdi = self.cdi();
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "--node-name",
            "node-a",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--plugins-registry-dir",
            reg.to_str().unwrap(),
            "--plugins-dir",
            plugins.to_str().unwrap(),
            "--cdi-dir",
            cdi.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Daemon::spawn_env(&self.dir, &args, env, log)
    }

    /// Registers like the kubelet's plugin watcher, once the socket is there.
    pub(crate) fn register(&self, d: &Daemon) {
        let (reg, dra) = self.sockets();
        assert!(
            wait_until(WAIT, || reg.exists()),
            "no registration socket; log:\n{}",
            d.log()
        );
        let info = self.kubelet.register(&reg).expect("registration");
        assert_eq!(info.name, DRIVER);
        assert_eq!(info.endpoint, dra.to_str().unwrap());
        assert_eq!(
            info.supported_versions,
            [
                "v1.DRAPlugin",
                "v1beta1.DRAPlugin",
                "v1.DRAResourceHealth",
                "v1alpha1.DRAResourceHealth"
            ]
        );
    }

    #[track_caller]
    pub(crate) fn wait_devices(&self, d: &Daemon, pool: &str, want: &[&str]) {
        assert!(
            wait_until(WAIT, || self.api.devices(pool) == want),
            "pool {pool}: {:?}, not {want:?}; log:\n{}",
            self.api.devices(pool),
            d.log()
        );
    }
}

pub(crate) fn data_config(node: &Node) -> String {
    let data = node.dir.host("data");
    fs::create_dir_all(&data).unwrap();
    format!(
        "resources:\n\
         - resourceName: example.com/data\n  api: dra\n  numDevices: 2\n  hostPath: {{path: {}, type: Directory}}\n  \
           volumeMount: {{mountPath: /data, readOnly: true}}\n  envs: {{DATA: here}}\n  healthCheckInterval: 100ms\n\
         - resourceName: example.com/classic\n  hostPath: {{path: {}, type: Directory}}\n",
        data.display(),
        data.display()
    )
}

pub(crate) const POOL: &str = "node-a/example.com/data";

/// A node serving `data_config`, registered, its two devices published.
fn serving_data() -> (Node, Daemon) {
    let node = Node::new();
    let d = node.start(&data_config(&node), &[]);
    node.register(&d);
    node.wait_devices(&d, POOL, &["0", "1"]);
    (node, d)
}

fn spec(node: &Node, uid: &str) -> Option<Value> {
    let p = node
        .cdi()
        .join(format!("hostpath-device.k8s.io-device_{uid}.json"));
    fs::read(p)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn registers_publishes_prepares_and_unprepares_across_a_restart() {
    let node = Node::new();
    let config = data_config(&node);
    let mut d = node.start(&config, &[]);
    node.register(&d);
    node.wait_devices(&d, POOL, &["0", "1"]);

    // One API per resource: the classic one has its device-plugin socket,
    // the DRA one has none.
    let dp = node.dir.sockets();
    assert!(
        dp.contains(&"example.com-classic.sock".to_string()),
        "{dp:?}"
    );
    assert!(!dp.iter().any(|s| s.contains("data")), "{dp:?}");

    // The slice: driver, node, pool, the ownerReference, the attributes.
    let slice = node.api.pool(POOL).remove(0);
    assert_eq!(slice["spec"]["driver"], DRIVER);
    assert_eq!(slice["spec"]["nodeName"], "node-a");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "node-uid-a");
    let attrs = &slice["spec"]["devices"][0]["attributes"];
    assert_eq!(attrs["resource"], json!({"string": "example.com/data"}));
    assert_eq!(attrs["kind"], json!({"string": "mount"}));
    let host = node.dir.host("data");
    assert_eq!(attrs["path"], json!({"string": host.to_str().unwrap()}));

    // Sockets are private.
    let (reg, dra) = node.sockets();
    // The probe asks the driver's registration socket for DRA resources.
    let cfg = node.dir.path.join("config.yaml");
    let registry = node.dir.path.join("registry");
    let probe = |_: ()| {
        run(&[
            "probe",
            "--config",
            cfg.to_str().unwrap(),
            "--device-plugin-dir",
            node.dir.dp().to_str().unwrap(),
            "--plugins-registry-dir",
            registry.to_str().unwrap(),
        ])
    };
    let out = probe(());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [&reg, &dra] {
        let mode = fs::metadata(s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", s.display());
    }

    // Prepare: one good claim and one whose UID changed on the server.
    node.api
        .add_claim("default", "c1", UID1, DRIVER, &[("data", POOL, "1")]);
    node.api.add_claim(
        "default",
        "c2",
        "99999999-2222-3333-4444-555555555555",
        DRIVER,
        &[("data", POOL, "0")],
    );
    let claims = [("default", "c1", UID1), ("default", "c2", UID2)];
    let r = node.kubelet.prepare(&dra, &claims).unwrap();
    let ok = &r.claims[UID1];
    assert_eq!(ok.error, "", "{ok:?}");
    assert_eq!(ok.devices.len(), 1);
    assert_eq!(ok.devices[0].pool_name, POOL);
    assert_eq!(ok.devices[0].device_name, "1");
    assert_eq!(ok.devices[0].request_names, ["data"]);
    let cdi_id = format!("{DRIVER}/device={UID1}-1");
    assert_eq!(ok.devices[0].cdi_device_ids, [cdi_id.as_str()]);
    assert!(
        r.claims[UID2].error.contains("has UID 99999999"),
        "{:?}",
        r.claims[UID2]
    );
    let s = spec(&node, UID1).expect("the claim's CDI spec");
    assert_eq!(s["kind"], format!("{DRIVER}/device"));
    // The device name starts with the claim's UID, here a digit: 0.5.0.
    assert_eq!(s["cdiVersion"], "0.5.0");
    let edits = &s["devices"][0]["containerEdits"];
    assert_eq!(edits["env"], json!(["DATA=here"]));
    assert_eq!(
        edits["mounts"],
        json!([{"hostPath": host.to_str().unwrap(), "containerPath": "/data", "options": ["rbind", "ro"]}])
    );
    assert!(spec(&node, UID2).is_none());

    // Idempotent, and the same through v1beta1.
    let again = node.kubelet.prepare_v1beta1(&dra, &claims[..1]).unwrap();
    assert_eq!(
        again.claims[UID1].devices[0].cdi_device_ids,
        [cdi_id.as_str()]
    );

    // A restart, then the claim is deleted: unprepare still works, twice.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success());
    assert!(!reg.exists() && !dra.exists(), "sockets removed on exit");
    let out = probe(());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.com/data"));
    assert!(spec(&node, UID1).is_some(), "a restart keeps preparations");
    node.api.store.lock().unwrap().claims.clear();
    let d = node.start(&config, &[]);
    node.register(&d);
    for _ in 0..2 {
        let r = node.kubelet.unprepare(&dra, &claims[..1]).unwrap();
        assert_eq!(r.claims[UID1].error, "");
    }
    assert!(spec(&node, UID1).is_none(), "the spec is gone");
}

#[test]
fn slices_and_health_follow_devices_and_come_back_after_a_wipe() {
    let node = Node::new();
    let ttys = node.dir.host("dev");
    fs::create_dir_all(&ttys).unwrap();
    fs::write(ttys.join("ttyA"), "").unwrap();
    let config = format!(
        "resources:\n- resourceName: example.com/tty\n  api: dra\n  removeAfter: 1m\n  \
         hostPath: {{path: {}/tty*, type: File}}\n",
        ttys.display()
    );
    let d = node.start(&config, &[]);
    node.register(&d);
    const POOL: &str = "node-a/example.com/tty";
    let a = format!("{}/ttyA", ttys.display());
    let b = format!("{}/ttyB", ttys.display());
    let (name_a, name_b) = (
        k8s_hostpath_device_plugin::dra::names::device_name(&a),
        k8s_hostpath_device_plugin::dra::names::device_name(&b),
    );
    node.wait_devices(&d, POOL, &[&name_a]);
    let (_, dra) = node.sockets();
    let watch = node.kubelet.watch(&dra).unwrap();
    fn healthy(n: String) -> impl Fn(&Vec<(String, String, i32)>) -> bool {
        move |h| h.iter().any(|(p, d, s)| p == POOL && *d == n && *s == 1)
    }
    assert!(watch.wait_for(WAIT, healthy(name_a.clone())).is_some());

    // At rest: nothing written.
    let writes = node.api.writes();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        node.api.writes(),
        writes,
        "{:?}",
        node.api.store.lock().unwrap().log
    );

    // Plugged: published and healthy.
    fs::write(ttys.join("ttyB"), "").unwrap();
    let mut both = vec![name_a.as_str(), name_b.as_str()];
    both.sort();
    node.wait_devices(&d, POOL, &both);
    assert!(watch.wait_for(WAIT, healthy(name_b.clone())).is_some());

    // Unplugged: no longer offered, and unhealthy to the pods holding it.
    fs::remove_file(ttys.join("ttyA")).unwrap();
    node.wait_devices(&d, POOL, &[&name_b]);
    let unhealthy_a = |h: &Vec<(String, String, i32)>| {
        h.iter()
            .any(|(p, d, s)| p == POOL && *d == name_a && *s == 2)
    };
    assert!(watch.wait_for(WAIT, unhealthy_a).is_some(), "{}", d.log());

    // The kubelet restarts: it wipes the node's slices and registers the
    // driver again; the slices come back at a higher generation.
    let generation = node.api.pool(POOL)[0]["spec"]["pool"]["generation"]
        .as_i64()
        .unwrap();
    node.api.store.lock().unwrap().slices.clear();
    node.register(&d);
    node.wait_devices(&d, POOL, &[&name_b]);
    let now = node.api.pool(POOL)[0]["spec"]["pool"]["generation"]
        .as_i64()
        .unwrap();
    assert!(now > generation, "{now} after {generation}");
}

#[test]
fn the_api_server_down_then_back() {
    let (node, d) = serving_data();
    node.api
        .add_claim("default", "c1", UID1, DRIVER, &[("data", POOL, "0")]);
    let (_, dra) = node.sockets();

    node.api.down.store(true, Ordering::SeqCst);
    // Preparing needs the claim: an error for the claim, not for the call.
    let r = node
        .kubelet
        .prepare(&dra, &[("default", "c1", UID1)])
        .unwrap();
    assert!(r.claims[UID1].error.contains("503"), "{:?}", r.claims[UID1]);
    // A change while down: published when it is back.
    node.api.store.lock().unwrap().slices.clear();
    node.register(&d);
    d.wait_log("publishing ResourceSlices failed");
    node.api.down.store(false, Ordering::SeqCst);
    node.wait_devices(&d, POOL, &["0", "1"]);
    let r = node
        .kubelet
        .prepare(&dra, &[("default", "c1", UID1)])
        .unwrap();
    assert_eq!(r.claims[UID1].error, "");
    assert!(
        !d.log().contains("secret-token"),
        "the token is never logged"
    );
}

#[test]
fn hostile_names_and_answers_get_an_error_per_claim() {
    let (node, _daemon) = serving_data();
    let (_, dra) = node.sockets();
    // Names that would escape a path or a URL.
    let r = node
        .kubelet
        .prepare(
            &dra,
            &[
                ("default", "c1", "../../../etc/passwd"),
                ("../kube-system", "c1", UID1),
                ("default", "c1?watch=true", UID2),
            ],
        )
        .unwrap();
    assert!(r.claims["../../../etc/passwd"].error.contains("not a UID"));
    assert!(r.claims[UID1].error.contains("namespace"));
    assert!(r.claims[UID2].error.contains("claim name"));
    // Answers that are not what the API promises.
    let mut store = node.api.store.lock().unwrap();
    store.claims.insert(
        "default/c1".into(),
        json!({"metadata": {"uid": UID1}, "status": {"allocation": {"devices": {"results": "no"}}}}),
    );
    store.claims.insert(
        "default/c2".into(),
        json!({"metadata": {"uid": UID2}, "status": {"allocation": {"devices": {"results": [
            {"request": "r", "driver": DRIVER, "pool": POOL, "device": "7"}]}}}}),
    );
    drop(store);
    let r = node
        .kubelet
        .prepare(&dra, &[("default", "c1", UID1), ("default", "c2", UID2)])
        .unwrap();
    assert!(
        r.claims[UID1].error.contains("not a list"),
        "{:?}",
        r.claims[UID1]
    );
    assert!(
        r.claims[UID2].error.contains("not offered on this node"),
        "{:?}",
        r.claims[UID2]
    );
    assert!(
        fs::read_dir(node.cdi()).unwrap().next().is_none(),
        "no spec written"
    );
    // Still serving.
    node.api
        .add_claim("default", "c3", UID1, DRIVER, &[("data", POOL, "0")]);
    let r = node
        .kubelet
        .prepare(&dra, &[("default", "c3", UID1)])
        .unwrap();
    assert_eq!(r.claims[UID1].error, "");
}

#[test]
fn the_daemons_api_option_overrides_the_config() {
    let node = Node::new();
    let config = data_config(&node);
    // --api device-plugin: the DRA resource is a device plugin here.
    let d = node.start(&config, &["--api", "device-plugin"]);
    assert!(
        wait_until(WAIT, || node.dir.sockets().len() == 2),
        "{:?}; log:\n{}",
        node.dir.sockets(),
        d.log()
    );
    assert!(!node.sockets().0.exists(), "no DRA registration");
    drop(d);
    // DRA without a node name is refused at start, saying what is missing.
    let cfg = node.dir.write_config(&config);
    let out = run(&["--config", cfg.to_str().unwrap(), "--api", "dra"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NODE_NAME") && err.contains("--node-name"),
        "{err}"
    );
    // check shows the API and what DRA publishes.
    let out = run(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--node-name",
        "node-a",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api:          DRA"), "{text}");
    assert!(
        text.contains("DRA pool:     node-a/example.com/data"),
        "{text}"
    );
    assert!(text.contains("publishes:    2 device(s) now"), "{text}");
    assert!(text.contains("api:          device plugin"), "{text}");
}

#[test]
fn a_resource_retired_by_a_reload_takes_its_slices_along() {
    let (node, d) = serving_data();
    let data = node.dir.host("data");
    node.dir.replace_config(&format!(
        "resources:\n- resourceName: example.com/classic\n  hostPath: {{path: {}, type: Directory}}\n",
        data.display()
    ));
    d.wait_log("reload applied: 0 added, 0 updated, 1 retired, 1 unchanged");
    assert!(
        wait_until(WAIT, || node.api.pool(POOL).is_empty()),
        "the retired pool's slices stay: {:?}",
        node.api.pool(POOL)
    );
    assert!(d
        .log()
        .contains("pool node-a/example.com/data is no longer served here"));
}

/// A resource that a reload adds to a running DRA daemon is published at
/// once, whether the config says `api: dra` or `--api dra` (the DRA
/// DaemonSet's flag) says it for every resource: the config's other
/// resource changes nothing that would wake the publisher (its health is
/// checked hourly), only the addition does.
#[test]
fn a_resource_added_by_a_reload_is_published() {
    for (api, flags) in [("  api: dra\n", &[][..]), ("", &["--api", "dra"][..])] {
        let node = Node::new();
        let data = node.dir.host("data");
        fs::create_dir_all(&data).unwrap();
        let first = format!(
            "resources:\n- resourceName: example.com/data\n{api}  numDevices: 2\n  \
             hostPath: {{path: {}, type: Directory}}\n  healthCheckInterval: 1h\n",
            data.display()
        );
        let d = node.start(&first, flags);
        node.register(&d);
        node.wait_devices(&d, POOL, &["0", "1"]);
        node.dir.replace_config(&format!(
            "{first}- resourceName: example.com/more\n{api}  numDevices: 3\n  \
             hostPath: {{path: {}, type: Directory}}\n  healthCheckInterval: 1h\n",
            data.display()
        ));
        d.wait_log("reload applied: 1 added, 0 updated, 0 retired, 1 unchanged");
        node.wait_devices(&d, "node-a/example.com/more", &["0", "1", "2"]);
        assert!(
            !node.dir.sockets().iter().any(|s| s.contains("more")),
            "{flags:?}: the added resource got a device-plugin socket: {:?}",
            node.dir.sockets()
        );
    }
}

/// Numbered container paths under DRA count across one claim (B20): two
/// matches of a pattern in one claim are `/dev/serial0` and `/dev/serial1`.
#[test]
fn numbered_container_paths_count_across_a_claim() {
    let node = Node::new();
    let root = node.dir.host("root");
    for (i, n) in ["ttyE0", "ttyE1"].iter().enumerate() {
        crate::devices::mknod(&root.join("dev").join(n), 1, 3 + i as u32);
    }
    let config = "resources:\n- resourceName: example.com/serial\n  api: dra\n  \
                  hostPath: {path: '/dev/ttyE*', type: CharDevice}\n  \
                  volumeMount: {mountPath: '/dev/serial{n}'}\n  healthCheckInterval: 1h\n";
    let d = node.start(config, &["--host-root", root.to_str().unwrap()]);
    node.register(&d);
    let pool = "node-a/example.com/serial";
    assert!(
        wait_until(WAIT, || node.api.devices(pool).len() == 2),
        "{:?}\n{}",
        node.api.devices(pool),
        d.log()
    );
    let names = node.api.devices(pool);
    node.api.add_claim(
        "default",
        "c1",
        UID1,
        DRIVER,
        &[("s", pool, &names[1]), ("s", pool, &names[0])],
    );
    let (_, dra) = node.sockets();
    let r = node
        .kubelet
        .prepare(&dra, &[("default", "c1", UID1)])
        .unwrap();
    assert_eq!(r.claims[UID1].error, "", "{:?}", r.claims[UID1]);
    let s = spec(&node, UID1).expect("the claim's CDI spec");
    let mut placed: Vec<(String, String)> = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dev| {
            let n = &dev["containerEdits"]["deviceNodes"][0];
            let host = n["hostPath"]
                .as_str()
                .unwrap_or(n["path"].as_str().unwrap());
            (n["path"].as_str().unwrap().to_string(), host.to_string())
        })
        .collect();
    placed.sort();
    assert_eq!(placed.len(), 2, "{s}");
    assert_eq!(placed[0].0, "/dev/serial0", "{s}");
    assert_eq!(placed[1].0, "/dev/serial1", "{s}");
    assert_ne!(placed[0].1, placed[1].1, "{s}");
}
