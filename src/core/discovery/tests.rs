use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::core::glob;
use crate::core::resource::{Group, NodeRule};
use std::collections::HashSet;

struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Tree {
        let p = std::env::temp_dir().join(format!("hpdp-disc-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tree(p)
    }
    fn file(&self, rel: &str) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
    }
    fn node(&self, rel: &str, major: u32, minor: u32) {
        let p = self.0.join(rel);
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
        assert_eq!(rc, 0, "mknod {rel}: {}", std::io::Error::last_os_error());
    }
    fn attrs(&self, dir: &str, kv: &[(&str, &str)]) {
        let d = self.0.join(dir);
        fs::create_dir_all(&d).unwrap();
        for (k, v) in kv {
            fs::write(d.join(k), format!("{v}\n")).unwrap();
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rule(pattern: &str, kind: MatchKind) -> PathRule {
    PathRule {
        pattern: pattern.into(),
        components: glob::path(pattern).unwrap(),
        kind,
        mount_path: None,
        read_only: false,
        permissions: Perm::from_letters("rw"),
        limit: 1,
        optional: false,
    }
}

fn disc(rules: Vec<PathRule>, count: u32) -> Discovery {
    Discovery {
        groups: vec![Group {
            source: Source::Paths(rules),
            count,
        }],
        remove_after: Duration::from_secs(60),
    }
}

fn ids(s: &Scan) -> Vec<&str> {
    s.devices.iter().map(|f| f.id.as_str()).collect()
}

fn run(t: &Tree, d: &Discovery) -> (Scan, Vec<PathBuf>) {
    run_with(t, d, &mut Memory::default())
}

fn run_with(t: &Tree, d: &Discovery, memory: &mut Memory) -> (Scan, Vec<PathBuf>) {
    let mut dirs = Vec::new();
    let s = scan(&t.0, d, false, false, memory, &mut |p: &Path| {
        dirs.push(p.to_path_buf())
    });
    (s, dirs)
}

#[test]
fn each_match_of_the_kind_is_one_device_with_its_path_as_id() {
    let t = Tree::new("match");
    t.file("dev/ttyUSB1");
    t.file("dev/ttyUSB0");
    t.file("dev/ttyACM0");
    fs::create_dir_all(t.0.join("dev/ttyUSBdir")).unwrap();
    let d = disc(vec![rule("/dev/ttyUSB*", MatchKind::File)], 1);
    let (s, dirs) = run(&t, &d);
    assert_eq!(ids(&s), ["/dev/ttyUSB0", "/dev/ttyUSB1"]);
    let g = &s.devices[0].grants;
    assert_eq!(g.len(), 1);
    assert_eq!(&*g[0].host, "/dev/ttyUSB0");
    assert_eq!(g[0].container_path(), "/dev/ttyUSB0");
    assert!(!g[0].device, "a regular file is mounted");
    assert!(dirs.contains(&t.0.join("dev")), "{dirs:?}");
    assert!(
        dirs.contains(&t.0),
        "the host root is watched for /dev appearing"
    );
}

#[test]
fn missing_directories_are_no_matches_and_are_watched_up_to_where_they_stop() {
    let t = Tree::new("missing");
    fs::create_dir_all(t.0.join("dev")).unwrap();
    let d = disc(vec![rule("/dev/serial/by-id/*", MatchKind::Any)], 1);
    let (s, dirs) = run(&t, &d);
    assert!(s.devices.is_empty());
    assert_eq!(dirs, [t.0.clone(), t.0.join("dev")]);
}

#[test]
fn symlinks_are_followed_inside_the_host_root_and_their_targets_watched() {
    let t = Tree::new("links");
    t.file("dev/ttyUSB0");
    fs::create_dir_all(t.0.join("dev/serial/by-id")).unwrap();
    std::os::unix::fs::symlink("../../ttyUSB0", t.0.join("dev/serial/by-id/usb-FTDI-if00"))
        .unwrap();
    std::os::unix::fs::symlink("/dev/ttyUSB0", t.0.join("dev/serial/by-id/abs")).unwrap();
    std::os::unix::fs::symlink("/dev/gone", t.0.join("dev/serial/by-id/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", t.0.join("dev/serial/by-id/evil")).unwrap();
    t.file("etc/shadow");
    let d = disc(vec![rule("/dev/serial/by-id/*", MatchKind::File)], 1);
    let (s, dirs) = run(&t, &d);
    assert_eq!(
        ids(&s),
        ["/dev/serial/by-id/abs", "/dev/serial/by-id/usb-FTDI-if00"]
    );
    assert!(dirs.contains(&t.0.join("dev")), "the targets' directory");
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("evil") && p.contains("/etc/shadow")),
        "{:?}",
        s.problems
    );
}

#[test]
fn sensitive_matches_are_skipped_unless_allowed() {
    let t = Tree::new("sens");
    t.file("dev/mem");
    t.file("dev/null");
    let d = disc(vec![rule("/dev/*", MatchKind::File)], 1);
    let (s, _) = run(&t, &d);
    assert_eq!(ids(&s), ["/dev/null"]);
    let s = scan(
        &t.0,
        &d,
        true,
        false,
        &mut Memory::default(),
        &mut |_: &Path| {},
    );
    assert_eq!(ids(&s), ["/dev/mem", "/dev/null"]);
}

#[test]
fn device_nodes_become_device_specs() {
    let t = Tree::new("nodes");
    t.node("dev/video0", 81, 0);
    t.file("dev/video-meta");
    let d = disc(vec![rule("/dev/video*", MatchKind::Any)], 1);
    let (s, _) = run(&t, &d);
    assert_eq!(ids(&s), ["/dev/video-meta", "/dev/video0"]);
    assert!(!s.devices[0].grants[0].device);
    assert!(s.devices[1].grants[0].device);
    let d = disc(vec![rule("/dev/video*", MatchKind::CharDevice)], 1);
    assert_eq!(ids(&run(&t, &d).0), ["/dev/video0"]);
}

#[test]
fn groups_zip_sorted_matches_and_limit_reuses_a_path() {
    let t = Tree::new("zip");
    for f in [
        "pcmC0D0c",
        "pcmC1D0c",
        "controlC0",
        "controlC1",
        "controlC2",
    ] {
        t.file(&format!("dev/snd/{f}"));
    }
    let d = disc(
        vec![
            rule("/dev/snd/pcmC[0-9]D0c", MatchKind::File),
            rule("/dev/snd/controlC[0-9]", MatchKind::File),
        ],
        1,
    );
    let (s, _) = run(&t, &d);
    assert_eq!(
        ids(&s),
        [
            "/dev/snd/pcmC0D0c,/dev/snd/controlC0",
            "/dev/snd/pcmC1D0c,/dev/snd/controlC1"
        ]
    );
    assert_eq!(s.devices[1].grants.len(), 2);
    // One shared path with limit 3 beside three matches: three devices.
    t.file("dev/shared");
    let mut shared = rule("/dev/shared", MatchKind::File);
    shared.limit = 3;
    let d = disc(
        vec![rule("/dev/snd/controlC*", MatchKind::File), shared.clone()],
        1,
    );
    assert_eq!(run(&t, &d).0.devices.len(), 3);
    // Without the limit, the shortest list caps the group.
    shared.limit = 1;
    let d = disc(vec![rule("/dev/snd/controlC*", MatchKind::File), shared], 1);
    assert_eq!(run(&t, &d).0.devices.len(), 1);
}

#[test]
fn an_optional_member_nothing_matches_is_left_out() {
    let t = Tree::new("optional");
    t.file("dev/ttyS0");
    let mut usb = rule("/dev/ttyUSB0", MatchKind::File);
    usb.optional = true;
    let d = disc(vec![rule("/dev/ttyS0", MatchKind::File), usb.clone()], 1);
    let (s, _) = run(&t, &d);
    assert_eq!(ids(&s), ["/dev/ttyS0"]);
    assert_eq!(s.devices[0].grants.len(), 1);
    assert!(d.describes(&s.devices[0].grants), "still configured");
    // Once it is there, it is handed out with the rest.
    t.file("dev/ttyUSB0");
    let (s, _) = run(&t, &d);
    assert_eq!(ids(&s), ["/dev/ttyS0,/dev/ttyUSB0"]);
    assert!(d.describes(&s.devices[0].grants));
    // A member that is not optional still makes the group wait.
    usb.optional = false;
    fs::remove_file(t.0.join("dev/ttyUSB0")).unwrap();
    let d = disc(vec![rule("/dev/ttyS0", MatchKind::File), usb], 1);
    assert!(run(&t, &d).0.devices.is_empty());
    // Every member optional and absent: no device.
    let mut a = rule("/dev/none*", MatchKind::File);
    a.optional = true;
    assert!(run(&t, &disc(vec![a], 1)).0.devices.is_empty());
}

#[test]
fn count_gives_slots_with_stable_ids() {
    let t = Tree::new("count");
    t.file("dev/fuse");
    let d = disc(vec![rule("/dev/fuse", MatchKind::File)], 3);
    let (s, _) = run(&t, &d);
    assert_eq!(ids(&s), ["/dev/fuse"]);
    let mut set = DeviceSet::default();
    set.merge(s.devices, Instant::now(), Duration::ZERO);
    let listed: Vec<String> = set
        .list(false)
        .0
        .into_iter()
        .map(|(id, _)| id.into_owned())
        .collect();
    assert_eq!(listed, ["/dev/fuse#0", "/dev/fuse#1", "/dev/fuse#2"]);
}

#[test]
fn long_or_odd_keys_get_a_hashed_id_within_63_bytes() {
    let long = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0-extra".to_string();
    let device_id = |k: &str| id::device_id(k, &id::Suffix::default(), 1);
    let id = device_id(&long);
    assert!(id.len() <= MAX_ID_LEN, "{id}");
    let (tail, hash) = id.rsplit_once('~').unwrap();
    assert!(long.ends_with(tail), "{id}");
    assert_eq!(hash.len(), 16);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(device_id(&long), id, "stable");
    assert_ne!(device_id(&format!("{long}1")), id);
    assert_eq!(device_id("/dev/ttyUSB0"), "/dev/ttyUSB0");
    let odd = device_id("/dev/a b");
    assert!(odd.starts_with("/dev/a_b~"), "{odd}");
}

#[test]
fn usb_devices_by_id_ignoring_interfaces_and_root_hubs_unless_asked() {
    let t = Tree::new("usb");
    let sys = "sys/bus/usb/devices";
    t.attrs(
        &format!("{sys}/usb1"),
        &[
            ("idVendor", "1d6b"),
            ("idProduct", "0002"),
            ("busnum", "1"),
            ("devnum", "1"),
        ],
    );
    t.attrs(
        &format!("{sys}/1-1"),
        &[
            ("idVendor", "1a86"),
            ("idProduct", "7523"),
            ("busnum", "1"),
            ("devnum", "5"),
        ],
    );
    t.attrs(&format!("{sys}/1-1:1.0"), &[("bInterfaceClass", "ff")]);
    t.attrs(
        &format!("{sys}/1-2"),
        &[
            ("idVendor", "1A86"),
            ("idProduct", "7523"),
            ("serial", "ABC123"),
            ("busnum", "1"),
            ("devnum", "12"),
        ],
    );
    t.attrs(
        &format!("{sys}/2-1"),
        &[
            ("idVendor", "18d1"),
            ("idProduct", "9302"),
            ("busnum", "2"),
            ("devnum", "3"),
        ],
    );
    t.node("dev/bus/usb/001/001", 189, 0);
    t.node("dev/bus/usb/001/005", 189, 4);
    t.node("dev/bus/usb/001/012", 189, 11);
    // 2-1 has no node yet: not listed.
    let usb = |v: u16, p: u16, serial: Option<&str>| Discovery {
        groups: vec![Group {
            source: Source::Usb {
                selectors: vec![UsbSelector {
                    vendor: v,
                    product: p,
                    serial: serial.map(String::from),
                    mount_path: None,
                }],
                nodes: vec![NodeRule::raw(Perm::from_letters("rw"))],
            },
            count: 1,
        }],
        remove_after: Duration::ZERO,
    };
    let (s, dirs) = run(&t, &usb(0x1a86, 0x7523, None));
    assert_eq!(ids(&s), ["usb:1a86:7523:ABC123", "usb:1a86:7523@1-1"]);
    assert_eq!(&*s.devices[0].grants[0].host, "/dev/bus/usb/001/012");
    assert!(s.devices[0].grants[0].device);
    assert!(dirs.contains(&t.0.join("dev/bus/usb/001")), "{dirs:?}");
    let (s, _) = run(&t, &usb(0x1a86, 0x7523, Some("ABC123")));
    assert_eq!(ids(&s), ["usb:1a86:7523:ABC123"]);
    let (s, _) = run(&t, &usb(0x18d1, 0x9302, None));
    assert!(s.devices.is_empty(), "no node, no device");
    let (s, _) = run(&t, &usb(0x1d6b, 0x0002, None));
    assert_eq!(ids(&s), ["usb:1d6b:0002@usb1"], "a root hub when asked for");
}

#[test]
fn a_vanished_device_stays_unhealthy_then_goes_and_comes_back_with_its_id() {
    let g = |h: &str| vec![Grant::node(h, Perm::from_letters("rw"))];
    let mut set = DeviceSet::default();
    let t0 = Instant::now();
    let after = Duration::from_secs(60);
    let m = set.merge(
        vec![Found::new("a", g("/dev/a")), Found::new("b", g("/dev/b"))],
        t0,
        after,
    );
    assert_eq!(m.appeared, ["a", "b"]);
    let m = set.merge(
        vec![Found::new("a", g("/dev/a"))],
        t0 + Duration::from_secs(1),
        after,
    );
    assert_eq!(m.vanished, ["b"]);
    assert_eq!(m.next_removal, Some(t0 + Duration::from_secs(61)));
    let listed: Vec<(String, &str)> = set
        .list(false)
        .0
        .into_iter()
        .map(|(id, h)| (id.into_owned(), h))
        .collect();
    assert_eq!(
        listed,
        [("a".to_string(), "Healthy"), ("b".to_string(), "Unhealthy")]
    );
    assert!(matches!(set.lookup("b"), Lookup::Vanished));
    assert!(set.grants("b").is_none());
    assert!(matches!(set.lookup("z"), Lookup::Unknown));
    let m = set.merge(
        vec![Found::new("a", g("/dev/a")), Found::new("b", g("/dev/b2"))],
        t0 + Duration::from_secs(2),
        after,
    );
    assert_eq!(m.back, ["b"]);
    assert_eq!(
        &*set.grants("b").unwrap()[0].host,
        "/dev/b2",
        "new paths, same ID"
    );
    set.merge(vec![], t0 + Duration::from_secs(3), after);
    let m = set.merge(vec![], t0 + Duration::from_secs(63), after);
    assert_eq!(m.removed, ["a", "b"]);
    assert!(set.is_empty());
    set.merge(vec![Found::new("c", g("/dev/c"))], t0, Duration::ZERO);
    let m = set.merge(vec![], t0, Duration::ZERO);
    assert_eq!(m.removed, ["c"], "removeAfter 0s: at once");
    assert!(m.vanished.is_empty());
}

#[test]
fn a_list_too_large_for_one_message_is_cut_by_id() {
    let mut set = DeviceSet::default();
    let mut found: Vec<Found> = (0..80_000)
        .map(|i| {
            Found::new(
                &format!("/dev/some/long/enough/device/name{i:08}"),
                Vec::new(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    set.merge(found, Instant::now(), Duration::ZERO);
    let (list, left) = set.list(true);
    assert!(left > 0);
    assert_eq!(list.len() as u64 + left, 80_000);
    let bytes: usize = list
        .iter()
        .map(|(id, h)| {
            let dev = 2 + id.len() + 2 + h.len();
            1 + if dev >= 128 { 2 } else { 1 } + dev
        })
        .sum();
    assert!(bytes <= crate::kubelet::MAX_MESSAGE_BYTES);
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0));
}

/// Issue: slots were materialised, so `count: 4294967295` allocated until
/// the daemon aborted. A device's slots cost one entry; the list derives
/// them, cut at one message; Allocate parses them back.
#[test]
fn slots_are_derived_not_stored_and_the_list_stays_bounded() {
    let t = Tree::new("slots");
    t.file("dev/fuse");
    let d = disc(vec![rule("/dev/fuse", MatchKind::File)], u32::MAX);
    let (s, _) = run(&t, &d);
    assert_eq!(s.devices.len(), 1, "one device, whatever its slots");
    assert_eq!(s.devices[0].slots, u32::MAX);
    let mut set = DeviceSet::default();
    set.merge(s.devices, Instant::now(), Duration::ZERO);
    assert_eq!(set.len(), 1);
    let (list, left) = set.list(true);
    assert!(!list.is_empty());
    assert_eq!(list.len() as u64 + left, u64::from(u32::MAX));
    let bytes: usize = list
        .iter()
        .map(|(id, h)| entry_size(id.len(), h.len()))
        .sum();
    assert!(bytes <= crate::kubelet::MAX_MESSAGE_BYTES);
    assert_eq!(list[1].0, "/dev/fuse#1");
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "in ID order");
    assert!(
        set.grants("/dev/fuse#4294967294").is_some(),
        "the last slot"
    );
    assert!(
        set.grants("/dev/fuse").is_none(),
        "a device of many slots has no bare ID"
    );
    assert!(set.grants("/dev/fuse#4294967295").is_none());
    assert!(
        set.grants("/dev/fuse#01").is_none(),
        "only the canonical form"
    );
}

/// Issue: a name could take the shape of another's derived ID (`a_b~hash`
/// of `a{b`, `x@2`, `x#1`), hiding a device or re-pointing its ID. Now
/// such names are hashed themselves, and a collision, if one happened,
/// keeps the device already listed.
#[test]
fn forged_names_never_take_another_devices_id() {
    let t = Tree::new("forge");
    t.file("srv/x/a{b");
    let d = disc(vec![rule("/srv/x/*", MatchKind::File)], 1);
    let (s, _) = run(&t, &d);
    let victim = s.devices[0].id.clone();
    let forged = victim.rsplit('/').next().unwrap().to_string();
    t.file(&format!("srv/x/{forged}"));
    t.file("srv/x/ttyUSB0@2");
    let (s, _) = run(&t, &d);
    assert_eq!(s.devices.len(), 3, "{:?}", ids(&s));
    let unique: HashSet<&str> = ids(&s).into_iter().collect();
    assert_eq!(unique.len(), 3);
    let owner = s.devices.iter().find(|f| f.id == victim).unwrap();
    assert_eq!(&*owner.grants[0].host, "/srv/x/a{b");

    // Two devices under one ID: the listed one keeps it.
    let g = |h: &str| vec![Grant::node(h, Perm::from_letters("rw"))];
    let mut set = DeviceSet::default();
    let t0 = Instant::now();
    set.merge(vec![Found::new("same", g("/dev/a"))], t0, Duration::ZERO);
    let m = set.merge(
        vec![
            Found::new("same", g("/dev/b")),
            Found::new("same", g("/dev/a")),
        ],
        t0,
        Duration::ZERO,
    );
    assert_eq!(&*set.grants("same").unwrap()[0].host, "/dev/a");
    assert_eq!(m.refused.len(), 1);
    assert!(m.refused[0].contains("/dev/b"), "{:?}", m.refused);
}

/// After a reload, a device the new config no longer describes is said to
/// be no longer configured and goes at once; one it still describes but
/// that is missing vanished.
#[test]
fn after_a_reload_unconfigured_is_not_vanished() {
    let g = |h: &str| vec![Grant::node(h, Perm::from_letters("rw"))];
    let mut set = DeviceSet::default();
    let t0 = Instant::now();
    let after = Duration::from_secs(60);
    set.merge(
        vec![
            Found::new("/dev/a1", g("/dev/a1")),
            Found::new("/dev/b1", g("/dev/b1")),
        ],
        t0,
        after,
    );
    let new = disc(vec![rule("/dev/b*", MatchKind::Any)], 1);
    let still = |gr: &[Grant]| new.describes(gr);
    let m = set.merge_with(vec![], t0, after, Some(&still));
    assert_eq!(m.unconfigured, ["/dev/a1"]);
    assert_eq!(m.vanished, ["/dev/b1"]);
    assert!(matches!(set.lookup("/dev/a1"), Lookup::Unknown));
}

/// Issue 20, item 10: one entry looked at again alone gives what a full
/// merge of the whole tree gives for it.
#[test]
fn an_update_of_one_id_matches_a_merge() {
    let g = |h: &str| vec![Grant::node(h, Perm::from_letters("rw"))];
    let t0 = Instant::now();
    let after = Duration::from_secs(60);
    let names: Vec<String> = (0..5000).map(|i| format!("/dev/tty{i:05}")).collect();
    let all = |skip: &str, extra: &str| -> Vec<Found> {
        let mut v: Vec<Found> = names
            .iter()
            .filter(|n| *n != skip)
            .map(|n| Found::new(n, g(n)))
            .collect();
        if !extra.is_empty() {
            v.push(Found::new(extra, g(extra)));
        }
        v
    };
    let list = |s: &DeviceSet| -> Vec<(String, &'static str)> {
        s.list(false)
            .0
            .into_iter()
            .map(|(i, h)| (i.into_owned(), h))
            .collect()
    };
    let mut merged = DeviceSet::default();
    let mut updated = DeviceSet::default();
    merged.merge(all("", ""), t0, after);
    updated.merge(all("", ""), t0, after);
    // A plug, an unplug, a come-back, under merge and under update.
    let m1 = merged.merge(all("", "/dev/tty-new"), t0, after);
    let mut u1 = Merged::default();
    updated.update(
        "/dev/tty-new",
        Some(Found::new("/dev/tty-new", g("/dev/tty-new"))),
        t0,
        after,
        &mut u1,
    );
    assert_eq!(m1.appeared, u1.appeared);
    assert_eq!(list(&merged), list(&updated));
    let m2 = merged.merge(all("/dev/tty00042", "/dev/tty-new"), t0, after);
    let mut u2 = Merged::default();
    updated.update("/dev/tty00042", None, t0, after, &mut u2);
    assert_eq!(m2.vanished, u2.vanished);
    assert_eq!(m2.next_removal, updated.next_removal(after));
    assert_eq!(list(&merged), list(&updated));
    let m3 = merged.merge(all("", "/dev/tty-new"), t0, after);
    let mut u3 = Merged::default();
    updated.update(
        "/dev/tty00042",
        Some(Found::new("/dev/tty00042", g("/dev/tty00042"))),
        t0,
        after,
        &mut u3,
    );
    assert_eq!(m3.back, u3.back);
    assert_eq!(list(&merged), list(&updated));
    // removeAfter 0s: gone at once, and the text is compacted as it goes.
    for n in names.iter().take(4000) {
        updated.update(n, None, t0, Duration::ZERO, &mut Merged::default());
    }
    assert_eq!(updated.len(), 1001);
    assert!(updated.grants("/dev/tty04999").is_some());
    assert!(updated.grants("/dev/tty-new").is_some());
    assert!(
        updated.text_bytes() < 14 * 1001 * 2,
        "{}",
        updated.text_bytes()
    );
}

mod pairing;

/// What sysfs says of a USB device's nodes is checked before it names a
/// path: a `DEVNAME` that climbs out of /dev or is sensitive is skipped
/// and said; links are not followed; a child device's nodes (a hub's) are
/// not its parent's.
#[test]
fn usb_nodes_from_sysfs_are_checked_before_they_name_a_path() {
    let t = Tree::new("usbnodes");
    let sys = "sys/bus/usb/devices";
    let dev = |dir: &str, subsystem: &str, devname: &str, numbers: &str| {
        t.attrs(
            dir,
            &[("dev", numbers), ("uevent", &format!("DEVNAME={devname}"))],
        );
        std::os::unix::fs::symlink(
            format!("../../class/{subsystem}"),
            t.0.join(dir).join("subsystem"),
        )
        .unwrap();
    };
    t.attrs(
        &format!("{sys}/1-1"),
        &[
            ("idVendor", "1a86"),
            ("idProduct", "7523"),
            ("busnum", "1"),
            ("devnum", "5"),
        ],
    );
    let iface = format!("{sys}/1-1/1-1:1.0");
    dev(&format!("{iface}/a"), "tty", "../etc/passwd", "1:3");
    dev(&format!("{iface}/b"), "tty", "mem", "1:1");
    t.node("dev/mem", 1, 1);
    dev(&format!("{iface}/c/tty/ttyUSB0"), "tty", "ttyUSB0", "188:0");
    t.node("dev/ttyUSB0", 188, 0);
    std::os::unix::fs::symlink("..", t.0.join(&iface).join("loop")).unwrap();
    // A hub's child device, nested in its directory as the kernel does.
    dev(
        &format!("{sys}/1-1/1-1.1/1-1.1:1.0/tty/ttyACM0"),
        "tty",
        "ttyACM0",
        "166:0",
    );
    t.node("dev/ttyACM0", 166, 0);
    let d = Discovery {
        groups: vec![Group {
            source: Source::Usb {
                selectors: vec![UsbSelector {
                    vendor: 0x1a86,
                    product: 0x7523,
                    serial: None,
                    mount_path: None,
                }],
                nodes: vec![NodeRule {
                    subsystem: crate::core::resource::Subsystem::Tty,
                    name: None,
                    mount_path: None,
                    permissions: Perm::from_letters("rw"),
                }],
            },
            count: 1,
        }],
        remove_after: Duration::ZERO,
    };
    let (s, dirs) = run(&t, &d);
    assert_eq!(ids(&s), ["usb:1a86:7523@1-1"], "{:?}", s.problems);
    let hosts: Vec<&str> = s.devices[0].grants.iter().map(|g| &*g.host).collect();
    assert_eq!(hosts, ["/dev/ttyUSB0"]);
    let problems: Vec<&str> = s.problems.iter().map(String::as_str).collect();
    let problems = problems.join("\n");
    assert!(
        problems.contains(r#"skipped a node named "../etc/passwd""#),
        "{problems}"
    );
    assert!(problems.contains("skipped /dev/mem"), "{problems}");
    assert!(dirs.contains(&t.0.join("dev")), "{dirs:?}");
}
