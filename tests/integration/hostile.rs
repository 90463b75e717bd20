//! Hostile clients and injected faults (B13, issue 6): the daemon stays up,
//! within memory bounds, keeps serving the kubelet, and logs each fault once.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode};
use k8s_hostpath_device_plugin::api::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use k8s_hostpath_device_plugin::api::v1beta1_grpc::DevicePluginClient;
use k8s_hostpath_device_plugin::sim::SimKubelet;
use k8s_hostpath_device_plugin::util::block_on_timeout;

use crate::harness::{client, dir_config, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

fn rss_kb(d: &Daemon) -> u64 {
    fs::read_to_string(format!("/proc/{}/status", d.child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn started(dir: &TestDir, devices: u32) -> (SimKubelet, Daemon) {
    fs::create_dir_all(dir.host("data")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        dir,
        &dir_config(R, &dir.host("data"), &format!("numDevices: {devices}\n")),
        &[],
    );
    k.wait_for(WAIT, |r| r.counts(R).filter(|c| c.0 == devices as usize))
        .unwrap_or_else(|| panic!("{}", d.log()));
    (k, d)
}

#[track_caller]
fn still_serving(k: &SimKubelet, d: &Daemon) {
    assert!(
        k.allocate(R, &[&["0"]]).is_ok(),
        "the kubelet can no longer allocate:\n{}",
        d.log()
    );
}

#[test]
fn a_thousand_streams_that_never_read() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, 100);
    let before = rss_kb(&d);
    let sock = dir.dp().join("example.com-data.sock");
    // 10 connections x 100 streams, never polled.
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let mut held = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..10 {
        let ch = ChannelBuilder::new(env.clone())
            .use_local_subchannel_pool(true)
            .connect(&format!("unix:{}", sock.display()));
        let c = DevicePluginClient::new(ch);
        for _ in 0..100 {
            held.push(
                c.list_and_watch(&Empty::new(), CallOption::default())
                    .unwrap(),
            );
        }
        held.push(
            c.list_and_watch(&Empty::new(), CallOption::default())
                .unwrap(),
        );
        clients.push(c);
    }
    let opened = || d.log().matches("ListAndWatch opened").count();
    assert!(
        wait_until(WAIT, || opened() >= 1000),
        "only {} streams opened",
        opened()
    );
    // Health flips while nobody reads: updates coalesce instead of piling up.
    for _ in 0..20 {
        fs::remove_dir(dir.host("data")).unwrap();
        k.wait_for(WAIT, |r| r.counts(R).filter(|c| c.0 == 0))
            .expect("kubelet still gets updates");
        fs::create_dir(dir.host("data")).unwrap();
        k.wait_for(WAIT, |r| r.counts(R).filter(|c| c.0 == 100))
            .expect("kubelet still gets updates");
    }
    still_serving(&k, &d);
    let after = rss_kb(&d);
    println!("1010 unread streams, 40 updates: RSS {before} kB -> {after} kB");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
    drop(held);
    drop(clients);
    still_serving(&k, &d);
}

#[test]
fn huge_allocate_requests() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, 100_000);
    let ids: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t = Instant::now();
    let resp = k.allocate(R, &[&refs]).unwrap();
    assert_eq!(resp.container_responses[0].mounts.len(), 1);
    println!("Allocate with 100000 IDs answered in {:?}", t.elapsed());
    // 100k unknown IDs: refused with a bounded message.
    let bad: Vec<String> = (100_000..200_000).map(|i| i.to_string()).collect();
    let bad_refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    match k.allocate(R, &[&bad_refs]) {
        Err(grpcio::Error::RpcFailure(s)) => {
            assert_eq!(s.code(), RpcStatusCode::INVALID_ARGUMENT);
            assert!(
                s.message().len() < 1000,
                "message of {} bytes",
                s.message().len()
            );
            assert!(s.message().contains("and 99990 more"), "{}", s.message());
        }
        other => panic!("{other:?}"),
    }
    // A request with 10000 empty containers.
    let c = client(&dir.dp().join("example.com-data.sock"));
    let mut req = AllocateRequest::new();
    req.container_requests = (0..10_000)
        .map(|_| ContainerAllocateRequest::new())
        .collect();
    let resp = c
        .allocate(&req, CallOption::default().timeout(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(resp.container_responses.len(), 10_000);
    still_serving(&k, &d);
}

#[test]
fn garbage_bytes_on_the_socket() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, 10);
    let sock = dir.dp().join("example.com-data.sock");
    let junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0u8; 65536],
        (0..=255u8).cycle().take(100_000).collect(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
    ];
    for bytes in junk {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&bytes);
        let mut buf = [0u8; 4096];
        // The daemon answers or closes; either way it must not hang or die.
        let _ = s.read(&mut buf);
    }
    // Connect and vanish without a byte, many times.
    for _ in 0..200 {
        drop(UnixStream::connect(&sock).unwrap());
    }
    still_serving(&k, &d);
    assert!(!d.log().contains("panicked"));
}

#[test]
fn client_disconnecting_mid_stream() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, 10);
    for _ in 0..20 {
        let c = client(&dir.dp().join("example.com-data.sock"));
        let mut s = c
            .list_and_watch(&Empty::new(), CallOption::default())
            .unwrap();
        let first = block_on_timeout(s.next(), WAIT)
            .expect("first list")
            .unwrap()
            .unwrap();
        assert_eq!(first.devices.len(), 10);
        drop(s);
        drop(c);
    }
    fs::remove_dir(dir.host("data")).unwrap();
    k.wait_for(WAIT, |r| r.counts(R).filter(|c| c.0 == 0))
        .expect("update after dropped streams");
    still_serving(&k, &d);
}

/// A tmpfs the test can fill, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},nr_inodes=64"),
                "none",
            ])
            .arg(at)
            .status();
        match ok {
            Ok(s) if s.success() => Some(Tmpfs(at.into())),
            _ => None,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_filesystem_fails_or_create_once() {
    let dir = TestDir::new();
    let Some(fs_mount) = Tmpfs::mount(&dir.host("small"), "64k") else {
        println!("SKIPPED full_filesystem_fails_or_create_once: cannot mount tmpfs here");
        return;
    };
    // Fill it.
    let filler = fs_mount.0.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    // Use the inodes too (tmpfs counts them).
    for i in 0.. {
        if fs::File::create(fs_mount.0.join(format!("i{i}"))).is_err() {
            break;
        }
    }
    let target = fs_mount.0.join("made");
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let config = format!(
        "resourceName: {R}\nnumDevices: 2\nhostPath: {{path: {}, type: DirectoryOrCreate}}\nhealthCheckInterval: 100ms\n",
        target.display()
    );
    let d = Daemon::start(&dir, &config, &[]);
    k.wait_for(WAIT, |r| r.counts(R).filter(|c| *c == (0, 2)))
        .unwrap_or_else(|| panic!("{}", d.log()));
    std::thread::sleep(Duration::from_millis(500)); // several 100 ms checks fail meanwhile
    let log = d.log();
    assert!(log.contains("creating it failed"), "{log}");
    assert_eq!(
        log.matches("-> Unhealthy").count() + log.matches("is Unhealthy").count(),
        1,
        "logged once:\n{log}"
    );
    // Space comes back: created, Healthy.
    fs::remove_file(&filler).unwrap();
    for i in 0.. {
        if fs::remove_file(fs_mount.0.join(format!("i{i}"))).is_err() {
            break;
        }
    }
    k.wait_for(WAIT, |r| r.counts(R).filter(|c| *c == (2, 2)))
        .unwrap_or_else(|| panic!("{}", d.log()));
    assert!(target.is_dir());
}

#[test]
fn kubelet_sock_is_a_regular_file() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    fs::write(dir.dp().join("kubelet.sock"), b"not a socket").unwrap();
    let d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    d.wait_log("registration failed");
    std::thread::sleep(Duration::from_millis(1500)); // several retries
    let log = d.log();
    assert_eq!(
        log.matches(" WARN ").count(),
        1,
        "one warning, for the registration:\n{log}"
    );
    assert_eq!(
        log.matches("registration failed:").count(),
        1,
        "the same failure is logged once:\n{log}"
    );
    // A refused connection is first taken for a kubelet.sock that is not
    // listening yet: exactly 20 quick retries, then the logged backoff.
    assert_eq!(log.matches("not listening yet").count(), 20, "{log}");
    assert!(
        log.rfind("not listening yet") < log.find("registration failed:"),
        "{log}"
    );
    assert!(
        log.matches("registration failed again").count() >= 2,
        "and retried:\n{log}"
    );
    // Serving all along.
    let c = client(&dir.dp().join("example.com-data.sock"));
    c.get_device_plugin_options(
        &Empty::new(),
        CallOption::default().timeout(Duration::from_secs(2)),
    )
    .unwrap();
    // A real kubelet takes its place.
    fs::remove_file(dir.dp().join("kubelet.sock")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    k.wait_for(WAIT, |r| r.counts(R).filter(|c| c.0 == 100))
        .unwrap_or_else(|| panic!("{}", d.log()));
}

#[test]
fn config_file_deleted_is_logged_once() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, 10);
    fs::remove_file(dir.path.join("config.yaml")).unwrap();
    d.wait_log("cannot read the config");
    // More events in the directory: no new log line for the same problem.
    for i in 0..5 {
        fs::write(dir.path.join(format!("other{i}")), b"x").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.log().matches("cannot read the config").count(),
        1,
        "{}",
        d.log()
    );
    still_serving(&k, &d);
}

#[test]
fn signal_storm() {
    let dir = TestDir::new();
    let (k, mut d) = started(&dir, 10);
    let t = Instant::now();
    for _ in 0..100 {
        d.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    d.wait_log("reload applied");
    still_serving(&k, &d);
    assert_eq!(
        k.recorded().registrations_of(R),
        1,
        "reloads of an unchanged config re-register nothing"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

/// A read-only bind mount of a directory over itself; undone on drop.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn make(dir: &std::path::Path) -> Option<ReadOnly> {
        let bind = Command::new("mount")
            .arg("--bind")
            .arg(dir)
            .arg(dir)
            .status()
            .ok()?;
        if !bind.success() {
            return None;
        }
        let guard = ReadOnly(dir.into());
        let ro = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir)
            .status()
            .ok()?;
        ro.success().then_some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn read_only_device_plugin_dir_loses_nothing() {
    let dir = TestDir::new();
    let (k, d) = started(&dir, 10);
    let Some(ro) = ReadOnly::make(&dir.dp()) else {
        println!("SKIPPED read_only_device_plugin_dir_loses_nothing: cannot make a read-only bind mount here");
        return;
    };
    // A reload adds a resource while its socket cannot be created.
    let both = format!(
        "{}\n",
        dir_config(R, &dir.host("data"), "numDevices: 10\n")
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
            .replacen("    resourceName", "  - resourceName", 1)
    );
    let config = format!(
        "resources:\n{both}  - resourceName: example.com/late\n    numDevices: 2\n    hostPath: {{path: {}}}\n",
        dir.host("data").display()
    );
    dir.replace_config(&config);
    d.wait_log("example.com/late: cannot serve");
    still_serving(&k, &d);
    std::thread::sleep(Duration::from_millis(400)); // several retries fail meanwhile
    drop(ro);
    k.wait_for(WAIT, |r| {
        r.counts("example.com/late").filter(|c| *c == (2, 2))
    })
    .unwrap_or_else(|| panic!("not served once writable again:\n{}", d.log()));
    let log = d.log();
    assert_eq!(
        log.matches("example.com/late: cannot serve").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(
        log.contains("example.com/late: still cannot serve"),
        "retried:\n{log}"
    );
    assert_eq!(
        k.recorded().registrations_of(R),
        1,
        "the other resource was untouched"
    );
}
