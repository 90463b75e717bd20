//! A USB device by who it is (B20, issue 25): its own tty, video, input,
//! hidraw and sound nodes, found through a fake sysfs shaped like the
//! kernel's, handed out at container paths of the config's choosing, and
//! named to the container in environment variables.
//!
//! The fake sysfs is laid out as the kernel lays it out: the device's
//! directory under `sys/devices/…/usbN/<port>`, linked from
//! `sys/bus/usb/devices/<port>`; each interface `<port>:1.0` a directory
//! inside it (linked too); each node a directory below the interface with
//! `dev` (`major:minor`), `uevent` (`DEVNAME=`) and a `subsystem` link to
//! `sys/class/<subsystem>`. Plugging makes the sysfs entries and then the
//! nodes, unplugging removes the nodes and then the entries, in the
//! kernel's order. Every resource rescans once an hour: what shows up
//! came from inotify.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Instant;

use grpcio::RpcStatusCode;
use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::devices::{mknod, root, start, wait_list};
use crate::harness::{TestDir, WAIT};

/// One node a fake device brings.
struct Node {
    /// Its directory below the interface, as the kernel nests it.
    sys: &'static str,
    subsystem: &'static str,
    /// Its name under /dev.
    devname: &'static str,
    major: u32,
    minor: u32,
}

/// One fake USB device with one interface.
struct Usb {
    port: &'static str,
    vendor: &'static str,
    product: &'static str,
    serial: Option<&'static str>,
    bus: u32,
    devnum: u32,
    nodes: Vec<Node>,
}

impl Usb {
    fn dir(&self, r: &Path) -> PathBuf {
        r.join(format!(
            "sys/devices/pci0000:00/0000:00:14.0/usb{}/{}",
            self.bus, self.port
        ))
    }

    fn raw(&self) -> String {
        format!("dev/bus/usb/{:03}/{:03}", self.bus, self.devnum)
    }

    /// The sysfs entries, then the raw node, then the interface's nodes.
    fn plug(&self, r: &Path) {
        self.plug_sysfs(r);
        for n in &self.nodes {
            mknod(&r.join("dev").join(n.devname), n.major, n.minor);
        }
    }

    /// Everything but the interface's /dev nodes.
    fn plug_sysfs(&self, r: &Path) {
        let d = self.dir(r);
        fs::create_dir_all(&d).unwrap();
        let mut attrs = vec![
            ("idVendor", self.vendor.to_string()),
            ("idProduct", self.product.to_string()),
            ("busnum", self.bus.to_string()),
            ("devnum", self.devnum.to_string()),
            ("dev", format!("189:{}", self.devnum - 1)),
            (
                "uevent",
                format!("DEVNAME=bus/usb/{:03}/{:03}", self.bus, self.devnum),
            ),
        ];
        if let Some(s) = self.serial {
            attrs.push(("serial", s.to_string()));
        }
        for (k, v) in attrs {
            fs::write(d.join(k), format!("{v}\n")).unwrap();
        }
        class_link(r, &d, "usb");
        let by = r.join("sys/bus/usb/devices");
        fs::create_dir_all(&by).unwrap();
        let rel = |p: &Path| Path::new("../../..").join(p.strip_prefix(r.join("sys")).unwrap());
        symlink(rel(&d), by.join(self.port)).unwrap();
        mknod(&r.join(self.raw()), 189, self.devnum - 1);
        let iface = d.join(format!("{}:1.0", self.port));
        fs::create_dir_all(&iface).unwrap();
        fs::write(iface.join("bInterfaceNumber"), "00\n").unwrap();
        symlink(rel(&iface), by.join(format!("{}:1.0", self.port))).unwrap();
        for n in &self.nodes {
            let nd = iface.join(n.sys);
            fs::create_dir_all(&nd).unwrap();
            fs::write(nd.join("dev"), format!("{}:{}\n", n.major, n.minor)).unwrap();
            fs::write(
                nd.join("uevent"),
                format!(
                    "MAJOR={}\nMINOR={}\nDEVNAME={}\n",
                    n.major, n.minor, n.devname
                ),
            )
            .unwrap();
            class_link(r, &nd, n.subsystem);
        }
    }

    /// The nodes first, then the sysfs entries and the raw node.
    fn unplug(&self, r: &Path) {
        for n in &self.nodes {
            fs::remove_file(r.join("dev").join(n.devname)).unwrap();
        }
        let by = r.join("sys/bus/usb/devices");
        fs::remove_file(by.join(format!("{}:1.0", self.port))).unwrap();
        fs::remove_file(by.join(self.port)).unwrap();
        fs::remove_file(r.join(self.raw())).unwrap();
        fs::remove_dir_all(self.dir(r)).unwrap();
    }
}

/// `dir/subsystem` → `sys/class/<name>`, relative, as the kernel links it.
fn class_link(r: &Path, dir: &Path, name: &str) {
    let class = r.join("sys/class").join(name);
    fs::create_dir_all(&class).unwrap();
    let up = dir
        .strip_prefix(r.join("sys"))
        .unwrap()
        .components()
        .count();
    let target = PathBuf::from("../".repeat(up)).join("class").join(name);
    symlink(target, dir.join("subsystem")).unwrap();
}

fn node(
    sys: &'static str,
    subsystem: &'static str,
    devname: &'static str,
    major: u32,
    minor: u32,
) -> Node {
    Node {
        sys,
        subsystem,
        devname,
        major,
        minor,
    }
}

/// A CP210x serial adapter (a Zigbee stick): usb-serial's `ttyUSB` node.
fn cp210x(port: &'static str, devnum: u32, tty: &'static str, minor: u32) -> Usb {
    let sys = if tty == "ttyUSB0" {
        "ttyUSB0/tty/ttyUSB0"
    } else {
        "ttyUSB1/tty/ttyUSB1"
    };
    Usb {
        port,
        vendor: "10c4",
        product: "ea60",
        serial: Some("0001"),
        bus: 1,
        devnum,
        nodes: vec![node(sys, "tty", tty, 188, minor)],
    }
}

/// A CDC-ACM stick: its `ttyACM` node.
fn acm(port: &'static str, devnum: u32, serial: &'static str, n: u32) -> Usb {
    let (sys, name) = match n {
        0 => ("tty/ttyACM0", "ttyACM0"),
        _ => ("tty/ttyACM1", "ttyACM1"),
    };
    Usb {
        port,
        vendor: "2fe3",
        product: "0100",
        serial: Some(serial),
        bus: 1,
        devnum,
        nodes: vec![node(sys, "tty", name, 166, n)],
    }
}

/// A UVC camera: a capture and a metadata node (the host already had
/// `video0` and `video1`, so these are 2 and 3), and a media node.
fn camera() -> Usb {
    Usb {
        port: "1-2",
        vendor: "046d",
        product: "0825",
        serial: Some("CAM7"),
        bus: 1,
        devnum: 9,
        nodes: vec![
            node("video4linux/video2", "video4linux", "video2", 81, 2),
            node("video4linux/video3", "video4linux", "video3", 81, 3),
            node("media1", "media", "media1", 240, 1),
        ],
    }
}

/// A HID receiver: hidraw, and an input device with an event and a mouse
/// node (the input device itself has no node).
fn hid() -> Usb {
    Usb {
        port: "1-3",
        vendor: "046d",
        product: "c52b",
        serial: None,
        bus: 1,
        devnum: 10,
        nodes: vec![
            node(
                "0003:046D:C52B.0001/hidraw/hidraw0",
                "hidraw",
                "hidraw0",
                242,
                0,
            ),
            node(
                "0003:046D:C52B.0001/input/input5/event3",
                "input",
                "input/event3",
                13,
                67,
            ),
            node(
                "0003:046D:C52B.0001/input/input5/mouse0",
                "input",
                "input/mouse0",
                13,
                32,
            ),
        ],
    }
}

/// A USB sound card: card 1's control and two pcm nodes.
fn sound() -> Usb {
    Usb {
        port: "1-4",
        vendor: "0d8c",
        product: "0014",
        serial: None,
        bus: 1,
        devnum: 11,
        nodes: vec![
            node("sound/card1/controlC1", "sound", "snd/controlC1", 116, 10),
            node("sound/card1/pcmC1D0p", "sound", "snd/pcmC1D0p", 116, 11),
            node("sound/card1/pcmC1D0c", "sound", "snd/pcmC1D0c", 116, 12),
        ],
    }
}

const CONFIG: &str = "resources:
- resourceName: example.com/zigbee
  usb: [{vendor: '10c4', product: 'ea60'}]
  nodes: [{subsystem: tty, mountPath: /dev/zigbee}]
  healthCheckInterval: 1h
  removeAfter: 0s
- resourceName: example.com/acm
  usb: [{vendor: '2fe3', product: '0100'}]
  nodes: [{subsystem: tty, mountPath: '/dev/ttyACM{n}'}]
  healthCheckInterval: 1h
  removeAfter: 0s
- resourceName: example.com/webcam
  usb: [{vendor: '046d', product: '0825'}]
  nodes: [{subsystem: video4linux, mountPath: '/dev/video{n}'}]
  healthCheckInterval: 1h
- resourceName: example.com/hid
  usb: [{vendor: '046d', product: 'c52b'}]
  nodes:
  - {subsystem: hidraw, mountPath: /dev/hidraw0, permissions: r}
  - {subsystem: input, name: 'event*', mountPath: '/dev/input/event{n}', permissions: r}
  healthCheckInterval: 1h
- resourceName: example.com/audio
  usb: [{vendor: '0d8c', product: '0014'}]
  nodes: [{subsystem: sound, mountPath: /dev/usb-audio/}]
  healthCheckInterval: 1h
";

/// Each container's device nodes (container path → host path, permissions)
/// and envs.
type Given = (Vec<(String, String, String)>, HashMap<String, String>);

fn given(k: &SimKubelet, resource: &str, ids: &[&str]) -> Given {
    let resp = k
        .allocate(resource, &[ids])
        .unwrap_or_else(|e| panic!("{resource} {ids:?}: {e}"));
    let c = &resp.container_responses[0];
    let nodes = c
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.clone(),
                d.host_path.clone(),
                d.permissions.clone(),
            )
        })
        .collect();
    (nodes, c.envs.clone())
}

/// [`given`], once the device's answer has `n` nodes: a device is listed
/// as soon as each of its rules has a node, and the kernel makes a
/// camera's second node a moment after its first.
fn given_all(k: &SimKubelet, resource: &str, ids: &[&str], n: usize) -> Given {
    let deadline = Instant::now() + WAIT;
    loop {
        let g = given(k, resource, ids);
        if g.0.len() == n || Instant::now() > deadline {
            return g;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn nodes(want: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    want.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn each_device_is_listed_with_its_own_nodes_at_the_chosen_paths_and_named_in_envs() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, CONFIG, &args);
    wait_list(&k, &d, "example.com/zigbee", &[]);
    for dev in [cp210x("1-1.2", 5, "ttyUSB0", 0), camera(), hid(), sound()] {
        let t0 = Instant::now();
        dev.plug(&r);
        let (res, id) = match dev.vendor {
            "10c4" => ("example.com/zigbee", "usb:10c4:ea60:0001"),
            "0d8c" => ("example.com/audio", "usb:0d8c:0014@1-4"),
            _ if dev.product == "0825" => ("example.com/webcam", "usb:046d:0825:CAM7"),
            _ => ("example.com/hid", "usb:046d:c52b@1-3"),
        };
        wait_list(&k, &d, res, &[(id, "Healthy")]);
        println!("{res}: plug → listed in {:?}", t0.elapsed());
    }

    let (n, envs) = given(&k, "example.com/zigbee", &["usb:10c4:ea60:0001"]);
    assert_eq!(n, nodes(&[("/dev/zigbee", "/dev/ttyUSB0", "rw")]));
    assert_eq!(envs["EXAMPLE_COM_ZIGBEE_IDS"], "usb:10c4:ea60:0001");
    assert_eq!(envs["EXAMPLE_COM_ZIGBEE_PATHS"], "/dev/zigbee");
    assert_eq!(envs["EXAMPLE_COM_ZIGBEE_HOST_PATHS"], "/dev/ttyUSB0");

    // Numbered from 0 in the container, in the kernel's order; the media
    // node is not video4linux.
    let (n, envs) = given_all(&k, "example.com/webcam", &["usb:046d:0825:CAM7"], 2);
    assert_eq!(
        n,
        nodes(&[
            ("/dev/video0", "/dev/video2", "rw"),
            ("/dev/video1", "/dev/video3", "rw")
        ])
    );
    assert_eq!(envs["EXAMPLE_COM_WEBCAM_PATHS"], "/dev/video0 /dev/video1");
    assert_eq!(
        envs["EXAMPLE_COM_WEBCAM_HOST_PATHS"],
        "/dev/video2 /dev/video3"
    );

    // hidraw, and the event node only (not mouse0), read-only.
    let (n, _) = given(&k, "example.com/hid", &["usb:046d:c52b@1-3"]);
    assert_eq!(
        n,
        nodes(&[
            ("/dev/hidraw0", "/dev/hidraw0", "r"),
            ("/dev/input/event0", "/dev/input/event3", "r")
        ])
    );

    // A directory: each node keeps its name.
    let (n, _) = given_all(&k, "example.com/audio", &["usb:0d8c:0014@1-4"], 3);
    assert_eq!(
        n,
        nodes(&[
            ("/dev/usb-audio/controlC1", "/dev/snd/controlC1", "rw"),
            ("/dev/usb-audio/pcmC1D0c", "/dev/snd/pcmC1D0c", "rw"),
            ("/dev/usb-audio/pcmC1D0p", "/dev/snd/pcmC1D0p", "rw"),
        ])
    );
}

#[test]
fn listed_once_its_nodes_exist_gone_when_they_go_and_its_id_follows_the_serial() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, CONFIG, &args);
    wait_list(&k, &d, "example.com/zigbee", &[]);
    let stick = cp210x("1-1.2", 5, "ttyUSB0", 0);
    // Its sysfs entries and its /dev/bus/usb node, not yet its tty: a
    // scan runs (the raw node is an event) and must not list it. The ACM
    // stick plugged next proves a scan has run since.
    stick.plug_sysfs(&r);
    let other = acm("1-3", 7, "A1", 0);
    other.plug(&r);
    wait_list(
        &k,
        &d,
        "example.com/acm",
        &[("usb:2fe3:0100:A1", "Healthy")],
    );
    assert_eq!(
        k.recorded().devices.get("example.com/zigbee").cloned(),
        Some(vec![]),
        "listed before its tty node existed\n{}",
        d.log()
    );
    // Its node comes (with the numbers sysfs gives).
    let t0 = Instant::now();
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    wait_list(
        &k,
        &d,
        "example.com/zigbee",
        &[("usb:10c4:ea60:0001", "Healthy")],
    );
    println!("tty node → listed in {:?}", t0.elapsed());

    // Unplugged, nodes first: gone as soon as its tty is (sysfs may lag).
    let t0 = Instant::now();
    fs::remove_file(r.join("dev/ttyUSB0")).unwrap();
    wait_list(&k, &d, "example.com/zigbee", &[]);
    println!("tty node removed → gone in {:?}", t0.elapsed());
    mknod(&r.join("dev/ttyUSB0"), 188, 0);
    stick.unplug(&r);
    wait_list(&k, &d, "example.com/zigbee", &[]);

    // Re-plugged on another port, where it gets ttyUSB1: the same ID, and
    // the container still finds it at /dev/zigbee.
    let moved = cp210x("1-1.4", 8, "ttyUSB1", 1);
    moved.plug(&r);
    wait_list(
        &k,
        &d,
        "example.com/zigbee",
        &[("usb:10c4:ea60:0001", "Healthy")],
    );
    let (n, envs) = given(&k, "example.com/zigbee", &["usb:10c4:ea60:0001"]);
    assert_eq!(n, nodes(&[("/dev/zigbee", "/dev/ttyUSB1", "rw")]));
    assert_eq!(envs["EXAMPLE_COM_ZIGBEE_HOST_PATHS"], "/dev/ttyUSB1");

    // A /dev name that now belongs to another device (other numbers than
    // sysfs says) is not this device's node.
    moved.unplug(&r);
    wait_list(&k, &d, "example.com/zigbee", &[]);
    let stale = cp210x("1-1.2", 5, "ttyUSB0", 0);
    stale.plug_sysfs(&r);
    mknod(&r.join("dev/ttyUSB0"), 188, 9);
    let third = acm("1-5", 12, "A2", 1);
    third.plug(&r);
    wait_list(
        &k,
        &d,
        "example.com/acm",
        &[
            ("usb:2fe3:0100:A1", "Healthy"),
            ("usb:2fe3:0100:A2", "Healthy"),
        ],
    );
    assert_eq!(
        k.recorded().devices.get("example.com/zigbee").cloned(),
        Some(vec![]),
        "a node of other numbers was taken for the stick's\n{}",
        d.log()
    );
}

#[test]
fn several_devices_in_one_container_never_share_a_path() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, CONFIG, &args);
    wait_list(&k, &d, "example.com/acm", &[]);
    acm("1-3", 7, "B", 0).plug(&r);
    acm("1-5", 12, "A", 1).plug(&r);
    wait_list(
        &k,
        &d,
        "example.com/acm",
        &[
            ("usb:2fe3:0100:A", "Healthy"),
            ("usb:2fe3:0100:B", "Healthy"),
        ],
    );
    // Numbered in the order of the IDs, whatever order the kubelet asks in.
    let (n, envs) = given(
        &k,
        "example.com/acm",
        &["usb:2fe3:0100:B", "usb:2fe3:0100:A"],
    );
    assert_eq!(
        n,
        nodes(&[
            ("/dev/ttyACM0", "/dev/ttyACM1", "rw"),
            ("/dev/ttyACM1", "/dev/ttyACM0", "rw")
        ])
    );
    assert_eq!(
        envs["EXAMPLE_COM_ACM_IDS"],
        "usb:2fe3:0100:A usb:2fe3:0100:B"
    );
    assert_eq!(envs["EXAMPLE_COM_ACM_PATHS"], "/dev/ttyACM0 /dev/ttyACM1");
    assert_eq!(
        envs["EXAMPLE_COM_ACM_HOST_PATHS"],
        "/dev/ttyACM1 /dev/ttyACM0"
    );

    // Two sticks at the one fixed path: refused, naming both, never one
    // of them dropped.
    cp210x("1-1.2", 5, "ttyUSB0", 0).plug(&r);
    let mut second = cp210x("1-1.4", 8, "ttyUSB1", 1);
    second.serial = Some("0002");
    second.plug(&r);
    wait_list(
        &k,
        &d,
        "example.com/zigbee",
        &[
            ("usb:10c4:ea60:0001", "Healthy"),
            ("usb:10c4:ea60:0002", "Healthy"),
        ],
    );
    let err = k
        .allocate(
            "example.com/zigbee",
            &[&["usb:10c4:ea60:0001", "usb:10c4:ea60:0002"]],
        )
        .unwrap_err();
    let grpcio::Error::RpcFailure(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code(), RpcStatusCode::INVALID_ARGUMENT);
    let msg = s.message();
    assert!(
        msg.contains("/dev/ttyUSB0") && msg.contains("/dev/ttyUSB1") && msg.contains("/dev/zigbee"),
        "{msg}"
    );
}

/// Every Allocate answer names what it gave: a fixed path's IDs (sorted),
/// a pattern's matches at numbered container paths.
#[test]
fn a_fixed_path_and_a_pattern_name_what_they_gave() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    fs::create_dir_all(r.join("srv/my data")).unwrap();
    for (i, n) in ["ttyE0", "ttyE1", "ttyE2"].iter().enumerate() {
        mknod(&r.join("dev").join(n), 1, 3 + i as u32);
    }
    let config = "resources:
- resourceName: example.com/data
  hostPath: {path: '/srv/my data', type: Directory}
  volumeMount: {mountPath: /data}
  numDevices: 3
- resourceName: example.com/serial
  hostPath: {path: '/dev/ttyE*', type: CharDevice}
  volumeMount: {mountPath: '/dev/serial{n}'}
  healthCheckInterval: 1h
";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    wait_list(
        &k,
        &d,
        "example.com/serial",
        &[
            ("/dev/ttyE0", "Healthy"),
            ("/dev/ttyE1", "Healthy"),
            ("/dev/ttyE2", "Healthy"),
        ],
    );
    // Registered on its own: the other's list says nothing of it.
    wait_list(
        &k,
        &d,
        "example.com/data",
        &[("0", "Healthy"), ("1", "Healthy"), ("2", "Healthy")],
    );
    let resp = k.allocate("example.com/data", &[&["2", "0"]]).unwrap();
    let envs = &resp.container_responses[0].envs;
    assert_eq!(envs["EXAMPLE_COM_DATA_IDS"], "0 2");
    assert_eq!(envs["EXAMPLE_COM_DATA_PATHS"], "/data");
    assert_eq!(envs["EXAMPLE_COM_DATA_HOST_PATHS"], r"/srv/my\x20data");

    let (n, envs) = given(&k, "example.com/serial", &["/dev/ttyE2", "/dev/ttyE0"]);
    assert_eq!(
        n,
        nodes(&[
            ("/dev/serial0", "/dev/ttyE0", "rw"),
            ("/dev/serial1", "/dev/ttyE2", "rw")
        ])
    );
    assert_eq!(envs["EXAMPLE_COM_SERIAL_IDS"], "/dev/ttyE0 /dev/ttyE2");
    assert_eq!(
        envs["EXAMPLE_COM_SERIAL_PATHS"],
        "/dev/serial0 /dev/serial1"
    );
}

/// generic-device-plugin's USB `mountPath` (its 2026 addition): the
/// device's `/dev/bus/usb` node at that path in the container.
#[test]
fn a_generic_device_plugin_usb_mount_path_places_the_node() {
    let dir = TestDir::new();
    let (r, args) = root(&dir);
    let config = "devices:
- name: coral
  groups:
  - usb:
    - {vendor: '1a6e', product: '089a', mountPath: /dev/coral}
";
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = start(&dir, config, &args);
    wait_list(&k, &d, "devic.es/coral", &[]);
    let mut coral = cp210x("1-1", 4, "ttyUSB0", 0);
    (coral.vendor, coral.product, coral.serial) = ("1a6e", "089a", None);
    coral.plug(&r);
    wait_list(
        &k,
        &d,
        "devic.es/coral",
        &[("usb:1a6e:089a@1-1", "Healthy")],
    );
    let (n, envs) = given(&k, "devic.es/coral", &["usb:1a6e:089a@1-1"]);
    assert_eq!(n, nodes(&[("/dev/coral", "/dev/bus/usb/001/004", "rw")]));
    assert_eq!(envs["DEVIC_ES_CORAL_PATHS"], "/dev/coral");
}
