use super::*;

fn ok(text: &str) -> Config {
    match parse(text, "c.yaml", Path::new("/var/lib/kubelet/device-plugins")) {
        Ok(l) => l.config,
        Err(e) => panic!("expected valid config, got:\n{e}"),
    }
}

fn errs(text: &str) -> Vec<String> {
    match parse(text, "c.yaml", Path::new("/var/lib/kubelet/device-plugins")) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn original_example_loads_unchanged() {
    let c = ok("resourceName: hostpath-device.k8s.io/sample\nsocketName: hostpath-device.k8s.io-sample.sock\n\
                numDevices: 100\nhostPath:\n  path: /sample\n  type: Directory\nvolumeMount:\n  mountPath: /sample\n  readOnly: false\n");
    let r = &c.resources[0];
    assert_eq!(r.resource_name, "hostpath-device.k8s.io/sample");
    assert_eq!(r.socket_name, "hostpath-device.k8s.io-sample.sock");
    assert_eq!(r.num_devices, 100);
    assert_eq!(r.path_type, HostPathType::Directory);
    assert_eq!(r.mount_path, "/sample");
    assert_eq!(r.health_check_interval, Duration::from_secs(10));
}

#[test]
fn defaults() {
    let c = ok("resources:\n- resourceName: example.com/kvm\n  hostPath: {path: /dev/kvm, type: CharDevice}\n");
    let r = &c.resources[0];
    assert_eq!(r.socket_name, "example.com-kvm.sock");
    assert_eq!(r.num_devices, 100);
    assert_eq!(r.mount_path, "/dev/kvm");
    assert_eq!(r.permissions, "rw");
    let c =
        ok("resourceName: example.com/x\nhostPath: {path: /x}\nvolumeMount: {readOnly: true}\n");
    assert_eq!(c.resources[0].permissions, "r");
    assert_eq!(c.resources[0].path_type, HostPathType::Unset);
}

#[test]
fn resource_name_vectors() {
    let long_domain = format!("{}/x", "a".repeat(244));
    let too_long_domain = format!("{}/x", "a".repeat(245));
    let name63 = format!("example.com/{}", "a".repeat(63));
    let name64 = format!("example.com/{}", "a".repeat(64));
    let cases: &[(&str, bool)] = &[
        ("hostpath-device.k8s.io/sample", true),
        ("example.com/foo", true),
        ("foo", false),
        ("kubernetes.io/foo", false),
        ("nvidia.kubernetes.io/gpu", false),
        ("kubernetes.io.example.com/foo", true),
        ("requests.example.com/foo", false),
        ("example.com/requests.foo", true),
        (&name63, true),
        (&name64, false),
        (&long_domain, true),
        (&too_long_domain, false),
        ("Example.com/foo", false),
        ("example.com/Foo_Bar.baz", true),
        ("example.com/-foo", false),
        ("example.com/foo/bar", false),
        ("example_com/foo", false),
    ];
    for (name, accepted) in cases {
        assert_eq!(
            validate_extended_resource_name(name).is_ok(),
            *accepted,
            "{name}: {:?}",
            validate_extended_resource_name(name)
        );
    }
}

#[test]
fn every_error_reported_with_field_path() {
    let e = errs(
        "resources:\n- resourceName: foo\n  hostPath: {path: relative}\n\
         - resourceName: example.com/b\n  hostPath: {path: /b, type: Dir}\n  numDevces: 3\n",
    );
    let all = e.join("\n");
    assert!(
        all.contains("c.yaml: resources[0].resourceName: `foo` is not a valid"),
        "{all}"
    );
    assert!(
        all.contains("resources[0].hostPath.path: `relative` must be an absolute path"),
        "{all}"
    );
    assert!(
        all.contains("resources[1].hostPath.type: unknown type `Dir`"),
        "{all}"
    );
    assert!(
        all.contains("resources[1].numDevces: unknown key; did you mean `numDevices`?"),
        "{all}"
    );
    assert_eq!(e.len(), 4, "{all}");
}

#[test]
fn paths_normalised_or_refused() {
    assert_eq!(normalize_path("/a//b/./c/").unwrap(), "/a/b/c");
    assert_eq!(normalize_path("/").unwrap(), "/");
    assert!(normalize_path("/a/../etc").unwrap_err().contains(".."));
    assert!(normalize_path("a/b").unwrap_err().contains("absolute"));
    let l = parse(
        "resourceName: example.com/x\nhostPath: {path: /data//x/}\n",
        "c",
        Path::new("/d"),
    )
    .unwrap();
    assert_eq!(l.config.resources[0].host_path, "/data/x");
    assert_eq!(l.warnings.len(), 1);
}

#[test]
fn size_bound_matches_encoder() {
    use crate::api::v1beta1::{Device, ListAndWatchResponse};
    use protobuf::Message;
    for n in [1u64, 9, 10, 11, 100, 1000, 12345] {
        let mut resp = ListAndWatchResponse::new();
        for i in 0..n {
            let mut d = Device::new();
            d.ID = i.to_string();
            d.health = UNHEALTHY.to_string();
            resp.devices.push(d);
        }
        assert_eq!(
            resp.compute_size() as usize,
            list_and_watch_size(n, UNHEALTHY.len()),
            "n={n}"
        );
    }
    let max = max_devices();
    assert!((200_000..210_000).contains(&max), "{max}");
    assert!(list_and_watch_size(max + 1, UNHEALTHY.len()) > MAX_MESSAGE_BYTES);
    let e = errs(&format!(
        "resourceName: example.com/x\nhostPath: {{path: /x}}\nnumDevices: {}\n",
        max + 1
    ));
    assert!(
        e[0].contains("over the kubelet's limit of 4194304 bytes"),
        "{e:?}"
    );
    ok(&format!(
        "resourceName: example.com/x\nhostPath: {{path: /x}}\nnumDevices: {max}\n"
    ));
}

#[test]
fn durations() {
    assert_eq!(
        parse_go_duration("500ms").unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(
        parse_go_duration("1.5h").unwrap(),
        Duration::from_secs(5400)
    );
    assert!(parse_go_duration("10").is_err());
    assert!(parse_go_duration("-1s").is_err());
    assert!(parse_go_duration("1x").is_err());
    let c =
        ok("resourceName: example.com/x\nhostPath: {path: /x}\nhealthCheckInterval: 2000000000\n");
    assert_eq!(c.resources[0].health_check_interval, Duration::from_secs(2));
    let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nhealthCheckInterval: 50ms\n");
    assert!(e[0].contains("minimum is 100ms"), "{e:?}");
}

#[test]
fn sensitive_paths() {
    for p in [
        "/",
        "/etc",
        "/proc",
        "/sys",
        "/dev",
        "/boot",
        "/root",
        "/var/lib/kubelet",
        "/var/lib/kubelet/pods",
        "/run/containerd",
        "/run/containerd/containerd.sock",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run/crio",
    ] {
        assert!(sensitive_rule(p).is_some(), "{p}");
        let e = errs(&format!(
            "resourceName: example.com/x\nhostPath: {{path: {p}}}\n"
        ));
        assert!(e[0].contains("allowSensitivePath"), "{e:?}");
        ok(&format!(
            "resourceName: example.com/x\nhostPath: {{path: {p}}}\nallowSensitivePath: true\n"
        ));
    }
    for p in ["/dev/kvm", "/etc2", "/var/lib/kubelet2", "/data", "/sys2"] {
        assert!(sensitive_rule(p).is_none(), "{p}");
    }
}

#[test]
fn duplicates_and_mixing() {
    let e = errs("resources:\n- {resourceName: example.com/a, hostPath: {path: /a}}\n\
                  - {resourceName: example.com/a, socketName: example.com-a.sock, hostPath: {path: /b}}\n");
    let all = e.join("\n");
    assert!(
        all.contains("resources[1].resourceName: `example.com/a` is already used by resources[0]"),
        "{all}"
    );
    assert!(
        all.contains(
            "resources[1].socketName: `example.com-a.sock` is already used by resources[0]"
        ),
        "{all}"
    );
    let e = errs("resourceName: example.com/a\nresources: []\n");
    assert!(
        e.iter()
            .any(|m| m.contains("resourceName: cannot be mixed")),
        "{e:?}"
    );
}

#[test]
fn volume_mount_rules() {
    let l = parse("resourceName: example.com/x\nhostPath: {path: /x}\nvolumeMount: {name: v, mountPath: /y}\n", "c", Path::new("/d")).unwrap();
    assert!(l.warnings[0]
        .to_string()
        .contains("volumeMount.name: is ignored"));
    assert_eq!(l.config.resources[0].mount_path, "/y");
    let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nvolumeMount: {subPath: a, mountPropagation: Bidirectional}\n");
    assert_eq!(e.len(), 2);
    assert!(e[0].contains("is not supported"), "{e:?}");
}

#[test]
fn socket_and_permission_rules() {
    let long = "a".repeat(100);
    let e = errs(&format!(
        "resourceName: example.com/x\nsocketName: {long}.sock\nhostPath: {{path: /x}}\n"
    ));
    assert!(e[0].contains("over the 107-byte limit"), "{e:?}");
    for bad in [
        "a/b.sock",
        ".hidden.sock",
        "kubelet.sock",
        "kubelet_internal_checkpoint",
        "",
    ] {
        let e = errs(&format!(
            "resourceName: example.com/x\nsocketName: \"{bad}\"\nhostPath: {{path: /x}}\n"
        ));
        assert!(e[0].contains("socketName"), "{bad}: {e:?}");
    }
    let e = errs(
        "resourceName: example.com/x\nhostPath: {path: /x, type: Directory}\npermissions: rw\n",
    );
    assert!(
        e[0].contains("applies only to hostPath.type CharDevice or BlockDevice"),
        "{e:?}"
    );
    let e = errs("resourceName: example.com/x\nhostPath: {path: /dev/x, type: CharDevice}\npermissions: rx\n");
    assert!(e[0].contains("only the letters r, w and m"), "{e:?}");
}

#[test]
fn nesting_is_bounded_before_parsing() {
    let real = "resources:\n  - resourceName: example.com/a\n    hostPath: {path: /a, type: Directory}\n    envs:\n      A: \"[x\"\n    volumeMount:\n      mountPath: /b\n";
    assert!(nesting_depth(real).0 <= 8, "{:?}", nesting_depth(real));
    ok(real);
    let flow = format!("resources: {}{}\n", "[".repeat(65), "]".repeat(65));
    assert!(nesting_depth(&flow).0 > MAX_NESTING);
    let e = errs(&flow);
    assert!(
        e[0].contains("nesting about") && e[0].contains("line 1"),
        "{e:?}"
    );
    let compact = format!("resources:\n{}x\n", "- ".repeat(70));
    assert!(errs(&compact)[0].contains("nesting"));
    // Glob brackets inside a plain scalar open no collection.
    assert!(nesting_depth("a: /dev/tty[0-9]\nb: [1, [2]]\n").0 <= 3);
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("resourceName: example.com/x\nhostPath: {path: /x}\n");
    let e = errs(&text);
    assert!(e.iter().any(|m| m.contains("repetition limit")), "{e:?}");
}

#[test]
fn type_errors_and_empty() {
    let e = errs("");
    assert!(
        e[0].contains("expected a mapping") || e[0].contains("empty"),
        "{e:?}"
    );
    let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nnumDevices: many\nrequireMountPoint: yes\n");
    assert!(
        e.iter()
            .any(|m| m.contains("numDevices: expected a number, found a string")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("requireMountPoint: expected true or false")),
        "{e:?}"
    );
    let e = errs("resourceName: example.com/x\nhostPath: {path: /x}\nnumDevices: 0\n");
    assert!(e[0].contains("at least 1"), "{e:?}");
    let e = errs("resources: [\n");
    assert!(e[0].contains("not valid YAML"), "{e:?}");
}

mod devices {
    use super::*;
    use crate::discovery::{MatchKind, Source};

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

    fn rules(r: &Resource) -> Vec<crate::discovery::PathRule> {
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
        let e = errs(
            "resourceName: example.com/s\nhostPath: {path: '/dev/tty[USB', type: CharDevice}\n",
        );
        assert!(
            e[0].contains("hostPath.path") && e[0].contains("closing `]`"),
            "{e:?}"
        );
        let e = errs(
            "resourceName: example.com/s\nhostPath: {path: '/data/*', type: DirectoryOrCreate}\n",
        );
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
        let Source::Usb {
            selectors,
            permissions,
        } = &r.discovery.as_ref().unwrap().groups[0].source
        else {
            panic!()
        };
        assert_eq!(selectors[0].vendor, 0x1a6e);
        assert_eq!(selectors[0].product, 0x089a);
        assert_eq!(selectors[1].serial.as_deref(), Some("X1"));
        assert_eq!(permissions.letters(), "rw");
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
        let max = crate::config::rules::max_slots();
        let entry = crate::discovery::entry_size(63, 9);
        assert!(u64::from(max) * entry as u64 <= MAX_MESSAGE_BYTES as u64);
        assert!(u64::from(max + 1) * entry as u64 > MAX_MESSAGE_BYTES as u64);
        let e = errs("devices:\n- name: x\n  groups:\n  - count: 4294967295\n    paths:\n    - path: /dev/ttyUSB*\n");
        assert!(
            e.iter().any(|m| m.contains("devices[0].groups[0].count")
                && m.contains(&format!("at most {max} slots"))),
            "{e:?}"
        );
        let e = errs(
            "resourceName: example.com/s\nhostPath: {path: '/dev/ttyUSB*'}\nnumDevices: 205019\n",
        );
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
        let p = one("resourceName: example.com/d\nhostPath: {path: '/mnt/disk*'}\nrequireMountPoint: true\n");
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
        let f = one(
            "resourceName: example.com/d\nhostPath: {path: /data/set}\nrequireMountPoint: true\n",
        );
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
                "squat.ai/serial",
                "squat.ai/capture",
                "squat.ai/ch340",
                "squat.ai/fuse",
                "squat.ai/video"
            ]
        );
        let serial = &c.resources[0];
        assert_eq!(serial.socket_name, "squat.ai-serial.sock");
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
            "devices:\n- name: n\n  groups: [{usb: [{vendor: 7523, product: '7523'}]}]\n",
            "c.yaml",
            Path::new("/d"),
        )
        .unwrap();
        assert!(
            l.warnings[0].to_string().contains("1d63"),
            "{:?}",
            l.warnings
        );
    }
}
