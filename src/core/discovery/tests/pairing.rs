//! Group members paired by their captures, positional pairing's guard,
//! and USB clones that share a serial.

use super::*;

fn sound(t: &Tree, cards: &[(u32, bool, bool)]) {
    let _ = fs::remove_dir_all(t.0.join("dev/snd"));
    fs::create_dir_all(t.0.join("dev/snd")).unwrap();
    for &(card, pcm, control) in cards {
        if pcm {
            t.file(&format!("dev/snd/pcmC{card}D0c"));
        }
        if control {
            t.file(&format!("dev/snd/controlC{card}"));
        }
    }
}

/// Issue: members paired by sorted position, so card 0 losing its pcm
/// node first re-paired card 1's pcm with card 0's control (a "chimera"
/// handing out a node another pod holds). Now they pair by what the
/// wildcards matched, and card 1 is untouched.
#[test]
fn group_members_pair_by_what_their_wildcards_matched() {
    let t = Tree::new("chimera");
    let d = disc(
        vec![
            rule("/dev/snd/pcmC*D0c", MatchKind::File),
            rule("/dev/snd/controlC*", MatchKind::File),
        ],
        1,
    );
    sound(&t, &[(0, true, true), (1, true, true)]);
    let both = run(&t, &d).0;
    assert_eq!(
        ids(&both),
        [
            "/dev/snd/pcmC0D0c,/dev/snd/controlC0",
            "/dev/snd/pcmC1D0c,/dev/snd/controlC1"
        ]
    );
    sound(&t, &[(0, false, true), (1, true, true)]);
    let (s, _) = run(&t, &d);
    assert_eq!(
        ids(&s),
        ["/dev/snd/pcmC1D0c,/dev/snd/controlC1"],
        "card 1 untouched"
    );
    let hosts: Vec<&str> = s.devices[0].grants.iter().map(|g| &*g.host).collect();
    assert_eq!(hosts, ["/dev/snd/pcmC1D0c", "/dev/snd/controlC1"]);
    let mut set = DeviceSet::default();
    let t0 = Instant::now();
    set.merge(both.devices, t0, Duration::from_secs(60));
    let m = set.merge(s.devices, t0, Duration::from_secs(60));
    assert_eq!(m.vanished, ["/dev/snd/pcmC0D0c,/dev/snd/controlC0"]);
    assert!(m.appeared.is_empty(), "no chimera: {:?}", m.appeared);
}

/// generic-device-plugin's files may pair paths whose wildcards differ in
/// number: by position, as that project does, but a device so paired that
/// would share a path with another live device is refused.
#[test]
fn positional_pairing_never_shares_a_member_with_a_live_device() {
    let t = Tree::new("positional");
    let d = disc(
        vec![
            rule("/dev/snd/pcmC*D*c", MatchKind::File),
            rule("/dev/snd/controlC*", MatchKind::File),
        ],
        1,
    );
    sound(&t, &[(0, true, true), (1, true, true)]);
    let mut set = DeviceSet::default();
    let t0 = Instant::now();
    let m = set.merge(run(&t, &d).0.devices, t0, Duration::from_secs(60));
    assert_eq!(m.appeared.len(), 2);
    sound(&t, &[(0, false, true), (1, true, true)]);
    let m = set.merge(run(&t, &d).0.devices, t0, Duration::from_secs(60));
    assert!(m.appeared.is_empty(), "{:?}", m.appeared);
    assert_eq!(m.refused.len(), 1, "{:?}", m.refused);
    assert!(
        m.refused[0].contains("/dev/snd/pcmC1D0c"),
        "{:?}",
        m.refused
    );
    // Every listed device's paths are its own.
    let mut seen = HashSet::new();
    for (id, _) in set.list(false).0 {
        if let Some(g) = set.grants(&id) {
            for g in g.iter() {
                assert!(seen.insert(g.host.to_string()), "{} twice", g.host);
            }
        }
    }
}

fn usb_device(t: &Tree, port: &str, serial: &str, devnum: u32) {
    t.attrs(
        &format!("sys/bus/usb/devices/{port}"),
        &[
            ("idVendor", "0403"),
            ("idProduct", "6001"),
            ("serial", serial),
            ("busnum", "1"),
            ("devnum", &devnum.to_string()),
        ],
    );
    t.node(&format!("dev/bus/usb/001/{devnum:03}"), 189, devnum);
}

fn unplug(t: &Tree, port: &str, devnum: u32) {
    fs::remove_dir_all(t.0.join(format!("sys/bus/usb/devices/{port}"))).unwrap();
    fs::remove_file(t.0.join(format!("dev/bus/usb/001/{devnum:03}"))).unwrap();
}

fn ftdi() -> Discovery {
    Discovery {
        groups: vec![Group {
            source: Source::Usb {
                selectors: vec![UsbSelector {
                    vendor: 0x0403,
                    product: 0x6001,
                    serial: None,
                    mount_path: None,
                }],
                nodes: vec![NodeRule::raw(Perm::from_letters("rw"))],
            },
            count: 1,
        }],
        remove_after: Duration::from_secs(60),
    }
}

/// Issue: two clones with one serial got IDs by port order, and unplugging
/// the first moved its ID onto the second. Now a serial seen twice names
/// no device alone again: each clone is named by serial and port, and no
/// ID ever points at another device.
#[test]
fn usb_clones_with_one_serial_are_told_apart_by_port_for_good() {
    let t = Tree::new("clones");
    let d = ftdi();
    let mut memory = Memory::default();
    usb_device(&t, "1-1", "A50285BI", 5);
    let (s, _) = run_with(&t, &d, &mut memory);
    assert_eq!(ids(&s), ["usb:0403:6001:A50285BI"], "a unique serial alone");
    usb_device(&t, "1-2", "A50285BI", 6);
    let (s, _) = run_with(&t, &d, &mut memory);
    assert_eq!(
        ids(&s),
        ["usb:0403:6001:A50285BI@1-1", "usb:0403:6001:A50285BI@1-2"]
    );
    unplug(&t, "1-1", 5);
    let (s, _) = run_with(&t, &d, &mut memory);
    assert_eq!(
        ids(&s),
        ["usb:0403:6001:A50285BI@1-2"],
        "the second keeps its ID; the serial alone never names it"
    );
    assert_eq!(&*s.devices[0].grants[0].host, "/dev/bus/usb/001/006");
    // A device with a unique serial follows it to another port.
    usb_device(&t, "1-3", "OTHER", 7);
    let (s, _) = run_with(&t, &d, &mut memory);
    assert!(ids(&s).contains(&"usb:0403:6001:OTHER"));
    unplug(&t, "1-3", 7);
    usb_device(&t, "1-4", "OTHER", 8);
    let (s, _) = run_with(&t, &d, &mut memory);
    assert!(ids(&s).contains(&"usb:0403:6001:OTHER"), "{:?}", ids(&s));
}
