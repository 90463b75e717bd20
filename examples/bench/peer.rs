//! Side by side with squat/generic-device-plugin (issue 26): both daemons
//! given the same glob over the same device nodes, driven by the same
//! simulated kubelet, interleaved round by round, each figure a median.
//! The peer is the binary `BENCH_PEER` names (`make bench` builds it with
//! `tests/gotool.sh peer`); without one this part says so and is
//! skipped. `BENCH_PEER_IDLE_SECS` (default 30) sets the idle window.

use std::ffi::CString;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::CallOption;
use k8s_hostpath_device_plugin::api::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use k8s_hostpath_device_plugin::sim::SimKubelet;

use super::{client, clock_ticks, cpu_ticks, env_num, fmt_d, proc_status, sigterm, Scratch};

/// The resource both serve: generic-device-plugin's default domain and
/// the name its manifests use.
const RESOURCE: &str = "devic.es/serial";
/// How long a figure may take: the peer polls every 5 s.
const SLOW: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Ours,
    Peer,
}

struct Daemons {
    ours: PathBuf,
    peer: PathBuf,
}

impl Daemons {
    /// Starts `who` serving every `<dev>/ttyB*` node of the scratch dir.
    fn spawn(&self, who: Who, s: &Scratch) -> Child {
        let glob = format!("{}/ttyB*", s.0.join("dev").display());
        let quiet = |c: &mut Command| {
            c.stdout(Stdio::null()).stderr(Stdio::null());
        };
        let mut c = match who {
            Who::Ours => {
                let cfg = s.0.join("peer-config.yaml");
                fs::write(
                    &cfg,
                    format!(
                        "resources:\n- resourceName: {RESOURCE}\n  hostPath: {{path: '{glob}', type: CharDevice}}\n"
                    ),
                )
                .unwrap();
                let mut c = Command::new(&self.ours);
                c.arg("--config")
                    .arg(cfg)
                    .arg("--device-plugin-dir")
                    .arg(s.dp());
                c
            }
            Who::Peer => {
                let mut c = Command::new(&self.peer);
                c.arg("--device")
                    .arg(format!(
                        r#"{{"name": "serial", "groups": [{{"paths": [{{"path": "{glob}"}}]}}]}}"#
                    ))
                    .arg("--domain")
                    .arg("devic.es")
                    .arg("--plugin-directory")
                    .arg(format!("{}/", s.dp().display()))
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{}", free_port()))
                    .arg("--log-level")
                    .arg("error");
                c
            }
        };
        quiet(&mut c);
        c.spawn().expect("start a daemon")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(18080, |a| a.port())
}

fn mknod(p: &Path) {
    let c = CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; the result is checked.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod {}", p.display());
}

/// A scratch dir with `n` device nodes `ttyB0…`.
fn with_nodes(tag: &str, n: usize) -> Scratch {
    let s = Scratch::new(tag);
    fs::create_dir_all(s.0.join("dev")).unwrap();
    for i in 0..n {
        mknod(&s.0.join(format!("dev/ttyB{i}")));
    }
    s
}

fn healthy(k: &SimKubelet, n: usize, within: Duration) -> Option<Instant> {
    k.wait_for(within, |r| {
        r.counts(RESOURCE)
            .filter(|c| c.0 == n)
            .map(|_| r.last_list_at[RESOURCE])
    })
}

/// Voluntary and involuntary context switches of all its threads.
fn wakeups(pid: u32) -> u64 {
    super::switches(pid).iter().map(|(_, n)| n).sum()
}

/// Each thread's context switches over the next 10 s: who wakes.
fn per_thread(pid: u32) -> String {
    let a = super::switches(pid);
    thread::sleep(Duration::from_secs(10));
    let b = super::switches(pid);
    b.iter()
        .map(|(name, n1)| {
            let n0 = a.iter().find(|(n, _)| n == name).map_or(0, |x| x.1);
            format!("{name} {}", n1.saturating_sub(n0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a process's descriptors point at, counted by kind (sockets and
/// pipes without their inode numbers).
fn fd_kinds(pid: u32) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for f in fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
    {
        let Ok(target) = f.and_then(|f| fs::read_link(f.path())) else {
            continue;
        };
        let t = target.to_string_lossy();
        let kind = match t.split_once(":[") {
            Some((k, rest))
                if rest
                    .trim_end_matches(']')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                k.to_string()
            }
            _ => t.to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// One figure for both daemons: medians, and ours / theirs.
struct Pair {
    figure: String,
    ours: Vec<f64>,
    peer: Vec<f64>,
    unit: &'static str,
}

impl Pair {
    fn new(figure: &str, unit: &'static str) -> Pair {
        Pair {
            figure: figure.into(),
            ours: Vec::new(),
            peer: Vec::new(),
            unit,
        }
    }
    fn push(&mut self, who: Who, v: f64) {
        match who {
            Who::Ours => self.ours.push(v),
            Who::Peer => self.peer.push(v),
        }
    }
    fn push_d(&mut self, who: Who, d: Duration) {
        self.push(who, d.as_secs_f64() * 1e3);
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn shown(v: Option<f64>, unit: &str) -> String {
    match (v, unit) {
        (None, _) => "—".into(),
        (Some(x), "ms") => fmt_d(Duration::from_secs_f64(x / 1e3)),
        (Some(x), "µs") => format!("{x:.0} µs"),
        (Some(x), "MB") => format!("{x:.1} MB"),
        (Some(x), u) => format!("{x:.0}{u}"),
    }
}

/// Runs every figure for both and prints the table.
pub fn side_by_side(ours: &Path) {
    let Some(peer) = std::env::var_os("BENCH_PEER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
    else {
        println!("\n(no BENCH_PEER: the side-by-side table with generic-device-plugin needs Go; see tests/gotool.sh peer)");
        return;
    };
    let d = Daemons {
        ours: ours.to_path_buf(),
        peer,
    };
    let mut rows = Vec::new();
    let mut start = Pair::new("start → Register", "ms");
    let mut exit = Pair::new("SIGTERM → exit (waitpid)", "ms");
    let mut plug = Pair::new("plug → listed", "ms");
    let mut unplug = Pair::new("unplug → shown", "ms");
    let mut restart = Pair::new("kubelet restart → registered", "ms");
    let mut rss = Pair::new("idle RSS", "MB");
    let mut alloc = Pair::new("Allocate p50 (Rust gRPC client)", "µs");
    let mut cpu = Pair::new("plugin CPU per Allocate", "µs");
    let mut big = Pair::new("1,000 nodes: start → list", "ms");
    let mut idle = Pair::new("idle CPU per 30 s (from 35 s after start)", " ms");
    let mut woken = Pair::new("idle wake-ups per 30 s (context switches)", "");
    let mut threads = Pair::new("threads, 1 s after start", "");
    let mut fds = Pair::new("open fds, 1 s after start", "");
    let mut idle_threads = Pair::new("threads, idle (35 s after start)", "");
    let mut idle_fds = Pair::new("open fds, idle (35 s after start)", "");
    let mut closes = Vec::new();
    let rounds = env_num("BENCH_PEER_ROUNDS", 5) as usize;
    for round in 0..rounds {
        for who in [Who::Ours, Who::Peer] {
            one_round(
                &d,
                who,
                round == 0,
                &mut RoundRows {
                    start: &mut start,
                    exit: &mut exit,
                    plug: &mut plug,
                    unplug: &mut unplug,
                    restart: &mut restart,
                    rss: &mut rss,
                    alloc: &mut alloc,
                    cpu: &mut cpu,
                    threads: &mut threads,
                    fds: &mut fds,
                    closes: &mut closes,
                },
            );
            let s = with_nodes("pb", 1000);
            let k = SimKubelet::start(&s.dp()).unwrap();
            let t0 = Instant::now();
            let c = super::Stop(d.spawn(who, &s));
            if let Some(at) = healthy(&k, 1000, SLOW) {
                big.push_d(who, at - t0);
            }
            drop(c);
        }
    }
    // Idle: both started together, measured from 35 s on, once our
    // daemon's start-up settling is over (it asks pod-resources every
    // second for 30 s after a start, issue 22), for BENCH_PEER_IDLE_SECS.
    let secs = env_num("BENCH_PEER_IDLE_SECS", 30);
    let idlers: Vec<(Who, Scratch, SimKubelet, super::Stop, Instant)> = [Who::Ours, Who::Peer]
        .into_iter()
        .map(|who| {
            let s = with_nodes("pi", 4);
            let k = SimKubelet::start(&s.dp()).unwrap();
            let c = super::Stop(d.spawn(who, &s));
            (who, s, k, c, Instant::now())
        })
        .collect();
    for (_, _, k, _, _) in &idlers {
        healthy(k, 4, SLOW).expect("listed");
    }
    thread::sleep(Duration::from_secs(35).saturating_sub(idlers[0].4.elapsed()));
    let before: Vec<(u64, u64)> = idlers
        .iter()
        .map(|i| (cpu_ticks(i.3 .0.id()), wakeups(i.3 .0.id())))
        .collect();
    thread::sleep(Duration::from_secs(secs));
    for (i, (c0, w0)) in idlers.iter().zip(before) {
        let pid = i.3 .0.id();
        idle_threads.push(i.0, proc_status(pid, "Threads:") as f64);
        idle_fds.push(i.0, open_fds(pid) as f64);
        println!(
            "{}, idle, what its descriptors are: {}",
            if i.0 == Who::Ours {
                "ours"
            } else {
                "generic-device-plugin"
            },
            fd_kinds(pid)
        );
        let ms = (cpu_ticks(pid) - c0) as f64 * 1000.0 / clock_ticks() as f64;
        idle.push(i.0, ms * 30.0 / secs as f64);
        let w = wakeups(pid).saturating_sub(w0) as f64;
        woken.push(i.0, w * 30.0 / secs as f64);
        if i.0 == Who::Ours {
            println!(
                "ours, idle, context switches per thread over 10 s: {}",
                per_thread(pid)
            );
        }
    }
    drop(idlers);
    rows.extend([
        plug,
        unplug,
        restart,
        start,
        rss,
        alloc,
        cpu,
        big,
        exit,
        idle,
        woken,
        threads,
        idle_threads,
        fds,
        idle_fds,
    ]);
    println!(
        "\n### Side by side with generic-device-plugin ({} rounds, interleaved; medians)\n",
        rounds
    );
    println!("| figure | generic-device-plugin | ours | ratio |");
    println!("|---|---|---|---|");
    for r in &rows {
        let (o, p) = (median(&r.ours), median(&r.peer));
        let ratio = match (o, p) {
            (Some(o), Some(p)) if p > 0.0 && o / p < 0.01 => format!("{:.1e}", o / p),
            (Some(o), Some(p)) if p > 0.0 => format!("{:.2}", o / p),
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} | {ratio} |",
            r.figure,
            shown(p, r.unit),
            shown(o, r.unit)
        );
    }
    floors(&closes, secs);
    for (name, bin) in [("generic-device-plugin", &d.peer), ("ours", &d.ours)] {
        let size = fs::metadata(bin).map_or(0, |m| m.len());
        println!(
            "binary, {name}: {:.1} MB ({})",
            size as f64 / 1e6,
            bin.display()
        );
    }
}

struct RoundRows<'a> {
    start: &'a mut Pair,
    exit: &'a mut Pair,
    plug: &'a mut Pair,
    unplug: &'a mut Pair,
    restart: &'a mut Pair,
    rss: &'a mut Pair,
    alloc: &'a mut Pair,
    cpu: &'a mut Pair,
    threads: &'a mut Pair,
    fds: &'a mut Pair,
    /// SIGTERM → reaped of a process holding only an inotify instance,
    /// and of one holding nothing, after each daemon's exit (ms).
    closes: &'a mut Vec<(f64, f64)>,
}

/// What neither daemon's code decides: gRPC's C core on its own, and the
/// kernel's price for an inotify instance at exit (the peer holds none:
/// it looks for devices every 5 s instead).
fn floors(closes: &[(f64, f64)], secs: u64) {
    let s = Scratch::new("floor");
    match super::floor::grpc_alone(&s.0, Duration::from_secs(secs)) {
        Some(a) => println!(
            "\ngRPC alone (grpcio's environment with one completion queue, one server on a Unix \
             socket, nothing else): {} threads ({}), {} open fds, {} wake-ups per 30 s",
            a.threads, a.names, a.fds, a.wakeups
        ),
        None => println!("\ngRPC alone: could not be measured"),
    }
    let col = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = closes.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (median(&v), v.last().copied())
    };
    if let ((Some(im), Some(iw)), (Some(nm), Some(nw))) = (col(|c| c.0), col(|c| c.1)) {
        println!(
            "SIGTERM → reaped, a process that holds only an inotify instance watching 2 \
             directories (the kernel's default action, none of its code runs): median \
             {im:.2} ms, worst {iw:.2} ms; one that holds nothing: median {nm:.2} ms, worst \
             {nw:.2} ms (n = {}, each right after a daemon's exit)",
            closes.len()
        );
    }
}

/// One daemon's round: start, idle figures, Allocate, plug, unplug, a
/// kubelet restart, SIGTERM.
fn one_round(d: &Daemons, who: Who, first: bool, rows: &mut RoundRows<'_>) {
    let s = with_nodes("pr", 2);
    let mut k = SimKubelet::start(&s.dp()).unwrap();
    let t0 = Instant::now();
    let mut child = d.spawn(who, &s);
    let pid = child.id();
    let rec = k
        .wait_for(SLOW, |r| r.registered_at.first().copied())
        .expect("registered");
    rows.start.push_d(who, rec - t0);
    healthy(&k, 2, SLOW).expect("listed");
    thread::sleep(Duration::from_secs(1));
    rows.rss
        .push(who, proc_status(pid, "VmRSS:") as f64 / 1024.0);
    rows.threads.push(who, proc_status(pid, "Threads:") as f64);
    rows.fds.push(who, open_fds(pid) as f64);

    // Allocate through the endpoint the daemon registered.
    let endpoint = k.recorded().registrations[0].endpoint.clone();
    let cl = client(&s.dp().join(endpoint));
    let id = k.recorded().devices[RESOURCE][0].0.clone();
    let mut req = AllocateRequest::new();
    let mut c = ContainerAllocateRequest::new();
    c.devices_ids = vec![id];
    req.container_requests.push(c);
    let n = if first { 2000 } else { 1000 };
    let mut rt = Vec::with_capacity(n);
    let c0 = cpu_ticks(pid);
    for _ in 0..n {
        let t = Instant::now();
        cl.allocate(&req, CallOption::default()).expect("allocate");
        rt.push(t.elapsed());
    }
    let ticks = cpu_ticks(pid) - c0;
    rt.sort();
    rows.alloc.push(who, rt[n / 2].as_secs_f64() * 1e6);
    rows.cpu
        .push(who, ticks as f64 * 1e6 / clock_ticks() as f64 / n as f64);

    // A node plugged, then unplugged.
    let t = Instant::now();
    mknod(&s.0.join("dev/ttyB9"));
    if let Some(at) = healthy(&k, 3, SLOW) {
        rows.plug.push_d(who, at - t);
    }
    let t = Instant::now();
    fs::remove_file(s.0.join("dev/ttyB9")).unwrap();
    if let Some(at) = healthy(&k, 2, SLOW) {
        rows.unplug.push_d(who, at - t);
    }

    // The kubelet restarts.
    k.restart(Duration::ZERO).unwrap();
    let t = Instant::now();
    let again = k.wait_for(SLOW, |r| {
        (r.registrations.len() >= 2)
            .then(|| r.first_list_at.get(RESOURCE).copied())
            .flatten()
    });
    if let Some(at) = again {
        rows.restart.push_d(who, at.saturating_duration_since(t));
    }

    let t = Instant::now();
    sigterm(pid);
    let _ = child.wait();
    rows.exit.push_d(who, t.elapsed());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if let (Some(i), Some(n)) = (
        super::floor::bare_exit(&s.dp(), true),
        super::floor::bare_exit(&s.dp(), false),
    ) {
        rows.closes.push((ms(i), ms(n)));
    }
}
