//! The DRA figures (issue 21): NodePrepareResources against the fake API
//! server, a device change → the ResourceSlice write, and the daemon at
//! rest with DRA on (RSS, requests). The daemon is the real binary with
//! `--api dra`; the kubelet's side is `sim::dra` over the real sockets.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use super::*;
use k8s_hostpath_device_plugin::api::{dra_v1, dra_v1_grpc};
use k8s_hostpath_device_plugin::sim::dra::{sockets, DraKubelet};
use k8s_hostpath_device_plugin::sim::fakeapi::FakeApi;
use k8s_hostpath_device_plugin::util::unix_channel;

const DRIVER: &str = "hostpath-device.k8s.io";
const NODE: &str = "node-a";
/// Claims prepared (one per call) and unprepared for the latency figures.
const CLAIMS: usize = 1000;

/// The daemon serving `config` through DRA against `api`, registered.
fn start_dra(s: &Scratch, api: &FakeApi, config: &Path) -> (Stop, PathBuf) {
    let dirs: Vec<PathBuf> = ["registry", "plugins", "cdi"]
        .iter()
        .map(|d| s.0.join(d))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    api.store
        .lock()
        .unwrap()
        .nodes
        .insert(NODE.into(), "node-uid".into());
    let kubeconfig = api.kubeconfig(&s.0);
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "--api".to_string(),
        "dra".into(),
        "--node-name".into(),
        NODE.into(),
        "--kubeconfig".into(),
        arg(&kubeconfig),
        "--plugins-registry-dir".into(),
        arg(&dirs[0]),
        "--plugins-dir".into(),
        arg(&dirs[1]),
        "--cdi-dir".into(),
        arg(&dirs[2]),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Stop(s.spawn_with(config, &args));
    let (reg, endpoint) = sockets(&dirs[0], &dirs[1], DRIVER);
    let t0 = Instant::now();
    while !reg.exists() && t0.elapsed() < WAIT {
        thread::sleep(Duration::from_millis(1));
    }
    DraKubelet::default().register(&reg).expect("registered");
    (d, endpoint)
}

fn wait_devices(api: &FakeApi, pool: &str, n: usize) {
    let t0 = Instant::now();
    while api.devices(pool).len() != n {
        assert!(t0.elapsed() < WAIT, "pool {pool} never had {n} devices");
        thread::sleep(Duration::from_millis(2));
    }
}

fn uid(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

fn claim(i: usize) -> dra_v1::Claim {
    let mut c = dra_v1::Claim::new();
    (c.namespace, c.name, c.uid) = ("default".into(), format!("c{i}"), uid(i));
    c
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// One GET of a claim from the fake API server, as the daemon makes it
/// (a fresh connection): the API server's own share of a preparation.
fn api_get(port: u16, path: &str) -> Duration {
    let t0 = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    t0.elapsed()
}

pub(crate) fn figures(t: &mut Table) {
    // Preparation: 100 devices of a directory, 1000 claims on them.
    let s = Scratch::new("dra");
    let api = FakeApi::start();
    let cfg = s.0.join("dra.yaml");
    fs::write(
        &cfg,
        format!(
            "resources:\n- resourceName: example.com/data\n  numDevices: 100\n  \
             hostPath: {{path: {}, type: Directory}}\n  volumeMount: {{mountPath: /data, readOnly: true}}\n",
            s.data().display()
        ),
    )
    .unwrap();
    let (d, endpoint) = start_dra(&s, &api, &cfg);
    let pool = format!("{NODE}/example.com/data");
    wait_devices(&api, &pool, 100);
    for i in 0..CLAIMS {
        let device = (i % 100).to_string();
        api.add_claim(
            "default",
            &format!("c{i}"),
            &uid(i),
            DRIVER,
            &[("data", &pool, &device)],
        );
    }
    // One connection, as the kubelet keeps one per plugin.
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let client = dra_v1_grpc::DRAPluginClient::new(unix_channel(&env, &endpoint));
    let opt = || CallOption::default().timeout(WAIT);
    let (mut prepare, mut unprepare, mut api_share) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CLAIMS {
        let mut req = dra_v1::NodePrepareResourcesRequest::new();
        req.claims = vec![claim(i)];
        let t0 = Instant::now();
        let r = client.node_prepare_resources(&req, opt()).expect("prepare");
        prepare.push(t0.elapsed());
        assert_eq!(r.claims[&uid(i)].error, "", "claim {i}");
        api_share.push(api_get(
            api.port,
            &format!("/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c{i}"),
        ));
    }
    for i in 0..CLAIMS {
        let mut req = dra_v1::NodeUnprepareResourcesRequest::new();
        req.claims = vec![claim(i)];
        let t0 = Instant::now();
        let r = client
            .node_unprepare_resources(&req, opt())
            .expect("unprepare");
        unprepare.push(t0.elapsed());
        assert_eq!(r.claims[&uid(i)].error, "", "claim {i}");
    }
    let api_median = {
        api_share.sort();
        api_share[api_share.len() / 2]
    };
    let prepare_p99 = p99(&mut prepare);
    let prepare_median = prepare[prepare.len() / 2];
    t.times(
        "DRA NodePrepareResources, 1 claim (GET from the fake API server, CDI spec written)",
        "≤ 5 ms median, excluding the API server",
        Some(Duration::from_millis(5) + api_median),
        prepare,
        true,
    );
    t.value(
        "DRA NodePrepareResources p99; the fake API server's own GET (median)",
        "—",
        format!("p99 {}; API GET {}", fmt_d(prepare_p99), fmt_d(api_median)),
        None,
    );
    t.value(
        "DRA NodePrepareResources median minus the API server's GET",
        "≤ 5 ms",
        fmt_d(prepare_median.saturating_sub(api_median)),
        Some(prepare_median.saturating_sub(api_median) <= Duration::from_millis(5)),
    );
    let unprepare_p99 = p99(&mut unprepare);
    t.times(
        &format!(
            "DRA NodeUnprepareResources, 1 claim (CDI spec removed; p99 {})",
            fmt_d(unprepare_p99)
        ),
        "—",
        None,
        unprepare,
        true,
    );

    // At rest: RSS, and every request to the API server over a window.
    thread::sleep(Duration::from_secs(1));
    let rss = proc_status(d.0.id(), "VmRSS:");
    t.value(
        "idle RSS, DRA on (100 devices published, 1000 claims prepared and unprepared)",
        "≤ 8 MB",
        format!("{:.1} MB", rss as f64 / 1024.0),
        Some(rss <= 8 * 1024),
    );
    let secs = env_num("BENCH_DRA_REST_SECS", 20);
    let requests = || api.store.lock().unwrap().log.len();
    let (requests0, writes0) = (requests(), api.writes());
    thread::sleep(Duration::from_secs(secs));
    let (requests1, writes1) = (requests(), api.writes());
    t.value(
        &format!("DRA at rest: writes / requests to the API server in {secs} s"),
        "0 writes",
        format!("{} / {}", writes1 - writes0, requests1 - requests0),
        Some(writes1 == writes0),
    );
    drop(d);

    // Device change → slice write: a pattern, a node made and removed.
    let s = Scratch::new("drap");
    let api = FakeApi::start();
    let dev = s.0.join("dev");
    fs::create_dir_all(&dev).unwrap();
    let cfg = s.0.join("pattern.yaml");
    fs::write(
        &cfg,
        format!(
            "resources:\n- resourceName: example.com/p\n  hostPath: {{path: '{}/tty*'}}\n  \
             healthCheckInterval: 1h\n  removeAfter: 0s\n",
            dev.display()
        ),
    )
    .unwrap();
    let (d, _) = start_dra(&s, &api, &cfg);
    let pool = format!("{NODE}/example.com/p");
    wait_devices(&api, &pool, 0);
    let writes_after = |n: usize| -> Option<Instant> {
        let st = api.store.lock().unwrap();
        st.log
            .iter()
            .zip(&st.arrived)
            .skip(n)
            .find(|(l, _)| !l.starts_with("GET"))
            .map(|(_, at)| *at)
    };
    let mut change = Vec::new();
    for i in 0..50 {
        let path = dev.join(format!("tty{i}"));
        for plug in [true, false] {
            let n = api.store.lock().unwrap().log.len();
            let t0 = Instant::now();
            if plug {
                fs::write(&path, b"").unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
            let at = loop {
                if let Some(at) = writes_after(n) {
                    break at;
                }
                assert!(t0.elapsed() < WAIT, "no slice write after a device change");
                thread::sleep(Duration::from_millis(1));
            };
            change.push(at.saturating_duration_since(t0));
            wait_devices(&api, &pool, usize::from(plug));
        }
    }
    t.times(
        "DRA device plugged or unplugged → ResourceSlice write arrives at the API server",
        "≤ 100 ms",
        Some(Duration::from_millis(100)),
        change,
        false,
    );
    drop(d);
}
