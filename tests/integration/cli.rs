//! Command line, `check`, `probe` and exit codes (DESIGN.md §2, B11).

use std::fs;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, run, Daemon, TestDir, WAIT};

fn code(o: &std::process::Output) -> i32 {
    o.status.code().expect("exited normally")
}

#[test]
fn version_and_help() {
    let o = run(&["--version"]);
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("k8s-hostpath-device-plugin "));
    let o = run(&["--help"]);
    assert_eq!(code(&o), 0);
    let out = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--config",
        "--device-plugin-dir",
        "--plugins-registry-dir",
        "--registration",
        "--host-root",
        "--debug",
        "check",
        "probe",
    ] {
        assert!(out.contains(opt), "help lacks {opt}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--nope"][..],
        &["--config"],
        &["frobnicate"],
        &["--registration", "carrier-pigeon"],
    ] {
        let o = run(args);
        assert_eq!(code(&o), 2, "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("error:") && err.contains("--help"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn check_prints_resolved_resources() {
    let dir = TestDir::new();
    let cfg = dir.write_config(
        "resources:\n- resourceName: example.com/kvm\n  hostPath: {path: /dev/kvm, type: CharDevice}\n\
         - resourceName: example.com/data\n  hostPath: {path: /data/, type: Directory}\n  volumeMount: {readOnly: true}\n",
    );
    let o = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("valid, 2 resource(s)"), "{out}");
    assert!(out.contains("example.com-kvm.sock"), "{out}");
    assert!(out.contains("permissions rw"), "{out}");
    assert!(out.contains("/data in the container, read-only"), "{out}");
    // The trailing slash was normalised, with a warning naming the field.
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("resources[1].hostPath.path: `/data/` is read as `/data`"));
}

#[test]
fn check_reports_every_error_with_file_and_field() {
    let dir = TestDir::new();
    let cfg = dir.write_config(
        "resources:\n- resourceName: kubernetes.io/x\n  hostPath: {path: /etc}\n\
         - resourceName: example.com/ok\n  hostpath: {path: /a}\n\
         - resourceName: example.com/n\n  numDevices: 300000\n  hostPath: {path: /b/../c}\n  healthCheckInterval: 1ms\n",
    );
    let c = cfg.to_str().unwrap();
    let o = run(&["check", "--config", c]);
    assert_eq!(code(&o), 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        format!("{c}: resources[0].resourceName: `kubernetes.io/x` is not a valid extended resource name"),
        format!("{c}: resources[0].hostPath.path: /etc is a sensitive host path"),
        format!("{c}: resources[1].hostpath: unknown key; did you mean `hostPath`?"),
        format!("{c}: resources[1].hostPath: is required"),
        format!("{c}: resources[2].numDevices: 300000 devices make a ListAndWatch message of"),
        format!("{c}: resources[2].hostPath.path: `/b/../c` must not contain `..`"),
        format!("{c}: resources[2].healthCheckInterval: 1ms is too short"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        o.stdout.is_empty(),
        "nothing resolved is printed for an invalid config"
    );
}

#[test]
fn check_missing_file_exits_2() {
    let dir = TestDir::new();
    let missing = dir.path.join("nope.yaml");
    let o = run(&["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read config file"));
}

#[test]
fn malformed_config_never_creates_a_socket() {
    let dir = TestDir::new();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    for bad in [
        "resourceName: example.com/x\nhostPath: {path: relative}\n",
        "resources: [\n",
        "resourceName: nope\nhostPath: {path: /x}\n",
    ] {
        let mut d = Daemon::start(&dir, bad, &[]);
        let status = d.wait_exit(WAIT);
        assert_eq!(status.code(), Some(2), "{bad:?}: {}", d.log());
        assert_eq!(dir.sockets(), ["kubelet.sock"], "{bad:?}");
    }
    assert!(k.recorded().registrations.is_empty());
}

#[test]
fn probe_exit_codes() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let config = dir_config("example.com/data", &dir.host("data"), "");
    let cfg = dir.write_config(&config);
    let dp = dir.dp();
    let args = [
        "probe",
        "--config",
        cfg.to_str().unwrap(),
        "--device-plugin-dir",
        dp.to_str().unwrap(),
    ];

    let o = run(&args);
    assert_eq!(code(&o), 1, "nothing is serving yet");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("example.com/data"),
        "names the failing resource"
    );

    let k = SimKubelet::start(&dp).unwrap();
    let d = Daemon::start(&dir, &config, &[]);
    k.wait_for(WAIT, |r| r.counts("example.com/data"))
        .expect("registered");
    let o = run(&args);
    assert_eq!(
        code(&o),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );

    // A stale socket file nobody serves on fails the probe.
    drop(d);
    let _ = fs::remove_file(dp.join("example.com-data.sock"));
    drop(std::os::unix::net::UnixListener::bind(dp.join("example.com-data.sock")).unwrap());
    let o = run(&args);
    assert_eq!(code(&o), 1);

    let o = run(&[
        "probe",
        "--config",
        dir.path.join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "an unreadable config is a config error");
}
