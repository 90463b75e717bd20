//! Start, stop and the kubelet going away (B2–B4, B9, B13).

use std::fs;
use std::time::Duration;

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

#[test]
fn sigterm_with_open_stream_exits_cleanly() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let mut d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    k.wait_for(WAIT, |r| r.counts(R)).expect("stream open");
    let kubelet_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(k.socket_path()).unwrap());
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert_eq!(
        dir.sockets(),
        ["kubelet.sock"],
        "our socket is removed, nothing else"
    );
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(k.socket_path()).unwrap());
    assert_eq!(ino, kubelet_ino, "kubelet.sock untouched");
    // The stream was ended by the daemon (the kubelet saw its end).
    k.wait_for(WAIT, |r| {
        r.streams_ended.get(R).copied().filter(|n| *n >= 1)
    })
    .expect("stream ended");
    assert!(d.log().contains("shutdown complete"));
}

#[test]
fn sigint_and_sigquit_also_stop() {
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        let dir = TestDir::new();
        fs::create_dir_all(dir.host("data")).unwrap();
        let mut d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
        d.wait_log("serving on");
        d.signal(sig);
        assert_eq!(
            d.wait_exit(Duration::from_secs(5)).code(),
            Some(0),
            "signal {sig}: {}",
            d.log()
        );
        assert!(dir.sockets().is_empty(), "{:?}", dir.sockets());
    }
}

#[test]
fn sighup_keeps_serving() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    k.wait_for(WAIT, |r| r.counts(R)).expect("registered");
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP");
    assert!(k.allocate(R, &[&["0"]]).is_ok());
    assert_eq!(k.recorded().registrations.len(), 1);
}

#[test]
fn daemon_started_before_kubelet_registers_when_it_appears() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    d.wait_log("waiting for");
    let k = SimKubelet::start(&dir.dp()).unwrap();
    k.wait_for(WAIT, |r| r.counts(R).filter(|c| *c == (100, 100)))
        .unwrap_or_else(|| panic!("not registered after kubelet.sock appeared:\n{}", d.log()));
}

#[test]
fn kubelet_restart_re_registers() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let mut k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    k.wait_for(WAIT, |r| r.counts(R)).expect("registered");
    // What a kubelet does on start: its old socket goes, every socket in
    // the directory is deleted, a new kubelet.sock appears.
    k.stop();
    fs::remove_file(dir.dp().join("example.com-data.sock")).unwrap();
    let k2 = SimKubelet::start(&dir.dp()).unwrap();
    k2.wait_for(WAIT, |r| r.counts(R).filter(|c| *c == (100, 100)))
        .unwrap_or_else(|| panic!("not re-registered:\n{}", d.log()));
    assert!(k2.allocate(R, &[&["1"]]).is_ok());
    assert!(d.log().contains("kubelet restart seen"));
}

#[test]
fn own_socket_deleted_is_served_again() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    k.wait_for(WAIT, |r| r.counts(R)).expect("registered");
    let sock = dir.dp().join("example.com-data.sock");
    fs::remove_file(&sock).unwrap();
    k.wait_for(WAIT, |r| (r.registrations_of(R) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("not registered again:\n{}", d.log()));
    assert!(wait_until(WAIT, || sock.exists()));
    assert!(k.allocate(R, &[&["2"]]).is_ok());
}

#[test]
fn foreign_file_at_socket_path_is_left_alone() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("a")).unwrap();
    fs::create_dir_all(dir.host("b")).unwrap();
    // Something that is not our socket sits where resource a's socket goes:
    // a's socket is refused, b is served, and the file is untouched.
    fs::write(dir.dp().join("example.com-a.sock"), b"not ours").unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let config = format!(
        "resources:\n- {{resourceName: example.com/a, hostPath: {{path: {}}}}}\n- {{resourceName: example.com/b, hostPath: {{path: {}}}}}\n",
        dir.host("a").display(),
        dir.host("b").display()
    );
    let mut d = Daemon::start(&dir, &config, &[]);
    k.wait_for(WAIT, |r| r.counts("example.com/b"))
        .unwrap_or_else(|| panic!("{}", d.log()));
    d.wait_log("a file that is not a socket is in the way");
    // The operator removes it: the resource is served after all (retried
    // with backoff), the error having been logged once.
    let stray = dir.dp().join("example.com-a.sock");
    let kept = fs::read(&stray).unwrap();
    fs::remove_file(&stray).unwrap();
    k.wait_for(WAIT, |r| r.counts("example.com/a"))
        .unwrap_or_else(|| panic!("{}", d.log()));
    assert_eq!(d.log().matches("is in the way").count(), 1, "{}", d.log());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert_eq!(kept, b"not ours");
}

#[test]
fn foreign_file_is_never_removed() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("a")).unwrap();
    fs::write(dir.dp().join("example.com-a.sock"), b"not ours").unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let mut d = Daemon::start(&dir, &dir_config("example.com/a", &dir.host("a"), ""), &[]);
    d.wait_log("is in the way");
    assert!(k.recorded().registrations.is_empty());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert_eq!(
        fs::read(dir.dp().join("example.com-a.sock")).unwrap(),
        b"not ours"
    );
}

/// How many epoll instances the daemon holds.
fn epoll_instances(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| {
        fds.filter_map(|f| fs::read_link(f.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().contains("eventpoll"))
            .count()
    })
}

#[test]
fn grpc_polls_with_poll_unless_the_environment_says_otherwise() {
    // Each daemon on a node of its own; `env` adds to the daemon's.
    let served = |env: &[(&str, &str)]| {
        let dir = TestDir::new();
        fs::create_dir_all(dir.host("data")).unwrap();
        let cfg = dir.write_config(&dir_config(R, &dir.host("data"), ""));
        let k = SimKubelet::start(&dir.dp()).unwrap();
        let d = Daemon::spawn_env(
            &dir,
            &["--config", cfg.to_str().unwrap()],
            env,
            "daemon.log",
        );
        k.wait_for(WAIT, |r| r.counts(R)).expect("served");
        epoll_instances(d.child.id())
    };
    // Asked for: gRPC's epoll1 holds an epoll instance per poller.
    assert!(
        served(&[("GRPC_POLL_STRATEGY", "epoll1")]) > 0,
        "GRPC_POLL_STRATEGY=epoll1 was not respected"
    );
    if std::env::var_os("GRPC_POLL_STRATEGY").is_some() {
        println!("SKIPPED the default: GRPC_POLL_STRATEGY is set for this test run");
        return;
    }
    assert_eq!(served(&[]), 0, "the default poller is not poll(2)");
}
