//! `make bench`: the daemon's figures against its targets (issue 6).
//!
//! Drives the real binary as a separate process against the simulated
//! kubelet over real Unix sockets, repeats each figure, prints a table with
//! median and worst, and writes `target/bench.json`. Figures are printed,
//! never asserted. `BENCH_IDLE_SECS` (default 60) sets the idle-CPU window;
//! `BENCH_RESTARTS` (default 1000) the kubelet restarts. `BENCH_ONLY=devices`
//! runs only the figures of devices that come and go; `BENCH_ONLY=scale`
//! only those at 100,000 matches and under event storms (issue 20);
//! `BENCH_ONLY=dra` only the DRA front's (issue 21); `BENCH_ONLY=peer`
//! only the side-by-side table with generic-device-plugin (issue 26, see
//! `peer.rs`), which the full run ends with; `BENCH_ONLY=cost` only the
//! per-resource cost model (`cost.rs`), which the full run has too. The
//! bench runs itself as a bare gRPC server (`floor.rs`) to measure what
//! gRPC's C core holds on its own.

#[path = "../common/mod.rs"]
mod common;
mod cost;
mod devices;
mod dra;
mod floor;
mod peer;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};
use k8s_hostpath_device_plugin::api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, Device, ListAndWatchResponse,
};
use k8s_hostpath_device_plugin::api::v1beta1_grpc::DevicePluginClient;
use k8s_hostpath_device_plugin::sim::SimKubelet;
use protobuf::Message;

use common::{clock_ticks, cpu_ticks};

const WAIT: Duration = Duration::from_secs(10);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A temp dir with a device-plugin dir and a host path, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "hpb{}-{tag}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("dp")).unwrap();
        fs::create_dir_all(p.join("data")).unwrap();
        Scratch(p)
    }
    fn dp(&self) -> PathBuf {
        self.0.join("dp")
    }
    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
    fn config(&self, resources: usize, devices: u32, interval: &str) -> PathBuf {
        let mut text = String::from("resources:\n");
        for i in 0..resources {
            let _ = writeln!(
                text,
                "  - {{resourceName: example.com/r{i}, numDevices: {devices}, healthCheckInterval: {interval}, hostPath: {{path: {}, type: Directory}}}}",
                self.data().display()
            );
        }
        let p = self.0.join("config.yaml");
        fs::write(&p, text).unwrap();
        p
    }
    fn spawn(&self, config: &Path) -> Child {
        self.spawn_with(config, &[])
    }
    fn spawn_with(&self, config: &Path, args: &[&str]) -> Child {
        Command::new(common::daemon_binary().expect("daemon binary"))
            .arg("--config")
            .arg(config)
            .arg("--device-plugin-dir")
            .arg(self.dp())
            .args(args)
            .stdout(Stdio::null())
            // BENCH_DAEMON_LOG=1: the daemons' logs on stderr.
            .stderr(if std::env::var_os("BENCH_DAEMON_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start the daemon")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(pid: u32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

/// One row of the table.
struct Row {
    figure: String,
    target: String,
    median: String,
    worst: String,
    n: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn times(
        &mut self,
        figure: &str,
        target: &str,
        limit: Option<Duration>,
        mut v: Vec<Duration>,
        by_median: bool,
    ) {
        v.sort();
        let (median, worst) = (v[v.len() / 2], v[v.len() - 1]);
        let met = limit.map(|l| if by_median { median <= l } else { worst <= l });
        self.0.push(Row {
            figure: figure.into(),
            target: target.into(),
            median: fmt_d(median),
            worst: fmt_d(worst),
            n: v.len().to_string(),
            met,
        });
    }
    fn value(&mut self, figure: &str, target: &str, value: String, met: Option<bool>) {
        self.0.push(Row {
            figure: figure.into(),
            target: target.into(),
            median: value,
            worst: "".into(),
            n: "1".into(),
            met,
        });
    }
    fn print(&self) {
        println!("\n| figure | target | median | worst | n | met |");
        println!("|---|---|---|---|---|---|");
        for r in &self.0 {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "—",
            };
            println!(
                "| {} | {} | {} | {} | {} | {met} |",
                r.figure, r.target, r.median, r.worst, r.n
            );
        }
    }
    fn json(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let rows: Vec<String> = self
            .0
            .iter()
            .map(|r| {
                format!(
                    "  {{\"figure\": \"{}\", \"target\": \"{}\", \"median\": \"{}\", \"worst\": \"{}\", \"n\": {}, \"met\": {}}}",
                    esc(&r.figure),
                    esc(&r.target),
                    esc(&r.median),
                    esc(&r.worst),
                    r.n,
                    r.met.map_or("null".to_string(), |m| m.to_string())
                )
            })
            .collect();
        format!("[\n{}\n]\n", rows.join(",\n"))
    }
}

fn fmt_d(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Context switches per thread name.
fn switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = fs::read_to_string(t.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.push((comm, n));
    }
    out.sort();
    out
}

fn client(socket: &Path) -> DevicePluginClient {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    DevicePluginClient::new(
        ChannelBuilder::new(env)
            .default_authority("localhost")
            .connect(&format!("unix:{}", socket.display())),
    )
}

/// The size of the binary driven (the shipped one is `make static`'s).
fn binary_size(t: &mut Table, bin: &Path) {
    let size = fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    t.value(
        "daemon binary size (as built for the bench)",
        "≤ 7.5 MB static",
        format!("{:.2} MB ({size} bytes)", size as f64 / 1e6),
        Some(size <= 7_500_000),
    );
}

fn main() {
    if let Ok(what) = std::env::var(floor::ALONE) {
        floor::hold(&what);
    }
    floor::keep_inherited_to_ourselves();
    let bin = common::daemon_binary().expect("daemon binary");
    let mut t = Table::default();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("devices") {
        devices::come_and_go(&mut t);
        t.print();
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("dra") {
        binary_size(&mut t, &bin);
        dra::figures(&mut t);
        t.print();
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("peer") {
        peer::side_by_side(&bin);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("cost") {
        cost::model(&mut t);
        t.print();
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("scale") {
        devices::scale(&mut t);
        t.print();
        return;
    }
    println!(
        "benchmarking {} ({} bytes)",
        bin.display(),
        fs::metadata(&bin).map(|m| m.len()).unwrap_or(0)
    );

    // Start, Register -> first list, SIGTERM: fresh daemon each round.
    let (mut start, mut first, mut stop, mut gone) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        let s = Scratch::new("s");
        let k = SimKubelet::start(&s.dp()).unwrap();
        let cfg = s.config(1, 100, "10s");
        let t0 = Instant::now();
        let mut child = s.spawn(&cfg);
        let rec = k
            .wait_for(WAIT, |r| {
                r.first_list_at.get("example.com/r0").map(|_| r.clone())
            })
            .expect("registered");
        start.push(rec.registered_at[0] - t0);
        first.push(rec.first_list_at["example.com/r0"] - rec.registered_at[0]);
        let sock = s.dp().join("example.com-r0.sock");
        let t1 = Instant::now();
        sigterm(child.id());
        // The socket's removal is the last thing the daemon does before it
        // exits; the kernel then reaps the process (its inotify teardown
        // takes most of that time).
        while sock.exists() && t1.elapsed() < WAIT {
            std::hint::spin_loop();
        }
        gone.push(t1.elapsed());
        let status = child.wait().unwrap();
        let took = t1.elapsed();
        assert!(status.success() && !sock.exists(), "unclean stop");
        stop.push(took);
    }
    t.times(
        "process start → Register received",
        "≤ 5 ms median",
        Some(Duration::from_millis(5)),
        start,
        true,
    );
    t.times(
        "Register → first device list at the kubelet",
        "≤ 5 ms",
        Some(Duration::from_millis(5)),
        first,
        true,
    );
    t.times(
        "SIGTERM → our sockets removed",
        "≤ 5 ms",
        Some(Duration::from_millis(5)),
        gone,
        true,
    );
    t.times(
        "SIGTERM → process reaped by its parent",
        "(≤ 5 ms)",
        None,
        stop,
        true,
    );

    // Path flaps.
    {
        let s = Scratch::new("f");
        let k = SimKubelet::start(&s.dp()).unwrap();
        let cfg = s.config(1, 100, "10s");
        let _d = Stop(s.spawn(&cfg));
        k.wait_for(WAIT, |r| r.counts("example.com/r0").filter(|c| c.0 == 100))
            .expect("healthy");
        let mut flips = Vec::new();
        for i in 0..200 {
            let healthy_after = i % 2 == 1;
            let t0 = Instant::now();
            if healthy_after {
                fs::create_dir(s.data()).unwrap();
            } else {
                fs::remove_dir(s.data()).unwrap();
            }
            let want = if healthy_after { 100 } else { 0 };
            let at = k
                .wait_for(WAIT, |r| {
                    r.counts("example.com/r0")
                        .filter(|c| c.0 == want)
                        .map(|_| r.last_list_at["example.com/r0"])
                })
                .expect("flip seen");
            flips.push(at - t0);
        }
        t.times(
            "path deleted / created → ListAndWatch update",
            "≤ 50 ms",
            Some(Duration::from_millis(50)),
            flips,
            false,
        );
    }

    // Kubelet restarts.
    {
        let n = env_num("BENCH_RESTARTS", 1000) as usize;
        let s = Scratch::new("r");
        let mut k = SimKubelet::start(&s.dp()).unwrap();
        let cfg = s.config(1, 100, "10s");
        let _d = Stop(s.spawn(&cfg));
        k.wait_for(WAIT, |r| r.first_list_at.get("example.com/r0").copied())
            .expect("registered");
        let mut lat = Vec::new();
        let mut ok = 0;
        for i in 0..n {
            k.restart(Duration::ZERO).unwrap();
            let t0 = Instant::now();
            let done = k.wait_for(WAIT, |r| {
                (r.registrations.len() >= i + 2)
                    .then(|| r.first_list_at.get("example.com/r0").copied())
                    .flatten()
            });
            if let Some(at) = done {
                ok += 1;
                lat.push(at.saturating_duration_since(t0));
            }
        }
        let figure = format!("kubelet restart → re-registered, first list ({ok}/{n})");
        t.times(
            &figure,
            "≤ 3 ms median, all",
            Some(Duration::from_millis(3)),
            lat,
            true,
        );
        if let Some(r) = t.0.last_mut() {
            r.met = r.met.map(|m| m && ok == n);
        }
    }

    // Allocate.
    {
        let s = Scratch::new("a");
        let k = SimKubelet::start(&s.dp()).unwrap();
        let cfg = s.config(1, 100, "10s");
        let _d = Stop(s.spawn(&cfg));
        k.wait_for(WAIT, |r| r.first_list_at.get("example.com/r0").copied())
            .expect("registered");
        let sock = s.dp().join("example.com-r0.sock");
        let mut req = AllocateRequest::new();
        let mut c = ContainerAllocateRequest::new();
        c.devices_ids = vec!["7".into()];
        req.container_requests.push(c);
        let cl = client(&sock);
        let mut rt = Vec::new();
        for _ in 0..10_000 {
            let t0 = Instant::now();
            cl.allocate(&req, CallOption::default()).expect("allocate");
            rt.push(t0.elapsed());
        }
        t.times(
            "Allocate round trip, 1 client",
            "≤ 0.3 ms",
            Some(Duration::from_micros(300)),
            rt,
            true,
        );
        for clients in [1usize, 4, 16] {
            let count = Arc::new(AtomicUsize::new(0));
            let window = Duration::from_secs(2);
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    let (count, sock, req) = (count.clone(), sock.clone(), req.clone());
                    thread::spawn(move || {
                        let cl = client(&sock);
                        let end = Instant::now() + window;
                        while Instant::now() < end {
                            if cl.allocate(&req, CallOption::default()).is_ok() {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                let _ = h.join();
            }
            let rate = count.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
            t.value(
                &format!("Allocate throughput, {clients} concurrent client(s)"),
                "report",
                format!("{rate:.0} calls/s"),
                None,
            );
        }
    }

    // Idle RSS and threads, 1 and 50 resources; idle CPU.
    for (resources, limit_kb) in [(1usize, 5 * 1024u64), (50, 10 * 1024)] {
        let s = Scratch::new("m");
        let k = SimKubelet::start(&s.dp()).unwrap();
        let cfg = s.config(resources, 100, "10s");
        let d = Stop(s.spawn(&cfg));
        let pid = d.0.id();
        k.wait_for(WAIT, |r| (r.first_list_at.len() == resources).then_some(()))
            .expect("all registered");
        thread::sleep(Duration::from_secs(1));
        let rss = proc_status(pid, "VmRSS:");
        t.value(
            &format!("idle RSS, {resources} resource(s)"),
            &format!("≤ {} MB", limit_kb / 1024),
            format!("{:.1} MB", rss as f64 / 1024.0),
            Some(rss <= limit_kb),
        );
        if resources == 1 {
            let threads = proc_status(pid, "Threads:");
            t.value(
                "threads, idle",
                "≤ 8",
                threads.to_string(),
                Some(threads <= 8),
            );
            let secs = env_num("BENCH_IDLE_SECS", 60);
            let (c0, s0) = (cpu_ticks(pid), switches(pid));
            thread::sleep(Duration::from_secs(secs));
            let (c1, s1) = (cpu_ticks(pid), switches(pid));
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let wakeups: Vec<String> = s1
                .iter()
                .map(|(name, n1)| {
                    let n0 = s0.iter().find(|(n, _)| n == name).map_or(0, |x| x.1);
                    format!("{name} {}", n1.saturating_sub(n0))
                })
                .collect();
            t.value(
                &format!("CPU over {secs} s idle (health poll every 10 s)"),
                "only the health poll's wake-ups",
                format!(
                    "{:.0} ms CPU; context switches: {}",
                    (c1 - c0) as f64 * 1000.0 / hz,
                    wakeups.join(", ")
                ),
                None,
            );
        }
    }

    // 100k devices.
    {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..10 {
            let s = Scratch::new("b");
            let k = SimKubelet::start(&s.dp()).unwrap();
            let cfg = s.config(1, 100_000, "10s");
            let _d = Stop(s.spawn(&cfg));
            let rec = k
                .wait_for(WAIT, |r| {
                    r.counts("example.com/r0")
                        .filter(|c| c.1 == 100_000)
                        .map(|_| r.clone())
                })
                .expect("100k list");
            times.push(rec.first_list_at["example.com/r0"] - rec.registered_at[0]);
            let mut msg = ListAndWatchResponse::new();
            for (id, h) in &rec.devices["example.com/r0"] {
                let mut d = Device::new();
                d.ID = id.clone();
                d.health = h.clone();
                msg.devices.push(d);
            }
            size = msg.compute_size();
        }
        t.value(
            "100k devices: first ListAndWatch size",
            "< 4 MiB",
            format!("{size} bytes"),
            Some(size < 4 * 1024 * 1024),
        );
        t.times(
            "100k devices: Register → first list",
            "≤ 50 ms",
            Some(Duration::from_millis(50)),
            times,
            true,
        );
    }

    devices::come_and_go(&mut t);
    devices::scale(&mut t);
    dra::figures(&mut t);
    cost::model(&mut t);
    binary_size(&mut t, &bin);

    t.print();
    let out = Path::new("target/bench.json");
    match fs::write(out, t.json()) {
        Ok(()) => println!("\nwrote {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
    peer::side_by_side(&bin);
}
