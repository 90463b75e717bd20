//! The native keys for devices that come and go, and generic-device-plugin's files.

use super::*;
use crate::core::resource::{MatchKind, NodeRule, Perm, Source};

/// Parses `text`, which must load with a warning containing `needle`.
#[track_caller]
fn warned(text: &str, needle: &str) -> Loaded {
    let l = parse(text, "c.yaml", Path::new("/d")).unwrap();
    assert!(
        l.warnings.iter().any(|w| w.to_string().contains(needle)),
        "{needle}: {:?}",
        l.warnings
    );
    l
}

fn one(text: &str) -> Resource {
    ok(text).resources.remove(0)
}

fn rules(r: &Resource) -> Vec<crate::core::resource::PathRule> {
    match &r.discovery.as_ref().unwrap().groups[0].source {
        Source::Paths(p) => p.clone(),
        Source::Usb { .. } => panic!("usb"),
    }
}

#[test]
fn a_glob_path_is_a_pattern_with_one_slot_per_match() {
    let r = one("resources:\n- resourceName: example.com/serial\n  hostPath: {path: '/dev/ttyUSB*', type: CharDevice}\n");
    assert!(r.is_dynamic());
    assert_eq!(r.num_devices, 1);
    let d = r.discovery.as_ref().unwrap();
    assert_eq!(d.remove_after, Duration::from_secs(60));
    let p = rules(&r);
    assert_eq!(p[0].kind, MatchKind::CharDevice);
    assert_eq!(p[0].mount_path, None, "each match at its own path");
    assert_eq!(p[0].permissions.letters(), "rw");
    let fixed = one("resourceName: example.com/kvm\nhostPath: {path: /dev/kvm}\n");
    assert!(!fixed.is_dynamic());
    assert_eq!(fixed.num_devices, 100);
    warned("resourceName: example.com/s\nhostPath: {path: '/dev/ttyUSB*'}\nvolumeMount: {mountPath: /dev/serial}\n", "volumeMount.mountPath: puts every match");
    let r = one("resourceName: example.com/s\nhostPath: {path: '/dev/serial/by-id/*'}\nnumDevices: 2\nremoveAfter: 0s\n");
    assert_eq!(r.num_devices, 2);
    assert_eq!(r.discovery.unwrap().remove_after, Duration::ZERO);
}

#[test]
fn pattern_errors_are_named() {
    let e =
        errs("resourceName: example.com/s\nhostPath: {path: '/dev/tty[USB', type: CharDevice}\n");
    assert!(
        e[0].contains("hostPath.path") && e[0].contains("closing `]`"),
        "{e:?}"
    );
    let e =
        errs("resourceName: example.com/s\nhostPath: {path: '/data/*', type: DirectoryOrCreate}\n");
    assert!(e[0].contains("cannot be used with a pattern"), "{e:?}");
    let e = errs("resourceName: example.com/s\nhostPath: {path: /dev/kvm}\nremoveAfter: 1m\n");
    assert!(
        e[0].contains("removeAfter") && e[0].contains("fixed path"),
        "{e:?}"
    );
}

#[test]
fn a_pattern_that_could_reach_a_sensitive_node_needs_the_opt_in() {
    let e = errs("resourceName: example.com/all\nhostPath: {path: '/dev/*'}\n");
    assert!(e[0].contains("could match /dev/mem"), "{e:?}");
    assert!(e[0].contains("allowSensitivePath"), "{e:?}");
    for p in [
        "/sys/class/*",
        "/var/lib/kubelet/*",
        "/*",
        "/var/*",
        "/etc/ssh/*",
    ] {
        let e = errs(&format!(
            "resourceName: example.com/x\nhostPath: {{path: '{p}'}}\n"
        ));
        assert!(e[0].contains("allowSensitivePath"), "{p}: {e:?}");
    }
    ok("resourceName: example.com/all\nhostPath: {path: '/dev/*'}\nallowSensitivePath: true\n");
    ok("resourceName: example.com/t\nhostPath: {path: '/dev/tty*'}\n");
    ok("resourceName: example.com/t\nhostPath: {path: '/mnt/disks/*', type: Directory}\n");
}

#[test]
fn usb_selectors() {
    let r = one("resourceName: example.com/coral\nusb:\n- {vendor: '1A6E', product: 089a}\n- {vendor: 18d1, product: '9302', serial: X1}\n");
    let Source::Usb { selectors, nodes } = &r.discovery.as_ref().unwrap().groups[0].source else {
        panic!()
    };
    assert_eq!(selectors[0].vendor, 0x1a6e);
    assert_eq!(selectors[0].product, 0x089a);
    assert_eq!(selectors[1].serial.as_deref(), Some("X1"));
    assert_eq!(nodes, &[NodeRule::raw(Perm::from_letters("rw"))]);
    assert_eq!(r.num_devices, 1);
    let e = errs("resourceName: example.com/c\nusb:\n- {vendor: 1a6, product: 9302}\n");
    assert!(
        e.iter()
            .any(|m| m.contains("usb[0].vendor") && m.contains("4 hex digits")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("usb[0].product") && m.contains("in quotes")),
        "{e:?}"
    );
    let e = errs("resourceName: example.com/c\nusb: [{vendor: '1a6e', product: '089a', bus: 1}]\nhostPath: {path: /dev/x}\n");
    assert!(
        e.iter()
            .any(|m| m.contains("usb[0].bus") && m.contains("unknown key")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("hostPath") && m.contains("cannot be combined")),
        "{e:?}"
    );
}

#[test]
fn a_group_zips_its_members() {
    let r = one("resourceName: example.com/capture\ngroup:\n- hostPath: {path: '/dev/snd/pcmC[0-9]D0c', type: CharDevice}\n- hostPath: {path: '/dev/snd/controlC[0-9]', type: CharDevice}\n  permissions: r\n");
    let p = rules(&r);
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].permissions.letters(), "r");
    assert_eq!(r.host_path, "/dev/snd/pcmC[0-9]D0c");
    let e = errs("resourceName: example.com/c\ngroup:\n- hostPath: {path: /dev/a}\n  volumeMount: {mountPath: rel}\npermissions: r\n");
    assert!(
        e.iter()
            .any(|m| m.contains("group[0].volumeMount.mountPath")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("permissions") && m.contains("each member")),
        "{e:?}"
    );
}

/// Issue: `count: 4294967295` and `numDevices: 205019` on a pattern
/// passed `check`, then took the daemon down. The bound is stated from
/// the longest IDs, all Unhealthy, for every form.
#[test]
fn slots_per_device_are_bounded_by_one_message() {
    let max = crate::core::config::rules::max_slots();
    let entry = crate::core::discovery::entry_size(63, 9);
    assert!(u64::from(max) * entry as u64 <= MAX_MESSAGE_BYTES as u64);
    assert!(u64::from(max + 1) * entry as u64 > MAX_MESSAGE_BYTES as u64);
    let e = errs("devices:\n- name: x\n  groups:\n  - count: 4294967295\n    paths:\n    - path: /dev/ttyUSB*\n");
    assert!(
        e.iter().any(|m| m.contains("devices[0].groups[0].count")
            && m.contains(&format!("at most {max} slots"))),
        "{e:?}"
    );
    let e =
        errs("resourceName: example.com/s\nhostPath: {path: '/dev/ttyUSB*'}\nnumDevices: 205019\n");
    assert!(
        e.iter()
            .any(|m| m.contains("numDevices: 205019 slots per device")),
        "{e:?}"
    );
    let r = one(&format!(
        "resourceName: example.com/s\nhostPath: {{path: '/dev/ttyUSB*'}}\nnumDevices: {max}\n"
    ));
    assert_eq!(r.num_devices, max);
    // A fixed path keeps its own bound (IDs "0".."N-1").
    ok("resourceName: example.com/x\nhostPath: {path: /x}\nnumDevices: 205019\n");
}

/// Issue: every mount change on the node rescanned every resource that
/// asks for a mount point. Only a mount at a match, or above one, does.
#[test]
fn which_mount_points_concern_a_resource() {
    let p = one(
        "resourceName: example.com/d\nhostPath: {path: '/mnt/disk*'}\nrequireMountPoint: true\n",
    );
    for m in ["/mnt/disk1", "/mnt", "/"] {
        assert!(p.concerns_mount_point(m), "{m}");
    }
    for m in [
        "/mnt/other",
        "/run/netns/x",
        "/mnt/disk1/inside",
        "/var/lib/kubelet/pods/x",
    ] {
        assert!(!p.concerns_mount_point(m), "{m}");
    }
    let f =
        one("resourceName: example.com/d\nhostPath: {path: /data/set}\nrequireMountPoint: true\n");
    assert!(f.concerns_mount_point("/data/set"));
    assert!(f.concerns_mount_point("/data"));
    assert!(!f.concerns_mount_point("/data/settle"));
    assert!(!f.concerns_mount_point("/srv"));
}

/// Issue: `/mnt/disk[1]` silently became a pattern, and an escape kept
/// its backslash, so no config could serve that path.
#[test]
fn glob_characters_never_change_meaning_in_silence() {
    let l = warned(
        "resourceName: example.com/d\nhostPath: {path: '/mnt/disk[1]'}\n",
        "hostPath.path: `/mnt/disk[1]` has glob characters",
    );
    assert!(l.config.resources[0].is_dynamic());
    let r = one("resourceName: example.com/d\nhostPath: {path: '/mnt/disk\\[1]'}\n");
    assert!(!r.is_dynamic());
    assert_eq!(r.host_path, "/mnt/disk[1]");
    assert_eq!(r.mount_path, "/mnt/disk[1]");
}

/// Issue: generic-device-plugin's files use `<<: *anchor`; they were refused.
#[test]
fn yaml_merge_keys_are_applied() {
    let c = ok("devices:\n- &serial\n  name: a\n  groups:\n  - paths:\n    - path: /dev/ttyUSB*\n- <<: *serial\n  name: b\n");
    assert_eq!(c.resources.len(), 2);
    assert!(c.resources.iter().all(|r| r.is_dynamic()));
}

/// Issue: `/etc/sudoers[!.]*` passed, and so did root's session bus
/// and systemd manager under `/run/user/0`.
#[test]
fn patterns_reaching_sudoers_or_a_session_bus_need_the_opt_in() {
    for p in [
        "/etc/sudoers[!.]*",
        "/etc/sud*",
        "/run/user/0/bus",
        "/run/user/0/systemd/private",
        "/run/user/*/bus",
        "/var/run/user/*/systemd/private",
        "/run/user/*",
    ] {
        let e = errs(&format!(
            "resourceName: example.com/s\nhostPath: {{path: '{p}'}}\n"
        ));
        assert!(
            e.iter().any(|m| m.contains("allowSensitivePath")),
            "{p}: {e:?}"
        );
    }
    one("resourceName: example.com/s\nhostPath: {path: '/run/user/1000/pulse/native'}\n");
}

/// Issue: a group member with a pattern and a fixed mountPath got no
/// warning; members pair by their wildcards, so their numbers must agree.
#[test]
fn group_members_shape_is_checked() {
    warned("resourceName: example.com/c\ngroup:\n- hostPath: {path: '/dev/snd/pcmC*D0c'}\n  volumeMount: {mountPath: /dev/snd/pcm}\n- hostPath: {path: '/dev/snd/controlC*'}\n", "group[0].volumeMount.mountPath: puts every match");
    let e = errs("resourceName: example.com/c\ngroup:\n- hostPath: {path: '/dev/snd/pcmC*D*c'}\n- hostPath: {path: '/dev/snd/controlC*'}\n");
    assert!(
        e.iter()
            .any(|m| m.contains("group: members pair by what their wildcards match")),
        "{e:?}"
    );
}

const GENERIC: &str = r#"
devices:
  - name: serial
    groups:
      - paths:
          - path: /dev/ttyUSB*
      - paths:
          - path: /dev/ttyACM*
  - name: capture
    groups:
      - paths:
          - path: /dev/snd/pcmC0D0c
          - path: /dev/snd/controlC0
  - name: ch340
    groups:
      - usb:
          - vendor: "1a86"
            product: "7523"
  - name: fuse
    groups:
      - count: 10
        paths:
          - path: /dev/fuse
  - name: video
    groups:
      - paths:
          - path: /dev/video0
            mountPath: /dev/cam
            permissions: rw
          - path: /run/udev/data
            type: Mount
            readOnly: true
            limit: 10
"#;

#[test]
fn generic_device_plugin_examples_load_unchanged() {
    let c = ok(GENERIC);
    let names: Vec<&str> = c
        .resources
        .iter()
        .map(|r| r.resource_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "devic.es/serial",
            "devic.es/capture",
            "devic.es/ch340",
            "devic.es/fuse",
            "devic.es/video"
        ]
    );
    let serial = &c.resources[0];
    assert_eq!(serial.socket_name, "devic.es-serial.sock");
    let d = serial.discovery.as_ref().unwrap();
    assert_eq!(d.groups.len(), 2);
    let Source::Paths(p) = &d.groups[0].source else {
        panic!()
    };
    assert_eq!(p[0].kind, MatchKind::AnyDevice);
    assert_eq!(p[0].permissions.letters(), "rwm", "default mrw");
    assert_eq!(p[0].limit, 1);
    let Source::Usb { selectors, .. } =
        &c.resources[2].discovery.as_ref().unwrap().groups[0].source
    else {
        panic!()
    };
    assert_eq!(
        (selectors[0].vendor, selectors[0].product),
        (0x1a86, 0x7523)
    );
    assert_eq!(
        c.resources[3].discovery.as_ref().unwrap().groups[0].count,
        10
    );
    let Source::Paths(p) = &c.resources[4].discovery.as_ref().unwrap().groups[0].source else {
        panic!()
    };
    assert_eq!(p[0].mount_path.as_deref(), Some("/dev/cam"));
    assert_eq!(p[1].kind, MatchKind::Mount);
    assert!(p[1].read_only);
    assert_eq!(p[1].limit, 10);
}

#[test]
fn generic_domain_and_its_other_keys() {
    let l = parse(
            "domain: example.org\nlog-level: debug\nlisten: ':8080'\nplugin-directory: /x\ndevices:\n- name: fuse\n  groups: [{paths: [{path: /dev/fuse}]}]\n",
            "c.yaml",
            Path::new("/d"),
        )
        .unwrap();
    assert_eq!(l.config.resources[0].resource_name, "example.org/fuse");
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w
        .iter()
        .any(|m| m.contains("plugin-directory") && m.contains("--device-plugin-dir")));
    let e = errs("devices:\n- name: Bad_Name\n  groups: [{paths: [{path: /dev/x, type: Block}], usb: [{vendor: '1', product: '2'}]}]\n");
    assert!(e.iter().any(|m| m.contains("devices[0].name")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("not both")), "{e:?}");
    let e = errs("devices:\n- name: x\n  groups: [{paths: [{path: /dev/x, type: Block}]}]\n");
    assert!(
        e.iter()
            .any(|m| m.contains("devices[0].groups[0].paths[0].type")
                && m.contains("`Device` or `Mount`")),
        "{e:?}"
    );
    let l = parse(
        "domain: example.org\ndevices:\n- name: n\n  groups: [{usb: [{vendor: 7523, product: '7523'}]}]\n",
        "c.yaml",
        Path::new("/d"),
    )
    .unwrap();
    assert!(
        l.warnings[0].to_string().contains("1d63"),
        "{:?}",
        l.warnings
    );
    // No domain: 0.2's, said once; --domain wins over the file's.
    let text = "devices:\n- name: n\n  groups: [{paths: [{path: /dev/n, optional: true}]}]\n";
    let l = parse(text, "c.yaml", Path::new("/d")).unwrap();
    assert_eq!(l.config.resources[0].resource_name, "devic.es/n");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.to_string().contains("squat.ai")),
        "{:?}",
        l.warnings
    );
    let over = Overrides {
        domain: Some("example.org".into()),
    };
    let text = format!("domain: other.org\n{text}");
    let l = parse_with(&text, "c.yaml", Path::new("/d"), &over).unwrap();
    assert_eq!(l.config.resources[0].resource_name, "example.org/n");
    let bad = Overrides {
        domain: Some("Not A Domain".into()),
    };
    let e = parse_with(&text, "c.yaml", Path::new("/d"), &bad).unwrap_err();
    assert!(e.to_string().contains("--domain `Not A Domain`"), "{e}");
}
