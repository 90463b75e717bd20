//! Events on the daemon's Node (issue 23, item 4), written to a fake API
//! server: health changes, devices coming and going and a refused reload
//! become Events on the node; repeats update one Event's count, writes are
//! rate-limited, and an API server that refuses everything slows nothing.

use std::fs;
use std::sync::atomic::Ordering;
use std::time::Instant;

use k8s_hostpath_device_plugin::sim::fakeapi::FakeApi;
use k8s_hostpath_device_plugin::sim::SimKubelet;
use serde_json::Value;

use crate::harness::{dir_config, wait_counts, wait_until, Daemon, TestDir, WAIT};

const R: &str = "example.com/data";

/// Waits for an Event of `reason` and returns it.
#[track_caller]
fn wait_event(api: &FakeApi, d: &Daemon, reason: &str) -> Value {
    let mut found = None;
    let ok = wait_until(WAIT, || {
        found = api.events().into_iter().find(|e| e["reason"] == reason);
        found.is_some()
    });
    assert!(ok, "no {reason} event: {:?}\n{}", api.events(), d.log());
    found.unwrap()
}

fn start(dir: &TestDir, api: &FakeApi, config: &str) -> (SimKubelet, Daemon) {
    api.store
        .lock()
        .unwrap()
        .nodes
        .insert("node-a".into(), "uid-node-a".into());
    let kubeconfig = api.kubeconfig(&dir.path);
    let k = SimKubelet::start(&dir.dp()).unwrap();
    let d = Daemon::start(
        dir,
        config,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node-name",
            "node-a",
        ],
    );
    d.wait_log("Node events on");
    (k, d)
}

#[test]
fn health_and_reloads_are_events_on_the_node() {
    let dir = TestDir::new();
    let data = dir.host("data");
    fs::create_dir_all(&data).unwrap();
    let api = FakeApi::start();
    let (k, d) = start(&dir, &api, &dir_config(R, &data, "numDevices: 1\n"));
    wait_counts(&k, &d, R, (1, 1));

    fs::remove_dir(&data).unwrap();
    wait_counts(&k, &d, R, (0, 1));
    let e = wait_event(&api, &d, "ResourceUnhealthy");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["involvedObject"]["kind"], "Node");
    assert_eq!(e["involvedObject"]["name"], "node-a");
    assert_eq!(e["involvedObject"]["uid"], "uid-node-a");
    assert_eq!(e["source"]["component"], "k8s-hostpath-device-plugin");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(R) && msg.contains(data.to_str().unwrap()),
        "{msg}"
    );
    assert_eq!(e["count"], 1);

    fs::create_dir(&data).unwrap();
    wait_counts(&k, &d, R, (1, 1));
    assert_eq!(wait_event(&api, &d, "ResourceHealthy")["type"], "Normal");

    // Flapping: one Event per reason and message, its count climbing, and
    // writes bounded by the rate limit.
    let flaps = 20;
    let t0 = Instant::now();
    for _ in 0..flaps {
        fs::remove_dir(&data).unwrap();
        wait_counts(&k, &d, R, (0, 1));
        fs::create_dir(&data).unwrap();
        wait_counts(&k, &d, R, (1, 1));
    }
    let counted = wait_until(WAIT, || {
        api.events()
            .iter()
            .any(|e| e["reason"] == "ResourceUnhealthy" && e["count"].as_u64() > Some(1))
    });
    assert!(
        counted,
        "repeats never counted: {:?}\n{}",
        api.events(),
        d.log()
    );
    let events = api.events();
    assert!(
        events.len() <= 4,
        "{} events for {flaps} flaps: {events:?}",
        events.len()
    );
    let writes = {
        let s = api.store.lock().unwrap();
        s.log.iter().filter(|l| l.contains("/events")).count()
    };
    let bound = 10 + (t0.elapsed().as_secs() / 6) as usize + 4;
    assert!(writes <= bound, "{writes} event writes, more than {bound}");
    println!(
        "node events: {flaps} flaps → {} events, {writes} writes in {:.1} s",
        events.len(),
        t0.elapsed().as_secs_f64()
    );

    // A refused reload.
    dir.replace_config("resources: [oops\n");
    let e = wait_event(&api, &d, "ConfigReloadRefused");
    assert_eq!(e["type"], "Warning");
}

#[test]
fn an_api_server_that_refuses_everything_slows_nothing() {
    let dir = TestDir::new();
    let data = dir.host("data");
    fs::create_dir_all(&data).unwrap();
    let api = FakeApi::start();
    let (k, d) = start(&dir, &api, &dir_config(R, &data, "numDevices: 1\n"));
    wait_counts(&k, &d, R, (1, 1));
    wait_event(&api, &d, "ResourceHealthy");
    let before = api.events().len();
    api.down.store(true, Ordering::SeqCst);
    for _ in 0..30 {
        fs::remove_dir(&data).unwrap();
        let t = wait_counts(&k, &d, R, (0, 1));
        assert!(t < WAIT, "{t:?}");
        fs::create_dir(&data).unwrap();
        wait_counts(&k, &d, R, (1, 1));
    }
    k.allocate(R, &[&["0"]])
        .expect("Allocate while the API server refuses");
    assert_eq!(api.events().len(), before);
    // Back: what waited is written (at the rate limit's pace).
    api.down.store(false, Ordering::SeqCst);
    let back = wait_until(WAIT * 2, || api.events().len() > before);
    assert!(
        back,
        "no event after the API server came back:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(!log.contains("secret-token"), "a credential in the log");
}
