//! Plugin-watcher registration (B14).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

fn start(dir: &TestDir) -> (SimKubelet, Daemon) {
    fs::create_dir_all(dir.host("data")).unwrap();
    let reg = dir.path.join("reg");
    let k = SimKubelet::start_with_registry(&dir.dp(), &reg).unwrap();
    let d = Daemon::start(
        dir,
        &dir_config(R, &dir.host("data"), "numDevices: 3\n"),
        &[
            "--registration",
            "plugin-watcher",
            "--plugins-registry-dir",
            reg.to_str().unwrap(),
        ],
    );
    (k, d)
}

#[track_caller]
fn wait_registered(k: &SimKubelet, d: &Daemon, n: usize) {
    k.wait_for(WAIT, |r| {
        (r.registrations_of(R) >= n && r.counts(R) == Some((3, 3))).then_some(())
    })
    .unwrap_or_else(|| panic!("registration {n} not seen: {:?}\n{}", k.recorded(), d.log()));
}

#[test]
fn registers_through_the_plugins_registry() {
    let dir = TestDir::new();
    let (k, d) = start(&dir);
    wait_registered(&k, &d, 1);
    let sock = dir.path.join("reg/example.com-data.sock");
    let rec = k.recorded();
    assert_eq!(
        rec.registrations[0].endpoint,
        sock.display().to_string(),
        "endpoint empty: the registration socket serves DevicePlugin too"
    );
    assert!(rec.rejected.is_empty(), "{:?}", rec.rejected);
    d.wait_log("registered (plugin watcher)");
    assert!(
        !d.log().contains("Register sent"),
        "no classic Register call in this mode"
    );
    assert_eq!(
        dir.sockets(),
        ["kubelet.sock"],
        "nothing of ours in the device-plugin directory"
    );
    assert!(k.allocate(R, &[&["2"]]).is_ok());
    let mode = fs::metadata(&sock).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
}

#[test]
fn kubelet_restart_needs_no_reregistration() {
    let dir = TestDir::new();
    let (mut k, d) = start(&dir);
    wait_registered(&k, &d, 1);
    let sock = dir.path.join("reg/example.com-data.sock");
    let ino = fs::metadata(&sock).unwrap().ino();
    k.restart(Duration::ZERO).unwrap();
    wait_registered(&k, &d, 2);
    assert_eq!(
        fs::metadata(&sock).unwrap().ino(),
        ino,
        "the daemon kept its socket"
    );
    assert!(!d.log().contains("serving afresh"), "{}", d.log());
    assert!(k.allocate(R, &[&["0"]]).is_ok());
}

#[test]
fn socket_removal_deregisters_and_the_daemon_serves_again() {
    let dir = TestDir::new();
    let (k, d) = start(&dir);
    wait_registered(&k, &d, 1);
    let sock = dir.path.join("reg/example.com-data.sock");
    // Freeze the daemon so the kubelet's reaction to the removal is seen
    // alone (otherwise the daemon's re-serve may end the stream first).
    d.signal(libc::SIGSTOP);
    fs::remove_file(&sock).unwrap();
    let deregistered = k.wait_for(WAIT, |r| {
        r.deregistrations.get(R).copied().filter(|n| *n >= 1)
    });
    d.signal(libc::SIGCONT);
    assert!(
        deregistered.is_some(),
        "socket removal did not deregister: {:?}",
        k.recorded()
    );
    assert_eq!(
        k.recorded().counts(R),
        Some((0, 3)),
        "a deregistered plugin's devices are unhealthy"
    );
    wait_registered(&k, &d, 2);
    assert!(wait_until(WAIT, || sock.exists()));
}

#[test]
fn simulated_watcher_ignores_dot_files_and_non_sockets() {
    let dir = TestDir::new();
    let reg = dir.path.join("reg");
    let k = SimKubelet::start_with_registry(&dir.dp(), &reg).unwrap();
    let _hidden = UnixListener::bind(reg.join(".hidden.sock")).unwrap();
    fs::write(reg.join("plain-file"), b"x").unwrap();
    // A socket that is not a device plugin at all: GetInfo fails, so nothing registers.
    let _junk = UnixListener::bind(reg.join("junk.sock")).unwrap();
    fs::create_dir_all(dir.host("data")).unwrap();
    let d = Daemon::start(
        &dir,
        &dir_config(R, &dir.host("data"), "numDevices: 3\n"),
        &[
            "--registration",
            "plugin-watcher",
            "--plugins-registry-dir",
            reg.to_str().unwrap(),
        ],
    );
    wait_registered(&k, &d, 1);
    let rec = k.recorded();
    assert_eq!(rec.registrations.len(), 1, "{:?}", rec.registrations);
    assert!(rec.rejected.is_empty(), "{:?}", rec.rejected);
}
