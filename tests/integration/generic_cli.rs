//! generic-device-plugin's DaemonSet with only the image changed: our
//! binary started with that project's argument list (`--device` JSON,
//! `--domain`, `--plugin-directory`, `--listen`, `--log-level`), or with
//! the same settings from the environment. Besides them, each run is given
//! only `--pod-resources-socket` (never the machine's kubelet).

use std::fs::{self, File};
use std::process::{Child, Command, Stdio};

use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{bin, wait_until, TestDir, WAIT};
use crate::metrics::{get, logged_addr};

/// The daemon started exactly with `args` and `env` (plus the test's
/// pod-resources socket); killed on drop.
struct Run {
    child: Child,
    log: std::path::PathBuf,
}

impl Run {
    fn start(dir: &TestDir, args: &[String], env: &[(&str, String)]) -> Run {
        let log = dir.path.join("daemon.log");
        let child = Command::new(bin())
            .args(args)
            .arg("--pod-resources-socket")
            .arg(dir.pod_resources())
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&dir.path)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Run { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serial glob and a USB group, as that project's README writes them.
fn device_flags(dev: &std::path::Path) -> Vec<String> {
    vec![
        format!(
            r#"{{"name": "serial", "groups": [{{"paths": [{{"path": "{}/ttyQ*", "type": "Mount"}}]}}]}}"#,
            dev.display()
        ),
        r#"{"name": "stick", "groups": [{"usb": [{"vendor": "feed", "product": "beef"}]}]}"#.into(),
    ]
}

/// Checks what a generic-device-plugin invocation registered and exports.
fn check(dir: &TestDir, k: &SimKubelet, run: &Run) {
    let serial = "example.org/serial";
    let stick = "example.org/stick";
    let seen = k.wait_for(WAIT, |r| {
        (r.counts(serial) == Some((2, 2)) && r.registrations_of(stick) > 0).then_some(())
    });
    assert!(
        seen.is_some(),
        "not registered as generic-device-plugin would be: {:?}\n{}",
        k.recorded().registrations,
        run.log()
    );
    let ids: Vec<String> = k.recorded().devices[serial]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let dev = dir.host("dev");
    assert_eq!(
        ids,
        [
            format!("{}/ttyQ0", dev.display()),
            format!("{}/ttyQ1", dev.display())
        ]
    );
    let addr = logged_addr(&run.log);
    let mut text = String::new();
    let all_there = wait_until(WAIT, || {
        text = get(addr, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        text.contains(&format!(
            "generic_device_plugin_devices{{resource=\"{serial}\"}} 2\n"
        )) && text.contains(&format!(
            "generic_device_plugin_allocations_total{{resource=\"{serial}\"}} 0\n"
        )) && text.contains(&format!(
            "generic_device_plugin_restarts_total{{resource=\"{stick}\"}} 0\n"
        ))
    });
    assert!(all_there, "{text}");
}

#[test]
fn its_daemonset_arguments() {
    let dir = TestDir::new();
    let dev = dir.host("dev");
    fs::create_dir_all(&dev).unwrap();
    for n in ["ttyQ0", "ttyQ1"] {
        fs::write(dev.join(n), "").unwrap();
    }
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let mut args = Vec::new();
    for d in device_flags(&dev) {
        args.push("--device".to_string());
        args.push(d);
    }
    args.extend(
        [
            "--domain",
            "example.org",
            "--plugin-directory",
            dir.dp().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ]
        .map(String::from),
    );
    let run = Run::start(&dir, &args, &[]);
    check(&dir, &k, &run);
    let log = run.log();
    assert!(
        log.contains("where this daemon differs, on purpose"),
        "{log}"
    );
}

#[test]
fn its_environment_variables() {
    let dir = TestDir::new();
    let dev = dir.host("dev");
    fs::create_dir_all(&dev).unwrap();
    for n in ["ttyQ0", "ttyQ1"] {
        fs::write(dev.join(n), "").unwrap();
    }
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let devices = format!("[{}]", device_flags(&dev).join(", "));
    let env = [
        ("DEVICE", devices),
        ("DOMAIN", "example.org".to_string()),
        ("PLUGIN_DIRECTORY", dir.dp().to_string_lossy().into_owned()),
        ("LISTEN", "127.0.0.1:0".to_string()),
        ("LOG_LEVEL", "info".to_string()),
    ];
    let run = Run::start(&dir, &[], &env);
    check(&dir, &k, &run);
    assert!(
        run.log().contains(
            "settings from the environment: DOMAIN, DEVICE, PLUGIN_DIRECTORY, LISTEN, LOG_LEVEL"
        ),
        "{}",
        run.log()
    );
}

#[test]
fn its_default_config_file_and_optional_paths() {
    // No --config and no file of ours: its ./config.yaml, read from the
    // working directory as that project does.
    let dir = TestDir::new();
    let dev = dir.host("dev");
    fs::create_dir_all(&dev).unwrap();
    fs::write(dev.join("ttyQ0"), "").unwrap();
    fs::write(
        dir.path.join("config.yaml"),
        format!(
            "domain: example.org\ndevices:\n  - name: pair\n    groups:\n      - paths:\n          - path: {0}/ttyQ0\n            type: Mount\n          - path: {0}/ttyOPT\n            type: Mount\n            optional: true\n",
            dev.display()
        ),
    )
    .unwrap();
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let args = ["--plugin-directory", dir.dp().to_str().unwrap()].map(String::from);
    let run = Run::start(&dir, &args, &[]);
    let name = "example.org/pair";
    let listed = k.wait_for(WAIT, |r| (r.counts(name) == Some((1, 1))).then_some(()));
    assert!(listed.is_some(), "{}", run.log());
    // The optional member is not handed out while it is missing...
    let first = k.recorded().devices[name][0].0.clone();
    let resp = k.allocate(name, &[&[&first]]).unwrap();
    let mounts = &resp.container_responses[0].mounts;
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    // ... and is, with the rest, once it is there (a device of its own).
    fs::write(dev.join("ttyOPT"), "").unwrap();
    let mut both = None;
    let seen = k.wait_for(WAIT, |r| {
        both = r
            .devices
            .get(name)?
            .iter()
            .find_map(|(id, h)| (*id != first && h == "Healthy").then(|| id.clone()));
        both.clone()
    });
    assert!(
        seen.is_some(),
        "{:?}\n{}",
        k.recorded().devices.get(name),
        run.log()
    );
    let resp = k.allocate(name, &[&[&both.unwrap()]]).unwrap();
    let hosts: Vec<&str> = resp.container_responses[0]
        .mounts
        .iter()
        .map(|m| m.host_path.as_str())
        .collect();
    assert_eq!(
        hosts,
        [
            format!("{}/ttyQ0", dev.display()),
            format!("{}/ttyOPT", dev.display())
        ]
    );
    assert!(
        run.log()
            .contains("reading generic-device-plugin's config.yaml"),
        "{}",
        run.log()
    );
}
