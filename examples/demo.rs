//! `make demo`: the daemon against the simulated kubelet, told in plain words.
//!
//! Starts a simulated kubelet in a temporary device-plugin directory, runs
//! the real daemon binary with a demo config whose host path is a temporary
//! directory, then shows registration, the device list, health flipping when
//! the path is removed and restored, one Allocate answer, a kubelet restart
//! survived, then a reload adding a pattern resource whose devices are
//! plugged, unplugged and re-plugged, and a clean stop. `MODE=plugin-watcher` registers through the
//! kubelet's plugins registry instead of kubelet.sock.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use std::{env, fs, process};

use k8s_hostpath_device_plugin::sim::SimKubelet;

const RESOURCE: &str = "hostpath-device.k8s.io/sample";
const SERIAL: &str = "example.com/serial";
const WAIT: Duration = Duration::from_secs(10);

fn say(msg: &str) {
    println!("\n==> {msg}");
}

fn fail(msg: &str) -> ! {
    eprintln!("demo failed: {msg}");
    process::exit(1);
}

struct Cleanup(PathBuf, Option<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Plugs a "serial adapter": a character device node where the process may
/// make one (root), else a regular file (the pattern accepts any kind).
fn plug(path: &std::path::Path, minor: u32) {
    let c = std::ffi::CString::new(path.to_str().unwrap_or_default()).unwrap_or_default();
    // SAFETY: a valid path; the result is checked.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(188, minor)) };
    if rc != 0 {
        fs::write(path, b"").unwrap_or_else(|e| fail(&e.to_string()));
    }
}

/// Waits until the kubelet's list of SERIAL is `want` (IDs, all of `health`).
fn wait_serial(kubelet: &SimKubelet, want: &[(String, &str)]) -> Duration {
    let t = Instant::now();
    kubelet
        .wait_for(WAIT, |r| {
            let mut got = r.devices.get(SERIAL)?.clone();
            got.sort();
            let ok = got.len() == want.len()
                && got.iter().zip(want).all(|(g, w)| g.0 == w.0 && g.1 == w.1);
            ok.then_some(())
        })
        .unwrap_or_else(|| fail(&format!("{SERIAL} never listed {want:?}")));
    t.elapsed()
}

fn devices_that_come_and_go(
    kubelet: &SimKubelet,
    root: &std::path::Path,
    config: &std::path::Path,
    first: &str,
) {
    let dev = root.join("dev");
    fs::create_dir_all(&dev).unwrap_or_else(|e| fail(&e.to_string()));
    let pattern = dev.join("ttyUSB*");
    let mut text = String::from("resources:\n- ");
    text.push_str(&first.trim_end().replace('\n', "\n  "));
    text.push_str(&format!(
        "\n- resourceName: {SERIAL}\n  hostPath: {{path: '{}'}}\n  removeAfter: 2s\n",
        pattern.display()
    ));
    say("Devices that come and go: the config gains a pattern resource, each match one device:");
    print!("{text}");
    let tmp = config.with_extension("new");
    fs::write(&tmp, &text).unwrap_or_else(|e| fail(&e.to_string()));
    fs::rename(&tmp, config).unwrap_or_else(|e| fail(&e.to_string()));
    let t = wait_serial(kubelet, &[]);
    println!(
        "    after {t:?} the reload registered {SERIAL}, with no devices yet: nothing is plugged"
    );

    let id = |n: u32| dev.join(format!("ttyUSB{n}")).display().to_string();
    say(&format!("Plugging a serial adapter: {} appears ...", id(0)));
    plug(&dev.join("ttyUSB0"), 0);
    let t = wait_serial(kubelet, &[(id(0), "Healthy")]);
    println!(
        "    after {t:?} the kubelet lists device {} Healthy (inotify, no polling)",
        id(0)
    );
    say(&format!("Plugging a second one: {} ...", id(1)));
    plug(&dev.join("ttyUSB1"), 1);
    let t = wait_serial(kubelet, &[(id(0), "Healthy"), (id(1), "Healthy")]);
    println!("    after {t:?} both are listed; each ID is the matched path, so it never changes");
    let resp = kubelet
        .allocate(SERIAL, &[&[id(1).as_str()]])
        .unwrap_or_else(|e| fail(&format!("Allocate: {e}")));
    let c = &resp.container_responses[0];
    for d in &c.devices {
        println!(
            "    Allocate([\"{}\"]): device node {} -> {}, permissions {}",
            id(1),
            d.host_path,
            d.container_path,
            d.permissions
        );
    }
    for m in &c.mounts {
        println!(
            "    Allocate([\"{}\"]): mount {} -> {} (not a device node here: the demo is not root)",
            id(1),
            m.host_path,
            m.container_path
        );
    }

    say(&format!("Unplugging {} ...", id(0)));
    fs::remove_file(dev.join("ttyUSB0")).unwrap_or_else(|e| fail(&e.to_string()));
    let t = wait_serial(kubelet, &[(id(0), "Unhealthy"), (id(1), "Healthy")]);
    println!(
        "    after {t:?} it is Unhealthy: no new pod gets it; it stays listed for removeAfter (2s here, 1m by default)"
    );
    match kubelet.allocate(SERIAL, &[&[id(0).as_str()]]) {
        Err(e) => println!("    an Allocate for it now is refused: {e}"),
        Ok(_) => fail("a vanished device was allocated"),
    }
    let t = wait_serial(kubelet, &[(id(1), "Healthy")]);
    println!("    after another {t:?} it has left the list");

    say(&format!("Plugging {} back in ...", id(0)));
    plug(&dev.join("ttyUSB0"), 0);
    let t = wait_serial(kubelet, &[(id(0), "Healthy"), (id(1), "Healthy")]);
    println!(
        "    after {t:?} it is listed again under the same ID, {}",
        id(0)
    );
}

fn main() {
    let mode = env::var("MODE").unwrap_or_default();
    let watcher = match mode.as_str() {
        "" | "kubelet-socket" => false,
        "plugin-watcher" => true,
        other => fail(&format!(
            "MODE={other}: use kubelet-socket or plugin-watcher"
        )),
    };
    let root = env::temp_dir().join(format!("hpdp-demo-{}", process::id()));
    let mut guard = Cleanup(root.clone(), None);
    let dp_dir = root.join("device-plugins");
    let host_path = root.join("sample");
    fs::create_dir_all(&host_path).unwrap_or_else(|e| fail(&e.to_string()));
    fs::write(host_path.join("hello"), "hello from the host\n")
        .unwrap_or_else(|e| fail(&e.to_string()));
    let config = root.join("config.yaml");
    let config_text = format!(
        "resourceName: {RESOURCE}\nsocketName: hostpath-device.k8s.io-sample.sock\nnumDevices: 3\n\
         hostPath:\n  path: {}\n  type: Directory\nvolumeMount:\n  mountPath: /sample\n  readOnly: false\n\
         healthCheckInterval: 200ms\n",
        host_path.display()
    );
    fs::write(&config, &config_text).unwrap_or_else(|e| fail(&e.to_string()));

    say(&format!("Demo config ({}):", config.display()));
    print!("{config_text}");

    let registry = root.join("plugins_registry");
    let kubelet_sock = dp_dir.join("kubelet.sock");
    let mut kubelet = if watcher {
        say(&format!(
            "Starting the simulated kubelet on {}, watching {} for plugins",
            kubelet_sock.display(),
            registry.display()
        ));
        SimKubelet::start_with_registry(&dp_dir, &registry)
    } else {
        say(&format!(
            "Starting the simulated kubelet on {}",
            kubelet_sock.display()
        ));
        SimKubelet::start(&dp_dir)
    }
    .unwrap_or_else(|e| fail(&format!("simulated kubelet: {e}")));

    let bin = common::daemon_binary().unwrap_or_else(|e| fail(&e));
    let mut args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--device-plugin-dir".to_string(),
        dp_dir.display().to_string(),
    ];
    if watcher {
        args.push("--registration".into());
        args.push("plugin-watcher".into());
        args.push("--plugins-registry-dir".into());
        args.push(registry.display().to_string());
    }
    say(&format!(
        "Starting the daemon: {} {}",
        bin.display(),
        args.join(" ")
    ));
    let child = Command::new(&bin)
        .args(&args)
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bin.display())));
    let pid = child.id();
    guard.1 = Some(child);
    let started = Instant::now();

    let reg = kubelet
        .wait_for(WAIT, |r| r.registrations.first().cloned())
        .unwrap_or_else(|| fail("the daemon did not register"));
    say(&format!(
        "The kubelet received a registration after {:?}:",
        started.elapsed()
    ));
    println!("    resource name: {}", reg.resource_name);
    if watcher {
        println!(
            "    endpoint:      {} (found by the plugin watcher, which called GetInfo)",
            reg.endpoint
        );
    } else {
        println!(
            "    endpoint:      {} (in {})",
            reg.endpoint,
            dp_dir.display()
        );
    }
    println!("    API version:   {}", reg.version);

    let devices = kubelet
        .wait_for(WAIT, |r| {
            r.devices.get(RESOURCE).filter(|d| !d.is_empty()).cloned()
        })
        .unwrap_or_else(|| fail("no device list arrived"));
    say("ListAndWatch delivered the device list:");
    for (id, health) in &devices {
        println!("    device {id}: {health}");
    }

    say(&format!(
        "Removing {} from the host ...",
        host_path.display()
    ));
    fs::remove_dir_all(&host_path).unwrap_or_else(|e| fail(&e.to_string()));
    let t = Instant::now();
    kubelet
        .wait_for(WAIT, |r| {
            r.counts(RESOURCE).filter(|(h, _)| *h == 0).map(|_| ())
        })
        .unwrap_or_else(|| fail("devices did not turn Unhealthy"));
    println!(
        "    after {:?} every device is Unhealthy: the scheduler stops placing pods here",
        t.elapsed()
    );

    say(&format!("Restoring {} ...", host_path.display()));
    fs::create_dir_all(&host_path).unwrap_or_else(|e| fail(&e.to_string()));
    fs::write(host_path.join("hello"), "hello from the host\n")
        .unwrap_or_else(|e| fail(&e.to_string()));
    let t = Instant::now();
    kubelet
        .wait_for(WAIT, |r| {
            r.counts(RESOURCE)
                .filter(|(h, n)| h == n && *n > 0)
                .map(|_| ())
        })
        .unwrap_or_else(|| fail("devices did not turn Healthy again"));
    println!("    after {:?} every device is Healthy again", t.elapsed());

    say("A pod asks for `hostpath-device.k8s.io/sample: 1`; the kubelet calls Allocate([\"0\"]):");
    let resp = kubelet
        .allocate(RESOURCE, &[&["0"]])
        .unwrap_or_else(|e| fail(&format!("Allocate: {e}")));
    for m in &resp.container_responses[0].mounts {
        println!(
            "    mount {} (host) -> {} (container), {}",
            m.host_path,
            m.container_path,
            if m.read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
    }
    println!(
        "    the container would see {}/hello",
        resp.container_responses[0].mounts[0].container_path
    );
    match kubelet.allocate(RESOURCE, &[&["7"]]) {
        Err(e) => println!("    and an unknown device ID is refused: {e}"),
        Ok(_) => fail("an unknown device ID was accepted"),
    }

    say("Restarting the kubelet: it stops, deletes every socket in its directory, and starts again 100 ms later ...");
    kubelet
        .restart(Duration::from_millis(100))
        .unwrap_or_else(|e| fail(&format!("restart: {e}")));
    let t = Instant::now();
    let n = kubelet
        .wait_for(WAIT, |r| {
            (r.registrations_of(RESOURCE) >= 2 && r.counts(RESOURCE) == Some((3, 3)))
                .then_some(r.starts)
        })
        .unwrap_or_else(|| fail("not registered again after the kubelet restart"));
    println!(
        "    {:?} after the new kubelet started, the resource is registered again with all 3 devices Healthy (kubelet start #{n})",
        t.elapsed()
    );
    if watcher {
        println!(
            "    (plugin-watcher mode: the daemon did nothing; the kubelet found its socket again)"
        );
    }
    let resp = kubelet
        .allocate(RESOURCE, &[&["1"]])
        .unwrap_or_else(|e| fail(&format!("Allocate after restart: {e}")));
    println!(
        "    Allocate([\"1\"]) after the restart: mount {} -> {}",
        resp.container_responses[0].mounts[0].host_path,
        resp.container_responses[0].mounts[0].container_path
    );

    devices_that_come_and_go(&kubelet, &root, &config, &config_text);

    say("Sending SIGTERM to the daemon ...");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    let mut child = guard.1.take().unwrap_or_else(|| fail("child vanished"));
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if t.elapsed() > WAIT {
            fail("the daemon did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let sock = if watcher {
        PathBuf::from(&reg.endpoint)
    } else {
        dp_dir.join(&reg.endpoint)
    };
    println!(
        "    exited with {status} after {:?}; its socket {} {}; kubelet.sock {}",
        t.elapsed(),
        sock.display(),
        if sock.exists() {
            "is still there (BUG)"
        } else {
            "is gone"
        },
        if kubelet.socket_path().exists() {
            "is untouched"
        } else {
            "is gone (BUG)"
        }
    );
    say("Demo finished.");
}
