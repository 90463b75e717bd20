//! The daemon's lifecycle driven in-process through `daemon::run`: waits
//! are on the state the daemon reports, never on its log text.

use std::fs;
use std::thread;
use std::time::Duration;

use k8s_hostpath_device_plugin::cli::Registration;
use k8s_hostpath_device_plugin::core::config;
use k8s_hostpath_device_plugin::daemon::{self, Control, Handle, Settings, Status};
use k8s_hostpath_device_plugin::sim::SimKubelet;

use crate::harness::{dir_config, TestDir, WAIT};

const A: &str = "example.com/a";
const B: &str = "example.com/b";

/// The daemon on its own thread, as `main` would run it minus the
/// process-wide parts (signals, umask, logging).
struct InProcess {
    handle: Handle,
    thread: Option<thread::JoinHandle<Result<(), daemon::DaemonError>>>,
}

impl InProcess {
    fn start(dir: &TestDir, config_text: &str) -> InProcess {
        let config = dir.write_config(config_text);
        let settings = Settings {
            device_plugin_dir: dir.dp(),
            socket_dir: dir.dp(),
            host_root: "/".into(),
            registration: Registration::KubeletSocket,
            config: config.clone(),
            max_watches: 1024,
            api: None,
            dra: Default::default(),
            pod_resources_socket: dir.dp().join("no-pod-resources.sock"),
            listen: Vec::new(),
            overrides: Default::default(),
            config_from_flags: false,
        };
        let loaded = config::load(&config, &settings.socket_dir).expect("valid config");
        let control = Control::new().unwrap();
        let handle = control.handle();
        let thread = thread::spawn(move || daemon::run(settings, loaded, control));
        InProcess {
            handle,
            thread: Some(thread),
        }
    }

    fn wait(&self, what: &str, mut f: impl FnMut(&Status) -> bool) -> Status {
        self.handle
            .wait_for(WAIT, |s| f(s).then(|| s.clone()))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: not within {WAIT:?}; last {:?}",
                    self.handle.status()
                )
            })
    }

    /// Stops the daemon and returns how `run` ended, bounded.
    fn stop(&mut self) -> Result<(), daemon::DaemonError> {
        self.handle.stop();
        let t = self.thread.take().unwrap();
        let stopped = self.handle.wait_for(WAIT, |s| s.stopped.then_some(()));
        assert!(stopped.is_some(), "the daemon did not stop within {WAIT:?}");
        // `stopped` is the last thing `run` reports: the join is short.
        t.join().expect("the daemon's thread panicked")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.stop();
        }
    }
}

fn registered(s: &Status, name: &str, serves: u64) -> bool {
    s.resource(name)
        .is_some_and(|r| r.registered && r.serves == serves)
}

#[test]
fn run_in_process_through_restart_reload_and_stop() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("a")).unwrap();
    fs::create_dir_all(dir.host("b")).unwrap();
    let mut k = SimKubelet::start(&dir.dp()).unwrap();
    let mut d = InProcess::start(&dir, &dir_config(A, &dir.host("a"), ""));

    let s = d.wait("registered once", |s| registered(s, A, 1));
    let a = s.resource(A).unwrap();
    assert_eq!(a.registrations, 1);
    assert_eq!(
        a.socket.as_deref(),
        Some(dir.dp().join("example.com-a.sock").as_path())
    );
    assert_eq!(k.recorded().registrations_of(A), 1);

    // A kubelet restart: served afresh, registered again, exactly once.
    k.restart(Duration::ZERO).unwrap();
    let s = d.wait("served and registered again", |s| registered(s, A, 2));
    assert_eq!(s.resource(A).unwrap().registrations, 2);
    k.wait_for(WAIT, |r| {
        (r.starts == 2 && r.registrations_of(A) == 2).then_some(())
    })
    .expect("one registration per kubelet start");

    // A reload adding a resource, requested like SIGHUP.
    let two = format!(
        "resources:\n- resourceName: {A}\n  hostPath: {{path: {}, type: Directory}}\n  healthCheckInterval: 100ms\n- resourceName: {B}\n  hostPath: {{path: {}, type: Directory}}\n",
        dir.host("a").display(),
        dir.host("b").display()
    );
    fs::write(dir.path.join("config.yaml"), two).unwrap();
    d.handle.reload();
    let s = d.wait("b added", |s| s.reloads >= 1 && registered(s, B, 1));
    assert!(registered(&s, A, 2), "a untouched by the reload: {s:?}");

    // A broken config is refused and changes nothing.
    fs::write(dir.path.join("config.yaml"), "resources: [\n").unwrap();
    d.handle.reload();
    let s = d.wait("reload refused", |s| s.refused_reloads >= 1);
    assert_eq!(s.resources.len(), 2, "{s:?}");

    d.stop().expect("run returned Ok");
    let s = d.handle.status();
    assert!(
        s.resources
            .iter()
            .all(|r| r.socket.is_none() && !r.registered),
        "{s:?}"
    );
    assert_eq!(dir.sockets(), ["kubelet.sock"], "our sockets are removed");
}

#[test]
fn two_daemons_run_side_by_side_in_one_process() {
    let dirs = [TestDir::new(), TestDir::new()];
    let mut daemons = Vec::new();
    let mut kubelets = Vec::new();
    for dir in &dirs {
        fs::create_dir_all(dir.host("a")).unwrap();
        kubelets.push(SimKubelet::start(&dir.dp()).unwrap());
        daemons.push(InProcess::start(dir, &dir_config(A, &dir.host("a"), "")));
    }
    for d in &daemons {
        d.wait("registered", |s| registered(s, A, 1));
    }
    // Stopping one leaves the other serving.
    daemons[0].stop().unwrap();
    assert_eq!(dirs[0].sockets(), ["kubelet.sock"]);
    let s = daemons[1].handle.status();
    assert!(registered(&s, A, 1) && !s.stopped, "{s:?}");
    assert_eq!(dirs[1].sockets().len(), 2, "{:?}", dirs[1].sockets());
    daemons[1].stop().unwrap();
}

#[test]
fn waits_for_the_kubelet_then_registers() {
    let dir = TestDir::new();
    fs::create_dir_all(dir.host("a")).unwrap();
    let d = InProcess::start(&dir, &dir_config(A, &dir.host("a"), ""));
    let s = d.wait("serving", |s| {
        s.resource(A).is_some_and(|r| r.socket.is_some())
    });
    assert!(!s.resource(A).unwrap().registered, "no kubelet yet: {s:?}");
    let _k = SimKubelet::start(&dir.dp()).unwrap();
    let s = d.wait("registered after the kubelet came", |s| registered(s, A, 2));
    assert_eq!(s.resource(A).unwrap().registrations, 1, "{s:?}");
}
