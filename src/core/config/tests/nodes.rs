//! A USB device's own nodes (`nodes`), container paths that are numbered
//! or directories, and the variables that name what a container got (B20).

use super::*;
use crate::core::resource::{NodeRule, Perm, Source, Subsystem};

fn usb(r: &Resource) -> (Vec<crate::core::resource::UsbSelector>, Vec<NodeRule>) {
    match &r.discovery.as_ref().unwrap().groups[0].source {
        Source::Usb { selectors, nodes } => (selectors.clone(), nodes.clone()),
        Source::Paths(_) => panic!("paths"),
    }
}

#[test]
fn nodes_choose_subsystems_names_places_and_permissions() {
    let c = ok("resources:\n- resourceName: example.com/hid\n  usb: [{vendor: '046d', product: c52b}]\n  permissions: r\n  nodes:\n  - {subsystem: hidraw, mountPath: /dev/hidraw0}\n  - {subsystem: input, name: 'event*', mountPath: '/dev/input/event{n}', permissions: rw}\n  - {subsystem: sound, mountPath: /dev/snd/}\n  - {subsystem: usb}\n");
    let (_, nodes) = usb(&c.resources[0]);
    assert_eq!(nodes.len(), 4);
    assert_eq!(nodes[0].subsystem, Subsystem::Hidraw);
    assert_eq!(
        nodes[0].permissions,
        Perm::from_letters("r"),
        "the resource's"
    );
    assert_eq!(nodes[1].subsystem, Subsystem::Input);
    assert!(nodes[1].name.as_ref().unwrap().1.matches("event3"));
    assert!(!nodes[1].name.as_ref().unwrap().1.matches("mouse0"));
    assert_eq!(nodes[1].mount_path.as_deref(), Some("/dev/input/event{n}"));
    assert_eq!(nodes[1].permissions, Perm::from_letters("rw"));
    assert_eq!(
        nodes[2].mount_path.as_deref(),
        Some("/dev/snd/"),
        "a directory"
    );
    assert_eq!(nodes[3], NodeRule::raw(Perm::from_letters("r")));
    // The plain form is unchanged: the /dev/bus/usb node.
    let c = ok("resourceName: example.com/c\nusb: [{vendor: '1a6e', product: '089a'}]\n");
    assert_eq!(
        usb(&c.resources[0]).1,
        [NodeRule::raw(Perm::from_letters("rw"))]
    );
}

#[test]
fn bad_nodes_and_places_are_refused_by_name() {
    let base = "resourceName: example.com/z\nusb: [{vendor: '10c4', product: ea60}]\n";
    for (nodes, needle) in [
        (
            "nodes: [{subsystem: serial}]",
            "nodes[0].subsystem: `serial` is not one of usb, tty, video4linux",
        ),
        ("nodes: [{name: 'tty*'}]", "nodes[0].subsystem: is required"),
        ("nodes: []", "nodes: must list at least one node"),
        (
            "nodes: [{subsystem: tty, name: 'a/b'}]",
            "nodes[0].name: must be one non-empty name",
        ),
        (
            "nodes: [{subsystem: tty, mountPath: zigbee}]",
            "nodes[0].mountPath: `zigbee` must be an absolute path",
        ),
        (
            "nodes: [{subsystem: tty, mountPath: '/dev/a{n}{n}'}]",
            "the only placeholder is {n}, at most once",
        ),
        (
            "nodes: [{subsystem: tty, mountPath: '/dev/{m}'}]",
            "the only placeholder is {n}",
        ),
        (
            "nodes: [{subsystem: tty, mountPath: '/dev/{n}/'}]",
            "is a directory (it ends in `/`) and numbered",
        ),
        (
            "nodes: [{subsystem: tty, mountPath: /dev/../etc}]",
            "nodes[0].mountPath",
        ),
        (
            "nodes: [{subsystem: tty, permissions: rx}]",
            "nodes[0].permissions",
        ),
        (
            "nodes: [{subsystem: tty, where: /x}]",
            "nodes[0].where: unknown key",
        ),
        (
            "volumeMount: {mountPath: /dev/z}",
            "give where they go in `nodes`",
        ),
    ] {
        let all = errs(&format!("{base}{nodes}\n")).join("\n");
        assert!(all.contains(needle), "{nodes}: {all}");
    }
    let all = errs(
        "resourceName: example.com/x\nhostPath: {path: '/dev/tty*'}\nnodes: [{subsystem: tty}]\n",
    )
    .join("\n");
    assert!(all.contains("nodes: applies only with `usb`"), "{all}");
}

#[test]
fn a_pattern_may_number_its_container_paths() {
    // Fixed: warned (a container given two is refused); numbered: not.
    let l = parse("resources:\n- resourceName: example.com/s\n  hostPath: {path: '/dev/ttyUSB*', type: CharDevice}\n  volumeMount: {mountPath: /dev/serial}\n", "c", Path::new("/d")).unwrap();
    assert!(
        l.warnings
            .iter()
            .any(|w| w.to_string().contains("puts every match")),
        "{:?}",
        l.warnings
    );
    let l = parse("resources:\n- resourceName: example.com/s\n  hostPath: {path: '/dev/ttyUSB*', type: CharDevice}\n  volumeMount: {mountPath: '/dev/serial{n}'}\n", "c", Path::new("/d")).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn generic_device_plugin_usb_and_path_mount_paths() {
    let c = ok("devices:\n- name: coral\n  groups:\n  - usb:\n    - {vendor: '1a6e', product: '089a', mountPath: /dev/coral}\n    - {vendor: '18d1', product: '9302', mountPath: /dev/bus/usb/}\n- name: serial\n  groups:\n  - paths:\n    - {path: '/dev/ttyUSB*', mountPath: /dev/serial/}\n");
    let (sel, nodes) = usb(&c.resources[0]);
    assert_eq!(sel[0].mount_path.as_deref(), Some("/dev/coral"));
    assert_eq!(sel[1].mount_path.as_deref(), Some("/dev/bus/usb/"));
    assert_eq!(nodes, [NodeRule::raw(Perm::from_letters("rw"))]);
    let Source::Paths(rules) = &c.resources[1].discovery.as_ref().unwrap().groups[0].source else {
        panic!()
    };
    assert_eq!(rules[0].mount_path.as_deref(), Some("/dev/serial/"));
    // Our own form has no mountPath on a selector.
    let all = errs(
        "resourceName: example.com/c\nusb: [{vendor: '1a6e', product: '089a', mountPath: /x}]\n",
    )
    .join("\n");
    assert!(all.contains("usb[0].mountPath: unknown key"), "{all}");
}

#[test]
fn the_device_lists_own_their_names() {
    let all = errs("resources:\n- resourceName: example.com/zigbee\n  usb: [{vendor: '10c4', product: ea60}]\n  envs: {EXAMPLE_COM_ZIGBEE_IDS: x}\n").join("\n");
    assert!(
        all.contains("`EXAMPLE_COM_ZIGBEE_IDS` is set by the daemon"),
        "{all}"
    );
    // Two resources whose names map to one prefix: loaded, and said.
    let l = parse("resources:\n- resourceName: example.com/a-b\n  hostPath: {path: /x}\n- resourceName: example.com/a.b\n  hostPath: {path: /y}\n", "c", Path::new("/d")).unwrap();
    assert!(
        l.warnings.iter().any(|w| w
            .to_string()
            .contains("its devices are listed in `EXAMPLE_COM_A_B_IDS`, as those of resources[0]")),
        "{:?}",
        l.warnings
    );
}
