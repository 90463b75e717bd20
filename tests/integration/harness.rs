//! Test harness: unique temp dirs, the daemon as a child process, bounded waits.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_hostpath_device_plugin::sim::SimKubelet;

use grpcio::{ChannelBuilder, EnvBuilder};
use k8s_hostpath_device_plugin::api::v1beta1_grpc::DevicePluginClient;

/// Generous bound for anything the daemon should do "at once".
pub const WAIT: Duration = Duration::from_secs(10);

/// The daemon under test: the one cargo built, or `DAEMON_BIN` (to run
/// these tests against another build, such as an older release).
pub fn bin() -> String {
    std::env::var("DAEMON_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_k8s-hostpath-device-plugin").to_string())
}

/// A fresh, short directory (Unix socket paths are limited to 107 bytes),
/// removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hp{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("dp")).unwrap();
        fs::create_dir_all(path.join("host")).unwrap();
        TestDir { path }
    }

    /// The device-plugin directory.
    /// Where a test serves the kubelet's pod-resources API.
    pub fn pod_resources(&self) -> PathBuf {
        self.path.join("pod-resources.sock")
    }

    pub fn dp(&self) -> PathBuf {
        self.path.join("dp")
    }

    /// A path under the test's host area.
    pub fn host(&self, rel: &str) -> PathBuf {
        self.path.join("host").join(rel)
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.path.join("config.yaml");
        fs::write(&p, text).unwrap();
        p
    }

    /// Replaces the config the way editors and `kubectl cp` do: write a new
    /// file, rename it over the old one.
    pub fn replace_config(&self, text: &str) {
        let tmp = self.path.join("config.yaml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.path.join("config.yaml")).unwrap();
    }

    /// Socket files in the device-plugin directory, sorted.
    pub fn sockets(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dp())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A one-resource config (original format) serving `path` as a directory.
pub fn dir_config(name: &str, path: &Path, extra: &str) -> String {
    format!("resourceName: {name}\nhostPath:\n  path: {}\n  type: Directory\nhealthCheckInterval: 100ms\n{extra}", path.display())
}

/// The daemon as a child process; killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &TestDir, config: &str, extra_args: &[&str]) -> Daemon {
        let cfg = dir.write_config(config);
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        Daemon::spawn(dir, &args)
    }

    /// Starts the daemon with `--device-plugin-dir` set and these arguments.
    pub fn spawn(dir: &TestDir, args: &[&str]) -> Daemon {
        Daemon::spawn_env(dir, args, &[], "daemon.log")
    }

    /// [`Daemon::spawn`] with these environment variables, logging to
    /// `log` in the test's directory (several daemons on one node).
    pub fn spawn_env(dir: &TestDir, args: &[&str], env: &[(&str, &str)], log: &str) -> Daemon {
        let log = dir.path.join(log);
        // Never the machine's kubelet: a pod-resources socket of the test's
        // own (absent unless a test serves it).
        // Nor the machine's DRA directories: the test's own, unless given.
        let mut dirs = Vec::new();
        for (flag, sub) in [
            ("--plugins-registry-dir", "registry"),
            ("--plugins-dir", "plugins"),
            ("--cdi-dir", "cdi"),
        ] {
            if !args.contains(&flag) {
                dirs.push(flag.to_string());
                dirs.push(dir.path.join(sub).to_string_lossy().into_owned());
            }
        }
        let child = Command::new(bin())
            .arg("--device-plugin-dir")
            .arg(dir.dp())
            .arg("--pod-resources-socket")
            .arg(dir.pod_resources())
            .args(&dirs)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit, failing the test after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the log contains `needle`.
    #[track_caller]
    pub fn wait_log(&self, needle: &str) {
        assert!(
            wait_until(WAIT, || self.log().contains(needle)),
            "log never contained {needle:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the binary to completion (for `check`, `probe`, usage errors).
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A direct client on a plugin socket, as a kubelet would dial it.
pub fn client(socket: &Path) -> DevicePluginClient {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let ch = ChannelBuilder::new(env)
        .default_authority("localhost")
        .connect(&k8s_hostpath_device_plugin::util::unix_target(socket));
    DevicePluginClient::new(ch)
}

/// Waits until the kubelet holds `want` = (healthy, total) devices of
/// `name`; returns how long that took.
#[track_caller]
pub fn wait_counts(k: &SimKubelet, d: &Daemon, name: &str, want: (usize, usize)) -> Duration {
    let t = Instant::now();
    k.wait_for(WAIT, |r| (r.counts(name) == Some(want)).then_some(()))
        .unwrap_or_else(|| {
            panic!(
                "{name}: never {want:?}; saw {:?}\n{}",
                k.recorded().counts(name),
                d.log()
            )
        });
    t.elapsed()
}
