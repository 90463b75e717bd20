//! Serving, registration, ListAndWatch, Allocate and health (B1, B5–B8).

use std::fs;
use std::time::Duration;

use futures::StreamExt;
use grpcio::{CallOption, RpcStatusCode};
use k8s_hostpath_device_plugin::api::v1beta1::Empty;
use k8s_hostpath_device_plugin::sim::{Recorded, SimKubelet};
use k8s_hostpath_device_plugin::util::block_on_timeout;

use crate::harness::{client, dir_config, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

fn started(dir: &TestDir, config: &str) -> (SimKubelet, Daemon) {
    let kubelet = SimKubelet::start(&dir.dp()).unwrap();
    let daemon = Daemon::start(dir, config, &[]);
    (kubelet, daemon)
}

#[track_caller]
fn wait_devices(
    k: &SimKubelet,
    d: &Daemon,
    resource: &str,
    healthy: usize,
    total: usize,
) -> Recorded {
    k.wait_for(WAIT, |r| {
        (r.counts(resource) == Some((healthy, total))).then(|| r.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "{resource}: never saw {healthy}/{total} healthy; kubelet saw {:?}\nlog:\n{}",
            k.recorded().counts(resource),
            d.log()
        )
    })
}

fn status_code(e: &grpcio::Error) -> Option<RpcStatusCode> {
    match e {
        grpcio::Error::RpcFailure(s) => Some(s.code()),
        _ => None,
    }
}

#[test]
fn registration_fields() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let (k, d) = started(
        &dir,
        &dir_config(R, &dir.host("data"), "socketName: data.sock\n"),
    );
    let reg = k
        .wait_for(WAIT, |r| r.registrations.first().cloned())
        .unwrap_or_else(|| panic!("no registration:\n{}", d.log()));
    assert_eq!(reg.version, "v1beta1");
    assert_eq!(
        reg.endpoint, "data.sock",
        "endpoint is the socket's file name, relative to the directory"
    );
    assert_eq!(reg.resource_name, R);
    // The simulated kubelet records a registration only after it dialled the
    // endpoint back and GetDevicePluginOptions answered, as the kubelet does.
    let opts = &k.recorded().options[R];
    assert!(!opts.pre_start_required && !opts.get_preferred_allocation_available);
    assert!(k.recorded().rejected.is_empty());
    assert!(dir.dp().join("data.sock").exists());
}

#[test]
fn device_list_and_ids() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let (k, d) = started(&dir, &dir_config(R, &dir.host("data"), "numDevices: 5\n"));
    let rec = wait_devices(&k, &d, R, 5, 5);
    let ids: Vec<&str> = rec.devices[R].iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    // Default socket name: resourceName with / -> -, plus .sock
    assert_eq!(
        k.recorded().registrations[0].endpoint,
        "example.com-data.sock"
    );
}

#[test]
fn two_streams_both_get_list_and_updates() {
    let dir = TestDir::new();
    let path = dir.host("data");
    fs::create_dir_all(&path).unwrap();
    let (k, d) = started(&dir, &dir_config(R, &path, "numDevices: 3\n"));
    wait_devices(&k, &d, R, 3, 3);
    let c = client(&dir.dp().join("example.com-data.sock"));
    let mut s1 = c
        .list_and_watch(&Empty::new(), CallOption::default())
        .unwrap();
    let mut s2 = c
        .list_and_watch(&Empty::new(), CallOption::default())
        .unwrap();
    for s in [&mut s1, &mut s2] {
        let first = block_on_timeout(s.next(), WAIT)
            .expect("first list in time")
            .unwrap()
            .unwrap();
        assert_eq!(first.devices.len(), 3);
        assert!(first.devices.iter().all(|d| d.health == "Healthy"));
    }
    fs::remove_dir(&path).unwrap();
    for s in [&mut s1, &mut s2] {
        let next = block_on_timeout(s.next(), WAIT)
            .expect("update in time")
            .unwrap()
            .unwrap();
        assert!(
            next.devices.iter().all(|d| d.health == "Unhealthy"),
            "{next:?}"
        );
    }
    // The kubelet's own stream saw it too.
    wait_devices(&k, &d, R, 0, 3);
}

#[test]
fn health_flips_on_remove_and_restore() {
    let dir = TestDir::new();
    let path = dir.host("data");
    fs::create_dir_all(&path).unwrap();
    let (k, d) = started(&dir, &dir_config(R, &path, "numDevices: 2\n"));
    wait_devices(&k, &d, R, 2, 2);
    fs::remove_dir(&path).unwrap();
    wait_devices(&k, &d, R, 0, 2);
    fs::create_dir(&path).unwrap();
    wait_devices(&k, &d, R, 2, 2);
    // A regular file where a directory is expected is Unhealthy, with the reason logged.
    fs::remove_dir(&path).unwrap();
    fs::write(&path, b"not a dir").unwrap();
    wait_devices(&k, &d, R, 0, 2);
    d.wait_log("is a regular file, expected Directory");
    let log = d.log();
    assert_eq!(
        log.matches("Healthy -> Unhealthy").count(),
        2,
        "each transition logged once:\n{log}"
    );
    assert_eq!(log.matches("Unhealthy -> Healthy").count(), 1, "{log}");
}

#[test]
fn missing_path_registers_unhealthy() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, &dir_config(R, &dir.host("absent"), "numDevices: 4\n"));
    wait_devices(&k, &d, R, 0, 4);
    fs::create_dir_all(dir.host("absent")).unwrap();
    wait_devices(&k, &d, R, 4, 4);
}

#[test]
fn allocate_mount_envs_and_read_only() {
    let dir = TestDir::new();
    let path = dir.host("data");
    fs::create_dir_all(&path).unwrap();
    let config = format!(
        "resources:\n\
         - resourceName: example.com/rw\n  hostPath: {{path: {p}, type: Directory}}\n  volumeMount: {{mountPath: /in/ctr}}\n  envs: {{A: one, B: \"2\"}}\n\
         - resourceName: example.com/ro\n  hostPath: {{path: {p}}}\n  volumeMount: {{readOnly: true}}\n",
        p = path.display()
    );
    let (k, d) = started(&dir, &config);
    wait_devices(&k, &d, "example.com/rw", 100, 100);
    wait_devices(&k, &d, "example.com/ro", 100, 100);

    let resp = k.allocate("example.com/rw", &[&["0", "99"]]).unwrap();
    assert_eq!(resp.container_responses.len(), 1);
    let c = &resp.container_responses[0];
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].host_path, path.display().to_string());
    assert_eq!(c.mounts[0].container_path, "/in/ctr");
    assert!(!c.mounts[0].read_only);
    assert!(c.devices.is_empty());
    assert_eq!(c.envs.get("A").map(String::as_str), Some("one"));
    assert_eq!(c.envs.get("B").map(String::as_str), Some("2"));

    let resp = k.allocate("example.com/ro", &[&["3"], &["4"]]).unwrap();
    assert_eq!(
        resp.container_responses.len(),
        2,
        "one answer per container request"
    );
    for c in &resp.container_responses {
        assert!(c.mounts[0].read_only);
        assert_eq!(
            c.mounts[0].container_path,
            path.display().to_string(),
            "mountPath defaults to the host path"
        );
        // No envs configured: only the lists of what it got (B20).
        assert_eq!(c.envs.len(), 3, "{:?}", c.envs);
        assert_eq!(c.envs["EXAMPLE_COM_RO_PATHS"], path.display().to_string());
    }
    assert_eq!(resp.container_responses[1].envs["EXAMPLE_COM_RO_IDS"], "4");
}

#[test]
fn allocate_char_device() {
    let dir = TestDir::new();
    let config = "resources:\n\
        - resourceName: example.com/null\n  hostPath: {path: /dev/null, type: CharDevice}\n\
        - resourceName: example.com/null-ro\n  hostPath: {path: /dev/null, type: CharDevice}\n  volumeMount: {mountPath: /dev/ro-null, readOnly: true}\n\
        - resourceName: example.com/null-m\n  hostPath: {path: /dev/null, type: CharDevice}\n  permissions: rwm\n";
    let (k, d) = started(&dir, config);
    for name in [
        "example.com/null",
        "example.com/null-ro",
        "example.com/null-m",
    ] {
        wait_devices(&k, &d, name, 100, 100);
    }
    let c = &k
        .allocate("example.com/null", &[&["1"]])
        .unwrap()
        .container_responses[0];
    assert!(c.mounts.is_empty(), "devices are not bind-mounted");
    assert_eq!(c.devices.len(), 1);
    assert_eq!(c.devices[0].host_path, "/dev/null");
    assert_eq!(c.devices[0].container_path, "/dev/null");
    assert_eq!(c.devices[0].permissions, "rw");
    let c = &k
        .allocate("example.com/null-ro", &[&["1"]])
        .unwrap()
        .container_responses[0];
    assert_eq!(c.devices[0].container_path, "/dev/ro-null");
    assert_eq!(c.devices[0].permissions, "r");
    let c = &k
        .allocate("example.com/null-m", &[&["1"]])
        .unwrap()
        .container_responses[0];
    assert_eq!(c.devices[0].permissions, "rwm");
}

#[test]
fn allocate_unknown_ids_are_invalid_argument() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let (k, d) = started(&dir, &dir_config(R, &dir.host("data"), "numDevices: 10\n"));
    wait_devices(&k, &d, R, 10, 10);
    let cases: &[(&[&[&str]], &str)] = &[
        (&[&["10"]], "\"10\""),
        (&[&["0", "42", "x"]], "\"42\", \"x\""),
        (&[&["1"], &["01"]], "container request 1: \"01\""),
    ];
    for (containers, named) in cases {
        let e = k.allocate(R, containers).unwrap_err();
        assert_eq!(
            status_code(&e),
            Some(RpcStatusCode::INVALID_ARGUMENT),
            "{e}"
        );
        assert!(e.to_string().contains(named), "{e} should name {named}");
    }
    // The daemon keeps serving after bad requests.
    assert!(k.allocate(R, &[&["9"]]).is_ok());
}

#[test]
fn three_resources_in_one_daemon() {
    let dir = TestDir::new();
    for n in ["a", "b"] {
        fs::create_dir_all(dir.host(n)).unwrap();
    }
    let config = format!(
        "resources:\n\
         - {{resourceName: example.com/a, numDevices: 1, hostPath: {{path: {a}}}}}\n\
         - {{resourceName: example.com/b, numDevices: 2, hostPath: {{path: {b}, type: Directory}}}}\n\
         - {{resourceName: example.com/c, numDevices: 3, hostPath: {{path: {c}, type: File}}, healthCheckInterval: 100ms}}\n",
        a = dir.host("a").display(),
        b = dir.host("b").display(),
        c = dir.host("c").display()
    );
    let (k, d) = started(&dir, &config);
    wait_devices(&k, &d, "example.com/a", 1, 1);
    wait_devices(&k, &d, "example.com/b", 2, 2);
    wait_devices(&k, &d, "example.com/c", 0, 3);
    fs::write(dir.host("c"), b"").unwrap();
    wait_devices(&k, &d, "example.com/c", 3, 3);
    assert_eq!(k.recorded().registrations.len(), 3);
    assert_eq!(
        dir.sockets(),
        [
            "example.com-a.sock",
            "example.com-b.sock",
            "example.com-c.sock",
            "kubelet.sock"
        ]
    );
}

/// The original project's example config, unchanged, with the host's `/`
/// seen under --host-root: paths sent to the kubelet stay host paths.
#[test]
fn original_example_config_with_host_root() {
    let dir = TestDir::new();
    let host_root = dir.path.join("host");
    fs::create_dir_all(host_root.join("sample")).unwrap();
    let config = "resourceName: hostpath-device.k8s.io/sample\nsocketName: hostpath-device.k8s.io-sample.sock\nnumDevices: 100\n\
                  hostPath:\n  path: /sample\n  type: Directory\nvolumeMount:\n  mountPath: /sample\n  readOnly: false\n";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        &dir,
        config,
        &["--host-root", host_root.to_str().unwrap(), "--log-pretty"],
    );
    let name = "hostpath-device.k8s.io/sample";
    wait_devices(&k, &d, name, 100, 100);
    assert_eq!(
        k.recorded().registrations[0].endpoint,
        "hostpath-device.k8s.io-sample.sock"
    );
    let c = &k.allocate(name, &[&["0"]]).unwrap().container_responses[0];
    assert_eq!(c.mounts[0].host_path, "/sample");
    assert_eq!(c.mounts[0].container_path, "/sample");
    // (It keeps the original's 10 s health interval; flips are tested elsewhere.)
}

#[test]
fn or_create_paths_are_created_with_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let d_path = dir.host("made/deep/dir");
    let f_path = dir.host("file");
    let config = format!(
        "resources:\n\
         - {{resourceName: example.com/d, hostPath: {{path: {}, type: DirectoryOrCreate}}, healthCheckInterval: 100ms}}\n\
         - {{resourceName: example.com/f, hostPath: {{path: {}, type: FileOrCreate}}}}\n\
         - {{resourceName: example.com/g, hostPath: {{path: {}, type: FileOrCreate}}}}\n",
        d_path.display(),
        f_path.display(),
        dir.host("no-parent/file").display()
    );
    let (k, d) = started(&dir, &config);
    wait_devices(&k, &d, "example.com/d", 100, 100);
    wait_devices(&k, &d, "example.com/f", 100, 100);
    // FileOrCreate does not create parents, like the kubelet: Unhealthy.
    wait_devices(&k, &d, "example.com/g", 0, 100);
    assert_eq!(
        fs::metadata(&d_path).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::metadata(dir.host("made")).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::metadata(&f_path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert!(fs::metadata(&f_path).unwrap().is_file());
    // Removed later: created again at the next check.
    fs::remove_dir(&d_path).unwrap();
    assert!(
        crate::harness::wait_until(WAIT, || d_path.is_dir()),
        "{}",
        d.log()
    );
}

#[test]
fn plugin_sockets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let (k, d) = started(&dir, &dir_config(R, &dir.host("data"), ""));
    wait_devices(&k, &d, R, 100, 100);
    let mode = fs::metadata(dir.dp().join("example.com-data.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o077,
        0,
        "socket mode {mode:o} must not be group/world accessible"
    );
}

#[test]
fn preferred_allocation_and_pre_start_answer_validly() {
    use k8s_hostpath_device_plugin::api::v1beta1::{
        ContainerPreferredAllocationRequest, PreStartContainerRequest, PreferredAllocationRequest,
    };
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let (k, d) = started(&dir, &dir_config(R, &dir.host("data"), "numDevices: 8\n"));
    wait_devices(&k, &d, R, 8, 8);
    let c = client(&dir.dp().join("example.com-data.sock"));
    let mut req = PreferredAllocationRequest::new();
    let mut creq = ContainerPreferredAllocationRequest::new();
    creq.available_deviceIDs = ["5", "2", "7", "3"].map(String::from).to_vec();
    creq.must_include_deviceIDs = vec!["7".into()];
    creq.allocation_size = 2;
    req.container_requests.push(creq);
    let opt = || CallOption::default().timeout(Duration::from_secs(5));
    let resp = c.get_preferred_allocation(&req, opt()).unwrap();
    assert_eq!(resp.container_responses[0].deviceIDs, ["7", "2"]);
    c.pre_start_container(&PreStartContainerRequest::new(), opt())
        .unwrap();
}
