//! Live reload (B10): SIGHUP, write-and-rename, the ConfigMap symlink swap.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{wait_counts, wait_until, Daemon, TestDir, WAIT};

fn res(name: &str, path: &std::path::Path, extra: &str) -> String {
    format!("  - resourceName: {name}\n    hostPath: {{path: {}}}\n    healthCheckInterval: 100ms\n{extra}", path.display())
}

#[test]
fn update_in_place_keeps_the_stream() {
    let dir = TestDir::new();
    let (a, b) = (dir.host("a"), dir.host("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let v1 = format!(
        "resources:\n{}",
        res(
            "example.com/x",
            &a,
            "    numDevices: 2\n    envs: {V: one}\n"
        )
    );
    let d = Daemon::start(&dir, &v1, &[]);
    wait_counts(&k, &d, "example.com/x", (2, 2));
    let env = |k: &SimKubelet| {
        k.allocate("example.com/x", &[&["0"]])
            .unwrap()
            .container_responses[0]
            .envs["V"]
            .clone()
    };
    assert_eq!(env(&k), "one");

    let v2 = format!(
        "resources:\n{}",
        res(
            "example.com/x",
            &b,
            "    numDevices: 3\n    envs: {V: two}\n"
        )
    );
    dir.replace_config(&v2);
    let took = wait_counts(&k, &d, "example.com/x", (3, 3));
    println!("config renamed into place -> new list at the kubelet after {took:?}");
    assert_eq!(env(&k), "two", "new Allocate answers at once");
    let resp = k.allocate("example.com/x", &[&["2"]]).unwrap();
    assert_eq!(
        resp.container_responses[0].mounts[0].host_path,
        b.display().to_string()
    );
    let rec = k.recorded();
    assert_eq!(
        rec.registrations_of("example.com/x"),
        1,
        "no new registration"
    );
    assert_eq!(
        rec.streams_ended.get("example.com/x"),
        None,
        "the stream was not cut"
    );
    assert!(d.log().contains("example.com/x: updated in place"));
    // The new host path is watched: removing it flips health.
    fs::remove_dir(&b).unwrap();
    wait_counts(&k, &d, "example.com/x", (0, 3));
}

#[test]
fn removed_added_and_renamed_resources() {
    let dir = TestDir::new();
    let p = dir.host("p");
    fs::create_dir_all(&p).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let v1 = format!(
        "resources:\n{}{}{}",
        res("example.com/keep", &p, ""),
        res("example.com/drop", &p, ""),
        res("example.com/old", &p, "")
    );
    let d = Daemon::start(&dir, &v1, &[]);
    for n in ["example.com/keep", "example.com/drop", "example.com/old"] {
        wait_counts(&k, &d, n, (100, 100));
    }
    let v2 = format!(
        "resources:\n{}{}{}",
        res("example.com/keep", &p, ""),
        res("example.com/new", &p, ""),
        res("example.com/renamed", &p, "")
    );
    dir.replace_config(&v2);
    // Removed (and renamed-away): an empty list, the stream ends, the socket goes.
    wait_counts(&k, &d, "example.com/drop", (0, 0));
    wait_counts(&k, &d, "example.com/old", (0, 0));
    wait_counts(&k, &d, "example.com/new", (100, 100));
    wait_counts(&k, &d, "example.com/renamed", (100, 100));
    assert!(
        wait_until(WAIT, || dir.sockets()
            == [
                "example.com-keep.sock",
                "example.com-new.sock",
                "example.com-renamed.sock",
                "kubelet.sock"
            ]),
        "{:?}",
        dir.sockets()
    );
    let rec = k.recorded();
    assert_eq!(
        rec.registrations_of("example.com/keep"),
        1,
        "unchanged resources are untouched"
    );
    assert_eq!(rec.streams_ended.get("example.com/keep"), None);
    assert_eq!(rec.late_stream_ends, 0);
    d.wait_log("reload applied: 2 added, 0 updated, 2 retired, 1 unchanged");
}

#[test]
fn invalid_reload_changes_nothing() {
    let dir = TestDir::new();
    let p = dir.host("p");
    fs::create_dir_all(&p).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let v1 = format!(
        "resources:\n{}",
        res("example.com/x", &p, "    numDevices: 2\n")
    );
    let d = Daemon::start(&dir, &v1, &[]);
    wait_counts(&k, &d, "example.com/x", (2, 2));
    dir.replace_config("resources:\n  - resourceName: example.com/x\n    hostPath: {path: relative}\n    numDevices: 7\n    bogus: 1\n");
    d.wait_log("reload refused: 2 problem(s)");
    d.wait_log("hostPath.path: `relative` must be an absolute path");
    d.wait_log("resources[0].bogus: unknown key");
    assert!(
        k.allocate("example.com/x", &[&["1"]]).is_ok(),
        "still serving the old config"
    );
    assert!(
        k.allocate("example.com/x", &[&["5"]]).is_err(),
        "old device count kept"
    );
    assert_eq!(k.recorded().counts("example.com/x"), Some((2, 2)));
    assert_eq!(k.recorded().registrations_of("example.com/x"), 1);
    // Fixed: applied.
    dir.replace_config(&format!(
        "resources:\n{}",
        res("example.com/x", &p, "    numDevices: 7\n")
    ));
    wait_counts(&k, &d, "example.com/x", (7, 7));
    // The config file deleted: logged, nothing changes.
    fs::remove_file(dir.path.join("config.yaml")).unwrap();
    d.wait_log("cannot read the config");
    assert!(k.allocate("example.com/x", &[&["6"]]).is_ok());
}

#[test]
fn sighup_reloads() {
    let dir = TestDir::new();
    let p = dir.host("p");
    fs::create_dir_all(&p).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        &dir,
        &format!("resources:\n{}", res("example.com/x", &p, "")),
        &[],
    );
    wait_counts(&k, &d, "example.com/x", (100, 100));
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP: reloading");
    d.wait_log("reload applied: 0 added, 0 updated, 0 retired, 1 unchanged");
    // A burst of SIGHUPs is harmless.
    for _ in 0..20 {
        d.signal(libc::SIGHUP);
    }
    assert!(k.allocate("example.com/x", &[&["0"]]).is_ok());
    assert_eq!(k.recorded().registrations_of("example.com/x"), 1);
}

/// How the kubelet updates a ConfigMap volume: the file is a symlink
/// through `..data`, which is swapped atomically to a new timestamped dir.
#[test]
fn configmap_symlink_swap() {
    let dir = TestDir::new();
    let p = dir.host("p");
    fs::create_dir_all(&p).unwrap();
    let cm = dir.path.join("cm");
    fs::create_dir_all(cm.join("..2026_01_01_00_00_00.1")).unwrap();
    fs::write(
        cm.join("..2026_01_01_00_00_00.1/config.yaml"),
        format!(
            "resources:\n{}",
            res("example.com/x", &p, "    numDevices: 1\n")
        ),
    )
    .unwrap();
    symlink("..2026_01_01_00_00_00.1", cm.join("..data")).unwrap();
    symlink("..data/config.yaml", cm.join("config.yaml")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::spawn(
        &dir,
        &["--config", cm.join("config.yaml").to_str().unwrap()],
    );
    wait_counts(&k, &d, "example.com/x", (1, 1));

    fs::create_dir_all(cm.join("..2026_01_01_00_00_01.2")).unwrap();
    fs::write(
        cm.join("..2026_01_01_00_00_01.2/config.yaml"),
        format!(
            "resources:\n{}",
            res("example.com/x", &p, "    numDevices: 5\n")
        ),
    )
    .unwrap();
    symlink("..2026_01_01_00_00_01.2", cm.join("..data_tmp")).unwrap();
    fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    fs::remove_dir_all(cm.join("..2026_01_01_00_00_00.1")).unwrap();
    wait_counts(&k, &d, "example.com/x", (5, 5));
    assert_eq!(k.recorded().registrations_of("example.com/x"), 1);
    assert!(!d.log().contains("reload refused"), "{}", d.log());
    let _ = Duration::ZERO;
}
