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

mod devices;
mod nodes;

#[test]
fn api_per_resource_and_overridden_by_the_daemon() {
    let mut c = ok("resources:\n\
                    - {resourceName: example.com/a, hostPath: {path: /a}}\n\
                    - {resourceName: example.com/b, api: dra, hostPath: {path: /b}}\n\
                    - {resourceName: example.com/c, api: devicePlugin, hostPath: {path: /c}}\n");
    let apis: Vec<Api> = c.resources.iter().map(|r| r.api).collect();
    assert_eq!(apis, [Api::DevicePlugin, Api::Dra, Api::DevicePlugin]);
    assert!(c.uses_dra());
    c.override_api(None);
    assert!(c.uses_dra(), "no override changes nothing");
    c.override_api(Some(Api::DevicePlugin));
    assert!(!c.uses_dra());
    c.override_api(Some(Api::Dra));
    assert!(c.resources.iter().all(|r| r.api == Api::Dra));
    assert!(c.resources[0].to_string().contains("api:          DRA"));
    let e = errs("resourceName: example.com/a\napi: DRA\nhostPath: {path: /a}\n");
    assert_eq!(
        e,
        ["c.yaml: api: unknown API `DRA` (did you mean `dra`?); one of: devicePlugin, dra"]
    );
    let e = errs("resourceName: example.com/a\napi: 3\nhostPath: {path: /a}\n");
    assert!(e[0].starts_with("c.yaml: api: "), "{e:?}");
}
