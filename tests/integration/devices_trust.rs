//! Devices that come and go, made trustworthy (issue 20): a group device
//! never disturbed by another, watch exhaustion said and covered, reloads
//! that never call a present device vanished, container-path clashes,
//! hostile names, and USB clones. Same set-up as `devices`.

use std::fs;

use grpcio::RpcStatusCode;
use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::devices::{
    mknod, root, serial_config, sound_cards, start, usb_sysfs, wait_list, SERIAL,
};
use crate::harness::{run, TestDir, WAIT};

/// Issue 20, item 2: card 0 losing its pcm node first must not disturb
/// card 1, nor make a device of card 1's pcm and card 0's control.
#[test]
fn a_group_device_present_in_full_is_never_disturbed_by_another() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    sound_cards(&r);
    let config = "resources:\n- resourceName: example.com/capture\n  group:\n  - hostPath: {path: '/dev/snd/pcmC*D0c', type: CharDevice}\n  - hostPath: {path: '/dev/snd/controlC*', type: CharDevice}\n  healthCheckInterval: 1h\n  removeAfter: 1h\n";
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
    fs::remove_file(r.join("dev/snd/pcmC0D0c")).unwrap();
    wait_list(
        &k,
        &d,
        "example.com/capture",
        &[(a, "Unhealthy"), (b, "Healthy")],
    );
    let resp = k.allocate("example.com/capture", &[&[b]]).unwrap();
    let hosts: Vec<&str> = resp.container_responses[0]
        .devices
        .iter()
        .map(|s| s.host_path.as_str())
        .collect();
    assert_eq!(hosts, ["/dev/snd/pcmC1D0c", "/dev/snd/controlC1"]);
    assert!(
        !d.log().contains("pcmC1D0c,/dev/snd/controlC0"),
        "{}",
        d.log()
    );
}

/// Issue 20, item 5: when a watch cannot be added (here the daemon's own
/// budget, `--max-watches`), it says so once and rescans the resource
/// every second, so a plug is still seen, late but never lost.
#[test]
fn out_of_watches_the_daemon_says_so_and_rescans() {
    let dir = TestDir::new();
    let (r, mut args) = root(&dir);
    for i in 0..10 {
        fs::create_dir_all(r.join(format!("srv/data/d{i}"))).unwrap();
    }
    args.extend(["--max-watches".to_string(), "4".to_string()]);
    let config = "resources:\n- resourceName: example.com/ready\n  hostPath: {path: '/srv/data/*/ready', type: File}\n  healthCheckInterval: 1h\n";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    wait_list(&k, &d, "example.com/ready", &[]);
    d.wait_log("cannot watch");
    d.wait_log("rescan every 1s");
    fs::write(r.join("srv/data/d9/ready"), b"").unwrap();
    wait_list(
        &k,
        &d,
        "example.com/ready",
        &[("/srv/data/d9/ready", "Healthy")],
    );
    assert_eq!(d.log().matches("cannot watch").count(), 1, "said once");
}

/// Issue 20, item 8: a reload that stops matching a device says it is no
/// longer configured and drops it at once; one still matched is never
/// reported vanished.
#[test]
fn a_reload_never_calls_a_present_device_vanished() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    mknod(&r.join("dev/ttyACM0"), 166, 0);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, &serial_config("  removeAfter: 1h\n"), &args);
    wait_list(&k, &d, SERIAL, &[("/dev/ttyUSB0", "Healthy")]);
    dir.replace_config(
        &serial_config("  removeAfter: 1h\n").replace("/dev/ttyUSB*", "/dev/tty[AU][CS]*"),
    );
    wait_list(
        &k,
        &d,
        SERIAL,
        &[("/dev/ttyACM0", "Healthy"), ("/dev/ttyUSB0", "Healthy")],
    );
    dir.replace_config(
        &serial_config("  removeAfter: 1h\n").replace("/dev/ttyUSB*", "/dev/ttyACM*"),
    );
    wait_list(&k, &d, SERIAL, &[("/dev/ttyACM0", "Healthy")]);
    d.wait_log("no longer configured, removed: /dev/ttyUSB0");
    assert!(!d.log().contains("vanished"), "{}", d.log());
}

/// Issue 20, item 9: two devices asked for one container that would land
/// at one container path are refused, naming both, never one dropped.
#[test]
fn two_devices_at_one_container_path_are_refused() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    mknod(&r.join("dev/ttyUSB1"), 188, 1);
    let config = format!(
        "{}  volumeMount: {{mountPath: /dev/modem}}\n",
        serial_config("")
    );
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, &config, &args);
    wait_list(
        &k,
        &d,
        SERIAL,
        &[("/dev/ttyUSB0", "Healthy"), ("/dev/ttyUSB1", "Healthy")],
    );
    let one = k.allocate(SERIAL, &[&["/dev/ttyUSB1"]]).unwrap();
    assert_eq!(
        one.container_responses[0].devices[0].container_path,
        "/dev/modem"
    );
    match k
        .allocate(SERIAL, &[&["/dev/ttyUSB0", "/dev/ttyUSB1"]])
        .unwrap_err()
    {
        grpcio::Error::RpcFailure(s) => {
            assert_eq!(s.code(), RpcStatusCode::INVALID_ARGUMENT);
            let m = s.message();
            assert!(
                m.contains("/dev/ttyUSB0")
                    && m.contains("/dev/ttyUSB1")
                    && m.contains("/dev/modem"),
                "{m}"
            );
        }
        e => panic!("{e}"),
    }
}

/// Issue 20, item 9: names with escape sequences and newlines reach
/// neither the terminal of `check` nor the log as they are.
#[test]
fn hostile_names_are_escaped_in_check_and_the_log() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let evil = "ttyUSB0\u{1b}[2J\nFORGED LINE";
    fs::write(r.join("dev").join(evil), b"").unwrap();
    let config = "resources:\n- resourceName: example.com/s\n  hostPath: {path: '/dev/ttyUSB*'}\n  healthCheckInterval: 1h\n";
    let cfg = dir.path.join("check.yaml");
    fs::write(&cfg, config).unwrap();
    let out = run(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        r.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
    assert!(text.contains(r"\u{1b}[2J\nFORGED LINE"), "{text}");
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    assert!(k
        .wait_for(WAIT, |rec| rec
            .devices
            .get("example.com/s")
            .filter(|l| l.len() == 1)
            .map(|_| ()))
        .is_some());
    fs::remove_file(r.join("dev").join(evil)).unwrap();
    d.wait_log("vanished");
    assert!(!d.log().contains('\u{1b}'), "{:?}", d.log());
    assert!(
        !d.log().lines().any(|l| l.starts_with("FORGED")),
        "{}",
        d.log()
    );
}

/// Issue 20, item 3: two clones with one serial are told apart by port,
/// and unplugging one never moves its ID (or its health) to the other.
#[test]
fn usb_clones_sharing_a_serial_keep_their_own_ids() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let clone = |port: &str, devnum: &str| {
        usb_sysfs(
            &r,
            port,
            &[
                ("idVendor", "0403"),
                ("idProduct", "6001"),
                ("serial", "A50285BI"),
                ("busnum", "1"),
                ("devnum", devnum),
            ],
        );
    };
    clone("1-1", "5");
    mknod(&r.join("dev/bus/usb/001/005"), 189, 4);
    clone("1-2", "6");
    mknod(&r.join("dev/bus/usb/001/006"), 189, 5);
    let config = "resources:\n- resourceName: example.com/ftdi\n  usb: [{vendor: '0403', product: '6001'}]\n  healthCheckInterval: 1h\n  removeAfter: 1h\n";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    let (a, b) = ("usb:0403:6001:A50285BI@1-1", "usb:0403:6001:A50285BI@1-2");
    wait_list(
        &k,
        &d,
        "example.com/ftdi",
        &[(a, "Healthy"), (b, "Healthy")],
    );
    fs::remove_file(r.join("dev/bus/usb/001/005")).unwrap();
    fs::remove_dir_all(r.join("sys/bus/usb/devices/1-1")).unwrap();
    wait_list(
        &k,
        &d,
        "example.com/ftdi",
        &[(a, "Unhealthy"), (b, "Healthy")],
    );
    let resp = k.allocate("example.com/ftdi", &[&[b]]).unwrap();
    assert_eq!(
        resp.container_responses[0].devices[0].host_path,
        "/dev/bus/usb/001/006"
    );
    assert!(k.allocate("example.com/ftdi", &[&[a]]).is_err());
}
