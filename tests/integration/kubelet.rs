//! Surviving the kubelet: restarts, late start, a hanging socket, the
//! directory vanishing (B2, B3, B4, B9).

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use grpcio::CallOption;
use k8s_hostpath_device_plugin::api::v1beta1::Empty;
use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{client, dir_config, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

/// Waits for the `n`-th registration of `R` with a full healthy list.
#[track_caller]
fn wait_registered(k: &SimKubelet, d: &Daemon, n: usize) {
    k.wait_for(WAIT, |r| {
        (r.registrations_of(R) >= n && r.counts(R) == Some((4, 4))).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "registration {n} never completed; kubelet saw {:?}\n{}",
            k.recorded(),
            d.log()
        )
    });
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A kubelet and a daemon serving `R` with 4 devices, registered.
fn registered(dir: &TestDir) -> (SimKubelet, Daemon) {
    fs::create_dir_all(dir.host("data")).unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        dir,
        &dir_config(R, &dir.host("data"), "numDevices: 4\n"),
        &[],
    );
    wait_registered(&k, &d, 1);
    (k, d)
}

#[test]
fn kubelet_restart_fifty_times() {
    let dir = TestDir::new();
    let (mut k, d) = registered(&dir);
    let mut latencies = Vec::new();
    for round in 1..=50 {
        let down = if round % 2 == 0 {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        };
        k.restart(down).unwrap();
        let t = Instant::now();
        wait_registered(&k, &d, round + 1);
        latencies.push(t.elapsed());
        let resp = k
            .allocate(R, &[&["3"]])
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", d.log()));
        assert_eq!(resp.container_responses[0].mounts.len(), 1);
    }
    let rec = k.recorded();
    assert_eq!(
        rec.registrations_of(R),
        51,
        "exactly one registration per kubelet start"
    );
    assert_eq!(
        rec.late_stream_ends, 0,
        "no superseded stream cut a newer registration"
    );
    assert_eq!(dir.sockets(), ["example.com-data.sock", "kubelet.sock"]);
    let max = *latencies.iter().max().unwrap();
    println!(
        "kubelet restart -> re-registered with a full list: median {:?}, max {max:?} over 50",
        median(&mut latencies)
    );
}

/// A `kubelet.sock` that accepts connections and never says a word.
struct Mute {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Mute {
    fn start(path: &std::path::Path) -> Mute {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let mut buf = [0u8; 1024];
                        s.set_nonblocking(true).unwrap();
                        let _ = s.read(&mut buf);
                        held.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Mute {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn mute_kubelet_socket_blocks_nothing() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let mute = Mute::start(&dir.dp().join("kubelet.sock"));
    let d = Daemon::start(
        &dir,
        &dir_config(R, &dir.host("data"), "numDevices: 4\n"),
        &[],
    );
    d.wait_log("Register sent");
    // Still serving while the registration hangs.
    let c = client(&dir.dp().join("example.com-data.sock"));
    c.get_device_plugin_options(
        &Empty::new(),
        CallOption::default().timeout(Duration::from_secs(2)),
    )
    .unwrap_or_else(|e| panic!("not serving while Register hangs: {e}\n{}", d.log()));
    // A real kubelet replaces the mute one: registered at once.
    drop(mute);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    wait_registered(&k, &d, 1);
}

#[test]
fn sigterm_during_pending_registration() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    let _mute = Mute::start(&dir.dp().join("kubelet.sock"));
    let mut d = Daemon::start(&dir, &dir_config(R, &dir.host("data"), ""), &[]);
    d.wait_log("Register sent");
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM with a hanging Register took {took:?}"
    );
    assert_eq!(
        dir.sockets(),
        ["kubelet.sock"],
        "our socket removed, the kubelet's kept"
    );
    println!("SIGTERM with a Register in flight -> exited in {took:?}");
}

#[test]
fn device_plugin_dir_removed_and_recreated() {
    let dir = TestDir::new();
    let (mut k, d) = registered(&dir);
    k.stop();
    fs::remove_dir_all(dir.dp()).unwrap();
    d.wait_log("the socket directory is gone");
    fs::create_dir(dir.dp()).unwrap();
    d.wait_log("the socket directory is back");
    assert!(
        wait_until(WAIT, || dir.dp().join("example.com-data.sock").exists()),
        "{}",
        d.log()
    );
    let k2 = SimKubelet::start(&dir.dp()).unwrap();
    wait_registered(&k2, &d, 1);
    assert!(k2.allocate(R, &[&["0"]]).is_ok());
}

#[test]
fn other_files_in_the_directory_are_never_touched() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("data")).unwrap();
    fs::write(dir.dp().join("kubelet_internal_checkpoint"), b"{}").unwrap();
    let other = UnixListener::bind(dir.dp().join("other-vendor.sock")).unwrap();
    let mut k = SimKubelet::start(&dir.dp()).unwrap();
    drop(other);
    let other = UnixListener::bind(dir.dp().join("other-vendor.sock")).unwrap();
    let mut d = Daemon::start(
        &dir,
        &dir_config(R, &dir.host("data"), "numDevices: 4\n"),
        &[],
    );
    wait_registered(&k, &d, 1);
    k.restart(Duration::ZERO).unwrap();
    wait_registered(&k, &d, 2);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(5)).code(), Some(0));
    drop(other);
    // The kubelet's restart removed the other vendor's socket, as a real one
    // does; the daemon removed only its own; the checkpoint survived both.
    assert_eq!(
        fs::read(dir.dp().join("kubelet_internal_checkpoint")).unwrap(),
        b"{}"
    );
    assert_eq!(
        dir.sockets(),
        ["kubelet.sock", "kubelet_internal_checkpoint"]
    );
}
