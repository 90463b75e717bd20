//! Devices that come and go (B15, issue 11): patterns, USB ids and groups
//! under a temporary `--host-root`, with device nodes made by `mknod`, fake
//! sysfs attributes for USB, and the simulated kubelet watching the lists.
//! Every resource here has a one-hour rescan interval: whatever shows up
//! quickly came from inotify.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use grpcio::RpcStatusCode;
use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{run, Daemon, TestDir, WAIT};

/// Makes a character device node (tests run as root on these machines).
pub(crate) fn mknod(p: &Path, major: u32, minor: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; the result is checked.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// The host root of a test and the daemon arguments that point at it.
pub(crate) fn root(dir: &TestDir) -> (PathBuf, Vec<String>) {
    let r = dir.host("root");
    fs::create_dir_all(r.join("dev")).unwrap();
    let args = vec!["--host-root".to_string(), r.display().to_string()];
    (r, args)
}

pub(crate) fn start(dir: &TestDir, config: &str, args: &[String]) -> Daemon {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(dir, config, &a)
}

/// Waits until the kubelet's list of `name` is exactly `want` (ID, health).
#[track_caller]
pub(crate) fn wait_list(k: &SimKubelet, d: &Daemon, name: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let ok = k.wait_for(WAIT, |r| {
        let mut got = r.devices.get(name)?.clone();
        got.sort();
        (got == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{name}: never listed {want:?}; saw {:?}\n{}",
        k.recorded().devices.get(name),
        d.log()
    );
}

pub(crate) const SERIAL: &str = "example.com/serial";

pub(crate) fn serial_config(extra: &str) -> String {
    format!(
        "resources:\n- resourceName: {SERIAL}\n  hostPath: {{path: '/dev/ttyUSB*', type: CharDevice}}\n  healthCheckInterval: 1h\n{extra}"
    )
}

#[test]
fn plugged_unplugged_and_replugged_with_the_same_id() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, &serial_config("  removeAfter: 1h\n"), &args);
    wait_list(&k, &d, SERIAL, &[]);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    wait_list(&k, &d, SERIAL, &[("/dev/ttyUSB0", "Healthy")]);
    mknod(&r.join("dev/ttyUSB1"), 188, 1);
    fs::write(r.join("dev/ttyUSB9"), b"not a device").unwrap();
    wait_list(
        &k,
        &d,
        SERIAL,
        &[("/dev/ttyUSB0", "Healthy"), ("/dev/ttyUSB1", "Healthy")],
    );

    let resp = k.allocate(SERIAL, &[&["/dev/ttyUSB1"]]).unwrap();
    let c = &resp.container_responses[0];
    assert_eq!(c.devices.len(), 1);
    assert_eq!(c.devices[0].host_path, "/dev/ttyUSB1");
    assert_eq!(c.devices[0].container_path, "/dev/ttyUSB1");
    assert_eq!(c.devices[0].permissions, "rw");
    assert!(c.mounts.is_empty());

    fs::remove_file(r.join("dev/ttyUSB0")).unwrap();
    wait_list(
        &k,
        &d,
        SERIAL,
        &[("/dev/ttyUSB0", "Unhealthy"), ("/dev/ttyUSB1", "Healthy")],
    );
    d.wait_log("vanished: /dev/ttyUSB0");
    let err = k.allocate(SERIAL, &[&["/dev/ttyUSB0"]]).unwrap_err();
    match err {
        grpcio::Error::RpcFailure(s) => {
            assert_eq!(s.code(), RpcStatusCode::INVALID_ARGUMENT);
            assert!(
                s.message().contains("\"/dev/ttyUSB0\" (vanished)"),
                "{}",
                s.message()
            );
        }
        e => panic!("{e}"),
    }
    let err = k.allocate(SERIAL, &[&["/dev/ttyUSB7"]]).unwrap_err();
    assert!(err.to_string().contains("(unknown)"), "{err}");

    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    wait_list(
        &k,
        &d,
        SERIAL,
        &[("/dev/ttyUSB0", "Healthy"), ("/dev/ttyUSB1", "Healthy")],
    );
    d.wait_log("back: /dev/ttyUSB0");
    assert_eq!(k.recorded().registrations_of(SERIAL), 1);
    assert_eq!(k.recorded().streams_ended.get(SERIAL), None);
}

#[test]
fn remove_after_zero_drops_at_once_and_a_timer_drops_later() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    mknod(&r.join("dev/ttyACM0"), 166, 0);
    let config = format!(
        "{}  removeAfter: 0s\n- resourceName: example.com/acm\n  hostPath: {{path: '/dev/ttyACM*'}}\n  healthCheckInterval: 1h\n  removeAfter: 300ms\n",
        serial_config("")
    );
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, &config, &args);
    wait_list(&k, &d, SERIAL, &[("/dev/ttyUSB0", "Healthy")]);
    wait_list(&k, &d, "example.com/acm", &[("/dev/ttyACM0", "Healthy")]);
    fs::remove_file(r.join("dev/ttyUSB0")).unwrap();
    fs::remove_file(r.join("dev/ttyACM0")).unwrap();
    wait_list(&k, &d, SERIAL, &[]);
    wait_list(&k, &d, "example.com/acm", &[("/dev/ttyACM0", "Unhealthy")]);
    // No event comes for the timer: the monitor wakes for the removal.
    wait_list(&k, &d, "example.com/acm", &[]);
    d.wait_log("removed: /dev/ttyACM0");
}

/// Fake sysfs for one USB device.
pub(crate) fn usb_sysfs(r: &Path, port: &str, attrs: &[(&str, &str)]) {
    let d = r.join("sys/bus/usb/devices").join(port);
    fs::create_dir_all(&d).unwrap();
    for (k, v) in attrs {
        fs::write(d.join(k), format!("{v}\n")).unwrap();
    }
}

#[test]
fn usb_devices_by_vendor_and_product_come_and_go_with_their_nodes() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    usb_sysfs(
        &r,
        "usb1",
        &[
            ("idVendor", "1d6b"),
            ("idProduct", "0002"),
            ("busnum", "1"),
            ("devnum", "1"),
        ],
    );
    mknod(&r.join("dev/bus/usb/001/001"), 189, 0);
    usb_sysfs(&r, "1-1:1.0", &[("bInterfaceNumber", "00")]);
    let config = "resources:\n- resourceName: example.com/coral\n  usb: [{vendor: '1a6e', product: '089a'}, {vendor: '18d1', product: '9302'}]\n  healthCheckInterval: 1h\n  removeAfter: 0s\n";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    wait_list(&k, &d, "example.com/coral", &[]);
    // Plugged: sysfs first (no event), then the node (an event).
    usb_sysfs(
        &r,
        "1-1",
        &[
            ("idVendor", "1a6e"),
            ("idProduct", "089a"),
            ("busnum", "1"),
            ("devnum", "4"),
        ],
    );
    mknod(&r.join("dev/bus/usb/001/004"), 189, 3);
    wait_list(
        &k,
        &d,
        "example.com/coral",
        &[("usb:1a6e:089a@1-1", "Healthy")],
    );
    let resp = k
        .allocate("example.com/coral", &[&["usb:1a6e:089a@1-1"]])
        .unwrap();
    let spec = &resp.container_responses[0].devices[0];
    assert_eq!(spec.host_path, "/dev/bus/usb/001/004");
    assert_eq!(spec.container_path, "/dev/bus/usb/001/004");
    assert_eq!(spec.permissions, "rw");
    // Once initialised the Coral re-enumerates as 18d1:9302 with a serial,
    // on a new bus address and a new bus directory.
    fs::remove_file(r.join("dev/bus/usb/001/004")).unwrap();
    fs::remove_dir_all(r.join("sys/bus/usb/devices/1-1")).unwrap();
    wait_list(&k, &d, "example.com/coral", &[]);
    usb_sysfs(
        &r,
        "2-1",
        &[
            ("idVendor", "18d1"),
            ("idProduct", "9302"),
            ("serial", "C0RAL1"),
            ("busnum", "2"),
            ("devnum", "10"),
        ],
    );
    mknod(&r.join("dev/bus/usb/002/010"), 189, 137);
    wait_list(
        &k,
        &d,
        "example.com/coral",
        &[("usb:18d1:9302:C0RAL1", "Healthy")],
    );
    let resp = k
        .allocate("example.com/coral", &[&["usb:18d1:9302:C0RAL1"]])
        .unwrap();
    assert_eq!(
        resp.container_responses[0].devices[0].host_path,
        "/dev/bus/usb/002/010"
    );
}

/// Two sound cards' capture (pcm) and control nodes.
pub(crate) fn sound_cards(r: &Path) {
    for (i, n) in ["pcmC0D0c", "controlC0", "pcmC1D0c", "controlC1"]
        .iter()
        .enumerate()
    {
        mknod(&r.join("dev/snd").join(n), 116, i as u32);
    }
}

#[test]
fn a_group_hands_out_its_members_together() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    sound_cards(&r);
    let config = "resources:\n- resourceName: example.com/capture\n  group:\n  - hostPath: {path: '/dev/snd/pcmC[0-9]D0c', type: CharDevice}\n  - hostPath: {path: '/dev/snd/controlC[0-9]', type: CharDevice}\n    permissions: r\n  healthCheckInterval: 1h\n";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    let a = "/dev/snd/pcmC0D0c,/dev/snd/controlC0";
    let b = "/dev/snd/pcmC1D0c,/dev/snd/controlC1";
    wait_list(
        &k,
        &d,
        "example.com/capture",
        &[(a, "Healthy"), (b, "Healthy")],
    );
    let resp = k.allocate("example.com/capture", &[&[b]]).unwrap();
    let devs: Vec<(String, String)> = resp.container_responses[0]
        .devices
        .iter()
        .map(|s| (s.host_path.clone(), s.permissions.clone()))
        .collect();
    assert_eq!(
        devs,
        [
            ("/dev/snd/pcmC1D0c".to_string(), "rw".to_string()),
            ("/dev/snd/controlC1".to_string(), "r".to_string())
        ]
    );
    // One member gone: the device is gone (Unhealthy), the other stays.
    fs::remove_file(r.join("dev/snd/controlC1")).unwrap();
    wait_list(
        &k,
        &d,
        "example.com/capture",
        &[(a, "Healthy"), (b, "Unhealthy")],
    );
}

#[test]
fn a_reload_changes_the_pattern_in_place_and_a_restart_keeps_the_ids() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    mknod(&r.join("dev/ttyACM0"), 166, 0);
    fs::create_dir_all(r.join("dev/serial/by-id")).unwrap();
    let by_id = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0";
    std::os::unix::fs::symlink("../../ttyUSB0", r.join(&by_id[1..])).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let mut d = start(&dir, &serial_config("  removeAfter: 0s\n"), &args);
    wait_list(&k, &d, SERIAL, &[("/dev/ttyUSB0", "Healthy")]);
    dir.replace_config(&format!(
        "resources:\n- resourceName: {SERIAL}\n  group:\n  - hostPath: {{path: '/dev/tty[AU][CS][MB]*', type: CharDevice}}\n  healthCheckInterval: 1h\n  removeAfter: 0s\n"
    ));
    wait_list(
        &k,
        &d,
        SERIAL,
        &[("/dev/ttyACM0", "Healthy"), ("/dev/ttyUSB0", "Healthy")],
    );
    dir.replace_config(
        &serial_config("  removeAfter: 0s\n").replace("/dev/ttyUSB*", "/dev/serial/by-id/*"),
    );
    wait_list(&k, &d, SERIAL, &[(by_id, "Healthy")]);
    assert_eq!(k.recorded().registrations_of(SERIAL), 1, "updated in place");
    assert_eq!(
        k.recorded().streams_ended.get(SERIAL),
        None,
        "the stream was not cut"
    );
    let resp = k.allocate(SERIAL, &[&[by_id]]).unwrap();
    assert_eq!(resp.container_responses[0].devices[0].host_path, by_id);
    assert_eq!(resp.container_responses[0].devices[0].container_path, by_id);

    // The target goes: the link dangles, the device vanishes.
    fs::remove_file(r.join("dev/ttyUSB0")).unwrap();
    wait_list(&k, &d, SERIAL, &[]);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    wait_list(&k, &d, SERIAL, &[(by_id, "Healthy")]);

    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success());
    let before = k.recorded().registrations_of(SERIAL);
    let d = start(
        &dir,
        &fs::read_to_string(dir.path.join("config.yaml")).unwrap(),
        &args,
    );
    assert!(k
        .wait_for(WAIT, |rec| (rec.registrations_of(SERIAL) > before)
            .then_some(()))
        .is_some());
    wait_list(&k, &d, SERIAL, &[(by_id, "Healthy")]);
}

#[test]
fn generic_device_plugin_configs_serve_unchanged() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    mknod(&r.join("dev/ttyACM3"), 166, 3);
    mknod(&r.join("dev/fuse"), 10, 229);
    let config = r#"
log-level: info
devices:
  - name: serial
    groups:
      - paths:
          - path: /dev/ttyUSB*
      - paths:
          - path: /dev/ttyACM*
  - name: fuse
    groups:
      - count: 10
        paths:
          - path: /dev/fuse
"#;
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    wait_list(
        &k,
        &d,
        "devic.es/serial",
        &[("/dev/ttyACM3", "Healthy"), ("/dev/ttyUSB0", "Healthy")],
    );
    let fuse: Vec<String> = (0..10).map(|i| format!("/dev/fuse#{i}")).collect();
    let want: Vec<(&str, &str)> = fuse.iter().map(|s| (s.as_str(), "Healthy")).collect();
    wait_list(&k, &d, "devic.es/fuse", &want);
    let resp = k.allocate("devic.es/serial", &[&["/dev/ttyACM3"]]).unwrap();
    assert_eq!(resp.container_responses[0].devices[0].permissions, "rwm");
    d.wait_log("log-level: is ignored");

    // `check` prints what the file resolves to, and the matches found now.
    let cfg = dir.path.join("config.yaml");
    let out = run(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        r.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("devic.es/serial"), "{text}");
    assert!(text.contains("/dev/ttyACM*"), "{text}");
    assert!(text.contains("found now:    2"), "{text}");
    assert!(text.contains("/dev/ttyACM3"), "{text}");
    assert!(
        text.contains("found now:    1\n    /dev/fuse (×10 slots)"),
        "{text}"
    );
}

#[test]
fn a_list_over_4_mib_sends_what_fits_by_id_and_says_so_once() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    mknod(&r.join("dev/fuse"), 10, 229);
    // Three matches of the most slots a device may have (53,773): IDs
    // `/dev/a_longer_name_x#N` make over 4 MiB.
    for x in ["a", "b", "c"] {
        mknod(&r.join(format!("dev/a_longer_name_{x}")), 10, 229);
    }
    let config = "resources:\n- resourceName: example.com/fuse\n  hostPath: {path: '/dev/[af]*'}\n  numDevices: 53773\n  healthCheckInterval: 1h\n";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    let n = k
        .wait_for(WAIT, |rec| {
            rec.devices.get("example.com/fuse").map(Vec::len)
        })
        .unwrap_or_else(|| panic!("no list\n{}", d.log()));
    assert!(n > 50_000 && n < 4 * 53_773, "{n}");
    let list = k.recorded().devices["example.com/fuse"].clone();
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "ordered by ID");
    d.wait_log("do not fit one ListAndWatch message");
    // A change resends the cut list without saying it again (fewer fit:
    // "Unhealthy" is the longer word).
    for x in [
        "fuse",
        "a_longer_name_a",
        "a_longer_name_b",
        "a_longer_name_c",
    ] {
        fs::remove_file(r.join("dev").join(x)).unwrap();
    }
    assert!(k
        .wait_for(WAIT, |rec| {
            let l = rec.devices.get("example.com/fuse")?;
            (l.len() < n && l.len() > 50_000 && l.iter().all(|(_, h)| h == "Unhealthy"))
                .then_some(())
        })
        .is_some());
    assert_eq!(d.log().matches("do not fit").count(), 1, "{}", d.log());
}

#[test]
fn a_hung_filesystem_under_one_pattern_holds_up_no_other() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let Some(hung) = crate::safety::HungMount::new(&r.join("mnt/nfs")) else {
        println!("SKIP: cannot mount FUSE here");
        return;
    };
    let config = format!(
        "{}- resourceName: example.com/nfs\n  hostPath: {{path: '/mnt/nfs/*'}}\n  healthCheckInterval: 100ms\n",
        serial_config("")
    );
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let mut d = start(&dir, &config, &args);
    wait_list(&k, &d, SERIAL, &[]);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    wait_list(&k, &d, SERIAL, &[("/dev/ttyUSB0", "Healthy")]);
    d.wait_log("has not returned");
    fs::remove_file(r.join("dev/ttyUSB0")).unwrap();
    wait_list(&k, &d, SERIAL, &[("/dev/ttyUSB0", "Unhealthy")]);
    d.signal(libc::SIGTERM);
    let t = std::time::Instant::now();
    assert!(d.wait_exit(WAIT).success());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    drop(hung);
}
