//! `make soak`: a bounded soak of the real binary (issue 6).
//!
//! Kubelet restarts interleaved with config reloads (valid and invalid),
//! host-path flaps, devices of a pattern resource plugged and unplugged,
//! and a continuous Allocate load on both, against the simulated kubelet. Then checks: every restart re-registered, the kubelet's view
//! matches the config, no Allocate error but unknown IDs, file descriptors
//! and threads back to their starting count, RSS growth under 1 MB.
//! Prints the figures; exits 1 if a check fails.
//!
//! `soak` runs 1000 restarts, 200 reloads, 1000 flaps; `soak --short`
//! (in `make test`) 50, 10, 50.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;
use k8s_hostpath_device_plugin::sim::SimKubelet;

const WAIT: Duration = Duration::from_secs(10);
const STABLE: &str = "example.com/stable";
const TOGGLE: &str = "example.com/toggle";
const SERIAL: &str = "example.com/serial";

/// The pattern resource's directory, beside the data directory.
fn devs(data: &Path) -> std::path::PathBuf {
    data.with_file_name("devs")
}

fn config(data: &Path, devices: u32, toggle: bool) -> String {
    let mut s = format!(
        "resources:\n  - {{resourceName: {STABLE}, numDevices: {devices}, hostPath: {{path: {}, type: Directory}}}}\n",
        data.display()
    );
    s.push_str(&format!(
        "  - {{resourceName: {SERIAL}, hostPath: {{path: '{}/tty*'}}, healthCheckInterval: 1h, removeAfter: 0s}}\n",
        devs(data).display()
    ));
    if toggle {
        s.push_str(&format!(
            "  - {{resourceName: {TOGGLE}, numDevices: 3, hostPath: {{path: {}}}}}\n",
            data.display()
        ));
    }
    s
}

fn proc_count(pid: u32, what: &str) -> u64 {
    match what {
        "fds" => fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        key => fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0),
    }
}

/// Threads other than gRPC's event-engine pool (which grows under load and
/// shrinks when idle, by its own policy) and the daemon's threads that
/// exist only while they have work (health-check workers, which end 1 s
/// after their last check, and the handover thread, which ends once the
/// node has settled), and the pool's size.
fn threads(pid: u32) -> (u64, u64) {
    let (mut own, mut pool) = (0, 0);
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        match comm.trim() {
            "event_engine" => pool += 1,
            "health-check" | "handover" => {}
            _ => own += 1,
        }
    }
    (own, pool)
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let (restarts, reloads, flaps) = if short {
        (50, 10, 50)
    } else {
        (1000, 200, 1000)
    };
    let root = std::env::temp_dir().join(format!("hps{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let (dp, data, cfg) = (root.join("dp"), root.join("data"), root.join("config.yaml"));
    fs::create_dir_all(&dp).unwrap();
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(devs(&data)).unwrap();
    // The pattern resource's devices that exist now (all listed Healthy).
    let plugged = Arc::new(std::sync::Mutex::new(
        std::collections::BTreeSet::<String>::new(),
    ));
    let replace = |text: &str| {
        fs::write(root.join("config.tmp"), text).unwrap();
        fs::rename(root.join("config.tmp"), &cfg).unwrap();
    };
    replace(&config(&data, 10, false));

    let mut kubelet = SimKubelet::start(&dp).unwrap();
    let log = root.join("daemon.log");
    let mut child = Command::new(common::daemon_binary().expect("daemon binary"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--device-plugin-dir",
            dp.to_str().unwrap(),
        ])
        .env(
            "RUST_LOG",
            std::env::var("SOAK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();

    // Allocate load on the stable resource; paused (write lock) while the
    // kubelet is down, since a real kubelet makes no calls then.
    let gate = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, unknown, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let last_error = Arc::new(std::sync::Mutex::new(String::new()));

    let wait_view = |k: &SimKubelet, devices: usize, toggle: bool, regs: usize| {
        let want: Vec<(String, String)> = plugged
            .lock()
            .unwrap()
            .iter()
            .map(|id| (id.clone(), "Healthy".to_string()))
            .collect();
        k.wait_for(WAIT, |r| {
            let serial_ok = r.devices.get(SERIAL).is_some_and(|d| {
                let mut d = d.clone();
                d.sort();
                d == want
            });
            let stable_ok = r.counts(STABLE) == Some((devices, devices)) && serial_ok;
            let toggle_ok = if toggle {
                r.counts(TOGGLE) == Some((3, 3))
            } else {
                r.counts(TOGGLE).is_none_or(|c| c.1 == 0)
            };
            (stable_ok && toggle_ok && r.registrations.len() >= regs).then_some(())
        })
        .is_some()
    };
    if !wait_view(&kubelet, 10, false, 1) {
        eprintln!(
            "the daemon never registered; log: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::process::exit(1);
    }

    let load = {
        let (gate, stop, ok, unknown, errors, last_error) = (
            gate.clone(),
            stop.clone(),
            ok.clone(),
            unknown.clone(),
            errors.clone(),
            last_error.clone(),
        );
        let sock = dp.join("example.com-stable.sock");
        let serial_sock = dp.join("example.com-serial.sock");
        let serial_id = devs(&data).join("tty0").display().to_string();

        thread::spawn(move || {
            let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let _g = gate.read().unwrap();
                let ch = grpcio::ChannelBuilder::new(env.clone())
                    .default_authority("localhost")
                    .connect(&format!("unix:{}", sock.display()));
                let cl = k8s_hostpath_device_plugin::api::v1beta1_grpc::DevicePluginClient::new(ch);
                let serial = k8s_hostpath_device_plugin::api::v1beta1_grpc::DevicePluginClient::new(
                    grpcio::ChannelBuilder::new(env.clone())
                        .default_authority("localhost")
                        .connect(&format!("unix:{}", serial_sock.display())),
                );
                for _ in 0..20 {
                    n += 1;
                    // The pattern resource's device, present or not: an
                    // answer or INVALID_ARGUMENT, never anything else.
                    if n % 4 == 0 {
                        let mut req =
                            k8s_hostpath_device_plugin::api::v1beta1::AllocateRequest::new();
                        let mut c =
                            k8s_hostpath_device_plugin::api::v1beta1::ContainerAllocateRequest::new(
                            );
                        c.devices_ids = vec![serial_id.clone()];
                        req.container_requests.push(c);
                        match serial.allocate(
                            &req,
                            grpcio::CallOption::default().timeout(Duration::from_secs(2)),
                        ) {
                            Ok(r) if r.container_responses[0].mounts[0].host_path == serial_id => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(r) => {
                                *last_error.lock().unwrap() = format!("wrong answer {r:?}");
                                errors.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(grpcio::Error::RpcFailure(s))
                                if s.code() == RpcStatusCode::INVALID_ARGUMENT =>
                            {
                                unknown.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                *last_error.lock().unwrap() = e.to_string();
                                errors.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    let mut req = k8s_hostpath_device_plugin::api::v1beta1::AllocateRequest::new();
                    let mut c =
                        k8s_hostpath_device_plugin::api::v1beta1::ContainerAllocateRequest::new();
                    c.devices_ids = vec![(n % 20).to_string()];
                    req.container_requests.push(c);
                    match cl.allocate(
                        &req,
                        grpcio::CallOption::default().timeout(Duration::from_secs(2)),
                    ) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(grpcio::Error::RpcFailure(s))
                            if s.code() == RpcStatusCode::INVALID_ARGUMENT =>
                        {
                            unknown.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            *last_error.lock().unwrap() = e.to_string();
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        })
    };

    let (mut devices, mut toggle) = (10usize, false);
    let mut baseline: Option<(u64, u64, u64)> = None;
    let mut restart_lat = Vec::new();
    let (mut applied, mut refused) = (0, 0);
    let reload_every = (restarts / reloads).max(1);
    let steps = restarts.max(flaps);
    for i in 0..steps {
        if i < restarts {
            let _g = gate.write().unwrap();
            let regs = kubelet.recorded().registrations.len();
            let expect = 2 + usize::from(toggle);
            kubelet
                .restart(if i % 2 == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(20)
                })
                .unwrap();
            let t0 = Instant::now();
            if wait_view(&kubelet, devices, toggle, regs + expect) {
                restart_lat.push(t0.elapsed());
            } else {
                failures.push(format!(
                    "restart {i}: not re-registered; kubelet saw {:?}",
                    kubelet.recorded().counts(STABLE)
                ));
            }
        }
        if i % reload_every == 0 && applied + refused < reloads {
            if (applied + refused) % 2 == 1 {
                replace("resources:\n  - resourceName: nope\n    hostPath: {path: relative}\n");
                refused += 1;
                // Refused: the view stays as it was.
                thread::sleep(Duration::from_millis(30));
            } else {
                devices = if devices == 10 { 20 } else { 10 };
                toggle = !toggle;
                replace(&config(&data, devices as u32, toggle));
                applied += 1;
            }
            if !wait_view(&kubelet, devices, toggle, 0) {
                failures.push(format!(
                    "reload {}: kubelet view {:?} / {:?}",
                    applied + refused,
                    kubelet.recorded().counts(STABLE),
                    kubelet.recorded().counts(TOGGLE)
                ));
            }
        }
        if i < flaps {
            fs::remove_dir(&data).unwrap();
            let down = kubelet.wait_for(WAIT, |r| {
                r.counts(STABLE).filter(|c| c.0 == 0 && c.1 == devices)
            });
            fs::create_dir(&data).unwrap();
            let up = kubelet.wait_for(WAIT, |r| r.counts(STABLE).filter(|c| c.0 == devices));
            if down.is_none() || up.is_none() {
                failures.push(format!("flap {i} not seen"));
            }
            // A device of the pattern resource plugged or unplugged.
            let dev = devs(&data).join(format!("tty{}", i % 4));
            let id = dev.display().to_string();
            if plugged.lock().unwrap().remove(&id) {
                fs::remove_file(&dev).unwrap();
            } else {
                fs::write(&dev, b"").unwrap();
                plugged.lock().unwrap().insert(id);
            }
            if !wait_view(&kubelet, devices, toggle, 0) {
                failures.push(format!(
                    "hotplug {i}: kubelet lists {:?}, expected {:?}",
                    kubelet.recorded().devices.get(SERIAL),
                    plugged.lock().unwrap()
                ));
            }
        }
        // After a warm-up, in the same config shape as at the end (no
        // toggle resource), so the counts compare like with like.
        if baseline.is_none() && i >= steps / 10 && !toggle {
            thread::sleep(Duration::from_millis(200));
            baseline = Some((
                proc_count(pid, "fds"),
                threads(pid).0,
                proc_count(pid, "VmRSS:"),
            ));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
    // Settle: the final config back to the starting shape, then measure.
    if toggle {
        toggle = false;
        replace(&config(&data, devices as u32, false));
        applied += 1;
    }
    if !wait_view(&kubelet, devices, toggle, 0) {
        failures.push("final view does not match the config".into());
    }
    // Connections close and threads end a moment after the load stops:
    // give counts up to 5 s to settle before calling anything a leak.
    // gRPC's event-engine pool grows under load and lets an extra thread
    // go only once it has been idle 20 s (kIdleThreadLimit in grpcio-sys's
    // work_stealing_thread_pool.cc): the pool gets up to 45 s (25 s was
    // short once on a clean-clone CI run while other builds loaded the
    // machine: 5 threads at the deadline).
    let (fd0, th0, rss0) = baseline.unwrap_or((u64::MAX, u64::MAX, u64::MAX));
    let measure = || {
        (
            proc_count(pid, "fds"),
            threads(pid).0,
            proc_count(pid, "VmRSS:"),
        )
    };
    let settle_until = Instant::now() + Duration::from_secs(5);
    let pool_until = Instant::now() + Duration::from_secs(45);
    let mut end = measure();
    while (end.0 > fd0 || end.1 > th0) && Instant::now() < settle_until {
        thread::sleep(Duration::from_millis(100));
        end = measure();
    }
    while threads(pid).1 > 4 && Instant::now() < pool_until {
        thread::sleep(Duration::from_millis(100));
    }
    // With the load stopped, the daemon sleeps: a poller spinning on a
    // closed connection (all the kubelet's restarts left some) would take
    // a whole core.
    let c0 = common::cpu_ticks(pid);
    thread::sleep(Duration::from_secs(2));
    let idle_share = (common::cpu_ticks(pid) - c0) as f64 / (2.0 * common::clock_ticks() as f64);

    // The kubelet sees a reload's new list a moment before the daemon logs
    // "reload applied": give the log up to a second to catch up.
    let log_deadline = Instant::now() + Duration::from_secs(1);
    let mut log_text = fs::read_to_string(&log).unwrap_or_default();
    while log_text.matches("reload applied").count() < applied && Instant::now() < log_deadline {
        thread::sleep(Duration::from_millis(10));
        log_text = fs::read_to_string(&log).unwrap_or_default();
    }
    let applied_logged = log_text.matches("reload applied").count();
    let refused_logged = log_text.matches("reload refused").count();
    let reg_failures: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("registration failed"))
        .collect();
    // A leak shows as growth; one fewer (a connection of an earlier kubelet
    // still closing at the baseline) is not one.
    if end.0 > fd0 {
        failures.push(format!("file descriptors {fd0} -> {}", end.0));
    }
    let pool = threads(pid).1;
    if pool > 4 {
        failures.push(format!(
            "gRPC's event-engine pool still holds {pool} threads when idle"
        ));
    }
    if idle_share > 0.25 {
        failures.push(format!(
            "{:.0} % of a core while idle after the load",
            idle_share * 100.0
        ));
    }
    if end.1 > th0 {
        failures.push(format!("threads {th0} -> {}", end.1));
    }
    if end.2 > rss0 + 1024 {
        failures.push(format!("RSS grew {} kB -> {} kB", rss0, end.2));
    }
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        failures.push(format!(
            "{errs} Allocate errors other than unknown IDs; last: {}",
            last_error.lock().unwrap()
        ));
    }
    if log_text.contains("panicked") {
        failures.push("the daemon panicked".into());
    }
    let rec = kubelet.recorded();
    if rec.late_stream_ends > 0 {
        failures.push(format!(
            "{} late stream ends cut a registration",
            rec.late_stream_ends
        ));
    }

    restart_lat.sort();
    let pct = |p: usize| {
        restart_lat
            .get(restart_lat.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "soak: {:?} for {restarts} kubelet restarts, {reloads} reloads, {flaps} flaps and as many plugs or unplugs",
        started.elapsed()
    );
    println!("  restarts re-registered: {}/{restarts}; restart -> full view: median {:?}, p99 {:?}, max {:?}", restart_lat.len(), pct(50), pct(99), restart_lat.last().copied().unwrap_or_default());
    println!("  reloads: {applied} valid (daemon logged {applied_logged} applied), {refused} invalid (logged {refused_logged} refused)");
    println!(
        "  Allocate: {} ok, {} unknown-ID refusals, {errs} other errors",
        ok.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed)
    );
    println!(
        "  CPU while idle after the load: {:.1} % of a core",
        idle_share * 100.0
    );
    println!(
        "  fds {fd0} -> {}, threads (besides gRPC's event-engine pool) {th0} -> {}, RSS {rss0} kB -> {} kB",
        end.0, end.1, end.2
    );
    println!(
        "  registration attempts that failed and were retried: {}",
        reg_failures.len()
    );
    if let Some(first) = reg_failures.first() {
        println!("    first: {first}");
    }

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    if !status.success() {
        failures.push(format!("daemon exit status {status}"));
    }
    kubelet.stop();
    if !failures.is_empty() || std::env::var_os("SOAK_LOG").is_some() {
        let kept = std::env::temp_dir().join("soak-daemon.log");
        if fs::copy(&log, &kept).is_ok() {
            println!("  daemon log kept at {}", kept.display());
        }
    }
    let _ = fs::remove_dir_all(&root);
    if failures.is_empty() {
        println!("soak: 1 passed, 0 failed");
    } else {
        for f in &failures {
            println!("  FAILED: {f}");
        }
        println!("soak: 0 passed, 1 failed");
        std::process::exit(1);
    }
}
