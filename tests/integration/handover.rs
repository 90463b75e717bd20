//! A node handed from one API to the other (B19): devices that running pods
//! hold through the API the node leaves, as the kubelet's pod-resources API
//! (our stand-in, on a real socket) says, are not offered through the new
//! one until released; and a pod-resources socket that never answers
//! delays nothing for long.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use k8s_hostpath_device_plugin::sim::podres::{FakePodResources, Holder};
use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::dra::{data_config, Node, POOL};
use crate::harness::{Daemon, TestDir, WAIT};

fn holder(pod: &str, devices: Vec<(&str, Vec<&str>)>, dra: Vec<(&str, &str, &str)>) -> Holder {
    Holder {
        pod: pod.into(),
        devices: devices
            .into_iter()
            .map(|(r, ids)| (r.into(), ids.into_iter().map(String::from).collect()))
            .collect(),
        dra: dra
            .into_iter()
            .map(|(d, p, n)| (d.into(), p.into(), n.into()))
            .collect(),
    }
}

#[test]
fn dra_leaves_out_what_device_plugin_pods_hold_until_they_end() {
    let node = Node::new();
    let podres = FakePodResources::start(&node.dir.pod_resources()).unwrap();
    // Two pods hold device 1 of example.com/data through the device plugin
    // (and one an unrelated resource's device 0).
    podres.set(vec![
        holder("old-a", vec![("example.com/data", vec!["1"])], vec![]),
        holder("other", vec![("example.com/else", vec!["0"])], vec![]),
    ]);
    let d = node.start(&data_config(&node), &[]);
    node.register(&d);
    node.wait_devices(&d, POOL, &["0"]);
    let gens: Vec<_> = node
        .api
        .pool(POOL)
        .iter()
        .map(|s| s["spec"]["pool"]["generation"].as_i64().unwrap())
        .collect();
    assert_eq!(
        gens,
        [1],
        "device 1 was never published: the first generation already left it out"
    );
    assert!(
        d.log().contains(
            "example.com/data: 1 device(s) held by running pods through the device-plugin API"
        ),
        "{}",
        d.log()
    );
    // A claim allocated device 1 anyway (from a stale slice): refused for
    // that claim, with the reason.
    const UID: &str = "33333333-2222-3333-4444-555555555555";
    node.api.add_claim(
        "default",
        "stale",
        UID,
        "hostpath-device.k8s.io",
        &[("data", POOL, "1")],
    );
    let (_, dra) = node.sockets();
    let r = node
        .kubelet
        .prepare(&dra, &[("default", "stale", UID)])
        .unwrap();
    assert!(
        r.claims[UID]
            .error
            .contains("is not offered on this node now"),
        "{:?}",
        r.claims[UID]
    );
    // The pod ends: device 1 is offered again within a poll or two.
    podres.set(vec![holder(
        "other",
        vec![("example.com/else", vec!["0"])],
        vec![],
    )]);
    node.wait_devices(&d, POOL, &["0", "1"]);
    assert!(
        d.log().contains(
            "example.com/data: the devices held through the device-plugin API are released"
        ),
        "{}",
        d.log()
    );
}

#[test]
fn the_device_plugin_never_gives_what_dra_claims_hold_until_they_end() {
    let dir = TestDir::new();
    let podres = FakePodResources::start(&dir.pod_resources()).unwrap();
    let data = dir.host("data");
    std::fs::create_dir_all(&data).unwrap();
    // A DRA claim holds device 2 of this node's pool; another driver's
    // device of the same name is not ours.
    podres.set(vec![holder(
        "dra-pod",
        vec![],
        vec![
            ("hostpath-device.k8s.io", "node-a/example.com/data", "2"),
            ("other.example.com", "node-a/example.com/data", "0"),
        ],
    )]);
    let kubelet = SimKubelet::start(&dir.dp()).unwrap();
    let config = format!(
        "resources:\n- resourceName: example.com/data\n  numDevices: 3\n  hostPath: {{path: {}, type: Directory}}\n",
        data.display()
    );
    let d = Daemon::start(&dir, &config, &["--node-name", "node-a"]);
    assert_never_gives(&kubelet, &d, "example.com/data", "2");
    podres.set(vec![]);
    assert!(
        crate::harness::wait_until(WAIT, || kubelet
            .allocate("example.com/data", &[&["2"]])
            .is_ok()),
        "device 2 given again once the claim's pod ended; log:\n{}",
        d.log()
    );
    assert!(podres.calls() >= 2);
}

/// `resource`'s device `held` (held through DRA) is listed with the others
/// (the scheduler counts the pod that holds it), never preferred, and
/// refused by Allocate, from the first list on.
#[track_caller]
fn assert_never_gives(kubelet: &SimKubelet, d: &Daemon, resource: &str, held: &str) {
    let lists = kubelet.wait_for(WAIT, |r| {
        let n = r.devices.get(resource)?.len();
        (n == 3).then(|| r.lists[resource])
    });
    assert!(lists.is_some(), "all three listed; log:\n{}", d.log());
    assert!(
        kubelet.recorded().options[resource].get_preferred_allocation_available,
        "GetPreferredAllocation advertised while a device is held through DRA"
    );
    let chosen = kubelet.preferred(resource, &["0", "1", "2"], 2).unwrap();
    assert_eq!(chosen, ["0", "1"], "log:\n{}", d.log());
    let chosen = kubelet.preferred(resource, &["1", "2"], 2).unwrap();
    assert_eq!(chosen, ["1"], "never the held one, even when short");
    let e = kubelet.allocate(resource, &[&[held]]).unwrap_err();
    assert!(
        e.to_string().contains("held by running pods through DRA"),
        "{e}"
    );
    assert!(kubelet.allocate(resource, &[&["0"]]).is_ok());
}

#[test]
fn a_claim_pod_resources_does_not_list_is_held_by_its_cdi_spec() {
    // A pod that asked `limits:` got its claim through DRA (KEP-5004): the
    // kubelet's pod-resources API does not list it, but its CDI spec on
    // the node says which device it holds, by DRA name and host path.
    const UID: &str = "77777777-2222-3333-4444-555555555555";
    let dir = TestDir::new();
    let podres = FakePodResources::start(&dir.pod_resources()).unwrap();
    podres.set(vec![]);
    let (data, other) = (dir.host("data"), dir.host("other"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let cdi = dir.path.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    let spec = cdi.join(format!("hostpath-device.k8s.io-device_{UID}.json"));
    let mount = |path: &std::path::Path| {
        format!(
            r#"{{"hostPath": "{}", "containerPath": "/d", "options": ["rbind"]}}"#,
            path.display()
        )
    };
    std::fs::write(
        &spec,
        format!(
            r#"{{"cdiVersion": "0.5.0", "kind": "hostpath-device.k8s.io/device", "devices": [
                {{"name": "{UID}-2", "containerEdits": {{"mounts": [{}]}}}}]}}"#,
            mount(&data)
        ),
    )
    .unwrap();
    let kubelet = SimKubelet::start(&dir.dp()).unwrap();
    // Two resources with the same device names: only the one whose path
    // the spec hands out has its device held.
    let config = format!(
        "resources:\n- resourceName: example.com/data\n  numDevices: 3\n  hostPath: {{path: {}, type: Directory}}\n\
         - resourceName: example.com/other\n  numDevices: 3\n  hostPath: {{path: {}, type: Directory}}\n",
        data.display(),
        other.display()
    );
    let d = Daemon::start(&dir, &config, &["--node-name", "node-a"]);
    assert_never_gives(&kubelet, &d, "example.com/data", "2");
    assert_eq!(
        kubelet
            .preferred("example.com/other", &["0", "1", "2"], 3)
            .unwrap(),
        ["0", "1", "2"],
        "example.com/other's device 2 is not the claim's"
    );
    // The claim is unprepared (its spec goes): device 2 is given again.
    std::fs::remove_file(&spec).unwrap();
    assert!(
        crate::harness::wait_until(WAIT, || kubelet
            .allocate("example.com/data", &[&["2"]])
            .is_ok()),
        "device 2 given again once the claim's spec is gone; log:\n{}",
        d.log()
    );
}

#[test]
fn devices_that_come_and_go_held_through_dra_are_never_given_either() {
    // A pattern's devices are not known before its first scan, so which
    // are held is known a poll later; GetPreferredAllocation is advertised
    // from the start all the same (the kubelet reads the options once).
    use crate::devices::{mknod, root, serial_config, SERIAL};
    use k8s_hostpath_device_plugin::dra::names::device_name;
    const UID: &str = "88888888-2222-3333-4444-555555555555";
    let dir = TestDir::new();
    let podres = FakePodResources::start(&dir.pod_resources()).unwrap();
    podres.set(vec![]);
    let (r, args) = root(&dir);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    mknod(&r.join("dev/ttyUSB1"), 188, 1);
    let cdi = dir.path.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(
        cdi.join(format!("hostpath-device.k8s.io-device_{UID}.json")),
        format!(
            r#"{{"cdiVersion": "0.5.0", "kind": "hostpath-device.k8s.io/device", "devices": [
                {{"name": "{UID}-{}", "containerEdits": {{"deviceNodes": [
                    {{"path": "/dev/ttyUSB1", "permissions": "rw"}}]}}}}]}}"#,
            device_name("/dev/ttyUSB1")
        ),
    )
    .unwrap();
    let kubelet = SimKubelet::start(&dir.dp()).unwrap();
    let mut all = vec!["--node-name", "node-a"];
    all.extend(args.iter().map(String::as_str));
    let d = Daemon::start(&dir, &serial_config(""), &all);
    let listed = kubelet.wait_for(WAIT, |r| (r.devices.get(SERIAL)?.len() == 2).then_some(()));
    assert!(listed.is_some(), "both listed; log:\n{}", d.log());
    assert!(
        kubelet.recorded().options[SERIAL].get_preferred_allocation_available,
        "advertised from the first connection"
    );
    assert!(
        crate::harness::wait_until(WAIT, || kubelet
            .preferred(SERIAL, &["/dev/ttyUSB0", "/dev/ttyUSB1"], 2)
            .is_ok_and(|c| c == ["/dev/ttyUSB0"])),
        "the held one never preferred; log:\n{}",
        d.log()
    );
    let e = kubelet.allocate(SERIAL, &[&["/dev/ttyUSB1"]]).unwrap_err();
    assert!(
        e.to_string().contains("held by running pods through DRA"),
        "{e}"
    );
}

#[test]
fn a_pod_resources_socket_that_never_answers_delays_nothing_for_long() {
    let dir = TestDir::new();
    // Bound and listening, never accepting: a kubelet that hangs.
    let _mute = UnixListener::bind(dir.pod_resources()).unwrap();
    let kubelet = SimKubelet::start(&dir.dp()).unwrap();
    let data = dir.host("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = format!(
        "resources:\n- resourceName: example.com/data\n  numDevices: 2\n  hostPath: {{path: {}, type: Directory}}\n",
        data.display()
    );
    let d = Daemon::start(&dir, &config, &[]);
    let listed = kubelet.wait_for(WAIT, |r| {
        (r.devices.get("example.com/data").map(Vec::len) == Some(2)).then_some(())
    });
    assert!(listed.is_some(), "log:\n{}", d.log());
    assert!(
        d.log().contains("pod-resources:"),
        "the silent socket is said once; log:\n{}",
        d.log()
    );
}

#[test]
fn a_rolling_update_serves_two_instances_side_by_side_and_sweeps_dead_ones() {
    const OLD: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const NEW: &str = "0a1b2c3d-0000-4000-8000-000000000002";
    const LAST: &str = "0a1b2c3d-0000-4000-8000-000000000003";
    let node = Node::new();
    let config = data_config(&node);
    let (registry, plugins) = (
        node.dir.path.join("registry"),
        node.dir.path.join("plugins"),
    );
    let instance =
        |uid: &str| node.start_env(&config, &[], &[("POD_UID", uid)], &format!("{uid}.log"));
    let sockets = |uid: &str| {
        (
            registry.join(format!("hostpath-device.k8s.io-{uid}-reg.sock")),
            plugins.join(format!("hostpath-device.k8s.io/dra-{uid}.sock")),
        )
    };
    let registered = |d: &Daemon, uid: &str| {
        let (reg, dra) = sockets(uid);
        assert!(
            crate::harness::wait_until(WAIT, || reg.exists() && dra.exists()),
            "{uid}: sockets; log:\n{}",
            d.log()
        );
        let info = node.kubelet.register(&reg).expect("registration");
        assert_eq!(info.endpoint, dra.to_str().unwrap());
    };
    let mut old = instance(OLD);
    registered(&old, OLD);
    node.wait_devices(&old, POOL, &["0", "1"]);
    // The new pod starts beside the old one: both serve, neither touches
    // the other's sockets, and a claim prepares through the new endpoint.
    let new = instance(NEW);
    registered(&new, NEW);
    assert!(sockets(OLD).0.exists() && sockets(OLD).1.exists());
    const UID: &str = "44444444-2222-3333-4444-555555555555";
    node.api.add_claim(
        "default",
        "c",
        UID,
        "hostpath-device.k8s.io",
        &[("data", POOL, "0")],
    );
    let r = node
        .kubelet
        .prepare(&sockets(NEW).1, &[("default", "c", UID)])
        .unwrap();
    assert_eq!(r.claims[UID].error, "", "{:?}", r.claims[UID]);
    // The old pod is killed outright: its sockets stay, dead. The next
    // instance removes them, and leaves the live ones of NEW alone.
    old.signal(libc::SIGKILL);
    old.wait_exit(WAIT);
    assert!(sockets(OLD).0.exists(), "a SIGKILL leaves the sockets");
    let last = instance(LAST);
    registered(&last, LAST);
    assert!(
        crate::harness::wait_until(WAIT, || !sockets(OLD).0.exists()
            && !sockets(OLD).1.exists()),
        "the dead sockets of {OLD} swept; log:\n{}",
        last.log()
    );
    assert!(
        sockets(NEW).0.exists() && sockets(NEW).1.exists(),
        "live ones kept"
    );
    assert!(
        last.log().contains("left dead by an earlier instance"),
        "{}",
        last.log()
    );
    node.wait_devices(&last, POOL, &["0", "1"]);
    // NEW stops (the rolling update's end): its registration goes first;
    // calls the kubelet routed to it meanwhile are still answered.
    let mut new = new;
    new.signal(libc::SIGTERM);
    assert!(
        crate::harness::wait_until(WAIT, || !sockets(NEW).0.exists()),
        "registration withdrawn; log:\n{}",
        new.log()
    );
    assert!(
        sockets(NEW).1.exists(),
        "the service socket outlives the registration"
    );
    let r = node
        .kubelet
        .prepare(&sockets(NEW).1, &[("default", "c", UID)])
        .unwrap();
    assert_eq!(r.claims[UID].error, "", "{:?}", r.claims[UID]);
    assert!(new.wait_exit(WAIT).success());
    assert!(!sockets(NEW).1.exists(), "and goes at exit");
    assert!(
        !node.api.pool(POOL).is_empty() && !new.log().contains("withdrawn\n"),
        "another instance ({LAST}) serves the node: the slices stay; log:\n{}",
        new.log()
    );
}

/// The sockets of the instance `uid` on `node`: registration, service.
fn instance_sockets(node: &Node, uid: &str) -> (PathBuf, PathBuf) {
    (
        node.dir
            .path
            .join(format!("registry/hostpath-device.k8s.io-{uid}-reg.sock")),
        node.dir
            .path
            .join(format!("plugins/hostpath-device.k8s.io/dra-{uid}.sock")),
    )
}

#[test]
fn a_node_moved_back_to_the_device_plugin_unprepares_its_claims_then_lets_go() {
    const DRA_POD: &str = "0a1b2c3d-0000-4000-8000-00000000000a";
    const DP_POD: &str = "0a1b2c3d-0000-4000-8000-00000000000b";
    const HELD: &str = "55555555-2222-3333-4444-555555555555";
    const NEW: &str = "66666666-2222-3333-4444-555555555555";
    let node = Node::new();
    let config = data_config(&node);
    let mut dra = node.start_env(&config, &[], &[("POD_UID", DRA_POD)], "dra.log");
    let (reg, svc) = instance_sockets(&node, DRA_POD);
    assert!(
        crate::harness::wait_until(WAIT, || reg.exists() && svc.exists()),
        "{}",
        dra.log()
    );
    node.kubelet.register(&reg).expect("registration");
    node.wait_devices(&dra, POOL, &["0", "1"]);
    node.api.add_claim(
        "default",
        "held",
        HELD,
        "hostpath-device.k8s.io",
        &[("data", POOL, "0")],
    );
    let r = node
        .kubelet
        .prepare(&svc, &[("default", "held", HELD)])
        .unwrap();
    assert_eq!(r.claims[HELD].error, "", "{:?}", r.claims[HELD]);
    // The node is moved to the device plugin: its daemon starts while the
    // DRA one still serves (two DaemonSets, each on its own), and waits.
    let mut dp = node.start_env(
        &config,
        &["--api", "device-plugin"],
        &[("POD_UID", DP_POD)],
        "dp.log",
    );
    let (dp_reg, dp_svc) = instance_sockets(&node, DP_POD);
    assert!(
        crate::harness::wait_until(WAIT, || dp
            .log()
            .contains("another instance of hostpath-device.k8s.io serves them")),
        "{}",
        dp.log()
    );
    assert!(
        !dp_reg.exists(),
        "no second driver while the DRA one serves"
    );
    // The DRA daemon goes, the last instance: it withdraws its slices
    // rather than leave them to a driver that prepares nothing.
    dra.signal(libc::SIGTERM);
    assert!(dra.wait_exit(WAIT).success());
    assert!(
        node.api.pool(POOL).is_empty(),
        "slices withdrawn; log:\n{}",
        dra.log()
    );
    // The device-plugin daemon serves the driver for the held claim.
    assert!(
        crate::harness::wait_until(WAIT, || dp_reg.exists() && dp_svc.exists()),
        "{}",
        dp.log()
    );
    let info = node.kubelet.register(&dp_reg).expect("registration");
    assert_eq!(info.endpoint, dp_svc.to_str().unwrap());
    node.api.add_claim(
        "default",
        "new",
        NEW,
        "hostpath-device.k8s.io",
        &[("data", POOL, "1")],
    );
    let r = node
        .kubelet
        .prepare(&dp_svc, &[("default", "new", NEW)])
        .unwrap();
    assert!(
        r.claims[NEW]
            .error
            .contains("through the device-plugin API now"),
        "a new claim is refused, with the reason: {:?}",
        r.claims[NEW]
    );
    assert!(node.api.pool(POOL).is_empty(), "and nothing published");
    // The pod ends: the kubelet unprepares its claim; the driver's sockets
    // then go, and the daemon serves on through the device plugin.
    let r = node
        .kubelet
        .unprepare(&dp_svc, &[("default", "held", HELD)])
        .unwrap();
    assert_eq!(r.claims[HELD].error, "", "{:?}", r.claims[HELD]);
    assert!(
        crate::harness::wait_until(WAIT, || !dp_reg.exists() && !dp_svc.exists()),
        "{}",
        dp.log()
    );
    assert!(dp
        .log()
        .contains("is unprepared: removing the unprepare-only driver's sockets"));
    let specs = std::fs::read_dir(node.dir.path.join("cdi")).map_or(0, Iterator::count);
    assert_eq!(specs, 0, "no CDI spec left");
    dp.signal(libc::SIGTERM);
    assert!(dp.wait_exit(WAIT).success(), "{}", dp.log());
}
